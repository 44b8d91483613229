//! Request ids: validating the one a proxy sent, and generating one when it is missing or bad.

use beacon_base::random::next_u64;

/// Longest accepted incoming id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// An id is accepted when it is 1 to 128 bytes of visible ASCII (no spaces, no control bytes),
/// so it can be echoed in a header and written to logs without any risk of injection.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Length of a generated id.
pub const GENERATED_ID_LEN: usize = 36;

/// A random UUID version 4 in its canonical text form, the same shape Caddy's
/// `{http.request.uuid}` produces.
pub fn generate_request_id() -> [u8; GENERATED_ID_LEN] {
    // Where each byte's two hex digits go (the dashes sit at 8, 13, 18 and 23). A table of digit
    // pairs and fixed positions: this runs on every request that arrives without an id.
    const POSITIONS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut raw = ((u128::from(next_u64())) << 64 | u128::from(next_u64())).to_be_bytes();
    raw[6] = (raw[6] & 0x0f) | 0x40;
    raw[8] = (raw[8] & 0x3f) | 0x80;
    let mut out = [b'-'; GENERATED_ID_LEN];
    for (byte, position) in raw.iter().zip(POSITIONS) {
        out[position..position + 2].copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    out
}

/// The two lowercase hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut value = 0;
    while value < 256 {
        pairs[value] = [HEX[value >> 4], HEX[value & 0x0f]];
        value += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn validation_accepts_proxy_ids_and_rejects_unsafe_ones() {
        assert!(is_valid_request_id(b"6f1f0b3c-3a52-4f9e-9d3c-0f7d9d3f6b1a"));
        assert!(is_valid_request_id(b"req_123:abc/XYZ=="));
        assert!(is_valid_request_id(&[b'a'; 128]));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"line\r\nbreak"));
        assert!(!is_valid_request_id("caf\u{e9}".as_bytes()));
        assert!(!is_valid_request_id(b"tab\there"));
    }

    #[test]
    fn generated_ids_are_uuid_v4_and_unique() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = generate_request_id();
            let text = std::str::from_utf8(&id).unwrap();
            assert!(is_valid_request_id(&id));
            assert_eq!(text.len(), 36);
            assert_eq!(&text[14..15], "4", "{text}");
            assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
            assert_eq!(text.matches('-').count(), 4);
            assert!(seen.insert(id));
        }
    }
}
