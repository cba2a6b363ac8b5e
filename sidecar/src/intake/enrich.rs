//! Enrichment: fetching the documents an order's payload lacks from the platform's API,
//! through one HTTP client (reqwest) with the channel's base URL, time limit and retries
//! (`[intake.<channel>.enrich]`). [`needed`] says, from the verdict on the payload alone,
//! whether a delivery wants them; [`Enricher::fetch`] gets them, and the flow evaluates the
//! delivery again with what it got ([`Fetched`]). The journal keeps the delivery's body
//! only: a restart or a dead-letter replay fetches again (the documents as they are then).
//!
//! - Shopify states native pickup only on an order's FulfillmentOrders
//!   (`delivery_method.method_type == "pick_up"` at `assigned_location_id`), never in the
//!   order webhook. When the order alone is "not pickup", `GET
//!   {base_url}/orders/{id}/fulfillment_orders.json` (header `X-Shopify-Access-Token`)
//!   fetches them as related documents ([`super::Payload::related`]).
//! - BigCommerce webhooks are thin (`store/order/*` carries `{"type": "order", "id": 250}`):
//!   when the adapter asks for enrichment (`needs_enrichment`), `GET
//!   {base_url}/stores/{store_hash}/v2/orders/{id}` fetches the order, which replaces the
//!   webhook as the body, then `.../products` (every page) and `.../consignments` as its
//!   related documents (header `X-Auth-Token`). The store hash is the webhook's `producer`
//!   (`stores/{hash}`), else the configured `store_hash`; a webhook of another store than
//!   the configured one is refused (the token is that store's). An Incomplete order
//!   (status 0: failed payments fire webhooks too) is fetched alone: the adapter reports it
//!   as nothing to do, and its products are not asked for.
//!
//! Failures: a transport error, 429 or 5xx is retried `retries` times (`retry_base_ms`
//! apart, doubling), then [`EnrichError::Unavailable`] (the sender delivers again later, or
//! the worker backs off); any other status is [`EnrichError::Refused`] (a wrong token, an
//! unknown order: dead-lettered as `enrichment_failed`, replayable once fixed), and so is
//! a document that is not what the platform documents. Of several requests, a refusal
//! decides over a failure for now: retrying would not get past it. No answer body is ever
//! logged or kept in a message (orders carry customers' emails and phones).

use std::time::Duration;

use serde::Deserialize;

use super::{Channel, ReasonCode, Verdict, config::EnrichConfig};

/// Largest related document read, bytes.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;

/// Products asked for per page (the most BigCommerce's v2 API gives).
pub const BIGCOMMERCE_PRODUCTS_PAGE_LEN: usize = 250;

/// Most product pages read for one BigCommerce order: a longer order is refused rather
/// than cut short.
pub const BIGCOMMERCE_PRODUCT_PAGES_MAX: usize = 8;

/// Why related documents could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    /// May pass: retry later.
    #[error("fetching related documents failed for now: {0}")]
    Unavailable(String),
    /// Will not pass by itself (configuration, unknown order).
    #[error("fetching related documents was refused: {0}")]
    Refused(String),
}

/// What [`Enricher::fetch`] got: the payload to evaluate the delivery as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The order document that replaces the delivery's body (BigCommerce: the order a thin
    /// webhook names); `None`: the body stays.
    pub order: Option<Vec<u8>>,
    /// The related documents (Shopify FulfillmentOrders; BigCommerce products and
    /// consignments), raw.
    pub related: Vec<Vec<u8>>,
}

