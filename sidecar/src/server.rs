//! The gRPC server: services, the admission layer, health, reflection, the HTTP
//! endpoint, and graceful shutdown.
//!
//! Every gRPC request passes, outermost first:
//!
//! 1. [`MetricsLayer`](crate::metrics::MetricsLayer): counts and times it.
//! 2. [`AdmissionLayer`]: for RPCs of the contract, in this order, it
//!    authenticates the bearer token (UNAUTHENTICATED), checks the RPC's scope row in
//!    [`crate::grpc::rpc::RPCS`] (PERMISSION_DENIED), in cluster mode refuses engine RPCs
//!    on a node that does not lead its partition (UNAVAILABLE, `NOT_LEADER` with the
//!    leader's address) except the stock reads a standby answers from its applied state
//!    (`standby_reads`), refuses engine RPCs until the engine has
//!    recovered (UNAVAILABLE), takes a concurrency permit without waiting
//!    (RESOURCE_EXHAUSTED + `retry-after-ms` when none is free) and bounds the request
//!    by the per-request timeout (DEADLINE_EXCEEDED); then it stores the
//!    [`Caller`] in the request extensions (in cluster mode with the node's partition
//!    map, which [`Caller::authorize_store`] checks every store against:
//!    `WRONG_PARTITION`). On the way back it turns tonic's
//!    OUT_OF_RANGE for a request above `grpc.max_message_bytes` into the contract's
//!    RESOURCE_EXHAUSTED + QuotaFailure ([`status::message_too_large`]). Health and reflection pass untouched: probes
//!    must work without a token and under overload.
//! 3. tonic's router and the handler, with the max message size on both directions.
//!
//! All seven services of the contract are registered and every RPC is served by the
//! engine. A form the contract gains before the engine can serve it answers
//! UNIMPLEMENTED ([`crate::grpc::status::DomainError::Unimplemented`]) with a message saying
//! so, never made-up data.
//!
//! After recovery three background tasks run until shutdown: the expiry ticker (bounded
//! `expire` batches on a blocking thread), the checkpoint ticker (a snapshot every
//! `data.checkpoint_interval_ms` or `data.checkpoint_wal_bytes`, whichever comes first)
//! and the gauge publisher.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore};
use tonic::{
    Status,
    body::Body,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tower::{Layer, Service};
use tracing::{error, info, warn};

use pickline_engine::{
    durable::{DurableEngine, OpenOptions},
    wal::FileStorage,
};

use crate::{
    cluster::node::Refusal,
    config::Config,
    grpc::admin::Admin,
    grpc::auth::{AuthError, Caller, TokenTable},
    grpc::domain::{self, Domain},
    grpc::event_svc::Events,
    grpc::hold_svc::Holds,
    grpc::inventory_svc::Inventory,
    grpc::pickup_svc::Pickups,
    grpc::rpc::{self, RpcSpec},
    grpc::status,
    grpc::store_svc::Stores,
    metrics::{self, EngineGauges, MetricsLayer},
    pb::{
        self, admin_service_server::AdminServiceServer, event_service_server::EventServiceServer,
        hold_service_server::HoldServiceServer, inventory_service_server::InventoryServiceServer,
        pickup_service_server::PickupServiceServer, store_service_server::StoreServiceServer,
    },
};

/// Whether the engine has recovered and engine RPCs may run. Cheap to clone and read
/// on every request.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Whether the engine has recovered.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the engine recovered (or not, on shutdown).
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
        metrics::set_ready(ready);
    }
}

/// Limits and state the admission layer enforces.
#[derive(Debug)]
struct Admission {
    tokens: TokenTable,
    readiness: Readiness,
    /// One permit per unary request in flight; `try_acquire` only, never a wait queue.
    permits: Arc<Semaphore>,
    concurrency_limit: usize,
    request_timeout: Duration,
    retry_after: Duration,
    /// `grpc.max_message_bytes`, for the QuotaFailure of a message above it.
    max_message_bytes: usize,
    /// `grpc.simulated_clock`: engine requests carry their time ([`SIM_NOW_HEADER`]).
    simulated_clock: bool,
    /// Cluster mode: who leads the partition ([`crate::cluster::node::Routing`]).
    routing: Option<crate::cluster::node::Routing>,
}

