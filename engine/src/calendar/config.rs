//! The plain configuration types a store calendar is built from.
//!
//! These carry no invariant of their own (every field is public); the checks happen once,
//! in [`StoreCalendar::new`](super::StoreCalendar::new), which turns a [`CalendarConfig`]
//! into the validated calendar.

use std::fmt;

use jiff::civil::{Date, Weekday};

use super::error::CalendarError;

/// Minutes in a civil day.
pub(crate) const DAY_MIN: u32 = 24 * 60;

/// A local wall-clock time of day with minute precision, `00:00` to `23:59`.
///
/// The field is private because it carries the invariant `minute_of_day < 1440`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(u16);

impl LocalTime {
    /// Midnight, `00:00`.
    pub const MIDNIGHT: LocalTime = LocalTime(0);

    /// Builds `hour:minute`.
    ///
    /// # Errors
    /// [`CalendarError::InvalidLocalTime`] unless `hour < 24` and `minute < 60`.
    pub fn new(hour: u32, minute: u32) -> Result<LocalTime, CalendarError> {
        if hour >= 24 || minute >= 60 {
            return Err(CalendarError::InvalidLocalTime { hour, minute });
        }
        // Both bounds checked above, so the sum is below 1440 and fits a u16.
        let minutes = u16::try_from(hour * 60 + minute)
            .map_err(|_| CalendarError::InvalidLocalTime { hour, minute })?;
        Ok(LocalTime(minutes))
    }

    /// Builds the time `minute_of_day` minutes after midnight.
    ///
    /// # Errors
    /// [`CalendarError::InvalidLocalTime`] unless `minute_of_day < 1440`.
    pub fn from_minute_of_day(minute_of_day: u32) -> Result<LocalTime, CalendarError> {
        LocalTime::new(minute_of_day / 60, minute_of_day % 60)
    }

    /// Minutes after midnight, `0..1440`.
    pub fn minute_of_day(self) -> u32 {
        u32::from(self.0)
    }

    /// The hour, `0..24`.
    pub fn hour(self) -> u32 {
        self.minute_of_day() / 60
    }

    /// The minute within the hour, `0..60`.
    pub fn minute(self) -> u32 {
        self.minute_of_day() % 60
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

/// Wall-clock length in minutes of a local range `start..end`, where `end <= start`
/// means the range ends on the next day; `end == start` is a full 24 hours.
fn wrapped_len_min(start: LocalTime, end: LocalTime) -> u32 {
    let (start, end) = (start.minute_of_day(), end.minute_of_day());
    if end > start {
        end - start
    } else {
        end + DAY_MIN - start
    }
}

/// One opening interval of a day, in local wall-clock time.
///
/// The interval belongs to the day on which it opens. If `close <= open` it is an
/// overnight interval that closes on the next day (`22:00-02:00`); `close == open` means
/// open for 24 hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalInterval {
    /// Opening time.
    pub open: LocalTime,
    /// Closing time (exclusive); on the next day if not after `open`.
    pub close: LocalTime,
}

impl LocalInterval {
    /// Builds `open-close`.
    pub fn new(open: LocalTime, close: LocalTime) -> LocalInterval {
        LocalInterval { open, close }
    }

    /// Builds an interval from `(hour, minute)` pairs, a shorthand for configuration
    /// code and tests.
    ///
    /// # Errors
    /// [`CalendarError::InvalidLocalTime`] if either time is out of range.
    pub fn hm(open: (u32, u32), close: (u32, u32)) -> Result<LocalInterval, CalendarError> {
        Ok(LocalInterval {
            open: LocalTime::new(open.0, open.1)?,
            close: LocalTime::new(close.0, close.1)?,
        })
    }

    /// Wall-clock length in minutes, `1..=1440` (a DST transition inside the interval
    /// changes its real length, not this one).
    pub fn len_min(&self) -> u32 {
        wrapped_len_min(self.open, self.close)
    }

    /// Whether the interval closes on the day after it opens.
    pub fn is_overnight(&self) -> bool {
        self.close <= self.open
    }
}

/// Index of a weekday in the seven-element arrays of this module, Monday = 0.
pub(crate) fn weekday_index(weekday: Weekday) -> usize {
    // `to_monday_zero_offset` is 0..=6 by construction; the `unsigned_abs` keeps the
    // conversion free of casts that could wrap.
    usize::from(weekday.to_monday_zero_offset().unsigned_abs())
}

/// Regular opening hours for each weekday.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeeklyHours {
    /// Opening intervals per weekday, index 0 = Monday, 6 = Sunday. An empty list means
    /// closed that day (except for an overnight interval spilling over from the day
    /// before).
    pub days: [Vec<LocalInterval>; 7],
}

impl WeeklyHours {
    /// Closed every day.
    pub fn closed() -> WeeklyHours {
        WeeklyHours::default()
    }

    /// The same intervals every day of the week.
    pub fn every_day(intervals: &[LocalInterval]) -> WeeklyHours {
        WeeklyHours {
            days: std::array::from_fn(|_| intervals.to_vec()),
        }
    }

    /// Replaces the intervals of one weekday, returning the changed schedule.
    pub fn with_day(mut self, weekday: Weekday, intervals: &[LocalInterval]) -> WeeklyHours {
        if let Some(day) = self.days.get_mut(weekday_index(weekday)) {
            *day = intervals.to_vec();
        }
        self
    }

