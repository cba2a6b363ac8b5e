//! The one place that converts between protobuf messages and engine types, and engine
//! errors into [`DomainError`] (whose status mapping is the table in [`crate::status`]).
//!
//! Request conversions validate what the engine cannot see (a proto enum left
//! UNSPECIFIED, a missing idempotency key) and return `DomainError::InvalidArgument`
//! naming the proto field; everything else (lengths, quantities, ttl bounds) the engine
//! validates itself and reports through [`From<EngineError>`].

use pickline_engine::{
    self as pe, CellView, EngineError, HoldId, HoldRejection, OrderId, OrderRejection, OrderStatus,
    OrderView, StoreDef, StoreStatus,
    pickup_code::{QrPayload, StaffId, VerifyOutcome},
    receipt::Receipt,
};

use crate::{
    pb,
    status::{DomainError, ResourceKind},
};

/// Longest idempotency key, bytes (common.proto).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;

impl From<EngineError> for DomainError {
    fn from(e: EngineError) -> DomainError {
        match e {
            EngineError::UnknownStore(id) => DomainError::NotFound {
                kind: ResourceKind::Store,
                id,
            },
            EngineError::UnknownSku(id) => DomainError::NotFound {
                kind: ResourceKind::Cell,
                id,
            },
            EngineError::InvalidRequest { field, why } => DomainError::InvalidArgument {
                field: field.to_owned(),
                reason: why,
            },
            EngineError::LimitReached { limit, value } => DomainError::LimitExceeded {
                what: limit,
                actual: value,
                limit: value,
            },
            EngineError::LogFailed(why) => DomainError::Storage(std::io::Error::other(why)),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks that a mutation carries its idempotency key (1..=128 bytes).
pub fn idempotency_key(field: &str, key: &str) -> Result<String, DomainError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(invalid(
            field,
            format!("must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
        ));
    }
    Ok(key.to_owned())
}

/// A staff id as the engine validates it.
pub fn staff_id(field: &str, id: &str) -> Result<StaffId, DomainError> {
    StaffId::new(id).map_err(|e| invalid(field, e.to_string()))
}

/// A count limit on a repeated field: RESOURCE_EXHAUSTED above `max`, INVALID_ARGUMENT
/// when empty.
pub fn batch_len(what: &'static str, len: usize, max: usize) -> Result<(), DomainError> {
    if len == 0 {
        return Err(invalid(what, "must not be empty"));
    }
    if len > max {
        return Err(DomainError::LimitExceeded {
            what,
            actual: len as u64,
            limit: max as u64,
        });
    }
    Ok(())
}

/// A page token that is a decimal number (the last key of the previous page).
pub fn page_token(token: &str) -> Result<Option<u64>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| invalid("page_token", "not a token this server issued"))
}

/// A page size: 0 means `default`, otherwise 1..=`max`.
pub fn page_size(size: u32, default: usize, max: usize) -> Result<usize, DomainError> {
    match size as usize {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(DomainError::LimitExceeded {
            what: "page_size",
            actual: n as u64,
            limit: max as u64,
        }),
    }
}

// ---------------------------------------------------------------- stores

/// `StoreStatus` from proto.
pub fn store_status(field: &str, s: i32) -> Result<StoreStatus, DomainError> {
    match pb::StoreStatus::try_from(s) {
        Ok(pb::StoreStatus::Open) => Ok(StoreStatus::Open),
        Ok(pb::StoreStatus::PickupsPaused) => Ok(StoreStatus::PickupsPaused),
        Ok(pb::StoreStatus::Closed) => Ok(StoreStatus::Closed),
        _ => Err(invalid(field, "must be OPEN, PICKUPS_PAUSED or CLOSED")),
    }
}

fn store_status_pb(s: StoreStatus) -> pb::StoreStatus {
    match s {
        StoreStatus::Open => pb::StoreStatus::Open,
        StoreStatus::PickupsPaused => pb::StoreStatus::PickupsPaused,
        StoreStatus::Closed => pb::StoreStatus::Closed,
    }
}

