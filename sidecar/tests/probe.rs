//! What an independent client probe (Python grpcio) found, over real loopback gRPC:
//! malformed and oversized messages, both reflection versions, read scopes, who may
//! cancel as whom, and request validation.

mod common;

use common::{
    ADMIN_TOKEN, CHECKOUT_TOKEN, Clients, POS_TOKEN, STAFF_S1_TOKEN, TestServer, add_token,
    clients, with_token,
};
use pickline_sidecar::pb;
use prost::bytes::{Buf as _, BufMut as _};
use tokio_stream::StreamExt as _;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_types::StatusExt as _;

const OMS_TOKEN: &str = "test-oms-token-0123456789abcdefgh";
const POS_S2_TOKEN: &str = "test-pos-s2-token-0123456789abcde";
const STAFF_S2_TOKEN: &str = "test-staff-s2-token-0123456789abc";

async fn start() -> TestServer {
    TestServer::start(|c| {
        add_token(c, "oms", OMS_TOKEN, &["oms"]);
        add_token(c, "till-s2", POS_S2_TOKEN, &["pos:S2"]);
        add_token(c, "tablet-s2", STAFF_S2_TOKEN, &["staff:S2"]);
    })
    .await
}

/// Sends and receives message bytes as they are, to put malformed messages on the wire.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// A unary call of `path` with `message` as its request bytes.
async fn raw_unary(server: &TestServer, path: &'static str, message: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(with_token(message, ADMIN_TOKEN), path, Raw)
        .await
        .expect_err("the server should refuse the message")
}

const GET_STORE: &str = "/pickline.v1.StoreService/GetStore";

