//! The server over real loopback gRPC: auth, health, reflection, overload, timeout,
//! metrics, shutdown.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, CHECKOUT_TOKEN, PATIENCE, POS_TOKEN, TestServer, http_get, with_token};
use pickline_sidecar::{
    grpc::status::RETRY_AFTER_MS,
    pb::{
        HoldRequest, PingRequest, PingResponse, admin_service_server,
        hold_service_client::HoldServiceClient,
    },
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use tonic_types::StatusExt as _;

async fn ping(server: &TestServer, token: Option<&str>) -> Result<PingResponse, Status> {
    let mut client = server.admin_client().await;
    let request = match token {
        Some(token) => with_token(PingRequest {}, token),
        None => tonic::Request::new(PingRequest {}),
    };
    client.ping(request).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn ping_works_with_an_admin_or_a_checkout_token() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(
        ping(&server, Some(ADMIN_TOKEN)).await.unwrap(),
        PingResponse {}
    );
    assert_eq!(
        ping(&server, Some(CHECKOUT_TOKEN)).await.unwrap(),
        PingResponse {}
    );
}

#[tokio::test]
async fn ping_without_a_valid_token_is_unauthenticated() {
    let server = TestServer::start(|_| {}).await;
    let missing = ping(&server, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let unknown = ping(&server, Some("not-a-configured-token-at-all"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");

    let mut client = server.admin_client().await;
    let mut request = tonic::Request::new(PingRequest {});
    let basic = format!("Basic {ADMIN_TOKEN}");
    request
        .metadata_mut()
        .insert("authorization", basic.parse().unwrap());
    let malformed = client.ping(request).await.unwrap_err();
    assert_eq!(malformed.code(), Code::Unauthenticated, "{malformed:?}");
}

#[tokio::test]
async fn ping_with_a_token_lacking_the_scope_is_permission_denied() {
    let server = TestServer::start(|_| {}).await;
    let denied = ping(&server, Some(POS_TOKEN)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let info = denied.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "MISSING_SCOPE");
    assert_eq!(info.metadata["rpc"], "/pickline.v1.AdminService/Ping");
}

#[tokio::test]
async fn domain_rpcs_need_a_token_and_the_scope_and_validate_their_input() {
    let server = TestServer::start(|_| {}).await;
    let mut holds = HoldServiceClient::new(server.channel().await);
    let request = HoldRequest {
        idempotency_key: "k1".into(),
        store_id: "S1".into(),
        ..Default::default()
    };
    let anonymous = holds.hold(request.clone()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    let wrong_scope = holds
        .hold(with_token(request.clone(), POS_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        wrong_scope.code(),
        Code::PermissionDenied,
        "{wrong_scope:?}"
    );
    // An empty request is understood and refused field by field, not left unimplemented.
    let invalid = holds
        .allocate(with_token(
            pickline_sidecar::pb::AllocateRequest::default(),
            CHECKOUT_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let bad = invalid
        .get_details_bad_request()
        .expect("BadRequest detail");
    assert_eq!(bad.field_violations[0].field, "idempotency_key");
}

#[tokio::test]
async fn health_reports_serving_after_start() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(server.health("").await, ServingStatus::Serving);
    assert_eq!(
        server.health(admin_service_server::SERVICE_NAME).await,
        ServingStatus::Serving
    );
    let (status, body) = http_get(server.http_addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.expect("one response").unwrap();
    response.message_response.expect("a message response")
}

#[tokio::test]
async fn reflection_lists_the_served_services_and_knows_the_whole_contract() {
    let server = TestServer::start(|_| {}).await;
    let MessageResponse::ListServicesResponse(list) = reflect(
        server.channel().await,
        MessageRequest::ListServices(String::new()),
    )
    .await
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
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
        ]
    );
    // The schema is there for clients to generate code from.
    let response = reflect(
        server.channel().await,
        MessageRequest::FileContainingSymbol("pickline.v1.HoldService".into()),
    )
    .await;
    let MessageResponse::FileDescriptorResponse(files) = response else {
        panic!("expected file descriptors, got {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// Starts a Ping whose request message never arrives: the server's handler waits for
/// it, holding a concurrency permit, like a slow client. Returns the pending call.
fn start_blocked_ping(
    channel: Channel,
    token: &'static str,
) -> tokio::task::JoinHandle<Result<tonic::Response<PingResponse>, Status>> {
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/pickline.v1.AdminService/Ping");
        let codec = tonic_prost::ProstCodec::<PingRequest, PingResponse>::default();
        let request = with_token(tokio_stream::pending::<PingRequest>(), token);
        grpc.client_streaming(request, path, codec).await
    })
}

#[tokio::test]
async fn overload_answers_resource_exhausted_with_a_retry_hint_then_recovers() {
    let server = TestServer::start(|c| {
        c.grpc.concurrency_limit = 1;
        c.grpc.retry_after_ms = 75;
        c.grpc.request_timeout_ms = 60_000;
    })
    .await;
    let blocked = start_blocked_ping(server.channel().await, ADMIN_TOKEN);

    // Once the blocked call holds the only permit, a second call is shed at once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let shed = loop {
        match ping(&server, Some(CHECKOUT_TOKEN)).await {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            Err(status) => panic!("unexpected {status:?}"),
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "never shed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    assert_eq!(shed.metadata().get(RETRY_AFTER_MS).unwrap(), "75");
    let retry = shed.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(75)));
    assert!(
        !blocked.is_finished(),
        "the blocked call should still be in flight"
    );

    // Cancelling the slow call frees its permit: no leak.
    blocked.abort();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while ping(&server, Some(CHECKOUT_TOKEN)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "permit never released"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_request_past_the_time_limit_is_deadline_exceeded() {
    let server = TestServer::start(|c| c.grpc.request_timeout_ms = 200).await;
    let blocked = start_blocked_ping(server.channel().await, ADMIN_TOKEN);
    let result = tokio::time::timeout(PATIENCE, blocked)
        .await
        .expect("the server should end the call")
        .unwrap();
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("200 ms"), "{status:?}");
}

/// The value of the sample of `metric` whose labels include every one of `labels`.
fn sample(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_per_rpc_and_code() {
    let server = TestServer::start(|_| {}).await;
    ping(&server, Some(ADMIN_TOKEN)).await.unwrap();
    ping(&server, None).await.unwrap_err();
    let (status, body) = http_get(server.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    let rpc = r#"rpc="/pickline.v1.AdminService/Ping""#;
    let ok = sample(
        &body,
        "pickline_grpc_requests_total",
        &[rpc, r#"code="OK""#],
    );
    assert!(
        ok.is_some_and(|n| n >= 1.0),
        "no OK Ping counted in:\n{body}"
    );
    let denied = sample(
        &body,
        "pickline_grpc_requests_total",
        &[rpc, r#"code="UNAUTHENTICATED""#],
    );
    assert!(
        denied.is_some_and(|n| n >= 1.0),
        "no rejected Ping counted in:\n{body}"
    );
    let latency = sample(
        &body,
        "pickline_grpc_request_duration_seconds_count",
        &[rpc],
    );
    assert!(
        latency.is_some_and(|n| n >= 2.0),
        "no Ping latency in:\n{body}"
    );
    assert!(
        body.contains("pickline_ready 1"),
        "ready gauge missing in:\n{body}"
    );
}

#[tokio::test]
async fn shutdown_drains_and_stops_accepting() {
    let server = TestServer::start(|_| {}).await;
    ping(&server, Some(ADMIN_TOKEN)).await.unwrap();
    let addr = server.grpc_addr;
    server.stop().await.expect("clean shutdown");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "the listener should be closed after shutdown"
    );
}
