//! `pickline simulate`: the Black Friday simulator (`pickline_benches::sim`) against the
//! engine in this process, or against a running sidecar over gRPC (`--target URL`). A thin
//! command line: presets, seed, JSON or table, the HTML report, and a progress bar on a
//! terminal.
//!
//! Against a sidecar, the simulator needs the server to run on its time: simulated days
//! pass in seconds. The server is started with `--simulated-clock` (`grpc.simulated_clock`):
//! every engine request then carries its time in the `pickline-sim-now-ms` header, which
//! [`GrpcBackend`] sets to the simulated instant of each call, and holds expire when the
//! simulator calls AdminService.ExpireHolds at its minute ticks, as the in-process engine
//! expires them. Both backends therefore see the same calls at the same instants, and a
//! seed gives the same business figures either way (`sidecar/tests/wired.rs` checks it).

use std::io::IsTerminal as _;

use anyhow::{Context as _, bail};
use pickline_benches::sim::{
    self, EngineBackend, Scenario,
    backend::{Backend, CellState, HoldResult, PosResult, SimError},
};
use pickline_engine::{PosCount, PosDelta, PosDeltaKind, StoreDef, Timestamp};
use tonic::{Request, transport::Channel};

use crate::{
    grpc::convert::store_pb,
    pb::{
        self, admin_service_client::AdminServiceClient, hold_service_client::HoldServiceClient,
        inventory_service_client::InventoryServiceClient,
        pickup_service_client::PickupServiceClient, store_service_client::StoreServiceClient,
    },
    server::SIM_NOW_HEADER,
};

/// Arguments of `pickline simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Scenario: `black-friday` (60 stores, 3 days) or `smoke` (8 stores, 1 day).
    #[arg(long, default_value = "black-friday")]
    pub preset: String,
    /// RNG seed: the same seed gives the same report.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Drive a running sidecar over gRPC instead of the in-process engine, e.g.
    /// `http://127.0.0.1:50051`. The server must run with `--simulated-clock` on an empty
    /// data directory.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Bearer token for `--target` (admin scope).
    #[arg(long, env = "PICKLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let orders enter through the intake flow: each granted checkout hold becomes an
    /// order by `IntakeService.Submit` of a canonical order naming the hold (journaled,
    /// queued, confirmed by intake). Without `--target`, on a server of this process's own
    /// (loopback, simulated clock, asynchronous log, removed afterwards).
    #[arg(long)]
    pub intake: bool,
}

