//! Conversions of `hold.proto`: hold requests, hold ids and what a hold answer says.

use super::*;

/// A hold request from proto.
/// Field names in errors are relative to the request (callers of a batch prefix them with
/// [`DomainError::in_field`]).
pub fn hold_request(r: pb::HoldRequest) -> Result<pe::HoldRequest, DomainError> {
    check_key("idempotency_key", &r.idempotency_key)?;
    hold_command(r)
}

/// The engine command of a hold request whose key the caller has checked (present, or
/// absent for a hold of a batch that has a key of its own).
pub fn hold_command(r: pb::HoldRequest) -> Result<pe::HoldRequest, DomainError> {
    store_id("store_id", &r.store_id)?;
    lines("lines", &r.lines)?;
    // Moved, not copied: the response is built from the engine request in turn.
    let lines = r
        .lines
        .into_iter()
        .map(|l| pe::LineRequest::new(l.sku, l.qty))
        .collect();
    let mut req = pe::HoldRequest::new(r.store_id, lines);
    if !r.idempotency_key.is_empty() {
        req = req.with_key(r.idempotency_key);
    }
    match r.expiry {
        Some(pb::hold_request::Expiry::TtlMs(ttl)) => req = req.with_ttl_ms(ttl),
        Some(pb::hold_request::Expiry::SlotStartMs(start)) => req = req.with_slot(start),
        None => {}
    }
    Ok(req)
}

/// A hold id from proto. 0 is proto3's "not set", and the engine never issues it:
/// INVALID_ARGUMENT rather than a lookup of hold 0.
pub fn hold_id(field: &str, id: u64) -> Result<HoldId, DomainError> {
    match id {
        0 => Err(invalid(field, "must be set (hold ids are never 0)")),
        id => Ok(HoldId(id)),
    }
}

/// An order id from proto (an order's id is its hold's id, so never 0).
pub fn order_id(field: &str, id: u64) -> Result<OrderId, DomainError> {
    match id {
        0 => Err(invalid(field, "must be set (order ids are never 0)")),
        id => Ok(OrderId(id)),
    }
}

/// The `HoldInfo` of an active hold.
pub fn hold_info_pb(
    store: String,
    lines: Vec<pb::Line>,
    created_ms: i64,
    expires_ms: i64,
    state: pb::HoldState,
    hold: HoldId,
    slot: Option<pb::PickupSlot>,
) -> pb::HoldInfo {
    pb::HoldInfo {
        hold_id: hold.0,
        store_id: store,
        lines,
        slot,
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
        store,
        lines_pb(engine, &h.lines),
        h.created.as_ms(),
        h.expires_at.as_ms(),
        state,
        h.hold,
        slot_pb(engine, h.hold.store(), h.slot),
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

/// A hold of a batch refused because its store's active-hold table is full.
pub fn store_holds_full_pb(limit: &str, value: u64) -> pb::HoldRejected {
    pb::HoldRejected {
        reason: pb::HoldRejectReason::StoreHoldsFull as i32,
        shortages: Vec::new(),
        hold_state: 0,
        message: format!("{limit} = {value} reached; retry once holds end"),
    }
}

/// The rejection of an action on a hold that has ended, with how it ended when the engine
/// still remembers ([`pe::Engine::hold_end`]: a ring of [`pe::ENDED_HOLDS_KEPT`] per
/// store); UNSPECIFIED for an older one.
pub fn hold_not_active_pb(engine: &pe::Engine, hold: HoldId) -> pb::HoldRejected {
    let state = ended_hold_state_pb(engine, hold);
    let how = match state {
        pb::HoldState::Released => "was released",
        pb::HoldState::Expired => "expired",
        pb::HoldState::Consumed => "was collected",
        _ => "has ended (released, expired or collected)",
    };
    pb::HoldRejected {
        reason: pb::HoldRejectReason::HoldNotActive as i32,
        shortages: Vec::new(),
        hold_state: state as i32,
        message: format!("hold {} {how}", hold.0),
    }
}

/// How an ended hold ended, as the contract names it; UNSPECIFIED when the engine no
/// longer remembers.
pub fn ended_hold_state_pb(engine: &pe::Engine, hold: HoldId) -> pb::HoldState {
    match engine.hold_end(hold) {
        Some(pe::HoldEnd::Released) => pb::HoldState::Released,
        Some(pe::HoldEnd::Expired) => pb::HoldState::Expired,
        Some(pe::HoldEnd::Consumed) => pb::HoldState::Consumed,
        None => pb::HoldState::Unspecified,
    }
}

/// NOT_FOUND for a hold id the engine never granted.
pub fn unknown_hold(hold: HoldId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Hold,
        id: hold.0.to_string(),
    }
}
