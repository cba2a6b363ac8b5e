//! The one place that converts between protobuf messages and engine types, and engine
//! errors into [`DomainError`] (whose status mapping is the table in [`crate::grpc::status`]).
//!
//! Request conversions validate what the engine cannot see (a proto enum left
//! UNSPECIFIED, a missing idempotency key) and return `DomainError::InvalidArgument`
//! naming the proto field; everything else (lengths, quantities, ttl bounds) the engine
//! validates itself and reports through [`From<EngineError>`].

use pickline_engine::{
    self as pe, CellView, EngineError, HoldId, HoldRejection, OrderId, OrderRejection, OrderStatus,
    OrderView, StoreDef, StoreStatus,
    calendar::{
        CalendarConfig, CalendarError, Date, DateException, DayHours, DayRef, LocalInterval,
        LocalTime, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
    },
    pickup_code::{QrPayload, StaffId, VerifyOutcome},
    receipt::Receipt,
};

use crate::{
    grpc::status::{DomainError, ResourceKind, echo},
    pb,
};

/// Longest idempotency key, bytes (common.proto).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
/// Longest store id, bytes (store.proto). The engine's own limit
/// (`Limits::external_id_len_max`) is looser; the contract's is the one callers see.
pub const STORE_ID_LEN_MAX: usize = 64;
/// Longest SKU id, bytes (common.proto).
pub const SKU_LEN_MAX: usize = 64;
/// Longest event consumer name, bytes (event.proto).
pub const CONSUMER_NAME_LEN_MAX: usize = 64;

