//! The providers: email over SMTP (lettre) and SMS over a Twilio-style HTTP API
//! (reqwest), each behind a rate limit, with every failure classified as worth a retry
//! or not.
//!
//! | provider answer | outcome |
//! |---|---|
//! | SMTP 2xx / HTTP 2xx | sent |
//! | SMTP 4xx, connection or TLS failure, timeout | retry |
//! | SMTP 5xx (permanent), an address that does not parse | give up (dead letter) |
//! | HTTP 429, 5xx, connection failure, timeout | retry |
//! | HTTP 4xx with a provider error code in [`SMS_RETRY_CODES`] | retry |
//! | any other HTTP 4xx (bad number, unsubscribed, bad credentials) | give up |
//!
//! Each attempt carries the deduplication key: the email's `Message-ID` is derived from
//! it (the same on every attempt), the SMS request has an `Idempotency-Key` header.

use std::{sync::Arc, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header},
    transport::smtp::{PoolConfig, authentication::Credentials},
};
use tokio::sync::Mutex;

use super::{
    MsgKey,
    config::{EmailConfig, SmsConfig, SmtpTls},
    render::Rendered,
};

/// Provider error codes (Twilio's numbering) that mean "try again later".
pub const SMS_RETRY_CODES: &[u32] = &[20429, 20500, 20503, 30001, 30002];

/// A failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Worth another attempt.
    Retry(String),
    /// Will not succeed as it is: dead-letter it.
    GiveUp(String),
}

impl SendError {
    /// The provider's answer.
    pub fn message(&self) -> &str {
        match self {
            SendError::Retry(m) | SendError::GiveUp(m) => m,
        }
    }
}

/// Spaces sends at most `rate` per second (a token bucket of one: the next send may start
/// `1/rate` after the previous one's slot).
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// At most `rate_per_s` (at least 1) per second.
    pub fn new(rate_per_s: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / rate_per_s.max(1),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this send's slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The retry delay after `attempt` failed attempts: `base * 2^(attempt-1)`, capped at
/// `max`, with full jitter (uniform in `[delay/2, delay]`, so retries of many messages
/// spread out but none comes back at once).
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter: u64) -> u64 {
    let exp = attempt.saturating_sub(1).min(40);
    let delay = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let half = delay / 2;
    half + jitter % (delay - half + 1)
}

/// The `Message-ID` of a key: the same on every attempt, so a receiving system can drop a
/// duplicate.
pub fn message_id(key: &MsgKey) -> String {
    format!(
        "<{}.{}.{}@pickline.invalid>",
        key.order,
        key.kind.as_str(),
        key.channel.as_str()
    )
}

/// Email over SMTP.
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pacer: Arc<Pacer>,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender").finish_non_exhaustive()
    }
}

impl EmailSender {
    /// A sender for `[notify.email]` (validated), with up to `pool_size` connections.
    pub fn new(c: &EmailConfig, pool_size: u32) -> Result<EmailSender, String> {
        let builder = match c.tls {
            SmtpTls::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| format!("notify.email: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| format!("notify.email: {e}"))?,
        };
        let mut builder = builder
            .port(c.port)
            .timeout(Some(Duration::from_millis(c.timeout_ms)))
            // One connection per send in flight, reused across messages.
            .pool_config(PoolConfig::new().max_size(pool_size));
        if let (false, Some(pw)) = (c.username.is_empty(), &c.password) {
            builder =
                builder.credentials(Credentials::new(c.username.clone(), pw.expose().to_owned()));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from: c
                .from
                .parse()
                .map_err(|e| format!("notify.email.from: {e}"))?,
            pacer: Arc::new(Pacer::new(c.rate_per_s)),
        })
    }

