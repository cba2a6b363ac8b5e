//! WAL behaviour: round trips, truncation at every byte, mid-log corruption, snapshots,
//! fail-stop, backpressure, durability modes, verify and dump.

use std::sync::Arc;

use pickline_engine::wal::{
    Committer, Durability, FaultKind, FaultPlan, FaultyStorage, FileStorage, Lsn, MemStorage,
    RECORD_HEADER_LEN, RECORD_LEN_MAX, RECORD_PAYLOAD_LEN_MAX, Recovery, RecoveryMode,
    SEGMENT_HEADER_LEN, Storage, Wal, WalConfig, WalError, dump, verify,
};

/// One record as the tests model it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    lsn: u64,
    kind: u8,
    payload: Vec<u8>,
}

fn payload_for(lsn: u64) -> Vec<u8> {
    // Varied lengths (0..=64) and content derived from the LSN.
    (0..(lsn * 7 % 65))
        .map(|i| (lsn as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn manual(segment_len_max: u64) -> WalConfig {
    WalConfig {
        committer: Committer::Manual,
        segment_len_max,
        ..WalConfig::default()
    }
}

fn open(
    storage: &MemStorage,
    config: WalConfig,
    mode: RecoveryMode,
) -> Result<(Wal, Recovery), WalError> {
    Wal::open(Arc::new(storage.clone()), config, mode)
}

fn recovered(recovery: &Recovery) -> Vec<Rec> {
    recovery
        .records
        .iter()
        .map(|r| Rec {
            lsn: r.lsn.0,
            kind: r.kind,
            payload: r.payload.to_vec(),
        })
        .collect()
}

/// Appends records `next_lsn..next_lsn+count` with `payload_for` payloads and waits for them.
fn append_n(wal: &Wal, count: u64) -> Vec<Rec> {
    let mut out = Vec::new();
    for _ in 0..count {
        let lsn = wal.next_lsn().0;
        let payload = payload_for(lsn);
        let kind = (lsn % 5) as u8;
        let got = wal
            .append(kind, |buf| buf.extend_from_slice(&payload))
            .unwrap();
        assert_eq!(got.0, lsn);
        out.push(Rec { lsn, kind, payload });
    }
    if let Some(last) = out.last() {
        wal.wait_durable(Lsn(last.lsn)).unwrap();
    }
    out
}

fn segments(storage: &MemStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("wal-"))
        .collect();
    names.sort();
    names
}

/// Byte offsets of the records in a segment image (the test's own walk of the layout).
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at + 4 <= segment.len() {
        offsets.push(at);
        at += RECORD_HEADER_LEN
            + u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
    }
    offsets
}

#[test]
fn round_trip_across_reopens_and_segments() {
    let storage = MemStorage::new();
    let (wal, rec) = open(&storage, manual(4096), RecoveryMode::TolerateTailCorruption).unwrap();
    assert!(rec.snapshot.is_none() && rec.records.is_empty());
    assert_eq!(wal.next_lsn(), Lsn(1));
    let mut expected = append_n(&wal, 300);
    wal.close().unwrap();
    assert!(segments(&storage).len() > 2, "small segments must roll");

    let (wal, rec) = open(&storage, manual(4096), RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(recovered(&rec), expected);
    assert_eq!(rec.report.last_lsn, Lsn(300));
    assert_eq!(wal.next_lsn(), Lsn(301));
    expected.extend(append_n(&wal, 50));
    drop(wal); // drop flushes too

    let (_wal, rec) = open(&storage, manual(4096), RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(recovered(&rec), expected);
    for name in segments(&storage) {
        let first: u64 = name[4..24].parse().unwrap();
        let bytes = storage.file(&name).unwrap();
        assert!(bytes.len() <= 4096, "{name} is {} bytes", bytes.len());
        assert_eq!(u64::from_le_bytes(bytes[12..20].try_into().unwrap()), first);
    }
}

#[test]
fn round_trip_on_a_real_directory_with_the_committer_thread() {
    let dir = std::env::temp_dir().join(format!("pickline-wal-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(&dir).unwrap());
    let config = WalConfig {
        segment_len_max: 8192,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(
        storage.clone(),
        config,
        RecoveryMode::TolerateTailCorruption,
    )
    .unwrap();
    let expected = append_n(&wal, 500);
    let m = wal.metrics();
    assert_eq!(m.records_written, 500);
    assert!(m.batches_written >= 1 && m.batches_written <= 500);
    assert!(m.segments_rolled >= 1);
    assert_eq!(
        m.fsync_latency_us_histogram.iter().sum::<u64>(),
        m.batches_written
    );
    wal.write_snapshot(Lsn(400), b"state at 400").unwrap();
    wal.close().unwrap();
    let (_wal, rec) = Wal::open(storage, config, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(rec.snapshot.as_ref().unwrap().bytes, b"state at 400");
    assert_eq!(recovered(&rec), expected[400..].to_vec());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_real_directory_preallocates_and_reopens_at_the_logical_end() {
    let dir = std::env::temp_dir().join(format!("pickline-wal-pre-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::open(&dir).unwrap());
    let config = WalConfig::default();
    let mut expected = Vec::new();
    for round in 0..3 {
        let (wal, rec) =
            Wal::open(storage.clone(), config, RecoveryMode::AbsoluteConsistency).unwrap();
        assert_eq!(rec.report.tail_truncated, None, "round {round}");
        assert_eq!(recovered(&rec), expected, "round {round}");
        expected.extend(append_n(&wal, 300));
        wal.close().unwrap();
        // The file runs ahead of its records with zeros, and `verify` sees a clean log.
        let names = storage.list().unwrap();
        let segment = names.iter().find(|n| n.starts_with("wal-")).unwrap();
        let bytes = storage.read(segment).unwrap();
        let records_len: usize = SEGMENT_HEADER_LEN
            + expected
                .iter()
                .map(|r| RECORD_HEADER_LEN + r.payload.len())
                .sum::<usize>();
        assert!(bytes.len() > records_len, "round {round}: not preallocated");
        assert!(bytes[records_len..].iter().all(|&b| b == 0));
        let report = verify(&*storage).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.first_error);
        assert_eq!(report.record_count, expected.len() as u64);
        // `dump` stops at the zeros too, like recovery: every record, and no error.
        let dumped: Vec<Rec> = dump(&*storage)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                Rec {
                    lsn: e.lsn.0,
                    kind: e.kind,
                    payload: e.payload,
                }
            })
            .collect();
        assert_eq!(dumped, expected, "round {round}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_point_of_a_segment_recovers_a_prefix() {
    let storage = MemStorage::new();
    let (wal, _) = open(
        &storage,
        manual(1 << 20),
        RecoveryMode::TolerateTailCorruption,
    )
    .unwrap();
    let expected = append_n(&wal, 40);
    wal.close().unwrap();
    let name = segments(&storage).pop().unwrap();
    let image = storage.file(&name).unwrap();
    let ends: Vec<usize> = record_offsets(&image)
        .into_iter()
        .skip(1)
        .chain([image.len()])
        .collect();
    for cut in 0..=image.len() {
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let on_boundary = cut == image.len()
            || record_offsets(&image).contains(&cut)
            || cut == SEGMENT_HEADER_LEN;
        let s = MemStorage::new();
        s.put_file(&name, image[..cut].to_vec());

        let strict = open(&s, manual(1 << 20), RecoveryMode::AbsoluteConsistency);
        assert_eq!(
            strict.is_ok(),
            on_boundary,
            "cut {cut}: AbsoluteConsistency must refuse a torn tail"
        );
        drop(strict);

        let (wal, rec) = open(&s, manual(1 << 20), RecoveryMode::TolerateTailCorruption)
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(recovered(&rec), expected[..whole].to_vec(), "cut {cut}");
        match &rec.report.tail_truncated {
            Some(t) => {
                assert!(!on_boundary, "cut {cut}: nothing to drop");
                assert_eq!(t.file, name);
                assert_eq!(t.file_removed, cut < SEGMENT_HEADER_LEN);
                assert_eq!(t.offset + t.dropped_len_bytes, cut as u64);
            }
            None => assert!(on_boundary, "cut {cut}: torn tail not reported"),
        }
        // The log continues where the prefix ends, and survives another reopen intact.
        let more = append_n(&wal, 3);
        assert_eq!(more[0].lsn, whole as u64 + 1);
        wal.close().unwrap();
        let (_w, rec) = open(&s, manual(1 << 20), RecoveryMode::AbsoluteConsistency).unwrap();
        let mut all = expected[..whole].to_vec();
        all.extend(more);
        assert_eq!(recovered(&rec), all, "cut {cut} after reopen");
    }
}

/// Appends `count` records, each made durable before the next is appended (one batch per
/// record), so every record's stamp proves its predecessor durable.
fn append_each_synced(wal: &Wal, count: u64) -> Vec<Rec> {
    (0..count).flat_map(|_| append_n(wal, 1)).collect()
}

#[test]
fn a_bit_flip_in_synced_records_is_refused_with_file_and_offset() {
    let storage = MemStorage::new();
    let (wal, _) = open(&storage, manual(4096), RecoveryMode::TolerateTailCorruption).unwrap();
    append_each_synced(&wal, 200);
    wal.close().unwrap();
    let names = segments(&storage);
    assert!(names.len() >= 3);

    // (segment index, record index) -> where to flip. Every record but the very last is
    // followed by a record whose stamp proves it was synced: refused in both modes.
    let last_seg = names.len() - 1;
    let last_offsets = record_offsets(&storage.file(&names[last_seg]).unwrap());
    let cases = [
        (0, 0),
        (1, 3),
        (last_seg, 0),
        (last_seg, last_offsets.len() - 2),
    ];
    for (seg, record) in cases {
        let s = storage.process_crash();
        let name = &names[seg];
        let offset = record_offsets(&s.file(name).unwrap())[record];
        assert!(s.flip_bit(name, offset + 10, 3));
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            match open(&s, manual(4096), mode) {
                Err(WalError::Corruption {
                    file, offset: at, ..
                }) => {
                    assert_eq!((&file, at), (name, offset as u64), "{mode:?}");
                }
                other => panic!(
                    "segment {seg} record {record} {mode:?}: expected corruption, got {other:?}"
                ),
            }
        }
        let report = verify(&s).unwrap();
        match report.first_error {
            Some(WalError::Corruption {
                file, offset: at, ..
            }) => assert_eq!((&file, at), (name, offset as u64)),
            other => panic!("verify: {other:?}"),
        }
        assert!(report.recovery.is_err());
        let errors: Vec<_> = dump(&s).unwrap().filter_map(Result::err).collect();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains(&format!("{name} at byte offset {offset}")),
            "{}",
            errors[0]
        );
    }

    // The very last record: nothing after it proves it durable. Dropped in Tolerate mode,
    // refused in Absolute mode.
    let s = storage.process_crash();
    let name = &names[last_seg];
    let offset = *last_offsets.last().unwrap();
    assert!(s.flip_bit(name, offset + 9, 0));
    assert!(matches!(
        open(&s, manual(4096), RecoveryMode::AbsoluteConsistency),
        Err(WalError::Corruption { .. })
    ));
    let (_wal, rec) = open(&s, manual(4096), RecoveryMode::TolerateTailCorruption).unwrap();
    assert_eq!(rec.records.len(), 199);
    let tail = rec.report.tail_truncated.as_ref().unwrap();
    assert_eq!(tail.offset, offset as u64);
    assert_eq!(tail.intact_records_dropped, 0);
}

#[test]
fn a_bit_flip_in_a_never_synced_batch_before_intact_records_is_a_torn_tail() {
    let storage = MemStorage::new();
    let (wal, _) = open(&storage, manual(1 << 20), RecoveryMode::default()).unwrap();
    let synced = append_each_synced(&wal, 10);
    // One more batch of 30 records, all stamped with LSN 10: nothing in it was durable when
    // it was written, so damage inside it followed by its own intact records is a torn tail.
    let batch = append_n(&wal, 30);
    wal.close().unwrap();
    let name = segments(&storage).pop().unwrap();
    let offsets = record_offsets(&storage.file(&name).unwrap());
    for (index, flip_at) in [(10usize, 3usize), (11, 20), (25, 8), (39, 30)] {
        let s = storage.process_crash();
        let offset = offsets[index];
        assert!(s.flip_bit(&name, offset + flip_at, 5), "record {index}");
        assert!(
            matches!(
                open(&s, manual(1 << 20), RecoveryMode::AbsoluteConsistency),
                Err(WalError::Corruption { offset: at, .. }) if at == offset as u64
            ),
            "record {index}: AbsoluteConsistency refuses any damage"
        );
        assert!(verify(&s).unwrap().recovery.is_ok(), "record {index}");
        let (wal, rec) = open(&s, manual(1 << 20), RecoveryMode::default())
            .unwrap_or_else(|e| panic!("record {index}: refused never-synced damage: {e}"));
        let mut expected = synced.clone();
        expected.extend_from_slice(&batch[..index - 10]);
        assert_eq!(recovered(&rec), expected, "record {index}");
        let tail = rec.report.tail_truncated.as_ref().unwrap();
        assert_eq!(
            (tail.file.as_str(), tail.offset),
            (name.as_str(), offset as u64)
        );
        assert_eq!(
            tail.intact_records_dropped,
            39 - index as u64,
            "record {index}"
        );
        // The cut log takes new records and reopens clean.
        let more = append_n(&wal, 2);
        assert_eq!(more[0].lsn, index as u64 + 1);
        wal.close().unwrap();
        let (_w, rec) = open(&s, manual(1 << 20), RecoveryMode::AbsoluteConsistency).unwrap();
        assert_eq!(rec.report.last_lsn, Lsn(index as u64 + 2));
    }
    // Damage in the synced part is refused, naming segment and offset: LSN 10 (index 9) is
    // proven durable by the last batch's stamp 10, LSN 6 (index 5) by LSN 7's stamp 6.
    for index in [5usize, 9] {
        let s = storage.process_crash();
        assert!(s.flip_bit(&name, offsets[index] + 12, 1));
        match open(&s, manual(1 << 20), RecoveryMode::default()) {
            Err(WalError::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (name.clone(), offsets[index] as u64));
            }
            other => panic!("record {index}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_valid_record_with_a_wrong_lsn_is_refused() {
    let storage = MemStorage::new();
    let (wal, _) = open(
        &storage,
        manual(1 << 20),
        RecoveryMode::TolerateTailCorruption,
    )
    .unwrap();
    append_n(&wal, 5);
    wal.close().unwrap();
    let name = segments(&storage).pop().unwrap();
    let mut image = storage.file(&name).unwrap();
    pickline_engine::wal::format::encode_record(&mut image, Lsn(9), Lsn(5), 0, b"gap").unwrap();
    storage.put_file(&name, image);
    match open(
        &storage,
        manual(1 << 20),
        RecoveryMode::TolerateTailCorruption,
    ) {
        Err(WalError::LsnDiscontinuity {
            expected_lsn: 6,
            found_lsn: 9,
            file,
            ..
        }) => assert_eq!(file, name),
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshots_prune_the_log_and_keep_one_fallback() {
    let storage = MemStorage::new();
    let (wal, _) = open(&storage, manual(4096), RecoveryMode::TolerateTailCorruption).unwrap();
    let all = append_n(&wal, 100);
    wal.write_snapshot(Lsn(60), b"s60").unwrap();
    let all: Vec<Rec> = all.into_iter().chain(append_n(&wal, 100)).collect();
    wal.write_snapshot(Lsn(150), b"s150").unwrap();
    let all: Vec<Rec> = all.into_iter().chain(append_n(&wal, 100)).collect();
    wal.write_snapshot(Lsn(250), b"s250").unwrap();
    assert!(matches!(
        wal.write_snapshot(Lsn(200), b"old"),
        Err(WalError::InvalidSnapshotLsn { .. })
    ));
    assert!(matches!(
        wal.write_snapshot(Lsn(301), b"future"),
        Err(WalError::InvalidSnapshotLsn { .. })
    ));
    wal.close().unwrap();

    let names = storage.list().unwrap();
    let snaps: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert_eq!(snaps.len(), 2, "{names:?}");
    // Every remaining segment but the first starts after the previous snapshot (150).
    let segs = segments(&storage);
    let firsts: Vec<u64> = segs.iter().map(|n| n[4..24].parse().unwrap()).collect();
    assert!(
        firsts[0] <= 151 && firsts.get(1).is_none_or(|&f| f > 151),
        "{firsts:?}"
    );

    let (_wal, rec) = open(&storage, manual(4096), RecoveryMode::AbsoluteConsistency).unwrap();
    let snap = rec.snapshot.as_ref().unwrap();
    assert_eq!((snap.lsn, snap.bytes.as_slice()), (Lsn(250), &b"s250"[..]));
    assert_eq!(recovered(&rec), all[250..].to_vec());
    drop(_wal);

    // Corrupt newest snapshot: falls back to the previous one, which the log still covers.
    let s = storage.process_crash();
    assert!(s.flip_bit("snapshot-00000000000000000250.snap", 33, 1));
    assert!(matches!(
        open(&s, manual(4096), RecoveryMode::AbsoluteConsistency),
        Err(WalError::SnapshotUnrecoverable { .. })
    ));
    let (wal, rec) = open(&s, manual(4096), RecoveryMode::TolerateTailCorruption).unwrap();
    assert_eq!(rec.snapshot.as_ref().unwrap().lsn, Lsn(150));
    assert_eq!(recovered(&rec), all[150..].to_vec());
    assert_eq!(rec.report.snapshots_rejected.len(), 1);
    assert!(
        s.file("snapshot-00000000000000000250.snap.corrupt")
            .is_some()
    );
    wal.close().unwrap();

    // Corrupt newest snapshot with the log cut below it: no fallback, typed error.
    let s = storage.process_crash();
    assert!(s.flip_bit("snapshot-00000000000000000250.snap", 33, 1));
    // Cut the segment holding LSN 250 to its header and remove every later one.
    let segs = segments(&s);
    let holding = segs
        .iter()
        .rposition(|n| n[4..24].parse::<u64>().unwrap() <= 250)
        .unwrap();
    for later in &segs[holding + 1..] {
        s.remove(later).unwrap();
    }
    let bytes = s.file(&segs[holding]).unwrap();
    s.put_file(&segs[holding], bytes[..SEGMENT_HEADER_LEN].to_vec());
    match open(&s, manual(4096), RecoveryMode::TolerateTailCorruption) {
        Err(WalError::SnapshotUnrecoverable { file, .. }) => {
            assert_eq!(file, "snapshot-00000000000000000250.snap")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_fsync_error_fail_stops_every_later_call_with_the_reason() {
    let plan = FaultPlan {
        op_index: 0,
        kind: FaultKind::SyncError,
        seed: 1,
    };
    let mem = MemStorage::new();
    // Open does its own syncs; place the fault after them.
    let probe = FaultyStorage::new(MemStorage::new(), None);
    drop(
        Wal::open(
            Arc::new(probe.clone()),
            WalConfig::default(),
            RecoveryMode::default(),
        )
        .unwrap(),
    );
    let plan = FaultPlan {
        op_index: probe.op_count(),
        ..plan
    };
    let faulty = FaultyStorage::new(mem, Some(plan));
    let (wal, _) = Wal::open(
        Arc::new(faulty.clone()),
        WalConfig::default(),
        RecoveryMode::default(),
    )
    .unwrap();
    let lsn = wal.append(1, |b| b.extend_from_slice(b"x")).unwrap();
    let err = wal.wait_durable(lsn).unwrap_err();
    let WalError::FailStopped { reason } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("fdatasync"), "{reason}");
    assert_eq!(faulty.fired().unwrap().kind, FaultKind::SyncError);
    for _ in 0..3 {
        match wal.append(1, |b| b.push(0)) {
            Err(WalError::FailStopped { reason: r }) => assert_eq!(r, reason),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        wal.wait_durable(lsn),
        Err(WalError::FailStopped { .. })
    ));
    assert!(matches!(wal.flush(), Err(WalError::FailStopped { .. })));
    assert_eq!(wal.durable_lsn(), Lsn(0));
    assert_eq!(wal.failure().as_deref(), Some(&*reason));
    assert!(matches!(wal.close(), Err(WalError::FailStopped { .. })));
}

#[test]
fn a_write_error_in_manual_mode_fail_stops_too() {
    let mem = MemStorage::new();
    let faulty = FaultyStorage::new(
        mem,
        Some(FaultPlan {
            op_index: 0,
            kind: FaultKind::TornWrite,
            seed: 7,
        }),
    );
    let (wal, _) = Wal::open(Arc::new(faulty), manual(4096), RecoveryMode::default()).unwrap();
    let lsn = wal.append(1, |b| b.extend_from_slice(&[1; 100])).unwrap();
    let first = wal.wait_durable(lsn).unwrap_err();
    assert!(
        matches!(first, WalError::Io { .. }),
        "the failing call sees the I/O error: {first:?}"
    );
    assert!(matches!(
        wal.append(1, |_| {}),
        Err(WalError::FailStopped { .. })
    ));
}

#[test]
fn backpressure_commits_inline_in_manual_mode_and_blocks_in_thread_mode() {
    let mem = MemStorage::new();
    let config = WalConfig {
        pending_len_max: RECORD_LEN_MAX,
        ..manual(1 << 20)
    };
    let (wal, _) = open(&mem, config, RecoveryMode::default()).unwrap();
    let payload = vec![5u8; 60_000];
    for _ in 0..40 {
        wal.append(2, |b| b.extend_from_slice(&payload)).unwrap();
    }
    assert!(
        wal.metrics().batches_written >= 1,
        "a full buffer must be committed without an explicit flush"
    );
    assert!(wal.durable_lsn().0 >= 17);
    wal.close().unwrap();

    let config = WalConfig {
        pending_len_max: RECORD_LEN_MAX,
        ..WalConfig::default()
    };
    let (wal, _) = open(&MemStorage::new(), config, RecoveryMode::default()).unwrap();
    let mut last = Lsn(0);
    for _ in 0..200 {
        last = wal.append(2, |b| b.extend_from_slice(&payload)).unwrap();
    }
    wal.wait_durable(last).unwrap();
    assert_eq!(wal.metrics().records_written, 200);
}

#[test]
fn oversized_payloads_and_panicking_encoders_leave_no_trace() {
    let mem = MemStorage::new();
    let (wal, _) = open(&mem, manual(1 << 20), RecoveryMode::default()).unwrap();
    let a = wal.append(1, |b| b.push(1)).unwrap();
    let err = wal
        .append(1, |b| b.resize(b.len() + RECORD_PAYLOAD_LEN_MAX + 1, 0))
        .unwrap_err();
    assert!(matches!(err, WalError::PayloadTooLarge { .. }));
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wal.append(1, |b| {
            b.extend_from_slice(b"half");
            panic!("encoder bug");
        })
    }));
    assert!(panicked.is_err());
    let b = wal.append(1, |b| b.push(2)).unwrap();
    assert_eq!((a, b), (Lsn(1), Lsn(2)));
    wal.close().unwrap();
    let (_w, rec) = open(&mem, manual(1 << 20), RecoveryMode::AbsoluteConsistency).unwrap();
    let payloads: Vec<Vec<u8>> = rec.records.iter().map(|r| r.payload.to_vec()).collect();
    assert_eq!(payloads, vec![vec![1], vec![2]]);
}

#[test]
fn wait_durable_refuses_unassigned_lsns() {
    let (wal, _) = open(
        &MemStorage::new(),
        WalConfig::default(),
        RecoveryMode::default(),
    )
    .unwrap();
    assert!(matches!(
        wal.wait_durable(Lsn(1)),
        Err(WalError::LsnNotAssigned {
            lsn: 1,
            next_lsn: 1
        })
    ));
    wal.wait_durable(Lsn(0)).unwrap();
}

#[test]
fn async_mode_flushes_without_waiters_and_on_close() {
    let mem = MemStorage::new();
    let config = WalConfig {
        durability: Durability::Async {
            flush_interval_ms: 2,
        },
        ..WalConfig::default()
    };
    let (wal, _) = open(&mem, config, RecoveryMode::default()).unwrap();
    let first = append_n(&wal, 10); // wait_durable also works in Async mode
    let lsn = wal.append(1, |b| b.push(9)).unwrap();
    // Nobody waits: the interval flush makes it durable. Bounded poll, not a timing claim.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal.durable_lsn() < lsn {
        assert!(
            std::time::Instant::now() < deadline,
            "async flush never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for _ in 0..5 {
        wal.append(1, |b| b.push(7)).unwrap();
    }
    wal.close().unwrap();
    let (_w, rec) = open(&mem, config, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(rec.records.len(), 16);
    assert_eq!(recovered(&rec)[..10].to_vec(), first);
}

#[test]
fn off_mode_writes_nothing() {
    let mem = MemStorage::new();
    let config = WalConfig {
        durability: Durability::Off,
        ..WalConfig::default()
    };
    let (wal, _) = open(&mem, config, RecoveryMode::default()).unwrap();
    let mut last = Lsn(0);
    for i in 0..1000u32 {
        last = wal
            .append(1, |b| b.extend_from_slice(&i.to_le_bytes()))
            .unwrap();
    }
    assert_eq!(last, Lsn(1000));
    wal.wait_durable(last).unwrap();
    wal.write_snapshot(last, b"ignored").unwrap();
    wal.close().unwrap();
    assert!(mem.list().unwrap().is_empty());
}

#[test]
fn invalid_configs_are_refused_with_the_field_name() {
    let bad = [
        WalConfig {
            segment_len_max: 10,
            ..WalConfig::default()
        },
        WalConfig {
            pending_len_max: 100,
            ..WalConfig::default()
        },
        WalConfig {
            durability: Durability::Async {
                flush_interval_ms: 0,
            },
            ..WalConfig::default()
        },
    ];
    for (config, field) in
        bad.into_iter()
            .zip(["segment_len_max", "pending_len_max", "flush_interval_ms"])
    {
        match open(&MemStorage::new(), config, RecoveryMode::default()) {
            Err(WalError::InvalidConfig { reason }) => assert!(reason.contains(field), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn concurrent_clients_get_contiguous_lsns_and_everything_acknowledged_survives() {
    let mem = MemStorage::new();
    let config = WalConfig {
        segment_len_max: 64 << 10,
        ..WalConfig::default()
    };
    let (wal, _) = open(&mem, config, RecoveryMode::default()).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4u8)
        .map(|client| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..2000u32 {
                    let lsn = wal
                        .append(client, |b| {
                            b.push(client);
                            b.extend_from_slice(&i.to_le_bytes());
                        })
                        .unwrap();
                    if i % 10 == 9 {
                        wal.wait_durable(lsn).unwrap();
                    }
                    mine.push(lsn);
                }
                wal.wait_durable(*mine.last().unwrap()).unwrap();
                mine
            })
        })
        .collect();
    let per_client: Vec<Vec<Lsn>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let m = wal.metrics();
    assert_eq!(m.records_written, 8000);
    assert!(m.batch_records_max >= 1);
    Arc::try_unwrap(wal).unwrap().close().unwrap();
    let (_w, rec) = open(&mem, config, RecoveryMode::AbsoluteConsistency).unwrap();
    let records = recovered(&rec);
    assert_eq!(records.len(), 8000);
    for (client, lsns) in per_client.iter().enumerate() {
        for (i, lsn) in lsns.iter().enumerate() {
            let r = &records[(lsn.0 - 1) as usize];
            assert_eq!(r.kind, client as u8);
            assert_eq!(r.payload[1..], (i as u32).to_le_bytes());
        }
    }
}

#[test]
fn verify_and_dump_describe_a_healthy_log() {
    let mem = MemStorage::new();
    let (wal, _) = open(&mem, manual(4096), RecoveryMode::default()).unwrap();
    append_n(&wal, 120);
    wal.write_snapshot(Lsn(100), b"snap").unwrap();
    wal.close().unwrap();
    let report = verify(&mem).unwrap();
    assert!(report.is_clean(), "{:?}", report.first_error);
    assert_eq!(report.record_count, 120);
    assert_eq!(report.lsn_range, Some((Lsn(1), Lsn(120))));
    assert_eq!(report.snapshots.len(), 1);
    assert_eq!(
        report.segments.iter().map(|s| s.record_count).sum::<u64>(),
        120
    );
    let recovery = report.recovery.unwrap();
    assert_eq!(
        (recovery.snapshot_lsn, recovery.records_replayed),
        (Lsn(100), 20)
    );
    let entries: Vec<_> = dump(&mem).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.len(), 120);
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.lsn.0 == i as u64 + 1)
    );
    assert_eq!(entries[0].offset, SEGMENT_HEADER_LEN as u64);
    assert_eq!(entries[5].payload_len as usize, payload_for(6).len());
}
