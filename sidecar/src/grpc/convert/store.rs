//! Conversions of `store.proto`: store identities, statuses and calendars (hours, exceptions, staffing, slots).

use super::*;

/// `StoreStatus` from proto.
pub fn store_status(field: &str, s: i32) -> Result<StoreStatus, DomainError> {
    match pb::StoreStatus::try_from(s) {
        Ok(pb::StoreStatus::Open) => Ok(StoreStatus::Open),
        Ok(pb::StoreStatus::PickupsPaused) => Ok(StoreStatus::PickupsPaused),
        Ok(pb::StoreStatus::Closed) => Ok(StoreStatus::Closed),
        _ => Err(invalid(field, "must be OPEN, PICKUPS_PAUSED or CLOSED")),
    }
}

pub(super) fn store_status_pb(s: StoreStatus) -> pb::StoreStatus {
    match s {
        StoreStatus::Open => pb::StoreStatus::Open,
        StoreStatus::PickupsPaused => pb::StoreStatus::PickupsPaused,
        StoreStatus::Closed => pb::StoreStatus::Closed,
    }
}

/// A store definition from `UpsertStoreRequest.store`.
pub fn store_def(s: Option<pb::StoreIdentity>) -> Result<StoreDef, DomainError> {
    let s = s.ok_or_else(|| invalid("store", "required"))?;
    store_id("store.store_id", &s.store_id)?;
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

/// A store as the contract shows it, with its pickup calendar when it has one (hours,
/// exceptions, staffing, slot configuration; empty before the first SetHours,
/// SetStaffing or SetSlotConfig) and the time of its last change.
pub fn store_pb(
    def: &StoreDef,
    calendar: Option<&CalendarConfig>,
    pick_time_ms: u32,
    updated_at: pe::Timestamp,
) -> pb::Store {
    let mut store = pb::Store {
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
        updated_at_ms: updated_at.as_ms(),
    };
    if let Some(cal) = calendar {
        store.hours = Some(pb::WeeklyHours {
            days: WEEKDAYS
                .iter()
                .filter(|(_, day)| !cal.weekly_hours.on(*day).is_empty())
                .map(|(weekday, day)| pb::DayHours {
                    weekday: *weekday as i32,
                    open: cal.weekly_hours.on(*day).iter().map(range_pb).collect(),
                })
                .collect(),
        });
        store.exceptions = cal
            .exceptions
            .iter()
            .map(|x| pb::DateException {
                date: x.date.to_string(),
                open: match &x.hours {
                    DayHours::Closed => Vec::new(),
                    DayHours::Open(spans) => spans.iter().map(range_pb).collect(),
                },
                note: String::new(),
            })
            .collect();
        store.staffing = WEEKDAYS
            .iter()
            .flat_map(|(weekday, day)| {
                cal.staffing
                    .on(*day)
                    .iter()
                    .map(|shift| pb::StaffingWindow {
                        day: Some(pb::staffing_window::Day::Weekday(*weekday as i32)),
                        span: Some(span_pb(shift.start, shift.end)),
                        staff_count: shift.staff,
                    })
            })
            .collect();
        store.slot_config = Some(pb::SlotConfig {
            slot_ms: i64::from(cal.pickup.slot_len_min) * MINUTE_MS,
            lead_time_ms: i64::from(cal.pickup.lead_time_min) * MINUTE_MS,
            pickups_per_staff_per_slot: cal.pickup.pickups_per_staff_per_slot,
            hold_grace_ms: i64::from(cal.pickup.hold_grace_min) * MINUTE_MS,
            pick_time_per_order_ms: i64::from(pick_time_ms),
        });
    }
    store
}

/// A store as the contract shows it, with the calendar the engine has for it now.
pub fn store_full_pb(engine: &pe::Engine, def: &StoreDef) -> pb::Store {
    let id = &def.external_id;
    let calendar = engine.calendar_config(id).ok().flatten();
    let pick_time = engine
        .pick_time_per_order_ms(id)
        .unwrap_or(pe::slot::PICK_TIME_PER_ORDER_MS_DEFAULT);
    let updated_at = engine.store_updated_at(id).unwrap_or_default();
    store_pb(def, calendar.as_ref(), pick_time, updated_at)
}

pub(super) const MINUTE_MS: i64 = 60_000;
pub(super) const DAY_MINUTES: u32 = 24 * 60;

/// Proto weekdays and the engine's, Monday first.
pub(super) const WEEKDAYS: [(pb::Weekday, pe::calendar::Weekday); 7] = [
    (pb::Weekday::Monday, pe::calendar::Weekday::Monday),
    (pb::Weekday::Tuesday, pe::calendar::Weekday::Tuesday),
    (pb::Weekday::Wednesday, pe::calendar::Weekday::Wednesday),
    (pb::Weekday::Thursday, pe::calendar::Weekday::Thursday),
    (pb::Weekday::Friday, pe::calendar::Weekday::Friday),
    (pb::Weekday::Saturday, pe::calendar::Weekday::Saturday),
    (pb::Weekday::Sunday, pe::calendar::Weekday::Sunday),
];

pub(super) fn weekday(field: &str, w: i32) -> Result<pe::calendar::Weekday, DomainError> {
    WEEKDAYS
        .iter()
        .find(|(p, _)| *p as i32 == w)
        .map(|(_, d)| *d)
        .ok_or_else(|| invalid(field, "must be MONDAY..SUNDAY"))
}

pub(super) fn minute_pb(t: LocalTime, end: bool) -> u32 {
    match t.minute_of_day() {
        // A span ending at midnight ends at the end of its day.
        0 if end => DAY_MINUTES,
        m => m,
    }
}

pub(super) fn span_pb(start: LocalTime, end: LocalTime) -> pb::LocalTimeRange {
    pb::LocalTimeRange {
        start_minute: minute_pb(start, false),
        end_minute: minute_pb(end, true),
    }
}

pub(super) fn range_pb(i: &LocalInterval) -> pb::LocalTimeRange {
    span_pb(i.open, i.close)
}

/// A local span `start_minute..end_minute` (0 <= start < end <= 1440) as engine times;
/// an end of 1440 is the next midnight.
pub(super) fn local_span(
    field: &str,
    r: Option<&pb::LocalTimeRange>,
) -> Result<(LocalTime, LocalTime), DomainError> {
    let r = r.ok_or_else(|| invalid(field, "required"))?;
    if r.start_minute >= r.end_minute || r.end_minute > DAY_MINUTES {
        return Err(invalid(
            field,
            format!(
                "{}..{} is not a span within a day (0 <= start_minute < end_minute <= 1440)",
                r.start_minute, r.end_minute
            ),
        ));
    }
    let time = |m: u32| {
        LocalTime::from_minute_of_day(m % DAY_MINUTES).map_err(|e| invalid(field, e.to_string()))
    };
    Ok((time(r.start_minute)?, time(r.end_minute)?))
}

pub(super) fn intervals(
    field: &str,
    open: &[pb::LocalTimeRange],
) -> Result<Vec<LocalInterval>, DomainError> {
    open.iter()
        .enumerate()
        .map(|(i, r)| {
            let (start, end) = local_span(&format!("{field}[{i}]"), Some(r))?;
            Ok(LocalInterval::new(start, end))
        })
        .collect()
}

/// A local date `YYYY-MM-DD` (exactly: the parser also takes ISO 8601 forms such as
/// `20240101` that the contract does not).
pub fn local_date(field: &str, s: &str) -> Result<Date, DomainError> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let wrong = || invalid(field, format!("{:?} is not a date YYYY-MM-DD", echo(s)));
    if !shaped {
        return Err(wrong());
    }
    s.parse::<Date>().map_err(|_| wrong())
}

