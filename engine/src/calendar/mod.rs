//! Store calendars, pickup slots and estimated ready times.
//!
//! A [`StoreCalendar`] is built once from a [`CalendarConfig`] (IANA time zone, weekly
//! opening hours, dated exceptions, pickup settings, staffing) and then answers pure
//! questions about instants: which pickup slots exist in a range ([`StoreCalendar::slots`]),
//! whether a requested slot id is real ([`StoreCalendar::slot_at`]), whether the store is
//! open ([`StoreCalendar::is_open_at`]), when an order placed now can be ready
//! ([`StoreCalendar::estimate_ready`]) and when a slot-bound hold expires
//! ([`StoreCalendar::slot_expiry_ms`]).
//!
//! Architecture invariant: this module never reads a clock, the host's time zone files or
//! any other ambient state. Every instant is an `i64` of Unix milliseconds (UTC) passed in
//! by the caller, and zone rules come from the tz database bundled into the binary
//! (`jiff`'s `tzdb-bundle-always`), so replaying the log on another machine with other
//! `/usr/share/zoneinfo` files yields the same slots.
//!
//! # Slots
//!
//! Opening hours are local wall-clock intervals. An interval belongs to the day on which
//! it opens; if its closing time is not after its opening time it closes on the next day
//! (`22:00-02:00`). Slots of an interval start at the local wall-clock times
//! `open, open + len, open + 2 len, ...` before `close` (the grid is aligned to the opening
//! time; validation makes every interval a whole number of slots long). Each of these
//! wall-clock times is mapped to the real instants it denotes in the store's zone:
//!
//! - normally exactly one instant;
//! - **spring forward** (a local time in the skipped hour): none, so the skipped hour has
//!   no slot. The slot before the gap ends at its wall-clock end or at the next slot's
//!   start, whichever comes first, so with slots longer than the gap it is shortened
//!   (e.g. a 90-minute slot `01:30-03:00` in New York on 2026-03-08 lasts 30 real
//!   minutes);
//! - **fall back** (a local time in the repeated hour): two instants, one per real hour,
//!   each its own slot. Slot ends are cut at the next slot's start, so slots never
//!   overlap and no `start_ms` repeats.
//!
//! An opening or closing time that falls in a skipped hour is moved forward by the
//! length of the gap, and one in a repeated hour means its first occurrence (jiff's
//! "compatible" disambiguation, the same rule as RFC 5545 calendars). No slot starts
//! before the real opening instant or at/after the real closing instant, and no slot ends
//! after the closing instant. A slot is identified within its store by its `start_ms`.
//!
//! Intervals that do not overlap on the wall clock can still overlap in real time: one
//! that closes in a skipped hour closes after the gap, past the opening of an interval
//! that opens just after the gap (Chatham on 2026-09-27 skips 02:45-03:45, so Saturday's
//! `17:15-03:00` closes at 04:00 while Sunday's `03:45-04:30` opens at 03:45). Both keep
//! every slot of their grids; the same cut applies across intervals and across midnight,
//! so the earlier interval's last slot ends where the next one starts.
//!
//! Capacity of a slot is the staff on shift at the slot's local start time (the sum of the
//! weekday's shifts covering it, overnight shifts of the day before included) times the
//! store's pickups per staff per slot. It is not prorated for a slot that a DST
//! transition shortens: staff plan in wall-clock slots.
//!
//! # Bounded work
//!
//! Every scan covers at most [`SLOT_SCAN_SPAN_MAX_MS`] of time, and every configuration
//! list is limited by a named constant checked in [`StoreCalendar::new`].

mod config;
mod error;
mod estimate;
mod slots;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::{DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};

pub use config::{
    CalendarConfig, DateException, DayHours, LocalInterval, LocalTime, PickupConfig, StaffShift,
    WeeklyHours, WeeklyStaffing,
};
pub use error::{CalendarError, DayRef};
pub use estimate::{ReadyEstimate, ReadyQuery};
/// The civil date and weekday types of the calendar's public API, re-exported so that an
/// embedder (the sidecar) builds configurations with the very types the engine checks.
pub use jiff::civil::{Date, Weekday};
pub use slots::{Slot, Slots};