/// A store definition from `UpsertStoreRequest.store`.
pub fn store_def(s: Option<pb::StoreIdentity>) -> Result<StoreDef, DomainError> {
    let s = s.ok_or_else(|| invalid("store", "required"))?;
    let loc = s
        .location
        .ok_or_else(|| invalid("store.location", "required"))?;
    let mut def = StoreDef::new(
        s.store_id,
        loc.latitude_deg,
        loc.longitude_deg,
        &s.time_zone,
    );
    def.name = s.name;
    def.status = store_status("store.status", s.status)?;
    def.default_safety_stock = s.default_safety_stock;
    if s.default_hold_ms != 0 {
        def.default_hold_ms = s.default_hold_ms;
    }
    if s.max_hold_ms != 0 {
        def.max_hold_ms = s.max_hold_ms;
    }
    def.pickup_instructions = s.pickup_instructions;
    Ok(def)
}

/// A store as the contract shows it. The engine keeps no calendar yet (hours, staffing
/// and slot configuration arrive with the allocation work), so those fields are empty
/// rather than invented.
pub fn store_pb(def: &StoreDef) -> pb::Store {
    pb::Store {
        identity: Some(pb::StoreIdentity {
            store_id: def.external_id.clone(),
            name: def.name.clone(),
            location: Some(pb::GeoPoint {
                latitude_deg: def.lat,
                longitude_deg: def.lon,
            }),
            time_zone: def.time_zone.clone(),
            status: store_status_pb(def.status) as i32,
            default_safety_stock: def.default_safety_stock,
            default_hold_ms: def.default_hold_ms,
            max_hold_ms: def.max_hold_ms,
            pickup_instructions: def.pickup_instructions.clone(),
        }),
        hours: None,
        exceptions: Vec::new(),
        staffing: Vec::new(),
        slot_config: None,
        updated_at_ms: 0,
    }
}

// ---------------------------------------------------------------- inventory

/// A cell as the contract shows it. `as_of_seq` is the LSN of the change when the
/// caller knows it (a POS outcome), else 0: the engine does not keep a per-cell LSN.
pub fn availability_pb(store: &str, sku: &str, cell: CellView, as_of_seq: u64) -> pb::Availability {
    pb::Availability {
        store_id: store.to_owned(),
        sku: sku.to_owned(),
        on_hand: cell.on_hand,
        held: cell.held,
        safety_stock: cell.safety_stock,
        atp: cell.atp(),
        as_of_seq,
    }
}

/// One POS event as the engine call it becomes.
#[derive(Debug)]
pub enum PosCommand {
    /// A delta.
    Delta(pe::PosDelta),
    /// A count.
    Count(pe::PosCount),
}

/// A POS event from proto; `i` is its index in the batch, for field paths.
pub fn pos_command(i: usize, e: pb::PosEvent) -> Result<PosCommand, DomainError> {
    let field = |f: &str| format!("events[{i}].{f}");
    match e.change {
        Some(pb::pos_event::Change::Delta(d)) => {
            if d.qty == 0 {
                return Err(invalid(field("delta.qty"), "must be at least 1"));
            }
            let qty = i64::from(d.qty);
            let (kind, qty) = match pb::PosDeltaKind::try_from(d.kind) {
                Ok(pb::PosDeltaKind::Sale) => (pe::PosDeltaKind::Sale, qty),
                Ok(pb::PosDeltaKind::Return) => (pe::PosDeltaKind::Return, qty),
                Ok(pb::PosDeltaKind::Receive) => (pe::PosDeltaKind::Receive, qty),
                Ok(pb::PosDeltaKind::AdjustUp) => (pe::PosDeltaKind::Adjust, qty),
                Ok(pb::PosDeltaKind::AdjustDown) => (pe::PosDeltaKind::Adjust, -qty),
                _ => return Err(invalid(field("delta.kind"), "must be set")),
            };
            Ok(PosCommand::Delta(pe::PosDelta {
                store: e.store_id,
                sku: e.sku,
                pos_event_id: e.pos_event_id,
                kind,
                qty,
                order_ref: (!e.order_ref.is_empty()).then_some(e.order_ref),
                pos_time: pe::Timestamp::from_ms(e.occurred_at_ms),
            }))
        }
        Some(pb::pos_event::Change::Count(c)) => Ok(PosCommand::Count(pe::PosCount {
            store: e.store_id,
            sku: e.sku,
            pos_event_id: e.pos_event_id,
            counted: c.counted_qty,
            as_of: pe::Timestamp::from_ms(c.as_of_ms),
        })),
        None => Err(invalid(field("change"), "a delta or a count is required")),
    }
}

