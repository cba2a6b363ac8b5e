//! Recovery (used by `Wal::open`) and the operator functions `verify` and `dump`.
//!
//! Recovery runs in two phases: a read-only plan that decides everything (and is what
//! `verify` reports), then a short apply phase that removes temp files, quarantines
//! unusable snapshots and cuts a torn tail.

use std::collections::VecDeque;

use super::format::{
    DecodeError, RECORD_HEADER_LEN, Record, SEGMENT_FILE_LEN_MAX, SegmentRecords, TEMP_SUFFIX,
    decode_record, decode_snapshot, parse_segment_file_name, parse_snapshot_file_name,
};
use super::storage::Storage;
use super::{Lsn, WalError};

/// Suffix given to a snapshot file that recovery found unusable and set aside.
pub const QUARANTINE_SUFFIX: &str = ".corrupt";

/// How recovery treats a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// A torn or corrupt record in the last segment that no later checksum-valid record
    /// proves durable (by its `durable_lsn_at_write` stamp) is what a crash during an
    /// unsynced, hence unacknowledged, write leaves: it is dropped with everything after
    /// it, the file is cut there, and [`RecoveryReport::tail_truncated`] says so. A corrupt newest
    /// snapshot falls back to the previous one if the log covers it. Anything else is an
    /// error.
    #[default]
    TolerateTailCorruption,
    /// Any bad record, torn tail included, and any unusable snapshot is an error. For
    /// checking a copy of a log that was shut down cleanly.
    AbsoluteConsistency,
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state contains the effect of every record with LSN `<= lsn`.
    pub lsn: Lsn,
    /// Opaque engine state.
    pub bytes: Vec<u8>,
    /// File it came from.
    pub file: String,
}

/// A snapshot file that recovery did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSnapshot {
    /// File name (before quarantine).
    pub file: String,
    /// Why it was rejected.
    pub reason: String,
}

/// A torn tail that recovery dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailTruncation {
    /// The last segment.
    pub file: String,
    /// Byte offset of the first bad byte; the file was cut to this length.
    pub offset: u64,
    /// Bytes dropped.
    pub dropped_len_bytes: u64,
    /// Checksum-valid records after the damage that were dropped with it: a power cut
    /// flipped bits in a batch that was never synced, and no record after the damage
    /// proves the damaged record was ever durable (see `LAYOUT.md`, "Recovery").
    pub intact_records_dropped: u64,
    /// What was wrong at `offset`.
    pub detail: DecodeError,
    /// The whole file was removed (its header itself was torn).
    pub file_removed: bool,
}

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The mode used.
    pub mode: RecoveryMode,
    /// Snapshot used, if any.
    pub snapshot_file: Option<String>,
    /// LSN of that snapshot (0 if none).
    pub snapshot_lsn: Lsn,
    /// Snapshots found unusable (renamed to `*.corrupt` by `Wal::open`).
    pub snapshots_rejected: Vec<RejectedSnapshot>,
    /// Segment files read.
    pub segments_read: usize,
    /// Records to replay (LSN > `snapshot_lsn`).
    pub records_replayed: u64,
    /// Last LSN in the recovered state (snapshot or log), 0 for an empty log.
    pub last_lsn: Lsn,
    /// A torn tail that was (or, from `verify`, would be) dropped.
    pub tail_truncated: Option<TailTruncation>,
    /// Leftover temp files of interrupted atomic writes (removed by `Wal::open`).
    pub temp_files: Vec<String>,
}

