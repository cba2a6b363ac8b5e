//! A node's own copy of the partition's state on its disk, for fast restarts.
//!
//! A standby writes the state it applied (every `cluster.snapshot_interval_ms`, when the
//! stream grew since), and a leader writes each snapshot it uploads, to
//! `<data_dir>/cluster/<partition>/snapshot`. A restarting node starts from that file
//! plus the stream's tail instead of downloading the object store's snapshot, when the
//! file belongs to the same stream and the messages after it are still in the stream.
//!
//! Why a snapshot and not a local write-ahead log: a node's records are the partition's
//! history only once the stream holds them. A deposed leader's log may hold records the
//! stream never got (never acknowledged, and another leader's records now sit at those
//! LSNs), so a local log would have to be checked record by record against the stream,
//! which costs what reading the tail from the stream costs. A snapshot taken from a state
//! the stream holds (a standby's applied state; a leader's state once it is replicated,
//! [`super::node`]) needs no such check: the stream is append-only, so the same stream
//! holds the same records at the same positions for as long as it exists.
//!
//! File layout: magic `PLCSNAP1`, the stream's creation time (`i128` nanoseconds since
//! the Unix epoch, little-endian: a stream deleted and created anew is another stream),
//! then the object store's layout ([`super::follower::encode_snapshot`]: stream sequence,
//! then the write-ahead log's snapshot file format with its CRC).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use async_nats::jetstream::stream::Stream;
use pickline_engine::Lsn;

use super::{ClusterError, follower, wire};

/// The file's first bytes.
const MAGIC: &[u8; 8] = b"PLCSNAP1";

/// Where a node keeps its copy of `partition`'s state.
pub fn path(data_dir: &Path, partition: &str) -> PathBuf {
    data_dir.join("cluster").join(partition).join("snapshot")
}

/// The identity of the stream a saved snapshot belongs to: its creation time.
pub async fn stream_identity(stream: &Stream) -> Result<i128, ClusterError> {
    let mut stream = stream.clone();
    let info = stream
        .info()
        .await
        .map_err(|e| ClusterError::nats("read the stream's state", e))?;
    Ok(info.created.unix_timestamp_nanos())
}

/// Writes `object` ([`follower::encode_snapshot`]'s bytes) as the node's copy, replacing
/// the previous one atomically (a crash leaves the old file or the new one, never a
/// part).
pub fn save(path: &Path, stream: i128, object: &[u8]) -> Result<(), ClusterError> {
    let io = |what: &'static str| {
        let what = format!("{what} {}", path.display());
        move |source| ClusterError::Io { what, source }
    };
    let dir = path
        .parent()
        .ok_or_else(|| ClusterError::Corrupt(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io("create"))?;
    file.write_all(MAGIC).map_err(io("write"))?;
    file.write_all(&stream.to_le_bytes()).map_err(io("write"))?;
    file.write_all(object).map_err(io("write"))?;
    file.sync_data().map_err(io("sync"))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename into"))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory of"))?;
    Ok(())
}

/// A saved snapshot as read back.
#[derive(Debug)]
pub struct Saved {
    /// The stream it belongs to ([`stream_identity`]).
    pub stream: i128,
    /// The last stream message whose records it holds in full.
    pub seq: u64,
    /// The last record it holds.
    pub lsn: Lsn,
    bytes: Vec<u8>,
}

impl Saved {
    /// The engine state (the snapshot payload).
    pub fn state(&self) -> Result<&[u8], ClusterError> {
        follower::decode_snapshot(&self.bytes[MAGIC.len() + 16..]).map(|(_, _, state)| state)
    }
}

/// Reads the node's copy: `None` when there is none; an error when it does not decode
/// (a damaged file is never loaded).
pub fn load(path: &Path) -> Result<Option<Saved>, ClusterError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ClusterError::Io {
                what: format!("read {}", path.display()),
                source,
            });
        }
    };
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(ClusterError::Corrupt(format!(
            "{}: too short",
            path.display()
        )));
    };
    if magic != MAGIC {
        return Err(ClusterError::Corrupt(format!(
            "{}: not a saved snapshot",
            path.display()
        )));
    }
    let Some((stream, object)) = rest.split_first_chunk::<16>() else {
        return Err(ClusterError::Corrupt(format!(
            "{}: too short",
            path.display()
        )));
    };
    let (seq, lsn, _) = follower::decode_snapshot(object)
        .map_err(|e| ClusterError::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(Some(Saved {
        stream: i128::from_le_bytes(*stream),
        seq,
        lsn,
        bytes,
    }))
}

/// Removes the node's copy (it did not fit the stream); a missing file is fine.
pub fn discard(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::warn!(path = %path.display(), "saved snapshot discarded"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, path = %path.display(), "saved snapshot not removed"),
    }
}

