//! A small blocking client for Caddy's Admin API: one request per connection (the admin server
//! is replaced on every config change and answers `Connection: close` anyway), the `Host` the
//! admin expects, Caddy's JSON errors turned into one-line messages, and HTTPS with a private
//! CA and a client certificate for Caddy's remote admin endpoint (`admin.remote`, mutual TLS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beacon_base::tls_files::TlsFiles;

use crate::http_client::{Endpoint, HttpClient, MAX_ANSWER};
use crate::CompanionError;

/// Where an Admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAddress {
    /// How to connect (`host:port` is also sent as `Host`).
    pub endpoint: Endpoint,
    /// The address as given, for messages and labels.
    pub display: String,
    /// For an `https://` address: the CA and client certificate to use.
    pub tls: Option<Arc<TlsFiles>>,
}

impl AdminAddress {
    /// Parses `http://host:port`, `host:port`, `:port` (this host), `unix//path/admin.sock`, or
    /// `https://host:port` (Caddy's remote admin), which uses `tls` (the system's roots alone
    /// when None).
    pub fn parse(text: &str, tls: Option<&Arc<TlsFiles>>) -> Result<AdminAddress, CompanionError> {
        let usage = |why: &str| {
            CompanionError::Usage(format!(
                "--admin {text:?}: {why} (e.g. --admin http://localhost:2019)"
            ))
        };
        if let Some(path) = text.strip_prefix("unix/") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(usage("a Unix socket is written unix//absolute/path.sock"));
            }
            return Ok(AdminAddress {
                endpoint: Endpoint::Unix(PathBuf::from(path)),
                display: text.to_owned(),
                tls: None,
            });
        }
        let (scheme, rest) = match text.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", text.strip_prefix("http://").unwrap_or(text)),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(usage("give the address only, without a path"));
        }
        let authority = if let Some(port) = rest.strip_prefix(':') {
            format!("localhost:{port}")
        } else {
            rest.to_owned()
        };
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                let tls = (scheme == "https").then(|| tls.cloned().unwrap_or_default());
                Ok(AdminAddress {
                    display: format!("{scheme}://{authority}"),
                    endpoint: Endpoint::Tcp(authority),
                    tls,
                })
            }
            _ => Err(usage("expected host:port")),
        }
    }

    /// The address as users write it.
    pub fn url(&self) -> String {
        self.display.clone()
    }

    /// True when Caddy runs on this host (a loopback address or a Unix socket).
    pub fn is_local(&self) -> bool {
        match &self.endpoint {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp(authority) => {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

/// One Admin API response (its `etag` is what changes send back as `If-Match`).
pub type AdminResponse = crate::http_client::HttpResponse;

/// Where an [`AdminClient`]'s requests go: Caddy's Admin API over HTTP ([`HttpClient`]), or,
/// in the companion's unit tests, an in-memory Admin API (`crate::testing::FakeCaddy`) that the
/// memberships' state machines are driven through. One request in, the whole answer out; an
/// error is a transport failure, as text.
pub trait AdminTransport: Send + Sync + std::fmt::Debug {
    /// Sends `method path` with these headers and body, within `timeout`.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<AdminResponse, String>;
}

impl AdminTransport for HttpClient {
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<AdminResponse, String> {
        self.send(method, path, headers, body, timeout, MAX_ANSWER)
    }
}

/// A client for one Admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    address: AdminAddress,
    timeout: Duration,
    transport: Arc<dyn AdminTransport>,
}

impl AdminClient {
    /// A client with a 5 s timeout per request. Fails (as bad usage) when its TLS settings
    /// cannot make a client.
    pub fn new(address: AdminAddress) -> Result<Self, CompanionError> {
        let http = HttpClient::new(&address.endpoint, address.tls.as_deref())
            .map_err(|e| CompanionError::Usage(format!("--admin {}: {e}", address.display)))?;
        Ok(AdminClient::with_transport(address, Arc::new(http)))
    }

    /// A client whose requests go through `transport` (5 s per request).
    pub fn with_transport(address: AdminAddress, transport: Arc<dyn AdminTransport>) -> Self {
        AdminClient {
            address,
            timeout: Duration::from_secs(5),
            transport,
        }
    }

    /// The address this client talks to.
    pub fn address(&self) -> &AdminAddress {
        &self.address
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CompanionError {
        let mut reason = reason.to_string();
        // TLS failures, said in the terms of the flags that fix them.
        if reason.contains("invalid peer certificate") {
            reason.push_str(
                " (Caddy's certificate is not trusted: give the CA that issued it with --admin-ca)",
            );
        } else if [
            "UnknownCA",
            "BadCertificate",
            "CertificateRequired",
            "AccessDenied",
        ]
        .iter()
        .any(|alert| reason.contains(&format!("alert: {alert}")))
        {
            reason.push_str(" (Caddy refused our client certificate: --admin-cert must be one its admin.remote access_control lists)");
        }
        CompanionError::Unreachable {
            admin: self.address.url(),
            reason,
        }
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        if_match: Option<&str>,
    ) -> Result<AdminResponse, CompanionError> {
        let mut headers = vec![("Accept", "application/json")];
        if let Some(tag) = if_match {
            headers.push(("If-Match", tag));
        }
        self.transport
            .exchange(method, path, &headers, body, self.timeout)
            .map_err(|e| self.unreachable(e))
    }

    /// GET that must answer 200; the body parsed as JSON.
    pub fn get_json(
        &self,
        path: &str,
    ) -> Result<(serde_json::Value, Option<String>), CompanionError> {
        let response = self.get_ok(path)?;
        let value = serde_json::from_slice(&response.body).map_err(|e| CompanionError::Api {
            admin: self.address.url(),
            request: format!("GET {path}"),
            status: response.status,
            message: format!("the answer is not JSON: {e}"),
        })?;
        Ok((value, response.etag))
    }

    /// GET that must answer 200.
    pub fn get_ok(&self, path: &str) -> Result<AdminResponse, CompanionError> {
        let response = self.request("GET", path, None, None)?;
        if response.status != 200 {
            return Err(self.api_error("GET", path, &response));
        }
        Ok(response)
    }

    /// The error for an unexpected answer, with Caddy's `{"error": ...}` text when there is one.
    pub fn api_error(&self, method: &str, path: &str, response: &AdminResponse) -> CompanionError {
        let message = error_message(&response.body);
        CompanionError::Api {
            admin: self.address.url(),
            request: format!("{method} {path}"),
            status: response.status,
            message,
        }
    }
}

/// Caddy's `{"error": ...}` text, or the start of the body when it is not that.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_addresses() {
        let tcp = |text: &str| AdminAddress::parse(text, None).unwrap().endpoint;
        assert_eq!(
            tcp("http://localhost:2019"),
            Endpoint::Tcp("localhost:2019".into())
        );
        assert_eq!(
            tcp("127.0.0.1:2019/"),
            Endpoint::Tcp("127.0.0.1:2019".into())
        );
        assert_eq!(tcp(":2019"), Endpoint::Tcp("localhost:2019".into()));
        assert_eq!(
            tcp("unix//run/caddy/admin.sock"),
            Endpoint::Unix("/run/caddy/admin.sock".into())
        );
        assert!(AdminAddress::parse("unix//run/a.sock", None)
            .unwrap()
            .is_local());
        assert!(AdminAddress::parse("http://[::1]:2019", None)
            .unwrap()
            .is_local());
        assert!(!AdminAddress::parse("http://caddy:2019", None)
            .unwrap()
            .is_local());
        let remote = AdminAddress::parse("https://caddy:2021", None).unwrap();
        assert_eq!(
            (remote.display.as_str(), remote.tls.is_some()),
            ("https://caddy:2021", true)
        );
        assert_eq!(
            AdminAddress::parse("http://caddy:2019", Some(&Arc::default()))
                .unwrap()
                .tls,
            None
        );
        for bad in [
            "localhost",
            "http://h:port",
            "https://h",
            "http://h:2019/config",
            "unix/relative.sock",
            "",
        ] {
            let error = AdminAddress::parse(bad, None).unwrap_err();
            assert_eq!(error.exit_code(), 64, "{bad}: {error}");
        }
    }
}
