//! beacon-companion: the `caddy-beacon` companion that joins app instances to a running Caddy
//! through its Admin API: as a member of a beacon module pool (`--pool`, no config change), or
//! by editing the config of a stock Caddy.
//!
//! - `admin/`: Caddy's Admin API from the companion's side (addresses, client, the beacon
//!   module's routes typed, Caddy's upstream list, its JSON config).
//! - `join/`: the two ways of joining one Caddy and leaving it drained, chosen once.
//! - `run/`: the `run` command: supervise the app, wait for readiness, leave on a signal.
//! - `state/`: what the companion wants and knows, and the `--listen` server reporting it.
//! - `status.rs`, `deregister.rs`, `weight.rs`: the one-shot commands; `cli.rs` parses them all.

mod admin;
mod backoff;
mod cli;
mod deregister;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
mod http_client;
mod join;
mod log;
mod run;
mod state;
mod status;
#[cfg(test)]
mod testing;
mod upstream;
mod weight;

pub use admin::{AdminAddress, AdminClient, AdminResponse};
pub use error::CompanionError;

use std::ffi::OsString;

/// Parses `args` (program name first), runs the command, prints its output or one clear error
/// line, and returns the process exit code.
pub fn run_cli<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    match cli::parse(args).and_then(|command| command.run()) {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            0
        }
        Err(CompanionError::Exit(code)) => code,
        Err(CompanionError::Help(text)) => {
            print!("{text}");
            0
        }
        Err(error) => {
            eprintln!("caddy-beacon: {error}");
            error.exit_code()
        }
    }
}