/// The header that carries a request's time (ms since the epoch) under
/// `grpc.simulated_clock`.
pub const SIM_NOW_HEADER: &str = "pickline-sim-now-ms";

/// The time an engine request carries under `grpc.simulated_clock`: required, since a
/// request without one would silently mix wall time into a simulated run.
fn simulated_now(headers: &http::HeaderMap) -> Result<pickline_engine::Timestamp, Status> {
    headers
        .get(SIM_NOW_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|ms| *ms >= 0)
        .map(pickline_engine::Timestamp::from_ms)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "this server runs on a simulated clock (grpc.simulated_clock): every engine \
                 request carries its time in the `{SIM_NOW_HEADER}` header (ms since the epoch)"
            ))
        })
}

impl Admission {
    /// Decides whether a request of the contract may run, and as whom.
    fn admit(&self, rpc: &'static RpcSpec, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let principal = self.tokens.authenticate(authorization)?;
        if !principal.may_call(rpc) {
            return Err(AuthError::MissingScope {
                principal: principal.name().to_owned(),
                rpc: rpc.path,
            }
            .into());
        }
        let mut caller = Caller::new(principal, rpc);
        if rpc.needs_engine
            && let Some(routing) = &self.routing
            && let Some(refusal) = routing.refusal()
        {
            // A standby answers the reads that say how fresh they are from its state.
            match (&refusal, routing.standby()) {
                (Refusal::NotLeader { .. }, Some(view)) if rpc.standby_reads => {
                    caller = caller.on_standby(view);
                }
                _ => return Err(cluster_refusal(refusal)),
            }
        }
        if rpc.needs_engine && caller.standby().is_none() && !self.readiness.is_ready() {
            return Err(status::DomainError::Recovering.into());
        }
        // Cluster mode: every store the handler names is checked against the partition
        // map, in `Caller::authorize_store` (the store is in the body, unread here).
        Ok(match &self.routing {
            Some(routing) if rpc.needs_engine => {
                caller.with_partitions(routing.partitions().clone())
            }
            _ => caller,
        })
    }
}

/// The tower layer that admits requests; see the module documentation for the order of
/// its checks.
#[derive(Clone, Debug)]
pub struct AdmissionLayer {
    admission: Arc<Admission>,
}