/// Weekly hours and dated exceptions from a SetHours request.
pub fn hours(
    weekly: Option<&pb::WeeklyHours>,
    exceptions: &[pb::DateException],
) -> Result<(WeeklyHours, Vec<DateException>), DomainError> {
    let mut out = WeeklyHours::closed();
    let mut seen = Vec::new();
    for (i, day) in weekly
        .map_or(&[][..], |w| w.days.as_slice())
        .iter()
        .enumerate()
    {
        let field = format!("hours.days[{i}]");
        let wd = weekday(&format!("{field}.weekday"), day.weekday)?;
        if seen.contains(&wd) {
            return Err(invalid(format!("{field}.weekday"), "weekday named twice"));
        }
        seen.push(wd);
        out = out.with_day(wd, &intervals(&format!("{field}.open"), &day.open)?);
    }
    let exceptions = exceptions
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let field = format!("exceptions[{i}]");
            let spans = intervals(&format!("{field}.open"), &x.open)?;
            Ok(DateException {
                date: local_date(&format!("{field}.date"), &x.date)?,
                hours: if spans.is_empty() {
                    DayHours::Closed
                } else {
                    DayHours::Open(spans)
                },
            })
        })
        .collect::<Result<_, DomainError>>()?;
    Ok((out, exceptions))
}

