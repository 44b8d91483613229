//! beacon-agent: the `caddy-beacon` companion that joins app instances to a running Caddy
//! through its Admin API.
//!
//! Built so far: the Admin API client, `caddy-beacon status` and `caddy-beacon deregister`.
//! Registration (`run`) follows.

mod admin_client;
mod cli;
mod deregister;
mod error;
mod status;

pub use admin_client::{AdminAddress, AdminClient, AdminResponse};
pub use error::AgentError;

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
        Err(AgentError::Help(text)) => {
            print!("{text}");
            0
        }
        Err(error) => {
            eprintln!("caddy-beacon: {error}");
            error.exit_code()
        }
    }
}
