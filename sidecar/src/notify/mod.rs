//! Customer notifications: SMS and email driven by the engine's event stream.
//!
//! ```text
//! engine event stream --(named cursor "notify")--> plan.rs: events -> outbox entries
//!        ^                                                |  (messages, skips, reminders)
//!        |  ack_consumer(lsn) only after                  v
//!        +---------- the entries are fsynced ----- outbox.rs + journal.rs (data dir)
//!                                                         |  due messages
//!                                                         v
//!                         render.rs (minijinja, locale fallback, SMS segments, QR PNG)
//!                                                         |
//!                                  deliver.rs: SMTP (lettre) | SMS HTTP API (reqwest)
//!                                  rate limits, retry with backoff + jitter, dead letters
//! ```
//!
//! - [`config`]: `[notify]`. [`journal`]: crc32c-framed, fsynced append-only file.
//!   [`outbox`]: the messages owed and their state (pending, sent, skipped, dead).
//!   [`plan`]: what each event causes (and the reminder's due time, outside quiet hours,
//!   in the store's zone). [`render`]: templates. [`deliver`]: the providers.
//!   [`runner`]: the loop inside `pickline serve`. [`service`]: the gRPC
//!   `NotifyService` (dead letters). [`cli`]: `pickline notify preview|dlq`.
//!   (`pickline bench notify` is a module of the binary, `src/bench/notify.rs`, that
//!   drives a [`Notifier`] against an SMTP sink.)
//!
//! # Guarantee
//!
//! Exactly one message per (order, kind, channel) in normal operation; across a crash at
//! most a duplicate, never a loss:
//!
//! 1. The entries an event causes are written to the journal and fsynced, together with
//!    the event's LSN (`Planned`), *before* the engine cursor is acknowledged. A crash
//!    before the fsync re-reads the event (the cursor did not move); a crash after it
//!    finds the LSN already planned and does not plan it again; the key deduplicates
//!    either way.
//! 2. A message is marked sent only after the provider accepted it. A crash between the
//!    provider's acceptance and that journal record sends it again after the restart:
//!    the one duplicate. The provider gets the deduplication key (email `Message-ID`,
//!    SMS `Idempotency-Key` header) to drop it where it can.
//! 3. A reminder is an outbox message with a future due time, so a restart neither skips
//!    it (it is still pending) nor repeats it (a sent key is never sent again).
//!
//! Architecture invariant: customer email addresses and phone numbers are never logged;
//! logs name the key (`O1-7/ready/email`).

pub mod cli;
pub mod config;
pub mod deliver;
pub mod journal;
pub mod outbox;
pub mod plan;
pub mod render;
pub mod runner;
pub mod service;

use std::{fmt, str::FromStr, sync::Arc};

use pickline_engine::OrderId;
use serde::{Deserialize, Serialize};

pub use config::NotifyConfig;
pub use runner::{Notifier, NotifyHandle};

/// What a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Order confirmed: estimated ready time, store instructions.
    Confirmation,
    /// Ready for pickup: the code and its QR.
    Ready,
    /// The hold (pickup window) ends soon.
    Reminder,
    /// The hold expired before checkout confirmed it.
    Expired,
    /// The customer did not come.
    NoShow,
    /// Cancelled.
    Cancelled,
    /// Collected: the e-receipt.
    Receipt,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::Confirmation,
        Kind::Ready,
        Kind::Reminder,
        Kind::Expired,
        Kind::NoShow,
        Kind::Cancelled,
        Kind::Receipt,
    ];

    /// Its name in keys, templates and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Confirmation => "confirmation",
            Kind::Ready => "ready",
            Kind::Reminder => "reminder",
            Kind::Expired => "expired",
            Kind::NoShow => "no_show",
            Kind::Cancelled => "cancelled",
            Kind::Receipt => "receipt",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// SMTP.
    Email,
    /// The SMS provider's HTTP API.
    Sms,
}

impl Channel {
    /// Its name in keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// The deduplication key: one message per (order, kind, channel).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgKey {
    /// The order (its 64-bit id).
    pub order: u64,
    /// What about.
    pub kind: Kind,
    /// How.
    pub channel: Channel,
}

impl MsgKey {
    /// The key of `order`'s `kind` message by `channel`.
    pub fn new(order: OrderId, kind: Kind, channel: Channel) -> MsgKey {
        MsgKey {
            order: order.0,
            kind,
            channel,
        }
    }

    /// The order.
    pub fn order_id(&self) -> OrderId {
        OrderId(self.order)
    }
}

impl fmt::Display for MsgKey {
    /// `O1-7/ready/email`: what logs, the CLI and providers see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.order_id(),
            self.kind.as_str(),
            self.channel.as_str()
        )
    }
}

impl FromStr for MsgKey {
    type Err = String;
    fn from_str(s: &str) -> Result<MsgKey, String> {
        let mut parts = s.split('/');
        let (Some(order), Some(kind), Some(channel), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{s:?} is not ORDER/KIND/CHANNEL (O1-7/ready/email)"
            ));
        };
        let order = OrderId::parse(order).ok_or_else(|| format!("{order:?} is not an order id"))?;
        let channel = match channel {
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            other => return Err(format!("unknown channel {other:?}: expected email or sms")),
        };
        Ok(MsgKey::new(order, kind.parse()?, channel))
    }
}

/// The notifier's source of time. The engine never reads a clock, and neither does the
/// notifier's logic: due times, backoff and quiet hours are decided against this clock,
/// which tests set by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Unix milliseconds now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock at `now_ms`.
    pub fn new(now_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(now_ms)))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickline_engine::{HoldId, StoreId};

    #[test]
    fn keys_print_and_parse() {
        let order = OrderId::from_hold(HoldId::new(StoreId(3), 42));
        for kind in Kind::ALL {
            for channel in [Channel::Email, Channel::Sms] {
                let k = MsgKey::new(order, kind, channel);
                assert_eq!(k.to_string().parse::<MsgKey>().unwrap(), k);
            }
        }
        assert_eq!(
            MsgKey::new(order, Kind::NoShow, Channel::Sms).to_string(),
            "O3-42/no_show/sms"
        );
        assert!("O3-42/ready".parse::<MsgKey>().is_err());
        assert!("O3-42/ready/fax".parse::<MsgKey>().is_err());
    }
}
