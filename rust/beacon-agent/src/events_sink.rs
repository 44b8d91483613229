//! The receiving end of Caddy's event log: Caddy's `net` log writer connects here and streams
//! one JSON line per event; health events update the board at once, and a config (re)load pokes
//! the reconcile loop so it checks its registration right away.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crate::health::{parse_event, Event};
use crate::log;
use crate::registration::note_transition;
use crate::state::{lock, CaddyState, Control};

/// Longest line accepted; Caddy's event lines are a few hundred bytes.
const MAX_LINE: u64 = 64 * 1024;

/// Listens on `bind` and feeds what arrives into `state`. Only connections from `allowed` peers
/// are read (the events change what `/status` says and what gets reaped: not for anyone to
/// write). Returns the address actually bound.
pub fn start(
    bind: SocketAddr,
    allowed: Vec<IpAddr>,
    mine: String,
    state: Arc<Mutex<CaddyState>>,
    control: Arc<Control>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(bind)?;
    let address = listener.local_addr()?;
    thread::Builder::new().name("events-sink".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().map(|p| p.ip()).ok();
            if !peer.is_some_and(|ip| allowed.contains(&ip) || (ip.is_loopback() && allowed.iter().any(IpAddr::is_loopback))) {
                continue;
            }
            let (state, control, mine) = (state.clone(), control.clone(), mine.clone());
            let _ = thread::Builder::new().name("events-conn".into()).spawn(move || read_events(stream, &mine, &state, &control));
        }
    })?;
    Ok(address)
}

fn read_events(stream: TcpStream, mine: &str, state: &Mutex<CaddyState>, control: &Control) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                // An oversized line: skip to its end rather than parse half of it.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).map_or(true, |n| n == 0) {
                    return;
                }
            }
            Ok(_) => {
                let Some(event) = parse_event(line.trim_end()) else { continue };
                let reload = event == Event::Started;
                let mut guard = lock(state);
                if let Some(transition) = guard.board.apply_event(event, Instant::now()) {
                    note_transition(&mut guard, mine, &transition.host, transition.healthy, transition.was, "event stream");
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
pub fn default_bind(caddy_is_local: bool, upstream_host: Option<&str>) -> Option<SocketAddr> {
    if caddy_is_local {
        return Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    // A remote Caddy reaches this host at the address it dials for the app.
    let ip: IpAddr = upstream_host?.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, 0))
}

/// Logs once that events are off and why.
pub fn explain_off(reason: &str) {
    log::info(format!("health events from Caddy are off ({reason}); using Caddy's health gauge, refreshed every 10s"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_where_caddy_can_connect() {
        assert_eq!(default_bind(true, None), Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(default_bind(false, Some("10.0.0.5")), Some("10.0.0.5:0".parse().unwrap()));
        assert_eq!(default_bind(false, Some("[fd00::5]")), Some("[fd00::5]:0".parse().unwrap()));
        // A DNS name cannot be bound: events stay off, the gauge is used.
        assert_eq!(default_bind(false, Some("app.internal")), None);
    }
}
