//! Command-line parsing: clap definitions with help that explains every flag, and errors
//! turned into one line with exit code 64.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::status::{collect, to_json, to_table};
use crate::{AdminAddress, AdminClient, AgentError};

/// caddy-beacon joins FastAPI/ASGI app instances to a running Caddy through its Admin API.
#[derive(Debug, Parser)]
#[command(name = "caddy-beacon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every upstream each Caddy knows: health, requests in flight, passive failures, and
    /// whether a caddy-beacon companion registered it.
    ///
    /// Example: caddy-beacon status --admin http://localhost:2019 --json
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Caddy's Admin API, as http://host:port (repeat the flag for several Caddy instances).
    /// Example: --admin http://127.0.0.1:2019
    #[arg(long, env = "CADDY_ADMIN", default_value = "http://localhost:2019", value_name = "URL")]
    admin: Vec<String>,

    /// Print a JSON list of objects (admin, address, healthy, in_flight, fails, owned) instead of
    /// a table. `healthy` is null when Caddy reports no active health result for the upstream.
    #[arg(long)]
    json: bool,
}

/// A parsed command, ready to run.
pub struct ParsedCommand(Command);

/// Parses the arguments (program name first).
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<ParsedCommand, AgentError> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(ParsedCommand(cli.command)),
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Err(AgentError::Help(error.to_string()))
        }
        Err(error) if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(AgentError::Usage(
            "a command is required: status (see caddy-beacon --help)".to_owned(),
        )),
        Err(error) => {
            let rendered = error.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            Err(AgentError::Usage(format!("{first} (see caddy-beacon --help)")))
        }
    }
}

impl ParsedCommand {
    /// Runs the command; returns what to print.
    pub fn run(self) -> Result<String, AgentError> {
        match self.0 {
            Command::Status(args) => {
                let mut statuses = Vec::new();
                for admin in &args.admin {
                    statuses.extend(collect(&AdminClient::new(AdminAddress::parse(admin)?))?);
                }
                Ok(if args.json { to_json(&statuses) } else { to_table(&statuses) })
            }
        }
    }
}
