//! Pickup slot generation (the rules are in the parent module's docs).

use std::iter::FusedIterator;

use jiff::civil::Date;

use super::config::DAY_MIN;
use super::{SLOT_SCAN_SPAN_MAX_MS, StoreCalendar, civil_at};

/// One pickup slot of a store: `start_ms..end_ms` (Unix milliseconds, end exclusive).
///
/// `start_ms` identifies the slot within its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    /// First instant of the slot; the slot's id within the store.
    pub start_ms: i64,
    /// End of the slot (exclusive); never after the closing instant of its interval nor
    /// after the next slot's start.
    pub end_ms: i64,
    /// Pickups the slot can take: staff on shift at its start times pickups per staff per
    /// slot. Zero when nobody is rostered.
    pub capacity: u32,
}

impl StoreCalendar {
    /// The slots whose `start_ms` lies in `from_ms..to_ms`, in increasing order of
    /// `start_ms`, lazily, one local day at a time.
    ///
    /// Bounded work: the range is cut to [`SLOT_SCAN_SPAN_MAX_MS`] after `from_ms`, so
    /// the iterator ends there even if `to_ms` is later. An empty or inverted range, or
    /// one outside the years jiff supports (-9999..=9999), yields nothing.
    pub fn slots(&self, from_ms: i64, to_ms: i64) -> Slots<'_> {
        let to_ms = to_ms.min(from_ms.saturating_add(SLOT_SCAN_SPAN_MAX_MS));
        let mut slots = Slots {
            calendar: self,
            from_ms,
            to_ms,
            next_date: None,
            last_date: Date::MIN,
            buf: Vec::new(),
            pos: 0,
            ahead: None,
            last_start_ms: i64::MIN,
        };
        if from_ms >= to_ms {
            return slots;
        }
        let (Some(first), Some(last)) = (
            self.local_date(from_ms),
            self.local_date(to_ms.saturating_sub(1)),
        ) else {
            return slots;
        };
        // An overnight interval that opened the day before `from_ms`'s local date can
        // still have slots in the range.
        slots.next_date = Some(first.yesterday().unwrap_or(first));
        slots.last_date = last;
        slots
    }

    /// The slot that starts exactly at `start_ms`, if there is one: the check for a slot
    /// id a customer or the OMS asks for.
    pub fn slot_at(&self, start_ms: i64) -> Option<Slot> {
        self.slots(start_ms, start_ms.saturating_add(1))
            .next()
            .filter(|slot| slot.start_ms == start_ms)
    }

    /// Replaces the contents of `out` with the slots of every opening interval that
    /// opens on `date`, sorted by start and with ends cut so that no two overlap.
    fn day_slots(&self, date: Date, out: &mut Vec<Slot>) {
        let slot_len_min = self.config.pickup.slot_len_min;
        let slot_len_ms = self.slot_len_ms();
        out.clear();
        for span in self.hours_on(date) {
            let (Some(open_ms), Some(close_ms)) = self.span_instants(date, *span) else {
                continue;
            };
            let mut minute = span.start;
            while minute < span.end() {
                if let Some(datetime) = civil_at(date, minute) {
                    let capacity = self.capacity_at_local(datetime.date(), minute % DAY_MIN);
                    for start_ms in self.all_instants_ms(datetime).into_iter().flatten() {
                        if open_ms <= start_ms && start_ms < close_ms {
                            // `end_ms` holds the closing instant until the ends are cut
                            // below.
                            out.push(Slot {
                                start_ms,
                                end_ms: close_ms,
                                capacity,
                            });
                        }
                    }
                }
                minute += slot_len_min;
            }
        }
        out.sort_unstable_by_key(|slot| slot.start_ms);
        // Distinct grid times of non-overlapping intervals never share an instant, but a
        // duplicate slot id must never escape, so keep only the first of equal starts.
        out.dedup_by_key(|slot| slot.start_ms);
        let mut next_start_ms = i64::MAX;
        for slot in out.iter_mut().rev() {
            slot.end_ms = slot
                .end_ms
                .min(slot.start_ms.saturating_add(slot_len_ms))
                .min(next_start_ms);
            next_start_ms = slot.start_ms;
        }
    }
}

/// Iterator over a store's slots in a range, from [`StoreCalendar::slots`].
///
/// Computes one local day at a time, so taking the first few slots of a long range is
/// cheap.
#[derive(Debug)]
pub struct Slots<'a> {
    calendar: &'a StoreCalendar,
    from_ms: i64,
    to_ms: i64,
    /// Local day whose intervals are computed next; `None` when done.
    next_date: Option<Date>,
    /// Last local day whose slots can start in the range; later days are computed only
    /// to cut the end of a slot (see [`Slots::take_day_slot`]).
    last_date: Date,
    /// Slots of the day computed last.
    buf: Vec<Slot>,
    pos: usize,
    /// The slot after the one returned last, taken early because its start cuts the end
    /// of the slot before it.
    ahead: Option<Slot>,
    /// Start of the last slot taken from `buf`, to keep starts strictly increasing
    /// across days.
    last_start_ms: i64,
}

impl Slots<'_> {
    /// The next slot in time order, ends cut only within its own day. Computes the days
    /// up to `last_date`, and later ones only while their slots could still start before
    /// `reach_ms`.
    fn take_day_slot(&mut self, reach_ms: i64) -> Option<Slot> {
        loop {
            if let Some(slot) = self.buf.get(self.pos).copied() {
                self.pos += 1;
                // Starts increase across days (a later day's grid times are later on the
                // wall clock, and an interval's slots start before its closing instant),
                // so this only guards the promise that no slot id repeats.
                if slot.start_ms <= self.last_start_ms {
                    continue;
                }
                self.last_start_ms = slot.start_ms;
                return Some(slot);
            }
            let date = self.next_date?;
            if date > self.last_date
                && self
                    .calendar
                    .day_floor_ms(date)
                    .is_none_or(|floor_ms| floor_ms >= reach_ms)
            {
                return None;
            }
            self.next_date = date.tomorrow().ok();
            self.buf.clear();
            self.pos = 0;
            self.calendar.day_slots(date, &mut self.buf);
        }
    }
}

impl Iterator for Slots<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            let mut slot = match self.ahead.take() {
                Some(slot) => slot,
                None => self.take_day_slot(i64::MIN)?,
            };
            // The next slot may belong to a later day and still start before this one
            // ends: an interval that closes in a DST gap closes after the gap, so it can
            // run into the next day's interval that opens just after the gap. Its end is
            // cut there, as within a day, whether or not the next slot is in the range,
            // so that `slot_at` and sub-ranges see the same slot.
            self.ahead = self.take_day_slot(slot.end_ms);
            if let Some(after) = self.ahead {
                slot.end_ms = slot.end_ms.min(after.start_ms);
            }
            if slot.start_ms >= self.to_ms {
                self.next_date = None;
                self.ahead = None;
                self.buf.clear();
                self.pos = 0;
                return None;
            }
            if slot.start_ms < self.from_ms {
                continue;
            }
            return Some(slot);
        }
    }
}

impl FusedIterator for Slots<'_> {}
