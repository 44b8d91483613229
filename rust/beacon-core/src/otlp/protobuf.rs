//! The few protobuf encoding primitives OTLP needs; no code generation, no dependency.

/// Appends protobuf fields to a buffer.
#[derive(Default)]
pub struct ProtoWriter {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

impl ProtoWriter {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire_type: u32) {
        self.varint(u64::from(field << 3 | wire_type));
    }

    /// A varint field (ints, enums, bools).
    pub fn uint(&mut self, field: u32, value: u64) {
        self.tag(field, VARINT);
        self.varint(value);
    }

    /// A fixed64 field.
    pub fn fixed64(&mut self, field: u32, value: u64) {
        self.tag(field, FIXED64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// A fixed32 field.
    pub fn fixed32(&mut self, field: u32, value: u32) {
        self.tag(field, FIXED32);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// A bytes or string field.
    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        self.tag(field, LEN);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    /// A nested message, written by `write`.
    pub fn message(&mut self, field: u32, write: impl FnOnce(&mut ProtoWriter)) {
        let mut nested = ProtoWriter::default();
        write(&mut nested);
        self.bytes(field, &nested.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_varints_and_nesting_like_protoc() {
        let mut w = ProtoWriter::default();
        w.uint(1, 150);
        assert_eq!(w.buf, [0x08, 0x96, 0x01]);
        let mut w = ProtoWriter::default();
        w.message(3, |m| m.uint(1, 150));
        assert_eq!(w.buf, [0x1a, 0x03, 0x08, 0x96, 0x01]);
        let mut w = ProtoWriter::default();
        w.bytes(2, b"testing");
        assert_eq!(w.buf, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
    }
}
