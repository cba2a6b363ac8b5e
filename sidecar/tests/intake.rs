//! Order intake: every channel payload in `tests/fixtures/channels/` normalizes to its
//! reviewed golden file in `tests/intake_golden/`; every signature vector of
//! `SIGNATURE_TEST_VECTORS.md` verifies and tampering fails; rules per channel and account;
//! `pickline intake normalize|rules` exit codes.
//!
//! The goldens were written by hand-checking each payload field by field (see the commit
//! that added them). `PICKLINE_UPDATE_GOLDEN=1` rewrites them; review the diff before
//! committing it.

use std::path::{Path, PathBuf};
use std::process::Command;

use http::{HeaderMap, HeaderName, HeaderValue};
use pickline_sidecar::config::Config;
use pickline_sidecar::intake::{
    self, Channel, IntakeConfig, Payload, ReasonCode, Verdict,
    signature::{self, SignatureError},
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/channels")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The adapter's answer as JSON: the canonical order, or `{"rejected": [reasons]}`.
fn normalized(
    channel: Channel,
    body: &[u8],
    related: &[&[u8]],
    config: &IntakeConfig,
) -> serde_json::Value {
    let payload = Payload { body, related };
    match intake::normalize(channel, "default", payload, config) {
        Ok(order) => serde_json::to_value(&order).unwrap(),
        Err(reasons) => serde_json::json!({ "rejected": reasons }),
    }
}

/// The one place that drives the adapters in these tests: normalizes `body` (+ `related`)
/// and compares with `tests/intake_golden/<golden>.json`.
fn check(golden: &str, channel: Channel, body: &str, related: &[&str]) {
    let body = fixture(body);
    let related: Vec<Vec<u8>> = related.iter().map(|r| fixture(r)).collect();
    let related: Vec<&[u8]> = related.iter().map(Vec::as_slice).collect();
    let actual = normalized(channel, &body, &related, &IntakeConfig::default());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/intake_golden")
        .join(format!("{golden}.json"));
    if std::env::var_os("PICKLINE_UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    assert_eq!(
        actual,
        expected,
        "{golden}: actual\n{}",
        serde_json::to_string_pretty(&actual).unwrap()
    );
}

#[test]
fn shopify_goldens() {
    // The docs sample: test, voided, cancelled, five lines, no pickup evidence.
    check("shopify_order", Channel::Shopify, "shopify_order.json", &[]);
    // A FulfillmentOrder alone is not an order.
    check(
        "shopify_fulfillment_order",
        Channel::Shopify,
        "shopify_fulfillment_order.json",
        &[],
    );
    // ... and one of another order does not fit this one.
    check(
        "shopify_order_with_foreign_fulfillment_order",
        Channel::Shopify,
        "shopify_order.json",
        &["shopify_fulfillment_order.json"],
    );
    // Mixed: two pickup locations and a shipped group.
    check(
        "shopify_order_mixed_fulfillment_orders",
        Channel::Shopify,
        "shopify_order.json",
        &["shopify_fulfillment_orders_mixed.json"],
    );
    // A pickup app's note_attributes; an empty SKU, a removed line, an edited quantity.
    check(
        "shopify_order_zapiet_pickup",
        Channel::Shopify,
        "shopify_order_zapiet_pickup.json",
        &[],
    );
}

#[test]
fn woocommerce_goldens() {
    check(
        "woocommerce_order",
        Channel::Woocommerce,
        "woocommerce_order.json",
        &[],
    );
    check(
        "woocommerce_order_local_pickup",
        Channel::Woocommerce,
        "woocommerce_order_local_pickup.json",
        &[],
    );
}

#[test]
fn bigcommerce_goldens() {
    check(
        "bigcommerce_webhook_store_order_created",
        Channel::Bigcommerce,
        "bigcommerce_webhook_store_order_created.json",
        &[],
    );
    check(
        "bigcommerce_order",
        Channel::Bigcommerce,
        "bigcommerce_order.json",
        &[],
    );
    // The docs' products sample belongs to order 149, not 218.
    check(
        "bigcommerce_order_foreign_products",
        Channel::Bigcommerce,
        "bigcommerce_order.json",
        &[
            "bigcommerce_order_products.json",
            "bigcommerce_order_consignments_pickup.json",
        ],
    );
    check(
        "bigcommerce_order_pickup",
        Channel::Bigcommerce,
        "bigcommerce_order.json",
        &[
            "bigcommerce_order_218_products.json",
            "bigcommerce_order_consignments_pickup.json",
        ],
    );
    check(
        "bigcommerce_order_shipping",
        Channel::Bigcommerce,
        "bigcommerce_order.json",
        &["bigcommerce_order_218_products.json"],
    );
}

#[test]
fn magento_goldens() {
    check("magento_order", Channel::Magento, "magento_order.json", &[]);
    check(
        "magento_order_instore_pickup",
        Channel::Magento,
        "magento_order_instore_pickup.json",
        &[],
    );
}

#[test]
fn commercetools_goldens() {
    check(
        "commercetools_order",
        Channel::Commercetools,
        "commercetools_order.json",
        &[],
    );
    check(
        "commercetools_order_supply_channels",
        Channel::Commercetools,
        "commercetools_order_supply_channels.json",
        &[],
    );
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    v["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["code"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn malformed_payloads_are_typed_reasons() {
    let config = IntakeConfig::default();
    for channel in Channel::ALL {
        for body in [
            &b""[..],
            b"not json",
            b"[]",
            b"{\"id\": {}}",
            b"\xff\xfe",
            b"null",
        ] {
            let v = normalized(channel, body, &[], &config);
            assert!(
                !codes(&v).is_empty(),
                "{channel:?} {body:?} should be refused: {v}"
            );
        }
    }
    let ping = normalized(Channel::Woocommerce, b"webhook_id=3", &[], &config);
    assert_eq!(codes(&ping), ["not_an_order"]);
    let deleted = normalized(Channel::Woocommerce, b"{\"id\": 727}", &[], &config);
    assert_eq!(codes(&deleted), ["not_an_order"]);
}

#[test]
fn store_map_maps_and_refuses_unknown_locations() {
    let mut config = IntakeConfig::default();
    config
        .magento
        .store_map
        .insert("BER-01".to_owned(), "store-berlin-1".to_owned());
    let body = fixture("magento_order_instore_pickup.json");
    let v = normalized(Channel::Magento, &body, &[], &config);
    assert_eq!(v["pickups"][0]["location"], "BER-01");
    assert_eq!(v["pickups"][0]["store"], "store-berlin-1");

    config.magento.store_map.clear();
    config
        .magento
        .store_map
        .insert("HAM-01".to_owned(), "store-hamburg-1".to_owned());
    let v = normalized(Channel::Magento, &body, &[], &config);
    assert_eq!(codes(&v), ["unknown_pickup_location"]);
}

fn verdict_codes(v: &Verdict) -> (Vec<ReasonCode>, Vec<ReasonCode>) {
    match v {
        Verdict::Accepted { warnings, .. } => {
            (Vec::new(), warnings.iter().map(|r| r.code).collect())
        }
        Verdict::Rejected { reasons, warnings } => (
            reasons.iter().map(|r| r.code).collect(),
            warnings.iter().map(|r| r.code).collect(),
        ),
    }
}

fn evaluate(
    channel: Channel,
    account: &str,
    body: &str,
    toml: &str,
) -> (Vec<ReasonCode>, Vec<ReasonCode>) {
    let config = Config::from_toml(toml, Path::new("test.toml")).unwrap();
    config.validate().unwrap();
    let body = fixture(body);
    let payload = Payload {
        body: &body,
        related: &[],
    };
    verdict_codes(&intake::evaluate(channel, account, payload, &config.intake))
}

#[test]
fn rules_reject_or_warn_per_channel_and_account() {
    use ReasonCode::*;
    let file = "shopify_order_zapiet_pickup.json";
    // Defaults: the stand-in SKU only warns.
    assert_eq!(
        evaluate(Channel::Shopify, "a", file, ""),
        (vec![], vec![SkuFallback])
    );
    let toml = r#"
        [intake.rules]
        currencies = ["EUR"]
        stores = ["S1"]
        lines_max = 1
        line_qty_max = 1
        required_fields = ["email", "hold_ref", "order_number"]
        sku_fallback = "reject"

        [intake.shopify.rules]
        store = "warn"

        [intake.shopify.accounts."lenient.myshopify.com"]
        currency = "off"
        lines = "warn"
        line_qty = "warn"
        required = "warn"
        sku_fallback = "off"
    "#;
    assert_eq!(
        evaluate(Channel::Shopify, "strict", file, toml),
        (
            vec![
                CurrencyNotAllowed,
                TooManyLines,
                QuantityTooLarge,
                RequiredFieldMissing,
                SkuFallback
            ],
            vec![StoreNotAllowed]
        )
    );
    assert_eq!(
        evaluate(Channel::Shopify, "lenient.myshopify.com", file, toml),
        (
            vec![],
            vec![
                StoreNotAllowed,
                TooManyLines,
                QuantityTooLarge,
                RequiredFieldMissing
            ]
        )
    );
    // The test-order policy and the pickup rule.
    assert_eq!(
        evaluate(Channel::Shopify, "a", "shopify_order.json", ""),
        (vec![NotPickup, TestOrder], vec![])
    );
    assert_eq!(
        evaluate(
            Channel::Shopify,
            "a",
            "shopify_order.json",
            "[intake.rules]\ntest_order = \"accept\"\nnot_pickup = \"warn\"\n"
        ),
        (vec![], vec![NotPickup])
    );
    // Contact: the commercetools sample has neither email nor phone.
    assert_eq!(
        evaluate(Channel::Commercetools, "a", "commercetools_order.json", ""),
        (vec![NotPickup, ContactMissing], vec![])
    );
}

#[test]
fn invalid_rule_limits_are_refused_at_start() {
    for toml in [
        "[intake.rules]\nlines_max = 0\n",
        "[intake.woocommerce.rules]\nline_qty_max = 0\n",
        "[intake.rules]\ncurrencies = [\"EURO\"]\n",
        "[intake.magento.accounts.x]\nlines_max = 2000000\n",
        "[intake.shopify]\nhold_ref_key = \"\"\n",
    ] {
        let config = Config::from_toml(toml, Path::new("t.toml")).unwrap();
        assert!(config.validate().is_err(), "{toml}");
    }
    assert!(Config::from_toml("[intake.rules]\nnope = 1\n", Path::new("t.toml")).is_err());
}

// --- Signatures (SIGNATURE_TEST_VECTORS.md) ---

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

const SECRET: &[u8] = b"hush";
const SHOPIFY_SIG: &str = "vzceRpjYyqJGenPaDJzDMKUPemGJ6t+Tkovs5++dx2Y=";
const WOO_SIG: &str = "z5WgKizz0lB6jg96CXmdO5pkbno7RSHkyGToV7RkdOY=";
const WOO_COMPACT_SIG: &str = "utmr/x0AjUjSwPLSmz2qeC+BTkK8pNutjhfoJRLfbfc=";
const BC_SIG: &str = "v1,dCk8BuXxIRpCGMeyFFY21jfkwGTZiILW+PAvRICY3t8=";
const BC_TS: i64 = 1561479335;

fn tampered(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    let i = b.len() / 2;
    b[i] ^= 1;
    b
}

#[test]
fn shopify_signature_vector() {
    let body = fixture("shopify_order.json");
    assert_eq!(body.len(), 14894);
    let h = headers(&[("X-Shopify-Hmac-Sha256", SHOPIFY_SIG)]);
    assert_eq!(
        signature::verify(Channel::Shopify, SECRET, &h, &body, 0),
        Ok(())
    );
    assert_eq!(
        signature::verify(Channel::Shopify, SECRET, &h, &tampered(&body), 0),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        signature::verify(Channel::Shopify, b"hush2", &h, &body, 0),
        Err(SignatureError::Mismatch)
    );
    let other = headers(&[("X-Shopify-Hmac-Sha256", WOO_SIG)]);
    assert_eq!(
        signature::verify(Channel::Shopify, SECRET, &other, &body, 0),
        Err(SignatureError::Mismatch)
    );
    let garbage = headers(&[("X-Shopify-Hmac-Sha256", "not base64!")]);
    assert!(matches!(
        signature::verify(Channel::Shopify, SECRET, &garbage, &body, 0),
        Err(SignatureError::MalformedHeader(_))
    ));
    assert!(matches!(
        signature::verify(Channel::Shopify, SECRET, &HeaderMap::new(), &body, 0),
        Err(SignatureError::MissingHeader(_))
    ));
    assert_eq!(signature::sign_b64(SECRET, &body), SHOPIFY_SIG);
}

#[test]
fn woocommerce_signature_vectors() {
    let body = fixture("woocommerce_order.json");
    assert_eq!(body.len(), 3468);
    let h = headers(&[("X-WC-Webhook-Signature", WOO_SIG)]);
    assert_eq!(
        signature::verify(Channel::Woocommerce, SECRET, &h, &body, 0),
        Ok(())
    );
    assert_eq!(
        signature::verify(Channel::Woocommerce, SECRET, &h, &tampered(&body), 0),
        Err(SignatureError::Mismatch)
    );
    // The same order re-serialized compactly has another signature: raw bytes only.
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let compact = serde_json::to_vec(&value).unwrap();
    assert_ne!(compact, body);
    assert_eq!(
        signature::verify(Channel::Woocommerce, SECRET, &h, &compact, 0),
        Err(SignatureError::Mismatch)
    );
    let hc = headers(&[("X-WC-Webhook-Signature", WOO_COMPACT_SIG)]);
    assert_eq!(
        signature::verify(Channel::Woocommerce, SECRET, &hc, &body, 0),
        Err(SignatureError::Mismatch)
    );
    // WooCommerce signs with the entity-decoded secret.
    let h_amp = headers(&[(
        "X-WC-Webhook-Signature",
        &signature::sign_b64(b"a&b", &body),
    )]);
    assert_eq!(
        signature::verify(Channel::Woocommerce, b"a&amp;b", &h_amp, &body, 0),
        Ok(())
    );
}

#[test]
fn bigcommerce_standard_webhooks_vector() {
    let body = fixture("bigcommerce_webhook_store_order_created.json");
    let ts = BC_TS.to_string();
    let ok = headers(&[
        ("webhook-id", "msg_test_1"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", BC_SIG),
    ]);
    let verify = |h: &HeaderMap, body: &[u8], now: i64| {
        signature::verify(Channel::Bigcommerce, SECRET, h, body, now)
    };
    assert_eq!(verify(&ok, &body, BC_TS), Ok(()));
    assert_eq!(verify(&ok, &body, BC_TS + 299), Ok(()));
    assert_eq!(
        verify(&ok, &tampered(&body), BC_TS),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(verify(&ok, &body, BC_TS + 301), Err(SignatureError::Stale));
    assert_eq!(verify(&ok, &body, BC_TS - 301), Err(SignatureError::Stale));
    // Tampered headers: id and timestamp are signed too.
    let other_id = headers(&[
        ("webhook-id", "msg_test_2"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", BC_SIG),
    ]);
    assert_eq!(
        verify(&other_id, &body, BC_TS),
        Err(SignatureError::Mismatch)
    );
    let ts2 = (BC_TS + 1).to_string();
    let other_ts = headers(&[
        ("webhook-id", "msg_test_1"),
        ("webhook-timestamp", &ts2),
        ("webhook-signature", BC_SIG),
    ]);
    assert_eq!(
        verify(&other_ts, &body, BC_TS),
        Err(SignatureError::Mismatch)
    );
    // Several signatures (key rotation): any valid v1 passes.
    let several = format!("v1,AAAA {BC_SIG} v2,whatever");
    let rotated = headers(&[
        ("webhook-id", "msg_test_1"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &several),
    ]);
    assert_eq!(verify(&rotated, &body, BC_TS), Ok(()));
    let none_v1 = headers(&[
        ("webhook-id", "msg_test_1"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", "v1a,xyz"),
    ]);
    assert!(matches!(
        verify(&none_v1, &body, BC_TS),
        Err(SignatureError::MalformedHeader(_))
    ));
    let no_id = headers(&[("webhook-timestamp", &ts), ("webhook-signature", BC_SIG)]);
    assert!(matches!(
        verify(&no_id, &body, BC_TS),
        Err(SignatureError::MissingHeader("webhook-id"))
    ));
}

#[test]
fn relay_signature_for_magento_and_commercetools() {
    let body = fixture("magento_order.json");
    let sig = signature::sign_b64(SECRET, &body);
    let h = headers(&[(signature::PICKLINE_SIGNATURE_HEADER, &sig)]);
    for channel in [Channel::Magento, Channel::Commercetools] {
        assert_eq!(signature::verify(channel, SECRET, &h, &body, 0), Ok(()));
        assert_eq!(
            signature::verify(channel, SECRET, &h, &tampered(&body), 0),
            Err(SignatureError::Mismatch)
        );
    }
}

// --- The CLI ---

fn pickline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pickline"))
        .args(args)
        .env_remove("PICKLINE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn cli_normalize_exit_codes() {
    // A pickup order: exit 0, the canonical order on stdout, equal to its golden.
    let (code, out, err) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "magento",
        &path("magento_order_instore_pickup.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let order: serde_json::Value = serde_json::from_str(&out).unwrap();
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/intake_golden/magento_order_instore_pickup.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(order, golden);

    // A warning goes to stderr; still exit 0.
    let (code, out, err) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "shopify",
        &path("shopify_order_zapiet_pickup.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("sku_fallback"), "{err}");

    // Related documents with --with.
    let (code, out, err) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "bigcommerce",
        &path("bigcommerce_order.json"),
        "--with",
        &path("bigcommerce_order_218_products.json"),
        "--with",
        &path("bigcommerce_order_consignments_pickup.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"LOCATION-1\""), "{out}");

    // Not pickup, test order: exit 1 with typed reasons.
    let (code, out, _) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "shopify",
        &path("shopify_order.json"),
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(codes(&v), ["not_pickup", "test_order"]);

    // Malformed: exit 1.
    let (code, out, _) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "woocommerce",
        &path("woocommerce_webhook_headers_example.txt"),
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(codes(&v), ["malformed"]);

    // A config that accepts test orders and only warns on non-pickup: exit 0.
    let dir = std::env::temp_dir().join(format!("pickline-intake-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pickline.toml");
    std::fs::write(
        &config,
        "[intake.shopify.rules]\ntest_order = \"accept\"\nnot_pickup = \"warn\"\n",
    )
    .unwrap();
    let (code, out, err) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "shopify",
        "--config",
        &config.display().to_string(),
        &path("shopify_order.json"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("not_pickup"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    // An unreadable file is an error, not a verdict.
    let (code, _, err) = pickline(&[
        "intake",
        "normalize",
        "--channel",
        "shopify",
        "/nonexistent/order.json",
    ]);
    assert_ne!(code, 0);
    assert_ne!(code, 1, "{err}");
}

#[test]
fn cli_rules_lists_hits_per_file() {
    let (code, out, err) = pickline(&[
        "intake",
        "rules",
        "--channel",
        "shopify",
        &path("shopify_order.json"),
        &path("shopify_order_zapiet_pickup.json"),
        &path("shopify_fulfillment_order.json"),
    ]);
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "{}\n  reject          not_pickup: no line is for store pickup (a Shopify order states \
         pickup only on its FulfillmentOrders (none given) or in a pickup app's \
         note_attributes (none))\n  reject          test_order: the platform marks this as a \
         test order\n{}\n  warn            sku_fallback: a line has no SKU; its variant or \
         product id \"49148385\" stands in\n{}\n  not normalized  not_an_order: a Shopify \
         FulfillmentOrder says where an order's lines are fulfilled; pass it with its order \
         (CLI: --with FILE)\n",
        path("shopify_order.json"),
        path("shopify_order_zapiet_pickup.json"),
        path("shopify_fulfillment_order.json"),
    );
    assert_eq!(out, expected);
}

#[test]
fn cli_bench_intake_reports_a_rate() {
    let dir = std::env::temp_dir().join(format!("pickline-bench-intake-{}", std::process::id()));
    let dir = dir.display().to_string();
    let (code, out, err) = pickline(&["bench", "intake", "--quick", "--json", "--dir", &dir]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["shopify_orders_per_s"].as_f64().unwrap() > 0.0, "{out}");
    assert_eq!(v["payload_bytes"], 14894);
    // Signed webhooks through the real server to confirmed orders, none refused.
    assert!(v["webhook_orders_per_s"].as_f64().unwrap() > 0.0, "{out}");
    assert!(
        v["webhook_p99_ms_at_half_load"].as_f64().unwrap() > 0.0,
        "{out}"
    );
    assert_eq!(v["webhook_errors"], 0, "{out}");
}

/// Every fixture, truncated and bit-flipped at many offsets, through every adapter and the
/// rules: a typed answer each time, never a panic (the fuzz targets go further).
#[test]
fn damaged_payloads_never_panic() {
    let config = IntakeConfig::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut answers = 0usize;
    for file in &files {
        let body = std::fs::read(file).unwrap();
        let stride = (body.len() / 150).max(1);
        for at in (0..body.len()).step_by(stride) {
            let mut flipped = body.clone();
            flipped[at] ^= 0x20;
            for damaged in [&body[..at], &flipped[..]] {
                for channel in Channel::ALL {
                    let payload = Payload {
                        body: damaged,
                        related: &[damaged],
                    };
                    match intake::evaluate(channel, "x", payload, &config) {
                        Verdict::Accepted { order, .. } => {
                            assert!(order.all_lines().all(|l| l.qty >= 1 && !l.sku.is_empty()))
                        }
                        Verdict::Rejected { reasons, .. } => assert!(!reasons.is_empty()),
                    }
                    answers += 1;
                }
            }
        }
    }
    assert!(answers > 10_000, "{answers}");
}

#[test]
fn woocommerce_prices_with_tax_add_the_line_tax() {
    let mut order: serde_json::Value =
        serde_json::from_slice(&fixture("woocommerce_order_local_pickup.json")).unwrap();
    order["prices_include_tax"] = serde_json::Value::Bool(true);
    let body = serde_json::to_vec(&order).unwrap();
    let v = normalized(Channel::Woocommerce, &body, &[], &IntakeConfig::default());
    assert_eq!(v["prices_include_tax"], true);
    // (6.00 + 0.45) / 2 = 3.225, half away from zero; (12.00 + 0.90) / 1.
    let lines = &v["pickups"][0]["lines"];
    assert_eq!(lines[0]["unit_price_minor"], 323, "{v}");
    assert_eq!(lines[1]["unit_price_minor"], 1290, "{v}");
}

#[test]
fn woocommerce_checkout_drafts_are_incomplete() {
    let mut order: serde_json::Value =
        serde_json::from_slice(&fixture("woocommerce_order_local_pickup.json")).unwrap();
    order["status"] = serde_json::Value::String("checkout-draft".to_owned());
    let body = serde_json::to_vec(&order).unwrap();
    let v = normalized(Channel::Woocommerce, &body, &[], &IntakeConfig::default());
    assert_eq!(codes(&v), ["incomplete_order"]);
}