impl From<EngineError> for DomainError {
    fn from(e: EngineError) -> DomainError {
        match e {
            EngineError::UnknownStore(id) => DomainError::NotFound {
                kind: ResourceKind::Store,
                id,
            },
            EngineError::UnknownSku(id) => DomainError::NotFound {
                kind: ResourceKind::Cell,
                id,
            },
            EngineError::InvalidRequest { field, why } => DomainError::InvalidArgument {
                field: field.to_owned(),
                reason: why,
            },
            EngineError::LimitReached { limit, value } => DomainError::TableFull {
                what: limit,
                limit: value,
            },
            EngineError::InvalidCalendar(e) => calendar_error(&e),
            EngineError::LogFailed(why) => DomainError::Storage(std::io::Error::other(why)),
            EngineError::IdempotencyKeyReused { key } => DomainError::IdempotencyKeyReused { key },
            EngineError::InBatch { index, error } => {
                DomainError::from(*error).in_field(|| format!("holds[{index}]."))
            }
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An external id of 1..=`len_max` bytes without control characters.
fn external_id(field: &str, id: &str, len_max: usize) -> Result<(), DomainError> {
    match external_id_problem(id, len_max) {
        Some(reason) => Err(invalid(field, reason)),
        None => Ok(()),
    }
}

/// What is wrong with `id` as an external id, if anything ([`external_id`] without a field
/// name, for callers that name the field only when there is an error).
fn external_id_problem(id: &str, len_max: usize) -> Option<String> {
    if id.is_empty() || id.len() > len_max {
        return Some(format!("must be 1..={len_max} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    None
}

/// Checks a store id (1..=64 bytes, store.proto).
pub fn store_id(field: &str, id: &str) -> Result<(), DomainError> {
    external_id(field, id, STORE_ID_LEN_MAX)
}

/// Checks a SKU id (1..=64 bytes, common.proto).
pub fn sku(field: &str, id: &str) -> Result<(), DomainError> {
    external_id(field, id, SKU_LEN_MAX)
}

/// Checks the lines of a hold, an allocation or a cart: each SKU valid and named at
/// most once (hold.proto), each quantity at least 1. Field paths are relative to the
/// request (`lines[2].sku`).
pub fn lines(field: &str, lines: &[pb::Line]) -> Result<(), DomainError> {
    // Field paths are formatted only for an error: BatchHold checks a thousand holds'
    // lines per request.
    let at = |i: usize, what: &str| format!("{field}[{i}].{what}");
    // Carts are short: a scan of the earlier lines finds a repeated SKU without the
    // allocation of a set; longer lists use one.
    let mut seen = (lines.len() > LINES_SCANNED_MAX)
        .then(|| std::collections::HashSet::with_capacity(lines.len()));
    for (i, l) in lines.iter().enumerate() {
        if let Some(reason) = external_id_problem(&l.sku, SKU_LEN_MAX) {
            return Err(invalid(at(i, "sku"), reason));
        }
        if l.qty == 0 {
            return Err(invalid(at(i, "qty"), "must be at least 1"));
        }
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(l.sku.as_str()),
            None => lines[..i].iter().any(|earlier| earlier.sku == l.sku),
        };
        if repeated {
            return Err(invalid(
                at(i, "sku"),
                "names a SKU of an earlier line; each SKU at most once",
            ));
        }
    }
    Ok(())
}

/// Lines up to which [`lines`] finds a repeated SKU by scanning instead of with a set.
const LINES_SCANNED_MAX: usize = 16;

/// Checks a consumer name (1..=64 bytes of `[a-z0-9_-]`, event.proto).
pub fn consumer_name(field: &str, name: &str) -> Result<(), DomainError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if name.is_empty() || name.len() > CONSUMER_NAME_LEN_MAX || !name.bytes().all(allowed) {
        return Err(invalid(
            field,
            format!("must be 1..={CONSUMER_NAME_LEN_MAX} bytes of [a-z0-9_-]"),
        ));
    }
    Ok(())
}

/// A consumer name that is looked up (Subscribe, Ack): present and not absurdly long.
/// Its shape is checked only at registration, so names registered before that check
/// keep working.
pub fn consumer_ref(field: &str, name: &str) -> Result<(), DomainError> {
    if name.is_empty() || name.len() > CONSUMER_REF_LEN_MAX {
        return Err(invalid(
            field,
            format!("must name a registered consumer (1..={CONSUMER_REF_LEN_MAX} bytes)"),
        ));
    }
    Ok(())
}

/// Longest consumer name Subscribe and Ack look up: the engine's own limit on ids
/// (`Limits::key_len_max`), which names registered before [`CONSUMER_NAME_LEN_MAX`]
/// applied may use.
pub const CONSUMER_REF_LEN_MAX: usize = 128;

/// Checks that a mutation carries its idempotency key (1..=128 bytes).
pub fn idempotency_key(field: &str, key: &str) -> Result<String, DomainError> {
    check_key(field, key)?;
    Ok(key.to_owned())
}

/// [`idempotency_key`] without the copy.
pub fn check_key(field: &str, key: &str) -> Result<(), DomainError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(invalid(
            field,
            format!("must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
        ));
    }
    Ok(())
}

/// A staff id as the engine validates it.
pub fn staff_id(field: &str, id: &str) -> Result<StaffId, DomainError> {
    StaffId::new(id).map_err(|e| invalid(field, e.to_string()))
}

/// A count limit on a repeated field: RESOURCE_EXHAUSTED above `max`, INVALID_ARGUMENT
/// when empty.
pub fn batch_len(what: &'static str, len: usize, max: usize) -> Result<(), DomainError> {
    if len == 0 {
        return Err(invalid(what, "must not be empty"));
    }
    if len > max {
        return Err(DomainError::LimitExceeded {
            what,
            actual: len as u64,
            limit: max as u64,
        });
    }
    Ok(())
}

/// The ListStores page token after the store `last`: its id in lower-case hex, so that
/// a token is recognisably one this server issued.
pub fn store_page_token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The store id a ListStores page token continues after (`None` for the first page).
pub fn store_page_after(token: &str) -> Result<Option<String>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let garbage = || invalid("page_token", "not a token this server issued");
    if !token.len().is_multiple_of(2) || token.len() > 2 * STORE_ID_LEN_MAX {
        return Err(garbage());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            let pair = token.get(i..i + 2).ok_or_else(garbage)?;
            if pair.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(garbage());
            }
            u8::from_str_radix(pair, 16).map_err(|_| garbage())
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let id = String::from_utf8(bytes).map_err(|_| garbage())?;
    store_id("page_token", &id).map_err(|_| garbage())?;
    Ok(Some(id))
}

/// A page token that is a decimal number (the last key of the previous page).
pub fn page_token(token: &str) -> Result<Option<u64>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| invalid("page_token", "not a token this server issued"))
}

/// A page size: 0 means `default`, otherwise 1..=`max`.
pub fn page_size(size: u32, default: usize, max: usize) -> Result<usize, DomainError> {
    match size as usize {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(DomainError::LimitExceeded {
            what: "page_size",
            actual: n as u64,
            limit: max as u64,
        }),
    }
}