use config::{DAY_MIN, weekday_index};

/// Longest accepted IANA time zone name, in bytes (the longest real one is 32).
pub const TIME_ZONE_NAME_LEN_MAX: usize = 64;
/// Most opening intervals per day (weekly or dated): enough for split shifts and lunch
/// breaks, small enough that a day's slots are computed in a few microseconds.
pub const INTERVALS_PER_DAY_MAX: usize = 4;
/// Most dated exceptions per store: two years of daily exceptions.
pub const EXCEPTIONS_MAX: usize = 732;
/// Shortest slot, in minutes.
pub const SLOT_LEN_MIN_MIN: u32 = 5;
/// Longest slot, in minutes.
pub const SLOT_LEN_MIN_MAX: u32 = 240;
/// Longest lead time, in minutes (7 days).
pub const LEAD_TIME_MIN_MAX: u32 = 7 * DAY_MIN;
/// Longest hold grace period after a slot ends, in minutes (24 hours).
pub const HOLD_GRACE_MIN_MAX: u32 = DAY_MIN;
/// Most pickups one staff member hands out in one slot.
pub const PICKUPS_PER_STAFF_PER_SLOT_MAX: u32 = 100;
/// Most staff shifts per weekday.
pub const SHIFTS_PER_DAY_MAX: usize = 16;
/// Most staff in one shift.
pub const STAFF_PER_SHIFT_MAX: u32 = 1_000;
/// Longest span of time one call scans for slots (14 days): [`StoreCalendar::slots`]
/// stops there, and [`StoreCalendar::estimate_ready`] looks no further than this past
/// `now`.
pub const SLOT_SCAN_SPAN_MAX_MS: i64 = 14 * 24 * 60 * 60 * 1_000;

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;

/// Weekdays in the order of the seven-element arrays, Monday first.
const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// The tz database every calendar uses: the one compiled into the binary, never the
/// host's, so that results do not depend on the machine (see the module docs).
fn tzdb() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// A validated local range `start..start + len` in minutes after the midnight of the day
/// it belongs to; `start < 1440`, `1 <= len <= 1440`, so it may end on the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MinuteSpan {
    start: u32,
    len: u32,
}

impl MinuteSpan {
    fn end(self) -> u32 {
        self.start + self.len
    }

    fn contains(self, minute: u32) -> bool {
        self.start <= minute && minute < self.end()
    }
}

/// A validated staff shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ShiftSpan {
    span: MinuteSpan,
    staff: u32,
}

/// A store's validated calendar: time zone, opening hours with exceptions, pickup
/// settings and staffing. Fields are private because they carry the invariants checked
/// by [`StoreCalendar::new`]; the original configuration stays readable through
/// [`StoreCalendar::config`].
#[derive(Clone, Debug)]
pub struct StoreCalendar {
    config: CalendarConfig,
    time_zone: TimeZone,
    /// Opening intervals per weekday (Monday first), sorted and non-overlapping.
    weekly: [Vec<MinuteSpan>; 7],
    /// Dated exceptions; an empty list is a closed day.
    exceptions: BTreeMap<Date, Vec<MinuteSpan>>,
    /// Shifts per weekday (Monday first).
    staffing: [Vec<ShiftSpan>; 7],
}

