//! What every membership loop does when Caddy's Admin API fails: back off with jitter (up to
//! 10 s), say each distinct failure once rather than once per attempt, and say when Caddy
//! answers again.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::log;

/// Backoff and the last thing said, for one Caddy.
#[derive(Debug)]
pub struct Retries {
    admin: String,
    backoff: Backoff,
    said: Option<String>,
}

impl Retries {
    /// For the Caddy at `admin`.
    pub fn new(admin: String) -> Self {
        Retries {
            admin,
            backoff: Backoff::new(Duration::from_secs(10)),
            said: None,
        }
    }

    /// A failure worth retrying soon: says `message` unless it was the last thing said;
    /// returns how long to wait.
    pub fn failed(&mut self, message: &str) -> Duration {
        if self.said.as_deref() != Some(message) {
            log::warn(format!("{message}; retrying (backing off up to 10s)"));
            self.said = Some(message.to_owned());
        }
        self.backoff.next_delay()
    }

    /// A failure that lasts until Caddy's config changes: says `line` once, as an error.
    pub fn blocked(&mut self, line: &str) {
        if self.said.as_deref() != Some(line) {
            log::error(line);
            self.said = Some(line.to_owned());
        }
    }

    /// A success: after failures, says Caddy answers again.
    pub fn succeeded(&mut self) {
        if self.backoff.failures() > 0 {
            log::info(format!("Caddy at {} answers again", self.admin));
        }
        self.backoff.reset();
        self.said = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_each_distinct_failure_once_backs_off_and_resets_on_success() {
        let mut retries = Retries::new("http://127.0.0.1:2019".into());
        let first = retries.failed("Caddy at 127.0.0.1:2019 is unreachable");
        assert_eq!(
            retries.said.as_deref(),
            Some("Caddy at 127.0.0.1:2019 is unreachable")
        );
        retries.failed("Caddy at 127.0.0.1:2019 is unreachable");
        retries.failed("Caddy at 127.0.0.1:2019 is unreachable");
        assert_eq!(retries.backoff.failures(), 3);
        assert!(first <= Duration::from_secs(10));
        retries.blocked("cannot register: no such site");
        assert_eq!(
            retries.said.as_deref(),
            Some("cannot register: no such site")
        );
        retries.succeeded();
        assert_eq!(retries.backoff.failures(), 0);
        assert_eq!(
            retries.said, None,
            "after a success the same failure is said again"
        );
    }
}