// ---------------------------------------------------------------- stores

/// `StoreStatus` from proto.
pub fn store_status(field: &str, s: i32) -> Result<StoreStatus, DomainError> {
    match pb::StoreStatus::try_from(s) {
        Ok(pb::StoreStatus::Open) => Ok(StoreStatus::Open),
        Ok(pb::StoreStatus::PickupsPaused) => Ok(StoreStatus::PickupsPaused),
        Ok(pb::StoreStatus::Closed) => Ok(StoreStatus::Closed),
        _ => Err(invalid(field, "must be OPEN, PICKUPS_PAUSED or CLOSED")),
    }
}

fn store_status_pb(s: StoreStatus) -> pb::StoreStatus {
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

// ---------------------------------------------------------------- calendars

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: u32 = 24 * 60;

/// The slot configuration of a store whose manager has not set one (store.proto).
pub const DEFAULT_PICKUP: PickupConfig = PickupConfig {
    slot_len_min: 30,
    lead_time_min: 60,
    hold_grace_min: 30,
    pickups_per_staff_per_slot: 2,
};

/// Proto weekdays and the engine's, Monday first.
const WEEKDAYS: [(pb::Weekday, pe::calendar::Weekday); 7] = [
    (pb::Weekday::Monday, pe::calendar::Weekday::Monday),
    (pb::Weekday::Tuesday, pe::calendar::Weekday::Tuesday),
    (pb::Weekday::Wednesday, pe::calendar::Weekday::Wednesday),
    (pb::Weekday::Thursday, pe::calendar::Weekday::Thursday),
    (pb::Weekday::Friday, pe::calendar::Weekday::Friday),
    (pb::Weekday::Saturday, pe::calendar::Weekday::Saturday),
    (pb::Weekday::Sunday, pe::calendar::Weekday::Sunday),
];

fn weekday(field: &str, w: i32) -> Result<pe::calendar::Weekday, DomainError> {
    WEEKDAYS
        .iter()
        .find(|(p, _)| *p as i32 == w)
        .map(|(_, d)| *d)
        .ok_or_else(|| invalid(field, "must be MONDAY..SUNDAY"))
}

fn minute_pb(t: LocalTime, end: bool) -> u32 {
    match t.minute_of_day() {
        // A span ending at midnight ends at the end of its day.
        0 if end => DAY_MINUTES,
        m => m,
    }
}

fn span_pb(start: LocalTime, end: LocalTime) -> pb::LocalTimeRange {
    pb::LocalTimeRange {
        start_minute: minute_pb(start, false),
        end_minute: minute_pb(end, true),
    }
}

fn range_pb(i: &LocalInterval) -> pb::LocalTimeRange {
    span_pb(i.open, i.close)
}

/// A local span `start_minute..end_minute` (0 <= start < end <= 1440) as engine times;
/// an end of 1440 is the next midnight.
fn local_span(
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

fn intervals(field: &str, open: &[pb::LocalTimeRange]) -> Result<Vec<LocalInterval>, DomainError> {
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

fn whole_minutes(field: &str, ms: i64) -> Result<u32, DomainError> {
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

/// The calendar a store gets when one part is edited: the current one, or the empty
/// one with [`DEFAULT_PICKUP`], always in the store's own time zone.
pub fn base_calendar(current: Option<&CalendarConfig>, time_zone: &str) -> CalendarConfig {
    let mut c = current.cloned().unwrap_or_else(|| CalendarConfig {
        time_zone: String::new(),
        weekly_hours: WeeklyHours::closed(),
        exceptions: Vec::new(),
        pickup: DEFAULT_PICKUP,
        staffing: WeeklyStaffing::default(),
    });
    time_zone.clone_into(&mut c.time_zone);
    c
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

// ---------------------------------------------------------------- inventory

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

// ---------------------------------------------------------------- holds

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

// ---------------------------------------------------------------- orders

/// The engine's channel name for a proto channel.
pub fn channel(c: i32, name: &str) -> Result<String, DomainError> {
    Ok(match pb::Channel::try_from(c) {
        Ok(pb::Channel::Shopify) => "shopify".into(),
        Ok(pb::Channel::Woocommerce) => "woocommerce".into(),
        Ok(pb::Channel::Bigcommerce) => "bigcommerce".into(),
        Ok(pb::Channel::Magento) => "magento".into(),
        Ok(pb::Channel::Commercetools) => "commercetools".into(),
        Ok(pb::Channel::Direct) => "direct".into(),
        Ok(pb::Channel::Other) if !name.is_empty() => format!("other:{name}"),
        Ok(pb::Channel::Other) => return Err(invalid("channel_name", "required for OTHER")),
        _ => return Err(invalid("channel", "must be set")),
    })
}

fn channel_pb(c: &str) -> (pb::Channel, String) {
    let ch = match c {
        "shopify" => pb::Channel::Shopify,
        "woocommerce" => pb::Channel::Woocommerce,
        "bigcommerce" => pb::Channel::Bigcommerce,
        "magento" => pb::Channel::Magento,
        "commercetools" => pb::Channel::Commercetools,
        "direct" => pb::Channel::Direct,
        other => {
            return (
                pb::Channel::Other,
                other.strip_prefix("other:").unwrap_or(other).to_owned(),
            );
        }
    };
    (ch, String::new())
}

/// A `CreateOrder` command from proto.
pub fn create_order(r: pb::CreateOrderRequest) -> Result<pe::CreateOrder, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    for (i, l) in r.lines.iter().enumerate() {
        sku(&format!("lines[{i}].sku"), &l.sku)?;
        if l.unit_price_minor < 0 {
            return Err(invalid(
                format!("lines[{i}].unit_price_minor"),
                "must not be negative",
            ));
        }
    }
    let customer = r.customer.unwrap_or_default();
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(pe::CreateOrder {
        hold: hold_id("hold_id", r.hold_id)?,
        channel: channel(r.channel, &r.channel_name)?,
        channel_order_id: r.channel_order_id,
        customer: pe::Customer {
            name: opt(customer.name),
            locale: opt(customer.locale),
            email: opt(customer.email),
            phone: opt(customer.phone),
            sms_consent: customer.sms_consent,
            email_consent: customer.email_consent,
        },
        lines: r
            .lines
            .into_iter()
            .map(|l| pe::OrderLineRequest {
                sku: l.sku,
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                description: l.title,
            })
            .collect(),
        currency: r.currency,
        idempotency_key: Some(key),
    })
}

fn order_state_pb(s: OrderStatus) -> pb::OrderState {
    match s {
        OrderStatus::Placed => pb::OrderState::Placed,
        OrderStatus::Confirmed => pb::OrderState::Confirmed,
        OrderStatus::Picking => pb::OrderState::Picking,
        OrderStatus::Ready => pb::OrderState::Ready,
        OrderStatus::Collected => pb::OrderState::Collected,
        OrderStatus::Cancelled => pb::OrderState::Cancelled,
        OrderStatus::Expired => pb::OrderState::Expired,
        OrderStatus::NoShow => pb::OrderState::NoShow,
    }
}

/// An engine status from a proto order state (for ListOrders filters).
pub fn order_status(field: &str, s: i32) -> Result<OrderStatus, DomainError> {
    Ok(match pb::OrderState::try_from(s) {
        Ok(pb::OrderState::Placed) => OrderStatus::Placed,
        Ok(pb::OrderState::Confirmed) => OrderStatus::Confirmed,
        Ok(pb::OrderState::Picking) => OrderStatus::Picking,
        Ok(pb::OrderState::Ready) => OrderStatus::Ready,
        Ok(pb::OrderState::Collected) => OrderStatus::Collected,
        Ok(pb::OrderState::Cancelled) => OrderStatus::Cancelled,
        Ok(pb::OrderState::Expired) => OrderStatus::Expired,
        Ok(pb::OrderState::NoShow) => OrderStatus::NoShow,
        _ => return Err(invalid(field, "must be a set order state")),
    })
}

/// An order as the contract shows it. Customer name and locale are not kept by the
/// engine, so they are empty.
pub fn order_pb(engine: &pe::Engine, v: &OrderView) -> pb::PickupOrder {
    let slot = engine.hold_info(v.order.hold()).and_then(|h| h.slot);
    order_pb_with_slot(engine, v, slot)
}

/// An order in proto form with the pickup slot (`start_ms`) its hold booked.
pub fn order_pb_with_slot(
    engine: &pe::Engine,
    v: &OrderView,
    slot: Option<i64>,
) -> pb::PickupOrder {
    let (channel, channel_name) = channel_pb(&v.channel);
    let mut history = Vec::with_capacity(v.transitions.len());
    let mut from = pb::OrderState::Unspecified;
    for (status, at) in &v.transitions {
        let to = order_state_pb(*status);
        history.push(pb::OrderTransition {
            from: from as i32,
            to: to as i32,
            at_ms: at.as_ms(),
            staff_id: String::new(),
            reason: String::new(),
        });
        from = to;
    }
    pb::PickupOrder {
        order_id: v.order.0,
        hold_id: v.order.hold().0,
        store_id: store_name(engine, v.order.store().0),
        channel: channel as i32,
        channel_name,
        channel_order_id: v.channel_order_id.clone(),
        customer: Some(pb::CustomerContact {
            name: v.customer.name.clone().unwrap_or_default(),
            email: v.customer.email.clone().unwrap_or_default(),
            phone: v.customer.phone.clone().unwrap_or_default(),
            email_consent: v.customer.email_consent,
            sms_consent: v.customer.sms_consent,
            locale: v.customer.locale.clone().unwrap_or_default(),
        }),
        lines: v
            .lines
            .iter()
            .map(|l| pb::PricedLine {
                sku: engine.sku_name(l.sku).unwrap_or_default(),
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                picked_qty: l.qty,
                title: l.description.clone(),
            })
            .collect(),
        currency: v.currency.clone(),
        state: order_state_pb(v.status) as i32,
        slot: slot_pb(engine, v.order.store(), slot),
        estimated_ready_ms: v.ready_estimate.map_or(0, |t| t.as_ms()),
        pickup_code: v.code.map(|c| c.to_string()).unwrap_or_default(),
        code_attempts: v.wrong_attempts,
        code_locked: v.locked,
        history,
    }
}

/// The current view of an order, or NOT_FOUND.
pub fn order_view(engine: &pe::Engine, order: OrderId) -> Result<OrderView, DomainError> {
    engine.order(order).ok_or_else(|| unknown_order(order))
}

/// NOT_FOUND for an order id.
pub fn unknown_order(order: OrderId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Order,
        id: order.0.to_string(),
    }
}

/// The status error of a refused order action that is misuse, not a business answer.
pub fn order_rejection(order: OrderId, r: &OrderRejection, action: &'static str) -> DomainError {
    match r {
        OrderRejection::UnknownOrder => unknown_order(order),
        OrderRejection::IllegalTransition { from } => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: format!("{:?}", order_state_pb(*from)),
            action,
        },
        OrderRejection::NoSuchLine => invalid("lines.sku", "the order has no line of that SKU"),
        OrderRejection::NotShort { line_qty } => invalid(
            "lines.picked_qty",
            format!("must be below the line's {line_qty} units"),
        ),
        OrderRejection::NotLocked => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: "not locked".to_owned(),
            action,
        },
        OrderRejection::NothingLeft => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: "left without any unit to hand off (every line was short)".to_owned(),
            action,
        },
        OrderRejection::PickupWindowOpen { ends_at } => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: format!(
                "READY with its pickup window open until {} ms",
                ends_at.as_ms()
            ),
            action,
        },
    }
}