/// A weekly staffing plan from SetStaffing windows.
pub fn staffing(windows: &[pb::StaffingWindow]) -> Result<WeeklyStaffing, DomainError> {
    let mut days: [Vec<StaffShift>; 7] = Default::default();
    for (i, w) in windows.iter().enumerate() {
        let field = format!("windows[{i}]");
        let wd = match &w.day {
            Some(pb::staffing_window::Day::Weekday(d)) => weekday(&format!("{field}.weekday"), *d)?,
            Some(pb::staffing_window::Day::Date(_)) => {
                return Err(invalid(
                    format!("{field}.date"),
                    "dated staffing windows are not supported: staffing is planned per weekday",
                ));
            }
            None => return Err(invalid(format!("{field}.day"), "a weekday is required")),
        };
        let (start, end) = local_span(&format!("{field}.span"), w.span.as_ref())?;
        let index = WEEKDAYS.iter().position(|(_, d)| *d == wd).unwrap_or(0);
        if let Some(day) = days.get_mut(index) {
            day.push(StaffShift {
                start,
                end,
                staff: w.staff_count,
            });
        }
    }
    Ok(WeeklyStaffing { days })
}

pub(super) fn whole_minutes(field: &str, ms: i64) -> Result<u32, DomainError> {
    if ms < 0 || ms % MINUTE_MS != 0 {
        return Err(invalid(
            field,
            "must be a non-negative whole number of minutes, in ms",
        ));
    }
    u32::try_from(ms / MINUTE_MS).map_err(|_| invalid(field, "too long"))
}

/// The pickup settings and pick time (`None`: keep) of a SetSlotConfig request.
pub fn slot_config(c: Option<&pb::SlotConfig>) -> Result<(PickupConfig, Option<u32>), DomainError> {
    let c = c.ok_or_else(|| invalid("slot_config", "required"))?;
    let pickup = PickupConfig {
        slot_len_min: whole_minutes("slot_config.slot_ms", c.slot_ms)?,
        lead_time_min: whole_minutes("slot_config.lead_time_ms", c.lead_time_ms)?,
        hold_grace_min: whole_minutes("slot_config.hold_grace_ms", c.hold_grace_ms)?,
        pickups_per_staff_per_slot: c.pickups_per_staff_per_slot,
    };
    let pick_time = match c.pick_time_per_order_ms {
        0 => None,
        ms => Some(u32::try_from(ms).map_err(|_| {
            invalid(
                "slot_config.pick_time_per_order_ms",
                "must be within 1..=14400000 (4 hours)",
            )
        })?),
    };
    Ok((pickup, pick_time))
}

/// INVALID_ARGUMENT naming the request field a calendar refusal is about.
pub fn calendar_error(e: &CalendarError) -> DomainError {
    let day_field = |day: &DayRef, weekly: &'static str| match day {
        DayRef::Weekly(_) => weekly,
        DayRef::Dated(_) => "exceptions",
    };
    let field = match e {
        CalendarError::TimeZoneNameTooLong { .. } | CalendarError::UnknownTimeZone { .. } => {
            "store.time_zone"
        }
        CalendarError::InvalidLocalTime { .. } => "hours",
        CalendarError::SlotLenOutOfRange { .. } | CalendarError::SlotLenNotDividingDay { .. } => {
            "slot_config.slot_ms"
        }
        CalendarError::IntervalNotMultipleOfSlot { day, .. }
        | CalendarError::TooManyIntervals { day, .. }
        | CalendarError::OverlappingIntervals { day } => day_field(day, "hours.days"),
        CalendarError::TooManyExceptions { .. } | CalendarError::DuplicateException { .. } => {
            "exceptions"
        }
        CalendarError::LeadTimeTooLong { .. } => "slot_config.lead_time_ms",
        CalendarError::HoldGraceTooLong { .. } => "slot_config.hold_grace_ms",
        CalendarError::PickupsPerStaffOutOfRange { .. } => "slot_config.pickups_per_staff_per_slot",
        CalendarError::TooManyShifts { .. } | CalendarError::TooManyStaff { .. } => "windows",
    };
    invalid(field, e.to_string())
}

/// A pickup slot by its start, with its end as the store's calendar cuts it (0 when the
/// calendar no longer has the slot).
pub fn slot_pb(
    engine: &pe::Engine,
    store: pe::StoreId,
    start_ms: Option<i64>,
) -> Option<pb::PickupSlot> {
    start_ms.map(|start_ms| pb::PickupSlot {
        start_ms,
        end_ms: engine.slot_at(store, start_ms).map_or(0, |s| s.end_ms),
    })
}
