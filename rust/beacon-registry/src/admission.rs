//! Which addresses a pool accepts. Whoever may call `/beacon/` (or write an EndpointSlice)
//! chooses where the site's public traffic goes, so every address is judged as it will be
//! dialled, from three rules:
//!
//! - **Never this Caddy itself** ([`OwnSockets`], which the host reads off the process): an
//!   address at the port of one of Caddy's listening sockets — its admin API, local or remote,
//!   its metrics, its own sites (a loop) — on that socket's address, on any loopback address
//!   when the socket is on loopback, and on any loopback or local address of the host when it
//!   listens on all of them; a Unix socket Caddy listens on. No `allow` changes this.
//! - **Not by default what exposes the host** ([`GUARDED`]): link-local and cloud metadata
//!   addresses, unspecified, multicast and reserved addresses, and Unix sockets. A guarded range
//!   opens only to an `allow` entry that lies inside it (`allow 169.254.0.0/16`, `allow
//!   fd00:ec2::254`, `allow unix//run/app/`): a broader entry (`fd00::/8`, `0.0.0.0/0`) does not.
//! - **With an `allow` list, only what it names.**
//!
//! An IPv6 address that carries an IPv4 one (mapped, compatible, translated, NAT64, 6to4,
//! Teredo, ISATAP) is judged as both: a translator on the path would deliver it to the IPv4
//! address. A DNS name is judged by every address it resolved to; the host resolves it again
//! at every renewal and dials the first address admitted, never the name, so a name that moves
//! cannot take the traffic with it (see `Upstream::dial`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Where this Caddy itself can be reached, as the host found it: the sockets it listens on
/// (`ip:port`, the IP unspecified for all interfaces, or `unix//path`) and the host's own
/// addresses (what a socket on all interfaces answers on, besides loopback).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnSockets {
    sockets: Vec<SocketAddr>,
    paths: Vec<String>,
    local: Vec<IpAddr>,
}

impl OwnSockets {
    /// Parses the host's lists; a malformed entry is a bad command.
    pub fn parse(listeners: &[String], local: &[IpAddr]) -> Result<Self, RegistryError> {
        let mut own = OwnSockets {
            local: local.iter().copied().map(canonical).collect(),
            ..OwnSockets::default()
        };
        for text in listeners {
            if let Some(path) = text.strip_prefix("unix/") {
                own.paths.push(path.to_owned());
                continue;
            }
            let socket = text.parse::<SocketAddr>().map_err(|_| {
                RegistryError::BadRequest(format!(
                    "listener {text:?}: expected ip:port or unix//path"
                ))
            })?;
            own.sockets
                .push(SocketAddr::new(canonical(socket.ip()), socket.port()));
        }
        Ok(own)
    }

    /// Both lists together (the stored facts and what one request adds).
    pub fn merged(&self, other: &OwnSockets) -> OwnSockets {
        let mut merged = self.clone();
        merged.sockets.extend(&other.sockets);
        merged.paths.extend(other.paths.iter().cloned());
        merged.local.extend(&other.local);
        merged
    }

    /// The socket of this Caddy that dialling `ip:port` reaches, if any.
    fn reached_by(&self, ip: IpAddr, port: u16) -> Option<SocketAddr> {
        // Linux connects 0.0.0.0 and :: to the host itself, as it does loopback.
        let this_host = ip.is_loopback() || ip.is_unspecified();
        self.sockets
            .iter()
            .copied()
            .filter(|socket| socket.port() == port)
            .find(|socket| {
                let listening = socket.ip();
                if listening.is_unspecified() {
                    this_host || self.local.contains(&ip)
                } else if listening.is_loopback() {
                    this_host
                } else {
                    listening == ip
                }
            })
    }
}

