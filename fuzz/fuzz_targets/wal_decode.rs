//! Arbitrary bytes as a segment file and as a snapshot file: decoding never panics, every
//! record it yields re-verifies, and recovery / verify / dump over a directory holding
//! those bytes never panic and agree with the raw decoder.
//!
//! Structured part: the input also builds a valid segment (records cut from the input,
//! committed in input-chosen batches, each stamped with the LSN durable before it), which
//! is then truncated or bit-flipped at an input-chosen place; recovery is compared with the
//! naive model "what was written": it returns a prefix of it, all of it when undamaged, the
//! records before the damage when nothing after it proves the damaged record durable, and
//! refuses to start exactly when a later record does (or, the documented residual
//! ambiguity, when a payload embeds a frame that looks like such a record).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pickline_engine::wal::format::{
    SEGMENT_HEADER_LEN, SegmentHeader, SegmentRecords, decode_record, decode_snapshot,
    encode_record, encode_segment_header, encode_snapshot, segment_file_name, snapshot_file_name,
};
use pickline_engine::wal::{
    Committer, Lsn, MemStorage, RecoveryMode, Wal, WalConfig, WalError, dump, verify,
};

fuzz_target!(|data: &[u8]| {
    // 1. Raw record decoding at every offset of the input: a yielded record re-encodes to
    //    exactly the bytes it was decoded from (so its CRC verifies).
    for at in 0..data.len().min(64) {
        if let Ok((record, len)) = decode_record(&data[at..]) {
            let mut again = Vec::new();
            encode_record(
                &mut again,
                record.lsn,
                record.durable_lsn_at_write,
                record.kind,
                record.payload,
            )
            .unwrap();
            assert_eq!(again.as_slice(), &data[at..at + len]);
        }
    }

    // 2. As a whole segment file: records are back to back, each re-verifies.
    let mut first_lsn = None;
    if let Ok((header, records)) = SegmentRecords::new(data) {
        first_lsn = Some(header.first_lsn);
        let mut expected_offset = SEGMENT_HEADER_LEN as u64;
        for item in records {
            match item {
                Ok((offset, record)) => {
                    assert_eq!(offset, expected_offset);
                    let (again, len) = decode_record(&data[offset as usize..]).unwrap();
                    assert_eq!(again, record);
                    expected_offset += len as u64;
                }
                Err((offset, _)) => assert_eq!(offset, expected_offset),
            }
        }
    }

    // 3. As a snapshot file: a decoded snapshot re-encodes to the same bytes.
    if let Ok((lsn, payload)) = decode_snapshot(data) {
        assert_eq!(encode_snapshot(lsn, payload).unwrap(), data);
    }

    // 4. The operator tools and recovery over a directory holding these bytes as the only
    //    segment (named after its header LSN if it has one) and as a snapshot.
    let storage = MemStorage::new();
    storage.put_file(
        &segment_file_name(first_lsn.unwrap_or(Lsn(1))),
        data.to_vec(),
    );
    storage.put_file(&snapshot_file_name(Lsn(0)), data.to_vec());
    let report = verify(&storage).unwrap();
    let dumped = dump(&storage).unwrap().filter(Result::is_ok).count() as u64;
    if report
        .segments
        .iter()
        .all(|s| !matches!(s.error, Some(WalError::LsnDiscontinuity { .. })))
    {
        assert_eq!(dumped, report.record_count);
    }
    let config = WalConfig {
        committer: Committer::Manual,
        ..WalConfig::default()
    };
    if let Ok((wal, recovery)) = Wal::open(
        Arc::new(storage.clone()),
        config,
        RecoveryMode::TolerateTailCorruption,
    ) {
        for record in recovery.records.iter() {
            let mut again = Vec::new();
            encode_record(
                &mut again,
                record.lsn,
                record.durable_lsn_at_write,
                record.kind,
                record.payload,
            )
            .unwrap();
            assert!(decode_record(&again).is_ok());
        }
        // After recovery the log must accept appends and reopen cleanly.
        let lsn = wal.append(1, |b| b.extend_from_slice(b"after")).unwrap();
        wal.wait_durable(lsn).unwrap();
        drop(wal);
        let (_w, again) =
            Wal::open(Arc::new(storage), config, RecoveryMode::AbsoluteConsistency).unwrap();
        assert_eq!(again.report.last_lsn, lsn);
    }

    structured(data);
});

