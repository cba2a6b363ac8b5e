//! The notifier's journal: an append-only file of framed records, made durable with one
//! `fsync` per appended batch, read back whole at start-up.
//!
//! Byte layout of one frame (little endian):
//!
//! ```text
//! +--------------+-----------------------+------------------+
//! | len: u32     | crc32c(payload): u32  | payload: len B   |
//! +--------------+-----------------------+------------------+
//! ```
//!
//! The payload is opaque here (the outbox writes JSON). Recovery mode is
//! "tolerate a torn tail": a frame that is cut short or fails its checksum *at the end of
//! the file* is the write a crash interrupted (its batch was never reported durable, so
//! nothing relied on it) and is cut off; a bad frame followed by more bytes than it claims
//! is corruption in the middle, and the journal refuses to open, naming file and offset.
//!
//! Compaction writes the live records to `<file>.tmp`, fsyncs it, renames it over the
//! journal and fsyncs the directory: a crash leaves either the old or the new file.
//!
//! The open journal holds an exclusive `flock` so that two processes never append to the
//! same file.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Largest payload of one frame (a message with its context stays far below).
pub const FRAME_PAYLOAD_LEN_MAX: usize = 4 << 20;
const HEADER_LEN: usize = 8;

/// Why the journal could not be used.
#[derive(Debug, Error)]
pub enum JournalError {
    /// An I/O error on the journal file.
    #[error("notify journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A frame in the middle of the file is damaged.
    #[error("notify journal {path} is corrupt at offset {offset}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Another process has the journal open.
    #[error("notify journal {0} is in use by another process")]
    Locked(PathBuf),
    /// A payload larger than [`FRAME_PAYLOAD_LEN_MAX`].
    #[error("a journal record of {0} bytes is too large")]
    TooLarge(usize),
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every intact payload, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Bytes of a torn tail cut off (0: none).
    pub torn_tail_bytes: u64,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len_bytes: u64,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), JournalError> {
    if payload.len() > FRAME_PAYLOAD_LEN_MAX {
        return Err(JournalError::TooLarge(payload.len()));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Intact payloads and the length they span (a torn tail starts there).
pub type Decoded = (Vec<Vec<u8>>, usize);

/// Splits `bytes` into payloads. `Ok((payloads, intact_len))`: a torn tail starts at
/// `intact_len`; `Err((offset, detail))`: damage in the middle.
pub fn decode_frames(bytes: &[u8]) -> Result<Decoded, (usize, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < HEADER_LEN {
            return Ok((out, at)); // torn header
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > FRAME_PAYLOAD_LEN_MAX {
            // A length no writer produces: damage. At the tail (nothing valid could
            // follow within the file) it is a torn header; otherwise refuse.
            return if rest.len() <= HEADER_LEN + FRAME_PAYLOAD_LEN_MAX {
                Ok((out, at))
            } else {
                Err((at, format!("frame length {len} is too large")))
            };
        }
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok((out, at)); // torn payload
        };
        if crc32c::crc32c(payload) != crc {
            return if rest.len() == HEADER_LEN + len {
                Ok((out, at)) // the last frame, half written
            } else {
                Err((at, "checksum mismatch".to_owned()))
            };
        }
        out.push(payload.to_vec());
        at += HEADER_LEN + len;
    }
    Ok((out, at))
}

impl Journal {
    /// Opens (creating) the journal at `path`, locks it, reads every intact frame and cuts
    /// off a torn tail.
    pub fn open(path: &Path) -> Result<(Journal, Recovered), JournalError> {
        let e = io_err(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(&e)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(&e)?;
        lock(&file, path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(&e)?;
        let (payloads, intact) =
            decode_frames(&bytes).map_err(|(offset, detail)| JournalError::Corrupt {
                path: path.to_owned(),
                offset: offset as u64,
                detail,
            })?;
        let torn = (bytes.len() - intact) as u64;
        if torn > 0 {
            file.set_len(intact as u64).map_err(&e)?;
            file.sync_all().map_err(&e)?;
        }
        file.seek(SeekFrom::End(0)).map_err(&e)?;
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                len_bytes: intact as u64,
            },
            Recovered {
                payloads,
                torn_tail_bytes: torn,
            },
        ))
    }

    /// Appends the payloads as one write and makes them durable (`fdatasync`) before
    /// returning.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), JournalError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for p in payloads {
            encode_frame(&mut buf, p)?;
        }
        let e = io_err(&self.path);
        self.file.write_all(&buf).map_err(&e)?;
        self.file.sync_data().map_err(&e)?;
        self.len_bytes += buf.len() as u64;
        Ok(())
    }

    /// Bytes in the file.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Replaces the journal with exactly `payloads` (crash-safe: temp file, fsync, rename,
    /// directory fsync).
    pub fn rewrite(&mut self, payloads: &[Vec<u8>]) -> Result<(), JournalError> {
        let e = io_err(&self.path);
        let tmp = self.path.with_extension("tmp");
        let mut buf = Vec::new();
        for p in payloads {
            encode_frame(&mut buf, p)?;
        }
        {
            let mut f = File::create(&tmp).map_err(&e)?;
            f.write_all(&buf).map_err(&e)?;
            f.sync_all().map_err(&e)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(&e)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(&e)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(&e)?;
        lock(&file, &self.path)?;
        self.file = file;
        self.len_bytes = buf.len() as u64;
        Ok(())
    }
}

fn lock(file: &File, path: &Path) -> Result<(), JournalError> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a file descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(JournalError::Locked(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for p in payloads {
            encode_frame(&mut b, p).unwrap();
        }
        b
    }

    #[test]
    fn torn_tail_is_cut_and_middle_damage_refused() {
        let bytes = frames(&[b"one", b"two", b"three"]);
        let (p, n) = decode_frames(&bytes).unwrap();
        assert_eq!((p.len(), n), (3, bytes.len()));
        // Every cut inside the last frame keeps the first two.
        let second_end = bytes.len() - (HEADER_LEN + 5);
        for cut in second_end..bytes.len() {
            let (p, n) = decode_frames(&bytes[..cut]).unwrap();
            assert_eq!((p.len(), n), (2, second_end), "cut at {cut}");
        }
        // A flipped byte in the last frame: torn tail.
        let mut last = bytes.clone();
        *last.last_mut().unwrap() ^= 1;
        assert_eq!(decode_frames(&last).unwrap().0.len(), 2);
        // A flipped byte in the first frame, with frames after it: corruption.
        let mut mid = bytes.clone();
        mid[HEADER_LEN] ^= 1;
        assert_eq!(decode_frames(&mid).unwrap_err().0, 0);
    }

    #[test]
    fn reopen_reads_back_and_truncates_torn_tail() {
        let dir = std::env::temp_dir().join(format!("pickline-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("j.log");
        {
            let (mut j, r) = Journal::open(&path).unwrap();
            assert!(r.payloads.is_empty());
            j.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
            assert!(matches!(Journal::open(&path), Err(JournalError::Locked(_))));
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        drop(f);
        let (mut j, r) = Journal::open(&path).unwrap();
        assert_eq!(r.payloads, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(r.torn_tail_bytes, 3);
        j.rewrite(&[b"c".to_vec()]).unwrap();
        drop(j);
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(r.payloads, vec![b"c".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
