//! Compact binary encoding for log records and snapshots.
//!
//! Integers are LEB128 varints (signed ones zig-zag encoded), strings and byte strings are a
//! varint length then the bytes, options a 0/1 tag byte, sequences a varint count then the
//! items. Decoding checks every length against the bytes left and never panics; a short or
//! malformed input is a [`DecodeError`].

use thiserror::Error;

/// The bytes are not a valid encoding.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("unexpected end of input at byte {0}")]
    Eof(usize),
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("malformed varint at byte {0}")]
    Varint(usize),
    /// A tag byte names no known variant.
    #[error("unknown tag {tag} for {what} at byte {at}")]
    Tag {
        /// What was being decoded.
        what: &'static str,
        /// The tag.
        tag: u8,
        /// Offset.
        at: usize,
    },
    /// A value is out of its range (e.g. a length above its limit, invalid UTF-8).
    #[error("invalid {what} at byte {at}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Offset.
        at: usize,
    },
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Longest string or byte string the decoder accepts (1 MiB): bounds allocation on bad input.
pub const BYTES_LEN_MAX: usize = 1 << 20;
/// Most items in one decoded sequence: bounds allocation on bad input.
pub const SEQ_LEN_MAX: usize = 1 << 20;

/// Appends encoded values to a buffer.
pub struct Enc<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Enc<'a> {
    /// An encoder appending to `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Enc { buf }
    }

    /// One raw byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// An unsigned varint.
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// An unsigned varint.
    pub fn u32(&mut self, v: u32) {
        self.u64(u64::from(v));
    }

    /// A zig-zag signed varint.
    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    /// An `f64` as its 8 little-endian bytes.
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// A boolean as one byte.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// An optional string.
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    /// An optional signed integer.
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.i64(x);
            }
        }
    }

    /// A sequence length.
    pub fn seq_len(&mut self, n: usize) {
        self.u64(n as u64);
    }
}

/// Reads encoded values from a byte slice.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    /// A decoder over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// One raw byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Eof(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned varint.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::Varint(start));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint(start))
    }

    /// An unsigned varint that must fit 32 bits.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        u32::try_from(self.u64()?).map_err(|_| DecodeError::Invalid { what: "u32", at })
    }

    /// A zig-zag signed varint.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// An `f64` from 8 little-endian bytes.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }

    /// A boolean byte (0 or 1).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what: "bool", at }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Eof(self.buf.len()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > BYTES_LEN_MAX as u64 {
            return Err(DecodeError::Invalid {
                what: "byte string length",
                at,
            });
        }
        self.take(n as usize)
    }

    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid { what: "utf-8", at })
    }

    /// An optional string.
    pub fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            tag => Err(DecodeError::Tag {
                what: "option",
                tag,
                at,
            }),
        }
    }

    /// An optional signed integer.
    pub fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.i64()?)),
            tag => Err(DecodeError::Tag {
                what: "option",
                tag,
                at,
            }),
        }
    }

    /// A length-prefixed byte string of any length the input holds (not bounded by
    /// [`BYTES_LEN_MAX`]): a borrowed slice, so bad input cannot make it allocate. For a
    /// snapshot's per-store sections.
    pub fn section(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Invalid {
                what: "section length",
                at,
            });
        }
        self.take(n as usize)
    }

    /// A sequence length bounded only by the bytes left (every item is at least one byte),
    /// for the large tables of a snapshot (active holds, idempotency keys, cells), which
    /// may hold more than [`SEQ_LEN_MAX`] items. A caller reserving room for the items
    /// bounds it by the bytes left divided by an item's least encoded size.
    pub fn long_seq_len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Invalid {
                what: "sequence length",
                at,
            });
        }
        Ok(n as usize)
    }

    /// A sequence length, bounded by [`SEQ_LEN_MAX`] and by the bytes left (every item is
    /// at least one byte), so bad input cannot make the decoder allocate much.
    pub fn seq_len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > SEQ_LEN_MAX as u64 || n > self.remaining() as u64 {
            return Err(DecodeError::Invalid {
                what: "sequence length",
                at,
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ints_round_trip(a: u64, b: i64, c: u32, s in ".{0,40}") {
            let mut buf = Vec::new();
            let mut e = Enc::new(&mut buf);
            e.u64(a); e.i64(b); e.u32(c); e.str(&s); e.opt_i64(Some(b)); e.opt_str(None);
            let mut d = Dec::new(&buf);
            prop_assert_eq!(d.u64().unwrap(), a);
            prop_assert_eq!(d.i64().unwrap(), b);
            prop_assert_eq!(d.u32().unwrap(), c);
            prop_assert_eq!(d.string().unwrap(), s);
            prop_assert_eq!(d.opt_i64().unwrap(), Some(b));
            prop_assert_eq!(d.opt_string().unwrap(), None);
            prop_assert!(d.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Dec::new(&bytes);
            let _ = d.u64();
            let _ = d.string();
            let _ = d.seq_len();
            let _ = d.opt_string();
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0xffu8; 11];
        assert_eq!(Dec::new(&bytes).u64(), Err(DecodeError::Varint(0)));
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(Dec::new(&bytes).u64(), Err(DecodeError::Varint(0)));
    }
}
