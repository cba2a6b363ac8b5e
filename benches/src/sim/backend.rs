//! What the simulator drives: the engine in this process ([`EngineBackend`]), or, through
//! the same trait, a running sidecar over gRPC (implemented in `pickline-sidecar`, which
//! owns the generated client).
//!
//! Every call carries the simulated time. The in-process engine uses it as its clock; a
//! remote sidecar uses its own clock, so time-driven steps (hold expiry) are the
//! simulator's business there (see [`Backend::injects_time`]).

use std::fmt;

use pickline_engine::{
    CollectOutcome, CreateOrder, CreateOrderOutcome, Customer, Engine, EngineConfig, HoldId,
    HoldOutcome, HoldRejection, HoldRequest, Limits, LineRequest, OrderId, OrderLineRequest,
    PosCount, PosDelta, PosOutcome, ReadyOutcome, ShortPick, ShortPickResolution, StoreDef,
    Timestamp, TransitionOutcome, pickup_code::StaffId,
};

/// A failed backend call (transport error, misuse the engine refused, a refused
/// transition the simulator did not expect). The run stops with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

impl SimError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        SimError(msg.into())
    }
}

/// Result of a POS event as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosResult {
    /// Applied; `shortage` when `on_hand` fell below `held`.
    Applied {
        /// `on_hand < held` after it.
        shortage: bool,
    },
    /// The event id was seen before (a duplicate the engine dropped).
    Duplicate,
}

/// Result of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldResult {
    /// Granted: the hold id.
    Granted(u64),
    /// Refused: a short reason (`insufficient_stock`, `store_not_accepting`, ...).
    Refused(&'static str),
}

/// One stock cell as the backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellState {
    /// Units the engine believes are in the store.
    pub on_hand: u32,
    /// Units held.
    pub held: u32,
    /// Available to promise.
    pub atp: u32,
}

/// The operations the simulator needs. Ids are the engine's (hold id = order id).
pub trait Backend {
    /// Whether the backend runs on the simulated clock (the in-process engine) rather
    /// than its own wall clock (a remote sidecar).
    fn injects_time(&self) -> bool;
    /// Registers a store.
    fn define_store(&mut self, def: &StoreDef, now: Timestamp) -> Result<(), SimError>;
    /// Applies a POS delta (sale, receipt, ...).
    fn pos_delta(&mut self, d: &PosDelta, now: Timestamp) -> Result<PosResult, SimError>;
    /// Applies a POS count.
    fn pos_count(&mut self, c: &PosCount, now: Timestamp) -> Result<PosResult, SimError>;
    /// Holds lines at a store for `ttl_ms`.
    fn hold(
        &mut self,
        store: &str,
        lines: &[(String, u32)],
        ttl_ms: i64,
        now: Timestamp,
    ) -> Result<HoldResult, SimError>;
    /// Creates and confirms the order of a granted hold; returns the order id.
    fn place_order(
        &mut self,
        hold: u64,
        channel_order_id: &str,
        lines: &[(String, u32)],
        now: Timestamp,
    ) -> Result<u64, SimError>;
    /// Staff start picking.
    fn start_picking(&mut self, order: u64, staff: &str, now: Timestamp) -> Result<(), SimError>;
    /// A line was short: `found` units of `sku`; the rest is dropped from the order.
    /// Returns whether the order is still open (false: nothing was left, it was cancelled).
    fn short_pick(
        &mut self,
        order: u64,
        sku: &str,
        found: u32,
        staff: &str,
        now: Timestamp,
    ) -> Result<bool, SimError>;
    /// Picking done; returns the pickup code.
    fn mark_ready(
        &mut self,
        order: u64,
        staff: &str,
        entropy: [u8; 32],
        now: Timestamp,
    ) -> Result<String, SimError>;
    /// Hand-off with the code.
    fn collect(
        &mut self,
        order: u64,
        code: &str,
        staff: &str,
        now: Timestamp,
    ) -> Result<(), SimError>;
    /// Gives a waiting customer's order `ttl_ms` more from now.
    fn extend(&mut self, hold: u64, ttl_ms: i64, now: Timestamp) -> Result<(), SimError>;
    /// Ends the order of a shopper who did not come (or lets the hold expire).
    fn no_show(&mut self, order: u64, staff: &str, now: Timestamp) -> Result<(), SimError>;
    /// Runs hold expiry up to `now`; returns the holds that expired.
    fn expire(&mut self, now: Timestamp) -> Result<Vec<u64>, SimError>;
    /// One cell.
    fn cell(&mut self, store: &str, sku: &str) -> Result<CellState, SimError>;
    /// The engine's own conservation check, where the backend can run it.
    fn conservation(&mut self) -> Option<Result<(), String>>;
}

