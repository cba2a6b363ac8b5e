//! On-disk byte layout of records, segment files and snapshot files.
//!
//! Everything here is pure: bytes in, values out. Decoders never panic on any input and
//! never return a record whose checksum does not verify (the fuzz target `wal_decode`
//! checks both).

use super::Lsn;

/// Largest LSN the log uses. Headers with LSN 0 or above this are rejected, which keeps
/// every `lsn + count` computation far from overflow (2^62 records at 10M/s is ~14,000 years).
pub const LSN_MAX: u64 = 1 << 62;

/// Length of the fixed record header: `len` (4) + `crc` (4) + `lsn` (8) +
/// `durable_lsn_at_write` (8) + `kind` (1).
pub const RECORD_HEADER_LEN: usize = 25;

/// Largest payload one record may carry, in bytes.
///
/// Why 1 MiB: engine commands are tens of bytes; a hard, small bound means a corrupt length
/// field can never make the decoder look far beyond a torn tail, and one record always fits
/// in a fresh segment of the smallest allowed size.
pub const RECORD_PAYLOAD_LEN_MAX: usize = 1 << 20;

/// Largest encoded record (header + payload), in bytes.
pub const RECORD_LEN_MAX: usize = RECORD_HEADER_LEN + RECORD_PAYLOAD_LEN_MAX;

/// Magic bytes at the start of every segment file. The `\r\n` catches text-mode mangling.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PKLWAL\r\n";

/// Segment format version written by this code; decoding refuses any other version.
///
/// Version 2 added `durable_lsn_at_write` to the record header (version 1 had no way to
/// tell never-synced damage from damage to acknowledged records).
pub const SEGMENT_FORMAT_VERSION: u32 = 2;

/// Length of the segment header: magic (8) + version (4) + first LSN (8) + CRC (4).
pub const SEGMENT_HEADER_LEN: usize = 24;

/// Largest configurable segment roll size (`WalConfig::segment_len_max`), in bytes.
pub const SEGMENT_LEN_MAX: u64 = 1 << 30;

/// Smallest configurable segment roll size, in bytes (small segments are for tests).
pub const SEGMENT_LEN_MIN: u64 = 4096;

/// Largest segment file the reader accepts, in bytes.
///
/// A segment only grows past its roll size when it holds a single record that is larger
/// than the roll size, so no valid segment is longer than this.
pub const SEGMENT_FILE_LEN_MAX: u64 = SEGMENT_LEN_MAX + RECORD_LEN_MAX as u64;

/// Magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"PKLSNP\r\n";

/// Snapshot format version written by this code; decoding refuses any other version.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Length of the snapshot header: magic (8) + version (4) + LSN (8) + payload len (8) + CRC (4).
pub const SNAPSHOT_HEADER_LEN: usize = 32;

/// Largest snapshot payload, in bytes (16 GiB: 10M cells plus holds fit many times over).
pub const SNAPSHOT_PAYLOAD_LEN_MAX: u64 = 1 << 34;

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of files being written by the atomic-write path; leftovers are garbage.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Why bytes failed to decode. Offsets are reported by the caller, who knows the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the structure does (typical of a torn write).
    #[error("truncated: need {needed_len} bytes, {available_len} available")]
    Truncated {
        /// Bytes the structure needs from its start.
        needed_len: u64,
        /// Bytes that are there.
        available_len: u64,
    },
    /// A record's length field is larger than `RECORD_PAYLOAD_LEN_MAX`.
    #[error("record payload length {payload_len} exceeds the maximum {RECORD_PAYLOAD_LEN_MAX}")]
    PayloadTooLong {
        /// The length field as read.
        payload_len: u64,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC32C stored in the file.
        stored: u32,
        /// CRC32C computed over the bytes.
        computed: u32,
    },
    /// The magic bytes are not ours.
    #[error("bad magic bytes")]
    BadMagic,
    /// A format version this code does not know.
    #[error("unsupported format version {version}")]
    UnsupportedVersion {
        /// The version field as read.
        version: u32,
    },
    /// A file's header LSN differs from the LSN in its name.
    #[error("header LSN {header_lsn} does not match the file name's LSN {name_lsn}")]
    NameMismatch {
        /// LSN in the file name.
        name_lsn: u64,
        /// LSN in the header.
        header_lsn: u64,
    },
    /// A checksum-valid record whose durable stamp is not below its own LSN: no writer
    /// produces one (a record is never durable before it is written).
    #[error("record LSN {lsn} carries durable stamp {durable_lsn_at_write}, not below its LSN")]
    StampNotBeforeLsn {
        /// The record's LSN.
        lsn: u64,
        /// Its `durable_lsn_at_write` field.
        durable_lsn_at_write: u64,
    },
    /// A header LSN of 0 or above `LSN_MAX`.
    #[error("LSN {lsn} is out of range 1..={LSN_MAX}")]
    LsnOutOfRange {
        /// The LSN as read.
        lsn: u64,
    },
    /// A snapshot's length field is larger than `SNAPSHOT_PAYLOAD_LEN_MAX` or than the file.
    #[error("snapshot payload length {payload_len} is invalid for a file of {file_len} bytes")]
    SnapshotLen {
        /// The length field as read.
        payload_len: u64,
        /// Length of the whole file.
        file_len: u64,
    },
}

