//! What goes over NATS: names of the partition's stream, subject, keys and objects, and
//! the byte layout of one message of the replicated log.
//!
//! One JetStream message carries one batch of engine records (group commit: whatever the
//! engine appended while the previous batch was being acknowledged), or a fence.
//!
//! Headers of a message:
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | `<partition>/<epoch>/<first lsn>` (a batch) or `<partition>/<epoch>/fence` |
//! | `Nats-Expected-Last-Sequence` | the stream sequence the writer believes is last (fencing) |
//! | `Pickline-Epoch` | the writer's leadership epoch (the lease's) |
//! | `Pickline-First-Lsn` | a batch's first LSN (absent on a fence) |
//!
//! Payload of a batch: version byte `1`, then per record a `u32` little-endian length and
//! the record's encoding ([`Record::encode`]). LSNs are contiguous from the first. A
//! fence's payload is empty: a new leader appends it before it serves, so the old
//! leader's next append fails its expected-sequence check.

use async_nats::HeaderMap;
use bytes::Bytes;
use pickline_engine::{Lsn, Record};

/// Header: the writer's leadership epoch.
pub const EPOCH_HEADER: &str = "Pickline-Epoch";
/// Header: a batch's first LSN.
pub const FIRST_LSN_HEADER: &str = "Pickline-First-Lsn";
/// JetStream's deduplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// How many records a batch carries: a payload cut at a record boundary is refused.
pub const RECORDS_HEADER: &str = "Pickline-Records";

/// Payload format version.
const BATCH_VERSION: u8 = 1;

/// Largest batch payload: under NATS's default `max_payload` (1 MiB) with room for
/// headers.
pub const BATCH_BYTES_MAX: usize = 900 * 1024;

/// The key-value bucket holding leases and the partition map.
pub const BUCKET: &str = "pickline_cluster";
/// The object store holding snapshots.
pub const SNAPSHOTS: &str = "pickline_snapshots";

/// The partition's stream.
pub fn stream_name(partition: &str) -> String {
    format!("PICKLINE_LOG_{partition}")
}

/// The subject the partition's log is published on.
pub fn subject(partition: &str) -> String {
    format!("pickline.log.{partition}")
}

/// The lease key of a partition.
pub fn lease_key(partition: &str) -> String {
    format!("lease.{partition}")
}

/// The key where a partition's leader publishes its stores' positions
/// ([`crate::cluster::map::PartitionGeo`]), for other partitions' allocation hints.
pub fn geo_key(partition: &str) -> String {
    format!("geo.{partition}")
}

