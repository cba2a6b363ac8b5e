//! `pickline intake normalize|rules`: the intake adapters and rules on files, with no side
//! effects; the same [`super::evaluate`] the live flow calls.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::config::Action;
use super::{Channel, IntakeConfig, Payload, Verdict};
use crate::config::Config;

/// Largest payload file read, bytes (Shopify bodies are tens of KiB).
pub const PAYLOAD_BYTES_MAX: u64 = 16 << 20;

/// `pickline intake ...`
#[derive(Debug, Subcommand)]
pub enum IntakeCommand {
    /// Print FILE's canonical order as JSON and exit 0, or print the typed reasons it is
    /// refused (adapter or rejecting rules) as JSON and exit 1. Warnings go to stderr.
    Normalize(NormalizeArgs),
    /// Show which rules each payload trips (reject or warn), without side effects.
    Rules(RulesArgs),
}

/// What both subcommands share.
#[derive(Debug, Args)]
pub struct Common {
    /// The sales channel the payloads come from.
    #[arg(long, value_enum)]
    pub channel: Channel,
    /// The channel account (shop domain, site, store hash) whose rules apply.
    #[arg(long, default_value = "default")]
    pub account: String,
    /// TOML config file whose [intake] section applies (else PICKLINE_CONFIG; else the
    /// defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `pickline intake normalize`
#[derive(Debug, Args)]
pub struct NormalizeArgs {
    #[command(flatten)]
    common: Common,
    /// A related document (Shopify FulfillmentOrder; BigCommerce products or
    /// consignments); repeatable.
    #[arg(long = "with", value_name = "FILE")]
    related: Vec<PathBuf>,
    /// The payload (raw body as received).
    file: PathBuf,
}

/// `pickline intake rules`
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    common: Common,
    /// Payloads, each on its own.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= PAYLOAD_BYTES_MAX,
        "{} is {len} bytes, more than {PAYLOAD_BYTES_MAX}",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn intake_config(common: &Common) -> anyhow::Result<IntakeConfig> {
    let config = Config::load(
        common.config.as_deref(),
        std::env::vars(),
        Default::default(),
    )
    .context("loading configuration")?;
    Ok(config.intake)
}

/// Runs the subcommand; the result is the process exit code.
pub fn run(cmd: &IntakeCommand) -> anyhow::Result<i32> {
    match cmd {
        IntakeCommand::Normalize(args) => {
            let config = intake_config(&args.common)?;
            let body = read(&args.file)?;
            let related = args
                .related
                .iter()
                .map(|p| read(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let related: Vec<&[u8]> = related.iter().map(Vec::as_slice).collect();
            let payload = Payload {
                body: &body,
                related: &related,
            };
            match super::evaluate(args.common.channel, &args.common.account, payload, &config) {
                Verdict::Accepted { order, warnings } => {
                    for w in &warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}", serde_json::to_string_pretty(&order)?);
                    Ok(0)
                }
                Verdict::Rejected { reasons, warnings } => {
                    for w in &warnings {
                        eprintln!("warning: {w}");
                    }
                    let out = serde_json::json!({ "rejected": reasons });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    Ok(1)
                }
            }
        }
        IntakeCommand::Rules(args) => {
            let config = intake_config(&args.common)?;
            let rules = config.rules_for(args.common.channel, &args.common.account);
            for file in &args.files {
                let body = read(file)?;
                let payload = Payload {
                    body: &body,
                    related: &[],
                };
                println!("{}", file.display());
                match super::normalize(args.common.channel, &args.common.account, payload, &config)
                {
                    Err(reasons) => {
                        for r in reasons {
                            println!("  not normalized  {r}");
                        }
                    }
                    Ok(order) => {
                        let hits = super::rules::check(&order, &rules);
                        if hits.is_empty() {
                            println!("  ok");
                        }
                        for h in hits {
                            let action = match h.action {
                                Action::Reject => "reject",
                                Action::Warn => "warn",
                                Action::Off => "off",
                            };
                            println!("  {action:<15} {}", h.reason);
                        }
                    }
                }
            }
            Ok(0)
        }
    }
}