    /// Builds the MIME message: text and HTML alternatives, the QR code inline as
    /// `cid:qr` when the order has one.
    pub fn build(
        &self,
        key: &MsgKey,
        to: &str,
        r: &Rendered,
        qr_png: Option<Vec<u8>>,
    ) -> Result<lettre::Message, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::GiveUp(format!("recipient is not a mailbox: {e}")))?;
        let text = SinglePart::plain(r.text.clone());
        let html = SinglePart::html(r.html.clone());
        let body = match qr_png {
            Some(png) => MultiPart::alternative().singlepart(text).multipart(
                MultiPart::related().singlepart(html).singlepart(
                    Attachment::new_inline("qr".to_owned())
                        .body(png, header::ContentType::parse("image/png").expect("valid")),
                ),
            ),
            None => MultiPart::alternative().singlepart(text).singlepart(html),
        };
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(r.subject.clone())
            .message_id(Some(message_id(key)))
            .multipart(body)
            .map_err(|e| SendError::GiveUp(format!("message does not build: {e}")))
    }

    /// Sends one message (after its rate-limit slot).
    pub async fn send(&self, msg: lettre::Message) -> Result<(), SendError> {
        self.pacer.acquire().await;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::GiveUp(format!("smtp: {e}"))),
            Err(e) => Err(SendError::Retry(format!("smtp: {e}"))),
        }
    }
}

/// SMS over the provider's HTTP API.
#[derive(Clone)]
pub struct SmsSender {
    client: reqwest::Client,
    url: String,
    account: String,
    token: String,
    from: String,
    pacer: Arc<Pacer>,
}

impl std::fmt::Debug for SmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSender")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SmsSender {
    /// A sender for `[notify.sms]` (validated).
    pub fn new(c: &SmsConfig) -> Result<SmsSender, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(c.timeout_ms))
            .build()
            .map_err(|e| format!("notify.sms: {e}"))?;
        Ok(SmsSender {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                c.base_url.trim_end_matches('/'),
                c.account
            ),
            account: c.account.clone(),
            token: c
                .token
                .as_ref()
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
            from: c.from.clone(),
            pacer: Arc::new(Pacer::new(c.rate_per_s)),
        })
    }

    /// Sends one SMS (after its rate-limit slot).
    pub async fn send(&self, key: &MsgKey, to: &str, body: &str) -> Result<(), SendError> {
        self.pacer.acquire().await;
        let resp = self
            .client
            .post(&self.url)
            .basic_auth(&self.account, Some(&self.token))
            .header("Idempotency-Key", key.to_string())
            .form(&[("To", to), ("From", self.from.as_str()), ("Body", body)])
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("sms: {}", e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(classify_sms(status.as_u16(), &text))
    }
}

/// Maps an unsuccessful provider answer to retry or give up (see the module table).
pub fn classify_sms(status: u16, body: &str) -> SendError {
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_u64()))
        .map(|c| c as u32);
    let what = match code {
        Some(c) => format!("sms: HTTP {status}, provider code {c}"),
        None => format!("sms: HTTP {status}"),
    };
    if status == 429 || status >= 500 || code.is_some_and(|c| SMS_RETRY_CODES.contains(&c)) {
        SendError::Retry(what)
    } else {
        SendError::GiveUp(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, u64::MAX), 500 + u64::MAX % 501);
        for j in [0, 7, 1234, u64::MAX] {
            let d = backoff_ms(3, 1000, 60_000, j);
            assert!((2000..=4000).contains(&d), "{d}");
            let d = backoff_ms(30, 1000, 60_000, j);
            assert!((30_000..=60_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn provider_answers_map_to_retry_or_give_up() {
        assert!(matches!(classify_sms(503, ""), SendError::Retry(_)));
        assert!(matches!(classify_sms(429, ""), SendError::Retry(_)));
        assert!(matches!(
            classify_sms(400, r#"{"code": 21211, "message": "invalid To"}"#),
            SendError::GiveUp(_)
        ));
        assert!(matches!(
            classify_sms(400, r#"{"code": 20429}"#),
            SendError::Retry(_)
        ));
        assert!(matches!(classify_sms(401, "nope"), SendError::GiveUp(_)));
    }
}
