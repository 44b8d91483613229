//! beacon-agent: the `caddy-beacon` companion that joins app instances to a running Caddy
//! through its Admin API: as a member of a beacon module pool (`--pool`, no config change), or
//! by editing the config of a stock Caddy.
//!
//! `caddy-beacon run` (registration, health watching, draining, supervision),
//! `caddy-beacon status` and `caddy-beacon deregister`.

mod admin_client;
mod app_probe;
mod backoff;
mod cli;
mod config_tree;
mod deregister;
mod error;
mod events_sink;
mod health;
mod http_client;
mod log;
mod pool_member;
mod registration;
mod run;
mod site;
mod state;
mod status;
mod status_server;
mod supervisor;
mod upstream;

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
        Err(AgentError::Exit(code)) => code,
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
