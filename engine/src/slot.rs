//! Per-store pickup calendar, slot bookings and the picking-time estimate.
//!
//! A store's [`SlotState`] lives inside its store state, under the store state lock that
//! every hold takes after its cell locks. So a hold that books a slot checks the slot's
//! capacity and books it in the same critical section that reserves its units: the
//! booking table can never be overbooked, and a hold and its slot are granted together or
//! not at all (SPEC invariant 2).
//!
//! The calendar configuration is logged ([`crate::Event::CalendarSet`]) and encoded in
//! snapshots, so replay rebuilds the same calendar. Bookings are not logged on their own:
//! they are derived from the slot recorded on each granted hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::civil::Date;

use crate::calendar::{
    CalendarConfig, DateException, DayHours, LocalInterval, LocalTime, PickupConfig, ReadyEstimate,
    ReadyQuery, Slot, StaffShift, StoreCalendar, WeeklyHours, WeeklyStaffing,
};
use crate::codec::{Dec, DecodeError, Enc};

/// Pick time per order when the store sets none: 3 minutes.
pub const PICK_TIME_PER_ORDER_MS_DEFAULT: u32 = 3 * 60_000;
/// Longest pick time per order a store may set: 4 hours.
pub const PICK_TIME_PER_ORDER_MS_MAX: u32 = 4 * 3_600_000;

/// Why a hold could not book the pickup slot it asked for. A business outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotProblem {
    /// The store has no pickup calendar.
    NoCalendar,
    /// No slot of the store starts at the requested instant.
    NoSuchSlot,
    /// The slot starts before now plus the store's lead time: the order cannot be ready.
    TooSoon,
    /// Every unit of the slot's capacity is booked.
    Full,
}

impl SlotProblem {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            SlotProblem::NoCalendar => 0,
            SlotProblem::NoSuchSlot => 1,
            SlotProblem::TooSoon => 2,
            SlotProblem::Full => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => SlotProblem::NoCalendar,
            1 => SlotProblem::NoSuchSlot,
            2 => SlotProblem::TooSoon,
            3 => SlotProblem::Full,
            _ => return None,
        })
    }
}

/// A store's calendar, bookings and picking settings. Lives under the store state lock.
#[derive(Debug, Clone)]
pub(crate) struct SlotState {
    /// `None` until [`crate::Engine::set_calendar`]: such a store takes no slot-bound
    /// holds and is always open as far as allocation is concerned.
    calendar: Option<Arc<StoreCalendar>>,
    /// Booked pickups per slot (`start_ms`). Entries at zero are removed, so the table is
    /// bounded by the store's active holds. Derived from the active holds (each books its
    /// slot), so never persisted: a snapshot load recounts it.
    booked: BTreeMap<i64, u32>,
    /// Active holds that checkout confirmed and staff have not yet marked ready: the
    /// picking queue of the estimate. Derived like `booked`.
    queued: u32,
    /// Average time one staff member needs to pick one order.
    pick_time_per_order_ms: u32,
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState {
            calendar: None,
            booked: BTreeMap::new(),
            queued: 0,
            pick_time_per_order_ms: PICK_TIME_PER_ORDER_MS_DEFAULT,
        }
    }
}

impl SlotState {
    /// The store's calendar, if it has one.
    pub(crate) fn calendar(&self) -> Option<&Arc<StoreCalendar>> {
        self.calendar.as_ref()
    }

    /// Replaces the calendar. Bookings stay: they belong to the active holds.
    pub(crate) fn set_calendar(&mut self, calendar: Option<Arc<StoreCalendar>>) {
        self.calendar = calendar;
    }

    /// Average time one staff member needs to pick one order.
    pub(crate) fn pick_time_per_order_ms(&self) -> u32 {
        self.pick_time_per_order_ms
    }

    /// Sets the average pick time per order.
    pub(crate) fn set_pick_time(&mut self, pick_time_per_order_ms: u32) {
        self.pick_time_per_order_ms = pick_time_per_order_ms;
    }

    /// Pickups booked on the slot starting at `start_ms`.
    pub(crate) fn booked_on(&self, start_ms: i64) -> u32 {
        self.booked.get(&start_ms).copied().unwrap_or(0)
    }

