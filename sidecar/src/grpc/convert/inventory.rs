//! Conversions of `inventory.proto`: availability reads and the POS feed.

use super::*;

/// A cell as the contract shows it. `as_of_seq` is the LSN of the change (an event, a POS
/// outcome) or, for a read, [`read_point`] taken before the cell was read.
/// The log's head before a read: every change up to it is in what is read after it (a
/// change is logged under the cell's lock and applied before the lock is let go).
pub fn read_point(engine: &pe::Engine) -> u64 {
    engine.log().last_lsn().0
}

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
    store_id(&field("store_id"), &e.store_id)?;
    sku(&field("sku"), &e.sku)?;
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
