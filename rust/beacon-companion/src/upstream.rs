//! The upstream a companion registers: what Caddy dials, how the companion reaches the app's
//! readiness endpoint, and the `@id`s of the objects it owns in Caddy's config.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::http_client::Endpoint;
use crate::CompanionError;

/// `@id` prefix of the upstream entries companions register; the only upstreams they edit.
pub const OWNED_ID_PREFIX: &str = "caddy-beacon-";
/// Name prefix of the log sinks companions add to receive Caddy's health events.
pub const EVENTS_LOG_PREFIX: &str = "caddy-beacon-events-";

/// An upstream as Caddy dials it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Caddy's `dial` value: `host:port` or `unix//path`.
    pub dial: String,
    /// How the companion itself connects to the app.
    pub endpoint: Endpoint,
}

impl Upstream {
    /// Parses `HOST:PORT`, `:PORT` (this host's first non-loopback address) or `unix//path`.
    pub fn parse(text: &str) -> Result<Upstream, CompanionError> {
        let usage = |why: String| {
            CompanionError::Usage(format!(
                "--upstream {text:?}: {why} (e.g. --upstream 10.0.0.5:8000)"
            ))
        };
        if let Some(path) = text.strip_prefix("unix/") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(usage(
                    "a Unix socket is written unix//absolute/path.sock".into(),
                ));
            }
            return Ok(Upstream {
                dial: text.to_owned(),
                endpoint: Endpoint::Unix(PathBuf::from(path)),
            });
        }
        if text.contains("://") || text.contains('/') || text.contains(char::is_whitespace) {
            return Err(usage("give host:port only, as Caddy dials it".into()));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(usage("expected HOST:PORT".into()));
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| usage(format!("{port:?} is not a port")))?;
        let host = if host.is_empty() {
            let ip = first_non_loopback_address().ok_or_else(|| {
                usage("this host has no non-loopback address; give HOST:PORT".into())
            })?;
            match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            }
        } else {
            host.to_owned()
        };
        let dial = format!("{host}:{port}");
        Ok(Upstream {
            endpoint: Endpoint::Tcp(dial.clone()),
            dial,
        })
    }

    /// The suffix shared by every object this companion owns for `handler_key` (the site or
    /// handler it joins): readable, and unique per (handler, dial address) thanks to the hash.
    /// Deterministic, so a restarted companion finds its own entry instead of adding another.
    pub fn owned_suffix(&self, handler_key: &str) -> String {
        let slug: String = self
            .dial
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let slug = slug.trim_matches('-');
        let slug: String = slug.chars().take(60).collect();
        format!(
            "{slug}-{:08x}",
            fnv1a(format!("{handler_key}\n{}", self.dial).as_bytes()) as u32
        )
    }
}

/// The `@id` of the upstream entry for `suffix`.
pub fn upstream_id(suffix: &str) -> String {
    format!("{OWNED_ID_PREFIX}{suffix}")
}

/// The name of the events log sink for `suffix`.
pub fn events_log_name(suffix: &str) -> String {
    format!("{EVENTS_LOG_PREFIX}{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}

/// The first address of an interface that is up and not loopback, IPv4 first.
fn first_non_loopback_address() -> Option<IpAddr> {
    let mut v6 = None;
    for interface in nix::ifaddrs::getifaddrs().ok()? {
        if !interface
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_UP)
            || interface
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        {
            continue;
        }
        let Some(address) = interface.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            return Some(IpAddr::V4(v4.ip()));
        }
        if let Some(ip) = address.as_sockaddr_in6().map(|a| a.ip()) {
            // Link-local addresses need a zone to be dialled: not something to hand to Caddy.
            if v6.is_none() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                v6 = Some(IpAddr::V6(ip));
            }
        }
    }
    v6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams() {
        let tcp = Upstream::parse("127.0.0.1:8001").unwrap();
        assert_eq!(tcp.dial, "127.0.0.1:8001");
        assert_eq!(tcp.endpoint, Endpoint::Tcp("127.0.0.1:8001".into()));
        let unix = Upstream::parse("unix//run/app.sock").unwrap();
        assert_eq!(
            (unix.dial.as_str(), unix.endpoint),
            ("unix//run/app.sock", Endpoint::Unix("/run/app.sock".into()))
        );
        if let Ok(bare) = Upstream::parse(":8001") {
            assert!(
                bare.dial.ends_with(":8001") && !bare.dial.starts_with("127."),
                "{}",
                bare.dial
            );
        }
        for bad in [
            "8001",
            "http://a:1",
            "a:b",
            "a:0",
            "a:70000",
            "unix/rel.sock",
            "a b:1",
            "h:1/x",
        ] {
            assert_eq!(Upstream::parse(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn owned_ids_are_stable_readable_and_distinct() {
        let a = Upstream::parse("127.0.0.1:8001").unwrap();
        let b = Upstream::parse("127.0.0.1:8002").unwrap();
        assert_eq!(a.owned_suffix("site :8080"), a.owned_suffix("site :8080"));
        assert!(a.owned_suffix("site :8080").starts_with("127-0-0-1-8001-"));
        assert_ne!(a.owned_suffix("site :8080"), b.owned_suffix("site :8080"));
        assert_ne!(a.owned_suffix("site :8080"), a.owned_suffix("site :9090"));
        assert!(upstream_id(&a.owned_suffix("x")).starts_with(OWNED_ID_PREFIX));
        assert!(!events_log_name("x").contains('/'));
    }
}
