//! The receiving end of Caddy's event log: Caddy's `net` log writer connects here and streams
//! one JSON line per event; health events update the board at once, and a config (re)load pokes
//! the reconcile loop so it checks its registration right away.
//!
//! One thread runs a current-thread tokio runtime with a task per connection. Caddy keeps one
//! connection open per log writer (a reload opens a new one before closing the old), so a few
//! connections is all it ever needs: past `MAX_CONNECTIONS` the oldest is closed, and lines are
//! bounded, so nobody can grow the companion by connecting or by sending.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Notify;

use crate::admin::AdminAddress;
use crate::http_client::Endpoint;
use crate::join::config_edit::EventsSetting;
use crate::log;
use crate::state::health::{parse_event, Event};
use crate::state::{lock, CaddyState, Control};
use crate::upstream::Upstream;

/// Longest line accepted; Caddy's event lines are a few hundred bytes.
const MAX_LINE: u64 = 64 * 1024;
/// Connections kept at once; the oldest goes when another arrives.
const MAX_CONNECTIONS: usize = 8;

/// Starts the sink `setting` asks for, for the Caddy at `admin`; returns the address Caddy
/// should stream to (`tcp/host:port`), or None when events are off (said once, with why).
pub fn start_for(
    setting: &EventsSetting,
    admin: &AdminAddress,
    upstream: &Upstream,
    state: &Arc<Mutex<CaddyState>>,
    control: &Arc<Control>,
) -> Option<String> {
    let upstream_host = match &upstream.endpoint {
        Endpoint::Tcp(authority) => authority.rsplit_once(':').map(|(host, _)| host.to_owned()),
        Endpoint::Unix(_) => None,
    };
    let bind = match setting {
        EventsSetting::Off => {
            explain_off("--events off");
            return None;
        }
        EventsSetting::Listen(address) => *address,
        EventsSetting::Auto => match default_bind(admin.is_local(), upstream_host.as_deref()) {
            Some(address) => address,
            None => {
                explain_off("Caddy is remote and the upstream is not an IP address; see --events");
                return None;
            }
        },
    };
    // Only Caddy may write events: its admin host's addresses (loopback for a local Caddy).
    let allowed: Vec<IpAddr> = match &admin.endpoint {
        Endpoint::Unix(_) => vec![IpAddr::from([127, 0, 0, 1])],
        Endpoint::Tcp(authority) => authority
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    match start(
        bind,
        allowed,
        upstream.dial.clone(),
        state.clone(),
        control.clone(),
    ) {
        Ok(bound) => Some(format!("tcp/{bound}")),
        Err(error) => {
            explain_off(&format!("cannot listen on {bind}: {error}"));
            None
        }
    }
}

/// Listens on `bind` and feeds what arrives into `state`. Only connections from `allowed` peers
/// are read (the events change what `/status` says and what gets reaped: not for anyone to
/// write). Returns the address actually bound.
fn start(
    bind: SocketAddr,
    allowed: Vec<IpAddr>,
    mine: String,
    state: Arc<Mutex<CaddyState>>,
    control: Arc<Control>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind)?;
    let address = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    thread::Builder::new()
        .name("events-sink".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let mut open: VecDeque<Arc<Notify>> = VecDeque::new();
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let ip = peer.ip();
                    if !(allowed.contains(&ip)
                        || (ip.is_loopback() && allowed.iter().any(IpAddr::is_loopback)))
                    {
                        continue;
                    }
                    open.retain(|close| Arc::strong_count(close) > 1);
                    if open.len() >= MAX_CONNECTIONS {
                        if let Some(oldest) = open.pop_front() {
                            oldest.notify_one();
                        }
                    }
                    let close = Arc::new(Notify::new());
                    open.push_back(close.clone());
                    let (state, control, mine) = (state.clone(), control.clone(), mine.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            () = read_events(stream, &mine, &state, &control) => {}
                            () = close.notified() => {}
                        }
                    });
                }
            });
        })?;
    Ok(address)
}

