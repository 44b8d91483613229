//! What one Caddy's active health checks say about each upstream, merged from two sources:
//! the `healthy`/`unhealthy` events Caddy streams to the companion's log sink (near real time,
//! but the events app is experimental and only reports changes) and the
//! `caddy_reverse_proxy_upstreams_healthy` gauge of Caddy's `/metrics` (refreshed every 10 s).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where a health reading came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Caddy's event stream.
    Events,
    /// Caddy's health gauge.
    Metrics,
    /// The beacon module's own checks (`GET /beacon/pools`).
    Module,
}

impl Source {
    /// For `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Metrics => "metrics",
            Source::Module => "beacon module",
        }
    }
}

/// The latest reading for one upstream.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Healthy according to Caddy.
    pub healthy: bool,
    /// Since when it has been in this state (as far as the companion knows).
    pub since: Instant,
    /// Where the reading came from.
    pub source: Source,
    /// When an event last spoke about it.
    last_event: Option<Instant>,
}

/// A parsed line of Caddy's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An active check changed an upstream's state.
    Health {
        /// The upstream's dial address.
        host: String,
        /// The new state.
        healthy: bool,
    },
    /// A config (re)load finished: every upstream's health state was reset.
    Started,
    /// Anything else.
    Other,
}

/// Parses one JSON line from Caddy's `events` logger.
pub fn parse_event(line: &str) -> Option<Event> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value.get("logger").and_then(Value::as_str) != Some("events") {
        return None;
    }
    Some(match value.get("name").and_then(Value::as_str) {
        Some(name @ ("healthy" | "unhealthy")) => {
            let host = value
                .pointer("/data/host")
                .and_then(Value::as_str)?
                .to_owned();
            Event::Health {
                host,
                healthy: name == "healthy",
            }
        }
        Some("started") => Event::Started,
        _ => Event::Other,
    })
}

/// Parses `caddy_reverse_proxy_upstreams_healthy{upstream="..."} 1` lines.
pub fn parse_gauges(metrics: &str) -> Vec<(String, bool)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("caddy_reverse_proxy_upstreams_healthy{"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once('}')?;
            let upstream = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("upstream=\""))?
                .strip_suffix('"')?;
            Some((
                upstream.to_owned(),
                value.trim().parse::<f64>().ok()? == 1.0,
            ))
        })
        .collect()
}

/// A gauge reading younger than this after an event for the same upstream is ignored: the gauge
/// lags by up to 10 s and would flip the fresher event back.
const GAUGE_LAG: Duration = Duration::from_secs(15);

/// Health of every upstream one Caddy reports, and the transitions seen.
#[derive(Debug, Default)]
pub struct HealthBoard {
    readings: HashMap<String, Reading>,
    /// When the last event of any kind arrived (the sink is known to work).
    pub last_event_at: Option<Instant>,
    /// When Caddy last reported a (re)load.
    pub last_reload_at: Option<Instant>,
}

/// A change of state worth logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The upstream.
    pub host: String,
    /// The new state.
    pub healthy: bool,
    /// The previous state, None on the first reading.
    pub was: Option<bool>,
}

impl HealthBoard {
    /// Applies one event; returns a transition when a health state changed.
    pub fn apply_event(&mut self, event: Event, now: Instant) -> Option<Transition> {
        self.last_event_at = Some(now);
        match event {
            Event::Health { host, healthy } => {
                let transition = self.set(&host, healthy, Source::Events, now);
                if let Some(reading) = self.readings.get_mut(&host) {
                    reading.last_event = Some(now);
                }
                transition
            }
            Event::Started => {
                self.last_reload_at = Some(now);
                None
            }
            Event::Other => None,
        }
    }

