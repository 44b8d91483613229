//! A small blocking client for Caddy's Admin API: one request per connection (the admin server
//! is replaced on every config change and answers `Connection: close` anyway), the `Host` the
//! admin expects, and Caddy's JSON errors turned into one-line messages.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::AgentError;

/// Where an Admin API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminAddress {
    /// `host:port`, also sent as `Host`.
    pub authority: String,
}

impl AdminAddress {
    /// Parses `http://host:port`, `host:port` or `:port` (this host). Unix sockets come with
    /// the registration commands.
    pub fn parse(text: &str) -> Result<AdminAddress, AgentError> {
        let usage = |why: &str| AgentError::Usage(format!("--admin {text:?}: {why} (e.g. --admin http://localhost:2019)"));
        if text.starts_with("unix/") {
            return Err(usage("Unix-socket admin addresses are not supported by this command yet"));
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
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(AdminAddress { authority }),
            _ => Err(usage("expected host:port")),
        }
    }

    /// The address as users write it.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// One Admin API response.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminResponse {
    /// HTTP status.
    pub status: u16,
    /// The `Etag` header, used as `If-Match` on changes.
    pub etag: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A client for one Admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    address: AdminAddress,
    timeout: Duration,
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
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
        let socket = self
            .address
            .authority
            .to_socket_addrs()
            .map_err(|e| self.unreachable(e))?
            .next()
            .ok_or_else(|| self.unreachable("the host has no address"))?;
        let mut stream = TcpStream::connect_timeout(&socket, self.timeout).map_err(|e| self.unreachable(e))?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| self.unreachable(e))?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| self.unreachable(e))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n", self.address.authority);
        if let Some(tag) = if_match {
            head.push_str(&format!("If-Match: {tag}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(|e| self.unreachable(e))?;
        if let Some(body) = body {
            stream.write_all(body).map_err(|e| self.unreachable(e))?;
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| self.unreachable(e))?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| self.unreachable("the answer is not HTTP"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| self.unreachable("the answer is not HTTP"))?;
        let mut etag = None;
        let mut chunked = false;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("etag") {
                    etag = Some(value.to_owned());
                } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let body = &raw[split + 4..];
        let body = if chunked { dechunk(body).ok_or_else(|| self.unreachable("a malformed chunked answer"))? } else { body.to_vec() };
        Ok(AdminResponse { status, etag, body })
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
        assert_eq!(AdminAddress::parse("http://localhost:2019").unwrap().authority, "localhost:2019");
        assert_eq!(AdminAddress::parse("127.0.0.1:2019/").unwrap().authority, "127.0.0.1:2019");
        assert_eq!(AdminAddress::parse(":2019").unwrap().authority, "localhost:2019");
        for bad in ["localhost", "http://h:port", "https://h:2019", "http://h:2019/config", "unix//run/caddy.sock", ""] {
            let error = AdminAddress::parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 64, "{bad}: {error}");
        }
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert_eq!(dechunk(b"zz\r\n"), None);
    }
}