/// One decoded record, borrowing its payload from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Log sequence number.
    pub lsn: Lsn,
    /// Highest LSN that was durable when the committer wrote this record's batch: every
    /// record up to it had been `fdatasync`ed before these bytes reached the file. Always
    /// below `lsn`. Recovery uses it to tell damage to once-durable bytes from damage to
    /// bytes that were never synced (see `LAYOUT.md`).
    pub durable_lsn_at_write: Lsn,
    /// Record kind, chosen by the engine.
    pub kind: u8,
    /// Opaque payload, encoded by the engine.
    pub payload: &'a [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC32C of a record: over the `len` field, then `lsn`, `durable_lsn_at_write`, `kind`
/// and the payload.
///
/// `frame_tail` is everything after the CRC field.
fn record_crc(len_le: [u8; 4], frame_tail: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_le), frame_tail)
}

/// Appends one record to `buf`.
///
/// Byte layout (all integers little-endian):
///
/// ```text
/// offset  size  field
/// 0       4     len                   payload length in bytes, <= RECORD_PAYLOAD_LEN_MAX
/// 4       4     crc                   CRC32C over bytes [0..4) ++ [8..25+len)
/// 8       8     lsn                   log sequence number; consecutive records have
///                                     consecutive LSNs
/// 16      8     durable_lsn_at_write  highest LSN durable when the batch holding this
///                                     record was written; always < lsn
/// 24      1     kind                  record kind (opaque to the WAL)
/// 25      len   payload
/// ```
///
/// The CRC covers `len` and the stamp too, so a flipped length bit is caught even when the
/// wrong length happens to land on bytes that look like a record, and a flipped stamp can
/// neither hide real corruption nor invent proof of it. It does not cover itself.
///
/// Why the stamp: the committer writes batch N+1 only after batch N's `fdatasync`
/// succeeded, and stamps every record of a batch with the durable LSN at that moment. A
/// checksum-valid record stamped `>= L` therefore proves that record `L` had been synced.
///
/// Returns [`DecodeError::PayloadTooLong`] (and appends nothing) when the payload exceeds
/// `RECORD_PAYLOAD_LEN_MAX`, [`DecodeError::StampNotBeforeLsn`] when
/// `durable_lsn_at_write >= lsn`.
pub fn encode_record(
    buf: &mut Vec<u8>,
    lsn: Lsn,
    durable_lsn_at_write: Lsn,
    kind: u8,
    payload: &[u8],
) -> Result<(), DecodeError> {
    if payload.len() > RECORD_PAYLOAD_LEN_MAX {
        return Err(DecodeError::PayloadTooLong {
            payload_len: payload.len() as u64,
        });
    }
    if durable_lsn_at_write >= lsn {
        return Err(DecodeError::StampNotBeforeLsn {
            lsn: lsn.0,
            durable_lsn_at_write: durable_lsn_at_write.0,
        });
    }
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    buf.extend_from_slice(payload);
    seal_record(&mut buf[start..], lsn, kind);
    stamp_record(&mut buf[start..], durable_lsn_at_write);
    Ok(())
}