/// Whether a delivery of `channel` whose payload alone got `verdict` wants related
/// documents: a Shopify order that is not a pickup order (its FulfillmentOrders may say
/// otherwise), a BigCommerce delivery the adapter refused as `needs_enrichment` (a thin
/// webhook, an order without its products).
pub fn needed(channel: Channel, verdict: &Verdict) -> bool {
    match (channel, verdict) {
        (Channel::Shopify, Verdict::Rejected { reasons, .. }) => {
            !reasons.is_empty() && reasons.iter().all(|r| r.code == ReasonCode::NotPickup)
        }
        (Channel::Shopify, Verdict::Accepted { order, .. }) => order.pickups().is_empty(),
        (Channel::Bigcommerce, Verdict::Rejected { reasons, .. }) => reasons
            .iter()
            .any(|r| r.code == ReasonCode::NeedsEnrichment),
        _ => false,
    }
}

/// The HTTP client of enrichment (cheap to clone).
#[derive(Clone, Debug)]
pub struct Enricher {
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct IdOnly {
    id: serde_json::Value,
}

/// A platform's numeric id as digits (it goes into a URL path).
fn digits(id: &serde_json::Value) -> Option<String> {
    let id = match id {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    };
    id.filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// The order id of a Shopify order body.
fn shopify_order_id(body: &[u8]) -> Result<String, EnrichError> {
    let parsed: IdOnly = serde_json::from_slice(body)
        .map_err(|e| EnrichError::Refused(format!("the order has no readable id: {e}")))?;
    digits(&parsed.id)
        .ok_or_else(|| EnrichError::Refused("the order id is not a Shopify id".to_owned()))
}

/// The account as it may appear in a URL's host or path.
fn url_safe_account(account: &str) -> Result<&str, EnrichError> {
    let ok = !account.is_empty()
        && account.len() <= 255
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(account)
    } else {
        Err(EnrichError::Refused(format!(
            "account {account:?} cannot name the platform's API"
        )))
    }
}

/// Whether `hash` can be a BigCommerce store hash in a URL path: 1..=64 ASCII letters,
/// digits, `-` or `_` (never `.`, so never a `..` segment).
pub fn store_hash_ok(hash: &str) -> bool {
    (1..=64).contains(&hash.len())
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// What a BigCommerce delivery names: a thin webhook (`data`, `producer`) or an order.
#[derive(Deserialize)]
struct BigcommerceRef {
    id: Option<serde_json::Value>,
    data: Option<BigcommerceData>,
    producer: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct BigcommerceData {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

/// The store hash and order id a BigCommerce delivery's documents are fetched for.
fn bigcommerce_target(body: &[u8], config: &EnrichConfig) -> Result<(String, String), EnrichError> {
    let parsed: BigcommerceRef = serde_json::from_slice(body)
        .map_err(|e| EnrichError::Refused(format!("the delivery names no order: {e}")))?;
    let id = match &parsed.data {
        Some(data) => {
            if let Some(kind) = data.kind.as_ref().filter(|k| k.as_str() != Some("order")) {
                return Err(EnrichError::Refused(format!(
                    "a webhook about {kind}, not an order"
                )));
            }
            data.id.as_ref()
        }
        None => parsed.id.as_ref(),
    };
    let id = id
        .and_then(digits)
        .ok_or_else(|| EnrichError::Refused("the order id is not a BigCommerce id".to_owned()))?;
    let named = parsed.producer.map(|p| {
        p.as_str()
            .and_then(|p| p.strip_prefix("stores/"))
            .filter(|h| store_hash_ok(h))
            .map(str::to_owned)
            .ok_or_else(|| {
                let shown: String = p.to_string().chars().take(80).collect();
                EnrichError::Refused(format!(
                    "producer {shown} does not name a store as stores/<hash>"
                ))
            })
    });
    let store = match (named, &config.store_hash) {
        (Some(Err(e)), _) => return Err(e),
        (Some(Ok(named)), Some(configured)) if named != *configured => {
            return Err(EnrichError::Refused(format!(
                "the webhook is of store {named}, the access token of store {configured} \
                 (intake.bigcommerce.enrich.store_hash)"
            )));
        }
        (Some(Ok(named)), _) => named,
        (None, Some(configured)) => configured.clone(),
        (None, None) => {
            return Err(EnrichError::Refused(
                "the delivery names no store (producer) and \
                 intake.bigcommerce.enrich.store_hash is not set"
                    .to_owned(),
            ));
        }
    };
    Ok((store, id))
}

/// The fields of a fetched BigCommerce order checked before its products are asked for.
#[derive(Deserialize)]
struct FetchedOrder {
    id: Option<serde_json::Value>,
    status_id: Option<serde_json::Value>,
}

impl Enricher {
    /// A client (no request is made).
    pub fn new() -> Result<Enricher, String> {
        // rustls for https base URLs; an error means a provider is installed already.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No redirects: a custom token header (`X-Auth-Token`) would follow one to any
        // host; the platforms' APIs answer where they are asked.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("intake enrichment client: {e}"))?;
        Ok(Enricher { client })
    }

    /// The documents `body` (a delivery of `channel` from `account`) lacks, fetched from
    /// the platform (see the module doc).
    pub async fn fetch(
        &self,
        channel: Channel,
        account: &str,
        body: &[u8],
        config: &EnrichConfig,
    ) -> Result<Fetched, EnrichError> {
        match channel {
            Channel::Shopify => {
                let id = shopify_order_id(body)?;
                let base = config
                    .base_url(channel)
                    .replace("{account}", url_safe_account(account)?);
                let url = format!(
                    "{}/orders/{id}/fulfillment_orders.json",
                    base.trim_end_matches('/')
                );
                Ok(Fetched {
                    order: None,
                    related: vec![self.get(channel, &url, config).await?],
                })
            }
            Channel::Bigcommerce => self.bigcommerce(body, config).await,
            other => Err(EnrichError::Refused(format!(
                "{} fetches no related documents",
                other.as_str()
            ))),
        }
    }

    /// A BigCommerce order with its products and consignments: the order first (an
    /// Incomplete one needs nothing more), then the two sub-resources at once.
    async fn bigcommerce(
        &self,
        body: &[u8],
        config: &EnrichConfig,
    ) -> Result<Fetched, EnrichError> {
        let (store, id) = bigcommerce_target(body, config)?;
        let order_url = format!(
            "{}/stores/{store}/v2/orders/{id}",
            config.base_url(Channel::Bigcommerce).trim_end_matches('/')
        );
        let order = self.get(Channel::Bigcommerce, &order_url, config).await?;
        let head: FetchedOrder = serde_json::from_slice(&order).map_err(|e| {
            EnrichError::Refused(format!(
                "order {id}: the platform's answer is not an order: {e}"
            ))
        })?;
        if head.id.as_ref().and_then(digits).as_deref() != Some(id.as_str()) {
            return Err(EnrichError::Refused(format!(
                "order {id}: the platform answered another order"
            )));
        }
        let status = head.status_id.as_ref().map(|s| match s {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if status.as_deref() == Some("0") {
            return Ok(Fetched {
                order: Some(order),
                related: Vec::new(),
            });
        }
        let consignments_url = format!("{order_url}/consignments");
        let (products, consignments) = tokio::join!(
            self.bigcommerce_products(&order_url, config),
            self.get(Channel::Bigcommerce, &consignments_url, config),
        );
        let (products, consignments) = match (products, consignments) {
            (Ok(p), Ok(c)) => (p, c),
            (Err(e @ EnrichError::Refused(_)), _) | (_, Err(e @ EnrichError::Refused(_))) => {
                return Err(e);
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        // 204 No Content: the order has no consignments, so no pickup consignment.
        let consignments = if consignments.iter().all(u8::is_ascii_whitespace) {
            br#"{"pickups": []}"#.to_vec()
        } else {
            consignments
        };
        Ok(Fetched {
            order: Some(order),
            related: vec![products, consignments],
        })
    }

    /// Every page of a BigCommerce order's products, as one JSON array: the platform's
    /// own bytes when one page holds them all (the usual case).
    async fn bigcommerce_products(
        &self,
        order_url: &str,
        config: &EnrichConfig,
    ) -> Result<Vec<u8>, EnrichError> {
        let mut all: Vec<serde_json::Value> = Vec::new();
        for page in 1..=BIGCOMMERCE_PRODUCT_PAGES_MAX {
            let url =
                format!("{order_url}/products?limit={BIGCOMMERCE_PRODUCTS_PAGE_LEN}&page={page}");
            let bytes = self.get(Channel::Bigcommerce, &url, config).await?;
            // 204 No Content past the last page.
            let items: Vec<serde_json::Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
                Vec::new()
            } else {
                serde_json::from_slice(&bytes).map_err(|e| {
                    EnrichError::Refused(format!("products page {page} is not a JSON array: {e}"))
                })?
            };
            let last = items.len() < BIGCOMMERCE_PRODUCTS_PAGE_LEN;
            if page == 1 && last {
                return Ok(if items.is_empty() {
                    b"[]".to_vec()
                } else {
                    bytes
                });
            }
            all.extend(items);
            if last {
                return serde_json::to_vec(&all)
                    .map_err(|e| EnrichError::Refused(format!("products: {e}")));
            }
        }
        Err(EnrichError::Refused(format!(
            "more than {} products",
            BIGCOMMERCE_PRODUCTS_PAGE_LEN * BIGCOMMERCE_PRODUCT_PAGES_MAX
        )))
    }

    /// One document: `GET url` with the channel's token header, retried while it may
    /// pass. Messages name the URL's path and the status, never the answer's body.
    async fn get(
        &self,
        channel: Channel,
        url: &str,
        config: &EnrichConfig,
    ) -> Result<Vec<u8>, EnrichError> {
        let path =
            reqwest::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.path().to_owned());
        let mut delay = Duration::from_millis(config.retry_base_ms);
        let mut attempt = 0;
        loop {
            let mut req = self
                .client
                .get(url)
                .timeout(Duration::from_millis(config.timeout_ms))
                .header("accept", "application/json");
            if let Some(token) = &config.access_token {
                req = req.header(token_header(channel), token.expose());
            }
            let failure = match req.send().await {
                Ok(resp) if resp.status().is_success() => match read_bounded(resp).await {
                    Ok(Some(body)) => return Ok(body),
                    Ok(None) => {
                        return Err(EnrichError::Refused(format!(
                            "GET {path}: a document over {RESPONSE_BYTES_MAX} bytes"
                        )));
                    }
                    Err(e) => format!("GET {path}: reading the answer: {e}"),
                },
                Ok(resp) => {
                    let status = resp.status();
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(EnrichError::Refused(format!(
                            "GET {path}: the platform answered {status}"
                        )));
                    }
                    format!("GET {path}: the platform answered {status}")
                }
                Err(e) => format!("GET {path}: {e}"),
            };
            if attempt >= config.retries {
                return Err(EnrichError::Unavailable(format!(
                    "{failure} ({} attempts)",
                    attempt + 1
                )));
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
}

/// The header a channel's API takes its access token in.
fn token_header(channel: Channel) -> &'static str {
    match channel {
        Channel::Bigcommerce => "x-auth-token",
        _ => "x-shopify-access-token",
    }
}

/// An answer's body, read chunk by chunk up to [`RESPONSE_BYTES_MAX`]; `None` when it is
/// longer (nothing beyond the limit is kept in memory).
async fn read_bounded(mut resp: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp
        .content_length()
        .is_some_and(|n| n > RESPONSE_BYTES_MAX as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::config::WebhookSecret;

    fn config(store_hash: Option<&str>) -> EnrichConfig {
        EnrichConfig {
            access_token: Some(WebhookSecret::new("t")),
            store_hash: store_hash.map(str::to_owned),
            ..EnrichConfig::default()
        }
    }

    fn target(body: &str, store_hash: Option<&str>) -> Result<(String, String), EnrichError> {
        bigcommerce_target(body.as_bytes(), &config(store_hash))
    }

    fn ok(store: &str, id: &str) -> Result<(String, String), EnrichError> {
        Ok((store.to_owned(), id.to_owned()))
    }

    fn refused(r: Result<(String, String), EnrichError>) -> bool {
        matches!(r, Err(EnrichError::Refused(_)))
    }

    #[test]
    fn a_bigcommerce_store_comes_from_the_producer_or_the_config_never_a_guess() {
        let thin = |producer: &str| {
            format!(
                r#"{{"scope":"store/order/created","data":{{"type":"order","id":250}},"producer":{producer}}}"#
            )
        };
        assert_eq!(
            target(&thin(r#""stores/abc123""#), None),
            ok("abc123", "250")
        );
        assert_eq!(
            target(&thin(r#""stores/abc123""#), Some("abc123")),
            ok("abc123", "250")
        );
        // A webhook of another store than the token's.
        assert!(refused(target(&thin(r#""stores/other""#), Some("abc123"))));
        // Not a store hash that can go into a URL path: the docs' placeholder, a
        // traversal, a query, another shape.
        for producer in [
            r#""stores/{store_hash}""#,
            r#""stores/..""#,
            r#""stores/a/b""#,
            r#""stores/a?x=1""#,
            r#""stores/""#,
            r#""abc123""#,
            "42",
        ] {
            assert!(
                refused(target(&thin(producer), Some("abc123"))),
                "{producer}"
            );
        }
        // No producer: the configured store, else refused.
        let bare = r#"{"scope":"store/order/updated","data":{"type":"order","id":"251"}}"#;
        assert_eq!(target(bare, Some("abc123")), ok("abc123", "251"));
        assert!(refused(target(bare, None)));
        // An order without its products names itself.
        assert_eq!(
            target(r#"{"id":218,"status_id":8}"#, Some("abc123")),
            ok("abc123", "218")
        );
    }

    #[test]
    fn a_bigcommerce_order_id_is_digits_of_an_order() {
        for body in [
            r#"{"data":{"type":"order","id":"25/../1"}}"#,
            r#"{"data":{"type":"order","id":-1}}"#,
            r#"{"data":{"type":"order","id":1.5}}"#,
            r#"{"data":{"type":"order"}}"#,
            r#"{"data":{"type":"cart","id":1}}"#,
            r#"{"id":"123456789012345678901"}"#,
            "not json",
        ] {
            assert!(refused(target(body, Some("abc123"))), "{body}");
        }
    }

    #[test]
    fn store_hashes_are_url_path_safe() {
        assert!(store_hash_ok("abc123") && store_hash_ok("a-b_C"));
        let long = "a".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a/b",
            "a%2F",
            "{store_hash}",
            long.as_str(),
        ] {
            assert!(!store_hash_ok(bad), "{bad}");
        }
    }

    #[test]
    fn only_a_verdict_that_lacks_documents_wants_them() {
        use crate::intake::Reason;
        let rejected = |codes: &[ReasonCode]| Verdict::Rejected {
            reasons: codes.iter().map(|c| Reason::new(*c, "")).collect(),
            warnings: Vec::new(),
        };
        let needs = rejected(&[ReasonCode::NeedsEnrichment]);
        let not_pickup = rejected(&[ReasonCode::NotPickup]);
        let incomplete = rejected(&[ReasonCode::IncompleteOrder]);
        assert!(needed(Channel::Bigcommerce, &needs));
        assert!(needed(
            Channel::Bigcommerce,
            &rejected(&[ReasonCode::InvalidField, ReasonCode::NeedsEnrichment])
        ));
        assert!(!needed(Channel::Bigcommerce, &not_pickup));
        assert!(!needed(Channel::Bigcommerce, &incomplete));
        assert!(needed(Channel::Shopify, &not_pickup));
        assert!(!needed(Channel::Shopify, &needs));
        assert!(!needed(Channel::Magento, &needs));
    }
}
