//! `[intake]`: per-channel settings and validation rules, per channel and per account.
//!
//! Rules are layered like the rest of the configuration: `[intake.rules]` applies to every
//! channel; `[intake.<channel>.rules]` overrides it key by key for one channel, and
//! `[intake.<channel>.accounts."<account>"]` for one account of that channel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Channel;

/// Largest accepted `lines_max` and `line_qty_max`.
pub const RULE_LIMIT_MAX: u32 = 1_000_000;

/// `[intake]`
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// `[intake.webhooks]`: the HTTP webhook endpoints.
    pub webhooks: WebhookConfig,
    /// `[intake.flow]`: the journal, the bounded queue, retries.
    pub flow: FlowConfig,
    /// `[intake.nats]`: the NATS JetStream source.
    pub nats: NatsConfig,
    /// Rules of every channel and account, unless overridden.
    pub rules: Rules,
    /// `[intake.shopify]`
    pub shopify: ChannelConfig,
    /// `[intake.woocommerce]`
    pub woocommerce: ChannelConfig,
    /// `[intake.bigcommerce]`
    pub bigcommerce: ChannelConfig,
    /// `[intake.magento]`
    pub magento: ChannelConfig,
    /// `[intake.commercetools]`
    pub commercetools: ChannelConfig,
}

/// `[intake.<channel>]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name of the order attribute / metadata entry / custom field that carries a hold
    /// made at checkout (Shopify `note_attributes`, WooCommerce `meta_data`, commercetools
    /// `custom.fields`).
    pub hold_ref_key: String,
    /// Platform location (id, code or name, as the adapter reports it) to Pickline store
    /// id. Empty: the location is the store id. Not empty: a location it does not list is
    /// refused (`unknown_pickup_location`), never guessed.
    pub store_map: BTreeMap<String, String>,
    /// Rule overrides for this channel.
    pub rules: RulesOverride,
    /// Rule overrides per account (shop domain, site URL, store hash, ...).
    pub accounts: BTreeMap<String, RulesOverride>,
    /// The secret the platform signs webhooks with (see [`super::signature`]). Without
    /// one, `POST /intake/<channel>` answers 404: no unsigned order is ever accepted.
    /// Never serialized.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<WebhookSecret>,
    /// `[intake.<channel>.enrich]`: fetch the documents an order's payload lacks from the
    /// platform's API (Shopify: the FulfillmentOrders that say which lines are picked up
    /// where; BigCommerce: the order a thin webhook names, its products and
    /// consignments). Absent: nothing is fetched.
    pub enrich: Option<EnrichConfig>,
}

/// Shopify's Admin API, the default `base_url` of `[intake.shopify.enrich]`.
pub const SHOPIFY_API_URL: &str = "https://{account}/admin/api/2025-01";

/// BigCommerce's API, the default `base_url` of `[intake.bigcommerce.enrich]`.
pub const BIGCOMMERCE_API_URL: &str = "https://api.bigcommerce.com";

/// `[intake.<channel>.enrich]`: the platform API intake reads related documents from
/// (see [`super::enrich`]; Shopify and BigCommerce).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// The API's base URL. Shopify: `{account}` is replaced by the delivery's account (the
    /// shop domain); absent: [`SHOPIFY_API_URL`]. BigCommerce: requests go to
    /// `{base_url}/stores/{store_hash}/v2/orders/{id}`; absent: [`BIGCOMMERCE_API_URL`].
    pub base_url: Option<String>,
    /// The API access token (Shopify: `X-Shopify-Access-Token`; BigCommerce, required:
    /// `X-Auth-Token`). Never serialized.
    #[serde(skip_serializing)]
    pub access_token: Option<WebhookSecret>,
    /// BigCommerce only: the store the token belongs to, for deliveries that name none
    /// (a webhook's `producer`, `stores/{hash}`, names its own); a webhook of another
    /// store is refused. Absent: the webhook's `producer`.
    pub store_hash: Option<String>,
    /// One request's time limit, ms (1..=60000).
    pub timeout_ms: u64,
    /// Further attempts after a transport error, 429 or 5xx (0..=10).
    pub retries: u32,
    /// Delay before the first further attempt, ms (1..=10000); doubles per attempt.
    pub retry_base_ms: u64,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            base_url: None,
            access_token: None,
            store_hash: None,
            timeout_ms: 5_000,
            retries: 2,
            retry_base_ms: 100,
        }
    }
}

impl EnrichConfig {
    /// The base URL requests of `channel` start with.
    pub fn base_url(&self, channel: Channel) -> &str {
        match (&self.base_url, channel) {
            (Some(url), _) => url,
            (None, Channel::Bigcommerce) => BIGCOMMERCE_API_URL,
            (None, _) => SHOPIFY_API_URL,
        }
    }

