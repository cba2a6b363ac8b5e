//! `pickline`: parses the command line and config, binds, and calls the library.

use anyhow::Context as _;
use clap::Parser as _;
use pickline_sidecar::{
    cli::{Cli, Command, ServeArgs},
    config::Config,
    logging, server,
};
use tokio::net::TcpListener;

/// mimalloc instead of the system allocator: the request path allocates many small,
/// short-lived buffers (protobuf messages, HTTP/2 frames) across worker threads, which
/// glibc's malloc serves with consolidation and arena contention that showed up at about
/// 15% of CPU in `pickline bench grpc` profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => pickline_sidecar::bench::run(&args),
        Command::Wal(cmd) => pickline_sidecar::walcmd::run(&cmd),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())
        .context("loading configuration")?;
    logging::init(&config.log).context("setting up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let grpc = TcpListener::bind(config.grpc.listen)
            .await
            .with_context(|| format!("binding gRPC on {}", config.grpc.listen))?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http.listen))?;
        server::run(config, grpc, http, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on ctrl-c or SIGTERM (what container runtimes send before SIGKILL).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