fn structured(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let (ctl, rest) = data.split_at(4);
    let written = records_of(ctl, rest);
    let segment = segment_image(&written, usize::MAX);
    let ends: Vec<usize> = (1..=written.len())
        .map(|n| segment_image(&written[..n], usize::MAX).len())
        .collect();
    let full_len = segment.len();
    let at = u16::from_le_bytes([ctl[1], ctl[2]]) as usize % (full_len + 1);
    let damage = ctl[3] % 3;
    let mut damaged = segment.clone();
    match damage {
        0 => damaged.truncate(at),
        1 if at < full_len => damaged[at] ^= 1 << (ctl[3] % 8),
        _ => {}
    }
    let flipped = damage == 1 && at < full_len;
    // Index of the damaged record (0 for a flip in the segment header: LSN 1 is then the
    // first record the damage hides), and whether a later record's stamp proves it durable.
    let damaged_index = ends.iter().filter(|&&end| end <= at).count();
    let proven = written
        .iter()
        .skip(damaged_index + 1)
        .any(|r| r.stamp >= damaged_index as u64 + 1);
    let storage = MemStorage::new();
    storage.put_file(&segment_file_name(Lsn(1)), damaged.clone());
    let config = WalConfig {
        committer: Committer::Manual,
        ..WalConfig::default()
    };
    // A checksum-valid frame embedded in a payload after `from`, looking like a successor
    // of the damaged record that proves it durable (the residual ambiguity in LAYOUT.md).
    let embedded_proof = |from: usize| {
        let lsn = damaged_index as u64 + 1;
        (from + 1..damaged.len()).any(|p| {
            decode_record(&damaged[p..])
                .is_ok_and(|(r, _)| r.lsn.0 > lsn && r.durable_lsn_at_write.0 >= lsn)
        })
    };
    match Wal::open(
        Arc::new(storage),
        config,
        RecoveryMode::TolerateTailCorruption,
    ) {
        Ok((_wal, recovery)) => {
            let got: Vec<(u8, Vec<u8>)> = recovery
                .records
                .iter()
                .map(|r| (r.kind, r.payload.to_vec()))
                .collect();
            let want: Vec<(u8, Vec<u8>)> = written
                .iter()
                .map(|r| (r.kind, r.payload.clone()))
                .collect();
            assert!(got.len() <= want.len());
            assert_eq!(got.as_slice(), &want[..got.len()]);
            match damage {
                0 => assert_eq!(got.len(), damaged_index),
                1 if flipped => {
                    assert!(!proven, "a flip in a record proven durable was accepted");
                    assert_eq!(got.len(), damaged_index);
                }
                _ => assert_eq!(got.len(), want.len()),
            }
        }
        Err(WalError::Corruption { offset, .. }) if flipped => {
            assert!(offset as usize <= at);
            assert!(
                proven || embedded_proof(offset as usize),
                "a flip at {at} was refused although nothing proves record {} durable",
                damaged_index + 1
            );
        }
        Err(WalError::Corruption { offset, .. }) if damage == 0 => {
            let torn_at = offset as usize;
            assert!(
                ends.contains(&torn_at) || torn_at == SEGMENT_HEADER_LEN,
                "refused at a non-boundary {torn_at}"
            );
            assert!(
                embedded_proof(torn_at),
                "truncation at {at} refused without an embedded frame"
            );
        }
        Err(e) => panic!("recovery refused with an unexpected error for damage {damage}: {e}"),
    }
}

/// One record of the structured segment.
struct Written {
    kind: u8,
    payload: Vec<u8>,
    /// Its `durable_lsn_at_write`: the last LSN of the batch before its own.
    stamp: u64,
}

/// Records cut from `rest`, committed in batches of 1..=4 records chosen by `ctl[0]`.
fn records_of(ctl: &[u8], rest: &[u8]) -> Vec<Written> {
    let batch_len = (ctl[0] >> 6) as usize + 1;
    rest.chunks(ctl[0] as usize % 40 + 1)
        .enumerate()
        .map(|(i, chunk)| Written {
            kind: chunk[0],
            payload: chunk.to_vec(),
            stamp: (i / batch_len * batch_len) as u64,
        })
        .collect()
}

/// The segment image holding `written` (LSNs from 1), cut at `len`.
fn segment_image(written: &[Written], len: usize) -> Vec<u8> {
    let mut segment = encode_segment_header(SegmentHeader { first_lsn: Lsn(1) }).to_vec();
    for (i, r) in written.iter().enumerate() {
        encode_record(
            &mut segment,
            Lsn(i as u64 + 1),
            Lsn(r.stamp),
            r.kind,
            &r.payload,
        )
        .unwrap();
    }
    segment.truncate(len);
    segment
}
