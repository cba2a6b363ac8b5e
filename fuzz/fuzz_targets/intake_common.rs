//! The one intake fuzz body every channel's target runs: arbitrary bytes through the
//! channel's adapter, its rules and its signature check, never a panic. The input is split
//! at 0xFF bytes into the body and related documents (the enrichment paths), so the
//! fuzzer reaches them too.

use pickline_sidecar::intake::{self, Channel, IntakeConfig, Payload, Verdict, signature};

/// Runs one fuzz input through `channel`'s intake.
pub fn run(channel: Channel, data: &[u8]) {
    let mut parts = data.split(|b| *b == 0xFF);
    let body = parts.next().unwrap_or_default();
    let related: Vec<&[u8]> = parts.take(intake::RELATED_DOCS_MAX).collect();
    let config = IntakeConfig::default();
    let payload = Payload {
        body,
        related: &related,
    };
    match intake::evaluate(channel, "fuzz", payload, &config) {
        Verdict::Accepted { order, .. } => {
            // The canonical order's invariants hold for whatever was accepted.
            assert!(!order.order_id().is_empty());
            assert!(order.pickups().iter().all(|g| !g.lines.is_empty()));
            assert!(order.all_lines().all(|l| l.qty >= 1 && !l.sku.is_empty()));
        }
        Verdict::Rejected { reasons, .. } => assert!(!reasons.is_empty()),
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(body.get(..64).unwrap_or(body)) {
        for name in [
            "x-shopify-hmac-sha256",
            "x-wc-webhook-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            signature::PICKLINE_SIGNATURE_HEADER,
        ] {
            headers.insert(name, v.clone());
        }
    }
    let _ = signature::verify(channel, b"hush", &headers, body, 1_561_479_335);
}
