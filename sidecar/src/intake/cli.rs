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
    /// The dead-letter queue of a data directory (with the server stopped; a running
    /// server's is served by the gRPC IntakeService).
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `pickline intake dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters, most impact first (paid, nearest pickup, largest incident).
    List(DlqArgs),
    /// Show one dead letter with its headers and raw payload.
    Show(DlqIdArgs),
    /// Put a dead letter back into the intake queue (placed at the next start, against
    /// the configuration then in force).
    Replay(DlqIdArgs),
    /// Drop a dead letter for good.
    Discard(DlqIdArgs),
}

/// Where the journal is.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// TOML config file whose data.dir holds the journal (else PICKLINE_CONFIG; else the
    /// defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides data.dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One dead letter.
#[derive(Debug, Args)]
pub struct DlqIdArgs {
    #[command(flatten)]
    pub at: DlqArgs,
    /// The dead letter's id (from `list`).
    pub id: u64,
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

fn open_journal(at: &DlqArgs) -> anyhow::Result<super::journal::Journal> {
    let config = Config::load(at.config.as_deref(), std::env::vars(), Default::default())
        .context("loading configuration")?;
    let dir = at.data_dir.clone().unwrap_or(config.data.dir.clone());
    Ok(super::journal::Journal::open(
        &dir,
        config.data.wal_config(),
    )?)
}

/// A letter as the CLI and gRPC show it (headers and body only in `show`).
pub fn letter_json(
    id: u64,
    l: &super::journal::Letter,
    incident: usize,
    full: bool,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": id,
        "channel": l.entry.channel,
        "account": l.entry.account,
        "source": l.entry.source,
        "order_ref": l.entry.impact.order_ref,
        "paid": l.entry.impact.paid,
        "total_minor": l.entry.impact.total_minor,
        "pickup_at_ms": l.entry.impact.pickup_at_ms,
        "reason": l.reason,
        "message": l.message,
        "attempts": l.attempts,
        "first_failure_ms": l.first_failure_ms,
        "last_failure_ms": l.last_failure_ms,
        "incident_size": incident,
        "body_bytes": l.entry.body.len(),
    });
    if full && let Some(map) = v.as_object_mut() {
        map.insert("headers".into(), serde_json::json!(l.entry.headers));
        map.insert(
            "body".into(),
            serde_json::json!(String::from_utf8_lossy(&l.entry.body)),
        );
    }
    v
}

fn run_dlq(cmd: &DlqCommand) -> anyhow::Result<i32> {
    match cmd {
        DlqCommand::List(at) => {
            let journal = open_journal(at)?;
            let letters = journal.with_state(|s| super::flow::rank_letters(s.letters()));
            if at.json {
                let all: Vec<_> = letters
                    .iter()
                    .map(|(id, l, n)| letter_json(*id, l, *n, false))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            println!("{} dead letters", letters.len());
            for (id, l, n) in &letters {
                println!(
                    "{id:>8}  {:<13} {:<24} {:<6} attempts {:<3} incident {:<3} {}: {}",
                    l.entry.channel.as_str(),
                    l.entry.impact.order_ref,
                    if l.entry.impact.paid {
                        "paid"
                    } else {
                        "unpaid"
                    },
                    l.attempts,
                    n,
                    l.reason,
                    l.message
                );
            }
            Ok(0)
        }
        DlqCommand::Show(a) => {
            let journal = open_journal(&a.at)?;
            let letters = journal.with_state(|s| super::flow::rank_letters(s.letters()));
            let Some((id, l, n)) = letters.iter().find(|(id, _, _)| *id == a.id) else {
                eprintln!("no dead letter {}", a.id);
                return Ok(1);
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&letter_json(*id, l, *n, true))?
            );
            Ok(0)
        }
        DlqCommand::Replay(a) | DlqCommand::Discard(a) => {
            let journal = open_journal(&a.at)?;
            if !journal.with_state(|s| s.letters().contains_key(&a.id)) {
                eprintln!("no dead letter {}", a.id);
                return Ok(1);
            }
            let (record, done) = match cmd {
                DlqCommand::Replay(_) => (
                    super::journal::JournalRecord::Requeued { id: a.id },
                    "queued again; placed when the server starts",
                ),
                _ => (
                    super::journal::JournalRecord::Discarded { id: a.id },
                    "discarded",
                ),
            };
            let lsn = journal.append(record)?;
            journal.wait_durable(lsn)?;
            println!("dead letter {}: {done}", a.id);
            Ok(0)
        }
    }
}

/// Runs the subcommand; the result is the process exit code.
pub fn run(cmd: &IntakeCommand) -> anyhow::Result<i32> {
    match cmd {
        IntakeCommand::Dlq(cmd) => run_dlq(cmd),
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
