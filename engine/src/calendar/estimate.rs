//! Estimated ready time of a new order.

use super::{SLOT_SCAN_SPAN_MAX_MS, Slot, StoreCalendar};

/// The state of a store's picking queue when a customer asks when an order could be
/// ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyQuery {
    /// The current instant, Unix milliseconds (injected: the calendar reads no clock).
    pub now_ms: i64,
    /// Orders waiting to be picked ahead of this one.
    pub queue_len: u32,
    /// Staff picking right now, if the caller knows better than the roster (staff
    /// checked in on the tablet); `None` uses the calendar's staffing at `now_ms`.
    pub staff_on_shift_now: Option<u32>,
    /// Average time one staff member needs to pick one order, in milliseconds.
    pub pick_time_per_order_ms: u32,
}

/// When a new order can be picked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyEstimate {
    /// When the order is expected to be ready, before rounding to a slot.
    pub ready_ms: i64,
    /// The first slot starting at or after `ready_ms` that has capacity left; its
    /// `start_ms` is the estimated pickup time to show the customer.
    pub slot: Slot,
}

impl StoreCalendar {
    /// Estimates when an order placed at `query.now_ms` can be picked up.
    ///
    /// `ready_ms = work_start + lead time + ceil(queue_len x pick time / staff)`: the
    /// queue ahead is shared evenly by the staff on shift (`query.staff_on_shift_now`,
    /// else the roster at `now`). When that is nobody (night, or the caller says so),
    /// picking is taken to start at the first slot at or after `now` that has rostered
    /// staff, with that slot's staff; otherwise `work_start = now`.
    ///
    /// The result is rounded up to the first slot whose **start** is at or after
    /// `ready_ms` and for which `booked(slot.start_ms) < slot.capacity`. A slot that has
    /// already begun is never offered, even if it ends after `ready_ms`: a customer
    /// arrives at the start of the slot, so the order must be ready by then.
    ///
    /// `booked` reports how many pickups a slot (by `start_ms`) already has; the engine
    /// plugs its slot-booking table in here. It is called once per candidate slot, in
    /// order.
    ///
    /// Returns `None` when no slot qualifies within [`SLOT_SCAN_SPAN_MAX_MS`] of `now`,
    /// or when the arithmetic would leave the range of instants.
    pub fn estimate_ready(
        &self,
        query: &ReadyQuery,
        mut booked: impl FnMut(i64) -> u32,
    ) -> Option<ReadyEstimate> {
        let now_ms = query.now_ms;
        let horizon_ms = now_ms.checked_add(SLOT_SCAN_SPAN_MAX_MS)?;
        let staff_now = query
            .staff_on_shift_now
            .unwrap_or_else(|| self.staff_on_shift_at(now_ms));
        let (work_start_ms, staff) = if staff_now > 0 {
            (now_ms, staff_now)
        } else {
            let first_staffed = self
                .slots(now_ms, horizon_ms)
                .find(|slot| slot.capacity > 0)?;
            let staff = self.staff_on_shift_at(first_staffed.start_ms);
            (first_staffed.start_ms, staff)
        };
        // A staffed slot has staff > 0, so `max(1)` only keeps the division total.
        let staff = u64::from(staff.max(1));
        let queue_work_ms = u64::from(query.queue_len) * u64::from(query.pick_time_per_order_ms);
        let queue_wait_ms = i64::try_from(queue_work_ms.div_ceil(staff)).ok()?;
        let ready_ms = work_start_ms
            .checked_add(self.lead_time_ms())?
            .checked_add(queue_wait_ms)?;
        if ready_ms >= horizon_ms {
            return None;
        }
        self.slots(ready_ms, horizon_ms)
            .find(|slot| booked(slot.start_ms) < slot.capacity)
            .map(|slot| ReadyEstimate { ready_ms, slot })
    }
}
