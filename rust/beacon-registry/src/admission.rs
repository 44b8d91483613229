//! Which addresses a pool accepts. Whoever may call `/beacon/` can point the site's public
//! traffic at any address it registers, so a pool refuses, unless its `allow` list names them:
//! Unix sockets (the Docker API is often one), link-local and cloud metadata addresses
//! (169.254.0.0/16, fe80::/10, AWS's fd00:ec2::254), unspecified, multicast and broadcast
//! addresses; and always Caddy's own admin listeners. IPv4-mapped IPv6 forms are judged as the
//! IPv4 address they carry. With an `allow` list, every address must fall inside it. A DNS name
//! is judged by the addresses the host resolved it to when it was registered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use crate::RegistryError;

/// One entry of `allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// An address range, `10.0.0.0/8` (a bare address is a /32 or /128).
    Net(IpNet),
    /// Unix sockets whose path starts with this, written `unix//run/app/`.
    UnixPrefix(String),
}

/// A pool's admission policy: its `allow` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    allow: Vec<Rule>,
}

/// Where Caddy's admin API listens (`ip:port` or `unix//path`), as the host found it for the
/// request at hand: never an upstream, whatever `allow` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    sockets: Vec<SocketAddr>,
    paths: Vec<String>,
}

impl Listeners {
    /// Parses the host's list; a malformed entry is a bad command.
    pub fn parse(listeners: &[String]) -> Result<Self, RegistryError> {
        let mut parsed = Listeners::default();
        for text in listeners {
            if let Some(path) = text.strip_prefix("unix/") {
                parsed.paths.push(path.to_owned());
                continue;
            }
            let socket = text.parse::<SocketAddr>().map_err(|_| RegistryError::BadRequest(format!("admin listener {text:?}: expected ip:port or unix//path")))?;
            parsed.sockets.push(SocketAddr::new(canonical(socket.ip()), socket.port()));
        }
        Ok(parsed)
    }
}

/// Ranges refused unless `allow` names them: link-local (169.254.0.0/16 holds the cloud
/// metadata address 169.254.169.254), fe80::/10, and AWS's IPv6 metadata address.
const GUARDED: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

impl Admission {
    /// Parses `allow`: CIDRs, addresses, `unix//prefix`.
    pub fn new(allow: &[String]) -> Result<Self, RegistryError> {
        Ok(Admission { allow: allow.iter().map(|text| parse_rule(text)).collect::<Result<Vec<_>, _>>()? })
    }

    /// Ok when `address` may join; `resolved` holds the addresses the host resolved a DNS name
    /// to (empty for an IP address or a Unix socket). Err(Refused) says why not.
    pub fn admit(&self, address: &str, resolved: &[IpAddr], listeners: &Listeners) -> Result<(), RegistryError> {
        if let Some(path) = address.strip_prefix("unix/") {
            if listeners.paths.iter().any(|admin| admin == path) {
                return Err(refused(address, "that socket is Caddy's own admin API"));
            }
            let named = self.allow.iter().any(|rule| matches!(rule, Rule::UnixPrefix(prefix) if path.starts_with(prefix.as_str())));
            return if named {
                Ok(())
            } else {
                Err(refused(address, "Unix sockets are refused unless the pool's allow list names them (allow unix//run/app/)"))
            };
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(RegistryError::BadRequest(format!("address {address:?}: expected host:port")));
        };
        let port: u16 = port.parse().map_err(|_| RegistryError::BadRequest(format!("address {address:?}: bad port")))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let ips: Vec<IpAddr> = match literal {
            Some(ip) => vec![ip],
            None if resolved.is_empty() => {
                return Err(RegistryError::BadRequest(format!("address {address:?}: the host name did not resolve")));
            }
            None => resolved.to_vec(),
        };
        for ip in ips.into_iter().map(canonical) {
            if listeners.sockets.contains(&SocketAddr::new(ip, port)) {
                return Err(refused(address, &format!("{ip}:{port} is Caddy's own admin API")));
            }
            if !self.allow.is_empty() {
                if !self.allow.iter().any(|rule| matches!(rule, Rule::Net(net) if net.contains(&ip))) {
                    return Err(refused(address, &format!("{ip} is outside the pool's allow list")));
                }
                continue;
            }
            if let Some(why) = guarded(ip) {
                return Err(refused(address, &format!("{ip} is {why}; only an allow list that names it lets it in")));
            }
        }
        Ok(())
    }

    /// The `allow` list as written, for `GET /beacon/pools`.
    pub fn allow_list(&self) -> Vec<String> {
        self.allow
            .iter()
            .map(|rule| match rule {
                Rule::Net(net) => net.to_string(),
                Rule::UnixPrefix(prefix) => format!("unix/{prefix}"),
            })
            .collect()
    }
}

fn refused(address: &str, why: &str) -> RegistryError {
    RegistryError::Refused(format!("{address} refused: {why}"))
}