/// What the engine must replay after [`super::Wal::open`].
#[derive(Debug)]
pub struct Recovery {
    /// Newest usable snapshot; `None` means start from the empty state.
    pub snapshot: Option<Snapshot>,
    /// Records after the snapshot, in LSN order, LSNs contiguous from `snapshot lsn + 1`.
    pub records: RecoveredRecords,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

#[derive(Debug)]
struct Span {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

/// Validated records to replay, held as the segment bytes they came from (no per-record
/// allocation). Every record was checksum-verified and LSN-checked during recovery; the
/// iterator verifies each checksum again as it decodes.
#[derive(Debug, Default)]
pub struct RecoveredRecords {
    spans: Vec<Span>,
    count: u64,
}

impl RecoveredRecords {
    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records in LSN order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        self.spans.iter().flat_map(|span| {
            let mut at = span.start;
            std::iter::from_fn(move || {
                if at >= span.end {
                    return None;
                }
                // Cannot fail: these bytes were validated and are immutable. Stop rather
                // than panic if that ever stops being true.
                let (record, len) = decode_record(&span.bytes[at..span.end]).ok()?;
                at += len;
                Some(record)
            })
        })
    }
}

/// Result of scanning one segment's bytes.
struct SegmentScan {
    /// From the header; `None` if the header is bad.
    first_lsn: Option<Lsn>,
    /// Records that decoded (and had contiguous LSNs).
    record_count: u64,
    /// End of the valid prefix.
    valid_len: u64,
    /// First bad header or record.
    bad: Option<(u64, DecodeError)>,
}

impl SegmentScan {
    fn last_lsn(&self) -> Option<Lsn> {
        let first = self.first_lsn?;
        (first.0 + self.record_count).checked_sub(1).map(Lsn)
    }
}

/// Scans a segment: header, then records until the first bad one. A valid record with an
/// unexpected LSN is an error (no torn write produces one).
fn scan_segment(file: &str, name_lsn: Lsn, bytes: &[u8]) -> Result<SegmentScan, WalError> {
    if bytes.len() as u64 > SEGMENT_FILE_LEN_MAX {
        return Err(WalError::SegmentTooLong {
            file: file.to_string(),
            len_bytes: bytes.len() as u64,
        });
    }
    let (header, records) = match SegmentRecords::new(bytes) {
        Ok(ok) => ok,
        Err((offset, e)) => {
            return Ok(SegmentScan {
                first_lsn: None,
                record_count: 0,
                valid_len: 0,
                bad: Some((offset, e)),
            });
        }
    };
    if header.first_lsn != name_lsn {
        return Err(WalError::LsnDiscontinuity {
            file: file.to_string(),
            offset: 0,
            expected_lsn: name_lsn.0,
            found_lsn: header.first_lsn.0,
        });
    }
    let mut scan = SegmentScan {
        first_lsn: Some(header.first_lsn),
        record_count: 0,
        valid_len: records.offset(),
        bad: None,
    };
    for item in records {
        match item {
            Ok((offset, record)) => {
                let expected = header.first_lsn.0 + scan.record_count;
                if record.lsn.0 != expected {
                    return Err(WalError::LsnDiscontinuity {
                        file: file.to_string(),
                        offset,
                        expected_lsn: expected,
                        found_lsn: record.lsn.0,
                    });
                }
                scan.record_count += 1;
                scan.valid_len = offset + (RECORD_HEADER_LEN + record.payload.len()) as u64;
            }
            Err(bad) => scan.bad = Some(bad),
        }
    }
    // Zeros from a record boundary to the end are preallocated space, not damage: no record
    // is all zeros (LSNs start at 1 and the checksum covers the LSN), and a torn write
    // that left zeros and then data is not all zeros.
    if let Some((offset, _)) = scan.bad
        && bytes[offset as usize..].iter().all(|&b| b == 0)
    {
        scan.bad = None;
    }
    Ok(scan)
}

/// What the checksum-valid records after a damaged one say about it.
#[derive(Debug, Default)]
struct AfterDamage {
    /// Checksum-valid records that could be real successors of the damaged one (they are
    /// dropped with the tail if nothing proves the damaged record was durable).
    intact_count: u64,
    /// Offset of the first of them whose stamp proves the damaged record was durable.
    proof_offset: Option<u64>,
}

/// Looks at every checksum-valid record after the damage at `from` that could be a real
/// successor of the damaged record `damaged_lsn`, and checks whether one of them proves
/// that `damaged_lsn` had been made durable (its `durable_lsn_at_write >= damaged_lsn`).
///
/// Why that is proof: the committer writes a batch only after the previous batch's
/// `fdatasync` succeeded and stamps it with the durable LSN of that moment, so such a
/// record was written after `damaged_lsn` was synced: the damage is in acknowledged bytes.
/// Without proof, no surviving record shows `damaged_lsn` was ever durable: a crash during
/// an unsynced write explains everything from `from` on.
///
/// A real successor at `at` has an LSN in
/// `damaged_lsn + 1 ..= damaged_lsn + (at - from) / RECORD_HEADER_LEN` (every record takes
/// at least `RECORD_HEADER_LEN` bytes). Checking that window (not just the checksum) keeps
/// a frame embedded in the damaged record's own payload from being taken for a successor,
/// unless its LSN is exactly such a successor's. After a plausible successor the scan
/// follows the chain (the next frame starts right after it), so an intact tail is read
/// once, not probed at every byte.
fn scan_after_damage(bytes: &[u8], from: u64, damaged_lsn: u64) -> AfterDamage {
    let mut out = AfterDamage::default();
    let Ok(from) = usize::try_from(from) else {
        return out;
    };
    let mut at = from + 1;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let lsn_max = damaged_lsn + ((at - from) / RECORD_HEADER_LEN) as u64;
        match decode_record(&bytes[at..]) {
            Ok((record, len)) if (damaged_lsn + 1..=lsn_max).contains(&record.lsn.0) => {
                out.intact_count += 1;
                if record.durable_lsn_at_write.0 >= damaged_lsn {
                    out.proof_offset = Some(at as u64);
                    return out;
                }
                at += len;
            }
            _ => at += 1,
        }
    }
    out
}