    /// Checks the settings of `channel`'s enrichment; the error is (key, reason).
    fn validate(&self, channel: Channel) -> Result<(), (String, String)> {
        let name = channel.as_str();
        let key = |k: &str| format!("intake.{name}.enrich.{k}");
        if !matches!(channel, Channel::Shopify | Channel::Bigcommerce) {
            return Err((
                format!("intake.{name}.enrich"),
                "only shopify and bigcommerce fetch related documents".to_owned(),
            ));
        }
        for (k, v, lo, hi) in [
            ("timeout_ms", self.timeout_ms, 1, 60_000),
            ("retries", u64::from(self.retries), 0, 10),
            ("retry_base_ms", self.retry_base_ms, 1, 10_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err((key(k), format!("{v} is outside {lo}..={hi}")));
            }
        }
        let base = self.base_url(channel);
        if channel == Channel::Bigcommerce && base.contains("{account}") {
            return Err((
                key("base_url"),
                format!(
                    "{base:?} takes no {{account}}: requests go to \
                     {{base_url}}/stores/<store hash>/v2/orders/<id>"
                ),
            ));
        }
        match reqwest::Url::parse(&base.replace("{account}", "shop.example")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err((key("base_url"), format!("{base:?} is not an http(s) URL")));
            }
        }
        match (&self.store_hash, channel) {
            (Some(_), Channel::Shopify) => {
                return Err((
                    key("store_hash"),
                    "only bigcommerce has one (Shopify's account is the shop domain)".to_owned(),
                ));
            }
            (Some(h), _) if !super::enrich::store_hash_ok(h) => {
                return Err((
                    key("store_hash"),
                    format!("{h:?} must be 1..=64 ASCII letters, digits, '-' or '_'"),
                ));
            }
            _ => {}
        }
        match (&self.access_token, channel) {
            (Some(t), _) if t.0.is_empty() => {
                Err((key("access_token"), "must not be empty".to_owned()))
            }
            (None, Channel::Bigcommerce) => Err((
                key("access_token"),
                "required: the API account's token (sent as X-Auth-Token)".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            webhook_secret: None,
            enrich: None,
            hold_ref_key: "pickline_hold_id".to_owned(),
            store_map: BTreeMap::new(),
            rules: RulesOverride::default(),
            accounts: BTreeMap::new(),
        }
    }
}

/// Largest accepted `webhooks.body_bytes_max`: what the intake journal keeps in one record
/// (the platforms' own bodies stay far below).
pub const WEBHOOK_BODY_BYTES_LIMIT: usize = super::journal::BODY_BYTES_MAX;

/// `[intake.flow]`: the one flow every source goes through (see [`super::flow`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Entries taken and not yet placed (waiting, being placed, backing off) before new
    /// deliveries are refused with retry-later (1..=1000000).
    pub queue_len_max: usize,
    /// Share of the queue unpaid orders may use, percent (1..=100); paid ones may use it
    /// all.
    pub unpaid_share_pct: u8,
    /// Placements running at once (1..=1024).
    pub workers: usize,
    /// How long a sender waits for its order to be placed before it is answered `queued`
    /// (durable either way), ms (0..=60000).
    pub answer_wait_ms: u64,
    /// First retry delay after a failure that may pass, ms (1..=60000); doubles per
    /// attempt, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay, ms (retry_base_ms..=3600000).
    pub retry_max_ms: u64,
    /// Attempts before an entry is dead-lettered as `retries_exhausted` (1..=1000).
    pub attempts_max: u32,
    /// Journal bytes written since its last snapshot that trigger the next one.
    pub checkpoint_bytes: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            queue_len_max: 4096,
            unpaid_share_pct: 75,
            workers: 64,
            answer_wait_ms: 2000,
            retry_base_ms: 200,
            retry_max_ms: 60_000,
            attempts_max: 50,
            checkpoint_bytes: 64 << 20,
        }
    }
}

/// `[intake.nats]`: orders from NATS JetStream subjects `<subject_prefix>.<channel>`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Consume from NATS.
    pub enabled: bool,
    /// Server URL.
    pub url: String,
    /// The stream (created with subjects `<subject_prefix>.>` when absent).
    pub stream: String,
    /// Subject prefix; a message on `<prefix>.<channel>` is an order of that channel.
    pub subject_prefix: String,
    /// The durable pull consumer's name.
    pub consumer: String,
    /// Messages fetched per pull (1..=1024).
    pub batch: usize,
    /// Delay of a nak when intake is full or unavailable, ms (1..=3600000).
    pub nak_delay_ms: u64,
    /// How long the server waits for an ack before it redelivers, ms (1000..=3600000).
    pub ack_wait_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            enabled: false,
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "PICKLINE_INTAKE".to_owned(),
            subject_prefix: "pickline.intake".to_owned(),
            consumer: "pickline-intake".to_owned(),
            batch: 64,
            nak_delay_ms: 2000,
            ack_wait_ms: 30_000,
        }
    }
}

