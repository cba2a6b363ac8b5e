//! The intake flow end to end: durable acceptance, the dead-letter queue (gRPC and CLI),
//! shedding under a spike, the journal-unavailable path, the NATS JetStream source
//! against a real nats-server, and a SIGKILL of a real `pickline serve` receiving
//! webhooks and NATS messages.
//!
//! The NATS tests need a nats-server with JetStream at `PICKLINE_NATS_URL` (default
//! `nats://127.0.0.1:4222`); `scripts/test` installs and starts one. Every run uses its
//! own stream, consumer and subject prefix.

mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use pickline_sidecar::{
    config::Config,
    intake::config::{Action, EnrichConfig, WebhookSecret},
    pb::{self, intake_service_client::IntakeServiceClient},
};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

use common::{ADMIN_TOKEN, PATIENCE, STAFF_S1_TOKEN, ScratchDir, TestServer, with_token};

const SECRET: &str = "shpss_test_webhook_secret_0123456789";
const SHOP: &str = "pickline-test.myshopify.com";
/// The fixture's order id, replaced to make distinct orders.
const FIXTURE_ORDER_ID: &str = "820982911946154508";
/// The Zapiet pickup order's lines (location 67890, mapped to S1).
const PICKUP_SKUS: [&str; 4] = [
    "49148385",
    "LENS-PROTECT-2YR",
    "CASE-LEATHER-PREM",
    "SKU2006-035",
];

fn nats_url() -> String {
    std::env::var("PICKLINE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{t}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/channels/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Zapiet pickup order under platform order id `id`, paid or not.
fn order(id: u64, paid: bool) -> Vec<u8> {
    let text = String::from_utf8(fixture("shopify_order_zapiet_pickup.json")).unwrap();
    let mut text = text.replace(FIXTURE_ORDER_ID, &id.to_string());
    if !paid {
        text = text.replacen(
            "\"financial_status\": \"paid\"",
            "\"financial_status\": \"pending\"",
            1,
        );
    }
    text.into_bytes()
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

fn configure(config: &mut Config) {
    let shopify = &mut config.intake.shopify;
    shopify.webhook_secret = Some(WebhookSecret::new(SECRET));
    shopify.store_map.insert("67890".into(), "S1".into());
    // The fixture's checkout reference is not a Pickline hold: intake holds anew.
    shopify.hold_ref_key = "no_such_attribute".into();
    config.intake.rules.test_order = Action::Off;
}

/// A minimal HTTP/1.1 POST: status, lower-cased head, body as JSON (`Null` if not JSON).
async fn try_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String, Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        status,
        head.to_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

async fn deliver(addr: SocketAddr, body: &[u8]) -> std::io::Result<(u16, String, Value)> {
    let signature = sign(body);
    try_post(
        addr,
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

async fn channel(grpc: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// S1 with `qty` units of every pickup SKU.
async fn stock(grpc: SocketAddr, token: &str, qty: u32) {
    stock_skus(grpc, token, &PICKUP_SKUS, qty).await;
}

/// S1 with `qty` units of each of `skus`.
async fn stock_skus(grpc: SocketAddr, token: &str, skus: &[&str], qty: u32) {
    let ch = channel(grpc).await;
    let mut stores = pb::store_service_client::StoreServiceClient::new(ch.clone());
    stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: "store-S1".into(),
                store: Some(pb::StoreIdentity {
                    store_id: "S1".into(),
                    name: "Store S1".into(),
                    location: Some(pb::GeoPoint {
                        latitude_deg: 52.52,
                        longitude_deg: 13.40,
                    }),
                    time_zone: "Europe/Berlin".into(),
                    status: pb::StoreStatus::Open as i32,
                    ..Default::default()
                }),
            },
            token,
        ))
        .await
        .unwrap();
    let mut inventory = pb::inventory_service_client::InventoryServiceClient::new(ch);
    let events = skus
        .iter()
        .map(|sku| pb::PosEvent {
            pos_event_id: format!("receive-{qty}-{sku}"),
            store_id: "S1".into(),
            sku: (*sku).into(),
            occurred_at_ms: 1,
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: pb::PosDeltaKind::Receive as i32,
                qty,
            })),
            order_ref: String::new(),
        })
        .collect();
    inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: format!("receive-{qty}-{}", skus.join(",")),
                events,
            },
            token,
        ))
        .await
        .unwrap();
}

