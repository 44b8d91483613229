//! The companion's log: one line per event on stderr, `<time> caddy-beacon <level>: <message>`,
//! so it reads well interleaved with the supervised app's own output.

use std::io::Write;
use std::time::SystemTime;

use beacon_base::time_format::rfc3339_utc;

/// How serious a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Normal progress: registered, ready, drained.
    Info,
    /// Something a person should look at: an outage risk, an error being retried.
    Warn,
    /// Something failed for good.
    Error,
}

/// Writes one line.
pub fn write(level: Level, message: &str) {
    let level = match level {
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    // One write call per line keeps lines whole when several threads log.
    let line = format!(
        "{} caddy-beacon {level}: {message}\n",
        rfc3339_utc(SystemTime::now())
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message.as_ref());
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message.as_ref());
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message.as_ref());
}
