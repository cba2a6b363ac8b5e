//! Conversions of `event.proto`: the event stream, built from each record's own facts.

use super::*;

/// One logged record as contract events (several events of a record share its seq).
/// Built from the record alone (the facts its events carry), never from the state now:
/// the same record reads the same at any time, also after a restart. Names (store and SKU
/// external ids, slot times) are looked up, as they never change for an id. Bookkeeping
/// events without a contract form (SKU registration, consumer acks, rejections recorded
/// under a key, order transitions whose facts follow them) are left out; their seq still
/// advances.
pub fn record_pb(engine: &pe::Engine, rec: &pe::LoggedRecord) -> Vec<pb::Event> {
    use pb::event::Kind;
    let seq = rec.lsn.0;
    let at_ms = rec.record.at.as_ms();
    let cell = |store: pe::StoreId, sku: pe::SkuId, after: &CellView| {
        let store_name = store_name(engine, store.0);
        let sku_name = engine.sku_name(sku).unwrap_or_default();
        availability_pb(&store_name, &sku_name, *after, seq)
    };
    let hold_pb = |hold: HoldId, facts: &pe::HoldFacts, state: pb::HoldState| {
        hold_info_pb(
            store_name(engine, hold.store().0),
            lines_pb(engine, &facts.lines),
            facts.created.as_ms(),
            facts.expires_at.as_ms(),
            state,
            hold,
            slot_pb(engine, hold.store(), facts.slot),
        )
    };
    let stock_changed = |store: pe::StoreId,
                         sku: pe::SkuId,
                         pos_event_id: &str,
                         occurred_at_ms: i64,
                         change: pb::pos_event::Change,
                         order_ref: String,
                         after: &CellView| {
        let c = cell(store, sku, after);
        Kind::StockChanged(pb::StockChanged {
            pos_event: Some(pb::PosEvent {
                pos_event_id: pos_event_id.to_owned(),
                store_id: c.store_id.clone(),
                sku: c.sku.clone(),
                occurred_at_ms,
                change: Some(change),
                order_ref,
            }),
            cell: Some(c),
        })
    };
    let delta = |kind: pb::PosDeltaKind, qty: i64| {
        pb::pos_event::Change::Delta(pb::PosDelta {
            kind: kind as i32,
            qty: u32::try_from(qty.unsigned_abs()).unwrap_or(u32::MAX),
        })
    };
    rec.record
        .events
        .iter()
        .filter_map(|ev| {
            let kind = match ev {
                pe::Event::StoreDefined { def, .. } => Kind::StoreChanged(pb::StoreChanged {
                    store: Some(store_full_pb(engine, def)),
                }),
                pe::Event::CalendarSet { store, .. } | pe::Event::PickTimeSet { store, .. } => {
                    Kind::StoreChanged(pb::StoreChanged {
                        store: Some(store_full_pb(engine, &engine.store_def(*store)?)),
                    })
                }
                pe::Event::HoldGranted {
                    hold,
                    lines,
                    expires_at,
                    slot,
                    ..
                } => Kind::HoldGranted(hold_info_pb(
                    store_name(engine, hold.store().0),
                    lines_pb(engine, lines),
                    at_ms,
                    expires_at.as_ms(),
                    pb::HoldState::Active,
                    *hold,
                    slot_pb(engine, hold.store(), *slot),
                )),
                pe::Event::HoldExtended { hold, facts } => Kind::HoldChanged(hold_pb(
                    *hold,
                    facts,
                    if facts.confirmed {
                        pb::HoldState::Confirmed
                    } else {
                        pb::HoldState::Active
                    },
                )),
                pe::Event::HoldConfirmed { hold, facts } => {
                    Kind::HoldChanged(hold_pb(*hold, facts, pb::HoldState::Confirmed))
                }
                pe::Event::HoldReleased {
                    hold,
                    reason,
                    facts,
                } => Kind::HoldChanged(hold_pb(
                    *hold,
                    facts,
                    match reason {
                        pe::ReleaseReason::Released => pb::HoldState::Released,
                        pe::ReleaseReason::Expired => pb::HoldState::Expired,
                    },
                )),
                pe::Event::OrderCollected { order, hold, .. } => {
                    Kind::HoldChanged(hold_pb(order.hold(), hold, pb::HoldState::Consumed))
                }
                pe::Event::PosDelta {
                    store,
                    sku,
                    pos_event_id,
                    kind,
                    qty,
                    order_ref,
                    pos_time,
                    after,
                } => {
                    let kind = match kind {
                        pe::PosDeltaKind::Sale => pb::PosDeltaKind::Sale,
                        pe::PosDeltaKind::Return => pb::PosDeltaKind::Return,
                        pe::PosDeltaKind::Receive => pb::PosDeltaKind::Receive,
                        pe::PosDeltaKind::Adjust if *qty < 0 => pb::PosDeltaKind::AdjustDown,
                        pe::PosDeltaKind::Adjust => pb::PosDeltaKind::AdjustUp,
                    };
                    stock_changed(
                        *store,
                        *sku,
                        pos_event_id,
                        pos_time.as_ms(),
                        delta(kind, *qty),
                        order_ref.clone().unwrap_or_default(),
                        after,
                    )
                }
                pe::Event::PosOrderSale {
                    store,
                    sku,
                    pos_event_id,
                    order,
                    reported,
                    pos_time,
                    after,
                    ..
                } => stock_changed(
                    *store,
                    *sku,
                    pos_event_id,
                    pos_time.as_ms(),
                    delta(pb::PosDeltaKind::Sale, i64::from(*reported)),
                    order.0.to_string(),
                    after,
                ),
                pe::Event::PosCount {
                    store,
                    sku,
                    pos_event_id,
                    counted,
                    as_of,
                    after,
                    ..
                } => stock_changed(
                    *store,
                    *sku,
                    pos_event_id,
                    as_of.as_ms(),
                    pb::pos_event::Change::Count(pb::PosCount {
                        counted_qty: *counted,
                        as_of_ms: as_of.as_ms(),
                    }),
                    String::new(),
                    after,
                ),
                pe::Event::Shortage {
                    store,
                    sku,
                    on_hand,
                    held,
                    safety_stock,
                    holds,
                } => Kind::Shortage(pb::ShortageDetected {
                    cell: Some(cell(
                        *store,
                        *sku,
                        &CellView {
                            on_hand: *on_hand,
                            held: *held,
                            safety_stock: *safety_stock,
                        },
                    )),
                    hold_ids: holds.iter().map(|h| h.0).collect(),
                }),
                pe::Event::OrderChanged {
                    order,
                    staff,
                    slot,
                    facts,
                } => {
                    let view = facts.view(*order);
                    let o = order_pb_with_slot(engine, &view, *slot);
                    let transition = o.history.last().cloned().map(|t| pb::OrderTransition {
                        staff_id: staff.clone().unwrap_or_default(),
                        ..t
                    });
                    Kind::OrderChanged(pb::OrderChanged {
                        transition,
                        receipt: (view.status == OrderStatus::Collected)
                            .then(|| engine.receipt_of(*order, facts))
                            .flatten()
                            .and_then(Result::ok)
                            .map(|r| receipt_pb(&r)),
                        slot: o.slot,
                        order: Some(o),
                    })
                }
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
