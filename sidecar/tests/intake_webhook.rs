//! `POST /intake/{channel}` against a real server: signed Shopify deliveries become held,
//! confirmed pickup orders exactly once; anything else holds nothing (and what cannot be
//! placed is dead-lettered, see also `intake_flow.rs`).

mod common;

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use pickline_sidecar::{
    intake::config::{Action, WebhookSecret},
    pb,
};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::{ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, STAFF_S1_TOKEN, TestServer};
use common::{clients, with_token};

const SECRET: &str = "shpss_test_webhook_secret_0123456789";
const SHOP: &str = "pickline-test.myshopify.com";
const BODY_BYTES_MAX: usize = 64 * 1024;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/channels/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Zapiet pickup order: location 67890 (mapped to S1), these lines.
const PICKUP_LINES: [(&str, u32); 4] = [
    ("49148385", 1),
    ("LENS-PROTECT-2YR", 1),
    ("CASE-LEATHER-PREM", 1),
    ("SKU2006-035", 2),
];

fn shopify_signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

async fn start() -> TestServer {
    TestServer::start(|config| {
        let shopify = &mut config.intake.shopify;
        shopify.webhook_secret = Some(WebhookSecret::new(SECRET));
        shopify.store_map.insert("67890".into(), "S1".into());
        // The fixture's checkout reference is not a Pickline hold: intake holds anew.
        shopify.hold_ref_key = "no_such_attribute".into();
        // shopify_order.json is a test order; only its not-pickup verdict is tested.
        config.intake.rules.test_order = Action::Off;
        config.intake.webhooks.body_bytes_max = BODY_BYTES_MAX;
    })
    .await
}

/// S1 with `qty` units of every pickup line's SKU.
async fn stock(c: &mut Clients, qty: u32) {
    upsert_store(c, "S1").await;
    let lines: Vec<(&str, u32)> = PICKUP_LINES.iter().map(|(sku, _)| (*sku, qty)).collect();
    receive(c, "S1", &lines).await;
}

