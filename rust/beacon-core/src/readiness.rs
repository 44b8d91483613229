//! Readiness: the cached results of the app's dependency checks, the draining flag, and the
//! `application/health+json` body that `/ready` answers with.
//!
//! Probes only read this state; checks run elsewhere (on the app's event loop) and report here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::BeaconError;
use beacon_base::time_format::rfc3339_utc;

/// Longest check output kept; a check that returns a huge message must not bloat every probe.
const MAX_OUTPUT_CHARS: usize = 512;

/// The result of one run of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    /// Whether the dependency answered correctly within its timeout.
    pub passed: bool,
    /// How long the run took (up to the timeout).
    pub duration: Duration,
    /// When the run finished.
    pub observed_at: SystemTime,
    /// Why it failed, or what it returned; empty when there is nothing to say.
    pub output: String,
}

#[derive(Debug)]
struct CheckState {
    name: String,
    critical: bool,
    last: Option<CheckOutcome>,
}

/// What `/ready` answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadyReport {
    /// True when the instance should receive traffic.
    pub ready: bool,
    /// 200 or 503.
    pub status_code: u16,
    /// The health+json document.
    pub body: String,
}

/// One check as exported in metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckGauge {
    /// The check's name.
    pub name: String,
    /// `None` until the check has run once.
    pub up: Option<bool>,
    /// Duration of the last run in seconds.
    pub duration_seconds: Option<f64>,
}

/// Readiness state of one app instance.
#[derive(Debug, Default)]
pub struct Readiness {
    started: AtomicBool,
    draining: AtomicBool,
    checks: Mutex<Vec<CheckState>>,
}

