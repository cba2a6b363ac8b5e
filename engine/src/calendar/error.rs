//! Why a store calendar configuration was refused.

use std::fmt;

use jiff::civil::{Date, Weekday};

/// Names the day of a configuration that an error is about: a weekday of the weekly
/// schedule or a dated exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayRef {
    /// A weekday of the weekly opening hours or staffing.
    Weekly(Weekday),
    /// A dated exception.
    Dated(Date),
}

impl fmt::Display for DayRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayRef::Weekly(weekday) => write!(f, "weekly {weekday:?}"),
            DayRef::Dated(date) => write!(f, "exception {date}"),
        }
    }
}

/// A store calendar configuration that [`StoreCalendar::new`](super::StoreCalendar::new)
/// refused, or a local time that could not be built.
///
/// This is misuse (a bad configuration), not a business outcome: the sidecar reports it
/// to the operator at start-up or when the store is configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The time zone name is longer than [`TIME_ZONE_NAME_LEN_MAX`](super::TIME_ZONE_NAME_LEN_MAX).
    #[error("time zone name is {len} bytes long, the maximum is {max}")]
    TimeZoneNameTooLong {
        /// Length of the name given, in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bundled IANA time zone database has no zone of this name.
    #[error("unknown IANA time zone {name:?}")]
    UnknownTimeZone {
        /// The name given.
        name: String,
    },
    /// An hour or minute out of range for a local time of day.
    #[error("invalid local time {hour:02}:{minute:02} (expected 00:00 to 23:59)")]
    InvalidLocalTime {
        /// Hour given.
        hour: u32,
        /// Minute given.
        minute: u32,
    },
    /// The slot length is outside the allowed range.
    #[error("slot length {slot_len_min} min is outside {min}..={max} min")]
    SlotLenOutOfRange {
        /// Slot length given, in minutes.
        slot_len_min: u32,
        /// Lower limit.
        min: u32,
        /// Upper limit.
        max: u32,
    },
    /// The slot length does not divide a day, so the slot grid would drift from day to
    /// day.
    #[error("slot length {slot_len_min} min does not divide a day (1440 min)")]
    SlotLenNotDividingDay {
        /// Slot length given, in minutes.
        slot_len_min: u32,
    },
    /// An opening interval is not a whole number of slots long, so its last slot would
    /// be cut short by the closing time.
    #[error(
        "{day}: opening interval {open}-{close} lasts {len_min} min, not a multiple of the \
         {slot_len_min} min slot length"
    )]
    IntervalNotMultipleOfSlot {
        /// The day of the interval.
        day: DayRef,
        /// Opening time, `HH:MM`.
        open: String,
        /// Closing time, `HH:MM`.
        close: String,
        /// Length of the interval in local minutes.
        len_min: u32,
        /// The configured slot length.
        slot_len_min: u32,
    },
    /// A day has more opening intervals than allowed.
    #[error("{day}: {count} opening intervals, the maximum is {max}")]
    TooManyIntervals {
        /// The day.
        day: DayRef,
        /// Intervals given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two opening intervals overlap, within a day or because an overnight interval
    /// runs into the next day's hours.
    #[error("{day}: opening intervals overlap (within the day or with the previous night)")]
    OverlappingIntervals {
        /// The (later) day on which the overlap happens.
        day: DayRef,
    },
    /// More dated exceptions than allowed.
    #[error("{count} dated exceptions, the maximum is {max}")]
    TooManyExceptions {
        /// Exceptions given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two dated exceptions name the same date.
    #[error("more than one exception for {date}")]
    DuplicateException {
        /// The repeated date.
        date: Date,
    },
    /// The lead time is longer than allowed.
    #[error("lead time {lead_time_min} min exceeds the maximum {max} min")]
    LeadTimeTooLong {
        /// Lead time given, in minutes.
        lead_time_min: u32,
        /// The limit.
        max: u32,
    },
    /// The hold grace period is longer than allowed.
    #[error("hold grace period {hold_grace_min} min exceeds the maximum {max} min")]
    HoldGraceTooLong {
        /// Grace period given, in minutes.
        hold_grace_min: u32,
        /// The limit.
        max: u32,
    },
    /// Pickups per staff member per slot is zero or too large.
    #[error("pickups per staff per slot {value} is outside 1..={max}")]
    PickupsPerStaffOutOfRange {
        /// Value given.
        value: u32,
        /// Upper limit.
        max: u32,
    },
    /// A day has more staff shifts than allowed.
    #[error("{day}: {count} staff shifts, the maximum is {max}")]
    TooManyShifts {
        /// The day.
        day: DayRef,
        /// Shifts given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A staff shift has more staff than allowed.
    #[error("{day}: a shift has {staff} staff, the maximum is {max}")]
    TooManyStaff {
        /// The day.
        day: DayRef,
        /// Staff given.
        staff: u32,
        /// The limit.
        max: u32,
    },
}