impl StoreCalendar {
    /// Validates `config` and builds the calendar.
    ///
    /// # Errors
    /// A [`CalendarError`] naming the first problem found: unknown or over-long time zone
    /// name, slot length out of range or not dividing a day or an opening interval, lead
    /// time or grace period too long, pickups per staff out of range, too many intervals,
    /// exceptions or shifts, overlapping intervals (also across midnight and around
    /// exceptions), duplicate exception dates, too many staff in a shift.
    pub fn new(config: CalendarConfig) -> Result<StoreCalendar, CalendarError> {
        let time_zone = lookup_time_zone(&config.time_zone)?;
        validate_pickup(&config.pickup)?;
        let slot_len_min = config.pickup.slot_len_min;

        let mut weekly: [Vec<MinuteSpan>; 7] = Default::default();
        for (index, weekday) in WEEKDAYS.iter().enumerate() {
            let day = DayRef::Weekly(*weekday);
            let spans = day_spans(day, config.weekly_hours.on(*weekday), slot_len_min)?;
            if let Some(slot) = weekly.get_mut(index) {
                *slot = spans;
            }
        }
        for index in 0..WEEKDAYS.len() {
            let next = (index + 1) % WEEKDAYS.len();
            let (Some(prev_spans), Some(next_spans), Some(next_day)) =
                (weekly.get(index), weekly.get(next), WEEKDAYS.get(next))
            else {
                continue;
            };
            check_night(prev_spans, next_spans, DayRef::Weekly(*next_day))?;
        }

        if config.exceptions.len() > EXCEPTIONS_MAX {
            return Err(CalendarError::TooManyExceptions {
                count: config.exceptions.len(),
                max: EXCEPTIONS_MAX,
            });
        }
        let mut exceptions = BTreeMap::new();
        for exception in &config.exceptions {
            let day = DayRef::Dated(exception.date);
            let spans = day_spans(day, exception.hours.intervals(), slot_len_min)?;
            if exceptions.insert(exception.date, spans).is_some() {
                return Err(CalendarError::DuplicateException {
                    date: exception.date,
                });
            }
        }

        let mut staffing: [Vec<ShiftSpan>; 7] = Default::default();
        for (index, weekday) in WEEKDAYS.iter().enumerate() {
            let shifts = shift_spans(DayRef::Weekly(*weekday), config.staffing.on(*weekday))?;
            if let Some(slot) = staffing.get_mut(index) {
                *slot = shifts;
            }
        }

        let calendar = StoreCalendar {
            config,
            time_zone,
            weekly,
            exceptions,
            staffing,
        };
        calendar.check_exception_nights()?;
        Ok(calendar)
    }

    /// The configuration this calendar was built from.
    pub fn config(&self) -> &CalendarConfig {
        &self.config
    }

    /// The store's IANA time zone name.
    pub fn time_zone_name(&self) -> &str {
        &self.config.time_zone
    }

    /// The store's pickup settings.
    pub fn pickup(&self) -> &PickupConfig {
        &self.config.pickup
    }

    /// Slot length in milliseconds (the wall-clock length; DST can shorten single slots).
    pub fn slot_len_ms(&self) -> i64 {
        i64::from(self.config.pickup.slot_len_min) * MINUTE_MS
    }

    /// Lead time in milliseconds.
    pub fn lead_time_ms(&self) -> i64 {
        i64::from(self.config.pickup.lead_time_min) * MINUTE_MS
    }

    /// Hold grace period in milliseconds.
    pub fn hold_grace_ms(&self) -> i64 {
        i64::from(self.config.pickup.hold_grace_min) * MINUTE_MS
    }

    /// Pickup-aware expiry of a hold booked on `slot`: the slot's end plus the store's
    /// grace period.
    ///
    /// Saturates at `i64::MAX` instead of overflowing (unreachable for slots this
    /// calendar produces, which lie within years -9999..=9999).
    pub fn slot_expiry_ms(&self, slot: &Slot) -> i64 {
        slot.end_ms.saturating_add(self.hold_grace_ms())
    }

    /// Whether the store is open at instant `ms`: inside an opening interval of that
    /// local day or an overnight interval of the day before. A closed exception on a day
    /// does not cut short the overnight interval that opened the evening before.
    pub fn is_open_at(&self, ms: i64) -> bool {
        let Some(date) = self.local_date(ms) else {
            return false;
        };
        let days = [date.yesterday().ok(), Some(date)];
        days.into_iter().flatten().any(|day| {
            self.hours_on(day).iter().any(|span| {
                let (Some(open_ms), Some(close_ms)) = self.span_instants(day, *span) else {
                    return false;
                };
                open_ms <= ms && ms < close_ms
            })
        })
    }

