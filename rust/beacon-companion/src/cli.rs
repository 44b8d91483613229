//! Command-line parsing: clap definitions with help that explains every flag, and errors
//! turned into one line with exit code 64.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beacon_base::tls_files::TlsFiles;

use crate::admin::{AdminAddress, AdminClient};
use crate::deregister::deregister;
use crate::join::config_edit::site::Target;
use crate::join::config_edit::{ConfigEditSettings, EventsSetting};
use crate::join::pool::PoolSettings;
use crate::join::JoinMode;
use crate::run::readiness::ReadyProbe;
use crate::run::{run, RunOptions};
use crate::state::status_server::Listen;
use crate::status::{collect, to_json, to_table};
use crate::upstream::Upstream;
use crate::weight::set_weight;
use crate::CompanionError;

/// caddy-beacon joins FastAPI/ASGI app instances to a running Caddy through its Admin API.
#[derive(Debug, Parser)]
#[command(name = "caddy-beacon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register one app instance with Caddy once it is ready, keep it registered (Caddy restarts,
    /// reloads), report Caddy's health verdict on it, and on SIGTERM/SIGINT remove it and drain
    /// before the app stops.
    ///
    /// With `-- COMMAND ARGS...` the companion also starts and supervises the app: it passes the
    /// stop signal on only after Caddy has no request in flight to it, and exits with the app's
    /// status (0 when the app stopped from that signal). Without a command it joins an app that
    /// runs elsewhere and exits 0 once drained.
    ///
    /// With `--pool` and a Caddy built with the beacon module, it joins the module's pool and
    /// never edits Caddy's config.
    ///
    /// Example: caddy-beacon run --upstream 127.0.0.1:8001 --pool app --site :8080 -- uvicorn app:app --port 8001
    Run(Box<RunArgs>),

    /// Show every upstream each Caddy knows (and the beacon module's pool members): health,
    /// requests in flight, passive failures, and whether a caddy-beacon companion registered it.
    ///
    /// Example: caddy-beacon status --admin http://localhost:2019 --json
    Status(StatusArgs),

    /// Remove the upstream entries caddy-beacon registered for an address (in Caddy's config, and
    /// in the beacon module's pools: drained first), then wait until Caddy has no request in
    /// flight to it (bounded by --drain-timeout). Entries from the Caddyfile are never touched.
    ///
    /// Example: caddy-beacon deregister --upstream 10.0.0.5:8000 --admin http://localhost:2019
    Deregister(DeregisterArgs),

    /// Give a pool member a new weight without registering it again (Caddy's config does not
    /// change): 0 sends it no new requests (standby), 100 is the default share; a canary at 10
    /// beside members at 100 gets about 10/210 of the requests. Takes effect within a second;
    /// the member's running companion adopts it, so it outlives a Caddy restart.
    ///
    /// Example: caddy-beacon weight --upstream 10.0.0.5:8000 --pool api --weight 10
    Weight(WeightArgs),
}

#[derive(Debug, Args)]
struct WeightArgs {
    /// The member's dial address, exactly as registered. Example: --upstream 10.0.0.5:8000
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,

    /// The pool; without it, every pool of each Caddy that holds the address.
    #[arg(long, env = "BEACON_POOL", value_name = "NAME")]
    pool: Option<String>,

    /// The new weight, 0 (standby) to 10000. Example: --weight 50
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=10_000), value_name = "0-10000")]
    weight: u32,

    /// Caddy's Admin API: http://host:port, unix//path/admin.sock or https://host:port (repeat the flag for several
    /// Caddy instances). Example: --admin http://127.0.0.1:2019
    #[arg(
        long,
        env = "CADDY_ADMIN",
        default_value = "http://localhost:2019",
        value_delimiter = ',',
        value_name = "URL"
    )]
    admin: Vec<String>,

    #[command(flatten)]
    admin_tls: AdminTlsArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["site", "handler_id", "pool"])))]