/// Why a saved snapshot cannot start this node, or `None` when it can: it must belong to
/// this stream (`identity`), the stream must still hold every message after it
/// (`first`, `last`: the stream's first and last sequence) and the message it ends at,
/// when still there, must end at or before its LSN (`at_seq`: that message's entry).
pub fn unfit(
    saved: &Saved,
    identity: i128,
    first: u64,
    last: u64,
    at_seq: Option<&wire::Entry>,
) -> Option<String> {
    if saved.stream != identity {
        return Some("it belongs to an earlier stream of the same name".into());
    }
    if saved.seq > last {
        return Some(format!(
            "it is at stream message {} and the stream ends at {last}",
            saved.seq
        ));
    }
    if saved.seq.saturating_add(1) < first {
        return Some(format!(
            "the stream starts at message {first}, after the messages following its {}",
            saved.seq
        ));
    }
    if let Some(wire::Entry::Batch { first, records, .. }) = at_seq {
        let end = first.0 + records.len() as u64 - 1;
        if end > saved.lsn.0 {
            return Some(format!(
                "stream message {} ends at LSN {end}, after its LSN {}",
                saved.seq, saved.lsn
            ));
        }
    }
    None
}

/// The node's copy if it can start this node from `stream` ([`unfit`]), else `None`
/// (an unfit or damaged copy is removed, so it is not tried again).
pub async fn usable(path: &Path, stream: &Stream) -> Result<Option<Saved>, ClusterError> {
    let saved = match load(path) {
        Ok(Some(saved)) => saved,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "saved snapshot unreadable");
            discard(path);
            return Ok(None);
        }
    };
    let mut info_of = stream.clone();
    let info = info_of
        .info()
        .await
        .map_err(|e| ClusterError::nats("read the stream's state", e))?;
    let identity = info.created.unix_timestamp_nanos();
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let at_seq = if saved.seq >= first && saved.seq <= last && saved.seq > 0 {
        let message = stream
            .get_raw_message(saved.seq)
            .await
            .map_err(|e| ClusterError::nats("read a stream message", e))?;
        let entry = wire::decode(Some(&message.headers), &message.payload)
            .map_err(|e| ClusterError::Corrupt(format!("stream message {}: {e}", saved.seq)))?;
        Some(entry)
    } else {
        None
    };
    match unfit(&saved, identity, first, last, at_seq.as_ref()) {
        None => Ok(Some(saved)),
        Some(why) => {
            tracing::info!(reason = %why, "saved snapshot does not fit the stream");
            discard(path);
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pickline-saved-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn saved(dir: &Path, stream: i128, seq: u64, lsn: u64) -> Saved {
        let path = dir.join("snapshot");
        let object = follower::encode_snapshot(seq, Lsn(lsn), b"state").unwrap();
        save(&path, stream, &object).unwrap();
        load(&path).unwrap().unwrap()
    }

    #[test]
    fn a_saved_snapshot_reads_back_and_a_damaged_one_is_refused() {
        let dir = temp_dir("reads");
        let s = saved(&dir, -7, 12, 40);
        assert_eq!((s.stream, s.seq, s.lsn), (-7, 12, Lsn(40)));
        assert_eq!(s.state().unwrap(), b"state");
        let path = dir.join("snapshot");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(&path), Err(ClusterError::Corrupt(_))));
        std::fs::write(&path, b"PLCSNAP1").unwrap();
        assert!(matches!(load(&path), Err(ClusterError::Corrupt(_))));
        discard(&path);
        assert!(load(&path).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_snapshot_of_this_stream_with_its_tail_still_there_fits() {
        let dir = temp_dir("fits");
        let s = saved(&dir, 5, 12, 40);
        std::fs::remove_dir_all(&dir).unwrap();
        let batch = |first: u64, n: usize| wire::Entry::Batch {
            epoch: 1,
            first: Lsn(first),
            records: vec![
                pickline_engine::Record {
                    at: pickline_engine::Timestamp(0),
                    events: Vec::new(),
                };
                n
            ],
        };
        assert_eq!(unfit(&s, 5, 1, 30, Some(&batch(31, 10))), None);
        assert_eq!(
            unfit(&s, 5, 13, 30, None),
            None,
            "purged up to the next message"
        );
        assert_eq!(
            unfit(&s, 5, 1, 12, Some(&wire::Entry::Fence { epoch: 2 })),
            None
        );
        assert!(
            unfit(&s, 6, 1, 30, None)
                .unwrap()
                .contains("earlier stream")
        );
        assert!(
            unfit(&s, 5, 14, 30, None)
                .unwrap()
                .contains("starts at message 14")
        );
        assert!(unfit(&s, 5, 1, 11, None).unwrap().contains("ends at 11"));
        assert!(
            unfit(&s, 5, 1, 30, Some(&batch(35, 10)))
                .unwrap()
                .contains("after its LSN")
        );
    }
}