// ---------------------------------------------------------------- holds

/// A hold request from proto (the slot form is refused by the caller before this).
/// Field names in errors are relative to the request (callers of a batch prefix them with
/// [`DomainError::in_field`]).
pub fn hold_request(r: &pb::HoldRequest) -> Result<pe::HoldRequest, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    let lines = r
        .lines
        .iter()
        .map(|l| pe::LineRequest::new(l.sku.clone(), l.qty))
        .collect();
    let mut req = pe::HoldRequest::new(r.store_id.clone(), lines).with_key(key);
    match r.expiry {
        Some(pb::hold_request::Expiry::TtlMs(ttl)) => req = req.with_ttl_ms(ttl),
        Some(pb::hold_request::Expiry::SlotStartMs(_)) => {
            return Err(DomainError::Unimplemented(
                "holds on a pickup slot need store calendars, which are not wired yet",
            ));
        }
        None => {}
    }
    Ok(req)
}

/// A hold id from proto, or NOT_FOUND naming it when it cannot be one.
pub fn hold_id(id: u64) -> HoldId {
    HoldId(id)
}

/// The `HoldInfo` of an active hold.
pub fn hold_info_pb(
    store: &str,
    lines: Vec<pb::Line>,
    created_ms: i64,
    expires_ms: i64,
    state: pb::HoldState,
    hold: HoldId,
) -> pb::HoldInfo {
    pb::HoldInfo {
        hold_id: hold.0,
        store_id: store.to_owned(),
        lines,
        slot: None,
        created_at_ms: created_ms,
        expires_at_ms: expires_ms,
        state: state as i32,
    }
}

/// An engine hold's lines with their SKU names.
pub fn lines_pb(engine: &pe::Engine, lines: &[pe::Line]) -> Vec<pb::Line> {
    lines
        .iter()
        .map(|l| pb::Line {
            sku: engine.sku_name(l.sku).unwrap_or_default(),
            qty: l.qty,
        })
        .collect()
}

/// The `HoldInfo` of an engine hold that is active (or was, a moment ago).
pub fn active_hold_pb(engine: &pe::Engine, h: &pe::HoldInfo) -> pb::HoldInfo {
    let store = store_name(engine, h.hold.store().0);
    let state = if h.confirmed {
        pb::HoldState::Confirmed
    } else {
        pb::HoldState::Active
    };
    hold_info_pb(
        &store,
        lines_pb(engine, &h.lines),
        h.created.as_ms(),
        h.expires_at.as_ms(),
        state,
        h.hold,
    )
}

/// The external id of a store by its engine id.
pub fn store_name(engine: &pe::Engine, store: u32) -> String {
    engine
        .store_def(pe::StoreId(store))
        .map(|d| d.external_id)
        .unwrap_or_default()
}