    /// Staff on shift at instant `ms` per the weekly staffing: the sum of the shifts that
    /// cover the local time of `ms`, including overnight shifts that started the day
    /// before. Zero for instants outside the calendar's range.
    pub fn staff_on_shift_at(&self, ms: i64) -> u32 {
        let Some(datetime) = self.local_datetime(ms) else {
            return 0;
        };
        let hour = u32::from(datetime.hour().unsigned_abs());
        let minute = u32::from(datetime.minute().unsigned_abs());
        self.staff_at_local(datetime.date(), hour * 60 + minute)
    }

    /// Staff on shift at local `minute` (`0..1440`) of `date`.
    fn staff_at_local(&self, date: Date, minute: u32) -> u32 {
        let today = self
            .staffing
            .get(weekday_index(date.weekday()))
            .map_or(&[][..], Vec::as_slice);
        let yesterday = self
            .staffing
            .get(weekday_index(date.weekday().previous()))
            .map_or(&[][..], Vec::as_slice);
        let from_today = today
            .iter()
            .filter(|shift| shift.span.contains(minute))
            .fold(0u32, |sum, shift| sum.saturating_add(shift.staff));
        yesterday
            .iter()
            .filter(|shift| shift.span.contains(minute + DAY_MIN))
            .fold(from_today, |sum, shift| sum.saturating_add(shift.staff))
    }

    /// Capacity of a slot starting at local `minute` of `date`.
    fn capacity_at_local(&self, date: Date, minute: u32) -> u32 {
        self.staff_at_local(date, minute)
            .saturating_mul(self.config.pickup.pickups_per_staff_per_slot)
    }

    /// Opening intervals of the day `date`: its exception if it has one, else its
    /// weekday's.
    fn hours_on(&self, date: Date) -> &[MinuteSpan] {
        match self.exceptions.get(&date) {
            Some(spans) => spans,
            None => self
                .weekly
                .get(weekday_index(date.weekday()))
                .map_or(&[], Vec::as_slice),
        }
    }

    /// Real opening and closing instants of an interval that opens on `date`, each
    /// resolved with the "compatible" rule (see the module docs).
    fn span_instants(&self, date: Date, span: MinuteSpan) -> (Option<i64>, Option<i64>) {
        let open = civil_at(date, span.start).and_then(|dt| self.compatible_ms(dt));
        let close = civil_at(date, span.end()).and_then(|dt| self.compatible_ms(dt));
        (open, close)
    }

    /// The instant a local datetime means under the "compatible" rule: a time in a gap
    /// moves forward by the gap, a time in a fold is its first occurrence.
    fn compatible_ms(&self, datetime: DateTime) -> Option<i64> {
        self.time_zone
            .to_ambiguous_timestamp(datetime)
            .compatible()
            .ok()
            .map(Timestamp::as_millisecond)
    }

    /// A lower bound on the start of every slot of the intervals that open on `date` or
    /// on a later day: the earliest instant that `date`'s midnight gets from any offset
    /// in effect around it. In a gap that is the instant with the offset after the gap,
    /// which lies before the gap, so it is below every instant shown on the wall clock as
    /// that midnight or later. `None` outside jiff's range.
    fn day_floor_ms(&self, date: Date) -> Option<i64> {
        let midnight = DateTime::from_parts(date, Time::midnight());
        let offsets = match self.time_zone.to_ambiguous_timestamp(midnight).offset() {
            AmbiguousOffset::Unambiguous { offset } => [offset, offset],
            AmbiguousOffset::Gap { before, after } | AmbiguousOffset::Fold { before, after } => {
                [before, after]
            }
        };
        offsets
            .into_iter()
            .filter_map(|offset| offset.to_timestamp(midnight).ok())
            .map(Timestamp::as_millisecond)
            .min()
    }

