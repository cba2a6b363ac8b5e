//! `pickline wal verify DIR` and `pickline wal dump DIR`: operator tools for a data
//! directory's write-ahead log. Both only read.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pickline_engine::Record;
use pickline_engine::event::RECORD_KIND_EVENTS;
use pickline_engine::wal::{self, FileStorage, VerifyReport};
use serde_json::json;

/// `pickline wal ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WalCommand {
    /// Check every segment and snapshot and say what recovery would do; exit non-zero on
    /// corruption (names file and offset).
    Verify {
        /// The data directory.
        dir: PathBuf,
        /// Print the report as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print every record up to the end of the written log: segment, offset, LSN, the
    /// durable LSN when it was written, kind, length and its decoded events.
    Dump {
        /// The data directory.
        dir: PathBuf,
        /// Print only the header line of each record.
        #[arg(long)]
        headers_only: bool,
    },
}

/// Runs a `wal` subcommand.
pub fn run(cmd: &WalCommand) -> anyhow::Result<()> {
    match cmd {
        WalCommand::Verify { dir, json } => {
            let storage =
                FileStorage::open(dir).with_context(|| format!("open {}", dir.display()))?;
            let report = wal::verify(&storage)?;
            if *json {
                println!("{}", verify_json(&report));
            } else {
                print!("{}", verify_text(&dir.display().to_string(), &report));
            }
            if !report.is_clean() {
                anyhow::bail!("the log in {} is not clean (see above)", dir.display());
            }
            Ok(())
        }
        WalCommand::Dump { dir, headers_only } => {
            let storage: Arc<FileStorage> = Arc::new(
                FileStorage::open(dir).with_context(|| format!("open {}", dir.display()))?,
            );
            let mut errors = 0usize;
            for entry in wal::dump(&*storage)? {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        errors += 1;
                        println!("error: {e}");
                        continue;
                    }
                };
                println!(
                    "{} @{} lsn {} durable-at-write {} kind {} len {}",
                    entry.file,
                    entry.offset,
                    entry.lsn,
                    entry.durable_lsn_at_write,
                    entry.kind,
                    entry.payload_len
                );
                if !headers_only && entry.kind == RECORD_KIND_EVENTS {
                    match Record::decode(&entry.payload) {
                        Ok(r) => {
                            for ev in r.events {
                                println!("    {ev:?}");
                            }
                        }
                        Err(e) => println!("    undecodable: {e}"),
                    }
                }
            }
            if errors > 0 {
                anyhow::bail!(
                    "{errors} damaged segment(s) in {} (see above)",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

/// The report of `wal verify` for a person: a verdict line, totals, what recovery would
/// do, then one line per file.
pub fn verify_text(dir: &str, r: &VerifyReport) -> String {
    let mut out = String::new();
    let verdict = if r.is_clean() { "ok" } else { "NOT CLEAN" };
    let _ = writeln!(out, "{dir}: {verdict}");
    let range = match r.lsn_range {
        Some((first, last)) => format!("LSN {first}..={last}"),
        None => "no records".to_owned(),
    };
    let bytes: u64 = r.segments.iter().map(|s| s.valid_len_bytes).sum();
    let _ = writeln!(
        out,
        "  log        {} segment(s), {} record(s), {range}, {} bytes of records",
        r.segments.len(),
        r.record_count,
        bytes
    );
    let newest = r.snapshots.iter().rev().find(|s| s.error.is_none());
    let _ = writeln!(
        out,
        "  snapshots  {}{}",
        r.snapshots.len(),
        newest.map_or(String::new(), |s| format!(
            ", newest usable at LSN {} ({} bytes)",
            s.lsn, s.len_bytes
        ))
    );
    match &r.recovery {
        Ok(rec) => {
            let from = rec
                .snapshot_file
                .as_deref()
                .map_or("the empty state".to_owned(), str::to_owned);
            let _ = writeln!(
                out,
                "  recovery   would start from {from}, replay {} record(s), end at LSN {}",
                rec.records_replayed, rec.last_lsn
            );
            if let Some(t) = &rec.tail_truncated {
                let _ = writeln!(
                    out,
                    "             and drop a torn tail: {} at byte {} ({} bytes, {} intact record(s)): {}",
                    t.file, t.offset, t.dropped_len_bytes, t.intact_records_dropped, t.detail
                );
            }
            for s in &rec.snapshots_rejected {
                let _ = writeln!(
                    out,
                    "             and set aside snapshot {}: {}",
                    s.file, s.reason
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  recovery   would REFUSE to start: {e}");
        }
    }
    match &r.first_error {
        Some(e) => {
            let _ = writeln!(out, "  problem    {e}");
        }
        None => {
            let _ = writeln!(out, "  problem    none");
        }
    }
    for s in &r.segments {
        let lsns = match s.last_lsn {
            Some(last) => format!("LSN {}..={last}", s.first_lsn),
            None => "empty".to_owned(),
        };
        let status = s.error.as_ref().map_or("ok".to_owned(), |e| e.to_string());
        let _ = writeln!(
            out,
            "  segment  {}  {lsns}, {} record(s), {} of {} bytes written: {status}",
            s.file, s.record_count, s.valid_len_bytes, s.len_bytes
        );
    }
    for s in &r.snapshots {
        let status = s.error.as_ref().map_or("ok".to_owned(), |e| e.to_string());
        let _ = writeln!(
            out,
            "  snapshot {}  LSN {}, {} bytes: {status}",
            s.file, s.lsn, s.len_bytes
        );
    }
    out
}

/// The report of `wal verify --json`, for scripts and monitoring.
pub fn verify_json(r: &VerifyReport) -> serde_json::Value {
    let recovery = match &r.recovery {
        Ok(rec) => json!({
            "ok": true,
            "snapshot_file": rec.snapshot_file,
            "snapshot_lsn": rec.snapshot_lsn.0,
            "records_replayed": rec.records_replayed,
            "last_lsn": rec.last_lsn.0,
            "tail_truncated": rec.tail_truncated.as_ref().map(|t| json!({
                "file": t.file,
                "offset": t.offset,
                "dropped_len_bytes": t.dropped_len_bytes,
                "intact_records_dropped": t.intact_records_dropped,
                "detail": t.detail.to_string(),
                "file_removed": t.file_removed,
            })),
            "snapshots_rejected": rec.snapshots_rejected.iter().map(|s| json!({
                "file": s.file,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    json!({
        "clean": r.is_clean(),
        "record_count": r.record_count,
        "lsn_range": r.lsn_range.map(|(a, b)| [a.0, b.0]),
        "first_error": r.first_error.as_ref().map(|e| e.to_string()),
        "recovery": recovery,
        "segments": r.segments.iter().map(|s| json!({
            "file": s.file,
            "first_lsn": s.first_lsn.0,
            "last_lsn": s.last_lsn.map(|l| l.0),
            "record_count": s.record_count,
            "len_bytes": s.len_bytes,
            "valid_len_bytes": s.valid_len_bytes,
            "error": s.error.as_ref().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
        "snapshots": r.snapshots.iter().map(|s| json!({
            "file": s.file,
            "lsn": s.lsn.0,
            "len_bytes": s.len_bytes,
            "error": s.error.as_ref().map(|e| e.to_string()),
        })).collect::<Vec<_>>(),
    })
}
