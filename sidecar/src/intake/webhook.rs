//! `POST /intake/{channel}`: platform webhooks on the HTTP listener.
//!
//! Per delivery: the body (at most `intake.webhooks.body_bytes_max`, else 413) is read raw,
//! its signature verified over those bytes in constant time ([`super::signature`]), then
//! [`super::evaluate`] (adapter and rules) and [`super::sink::place`] (into the engine).
//!
//! The status codes follow the platforms' retry semantics: they retry on anything but a
//! 2xx, and a 4xx is meant to stop a sender that would only be refused again.
//!
//! | answer | when |
//! |---|---|
//! | 200 `accepted` | every pickup group is a confirmed order, durable in the log (also a retried delivery: same orders, `replayed`) |
//! | 200 `not_pickup`, `cancelled_on_platform`, `not_an_order`, `ping` | nothing to do: no pickup line; cancelled on the platform; a deletion notice or other non-order; a WooCommerce ping |
//! | 401 | signature missing, malformed or wrong |
//! | 404 | unknown channel, or a channel without a `webhook_secret` (no unsigned order is ever taken) |
//! | 409 `insufficient_stock` | a store cannot promise some lines (this version of the order will be refused again) |
//! | 413 | body too large |
//! | 422 `rejected`, `refused` | the payload cannot become an order (typed reasons), or the engine refused it for good |
//! | 503 + `Retry-After` | the engine recovers, the log failed, the same order is being placed right now |
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
    Channel, IntakeConfig, Payload, ReasonCode, Verdict, evaluate,
    sink::{self, SinkOutcome},
};
use crate::grpc::domain::{Domain, now};

/// Longest accepted account header (shop domain, site URL).
pub const ACCOUNT_LEN_MAX: usize = 255;

/// Header naming the account of a relayed delivery (Magento, commercetools, BigCommerce).
pub const PICKLINE_ACCOUNT_HEADER: &str = "x-pickline-account";

/// The account of a delivery when its headers name none.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Shared by every delivery.
#[derive(Debug)]
struct Intake {
    config: IntakeConfig,
    domain: Domain,
}

/// The webhook routes over `domain`, with `config` (its secrets, rules and limits).
pub fn router(config: IntakeConfig, domain: Domain) -> Router {
    let limit = config.webhooks.body_bytes_max;
    Router::new()
        .route("/intake/{channel}", post(deliver))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(Intake { config, domain }))
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
    State(intake): State<Arc<Intake>>,
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

async fn handle(intake: &Intake, channel: Channel, headers: &HeaderMap, body: &Bytes) -> Response {
    let config = &intake.config;
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
    let payload = Payload { body, related: &[] };
    let (order, warnings) = match evaluate(channel, account, payload, config) {
        Verdict::Accepted { order, warnings } => (order, warnings),
        Verdict::Rejected { reasons, warnings } => {
            let only = |code| !reasons.is_empty() && reasons.iter().all(|r| r.code == code);
            // Nothing to do for Pickline, and nothing a retry would change: a 2xx stops
            // the platform from retrying.
            let outcome = if only(ReasonCode::NotPickup) {
                "not_pickup"
            } else if only(ReasonCode::NotAnOrder) {
                "not_an_order"
            } else {
                tracing::info!(
                    channel = channel.as_str(),
                    account,
                    reasons = ?reasons.iter().map(|r| r.code).collect::<Vec<_>>(),
                    "intake webhook: payload rejected"
                );
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({
                        "outcome": "rejected", "reasons": reasons, "warnings": warnings,
                    })),
                )
                    .into_response();
            };
            return (
                StatusCode::OK,
                Json(json!({ "outcome": outcome, "reasons": reasons, "warnings": warnings })),
            )
                .into_response();
        }
    };
    match sink::place(&intake.domain, &order).await {
        Ok(outcome) => {
            let status = match &outcome {
                SinkOutcome::Accepted { .. }
                | SinkOutcome::NotPickup
                | SinkOutcome::CancelledOnPlatform => StatusCode::OK,
                SinkOutcome::InsufficientStock { .. } => StatusCode::CONFLICT,
                SinkOutcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let mut body = serde_json::to_value(&outcome).unwrap_or_else(|_| json!({}));
            if let Some(map) = body.as_object_mut() {
                map.insert("order_id".into(), json!(order.order_id()));
                map.insert("warnings".into(), json!(warnings));
            }
            (status, Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(
                channel = channel.as_str(),
                order_id = order.order_id(),
                error = %e,
                "intake webhook: engine unavailable, the platform will retry"
            );
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.0);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(config.webhooks.retry_after_s),
            );
            r
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