    /// Applies the gauges of one `/metrics` read; returns the transitions.
    pub fn apply_gauges(&mut self, gauges: &[(String, bool)], now: Instant) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for (host, healthy) in gauges {
            let recent_event = self
                .readings
                .get(host)
                .and_then(|r| r.last_event)
                .is_some_and(|at| now.duration_since(at) < GAUGE_LAG);
            if !recent_event {
                transitions.extend(self.set(host, *healthy, Source::Metrics, now));
            }
        }
        transitions
    }

    fn set(
        &mut self,
        host: &str,
        healthy: bool,
        source: Source,
        now: Instant,
    ) -> Option<Transition> {
        match self.readings.get_mut(host) {
            Some(reading) if reading.healthy == healthy => {
                reading.source = source;
                None
            }
            Some(reading) => {
                let was = reading.healthy;
                *reading = Reading {
                    healthy,
                    since: now,
                    source,
                    last_event: reading.last_event,
                };
                Some(Transition {
                    host: host.to_owned(),
                    healthy,
                    was: Some(was),
                })
            }
            None => {
                self.readings.insert(
                    host.to_owned(),
                    Reading {
                        healthy,
                        since: now,
                        source,
                        last_event: None,
                    },
                );
                Some(Transition {
                    host: host.to_owned(),
                    healthy,
                    was: None,
                })
            }
        }
    }

    /// Records the beacon module's verdict on an upstream; a transition when it changed.
    pub fn apply_module_verdict(
        &mut self,
        host: &str,
        healthy: bool,
        now: Instant,
    ) -> Option<Transition> {
        self.set(host, healthy, Source::Module, now)
    }

    /// The reading for an upstream.
    pub fn get(&self, host: &str) -> Option<&Reading> {
        self.readings.get(host)
    }

    /// How long an upstream has been unhealthy without a break, if it is.
    pub fn unhealthy_for(&self, host: &str, now: Instant) -> Option<Duration> {
        self.readings
            .get(host)
            .filter(|r| !r.healthy)
            .map(|r| now.duration_since(r.since))
    }

    /// Forgets an upstream (after it was removed).
    pub fn forget(&mut self, host: &str) {
        self.readings.remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caddy_event_lines() {
        let line = r#"{"level":"debug","ts":1.5,"logger":"events","msg":"event","name":"unhealthy","id":"x","origin":"http.handlers.reverse_proxy","data":{"host":"127.0.0.1:9003"}}"#;
        assert_eq!(
            parse_event(line),
            Some(Event::Health {
                host: "127.0.0.1:9003".into(),
                healthy: false
            })
        );
        let started =
            r#"{"level":"debug","logger":"events","msg":"event","name":"started","data":null}"#;
        assert_eq!(parse_event(started), Some(Event::Started));
        assert_eq!(
            parse_event(r#"{"logger":"http.log","name":"healthy"}"#),
            None
        );
        assert_eq!(parse_event("not json"), None);
        assert_eq!(
            parse_event(r#"{"logger":"events","name":"healthy","data":{}}"#),
            None
        );
    }

    #[test]
    fn events_win_over_a_lagging_gauge() {
        let mut board = HealthBoard::default();
        let t0 = Instant::now();
        assert_eq!(board.apply_gauges(&[("a:1".into(), true)], t0).len(), 1);
        let change = board.apply_event(
            Event::Health {
                host: "a:1".into(),
                healthy: false,
            },
            t0 + Duration::from_secs(1),
        );
        assert_eq!(
            change,
            Some(Transition {
                host: "a:1".into(),
                healthy: false,
                was: Some(true)
            })
        );
        // The gauge still says healthy for a while: ignored.
        assert!(board
            .apply_gauges(&[("a:1".into(), true)], t0 + Duration::from_secs(5))
            .is_empty());
        assert!(!board.get("a:1").unwrap().healthy);
        assert_eq!(
            board.unhealthy_for("a:1", t0 + Duration::from_secs(11)),
            Some(Duration::from_secs(10))
        );
        // Long after the event, the gauge is trusted again.
        assert_eq!(
            board
                .apply_gauges(&[("a:1".into(), true)], t0 + Duration::from_secs(30))
                .len(),
            1
        );
        assert_eq!(
            board.unhealthy_for("a:1", t0 + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn a_reload_does_not_restart_the_unhealthy_clock() {
        let mut board = HealthBoard::default();
        let t0 = Instant::now();
        board.apply_event(
            Event::Health {
                host: "a:1".into(),
                healthy: false,
            },
            t0,
        );
        board.apply_event(Event::Started, t0 + Duration::from_secs(5));
        // After a reload Caddy re-reports the same state: no transition, same start.
        assert_eq!(
            board.apply_event(
                Event::Health {
                    host: "a:1".into(),
                    healthy: false
                },
                t0 + Duration::from_secs(6)
            ),
            None
        );
        assert_eq!(
            board.unhealthy_for("a:1", t0 + Duration::from_secs(8)),
            Some(Duration::from_secs(8))
        );
    }

    #[test]
    fn reads_the_healthy_gauge() {
        let metrics = "# TYPE caddy_reverse_proxy_upstreams_healthy gauge\ncaddy_reverse_proxy_upstreams_healthy{upstream=\"10.0.0.1:80\"} 1\ncaddy_reverse_proxy_upstreams_healthy{upstream=\"10.0.0.2:80\"} 0\n";
        assert_eq!(
            parse_gauges(metrics),
            vec![("10.0.0.1:80".into(), true), ("10.0.0.2:80".into(), false)]
        );
    }
}