struct RunArgs {
    /// Caddy's Admin API: http://host:port, unix//path/admin.sock, or https://host:port (Caddy's
    /// remote admin, with --admin-ca/--admin-cert/--admin-key). Repeat the flag (or separate
    /// with commas in CADDY_ADMIN) to register with several Caddy instances.
    /// Example: --admin http://127.0.0.1:2019 --admin unix//run/caddy/admin.sock
    #[arg(
        long,
        env = "CADDY_ADMIN",
        default_value = "http://localhost:2019",
        value_delimiter = ',',
        value_name = "URL"
    )]
    admin: Vec<String>,

    #[command(flatten)]
    admin_tls: AdminTlsArgs,

    /// What Caddy dials to reach the app: HOST:PORT, :PORT (this host's first non-loopback
    /// address), or unix//path/app.sock (app and Caddy on one host).
    /// Example: --upstream 10.0.0.5:8000
    #[arg(long, env = "BEACON_UPSTREAM", value_name = "HOST:PORT")]
    upstream: String,

    /// The Caddyfile site whose reverse_proxy to join (that proxy keeps its health-check and
    /// load-balancing settings). Example: --site :8080, --site api.example.com
    #[arg(
        long,
        env = "BEACON_SITE",
        value_name = "ADDR",
        conflicts_with = "handler_id"
    )]
    site: Option<String>,

    /// Instead of --site: the reverse_proxy handler tagged with this "@id" in Caddy's JSON config.
    /// Example: --handler-id api-proxy
    #[arg(long, env = "BEACON_HANDLER_ID", value_name = "ID")]
    handler_id: Option<String>,

    /// The beacon module's pool to join (`dynamic beacon <pool>` in the Caddyfile). With a Caddy
    /// built with the module, the companion registers there and never edits Caddy's config (no
    /// --site needed); with a stock Caddy it falls back to --site/--handler-id. Example: --pool api
    #[arg(long, env = "BEACON_POOL", value_name = "NAME")]
    pool: Option<String>,

    /// With --pool: this replica's share of the pool's traffic relative to the others' (0 keeps it
    /// registered and checked but sends it nothing: standby). Change it later without
    /// re-registering with `caddy-beacon weight`. Example: --weight 10 (a canary beside 100s)
    #[arg(long, env = "BEACON_WEIGHT", default_value_t = 100, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=10_000), value_name = "0-10000")]
    weight: u32,

    /// With --pool: how long a registration lasts unless renewed (renewed every third of it); a
    /// companion that dies leaves the pool when it runs out. Example: --lease 10s
    #[arg(long, env = "BEACON_LEASE", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    lease: Duration,

    /// Where to read the app's readiness before registering it: http://host:port/path, or a path
    /// read from the upstream itself. [default: /ready on the upstream]
    /// Example: --ready-url http://127.0.0.1:8001/ready
    #[arg(long, env = "BEACON_READY_URL", value_name = "URL")]
    ready_url: Option<String>,

    /// How long to wait at shutdown for Caddy's requests in flight to the app to finish, e.g.
    /// 30s, 500ms, 2m. Example: --drain-timeout 10s
    #[arg(long, env = "BEACON_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,

    /// Where the companion serves its own /status (JSON) and /metrics (Prometheus), or "off".
    /// Default 127.0.0.1:9465; when that is taken (another companion on this host) a free port
    /// is used instead and logged. A port given here must be free. Example: --listen 127.0.0.1:9466
    #[arg(long, env = "BEACON_LISTEN", value_name = "ADDR|off")]
    listen: Option<String>,

    /// Where Caddy streams its health-check events to the companion: "auto" (127.0.0.1 when Caddy
    /// is on this host, else the upstream's IP, on a free port), "off" (use Caddy's health gauge,
    /// refreshed every 10 s), or HOST:PORT to listen on. Example: --events 10.0.0.5:5140
    #[arg(
        long,
        env = "BEACON_EVENTS",
        default_value = "auto",
        value_name = "auto|off|HOST:PORT"
    )]
    events: String,

    /// Remove upstreams registered by other companions for the same proxy once Caddy has found
    /// them unhealthy for this long (their companion was killed and could not clean up), or "off".
    /// Example: --reap-after 2m
    #[arg(
        long,
        env = "BEACON_REAP_AFTER",
        default_value = "5m",
        value_name = "DURATION|off"
    )]
    reap_after: String,

    /// The app to start and supervise, after `--`. Example: -- uvicorn app:app --port 8001
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct DeregisterArgs {
    /// The upstream's dial address, exactly as registered. Example: --upstream 10.0.0.5:8000
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,

    /// Caddy's Admin API: http://host:port, unix//path/admin.sock or https://host:port (repeat the flag for several
    /// Caddy instances). Example: --admin http://127.0.0.1:2019
    #[arg(
        long,
        env = "CADDY_ADMIN",
        default_value = "http://localhost:2019",
        value_delimiter = ',',
        value_name = "URL"
    )]
    admin: Vec<String>,

    #[command(flatten)]
    admin_tls: AdminTlsArgs,

    /// How long to wait for requests in flight to the upstream to finish, e.g. 30s, 500ms, 2m.
    /// Example: --drain-timeout 10s
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    drain_timeout: Duration,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Caddy's Admin API: http://host:port, unix//path/admin.sock or https://host:port (repeat the flag for several
    /// Caddy instances). Example: --admin http://127.0.0.1:2019
    #[arg(
        long,
        env = "CADDY_ADMIN",
        default_value = "http://localhost:2019",
        value_delimiter = ',',
        value_name = "URL"
    )]
    admin: Vec<String>,

    #[command(flatten)]
    admin_tls: AdminTlsArgs,

    /// Print a JSON list of objects (admin, address, healthy, in_flight, fails, owned) instead of
    /// a table. `healthy` is null when Caddy reports no active health result for the upstream.
    #[arg(long)]
    json: bool,
}