/// The channel order ids of S1's open orders.
async fn order_refs(grpc: SocketAddr, token: &str) -> BTreeSet<String> {
    let mut pickups = pb::pickup_service_client::PickupServiceClient::new(channel(grpc).await);
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = pickups
            .list_orders(with_token(
                pb::ListOrdersRequest {
                    store_id: "S1".into(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.orders.into_iter().map(|o| o.channel_order_id));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn intake_client(grpc: SocketAddr) -> IntakeServiceClient<Channel> {
    IntakeServiceClient::new(channel(grpc).await)
}

async fn letters(grpc: SocketAddr, token: &str) -> Vec<pb::DeadLetter> {
    intake_client(grpc)
        .await
        .list_dead_letters(with_token(
            pb::ListDeadLettersRequest { limit: 1000 },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .letters
}

async fn health(grpc: SocketAddr, token: &str) -> pb::IntakeHealth {
    intake_client(grpc)
        .await
        .get_intake_health(with_token(pb::GetIntakeHealthRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `check` holds, or fails after `patience`.
async fn eventually<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_kept_listed_replayed_and_discarded() {
    let server = TestServer::start(configure).await;
    let (grpc, http) = (server.grpc_addr, server.http_addr);
    // One unit each: the order asks two of SKU2006-035.
    stock(grpc, ADMIN_TOKEN, 1).await;

    let body = order(1001, true);
    let (status, _, first) = deliver(http, &body).await.unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "dead_lettered", "{first}");
    assert_eq!(first["reason"], "insufficient_stock", "{first}");
    assert_eq!(first["detail"]["shortages"][0]["sku"], "SKU2006-035");
    let id = first["id"].as_u64().unwrap();
    // The platform retries: the same letter, one more attempt.
    let (status, _, again) = deliver(http, &body).await.unwrap();
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");

    // A signed payload that cannot become an order: its own letter, with the raw bytes.
    let garbage = b"{\"id\": 77, \"line_items\": 5}".to_vec();
    let (status, _, bad) = deliver(http, &garbage).await.unwrap();
    assert_eq!(status, 200, "{bad}");
    assert_eq!(bad["outcome"], "dead_lettered", "{bad}");
    let bad_id = bad["id"].as_u64().unwrap();
    assert_ne!(bad_id, id);

    let listed = letters(grpc, ADMIN_TOKEN).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Paid first: the paid order's letter leads.
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].reason, "insufficient_stock");
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(listed[0].order_ref.split('@').next(), Some("1001"));
    assert!(listed[0].paid);
    assert!(listed[0].body.is_empty(), "list leaves the payload out");
    let mut client = intake_client(grpc).await;
    let shown = client
        .get_dead_letter(with_token(
            pb::GetDeadLetterRequest { id: bad_id },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.body, garbage);
    assert_eq!(shown.source, "webhook");
    assert!(
        shown
            .headers
            .iter()
            .any(|h| h.name == "x-shopify-shop-domain" && h.value == SHOP),
        "{:?}",
        shown.headers
    );
    // Dead letters are the operators': a store's staff cannot read them.
    let denied = client
        .list_dead_letters(with_token(
            pb::ListDeadLettersRequest::default(),
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // The cause is fixed (stock arrives) and the letter replayed: the order is placed.
    stock(grpc, ADMIN_TOKEN, 5).await;
    let done = client
        .replay_dead_letter(with_token(pb::DeadLetterRequest { id }, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done);
    eventually("the replayed order is placed", PATIENCE, || async {
        order_refs(grpc, STAFF_S1_TOKEN).await.contains("1001")
    })
    .await;
    let done = client
        .discard_dead_letter(with_token(
            pb::DeadLetterRequest { id: bad_id },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done);
    assert!(letters(grpc, ADMIN_TOKEN).await.is_empty());
    let again = client
        .discard_dead_letter(with_token(
            pb::DeadLetterRequest { id: bad_id },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.done, "a discarded letter is gone");

    // gRPC Submit goes through the same flow: a letter again, then the CLI sees it.
    let submitted = client
        .submit(with_token(
            pb::SubmitRequest {
                channel: "shopify".into(),
                account: SHOP.into(),
                headers: vec![pb::IntakeHeader {
                    name: "Authorization".into(),
                    value: "Bearer secret".into(),
                }],
                body: order(1002, false),
                order: None,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // 6 units now, 2 taken by order 1001: 1002's 2 of SKU2006-035 fit.
    assert_eq!(
        submitted.outcome,
        pb::SubmitOutcome::Accepted as i32,
        "{submitted:?}"
    );
    assert_eq!(submitted.orders[0].channel_order_id, "1002");
    let h = health(grpc, ADMIN_TOKEN).await;
    let webhook = h.sources.iter().find(|s| s.source == "webhook").unwrap();
    assert_eq!((webhook.received, webhook.dead_lettered), (3, 3), "{h:?}");
    let grpc_h = h.sources.iter().find(|s| s.source == "grpc").unwrap();
    assert_eq!(grpc_h.accepted, 1, "{h:?}");
    // The metrics recorder is the process's, shared with the other tests of this file
    // that run beside this one (the BigCommerce enrichment test dead-letters webhooks
    // too): this server's own count is the health answer above; the metric counts at
    // least as many.
    let (_, metrics) = common::http_get(http, "/metrics").await;
    let dead_lettered: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "pickline_intake_deliveries_total{source=\"webhook\",outcome=\"dead_lettered\"} ",
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no webhook dead-letter count in {metrics}"));
    assert!(dead_lettered >= 3, "{metrics}");

    // Offline, the CLI reads the same queue (and refuses while the server holds it).
    let (status, _, _) = deliver(http, &garbage).await.unwrap();
    assert_eq!(status, 200);
    let busy = pickline(&["intake", "dlq", "list", "--data-dir"], &server.data_dir());
    assert!(
        !busy.status.success(),
        "the running server holds the journal"
    );
    let dir = server.stop_keeping_dir().await;
    let out = pickline(
        &["intake", "dlq", "list", "--json", "--data-dir"],
        &dir.0.join("data"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["reason"], "malformed", "{listed}");
}

fn pickline(args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pickline"))
        .args(args)
        .arg(data_dir)
        .env_remove("PICKLINE_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_spike_is_shed_with_429_and_every_order_ends_accounted_for() {
    const ORDERS: u64 = 60;
    let server = TestServer::start(|c| {
        configure(c);
        // A queue far below the spike: most deliveries must be told to come back.
        c.intake.flow.queue_len_max = 4;
        c.intake.flow.workers = 1;
    })
    .await;
    let (grpc, http) = (server.grpc_addr, server.http_addr);
    stock(grpc, ADMIN_TOKEN, 1000).await;

    // Every order at once (10x what the queue takes), half of them unpaid.
    let mut sends = tokio::task::JoinSet::new();
    for id in 0..ORDERS {
        sends.spawn(async move {
            let (status, head, answer) =
                deliver(http, &order(5000 + id, id % 2 == 0)).await.unwrap();
            (id, status, head, answer)
        });
    }
    let (mut placed, mut shed) = (BTreeSet::new(), Vec::new());
    while let Some(done) = sends.join_next().await {
        let (id, status, head, answer) = done.unwrap();
        match status {
            200 | 202 => {
                assert!(
                    matches!(answer["outcome"].as_str(), Some("accepted" | "queued")),
                    "{answer}"
                );
                placed.insert(id);
            }
            429 => {
                assert!(head.contains("retry-after: 5"), "{head}");
                shed.push(id);
            }
            other => panic!("order {id}: unexpected {other}: {answer}"),
        }
    }
    assert_eq!(placed.len() + shed.len(), ORDERS as usize);
    assert!(
        !shed.is_empty(),
        "a spike of {ORDERS} into a queue of 4 sheds some"
    );
    let h = health(grpc, ADMIN_TOKEN).await;
    let webhook = h.sources.iter().find(|s| s.source == "webhook").unwrap();
    assert_eq!(webhook.shed, shed.len() as u64, "{h:?}");

    // The senders come back as told: every order ends accepted, none twice, none lost.
    for id in shed {
        loop {
            let (status, _, answer) = deliver(http, &order(5000 + id, id % 2 == 0)).await.unwrap();
            if status == 429 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert!(status == 200 || status == 202, "{status}: {answer}");
            break;
        }
    }
    let want: BTreeSet<String> = (0..ORDERS).map(|i| (5000 + i).to_string()).collect();
    eventually("every order is placed", PATIENCE, || async {
        order_refs(grpc, STAFF_S1_TOKEN).await == want
    })
    .await;
    assert!(letters(grpc, ADMIN_TOKEN).await.is_empty());
    assert_eq!(health(grpc, ADMIN_TOKEN).await.queue_depth, 0);
}

/// A canonical order of two units of SKU2006-035 at `store`.
fn canonical(order_id: &str, store: &str, qty: u32) -> pb::IntakeOrder {
    pb::IntakeOrder {
        order_id: order_id.into(),
        version: 1,
        created_at_ms: 1_767_225_600_000,
        currency: "EUR".into(),
        total_minor: 3998,
        paid: true,
        customer: Some(pb::IntakeCustomer {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            ..Default::default()
        }),
        pickups: vec![pb::IntakePickupGroup {
            store_id: store.into(),
            window_start_ms: 1_767_250_000_000,
            lines: vec![pb::IntakeLine {
                sku: "SKU2006-035".into(),
                qty,
                unit_price_minor: 1999,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_canonical_order_submitted_over_grpc_is_placed_once_or_dead_lettered() {
    let server = TestServer::start(configure).await;
    let grpc = server.grpc_addr;
    stock(grpc, ADMIN_TOKEN, 3).await;
    let mut client = intake_client(grpc).await;
    let submit = |order: pb::IntakeOrder, body: Vec<u8>| pb::SubmitRequest {
        channel: "shopify".into(),
        account: SHOP.into(),
        headers: Vec::new(),
        body,
        order: Some(order),
    };
    let first = client
        .submit(with_token(
            submit(canonical("C-1", "S1", 2), Vec::new()),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.outcome,
        pb::SubmitOutcome::Accepted as i32,
        "{first:?}"
    );
    assert_eq!(first.orders.len(), 1, "{first:?}");
    assert_eq!(
        (
            first.orders[0].store_id.as_str(),
            first.orders[0].channel_order_id.as_str()
        ),
        ("S1", "C-1")
    );
    assert!(!first.replayed);
    // The engine order has the submitted lines, and holds them: 1 of 3 units left.
    let mut pickups = pb::pickup_service_client::PickupServiceClient::new(channel(grpc).await);
    let placed = pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(
                    first.orders[0].order_id,
                )),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<(String, u32)> = placed
        .order
        .as_ref()
        .map(|o| o.lines.iter().map(|l| (l.sku.clone(), l.qty)).collect())
        .unwrap_or_default();
    assert_eq!(lines, vec![("SKU2006-035".to_owned(), 2)], "{placed:?}");
    // The same order again places nothing twice.
    let again = client
        .submit(with_token(
            submit(canonical("C-1", "S1", 2), Vec::new()),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.outcome,
        pb::SubmitOutcome::Accepted as i32,
        "{again:?}"
    );
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.orders[0].order_id, first.orders[0].order_id);
    // A second order for 2 more units: only 1 left, so it is dead-lettered, typed.
    let short = client
        .submit(with_token(
            submit(canonical("C-2", "S1", 2), Vec::new()),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        short.outcome,
        pb::SubmitOutcome::DeadLettered as i32,
        "{short:?}"
    );
    assert_eq!(short.reason, "insufficient_stock", "{short:?}");
    // A line of 0 units breaks the canonical order's invariants: dead-lettered with the
    // field named, nothing held.
    let bad = client
        .submit(with_token(
            submit(canonical("C-3", "S1", 0), Vec::new()),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bad.outcome,
        pb::SubmitOutcome::DeadLettered as i32,
        "{bad:?}"
    );
    assert_eq!(bad.reason, "invalid_field", "{bad:?}");
    assert!(bad.message.contains("order.pickups[0].lines[0]"), "{bad:?}");
    // The dead letter keeps the order's own encoding, replayable as it is.
    let kept = letters(grpc, ADMIN_TOKEN).await;
    let letter = kept
        .iter()
        .find(|l| l.order_ref.is_empty() && l.reason == "invalid_field");
    assert!(letter.is_some(), "{kept:?}");
    // Both a raw body and an order: refused as a whole.
    let both = client
        .submit(with_token(
            submit(canonical("C-4", "S1", 1), b"{}".to_vec()),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(both.code(), tonic::Code::InvalidArgument, "{both:?}");
    assert_eq!(
        order_refs(grpc, STAFF_S1_TOKEN).await,
        BTreeSet::from(["C-1".to_owned()])
    );
}

/// A stand-in for the Shopify Admin API on loopback (a real HTTP server): the
/// FulfillmentOrders of an order, for the right access token only. Order 7001's lens and
/// case lines are picked up at location 24826418, the rest shipped; order 7404 does not
/// exist (404); order 7503 fails (503). Counts the requests.
async fn shopify_api() -> (SocketAddr, Arc<AtomicU64>) {
    use axum::{
        extract::{Path as UrlPath, State},
        http::{HeaderMap, StatusCode},
        response::IntoResponse,
    };
    async fn fulfillment_orders(
        State(hits): State<Arc<AtomicU64>>,
        UrlPath((account, id)): UrlPath<(String, String)>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        hits.fetch_add(1, Ordering::Relaxed);
        if account != SHOP
            || headers.get("x-shopify-access-token").map(|v| v.as_bytes()) != Some(b"shpat_test")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let template: Value =
            serde_json::from_slice(&fixture("shopify_fulfillment_order.json")).unwrap();
        let fo = |method: &str, lines: &[(&str, u32)]| {
            let mut fo = template["fulfillment_order"].clone();
            fo["order_id"] = Value::from(id.parse::<u64>().unwrap());
            fo["delivery_method"]["method_type"] = Value::from(method);
            fo["line_items"] = lines
                .iter()
                .map(|(line, qty)| {
                    serde_json::json!({"line_item_id": line.parse::<u64>().unwrap(), "quantity": qty})
                })
                .collect();
            fo
        };
        match id.as_str() {
            "7001" => axum::Json(serde_json::json!({
                "fulfillment_orders": [
                    fo("pick_up", &[("789012345678901234", 1), ("890123456789012345", 1)]),
                    fo("shipping", &[
                        ("487817672276298554", 1),
                        ("976318377106520349", 1),
                        ("315789986012684393", 1),
                    ]),
                ]
            }))
            .into_response(),
            "7503" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let hits = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new()
        .route(
            "/{account}/admin/api/2025-01/orders/{id}/fulfillment_orders.json",
            axum::routing::get(fulfillment_orders),
        )
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// Shopify's own order sample (native checkout, no pickup app), not cancelled, as order
/// `id`.
fn native_order(id: u64) -> Vec<u8> {
    let mut order: Value = serde_json::from_slice(&fixture("shopify_order.json")).unwrap();
    order["id"] = Value::from(id);
    order["cancelled_at"] = Value::Null;
    serde_json::to_vec(&order).unwrap()
}

#[tokio::test]
async fn shopify_native_pickup_is_read_from_the_fetched_fulfillment_orders() {
    let (api, hits) = shopify_api().await;
    let server = TestServer::start(|c| {
        configure(c);
        let shopify = &mut c.intake.shopify;
        shopify.store_map.insert("24826418".into(), "S1".into());
        shopify.enrich = Some(EnrichConfig {
            base_url: Some(format!("http://{api}/{{account}}/admin/api/2025-01")),
            access_token: Some(WebhookSecret::new("shpat_test")),
            timeout_ms: 2_000,
            retries: 1,
            ..EnrichConfig::default()
        });
    })
    .await;
    let (grpc, http) = (server.grpc_addr, server.http_addr);
    stock(grpc, ADMIN_TOKEN, 5).await;

    // The order alone says nothing of pickup; its FulfillmentOrders do.
    let (status, _, answer) = deliver(http, &native_order(7001)).await.unwrap();
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    assert_eq!(answer["orders"][0]["store"], "S1", "{answer}");
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    let mut pickups = pb::pickup_service_client::PickupServiceClient::new(channel(grpc).await);
    let placed = pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(
                    answer["orders"][0]["order_id"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                )),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut skus: Vec<String> = placed
        .order
        .map(|o| o.lines.into_iter().map(|l| l.sku).collect())
        .unwrap_or_default();
    skus.sort();
    assert_eq!(skus, ["CASE-LEATHER-PREM", "LENS-PROTECT-2YR"]);

    // An order the API does not know: dead-lettered for an operator, not guessed.
    let (status, _, answer) = deliver(http, &native_order(7404)).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "dead_lettered", "{answer}");
    assert_eq!(answer["reason"], "enrichment_failed", "{answer}");
    // The API failing for now: 503 with Retry-After after the retries (2 attempts), so
    // Shopify delivers again; nothing kept.
    let before = hits.load(Ordering::Relaxed);
    let (status, head, answer) = deliver(http, &native_order(7503)).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(head.contains("retry-after:"), "{head}");
    assert_eq!(hits.load(Ordering::Relaxed) - before, 2);
    assert_eq!(
        letters(grpc, ADMIN_TOKEN).await.len(),
        1,
        "only the unknown order is a letter"
    );
    // A pickup-app order (its note_attributes say pickup) needs no fetch.
    let before = hits.load(Ordering::Relaxed);
    let (status, _, answer) = deliver(http, &order(7002, true)).await.unwrap();
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), before);
}

/// The BigCommerce store of the API stand-in, its API token and webhook secret.
const BC_STORE: &str = "abc123";
const BC_TOKEN: &str = "bc_api_token_test";
const BC_SECRET: &str = "hush";
/// BigCommerce order ids the API stand-in answers specially.
const BC_FLAKY: u64 = 251;
const BC_INCOMPLETE: u64 = 252;
const BC_DOWN: u64 = 253;
const BC_UNKNOWN: u64 = 404;

/// A stand-in for BigCommerce's v2 API on loopback (a real HTTP server): any order id is
/// the docs' order 218 under that id (with its two products and the pickup consignment at
/// LOCATION-1), for store `BC_STORE`, the right `X-Auth-Token` and `Accept:
/// application/json` only (401 / 406 otherwise). Order `BC_FLAKY` answers 503 to its first
/// request; `BC_INCOMPLETE` is Incomplete (status 0); `BC_DOWN` always fails (503);
/// `BC_UNKNOWN` does not exist (404) until `known` is set. Counts requests per path.
struct BigcommerceApi {
    addr: SocketAddr,
    hits: Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>,
    known: Arc<std::sync::atomic::AtomicBool>,
}

impl BigcommerceApi {
    async fn start() -> BigcommerceApi {
        use axum::{
            extract::{Path as UrlPath, State},
            http::{HeaderMap, StatusCode, Uri},
            response::IntoResponse,
        };
        type Hits = Arc<parking_lot::Mutex<std::collections::HashMap<String, u32>>>;
        type Known = Arc<std::sync::atomic::AtomicBool>;
        fn document(name: &str, id: u64) -> Value {
            let mut doc: Value = serde_json::from_slice(&fixture(name)).unwrap();
            match &mut doc {
                Value::Array(products) => {
                    for p in products {
                        p["order_id"] = Value::from(id);
                    }
                }
                Value::Object(o) if o.contains_key("status_id") => {
                    o.insert("id".into(), Value::from(id));
                    if id == BC_INCOMPLETE {
                        o.insert("status_id".into(), Value::from(0));
                        o.insert("status".into(), Value::from("Incomplete"));
                    }
                }
                _ => {}
            }
            doc
        }
        async fn api(
            State((hits, known)): State<(Hits, Known)>,
            UrlPath((store, rest)): UrlPath<(String, String)>,
            uri: Uri,
            headers: HeaderMap,
        ) -> axum::response::Response {
            let seen = {
                let mut hits = hits.lock();
                let n = hits.entry(uri.path().to_owned()).or_default();
                *n += 1;
                *n
            };
            if store != BC_STORE
                || headers.get("x-auth-token").map(|v| v.as_bytes()) != Some(BC_TOKEN.as_bytes())
            {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            if headers.get("accept").map(|v| v.as_bytes()) != Some(b"application/json") {
                return StatusCode::NOT_ACCEPTABLE.into_response();
            }
            let mut parts = rest.split('/');
            let Some(id) = parts.next().and_then(|id| id.parse::<u64>().ok()) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let sub = parts.next();
            match id {
                BC_UNKNOWN if !known.load(Ordering::Relaxed) => {
                    return StatusCode::NOT_FOUND.into_response();
                }
                BC_DOWN => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
                BC_FLAKY if sub.is_none() && seen == 1 => {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                _ => {}
            }
            let name = match sub {
                None => "bigcommerce_order.json",
                Some("products") => "bigcommerce_order_218_products.json",
                Some("consignments") => "bigcommerce_order_consignments_pickup.json",
                Some(_) => return StatusCode::NOT_FOUND.into_response(),
            };
            axum::Json(document(name, id)).into_response()
        }
        let hits = Hits::default();
        let known = Known::default();
        let app = axum::Router::new()
            .route("/stores/{store}/v2/orders/{*rest}", axum::routing::get(api))
            .with_state((hits.clone(), known.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        BigcommerceApi { addr, hits, known }
    }

    /// Requests of order `id`'s document (`""`) or sub-resource (`"products"`, ...).
    fn hits(&self, id: u64, sub: &str) -> u32 {
        let path = match sub {
            "" => format!("/stores/{BC_STORE}/v2/orders/{id}"),
            sub => format!("/stores/{BC_STORE}/v2/orders/{id}/{sub}"),
        };
        self.hits.lock().get(&path).copied().unwrap_or(0)
    }

    /// Every request so far.
    fn total(&self) -> u32 {
        self.hits.lock().values().sum()
    }
}

/// A server taking BigCommerce webhooks, enriched from `api` with `token`; S1 (the
/// pickup location LOCATION-1) stocked with the docs' order lines.
async fn bigcommerce_server(api: &BigcommerceApi, token: &str) -> TestServer {
    let (base_url, token) = (format!("http://{}", api.addr), token.to_owned());
    let server = TestServer::start(move |c| {
        let bc = &mut c.intake.bigcommerce;
        bc.webhook_secret = Some(WebhookSecret::new(BC_SECRET));
        bc.store_map.insert("LOCATION-1".into(), "S1".into());
        bc.enrich = Some(EnrichConfig {
            base_url: Some(base_url),
            access_token: Some(WebhookSecret::new(token)),
            timeout_ms: 2_000,
            retries: 1,
            retry_base_ms: 10,
            ..EnrichConfig::default()
        });
    })
    .await;
    stock_skus(server.grpc_addr, ADMIN_TOKEN, &["S-ORAN", "ABS"], 5).await;
    server
}

/// The docs' thin `store/order/created` webhook for order `id` of `BC_STORE`, signed
/// (Standard Webhooks, now) and delivered.
async fn deliver_bigcommerce(addr: SocketAddr, id: u64) -> (u16, String, Value) {
    let body = String::from_utf8(fixture("bigcommerce_webhook_store_order_created.json"))
        .unwrap()
        .replace("\"id\": 250", &format!("\"id\": {id}"))
        .replace("stores/{store_hash}", &format!("stores/{BC_STORE}"));
    assert!(body.contains(&format!("\"id\": {id}")) && body.contains(BC_STORE));
    let (msg_id, ts) = (format!("msg_{id}"), (now_ms() / 1000).to_string());
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(BC_SECRET.as_bytes()).unwrap();
    mac.update(format!("{msg_id}.{ts}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    try_post(
        addr,
        "/intake/bigcommerce",
        &[
            ("webhook-id", &msg_id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
        ],
        body.as_bytes(),
    )
    .await
    .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The SKUs and units of engine order `order_id` (from an intake answer).
async fn order_lines(grpc: SocketAddr, order_id: &Value) -> Vec<(String, u32)> {
    let mut pickups = pb::pickup_service_client::PickupServiceClient::new(channel(grpc).await);
    let id = order_id.as_str().and_then(|s| s.parse().ok());
    let placed = pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(
                    id.expect("an order id"),
                )),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut lines: Vec<(String, u32)> = placed
        .order
        .map(|o| o.lines.into_iter().map(|l| (l.sku, l.qty)).collect())
        .unwrap_or_default();
    lines.sort();
    lines
}

#[tokio::test]
async fn bigcommerce_thin_webhooks_are_enriched_from_the_api() {
    let api = BigcommerceApi::start().await;
    let server = bigcommerce_server(&api, BC_TOKEN).await;
    let (grpc, http) = (server.grpc_addr, server.http_addr);

    // The webhook names order 250 only; its order, products and consignments are fetched
    // once each, and it becomes a pickup order at S1 with the docs' two lines.
    let (status, _, answer) = deliver_bigcommerce(http, 250).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    assert_eq!(answer["order_id"], "250", "{answer}");
    assert_eq!(answer["orders"][0]["store"], "S1", "{answer}");
    assert_eq!(
        answer["orders"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(
        (
            api.hits(250, ""),
            api.hits(250, "products"),
            api.hits(250, "consignments")
        ),
        (1, 1, 1)
    );
    assert_eq!(
        order_lines(grpc, &answer["orders"][0]["order_id"]).await,
        [("ABS".to_owned(), 1), ("S-ORAN".to_owned(), 1)]
    );
    // BigCommerce fires the same webhook again: fetched again, placed once.
    let (status, _, again) = deliver_bigcommerce(http, 250).await;
    assert_eq!(
        (status, again["replayed"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    assert_eq!(again["orders"], answer["orders"]);

    // The API failing once: retried within the delivery (retry_base_ms later), accepted.
    let (status, _, answer) = deliver_bigcommerce(http, BC_FLAKY).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    assert_eq!(api.hits(BC_FLAKY, ""), 2, "one 503, then the order");
    assert_eq!(api.hits(BC_FLAKY, "products"), 1);

    // The API failing for now: 503 with Retry-After after 1 + retries attempts, so
    // BigCommerce delivers again; nothing kept, nothing else asked for.
    let (status, head, answer) = deliver_bigcommerce(http, BC_DOWN).await;
    assert_eq!(status, 503, "{answer}");
    assert!(head.contains("retry-after:"), "{head}");
    assert_eq!(
        (api.hits(BC_DOWN, ""), api.hits(BC_DOWN, "products")),
        (2, 0)
    );

    // An Incomplete order (a failed payment fires the webhook too): nothing to do, its
    // products never asked for, nothing held.
    let (status, _, answer) = deliver_bigcommerce(http, BC_INCOMPLETE).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("incomplete_order")),
        "{answer}"
    );
    assert_eq!(answer["reasons"][0]["code"], "incomplete_order", "{answer}");
    assert_eq!(
        (
            api.hits(BC_INCOMPLETE, ""),
            api.hits(BC_INCOMPLETE, "products")
        ),
        (1, 0)
    );
    assert!(letters(grpc, ADMIN_TOKEN).await.is_empty());

    // An order the API does not know: dead-lettered as enrichment_failed (asked once: a
    // 404 is not retried), and placed once the cause is fixed and the letter replayed.
    let (status, _, answer) = deliver_bigcommerce(http, BC_UNKNOWN).await;
    assert_eq!(
        (
            status,
            answer["outcome"].as_str(),
            answer["reason"].as_str()
        ),
        (200, Some("dead_lettered"), Some("enrichment_failed")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v2/orders/404") && m.contains("404")),
        "{answer}"
    );
    assert_eq!(api.hits(BC_UNKNOWN, ""), 1);
    let kept = letters(grpc, ADMIN_TOKEN).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].reason, "enrichment_failed", "{kept:?}");
    api.known.store(true, Ordering::Relaxed);
    let done = intake_client(grpc)
        .await
        .replay_dead_letter(with_token(
            pb::DeadLetterRequest { id: kept[0].id },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done);
    eventually("the replayed order is placed", PATIENCE, || async {
        order_refs(grpc, STAFF_S1_TOKEN).await.contains("404")
    })
    .await;
    assert_eq!(
        order_refs(grpc, STAFF_S1_TOKEN).await,
        BTreeSet::from(["250".to_owned(), "251".to_owned(), "404".to_owned()])
    );
    assert!(letters(grpc, ADMIN_TOKEN).await.is_empty());
}

#[tokio::test]
async fn bigcommerce_enrichment_with_a_wrong_token_is_dead_lettered_not_retried() {
    let api = BigcommerceApi::start().await;
    let server = bigcommerce_server(&api, "not_the_token").await;
    let (status, _, answer) = deliver_bigcommerce(server.http_addr, 250).await;
    assert_eq!(
        (
            status,
            answer["outcome"].as_str(),
            answer["reason"].as_str()
        ),
        (200, Some("dead_lettered"), Some("enrichment_failed")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{answer}"
    );
    // Refused at the order: one request, no retry, nothing else asked for.
    assert_eq!(api.total(), 1);
    assert!(
        order_refs(server.grpc_addr, STAFF_S1_TOKEN)
            .await
            .is_empty()
    );
    assert_eq!(letters(server.grpc_addr, ADMIN_TOKEN).await.len(), 1);
}

#[tokio::test]
async fn a_platform_cancellation_cancels_the_engine_order() {
    let server = TestServer::start(configure).await;
    let (grpc, http) = (server.grpc_addr, server.http_addr);
    // 3 units: the second order's 2 of SKU2006-035 fit only once the first's are free.
    stock(grpc, ADMIN_TOKEN, 3).await;
    let body = order(3001, true);
    let (status, _, placed) = deliver(http, &body).await.unwrap();
    assert_eq!(
        (status, placed["outcome"].as_str()),
        (200, Some("accepted")),
        "{placed}"
    );
    assert!(order_refs(grpc, STAFF_S1_TOKEN).await.contains("3001"));
    // orders/cancelled: the same order, cancelled, a later version.
    let text = String::from_utf8(body).unwrap();
    let cancelled = text
        .replacen(
            "\"cancelled_at\": null",
            "\"cancelled_at\": \"2022-01-01T01:00:00Z\"",
            1,
        )
        .replacen(
            "\"updated_at\": \"2021-12-31T19:00:00-05:00\"",
            "\"updated_at\": \"2022-01-01T01:00:00Z\"",
            1,
        );
    assert_ne!(cancelled, text);
    let (status, _, answer) = deliver(http, cancelled.as_bytes()).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "cancelled_on_platform", "{answer}");
    assert!(order_refs(grpc, STAFF_S1_TOKEN).await.is_empty());
    // Its units are free again: the same lines can be held by the next order.
    let (status, _, next) = deliver(http, &order(3002, true)).await.unwrap();
    assert_eq!(
        (status, next["outcome"].as_str()),
        (200, Some("accepted")),
        "{next}"
    );
}

#[tokio::test]
async fn an_unavailable_journal_answers_503_and_unavailable_never_accepted() {
    let dir = ScratchDir::new();
    // The journal's directory is a file: it cannot open, the engine still can.
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::write(dir.0.join("data").join("intake"), b"not a directory").unwrap();
    let server = TestServer::start_in(dir, configure).await;
    stock(server.grpc_addr, ADMIN_TOKEN, 5).await;
    let (status, head, answer) = deliver(server.http_addr, &order(42, true)).await.unwrap();
    assert_eq!(status, 503, "{answer}");
    assert!(head.contains("retry-after: 5"), "{head}");
    assert_eq!(answer["error"], "unavailable");
    let refused = intake_client(server.grpc_addr)
        .await
        .submit(with_token(
            pb::SubmitRequest {
                channel: "shopify".into(),
                body: order(42, true),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.metadata().get("retry-after-ms").is_some());
    assert!(
        order_refs(server.grpc_addr, STAFF_S1_TOKEN)
            .await
            .is_empty()
    );
    assert!(!health(server.grpc_addr, ADMIN_TOKEN).await.journal_open);
}

/// Stream, consumer and subject prefix of one run.
struct NatsNames {
    stream: String,
    consumer: String,
    prefix: String,
}

impl NatsNames {
    fn new() -> NatsNames {
        let u = unique("T");
        NatsNames {
            stream: format!("PKL_{u}"),
            consumer: format!("c_{u}"),
            prefix: format!("pkltest.{u}"),
        }
    }

    fn apply(&self, c: &mut Config) {
        c.intake.nats.enabled = true;
        c.intake.nats.url = nats_url();
        c.intake.nats.stream = self.stream.clone();
        c.intake.nats.consumer = self.consumer.clone();
        c.intake.nats.subject_prefix = self.prefix.clone();
        c.intake.nats.nak_delay_ms = 100;
        c.intake.nats.ack_wait_ms = 2000;
    }
}

async fn jetstream() -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats_url()).await.unwrap_or_else(|e| {
        panic!(
            "nats-server at {} (scripts/test starts one): {e}",
            nats_url()
        )
    });
    async_nats::jetstream::new(client)
}

/// Publishes `body` on `<prefix>.<channel>` and waits for the stream to store it.
async fn publish(js: &async_nats::jetstream::Context, prefix: &str, channel: &str, body: Vec<u8>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Pickline-Account", SHOP);
    js.publish_with_headers(format!("{prefix}.{channel}"), headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Messages of the consumer neither acked nor termed yet.
async fn unfinished(js: &async_nats::jetstream::Context, n: &NatsNames) -> u64 {
    let Ok(stream) = js.get_stream(&n.stream).await else {
        return u64::MAX;
    };
    let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&n.consumer)
        .await
    else {
        return u64::MAX;
    };
    match consumer.info().await {
        Ok(info) => info.num_pending + info.num_ack_pending as u64,
        Err(_) => u64::MAX,
    }
}

#[tokio::test]
async fn nats_messages_are_acked_after_the_journal_and_termed_when_dead_lettered() {
    let names = NatsNames::new();
    let js = jetstream().await;
    let server = TestServer::start(|c| {
        configure(c);
        names.apply(c);
    })
    .await;
    let grpc = server.grpc_addr;
    stock(grpc, ADMIN_TOKEN, 3).await;
    // Created by the source at start.
    eventually("the source created its stream", PATIENCE, || async {
        js.get_stream(&names.stream).await.is_ok()
    })
    .await;
    publish(&js, &names.prefix, "shopify", order(7001, true)).await;
    // Only one more of SKU2006-035 is left: a dead letter.
    publish(&js, &names.prefix, "shopify", order(7002, true)).await;
    publish(&js, &names.prefix, "shopify", b"not json".to_vec()).await;
    // No such channel: termed, nothing kept.
    publish(&js, &names.prefix, "ebay", order(7003, true)).await;
    eventually("every message is acked or termed", PATIENCE, || async {
        unfinished(&js, &names).await == 0
    })
    .await;
    assert_eq!(
        order_refs(grpc, STAFF_S1_TOKEN).await,
        BTreeSet::from(["7001".to_owned()])
    );
    let listed = letters(grpc, ADMIN_TOKEN).await;
    let mut reasons: Vec<(&str, &str)> = listed
        .iter()
        .map(|l| (l.source.as_str(), l.reason.as_str()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [("nats", "insufficient_stock"), ("nats", "malformed")],
        "{listed:?}"
    );
    let h = health(grpc, ADMIN_TOKEN).await;
    let nats = h.sources.iter().find(|s| s.source == "nats").unwrap();
    assert_eq!((nats.accepted, nats.dead_lettered), (1, 2), "{h:?}");
    server.stop().await.unwrap();
    let _ = js.delete_stream(&names.stream).await;
}

/// The status of `GET /readyz`, or `None` while nothing answers.
async fn readyz(http: SocketAddr) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(http).await.ok()?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

/// A real `pickline serve` process.
struct Serve {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

const PROCESS_TOKEN: &str = "pkl_sigkill_test_token_0123456789abcdef";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn serve(config: &Path, data: &Path) -> Serve {
    let (grpc, http) = (free_addr(), free_addr());
    let child = Command::new(env!("CARGO_BIN_EXE_pickline"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--grpc-listen", &grpc.to_string()])
        .args(["--http-listen", &http.to_string()])
        .args(["--log", "warn"])
        .env("PICKLINE_TOKEN", PROCESS_TOKEN)
        .env_remove("PICKLINE_TOKENS")
        .env_remove("PICKLINE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Serve { child, grpc, http }
}

impl Serve {
    async fn wait_ready(&mut self) {
        let http = self.http;
        eventually("the server is ready", Duration::from_secs(30), || async {
            readyz(http).await == Some(200)
        })
        .await;
        // The intake journal opens beside the engine.
        let grpc = self.grpc;
        eventually("the intake journal is open", PATIENCE, || async {
            health(grpc, PROCESS_TOKEN).await.journal_open
        })
        .await;
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_order() {
    let names = NatsNames::new();
    let js = jetstream().await;
    let dir = ScratchDir::new();
    let data = dir.0.join("data");
    let config_path = dir.0.join("pickline.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[intake.rules]
test_order = "off"

[intake.shopify]
webhook_secret = "{SECRET}"
hold_ref_key = "no_such_attribute"
store_map = {{ "67890" = "S1" }}

[intake.nats]
enabled = true
url = "{url}"
stream = "{stream}"
consumer = "{consumer}"
subject_prefix = "{prefix}"
nak_delay_ms = 100
ack_wait_ms = 2000
"#,
            url = nats_url(),
            stream = names.stream,
            consumer = names.consumer,
            prefix = names.prefix,
        ),
    )
    .unwrap();

    let mut first = serve(&config_path, &data);
    first.wait_ready().await;
    stock(first.grpc, PROCESS_TOKEN, 1_000_000).await;

    // Webhook senders and a NATS publisher, each with its own order ids, recording every
    // order the server acknowledged (webhooks) or the stream stored (NATS).
    let acked = Arc::new(parking_lot::Mutex::new(BTreeSet::<u64>::new()));
    let published = Arc::new(parking_lot::Mutex::new(BTreeSet::<u64>::new()));
    let next = Arc::new(AtomicU64::new(100_000));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (acked, next, http) = (acked.clone(), next.clone(), first.http);
        senders.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                match deliver(http, &order(id, true)).await {
                    Ok((200 | 202, _, answer)) => {
                        assert!(
                            matches!(answer["outcome"].as_str(), Some("accepted" | "queued")),
                            "{answer}"
                        );
                        acked.lock().insert(id);
                    }
                    Ok((status, _, answer)) => {
                        assert!(status == 429 || status == 503, "{status}: {answer}")
                    }
                    Err(_) => return, // killed
                }
            }
        });
    }
    {
        let (published, next, js, prefix) = (
            published.clone(),
            next.clone(),
            js.clone(),
            names.prefix.clone(),
        );
        senders.spawn(async move {
            for _ in 0..200 {
                let id = next.fetch_add(1, Ordering::Relaxed);
                publish(&js, &prefix, "shopify", order(id, true)).await;
                published.lock().insert(id);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    // Kill it mid-stream, once it has acknowledged a good number of orders.
    eventually(
        "orders are acknowledged",
        Duration::from_secs(30),
        || async { acked.lock().len() >= 150 },
    )
    .await;
    // SIGKILL: no shutdown, no final flush.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    while senders.join_next().await.is_some() {}
    let acked = acked.lock().clone();
    let published = published.lock().clone();
    assert!(!acked.is_empty() && !published.is_empty());

    let mut second = serve(&config_path, &data);
    second.wait_ready().await;
    let grpc = second.grpc;
    eventually(
        "the journal and the stream are drained",
        Duration::from_secs(30),
        || async {
            health(grpc, PROCESS_TOKEN).await.queue_depth == 0 && unfinished(&js, &names).await == 0
        },
    )
    .await;
    let in_engine = order_refs(grpc, PROCESS_TOKEN).await;
    let dead: BTreeSet<String> = letters(grpc, PROCESS_TOKEN)
        .await
        .into_iter()
        .filter_map(|l| l.order_ref.split('@').next().map(str::to_owned))
        .collect();
    eprintln!(
        "SIGKILL after {} acknowledged webhook orders and {} published NATS orders; after the restart {} engine orders, {} dead letters",
        acked.len(),
        published.len(),
        in_engine.len(),
        dead.len()
    );
    let lost: Vec<u64> = acked
        .iter()
        .chain(published.iter())
        .copied()
        .filter(|id| !in_engine.contains(&id.to_string()) && !dead.contains(&id.to_string()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhook orders and {} NATS orders lost: {lost:?}",
        lost.len(),
        acked.len(),
        published.len()
    );
    drop(second);
    let _ = js.delete_stream(&names.stream).await;
}
