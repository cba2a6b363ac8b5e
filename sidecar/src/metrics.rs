//! Prometheus metrics: one request counter and one latency histogram per RPC, recorded
//! by a tower layer around every gRPC request (so handlers record nothing themselves),
//! plus the gauges the engine feeds through [`EngineGauges::publish`].
//!
//! The recorder is process-global (the `metrics` facade has one); [`install`] installs
//! it once and hands out the same [`PrometheusHandle`] to every server in the process,
//! which is what in-process tests start several of.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll},
    time::Instant,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::{Code, body::Body};
use tower::{Layer, Service};

use crate::{grpc::rpc, grpc::status::code_name, server::Readiness};

/// Counter: gRPC requests finished, labels `rpc` (path) and `code` (status name).
pub const REQUESTS_TOTAL: &str = "pickline_grpc_requests_total";
/// Histogram: gRPC request latency until response headers, seconds, label `rpc`.
pub const REQUEST_DURATION_SECONDS: &str = "pickline_grpc_request_duration_seconds";
/// Gauge: gRPC requests being handled now.
pub const IN_FLIGHT: &str = "pickline_grpc_in_flight";
/// Gauge: 1 once the engine has recovered and the server is SERVING, else 0.
pub const READY: &str = "pickline_ready";
/// Counter: intake webhook deliveries answered, labels `channel` (a known channel or
/// `unknown`) and `status` (the HTTP status code).
pub const INTAKE_WEBHOOKS_TOTAL: &str = "pickline_intake_webhooks_total";
/// Counter: intake deliveries from every source, labels `source` (webhook, grpc, nats)
/// and `outcome` (accepted, queued, dead_lettered, nothing_to_do, shed, unavailable).
pub const INTAKE_DELIVERIES_TOTAL: &str = "pickline_intake_deliveries_total";
/// Gauge: intake entries taken and not yet settled (the bounded queue's depth).
pub const INTAKE_QUEUE_DEPTH: &str = "pickline_intake_queue_depth";
/// Gauge: intake dead letters waiting for an operator.
pub const INTAKE_DEAD_LETTERS: &str = "pickline_intake_dead_letters";
/// Gauge: age of the oldest unsettled intake entry, seconds.
pub const INTAKE_LAG_SECONDS: &str = "pickline_intake_lag_seconds";

/// Latency buckets, seconds: from 50 us (an in-memory hold) to 10 s (a stuck request).
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter rejected its configuration.
    #[error("cannot build the Prometheus recorder: {0}")]
    Build(#[from] BuildError),
    /// Another global recorder was installed first (by something other than [`install`]).
    #[error("another global metrics recorder is already installed")]
    RecorderTaken,
}

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the global `metrics` recorder, once per process,
/// and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let mut slot = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()),
            LATENCY_BUCKETS_SECONDS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS_TOTAL,
        "gRPC requests finished, by RPC and status code"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "gRPC request latency until response headers, by RPC"
    );
    describe_gauge!(IN_FLIGHT, "gRPC requests being handled now");
    describe_counter!(
        INTAKE_WEBHOOKS_TOTAL,
        "intake webhook deliveries answered, by channel and HTTP status"
    );
    describe_counter!(
        INTAKE_DELIVERIES_TOTAL,
        "intake deliveries by source and outcome"
    );
    describe_gauge!(
        INTAKE_QUEUE_DEPTH,
        "intake entries taken and not yet settled"
    );
    describe_gauge!(
        INTAKE_DEAD_LETTERS,
        "intake dead letters waiting for an operator"
    );
    describe_gauge!(
        INTAKE_LAG_SECONDS,
        "age of the oldest unsettled intake entry"
    );
    describe_gauge!(READY, "1 once the engine has recovered, else 0");
    for (name, help) in EngineGauges::DESCRIPTIONS {
        describe_gauge!(*name, *help);
    }
}