struct LogScan {
    records: RecoveredRecords,
    last_lsn: Lsn,
    segments_read: usize,
    tail: Option<TailTruncation>,
    /// Segment to continue appending to, with its valid length.
    current: Option<(String, u64)>,
}

/// Reads the segments needed to replay from `base + 1` and validates them.
fn scan_log(
    storage: &dyn Storage,
    segments: &[(Lsn, String)],
    base: Lsn,
    mode: RecoveryMode,
) -> Result<LogScan, WalError> {
    let needed = base.0 + 1;
    let mut out = LogScan {
        records: RecoveredRecords::default(),
        last_lsn: base,
        segments_read: 0,
        tail: None,
        current: None,
    };
    let Some(start) = segments.iter().rposition(|(first, _)| first.0 <= needed) else {
        return match segments.first() {
            None => Ok(out),
            Some((first, name)) => Err(WalError::LogGap {
                needed_lsn: needed,
                detail: format!("the oldest segment {name} starts at LSN {first}"),
            }),
        };
    };
    let used = &segments[start..];
    // LSN the next segment must start with; the first segment may start at or before `needed`.
    let mut expected_next: Option<u64> = None;
    for (i, (name_lsn, name)) in used.iter().enumerate() {
        let is_last = i + 1 == used.len();
        let bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        out.segments_read += 1;
        let scan = scan_segment(name, *name_lsn, &bytes)?;
        if let (Some(expected), Some(first)) = (expected_next, scan.first_lsn)
            && first.0 != expected
        {
            return Err(WalError::LsnDiscontinuity {
                file: name.clone(),
                offset: 0,
                expected_lsn: expected,
                found_lsn: first.0,
            });
        }
        let mut valid_len = scan.valid_len;
        if let Some((offset, detail)) = scan.bad.clone() {
            let corruption = || WalError::Corruption {
                file: name.clone(),
                offset,
                detail: detail.clone(),
            };
            if !is_last || mode == RecoveryMode::AbsoluteConsistency {
                return Err(corruption());
            }
            // The damaged record's LSN: the one after the valid prefix (for a torn
            // header, the segment's first LSN, from its name).
            let damaged_lsn = match scan.first_lsn {
                Some(first) => first.0 + scan.record_count,
                None => name_lsn.0,
            };
            let after = scan_after_damage(&bytes, offset, damaged_lsn);
            if after.proof_offset.is_some() {
                return Err(corruption());
            }
            out.tail = Some(TailTruncation {
                file: name.clone(),
                offset,
                dropped_len_bytes: bytes.len() as u64 - offset,
                intact_records_dropped: after.intact_count,
                detail,
                file_removed: scan.first_lsn.is_none(),
            });
            valid_len = offset;
        }
        let Some(first) = scan.first_lsn else {
            // The last segment's header itself was torn: the file goes, and appending
            // continues in the previous segment (already recorded in `current`).
            break;
        };
        // Replay range: records with LSN > base.
        let skip = base.0.saturating_sub(first.0 - 1).min(scan.record_count);
        let mut at = super::format::SEGMENT_HEADER_LEN;
        for _ in 0..skip {
            at += RECORD_HEADER_LEN + read_len(&bytes, at);
        }
        let replay = scan.record_count - skip;
        if replay > 0 {
            out.records.count += replay;
            out.records.spans.push(Span {
                bytes,
                start: at,
                end: valid_len as usize,
            });
        }
        expected_next = Some(first.0 + scan.record_count);
        out.current = Some((name.clone(), valid_len));
    }
    let log_end = expected_next.map(|n| n - 1);
    match log_end {
        Some(end) if end < base.0 => {
            return Err(WalError::LogGap {
                needed_lsn: needed,
                detail: format!("the log ends at LSN {end}, before the snapshot at LSN {base}"),
            });
        }
        Some(end) => out.last_lsn = Lsn(end),
        None => {}
    }
    Ok(out)
}

