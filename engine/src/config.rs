//! Engine configuration: every limit is named here and validated once, at start-up.

use crate::error::ConfigError;

/// Limits that bound memory and work. Every queue, table and request is bounded; a request
/// beyond a limit is refused with a typed error instead of growing without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Stores the engine can register. The store table is allocated once at this size.
    pub stores_max: u32,
    /// SKUs the engine can intern. The per-store cell pages are indexed up to this size.
    pub skus_max: u32,
    /// Lines in one hold.
    pub hold_lines_max: usize,
    /// Units in one line.
    pub line_qty_max: u32,
    /// Active (not yet released, expired or collected) holds per store.
    pub store_active_holds_max: usize,
    /// Longest hold time a request may ask for, whatever the store says.
    pub hold_time_max_ms: i64,
    /// Shortest hold time a request may ask for.
    pub hold_time_min_ms: i64,
    /// Length of an idempotency key or POS event id, in bytes.
    pub key_len_max: usize,
    /// Length of an external id (store, SKU, order reference), in bytes.
    pub external_id_len_max: usize,
    /// How long a finished hold, an idempotency key and a POS event id are remembered.
    pub dedupe_window_ms: i64,
    /// POS event ids remembered per store (the dedupe window is also bounded by count).
    pub pos_dedupe_len_max: usize,
    /// Holds examined per `expire` call when the caller passes no smaller bound.
    pub expire_batch_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stores_max: 65_536,
            skus_max: 4_194_304,
            hold_lines_max: 100,
            line_qty_max: 10_000,
            store_active_holds_max: 2_000_000,
            hold_time_max_ms: 14 * 24 * 3_600_000,
            hold_time_min_ms: 1_000,
            key_len_max: 128,
            external_id_len_max: 128,
            dedupe_window_ms: 48 * 3_600_000,
            pos_dedupe_len_max: 1_000_000,
            expire_batch_max: 10_000,
        }
    }
}

impl Limits {
    /// Checks that the limits are usable; the message names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, field: &'static str, why: &'static str) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { field, why })
            }
        }
        check(
            self.stores_max >= 1 && self.stores_max <= 1 << 20,
            "stores_max",
            "must be in 1..=1048576",
        )?;
        check(
            self.skus_max >= 1 && self.skus_max <= 1 << 28,
            "skus_max",
            "must be in 1..=268435456",
        )?;
        check(
            (1..=10_000).contains(&self.hold_lines_max),
            "hold_lines_max",
            "must be in 1..=10000",
        )?;
        check(
            self.line_qty_max >= 1 && self.line_qty_max <= 1_000_000,
            "line_qty_max",
            "must be in 1..=1000000",
        )?;
        check(
            self.store_active_holds_max >= 1,
            "store_active_holds_max",
            "must be at least 1",
        )?;
        check(
            self.hold_time_min_ms >= 1 && self.hold_time_min_ms <= self.hold_time_max_ms,
            "hold_time_min_ms",
            "must be at least 1 and not above hold_time_max_ms",
        )?;
        check(
            self.hold_time_max_ms <= 366 * 24 * 3_600_000,
            "hold_time_max_ms",
            "must be at most one year",
        )?;
        check(
            (8..=1024).contains(&self.key_len_max),
            "key_len_max",
            "must be in 8..=1024",
        )?;
        check(
            (8..=1024).contains(&self.external_id_len_max),
            "external_id_len_max",
            "must be in 8..=1024",
        )?;
        // One hold's record (its lines, or a shortage list naming every line, with the
        // key) must fit one log record, or a hold the limits allow could never be logged.
        check(
            self.hold_lines_max * (self.external_id_len_max + 24) + self.key_len_max + 64
                <= crate::wal::RECORD_PAYLOAD_LEN_MAX,
            "hold_lines_max",
            "times external_id_len_max + 24, plus key_len_max + 64, must fit one log record (1 MiB)",
        )?;
        check(
            self.dedupe_window_ms >= 60_000,
            "dedupe_window_ms",
            "must be at least one minute",
        )?;
        check(
            self.pos_dedupe_len_max >= 1,
            "pos_dedupe_len_max",
            "must be at least 1",
        )?;
        check(
            self.expire_batch_max >= 1,
            "expire_batch_max",
            "must be at least 1",
        )?;
        Ok(())
    }
}

/// Engine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineConfig {
    /// Limits on tables and requests.
    pub limits: Limits,
}

impl EngineConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()
    }
}
