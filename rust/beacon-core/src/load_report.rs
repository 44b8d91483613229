//! Load reports for the proxy: the answer to a request that carries
//! `endpoint-load-metrics-format: TEXT` gets an `endpoint-load-metrics` header in the ORCA TEXT
//! form (Envoy's load reports, which gRPC's weighted round robin reads):
//!
//! `TEXT cpu_utilization=0.31, application_utilization=0.52, rps_fractional=96.5, eps=0.2,
//! named_metrics.in_flight=3, named_metrics.loop_lag=0.004`
//!
//! What each value means for an asyncio app, over the window since the previous report (at
//! least [`REFRESH`] apart; every worker of the replica counted, through the shared store):
//! - `application_utilization`: how busy the replica's event loops were, the larger of two
//!   shares per worker: the time its process ran on a CPU (an asyncio worker runs its loop on
//!   one thread, so this is the loop's busy time; threads of a pool add to it) and the share of
//!   the watchdog's looks at the loop (ten a second per worker) that found it busy, running or
//!   blocked in a synchronous call, which uses no CPU. 1 means the loops had no idle moment.
//! - `cpu_utilization`: the CPU time of the replica's worker processes over its cores.
//! - `rps_fractional` and `eps`: requests and 5xx answers per second, all workers together.
//! - `named_metrics.in_flight`: requests in flight now; `named_metrics.loop_lag`: the largest
//!   lag a worker's loop showed at its last heartbeat, in seconds.
//!
//! A report is built at most once per [`REFRESH`] per process and reused until then; a request
//! without the header pays nothing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::process_metrics::read_pid;
use crate::RequestMetrics;

/// How long a report is reused (and the shortest window its rates are measured over).
pub const REFRESH: Duration = Duration::from_millis(500);

/// The replica's totals at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSample {
    /// When it was taken.
    pub at: Instant,
    /// Requests finished, all workers (dead ones included).
    pub requests: u64,
    /// Of those, answered with a 5xx.
    pub errors: u64,
    /// CPU seconds of the live worker processes.
    pub cpu_seconds: f64,
    /// Live workers.
    pub workers: usize,
    /// The watchdog's looks at the workers' loops so far, and how many found them busy.
    pub loop_looks: (u64, u64),
    /// Requests in flight now.
    pub in_flight: i64,
    /// The largest lag at a worker's last heartbeat, in seconds.
    pub loop_lag: f64,
}

impl LoadSample {
    /// Reads the replica's totals from the shared store and /proc.
    pub fn take(metrics: &RequestMetrics) -> LoadSample {
        let snapshot = metrics.snapshot();
        let requests = snapshot.iter().map(|s| s.count()).sum();
        let errors = snapshot
            .iter()
            .filter(|s| s.labels.status >= 500)
            .map(|s| s.count())
            .sum();
        let workers = metrics.workers();
        let cpu_seconds = workers
            .iter()
            .filter_map(|w| read_pid(w.pid))
            .map(|stats| stats.cpu_seconds)
            .sum();
        LoadSample {
            at: Instant::now(),
            requests,
            errors,
            cpu_seconds,
            workers: workers.len().max(1),
            loop_looks: metrics.loop_samples(),
            in_flight: workers
                .iter()
                .flat_map(|w| w.active.iter().map(|(_, n)| *n))
                .sum::<i64>()
                .max(0),
            loop_lag: workers
                .iter()
                .map(|w| w.loop_lag.as_secs_f64())
                .fold(0.0, f64::max),
        }
    }
}