/// Short lines per ReportShort at most (the order's lines are bounded like a hold's).
pub const SHORT_LINES_MAX: usize = 100;

/// A ReportShort request as the engine's all-or-nothing [`pe::ShortReport`]. Each SKU at
/// most once: a second line of the same SKU could only be judged against the state the
/// first one left, so it is refused before anything runs.
pub fn short_report(r: &pb::ReportShortRequest) -> Result<pe::ShortReport, DomainError> {
    let staff = staff_id("staff_id", &r.staff_id)?;
    batch_len("lines", r.lines.len(), SHORT_LINES_MAX)?;
    let mut lines = Vec::with_capacity(r.lines.len());
    for (i, l) in r.lines.iter().enumerate() {
        if r.lines[..i].iter().any(|o| o.sku == l.sku) {
            return Err(invalid(
                format!("lines[{i}].sku"),
                format!("SKU {:?} is already listed in an earlier line", l.sku),
            ));
        }
        let resolution = match pb::ShortResolution::try_from(l.resolution) {
            Ok(pb::ShortResolution::Cancel) => pe::ShortPickResolution::CancelLine,
            Ok(pb::ShortResolution::Reallocate) => pe::ShortPickResolution::Reallocate,
            _ => return Err(invalid(format!("lines[{i}].resolution"), "must be set")),
        };
        lines.push(pe::ShortLine {
            sku: l.sku.clone(),
            found: l.picked_qty,
            resolution,
        });
    }
    Ok(pe::ShortReport {
        order: order_id("order_id", r.order_id)?,
        lines,
        staff,
    })
}

