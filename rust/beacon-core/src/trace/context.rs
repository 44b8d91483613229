//! W3C Trace Context: parsing `traceparent` strictly, carrying `tracestate`.

/// A parsed, valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The caller's span id: 8 bytes, never all zero.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

fn hex_value(byte: u8) -> Option<u8> {
    // Only lowercase hex is valid in traceparent.
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

impl TraceParent {
    /// Parses a header value per the W3C Trace Context spec: version `00` is exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; a higher version may append `-…` fields, which are
    /// ignored; version `ff`, uppercase hex and all-zero ids are invalid.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = decode_hex::<1>(&value[0..2])?[0];
        if version == 0xff
            || (version == 0 && value.len() != 55)
            || (value.len() > 55 && value[55] != b'-')
        {
            return None;
        }
        let trace_id = decode_hex::<16>(&value[3..35])?;
        let parent_id = decode_hex::<8>(&value[36..52])?;
        let flags = decode_hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Lowercase hex of any byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Longest `tracestate` carried, per the spec's limit.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Returns the `tracestate` to carry, or None when it is malformed or too long (the spec says
/// to drop it then). Several header lines are joined with commas first.
pub fn validate_tracestate(value: &str) -> Option<String> {
    let members: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() || members.len() > 32 {
        return None;
    }
    for member in &members {
        let (key, val) = member.split_once('=')?;
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
        let val_ok = !val.is_empty()
            && val.len() <= 256
            && val
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
            && !val.ends_with(' ');
        if !key_ok || !val_ok {
            return None;
        }
    }
    let joined = members.join(",");
    (joined.len() <= MAX_TRACESTATE_LEN).then_some(joined)
}

/// The trace context of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestTrace {
    /// The trace (the caller's, or a new one).
    pub trace_id: [u8; 16],
    /// This request's server span.
    pub span_id: [u8; 8],
    /// The caller's span, when a valid `traceparent` came in.
    pub parent_span_id: Option<[u8; 8]>,
    /// The `tracestate` carried from the caller.
    pub trace_state: String,
    /// Whether the span is recorded and exported.
    pub sampled: bool,
    /// When the request started, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
}

impl RequestTrace {
    /// W3C trace flags of this span.
    pub fn flags(&self) -> u8 {
        u8::from(self.sampled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(to_hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&parent.parent_id), "00f067aa0ba902b7");
        assert!(parent.sampled());
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn future_versions_may_carry_more_fields() {
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!TraceParent::parse(future).unwrap().sampled());
    }

    #[test]
    fn tracestate_is_carried_when_valid() {
        assert_eq!(
            validate_tracestate("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(validate_tracestate("no-equals"), None);
        assert_eq!(validate_tracestate("UPPER=1"), None);
        assert_eq!(validate_tracestate(&format!("k={}", "v".repeat(600))), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(validate_tracestate(&many.join(",")), None);
    }
}