/// The report for the window from `before` to `now`, on a machine with `cores` cores; rates
/// are 0 without a `before` (the first report of a process).
pub fn report_text(before: Option<&LoadSample>, now: &LoadSample, cores: usize) -> String {
    let (rps, eps, application, cpu) = match before {
        Some(before) => {
            let seconds = now.at.saturating_duration_since(before.at).as_secs_f64();
            if seconds <= 0.0 {
                (0.0, 0.0, 0.0, 0.0)
            } else {
                let workers = now.workers as f64;
                let cpu_seconds = (now.cpu_seconds - before.cpu_seconds).max(0.0);
                let busy = cpu_seconds / (seconds * workers);
                let looks = now.loop_looks.0.saturating_sub(before.loop_looks.0);
                let busy_looks = now.loop_looks.1.saturating_sub(before.loop_looks.1);
                let looked_busy = busy_looks as f64 / looks.max(1) as f64;
                (
                    now.requests.saturating_sub(before.requests) as f64 / seconds,
                    now.errors.saturating_sub(before.errors) as f64 / seconds,
                    busy.max(looked_busy).clamp(0.0, 1.0),
                    (cpu_seconds / (seconds * cores.max(1) as f64)).clamp(0.0, 1.0),
                )
            }
        }
        None => (0.0, 0.0, 0.0, 0.0),
    };
    format!(
        "TEXT cpu_utilization={cpu:.3}, application_utilization={application:.3}, \
         rps_fractional={rps:.2}, eps={eps:.2}, named_metrics.in_flight={}, \
         named_metrics.loop_lag={:.4}",
        now.in_flight, now.loop_lag
    )
}

/// Builds reports for one process: at most one per [`REFRESH`], reused until then.
#[derive(Debug, Default)]
pub struct LoadReporter {
    state: Mutex<ReporterState>,
}

#[derive(Debug, Default)]
struct ReporterState {
    previous: Option<LoadSample>,
    current: Option<(Instant, Arc<str>)>,
}

impl LoadReporter {
    /// The `endpoint-load-metrics` value to send now.
    pub fn header(&self, metrics: &RequestMetrics) -> Arc<str> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((built, text)) = &state.current {
            if built.elapsed() < REFRESH {
                return Arc::clone(text);
            }
        }
        let now = LoadSample::take(metrics);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let text: Arc<str> = report_text(state.previous.as_ref(), &now, cores).into();
        state.current = Some((now.at, Arc::clone(&text)));
        state.previous = Some(now);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant) -> LoadSample {
        LoadSample {
            at,
            requests: 0,
            errors: 0,
            cpu_seconds: 0.0,
            workers: 2,
            loop_looks: (0, 0),
            in_flight: 0,
            loop_lag: 0.0,
        }
    }

    fn values(text: &str) -> Vec<(String, f64)> {
        text.strip_prefix("TEXT ")
            .expect("the TEXT form")
            .split(", ")
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("key=value");
                (key.to_owned(), value.parse().expect("a number"))
            })
            .collect()
    }

    #[test]
    fn rates_and_shares_over_the_window() {
        let start = Instant::now();
        let before = sample(start);
        let now = LoadSample {
            at: start + Duration::from_secs(2),
            requests: 200,
            errors: 10,
            // Two workers, 2 s: one CPU second each is half busy; on 4 cores a quarter.
            cpu_seconds: 2.0,
            in_flight: 3,
            loop_lag: 0.004,
            ..sample(start)
        };
        assert_eq!(
            values(&report_text(Some(&before), &now, 4)),
            [
                ("cpu_utilization".to_owned(), 0.25),
                ("application_utilization".to_owned(), 0.5),
                ("rps_fractional".to_owned(), 100.0),
                ("eps".to_owned(), 5.0),
                ("named_metrics.in_flight".to_owned(), 3.0),
                ("named_metrics.loop_lag".to_owned(), 0.004),
            ]
        );
    }

    #[test]
    fn a_loop_blocked_without_cpu_counts_as_busy_and_nothing_leaves_zero_to_one() {
        let start = Instant::now();
        let before = LoadSample {
            cpu_seconds: 5.0,
            ..sample(start)
        };
        // 16 of 20 looks found the loops busy: stuck in time.sleep most of the second.
        let now = LoadSample {
            at: start + Duration::from_secs(1),
            loop_looks: (20, 16),
            // A worker died: the live workers' CPU total went down.
            cpu_seconds: 1.0,
            ..sample(start)
        };
        let report = values(&report_text(Some(&before), &now, 2));
        assert_eq!(report[0], ("cpu_utilization".to_owned(), 0.0));
        assert_eq!(report[1], ("application_utilization".to_owned(), 0.8));
        let saturated = LoadSample {
            cpu_seconds: 500.0,
            ..now.clone()
        };
        let report = values(&report_text(Some(&before), &saturated, 2));
        assert_eq!((report[0].1, report[1].1), (1.0, 1.0));
        // The first report of a process has no window: no rates yet.
        let first = values(&report_text(None, &now, 2));
        assert_eq!(first[2], ("rps_fractional".to_owned(), 0.0));
    }
}
