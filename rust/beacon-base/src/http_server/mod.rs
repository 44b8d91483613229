//! The HTTP server behind the probes and scrapes: the side port, the companion's `/status` and
//! `/metrics`. hyper (through an axum `Router`) on a current-thread tokio runtime that the
//! serving thread builds for itself — so nothing starts at import, in a gunicorn master, or
//! before a fork — with the limits that keep a probe answering whatever other clients do:
//!
//! - one task per connection; a cap on open connections, past which the connection idle for
//!   longest is closed (a flood of idle sockets pushes out only itself);
//! - a deadline for the whole first request head, answered 408 when it passes (a client
//!   trickling bytes holds nothing up), 431 past 16 KiB, 400 for a malformed head, 505 for an
//!   HTTP version other than 1.0/1.1; keep-alive afterwards, with an idle timeout;
//! - slow work (rendering `/metrics`) runs on one blocking thread, never on the thread that
//!   answers `/health` (see [`off_thread`]).

mod connections;
mod first_head;

/// Entry points for the fuzz targets (fuzz/), compiled only under cargo fuzz.
#[cfg(fuzzing)]
pub mod fuzzing {
    /// Judges a first request head as a connection would deliver it.
    pub fn judge_first_head(head: &[u8]) {
        let _ = super::first_head::judge(head);
    }
}
mod prefixed;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
pub use axum::http::StatusCode;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use connections::Connections;
use first_head::{read_first_head, FirstHead};
use prefixed::Prefixed;

/// How much a server tolerates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; past it the one idle for longest is closed.
    pub max_connections: usize,
    /// Time for a client to send a whole request head.
    pub head_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A probe head arrives in one packet; 5 s is generous and still well under the 10 s a
        // kubelet waits by default. 90 s of keep-alive outlasts a 15 s or 60 s scrape interval.
        Limits {
            max_connections: 64,
            head_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// What a handler answers: a status, a content type and a body, never cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// 404 with a hint.
    pub fn not_found(hint: &str) -> Self {
        Response::new(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("not found: {hint}\n"),
        )
    }
}

impl IntoResponse for Response {
    fn into_response(self) -> axum::response::Response {
        let mut response = axum::response::Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A router whose unknown paths answer 404 with `hint` (methods other than GET and HEAD on a
/// known path get axum's 405).
pub fn with_fallback(router: Router, hint: &'static str) -> Router {
    router.fallback(move || async move { Response::not_found(hint) })
}

/// Runs `work` on the runtime's blocking thread (one per server, so renders queue instead of
/// piling up threads) and answers 503 if it panicked. For answers that take milliseconds, such
/// as rendering 1,000 series: the thread that answers `/health` never waits for them.
pub async fn off_thread(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Response::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "the answer could not be produced\n",
        )
    })
}

/// Serves `app` on `listener` until the listener fails; blocks the calling thread, which runs
/// the server's own current-thread runtime.
pub fn serve(listener: TcpListener, app: Router, limits: Limits) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(1)
        .thread_keep_alive(Duration::from_secs(30))
        .thread_name("beacon-http-render")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let connections = Arc::new(Connections::new(limits.max_connections));
        tokio::spawn(
            connections
                .clone()
                .close_idle_every_second(limits.idle_timeout),
        );
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) if is_transient(&error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Some(connection) = connections.admit() else {
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let closed = connection.closed();
                tokio::select! {
                    () = serve_connection(stream, app, limits, &connection) => {}
                    () = closed => {}
                }
            });
        }
    })
}

fn is_transient(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected | io::ErrorKind::Unsupported
    )
}

async fn serve_connection(
    mut stream: TcpStream,
    app: Router,
    limits: Limits,
    connection: &connections::Connection,
) {
    let _ = stream.set_nodelay(true);
    let head = match read_first_head(&mut stream, limits.head_timeout).await {
        FirstHead::Complete(head) => head,
        FirstHead::Refused(answer) => {
            let _ = first_head::send_refusal(&mut stream, answer).await;
            return;
        }
        FirstHead::Nothing => return,
    };
    let busy = connection.busy_marker();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = busy.enter();
            let call = tower::ServiceExt::oneshot(app.clone(), request.map(Body::new));
            async move {
                let response = call.await;
                drop(guard);
                response
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(first_head::MAX_HEAD)
        .keep_alive(true);
    let _ = builder
        .serve_connection(TokioIo::new(Prefixed::new(head, stream)), service)
        .await;
}

#[cfg(test)]
mod tests;