/// A refused line of a ReportShort (`line`: its index in the request), or the refused
/// report as a whole.
pub fn short_rejection(order: OrderId, line: Option<usize>, r: &OrderRejection) -> DomainError {
    match (line, r) {
        (Some(i), OrderRejection::NoSuchLine) => invalid(
            format!("lines[{i}].sku"),
            "the order has no line of that SKU",
        ),
        (Some(i), OrderRejection::NotShort { line_qty }) => invalid(
            format!("lines[{i}].picked_qty"),
            format!("must be below the line's {line_qty} units"),
        ),
        _ => order_rejection(order, r, "report short"),
    }
}

/// The code a customer presents: the code itself, or a scanned QR payload of this
/// order (whose code is then checked).
pub fn presented_code(order: OrderId, input: &str) -> Result<String, DomainError> {
    if input.starts_with(pe::pickup_code::QR_PAYLOAD_PREFIX) {
        let qr = QrPayload::parse(input).map_err(|e| invalid("code", e.to_string()))?;
        if qr.order_id() != order.to_string() {
            return Err(invalid("code", "the QR payload belongs to another order"));
        }
        return Ok(qr.code().to_string());
    }
    Ok(input.to_owned())
}

/// A code check that did not pass, as the contract shows it; `Ok(None)` when accepted.
pub fn code_rejected_pb(v: &VerifyOutcome) -> Result<Option<pb::OrderRejected>, DomainError> {
    let rejected = |reason: pb::OrderRejectReason, attempts_left, message: &str| {
        Ok(Some(pb::OrderRejected {
            reason: reason as i32,
            attempts_left,
            message: message.to_owned(),
        }))
    };
    match v {
        VerifyOutcome::Accepted | VerifyOutcome::AlreadyAccepted => Ok(None),
        VerifyOutcome::Wrong { attempts_left } => rejected(
            pb::OrderRejectReason::WrongCode,
            *attempts_left,
            "wrong code",
        ),
        VerifyOutcome::WrongNowLocked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "wrong code; the order is now locked",
        ),
        VerifyOutcome::Locked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "locked by wrong codes; a staff override is needed",
        ),
        VerifyOutcome::Malformed(e) => Err(invalid("code", e.to_string())),
    }
}

