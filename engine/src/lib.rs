//! Pickline engine (skeleton; filled in by the engine-core work).

pub mod calendar;
pub mod pickup_code;
pub mod receipt;
pub mod wal;