/// The records with LSN in `after + 1 ..= through` still in the segment files, checked
/// (checksums, contiguous LSNs); from the oldest record kept if the log no longer reaches
/// back to `after + 1`. Damage inside the range is an error naming file and offset.
pub(crate) fn read_range(
    storage: &dyn Storage,
    after: Lsn,
    through: Lsn,
) -> Result<RecoveredRecords, WalError> {
    let mut out = RecoveredRecords::default();
    if through <= after {
        return Ok(out);
    }
    let segments = list(storage)?.segments;
    let start = segments
        .iter()
        .rposition(|(first, _)| first.0 <= after.0 + 1)
        .unwrap_or(0);
    let mut expected_first: Option<u64> = None;
    for (first, name) in &segments[start..] {
        if first.0 > through.0 {
            break;
        }
        if let Some(expected) = expected_first
            && first.0 != expected
        {
            return Err(WalError::LsnDiscontinuity {
                file: name.clone(),
                offset: 0,
                expected_lsn: expected,
                found_lsn: first.0,
            });
        }
        let bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        let scan = scan_segment(name, *first, &bytes)?;
        if let Some((offset, detail)) = scan.bad.clone()
            && first.0 + scan.record_count <= through.0
        {
            return Err(WalError::Corruption {
                file: name.clone(),
                offset,
                detail,
            });
        }
        let mut at = super::format::SEGMENT_HEADER_LEN;
        let mut lsn = first.0;
        let end_lsn = first.0 + scan.record_count; // exclusive
        while lsn <= after.0 && lsn < end_lsn {
            at += RECORD_HEADER_LEN + read_len(&bytes, at);
            lsn += 1;
        }
        let span_start = at;
        let mut count = 0;
        while lsn <= through.0 && lsn < end_lsn {
            at += RECORD_HEADER_LEN + read_len(&bytes, at);
            lsn += 1;
            count += 1;
        }
        if count > 0 {
            out.count += count;
            out.spans.push(Span {
                bytes,
                start: span_start,
                end: at,
            });
        }
        expected_first = Some(end_lsn);
    }
    Ok(out)
}

fn read_len(bytes: &[u8], at: usize) -> usize {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a) as usize
}

struct Listing {
    segments: Vec<(Lsn, String)>,
    snapshots: Vec<(Lsn, String)>,
    temp_files: Vec<String>,
}