    /// Books one unit of capacity of `slot` (a granted hold's slot, checked or replayed).
    /// Called only by [`crate::stock::StoreState`], whose holds the bookings count.
    pub(crate) fn book(&mut self, slot: Option<i64>) {
        if let Some(start_ms) = slot {
            let n = self.booked.entry(start_ms).or_insert(0);
            // At most one booking per active hold, and hold sequences are u64 per store
            // but bounded far below u32::MAX active holds by memory.
            *n = n.checked_add(1).expect("slot bookings overflow u32");
        }
    }

    /// Returns the unit of capacity of an ended hold's slot. The slot must be booked: an
    /// unbooking without its booking is a broken invariant, not something to clamp.
    pub(crate) fn unbook(&mut self, slot: Option<i64>) {
        if let Some(start_ms) = slot {
            let n = self
                .booked
                .get_mut(&start_ms)
                .unwrap_or_else(|| panic!("unbooking slot {start_ms} that has no booking"));
            *n -= 1;
            if *n == 0 {
                self.booked.remove(&start_ms);
            }
        }
    }

    /// A hold joins the picking queue (its order was confirmed).
    pub(crate) fn enqueue(&mut self) {
        self.queued = self
            .queued
            .checked_add(1)
            .expect("picking queue overflows u32");
    }

    /// A hold leaves the picking queue (ready, collected, released or expired).
    pub(crate) fn dequeue(&mut self) {
        assert!(self.queued > 0, "picking queue would go negative");
        self.queued -= 1;
    }

    /// Replaces the derived counters (bookings and queue) with ones recounted from the
    /// active holds: after a snapshot load.
    pub(crate) fn set_derived(&mut self, booked: BTreeMap<i64, u32>, queued: u32) {
        self.booked = booked;
        self.queued = queued;
    }

    /// The derived counters, to compare with a recount (the conservation check).
    pub(crate) fn derived(&self) -> (&BTreeMap<i64, u32>, u32) {
        (&self.booked, self.queued)
    }

    /// Checks that a new hold at `now_ms` may book the slot starting at `start_ms`, and
    /// returns the slot. Does not book it.
    pub(crate) fn check_slot(&self, start_ms: i64, now_ms: i64) -> Result<Slot, SlotProblem> {
        let cal = self.calendar.as_ref().ok_or(SlotProblem::NoCalendar)?;
        let slot = cal.slot_at(start_ms).ok_or(SlotProblem::NoSuchSlot)?;
        if slot.start_ms < now_ms.saturating_add(cal.lead_time_ms()) {
            return Err(SlotProblem::TooSoon);
        }
        if self.booked_on(start_ms) >= slot.capacity {
            return Err(SlotProblem::Full);
        }
        Ok(slot)
    }

    /// The estimated ready time of an order placed at `now_ms` and the first slot with
    /// capacity at or after it (and at or after `earliest_ms`, if given). `None` without
    /// a calendar or without a free slot within the calendar's scan span.
    pub(crate) fn estimate(&self, now_ms: i64, earliest_ms: Option<i64>) -> Option<ReadyEstimate> {
        let cal = self.calendar.as_ref()?;
        let query = ReadyQuery {
            now_ms,
            queue_len: self.queued,
            staff_on_shift_now: None,
            pick_time_per_order_ms: self.pick_time_per_order_ms,
        };
        let est = cal.estimate_ready(&query, |s| self.booked_on(s))?;
        match earliest_ms {
            Some(earliest) if est.slot.start_ms < earliest => {
                let from = earliest.max(est.ready_ms);
                let to = from.saturating_add(crate::calendar::SLOT_SCAN_SPAN_MAX_MS);
                cal.slots(from, to)
                    .find(|s| self.booked_on(s.start_ms) < s.capacity)
                    .map(|slot| ReadyEstimate {
                        ready_ms: est.ready_ms,
                        slot,
                    })
            }
            _ => Some(est),
        }
    }

    /// Whether the store is open at `ms`; a store without a calendar always is.
    pub(crate) fn is_open_at(&self, ms: i64) -> bool {
        self.calendar.as_ref().is_none_or(|c| c.is_open_at(ms))
    }