impl AdmissionLayer {
    /// A layer enforcing `config.grpc`'s limits with `tokens`, gated by `readiness` (and in
    /// cluster mode by `routing`: only the partition's leader takes engine requests).
    pub fn new(
        config: &Config,
        tokens: TokenTable,
        readiness: Readiness,
        routing: Option<crate::cluster::node::Routing>,
    ) -> AdmissionLayer {
        let g = &config.grpc;
        AdmissionLayer {
            admission: Arc::new(Admission {
                tokens,
                readiness,
                permits: Arc::new(Semaphore::new(g.concurrency_limit)),
                concurrency_limit: g.concurrency_limit,
                request_timeout: g.request_timeout(),
                retry_after: g.retry_after(),
                max_message_bytes: g.max_message_bytes,
                simulated_clock: g.simulated_clock,
                routing,
            }),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// The service of [`AdmissionLayer`].
#[derive(Clone, Debug)]
pub struct AdmissionService<S> {
    inner: S,
    admission: Arc<Admission>,
}

type BoxResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

fn reject(status: Status) -> BoxResponseFuture {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

impl<S> Service<http::Request<Body>> for AdmissionService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone polled ready is the one to call (tower's readiness contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        let Some(spec) = rpc::lookup(path) else {
            if path.starts_with(rpc::PACKAGE_PATH_PREFIX) {
                // Not in the contract: the router answers UNIMPLEMENTED, but only to a
                // caller with a valid token, so the surface cannot be probed anonymously.
                let authorization = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if let Err(e) = self.admission.tokens.authenticate(authorization) {
                    return reject(e.into());
                }
            }
            return Box::pin(inner.call(req));
        };
        let caller = match self.admission.admit(spec, req.headers()) {
            Ok(caller) => caller,
            Err(status) => return reject(status),
        };
        // Intake's Submit does not need the engine (the journal takes orders while it
        // recovers), but the orders it places do: it runs on the simulated time it carries.
        let carries_time = req.headers().contains_key(SIM_NOW_HEADER);
        let simulated = if self.admission.simulated_clock && (spec.needs_engine || carries_time) {
            match simulated_now(req.headers()) {
                Ok(at) => Some(at),
                Err(status) => return reject(status),
            }
        } else {
            None
        };
        req.extensions_mut().insert(caller);
        let max_message_bytes = self.admission.max_message_bytes;
        if spec.is_streaming() {
            let call = inner.call(req);
            return Box::pin(async move {
                let response = match simulated {
                    Some(at) => domain::SIMULATED_NOW.scope(at, call).await?,
                    None => call.await?,
                };
                Ok(status::message_too_large(response, max_message_bytes))
            });
        }
        let Ok(permit) = self.admission.permits.clone().try_acquire_owned() else {
            return reject(status::overloaded(
                self.admission.concurrency_limit,
                self.admission.retry_after,
            ));
        };
        let timeout = self.admission.request_timeout;
        Box::pin(async move {
            let call = inner.call(req);
            let response = match simulated {
                Some(at) => {
                    tokio::time::timeout(timeout, domain::SIMULATED_NOW.scope(at, call)).await
                }
                None => tokio::time::timeout(timeout, call).await,
            };
            drop(permit);
            match response {
                Ok(response) => Ok(status::message_too_large(response?, max_message_bytes)),
                Err(_elapsed) => Ok(status::request_timeout(timeout).into_http()),
            }
        })
    }
}

/// How long a client should wait before asking again when no leader is known.
const NO_LEADER_RETRY: Duration = Duration::from_millis(250);

/// A cluster node's refusal of an engine request: UNAVAILABLE, and for a node that does
/// not lead, an `ErrorInfo` with reason `NOT_LEADER` naming the partition and the
/// leader's node and address (`leader_addr`, absent while nobody leads) so the client
/// calls the leader directly (docs/CLUSTER.md, "Routing").
fn cluster_refusal(refusal: Refusal) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    match refusal {
        Refusal::NotLeader { partition, leader } => {
            let mut metadata =
                std::collections::HashMap::from([("partition".to_owned(), partition.clone())]);
            let message = match &leader {
                Some(l) => {
                    metadata.insert("leader_node".to_owned(), l.node.clone());
                    metadata.insert("leader_addr".to_owned(), l.addr.clone());
                    format!(
                        "this node does not lead partition {partition}; its leader is {} at {}",
                        l.node, l.addr
                    )
                }
                None => format!("partition {partition} has no leader yet; retry shortly"),
            };
            let mut details =
                ErrorDetails::with_error_info("NOT_LEADER", status::ERROR_DOMAIN, metadata);
            if leader.is_none() {
                details.set_retry_info(Some(NO_LEADER_RETRY));
            }
            Status::with_error_details(tonic::Code::Unavailable, message, details)
        }
        Refusal::Stalled(why) => Status::unavailable(format!(
            "the replicated log does not acknowledge now ({why}); retry shortly"
        )),
        Refusal::Deposed(why) => Status::unavailable(format!(
            "this node stopped leading the partition ({why}); ask the new leader"
        )),
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The reflection service could not read the descriptor set (a build bug).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[source] io::Error),
    /// The engine could not recover its state from the data directory.
    #[error("recovery from {dir} failed: {source}")]
    Recovery {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] io::Error),
    /// Cluster mode: this node stopped leading its partition (a newer leader fenced it or
    /// took its lease). Restart it: it comes back as a standby.
    #[error("deposed as the partition's leader: {0}")]
    Deposed(String),
}

/// The reflection services, both served.
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The gRPC service names the server reports health for ("" is the whole server).
const HEALTH_SERVICES: &[&str] = &[
    "",
    pb::admin_service_server::SERVICE_NAME,
    pb::store_service_server::SERVICE_NAME,
    pb::inventory_service_server::SERVICE_NAME,
    pb::hold_service_server::SERVICE_NAME,
    pb::pickup_service_server::SERVICE_NAME,
    pb::event_service_server::SERVICE_NAME,
    pb::intake_service_server::SERVICE_NAME,
    pb::notify_service_server::SERVICE_NAME,
];