    /// Every real instant a local datetime denotes: none in a gap, two in a fold (earlier
    /// first), else one.
    fn all_instants_ms(&self, datetime: DateTime) -> [Option<i64>; 2] {
        let to_ms = |offset: jiff::tz::Offset| {
            offset
                .to_timestamp(datetime)
                .ok()
                .map(Timestamp::as_millisecond)
        };
        match self.time_zone.to_ambiguous_timestamp(datetime).offset() {
            AmbiguousOffset::Unambiguous { offset } => [to_ms(offset), None],
            AmbiguousOffset::Gap { .. } => [None, None],
            AmbiguousOffset::Fold { before, after } => [to_ms(before), to_ms(after)],
        }
    }

    /// The slots of the local day `date`: those whose `start_ms` lies between the
    /// day's first instant and the next day's first instant (local midnights, resolved
    /// with the "compatible" rule), in time order. Empty on a closed day.
    pub fn slots_on(&self, date: Date) -> Vec<Slot> {
        let midnight = |d: Date| self.compatible_ms(DateTime::from_parts(d, Time::midnight()));
        let (Some(from_ms), Some(to_ms)) =
            (midnight(date), date.tomorrow().ok().and_then(midnight))
        else {
            return Vec::new();
        };
        self.slots(from_ms, to_ms).collect()
    }

    /// Local datetime of instant `ms`, or `None` outside jiff's range.
    fn local_datetime(&self, ms: i64) -> Option<DateTime> {
        let timestamp = Timestamp::from_millisecond(ms).ok()?;
        Some(self.time_zone.to_datetime(timestamp))
    }

    /// Local date of instant `ms`, or `None` outside jiff's range.
    fn local_date(&self, ms: i64) -> Option<Date> {
        self.local_datetime(ms).map(|datetime| datetime.date())
    }

    /// Checks that no exception overlaps the overnight interval of the day before, and
    /// that no overnight interval of an exception runs into the next day's hours.
    fn check_exception_nights(&self) -> Result<(), CalendarError> {
        for (date, spans) in &self.exceptions {
            if let Ok(prev) = date.yesterday() {
                check_night(self.hours_on(prev), spans, DayRef::Dated(*date))?;
            }
            if let Ok(next) = date.tomorrow() {
                check_night(spans, self.hours_on(next), DayRef::Dated(next))?;
            }
        }
        Ok(())
    }
}

/// Looks `name` up in the bundled tz database.
fn lookup_time_zone(name: &str) -> Result<TimeZone, CalendarError> {
    if name.len() > TIME_ZONE_NAME_LEN_MAX {
        return Err(CalendarError::TimeZoneNameTooLong {
            len: name.len(),
            max: TIME_ZONE_NAME_LEN_MAX,
        });
    }
    let unknown = || CalendarError::UnknownTimeZone {
        name: name.to_owned(),
    };
    let time_zone = tzdb().get(name).map_err(|_| unknown())?;
    // `Etc/Unknown` is a valid name for jiff, but it is not a place a store can be.
    if time_zone.is_unknown() {
        return Err(unknown());
    }
    Ok(time_zone)
}

/// Checks the pickup settings against their limits.
fn validate_pickup(pickup: &PickupConfig) -> Result<(), CalendarError> {
    let slot_len_min = pickup.slot_len_min;
    if !(SLOT_LEN_MIN_MIN..=SLOT_LEN_MIN_MAX).contains(&slot_len_min) {
        return Err(CalendarError::SlotLenOutOfRange {
            slot_len_min,
            min: SLOT_LEN_MIN_MIN,
            max: SLOT_LEN_MIN_MAX,
        });
    }
    if !DAY_MIN.is_multiple_of(slot_len_min) {
        return Err(CalendarError::SlotLenNotDividingDay { slot_len_min });
    }
    if pickup.lead_time_min > LEAD_TIME_MIN_MAX {
        return Err(CalendarError::LeadTimeTooLong {
            lead_time_min: pickup.lead_time_min,
            max: LEAD_TIME_MIN_MAX,
        });
    }
    if pickup.hold_grace_min > HOLD_GRACE_MIN_MAX {
        return Err(CalendarError::HoldGraceTooLong {
            hold_grace_min: pickup.hold_grace_min,
            max: HOLD_GRACE_MIN_MAX,
        });
    }
    if !(1..=PICKUPS_PER_STAFF_PER_SLOT_MAX).contains(&pickup.pickups_per_staff_per_slot) {
        return Err(CalendarError::PickupsPerStaffOutOfRange {
            value: pickup.pickups_per_staff_per_slot,
            max: PICKUPS_PER_STAFF_PER_SLOT_MAX,
        });
    }
    Ok(())
}