/// A hold rejection as the contract shows it.
pub fn hold_rejected_pb(r: &HoldRejection) -> pb::HoldRejected {
    match r {
        HoldRejection::InsufficientStock { shortages } => pb::HoldRejected {
            reason: pb::HoldRejectReason::InsufficientStock as i32,
            shortages: shortages
                .iter()
                .map(|s| pb::LineShortage {
                    sku: s.sku.clone(),
                    requested: s.requested,
                    available: s.available,
                })
                .collect(),
            hold_state: 0,
            message: format!("{} line(s) short", shortages.len()),
        },
        HoldRejection::StoreNotAccepting { status } => pb::HoldRejected {
            reason: pb::HoldRejectReason::StoreNotAccepting as i32,
            shortages: Vec::new(),
            hold_state: 0,
            message: format!("store is {status:?}"),
        },
        HoldRejection::SlotUnavailable {
            slot_start_ms,
            problem,
        } => pb::HoldRejected {
            reason: if *problem == pickline_engine::SlotProblem::Full {
                pb::HoldRejectReason::SlotFull as i32
            } else {
                pb::HoldRejectReason::SlotUnavailable as i32
            },
            shortages: Vec::new(),
            hold_state: 0,
            message: format!("slot {slot_start_ms}: {problem:?}"),
        },
    }
}

/// The rejection of an action on a hold that has ended. The engine knows it ended but not
/// how (the event stream says), so `hold_state` stays UNSPECIFIED.
pub fn hold_not_active_pb(hold: HoldId) -> pb::HoldRejected {
    pb::HoldRejected {
        reason: pb::HoldRejectReason::HoldNotActive as i32,
        shortages: Vec::new(),
        hold_state: 0,
        message: format!("hold {} has ended (released, expired or collected)", hold.0),
    }
}

/// NOT_FOUND for a hold id the engine never granted.
pub fn unknown_hold(hold: HoldId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Hold,
        id: hold.0.to_string(),
    }
}

// ---------------------------------------------------------------- orders

/// The engine's channel name for a proto channel.
pub fn channel(c: i32, name: &str) -> Result<String, DomainError> {
    Ok(match pb::Channel::try_from(c) {
        Ok(pb::Channel::Shopify) => "shopify".into(),
        Ok(pb::Channel::Woocommerce) => "woocommerce".into(),
        Ok(pb::Channel::Bigcommerce) => "bigcommerce".into(),
        Ok(pb::Channel::Magento) => "magento".into(),
        Ok(pb::Channel::Commercetools) => "commercetools".into(),
        Ok(pb::Channel::Direct) => "direct".into(),
        Ok(pb::Channel::Other) if !name.is_empty() => format!("other:{name}"),
        Ok(pb::Channel::Other) => return Err(invalid("channel_name", "required for OTHER")),
        _ => return Err(invalid("channel", "must be set")),
    })
}

fn channel_pb(c: &str) -> (pb::Channel, String) {
    let ch = match c {
        "shopify" => pb::Channel::Shopify,
        "woocommerce" => pb::Channel::Woocommerce,
        "bigcommerce" => pb::Channel::Bigcommerce,
        "magento" => pb::Channel::Magento,
        "commercetools" => pb::Channel::Commercetools,
        "direct" => pb::Channel::Direct,
        other => {
            return (
                pb::Channel::Other,
                other.strip_prefix("other:").unwrap_or(other).to_owned(),
            );
        }
    };
    (ch, String::new())
}

/// A `CreateOrder` command from proto.
pub fn create_order(r: pb::CreateOrderRequest) -> Result<pe::CreateOrder, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    let customer = r.customer.unwrap_or_default();
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(pe::CreateOrder {
        hold: HoldId(r.hold_id),
        channel: channel(r.channel, &r.channel_name)?,
        channel_order_id: r.channel_order_id,
        customer: pe::Customer {
            email: opt(customer.email),
            phone: opt(customer.phone),
            sms_consent: customer.sms_consent,
            email_consent: customer.email_consent,
        },
        lines: r
            .lines
            .into_iter()
            .map(|l| pe::OrderLineRequest {
                sku: l.sku,
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                description: l.title,
            })
            .collect(),
        currency: r.currency,
        idempotency_key: Some(key),
    })
}

