//! `pickline`: the Pickline sidecar binary.

use clap::{Parser, Subcommand};

mod bench;
mod walcmd;

#[derive(Debug, Parser)]
#[command(
    name = "pickline",
    version,
    about = "Pickline BOPIS inventory allocation engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a benchmark and print its figures.
    Bench(bench::BenchArgs),
    /// Operator tools for a data directory's write-ahead log.
    #[command(subcommand)]
    Wal(walcmd::WalCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Wal(cmd) => walcmd::run(&cmd),
    }
}
