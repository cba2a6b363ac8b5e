//! `POST /intake/{channel}`: platform webhooks on the HTTP listener.
//!
//! Per delivery: the body (at most `intake.webhooks.body_bytes_max`, else 413) is read raw,
//! its signature verified over those bytes in constant time ([`super::signature`]), then
//! it goes through the one intake flow ([`super::flow`]): evaluated, journaled durably,
//! placed in the engine, or dead-lettered.
//!
//! The status codes follow the platforms' retry semantics: they retry on anything but a
//! 2xx (Shopify 8 times over 4 hours, BigCommerce for 48 hours) and some disable a webhook
//! that keeps failing (WooCommerce after 5 failures in a row). So once Pickline holds a
//! delivery durably, in the journal or the dead-letter queue, it answers 2xx: a retry
//! could not change anything, and the operators see the dead letter.
//!
//! | answer | when |
//! |---|---|
//! | 200 `accepted` | every pickup group is a confirmed order, durable in the log (also a retried delivery: same orders, `replayed`) |
//! | 202 `queued` | journaled durably; the engine places it shortly (it is busy or recovering) |
//! | 200 `dead_lettered` | parked durably in the dead-letter queue with the raw payload and the typed reason (payload refused by the adapter or the rules, insufficient stock, unknown store or SKU, ...) |
//! | 200 `not_pickup`, `not_an_order`, `incomplete_order`, `cancelled_on_platform`, `ping` | nothing to do |
//! | 401 | signature missing, malformed or wrong |
//! | 404 | unknown channel, or a channel without a `webhook_secret` (no unsigned order is ever taken) |
//! | 413 | body too large |
//! | 429 + `Retry-After` | the intake queue is full for this order's priority class (shed, nothing written) |
//! | 503 + `Retry-After` | the intake journal is unavailable (recovering, or its disk failed), or the platform's API failed for now while fetching what a thin payload lacks ([`super::enrich`]) |
//!
//! Architecture invariant: no customer email or phone is logged here or in the sink.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use super::{
    Channel,
    flow::{Answer, Delivery, Flow, Refusal},
    journal::{self, Source},
};
use crate::grpc::domain::now;

/// Longest accepted account header (shop domain, site URL).
pub const ACCOUNT_LEN_MAX: usize = 255;

/// Header naming the account of a relayed delivery (Magento, commercetools, BigCommerce).
pub const PICKLINE_ACCOUNT_HEADER: &str = "x-pickline-account";

/// The account of a delivery when its headers name none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The webhook routes into `flow` (its config has the secrets, rules and limits).
pub fn router(flow: Arc<Flow>) -> Router {
    let limit = flow.config().webhooks.body_bytes_max;
    Router::new()
        .route("/intake/{channel}", post(deliver))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(flow)
}

/// The header carrying the account of `channel`'s deliveries.
fn account_header(channel: Channel) -> &'static str {
    match channel {
        Channel::Shopify => "x-shopify-shop-domain",
        Channel::Woocommerce => "x-wc-webhook-source",
        Channel::Bigcommerce | Channel::Magento | Channel::Commercetools => PICKLINE_ACCOUNT_HEADER,
    }
}

fn error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "outcome": "error", "error": error, "message": message.into() })),
    )
        .into_response()
}

async fn deliver(
    State(intake): State<Arc<Flow>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel = Channel::ALL.into_iter().find(|c| c.as_str() == name);
    let response = match channel {
        None => error(StatusCode::NOT_FOUND, "unknown_channel", "no such channel"),
        Some(channel) => handle(&intake, channel, &headers, &body).await,
    };
    // Labels from closed sets only: a sender's path must not create series.
    ::metrics::counter!(
        crate::metrics::INTAKE_WEBHOOKS_TOTAL,
        "channel" => channel.map_or("unknown", Channel::as_str),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

fn retry_later(status: StatusCode, error: &str, refusal: &Refusal) -> Response {
    let mut r = self::error(status, error, refusal.to_string());
    let secs = refusal.retry_after().as_secs().max(1);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

async fn handle(flow: &Flow, channel: Channel, headers: &HeaderMap, body: &Bytes) -> Response {
    let config = flow.config();
    let Some(secret) = config.channel(channel).webhook_secret.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "webhook_not_configured",
            format!("intake.{}.webhook_secret is not set", channel.as_str()),
        );
    };
    // WooCommerce pings a new webhook unsigned with `webhook_id=<n>`: answered, and
    // nothing is done with it.
    if channel == Channel::Woocommerce && is_woocommerce_ping(body) {
        return (StatusCode::OK, Json(json!({ "outcome": "ping" }))).into_response();
    }
    let now_s = now().as_ms().div_euclid(1_000);
    if let Err(e) = super::signature::verify(channel, secret.expose(), headers, body, now_s) {
        tracing::warn!(channel = channel.as_str(), error = %e, "intake webhook: signature refused");
        return error(StatusCode::UNAUTHORIZED, "signature", e.to_string());
    }
    let account = match headers.get(account_header(channel)) {
        None => DEFAULT_ACCOUNT,
        Some(v) => match v.to_str().map(str::trim) {
            Ok(a) if !a.is_empty() && a.len() <= ACCOUNT_LEN_MAX => a,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "account",
                    format!(
                        "{} must be 1..={ACCOUNT_LEN_MAX} visible ASCII bytes",
                        account_header(channel)
                    ),
                );
            }
        },
    };
    let delivery = Delivery {
        source: Source::Webhook,
        channel,
        account: account.to_owned(),
        headers: journal::keep_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
        body: body.to_vec(),
        format: super::Format::Channel,
    };
    match flow.submit(delivery).await {
        Ok(answer) => {
            let status = match &answer {
                Answer::Queued { .. } => StatusCode::ACCEPTED,
                Answer::Accepted { .. }
                | Answer::DeadLettered { .. }
                | Answer::NothingToDo { .. } => StatusCode::OK,
            };
            let body = match &answer {
                Answer::NothingToDo { what, reasons } => {
                    json!({ "outcome": what, "reasons": reasons })
                }
                other => serde_json::to_value(other).unwrap_or_else(|_| json!({})),
            };
            (status, Json(body)).into_response()
        }
        Err(refusal @ Refusal::RetryLater { .. }) => {
            retry_later(StatusCode::TOO_MANY_REQUESTS, "retry_later", &refusal)
        }
        Err(refusal @ Refusal::Unavailable { .. }) => {
            tracing::warn!(
                channel = channel.as_str(),
                error = %refusal,
                "intake webhook: journal unavailable, the platform will retry"
            );
            retry_later(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &refusal)
        }
    }
}

/// `webhook_id=<digits>`: WooCommerce's ping of a new webhook.
fn is_woocommerce_ping(body: &[u8]) -> bool {
    body.strip_prefix(b"webhook_id=")
        .is_some_and(|id| !id.is_empty() && id.len() <= 20 && id.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woocommerce_ping_is_only_the_ping_form() {
        assert!(is_woocommerce_ping(b"webhook_id=42"));
        assert!(!is_woocommerce_ping(b"webhook_id="));
        assert!(!is_woocommerce_ping(b"webhook_id=42&x=1"));
        assert!(!is_woocommerce_ping(b"{\"id\":42}"));
    }
}