/// `[intake.webhooks]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Mount `POST /intake/<channel>` on the HTTP listener. Each channel still answers
    /// 404 until its `webhook_secret` is set.
    pub enabled: bool,
    /// Largest accepted body; a larger one is answered 413.
    pub body_bytes_max: usize,
    /// `Retry-After` of a 503 (engine recovering, log failure), seconds.
    pub retry_after_s: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: true,
            body_bytes_max: WEBHOOK_BODY_BYTES_LIMIT,
            retry_after_s: 5,
        }
    }
}

/// A webhook signing secret. The value never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A secret from its configured text.
    pub fn new(secret: impl Into<String>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }

    /// The key bytes, for [`super::signature::verify`].
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// What a rule does when it trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the order with the rule's reason.
    Reject,
    /// Accept the order and report the reason.
    Warn,
    /// Do not check (test-order policy "accept").
    #[serde(alias = "accept")]
    Off,
}

/// A field `required_fields` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequiredField {
    /// The customer's name.
    CustomerName,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// The customer-facing order number.
    OrderNumber,
    /// The grand total.
    Total,
    /// A checkout hold reference.
    HoldRef,
}

/// The validation rules, with their limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// An order without pickup lines.
    pub not_pickup: Action,
    /// Test-order policy: reject, warn or accept (= off).
    pub test_order: Action,
    /// Neither email nor phone.
    pub contact: Action,
    /// Currency not in `currencies`.
    pub currency: Action,
    /// Allowed currencies (ISO 4217); empty: any.
    pub currencies: Vec<String>,
    /// Pickup store not in `stores`.
    pub store: Action,
    /// Allowed Pickline stores; empty: any.
    pub stores: Vec<String>,
    /// More than `lines_max` pickup lines.
    pub lines: Action,
    /// Most pickup lines in one order.
    pub lines_max: u32,
    /// A pickup line above `line_qty_max` units.
    pub line_qty: Action,
    /// Most units in one line.
    pub line_qty_max: u32,
    /// A field of `required_fields` absent.
    pub required: Action,
    /// Fields every order must have.
    pub required_fields: Vec<RequiredField>,
    /// A SKU taken from a variant id because the platform's SKU was empty.
    pub sku_fallback: Action,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            not_pickup: Action::Reject,
            test_order: Action::Reject,
            contact: Action::Reject,
            currency: Action::Reject,
            currencies: Vec::new(),
            store: Action::Reject,
            stores: Vec::new(),
            lines: Action::Reject,
            lines_max: 100,
            line_qty: Action::Reject,
            line_qty_max: 100,
            required: Action::Reject,
            required_fields: Vec::new(),
            sku_fallback: Action::Warn,
        }
    }
}

/// [`Rules`] with every key optional: the keys given replace the inherited ones. Each
/// field means what the [`Rules`] field of the same name means.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesOverride {
    pub not_pickup: Option<Action>,
    pub test_order: Option<Action>,
    pub contact: Option<Action>,
    pub currency: Option<Action>,
    pub currencies: Option<Vec<String>>,
    pub store: Option<Action>,
    pub stores: Option<Vec<String>>,
    pub lines: Option<Action>,
    pub lines_max: Option<u32>,
    pub line_qty: Option<Action>,
    pub line_qty_max: Option<u32>,
    pub required: Option<Action>,
    pub required_fields: Option<Vec<RequiredField>>,
    pub sku_fallback: Option<Action>,
}

impl Rules {
    /// These rules with `o`'s keys replacing their own.
    pub fn overlay(&self, o: &RulesOverride) -> Rules {
        fn pick<T: Clone>(base: &T, o: &Option<T>) -> T {
            o.as_ref().unwrap_or(base).clone()
        }
        Rules {
            not_pickup: pick(&self.not_pickup, &o.not_pickup),
            test_order: pick(&self.test_order, &o.test_order),
            contact: pick(&self.contact, &o.contact),
            currency: pick(&self.currency, &o.currency),
            currencies: pick(&self.currencies, &o.currencies),
            store: pick(&self.store, &o.store),
            stores: pick(&self.stores, &o.stores),
            lines: pick(&self.lines, &o.lines),
            lines_max: pick(&self.lines_max, &o.lines_max),
            line_qty: pick(&self.line_qty, &o.line_qty),
            line_qty_max: pick(&self.line_qty_max, &o.line_qty_max),
            required: pick(&self.required, &o.required),
            required_fields: pick(&self.required_fields, &o.required_fields),
            sku_fallback: pick(&self.sku_fallback, &o.sku_fallback),
        }
    }

