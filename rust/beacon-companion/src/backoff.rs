//! Exponential backoff with full jitter, so companions that lost the same Caddy at the same time
//! do not come back in lockstep.

use std::time::Duration;

/// Delays between retries: a random time up to 250 ms, 500 ms, 1 s, ... capped at `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(250);

impl Backoff {
    /// Starts at 250 ms, never waits longer than `max`.
    pub fn new(max: Duration) -> Self {
        Backoff { attempt: 0, max }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Full jitter, but never less than a tenth of the ceiling: no busy loop.
        let fraction =
            0.1 + 0.9 * (beacon_base::random::next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many failures in a row.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

/// A short random pause (for retrying after a 412: another writer just changed the config).
pub fn jitter(max: Duration) -> Duration {
    max.mul_f64((beacon_base::random::next_u64() >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= FIRST && delays[0] >= FIRST / 10);
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[7] >= Duration::from_millis(200), "{delays:?}");
        assert_eq!(backoff.failures(), 8);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