fn err(what: &str, e: impl fmt::Display) -> SimError {
    SimError(format!("{what}: {e}"))
}

fn staff(id: &str) -> Result<StaffId, SimError> {
    StaffId::new(id).map_err(|e| err("staff id", e))
}

fn transition(what: &str, r: TransitionOutcome) -> Result<(), SimError> {
    match r {
        TransitionOutcome::Done { .. } => Ok(()),
        TransitionOutcome::Rejected(r) => Err(SimError(format!("{what} refused: {r:?}"))),
    }
}

/// The engine in this process, on the simulated clock.
pub struct EngineBackend {
    engine: Engine,
}

impl EngineBackend {
    /// A fresh engine sized for `stores` x `skus`.
    pub fn new(stores: u32, skus: u32) -> Result<Self, SimError> {
        let engine = Engine::new(EngineConfig {
            limits: Limits {
                stores_max: stores.next_power_of_two().max(16),
                skus_max: skus.next_power_of_two().max(1024),
                ..Limits::default()
            },
        })
        .map_err(|e| err("engine config", e))?;
        Ok(EngineBackend { engine })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn pos_result(r: PosOutcome) -> PosResult {
    match r {
        PosOutcome::Applied { shortage, .. } => PosResult::Applied {
            shortage: shortage.is_some(),
        },
        _ => PosResult::Duplicate,
    }
}

fn refusal(r: &HoldRejection) -> &'static str {
    match r {
        HoldRejection::InsufficientStock { .. } => "insufficient_stock",
        HoldRejection::StoreNotAccepting { .. } => "store_not_accepting",
        HoldRejection::SlotUnavailable { .. } => "slot_unavailable",
    }
}

impl Backend for EngineBackend {
    fn injects_time(&self) -> bool {
        true
    }

    fn define_store(&mut self, def: &StoreDef, now: Timestamp) -> Result<(), SimError> {
        self.engine
            .define_store(def.clone(), now)
            .map(|_| ())
            .map_err(|e| err("define_store", e))
    }

    fn pos_delta(&mut self, d: &PosDelta, now: Timestamp) -> Result<PosResult, SimError> {
        self.engine
            .apply_delta(d, now)
            .map(pos_result)
            .map_err(|e| err("apply_delta", e))
    }

    fn pos_count(&mut self, c: &PosCount, now: Timestamp) -> Result<PosResult, SimError> {
        self.engine
            .apply_count(c, now)
            .map(pos_result)
            .map_err(|e| err("apply_count", e))
    }

    fn hold(
        &mut self,
        store: &str,
        lines: &[(String, u32)],
        ttl_ms: i64,
        now: Timestamp,
    ) -> Result<HoldResult, SimError> {
        let req = HoldRequest::new(
            store,
            lines
                .iter()
                .map(|(sku, q)| LineRequest::new(sku.clone(), *q))
                .collect(),
        )
        .with_ttl_ms(ttl_ms);
        match self.engine.hold(&req, now).map_err(|e| err("hold", e))? {
            HoldOutcome::Granted(g) => Ok(HoldResult::Granted(g.hold.0)),
            HoldOutcome::Rejected(r) => Ok(HoldResult::Refused(refusal(&r))),
            HoldOutcome::InFlight => Ok(HoldResult::Refused("in_flight")),
        }
    }

