//! End to end over gRPC: a real server on loopback with a data dir in a temp directory,
//! driven through the generated clients.

mod common;

use common::{
    ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, POS_TOKEN, STAFF_S1_TOKEN, TestServer, clients,
    with_token,
};
use pickline_sidecar::pb::{self, event_service_client::EventServiceClient};
use tonic::Code;
use tonic_types::StatusExt as _;

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
        pickup_instructions: "desk by entrance B".into(),
        ..Default::default()
    };
    let r = c
        .stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: format!("store-{id}"),
                store: Some(store),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.created);
    assert_eq!(r.store.unwrap().identity.unwrap().store_id, id);
}

fn receive(store: &str, sku: &str, qty: u32, id: &str) -> pb::ApplyPosEventsRequest {
    pb::ApplyPosEventsRequest {
        idempotency_key: format!("batch-{id}"),
        events: vec![pb::PosEvent {
            pos_event_id: id.into(),
            store_id: store.into(),
            sku: sku.into(),
            occurred_at_ms: 1,
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: pb::PosDeltaKind::Receive as i32,
                qty,
            })),
            order_ref: String::new(),
        }],
    }
}

fn hold_request(key: &str, store: &str, lines: &[(&str, u32)]) -> pb::HoldRequest {
    pb::HoldRequest {
        idempotency_key: key.into(),
        store_id: store.into(),
        lines: common::lines(lines),
        expiry: None,
    }
}

/// The stock of SKU-1 at S1, as checkout reads it.
/// A server with store S1 holding `qty` units of SKU-1 (POS event `pos-1`), and clients.
async fn s1_with_sku1(qty: u32) -> (TestServer, Clients) {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", qty, "pos-1"), POS_TOKEN))
        .await
        .unwrap();
    (server, c)
}