    fn validate(&self, key: &str) -> Result<(), (String, String)> {
        for (name, v) in [
            ("lines_max", self.lines_max),
            ("line_qty_max", self.line_qty_max),
        ] {
            if !(1..=RULE_LIMIT_MAX).contains(&v) {
                return Err((
                    format!("{key}.{name}"),
                    format!("{v} is outside 1..={RULE_LIMIT_MAX}"),
                ));
            }
        }
        for (i, c) in self.currencies.iter().enumerate() {
            if iso_currency::Currency::from_code(c).is_none() {
                return Err((
                    format!("{key}.currencies[{i}]"),
                    format!("{c:?} is not an ISO 4217 code"),
                ));
            }
        }
        Ok(())
    }
}

impl IntakeConfig {
    /// The settings of one channel.
    pub fn channel(&self, channel: Channel) -> &ChannelConfig {
        match channel {
            Channel::Shopify => &self.shopify,
            Channel::Woocommerce => &self.woocommerce,
            Channel::Bigcommerce => &self.bigcommerce,
            Channel::Magento => &self.magento,
            Channel::Commercetools => &self.commercetools,
        }
    }

    /// The rules in force for one account of one channel.
    pub fn rules_for(&self, channel: Channel, account: &str) -> Rules {
        let c = self.channel(channel);
        let rules = self.rules.overlay(&c.rules);
        match c.accounts.get(account) {
            Some(o) => rules.overlay(o),
            None => rules,
        }
    }