fn list(storage: &dyn Storage) -> Result<Listing, WalError> {
    let names = storage.list().map_err(|e| WalError::io("list", "", e))?;
    let mut listing = Listing {
        segments: Vec::new(),
        snapshots: Vec::new(),
        temp_files: Vec::new(),
    };
    for name in names {
        if let Some(lsn) = parse_segment_file_name(&name) {
            listing.segments.push((lsn, name));
        } else if let Some(lsn) = parse_snapshot_file_name(&name) {
            listing.snapshots.push((lsn, name));
        } else if name.ends_with(TEMP_SUFFIX) {
            listing.temp_files.push(name);
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    listing.temp_files.sort();
    Ok(listing)
}

struct Plan {
    recovery: Recovery,
    current: Option<(String, u64)>,
}

/// Decides everything recovery will do, without changing anything.
fn plan(storage: &dyn Storage, mode: RecoveryMode) -> Result<Plan, WalError> {
    let listing = list(storage)?;
    let mut rejected = Vec::new();
    let mut chosen: Option<Snapshot> = None;
    for (lsn, name) in listing.snapshots.iter().rev() {
        let mut bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        let reason = match decode_snapshot(&bytes) {
            Ok((header_lsn, _)) if header_lsn == *lsn => {
                bytes.drain(..super::format::SNAPSHOT_HEADER_LEN);
                chosen = Some(Snapshot {
                    lsn: *lsn,
                    bytes,
                    file: name.clone(),
                });
                break;
            }
            Ok((header_lsn, _)) => DecodeError::NameMismatch {
                name_lsn: lsn.0,
                header_lsn: header_lsn.0,
            }
            .to_string(),
            Err(e) => e.to_string(),
        };
        rejected.push(RejectedSnapshot {
            file: name.clone(),
            reason,
        });
    }
    let base = chosen.as_ref().map_or(Lsn::ZERO, |s| s.lsn);
    let scanned = scan_log(storage, &listing.segments, base, mode);
    if let (Some(first_rejected), Some((newest_lsn, _))) =
        (rejected.first(), listing.snapshots.last())
    {
        let unusable = |fallback_problem: String| WalError::SnapshotUnrecoverable {
            file: first_rejected.file.clone(),
            detail: first_rejected.reason.clone(),
            fallback_problem,
        };
        if mode == RecoveryMode::AbsoluteConsistency {
            return Err(unusable("AbsoluteConsistency does not fall back".into()));
        }
        match &scanned {
            Err(e) => {
                return Err(unusable(format!(
                    "replaying from LSN {} fails: {e}",
                    base.0 + 1
                )));
            }
            Ok(log) if log.last_lsn < *newest_lsn => {
                return Err(unusable(format!(
                    "the log ends at LSN {}, before the unusable snapshot's LSN {newest_lsn}",
                    log.last_lsn
                )));
            }
            Ok(_) => {}
        }
    }
    let log = scanned?;
    let report = RecoveryReport {
        mode,
        snapshot_file: chosen.as_ref().map(|s| s.file.clone()),
        snapshot_lsn: base,
        snapshots_rejected: rejected,
        segments_read: log.segments_read,
        records_replayed: log.records.len(),
        last_lsn: log.last_lsn,
        tail_truncated: log.tail,
        temp_files: listing.temp_files,
    };
    debug_assert_eq!(report.last_lsn.0, base.0 + report.records_replayed);
    Ok(Plan {
        recovery: Recovery {
            snapshot: chosen,
            records: log.records,
            report,
        },
        current: log.current,
    })
}

/// Recovers: plans, then removes temp files, quarantines rejected snapshots and cuts the
/// torn tail. Returns the recovery and the segment to continue appending to.
pub(crate) fn recover(
    storage: &dyn Storage,
    mode: RecoveryMode,
) -> Result<(Recovery, Option<(String, u64)>), WalError> {
    let plan = plan(storage, mode)?;
    let report = &plan.recovery.report;
    for name in &report.temp_files {
        storage
            .remove(name)
            .map_err(|e| WalError::io("remove", name, e))?;
    }
    for rejected in &report.snapshots_rejected {
        let name = &rejected.file;
        let bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        let quarantined = format!("{name}{QUARANTINE_SUFFIX}");
        storage
            .write_atomic(&quarantined, &bytes)
            .map_err(|e| WalError::io("write_atomic", &quarantined, e))?;
        storage
            .remove(name)
            .map_err(|e| WalError::io("remove", name, e))?;
    }
    if let Some(tail) = &report.tail_truncated {
        if tail.file_removed {
            storage
                .remove(&tail.file)
                .map_err(|e| WalError::io("remove", &tail.file, e))?;
        } else {
            storage
                .truncate(&tail.file, tail.offset)
                .map_err(|e| WalError::io("truncate", &tail.file, e))?;
        }
    }
    // Appends continue at the end of the segment's valid records: cut the preallocated
    // zeros after them (the storage writes ahead again as the segment grows).
    if let Some((name, valid_len)) = &plan.current
        && storage
            .len(name)
            .map_err(|e| WalError::io("len", name, e))?
            > *valid_len
    {
        storage
            .truncate(name, *valid_len)
            .map_err(|e| WalError::io("truncate", name, e))?;
    }
    storage
        .sync_dir()
        .map_err(|e| WalError::io("sync_dir", "", e))?;
    Ok((plan.recovery, plan.current))
}

/// LSN of the newest snapshot file present (after recovery's quarantine: the one in use).
pub(crate) fn newest_snapshot_name_lsn(storage: &dyn Storage) -> Result<Option<Lsn>, WalError> {
    Ok(list(storage)?.snapshots.last().map(|s| s.0))
}

/// One segment as `verify` saw it.
#[derive(Debug)]
pub struct SegmentSummary {
    /// File name.
    pub file: String,
    /// First LSN (from the name).
    pub first_lsn: Lsn,
    /// Last valid record's LSN, if any.
    pub last_lsn: Option<Lsn>,
    /// Valid records.
    pub record_count: u64,
    /// File length.
    pub len_bytes: u64,
    /// Length of the valid prefix.
    pub valid_len_bytes: u64,
    /// First problem in this segment, with its byte offset.
    pub error: Option<WalError>,
}

/// One snapshot as `verify` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// File name.
    pub file: String,
    /// LSN from the name.
    pub lsn: Lsn,
    /// File length.
    pub len_bytes: u64,
    /// Why it does not decode, if it does not.
    pub error: Option<DecodeError>,
}

/// What `verify` found (for `pickline wal verify DIR`).
#[derive(Debug)]
pub struct VerifyReport {
    /// Every segment, in LSN order.
    pub segments: Vec<SegmentSummary>,
    /// Every snapshot, in LSN order.
    pub snapshots: Vec<SnapshotSummary>,
    /// Valid records over all segments.
    pub record_count: u64,
    /// LSN range of the valid records over all segments.
    pub lsn_range: Option<(Lsn, Lsn)>,
    /// First problem anywhere (file order), even one recovery would tolerate: a
    /// [`WalError::Corruption`] or [`WalError::LsnDiscontinuity`] naming file and offset.
    pub first_error: Option<WalError>,
    /// What `Wal::open` with [`RecoveryMode::TolerateTailCorruption`] would do, or why it
    /// would refuse to start.
    pub recovery: Result<RecoveryReport, WalError>,
}

impl VerifyReport {
    /// True when nothing at all is wrong.
    pub fn is_clean(&self) -> bool {
        self.first_error.is_none() && self.snapshots.iter().all(|s| s.error.is_none())
    }
}

/// Checks every segment and snapshot without changing anything.
pub fn verify(storage: &dyn Storage) -> Result<VerifyReport, WalError> {
    let listing = list(storage)?;
    let mut report = VerifyReport {
        segments: Vec::new(),
        snapshots: Vec::new(),
        record_count: 0,
        lsn_range: None,
        first_error: None,
        recovery: Ok(RecoveryReport {
            mode: RecoveryMode::TolerateTailCorruption,
            snapshot_file: None,
            snapshot_lsn: Lsn::ZERO,
            snapshots_rejected: Vec::new(),
            segments_read: 0,
            records_replayed: 0,
            last_lsn: Lsn::ZERO,
            tail_truncated: None,
            temp_files: Vec::new(),
        }),
    };
    for (lsn, name) in &listing.snapshots {
        let bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        let error = match decode_snapshot(&bytes) {
            Ok((header_lsn, _)) if header_lsn == *lsn => None,
            Ok((header_lsn, _)) => Some(DecodeError::NameMismatch {
                name_lsn: lsn.0,
                header_lsn: header_lsn.0,
            }),
            Err(e) => Some(e),
        };
        report.snapshots.push(SnapshotSummary {
            file: name.clone(),
            lsn: *lsn,
            len_bytes: bytes.len() as u64,
            error,
        });
    }
    let mut expected_next: Option<u64> = None;
    for (name_lsn, name) in &listing.segments {
        let bytes = storage
            .read(name)
            .map_err(|e| WalError::io("read", name, e))?;
        let mut summary = SegmentSummary {
            file: name.clone(),
            first_lsn: *name_lsn,
            last_lsn: None,
            record_count: 0,
            len_bytes: bytes.len() as u64,
            valid_len_bytes: 0,
            error: None,
        };
        match scan_segment(name, *name_lsn, &bytes) {
            Ok(scan) => {
                summary.last_lsn = scan.last_lsn();
                summary.record_count = scan.record_count;
                summary.valid_len_bytes = scan.valid_len;
                if let Some((offset, detail)) = scan.bad {
                    summary.error = Some(WalError::Corruption {
                        file: name.clone(),
                        offset,
                        detail,
                    });
                } else if let Some(expected) = expected_next
                    && name_lsn.0 != expected
                {
                    summary.error = Some(WalError::LsnDiscontinuity {
                        file: name.clone(),
                        offset: 0,
                        expected_lsn: expected,
                        found_lsn: name_lsn.0,
                    });
                }
                if let Some(first) = scan.first_lsn {
                    expected_next = Some(first.0 + scan.record_count);
                }
            }
            Err(e) => summary.error = Some(e),
        }
        report.record_count += summary.record_count;
        if let Some(last) = summary.last_lsn {
            let first = report.lsn_range.map_or(summary.first_lsn, |r| r.0);
            report.lsn_range = Some((first, last));
        }
        if report.first_error.is_none()
            && let Some(e) = &summary.error
        {
            report.first_error = Some(copy_error(e));
        }
        report.segments.push(summary);
    }
    report.recovery =
        plan(storage, RecoveryMode::TolerateTailCorruption).map(|p| p.recovery.report);
    Ok(report)
}

/// Copies the position-carrying errors `verify` produces (WalError is not `Clone` because
/// of `io::Error`).
fn copy_error(e: &WalError) -> WalError {
    match e {
        WalError::Corruption {
            file,
            offset,
            detail,
        } => WalError::Corruption {
            file: file.clone(),
            offset: *offset,
            detail: detail.clone(),
        },
        WalError::LsnDiscontinuity {
            file,
            offset,
            expected_lsn,
            found_lsn,
        } => WalError::LsnDiscontinuity {
            file: file.clone(),
            offset: *offset,
            expected_lsn: *expected_lsn,
            found_lsn: *found_lsn,
        },
        WalError::SegmentTooLong { file, len_bytes } => WalError::SegmentTooLong {
            file: file.clone(),
            len_bytes: *len_bytes,
        },
        other => WalError::io("verify", "", std::io::Error::other(other.to_string())),
    }
}

/// One record as `dump` shows it (for `pickline wal dump DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// Segment file name.
    pub file: String,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Its LSN.
    pub lsn: Lsn,
    /// Highest LSN durable when it was written (its batch's stamp).
    pub durable_lsn_at_write: Lsn,
    /// Its kind.
    pub kind: u8,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// The payload (for decoding by the engine's record codec).
    pub payload: Vec<u8>,
}

