//! The gRPC face of the engine: one module per service of `proto/pickline/v1/`, and what
//! they share.
//!
//! - [`rpc`]: the one table of every RPC: allowed scopes, streaming shape, whether it
//!   needs the recovered engine.
//! - [`auth`]: bearer tokens, scopes, the [`auth::Caller`] a handler receives.
//! - [`status`]: the one table mapping errors to gRPC status codes.
//! - [`codec`]: the protobuf codec of the contract's services (malformed requests are
//!   INVALID_ARGUMENT).
//! - [`convert`]: the one place that converts between protobuf and engine types.
//! - [`domain`]: the recovered engine as handlers see it, the injected clock, the wait for
//!   the group commit.
//! - [`replies`]: first answers of keyed requests, for their retries.
//! - The services: [`admin`], [`store_svc`], [`inventory_svc`], [`hold_svc`],
//!   [`pickup_svc`], [`event_svc`].
//!
//! Architecture invariant: this folder depends on the engine and on the crate's shared
//! modules (`pb`, `config`, `metrics`), never on its siblings (`intake/`, `notify/`,
//! `web/`).

pub mod admin;
pub mod auth;
pub mod codec;
pub mod convert;
pub mod domain;
pub mod event_svc;
pub mod hold_svc;
pub mod inventory_svc;
pub mod pickup_svc;
pub mod replies;
pub mod rpc;
pub mod status;
pub mod store_svc;
