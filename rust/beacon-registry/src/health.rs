//! The health verdict: what one probe of an upstream's health URI says, and how consecutive
//! results move an upstream between healthy and unhealthy (Caddy's `health_passes` and
//! `health_fails`, with the same meaning).

use serde::{Deserialize, Serialize};

/// Thresholds of one pool, from the Caddyfile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Consecutive passing probes that make an unhealthy upstream healthy again.
    pub passes: u32,
    /// Consecutive failing probes that make a healthy upstream unhealthy.
    pub fails: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        // Caddy's own defaults for active checks.
        HealthPolicy {
            passes: 1,
            fails: 1,
        }
    }
}

/// One probe, as the host saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The HTTP status, or None when no answer came (refused, timed out).
    pub status: Option<u16>,
    /// The start of the body (the host reads a bounded amount).
    #[serde(default)]
    pub body: String,
    /// The transport error, when there was no answer.
    #[serde(default)]
    pub error: Option<String>,
}

/// Whether a probe passed, and why not.
pub fn judge(probe: &ProbeResult) -> Result<(), String> {
    let Some(status) = probe.status else {
        return Err(probe
            .error
            .clone()
            .unwrap_or_else(|| "no answer".to_owned()));
    };
    if !(200..300).contains(&status) {
        return Err(format!("answered {status}"));
    }
    // An `application/health+json` body (caddy-beacon's /ready) can say "fail" with a 2xx when
    // an app is configured so; believe the body.
    if let Ok(serde_json::Value::Object(body)) =
        serde_json::from_str::<serde_json::Value>(&probe.body)
    {
        if body.get("status").and_then(serde_json::Value::as_str) == Some("fail") {
            return Err("its health+json body says \"fail\"".to_owned());
        }
    }
    Ok(())
}

/// The running count of one upstream's probes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCount {
    /// Consecutive passes (0 after a fail).
    pub passes: u32,
    /// Consecutive fails (0 after a pass).
    pub fails: u32,
}

impl HealthCount {
    /// Counts one probe; returns the new verdict when it changes `healthy`.
    pub fn count(&mut self, passed: bool, healthy: bool, policy: HealthPolicy) -> Option<bool> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.fails = 0;
            (!healthy && self.passes >= policy.passes.max(1)).then_some(true)
        } else {
            self.fails = self.fails.saturating_add(1);
            self.passes = 0;
            (healthy && self.fails >= policy.fails.max(1)).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: Option<u16>, body: &str) -> ProbeResult {
        ProbeResult {
            status,
            body: body.to_owned(),
            error: status.is_none().then(|| "connection refused".to_owned()),
        }
    }

    #[test]
    fn judges_status_and_health_json() {
        assert!(judge(&probe(Some(200), r#"{"status":"pass","checks":{}}"#)).is_ok());
        assert!(judge(&probe(Some(200), r#"{"status":"warn"}"#)).is_ok());
        assert!(judge(&probe(Some(204), "")).is_ok());
        assert_eq!(
            judge(&probe(Some(503), r#"{"status":"fail"}"#)).unwrap_err(),
            "answered 503"
        );
        assert!(judge(&probe(Some(200), r#"{"status":"fail"}"#)).is_err());
        assert_eq!(judge(&probe(None, "")).unwrap_err(), "connection refused");
        assert!(judge(&probe(Some(200), "not json")).is_ok());
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let policy = HealthPolicy {
            passes: 2,
            fails: 3,
        };
        let mut count = HealthCount::default();
        assert_eq!(count.count(false, true, policy), None);
        assert_eq!(count.count(false, true, policy), None);
        assert_eq!(
            count.count(true, true, policy),
            None,
            "a pass resets the fails"
        );
        assert_eq!(count.count(false, true, policy), None);
        assert_eq!(count.count(false, true, policy), None);
        assert_eq!(count.count(false, true, policy), Some(false));
        assert_eq!(count.count(true, false, policy), None);
        assert_eq!(count.count(true, false, policy), Some(true));
    }
}
