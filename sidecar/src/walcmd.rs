//! `pickline wal verify DIR` and `pickline wal dump DIR`: operator tools for a data
//! directory's write-ahead log. Both only read.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pickline_engine::Record;
use pickline_engine::event::RECORD_KIND_EVENTS;
use pickline_engine::wal::{self, FileStorage};

/// `pickline wal ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WalCommand {
    /// Check every segment and snapshot; exit non-zero on corruption (names file and offset).
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Print every record: segment, offset, LSN, the durable LSN when it was written, kind,
    /// length and its decoded events.
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
        WalCommand::Verify { dir } => {
            let storage =
                FileStorage::open(dir).with_context(|| format!("open {}", dir.display()))?;
            let report = wal::verify(&storage)?;
            println!("{report:#?}");
            if !report.is_clean() {
                anyhow::bail!("the log in {} is not clean (see above)", dir.display());
            }
            println!("ok");
            Ok(())
        }
        WalCommand::Dump { dir, headers_only } => {
            let storage: Arc<FileStorage> = Arc::new(
                FileStorage::open(dir).with_context(|| format!("open {}", dir.display()))?,
            );
            for entry in wal::dump(&*storage)? {
                let entry = entry?;
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
            Ok(())
        }
    }
}