/// Engine sizes and positions, published as gauges. The engine wiring fills one of
/// these from the engine's stats after each batch (or on a ticker) and calls
/// [`EngineGauges::publish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineGauges {
    /// Stores known.
    pub stores: u64,
    /// Holds in state ACTIVE.
    pub active_holds: u64,
    /// Orders not in a final state.
    pub open_orders: u64,
    /// Sequence number of the newest event.
    pub head_seq: u64,
    /// Sequence number of the newest durable event.
    pub durable_seq: u64,
    /// Log bytes since the last snapshot.
    pub wal_bytes: u64,
    /// fdatasync time of the last WAL batch, microseconds.
    pub wal_fsync_last_us: u64,
    /// Records the event stream keeps in memory for its consumers.
    pub stream_retained: u64,
}

impl EngineGauges {
    const DESCRIPTIONS: &[(&str, &str)] = &[
        ("pickline_engine_stores", "stores known"),
        ("pickline_engine_active_holds", "holds in state ACTIVE"),
        ("pickline_engine_open_orders", "orders not in a final state"),
        (
            "pickline_engine_head_seq",
            "sequence number of the newest event",
        ),
        (
            "pickline_engine_durable_seq",
            "sequence number of the newest durable event",
        ),
        (
            "pickline_engine_wal_bytes",
            "log bytes since the last snapshot",
        ),
        (
            "pickline_engine_wal_fsync_last_us",
            "fdatasync time of the last WAL batch, microseconds",
        ),
        (
            "pickline_engine_stream_retained",
            "records the event stream keeps for consumers",
        ),
    ];

    /// Sets every engine gauge.
    pub fn publish(&self) {
        let values = [
            self.stores,
            self.active_holds,
            self.open_orders,
            self.head_seq,
            self.durable_seq,
            self.wal_bytes,
            self.wal_fsync_last_us,
            self.stream_retained,
        ];
        for ((name, _), value) in Self::DESCRIPTIONS.iter().zip(values) {
            // Gauges are f64; u64 values up to 2^53 are exact, far beyond these counts.
            ::metrics::gauge!(*name).set(value as f64);
        }
    }
}

/// Sets the [`READY`] gauge.
pub fn set_ready(ready: bool) {
    ::metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// The HTTP routes: `GET /metrics` (Prometheus text format) and `GET /readyz` (200 once
/// the engine has recovered, 503 before, for probes that do not speak gRPC).
pub fn http_router(handle: PrometheusHandle, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(handle): State<PrometheusHandle>| async move { handle.render() }),
        )
        .with_state(handle)
        .route(
            "/readyz",
            get(move || async move {
                if readiness.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "recovering\n")
                }
            }),
        )
}

/// A tower layer that records [`REQUESTS_TOTAL`], [`REQUEST_DURATION_SECONDS`] and
/// [`IN_FLIGHT`] for every gRPC request, including those the admission layer rejects.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
}

/// The `rpc` label of a request path. Only paths of the contract and the standard
/// services get their own label: arbitrary client paths must not create series.
fn rpc_label(path: &str) -> &'static str {
    if let Some(spec) = rpc::lookup(path) {
        spec.path
    } else if path.starts_with("/grpc.health.v1.Health/") {
        "grpc.health.v1.Health"
    } else if path.starts_with("/grpc.reflection.") {
        "grpc.reflection"
    } else {
        "unknown"
    }
}

/// Decrements [`IN_FLIGHT`] when the request ends, however it ends (a client that
/// cancels drops the future).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        ::metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        ::metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

impl<S> Service<http::Request<Body>> for MetricsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let rpc = rpc_label(req.uri().path());
        let started = Instant::now();
        let in_flight = InFlight::start();
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            drop(in_flight);
            // Errors are "trailers-only" responses with grpc-status in the headers; a
            // success carries it in the trailers, after the body, so no header means OK
            // for unary calls (a stream that fails later is counted as OK here).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            ::metrics::counter!(REQUESTS_TOTAL, "rpc" => rpc, "code" => code_name(code))
                .increment(1);
            ::metrics::histogram!(REQUEST_DURATION_SECONDS, "rpc" => rpc)
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}