fn order_state_pb(s: OrderStatus) -> pb::OrderState {
    match s {
        OrderStatus::Placed => pb::OrderState::Placed,
        OrderStatus::Confirmed => pb::OrderState::Confirmed,
        OrderStatus::Picking => pb::OrderState::Picking,
        OrderStatus::Ready => pb::OrderState::Ready,
        OrderStatus::Collected => pb::OrderState::Collected,
        OrderStatus::Cancelled => pb::OrderState::Cancelled,
        OrderStatus::Expired => pb::OrderState::Expired,
        OrderStatus::NoShow => pb::OrderState::NoShow,
    }
}

/// An engine status from a proto order state (for ListOrders filters).
pub fn order_status(field: &str, s: i32) -> Result<OrderStatus, DomainError> {
    Ok(match pb::OrderState::try_from(s) {
        Ok(pb::OrderState::Placed) => OrderStatus::Placed,
        Ok(pb::OrderState::Confirmed) => OrderStatus::Confirmed,
        Ok(pb::OrderState::Picking) => OrderStatus::Picking,
        Ok(pb::OrderState::Ready) => OrderStatus::Ready,
        Ok(pb::OrderState::Collected) => OrderStatus::Collected,
        Ok(pb::OrderState::Cancelled) => OrderStatus::Cancelled,
        Ok(pb::OrderState::Expired) => OrderStatus::Expired,
        Ok(pb::OrderState::NoShow) => OrderStatus::NoShow,
        _ => return Err(invalid(field, "must be a set order state")),
    })
}

/// An order as the contract shows it. Customer name and locale are not kept by the
/// engine, so they are empty.
pub fn order_pb(engine: &pe::Engine, v: &OrderView) -> pb::PickupOrder {
    let (channel, channel_name) = channel_pb(&v.channel);
    let mut history = Vec::with_capacity(v.transitions.len());
    let mut from = pb::OrderState::Unspecified;
    for (status, at) in &v.transitions {
        let to = order_state_pb(*status);
        history.push(pb::OrderTransition {
            from: from as i32,
            to: to as i32,
            at_ms: at.as_ms(),
            staff_id: String::new(),
            reason: String::new(),
        });
        from = to;
    }
    pb::PickupOrder {
        order_id: v.order.0,
        hold_id: v.order.hold().0,
        store_id: store_name(engine, v.order.store().0),
        channel: channel as i32,
        channel_name,
        channel_order_id: v.channel_order_id.clone(),
        customer: Some(pb::CustomerContact {
            name: String::new(),
            email: v.customer.email.clone().unwrap_or_default(),
            phone: v.customer.phone.clone().unwrap_or_default(),
            email_consent: v.customer.email_consent,
            sms_consent: v.customer.sms_consent,
            locale: String::new(),
        }),
        lines: v
            .lines
            .iter()
            .map(|l| pb::PricedLine {
                sku: engine.sku_name(l.sku).unwrap_or_default(),
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                picked_qty: l.qty,
                title: l.description.clone(),
            })
            .collect(),
        currency: v.currency.clone(),
        state: order_state_pb(v.status) as i32,
        slot: None,
        estimated_ready_ms: 0,
        pickup_code: v.code.map(|c| c.to_string()).unwrap_or_default(),
        code_attempts: v.wrong_attempts,
        code_locked: v.locked,
        history,
    }
}

/// The current view of an order, or NOT_FOUND.
pub fn order_view(engine: &pe::Engine, order: OrderId) -> Result<OrderView, DomainError> {
    engine.order(order).ok_or_else(|| unknown_order(order))
}

/// NOT_FOUND for an order id.
pub fn unknown_order(order: OrderId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Order,
        id: order.0.to_string(),
    }
}

/// The status error of a refused order action that is misuse, not a business answer.
pub fn order_rejection(order: OrderId, r: &OrderRejection, action: &'static str) -> DomainError {
    match r {
        OrderRejection::UnknownOrder => unknown_order(order),
        OrderRejection::IllegalTransition { from } => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: format!("{:?}", order_state_pb(*from)),
            action,
        },
        OrderRejection::NoSuchLine => invalid("lines.sku", "the order has no line of that SKU"),
        OrderRejection::NotShort { line_qty } => invalid(
            "lines.picked_qty",
            format!("must be below the line's {line_qty} units"),
        ),
        OrderRejection::NotLocked => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: "not locked".to_owned(),
            action,
        },
    }
}