/// Iterator over every record of every segment, in LSN order. Zeros from a record boundary
/// to the end of a segment (preallocated space) end that segment, as in recovery. After a
/// bad header or record it yields one `Err` (naming file and offset) and goes on with the
/// next segment.
pub struct Dump<'a> {
    storage: &'a dyn Storage,
    pending: VecDeque<String>,
    current: Option<(String, Vec<u8>, usize)>,
}

/// Starts a dump of the log in `storage`. Reads one segment at a time.
pub fn dump(storage: &dyn Storage) -> Result<Dump<'_>, WalError> {
    let listing = list(storage)?;
    Ok(Dump {
        storage,
        pending: listing.segments.into_iter().map(|(_, n)| n).collect(),
        current: None,
    })
}

impl Iterator for Dump<'_> {
    type Item = Result<DumpEntry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let name = self.pending.pop_front()?;
                let bytes = match self.storage.read(&name) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(WalError::io("read", &name, e))),
                };
                if let Err((offset, detail)) = SegmentRecords::new(&bytes) {
                    return Some(Err(WalError::Corruption {
                        file: name,
                        offset,
                        detail,
                    }));
                }
                self.current = Some((name, bytes, super::format::SEGMENT_HEADER_LEN));
            }
            let (name, bytes, at) = self.current.as_mut()?;
            if *at >= bytes.len() {
                self.current = None;
                continue;
            }
            let offset = *at;
            return Some(match decode_record(&bytes[offset..]) {
                Ok((record, len)) => {
                    *at += len;
                    Ok(DumpEntry {
                        file: name.clone(),
                        offset: offset as u64,
                        lsn: record.lsn,
                        durable_lsn_at_write: record.durable_lsn_at_write,
                        kind: record.kind,
                        payload_len: record.payload.len() as u32,
                        payload: record.payload.to_vec(),
                    })
                }
                // Zeros from a record boundary to the end are preallocated space, the end
                // of the segment (as for recovery, see `scan_segment`), not damage.
                Err(_) if bytes[offset..].iter().all(|&b| b == 0) => {
                    self.current = None;
                    continue;
                }
                Err(detail) => {
                    let file = name.clone();
                    self.current = None;
                    Err(WalError::Corruption {
                        file,
                        offset: offset as u64,
                        detail,
                    })
                }
            });
        }
    }
}