/// Fills in `len`, `lsn` and `kind` of a record frame whose payload is already at
/// `frame[25..]`; the stamp and the CRC are left for [`stamp_record`].
///
/// Split in two because the appender knows the LSN but not the durable LSN at write time:
/// the appender encodes payloads in place into the shared buffer and calls this; the
/// committer calls `stamp_record` on every frame of the batch just before writing it (so
/// the CRC is computed off the append mutex, once). The caller guarantees
/// `frame.len() >= RECORD_HEADER_LEN` and a payload no longer than `RECORD_PAYLOAD_LEN_MAX`.
pub(crate) fn seal_record(frame: &mut [u8], lsn: Lsn, kind: u8) {
    debug_assert!(frame.len() >= RECORD_HEADER_LEN);
    debug_assert!(frame.len() - RECORD_HEADER_LEN <= RECORD_PAYLOAD_LEN_MAX);
    let len_le = ((frame.len() - RECORD_HEADER_LEN) as u32).to_le_bytes();
    frame[0..4].copy_from_slice(&len_le);
    frame[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    frame[24] = kind;
}

/// Writes `durable_lsn_at_write` into a sealed frame (exactly one record) and computes its
/// CRC. The caller guarantees `durable_lsn_at_write < lsn`.
pub(crate) fn stamp_record(frame: &mut [u8], durable_lsn_at_write: Lsn) {
    debug_assert!(durable_lsn_at_write.0 < u64_at(frame, 8));
    frame[16..24].copy_from_slice(&durable_lsn_at_write.0.to_le_bytes());
    let mut len_le = [0u8; 4];
    len_le.copy_from_slice(&frame[0..4]);
    let crc = record_crc(len_le, &frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Length of the frame at the start of `frame`, from its `len` field (no validation).
pub(crate) fn frame_len_at(frame: &[u8]) -> usize {
    RECORD_HEADER_LEN + u32_at(frame, 0) as usize
}

/// Decodes the record at the start of `bytes`; returns it and its encoded length.
///
/// Never panics; never returns a record whose CRC does not verify or whose stamp is not
/// below its LSN.
pub fn decode_record(bytes: &[u8]) -> Result<(Record<'_>, usize), DecodeError> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed_len: RECORD_HEADER_LEN as u64,
            available_len: bytes.len() as u64,
        });
    }
    let payload_len = u32_at(bytes, 0) as usize;
    if payload_len > RECORD_PAYLOAD_LEN_MAX {
        return Err(DecodeError::PayloadTooLong {
            payload_len: payload_len as u64,
        });
    }
    let frame_len = RECORD_HEADER_LEN + payload_len;
    if bytes.len() < frame_len {
        return Err(DecodeError::Truncated {
            needed_len: frame_len as u64,
            available_len: bytes.len() as u64,
        });
    }
    let stored = u32_at(bytes, 4);
    let mut len_le = [0u8; 4];
    len_le.copy_from_slice(&bytes[0..4]);
    let computed = record_crc(len_le, &bytes[8..frame_len]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let record = Record {
        lsn: Lsn(u64_at(bytes, 8)),
        durable_lsn_at_write: Lsn(u64_at(bytes, 16)),
        kind: bytes[24],
        payload: &bytes[RECORD_HEADER_LEN..frame_len],
    };
    if record.durable_lsn_at_write >= record.lsn {
        return Err(DecodeError::StampNotBeforeLsn {
            lsn: record.lsn.0,
            durable_lsn_at_write: record.durable_lsn_at_write.0,
        });
    }
    Ok((record, frame_len))
}

/// Header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// LSN of the first record in the segment (also in the file name).
    pub first_lsn: Lsn,
}

/// Encodes a segment header.
///
/// Byte layout (little-endian):
///
/// ```text
/// offset  size  field
/// 0       8     magic      SEGMENT_MAGIC = "PKLWAL\r\n"
/// 8       4     version    SEGMENT_FORMAT_VERSION
/// 12      8     first_lsn  LSN of the first record in this segment
/// 20      4     crc        CRC32C over bytes [0..20)
/// 24            records follow, back to back, each as in `encode_record`
///               (version 2: records carry `durable_lsn_at_write`)
/// ```
pub fn encode_segment_header(header: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&header.first_lsn.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the segment header at the start of `bytes`. Never panics.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed_len: SEGMENT_HEADER_LEN as u64,
            available_len: bytes.len() as u64,
        });
    }
    let stored = u32_at(bytes, 20);
    let computed = crc32c::crc32c(&bytes[0..20]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u32_at(bytes, 8);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let first_lsn = u64_at(bytes, 12);
    if first_lsn == 0 || first_lsn > LSN_MAX {
        return Err(DecodeError::LsnOutOfRange { lsn: first_lsn });
    }
    Ok(SegmentHeader {
        first_lsn: Lsn(first_lsn),
    })
}

