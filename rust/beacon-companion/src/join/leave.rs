//! Leaving a Caddy, whatever the mode: what the companion learns from it, and how long it keeps
//! trying a Caddy it cannot reach.

use std::time::{Duration, Instant};

/// How long leaving keeps trying a Caddy that cannot be reached at all: it sends the app no
/// traffic either, so a few seconds (an admin endpoint being replaced by a reload), not the
/// whole drain timeout.
pub const UNREACHABLE_AT_LEAVE: Duration = Duration::from_secs(3);

/// How leaving one Caddy went.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LeaveReport {
    /// The Admin API.
    pub admin: String,
    /// Requests still in flight when the wait ended (0 = drained).
    pub still_in_flight: u64,
    /// Time from the start of leaving to drained (or to giving up).
    pub elapsed: Duration,
    /// Why the upstream could not be removed, if it could not.
    pub error: Option<String>,
}

impl LeaveReport {
    /// Drained and removed.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.still_in_flight == 0
    }
}

/// Counts how long a Caddy has been unreachable while leaving.
#[derive(Debug, Default)]
pub struct Unreachable {
    since: Option<Instant>,
}

impl Unreachable {
    /// Another failed attempt; true once the Caddy has been unreachable for
    /// [`UNREACHABLE_AT_LEAVE`].
    pub fn given_up(&mut self) -> bool {
        self.since.get_or_insert_with(Instant::now).elapsed() >= UNREACHABLE_AT_LEAVE
    }
}