/// Runs the server on the two bound listeners until `shutdown` completes, then drains.
///
/// The server accepts connections at once and reports NOT_SERVING while the engine
/// recovers its log (engine RPCs answer UNAVAILABLE meanwhile), then SERVING. On
/// `shutdown` it reports NOT_SERVING, stops accepting, lets in-flight requests finish
/// for up to `grpc.shutdown_grace_ms`, runs the final durability step, and returns.
pub async fn run(
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let grpc_addr = grpc_listener.local_addr().map_err(ServerError::Listener)?;
    let http_addr = http_listener.local_addr().map_err(ServerError::Listener)?;
    let prometheus = metrics::install()?;
    let readiness = Readiness::default();
    readiness.set_ready(false);

    let routing = config
        .cluster
        .enabled
        .then(|| crate::cluster::node::Routing::new(&config.cluster.partition));
    let tokens = config.token_table();
    let auth = config.auth_summary();
    if tokens.is_empty() {
        warn!(auth = %auth, "no tokens configured");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in HEALTH_SERVICES {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    // Both reflection versions: grpcurl, Postman and Python's grpc_reflection still ask
    // v1alpha. Each knows both reflection schemas, so either lists and resolves both.
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name(REFLECTION_V1)
            .with_service_name(REFLECTION_V1ALPHA);
        for name in &HEALTH_SERVICES[1..] {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let max = config.grpc.max_message_bytes;
    let domain = Domain::new();
    macro_rules! sized {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        };
    }
    let admin = sized!(AdminServiceServer::new(Admin::new(domain.clone())));
    let stores = sized!(StoreServiceServer::new(Stores::new(domain.clone())));
    let inventory = sized!(InventoryServiceServer::new(Inventory::new(domain.clone())));
    let holds = sized!(HoldServiceServer::new(Holds::new(
        domain.clone(),
        config.grpc.request_timeout()
    )));
    let pickups = sized!(PickupServiceServer::new(Pickups::new(domain.clone())));
    let events = sized!(EventServiceServer::new(Events::new(domain.clone())));
    // Intake: one flow for every source; its journal opens beside the engine's recovery,
    // so deliveries are taken durably even while the engine recovers.
    let intake = crate::intake::flow::Flow::new(config.intake.clone(), domain.clone());
    let intake_tasks = crate::intake::flow::start(&config, &intake);
    let intake_svc = sized!(pb::intake_service_server::IntakeServiceServer::new(
        crate::intake::grpc_svc::Intake::new(intake.clone())
    ));
    let notify_handle = crate::notify::NotifyHandle::default();
    let notifications = sized!(pb::notify_service_server::NotifyServiceServer::new(
        crate::notify::service::Notifications::new(notify_handle.clone())
    ));

    // HTTP: /metrics, /readyz, the intake webhooks (POST /intake/{channel}) and the staff
    // and customer pages (`[web]`, crate::web), stopped
    // after the gRPC drain so the last scrape sees it.
    let (http_stop, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut http_app = metrics::http_router(prometheus.clone(), readiness.clone());
    if config.intake.webhooks.enabled {
        http_app = http_app.merge(crate::intake::webhook::router(intake.clone()));
    }
    let mut web_pages = None;
    if config.web.enabled {
        let web = crate::web::Web::new(config.web.clone(), &config.data.dir, {
            let domain = domain.clone();
            Arc::new(move || domain.db().ok().cloned())
        })
        .map_err(ServerError::Http)?;
        http_app = http_app.merge(crate::web::router(web.clone()));
        web_pages = Some(web);
    }
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(async {
                let _ = http_stop_rx.await;
            })
            .await
    });
    // The exporter keeps histogram samples until upkeep drains them; bound that memory.
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });

    let (grpc_stop, grpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let grpc = Server::builder()
        .max_concurrent_streams(config.grpc.max_concurrent_streams)
        .layer(MetricsLayer)
        .layer(AdmissionLayer::new(
            &config,
            tokens,
            readiness.clone(),
            routing.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(stores)
        .add_service(inventory)
        .add_service(holds)
        .add_service(pickups)
        .add_service(events)
        .add_service(intake_svc)
        .add_service(notifications)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = grpc_stop_rx.await;
        });
    let mut grpc = std::pin::pin!(grpc);
    info!(
        %grpc_addr,
        %http_addr,
        data_dir = %data_dir_display(&config.data.dir),
        auth = %auth,
        "listening"
    );

    // Cluster mode: standby until this node leads its partition; the leadership's gate
    // says when it stops.
    let (leading_tx, leading_rx) = tokio::sync::oneshot::channel();
    // Cluster mode: the partition map, from a watch of the cluster bucket, standby or not.
    let map_watch = routing.as_ref().map(|routing| {
        tokio::spawn(crate::cluster::map::follow(
            config.cluster.clone(),
            routing.partitions().clone(),
        ))
    });
    let recovery = async {
        match &routing {
            Some(routing) => {
                lead(&config, grpc_addr, &domain, routing, leading_tx).await;
                Ok(())
            }
            None => recover(&config, &domain).await,
        }
    };
    let mut recovery = std::pin::pin!(recovery);
    let mut leadership: Option<crate::cluster::node::Leadership> = None;
    let mut leading_rx = Some(leading_rx);
    // Says why, once the leadership ends (a newer leader fenced this node, or took its
    // lease).
    let (deposed_tx, mut deposed_rx) = tokio::sync::mpsc::channel::<Arc<str>>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut recovered = false;
    let mut background: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut notifier = None;
    // Set when the transport stopped on its own (an error); it must not be polled again.
    let mut grpc_finished = false;
    // Cluster mode: health follows the replication gate ([`follow_gate_health`]).
    let mut cluster_health: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        tokio::select! {
            result = &mut recovery, if !recovered => {
                recovered = true;
                if let Err(e) = result {
                    error!(error = %e, "recovery failed; shutting down");
                    break Err(e);
                }
                if let Some(rx) = leading_rx.take() {
                    leadership = rx.await.ok();
                }
                if let Some(l) = &leadership {
                    let (gate, tx) = (l.gate().clone(), deposed_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(gate.deposed().await).await;
                    });
                    cluster_health = Some(tokio::spawn(follow_gate_health(
                        l.gate().clone(),
                        health.clone(),
                    )));
                }
                background = spawn_background(&config, &domain);
                if config.notify.enabled
                    && let Ok(db) = domain.db()
                {
                    notifier = crate::notify::runner::spawn(
                        &config.notify,
                        db.clone(),
                        &config.data.dir,
                        &notify_handle,
                    );
                }
                readiness.set_ready(true);
                for name in HEALTH_SERVICES {
                    health.set_service_status(*name, ServingStatus::Serving).await;
                }
                info!("engine recovered; serving");
            }
            result = &mut grpc => {
                grpc_finished = true;
                break result.map_err(ServerError::from);
            }
            Some(why) = deposed_rx.recv() => {
                error!(reason = %why, "deposed; stopping (a restart comes back as a standby)");
                break Err(ServerError::Deposed(why.to_string()));
            }
            () = &mut shutdown => {
                info!("shutdown requested");
                break Ok(());
            }
        }
    };
    // Drain: tell probes first so load balancers stop routing here, then stop
    // accepting and wait (bounded) for in-flight requests.
    if let Some(task) = &cluster_health {
        task.abort();
    }
    readiness.set_ready(false);
    for name in HEALTH_SERVICES {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let _ = grpc_stop.send(());
    if !grpc_finished {
        let grace = config.grpc.shutdown_grace();
        match tokio::time::timeout(grace, &mut grpc).await {
            Ok(Ok(())) => info!("gRPC drained"),
            Ok(Err(e)) => warn!(error = %e, "gRPC transport error while draining"),
            Err(_) => warn!(
                grace_ms = grace.as_millis(),
                "drain timed out; dropping connections"
            ),
        }
    }
    for task in &background {
        task.abort();
    }
    if let Some(task) = &map_watch {
        task.abort();
    }
    intake_tasks.abort();
    intake.flush();
    // The notifier finishes the sends in flight (bounded) and journals them first.
    if let Some((task, stop)) = notifier {
        let _ = stop.send(());
        let _ = task.await;
    }
    final_sync(&domain).await;
    if let Some(leadership) = leadership {
        leadership.step_down().await;
    }
    upkeep.abort();
    if let Some(web) = &web_pages {
        // Live pages' event streams never end by themselves; the HTTP drain waits for them.
        web.close();
    }
    let _ = http_stop.send(());
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "HTTP server error"),
        Err(e) => warn!(error = %e, "HTTP server task failed"),
    }
    info!("stopped");
    result
}