/// The code a customer presents: the code itself, or a scanned QR payload of this
/// order (whose code is then checked).
pub fn presented_code(order: OrderId, input: &str) -> Result<String, DomainError> {
    if input.starts_with(pe::pickup_code::QR_PAYLOAD_PREFIX) {
        let qr = QrPayload::parse(input).map_err(|e| invalid("code", e.to_string()))?;
        if qr.order_id() != order.to_string() {
            return Err(invalid("code", "the QR payload belongs to another order"));
        }
        return Ok(qr.code().to_string());
    }
    Ok(input.to_owned())
}

/// A code check that did not pass, as the contract shows it; `Ok(None)` when accepted.
pub fn code_rejected_pb(v: &VerifyOutcome) -> Result<Option<pb::OrderRejected>, DomainError> {
    let rejected = |reason: pb::OrderRejectReason, attempts_left, message: &str| {
        Ok(Some(pb::OrderRejected {
            reason: reason as i32,
            attempts_left,
            message: message.to_owned(),
        }))
    };
    match v {
        VerifyOutcome::Accepted | VerifyOutcome::AlreadyAccepted => Ok(None),
        VerifyOutcome::Wrong { attempts_left } => rejected(
            pb::OrderRejectReason::WrongCode,
            *attempts_left,
            "wrong code",
        ),
        VerifyOutcome::WrongNowLocked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "wrong code; the order is now locked",
        ),
        VerifyOutcome::Locked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "locked by wrong codes; a staff override is needed",
        ),
        VerifyOutcome::Malformed(e) => Err(invalid("code", e.to_string())),
    }
}

/// An e-receipt in its three renderings.
pub fn receipt_pb(r: &Receipt) -> pb::Receipt {
    pb::Receipt {
        json: r.to_json(),
        text: r.to_text(),
        html: r.to_html(),
        total: Some(pb::Money {
            amount_minor: r.total_minor(),
            currency: r.currency().code().to_owned(),
        }),
    }
}

// ---------------------------------------------------------------- events