/// Iterator over the records of a whole segment file, yielding `(byte offset, record)`.
///
/// Yields `Err((offset, error))` at the first bad header or record and then ends; offsets
/// are from the start of the file. LSN continuity is the caller's business (it needs
/// context across segments).
#[derive(Debug, Clone)]
pub struct SegmentRecords<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> SegmentRecords<'a> {
    /// Checks the header and returns it with an iterator over the records after it.
    #[allow(clippy::type_complexity)]
    pub fn new(bytes: &'a [u8]) -> Result<(SegmentHeader, Self), (u64, DecodeError)> {
        let header = decode_segment_header(bytes).map_err(|e| (0, e))?;
        Ok((
            header,
            SegmentRecords {
                bytes,
                offset: SEGMENT_HEADER_LEN,
                done: false,
            },
        ))
    }

    /// Byte offset of the next record to decode (the end of the valid prefix so far).
    pub fn offset(&self) -> u64 {
        self.offset as u64
    }
}

impl<'a> Iterator for SegmentRecords<'a> {
    type Item = Result<(u64, Record<'a>), (u64, DecodeError)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.bytes.len() {
            return None;
        }
        let at = self.offset;
        match decode_record(&self.bytes[at..]) {
            Ok((record, len)) => {
                self.offset += len;
                Some(Ok((at as u64, record)))
            }
            Err(e) => {
                self.done = true;
                Some(Err((at as u64, e)))
            }
        }
    }
}

/// Encodes a snapshot file.
///
/// Byte layout (little-endian):
///
/// ```text
/// offset  size  field
/// 0       8     magic    SNAPSHOT_MAGIC = "PKLSNP\r\n"
/// 8       4     version  SNAPSHOT_FORMAT_VERSION
/// 12      8     lsn      the state contains the effect of every record with LSN <= lsn
/// 20      8     len      payload length in bytes, <= SNAPSHOT_PAYLOAD_LEN_MAX
/// 28      4     crc      CRC32C over bytes [0..28) ++ payload
/// 32      len   payload  opaque engine state
/// ```
pub fn encode_snapshot(lsn: Lsn, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if payload.len() as u64 > SNAPSHOT_PAYLOAD_LEN_MAX {
        return Err(DecodeError::SnapshotLen {
            payload_len: payload.len() as u64,
            file_len: (SNAPSHOT_HEADER_LEN + payload.len()) as u64,
        });
    }
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[0..28]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a whole snapshot file into its LSN and payload. Never panics.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(Lsn, &[u8]), DecodeError> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed_len: SNAPSHOT_HEADER_LEN as u64,
            available_len: bytes.len() as u64,
        });
    }
    let payload_len = u64_at(bytes, 20);
    let file_len = bytes.len() as u64;
    if payload_len > SNAPSHOT_PAYLOAD_LEN_MAX
        || payload_len != file_len - SNAPSHOT_HEADER_LEN as u64
    {
        return Err(DecodeError::SnapshotLen {
            payload_len,
            file_len,
        });
    }
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    let stored = u32_at(bytes, 28);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..28]), payload);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u32_at(bytes, 8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let lsn = u64_at(bytes, 12);
    if lsn > LSN_MAX {
        return Err(DecodeError::LsnOutOfRange { lsn });
    }
    Ok((Lsn(lsn), payload))
}

fn parse_lsn_name(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(Lsn)
}

/// File name of the segment whose first record has `first_lsn`: `wal-<20 digits>.log`.
///
/// Zero-padded so that lexical order is LSN order (`ls` shows the log in order).
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{SEGMENT_PREFIX}{:020}{SEGMENT_SUFFIX}", first_lsn.0)
}

/// Parses a segment file name; `None` for anything else.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, SEGMENT_PREFIX, SEGMENT_SUFFIX)
}

/// File name of the snapshot at `lsn`: `snapshot-<20 digits>.snap`.
pub fn snapshot_file_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{:020}{SNAPSHOT_SUFFIX}", lsn.0)
}

