//! Command-line parsing: clap definitions with help that explains every flag, and errors
//! turned into one line with exit code 64.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use std::time::Duration;

use crate::deregister::{deregister, parse_duration};
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

    /// Remove the upstream entries caddy-beacon registered for an address, then wait until Caddy
    /// has no request in flight to it (bounded by --drain-timeout). Entries from the Caddyfile are
    /// never touched.
    ///
    /// Example: caddy-beacon deregister --upstream 10.0.0.5:8000 --admin http://localhost:2019
    Deregister(DeregisterArgs),
}

#[derive(Debug, Args)]
struct DeregisterArgs {
    /// The upstream's dial address, exactly as registered. Example: --upstream 10.0.0.5:8000
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,

    /// Caddy's Admin API, as http://host:port (repeat the flag for several Caddy instances).
    /// Example: --admin http://127.0.0.1:2019
    #[arg(long, env = "CADDY_ADMIN", default_value = "http://localhost:2019", value_name = "URL")]
    admin: Vec<String>,

    /// How long to wait for requests in flight to the upstream to finish, e.g. 30s, 500ms, 2m.
    /// Example: --drain-timeout 10s
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
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
            "a command is required: status or deregister (see caddy-beacon --help)".to_owned(),
        )),
        Err(error) => {
            // clap's first paragraph, on one line (a missing argument is named on the next line).
            let rendered = error.to_string();
            let first: Vec<&str> = rendered.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
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
            Command::Deregister(args) => {
                if args.upstream.trim().is_empty() || args.upstream.contains(char::is_whitespace) {
                    return Err(AgentError::Usage(format!("--upstream {:?} is not a dial address", args.upstream)));
                }
                let clients = args
                    .admin
                    .iter()
                    .map(|admin| AdminAddress::parse(admin).map(AdminClient::new))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut lines = Vec::new();
                for client in &clients {
                    lines.push(deregister(client, &args.upstream, args.drain_timeout)?);
                }
                Ok(lines.join("\n"))
            }
        }
    }
}