#[tokio::test]
async fn malformed_messages_are_invalid_argument_not_internal() {
    let server = start().await;
    // Field 1 (store_id, a string) holding bytes that are not UTF-8.
    let not_utf8 = raw_unary(&server, GET_STORE, vec![0x0a, 0x02, 0xff, 0xfe]).await;
    // A length-delimited field whose length runs past the end.
    let truncated = raw_unary(&server, GET_STORE, vec![0x0a, 0x7f, b'S']).await;
    // Not protobuf at all.
    let garbage = raw_unary(
        &server,
        "/pickline.v1.HoldService/Hold",
        vec![0xff, 0xff, 0xff, 0xff],
    )
    .await;
    for status in [not_utf8, truncated, garbage] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let bad = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "request");
    }
    // Health keeps working beside it.
    assert_eq!(
        server.health("").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_message_above_the_limit_is_resource_exhausted_with_a_quota_failure() {
    const LIMIT: usize = 4096;
    let server = TestServer::start(|c| c.grpc.max_message_bytes = LIMIT).await;
    // GetStoreRequest { store_id: 5,000 bytes }: valid protobuf, too large.
    let mut big = vec![0x0a, 0x88, 0x27];
    big.extend(std::iter::repeat_n(b'S', 5_000));
    let check = |status: Status| {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let quota = status.get_details_quota_failure().expect("QuotaFailure");
        assert_eq!(quota.violations[0].subject, "grpc.max_message_bytes");
        assert!(
            quota.violations[0].description.contains("4096"),
            "{quota:?}"
        );
    };
    check(raw_unary(&server, GET_STORE, big.clone()).await);

    // The same through the client-streaming POS feed.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path =
        http::uri::PathAndQuery::from_static("/pickline.v1.InventoryService/StreamPosEvents");
    let status = grpc
        .client_streaming(
            with_token(tokio_stream::iter([big]), ADMIN_TOKEN),
            path,
            Raw,
        )
        .await
        .unwrap_err();
    check(status);
}

mod reflection {
    use super::*;

    /// The services a reflection client of either version is told about.
    const SERVICES: [&str; 11] = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "pickline.v1.AdminService",
        "pickline.v1.EventService",
        "pickline.v1.HoldService",
        "pickline.v1.IntakeService",
        "pickline.v1.InventoryService",
        "pickline.v1.NotifyService",
        "pickline.v1.PickupService",
        "pickline.v1.StoreService",
    ];

    #[tokio::test]
    async fn v1alpha_lists_the_services_and_resolves_the_contract() {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let server = start().await;
        let ask = |request: MessageRequest| {
            let server = &server;
            async move {
                let mut client = ServerReflectionClient::new(server.channel().await);
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let mut responses = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .expect("v1alpha reflection is served")
                    .into_inner();
                let response = responses.next().await.expect("one response").unwrap();
                response.message_response.expect("a message response")
            }
        };
        let MessageResponse::ListServicesResponse(list) =
            ask(MessageRequest::ListServices(String::new())).await
        else {
            panic!("expected a service list");
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, SERVICES);
        let response = ask(MessageRequest::FileContainingSymbol(
            "pickline.v1.HoldService".into(),
        ))
        .await;
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("expected file descriptors, got {response:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    #[tokio::test]
    async fn v1_lists_the_same_services() {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let server = start().await;
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("expected a service list");
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, SERVICES);
    }
}

// ---------------------------------------------------------------- domain setup

async fn upsert_store(c: &mut Clients, id: &str) {
    c.stores
        .upsert_store(with_token(
            pb::UpsertStoreRequest {
                idempotency_key: format!("store-{id}"),
                store: Some(pb::StoreIdentity {
                    store_id: id.into(),
                    name: format!("Store {id}"),
                    location: Some(pb::GeoPoint {
                        latitude_deg: 52.52,
                        longitude_deg: 13.40,
                    }),
                    time_zone: "UTC".into(),
                    status: pb::StoreStatus::Open as i32,
                    ..Default::default()
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

async fn receive(c: &mut Clients, store: &str, sku: &str, qty: u32) {
    let id = format!("recv-{store}-{sku}-{qty}");
    c.inventory
        .apply_pos_events(with_token(
            pb::ApplyPosEventsRequest {
                idempotency_key: id.clone(),
                events: vec![pb::PosEvent {
                    pos_event_id: id,
                    store_id: store.into(),
                    sku: sku.into(),
                    occurred_at_ms: 1,
                    change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                        kind: pb::PosDeltaKind::Receive as i32,
                        qty,
                    })),
                    order_ref: String::new(),
                }],
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
}

fn line(sku: &str, qty: u32) -> pb::Line {
    pb::Line {
        sku: sku.into(),
        qty,
    }
}

/// Stores S1 and S2 with 10 MUGs each.
async fn two_stores(server: &TestServer) -> Clients {
    let mut c = clients(server).await;
    for store in ["S1", "S2"] {
        upsert_store(&mut c, store).await;
        receive(&mut c, store, "MUG", 10).await;
    }
    c
}

/// A confirmed order of one MUG at `store`; returns its id.
async fn order(c: &mut Clients, store: &str, key: &str) -> u64 {
    let held = c
        .holds
        .hold(with_token(
            pb::HoldRequest {
                idempotency_key: format!("hold-{key}"),
                store_id: store.into(),
                lines: vec![line("MUG", 1)],
                expiry: None,
            },
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(h)) = held.outcome else {
        panic!("{held:?}");
    };
    let created = c
        .pickups
        .create_order(with_token(
            pb::CreateOrderRequest {
                idempotency_key: format!("order-{key}"),
                hold_id: h.hold_id,
                channel: pb::Channel::Direct as i32,
                channel_order_id: key.into(),
                lines: vec![pb::PricedLine {
                    sku: "MUG".into(),
                    qty: 1,
                    unit_price_minor: 500,
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
    let Some(pb::create_order_response::Outcome::Order(o)) = created.outcome else {
        panic!("{created:?}");
    };
    o.order_id
}

fn denied<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Status {
    let status = result.expect_err("expected PERMISSION_DENIED");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "MISSING_SCOPE");
    status
}

// ---------------------------------------------------------------- scopes

#[tokio::test]
async fn store_metadata_and_stock_are_readable_by_every_documented_scope() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    // StoreService reads: every scope, every store.
    for token in [
        POS_S2_TOKEN,
        STAFF_S2_TOKEN,
        POS_TOKEN,
        CHECKOUT_TOKEN,
        OMS_TOKEN,
    ] {
        let store = c
            .stores
            .get_store(with_token(
                pb::GetStoreRequest {
                    store_id: "S1".into(),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("{token}: {s:?}"))
            .into_inner();
        assert_eq!(store.store.unwrap().identity.unwrap().store_id, "S1");
        let listed = c
            .stores
            .list_stores(with_token(pb::ListStoresRequest::default(), token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.stores.len(), 2, "{token}");
    }
    // InventoryService reads: checkout, oms, staff (of any store), admin.
    for token in [CHECKOUT_TOKEN, OMS_TOKEN, STAFF_S2_TOKEN] {
        let cell = c
            .inventory
            .get_availability(with_token(
                pb::GetAvailabilityRequest {
                    store_id: "S1".into(),
                    sku: "MUG".into(),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("{token}: {s:?}"))
            .into_inner();
        assert_eq!(cell.cell.unwrap().atp, 10);
        let page = c
            .inventory
            .list_store_availability(with_token(
                pb::ListStoreAvailabilityRequest {
                    store_id: "S1".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("{token}: {s:?}"))
            .into_inner();
        assert_eq!(page.cells.len(), 1, "{token}");
        let across = c
            .inventory
            .get_sku_availability(with_token(
                pb::GetSkuAvailabilityRequest {
                    sku: "MUG".into(),
                    store_ids: Vec::new(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(across.cells.len(), 2, "{token}");
    }
    // The POS feeds stock; it does not read it through InventoryService.
    denied(
        c.inventory
            .get_availability(with_token(
                pb::GetAvailabilityRequest {
                    store_id: "S2".into(),
                    sku: "MUG".into(),
                },
                POS_S2_TOKEN,
            ))
            .await,
    );
}

#[tokio::test]
async fn orders_stay_with_their_store() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    let id = order(&mut c, "S1", "o-1").await;
    denied(
        c.pickups
            .list_orders(with_token(
                pb::ListOrdersRequest {
                    store_id: "S1".into(),
                    ..Default::default()
                },
                STAFF_S2_TOKEN,
            ))
            .await,
    );
    denied(
        c.pickups
            .get_order(with_token(
                pb::GetOrderRequest {
                    key: Some(pb::get_order_request::Key::OrderId(id)),
                },
                STAFF_S2_TOKEN,
            ))
            .await,
    );
}

fn cancel(key: &str, order_id: u64, actor: pb::CancelActor) -> pb::CancelRequest {
    pb::CancelRequest {
        idempotency_key: key.into(),
        order_id,
        actor: actor as i32,
        staff_id: "emp-7".into(),
        reason: "probe".into(),
    }
}

#[tokio::test]
async fn cancel_checks_the_actor_against_the_token() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    let id = order(&mut c, "S1", "o-2").await;
    use pb::CancelActor::{Customer, Store};
    // Checkout and the OMS may not speak for the store, nor staff for the customer,
    // nor staff of another store for this one.
    for (token, actor) in [
        (CHECKOUT_TOKEN, Store),
        (OMS_TOKEN, Store),
        (STAFF_S1_TOKEN, Customer),
        (STAFF_S2_TOKEN, Store),
    ] {
        let status = denied(
            c.pickups
                .cancel(with_token(cancel(&format!("c-{token}"), id, actor), token))
                .await,
        );
        assert_eq!(
            status.get_details_error_info().unwrap().metadata["rpc"],
            "/pickline.v1.PickupService/Cancel"
        );
    }
    // The store's own staff may cancel as the store.
    let cancelled = c
        .pickups
        .cancel(with_token(cancel("c-ok", id, Store), STAFF_S1_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.order.unwrap().state(), pb::OrderState::Cancelled);
    // And the customer (through checkout) another order.
    let id = order(&mut c, "S1", "o-3").await;
    c.pickups
        .cancel(with_token(cancel("c-ok-2", id, Customer), CHECKOUT_TOKEN))
        .await
        .unwrap();
}

// ---------------------------------------------------------------- validation

/// Asserts INVALID_ARGUMENT with one BadRequest violation of `field`.
#[track_caller]
fn invalid<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let bad = status.get_details_bad_request().expect("BadRequest detail");
    assert_eq!(bad.field_violations[0].field, field, "{status:?}");
}

fn hold_req(key: &str, store: &str, lines: Vec<pb::Line>) -> pb::HoldRequest {
    pb::HoldRequest {
        idempotency_key: key.into(),
        store_id: store.into(),
        lines,
        expiry: None,
    }
}

#[tokio::test]
async fn ids_names_and_lines_are_validated_as_the_contract_says() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    let long_store = "S".repeat(65);
    let long_sku = "K".repeat(65);
    fn t<M>(message: M) -> tonic::Request<M> {
        with_token(message, ADMIN_TOKEN)
    }

    // Store ids: 1..=64 bytes; an empty one is malformed, not an unknown store.
    let mut store = pb::StoreIdentity {
        store_id: long_store.clone(),
        name: "x".into(),
        location: Some(pb::GeoPoint::default()),
        time_zone: "UTC".into(),
        status: pb::StoreStatus::Open as i32,
        ..Default::default()
    };
    invalid(
        c.stores
            .upsert_store(t(pb::UpsertStoreRequest {
                idempotency_key: "u".into(),
                store: Some(store.clone()),
            }))
            .await,
        "store.store_id",
    );
    store.store_id = String::new();
    invalid(
        c.stores
            .upsert_store(t(pb::UpsertStoreRequest {
                idempotency_key: "u2".into(),
                store: Some(store),
            }))
            .await,
        "store.store_id",
    );
    for id in [String::new(), long_store.clone()] {
        invalid(
            c.stores
                .get_store(t(pb::GetStoreRequest {
                    store_id: id.clone(),
                }))
                .await,
            "store_id",
        );
        invalid(
            c.stores
                .set_hours(t(pb::SetHoursRequest {
                    idempotency_key: "h".into(),
                    store_id: id.clone(),
                    ..Default::default()
                }))
                .await,
            "store_id",
        );
        invalid(
            c.stores
                .pause_pickups(t(pb::PausePickupsRequest {
                    idempotency_key: "p".into(),
                    store_id: id.clone(),
                    ..Default::default()
                }))
                .await,
            "store_id",
        );
        invalid(
            c.stores
                .resume_pickups(t(pb::ResumePickupsRequest {
                    idempotency_key: "r".into(),
                    store_id: id.clone(),
                    ..Default::default()
                }))
                .await,
            "store_id",
        );
        invalid(
            c.inventory
                .get_availability(t(pb::GetAvailabilityRequest {
                    store_id: id.clone(),
                    sku: "MUG".into(),
                }))
                .await,
            "store_id",
        );
        invalid(
            c.holds
                .hold(t(hold_req("h", &id, vec![line("MUG", 1)])))
                .await,
            "store_id",
        );
        invalid(
            c.pickups
                .list_orders(t(pb::ListOrdersRequest {
                    store_id: id.clone(),
                    ..Default::default()
                }))
                .await,
            "store_id",
        );
    }

    // SKUs: 1..=64 bytes, on reads and on POS writes.
    for sku in [String::new(), long_sku.clone()] {
        invalid(
            c.inventory
                .get_availability(t(pb::GetAvailabilityRequest {
                    store_id: "S1".into(),
                    sku: sku.clone(),
                }))
                .await,
            "sku",
        );
        invalid(
            c.inventory
                .get_sku_availability(t(pb::GetSkuAvailabilityRequest {
                    sku: sku.clone(),
                    store_ids: Vec::new(),
                }))
                .await,
            "sku",
        );
        invalid(
            c.holds
                .hold(t(hold_req("h-sku", "S1", vec![line(&sku, 1)])))
                .await,
            "lines[0].sku",
        );
    }
    invalid(
        c.inventory
            .get_sku_availability(t(pb::GetSkuAvailabilityRequest {
                sku: "MUG".into(),
                store_ids: vec!["S1".into(), String::new()],
            }))
            .await,
        "store_ids[1]",
    );
    invalid(
        c.inventory
            .apply_pos_events(with_token(
                pb::ApplyPosEventsRequest {
                    idempotency_key: "pos-long".into(),
                    events: vec![pb::PosEvent {
                        pos_event_id: "e1".into(),
                        store_id: "S1".into(),
                        sku: long_sku.clone(),
                        occurred_at_ms: 1,
                        change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                            kind: pb::PosDeltaKind::Receive as i32,
                            qty: 1,
                        })),
                        order_ref: String::new(),
                    }],
                },
                POS_TOKEN,
            ))
            .await,
        "events[0].sku",
    );

    // Each SKU at most once in a hold and an allocation.
    invalid(
        c.holds
            .hold(t(hold_req(
                "h-dup",
                "S1",
                vec![line("MUG", 1), line("MUG", 1)],
            )))
            .await,
        "lines[1].sku",
    );
    invalid(
        c.holds
            .allocate(t(pb::AllocateRequest {
                idempotency_key: "a-dup".into(),
                origin: Some(pb::allocate_request::Origin::PreferredStoreId("S1".into())),
                lines: vec![line("MUG", 1), line("MUG", 2)],
                max_distance_m: 10_000,
                ..Default::default()
            }))
            .await,
        "lines[1].sku",
    );

    // Consumer names: 1..=64 bytes of [a-z0-9_-].
    let mut events = pb::event_service_client::EventServiceClient::new(server.channel().await);
    for name in [
        String::new(),
        "Bad Name".into(),
        "UPPER".into(),
        "a/b".into(),
        "a".repeat(65),
    ] {
        invalid(
            events
                .register_consumer(t(pb::RegisterConsumerRequest {
                    idempotency_key: format!("rc-{}", name.len()),
                    name: name.clone(),
                    start: pb::ConsumerStart::Latest as i32,
                }))
                .await,
            "name",
        );
    }
    events
        .register_consumer(t(pb::RegisterConsumerRequest {
            idempotency_key: "rc-ok".into(),
            name: "oms-feed_2".into(),
            start: pb::ConsumerStart::Latest as i32,
        }))
        .await
        .unwrap();

    // Dates are YYYY-MM-DD exactly.
    invalid(
        c.stores
            .set_hours(t(pb::SetHoursRequest {
                idempotency_key: "h-date".into(),
                store_id: "S1".into(),
                exceptions: vec![pb::DateException {
                    date: "20240101".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }))
            .await,
        "exceptions[0].date",
    );

    // Page tokens are the server's.
    invalid(
        c.stores
            .list_stores(t(pb::ListStoresRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            }))
            .await,
        "page_token",
    );

    // Prices are not negative.
    invalid(
        c.pickups
            .create_order(t(pb::CreateOrderRequest {
                idempotency_key: "o-neg".into(),
                hold_id: 1,
                channel: pb::Channel::Direct as i32,
                lines: vec![pb::PricedLine {
                    sku: "MUG".into(),
                    qty: 1,
                    unit_price_minor: -1,
                    ..Default::default()
                }],
                currency: "EUR".into(),
                ..Default::default()
            }))
            .await,
        "lines[0].unit_price_minor",
    );
}

#[tokio::test]
async fn list_stores_pages_with_its_own_tokens() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    upsert_store(&mut c, "S3").await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .stores
            .list_stores(with_token(
                pb::ListStoresRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                CHECKOUT_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.stores
                .into_iter()
                .map(|s| s.identity.unwrap().store_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["S1", "S2", "S3"]);
}

#[tokio::test]
async fn batch_hold_names_the_field_inside_the_batch() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    let status = c
        .holds
        .batch_hold(with_token(
            pb::BatchHoldRequest {
                holds: vec![
                    hold_req("b-0", "S1", vec![line("MUG", 1)]),
                    hold_req("b-1", "S1", vec![line("MUG", 0)]),
                ],
                ..Default::default()
            },
            CHECKOUT_TOKEN,
        ))
        .await;
    invalid(status, "holds[1].lines[0].qty");
}

#[tokio::test]
async fn unknown_ids_are_echoed_shortened() {
    let server = start().await;
    let mut c = clients(&server).await;
    let huge = "X".repeat(10_000);
    // A default client (16 KiB of metadata at most) still sees the real answer.
    let status = c
        .pickups
        .get_order(with_token(
            pb::GetOrderRequest {
                key: Some(pb::get_order_request::Key::ChannelRef(
                    pb::ChannelOrderRef {
                        channel: pb::Channel::Direct as i32,
                        channel_order_id: huge,
                    },
                )),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let info = status.get_details_resource_info().expect("ResourceInfo");
    assert_eq!(info.resource_name, format!("{}…", "X".repeat(64)));
    assert!(status.message().len() < 200, "{}", status.message());
}

// ---------------------------------------------------------------- unset ids, consumers

/// proto3 sends an unset id as 0: it is INVALID_ARGUMENT, never hold or order 0 (which
/// the engine never issues: the first hold of the first store is not 0).
#[tokio::test]
async fn an_unset_id_is_invalid_and_no_hold_is_ever_zero() {
    let server = start().await;
    let mut c = two_stores(&server).await;
    let first = order(&mut c, "S1", "first").await;
    assert_ne!(first, 0, "the first hold of the first store");
    let release = c
        .holds
        .release(with_token(
            pb::ReleaseRequest {
                idempotency_key: "r0".into(),
                hold_id: 0,
                reason: String::new(),
            },
            CHECKOUT_TOKEN,
        ))
        .await;
    invalid(release, "hold_id");
    let get = |key| with_token(pb::GetOrderRequest { key: Some(key) }, ADMIN_TOKEN);
    invalid(
        c.pickups
            .get_order(get(pb::get_order_request::Key::OrderId(0)))
            .await,
        "order_id",
    );
    invalid(
        c.pickups
            .get_order(get(pb::get_order_request::Key::ChannelRef(
                pb::ChannelOrderRef {
                    channel: pb::Channel::Unspecified as i32,
                    channel_order_id: "first".into(),
                },
            )))
            .await,
        "channel_ref.channel",
    );
    invalid(
        c.pickups
            .get_order(get(pb::get_order_request::Key::ChannelRef(
                pb::ChannelOrderRef {
                    channel: pb::Channel::Direct as i32,
                    channel_order_id: String::new(),
                },
            )))
            .await,
        "channel_ref.channel_order_id",
    );
    // The order is still there, untouched.
    let got = c
        .pickups
        .get_order(get(pb::get_order_request::Key::OrderId(first)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.order.unwrap().state(), pb::OrderState::Confirmed);
}

#[tokio::test]
async fn consumers_are_named_and_their_registration_replays_under_its_key() {
    use pb::event_service_client::EventServiceClient;
    let server = start().await;
    let mut events = EventServiceClient::new(server.channel().await);
    let register = |key: &str, name: &str| {
        with_token(
            pb::RegisterConsumerRequest {
                idempotency_key: key.into(),
                name: name.into(),
                start: pb::ConsumerStart::Earliest as i32,
            },
            ADMIN_TOKEN,
        )
    };
    let first = events
        .register_consumer(register("reg-1", "oms"))
        .await
        .unwrap()
        .into_inner();
    let again = events
        .register_consumer(register("reg-1", "oms"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    assert_eq!(again, first, "a retry gets the first answer");
    let other = events
        .register_consumer(register("reg-1", "billing"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    let ack = events
        .ack(with_token(
            pb::AckRequest {
                idempotency_key: "ack-0".into(),
                consumer: String::new(),
                seq: 1,
            },
            ADMIN_TOKEN,
        ))
        .await;
    invalid(ack, "consumer");
    let sub = events
        .subscribe(with_token(
            pb::SubscribeRequest {
                consumer: String::new(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await;
    invalid(sub, "consumer");
}
