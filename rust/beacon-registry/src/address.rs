//! What a companion may register: a pool name and a dial address Caddy can use as it is.
//! Checked here, once, so the Go host and Caddy never see a malformed one.

use crate::RegistryError;

/// Longest pool name.
const MAX_POOL_NAME: usize = 64;
/// Longest dial address (a DNS name is at most 253 bytes, plus `:port`; a socket path 108).
const MAX_ADDRESS: usize = 260;

/// A pool name: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn check_pool_name(name: &str) -> Result<(), RegistryError> {
    let fine = !name.is_empty()
        && name.len() <= MAX_POOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "pool name {:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
            truncate(name)
        )))
    }
}

/// A dial address: `host:port` (an IPv4 address, `[IPv6]` or a DNS name; port 1–65535), or
/// `unix//absolute/path.sock`.
pub fn check_dial_address(address: &str) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        Err(RegistryError::BadRequest(format!(
            "address {:?}: {why} (e.g. 10.0.0.5:8000)",
            truncate(address)
        )))
    };
    if address.len() > MAX_ADDRESS {
        return bad("too long");
    }
    if let Some(path) = address.strip_prefix("unix/") {
        if !path.starts_with('/')
            || path.len() < 2
            || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return bad("a Unix socket is written unix//absolute/path.sock");
        }
        // One spelling per socket: an allow prefix (unix//run/app/) must not be escaped with
        // `..`, nor matched differently through `.` or `//`.
        if path[1..]
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return bad("a socket path without '.', '..' or '//' parts");
        }
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("expected host:port");
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) || !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return bad("the port must be 1 to 65535");
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<std::net::Ipv4Addr>().is_ok()
    } else {
        is_dns_name(host)
    };
    if host_ok {
        Ok(())
    } else {
        bad("the host must be an IP address or a DNS name")
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_caddy_can_dial() {
        for good in [
            "127.0.0.1:8001",
            "[::1]:8001",
            "app-1.internal:80",
            "localhost:65535",
            "unix//run/app.sock",
        ] {
            assert!(check_dial_address(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:80x",
            "999.1.1.1:80",
            "[::1:80",
            "[zz]:80",
            "a b:80",
            "-a:80",
            "a..b:80",
            ":80",
            "http://a:80",
            "unix/relative",
            "unix//a\nb",
            "a:80\r\nX: y",
            "unix//run/app/../../etc/passwd",
            "unix//run/./app.sock",
            "unix//run//app.sock",
            "unix//run/app/",
        ] {
            assert!(check_dial_address(bad).is_err(), "{bad:?}");
        }
        assert!(check_dial_address(&format!("{}:80", "a".repeat(300))).is_err());
    }

    #[test]
    fn pool_names() {
        assert!(check_pool_name("api-v2.prod_1").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"a".repeat(65)] {
            assert!(check_pool_name(bad).is_err(), "{bad:?}");
        }
    }
}
