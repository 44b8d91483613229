//! A small blocking client for Caddy's Admin API: one request per connection (the admin server
//! is replaced on every config change and answers `Connection: close` anyway), the `Host` the
//! admin expects, and Caddy's JSON errors turned into one-line messages.

use std::path::PathBuf;
use std::time::Duration;

use crate::http_client::{send, Endpoint, MAX_ANSWER};
use crate::AgentError;

/// Where an Admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAddress {
    /// How to connect (`host:port` is also sent as `Host`).
    pub endpoint: Endpoint,
    /// The address as given, for messages and labels.
    pub display: String,
}

impl AdminAddress {
    /// Parses `http://host:port`, `host:port`, `:port` (this host) or `unix//path/admin.sock`.
    pub fn parse(text: &str) -> Result<AdminAddress, AgentError> {
        let usage = |why: &str| AgentError::Usage(format!("--admin {text:?}: {why} (e.g. --admin http://localhost:2019)"));
        if let Some(path) = text.strip_prefix("unix/") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(usage("a Unix socket is written unix//absolute/path.sock"));
            }
            return Ok(AdminAddress { endpoint: Endpoint::Unix(PathBuf::from(path)), display: text.to_owned() });
        }
        if text.starts_with("https://") {
            return Err(usage("the Admin API is plain HTTP; use http://"));
        }
        let rest = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
        if rest.contains('/') {
            return Err(usage("give the address only, without a path"));
        }
        let authority = if let Some(port) = rest.strip_prefix(':') { format!("localhost:{port}") } else { rest.to_owned() };
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(AdminAddress { display: format!("http://{authority}"), endpoint: Endpoint::Tcp(authority) })
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
                let host = authority.rsplit_once(':').map_or(authority.as_str(), |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

/// One Admin API response (its `etag` is what changes send back as `If-Match`).
pub type AdminResponse = crate::http_client::HttpResponse;

/// A client for one Admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    address: AdminAddress,
    timeout: Duration,
}

impl AdminClient {
    /// A client with a 5 s timeout per request.
    pub fn new(address: AdminAddress) -> Self {
        AdminClient { address, timeout: Duration::from_secs(5) }
    }

    /// The address this client talks to.
    pub fn address(&self) -> &AdminAddress {
        &self.address
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::Unreachable { admin: self.address.url(), reason: reason.to_string() }
    }

    /// Sends one request and reads the whole response.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>, if_match: Option<&str>) -> Result<AdminResponse, AgentError> {
        let mut headers = vec![("Accept", "application/json")];
        if let Some(tag) = if_match {
            headers.push(("If-Match", tag));
        }
        send(&self.address.endpoint, method, path, &headers, body, self.timeout, MAX_ANSWER).map_err(|e| self.unreachable(e))
    }

    /// GET that must answer 200; the body parsed as JSON.
    pub fn get_json(&self, path: &str) -> Result<(serde_json::Value, Option<String>), AgentError> {
        let response = self.get_ok(path)?;
        let value = serde_json::from_slice(&response.body).map_err(|e| AgentError::Api {
            admin: self.address.url(),
            request: format!("GET {path}"),
            status: response.status,
            message: format!("the answer is not JSON: {e}"),
        })?;
        Ok((value, response.etag))
    }

    /// GET that must answer 200.
    pub fn get_ok(&self, path: &str) -> Result<AdminResponse, AgentError> {
        let response = self.request("GET", path, None, None)?;
        if response.status != 200 {
            return Err(self.api_error("GET", path, &response));
        }
        Ok(response)
    }

    /// The error for an unexpected answer, with Caddy's `{"error": ...}` text when there is one.
    pub fn api_error(&self, method: &str, path: &str, response: &AdminResponse) -> AgentError {
        let message = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().chars().take(300).collect());
        AgentError::Api { admin: self.address.url(), request: format!("{method} {path}"), status: response.status, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_addresses() {
        let tcp = |text: &str| AdminAddress::parse(text).unwrap().endpoint;
        assert_eq!(tcp("http://localhost:2019"), Endpoint::Tcp("localhost:2019".into()));
        assert_eq!(tcp("127.0.0.1:2019/"), Endpoint::Tcp("127.0.0.1:2019".into()));
        assert_eq!(tcp(":2019"), Endpoint::Tcp("localhost:2019".into()));
        assert_eq!(tcp("unix//run/caddy/admin.sock"), Endpoint::Unix("/run/caddy/admin.sock".into()));
        assert!(AdminAddress::parse("unix//run/a.sock").unwrap().is_local());
        assert!(AdminAddress::parse("http://[::1]:2019").unwrap().is_local());
        assert!(!AdminAddress::parse("http://caddy:2019").unwrap().is_local());
        for bad in ["localhost", "http://h:port", "https://h:2019", "http://h:2019/config", "unix/relative.sock", ""] {
            let error = AdminAddress::parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 64, "{bad}: {error}");
        }
    }
}
