//! `pickline`: parses the command line and config, binds, and calls the library.
//!
//! The benchmark drivers of `pickline bench` are modules of this binary ([`bench`]), not
//! of the library, so that a service embedding `pickline_sidecar` does not link them.

mod allocator;
mod bench;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use pickline_sidecar::{
    cli::{Cli, Command, ServeArgs},
    config::Config,
    logging, server,
};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    allocator::configure();
    let command = match parse(std::env::args_os()).unwrap_or_else(|e| e.exit()) {
        Invocation::Bench(args) => return bench::run(&args),
        Invocation::Library(command) => command,
    };
    match command {
        Command::Serve(args) => serve(args),
        Command::Simulate(args) => pickline_sidecar::simulate::run(&args),
        Command::Wal(cmd) => pickline_sidecar::walcmd::run(&cmd),
        Command::Staff(cmd) => pickline_sidecar::web::cli::run(&cmd),
        Command::Notify(cmd) => pickline_sidecar::notify::cli::run(&cmd),
        Command::Cluster(cmd) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            Ok(runtime.block_on(pickline_sidecar::cluster::cli::run(cmd))?)
        }
        // Exit 1 means "refused, with typed reasons"; anything that kept the command from
        // deciding (unreadable file, bad config) is 2.
        Command::Intake(cmd) => match pickline_sidecar::intake::cli::run(&cmd) {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::exit(2)
            }
        },
    }
}

/// What the command line asks for: one of the library's subcommands, or `bench`.
#[derive(Debug)]
enum Invocation {
    /// A subcommand of the library's [`Cli`].
    Library(Command),
    /// `pickline bench`.
    Bench(bench::BenchArgs),
}

/// The command line: the library's [`Cli`] with [`bench::subcommand`] added.
fn command_line() -> clap::Command {
    Cli::command().subcommand(bench::subcommand())
}

/// Parses `args` (the program name first); a usage error, `--help` or `--version` comes
/// back as clap's error, whose `exit` prints it with its status.
fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut command = command_line();
    let matches = command.try_get_matches_from_mut(args)?;
    let invocation = match matches.subcommand() {
        Some((bench::SUBCOMMAND, args)) => {
            bench::BenchArgs::from_arg_matches(args).map(Invocation::Bench)
        }
        _ => Cli::from_arg_matches(&matches).map(|cli| Invocation::Library(cli.command)),
    };
    invocation.map_err(|e| e.format(&mut command))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars(), args.overrides())
        .context("loading configuration")?;
    let dev_token = if args.dev {
        Some(config.enable_dev().context("--dev")?)
    } else {
        None
    };
    logging::init(&config.log).context("setting up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let grpc = TcpListener::bind(config.grpc.listen)
            .await
            .with_context(|| format!("binding gRPC on {}", config.grpc.listen))?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http.listen))?;
        if let Some(token) = &dev_token {
            let grpc_addr = grpc.local_addr().context("gRPC listener address")?;
            println!("{}", dev_banner(grpc_addr, &config.data.dir, token));
        }
        server::run(config, grpc, http, shutdown_signal()).await?;
        Ok(())
    })
}

/// What `serve --dev` prints on stdout once it listens: the token (a development token on a
/// loopback listener, so printing it is the point) and commands that use it.
fn dev_banner(grpc: std::net::SocketAddr, data_dir: &std::path::Path, token: &str) -> String {
    format!(
        "\
Pickline development mode: loopback only; this token has every scope and lasts until exit.

  gRPC   {grpc}
  data   {data}
  token  {token}

Try it (in another terminal):

  export PICKLINE_TOKEN={token}
  grpcurl -plaintext -H \"authorization: Bearer $PICKLINE_TOKEN\" {grpc} pickline.v1.AdminService/Ping
  cargo run --release -p pickline-sidecar --example quickstart -- http://{grpc}
  target/py/bin/python examples/python/quickstart.py {grpc}   (README: Python quickstart)
",
        data = data_dir.display()
    )
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::error::ErrorKind;
    use pickline_sidecar::config::DurabilityMode;

    use super::*;

    /// Parses `pickline <args>`.
    fn check(args: &[&str]) -> Result<Invocation, clap::Error> {
        parse(std::iter::once("pickline").chain(args.iter().copied()))
    }

    /// The kind of error parsing `pickline <args>` ends in, if any.
    fn error_kind(args: &[&str]) -> Result<(), ErrorKind> {
        check(args).map(|_| ()).map_err(|e| e.kind())
    }

    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks (duplicate names, flags, defaults), which it otherwise makes
        // only on a debug build's first parse.
        command_line().debug_assert();
    }

    #[test]
    fn help_lists_bench_second_as_before_the_move() {
        let help = command_line().render_help().to_string();
        let listed: Vec<&str> = help
            .split("Commands:")
            .nth(1)
            .and_then(|s| s.split("Options:").next())
            .unwrap_or_default()
            .lines()
            // A subcommand's row is indented by two spaces; a wrapped description more.
            .filter_map(|l| l.strip_prefix("  ").filter(|row| !row.starts_with(' ')))
            .filter_map(|row| row.split_whitespace().next())
            .collect();
        assert_eq!(
            listed,
            [
                "serve", "bench", "simulate", "wal", "intake", "staff", "notify", "cluster", "help"
            ],
            "{help}"
        );
    }

    #[test]
    fn bench_parses_to_its_arguments() {
        let Ok(Invocation::Bench(args)) = check(&[
            "bench",
            "grpc",
            "--quick",
            "--json",
            "--dir",
            "/tmp/b",
            "--concurrency",
            "8",
            "--durability",
            "async",
        ]) else {
            panic!("`pickline bench grpc ...` parses as Bench");
        };
        assert_eq!(args.suite, bench::Suite::Grpc);
        assert!(args.json && args.quick);
        assert_eq!(args.dir, PathBuf::from("/tmp/b"));
        assert_eq!(args.concurrency, Some(8));
        assert_eq!(args.durability, DurabilityMode::Async);
        let Ok(Invocation::Bench(args)) = check(&["bench", "engine"]) else {
            panic!("`pickline bench engine` parses as Bench");
        };
        assert_eq!(args.suite, bench::Suite::Engine);
        assert_eq!(args.dir, PathBuf::from("./pickline-bench-data"));
        assert_eq!(args.durability, DurabilityMode::Sync);
    }

    #[test]
    fn the_library_subcommands_still_parse() {
        let Ok(Invocation::Library(Command::Serve(serve))) = check(&["serve", "--dev"]) else {
            panic!("`pickline serve --dev` parses as Serve");
        };
        assert!(serve.dev);
        assert_eq!(
            error_kind(&["wal", "verify", "--help"]),
            Err(ErrorKind::DisplayHelp)
        );
    }

    #[test]
    fn bench_usage_errors_are_clap_errors() {
        use ErrorKind::{
            DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, InvalidValue,
            MissingRequiredArgument, ValueValidation,
        };
        assert_eq!(error_kind(&["bench"]), Err(MissingRequiredArgument));
        assert_eq!(error_kind(&["bench", "nosuch"]), Err(InvalidValue));
        let zero = ["bench", "grpc", "--concurrency", "0"];
        assert_eq!(error_kind(&zero), Err(ValueValidation));
        assert_eq!(error_kind(&["bench", "--help"]), Err(DisplayHelp));
        // `pickline` alone prints the help and fails, as before.
        assert_eq!(
            error_kind(&[]),
            Err(DisplayHelpOnMissingArgumentOrSubcommand)
        );
    }
}