/// An e-receipt in its three renderings.
pub fn receipt_pb(r: &Receipt) -> pb::Receipt {
    pb::Receipt {
        json: r.to_json(),
        text: r.to_text(),
        html: r.to_html(),
        total: Some(pb::Money {
            amount_minor: r.total_minor(),
            currency: r.currency().code().to_owned(),
        }),
    }
}

// ---------------------------------------------------------------- events

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

// ---------------------------------------------------------------- allocation

/// Largest search radius a request may give, metres (hold.proto, inventory.proto).
pub const DISTANCE_M_MAX: u32 = 500_000;
/// Lines of an Allocate or NearbyAvailability request at most.
pub const CART_LINES_MAX: usize = 100;
/// Alternatives an AllocateResponse lists at most (hold.proto).
pub const ALTERNATIVES_MAX: usize = 5;
/// Candidate stores of an Allocate: default and maximum (hold.proto).
const CANDIDATES_DEFAULT: usize = 10;
const CANDIDATES_MAX: usize = 50;

/// A radius in metres (1..=[`DISTANCE_M_MAX`]) as the engine's kilometres.
pub fn distance_km(field: &str, m: u32) -> Result<f64, DomainError> {
    if m == 0 || m > DISTANCE_M_MAX {
        return Err(invalid(
            field,
            format!("must be within 1..={DISTANCE_M_MAX} metres"),
        ));
    }
    Ok(f64::from(m) / 1_000.0)
}

