//! `[notify]`: the notifier's switches, schedule, retry policy and providers.
//!
//! Disabled by default: a server without a mail relay or an SMS account configured sends
//! nothing. Secrets (SMTP password, SMS auth token) are read from the file but never
//! serialized and never shown by `Debug`.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Largest accepted `rate_per_s` of a provider.
pub const RATE_PER_S_MAX: u32 = 100_000;
/// Largest accepted `max_attempts`.
pub const MAX_ATTEMPTS_MAX: u32 = 100;
/// Largest accepted `concurrency`.
pub const CONCURRENCY_MAX: usize = 1_024;
/// Largest accepted `reminder_lead_ms` (2 days).
pub const REMINDER_LEAD_MS_MAX: u64 = 2 * 86_400_000;
/// Largest accepted `sms.segments_max` (a concatenated SMS of more parts is unusual and
/// costs as many messages).
pub const SMS_SEGMENTS_MAX: u32 = 10;

/// `[notify]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Run the notifier inside `pickline serve`.
    pub enabled: bool,
    /// Name of the notifier's durable cursor on the engine's event stream.
    pub consumer: String,
    /// Operator templates, `<dir>/<locale>/<kind>.j2`, tried before the built-in ones
    /// (see [`super::render`]). Empty: built-in templates only.
    pub template_dir: PathBuf,
    /// Locale of orders that name none, and the last step of every fallback chain.
    pub default_locale: String,
    /// How long before the hold (or pickup window) ends the reminder is sent, ms.
    pub reminder_lead_ms: u64,
    /// Start of the quiet hours, store-local `HH:MM`: no reminder is sent from then ...
    pub quiet_start: String,
    /// ... until this store-local `HH:MM` (the next day when it is not after the start).
    pub quiet_end: String,
    /// Attempts per message before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, ms; doubled per attempt, with full jitter.
    pub backoff_base_ms: u64,
    /// Longest retry delay, ms.
    pub backoff_max_ms: u64,
    /// How often the notifier looks for new events and due messages when idle, ms.
    pub poll_interval_ms: u64,
    /// Sends in flight at once (over all providers).
    pub concurrency: usize,
    /// Rewrite the outbox journal when it grows past this many bytes.
    pub journal_compact_bytes: u64,
    /// `[notify.email]`
    pub email: EmailConfig,
    /// `[notify.sms]`
    pub sms: SmsConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: false,
            consumer: "notify".to_owned(),
            template_dir: PathBuf::new(),
            default_locale: "en".to_owned(),
            reminder_lead_ms: 3_600_000,
            quiet_start: "21:00".to_owned(),
            quiet_end: "08:00".to_owned(),
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            poll_interval_ms: 20,
            concurrency: 32,
            journal_compact_bytes: 64 << 20,
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain TCP, upgraded with STARTTLS (required: a server that does not offer it is
    /// an error, never a silent plaintext fallback).
    #[default]
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: a relay on the same host or a test sink only.
    Plain,
}

/// `[notify.email]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Send email.
    pub enabled: bool,
    /// SMTP relay host name (also the TLS server name).
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// `starttls`, `tls` or `plain`.
    pub tls: SmtpTls,
    /// SMTP AUTH user name; empty: no authentication.
    pub username: String,
    /// SMTP AUTH password. Never serialized.
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// The From mailbox, e.g. `Pickline <pickup@example.com>`.
    pub from: String,
    /// Messages per second at most.
    pub rate_per_s: u32,
    /// Time limit of one SMTP delivery, ms.
    pub timeout_ms: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            enabled: true,
            host: "localhost".to_owned(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: None,
            from: "Pickline <pickup@example.com>".to_owned(),
            rate_per_s: 100,
            timeout_ms: 10_000,
        }
    }
}

/// `[notify.sms]`: a Twilio-style API (`POST {base_url}/2010-04-01/Accounts/{account}/Messages.json`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Send SMS.
    pub enabled: bool,
    /// The provider's API root.
    pub base_url: String,
    /// Account id (the HTTP basic-auth user).
    pub account: String,
    /// Auth token (the basic-auth password). Never serialized.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// Sender number or id.
    pub from: String,
    /// Messages per second at most.
    pub rate_per_s: u32,
    /// Longest SMS, in segments (GSM-7: 160 characters alone, 153 per part; UCS-2: 70
    /// and 67); longer texts are cut to fit.
    pub segments_max: u32,
    /// Time limit of one API call, ms.
    pub timeout_ms: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            enabled: false,
            base_url: "https://api.twilio.com".to_owned(),
            account: String::new(),
            token: None,
            from: String::new(),
            rate_per_s: 10,
            segments_max: 3,
            timeout_ms: 10_000,
        }
    }
}