/// One logged record as contract events (several events of a record share its seq).
/// Bookkeeping events without a contract form (SKU registration, consumer acks,
/// rejections recorded under a key) are left out; their seq still advances.
pub fn record_pb(engine: &pe::Engine, rec: &pe::LoggedRecord) -> Vec<pb::Event> {
    use pb::event::Kind;
    let seq = rec.lsn.0;
    let at_ms = rec.record.at.as_ms();
    let cell = |store: pe::StoreId, sku: pe::SkuId| {
        let store_name = store_name(engine, store.0);
        let sku_name = engine.sku_name(sku).unwrap_or_default();
        let view = engine
            .availability(&store_name, &sku_name)
            .unwrap_or_default();
        availability_pb(&store_name, &sku_name, view, seq)
    };
    let hold_changed = |hold: HoldId, state: pb::HoldState| {
        Kind::HoldChanged(match engine.hold_info(hold) {
            Some(h) => pb::HoldInfo {
                state: state as i32,
                ..active_hold_pb(engine, &h)
            },
            None => hold_info_pb(
                &store_name(engine, hold.store().0),
                Vec::new(),
                0,
                0,
                state,
                hold,
            ),
        })
    };
    let order_changed = |order: OrderId| {
        engine.order(order).map(|v| {
            let o = order_pb(engine, &v);
            Kind::OrderChanged(pb::OrderChanged {
                transition: o.history.last().cloned(),
                receipt: (v.status == OrderStatus::Collected)
                    .then(|| engine.order_receipt(order))
                    .flatten()
                    .and_then(Result::ok)
                    .map(|r| receipt_pb(&r)),
                order: Some(o),
                slot: None,
            })
        })
    };
    rec.record
        .events
        .iter()
        .filter_map(|ev| {
            let kind = match ev {
                pe::Event::StoreDefined { def, .. } => Kind::StoreChanged(pb::StoreChanged {
                    store: Some(store_pb(def)),
                }),
                pe::Event::HoldGranted {
                    hold,
                    lines,
                    expires_at,
                    ..
                } => Kind::HoldGranted(hold_info_pb(
                    &store_name(engine, hold.store().0),
                    lines_pb(engine, lines),
                    at_ms,
                    expires_at.as_ms(),
                    pb::HoldState::Active,
                    *hold,
                )),
                pe::Event::HoldExtended { hold, .. } => hold_changed(*hold, pb::HoldState::Active),
                pe::Event::HoldConfirmed { hold } => hold_changed(*hold, pb::HoldState::Confirmed),
                pe::Event::HoldReleased { hold, reason } => hold_changed(
                    *hold,
                    match reason {
                        pe::ReleaseReason::Released => pb::HoldState::Released,
                        pe::ReleaseReason::Expired => pb::HoldState::Expired,
                    },
                ),
                pe::Event::PosDelta {
                    store,
                    sku,
                    pos_event_id,
                    kind,
                    qty,
                    order_ref,
                    pos_time,
                    ..
                } => {
                    let c = cell(*store, *sku);
                    let (kind, qty) = match kind {
                        pe::PosDeltaKind::Sale => (pb::PosDeltaKind::Sale, *qty),
                        pe::PosDeltaKind::Return => (pb::PosDeltaKind::Return, *qty),
                        pe::PosDeltaKind::Receive => (pb::PosDeltaKind::Receive, *qty),
                        pe::PosDeltaKind::Adjust if *qty < 0 => {
                            (pb::PosDeltaKind::AdjustDown, -*qty)
                        }
                        pe::PosDeltaKind::Adjust => (pb::PosDeltaKind::AdjustUp, *qty),
                    };
                    Kind::StockChanged(pb::StockChanged {
                        pos_event: Some(pb::PosEvent {
                            pos_event_id: pos_event_id.clone(),
                            store_id: c.store_id.clone(),
                            sku: c.sku.clone(),
                            occurred_at_ms: pos_time.as_ms(),
                            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                                kind: kind as i32,
                                qty: u32::try_from(qty).unwrap_or(u32::MAX),
                            })),
                            order_ref: order_ref.clone().unwrap_or_default(),
                        }),
                        cell: Some(c),
                    })
                }
                pe::Event::PosCount {
                    store,
                    sku,
                    pos_event_id,
                    counted,
                    as_of,
                    ..
                } => {
                    let c = cell(*store, *sku);
                    Kind::StockChanged(pb::StockChanged {
                        pos_event: Some(pb::PosEvent {
                            pos_event_id: pos_event_id.clone(),
                            store_id: c.store_id.clone(),
                            sku: c.sku.clone(),
                            occurred_at_ms: as_of.as_ms(),
                            change: Some(pb::pos_event::Change::Count(pb::PosCount {
                                counted_qty: *counted,
                                as_of_ms: as_of.as_ms(),
                            })),
                            order_ref: String::new(),
                        }),
                        cell: Some(c),
                    })
                }
                pe::Event::Shortage {
                    store, sku, holds, ..
                } => Kind::Shortage(pb::ShortageDetected {
                    cell: Some(cell(*store, *sku)),
                    hold_ids: holds.iter().map(|h| h.0).collect(),
                }),
                pe::Event::OrderCreated { order, .. }
                | pe::Event::OrderConfirmed { order }
                | pe::Event::PickingStarted { order, .. }
                | pe::Event::OrderReady { order, .. }
                | pe::Event::OrderCollected { order, .. }
                | pe::Event::OrderCancelled { order, .. }
                | pe::Event::OrderExpired { order, .. } => order_changed(*order)?,
                _ => return None,
            };
            Some(pb::Event {
                seq,
                at_ms,
                kind: Some(kind),
            })
        })
        .collect()
}
