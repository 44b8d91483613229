//! A minimal blocking HTTP/1.1 POST for OTLP/HTTP: one request per connection, with timeouts.
//! Only `http://` endpoints: collectors run beside the app; TLS is a later addition.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where spans are posted.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `host:port` to connect to and send as `Host`.
    pub authority: String,
    /// The request path, e.g. `/v1/traces`.
    pub path: String,
    /// The URL as configured, for messages.
    pub url: String,
}

impl Endpoint {
    /// Parses an `http://host[:port][/path]` URL; the port defaults to 80, the path to `/`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// OTLP endpoints are supported (run the collector beside the app)"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(format!("{url:?}: no valid host"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            || authority.ends_with(']')
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint { authority, path: path.to_owned(), url: url.to_owned() })
    }
}

/// Posts `body` and returns the response status code.
pub fn post(endpoint: &Endpoint, headers: &[(String, String)], body: &[u8], timeout: Duration) -> std::io::Result<u16> {
    let address = endpoint
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: caddy-beacon/{}\r\n",
        endpoint.path,
        endpoint.authority,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!((e.authority.as_str(), e.path.as_str()), ("127.0.0.1:4318", "/v1/traces"));
        assert_eq!(Endpoint::parse("http://collector").unwrap().authority, "collector:80");
        assert_eq!(Endpoint::parse("http://[::1]:4318/x").unwrap().authority, "[::1]:4318");
        assert!(Endpoint::parse("https://collector:4318").unwrap_err().contains("only http://"));
        assert!(Endpoint::parse("http:///v1/traces").is_err());
    }
}
