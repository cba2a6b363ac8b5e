//! Enrichment: fetching the documents an order's payload lacks from the platform's API,
//! through one HTTP client (reqwest) with the channel's base URL, time limit and retries
//! (`[intake.<channel>.enrich]`).
//!
//! Shopify states native pickup only on an order's FulfillmentOrders
//! (`delivery_method.method_type == "pick_up"` at `assigned_location_id`), never in the
//! order webhook. When the order alone is "not pickup" and the channel has `enrich`, the
//! flow fetches `GET {base_url}/orders/{id}/fulfillment_orders.json` (header
//! `X-Shopify-Access-Token`) and evaluates the order again with them as related documents
//! ([`super::Payload::related`]). The journal keeps the webhook body only: a restart or a
//! dead-letter replay fetches again (the FulfillmentOrders as they are then).
//!
//! Failures: a transport error, 429 or 5xx is retried `retries` times (100 ms, doubling),
//! then [`EnrichError::Unavailable`] (the sender delivers again later, or the worker backs
//! off); any other status is [`EnrichError::Refused`] (a wrong token, an unknown order:
//! dead-lettered as `enrichment_failed`, replayable once fixed).

use std::time::Duration;

use serde::Deserialize;

use super::{Channel, config::EnrichConfig};

/// Largest related document read, bytes.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;

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

/// The HTTP client of enrichment (cheap to clone).
#[derive(Clone, Debug)]
pub struct Enricher {
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct IdOnly {
    id: serde_json::Value,
}

/// The order id of a Shopify order body (digits only: it goes into a URL path).
fn shopify_order_id(body: &[u8]) -> Result<String, EnrichError> {
    let parsed: IdOnly = serde_json::from_slice(body)
        .map_err(|e| EnrichError::Refused(format!("the order has no readable id: {e}")))?;
    let id = match parsed.id {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        serde_json::Value::String(s) => Some(s),
        _ => None,
    };
    id.filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
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

impl Enricher {
    /// A client (no request is made).
    pub fn new() -> Result<Enricher, String> {
        // rustls for https base URLs; an error means a provider is installed already.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("intake enrichment client: {e}"))?;
        Ok(Enricher { client })
    }

    /// The related documents of `body` (an order of `channel` from `account`).
    pub async fn related(
        &self,
        channel: Channel,
        account: &str,
        body: &[u8],
        config: &EnrichConfig,
    ) -> Result<Vec<Vec<u8>>, EnrichError> {
        match channel {
            Channel::Shopify => {
                let id = shopify_order_id(body)?;
                let base = config
                    .base_url
                    .replace("{account}", url_safe_account(account)?);
                let url = format!(
                    "{}/orders/{id}/fulfillment_orders.json",
                    base.trim_end_matches('/')
                );
                Ok(vec![self.get(&url, config).await?])
            }
            other => Err(EnrichError::Refused(format!(
                "{} fetches no related documents",
                other.as_str()
            ))),
        }
    }

    async fn get(&self, url: &str, config: &EnrichConfig) -> Result<Vec<u8>, EnrichError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            let mut req = self
                .client
                .get(url)
                .timeout(Duration::from_millis(config.timeout_ms))
                .header("accept", "application/json");
            if let Some(token) = &config.access_token {
                req = req.header("x-shopify-access-token", token.expose());
            }
            let failure = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    if resp
                        .content_length()
                        .is_some_and(|n| n > RESPONSE_BYTES_MAX as u64)
                    {
                        return Err(EnrichError::Refused(format!(
                            "a related document over {RESPONSE_BYTES_MAX} bytes"
                        )));
                    }
                    match resp.bytes().await {
                        Ok(b) if b.len() <= RESPONSE_BYTES_MAX => return Ok(b.to_vec()),
                        Ok(_) => {
                            return Err(EnrichError::Refused(format!(
                                "a related document over {RESPONSE_BYTES_MAX} bytes"
                            )));
                        }
                        Err(e) => format!("reading the answer: {e}"),
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(EnrichError::Refused(format!(
                            "the platform answered {status}"
                        )));
                    }
                    format!("the platform answered {status}")
                }
                Err(e) => format!("{e}"),
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