async fn sku1_at_s1(c: &mut Clients) -> pb::Availability {
    c.inventory
        .get_availability(with_token(
            pb::GetAvailabilityRequest {
                store_id: "S1".into(),
                sku: "SKU-1".into(),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .cell
        .unwrap()
}

async fn hold(c: &mut Clients, req: pb::HoldRequest) -> pb::HoldResponse {
    c.holds
        .hold(with_token(req, CHECKOUT_TOKEN))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_pickup_from_store_setup_to_receipt() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    let applied = c
        .inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 5, "pos-1"), POS_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let outcome = &applied.outcomes[0];
    assert_eq!(outcome.result(), pb::PosEventResult::Applied);
    assert_eq!(outcome.cell.as_ref().unwrap().atp, 5);

    let granted = hold(&mut c, hold_request("cart-1", "S1", &[("SKU-1", 2)])).await;
    let Some(pb::hold_response::Outcome::Granted(h)) = granted.outcome else {
        panic!("expected a grant: {granted:?}");
    };
    assert_eq!(h.state(), pb::HoldState::Active);
    assert!(!granted.replayed);

    let confirmed = c
        .holds
        .confirm(with_token(
            pb::ConfirmRequest {
                idempotency_key: "confirm-1".into(),
                hold_id: h.hold_id,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::confirm_response::Outcome::Confirmed(ch)) = confirmed.outcome.clone() else {
        panic!("expected confirmed: {confirmed:?}");
    };
    assert_eq!(ch.state(), pb::HoldState::Confirmed);
    // A retried Confirm answers as the first did, marked as a replay.
    let confirmed_again = c
        .holds
        .confirm(with_token(
            pb::ConfirmRequest {
                idempotency_key: "confirm-1".into(),
                hold_id: h.hold_id,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(confirmed_again.replayed);
    assert_eq!(confirmed_again.outcome, confirmed.outcome);

    let created = c
        .pickups
        .create_order(with_token(
            pb::CreateOrderRequest {
                idempotency_key: "order-1".into(),
                hold_id: h.hold_id,
                channel: pb::Channel::Shopify as i32,
                channel_order_id: "#1001".into(),
                customer: Some(pb::CustomerContact {
                    email: "ada@example.com".into(),
                    email_consent: true,
                    ..Default::default()
                }),
                lines: vec![pb::PricedLine {
                    sku: "SKU-1".into(),
                    qty: 2,
                    unit_price_minor: 1_250,
                    title: "Espresso cups".into(),
                    ..Default::default()
                }],
                currency: "EUR".into(),
                ..Default::default()
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::create_order_response::Outcome::Order(order)) = created.outcome else {
        panic!("expected an order: {created:?}");
    };
    assert_eq!(order.state(), pb::OrderState::Confirmed);
    assert_eq!(order.store_id, "S1");

    // The store's staff sees it in the queue.
    let listed = c
        .pickups
        .list_orders(with_token(
            pb::ListOrdersRequest {
                store_id: "S1".into(),
                ..Default::default()
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
    assert_eq!(listed.orders[0].order_id, order.order_id);

    let picking = c
        .pickups
        .start_picking(with_token(
            pb::StartPickingRequest {
                idempotency_key: "pick-1".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(picking.order.unwrap().state(), pb::OrderState::Picking);

    let ready = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: "ready-1".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready.order.as_ref().unwrap().state(), pb::OrderState::Ready);
    assert_eq!(
        ready.pickup_code.len(),
        11,
        "XXXXX-XXXXX: {}",
        ready.pickup_code
    );
    assert!(
        ready.qr_payload.starts_with("PICKLINE1:"),
        "{}",
        ready.qr_payload
    );

    // A wrong code is a business answer with the attempts left, not an error.
    let wrong = c
        .pickups
        .verify_code(with_token(
            pb::VerifyCodeRequest {
                idempotency_key: "verify-0".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
                code: "00000-00000".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::verify_code_response::Outcome::Rejected(r)) = wrong.outcome.clone() else {
        panic!("a wrong code must be rejected: {wrong:?}");
    };
    assert_eq!(r.reason(), pb::OrderRejectReason::WrongCode);
    assert_eq!(r.attempts_left, 4);

    // Retries with the same key return the first outcome and change nothing: the same
    // pickup code, and the wrong code is not counted twice.
    let ready_request = pb::MarkReadyRequest {
        idempotency_key: "ready-1".into(),
        order_id: order.order_id,
        staff_id: "anna".into(),
    };
    let ready_again = c
        .pickups
        .mark_ready(with_token(ready_request.clone(), STAFF_S1_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ready_again, ready,
        "a retried MarkReady answers as the first did"
    );
    let wrong_again = c
        .pickups
        .verify_code(with_token(
            pb::VerifyCodeRequest {
                idempotency_key: "verify-0".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
                code: "00000-00000".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrong_again, wrong);
    let picking_again = c
        .pickups
        .start_picking(with_token(
            pb::StartPickingRequest {
                idempotency_key: "pick-1".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        picking_again.order.unwrap().state(),
        pb::OrderState::Picking
    );
    // The same key for a different request is misuse.
    let reused = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                staff_id: "bob".into(),
                ..ready_request
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    // Without a stored response the state machine still refuses a second transition.
    let second = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: "ready-2".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(second.code(), tonic::Code::FailedPrecondition, "{second:?}");

    let verified = c
        .pickups
        .verify_code(with_token(
            pb::VerifyCodeRequest {
                idempotency_key: "verify-1".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
                code: ready.pickup_code.clone(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(
            verified.outcome,
            Some(pb::verify_code_response::Outcome::Verified(_))
        ),
        "{verified:?}"
    );

    let collected = c
        .pickups
        .collect(with_token(
            pb::CollectRequest {
                idempotency_key: "collect-1".into(),
                order_id: order.order_id,
                staff_id: "anna".into(),
                code: ready.qr_payload.clone(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::collect_response::Outcome::Collected(done)) = collected.outcome else {
        panic!("expected collected: {collected:?}");
    };
    assert_eq!(done.order.unwrap().state(), pb::OrderState::Collected);
    let receipt = done.receipt.unwrap();
    assert_eq!(
        receipt.total,
        Some(pb::Money {
            amount_minor: 2_500,
            currency: "EUR".into()
        })
    );
    assert!(receipt.json.contains("Espresso cups"), "{}", receipt.json);
    assert!(receipt.text.contains("25.00"), "{}", receipt.text);
    assert!(receipt.html.contains("<"), "{}", receipt.html);

    // The hand-off consumed the stock: 3 of 5 left, nothing held.
    let cell = sku1_at_s1(&mut c).await;
    assert_eq!((cell.on_hand, cell.held, cell.atp), (3, 0, 3));
}

#[tokio::test]
async fn insufficient_stock_is_a_structured_rejection() {
    let (_server, mut c) = s1_with_sku1(1).await;
    let rejected_request = hold_request("cart-1", "S1", &[("SKU-1", 3), ("SKU-NEVER", 1)]);
    let r = hold(&mut c, rejected_request.clone()).await;
    assert!(!r.replayed);
    // A retry gets the stored rejection, marked as such, alone and inside a batch.
    let retry = hold(&mut c, rejected_request.clone()).await;
    assert_eq!((&retry.outcome, retry.replayed), (&r.outcome, true));
    let batch = c
        .holds
        .batch_hold(with_token(
            pb::BatchHoldRequest {
                holds: vec![rejected_request],
                ..Default::default()
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&batch.results[0].outcome, batch.results[0].replayed),
        (&r.outcome, true)
    );
    let Some(pb::hold_response::Outcome::Rejected(rejected)) = r.outcome else {
        panic!("expected a rejection: {r:?}");
    };
    assert_eq!(rejected.reason(), pb::HoldRejectReason::InsufficientStock);
    let mut shortages: Vec<_> = rejected
        .shortages
        .iter()
        .map(|s| (s.sku.as_str(), s.requested, s.available))
        .collect();
    shortages.sort();
    assert_eq!(shortages, [("SKU-1", 3, 1), ("SKU-NEVER", 1, 0)]);
    // Nothing was reserved.
    let again = hold(&mut c, hold_request("cart-2", "S1", &[("SKU-1", 1)])).await;
    assert!(matches!(
        again.outcome,
        Some(pb::hold_response::Outcome::Granted(_))
    ));
}

#[tokio::test]
async fn store_bound_tokens_cannot_reach_other_stores() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    upsert_store(&mut c, "S2").await;
    // pos:S1 may feed S1 but not S2.
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 1, "pos-1"), POS_TOKEN))
        .await
        .unwrap();
    let denied = c
        .inventory
        .apply_pos_events(with_token(receive("S2", "SKU-1", 1, "pos-2"), POS_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // staff:S1 may list S1's orders but not S2's, nor read an order of S2.
    c.pickups
        .list_orders(with_token(
            pb::ListOrdersRequest {
                store_id: "S1".into(),
                ..Default::default()
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap();
    let denied = c
        .pickups
        .list_orders(with_token(
            pb::ListOrdersRequest {
                store_id: "S2".into(),
                ..Default::default()
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    c.inventory
        .apply_pos_events(with_token(receive("S2", "SKU-1", 1, "pos-3"), ADMIN_TOKEN))
        .await
        .unwrap();
    let r = hold(&mut c, hold_request("cart-s2", "S2", &[("SKU-1", 1)])).await;
    let Some(pb::hold_response::Outcome::Granted(h)) = r.outcome else {
        panic!("{r:?}")
    };
    let denied = c
        .pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(h.hold_id)),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
}

#[tokio::test]
async fn a_retried_hold_returns_the_same_hold_and_survives_a_restart() {
    let (server, mut c) = s1_with_sku1(4).await;
    let req = hold_request("cart-1", "S1", &[("SKU-1", 3)]);
    let first = hold(&mut c, req.clone()).await;
    let retry = hold(&mut c, req.clone()).await;
    let (
        Some(pb::hold_response::Outcome::Granted(a)),
        Some(pb::hold_response::Outcome::Granted(b)),
    ) = (&first.outcome, &retry.outcome)
    else {
        panic!("{first:?} {retry:?}");
    };
    assert_eq!(a.hold_id, b.hold_id);
    assert!(!first.replayed);
    assert!(retry.replayed);

    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    // Still held after the restart: only 1 of 4 available, and the retry still maps
    // to the same hold.
    let cell = sku1_at_s1(&mut c).await;
    assert_eq!((cell.on_hand, cell.held, cell.atp), (4, 3, 1));
    let after = hold(&mut c, req).await;
    let Some(pb::hold_response::Outcome::Granted(h)) = after.outcome else {
        panic!("{after:?}")
    };
    assert_eq!(h.hold_id, a.hold_id);
    assert!(after.replayed);
    let stats = server
        .admin_client()
        .await
        .stats(with_token(pb::StatsRequest {}, ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.stores, stats.active_holds), (1, 1));
}

#[tokio::test]
async fn a_retried_allocation_gets_its_holds_back_after_a_restart() {
    let (server, mut c) = s1_with_sku1(4).await;
    let req = pb::AllocateRequest {
        idempotency_key: "checkout-7".into(),
        origin: Some(pb::allocate_request::Origin::Position(pb::GeoPoint {
            latitude_deg: 52.52,
            longitude_deg: 13.41,
        })),
        lines: vec![pb::Line {
            sku: "SKU-1".into(),
            qty: 3,
        }],
        max_distance_m: 50_000,
        ..Default::default()
    };
    let allocate = |c: &mut common::Clients, req: pb::AllocateRequest| {
        let mut holds = c.holds.clone();
        async move {
            holds
                .allocate(with_token(req, CHECKOUT_TOKEN))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let hold_ids = |r: &pb::AllocateResponse| match &r.outcome {
        Some(pb::allocate_response::Outcome::Allocated(a)) => {
            a.holds.iter().map(|h| h.hold_id).collect::<Vec<_>>()
        }
        other => panic!("expected an allocation, got {other:?}"),
    };
    let first = allocate(&mut c, req.clone()).await;
    assert!(!first.replayed);
    assert_eq!(hold_ids(&first).len(), 1);

    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    let retry = allocate(&mut c, req).await;
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(hold_ids(&retry), hold_ids(&first));
    // Held once: 1 of 4 left, one active hold.
    let cell = sku1_at_s1(&mut c).await;
    assert_eq!((cell.on_hand, cell.held, cell.atp), (4, 3, 1));
}

#[tokio::test]
async fn a_key_used_for_another_cart_is_refused_and_holds_nothing() {
    let (_server, mut c) = s1_with_sku1(10).await;
    let first = hold(&mut c, hold_request("cart-1", "S1", &[("SKU-1", 2)])).await;
    assert!(matches!(
        first.outcome,
        Some(pb::hold_response::Outcome::Granted(_))
    ));
    assert_eq!(sku1_at_s1(&mut c).await.atp, 8);
    // Another cart under the same key: ALREADY_EXISTS, not the first cart's hold.
    let other = c
        .holds
        .hold(with_token(
            hold_request("cart-1", "S1", &[("SKU-1", 5)]),
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    // A batch naming a key twice is refused before anything is held, as is a batch with
    // a reused key.
    let batch = |holds: Vec<pb::HoldRequest>| {
        with_token(
            pb::BatchHoldRequest {
                holds,
                ..Default::default()
            },
            CHECKOUT_TOKEN,
        )
    };
    let twice = c
        .holds
        .batch_hold(batch(vec![
            hold_request("cart-2", "S1", &[("SKU-1", 1)]),
            hold_request("cart-2", "S1", &[("SKU-1", 3)]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::InvalidArgument, "{twice:?}");
    let reused = c
        .holds
        .batch_hold(batch(vec![
            hold_request("cart-3", "S1", &[("SKU-1", 1)]),
            hold_request("cart-1", "S1", &[("SKU-1", 3)]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert_eq!(sku1_at_s1(&mut c).await.atp, 8, "nothing more was held");
}

#[tokio::test]
async fn store_changes_and_pos_batches_replay_under_their_keys() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    let store = |name: &str| pb::StoreIdentity {
        store_id: "S1".into(),
        name: name.into(),
        location: Some(pb::GeoPoint {
            latitude_deg: 52.52,
            longitude_deg: 13.40,
        }),
        time_zone: "Europe/Berlin".into(),
        status: pb::StoreStatus::Open as i32,
        ..Default::default()
    };
    let upsert = |name: &str| {
        with_token(
            pb::UpsertStoreRequest {
                idempotency_key: "store-s1".into(),
                store: Some(store(name)),
            },
            ADMIN_TOKEN,
        )
    };
    let first = c
        .stores
        .upsert_store(upsert("Nine"))
        .await
        .unwrap()
        .into_inner();
    let retry = c
        .stores
        .upsert_store(upsert("Nine"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert_eq!(
        retry, first,
        "a retry gets the first answer (created stays true)"
    );
    let other = c.stores.upsert_store(upsert("Renamed")).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");

    let pos = |qty| with_token(receive("S1", "SKU-1", qty, "pos-9"), POS_TOKEN);
    let applied = c
        .inventory
        .apply_pos_events(pos(4))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .inventory
        .apply_pos_events(pos(4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.outcomes[0].result(), pb::PosEventResult::Applied);
    assert_eq!(again, applied, "the same answer, not DUPLICATE");
    let different = c.inventory.apply_pos_events(pos(5)).await.unwrap_err();
    assert_eq!(different.code(), Code::AlreadyExists, "{different:?}");
}
fn create_order_request(key: &str, hold_id: u64, channel_order_id: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        idempotency_key: key.into(),
        hold_id,
        channel: pb::Channel::Direct as i32,
        channel_order_id: channel_order_id.into(),
        lines: vec![pb::PricedLine {
            sku: "SKU-1".into(),
            qty: 1,
            unit_price_minor: 500,
            ..Default::default()
        }],
        currency: "EUR".into(),
        ..Default::default()
    }
}

async fn create_order(
    c: &mut Clients,
    req: pb::CreateOrderRequest,
) -> Result<pb::CreateOrderResponse, tonic::Status> {
    c.pickups
        .create_order(with_token(req, CHECKOUT_TOKEN))
        .await
        .map(|r| r.into_inner())
}

async fn granted_hold(c: &mut Clients, key: &str) -> u64 {
    let r = hold(c, hold_request(key, "S1", &[("SKU-1", 1)])).await;
    let Some(pb::hold_response::Outcome::Granted(h)) = r.outcome else {
        panic!("expected a grant: {r:?}");
    };
    h.hold_id
}

/// Store S1 with 5 units of SKU-1, two holds of one unit (`cart-1`, `cart-2`), and an
/// order (key `k-1`, channel order `#1`) on the first; returns both hold ids and the
/// order's response.
async fn two_holds_and_an_order(c: &mut Clients) -> (u64, u64, pb::CreateOrderResponse) {
    upsert_store(c, "S1").await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 5, "pos-1"), POS_TOKEN))
        .await
        .unwrap();
    let h1 = granted_hold(c, "cart-1").await;
    let h2 = granted_hold(c, "cart-2").await;
    let first = create_order(c, create_order_request("k-1", h1, "#1"))
        .await
        .unwrap();
    (h1, h2, first)
}

/// CreateOrder's idempotency key names one request (the hold and the channel order id):
/// a retry replays, a different request under the key is ALREADY_EXISTS (also after a
/// restart), and a hold that already has an order is FAILED_PRECONDITION naming it.
#[tokio::test]
async fn create_order_keys_name_one_request_and_a_second_order_is_a_precondition() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    let (h1, h2, first) = two_holds_and_an_order(&mut c).await;
    let Some(pb::create_order_response::Outcome::Order(o1)) = &first.outcome else {
        panic!("{first:?}");
    };
    assert!(!first.replayed);
    // The same request again replays.
    let retry = create_order(&mut c, create_order_request("k-1", h1, "#1"))
        .await
        .unwrap();
    assert!(retry.replayed, "{retry:?}");
    let Some(pb::create_order_response::Outcome::Order(again)) = &retry.outcome else {
        panic!("{retry:?}");
    };
    assert_eq!(again.order_id, o1.order_id);

    let check_reused = |e: tonic::Status| {
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let info = e.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "IDEMPOTENCY_KEY_REUSED");
    };
    // The same key for another hold is misuse: no second order.
    check_reused(
        create_order(&mut c, create_order_request("k-1", h2, "#2"))
            .await
            .unwrap_err(),
    );
    // The same key and hold for another channel order is another request too.
    check_reused(
        create_order(&mut c, create_order_request("k-1", h1, "#9"))
            .await
            .unwrap_err(),
    );
    let no_order = c
        .pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::OrderId(h2)),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(no_order.code(), Code::NotFound, "{no_order:?}");

    // A fresh key on a hold that already has an order: the key was not reused, the
    // hold is in the wrong state.
    let check_exists = |e: tonic::Status| {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let pf = e
            .get_details_precondition_failure()
            .expect("PreconditionFailure detail");
        assert_eq!(pf.violations[0].r#type, "ILLEGAL_TRANSITION");
        assert!(
            e.message().contains(&o1.order_id.to_string()),
            "names the existing order: {e:?}"
        );
        assert!(!e.message().contains("k-2"), "{e:?}");
    };
    check_exists(
        create_order(&mut c, create_order_request("k-2", h1, "#1"))
            .await
            .unwrap_err(),
    );

    // After a restart the engine still knows what the key was used for.
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    check_reused(
        create_order(&mut c, create_order_request("k-1", h2, "#2"))
            .await
            .unwrap_err(),
    );
    let retry = create_order(&mut c, create_order_request("k-1", h1, "#1"))
        .await
        .unwrap();
    assert!(retry.replayed, "{retry:?}");
    check_exists(
        create_order(&mut c, create_order_request("k-3", h1, "#1"))
            .await
            .unwrap_err(),
    );
    // The other hold can still become an order under its own key.
    let second = create_order(&mut c, create_order_request("k-4", h2, "#2"))
        .await
        .unwrap();
    assert!(!second.replayed, "{second:?}");
}

/// pickup.proto: `(channel, channel_order_id)` is unique per channel. A second order for
/// it, from another hold under a fresh key, is ALREADY_EXISTS (ErrorInfo
/// CHANNEL_ORDER_EXISTS naming the existing order), also after a restart, and GetOrder by
/// the channel reference finds the first order.
#[tokio::test]
async fn a_channel_order_id_makes_one_order() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    let (_, h2, first) = two_holds_and_an_order(&mut c).await;
    let Some(pb::create_order_response::Outcome::Order(o1)) = &first.outcome else {
        panic!("{first:?}");
    };
    let check_exists = |e: tonic::Status| {
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        let info = e.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, "CHANNEL_ORDER_EXISTS");
        assert_eq!(info.metadata["order_id"], o1.order_id.to_string());
        assert_eq!(info.metadata["channel_order_id"], "#1");
    };
    let get_by_ref = |c: &mut Clients| {
        let mut pickups = c.pickups.clone();
        async move {
            pickups
                .get_order(with_token(
                    pb::GetOrderRequest {
                        key: Some(pb::get_order_request::Key::ChannelRef(
                            pb::ChannelOrderRef {
                                channel: pb::Channel::Direct as i32,
                                channel_order_id: "#1".into(),
                            },
                        )),
                    },
                    CHECKOUT_TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
        }
    };
    check_exists(
        create_order(&mut c, create_order_request("k-2", h2, "#1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(get_by_ref(&mut c).await.order_id, o1.order_id);

    // After a restart the engine rebuilt its index from the log.
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    check_exists(
        create_order(&mut c, create_order_request("k-3", h2, "#1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(get_by_ref(&mut c).await.order_id, o1.order_id);
    // Another channel order id is another order.
    let second = create_order(&mut c, create_order_request("k-4", h2, "#2"))
        .await
        .unwrap();
    assert!(
        matches!(
            second.outcome,
            Some(pb::create_order_response::Outcome::Order(_))
        ),
        "{second:?}"
    );
}

/// Appends `count` POS receipts to S1 in batches, one record each.
async fn receive_many(c: &mut Clients, tag: &str, count: usize) {
    let mut left = count;
    let mut n = 0;
    while left > 0 {
        let batch = left.min(1_000);
        let events = (0..batch)
            .map(|i| pb::PosEvent {
                pos_event_id: format!("{tag}-{}", n + i),
                store_id: "S1".into(),
                sku: format!("SKU-{}", (n + i) % 7),
                occurred_at_ms: 1,
                change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                    kind: pb::PosDeltaKind::Receive as i32,
                    qty: 1,
                })),
                order_ref: String::new(),
            })
            .collect();
        c.inventory
            .apply_pos_events(with_token(
                pb::ApplyPosEventsRequest {
                    idempotency_key: format!("batch-{tag}-{n}"),
                    events,
                },
                POS_TOKEN,
            ))
            .await
            .unwrap();
        n += batch;
        left -= batch;
    }
}

/// The first batch a subscription of `consumer` (from its cursor) delivers.
async fn first_batch(
    events: &mut EventServiceClient<tonic::transport::Channel>,
    consumer: &str,
) -> Result<pb::EventBatch, tonic::Status> {
    let mut stream = events
        .subscribe(with_token(
            pb::SubscribeRequest {
                consumer: consumer.into(),
                after_seq: 0,
                batch_size: 10,
            },
            ADMIN_TOKEN,
        ))
        .await?
        .into_inner();
    let batch = tokio::time::timeout(common::PATIENCE, stream.message())
        .await
        .expect("a batch in time")?;
    Ok(batch.expect("the stream delivers a batch"))
}

/// A registered consumer resumes from its durable cursor after a restart, with thousands
/// of events in the log, whether the restart reads a snapshot or replays the log; and a
/// consumer registered but never acknowledged is still registered.
#[tokio::test]
async fn registered_consumers_resume_from_their_cursor_after_a_restart() {
    for checkpoint in [false, true] {
        let server = TestServer::start(|_| {}).await;
        let mut c = clients(&server).await;
        let mut events = EventServiceClient::new(server.channel().await);
        for (name, start) in [
            ("c", pb::ConsumerStart::Earliest),
            ("idle", pb::ConsumerStart::Earliest),
        ] {
            events
                .register_consumer(with_token(
                    pb::RegisterConsumerRequest {
                        idempotency_key: format!("reg-{name}"),
                        name: name.into(),
                        start: start as i32,
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .unwrap();
        }
        upsert_store(&mut c, "S1").await;
        receive_many(&mut c, "a", 2_000).await;
        let acked = first_batch(&mut events, "c").await.unwrap().head_seq;
        events
            .ack(with_token(
                pb::AckRequest {
                    idempotency_key: "ack-1".into(),
                    consumer: "c".into(),
                    seq: acked,
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap();
        receive_many(&mut c, "b", 1_500).await;
        if checkpoint {
            server
                .admin_client()
                .await
                .snapshot(with_token(
                    pb::SnapshotRequest {
                        idempotency_key: "snap-1".into(),
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .unwrap();
            receive_many(&mut c, "c", 100).await;
        }

        let dir = server.stop_keeping_dir().await;
        let server = TestServer::start_in(dir, |_| {}).await;
        let mut events = EventServiceClient::new(server.channel().await);
        let batch = first_batch(&mut events, "c")
            .await
            .unwrap_or_else(|e| panic!("checkpoint {checkpoint}: {e:?}"));
        // The first event after the cursor (the Ack's own record carries none).
        let first = batch.events[0].seq;
        assert!(
            (acked + 1..=acked + 2).contains(&first),
            "checkpoint {checkpoint}: {first} after {acked}"
        );
        let idle = first_batch(&mut events, "idle")
            .await
            .unwrap_or_else(|e| panic!("checkpoint {checkpoint}: {e:?}"));
        // From the start of the log: the store's creation is the first domain event.
        assert!(
            matches!(idle.events[0].kind, Some(pb::event::Kind::StoreChanged(_))),
            "checkpoint {checkpoint}: {:?}",
            idle.events[0]
        );
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_batch_key_answers_a_retried_batch_also_after_a_restart() {
    let (server, mut c) = s1_with_sku1(4).await;
    let unkeyed = |qty| pb::HoldRequest {
        idempotency_key: String::new(),
        ..hold_request("unused", "S1", &[("SKU-1", qty)])
    };
    let batch = pb::BatchHoldRequest {
        holds: vec![unkeyed(1), unkeyed(9), unkeyed(2)],
        idempotency_key: "batch-1".into(),
    };
    let send = |c: &mut Clients, req: pb::BatchHoldRequest| {
        let mut holds = c.holds.clone();
        async move { holds.batch_hold(with_token(req, CHECKOUT_TOKEN)).await }
    };
    let ids = |r: &pb::BatchHoldResponse| -> Vec<Option<u64>> {
        r.results
            .iter()
            .map(|h| match &h.outcome {
                Some(pb::hold_response::Outcome::Granted(g)) => Some(g.hold_id),
                _ => None,
            })
            .collect()
    };
    let first = send(&mut c, batch.clone()).await.unwrap().into_inner();
    let held = ids(&first);
    assert!(
        held[0].is_some() && held[1].is_none() && held[2].is_some(),
        "{first:?}"
    );
    assert!(first.results.iter().all(|r| !r.replayed));
    let retry = send(&mut c, batch.clone()).await.unwrap().into_inner();
    assert_eq!(ids(&retry), held);
    assert!(retry.results.iter().all(|r| r.replayed), "{retry:?}");
    // Other holds under the key, or holds with keys of their own in a keyed batch.
    let mut other = batch.clone();
    other.holds.pop();
    let err = send(&mut c, other).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let mut own_keys = batch.clone();
    own_keys.holds[1].idempotency_key = "own".into();
    let err = send(&mut c, own_keys).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("holds[1].idempotency_key"),
        "{err:?}"
    );

    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    let after = send(&mut c, batch).await.unwrap().into_inner();
    assert_eq!(ids(&after), held);
    assert!(after.results.iter().all(|r| r.replayed), "{after:?}");
    // Nothing was held twice: 3 of 4 held.
    let cell = sku1_at_s1(&mut c).await;
    assert_eq!((cell.on_hand, cell.held), (4, 3));
}

#[tokio::test]
async fn a_batch_refuses_a_malformed_hold_whole_and_answers_a_full_store_in_place() {
    let server = TestServer::start(|config| config.data.store_active_holds_max = 2).await;
    let mut c = clients(&server).await;
    upsert_store(&mut c, "S1").await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 10, "pos-1"), POS_TOKEN))
        .await
        .unwrap();
    let send = |c: &mut Clients, holds: Vec<pb::HoldRequest>, key: &str| {
        let mut client = c.holds.clone();
        let req = pb::BatchHoldRequest {
            holds,
            idempotency_key: key.into(),
        };
        async move { client.batch_hold(with_token(req, CHECKOUT_TOKEN)).await }
    };
    let one = |key: &str, store: &str| hold_request(key, store, &[("SKU-1", 1)]);
    let full = |r: &pb::HoldResponse| match &r.outcome {
        Some(pb::hold_response::Outcome::Rejected(j)) => {
            j.reason == pb::HoldRejectReason::StoreHoldsFull as i32
                && j.message.contains("store_active_holds_max = 2")
        }
        _ => false,
    };
    let granted = |r: &pb::HoldResponse| match &r.outcome {
        Some(pb::hold_response::Outcome::Granted(g)) => Some(g.hold_id),
        _ => None,
    };

    // An unknown store in the second hold: nothing of the batch is held.
    let err = send(&mut c, vec![one("k1", "S1"), one("k2", "NOPE")], "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(sku1_at_s1(&mut c).await.held, 0);
    // A hold time beyond the store's maximum, in either form: the field names the hold.
    let too_long = |key: &str| pb::HoldRequest {
        expiry: Some(pb::hold_request::Expiry::TtlMs(1_000_000_000_000)),
        ..one(key, "S1")
    };
    for (holds, key) in [
        (vec![one("k1", "S1"), too_long("k2")], ""),
        (vec![one("", "S1"), too_long("")], "batch-0"),
    ] {
        let err = send(&mut c, holds, key).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("holds[1].ttl_ms"), "{err:?}");
    }
    assert_eq!(sku1_at_s1(&mut c).await.held, 0);

    // Three holds for a table of two: the third is answered as full, in its place.
    let out = send(
        &mut c,
        vec![one("k1", "S1"), one("k2", "S1"), one("k3", "S1")],
        "",
    )
    .await
    .unwrap()
    .into_inner();
    assert!(granted(&out.results[0]).is_some() && granted(&out.results[1]).is_some());
    assert!(full(&out.results[2]), "{out:?}");
    assert_eq!(sku1_at_s1(&mut c).await.held, 2);

    // With a batch key the answer is kept whole, the full table included.
    c.holds
        .release(with_token(
            pb::ReleaseRequest {
                idempotency_key: "r1".into(),
                hold_id: granted(&out.results[0]).unwrap(),
                reason: String::new(),
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap();
    let batch = || vec![one("", "S1"), one("", "S1")];
    let first = send(&mut c, batch(), "batch-1").await.unwrap().into_inner();
    let id = granted(&first.results[0]).expect("room for one");
    assert!(full(&first.results[1]), "{first:?}");
    assert!(first.results.iter().all(|r| !r.replayed));
    let retry = send(&mut c, batch(), "batch-1").await.unwrap().into_inner();
    assert_eq!(granted(&retry.results[0]), Some(id));
    assert!(full(&retry.results[1]), "{retry:?}");
    assert!(retry.results.iter().all(|r| r.replayed), "{retry:?}");
    assert_eq!(sku1_at_s1(&mut c).await.held, 2);
}

#[tokio::test]
async fn a_retried_release_gets_its_first_answer_back_after_a_restart() {
    let (server, mut c) = s1_with_sku1(4).await;
    let first_hold = granted_hold(&mut c, "cart-1").await;
    let release = |c: &mut Clients, key: &str, hold_id: u64| {
        let mut holds = c.holds.clone();
        let req = pb::ReleaseRequest {
            idempotency_key: key.into(),
            hold_id,
            reason: String::new(),
        };
        async move { holds.release(with_token(req, CHECKOUT_TOKEN)).await }
    };
    let first = release(&mut c, "rel-1", first_hold)
        .await
        .unwrap()
        .into_inner();
    assert!(first.released_now && !first.replayed, "{first:?}");

    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    // The first answer, not "already released": the retry changed nothing.
    let after = release(&mut c, "rel-1", first_hold)
        .await
        .unwrap()
        .into_inner();
    assert!(after.released_now && after.replayed, "{after:?}");
    assert_eq!(after.hold, first.hold);
    // Another request under the key is refused, after the restart too.
    let other = granted_hold(&mut c, "cart-2").await;
    let err = release(&mut c, "rel-1", other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // A new key on the released hold runs, and says it was already gone.
    let fresh = release(&mut c, "rel-2", first_hold)
        .await
        .unwrap()
        .into_inner();
    assert!(!fresh.released_now && !fresh.replayed, "{fresh:?}");
    // How it ended, remembered across the restart (issue 15: it was UNSPECIFIED).
    assert_eq!(
        fresh.hold.as_ref().map(|h| h.state()),
        Some(pb::HoldState::Released),
        "{fresh:?}"
    );
    assert_eq!(sku1_at_s1(&mut c).await.held, 1);
    // An action on the ended hold says how it ended too.
    let extend = c
        .holds
        .extend(with_token(
            pb::ExtendRequest {
                idempotency_key: "ext-1".into(),
                hold_id: first_hold,
                ttl_ms: 60_000,
            },
            CHECKOUT_TOKEN,
        ))
        .await;
    let state = match extend {
        Ok(r) => match r.into_inner().outcome {
            Some(pb::extend_response::Outcome::Rejected(r)) => r.hold_state(),
            other => panic!("extend of a released hold: {other:?}"),
        },
        Err(status) => panic!("extend of a released hold: {status:?}"),
    };
    assert_eq!(state, pb::HoldState::Released);
}

/// `Store.updated_at_ms` of S1.
async fn updated_at_ms(
    stores: &mut pb::store_service_client::StoreServiceClient<tonic::transport::Channel>,
) -> i64 {
    stores
        .get_store(with_token(
            pb::GetStoreRequest {
                store_id: "S1".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .store
        .unwrap()
        .updated_at_ms
}

#[tokio::test]
async fn a_store_says_when_it_last_changed_also_after_a_checkpoint_and_restart() {
    fn wall_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    let before = wall_ms();
    upsert_store(&mut c, "S1").await;
    let created = updated_at_ms(&mut c.stores).await;
    assert!((before..=wall_ms()).contains(&created), "{created}");

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    c.stores
        .set_slot_config(with_token(
            pb::SetSlotConfigRequest {
                idempotency_key: "slots-1".into(),
                store_id: "S1".into(),
                slot_config: Some(pb::SlotConfig {
                    slot_ms: 30 * 60_000,
                    lead_time_ms: 60 * 60_000,
                    pickups_per_staff_per_slot: 4,
                    hold_grace_ms: 30 * 60_000,
                    pick_time_per_order_ms: 0,
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let changed = updated_at_ms(&mut c.stores).await;
    assert!(changed > created, "{changed} after {created}");

    server
        .admin_client()
        .await
        .snapshot(with_token(
            pb::SnapshotRequest {
                idempotency_key: "snap-1".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    assert_eq!(
        updated_at_ms(&mut c.stores).await,
        changed,
        "kept by the snapshot"
    );
    server.stop().await.unwrap();
}

/// The events of `consumer`'s subscription (from its cursor) up to the stock change of
/// POS event `last_pos_event`.
async fn events_until(
    events: &mut EventServiceClient<tonic::transport::Channel>,
    consumer: &str,
    last_pos_event: &str,
) -> Vec<pb::Event> {
    let mut stream = events
        .subscribe(with_token(
            pb::SubscribeRequest {
                consumer: consumer.into(),
                after_seq: 0,
                batch_size: 100,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<pb::Event> = Vec::new();
    loop {
        let batch = tokio::time::timeout(common::PATIENCE, stream.message())
            .await
            .expect("a batch in time")
            .unwrap()
            .expect("the stream delivers a batch");
        for e in batch.events {
            let last = matches!(&e.kind, Some(pb::event::Kind::StockChanged(s))
                if s.pos_event.as_ref().is_some_and(|p| p.pos_event_id == last_pos_event));
            out.push(e);
            if last {
                return out;
            }
        }
    }
}

async fn register_earliest(events: &mut EventServiceClient<tonic::transport::Channel>, name: &str) {
    events
        .register_consumer(with_token(
            pb::RegisterConsumerRequest {
                idempotency_key: format!("reg-{name}"),
                name: name.into(),
                start: pb::ConsumerStart::Earliest as i32,
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

/// Events tell what happened when it happened (issue 15, bug 1): an order's events read
/// after the calls came back to back show every state it went through, stock events show
/// the cell as it was then, the collection consumes the hold, and reading the same events
/// again (another consumer, after a restart) gives the same bytes.
#[tokio::test]
async fn events_carry_the_facts_of_their_moment() {
    let server = TestServer::start(|_| {}).await;
    let mut c = clients(&server).await;
    let mut events = EventServiceClient::new(server.channel().await);
    register_earliest(&mut events, "facts").await;
    upsert_store(&mut c, "S1").await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 10, "pos-1"), POS_TOKEN))
        .await
        .unwrap();
    let hold_id = granted_hold(&mut c, "cart-1").await;
    c.holds
        .confirm(with_token(
            pb::ConfirmRequest {
                idempotency_key: "confirm-1".into(),
                hold_id,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap();
    let created = create_order(&mut c, create_order_request("order-1", hold_id, "#1"))
        .await
        .unwrap();
    let Some(pb::create_order_response::Outcome::Order(order)) = created.outcome else {
        panic!("expected an order: {created:?}");
    };
    let staff = |key: &str| (key.to_owned(), order.order_id, "anna".to_owned());
    let (k, order_id, staff_id) = staff("pick-1");
    c.pickups
        .start_picking(with_token(
            pb::StartPickingRequest {
                idempotency_key: k,
                order_id,
                staff_id,
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap();
    let (k, order_id, staff_id) = staff("ready-1");
    let ready = c
        .pickups
        .mark_ready(with_token(
            pb::MarkReadyRequest {
                idempotency_key: k,
                order_id,
                staff_id,
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let (k, order_id, staff_id) = staff("collect-1");
    c.pickups
        .collect(with_token(
            pb::CollectRequest {
                idempotency_key: k,
                order_id,
                staff_id,
                code: ready.qr_payload.clone(),
            },
            STAFF_S1_TOKEN,
        ))
        .await
        .unwrap();
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 5, "pos-2"), POS_TOKEN))
        .await
        .unwrap();

    let seen = events_until(&mut events, "facts", "pos-2").await;
    use pb::event::Kind;
    // Stock events show the cell right after each POS event: 10 received, then 5 more
    // after one unit left with the customer.
    let cells: Vec<(u32, u32)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StockChanged(s)) => s.cell.as_ref().map(|c| (c.on_hand, c.held)),
            _ => None,
        })
        .collect();
    assert_eq!(cells, [(10, 0), (14, 0)]);
    // The hold's story: granted, confirmed, consumed by the hand-off, each with its line.
    let holds: Vec<(pb::HoldState, usize)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::HoldGranted(h) | Kind::HoldChanged(h)) => Some((h.state(), h.lines.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        holds,
        [
            (pb::HoldState::Active, 1),
            (pb::HoldState::Confirmed, 1),
            (pb::HoldState::Consumed, 1)
        ]
    );
    // The order's story: each event shows the order in the state its transition reached,
    // one transition after the other, ending picking -> ready -> collected.
    let changes: Vec<&pb::OrderChanged> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::OrderChanged(o)) => Some(o),
            _ => None,
        })
        .collect();
    let mut from = pb::OrderState::Unspecified;
    for change in &changes {
        let t = change.transition.as_ref().unwrap();
        let state = change.order.as_ref().unwrap().state();
        assert_eq!((t.from(), t.to()), (from, state), "{changes:#?}");
        from = state;
    }
    let states: Vec<pb::OrderState> = changes
        .iter()
        .map(|c| c.order.as_ref().unwrap().state())
        .collect();
    assert!(
        states.ends_with(&[
            pb::OrderState::Picking,
            pb::OrderState::Ready,
            pb::OrderState::Collected
        ]),
        "{states:?}"
    );
    let n = changes.len();
    let picking = changes[n - 3];
    assert_eq!(picking.transition.as_ref().unwrap().staff_id, "anna");
    assert!(picking.order.as_ref().unwrap().pickup_code.is_empty());
    let ready_event = changes[n - 2];
    assert_eq!(
        ready_event.order.as_ref().unwrap().pickup_code,
        ready.pickup_code
    );
    assert!(ready_event.receipt.is_none());
    let collected = changes[n - 1];
    assert_eq!(
        collected.receipt.as_ref().and_then(|r| r.total.clone()),
        Some(pb::Money {
            amount_minor: 500,
            currency: "EUR".into()
        })
    );

    // The same events read again, by another consumer and after a restart, are the same.
    register_earliest(&mut events, "again").await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 1, "pos-3"), POS_TOKEN))
        .await
        .unwrap();
    let again = events_until(&mut events, "again", "pos-3").await;
    assert_eq!(again[..seen.len()], seen[..]);
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let mut c = clients(&server).await;
    c.inventory
        .apply_pos_events(with_token(receive("S1", "SKU-1", 1, "pos-4"), POS_TOKEN))
        .await
        .unwrap();
    let mut events = EventServiceClient::new(server.channel().await);
    let after_restart = events_until(&mut events, "facts", "pos-4").await;
    assert_eq!(after_restart[..seen.len()], seen[..]);
    server.stop().await.unwrap();
}