    /// Snapshot encoding: the calendar configuration (option) and the pick time. The
    /// bookings and the queue are derived from the active holds and recounted on load.
    pub fn encode(&self, e: &mut Enc<'_>) {
        match &self.calendar {
            Some(cal) => {
                e.u8(1);
                encode_calendar_config(e, cal.config());
            }
            None => e.u8(0),
        }
        e.u32(self.pick_time_per_order_ms);
    }

    /// Decodes what [`SlotState::encode`] wrote, rebuilding (and so re-validating) the
    /// calendar.
    pub fn decode(d: &mut Dec<'_>) -> Result<SlotState, DecodeError> {
        let at = d.pos();
        let calendar = match d.u8()? {
            0 => None,
            1 => {
                let config = decode_calendar_config(d)?;
                Some(Arc::new(StoreCalendar::new(config).map_err(|_| {
                    DecodeError::Invalid {
                        what: "calendar config",
                        at,
                    }
                })?))
            }
            tag => {
                return Err(DecodeError::Tag {
                    what: "slot state calendar",
                    tag,
                    at,
                });
            }
        };
        let pick_time_per_order_ms = d.u32()?;
        Ok(SlotState {
            calendar,
            booked: BTreeMap::new(),
            queued: 0,
            pick_time_per_order_ms,
        })
    }
}

fn local_time(d: &mut Dec<'_>) -> Result<LocalTime, DecodeError> {
    let at = d.pos();
    LocalTime::from_minute_of_day(d.u32()?).map_err(|_| DecodeError::Invalid {
        what: "local time",
        at,
    })
}

fn encode_intervals(e: &mut Enc<'_>, intervals: &[LocalInterval]) {
    e.seq_len(intervals.len());
    for i in intervals {
        e.u32(i.open.minute_of_day());
        e.u32(i.close.minute_of_day());
    }
}

fn decode_intervals(d: &mut Dec<'_>) -> Result<Vec<LocalInterval>, DecodeError> {
    let n = d.seq_len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let open = local_time(d)?;
        let close = local_time(d)?;
        out.push(LocalInterval::new(open, close));
    }
    Ok(out)
}

/// Encodes a calendar configuration: time zone; the seven weekdays' intervals (minutes of
/// day); exceptions as (year, month, day, 0 = closed | 1 = intervals); the four pickup
/// settings; the seven weekdays' shifts (start, end, staff).
pub(crate) fn encode_calendar_config(e: &mut Enc<'_>, c: &CalendarConfig) {
    e.str(&c.time_zone);
    for day in &c.weekly_hours.days {
        encode_intervals(e, day);
    }
    e.seq_len(c.exceptions.len());
    for x in &c.exceptions {
        e.i64(i64::from(x.date.year()));
        e.u8(x.date.month().unsigned_abs());
        e.u8(x.date.day().unsigned_abs());
        match &x.hours {
            DayHours::Closed => e.u8(0),
            DayHours::Open(intervals) => {
                e.u8(1);
                encode_intervals(e, intervals);
            }
        }
    }
    e.u32(c.pickup.slot_len_min);
    e.u32(c.pickup.lead_time_min);
    e.u32(c.pickup.hold_grace_min);
    e.u32(c.pickup.pickups_per_staff_per_slot);
    for day in &c.staffing.days {
        e.seq_len(day.len());
        for s in day {
            e.u32(s.start.minute_of_day());
            e.u32(s.end.minute_of_day());
            e.u32(s.staff);
        }
    }
}