async fn upsert_store(c: &mut Clients, id: &str) {
    let store = pb::StoreIdentity {
        store_id: id.into(),
        name: format!("Store {id}"),
        location: Some(pb::GeoPoint {
            latitude_deg: 52.52,
            longitude_deg: 13.40,
        }),
        time_zone: "Europe/Berlin".into(),
        status: pb::StoreStatus::Open as i32,
        ..Default::default()
    };
    c.stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: format!("store-{id}"),
                store: Some(store),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

/// `lines` (SKU, units) received at `store`.
async fn receive(c: &mut Clients, store: &str, lines: &[(&str, u32)]) {
    let events = common::receipts(store, lines);
    c.inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: format!("receive-{store}"),
                events,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

async fn held_of(c: &mut Clients, store: &str, sku: &str) -> u32 {
    c.inventory
        .get_availability(with_token(
            pb::GetAvailabilityRequest {
                store_id: store.into(),
                sku: sku.into(),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .cell
        .unwrap()
        .held
}

/// Units held at S1, per pickup SKU.
async fn held(c: &mut Clients) -> Vec<u32> {
    let mut out = Vec::new();
    for (sku, _) in PICKUP_LINES {
        out.push(held_of(c, "S1", sku).await);
    }
    out
}

async fn orders(c: &mut Clients) -> Vec<pb::PickupOrder> {
    c.pickups
        .list_orders(with_token(
            pb::ListOrdersRequest {
                store_id: "S1".into(),
                ..Default::default()
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .orders
}

/// A minimal HTTP/1.1 POST: the status, the response headers (lower-cased) and the body
/// as JSON (`Null` when it is not JSON).
/// One delivery as a platform makes it: while the server answers 503 because the intake
/// journal is still recovering (it opens beside the engine at startup, so a test's first
/// request can race it), the delivery is retried, as a platform retries after
/// `Retry-After`. Every other answer is returned as it is.
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    for _ in 0..100 {
        let answer = post_once(addr, path, headers, body).await;
        let recovering = answer.0 == 503
            && answer.2["message"]
                .as_str()
                .is_some_and(|m| m.contains("journal is recovering"));
        if !recovering {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the intake journal was still recovering after 5 s");
}

async fn post_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("HTTP status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        status,
        head.to_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

async fn deliver_shopify(server: &TestServer, body: &[u8]) -> (u16, String, Value) {
    let signature = shopify_signature(body);
    post(
        server.http_addr,
        "/intake/shopify",
        &[
            ("X-Shopify-Hmac-Sha256", &signature),
            ("X-Shopify-Shop-Domain", SHOP),
            ("X-Shopify-Topic", "orders/create"),
        ],
        body,
    )
    .await
}

#[tokio::test]
async fn signed_pickup_order_is_held_once_and_listed() {
    let server = start().await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    let body = fixture("shopify_order_zapiet_pickup.json");

    let (status, _, first) = deliver_shopify(&server, &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "accepted", "{first}");
    assert_eq!(first["replayed"], false, "{first}");
    let order_id: u64 = first["orders"][0]["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first["orders"][0]["store"], "S1");
    let want: Vec<u32> = PICKUP_LINES.iter().map(|(_, q)| *q).collect();
    assert_eq!(held(&mut c).await, want);

    // The store's queue has it, confirmed, under the platform's order id.
    let listed = orders(&mut c).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].order_id, order_id);
    assert_eq!(listed[0].channel_order_id, "820982911946154508");
    assert_eq!(listed[0].currency, "USD");
    assert_eq!(listed[0].state, pb::OrderState::Confirmed as i32);

    // The platform retries: the same order, nothing held twice.
    let (status, _, again) = deliver_shopify(&server, &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["orders"][0]["order_id"],
        first["orders"][0]["order_id"]
    );
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(held(&mut c).await, want);
    assert_eq!(orders(&mut c).await.len(), 1);

    // A later version of the same order (orders/updated): still the one order.
    let text = String::from_utf8(body).unwrap();
    let updated = text.replacen(
        "\"updated_at\": \"2021-12-31T19:00:00-05:00\"",
        "\"updated_at\": \"2022-01-02T00:00:00Z\"",
        1,
    );
    assert_ne!(updated, text, "the fixture has an updated_at to change");
    let (status, _, later) = deliver_shopify(&server, updated.as_bytes()).await;
    assert_eq!(status, 200, "{later}");
    assert_eq!(
        later["orders"][0]["order_id"],
        first["orders"][0]["order_id"]
    );
    assert_eq!(held(&mut c).await, want);
    assert_eq!(orders(&mut c).await.len(), 1);
}

#[tokio::test]
async fn tampered_or_unsigned_body_is_401_and_holds_nothing() {
    let server = start().await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    let body = fixture("shopify_order_zapiet_pickup.json");
    let signature = shopify_signature(&body);
    let text = String::from_utf8(body.clone()).unwrap();
    let tampered = text.replacen("\"#9999\"", "\"#9998\"", 1);
    assert_ne!(tampered, text);

    let (status, _, answer) = post(
        server.http_addr,
        "/intake/shopify",
        &[("X-Shopify-Hmac-Sha256", &signature)],
        tampered.as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let (status, _, _) = post(server.http_addr, "/intake/shopify", &[], &body).await;
    assert_eq!(status, 401);
    assert_eq!(held(&mut c).await, vec![0; PICKUP_LINES.len()]);
    assert!(orders(&mut c).await.is_empty());
    let (_, metrics) = common::http_get(server.http_addr, "/metrics").await;
    assert!(
        metrics.contains("pickline_intake_webhooks_total{channel=\"shopify\",status=\"401\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn channel_without_secret_is_404() {
    let server = start().await;
    let body = fixture("woocommerce_order_local_pickup.json");
    let (status, _, answer) = post(server.http_addr, "/intake/woocommerce", &[], &body).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "webhook_not_configured");
    let (status, _, _) = post(server.http_addr, "/intake/ebay", &[], &body).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn not_pickup_order_is_200_and_holds_nothing() {
    let server = start().await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    let (status, _, answer) = deliver_shopify(&server, &fixture("shopify_order.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "not_pickup", "{answer}");
    assert_eq!(held(&mut c).await, vec![0; PICKUP_LINES.len()]);
    assert!(orders(&mut c).await.is_empty());
}

#[tokio::test]
async fn insufficient_stock_is_dead_lettered_with_shortages_and_holds_nothing() {
    let server = start().await;
    let mut c = clients(&server).await;
    // One unit each: the order asks two of SKU2006-035.
    stock(&mut c, 1).await;
    let body = fixture("shopify_order_zapiet_pickup.json");
    let (status, _, answer) = deliver_shopify(&server, &body).await;
    // Parked for operators, durably: a 2xx, so the platform stops retrying.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered", "{answer}");
    assert_eq!(answer["reason"], "insufficient_stock", "{answer}");
    assert_eq!(answer["detail"]["store"], "S1");
    let shortages = answer["detail"]["shortages"].as_array().unwrap();
    assert_eq!(shortages.len(), 1, "{answer}");
    assert_eq!(shortages[0]["sku"], "SKU2006-035");
    assert_eq!(shortages[0]["requested"], 2);
    assert_eq!(shortages[0]["available"], 1);
    assert_eq!(held(&mut c).await, vec![0; PICKUP_LINES.len()]);
    assert!(orders(&mut c).await.is_empty());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = start().await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    let mut body = fixture("shopify_order_zapiet_pickup.json");
    // Still valid JSON and correctly signed: only the size is wrong.
    let pad = vec![b' '; BODY_BYTES_MAX];
    body.extend_from_slice(&pad);
    let (status, _, _) = deliver_shopify(&server, &body).await;
    assert_eq!(status, 413);
    assert_eq!(held(&mut c).await, vec![0; PICKUP_LINES.len()]);
}

#[tokio::test]
async fn unusable_payload_is_dead_lettered_with_typed_reasons() {
    let server = start().await;
    let (status, _, answer) = deliver_shopify(&server, b"{\"id\": 1}").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered");
    assert!(
        answer["detail"]["reasons"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["code"].is_string())),
        "{answer}"
    );
}

#[tokio::test]
async fn engine_refusal_of_an_unknown_store_is_dead_lettered_and_holds_nothing() {
    // No store registered: the mapped store S1 is unknown to the engine.
    let server = start().await;
    let (status, _, answer) =
        deliver_shopify(&server, &fixture("shopify_order_zapiet_pickup.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered", "{answer}");
    assert_eq!(answer["reason"], "unknown_store", "{answer}");
}

/// commercetools order with two pickup groups (supply channels) mapped to S1 and S2.
const CT_BERLIN_SKU: &str = "some-sku-123";
const CT_OTHER_SKU: &str = "c5c75935-595a-4cc3-a80e-24e9a9c55094/2";

async fn start_commercetools() -> TestServer {
    TestServer::start(|config| {
        let ct = &mut config.intake.commercetools;
        ct.webhook_secret = Some(WebhookSecret::new(SECRET));
        ct.store_map.insert("store-berlin".into(), "S1".into());
        ct.store_map
            .insert("0f6b3b3c-2222-4a4a-9a9a-000000000002".into(), "S2".into());
        ct.hold_ref_key = "no_such_field".into();
    })
    .await
}

async fn deliver_commercetools(server: &TestServer) -> (u16, String, Value) {
    let body = fixture("commercetools_order_supply_channels.json");
    let signature = shopify_signature(&body);
    post(
        server.http_addr,
        "/intake/commercetools",
        &[("X-Pickline-Hmac-Sha256", &signature)],
        &body,
    )
    .await
}

#[tokio::test]
async fn two_pickup_groups_become_two_orders() {
    let server = start_commercetools().await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    upsert_store(&mut c, "S2").await;
    receive(&mut c, "S1", &[(CT_BERLIN_SKU, 5)]).await;
    receive(&mut c, "S2", &[(CT_OTHER_SKU, 5)]).await;
    let (status, _, answer) = deliver_commercetools(&server).await;
    assert_eq!(status, 200, "{answer}");
    let placed = answer["orders"].as_array().unwrap();
    assert_eq!(placed.len(), 2, "{answer}");
    assert_eq!(placed[0]["store"], "S1");
    assert_eq!(placed[1]["store"], "S2");
    assert_ne!(placed[0]["order_id"], placed[1]["order_id"]);
    assert!(
        placed[0]["channel_order_id"]
            .as_str()
            .is_some_and(|r| r.ends_with("/1")),
        "{answer}"
    );
    assert_eq!(held_of(&mut c, "S1", CT_BERLIN_SKU).await, 1);
    assert_eq!(held_of(&mut c, "S2", CT_OTHER_SKU).await, 3);
    let (status, _, again) = deliver_commercetools(&server).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["orders"], answer["orders"]);
    assert_eq!(held_of(&mut c, "S1", CT_BERLIN_SKU).await, 1);
    assert_eq!(held_of(&mut c, "S2", CT_OTHER_SKU).await, 3);
}

#[tokio::test]
async fn a_short_later_group_releases_the_earlier_groups_hold() {
    let server = start_commercetools().await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    upsert_store(&mut c, "S2").await;
    receive(&mut c, "S1", &[(CT_BERLIN_SKU, 5)]).await;
    // The second group asks for 3.
    receive(&mut c, "S2", &[(CT_OTHER_SKU, 2)]).await;
    let (status, _, answer) = deliver_commercetools(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered", "{answer}");
    assert_eq!(answer["detail"]["store"], "S2", "{answer}");
    assert_eq!(answer["detail"]["shortages"][0]["sku"], CT_OTHER_SKU);
    assert_eq!(held_of(&mut c, "S1", CT_BERLIN_SKU).await, 0);
    assert_eq!(held_of(&mut c, "S2", CT_OTHER_SKU).await, 0);
    // A retry of this version is refused the same way (the same dead letter) and still
    // holds nothing.
    let (status, _, again) = deliver_commercetools(&server).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], answer["id"], "{again}");
    assert_eq!(held_of(&mut c, "S1", CT_BERLIN_SKU).await, 0);
}

#[tokio::test]
async fn order_cancelled_on_the_platform_holds_nothing() {
    let server = start().await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    let text = String::from_utf8(fixture("shopify_order_zapiet_pickup.json")).unwrap();
    let cancelled = text.replacen(
        "\"cancelled_at\": null",
        "\"cancelled_at\": \"2022-01-01T01:00:00Z\"",
        1,
    );
    assert_ne!(cancelled, text);
    let (status, _, answer) = deliver_shopify(&server, cancelled.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "cancelled_on_platform", "{answer}");
    assert_eq!(held(&mut c).await, vec![0; PICKUP_LINES.len()]);
    assert!(orders(&mut c).await.is_empty());
}

#[tokio::test]
async fn checkout_hold_reference_is_confirmed_instead_of_holding_anew() {
    let server = TestServer::start(|config| {
        let shopify = &mut config.intake.shopify;
        shopify.webhook_secret = Some(WebhookSecret::new(SECRET));
        shopify.store_map.insert("67890".into(), "S1".into());
    })
    .await;
    let mut c = clients(&server).await;
    stock(&mut c, 5).await;
    // Checkout held the order's lines at S1.
    let granted = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: "checkout-1".into(),
                store_id: "S1".into(),
                lines: PICKUP_LINES
                    .iter()
                    .map(|(sku, qty)| pb::Line {
                        sku: (*sku).into(),
                        qty: *qty,
                    })
                    .collect(),
                expiry: None,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(hold)) = granted.outcome else {
        panic!("checkout hold refused: {granted:?}");
    };
    let want: Vec<u32> = PICKUP_LINES.iter().map(|(_, q)| *q).collect();
    assert_eq!(held(&mut c).await, want);

    let text = String::from_utf8(fixture("shopify_order_zapiet_pickup.json")).unwrap();
    let body = text.replacen("\"H-7-000123\"", &format!("\"{}\"", hold.hold_id), 1);
    assert_ne!(body, text);
    let (status, _, answer) = deliver_shopify(&server, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    // The order is the checkout hold's; its units are held once.
    assert_eq!(answer["orders"][0]["order_id"], hold.hold_id.to_string());
    assert_eq!(held(&mut c).await, want);
    let listed = orders(&mut c).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hold_id, hold.hold_id);

    // Another order whose reference ("H-7-000123") is no Pickline hold: refused for
    // good, holding nothing more.
    let bogus = text.replacen(
        "\"id\": 820982911946154508,",
        "\"id\": 820982911946154509,",
        1,
    );
    assert_ne!(bogus, text);
    let (status, _, answer) = deliver_shopify(&server, bogus.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered", "{answer}");
    assert_eq!(answer["reason"], "hold_ref_invalid", "{answer}");
    assert_eq!(held(&mut c).await, want);
}

#[tokio::test]
async fn woocommerce_ping_is_200_without_an_order() {
    let server = TestServer::start(|config| {
        config.intake.woocommerce.webhook_secret = Some(WebhookSecret::new(SECRET));
    })
    .await;
    let (status, _, answer) = post(
        server.http_addr,
        "/intake/woocommerce",
        &[],
        b"webhook_id=17",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "ping");
    // Anything else unsigned is refused.
    let body = fixture("woocommerce_order_local_pickup.json");
    let (status, _, _) = post(server.http_addr, "/intake/woocommerce", &[], &body).await;
    assert_eq!(status, 401);
}