    /// The intervals of one weekday.
    pub fn on(&self, weekday: Weekday) -> &[LocalInterval] {
        self.days
            .get(weekday_index(weekday))
            .map_or(&[], Vec::as_slice)
    }
}

/// Opening hours of one dated exception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DayHours {
    /// Closed all day (holiday). An overnight interval of the day before still ends at
    /// its usual time: an interval belongs to the day on which it opens.
    Closed,
    /// Open with these intervals instead of the weekly ones (short day, late opening).
    Open(Vec<LocalInterval>),
}

impl DayHours {
    pub(crate) fn intervals(&self) -> &[LocalInterval] {
        match self {
            DayHours::Closed => &[],
            DayHours::Open(intervals) => intervals,
        }
    }
}

/// Different opening hours on one date, replacing that weekday's regular hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateException {
    /// The local date the exception applies to.
    pub date: Date,
    /// The hours on that date.
    pub hours: DayHours,
}

/// Staff on shift for a local time range of a day.
///
/// Shifts of the same day may overlap; their staff counts add up. `end <= start` means
/// the shift ends on the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaffShift {
    /// Start of the shift (inclusive).
    pub start: LocalTime,
    /// End of the shift (exclusive); on the next day if not after `start`.
    pub end: LocalTime,
    /// Staff members picking orders during the shift.
    pub staff: u32,
}

impl StaffShift {
    /// Builds a shift from `(hour, minute)` pairs, a shorthand for configuration code and
    /// tests.
    ///
    /// # Errors
    /// [`CalendarError::InvalidLocalTime`] if either time is out of range.
    pub fn hm(start: (u32, u32), end: (u32, u32), staff: u32) -> Result<StaffShift, CalendarError> {
        Ok(StaffShift {
            start: LocalTime::new(start.0, start.1)?,
            end: LocalTime::new(end.0, end.1)?,
            staff,
        })
    }

    /// Wall-clock length in minutes, `1..=1440`.
    pub fn len_min(&self) -> u32 {
        wrapped_len_min(self.start, self.end)
    }
}

/// Staff shifts for each weekday. Dated exceptions change opening hours only; the weekly
/// staffing applies on every date.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeeklyStaffing {
    /// Shifts per weekday, index 0 = Monday, 6 = Sunday. A shift belongs to the day on
    /// which it starts.
    pub days: [Vec<StaffShift>; 7],
}

impl WeeklyStaffing {
    /// The same shifts every day of the week.
    pub fn every_day(shifts: &[StaffShift]) -> WeeklyStaffing {
        WeeklyStaffing {
            days: std::array::from_fn(|_| shifts.to_vec()),
        }
    }

    /// Replaces the shifts of one weekday, returning the changed roster.
    pub fn with_day(mut self, weekday: Weekday, shifts: &[StaffShift]) -> WeeklyStaffing {
        if let Some(day) = self.days.get_mut(weekday_index(weekday)) {
            *day = shifts.to_vec();
        }
        self
    }

    /// The shifts of one weekday.
    pub fn on(&self, weekday: Weekday) -> &[StaffShift] {
        self.days
            .get(weekday_index(weekday))
            .map_or(&[], Vec::as_slice)
    }
}

/// Pickup settings of a store. All durations are in minutes, as store managers set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickupConfig {
    /// Length of a pickup slot; must divide a day and every opening interval.
    pub slot_len_min: u32,
    /// Time the store needs to get one order ready when nothing is queued.
    pub lead_time_min: u32,
    /// How long after its slot ends a slot-bound hold stays valid.
    pub hold_grace_min: u32,
    /// Orders one staff member hands out per slot; slot capacity is this times the staff
    /// on shift at the slot's start.
    pub pickups_per_staff_per_slot: u32,
}

impl PickupConfig {
    /// The pickup settings of a store whose manager has not set any (store.proto): 30-minute
    /// slots, an hour's lead time, 30 minutes' grace, two pickups per staff per slot.
    pub const DEFAULT: PickupConfig = PickupConfig {
        slot_len_min: 30,
        lead_time_min: 60,
        hold_grace_min: 30,
        pickups_per_staff_per_slot: 2,
    };
}

/// Everything needed to build a [`StoreCalendar`](super::StoreCalendar).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarConfig {
    /// IANA time zone name of the store, e.g. `America/New_York`.
    pub time_zone: String,
    /// Regular weekly opening hours.
    pub weekly_hours: WeeklyHours,
    /// Dated exceptions (holidays, short days), at most one per date.
    pub exceptions: Vec<DateException>,
    /// Slot length, lead time, grace period and pickups per staff.
    pub pickup: PickupConfig,
    /// Staff on shift per weekday.
    pub staffing: WeeklyStaffing,
}

impl CalendarConfig {
    /// The calendar a store gets when one part of it is edited: `current`, or a closed
    /// week with [`PickupConfig::DEFAULT`] and no staff, always in the store's own
    /// `time_zone` (a store's zone is part of its definition, not of its calendar).
    pub fn to_edit(current: Option<&CalendarConfig>, time_zone: &str) -> CalendarConfig {
        let mut c = current.cloned().unwrap_or_else(|| CalendarConfig {
            time_zone: String::new(),
            weekly_hours: WeeklyHours::closed(),
            exceptions: Vec::new(),
            pickup: PickupConfig::DEFAULT,
            staffing: WeeklyStaffing::default(),
        });
        time_zone.clone_into(&mut c.time_zone);
        c
    }
}