/// Validates the opening intervals of one day and returns them sorted.
fn day_spans(
    day: DayRef,
    intervals: &[LocalInterval],
    slot_len_min: u32,
) -> Result<Vec<MinuteSpan>, CalendarError> {
    if intervals.len() > INTERVALS_PER_DAY_MAX {
        return Err(CalendarError::TooManyIntervals {
            day,
            count: intervals.len(),
            max: INTERVALS_PER_DAY_MAX,
        });
    }
    let mut spans = Vec::with_capacity(intervals.len());
    for interval in intervals {
        let len = interval.len_min();
        if !len.is_multiple_of(slot_len_min) {
            return Err(CalendarError::IntervalNotMultipleOfSlot {
                day,
                open: interval.open.to_string(),
                close: interval.close.to_string(),
                len_min: len,
                slot_len_min,
            });
        }
        spans.push(MinuteSpan {
            start: interval.open.minute_of_day(),
            len,
        });
    }
    spans.sort_by_key(|span| span.start);
    if spans.windows(2).any(|pair| match pair {
        [earlier, later] => earlier.end() > later.start,
        _ => false,
    }) {
        return Err(CalendarError::OverlappingIntervals { day });
    }
    Ok(spans)
}

/// Checks that no interval of `prev` (a day) runs past midnight into the first interval
/// of `next` (the following day); `next_day` names the following day in the error.
fn check_night(
    prev: &[MinuteSpan],
    next: &[MinuteSpan],
    next_day: DayRef,
) -> Result<(), CalendarError> {
    let Some(first) = next.first() else {
        return Ok(());
    };
    if prev.iter().any(|span| span.end() > DAY_MIN + first.start) {
        return Err(CalendarError::OverlappingIntervals { day: next_day });
    }
    Ok(())
}

/// Validates the staff shifts of one weekday.
fn shift_spans(day: DayRef, shifts: &[StaffShift]) -> Result<Vec<ShiftSpan>, CalendarError> {
    if shifts.len() > SHIFTS_PER_DAY_MAX {
        return Err(CalendarError::TooManyShifts {
            day,
            count: shifts.len(),
            max: SHIFTS_PER_DAY_MAX,
        });
    }
    shifts
        .iter()
        .map(|shift| {
            if shift.staff > STAFF_PER_SHIFT_MAX {
                return Err(CalendarError::TooManyStaff {
                    day,
                    staff: shift.staff,
                    max: STAFF_PER_SHIFT_MAX,
                });
            }
            Ok(ShiftSpan {
                span: MinuteSpan {
                    start: shift.start.minute_of_day(),
                    len: shift.len_min(),
                },
                staff: shift.staff,
            })
        })
        .collect()
}

/// The local datetime `minute` minutes after the midnight that starts `date`; `minute`
/// may exceed a day (overnight intervals). `None` past the end of jiff's range.
fn civil_at(date: Date, minute: u32) -> Option<DateTime> {
    let mut day = date;
    for _ in 0..minute / DAY_MIN {
        day = day.tomorrow().ok()?;
    }
    let minute_of_day = minute % DAY_MIN;
    let hour = i8::try_from(minute_of_day / 60).ok()?;
    let minute_of_hour = i8::try_from(minute_of_day % 60).ok()?;
    let time = Time::new(hour, minute_of_hour, 0, 0).ok()?;
    Some(DateTime::from_parts(day, time))
}