/// Runs the simulation and prints its report.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let Some(sc) = Scenario::preset(&args.preset, args.seed) else {
        bail!(
            "unknown preset {:?}: use black-friday or smoke",
            args.preset
        );
    };
    let bar = if args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new((sc.days * 24) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} simulated hours ({elapsed}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let progress = |done: u64, _| bar.set_position(done / 60);
    let report = match (&args.target, args.intake) {
        (None, false) => {
            let mut backend = EngineBackend::new(sc.stores, sc.skus).map_err(anyhow::Error::msg)?;
            sim::run(&sc, &mut backend, "engine", progress)
        }
        (None, true) => {
            // The intake flow lives in the server: run one of our own, on loopback.
            let server = OwnServer::start()?;
            let mut backend = GrpcBackend::connect(&server.url, &server.token)?.through_intake();
            let report = sim::run(&sc, &mut backend, "intake", progress);
            drop(backend);
            server.stop();
            report
        }
        (Some(url), intake) => {
            let token = args.token.as_deref().context(
                "--target needs a token with the admin scope: --token or PICKLINE_TOKEN",
            )?;
            let mut backend = GrpcBackend::connect(url, token)?;
            if intake {
                backend = backend.through_intake();
            }
            sim::run(
                &sc,
                &mut backend,
                if intake { "intake" } else { "grpc" },
                progress,
            )
        }
    }
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    if let Some(path) = &args.report {
        let html = sim::html::render(&report).map_err(anyhow::Error::msg)?;
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// A `pickline serve` of the simulation's own (`--intake` without `--target`): loopback
/// listeners, a simulated clock, an asynchronous log (the figures do not depend on fsync;
/// the run's time does) in a fresh directory removed at the end, and a one-run admin token.
struct OwnServer {
    url: String,
    token: String,
    dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl OwnServer {
    fn start() -> anyhow::Result<OwnServer> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "pickline-simulate-{}-{nanos:x}",
            std::process::id()
        ));
        let random = || {
            crate::grpc::domain::entropy()
                .map(u64::from_le_bytes)
                .map_err(|e| anyhow::anyhow!("a token for the simulation's server: {e:?}"))
        };
        let token = format!("sim-{:016x}{:016x}", random()?, random()?);
        let mut config = crate::config::Config::default();
        config.data.dir = dir.clone();
        config.data.durability = crate::config::DurabilityMode::Async;
        config.grpc.simulated_clock = true;
        config.tokens = vec![crate::config::TokenConfig {
            name: "simulate".into(),
            token: token.clone(),
            scopes: vec!["admin".parse()?],
        }];
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the server runtime")?;
        let (grpc, http) = runtime.block_on(async {
            anyhow::Ok((
                tokio::net::TcpListener::bind("127.0.0.1:0").await?,
                tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            ))
        })?;
        let url = format!("http://{}", grpc.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime
                .block_on(crate::server::run(config, grpc, http, async {
                    let _ = stopped.await;
                }))
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
        Ok(OwnServer {
            url,
            token,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && let Ok(Err(e)) = thread.join()
        {
            eprintln!("simulate: the intake server stopped with an error: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The simulator's [`Backend`] over a running sidecar: one gRPC call per simulator call,
/// each carrying the simulated instant and a fresh idempotency key.
pub struct GrpcBackend {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// Idempotency keys are `<run>-<n>`: unique per run, so a retried call of this run
    /// replays its answer and a second run never collides with the first.
    run: String,
    calls: u64,
    /// Orders go through the intake flow (`--intake`).
    intake: Option<IntakeOrders>,
}

/// What `--intake` needs to remember: the store of each checkout hold not yet ordered.
#[derive(Debug, Default)]
struct IntakeOrders {
    hold_store: std::collections::HashMap<u64, String>,
}

/// Holds one ExpireHolds call expires at most (the RPC's own bound).
const EXPIRE_PER_CALL: u32 = 10_000;

fn failed(what: &str, status: tonic::Status) -> SimError {
    SimError::new(format!("{what}: {} {}", status.code(), status.message()))
}

impl GrpcBackend {
    /// Connects to `url` and checks that the server is empty and on a simulated clock.
    pub fn connect(url: &str, token: &str) -> anyhow::Result<GrpcBackend> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the gRPC client runtime")?;
        let channel = runtime
            .block_on(
                tonic::transport::Endpoint::from_shared(url.to_owned())
                    .with_context(|| format!("--target {url}: not a URL"))?
                    .connect(),
            )
            .with_context(|| format!("--target {url}: cannot connect"))?;
        let authorization = format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut backend = GrpcBackend {
            runtime,
            channel,
            authorization,
            run: format!("sim-{}-{nanos:x}", std::process::id()),
            calls: 0,
            intake: None,
        };
        backend.check_target(url)?;
        Ok(backend)
    }

    /// Orders enter through the server's intake flow (`IntakeService.Submit` of a
    /// canonical order naming its checkout hold) instead of CreateOrder.
    pub fn through_intake(mut self) -> GrpcBackend {
        self.intake = Some(IntakeOrders::default());
        self
    }

    /// A simulated run needs a server of its own: one on the wall clock would expire
    /// holds hours early and refuse no-shows, and stores of an earlier run would mix in.
    fn check_target(&mut self, url: &str) -> anyhow::Result<()> {
        // A server that just started may still be recovering its log: UNAVAILABLE.
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let listed = loop {
            let req = self.request(pb::ListStoresRequest::default(), Timestamp::from_ms(0));
            let mut client = StoreServiceClient::new(self.channel.clone());
            match self.runtime.block_on(client.list_stores(req)) {
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() < patience =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match listed {
            Ok(r) if r.get_ref().stores.is_empty() => Ok(()),
            Ok(r) => bail!(
                "--target {url} already has {} store(s): start it on an empty data directory",
                r.get_ref().stores.len()
            ),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                bail!(
                    "--target {url} must run with --simulated-clock: {}",
                    s.message()
                )
            }
            Err(s) => bail!("--target {url}: {} {}", s.code(), s.message()),
        }
    }

    /// `message` with the token and the simulated instant `now`.
    fn request<T>(&self, message: T, now: Timestamp) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert("authorization", self.authorization.clone());
        r.metadata_mut().insert(
            SIM_NOW_HEADER,
            now.as_ms()
                .to_string()
                .parse()
                .expect("digits are a valid header value"),
        );
        r
    }

    fn key(&mut self) -> String {
        self.calls += 1;
        format!("{}-{}", self.run, self.calls)
    }

    fn pos(&mut self, event: pb::PosEvent, now: Timestamp) -> Result<PosResult, SimError> {
        let req = pb::ApplyPosEventsRequest {
            idempotency_key: self.key(),
            events: vec![event],
        };
        let r = self.call(
            "ApplyPosEvents",
            InventoryServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.apply_pos_events(r).await },
        )?;
        let outcome = r
            .outcomes
            .first()
            .ok_or_else(|| SimError::new("ApplyPosEvents answered no outcome"))?;
        Ok(match outcome.result() {
            pb::PosEventResult::Applied => PosResult::Applied {
                shortage: outcome.cell.as_ref().is_some_and(|c| c.on_hand < c.held),
            },
            _ => PosResult::Duplicate,
        })
    }

    /// Runs one RPC with the token and the simulated instant `now`; its answer, or the
    /// status named after `what`.
    fn call<C, M, R, F>(
        &self,
        what: &str,
        client: fn(Channel) -> C,
        message: M,
        now: Timestamp,
        rpc: impl FnOnce(C, Request<M>) -> F,
    ) -> Result<R, SimError>
    where
        F: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let req = self.request(message, now);
        self.runtime
            .block_on(rpc(client(self.channel.clone()), req))
            .map(tonic::Response::into_inner)
            .map_err(|s| failed(what, s))
    }

    /// The order of checkout hold `hold` at `store`, through the intake flow: a canonical
    /// order naming the hold (`hold_ref`), submitted as an order management system would;
    /// intake confirms the hold and makes it a confirmed pickup order.
    fn submit(
        &mut self,
        hold: u64,
        store: String,
        channel_order_id: &str,
        lines: &[(String, u32)],
        now: Timestamp,
    ) -> Result<u64, SimError> {
        let req = pb::SubmitRequest {
            channel: "shopify".into(),
            account: "simulator".into(),
            headers: Vec::new(),
            body: Vec::new(),
            order: Some(pb::IntakeOrder {
                order_id: channel_order_id.to_owned(),
                version: 1,
                created_at_ms: now.as_ms(),
                currency: "USD".into(),
                total_minor: lines.iter().map(|(_, q)| 1_999 * i64::from(*q)).sum(),
                paid: true,
                customer: Some(pb::IntakeCustomer {
                    name: format!("Shopper {channel_order_id}"),
                    email: format!("{channel_order_id}@shoppers.invalid"),
                    ..Default::default()
                }),
                hold_ref: hold.to_string(),
                pickups: vec![pb::IntakePickupGroup {
                    store_id: store,
                    lines: lines
                        .iter()
                        .map(|(sku, qty)| pb::IntakeLine {
                            sku: sku.clone(),
                            qty: *qty,
                            unit_price_minor: 1_999,
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let r = self.call(
            "IntakeService.Submit",
            pb::intake_service_client::IntakeServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.submit(r).await },
        )?;
        match (r.outcome(), r.orders.first()) {
            (pb::SubmitOutcome::Accepted, Some(o)) => Ok(o.order_id),
            _ => Err(SimError::new(format!(
                "intake did not place order {channel_order_id}: {:?} {} {}",
                r.outcome(),
                r.reason,
                r.message
            ))),
        }
    }

    /// The state of the order an RPC answered with.
    fn order_state(order: Option<&pb::PickupOrder>) -> pb::OrderState {
        order.map_or(pb::OrderState::Unspecified, |o| o.state())
    }
}

impl Backend for GrpcBackend {
    fn injects_time(&self) -> bool {
        // Every call carries the simulated instant, and ExpireHolds expires at it.
        true
    }

    fn define_store(&mut self, def: &StoreDef, now: Timestamp) -> Result<(), SimError> {
        let req = pb::UpsertStoreRequest {
            idempotency_key: self.key(),
            store: store_pb(def, None, 0, now).identity,
        };
        self.call(
            "UpsertStore",
            StoreServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.upsert_store(r).await },
        )
        .map(|_| ())
    }

    fn pos_delta(&mut self, d: &PosDelta, now: Timestamp) -> Result<PosResult, SimError> {
        let (kind, qty) = match d.kind {
            PosDeltaKind::Sale => (pb::PosDeltaKind::Sale, d.qty),
            PosDeltaKind::Return => (pb::PosDeltaKind::Return, d.qty),
            PosDeltaKind::Receive => (pb::PosDeltaKind::Receive, d.qty),
            PosDeltaKind::Adjust if d.qty < 0 => (pb::PosDeltaKind::AdjustDown, -d.qty),
            PosDeltaKind::Adjust => (pb::PosDeltaKind::AdjustUp, d.qty),
        };
        let qty = u32::try_from(qty).map_err(|_| SimError::new("POS quantity out of range"))?;
        let event = pb::PosEvent {
            pos_event_id: d.pos_event_id.clone(),
            store_id: d.store.clone(),
            sku: d.sku.clone(),
            occurred_at_ms: d.pos_time.as_ms(),
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: kind as i32,
                qty,
            })),
            order_ref: d.order_ref.clone().unwrap_or_default(),
        };
        self.pos(event, now)
    }

    fn pos_count(&mut self, c: &PosCount, now: Timestamp) -> Result<PosResult, SimError> {
        let event = pb::PosEvent {
            pos_event_id: c.pos_event_id.clone(),
            store_id: c.store.clone(),
            sku: c.sku.clone(),
            occurred_at_ms: c.as_of.as_ms(),
            change: Some(pb::pos_event::Change::Count(pb::PosCount {
                counted_qty: c.counted,
                as_of_ms: c.as_of.as_ms(),
            })),
            order_ref: String::new(),
        };
        self.pos(event, now)
    }

    fn hold(
        &mut self,
        store: &str,
        lines: &[(String, u32)],
        ttl_ms: i64,
        now: Timestamp,
    ) -> Result<HoldResult, SimError> {
        let req = pb::HoldRequest {
            idempotency_key: self.key(),
            store_id: store.to_owned(),
            lines: lines
                .iter()
                .map(|(sku, qty)| pb::Line {
                    sku: sku.clone(),
                    qty: *qty,
                })
                .collect(),
            expiry: Some(pb::hold_request::Expiry::TtlMs(ttl_ms)),
        };
        let r = self.call(
            "Hold",
            HoldServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.hold(r).await },
        )?;
        match r.outcome {
            Some(pb::hold_response::Outcome::Granted(h)) => {
                if let Some(intake) = self.intake.as_mut() {
                    intake.hold_store.insert(h.hold_id, store.to_owned());
                }
                Ok(HoldResult::Granted(h.hold_id))
            }
            Some(pb::hold_response::Outcome::Rejected(r)) => {
                Ok(HoldResult::Refused(match r.reason() {
                    pb::HoldRejectReason::InsufficientStock => "insufficient_stock",
                    pb::HoldRejectReason::StoreNotAccepting => "store_not_accepting",
                    _ => "slot_unavailable",
                }))
            }
            None => Err(SimError::new("Hold answered no outcome")),
        }
    }

    fn place_order(
        &mut self,
        hold: u64,
        channel_order_id: &str,
        lines: &[(String, u32)],
        now: Timestamp,
    ) -> Result<u64, SimError> {
        if let Some(intake) = self.intake.as_mut() {
            let store = intake.hold_store.remove(&hold).ok_or_else(|| {
                SimError::new(format!("an order for hold {hold}, not held in this run"))
            })?;
            return self.submit(hold, store, channel_order_id, lines, now);
        }
        let req = pb::CreateOrderRequest {
            idempotency_key: self.key(),
            hold_id: hold,
            channel: pb::Channel::Other as i32,
            channel_name: "sim".into(),
            channel_order_id: channel_order_id.to_owned(),
            customer: None,
            lines: lines
                .iter()
                .map(|(sku, qty)| pb::PricedLine {
                    sku: sku.clone(),
                    qty: *qty,
                    unit_price_minor: 1_999,
                    picked_qty: 0,
                    title: sku.clone(),
                })
                .collect(),
            currency: "USD".into(),
        };
        let r = self.call(
            "CreateOrder",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.create_order(r).await },
        )?;
        match r.outcome {
            Some(pb::create_order_response::Outcome::Order(o)) => Ok(o.order_id),
            other => Err(SimError::new(format!("CreateOrder refused: {other:?}"))),
        }
    }

    fn start_picking(&mut self, order: u64, staff: &str, now: Timestamp) -> Result<(), SimError> {
        let req = pb::StartPickingRequest {
            idempotency_key: self.key(),
            order_id: order,
            staff_id: staff.to_owned(),
        };
        self.call(
            "StartPicking",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.start_picking(r).await },
        )
        .map(|_| ())
    }

    fn short_pick(
        &mut self,
        order: u64,
        sku: &str,
        found: u32,
        staff: &str,
        now: Timestamp,
    ) -> Result<bool, SimError> {
        let req = pb::ReportShortRequest {
            idempotency_key: self.key(),
            order_id: order,
            staff_id: staff.to_owned(),
            lines: vec![pb::ShortLine {
                sku: sku.to_owned(),
                picked_qty: found,
                resolution: pb::ShortResolution::Cancel as i32,
            }],
            reallocate_max_distance_m: 0,
        };
        let r = self.call(
            "ReportShort",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.report_short(r).await },
        )?;
        Ok(Self::order_state(r.order.as_ref()) == pb::OrderState::Picking)
    }

    fn mark_ready(
        &mut self,
        order: u64,
        staff: &str,
        _entropy: [u8; 32],
        now: Timestamp,
    ) -> Result<String, SimError> {
        // The server draws the code from its own CSPRNG: the simulator only needs it to
        // collect, so the figures do not depend on it.
        let req = pb::MarkReadyRequest {
            idempotency_key: self.key(),
            order_id: order,
            staff_id: staff.to_owned(),
        };
        self.call(
            "MarkReady",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.mark_ready(r).await },
        )
        .map(|r| r.pickup_code)
    }

    fn collect(
        &mut self,
        order: u64,
        code: &str,
        staff: &str,
        now: Timestamp,
    ) -> Result<(), SimError> {
        let req = pb::CollectRequest {
            idempotency_key: self.key(),
            order_id: order,
            staff_id: staff.to_owned(),
            code: code.to_owned(),
        };
        self.call(
            "Collect",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.collect(r).await },
        )
        .map(|_| ())
    }

    fn extend(&mut self, hold: u64, ttl_ms: i64, now: Timestamp) -> Result<(), SimError> {
        let req = pb::ExtendRequest {
            idempotency_key: self.key(),
            hold_id: hold,
            ttl_ms,
        };
        let req = self.request(req, now);
        let mut client = HoldServiceClient::new(self.channel.clone());
        match self.runtime.block_on(client.extend(req)) {
            // The in-process backend ignores a hold that is no longer active too.
            Ok(_) => Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                Ok(())
            }
            Err(s) => Err(failed("Extend", s)),
        }
    }

    fn no_show(&mut self, order: u64, staff: &str, now: Timestamp) -> Result<(), SimError> {
        let req = pb::NoShowRequest {
            idempotency_key: self.key(),
            order_id: order,
            staff_id: staff.to_owned(),
        };
        self.call(
            "NoShow",
            PickupServiceClient::new,
            req,
            now,
            |mut c, r| async move { c.no_show(r).await },
        )
        .map(|_| ())
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<u64>, SimError> {
        let mut out = Vec::new();
        loop {
            let ids = self
                .call(
                    "ExpireHolds",
                    AdminServiceClient::new,
                    pb::ExpireHoldsRequest {
                        max: EXPIRE_PER_CALL,
                    },
                    now,
                    |mut c, r| async move { c.expire_holds(r).await },
                )?
                .hold_ids;
            let n = ids.len();
            out.extend(ids);
            if n < EXPIRE_PER_CALL as usize {
                return Ok(out);
            }
        }
    }

    fn cell(&mut self, store: &str, sku: &str) -> Result<CellState, SimError> {
        let req = pb::GetAvailabilityRequest {
            store_id: store.to_owned(),
            sku: sku.to_owned(),
        };
        // Reads carry the header too: the server requires it of every engine request.
        let cell = self
            .call(
                "GetAvailability",
                InventoryServiceClient::new,
                req,
                Timestamp::from_ms(0),
                |mut c, r| async move { c.get_availability(r).await },
            )?
            .cell
            .ok_or_else(|| SimError::new("GetAvailability answered no cell"))?;
        Ok(CellState {
            on_hand: cell.on_hand,
            held: cell.held,
            atp: cell.atp,
        })
    }

    fn conservation(&mut self) -> Option<Result<(), String>> {
        // The server checks conservation itself (debug builds, snapshot loads); the
        // contract has no call for it.
        None
    }
}