/// Ranges refused unless an `allow` entry inside them names them, with why.
pub const GUARDED: [(&str, &str); 12] = [
    (
        "0.0.0.0/8",
        "the unspecified network (dialling it reaches this host)",
    ),
    (
        "::/128",
        "the unspecified address (dialling it reaches this host)",
    ),
    (
        "169.254.0.0/16",
        "link-local, where cloud metadata services answer (169.254.169.254)",
    ),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "AWS's IPv6 metadata service"),
    ("fd20:ce::254/128", "Google Cloud's IPv6 metadata service"),
    ("100.100.100.200/32", "Alibaba Cloud's metadata service"),
    ("192.0.0.192/32", "Oracle Cloud's metadata service"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved or broadcast"),
    (
        "64:ff9b:1::/48",
        "a local-use NAT64 prefix (the IPv4 address it carries cannot be read)",
    ),
];

impl Admission {
    /// Parses `allow`: CIDRs, addresses, `unix//prefix`.
    pub fn new(allow: &[String]) -> Result<Self, RegistryError> {
        Ok(Admission {
            allow: allow
                .iter()
                .map(|text| parse_rule(text))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// Ok when `address` may join; `resolved` holds the addresses a DNS name resolved to (empty
    /// for an IP address or a Unix socket). Err(Refused) says why not.
    pub fn admit(
        &self,
        address: &str,
        resolved: &[IpAddr],
        own: &OwnSockets,
    ) -> Result<(), RegistryError> {
        if let Some(path) = address.strip_prefix("unix/") {
            return self.admit_socket(address, path, own);
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(RegistryError::BadRequest(format!(
                "address {address:?}: expected host:port"
            )));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| RegistryError::BadRequest(format!("address {address:?}: bad port")))?;
        let ips = match literal_ip(host) {
            Some(ip) => vec![ip],
            None if resolved.is_empty() => {
                return Err(RegistryError::BadRequest(format!(
                    "address {address:?}: the host name did not resolve"
                )));
            }
            None => resolved.to_vec(),
        };
        ips.into_iter()
            .try_for_each(|ip| self.admit_ip(address, canonical(ip), port, own))
    }

    fn admit_socket(
        &self,
        address: &str,
        path: &str,
        own: &OwnSockets,
    ) -> Result<(), RegistryError> {
        if own.paths.iter().any(|listening| listening == path) {
            return Err(refused(
                address,
                "that socket is where this Caddy itself listens (its admin API, or a site: a loop)",
            ));
        }
        if self.allow.iter().any(
            |rule| matches!(rule, Rule::UnixPrefix(prefix) if path.starts_with(prefix.as_str())),
        ) {
            return Ok(());
        }
        Err(refused(address, "Unix sockets are refused unless the pool's allow list names them (allow unix//run/app/)"))
    }

    fn admit_ip(
        &self,
        address: &str,
        ip: IpAddr,
        port: u16,
        own: &OwnSockets,
    ) -> Result<(), RegistryError> {
        for view in views(ip) {
            let who = if view == ip {
                ip.to_string()
            } else {
                format!("{ip}, which carries {view},")
            };
            if let Some(socket) = own.reached_by(view, port) {
                let why = format!("{who} at port {port} reaches this Caddy itself ({socket}: its admin API, or a site: a loop)");
                return Err(refused(address, &why));
            }
            if let Some((range, why)) = guarded(view) {
                if !self.opens(range, view) {
                    return Err(refused(
                        address,
                        &format!("{who} is {why}; only an allow entry inside {range} lets it in"),
                    ));
                }
            }
        }
        let allowed = self
            .allow
            .iter()
            .any(|rule| matches!(rule, Rule::Net(net) if net.contains(&ip)));
        if !self.allow.is_empty() && !allowed {
            return Err(refused(
                address,
                &format!("{ip} is outside the pool's allow list"),
            ));
        }
        Ok(())
    }

    /// Whether an `allow` entry that lies inside the guarded `range` names `ip`.
    fn opens(&self, range: IpNet, ip: IpAddr) -> bool {
        self.allow
            .iter()
            .any(|rule| matches!(rule, Rule::Net(net) if net.contains(&ip) && range.contains(net)))
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

/// The host of `host:port` as an IP address, `[v6]` or v4; None for a name.
fn literal_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The guarded range `ip` falls in, and why it is guarded.
fn guarded(ip: IpAddr) -> Option<(IpNet, &'static str)> {
    GUARDED.iter().find_map(|(cidr, why)| {
        let range: IpNet = cidr.parse().ok()?;
        range.contains(&ip).then_some((range, *why))
    })
}

/// IPv4-mapped IPv6 (`::ffff:169.254.169.254`) as the IPv4 address it is: the same socket.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `ip`, and each IPv4 address an IPv6 one carries where a translator or tunnel would deliver
/// it: IPv4-compatible (`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64's well-known
/// prefix (`64:ff9b::a.b.c.d`), 6to4 (`2002:AABB:CCDD::`), Teredo (its server, and its client
/// inverted in the last 32 bits) and ISATAP (`…:0:5efe:a.b.c.d`, also `200:5efe`).
fn views(ip: IpAddr) -> Vec<IpAddr> {
    let IpAddr::V6(v6) = ip else { return vec![ip] };
    let bits = u128::from(v6);
    let v4 = |shift: u32| IpAddr::V4(Ipv4Addr::from((bits >> shift) as u32));
    let prefix = |len: u32, value: u128| bits >> (128 - len) == value >> (128 - len);
    let mut views = vec![ip];
    if prefix(96, 0) && bits > 1 {
        views.push(v4(0)); // IPv4-compatible, deprecated
    }
    if prefix(96, 0xffff_0000 << 32) {
        views.push(v4(0)); // IPv4-translated (SIIT)
    }
    if prefix(
        96,
        u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)),
    ) {
        views.push(v4(0)); // NAT64, well-known prefix
    }
    if prefix(16, 0x2002 << 112) {
        views.push(v4(80)); // 6to4
    }
    if prefix(32, 0x2001_0000 << 96) {
        views.push(v4(64)); // Teredo server
        views.push(IpAddr::V4(Ipv4Addr::from(!(bits as u32)))); // Teredo client, obfuscated
    }
    let interface_id = (bits >> 32) as u32;
    if interface_id == 0x0000_5efe || interface_id == 0x0200_5efe {
        views.push(v4(0)); // ISATAP
    }
    views
}

fn parse_rule(text: &str) -> Result<Rule, RegistryError> {
    if let Some(path) = text.strip_prefix("unix/") {
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control()) {
            return Err(RegistryError::BadRequest(format!(
                "allow {text:?}: a Unix socket prefix is written unix//run/app/"
            )));
        }
        return Ok(Rule::UnixPrefix(path.to_owned()));
    }
    let bad = || {
        RegistryError::BadRequest(format!("allow {text:?}: expected a CIDR (10.0.0.0/8, fd00::/8), an IP address, or unix//path-prefix"))
    };
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
    let ip = canonical(
        text.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| bad())?,
    );
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

    fn own(listeners: &[&str], local: &[&str]) -> OwnSockets {
        let listeners: Vec<String> = listeners.iter().map(|s| s.to_string()).collect();
        let local: Vec<IpAddr> = local.iter().map(|s| s.parse().unwrap()).collect();
        OwnSockets::parse(&listeners, &local).unwrap()
    }

    /// Caddy's default: the admin API on loopback, a site on all interfaces of a host at 10.0.0.9.
    fn admin() -> OwnSockets {
        own(
            &[
                "127.0.0.1:2019",
                "[::1]:2019",
                "unix//run/caddy/admin.sock",
                "0.0.0.0:443",
            ],
            &["10.0.0.9", "fd00::9"],
        )
    }

    fn status(policy: &Admission, address: &str, own: &OwnSockets) -> u16 {
        policy
            .admit(address, &[], own)
            .map_or_else(|e| e.status(), |()| 200)
    }

    #[test]
    fn refuses_by_default_what_would_expose_the_host() {
        let open = policy(&[]);
        for address in [
            "169.254.169.254:80",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "[fd20:ce::254]:80",
            "100.100.100.200:80",
            "192.0.0.192:80",
            "unix//var/run/docker.sock",
            "0.0.0.0:22",
            "0.1.2.3:22",
            "[::]:22",
            "224.0.0.1:80",
            "[ff02::1]:80",
            "255.255.255.255:80",
            "240.1.2.3:80",
        ] {
            assert_eq!(status(&open, address, &admin()), 403, "{address}");
        }
        for address in [
            "127.0.0.1:8001",
            "10.0.0.5:8000",
            "[::1]:8001",
            "[::ffff:10.0.0.5]:8000",
            "10.0.0.9:8000",
        ] {
            assert_eq!(status(&open, address, &admin()), 200, "{address}");
        }
    }

    #[test]
    fn this_caddy_is_refused_on_every_address_that_reaches_it() {
        let open = policy(&[]);
        // Loopback admin: all of 127.0.0.0/8 and ::1, in every spelling, at its port only.
        for address in [
            "127.0.0.1:2019",
            "127.0.0.2:2019",
            "127.1.2.3:2019",
            "[::1]:2019",
            "[::ffff:127.0.0.2]:2019",
            "0.0.0.0:2019",
        ] {
            assert_eq!(status(&open, address, &admin()), 403, "{address}");
        }
        assert_eq!(
            status(&open, "10.0.0.9:2019", &admin()),
            200,
            "the admin API is on loopback only"
        );
        // A site on all interfaces: loopback and the host's own addresses at its port.
        for address in [
            "127.0.0.5:443",
            "10.0.0.9:443",
            "[fd00::9]:443",
            "[::ffff:10.0.0.9]:443",
        ] {
            assert_eq!(status(&open, address, &admin()), 403, "{address}");
        }
        assert_eq!(
            status(&open, "10.0.0.8:443", &admin()),
            200,
            "another host's port 443"
        );
        // The admin API on all interfaces (compose's setting): the pod's own address too.
        let wildcard = own(&["[::]:2999"], &["10.244.0.7"]);
        for address in [
            "127.0.0.2:2999",
            "10.244.0.7:2999",
            "[::ffff:127.0.0.2]:2999",
            "[::127.0.0.1]:2999",
        ] {
            assert_eq!(status(&open, address, &wildcard), 403, "{address}");
        }
        // A socket on one address: that address.
        let one = own(&["10.244.0.7:2999"], &[]);
        assert_eq!(status(&open, "10.244.0.7:2999", &one), 403);
        assert_eq!(status(&open, "10.244.0.8:2999", &one), 200);
        assert_eq!(status(&open, "unix//run/caddy/admin.sock", &admin()), 403);
        // No allow list lets it in.
        let everything = policy(&["0.0.0.0/0", "::/0", "unix//"]);
        for address in [
            "127.0.0.1:2019",
            "127.9.9.9:2019",
            "10.244.0.7:2999",
            "unix//run/caddy/admin.sock",
        ] {
            let own = if address.ends_with("2999") {
                &wildcard
            } else {
                &admin()
            };
            assert_eq!(
                everything.admit(address, &[], own).unwrap_err().status(),
                403,
                "{address}"
            );
        }
    }

    #[test]
    fn an_ipv4_address_inside_an_ipv6_one_is_judged_too() {
        let open = policy(&[]);
        for address in [
            "[64:ff9b::a9fe:a9fe]:80",                   // NAT64 of 169.254.169.254
            "[2002:a9fe:a9fe::1]:80",                    // 6to4
            "[::a9fe:a9fe]:80",                          // IPv4-compatible
            "[::ffff:0:a9fe:a9fe]:80",                   // IPv4-translated
            "[2001:0:a9fe:a9fe::1]:80",                  // Teredo server
            "[2001:0:4136:e378:8000:63bf:5601:5601]:80", // Teredo client: !0x56015601 = 169.254.169.254
            "[fe80::5efe:a9fe:a9fe]:80",                 // ISATAP (link-local anyway)
            "[2001:db8::200:5efe:a9fe:a9fe]:80",         // ISATAP on a global prefix
            "[64:ff9b::7f00:1]:2019",                    // NAT64 of this Caddy's admin API
            "[64:ff9b:1::a9fe:a9fe]:80",                 // local-use NAT64: the position is unknown
        ] {
            assert_eq!(status(&open, address, &admin()), 403, "{address}");
        }
        for address in [
            "[64:ff9b::a00:5]:80",
            "[2002:a00:5::1]:80",
            "[2001:db8::1]:80",
        ] {
            assert_eq!(status(&open, address, &admin()), 200, "{address}");
        }
    }

    #[test]
    fn a_guard_opens_only_to_an_allow_entry_inside_it() {
        let broad = policy(&["fd00::/8", "0.0.0.0/0", "unix//"]);
        for address in [
            "[fd00:ec2::254]:80",
            "169.254.169.254:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "224.0.0.1:80",
        ] {
            assert_eq!(status(&broad, address, &admin()), 403, "{address}");
        }
        assert_eq!(status(&broad, "[fd00::5]:80", &admin()), 200);
        assert_eq!(
            status(&broad, "unix//run/app/a.sock", &admin()),
            200,
            "a unix prefix names sockets"
        );
        let named = policy(&["169.254.10.0/24", "fd00:ec2::254", "10.0.0.0/8"]);
        assert_eq!(
            status(&named, "169.254.10.1:80", &admin()),
            200,
            "named, so admitted"
        );
        assert_eq!(status(&named, "[fd00:ec2::254]:80", &admin()), 200);
        assert_eq!(
            status(&named, "169.254.169.254:80", &admin()),
            403,
            "outside the named part"
        );
        assert_eq!(
            status(&named, "[64:ff9b::a9fe:a0a]:80", &admin()),
            403,
            "the IPv6 form is not in allow"
        );
    }

    #[test]
    fn an_allow_list_is_the_only_way_in() {
        let strict = policy(&["10.0.0.0/8", "unix//run/app/"]);
        assert_eq!(status(&strict, "10.1.2.3:8000", &admin()), 200);
        assert_eq!(status(&strict, "[::ffff:10.1.2.3]:8000", &admin()), 200);
        assert_eq!(status(&strict, "unix//run/app/a.sock", &admin()), 200);
        for address in [
            "127.0.0.1:8001",
            "192.168.1.1:80",
            "unix//var/run/docker.sock",
            "[2002:a01:203::1]:80",
        ] {
            assert_eq!(status(&strict, address, &admin()), 403, "{address}");
        }
        assert!(OwnSockets::parse(&["localhost:2019".into()], &[]).is_err());
        assert_eq!(strict.allow_list(), ["10.0.0.0/8", "unix//run/app/"]);
    }

    #[test]
    fn names_are_judged_by_what_they_resolved_to() {
        let strict = policy(&["10.0.0.0/8"]);
        let inside: [IpAddr; 1] = ["10.0.0.7".parse().unwrap()];
        let metadata: [IpAddr; 2] = [
            "10.0.0.7".parse().unwrap(),
            "169.254.169.254".parse().unwrap(),
        ];
        let loopback: [IpAddr; 1] = ["127.0.0.2".parse().unwrap()];
        assert_eq!(
            strict.admit("app-1.internal:8000", &inside, &admin()),
            Ok(())
        );
        assert_eq!(
            strict
                .admit("app-1.internal:8000", &metadata, &admin())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            policy(&[])
                .admit("rebind.example:80", &metadata[1..], &admin())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            policy(&[])
                .admit("rebind.example:2019", &loopback, &admin())
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            strict
                .admit("app-1.internal:8000", &[], &admin())
                .unwrap_err()
                .status(),
            400,
            "unresolved"
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in [
            "10.0.0.0/33",
            "not-a-cidr",
            "10.0.0/8",
            "unix/relative",
            "fe80::/129",
        ] {
            let error = Admission::new(&[bad.to_string()]).unwrap_err();
            assert!(error.to_string().contains(bad), "{bad}: {error}");
        }
    }
}