/// TLS for `https://` admin addresses: Caddy's remote admin endpoint (`admin.remote`) is served
/// over mutual TLS only.
#[derive(Debug, Args)]
struct AdminTlsArgs {
    /// A PEM CA certificate to trust for https:// admin addresses, besides the system's roots
    /// (for Caddy's remote admin: the root of the CA that issued its identity certificate,
    /// e.g. Caddy's local CA root.crt). Example: --admin-ca /etc/caddy-beacon/caddy-ca.pem
    #[arg(long, env = "BEACON_ADMIN_CA", value_name = "FILE")]
    admin_ca: Option<PathBuf>,

    /// A PEM client certificate to present to https:// admin addresses (one whose public key
    /// Caddy's remote admin lists in access_control). Needs --admin-key.
    /// Example: --admin-cert /etc/caddy-beacon/client.pem
    #[arg(
        long,
        env = "BEACON_ADMIN_CERT",
        value_name = "FILE",
        requires = "admin_key"
    )]
    admin_cert: Option<PathBuf>,

    /// The PEM private key of --admin-cert. Example: --admin-key /etc/caddy-beacon/client.key
    #[arg(
        long,
        env = "BEACON_ADMIN_KEY",
        value_name = "FILE",
        requires = "admin_cert"
    )]
    admin_key: Option<PathBuf>,
}

impl AdminTlsArgs {
    /// The admin addresses, TLS files read and checked (bad ones are bad usage).
    fn addresses(&self, admins: &[String]) -> Result<Vec<AdminAddress>, CompanionError> {
        let given = self.admin_ca.is_some() || self.admin_cert.is_some();
        let tls = if given {
            let files = TlsFiles::load(
                "--admin-ca/--admin-cert/--admin-key",
                self.admin_ca.as_ref(),
                self.admin_cert.as_ref(),
                self.admin_key.as_ref(),
            )
            .map_err(|e| CompanionError::Usage(e.to_string()))?;
            Some(Arc::new(files))
        } else {
            None
        };
        let addresses = admins
            .iter()
            .map(|a| AdminAddress::parse(a, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if given && addresses.iter().all(|a| a.tls.is_none()) {
            return Err(CompanionError::Usage(
                "--admin-ca/--admin-cert apply to https:// admin addresses, and no --admin is one (e.g. --admin https://caddy:2021)".into(),
            ));
        }
        Ok(addresses)
    }

    fn clients(&self, admins: &[String]) -> Result<Vec<AdminClient>, CompanionError> {
        self.addresses(admins)?
            .into_iter()
            .map(AdminClient::new)
            .collect()
    }
}

/// A parsed command, ready to run.
pub struct ParsedCommand(Command);

/// Parses the arguments (program name first).
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<ParsedCommand, CompanionError> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(ParsedCommand(cli.command)),
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Err(CompanionError::Help(error.to_string()))
        }
        Err(error) if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(CompanionError::Usage(
            "a command is required: run, status, deregister or weight (see caddy-beacon --help)".to_owned(),
        )),
        Err(error) => {
            // clap's first paragraph, on one line (a missing argument is named on the next line).
            let rendered = error.to_string();
            let first: Vec<&str> = rendered.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
            Err(CompanionError::Usage(format!("{first} (see caddy-beacon --help)")))
        }
    }
}