/// What makes `ip` unfit by default, if anything.
fn guarded(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Some("a multicast or broadcast address");
    }
    GUARDED
        .iter()
        .filter_map(|cidr| cidr.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
        .then_some("link-local or a cloud metadata address")
}

/// IPv4-mapped IPv6 (`::ffff:169.254.169.254`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn parse_rule(text: &str) -> Result<Rule, RegistryError> {
    if let Some(path) = text.strip_prefix("unix/") {
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control()) {
            return Err(RegistryError::BadRequest(format!("allow {text:?}: a Unix socket prefix is written unix//run/app/")));
        }
        return Ok(Rule::UnixPrefix(path.to_owned()));
    }
    let bad = || RegistryError::BadRequest(format!("allow {text:?}: expected a CIDR (10.0.0.0/8, fd00::/8), an IP address, or unix//path-prefix"));
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| bad())?;
        return Ok(Rule::Net(match net {
            IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 => {
                let v4 = v6.addr().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| bad())?
            }
            other => other.trunc(),
        }));
    }
    let ip = canonical(text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().map_err(|_| bad())?);
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    Ok(Rule::Net(IpNet::new(ip, prefix).map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> Admission {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Admission::new(&allow).unwrap()
    }

    fn admin() -> Listeners {
        Listeners::parse(&["127.0.0.1:2019".into(), "[::1]:2019".into(), "unix//run/caddy/admin.sock".into()]).unwrap()
    }

    #[test]
    fn refuses_by_default_what_would_expose_the_host() {
        let open = policy(&[]);
        for address in [
            "169.254.169.254:80", "[fe80::1]:80", "[::ffff:169.254.169.254]:80", "[fd00:ec2::254]:80",
            "127.0.0.1:2019", "[::1]:2019", "[::ffff:127.0.0.1]:2019", "unix//var/run/docker.sock",
            "0.0.0.0:22", "[::]:22", "224.0.0.1:80", "255.255.255.255:80",
        ] {
            let error = open.admit(address, &[], &admin()).unwrap_err();
            assert_eq!(error.status(), 403, "{address}: {error}");
        }
        for address in ["127.0.0.1:8001", "10.0.0.5:8000", "[::1]:8001", "[::ffff:10.0.0.5]:8000"] {
            assert_eq!(open.admit(address, &[], &admin()), Ok(()), "{address}");
        }
    }

    #[test]
    fn an_allow_list_is_the_only_way_in_but_never_to_the_admin_api() {
        let strict = policy(&["10.0.0.0/8", "unix//run/app/", "169.254.10.1"]);
        assert_eq!(strict.admit("10.1.2.3:8000", &[], &admin()), Ok(()));
        assert_eq!(strict.admit("[::ffff:10.1.2.3]:8000", &[], &admin()), Ok(()));
        assert_eq!(strict.admit("unix//run/app/a.sock", &[], &admin()), Ok(()));
        assert_eq!(strict.admit("169.254.10.1:80", &[], &admin()), Ok(()), "named, so admitted");
        for address in ["127.0.0.1:8001", "192.168.1.1:80", "unix//var/run/docker.sock", "169.254.169.254:80"] {
            assert_eq!(strict.admit(address, &[], &admin()).unwrap_err().status(), 403, "{address}");
        }
        let unix = policy(&["unix//run/"]);
        assert_eq!(unix.admit("unix//run/caddy/admin.sock", &[], &admin()).unwrap_err().status(), 403);
        assert!(Listeners::parse(&["localhost:2019".into()]).is_err());
        let loopback = policy(&["127.0.0.0/8"]);
        assert_eq!(loopback.admit("127.0.0.1:2019", &[], &admin()).unwrap_err().status(), 403, "the admin API stays refused");
        assert_eq!(strict.allow_list(), ["10.0.0.0/8", "unix//run/app/", "169.254.10.1/32"]);
    }

    #[test]
    fn names_are_judged_by_what_they_resolved_to() {
        let strict = policy(&["10.0.0.0/8"]);
        let inside: [IpAddr; 1] = ["10.0.0.7".parse().unwrap()];
        let metadata: [IpAddr; 2] = ["10.0.0.7".parse().unwrap(), "169.254.169.254".parse().unwrap()];
        assert_eq!(strict.admit("app-1.internal:8000", &inside, &admin()), Ok(()));
        assert_eq!(strict.admit("app-1.internal:8000", &metadata, &admin()).unwrap_err().status(), 403);
        assert_eq!(policy(&[]).admit("rebind.example:80", &metadata[1..], &admin()).unwrap_err().status(), 403);
        assert_eq!(strict.admit("app-1.internal:8000", &[], &admin()).unwrap_err().status(), 400, "unresolved");
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in ["10.0.0.0/33", "not-a-cidr", "10.0.0/8", "unix/relative", "fe80::/129"] {
            let error = Admission::new(&[bad.to_string()]).unwrap_err();
            assert!(error.to_string().contains(bad), "{bad}: {error}");
        }
    }
}
