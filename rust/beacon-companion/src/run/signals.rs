//! The signals the companion handles: SIGTERM and SIGINT start the leave; the rest that a
//! process manager sends an app (gunicorn's reload, worker count, log reopen, ...) go straight
//! to the app. A thread turns them into [`Happening::Signal`]s for `run`'s loop.

use std::sync::mpsc::Sender;
use std::thread;

use signal_hook::consts::signal::{
    SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
};
use signal_hook::iterator::Signals;

use crate::run::supervisor::Happening;
use crate::CompanionError;

/// Signals passed straight to the app.
pub const PASSED_ON: [i32; 7] = [
    SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGTTIN, SIGTTOU, SIGWINCH,
];

/// Starts delivering signals to `sender`.
pub fn listen(sender: Sender<Happening>) -> Result<(), CompanionError> {
    let mut wanted = vec![SIGTERM, SIGINT];
    wanted.extend(PASSED_ON);
    let mut signals = Signals::new(wanted)
        .map_err(|e| CompanionError::Setup(format!("cannot handle signals: {e}")))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if sender.send(Happening::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|e| CompanionError::Setup(format!("cannot start the signal thread: {e}")))
}

/// For messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        SIGQUIT => "SIGQUIT",
        _ => "signal",
    }
}
