//! The side port: `/health`, `/ready` and `/metrics` answered by a plain thread that never
//! needs the interpreter, so probes get an answer while the app's event loop is busy or stuck.
//!
//! Every worker of an instance asks for the same port; the first one binds it and serves the
//! instance (the metrics are shared), the others retry once a second, so when the serving
//! worker dies another one takes over.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use crate::http_server::{serve, Request, Response};

/// How the first bind went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidePortStart {
    /// This process serves the port.
    Serving,
    /// Another process holds the port (another worker of the instance, normally); this one
    /// takes over if it goes away.
    Standby,
}

/// Starts serving `address` with `handler` on a background thread. Errors other than "address
/// in use" (a bad address, no permission) are returned at once.
pub fn start(address: SocketAddr, handler: impl Fn(&Request) -> Response + Send + 'static) -> io::Result<SidePortStart> {
    let first = match TcpListener::bind(address) {
        Ok(listener) => Some(listener),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => None,
        Err(error) => return Err(error),
    };
    let outcome = if first.is_some() { SidePortStart::Serving } else { SidePortStart::Standby };
    thread::Builder::new().name("beacon-side-port".into()).spawn(move || {
        let mut listener = first;
        loop {
            match listener.take() {
                Some(bound) => serve(bound, &handler),
                None => thread::sleep(Duration::from_secs(1)),
            }
            listener = TcpListener::bind(address).ok();
        }
    })?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn a_second_server_waits_for_the_port() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        assert_eq!(start(address, |_| Response::new("200 OK", "text/plain", "first")).unwrap(), SidePortStart::Serving);
        assert_eq!(start(address, |_| Response::new("200 OK", "text/plain", "second")).unwrap(), SidePortStart::Standby);
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with("first"));
        // An address this host does not have is an error at once, not a silent standby.
        assert!(start("192.0.2.1:9".parse().unwrap(), |_| Response::not_found("")).is_err());
    }
}
