//! Shared helpers for cross-crate tests, and the embedding guide's examples.

/// The embedding guide, `docs/EMBEDDING.md`: its examples run as this crate's doc tests,
/// so `cargo test` keeps them true.
#[doc = include_str!("../../docs/EMBEDDING.md")]
pub mod embedding {}
