//! A tiny blocking HTTP/1.1 server for probes and scrapes: one request per connection, GET and
//! HEAD only, short timeouts. Used by the side port and by the companion's status endpoint;
//! the hot path of an app never goes through it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// What a handler gets: the path (without query) and the `Accept` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The path, without the query string.
    pub path: String,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

/// What a handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response.
    pub fn new(status: &'static str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type, body: body.into() }
    }

    /// 404 with a hint.
    pub fn not_found(hint: &str) -> Self {
        Response::new("404 Not Found", "text/plain; charset=utf-8", format!("not found: {hint}\n"))
    }
}

/// Serves connections from `listener` one after the other until the listener fails. Each
/// connection is bounded by short timeouts, so a stuck client cannot hold the probe up for long.
pub fn serve(listener: TcpListener, handler: impl Fn(&Request) -> Response) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let _ = answer(stream, &handler);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn answer(mut stream: TcpStream, handler: &impl Fn(&Request) -> Response) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let accept = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("accept").then(|| value.trim().to_owned())
    });
    let response = match method {
        "GET" | "HEAD" => handler(&Request { path: target.split('?').next().unwrap_or("").to_owned(), accept }),
        _ => Response::new("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET and HEAD\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&response.body);
    }
    stream.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_head_and_refuses_other_methods() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            serve(listener, |request| match request.path.as_str() {
                "/health" => Response::new("200 OK", "application/json", format!("{{\"accept\":{:?}}}", request.accept.clone().unwrap_or_default())),
                _ => Response::not_found("try /health"),
            })
        });
        let ask = |raw: &str| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(raw.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        };
        let ok = ask("GET /health?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("{\"accept\":\"text/plain\"}"), "{ok}");
        assert!(ask("HEAD /health HTTP/1.1\r\n\r\n").ends_with("\r\n\r\n"));
        assert!(ask("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask("POST /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }
}