/// A credential: shown as `<redacted>`, never serialized.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The credential itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A store-local wall-clock time of day, minutes since midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl NotifyConfig {
    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// Checks every field; `Err((key, reason))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((format!("notify.{k}"), r));
        if self.consumer.is_empty()
            || self.consumer.len() > pickline_engine::stream::CONSUMER_NAME_LEN_MAX
        {
            return bad("consumer", "must be 1 to 64 bytes".into());
        }
        if self.default_locale.is_empty() || !valid_locale(&self.default_locale) {
            return bad("default_locale", "must be a BCP 47 tag such as en".into());
        }
        if self.reminder_lead_ms > REMINDER_LEAD_MS_MAX {
            return bad(
                "reminder_lead_ms",
                format!("is above {REMINDER_LEAD_MS_MAX}"),
            );
        }
        for (k, v) in [
            ("quiet_start", &self.quiet_start),
            ("quiet_end", &self.quiet_end),
        ] {
            if parse_hhmm(v).is_none() {
                return bad(k, format!("{v:?} is not HH:MM"));
            }
        }
        if !(1..=MAX_ATTEMPTS_MAX).contains(&self.max_attempts) {
            return bad(
                "max_attempts",
                format!("{} is outside 1..={MAX_ATTEMPTS_MAX}", self.max_attempts),
            );
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            return bad(
                "backoff_base_ms",
                "must be at least 1 and at most backoff_max_ms".into(),
            );
        }
        if !(1..=60_000).contains(&self.poll_interval_ms) {
            return bad("poll_interval_ms", "is outside 1..=60000".into());
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return bad(
                "concurrency",
                format!("{} is outside 1..={CONCURRENCY_MAX}", self.concurrency),
            );
        }
        if self.journal_compact_bytes < 1 << 16 {
            return bad("journal_compact_bytes", "must be at least 65536".into());
        }
        let e = &self.email;
        if e.enabled {
            if e.host.is_empty() {
                return bad("email.host", "must not be empty".into());
            }
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                return bad("email.from", format!("{:?} is not a mailbox", e.from));
            }
            if !(1..=RATE_PER_S_MAX).contains(&e.rate_per_s) {
                return bad(
                    "email.rate_per_s",
                    format!("is outside 1..={RATE_PER_S_MAX}"),
                );
            }
            if !e.username.is_empty() && e.password.is_none() {
                return bad("email.password", "is required with a username".into());
            }
            if e.timeout_ms == 0 {
                return bad("email.timeout_ms", "must be at least 1".into());
            }
        }
        let s = &self.sms;
        if s.enabled {
            if !(s.base_url.starts_with("https://") || s.base_url.starts_with("http://")) {
                return bad("sms.base_url", "must be an http(s) URL".into());
            }
            if s.account.is_empty() || s.token.is_none() || s.from.is_empty() {
                return bad(
                    "sms.account",
                    "account, token and from are required to send SMS".into(),
                );
            }
            if !(1..=RATE_PER_S_MAX).contains(&s.rate_per_s) {
                return bad("sms.rate_per_s", format!("is outside 1..={RATE_PER_S_MAX}"));
            }
            if !(1..=SMS_SEGMENTS_MAX).contains(&s.segments_max) {
                return bad(
                    "sms.segments_max",
                    format!("is outside 1..={SMS_SEGMENTS_MAX}"),
                );
            }
            if s.timeout_ms == 0 {
                return bad("sms.timeout_ms", "must be at least 1".into());
            }
        }
        if self.enabled && !e.enabled && !s.enabled {
            return bad("enabled", "needs notify.email or notify.sms enabled".into());
        }
        Ok(())
    }
}

/// Whether `tag` looks like a BCP 47 tag: ASCII letters and digits in subtags of 1 to 8
/// separated by `-` (what the fallback chain and template paths may contain).
pub fn valid_locale(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= pickline_engine::order::LOCALE_LEN_MAX
        && tag
            .split(['-', '_'])
            .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_hide_secrets() {
        let mut c = NotifyConfig::default();
        c.validate().unwrap();
        c.sms.token = Some(Secret::new("very-secret"));
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(!toml::to_string(&c).unwrap().contains("very-secret"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = NotifyConfig {
            quiet_start: "25:00".into(),
            ..NotifyConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "notify.quiet_start");
        c.quiet_start = "21:00".into();
        c.sms.enabled = true;
        assert_eq!(c.validate().unwrap_err().0, "notify.sms.account");
        assert_eq!(parse_hhmm("08:30"), Some(510));
        assert_eq!(parse_hhmm("8:30"), None);
        assert!(valid_locale("de-DE") && !valid_locale("../etc"));
    }
}