/// A leader's health follows its replication gate: NOT_SERVING while it refuses requests
/// (publishing has failed for the replication timeout, or the lease went unrenewed for a
/// lease time: cut off from NATS), SERVING again once it recovers, so a load balancer
/// stops routing to a leader that cannot acknowledge.
async fn follow_gate_health(
    gate: std::sync::Arc<crate::cluster::replicator::Gate>,
    health: tonic_health::server::HealthReporter,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = gate.failure().is_none() && gate.trouble().is_none();
        if now != serving {
            serving = now;
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in HEALTH_SERVICES {
                health.set_service_status(*name, status).await;
            }
        }
    }
}

/// Cluster mode's recovery: a standby until this node takes the partition's lease, then
/// the engine it took over (see [`crate::cluster::node`]); acknowledgements wait for the
/// replicated log through [`Domain::set_replication`].
async fn lead(
    config: &Config,
    grpc_addr: std::net::SocketAddr,
    domain: &Domain,
    routing: &crate::cluster::node::Routing,
    leading: tokio::sync::oneshot::Sender<crate::cluster::node::Leadership>,
) {
    let c = &config.cluster;
    let advertise = if c.advertise.is_empty() {
        grpc_addr.to_string()
    } else {
        c.advertise.clone()
    };
    let leadership = crate::cluster::node::lead(
        c,
        config.data.engine_config(),
        &config.data.dir,
        &advertise,
        routing,
    )
    .await;
    // Store-scoped requests are checked against the partition map: serve once it is read
    // (its watch reads the bucket this node's leadership needed, so it is there).
    routing.partitions().loaded().await;
    let gate = leadership.gate().clone();
    domain.set_replication(Arc::new(move |lsn| {
        let gate = gate.clone();
        Box::pin(async move { gate.replicated(lsn).await.map_err(|e| e.to_string()) })
    }));
    domain.set(leadership.db().clone());
    let _ = leading.send(leadership);
}

