//! The companion's HTTP client, for Caddy's Admin API (over TCP, a Unix socket, or HTTPS with a
//! private CA and a client certificate, as Caddy's remote admin endpoint requires) and the app's
//! readiness URL: reqwest, one request per connection (the admin server is replaced on every
//! config change), no proxies, no redirects.
//!
//! Its limits are what keep the companion honest against a peer that misbehaves: one deadline
//! for the whole exchange (a server sending a byte a second cannot stretch a 2 s probe), a cap
//! on what is read (a 64 MiB `/ready` body costs nothing), and no CR or LF in anything that goes
//! into the request line or a header.
//!
//! reqwest's async client on a current-thread runtime owned by the client, rather than its
//! blocking client: the blocking client applies its timeout to each read (a trickling peer
//! stretches it without end) and runs one more thread per client; here one `tokio::time::timeout`
//! covers connect, TLS, head and body, and the calling thread drives the exchange.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beacon_base::error_chain::error_chain;
use beacon_base::tls_files::{configure_reqwest, TlsFiles};
/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
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

/// A client for one endpoint. Cheap to clone (the connection settings and runtime are shared).
/// Not for use inside an async task: it blocks the calling thread.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    runtime: Arc<tokio::runtime::Runtime>,
    base: String,
}

impl HttpClient {
    /// A client for `endpoint`: plain HTTP, or HTTPS when `tls` is given (its CA trusted besides
    /// the system's roots, its client certificate presented).
    pub fn new(endpoint: &Endpoint, tls: Option<&TlsFiles>) -> Result<HttpClient, String> {
        let mut builder = reqwest::Client::builder()
            // One request per connection: Caddy replaces its admin server on every config change.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            // HTTP_PROXY and friends are for the app's outbound traffic, not for reaching Caddy.
            .no_proxy()
            .tcp_nodelay(true)
            .user_agent(concat!("caddy-beacon/", env!("CARGO_PKG_VERSION")));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = match endpoint {
            Endpoint::Tcp(authority) => format!("{scheme}://{authority}"),
            Endpoint::Unix(path) => {
                builder = builder.unix_socket(path.clone());
                // Caddy's admin does not check the host of requests arriving on a socket.
                format!("{scheme}://localhost")
            }
        };
        let client = configure_reqwest(builder, tls)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| error_chain(&e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP client's runtime: {e}"))?;
        Ok(HttpClient {
            client,
            runtime: Arc::new(runtime),
            base,
        })
    }

    /// Sends one request and reads the whole answer, all within `timeout` and at most
    /// `max_answer` bytes of body (a larger answer is an error, and nothing past the cap is
    /// kept). Errors are transport errors (or a refused request), as text.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        extra_headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
        max_answer: usize,
    ) -> Result<HttpResponse, String> {
        check_request(method, path, extra_headers, &self.base)?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        // Said, not only done: the peer frees the connection at once, and a proxy in between
        // knows the answer ends with it.
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Connection", "close");
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_vec());
        }
        let exchange = async move {
            let mut response = request.send().await.map_err(|e| error_chain(&e))?;
            if response
                .content_length()
                .is_some_and(|length| length > max_answer as u64)
            {
                return Err(format!("the answer is larger than {max_answer} bytes"));
            }
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut collected = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
                if collected.len() + chunk.len() > max_answer {
                    return Err(format!("the answer is larger than {max_answer} bytes"));
                }
                collected.extend_from_slice(&chunk);
            }
            Ok(HttpResponse {
                status,
                etag,
                body: collected,
            })
        };
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, exchange).await })
            .unwrap_or_else(|_| Err(format!("no whole answer within {timeout:?}")))
    }
}

/// Refuses text that would end the request line or a header early (CR, LF) or is otherwise not
/// allowed there (other control characters).
fn check_header_text(what: &str, text: &str) -> Result<(), String> {
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!(
            "refusing to send a {what} with control characters: {:?}",
            text.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

fn check_request(
    method: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    base: &str,
) -> Result<(), String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("refusing to send the method {method:?}"));
    }
    if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "refusing to send the target {:?}: only visible ASCII, from /",
            path.chars().take(80).collect::<String>()
        ));
    }
    for (name, value) in extra_headers {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("refusing to send the header name {name:?}"));
        }
        check_header_text("header value", value)?;
    }
    check_header_text("Host", base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

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
            let error = HttpClient::new(&nowhere, None)
                .unwrap()
                .send(method, path, &headers, None, t, MAX_ANSWER)
                .unwrap_err();
            assert!(
                error.starts_with("refusing"),
                "{method:?} {path:?} {headers:?}: {error}"
            );
        }
        let bad_host = Endpoint::Tcp("a\r\nb:1".into());
        let client = HttpClient::new(&bad_host, None).unwrap();
        assert!(client
            .send("GET", "/", &[], None, t, MAX_ANSWER)
            .unwrap_err()
            .starts_with("refusing"));
    }

    #[test]
    fn one_deadline_for_the_whole_exchange_and_a_cap_on_the_answer() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
        std::thread::spawn(move || {
            // First connection: one byte every 200 ms, forever (bounded by the test's end).
            let (mut slow, _) = listener.accept().unwrap();
            let _ = slow.read(&mut [0u8; 4096]);
            std::thread::spawn(move || {
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                    .iter()
                    .cycle()
                    .take(100)
                {
                    if slow.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            // Second: a large answer.
            let (mut big, _) = listener.accept().unwrap();
            let _ = big.read(&mut [0u8; 4096]);
            let _ = big.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n");
            let _ = big.write_all(&vec![b'x'; 4_000_000]);
        });
        let client = HttpClient::new(&endpoint, None).unwrap();
        let started = std::time::Instant::now();
        let error = client
            .send(
                "GET",
                "/ready",
                &[],
                None,
                Duration::from_millis(700),
                MAX_ANSWER,
            )
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "{:?}",
            started.elapsed()
        );
        assert!(error.contains("no whole answer within"), "{error}");
        let error = client
            .send("GET", "/ready", &[], None, Duration::from_secs(5), 1 << 20)
            .unwrap_err();
        assert!(error.contains("larger than 1048576 bytes"), "{error}");
    }

    #[test]
    fn speaks_over_a_unix_socket_and_reads_the_etag() {
        let dir = std::env::temp_dir().join(format!("beacon-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).unwrap();
            assert!(String::from_utf8_lossy(&head[..n]).starts_with("GET /config/ HTTP/1.1\r\n"));
            stream.write_all(b"HTTP/1.1 200 OK\r\nEtag: \"/config/ ab\"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").unwrap();
        });
        let client = HttpClient::new(&Endpoint::Unix(path), None).unwrap();
        let answer = client
            .send(
                "GET",
                "/config/",
                &[],
                None,
                Duration::from_secs(5),
                MAX_ANSWER,
            )
            .unwrap();
        assert_eq!(
            (
                answer.status,
                answer.etag.as_deref(),
                answer.body.as_slice()
            ),
            (200, Some("\"/config/ ab\""), &b"{}"[..])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