async fn read_events(
    stream: tokio::net::TcpStream,
    mine: &str,
    state: &Mutex<CaddyState>,
    control: &Control,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_LINE => {
                // An oversized line: skip to its end rather than parse half of it.
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    match (&mut reader)
                        .take(MAX_LINE)
                        .read_until(b'\n', &mut rest)
                        .await
                    {
                        Ok(0) | Err(_) => return,
                        Ok(_) if rest.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
            }
            Ok(_) => {
                let Ok(text) = std::str::from_utf8(&line) else {
                    continue;
                };
                let Some(event) = parse_event(text.trim_end()) else {
                    continue;
                };
                let reload = event == Event::Started;
                let mut guard = lock(state);
                if let Some(transition) = guard.board.apply_event(event, Instant::now()) {
                    guard.note_transition(mine, &transition, "event stream");
                }
                drop(guard);
                if reload {
                    control.poke();
                }
            }
        }
    }
}

/// The address to bind for the events sink and the one Caddy should dial, for an upstream on
/// `upstream_host` and a Caddy that is local or not.
fn default_bind(caddy_is_local: bool, upstream_host: Option<&str>) -> Option<SocketAddr> {
    if caddy_is_local {
        return Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    // A remote Caddy reaches this host at the address it dials for the app.
    let ip: IpAddr = upstream_host?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, 0))
}

/// Logs once that events are off and why.
fn explain_off(reason: &str) {
    log::info(format!("health events from Caddy are off ({reason}); using Caddy's health gauge, refreshed every 10s"));
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;

    fn healthy_line(host: &str, healthy: bool) -> String {
        let name = if healthy { "healthy" } else { "unhealthy" };
        format!("{{\"logger\":\"events\",\"msg\":\"event\",\"name\":\"{name}\",\"data\":{{\"host\":\"{host}\"}}}}\n")
    }

    fn verdict(state: &Mutex<CaddyState>, host: &str) -> Option<bool> {
        lock(state).board.get(host).map(|r| r.healthy)
    }

    fn eventually(condition: impl Fn() -> bool) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            condition()
        })
    }

    #[test]
    fn junk_huge_lines_and_many_connections_do_not_stop_the_events() {
        let state = Arc::new(Mutex::new(CaddyState::default()));
        let control = Arc::new(Control::default());
        let address = start(
            "127.0.0.1:0".parse().unwrap(),
            vec!["127.0.0.1".parse().unwrap()],
            "127.0.0.1:9".into(),
            state.clone(),
            control,
        )
        .unwrap();
        // More connections than the sink keeps: the oldest ones are closed, nothing piles up.
        let idle: Vec<TcpStream> = (0..3 * MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        let mut caddy = TcpStream::connect(address).unwrap();
        caddy.write_all(b"not json\n\xff\xfe\n").unwrap();
        caddy.write_all(&vec![b'x'; 3 * MAX_LINE as usize]).unwrap();
        caddy.write_all(b"\n").unwrap();
        caddy
            .write_all(healthy_line("127.0.0.1:9", false).as_bytes())
            .unwrap();
        assert!(
            eventually(|| verdict(&state, "127.0.0.1:9") == Some(false)),
            "the event after the junk was read"
        );
        let mut first = &idle[0];
        first
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(
            std::io::Read::read(&mut first, &mut [0u8; 1]).unwrap(),
            0,
            "the oldest connection was closed"
        );
    }

    #[test]
    fn binds_where_caddy_can_connect() {
        assert_eq!(
            default_bind(true, None),
            Some(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert_eq!(
            default_bind(false, Some("10.0.0.5")),
            Some("10.0.0.5:0".parse().unwrap())
        );
        assert_eq!(
            default_bind(false, Some("[fd00::5]")),
            Some("[fd00::5]:0".parse().unwrap())
        );
        // A DNS name cannot be bound: events stay off, the gauge is used.
        assert_eq!(default_bind(false, Some("app.internal")), None);
    }
}