fn distance_m(km: f64) -> u32 {
    // Distances are below half the Earth's circumference, so the cast cannot saturate.
    (km * 1_000.0).round() as u32
}

/// A position from proto.
pub fn position(field: &str, p: Option<&pb::GeoPoint>) -> Result<(f64, f64), DomainError> {
    p.map(|p| (p.latitude_deg, p.longitude_deg))
        .ok_or_else(|| invalid(field, "required"))
}

fn cart(cart_lines: &[pb::Line]) -> Result<Vec<pe::LineRequest>, DomainError> {
    batch_len("lines", cart_lines.len(), CART_LINES_MAX)?;
    lines("lines", cart_lines)?;
    Ok(cart_lines
        .iter()
        .map(|l| pe::LineRequest::new(l.sku.clone(), l.qty))
        .collect())
}

/// An Allocate request from proto.
pub fn allocate_request(r: &pb::AllocateRequest) -> Result<pe::AllocateRequest, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    let (pos, preferred) = match &r.origin {
        Some(pb::allocate_request::Origin::Position(p)) => {
            (Some(position("origin.position", Some(p))?), None)
        }
        Some(pb::allocate_request::Origin::PreferredStoreId(s)) => {
            store_id("origin.preferred_store_id", s)?;
            (None, Some(s.clone()))
        }
        None => {
            return Err(invalid(
                "origin",
                "a position or a preferred_store_id is required",
            ));
        }
    };
    let max_candidates = match r.max_candidates as usize {
        0 => CANDIDATES_DEFAULT,
        n if n <= CANDIDATES_MAX => n,
        _ => {
            return Err(invalid(
                "max_candidates",
                format!("must be within 0..={CANDIDATES_MAX}"),
            ));
        }
    };
    if r.earliest_pickup_ms < 0 {
        return Err(invalid("earliest_pickup_ms", "must not be negative"));
    }
    let (lat, lon) = pos.unwrap_or_default();
    let mut req = pe::AllocateRequest::near(lat, lon, cart(&r.lines)?);
    req.position = pos;
    req.preferred_store = preferred;
    req.max_distance_km = distance_km("max_distance_m", r.max_distance_m)?;
    req.max_candidates = max_candidates;
    req.allow_split = r.allow_split;
    req.earliest_pickup_ms = (r.earliest_pickup_ms != 0).then_some(r.earliest_pickup_ms);
    req.want_slot = r.slot_wanted;
    req.alternatives_max = ALTERNATIVES_MAX;
    req.idempotency_key = Some(key);
    req.ttl_ms = (r.ttl_ms != 0).then_some(r.ttl_ms);
    Ok(req)
}

fn supply_pb(supply: &[pe::LineSupply]) -> (Vec<pb::Line>, bool) {
    let lines = supply
        .iter()
        .map(|l| pb::Line {
            sku: l.sku.clone(),
            qty: l.available.min(l.requested),
        })
        .collect();
    (lines, supply.iter().all(|l| l.available >= l.requested))
}

/// When an order placed at `store` now could be picked up: the start of the first slot
/// with capacity after the ready estimate (SPEC: rounded up to a slot); 0 without a
/// calendar.
pub fn pickup_estimate_ms(engine: &pe::Engine, store: &str, now: pe::Timestamp) -> i64 {
    engine
        .estimate_ready(store, now)
        .ok()
        .flatten()
        .map_or(0, |e| e.slot.start_ms)
}

fn estimated_ready_ms(engine: &pe::Engine, store: &str, now: pe::Timestamp) -> i64 {
    engine
        .estimate_ready(store, now)
        .ok()
        .flatten()
        .map_or(0, |e| e.ready_ms)
}