/// Decodes what [`encode_calendar_config`] wrote. Does not validate the calendar rules;
/// [`StoreCalendar::new`] does.
pub(crate) fn decode_calendar_config(d: &mut Dec<'_>) -> Result<CalendarConfig, DecodeError> {
    let time_zone = d.string()?;
    let mut weekly_hours = WeeklyHours::closed();
    for day in weekly_hours.days.iter_mut() {
        *day = decode_intervals(d)?;
    }
    let n = d.seq_len()?;
    let mut exceptions = Vec::with_capacity(n);
    for _ in 0..n {
        let at = d.pos();
        let year = i16::try_from(d.i64()?).map_err(|_| DecodeError::Invalid {
            what: "exception year",
            at,
        })?;
        let month = i8::try_from(d.u8()?).map_err(|_| DecodeError::Invalid {
            what: "exception month",
            at,
        })?;
        let day = i8::try_from(d.u8()?).map_err(|_| DecodeError::Invalid {
            what: "exception day",
            at,
        })?;
        let date = Date::new(year, month, day).map_err(|_| DecodeError::Invalid {
            what: "exception date",
            at,
        })?;
        let tag_at = d.pos();
        let hours = match d.u8()? {
            0 => DayHours::Closed,
            1 => DayHours::Open(decode_intervals(d)?),
            tag => {
                return Err(DecodeError::Tag {
                    what: "exception hours",
                    tag,
                    at: tag_at,
                });
            }
        };
        exceptions.push(DateException { date, hours });
    }
    let pickup = PickupConfig {
        slot_len_min: d.u32()?,
        lead_time_min: d.u32()?,
        hold_grace_min: d.u32()?,
        pickups_per_staff_per_slot: d.u32()?,
    };
    let mut staffing = WeeklyStaffing::default();
    for day in staffing.days.iter_mut() {
        let n = d.seq_len()?;
        let mut shifts = Vec::with_capacity(n);
        for _ in 0..n {
            let start = local_time(d)?;
            let end = local_time(d)?;
            let staff = d.u32()?;
            shifts.push(StaffShift { start, end, staff });
        }
        *day = shifts;
    }
    Ok(CalendarConfig {
        time_zone,
        weekly_hours,
        exceptions,
        pickup,
        staffing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CalendarConfig {
        CalendarConfig {
            time_zone: "Europe/Berlin".into(),
            weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((9, 0), (20, 0)).unwrap()]),
            exceptions: vec![DateException {
                date: Date::new(2026, 12, 25).unwrap(),
                hours: DayHours::Closed,
            }],
            pickup: PickupConfig {
                slot_len_min: 30,
                lead_time_min: 60,
                hold_grace_min: 30,
                pickups_per_staff_per_slot: 2,
            },
            staffing: WeeklyStaffing::every_day(&[StaffShift::hm((9, 0), (20, 0), 3).unwrap()]),
        }
    }

    #[test]
    fn slot_state_round_trips() {
        let mut st = SlotState {
            calendar: Some(Arc::new(StoreCalendar::new(config()).unwrap())),
            ..SlotState::default()
        };
        st.book(Some(1_000));
        st.book(Some(1_000));
        st.book(Some(5_000));
        st.enqueue();
        let mut buf = Vec::new();
        st.encode(&mut Enc::new(&mut buf));
        let mut d = Dec::new(&buf);
        let back = SlotState::decode(&mut d).unwrap();
        d.finish().unwrap();
        // Bookings and queue are derived from the holds, not persisted.
        assert!(back.booked.is_empty());
        assert_eq!(back.queued, 0);
        assert_eq!(back.pick_time_per_order_ms, st.pick_time_per_order_ms);
        assert_eq!(back.calendar.unwrap().config(), &config());
    }

    #[test]
    fn truncated_input_is_an_error() {
        let st = SlotState {
            calendar: Some(Arc::new(StoreCalendar::new(config()).unwrap())),
            ..SlotState::default()
        };
        let mut buf = Vec::new();
        st.encode(&mut Enc::new(&mut buf));
        for len in 0..buf.len() {
            let mut d = Dec::new(&buf[..len]);
            assert!(SlotState::decode(&mut d).is_err() || d.finish().is_err());
        }
    }

    #[test]
    fn unbook_removes_empty_entries() {
        let mut st = SlotState::default();
        st.book(Some(7));
        st.unbook(Some(7));
        assert!(st.booked.is_empty());
    }

    #[test]
    #[should_panic(expected = "no booking")]
    fn unbooking_twice_is_a_broken_invariant() {
        let mut st = SlotState::default();
        st.book(Some(7));
        st.unbook(Some(7));
        st.unbook(Some(7));
    }

    #[test]
    #[should_panic(expected = "negative")]
    fn dequeue_below_zero_is_a_broken_invariant() {
        SlotState::default().dequeue();
    }
}
