//! `run`'s loop end to end inside the process: a real app child, a readiness endpoint on a real
//! socket, the memberships against a fake Caddy (crate::testing::FakeCaddy, the real registry),
//! and signals sent to the loop as the signal thread would send them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::readiness::ReadyProbe;
use super::supervisor::Happening;
use super::{supervise, RunOptions};
use crate::admin::AdminAddress;
use crate::join::pool::PoolSettings;
use crate::join::JoinMode;
use crate::state::status_server::Listen;
use crate::testing::fake_caddy::FakeCaddy;
use crate::upstream::Upstream;

/// An app's readiness endpoint on a real socket: answers `status` (503 until set to 200).
struct ReadyEndpoint {
    address: SocketAddr,
    status: Arc<AtomicU16>,
    probes: Arc<AtomicU16>,
}

impl ReadyEndpoint {
    fn start(status: u16) -> ReadyEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().expect("its address");
        let status = Arc::new(AtomicU16::new(status));
        let probes = Arc::new(AtomicU16::new(0));
        let (answer, counted) = (Arc::clone(&status), Arc::clone(&probes));
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                counted.fetch_add(1, Ordering::Relaxed);
                let code = answer.load(Ordering::Relaxed);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        ReadyEndpoint {
            address,
            status,
            probes,
        }
    }
}

fn options(app: &ReadyEndpoint, command: &[&str], listen: Option<Listen>) -> RunOptions {
    let upstream = Upstream::parse(&app.address.to_string()).expect("an upstream");
    RunOptions {
        admins: vec![AdminAddress::parse("http://fake-caddy:2019", None).expect("an address")],
        ready: ReadyProbe::parse(None, &upstream).expect("a probe"),
        upstream,
        mode: JoinMode::Pool {
            pool: PoolSettings {
                name: "api".into(),
                lease: Duration::from_secs(30),
                weight: 100,
            },
            fallback: None,
        },
        drain_timeout: Duration::from_secs(5),
        listen,
        command: command.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Starts `run`'s loop on a thread; returns where to send signals and its exit code.
fn start(caddy: &FakeCaddy, options: RunOptions) -> (Sender<Happening>, JoinHandle<i32>) {
    let (sender, happenings) = channel();
    let clients = vec![caddy.client()];
    let signals = sender.clone();
    let running = thread::spawn(move || {
        supervise(options, clients, sender, happenings).expect("run's loop starts")
    });
    (signals, running)
}

fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn sigterm() -> i32 {
    Signal::SIGTERM as i32
}

#[test]
fn registers_once_the_app_is_ready_and_on_sigterm_drains_then_stops_the_app() {
    let app = ReadyEndpoint::start(503);
    let caddy = FakeCaddy::with_pool("api");
    let listen = Listen {
        address: "127.0.0.1:0".parse().expect("an address"),
        explicit: true,
    };
    let (signals, running) = start(&caddy, options(&app, &["sleep", "30"], Some(listen)));
    until("the readiness probes", || {
        app.probes.load(Ordering::Relaxed) >= 3
    });
    assert!(
        caddy.members("api").is_empty(),
        "not registered while the app says it is not ready"
    );
    app.status.store(200, Ordering::Relaxed);
    until("the registration", || caddy.members("api").len() == 1);
    assert_eq!(caddy.members("api")[0].0, app.address.to_string());

    signals
        .send(Happening::Signal(sigterm()))
        .expect("the loop");
    let code = running.join().expect("run's loop");
    assert_eq!(
        code, 0,
        "sleep stopped by the SIGTERM passed on: a clean stop"
    );
    assert!(caddy.members("api").is_empty(), "it left the pool");
    let writes: Vec<String> = caddy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(
        writes.last().map(String::as_str),
        Some("POST /beacon/pools/api/remove"),
        "drained and removed before the app was stopped: {writes:?}"
    );
}

#[test]
fn signals_a_process_manager_sends_go_to_the_app_and_its_exit_is_the_companion_s() {
    let app = ReadyEndpoint::start(200);
    let caddy = FakeCaddy::with_pool("api");
    // The app exits 7 on SIGHUP (as an app that cannot reload might); the companion leaves
    // Caddy first and then exits with the app's status.
    let script = "trap 'exit 7' HUP; while :; do sleep 0.05; done";
    let (signals, running) = start(&caddy, options(&app, &["sh", "-c", script], None));
    until("the registration", || caddy.members("api").len() == 1);
    signals
        .send(Happening::Signal(Signal::SIGHUP as i32))
        .expect("the loop");
    assert_eq!(running.join().expect("run's loop"), 7);
    assert!(caddy.members("api").is_empty(), "taken out of the pool");
}

#[test]
fn without_an_app_it_joins_the_one_running_elsewhere_and_leaves_on_sigint() {
    let app = ReadyEndpoint::start(200);
    let caddy = FakeCaddy::with_pool("api");
    let (signals, running) = start(&caddy, options(&app, &[], None));
    until("the registration", || caddy.members("api").len() == 1);
    signals
        .send(Happening::Signal(Signal::SIGINT as i32))
        .expect("the loop");
    assert_eq!(
        running.join().expect("run's loop"),
        0,
        "every Caddy left cleanly"
    );
    assert!(caddy.members("api").is_empty());
}

#[test]
fn an_app_that_never_becomes_ready_is_never_registered_and_still_stops_cleanly() {
    let app = ReadyEndpoint::start(503);
    let caddy = FakeCaddy::with_pool("api");
    let (signals, running) = start(&caddy, options(&app, &["sleep", "30"], None));
    until("the readiness probes", || {
        app.probes.load(Ordering::Relaxed) >= 3
    });
    signals
        .send(Happening::Signal(sigterm()))
        .expect("the loop");
    assert_eq!(running.join().expect("run's loop"), 0);
    assert!(!caddy.requests().iter().any(|r| r.contains("/register")));
}
