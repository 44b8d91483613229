//! The companion's errors and the exit codes they map to.

/// Everything a command can fail with; each message is one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    /// `--help` or `--version`: not a failure, printed to stdout.
    #[error("{0}")]
    Help(String),
    /// `run` finished: exit with this code (the app's status in supervise mode).
    #[error("exit {0}")]
    Exit(i32),
    /// A bad flag or value (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The companion could not set itself up: a thread, the signal handlers (exit 71, sysexits'
    /// EX_OSERR: the system, not the user, is short of something).
    #[error("{0}")]
    Setup(String),
    /// The Admin API could not be reached (exit 69).
    #[error("cannot reach Caddy's Admin API at {admin}: {reason}")]
    Unreachable {
        /// The address tried.
        admin: String,
        /// Why it failed.
        reason: String,
    },
    /// Requests to a removed upstream were still running when the drain timeout ended (exit 1).
    #[error("{address} was removed from {admin} but {running} request(s) to it were still running when the drain timeout ended")]
    DrainTimeout {
        /// The upstream.
        address: String,
        /// The admin address.
        admin: String,
        /// Requests still in flight.
        running: u64,
    },
    /// The Admin API answered with an error (exit 1).
    #[error("Caddy's Admin API at {admin} answered {status} to {request}: {message}")]
    Api {
        /// The admin address.
        admin: String,
        /// The request, e.g. `GET /config/`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// Caddy's `error` text, or the body.
        message: String,
    },
}

impl CompanionError {
    /// The process exit code (sysexits): 64 bad usage, 69 Caddy unreachable, 71 the companion's
    /// own set-up failed, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CompanionError::Help(_) => 0,
            CompanionError::Exit(code) => *code,
            CompanionError::Usage(_) => 64,
            CompanionError::Unreachable { .. } => 69,
            CompanionError::Setup(_) => 71,
            CompanionError::Api { .. } | CompanionError::DrainTimeout { .. } => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_sysexits() {
        assert_eq!(CompanionError::Usage("bad flag".into()).exit_code(), 64);
        assert_eq!(
            CompanionError::Unreachable {
                admin: "http://localhost:2019".into(),
                reason: "refused".into()
            }
            .exit_code(),
            69
        );
        assert_eq!(
            CompanionError::Setup("cannot start a thread".into()).exit_code(),
            71
        );
        assert_eq!(CompanionError::Exit(3).exit_code(), 3);
    }
}