fn valid_check_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl Readiness {
    /// A new instance: not started, not draining, no checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a check. Until its first result a critical check keeps the instance unready.
    pub fn register_check(&self, name: &str, critical: bool) -> Result<(), BeaconError> {
        if !valid_check_name(name) {
            return Err(BeaconError::InvalidCheckName(name.to_owned()));
        }
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        if checks.iter().any(|c| c.name == name) {
            return Err(BeaconError::DuplicateCheck(name.to_owned()));
        }
        checks.push(CheckState {
            name: name.to_owned(),
            critical,
            last: None,
        });
        Ok(())
    }

    /// Stores the latest result of a check.
    pub fn report(&self, name: &str, mut outcome: CheckOutcome) -> Result<(), BeaconError> {
        if outcome.output.chars().count() > MAX_OUTPUT_CHARS {
            outcome.output = outcome
                .output
                .chars()
                .take(MAX_OUTPUT_CHARS)
                .collect::<String>()
                + "…";
        }
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        let check = checks
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| BeaconError::UnknownCheck(name.to_owned()))?;
        check.last = Some(outcome);
        Ok(())
    }

    /// The app has finished starting up (ASGI lifespan startup, or its first request).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Whether startup has completed.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Draining: the instance is shutting down and must receive no new traffic.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    /// Whether the instance is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// True when started, not draining, and every critical check's latest run passed.
    pub fn is_ready(&self) -> bool {
        self.is_started()
            && !self.is_draining()
            && self
                .checks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|c| c.critical)
                .all(|c| c.last.as_ref().is_some_and(|o| o.passed))
    }

    /// Check states for `beacon_check_up` and `beacon_check_duration_seconds`.
    pub fn check_gauges(&self) -> Vec<CheckGauge> {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| CheckGauge {
                name: c.name.clone(),
                up: c.last.as_ref().map(|o| o.passed),
                duration_seconds: c.last.as_ref().map(|o| o.duration.as_secs_f64()),
            })
            .collect()
    }

    /// The `/ready` answer, in the shape of the IETF health-check draft.
    pub fn report_json(&self) -> ReadyReport {
        let checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut details = Map::new();
        let mut critical_failed = false;
        let mut optional_failed = false;
        for check in checks.iter() {
            let entry = match &check.last {
                None => {
                    json!({"status": "fail", "output": "no result yet", "critical": check.critical})
                }
                Some(outcome) => {
                    let mut entry = json!({
                        "status": if outcome.passed { "pass" } else { "fail" },
                        "time": rfc3339_utc(outcome.observed_at),
                        "observedValue": (outcome.duration.as_secs_f64() * 1e6).round() / 1e3,
                        "observedUnit": "ms",
                        "critical": check.critical,
                    });
                    if !outcome.output.is_empty() {
                        entry["output"] = Value::String(outcome.output.clone());
                    }
                    entry
                }
            };
            let passed = check.last.as_ref().is_some_and(|o| o.passed);
            if !passed {
                if check.critical {
                    critical_failed = true;
                } else {
                    optional_failed = true;
                }
            }
            details.insert(check.name.clone(), Value::Array(vec![entry]));
        }
        drop(checks);

        let (status, output) = if self.is_draining() {
            ("fail", Some("draining: shutting down"))
        } else if !self.is_started() {
            ("fail", Some("starting"))
        } else if critical_failed {
            ("fail", None)
        } else if optional_failed {
            ("warn", None)
        } else {
            ("pass", None)
        };
        let mut body = json!({"status": status, "checks": Value::Object(details)});
        if let Some(output) = output {
            body["output"] = Value::String(output.to_owned());
        }
        let ready = status != "fail";
        ReadyReport {
            ready,
            status_code: if ready { 200 } else { 503 },
            body: body.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(passed: bool, output: &str) -> CheckOutcome {
        CheckOutcome {
            passed,
            duration: Duration::from_millis(12),
            observed_at: SystemTime::now(),
            output: output.to_owned(),
        }
    }

    fn body(readiness: &Readiness) -> Value {
        serde_json::from_str(&readiness.report_json().body).unwrap()
    }

    #[test]
    fn unready_until_started_and_critical_checks_pass() {
        let readiness = Readiness::new();
        readiness.register_check("db", true).unwrap();
        readiness.register_check("cache", false).unwrap();
        assert_eq!(readiness.report_json().status_code, 503);
        assert_eq!(body(&readiness)["output"], "starting");

        readiness.mark_started();
        assert_eq!(readiness.report_json().status_code, 503);
        assert_eq!(
            body(&readiness)["checks"]["db"][0]["output"],
            "no result yet"
        );

        readiness.report("db", outcome(true, "")).unwrap();
        let report = readiness.report_json();
        assert_eq!(report.status_code, 200, "{}", report.body);
        assert_eq!(body(&readiness)["status"], "warn");

        readiness.report("cache", outcome(true, "")).unwrap();
        assert_eq!(body(&readiness)["status"], "pass");
        assert_eq!(body(&readiness)["checks"]["db"][0]["observedValue"], 12.0);

        readiness
            .report("db", outcome(false, "timed out after 1s"))
            .unwrap();
        assert!(!readiness.is_ready());
        assert_eq!(
            body(&readiness)["checks"]["db"][0]["output"],
            "timed out after 1s"
        );
    }

    #[test]
    fn draining_wins_over_passing_checks() {
        let readiness = Readiness::new();
        readiness.mark_started();
        assert!(readiness.is_ready());
        readiness.set_draining(true);
        let report = readiness.report_json();
        assert_eq!((report.ready, report.status_code), (false, 503));
        assert_eq!(body(&readiness)["output"], "draining: shutting down");
    }

    #[test]
    fn rejects_bad_and_duplicate_names_and_unknown_reports() {
        let readiness = Readiness::new();
        assert!(readiness.register_check("", true).is_err());
        assert!(readiness.register_check("a b", true).is_err());
        assert!(readiness.register_check(&"x".repeat(65), true).is_err());
        readiness.register_check("db", true).unwrap();
        assert_eq!(
            readiness.register_check("db", true),
            Err(BeaconError::DuplicateCheck("db".into()))
        );
        assert_eq!(
            readiness.report("nope", outcome(true, "")),
            Err(BeaconError::UnknownCheck("nope".into()))
        );
    }

    #[test]
    fn long_output_is_truncated() {
        let readiness = Readiness::new();
        readiness.register_check("db", true).unwrap();
        readiness
            .report("db", outcome(false, &"e".repeat(10_000)))
            .unwrap();
        let output = body(&readiness)["checks"]["db"][0]["output"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(output.chars().count(), MAX_OUTPUT_CHARS + 1);
    }
}
