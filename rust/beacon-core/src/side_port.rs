//! The side port: `/health`, `/ready` and `/metrics` answered by a thread of its own that never
//! needs the interpreter, so probes get an answer while the app's event loop is busy or stuck.
//! The thread runs the probe server (`http_server`): its runtime is built inside that thread,
//! which the worker starts after the fork, from its ASGI lifespan.
//!
//! Every worker of an instance asks for the same port; the first one binds it and serves the
//! instance (the metrics are shared), the others retry once a second, so when the serving
//! worker dies another one takes over.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;

use beacon_base::http_server::{off_thread, serve, with_fallback, Limits, Response};

/// What the side port answers; implemented by the app's native state. `/health` and `/ready`
/// are answered on the server's own thread (they read a few atomics); `/metrics` is rendered on
/// its blocking thread, so a long render never delays a probe.
pub trait ProbeAnswers: Send + Sync + 'static {
    /// `GET /health`.
    fn health(&self) -> Response;
    /// `GET /ready`.
    fn ready(&self) -> Response;
    /// `GET /metrics`, in the format `accept` asks for.
    fn metrics(&self, accept: Option<&str>) -> Response;
}

/// How the first bind went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidePortStart {
    /// This process serves the port.
    Serving,
    /// Another process holds the port (another worker of the instance, normally); this one
    /// takes over if it goes away.
    Standby,
}

/// The side port's routes.
pub fn app(answers: Arc<dyn ProbeAnswers>) -> Router {
    let (health, ready, metrics) = (answers.clone(), answers.clone(), answers);
    let router = Router::new()
        .route("/health", get(move || std::future::ready(health.health())))
        .route("/ready", get(move || std::future::ready(ready.ready())))
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let accept = headers
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let metrics = metrics.clone();
                off_thread(move || metrics.metrics(accept.as_deref()))
            }),
        );
    with_fallback(router, "the side port serves /health, /ready and /metrics")
}

/// Starts serving `address` on a background thread. Errors other than "address in use" (a bad
/// address, no permission) are returned at once.
pub fn start(address: SocketAddr, answers: Arc<dyn ProbeAnswers>) -> io::Result<SidePortStart> {
    let first = match TcpListener::bind(address) {
        Ok(listener) => Some(listener),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => None,
        Err(error) => return Err(error),
    };
    let outcome = if first.is_some() {
        SidePortStart::Serving
    } else {
        SidePortStart::Standby
    };
    let app = app(answers);
    thread::Builder::new()
        .name("beacon-side-port".into())
        .spawn(move || {
            let mut listener = first;
            loop {
                match listener.take() {
                    Some(bound) => {
                        let _ = serve(bound, app.clone(), Limits::default());
                    }
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
    use axum::http::StatusCode;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    struct Fixed(&'static str);

    impl ProbeAnswers for Fixed {
        fn health(&self) -> Response {
            Response::new(StatusCode::OK, "text/plain", self.0)
        }
        fn ready(&self) -> Response {
            Response::new(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not yet")
        }
        fn metrics(&self, accept: Option<&str>) -> Response {
            Response::new(
                StatusCode::OK,
                "text/plain",
                format!("accept={}", accept.unwrap_or("-")),
            )
        }
    }

    fn get(address: SocketAddr, path: &str, accept: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: a\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn a_second_server_waits_for_the_port() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        assert_eq!(
            start(address, Arc::new(Fixed("first"))).unwrap(),
            SidePortStart::Serving
        );
        assert_eq!(
            start(address, Arc::new(Fixed("second"))).unwrap(),
            SidePortStart::Standby
        );
        assert!(get(address, "/health", "*/*").ends_with("first"));
        assert!(get(address, "/ready", "*/*").starts_with("HTTP/1.1 503"));
        assert!(get(address, "/metrics", "application/openmetrics-text")
            .ends_with("accept=application/openmetrics-text"));
        assert!(get(address, "/other", "*/*").starts_with("HTTP/1.1 404"));
        // An address this host does not have is an error at once, not a silent standby.
        assert!(start("192.0.2.1:9".parse().unwrap(), Arc::new(Fixed(""))).is_err());
    }
}