/// The contract response of an allocation outcome. `head_before` is the log head read
/// before the call: holds whose records are at or below it were granted by an earlier
/// request with the same key (`replayed`).
pub fn allocate_response(
    engine: &pe::Engine,
    key: &str,
    outcome: pe::AllocateOutcome,
    head_before: u64,
    now: pe::Timestamp,
) -> Result<pb::AllocateResponse, DomainError> {
    use pb::allocate_response::Outcome;
    let alternatives_pb = |alts: &[pe::Alternative]| -> Vec<pb::Alternative> {
        alts.iter()
            .map(|a| {
                let (can_supply, complete) = supply_pb(&a.supply);
                pb::Alternative {
                    store_id: a.store_external_id.clone(),
                    distance_m: distance_m(a.distance_km),
                    can_supply,
                    complete,
                    estimated_ready_ms: estimated_ready_ms(engine, &a.store_external_id, now),
                }
            })
            .collect()
    };
    Ok(match outcome {
        pe::AllocateOutcome::Allocated {
            parts,
            alternatives,
        } => {
            let replayed = parts.iter().all(|p| p.grant.lsn.0 <= head_before);
            let holds = parts
                .iter()
                .map(|p| {
                    let created = engine
                        .hold_info(p.grant.hold)
                        .map_or(now.as_ms(), |h| h.created.as_ms());
                    hold_info_pb(
                        p.store_external_id.clone(),
                        p.lines
                            .iter()
                            .map(|l| pb::Line {
                                sku: l.sku.clone(),
                                qty: l.qty,
                            })
                            .collect(),
                        created,
                        p.grant.expires_at.as_ms(),
                        pb::HoldState::Active,
                        p.grant.hold,
                        p.slot.map(|s| pb::PickupSlot {
                            start_ms: s.start_ms,
                            end_ms: s.end_ms,
                        }),
                    )
                })
                .collect();
            let estimated_ready_ms = parts
                .iter()
                .filter_map(|p| p.estimate.map(|e| e.ready_ms))
                .max()
                .unwrap_or(0);
            pb::AllocateResponse {
                outcome: Some(Outcome::Allocated(pb::Allocation {
                    holds,
                    estimated_ready_ms,
                })),
                alternatives: alternatives_pb(&alternatives),
                replayed,
            }
        }
        pe::AllocateOutcome::Rejected {
            reason,
            alternatives,
        } => {
            // The shortages a checkout shows are those of the nearest candidate.
            let shortages = alternatives.first().map_or(Vec::new(), |a| {
                a.supply
                    .iter()
                    .filter(|l| l.available < l.requested)
                    .map(|l| pb::LineShortage {
                        sku: l.sku.clone(),
                        requested: l.requested,
                        available: l.available,
                    })
                    .collect()
            });
            let message = match reason {
                pe::AllocateRejection::NoCandidates => {
                    "no store within the distance takes pickups at that time"
                }
                pe::AllocateRejection::NotCoverable => {
                    "no candidate store (or allowed split) could supply every line"
                }
            };
            pb::AllocateResponse {
                outcome: Some(Outcome::Rejected(pb::HoldRejected {
                    reason: pb::HoldRejectReason::NoStore as i32,
                    shortages,
                    hold_state: 0,
                    message: message.to_owned(),
                })),
                alternatives: alternatives_pb(&alternatives),
                replayed: false,
            }
        }
        pe::AllocateOutcome::InFlight => {
            return Err(DomainError::InFlight {
                key: key.to_owned(),
            });
        }
    })
}

/// Stores returned by a NearbyAvailability: default and maximum (inventory.proto).
const NEARBY_DEFAULT: usize = 10;

/// A NearbyAvailability query from proto.
pub fn nearby_query(r: &pb::NearbyAvailabilityRequest) -> Result<pe::NearbyQuery, DomainError> {
    let max_stores = match r.max_stores as usize {
        0 => NEARBY_DEFAULT,
        n if n <= pe::engine::alloc::NEARBY_STORES_MAX => n,
        _ => {
            return Err(invalid(
                "max_stores",
                format!(
                    "must be within 0..={}",
                    pe::engine::alloc::NEARBY_STORES_MAX
                ),
            ));
        }
    };
    Ok(pe::NearbyQuery {
        position: position("position", r.position.as_ref())?,
        max_distance_km: distance_km("radius_m", r.radius_m)?,
        lines: cart(&r.lines)?,
        max_stores,
        include_not_accepting: r.include_not_accepting,
    })
}

/// What one nearby store could supply, as the contract shows it.
pub fn store_supply_pb(s: &pe::NearbySupply) -> pb::StoreSupply {
    let (available, complete) = supply_pb(&s.supply);
    pb::StoreSupply {
        store_id: s.store_external_id.clone(),
        distance_m: distance_m(s.distance_km),
        accepting_pickups: s.accepting,
        available,
        complete,
    }
}