/// Brings the engine's state back from the data directory: opens the WAL there (the
/// newest snapshot plus the log after it) on a blocking thread, and hands the engine to
/// the handlers. Health turns SERVING after it.
async fn recover(config: &Config, domain: &Domain) -> Result<(), ServerError> {
    let dir = config.data.dir.clone();
    let opts = OpenOptions {
        wal: config.data.wal_config(),
        engine: config.data.engine_config(),
        ..OpenOptions::default()
    };
    let opened = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || -> io::Result<DurableEngine> {
            std::fs::create_dir_all(&dir)?;
            let storage = FileStorage::open(&dir)?;
            // A bar on a terminal (else log lines) once recovery takes over a second.
            let progress = crate::recovery_progress::RecoveryProgress::start();
            let opened = DurableEngine::open_with_progress(Arc::new(storage), opts, &mut |step| {
                progress.observe(step)
            });
            progress.finish();
            opened.map_err(io::Error::other)
        }
    })
    .await
    .unwrap_or_else(|join| Err(io::Error::other(join)));
    let db = opened.map_err(|source| ServerError::Recovery { dir, source })?;
    let report = db.recovery_report();
    info!(last_lsn = %report.last_lsn, "engine recovered");
    if let Some(tail) = &report.tail_truncated {
        warn!(
            file = %tail.file,
            offset = tail.offset,
            dropped_bytes = tail.dropped_len_bytes,
            intact_records_dropped = tail.intact_records_dropped,
            detail = %tail.detail,
            "dropped a torn log tail (never acknowledged)"
        );
    }
    if let Some(b) = db.stream_backfill() {
        match &b.problem {
            None => info!(
                after = %b.wanted_after,
                records = b.records,
                "event stream refilled from the log for lagging consumers"
            ),
            Some(problem) => warn!(
                after = %b.wanted_after,
                problem = %problem,
                "lagging consumers cannot be served from the log and will be truncated"
            ),
        }
    }
    domain.set(Arc::new(db));
    Ok(())
}