    fn place_order(
        &mut self,
        hold: u64,
        channel_order_id: &str,
        lines: &[(String, u32)],
        now: Timestamp,
    ) -> Result<u64, SimError> {
        let req = CreateOrder {
            hold: HoldId(hold),
            channel: "sim".into(),
            channel_order_id: channel_order_id.into(),
            customer: Customer::default(),
            lines: lines
                .iter()
                .map(|(sku, q)| OrderLineRequest {
                    sku: sku.clone(),
                    qty: *q,
                    unit_price_minor: 1_999,
                    description: sku.clone(),
                })
                .collect(),
            currency: "USD".into(),
            idempotency_key: None,
        };
        let order = match self
            .engine
            .create_order(&req, now)
            .map_err(|e| err("create_order", e))?
        {
            CreateOrderOutcome::Created { order } => order,
            other => return Err(SimError(format!("create_order refused: {other:?}"))),
        };
        let r = self
            .engine
            .confirm_order(order, now)
            .map_err(|e| err("confirm_order", e))?;
        transition("confirm_order", r)?;
        Ok(order.0)
    }

    fn start_picking(
        &mut self,
        order: u64,
        staff_id: &str,
        now: Timestamp,
    ) -> Result<(), SimError> {
        let r = self
            .engine
            .start_picking(OrderId(order), &staff(staff_id)?, now)
            .map_err(|e| err("start_picking", e))?;
        transition("start_picking", r)
    }

    fn short_pick(
        &mut self,
        order: u64,
        sku: &str,
        found: u32,
        staff_id: &str,
        now: Timestamp,
    ) -> Result<bool, SimError> {
        let r = self
            .engine
            .short_pick(
                &ShortPick {
                    order: OrderId(order),
                    sku: sku.into(),
                    found,
                    resolution: ShortPickResolution::CancelLine,
                    staff: staff(staff_id)?,
                },
                now,
            )
            .map_err(|e| err("short_pick", e))?;
        match r {
            TransitionOutcome::Done { status } => {
                Ok(status == pickline_engine::OrderStatus::Picking)
            }
            TransitionOutcome::Rejected(r) => Err(SimError(format!("short_pick refused: {r:?}"))),
        }
    }

    fn mark_ready(
        &mut self,
        order: u64,
        staff_id: &str,
        entropy: [u8; 32],
        now: Timestamp,
    ) -> Result<String, SimError> {
        let mut e = [0u8; pickline_engine::pickup_code::ENTROPY_BYTES];
        for (d, s) in e.iter_mut().zip(entropy.iter().cycle()) {
            *d = *s;
        }
        match self
            .engine
            .mark_ready(OrderId(order), &staff(staff_id)?, e, now)
            .map_err(|e| err("mark_ready", e))?
        {
            ReadyOutcome::Ready { code, .. } => Ok(code.to_string()),
            ReadyOutcome::Rejected(r) => Err(SimError(format!("mark_ready refused: {r:?}"))),
        }
    }

    fn collect(
        &mut self,
        order: u64,
        code: &str,
        staff_id: &str,
        now: Timestamp,
    ) -> Result<(), SimError> {
        match self
            .engine
            .collect(OrderId(order), code, &staff(staff_id)?, now)
            .map_err(|e| err("collect", e))?
        {
            CollectOutcome::Collected { .. } => Ok(()),
            other => Err(SimError(format!("collect refused: {other:?}"))),
        }
    }

    fn extend(&mut self, hold: u64, ttl_ms: i64, now: Timestamp) -> Result<(), SimError> {
        self.engine
            .extend(HoldId(hold), Some(ttl_ms), now)
            .map(|_| ())
            .map_err(|e| err("extend", e))
    }

    fn no_show(&mut self, order: u64, staff_id: &str, now: Timestamp) -> Result<(), SimError> {
        let r = self
            .engine
            .no_show(OrderId(order), &staff(staff_id)?, now)
            .map_err(|e| err("no_show", e))?;
        transition("no_show", r)
    }

    fn expire(&mut self, now: Timestamp) -> Result<Vec<u64>, SimError> {
        let mut out = Vec::new();
        loop {
            let batch = self
                .engine
                .expire(now, 10_000)
                .map_err(|e| err("expire", e))?;
            let n = batch.len();
            out.extend(batch.into_iter().map(|h| h.hold.0));
            if n < 10_000 {
                return Ok(out);
            }
        }
    }

    fn cell(&mut self, store: &str, sku: &str) -> Result<CellState, SimError> {
        let v = self
            .engine
            .availability(store, sku)
            .map_err(|e| err("availability", e))?;
        Ok(CellState {
            on_hand: v.on_hand,
            held: v.held,
            atp: v.atp(),
        })
    }

    fn conservation(&mut self) -> Option<Result<(), String>> {
        Some(self.engine.check_conservation())
    }
}