impl ParsedCommand {
    /// Runs the command; returns what to print.
    pub fn run(self) -> Result<String, CompanionError> {
        match self.0 {
            Command::Run(args) => {
                let code = run(run_options(*args)?)?;
                Err(CompanionError::Exit(code))
            }
            Command::Status(args) => {
                let mut statuses = Vec::new();
                for client in args.admin_tls.clients(&args.admin)? {
                    statuses.extend(collect(&client)?);
                }
                Ok(if args.json {
                    to_json(&statuses)
                } else {
                    to_table(&statuses)
                })
            }
            Command::Deregister(args) => {
                if args.upstream.trim().is_empty() || args.upstream.contains(char::is_whitespace) {
                    return Err(CompanionError::Usage(format!(
                        "--upstream {:?} is not a dial address",
                        args.upstream
                    )));
                }
                let clients = args.admin_tls.clients(&args.admin)?;
                let mut lines = Vec::new();
                for client in &clients {
                    lines.push(deregister(client, &args.upstream, args.drain_timeout)?);
                }
                Ok(lines.join("\n"))
            }
            Command::Weight(args) => {
                let pool = args.pool.as_deref().map(check_pool_name).transpose()?;
                let mut lines = Vec::new();
                for client in args.admin_tls.clients(&args.admin)? {
                    lines.extend(set_weight(&client, &args.upstream, pool, args.weight)?);
                }
                Ok(lines.join("\n"))
            }
        }
    }
}

fn run_options(args: RunArgs) -> Result<RunOptions, CompanionError> {
    let admins = args.admin_tls.addresses(&args.admin)?;
    let upstream = Upstream::parse(&args.upstream)?;
    let pool = args
        .pool
        .as_deref()
        .map(check_pool_name)
        .transpose()?
        .map(str::to_owned);
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&args.lease) {
        return Err(CompanionError::Usage(format!(
            "--lease {:?}: between 1s and 5m",
            args.lease
        )));
    }
    let target = match (args.site, args.handler_id) {
        (Some(site), None) if !site.trim().is_empty() => Some(Target::Site(site)),
        (None, Some(id)) if !id.is_empty() && !id.contains('/') => Some(Target::HandlerId(id)),
        (Some(_), Some(_)) => {
            return Err(CompanionError::Usage(
                "give --site or --handler-id, not both".into(),
            ))
        }
        (None, None) => None,
        _ => return Err(no_target()),
    };
    let ready = ReadyProbe::parse(args.ready_url.as_deref(), &upstream)?;
    let listen = match args.listen.as_deref() {
        None => Some(Listen {
            address: SocketAddr::from(([127, 0, 0, 1], 9465)),
            explicit: false,
        }),
        Some("off") => None,
        Some(text) => Some(Listen {
            address: text.parse().map_err(|_| {
                CompanionError::Usage(format!(
                    "--listen {text:?}: expected IP:PORT or off, e.g. 127.0.0.1:9465"
                ))
            })?,
            explicit: true,
        }),
    };
    let events = match args.events.as_str() {
        "auto" => EventsSetting::Auto,
        "off" => EventsSetting::Off,
        text => EventsSetting::Listen(text.parse().map_err(|_| {
            CompanionError::Usage(format!("--events {text:?}: expected auto, off or IP:PORT"))
        })?),
    };
    let reap_after = match args.reap_after.as_str() {
        "off" => None,
        text => Some(
            parse_duration(text)
                .map_err(|e| CompanionError::Usage(format!("--reap-after: {e}")))?,
        ),
    };
    let config_edit = target.map(|target| ConfigEditSettings {
        target,
        events,
        reap_after,
    });
    let mode = match (pool, config_edit) {
        (Some(name), fallback) => JoinMode::Pool {
            pool: PoolSettings {
                name,
                lease: args.lease,
                weight: args.weight,
            },
            fallback,
        },
        (None, Some(settings)) => JoinMode::ConfigEdit(settings),
        (None, None) => return Err(no_target()),
    };
    Ok(RunOptions {
        admins,
        upstream,
        mode,
        ready,
        drain_timeout: args.drain_timeout,
        listen,
        command: args.command,
    })
}

/// A pool name as the module accepts it.
fn check_pool_name(name: &str) -> Result<&str, CompanionError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(name)
    } else {
        Err(CompanionError::Usage(format!(
            "--pool {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

fn no_target() -> CompanionError {
    CompanionError::Usage(
        "--site, --handler-id or --pool needs a value, e.g. --site :8080 or --pool api".into(),
    )
}

/// Parses `30s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a duration >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
