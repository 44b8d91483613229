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

    /// A nested message, written by `write` straight into this buffer. Its length is written in
    /// front afterwards: one placeholder byte covers messages under 128 bytes (most of OTLP's);
    /// longer ones shift their content to make room for the longer length varint.
    pub fn message(&mut self, field: u32, write: impl FnOnce(&mut ProtoWriter)) {
        self.tag(field, LEN);
        let start = self.buf.len();
        self.buf.push(0);
        write(self);
        let len = self.buf.len() - start - 1;
        if len < 0x80 {
            self.buf[start] = len as u8;
            return;
        }
        let mut prefix = ProtoWriter { buf: Vec::with_capacity(5) };
        prefix.varint(len as u64);
        self.buf.splice(start..start + 1, prefix.buf);
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
        w.message(1, |m| m.bytes(2, &[7u8; 200]));
        assert_eq!(&w.buf[..5], &[0x0a, 0xcb, 0x01, 0x12, 0xc8]);
        assert_eq!(w.buf.len(), 3 + 3 + 200);
        let mut w = ProtoWriter::default();
        w.bytes(2, b"testing");
        assert_eq!(w.buf, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
    }
}
