//! `pickline notify preview|dlq`.
//!
//! - `preview --kind K --locale L ORDER_JSON` renders a message in every form (email
//!   subject, text, HTML; SMS with its encoding and segments) from a JSON context (a file,
//!   `-` for stdin, or the JSON itself), so operators can check templates without an
//!   order. The context has the fields templates see (`render.rs`); missing ones are
//!   filled with an example order.
//! - `dlq list|show KEY|replay KEY` talks to a running server's `NotifyService` (the
//!   notifier owns its journal; the CLI never writes it), with the token from
//!   `PICKLINE_TOKEN` (scope `admin`).

use std::{io::Read as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Kind, render::Renderer};
use crate::pb;

/// `pickline notify ...`
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Render a message to stdout (text, HTML and SMS forms).
    Preview(PreviewArgs),
    /// The dead-letter list of a running server.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `pickline notify preview`
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Message kind: confirmation, ready, reminder, expired, no_show, cancelled, receipt.
    #[arg(long)]
    pub kind: String,
    /// BCP 47 locale (falls back de-DE -> de -> en).
    #[arg(long, default_value = "en")]
    pub locale: String,
    /// Operator template directory (`<dir>/<locale>/<kind>.j2`) over the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub template_dir: Option<PathBuf>,
    /// Longest SMS in segments.
    #[arg(long, default_value_t = 3)]
    pub sms_segments_max: u32,
    /// The template context: a JSON file, `-` for stdin, or the JSON text itself.
    #[arg(value_name = "ORDER_JSON")]
    pub order: String,
}

/// `pickline notify dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters.
    List(ServerArgs),
    /// Show one dead letter and its message as it would be sent now.
    Show {
        /// Server to ask.
        #[command(flatten)]
        server: ServerArgs,
        /// The key, `O1-7/ready/email`.
        key: String,
    },
    /// Send a dead letter again (attempts from zero).
    Replay {
        /// Server to ask.
        #[command(flatten)]
        server: ServerArgs,
        /// The key, `O1-7/ready/email`.
        key: String,
    },
}

/// Where the server is.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// An example order: the fields a context leaves out.
fn example() -> Value {
    json!({
        "order_id": "O1-42",
        "channel_order_id": "#1001",
        "customer_name": "Jane",
        "store": {"id": "S1", "name": "Pickline Mitte", "instructions": "Pickup desk by entrance B", "time_zone": "Europe/Berlin"},
        "lines": [{"sku": "MUG-1", "description": "Coffee mug", "qty": 2}],
        "currency": "EUR",
        "total": "19.80 EUR",
        "pickup_code": "7KQ2M-XW4TD",
        "qr_payload": "PICKLINE1:S1:O1-42:7KQ2MXW4TD",
        "ready_estimate": "2026-03-07 14:30",
        "expires_at": "2026-03-07 18:00",
        "receipt_number": "S1-000042",
        "receipt_text": "Receipt S1-000042\n2 x Coffee mug 19.80 EUR",
        "receipt_html": "<table><tr><td>2 x Coffee mug</td><td>19.80 EUR</td></tr></table>",
    })
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Runs a `notify` subcommand.
pub fn run(cmd: &NotifyCommand) -> anyhow::Result<()> {
    match cmd {
        NotifyCommand::Preview(a) => preview(a),
        NotifyCommand::Dlq(d) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(dlq(d))
        }
    }
}

fn preview(a: &PreviewArgs) -> anyhow::Result<()> {
    let kind: Kind = a.kind.parse().map_err(anyhow::Error::msg)?;
    if !super::config::valid_locale(&a.locale) {
        bail!("--locale {:?} is not a BCP 47 tag", a.locale);
    }
    let text = if a.order == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else if a.order.trim_start().starts_with('{') {
        a.order.clone()
    } else {
        std::fs::read_to_string(&a.order).with_context(|| format!("reading {}", a.order))?
    };
    let given: Value = serde_json::from_str(&text).context("ORDER_JSON is not JSON")?;
    if !given.is_object() {
        bail!("ORDER_JSON must be a JSON object");
    }
    let mut ctx = example();
    merge(&mut ctx, given);
    ctx["kind"] = json!(kind.as_str());
    let dir = a.template_dir.clone().unwrap_or_default();
    let r =
        Renderer::new(&dir, "en", a.sms_segments_max.clamp(1, 10)).render(kind, &a.locale, &ctx)?;
    println!("template: {}", r.template);
    println!("subject: {}", r.subject);
    println!("--- text ---\n{}", r.text);
    println!("--- html ---\n{}", r.html);
    println!(
        "--- sms ({}, {} segment{}, {} characters) ---\n{}",
        r.sms_encoding.as_str(),
        r.sms_segments,
        if r.sms_segments == 1 { "" } else { "s" },
        r.sms.chars().count(),
        r.sms
    );
    Ok(())
}

async fn dlq(cmd: &DlqCommand) -> anyhow::Result<()> {
    let server = match cmd {
        DlqCommand::List(s)
        | DlqCommand::Show { server: s, .. }
        | DlqCommand::Replay { server: s, .. } => s,
    };
    let token = std::env::var("PICKLINE_TOKEN").context("set PICKLINE_TOKEN (scope admin)")?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("PICKLINE_TOKEN is not a valid header value")?;
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", server.addr))?;
    let mut client = pb::notify_service_client::NotifyServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    );
    match cmd {
        DlqCommand::List(s) => {
            let list = client
                .list_dead_letters(pb::ListNotifyDeadLettersRequest {})
                .await?
                .into_inner()
                .dead_letters;
            if s.json {
                let v: Vec<Value> = list.iter().map(letter_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                println!("no dead letters");
            } else {
                for d in &list {
                    println!(
                        "{}  attempts={}  dead_at_ms={}  {}",
                        d.key, d.attempts, d.dead_at_ms, d.error
                    );
                }
            }
        }
        DlqCommand::Show { server, key } => {
            let r = client
                .get_dead_letter(pb::GetNotifyDeadLetterRequest { key: key.clone() })
                .await?
                .into_inner();
            let d = r.dead_letter.unwrap_or_default();
            if server.json {
                let mut v = letter_json(&d);
                v["to_masked"] = json!(r.to_masked);
                v["subject"] = json!(r.subject);
                v["text"] = json!(r.text);
                v["html"] = json!(r.html);
                v["sms"] = json!(r.sms);
                v["render_error"] = json!(r.render_error);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "key: {}\nto: {}\nattempts: {}\nerror: {}",
                    d.key, r.to_masked, d.attempts, d.error
                );
                if r.render_error.is_empty() {
                    println!(
                        "subject: {}\n--- text ---\n{}\n--- sms ---\n{}",
                        r.subject, r.text, r.sms
                    );
                } else {
                    println!("does not render now: {}", r.render_error);
                }
            }
        }
        DlqCommand::Replay { key, .. } => {
            let r = client
                .replay_dead_letter(pb::ReplayNotifyDeadLetterRequest {
                    key: key.clone(),
                    idempotency_key: String::new(),
                })
                .await?
                .into_inner();
            if r.replayed {
                println!("{key}: replayed; it is sent now");
            } else {
                bail!("{key} is not on the dead-letter list");
            }
        }
    }
    Ok(())
}

fn letter_json(d: &pb::NotifyDeadLetter) -> Value {
    json!({
        "key": d.key, "order_id": d.order_id, "kind": d.kind, "channel": d.channel,
        "attempts": d.attempts, "error": d.error, "dead_at_ms": d.dead_at_ms, "locale": d.locale,
    })
}