    /// Checks every limit of every layer; the error is (key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.rules.validate("intake.rules")?;
        let w = &self.webhooks;
        if !(1..=WEBHOOK_BODY_BYTES_LIMIT).contains(&w.body_bytes_max) {
            return Err((
                "intake.webhooks.body_bytes_max".to_owned(),
                format!(
                    "{} is outside 1..={WEBHOOK_BODY_BYTES_LIMIT}",
                    w.body_bytes_max
                ),
            ));
        }
        if !(1..=3_600).contains(&w.retry_after_s) {
            return Err((
                "intake.webhooks.retry_after_s".to_owned(),
                format!("{} is outside 1..=3600", w.retry_after_s),
            ));
        }
        let f = &self.flow;
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err((
                    format!("intake.{key}"),
                    format!("{v} is outside {lo}..={hi}"),
                ))
            }
        };
        range("flow.queue_len_max", f.queue_len_max as u64, 1, 1_000_000)?;
        range(
            "flow.unpaid_share_pct",
            u64::from(f.unpaid_share_pct),
            1,
            100,
        )?;
        range("flow.workers", f.workers as u64, 1, 1024)?;
        range("flow.answer_wait_ms", f.answer_wait_ms, 0, 60_000)?;
        range("flow.retry_base_ms", f.retry_base_ms, 1, 60_000)?;
        range(
            "flow.retry_max_ms",
            f.retry_max_ms,
            f.retry_base_ms,
            3_600_000,
        )?;
        range("flow.attempts_max", u64::from(f.attempts_max), 1, 1000)?;
        range(
            "flow.checkpoint_bytes",
            f.checkpoint_bytes,
            1 << 20,
            1 << 40,
        )?;
        for channel in Channel::ALL {
            if let Some(e) = &self.channel(channel).enrich {
                e.validate(channel)?;
            }
        }
        let n = &self.nats;
        range("nats.batch", n.batch as u64, 1, 1024)?;
        range("nats.nak_delay_ms", n.nak_delay_ms, 1, 3_600_000)?;
        range("nats.ack_wait_ms", n.ack_wait_ms, 1000, 3_600_000)?;
        for (key, v) in [("nats.stream", &n.stream), ("nats.consumer", &n.consumer)] {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    format!("intake.{key}"),
                    format!("{v:?} must be 1+ ASCII letters, digits, '_' or '-'"),
                ));
            }
        }
        if n.subject_prefix.is_empty()
            || n.subject_prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err((
                "intake.nats.subject_prefix".to_owned(),
                format!("{:?} is not a literal NATS subject", n.subject_prefix),
            ));
        }
        for channel in Channel::ALL {
            let name = channel.as_str();
            let c = self.channel(channel);
            if c.webhook_secret.as_ref().is_some_and(|s| s.0.is_empty()) {
                return Err((
                    format!("intake.{name}.webhook_secret"),
                    "must not be empty (leave it out to turn the channel's webhook off)".to_owned(),
                ));
            }
            if c.hold_ref_key.trim().is_empty() {
                return Err((
                    format!("intake.{name}.hold_ref_key"),
                    "must not be empty".to_owned(),
                ));
            }
            let rules = self.rules.overlay(&c.rules);
            rules.validate(&format!("intake.{name}.rules"))?;
            for (account, o) in &c.accounts {
                rules
                    .overlay(o)
                    .validate(&format!("intake.{name}.accounts.{account:?}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secret_is_redacted_never_serialized_and_never_empty() {
        let mut c = IntakeConfig::default();
        c.shopify.webhook_secret = Some(WebhookSecret::new("s3cr3t-value"));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        let toml = toml::to_string(&c).unwrap_or_default();
        assert!(!toml.is_empty() && !toml.contains("s3cr3t-value"), "{toml}");
        let parsed: IntakeConfig =
            toml::from_str("[shopify]\nwebhook_secret = \"abc\"\n").unwrap_or_default();
        assert_eq!(
            parsed
                .shopify
                .webhook_secret
                .as_ref()
                .map(WebhookSecret::expose),
            Some(&b"abc"[..])
        );
        c.shopify.webhook_secret = Some(WebhookSecret::new(""));
        assert_eq!(
            c.validate().map_err(|(key, _)| key),
            Err("intake.shopify.webhook_secret".to_owned())
        );
    }

    #[test]
    fn webhook_limits_are_validated() {
        let mut c = IntakeConfig::default();
        assert!(c.webhooks.enabled);
        c.webhooks.body_bytes_max = 0;
        assert_eq!(
            c.validate().map_err(|(key, _)| key),
            Err("intake.webhooks.body_bytes_max".to_owned())
        );
        c.webhooks.body_bytes_max = 1024;
        c.webhooks.retry_after_s = 0;
        assert_eq!(
            c.validate().map_err(|(key, _)| key),
            Err("intake.webhooks.retry_after_s".to_owned())
        );
    }

    #[test]
    fn enrich_settings_are_validated_per_channel() {
        let key = |c: &IntakeConfig| c.validate().map_err(|(key, _)| key);
        let bc = |f: &dyn Fn(&mut EnrichConfig)| {
            let mut c = IntakeConfig::default();
            let mut e = EnrichConfig {
                access_token: Some(WebhookSecret::new("token")),
                ..EnrichConfig::default()
            };
            f(&mut e);
            c.bigcommerce.enrich = Some(e);
            c
        };
        let ok = bc(&|_| {});
        assert_eq!(key(&ok), Ok(()));
        let e = ok
            .bigcommerce
            .enrich
            .as_ref()
            .map(|e| e.base_url(Channel::Bigcommerce));
        assert_eq!(e, Some(BIGCOMMERCE_API_URL));
        assert_eq!(
            key(&bc(&|e| e.access_token = None)),
            Err("intake.bigcommerce.enrich.access_token".to_owned())
        );
        assert_eq!(
            key(&bc(&|e| e.store_hash = Some("a/../b".into()))),
            Err("intake.bigcommerce.enrich.store_hash".to_owned())
        );
        assert_eq!(key(&bc(&|e| e.store_hash = Some("abc123".into()))), Ok(()));
        assert_eq!(
            key(&bc(&|e| e.base_url = Some("https://{account}/api".into()))),
            Err("intake.bigcommerce.enrich.base_url".to_owned())
        );
        assert_eq!(
            key(&bc(&|e| e.retry_base_ms = 0)),
            Err("intake.bigcommerce.enrich.retry_base_ms".to_owned())
        );
        let mut shopify = IntakeConfig::default();
        shopify.shopify.enrich = Some(EnrichConfig::default());
        assert_eq!(key(&shopify), Ok(()));
        let e = shopify
            .shopify
            .enrich
            .as_ref()
            .map(|e| e.base_url(Channel::Shopify));
        assert_eq!(e, Some(SHOPIFY_API_URL));
        if let Some(e) = shopify.shopify.enrich.as_mut() {
            e.store_hash = Some("abc123".into());
        }
        assert_eq!(
            key(&shopify),
            Err("intake.shopify.enrich.store_hash".to_owned())
        );
        let mut magento = IntakeConfig::default();
        magento.magento.enrich = Some(EnrichConfig::default());
        assert_eq!(key(&magento), Err("intake.magento.enrich".to_owned()));
    }
}