/// The partition-map key of a store (the store id in hex: store ids may hold any
/// character, keys may not).
pub fn store_key(store: &str) -> String {
    let mut key = String::with_capacity(6 + store.len() * 2);
    key.push_str("store.");
    for b in store.bytes() {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// The object name of a partition's latest snapshot.
pub fn snapshot_object(partition: &str) -> String {
    format!("{partition}.latest")
}

/// The deduplication id of a batch.
pub fn batch_id(partition: &str, epoch: u64, first: Lsn) -> String {
    format!("{partition}/{epoch}/{}", first.0)
}

/// The deduplication id of a fence.
pub fn fence_id(partition: &str, epoch: u64) -> String {
    format!("{partition}/{epoch}/fence")
}

/// Headers of a batch or fence (`first`: `None` for a fence).
pub fn headers(partition: &str, epoch: u64, batch: Option<(Lsn, u64)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(EPOCH_HEADER, epoch.to_string().as_str());
    match batch {
        Some((first, records)) => {
            h.insert(FIRST_LSN_HEADER, first.0.to_string().as_str());
            h.insert(RECORDS_HEADER, records.to_string().as_str());
            h.insert(MSG_ID_HEADER, batch_id(partition, epoch, first).as_str());
        }
        None => h.insert(MSG_ID_HEADER, fence_id(partition, epoch).as_str()),
    }
    h
}

/// Appends one record to a batch payload being built (starts it when empty).
pub fn push_record(payload: &mut Vec<u8>, record: &Record) {
    if payload.is_empty() {
        payload.push(BATCH_VERSION);
    }
    let len_at = payload.len();
    payload.extend_from_slice(&[0; 4]);
    record.encode(payload);
    let len = u32::try_from(payload.len() - len_at - 4).unwrap_or(u32::MAX);
    payload[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// What one message of the log is.
#[derive(Debug)]
pub enum Entry {
    /// A new leader's fence.
    Fence {
        /// Its epoch.
        epoch: u64,
    },
    /// Records with contiguous LSNs from `first`.
    Batch {
        /// The writer's epoch.
        epoch: u64,
        /// The first record's LSN.
        first: Lsn,
        /// The records, in LSN order.
        records: Vec<Record>,
    },
}

/// Why a message of the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A header is missing or not a number.
    #[error("header {0} missing or malformed")]
    Header(&'static str),
    /// The payload does not decode.
    #[error("batch payload: {0}")]
    Payload(String),
}

fn number(headers: Option<&HeaderMap>, name: &'static str) -> Result<Option<u64>, WireError> {
    match headers.and_then(|h| h.get(name)) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .parse()
            .map(Some)
            .map_err(|_| WireError::Header(name)),
    }
}

/// Reads one message of the log (never panics on any input).
pub fn decode(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Entry, WireError> {
    let epoch = number(headers, EPOCH_HEADER)?.ok_or(WireError::Header(EPOCH_HEADER))?;
    let Some(first) = number(headers, FIRST_LSN_HEADER)? else {
        return if payload.is_empty() {
            Ok(Entry::Fence { epoch })
        } else {
            Err(WireError::Payload("a fence carries no payload".into()))
        };
    };
    let count = number(headers, RECORDS_HEADER)?.ok_or(WireError::Header(RECORDS_HEADER))?;
    let Some((&version, mut rest)) = payload.split_first() else {
        return Err(WireError::Payload("empty batch".into()));
    };
    if version != BATCH_VERSION {
        return Err(WireError::Payload(format!("unknown version {version}")));
    }
    let mut records = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(WireError::Payload("truncated length".into()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(WireError::Payload("truncated record".into()));
        }
        let (bytes, tail) = tail.split_at(len);
        let record = Record::decode(bytes).map_err(|e| {
            WireError::Payload(format!("record {} does not decode: {e}", records.len()))
        })?;
        records.push(record);
        rest = tail;
    }
    if records.is_empty() {
        return Err(WireError::Payload("batch without records".into()));
    }
    if records.len() as u64 != count {
        return Err(WireError::Payload(format!(
            "a batch of {count} records carries {}",
            records.len()
        )));
    }
    Ok(Entry::Batch {
        epoch,
        first: Lsn(first),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickline_engine::Timestamp;

    #[test]
    fn a_batch_reads_back_and_damage_is_an_error() {
        let records = vec![
            Record {
                at: Timestamp::from_ms(5),
                events: Vec::new(),
            },
            Record {
                at: Timestamp::from_ms(7),
                events: Vec::new(),
            },
        ];
        let mut payload = Vec::new();
        for r in &records {
            push_record(&mut payload, r);
        }
        let h = headers("p1", 3, Some((Lsn(10), 2)));
        let bytes = Bytes::from(payload.clone());
        match decode(Some(&h), &bytes).unwrap() {
            Entry::Batch {
                epoch,
                first,
                records: got,
            } => {
                assert_eq!((epoch, first), (3, Lsn(10)));
                assert_eq!(got.len(), 2);
                assert_eq!(got[1].at, Timestamp::from_ms(7));
            }
            other => panic!("{other:?}"),
        }
        // Every truncation is refused, never a panic.
        for cut in 0..payload.len() {
            let short = Bytes::copy_from_slice(&payload[..cut]);
            assert!(decode(Some(&h), &short).is_err(), "cut at {cut}");
        }
        let fence = headers("p1", 4, None);
        assert!(matches!(
            decode(Some(&fence), &Bytes::new()),
            Ok(Entry::Fence { epoch: 4 })
        ));
        assert!(decode(None, &bytes).is_err());
    }

    #[test]
    fn store_keys_are_valid_kv_keys() {
        assert_eq!(store_key("a.b"), "store.612e62");
    }
}
