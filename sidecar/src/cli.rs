//! The `pickline` command line. `main` parses [`Cli`] and dispatches on [`Command`].
//!
//! `pickline bench` is not here: its drivers are modules of the binary, so `main` adds that
//! subcommand to [`Cli`]'s (see `src/bench/mod.rs`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

/// Pickline: in-memory BOPIS stock reservation engine with a gRPC sidecar.
///
/// Quick start: `pickline serve --dev` serves on loopback with a generated token and
/// prints how to call it.
#[derive(Debug, Parser)]
#[command(name = "pickline", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (and the HTTP endpoint: /metrics, webhooks, the store and
    /// customer pages) until SIGTERM or ctrl-c.
    ///
    /// Tokens come from the config file's [[tokens]], PICKLINE_TOKEN (one token with every
    /// scope) or PICKLINE_TOKENS; without any, every RPC answers UNAUTHENTICATED, and a
    /// gRPC listener that is not loopback refuses to start. See
    /// sidecar/pickline.example.toml for every option.
    Serve(ServeArgs),
    /// Simulate a Black Friday on a store network and report the business KPIs.
    Simulate(crate::simulate::SimulateArgs),
    /// Operator tools for a data directory's write-ahead log.
    #[command(subcommand)]
    Wal(crate::walcmd::WalCommand),
    /// Order intake tools: normalize a channel payload, show which rules it trips.
    #[command(subcommand)]
    Intake(crate::intake::cli::IntakeCommand),
    /// Staff sign-in for the tablet pages: add a staff member to a config file.
    #[command(subcommand)]
    Staff(crate::web::cli::StaffCommand),
    /// Customer notifications: preview a template, the dead-letter list.
    #[command(subcommand)]
    Notify(crate::notify::cli::NotifyCommand),
    /// Cluster mode on NATS JetStream: who leads each partition, the partition map.
    #[command(subcommand)]
    Cluster(crate::cluster::cli::ClusterCommand),
}

/// Flags of `pickline serve`. They override the config file and the environment.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Development mode: loopback listeners only, plus a generated token with every scope,
    /// printed at start with a command that uses it.
    #[arg(long)]
    pub dev: bool,
    /// TOML config file (else PICKLINE_CONFIG; else built-in defaults only).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (data.dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (grpc.listen).
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address for /metrics (http.listen).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Largest gRPC message, bytes (grpc.max_message_bytes).
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Unary requests in flight before shedding (grpc.concurrency_limit).
    #[arg(long, value_name = "N")]
    pub concurrency_limit: Option<usize>,
    /// Per-request time limit, ms (grpc.request_timeout_ms).
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Log filter directives (log.filter).
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log format: json or pretty (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// For `pickline simulate --target` only: take the time from each request's
    /// `pickline-sim-now-ms` header instead of the wall clock (grpc.simulated_clock).
    #[arg(long)]
    pub simulated_clock: bool,
}

impl ServeArgs {
    /// The overrides these flags make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            grpc_listen: self.grpc_listen,
            http_listen: self.http_listen,
            max_message_bytes: self.max_message_bytes,
            concurrency_limit: self.concurrency_limit,
            request_timeout_ms: self.request_timeout_ms,
            log_filter: self.log.clone(),
            log_format: self.log_format,
            simulated_clock: self.simulated_clock.then_some(true),
        }
    }
}
