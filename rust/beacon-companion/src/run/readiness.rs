//! Waiting for the app's readiness before registering it: GET the readiness URL until it
//! answers 200, on a thread of its own that reports to `run`'s loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::http_client::{Endpoint, HttpClient};
use crate::log;
use crate::run::supervisor::Happening;
use crate::upstream::Upstream;
use crate::CompanionError;

/// The deadline of one readiness probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a readiness answer may weigh.
const PROBE_MAX_ANSWER: usize = 1024 * 1024;

/// Where the app's readiness is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyProbe {
    endpoint: Endpoint,
    path: String,
    /// For messages.
    pub display: String,
}

impl ReadyProbe {
    /// `--ready-url`: `http://host:port/path`, or a path (`/ready`) read from the upstream itself
    /// (over its Unix socket for a `unix//` upstream). Default: `/ready` on the upstream.
    pub fn parse(text: Option<&str>, upstream: &Upstream) -> Result<ReadyProbe, CompanionError> {
        let text = text.unwrap_or("/ready");
        let usage = |why: &str| {
            CompanionError::Usage(format!(
                "--ready-url {text:?}: {why} (e.g. --ready-url http://127.0.0.1:8000/ready)"
            ))
        };
        if text.starts_with('/') {
            let display = match &upstream.endpoint {
                Endpoint::Tcp(authority) => format!("http://{authority}{text}"),
                Endpoint::Unix(_) => format!("{}{text}", upstream.dial),
            };
            return Ok(ReadyProbe {
                endpoint: upstream.endpoint.clone(),
                path: text.to_owned(),
                display,
            });
        }
        if text.starts_with("https://") {
            return Err(usage(
                "https is not supported; probe the app over plain http",
            ));
        }
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| usage("expected http://host:port/path or /path"))?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
        if authority
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(usage("expected host:port after http://"));
        }
        Ok(ReadyProbe {
            endpoint: Endpoint::Tcp(authority.to_owned()),
            path: path.to_owned(),
            display: text.to_owned(),
        })
    }

    /// The client probes go out through (built once per probing thread).
    pub fn client(&self) -> Result<HttpClient, String> {
        HttpClient::new(&self.endpoint, None).map_err(|e| format!("{}: {e}", self.display))
    }

    /// One probe: Ok on 200, Err with what was seen otherwise. The whole probe takes 2 s at most,
    /// and an answer past 1 MiB fails it (a readiness body is a few hundred bytes).
    pub fn check(&self, client: &HttpClient) -> Result<(), String> {
        let response = client
            .send(
                "GET",
                &self.path,
                &[("Accept", "application/json")],
                None,
                PROBE_TIMEOUT,
                PROBE_MAX_ANSWER,
            )
            .map_err(|e| format!("{}: {e}", self.display))?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(format!("{} answered {}", self.display, response.status))
        }
    }
}

/// Probes every 100 ms until the app is ready (then sends [`Happening::AppReady`]) or `stop`
/// is set; says what it sees every 10 s meanwhile.
pub fn wait_for_readiness(
    probe: ReadyProbe,
    sender: Sender<Happening>,
    stop: Arc<AtomicBool>,
) -> Result<(), CompanionError> {
    let started = Instant::now();
    thread::Builder::new()
        .name("ready-probe".into())
        .spawn(move || {
            let mut last_said = None::<Instant>;
            let client = match probe.client() {
                Ok(client) => client,
                Err(why) => {
                    log::info(format!("cannot probe the app's readiness: {why}"));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match probe.check(&client) {
                    Ok(()) => {
                        let _ = sender.send(Happening::AppReady);
                        return;
                    }
                    Err(why) => {
                        if last_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                            log::info(format!(
                                "waiting for the app to be ready ({why}; {:.0}s so far)",
                                started.elapsed().as_secs_f64()
                            ));
                            last_said = Some(Instant::now());
                        }
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
        .map(drop)
        .map_err(|e| CompanionError::Setup(format!("cannot start the readiness thread: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_urls() {
        let tcp = Upstream::parse("127.0.0.1:8001").unwrap();
        assert_eq!(
            ReadyProbe::parse(None, &tcp).unwrap().display,
            "http://127.0.0.1:8001/ready"
        );
        let other = ReadyProbe::parse(Some("http://127.0.0.1:9000/healthz?x=1"), &tcp).unwrap();
        assert_eq!(
            (other.endpoint, other.path.as_str()),
            (Endpoint::Tcp("127.0.0.1:9000".into()), "/healthz?x=1")
        );
        let unix = Upstream::parse("unix//run/app.sock").unwrap();
        assert_eq!(
            ReadyProbe::parse(None, &unix).unwrap().display,
            "unix//run/app.sock/ready"
        );
        for bad in ["ready", "https://a:1/ready", "http://a/ready", "http://:1/"] {
            assert_eq!(
                ReadyProbe::parse(Some(bad), &tcp).unwrap_err().exit_code(),
                64,
                "{bad}"
            );
        }
    }
}