/// Parses a snapshot file name; `None` for anything else.
pub fn parse_snapshot_file_name(name: &str) -> Option<Lsn> {
    parse_lsn_name(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_layout() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            Lsn(0x0102_0304_0506_0708),
            Lsn(0x0a0b),
            7,
            b"hello",
        )
        .unwrap();
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 5);
        assert_eq!(&buf[0..4], &5u32.to_le_bytes());
        assert_eq!(&buf[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&buf[16..24], &0x0a0bu64.to_le_bytes());
        assert_eq!(buf[24], 7);
        assert_eq!(&buf[25..], b"hello");
        let (rec, len) = decode_record(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(
            rec,
            Record {
                lsn: Lsn(0x0102_0304_0506_0708),
                durable_lsn_at_write: Lsn(0x0a0b),
                kind: 7,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn every_single_bit_flip_in_a_record_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, Lsn(42), Lsn(40), 3, b"some payload bytes").unwrap();
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&bad).is_err(),
                "flip of bit {bit} was not detected"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_record_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, Lsn(1), Lsn(0), 1, &[9u8; 40]).unwrap();
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    decode_record(&buf[..cut]),
                    Err(DecodeError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stamp_not_below_the_lsn_is_refused_both_ways() {
        let mut buf = Vec::new();
        for stamp in [5, 6] {
            assert_eq!(
                encode_record(&mut buf, Lsn(5), Lsn(stamp), 1, b"x"),
                Err(DecodeError::StampNotBeforeLsn {
                    lsn: 5,
                    durable_lsn_at_write: stamp
                })
            );
        }
        assert!(buf.is_empty());
        // A hand-made frame with a valid CRC but stamp == lsn: the decoder refuses it.
        let mut frame = vec![0u8; RECORD_HEADER_LEN + 1];
        seal_record(&mut frame, Lsn(5), 1);
        frame[16..24].copy_from_slice(&5u64.to_le_bytes());
        let crc = record_crc(frame[0..4].try_into().unwrap(), &frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_record(&frame),
            Err(DecodeError::StampNotBeforeLsn { lsn: 5, .. })
        ));
        stamp_record(&mut frame, Lsn(4));
        assert_eq!(
            decode_record(&frame).unwrap().0.durable_lsn_at_write,
            Lsn(4)
        );
    }

    #[test]
    fn oversized_payload_is_refused_both_ways() {
        let mut buf = Vec::new();
        let big = vec![0u8; RECORD_PAYLOAD_LEN_MAX + 1];
        assert!(encode_record(&mut buf, Lsn(1), Lsn(0), 1, &big).is_err());
        assert!(buf.is_empty());
        let mut frame = vec![0u8; RECORD_HEADER_LEN];
        frame[0..4].copy_from_slice(&((RECORD_PAYLOAD_LEN_MAX + 1) as u32).to_le_bytes());
        assert!(matches!(
            decode_record(&frame),
            Err(DecodeError::PayloadTooLong { .. })
        ));
    }

    #[test]
    fn segment_header_round_trip_and_corruption() {
        let h = SegmentHeader { first_lsn: Lsn(99) };
        let bytes = encode_segment_header(h);
        assert_eq!(decode_segment_header(&bytes), Ok(h));
        for lsn in [0, LSN_MAX + 1] {
            let out_of_range = encode_segment_header(SegmentHeader {
                first_lsn: Lsn(lsn),
            });
            assert_eq!(
                decode_segment_header(&out_of_range),
                Err(DecodeError::LsnOutOfRange { lsn })
            );
        }
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_segment_header(&bad).is_err(), "bit {bit}");
        }
        assert!(decode_segment_header(&bytes[..23]).is_err());
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let bytes = encode_snapshot(Lsn(12), b"state").unwrap();
        assert_eq!(decode_snapshot(&bytes), Ok((Lsn(12), &b"state"[..])));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_snapshot(&bad).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn names_round_trip_and_reject_junk() {
        assert_eq!(segment_file_name(Lsn(5)), "wal-00000000000000000005.log");
        assert_eq!(
            parse_segment_file_name("wal-00000000000000000005.log"),
            Some(Lsn(5))
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(Lsn(u64::MAX))),
            Some(Lsn(u64::MAX))
        );
        assert_eq!(
            parse_segment_file_name("wal-99999999999999999999.log"),
            None
        );
        assert_eq!(parse_segment_file_name("wal-0000000000000000005.log"), None);
        assert_eq!(
            parse_segment_file_name("wal-+0000000000000000005.log"),
            None
        );
        assert_eq!(
            parse_snapshot_file_name(&snapshot_file_name(Lsn(7))),
            Some(Lsn(7))
        );
        assert_eq!(
            parse_snapshot_file_name("snapshot-00000000000000000007.snap.tmp"),
            None
        );
    }

    #[test]
    fn segment_iterator_stops_at_first_bad_record() {
        let mut bytes = encode_segment_header(SegmentHeader { first_lsn: Lsn(1) }).to_vec();
        for i in 1..=3 {
            encode_record(&mut bytes, Lsn(i), Lsn(i - 1), 0, &[i as u8; 3]).unwrap();
        }
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 3;
        bytes[second + RECORD_HEADER_LEN] ^= 0x10;
        let (_, it) = SegmentRecords::new(&bytes).unwrap();
        let items: Vec<_> = it.collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(
            matches!(items[1], Err((off, DecodeError::Checksum { .. })) if off == second as u64)
        );
    }
}
