//! Helpers shared by the engine's integration tests.

use pickline_engine::durable::OpenOptions;
use pickline_engine::wal::{Committer, Durability, WalConfig};

/// A durable engine whose commits happen on the caller's thread (`Committer::Manual`):
/// every I/O at a deterministic point, every acknowledgement after its sync.
pub fn manual_sync_options() -> OpenOptions {
    OpenOptions {
        wal: WalConfig {
            durability: Durability::Sync,
            committer: Committer::Manual,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    }
}
