//! Pickline sidecar: the engine behind a gRPC API, for an OMS written in any language.
//!
//! # Layout
//!
//! - [`pb`]: code generated from `proto/pickline/v1/*.proto` (messages, server traits,
//!   clients) and the encoded descriptor set for reflection.
//! - [`grpc::rpc`]: the one table of every RPC: allowed scopes, streaming shape, whether it
//!   needs the recovered engine.
//! - [`grpc::auth`]: bearer tokens, scopes, the [`grpc::auth::Caller`] a handler receives.
//! - [`grpc::status`]: the one table mapping errors to gRPC status codes.
//! - [`grpc::codec`]: the protobuf codec of the contract's services (malformed requests are
//!   INVALID_ARGUMENT).
//! - [`server`]: [`server::run`], the admission layer (auth, overload shedding, timeout),
//!   health, reflection, graceful shutdown.
//! - [`metrics`]: Prometheus `/metrics`, per-RPC counters and latency, engine gauges.
//! - [`grpc::admin`]: the `AdminService` handler (Ping).
//! - [`intake`]: order intake: channel adapters into one canonical order, webhook
//!   signatures, validation rules, `pickline intake normalize|rules`.
//! - [`web`]: the store staff tablet pages and the customer pages (order status by link,
//!   e-receipt, store finder) on the HTTP listener; [`order_link`] derives the customer
//!   links.
//! - [`notify`]: customer notifications (SMS and email) driven by the event stream:
//!   durable outbox, templates, SMTP and SMS providers, dead letters,
//!   `pickline notify preview|dlq`.
//! - [`cluster`]: cluster mode on NATS JetStream: the partition's log as a replicated
//!   stream with fencing, leadership as a lease, standbys, failover, allocation across
//!   partitions, `pickline cluster status|map` (docs/CLUSTER.md).
//! - [`config`], [`cli`], [`logging`]: what `main` needs to start.
//!
//! Architecture invariant: the library holds no benchmark driver. `pickline bench` and its
//! drivers are modules of the `pickline` binary (`src/bench/`), which use this library
//! through its public API like any other embedding; a service that links the library does
//! not link them.
//!
//! # How a domain handler plugs in
//!
//! A handler converts the request, calls the engine, converts the outcome, and maps
//! errors; it holds no business logic and records no metrics:
//!
//! ```text
//! async fn hold(&self, req: Request<pb::HoldRequest>) -> Result<Response<pb::HoldResponse>, Status> {
//!     // Scope already checked by the admission layer; the store of a pos/staff token is not.
//!     auth::caller(&req)?.authorize_store(&req.get_ref().store_id)?;
//!     let cmd = convert::hold_command(req.into_inner())?;      // DomainError::InvalidArgument
//!     let outcome = self.engine.hold(cmd).map_err(DomainError::from)?; // status table
//!     Ok(Response::new(convert::hold_response(outcome)))      // granted/rejected oneof
//! }
//! ```
//!
//! then the service is added in [`server::run`] next to `AdminService`, its name to the
//! health and reflection lists there, and nothing else changes: [`rpc::RPCS`] already
//! has its rows.
//!
//! Architecture invariant: the sidecar converts between protobuf and engine types; the
//! engine never sees a protobuf type, a tonic type or an async runtime.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod grpc;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod order_link;
pub mod qr;
pub mod recovery_progress;
pub mod server;
pub mod simulate;
pub mod walcmd;
pub mod web;

/// Generated protobuf and gRPC code of package `pickline.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("pickline.v1");

    /// The encoded `FileDescriptorSet` of `proto/pickline/v1/*.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/pickline_v1_descriptor.bin"));
}