/// The data directory as an absolute path when it can be resolved (the operator wants to
/// know which directory a relative `./pickline-data` is), else as configured.
fn data_dir_display(dir: &std::path::Path) -> String {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_owned())
        .display()
        .to_string()
}

/// Starts the expiry ticker (not under `grpc.simulated_clock`, where the simulator expires
/// holds at its own time), the checkpoint ticker and the gauge publisher.
fn spawn_background(config: &Config, domain: &Domain) -> Vec<tokio::task::JoinHandle<()>> {
    let d = config.data.clone();
    let mut tasks = Vec::with_capacity(3);
    if !config.grpc.simulated_clock {
        tasks.push(expiry_ticker(d, domain.clone()));
    }
    // In cluster mode the leader uploads snapshots to the object store instead
    // (crate::cluster::node); the local log is not written.
    if !config.cluster.enabled {
        tasks.push(checkpoint_ticker(config, domain.clone()));
    }
    tasks.push(gauge_publisher(domain.clone()));
    tasks
}

/// Expires due holds every `data.expire_interval_ms`, in bounded batches.
fn expiry_ticker(d: crate::config::DataConfig, domain: Domain) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(d.expire_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A full batch means more may be due: go again at once, still bounded
            // per call.
            loop {
                let Ok(engine) = domain.engine() else { break };
                let batch = d.expire_batch;
                let done =
                    domain::blocking(move || Ok(engine.expire(domain::now(), batch)?.len())).await;
                match done {
                    Ok(n) if n >= batch => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e.message(), "expiry failed");
                        break;
                    }
                }
            }
        }
    })
}

/// Writes a snapshot every `data.checkpoint_interval_ms` or `data.checkpoint_wal_bytes`.
fn checkpoint_ticker(config: &Config, domain: Domain) -> tokio::task::JoinHandle<()> {
    let d = config.data.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let due_by_time = last.elapsed() >= Duration::from_millis(d.checkpoint_interval_ms);
            if !due_by_time && domain.wal_bytes_since_checkpoint() < d.checkpoint_wal_bytes {
                continue;
            }
            let domain = domain.clone();
            match domain::blocking(move || domain.checkpoint()).await {
                Ok(cp) => {
                    info!(
                        lsn = %cp.lsn,
                        bytes = cp.len_bytes,
                        writers_paused = cp.writers_paused,
                        "checkpoint written"
                    );
                    for (consumer, acked) in &cp.consumers_beyond_retention {
                        warn!(
                            consumer = %consumer,
                            acked = %acked,
                            log_readable_after = %cp.log_readable_after,
                            "consumer lags beyond the WAL retention cap; it will be truncated after a restart"
                        );
                    }
                }
                Err(e) => warn!(error = %e.message(), "checkpoint failed"),
            }
            last = tokio::time::Instant::now();
        }
    })
}

/// Publishes the engine's gauges every [`GAUGE_INTERVAL`].
fn gauge_publisher(domain: Domain) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_INTERVAL);
        loop {
            tick.tick().await;
            let Ok(db) = domain.db() else { continue };
            let wal = db.wal().metrics();
            let engine = db.engine();
            EngineGauges {
                stores: engine.stores().len() as u64,
                active_holds: engine.active_holds() as u64,
                open_orders: engine.open_orders() as u64,
                head_seq: engine.log().last_lsn().0,
                durable_seq: wal.durable_lsn,
                wal_bytes: domain.wal_bytes_since_checkpoint(),
                wal_fsync_last_us: wal.last_fsync_latency_us,
                stream_retained: db.stream().retained() as u64,
            }
            .publish();
        }
    })
}

/// How often the checkpoint ticker checks its two triggers.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);
/// How often engine gauges are published.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs after the last in-flight request finished: flushes and syncs the WAL, so that
/// everything appended before shutdown is durable on return (with `durability = "sync"`
/// it already was; with `async` this closes the loss window).
async fn final_sync(domain: &Domain) {
    let Ok(db) = domain.db() else {
        info!("final sync: no engine was opened");
        return;
    };
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.wal().flush()).await {
        Ok(Ok(())) => info!("final sync: WAL flushed"),
        Ok(Err(e)) => error!(error = %e, "final sync: WAL flush failed"),
        Err(e) => error!(error = %e, "final sync: task failed"),
    }
}
