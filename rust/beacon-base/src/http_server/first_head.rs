//! The first request head of a connection, read under one deadline before hyper sees it.
//!
//! hyper's own header timeout has changed meaning between releases (from the first byte, or from
//! the connection's start) and answers nothing when it fires; here the deadline covers the
//! whole head from the moment the connection is accepted, and what a probe server should say
//! about a bad head is said plainly: 408, 431, 400 (no version, bare LF line ends, both
//! Content-Length and Transfer-Encoding, a target that is not ASCII), 505. The bytes read are
//! handed to hyper unchanged (see `prefixed`), which parses them again.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest request head accepted (also hyper's read buffer for later requests).
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// Most header fields accepted (hyper's own limit is 100).
const MAX_HEADERS: usize = 100;

/// What the first head turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstHead {
    /// A whole head that looks like HTTP/1.x (and possibly the start of what follows it).
    Complete(Vec<u8>),
    /// Refused, with this status and reason.
    Refused(Refusal),
    /// The client closed, or never sent a byte before the deadline.
    Nothing,
}

/// A status and the one line that explains it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) struct Refusal {
    pub status: &'static str,
    pub why: &'static str,
}

const fn refuse(status: &'static str, why: &'static str) -> FirstHead {
    FirstHead::Refused(Refusal { status, why })
}

/// Reads until the end of the first head, `timeout` at most.
pub(super) async fn read_first_head(stream: &mut TcpStream, timeout: Duration) -> FirstHead {
    let mut head = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(verdict) = judge(&head) {
            return verdict;
        }
        if head.len() >= MAX_HEAD {
            return refuse(
                "431 Request Header Fields Too Large",
                "the request head is larger than 16 KiB",
            );
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return FirstHead::Nothing,
            Ok(Ok(read)) => head.extend_from_slice(&chunk[..read]),
            Err(_) if head.is_empty() => return FirstHead::Nothing,
            Err(_) => {
                return refuse(
                    "408 Request Timeout",
                    "the request head did not arrive in time",
                )
            }
        }
    }
}

/// A verdict once the head is complete or already wrong; None while more is needed.
pub(super) fn judge(head: &[u8]) -> Option<FirstHead> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n");
    // A LF not preceded by CR anywhere in what arrived so far: refuse at once rather than guess
    // where this head ends (a proxy in front may have guessed differently).
    let scanned = end.map_or(head.len(), |e| e + 4);
    if head[..scanned]
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Some(refuse("400 Bad Request", "lines must end with CRLF"));
    }
    if let Some(line_end) = head.windows(2).position(|w| w == b"\r\n") {
        if let Some(refusal) = check_request_line(&head[..line_end]) {
            return Some(refusal);
        }
    }
    let end = end?;
    let mut fields = 0;
    let (mut length, mut chunked) = (false, false);
    for line in head[..end].split(|b| *b == b'\n').skip(1) {
        fields += 1;
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        length |= name.eq_ignore_ascii_case(b"content-length");
        chunked |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    if fields > MAX_HEADERS {
        return Some(refuse(
            "431 Request Header Fields Too Large",
            "more than 100 header fields",
        ));
    }
    if length && chunked {
        return Some(refuse(
            "400 Bad Request",
            "both Content-Length and Transfer-Encoding",
        ));
    }
    Some(FirstHead::Complete(head.to_vec()))
}

fn check_request_line(line: &[u8]) -> Option<FirstHead> {
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Some(refuse("400 Bad Request", "expected METHOD TARGET HTTP/1.1"));
    };
    if method.is_empty() || target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Some(refuse(
            "400 Bad Request",
            "the request target must be visible ASCII",
        ));
    }
    match *version {
        b"HTTP/1.1" | b"HTTP/1.0" => None,
        v if v.starts_with(b"HTTP/") => Some(refuse(
            "505 HTTP Version Not Supported",
            "this server speaks HTTP/1.0 and HTTP/1.1",
        )),
        _ => Some(refuse("400 Bad Request", "expected METHOD TARGET HTTP/1.1")),
    }
}

/// Sends a refusal and closes.
pub(super) async fn send_refusal(stream: &mut TcpStream, refusal: Refusal) -> std::io::Result<()> {
    let body = format!("{}\n", refusal.why);
    let answer = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod unit {
    use super::*;

    fn status(head: &[u8]) -> Option<&'static str> {
        match judge(head) {
            Some(FirstHead::Refused(refusal)) => Some(refusal.status),
            Some(FirstHead::Complete(_)) => Some("complete"),
            _ => None,
        }
    }

    #[test]
    fn judges_heads() {
        assert_eq!(
            status(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some("complete")
        );
        assert_eq!(
            status(b"GET /health HTTP/1.1\r\nHost: a\r\n"),
            None,
            "needs more"
        );
        assert_eq!(status(b"GET /hea"), None, "needs more");
        assert_eq!(status(b"GET /health\r\n\r\n"), Some("400 Bad Request"));
        assert_eq!(
            status(b"GET /health HTTP/1.1\nHost: a\n\n"),
            Some("400 Bad Request")
        );
        assert_eq!(
            status(b"GET /health HTTP/2.0\r\n"),
            Some("505 HTTP Version Not Supported")
        );
        assert_eq!(
            status(b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n"),
            Some("400 Bad Request")
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some("400 Bad Request")
        );
        let many: Vec<u8> = [
            &b"GET / HTTP/1.1\r\n"[..],
            &b"X: y\r\n".repeat(101),
            b"\r\n",
        ]
        .concat();
        assert_eq!(status(&many), Some("431 Request Header Fields Too Large"));
    }
}
