//! Arbitrary bytes as a segment file and as a snapshot file: decoding never panics, every
//! record it yields re-verifies, and recovery / verify / dump over a directory holding
//! those bytes never panic and agree with the raw decoder.
//!
//! Structured part: the input also builds a valid segment (records cut from the input),
//! which is then truncated or bit-flipped at an input-chosen place; recovery is compared
//! with the naive model "what was written": it returns a prefix of it, all of it when
//! undamaged, and refuses to start only for a flipped bit.
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
            encode_record(&mut again, record.lsn, record.kind, record.payload).unwrap();
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
            encode_record(&mut again, record.lsn, record.kind, record.payload).unwrap();
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
    let mut segment = encode_segment_header(SegmentHeader { first_lsn: Lsn(1) }).to_vec();
    let mut written: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut ends = Vec::new();
    for (i, chunk) in rest.chunks(ctl[0] as usize % 40 + 1).enumerate() {
        encode_record(&mut segment, Lsn(i as u64 + 1), chunk[0], chunk).unwrap();
        written.push((chunk[0], chunk.to_vec()));
        ends.push(segment.len());
    }
    let full_len = segment.len();
    let at = u16::from_le_bytes([ctl[1], ctl[2]]) as usize % (full_len + 1);
    let damage = ctl[3] % 3;
    match damage {
        0 => segment.truncate(at),
        1 if at < full_len => segment[at] ^= 1 << (ctl[3] % 8),
        _ => {}
    }
    let storage = MemStorage::new();
    storage.put_file(&segment_file_name(Lsn(1)), segment);
    let config = WalConfig {
        committer: Committer::Manual,
        ..WalConfig::default()
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
            assert!(got.len() <= written.len());
            assert_eq!(got.as_slice(), &written[..got.len()]);
            match damage {
                0 => assert_eq!(got.len(), ends.iter().filter(|&&end| end <= at).count()),
                2 => assert_eq!(got.len(), written.len()),
                _ => {}
            }
        }
        Err(WalError::Corruption { offset, .. }) if damage == 1 => assert!(offset as usize <= at),
        Err(WalError::Corruption { offset, .. }) if damage == 0 => {
            // A truncation may only be refused when the torn record's own payload embeds a
            // checksum-valid frame that looks like the next-but-one record (see LAYOUT.md).
            let torn_at = offset as usize;
            assert!(
                ends.contains(&torn_at) || torn_at == SEGMENT_HEADER_LEN,
                "refused at a non-boundary {torn_at}"
            );
            let lsn_before = ends.iter().filter(|&&end| end <= torn_at).count() as u64;
            let embedded = (torn_at + 1..at).any(|p| {
                decode_record(&data_segment_bytes(&written, at)[p..])
                    .is_ok_and(|(r, _)| r.lsn.0 >= lsn_before + 2)
            });
            assert!(
                embedded,
                "truncation at {at} refused without an embedded frame"
            );
        }
        Err(e) => panic!("recovery refused with an unexpected error for damage {damage}: {e}"),
    }
}

/// The segment image `structured` built, cut at `len` (rebuilt: the original was moved).
fn data_segment_bytes(written: &[(u8, Vec<u8>)], len: usize) -> Vec<u8> {
    let mut segment = encode_segment_header(SegmentHeader { first_lsn: Lsn(1) }).to_vec();
    for (i, (kind, payload)) in written.iter().enumerate() {
        encode_record(&mut segment, Lsn(i as u64 + 1), *kind, payload).unwrap();
    }
    segment.truncate(len);
    segment
}
