//! A minimal blocking HTTP/1.1 client over TCP or a Unix socket: one request per connection,
//! `Connection: close`, the whole answer read before returning. Enough for Caddy's Admin API and
//! for an app's readiness endpoint, without pulling an async stack into a small companion.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Endpoint {
    /// The `Host` header to send: the authority for TCP; `localhost` for a Unix socket (Caddy's
    /// admin does not check the host of requests arriving on a socket).
    pub fn host_header(&self) -> &str {
        match self {
            Endpoint::Tcp(authority) => authority,
            Endpoint::Unix(_) => "localhost",
        }
    }
}

/// One HTTP answer.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    /// HTTP status.
    pub status: u16,
    /// The `Etag` header, if any.
    pub etag: Option<String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

fn connect(endpoint: &Endpoint, timeout: Duration) -> std::io::Result<Box<dyn Connection>> {
    match endpoint {
        Endpoint::Tcp(authority) => {
            let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address");
            for address in authority.to_socket_addrs()? {
                match TcpStream::connect_timeout(&address, timeout) {
                    Ok(stream) => {
                        stream.set_read_timeout(Some(timeout))?;
                        stream.set_write_timeout(Some(timeout))?;
                        stream.set_nodelay(true)?;
                        return Ok(Box::new(stream));
                    }
                    Err(error) => last_error = error,
                }
            }
            Err(last_error)
        }
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Ok(Box::new(stream))
        }
    }
}

/// Sends one request and reads the whole answer. Errors are transport errors, as text.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut stream = connect(endpoint, timeout).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", endpoint.host_header());
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(body) = body {
        stream.write_all(body).map_err(|e| e.to_string())?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    if raw.is_empty() {
        return Err("the connection was closed without an answer".to_owned());
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .filter(|line| line.starts_with("HTTP/"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("the answer is not HTTP")?;
    let mut etag = None;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("etag") {
                etag = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body).ok_or("the answer was cut short (malformed chunked body)")?
    } else {
        match length {
            // A connection closed mid-answer must not pass for a short, valid body.
            Some(length) if body.len() < length => return Err("the answer was cut short".to_owned()),
            Some(length) => body[..length].to_vec(),
            None => body.to_vec(),
        }
    };
    Ok(HttpResponse { status, etag, body })
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn parses_answers_and_refuses_truncated_ones() {
        let ok = parse_response(b"HTTP/1.1 200 OK\r\nEtag: \"/config/ ab\"\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((ok.status, ok.etag.as_deref(), ok.body.as_slice()), (200, Some("\"/config/ ab\""), &b"{}"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").is_err());
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
