use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::routing::get;

use super::*;

fn start(limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let app = with_fallback(
        Router::new()
            .route(
                "/health",
                get(|headers: axum::http::HeaderMap| async move {
                    let accept = headers
                        .get("accept")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    Response::new(
                        StatusCode::OK,
                        "application/json",
                        format!("{{\"accept\":{accept:?}}}"),
                    )
                }),
            )
            .route(
                "/slow",
                get(|| {
                    off_thread(|| {
                        std::thread::sleep(Duration::from_millis(1500));
                        Response::new(StatusCode::OK, "text/plain", "done")
                    })
                }),
            ),
        "try /health",
    );
    std::thread::spawn(move || serve(listener, app, limits));
    address
}

fn ask(address: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn quick() -> Limits {
    Limits {
        max_connections: 8,
        head_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_secs(2),
    }
}

#[test]
fn answers_get_and_head_refuses_other_methods_and_unknown_paths() {
    let address = start(quick());
    let ok = ask(
        address,
        b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
    );
    assert!(
        ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("{\"accept\":\"text/plain\"}"),
        "{ok}"
    );
    assert!(
        ok.to_ascii_lowercase().contains("cache-control: no-store"),
        "{ok}"
    );
    let head = ask(
        address,
        b"HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(ask(
        address,
        b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .contains("not found: try /health"));
    assert!(ask(
        address,
        b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 405"));
}

#[test]
fn keeps_connections_alive_for_scrapers() {
    let address = start(quick());
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 1024];
        let read = stream.read(&mut buffer).unwrap();
        assert!(
            buffer[..read].starts_with(b"HTTP/1.1 200 OK"),
            "{}",
            String::from_utf8_lossy(&buffer[..read])
        );
    }
}

#[test]
fn a_trickled_head_gets_408_and_bad_heads_get_clear_answers() {
    let address = start(quick());
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /hea").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(ask(address, b"GET /health HTTP/3\r\n\r\n").starts_with("HTTP/1.1 505"));
    assert!(ask(address, b"GET /health\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = [
        &b"GET /health HTTP/1.1\r\nX: "[..],
        &vec![b'a'; 1 << 20],
        b"\r\n\r\n",
    ]
    .concat();
    assert!(ask(address, &huge).starts_with("HTTP/1.1 431"));
}

#[test]
fn idle_connections_past_the_cap_make_room_for_a_probe() {
    let address = start(Limits {
        head_timeout: Duration::from_secs(30),
        ..quick()
    });
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let answer = ask(
        address,
        b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The oldest idle ones were closed to keep the cap.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(first.read(&mut [0u8; 16]).unwrap(), 0);
}

#[test]
fn slow_work_off_the_runtime_does_not_hold_up_health() {
    let address = start(quick());
    let slow = std::thread::spawn(move || {
        ask(
            address,
            b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert!(ask(
        address,
        b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert!(slow.join().unwrap().ends_with("done"));
}
