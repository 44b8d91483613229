//! A minimal blocking HTTP/1.1 client over TCP or a Unix socket: one request per connection,
//! `Connection: close`, the whole answer read before returning. Enough for Caddy's Admin API and
//! for an app's readiness endpoint, without pulling an async stack into a small companion.
//!
//! Its limits are what keep the companion honest against a peer that misbehaves: one deadline
//! for the whole exchange (a server sending a byte a second cannot stretch a 2 s probe), a cap
//! on what is read (a 64 MiB `/ready` body costs nothing), and no CR or LF in anything that goes
//! into the request line or a header.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// Most an answer may weigh, head included, unless a caller asks for less: Caddy's whole config
/// for a large site list stays well under it.
pub const MAX_ANSWER: usize = 32 * 1024 * 1024;

trait Connection: Read + Write {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()>;
}

// The two stream types share these methods by name only, not through a trait.
macro_rules! connection {
    ($stream:ty) => {
        impl Connection for $stream {
            fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
                self.set_read_timeout(Some(timeout))?;
                self.set_write_timeout(Some(timeout))
            }
        }
    };
}
connection!(TcpStream);
connection!(UnixStream);

fn connect(endpoint: &Endpoint, deadline: Instant) -> std::io::Result<Box<dyn Connection>> {
    match endpoint {
        Endpoint::Tcp(authority) => {
            let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address");
            // Every address the name resolves to (localhost may give ::1 before 127.0.0.1).
            for address in authority.to_socket_addrs()? {
                match TcpStream::connect_timeout(&address, remaining(deadline)?) {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return Ok(Box::new(stream));
                    }
                    Err(error) => last_error = error,
                }
            }
            Err(last_error)
        }
        Endpoint::Unix(path) => Ok(Box::new(UnixStream::connect(path)?)),
    }
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
    }
    Ok(left)
}

/// Refuses text that would end the request line or a header early (CR, LF) or is otherwise not
/// allowed there (other control characters).
fn check_header_text(what: &str, text: &str) -> Result<(), String> {
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!("refusing to send a {what} with control characters: {:?}", text.chars().take(80).collect::<String>()));
    }
    Ok(())
}

/// Sends one request and reads the whole answer, all within `timeout` and at most `max_answer`
/// bytes (head included: a larger answer is an error, and nothing past the cap is kept).
/// Errors are transport errors (or a refused request), as text.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
    max_answer: usize,
) -> Result<HttpResponse, String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("refusing to send the method {method:?}"));
    }
    if path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!("refusing to send the target {:?}: only visible ASCII", path.chars().take(80).collect::<String>()));
    }
    for (name, value) in extra_headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("refusing to send the header name {name:?}"));
        }
        check_header_text("header value", value)?;
    }
    check_header_text("Host", endpoint.host_header())?;
    let deadline = Instant::now() + timeout;
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!("no whole answer within {timeout:?}"),
        _ => e.to_string(),
    };
    let mut stream = connect(endpoint, deadline).map_err(timed_out)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", endpoint.host_header());
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.set_timeouts(remaining(deadline).map_err(timed_out)?).map_err(|e| e.to_string())?;
    stream.write_all(&request).map_err(timed_out)?;
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Each read may wait only for what is left of the deadline, so a trickling peer cannot
        // stretch the whole exchange.
        stream.set_timeouts(remaining(deadline).map_err(timed_out)?).map_err(|e| e.to_string())?;
        let read = stream.read(&mut chunk).map_err(timed_out)?;
        if read == 0 {
            break;
        }
        if raw.len() + read > max_answer {
            return Err(format!("the answer is larger than {max_answer} bytes"));
        }
        raw.extend_from_slice(&chunk[..read]);
    }
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
    fn refuses_cr_lf_and_controls_before_connecting() {
        // Port 9 on 127.0.0.1 is not listening: a refusal must come before any connection.
        let nowhere = Endpoint::Tcp("127.0.0.1:9".into());
        let t = Duration::from_secs(1);
        for (method, path, headers) in [
            ("GET", "/ready\r\nX-Injected: 1", vec![]),
            ("GET", "/ready HTTP/1.0", vec![]),
            ("GET\r\n", "/", vec![]),
            ("GET", "/", vec![("If-Match", "\"a\"\r\nX-Injected: 1")]),
            ("GET", "/", vec![("X\nY", "1")]),
        ] {
            let error = send(&nowhere, method, path, &headers, None, t, MAX_ANSWER).unwrap_err();
            assert!(error.starts_with("refusing"), "{method:?} {path:?} {headers:?}: {error}");
        }
        let bad_host = Endpoint::Tcp("a\r\nb:1".into());
        assert!(send(&bad_host, "GET", "/", &[], None, t, MAX_ANSWER).unwrap_err().starts_with("refusing"));
    }

    #[test]
    fn one_deadline_for_the_whole_exchange_and_a_cap_on_the_answer() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
        std::thread::spawn(move || {
            // First connection: one byte every 200 ms, forever (bounded by the test's end).
            let (mut slow, _) = listener.accept().unwrap();
            std::thread::spawn(move || {
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".iter().cycle().take(100) {
                    if slow.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            // Second: a large answer.
            let (mut big, _) = listener.accept().unwrap();
            let _ = big.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n");
            let _ = big.write_all(&vec![b'x'; 4_000_000]);
        });
        let started = std::time::Instant::now();
        let error = send(&endpoint, "GET", "/ready", &[], None, Duration::from_millis(700), MAX_ANSWER).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1200), "{:?}", started.elapsed());
        assert!(error.contains("no whole answer within"), "{error}");
        let error = send(&endpoint, "GET", "/ready", &[], None, Duration::from_secs(5), 1 << 20).unwrap_err();
        assert!(error.contains("larger than 1048576 bytes"), "{error}");
    }

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
