//! Store calendars: exact slot instants across DST transitions, dated exceptions,
//! overnight hours, capacity from staffing, validation, pickup-aware expiry and the
//! ready-time estimate on hand-worked examples.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use pickline_engine::calendar::{
    CalendarConfig, CalendarError, DateException, DayHours, DayRef, LocalInterval, LocalTime,
    PickupConfig, ReadyQuery, Slot, StaffShift, StoreCalendar, WeeklyHours, WeeklyStaffing,
};

const MINUTE_MS: i64 = 60_000;

fn utc(text: &str) -> i64 {
    text.parse::<Timestamp>()
        .unwrap_or_else(|err| panic!("bad instant {text:?}: {err}"))
        .as_millisecond()
}

fn iso(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("<{ms}>"))
}

fn iv(open: (u32, u32), close: (u32, u32)) -> LocalInterval {
    LocalInterval::hm(open, close).unwrap()
}

fn shift(start: (u32, u32), end: (u32, u32), staff: u32) -> StaffShift {
    StaffShift::hm(start, end, staff).unwrap()
}

fn date(text: &str) -> Date {
    text.parse().unwrap()
}

/// A configuration with one staff member around the clock and 2 pickups per staff per
/// slot, so every slot has capacity 2 unless a test says otherwise.
fn config(time_zone: &str, hours: WeeklyHours, slot_len_min: u32) -> CalendarConfig {
    CalendarConfig {
        time_zone: time_zone.to_owned(),
        weekly_hours: hours,
        exceptions: Vec::new(),
        pickup: PickupConfig {
            slot_len_min,
            lead_time_min: 30,
            hold_grace_min: 15,
            pickups_per_staff_per_slot: 2,
        },
        staffing: WeeklyStaffing::every_day(&[shift((0, 0), (0, 0), 1)]),
    }
}

fn calendar(time_zone: &str, hours: WeeklyHours, slot_len_min: u32) -> StoreCalendar {
    StoreCalendar::new(config(time_zone, hours, slot_len_min)).unwrap()
}

fn render(slot: &Slot) -> String {
    format!(
        "{}..{} x{}",
        iso(slot.start_ms),
        iso(slot.end_ms),
        slot.capacity
    )
}

/// The one place these tests drive `slots`: compares the slots starting in `from..to`
/// with `expect` (rendered as `start..end xCAPACITY` in UTC), and checks that each one is
/// found again by `slot_at` while an instant one minute later is not a slot id, and that
/// the two halves of the range give the very same slots.
fn check(cal: &StoreCalendar, from: &str, to: &str, expect: &[&str]) {
    let (from_ms, to_ms) = (utc(from), utc(to));
    let slots: Vec<Slot> = cal.slots(from_ms, to_ms).collect();
    let got: Vec<String> = slots.iter().map(render).collect();
    assert_eq!(got, expect, "slots {from}..{to}");
    for slot in &slots {
        assert_eq!(
            cal.slot_at(slot.start_ms),
            Some(*slot),
            "slot_at {}",
            render(slot)
        );
        assert_eq!(cal.slot_at(slot.start_ms + MINUTE_MS), None);
        assert!(cal.is_open_at(slot.start_ms));
        assert!(cal.is_open_at(slot.end_ms - 1));
    }
    let mid_ms = from_ms + (to_ms - from_ms) / 2;
    let mut halves: Vec<Slot> = cal.slots(from_ms, mid_ms).collect();
    halves.extend(cal.slots(mid_ms, to_ms));
    assert_eq!(halves, slots, "halves of {from}..{to}");
}

fn count(cal: &StoreCalendar, from: &str, to: &str) -> usize {
    cal.slots(utc(from), utc(to)).count()
}

/// A store in `time_zone` open on Saturday and Sunday as given.
fn weekend(
    time_zone: &str,
    slot_len_min: u32,
    saturday: ((u32, u32), (u32, u32)),
    sunday: ((u32, u32), (u32, u32)),
) -> StoreCalendar {
    calendar(
        time_zone,
        WeeklyHours::closed()
            .with_day(Weekday::Saturday, &[iv(saturday.0, saturday.1)])
            .with_day(Weekday::Sunday, &[iv(sunday.0, sunday.1)]),
        slot_len_min,
    )
}

// ---- A closing time inside a DST gap, running into the next day's grid ---------------

#[test]
fn an_interval_closing_in_a_gap_keeps_the_next_days_slot_and_is_cut_there() {
    // Chatham skips 02:45-03:45 on Sunday 2026-09-27 (+12:45 -> +13:45). Saturday's
    // 17:15-03:00 closes in the gap, so at 04:00 +13:45 (14:15Z), after Sunday's 03:45
    // opening (14:00Z). The 03:45 slot is on Sunday's grid and must exist; the 02:15 slot
    // before it ends where it starts, 30 real minutes.
    let cal = weekend(
        "Pacific/Chatham",
        45,
        ((17, 15), (3, 0)),
        ((3, 45), (4, 30)),
    );
    check(
        &cal,
        "2026-09-26T12:00:00Z",
        "2026-09-26T16:00:00Z",
        &[
            "2026-09-26T12:00:00Z..2026-09-26T12:45:00Z x2", // 00:45 +12:45
            "2026-09-26T12:45:00Z..2026-09-26T13:30:00Z x2", // 01:30 +12:45
            "2026-09-26T13:30:00Z..2026-09-26T14:00:00Z x2", // 02:15 +12:45, cut
            "2026-09-26T14:00:00Z..2026-09-26T14:45:00Z x2", // Sunday 03:45 +13:45
        ],
    );
}

#[test]
fn a_slot_is_cut_by_the_next_days_slot_even_when_the_range_ends_before_that_day() {
    // Santiago skips Sunday 2026-09-06 00:00-01:00 (-04 -> -03). Saturday's 23:00-00:30
    // closes in the gap, at 01:30 -03 (04:30Z), after Sunday's 01:00 opening (04:00Z).
    // The 23:00 slot lies on Saturday's local date, so the range `slot_at` scans for it
    // ends on Saturday: the scan must look ahead into Sunday to cut its end as the full
    // range does (`check` asks `slot_at` for every slot).
    let cal = weekend(
        "America/Santiago",
        90,
        ((23, 0), (0, 30)),
        ((1, 0), (2, 30)),
    );
    check(
        &cal,
        "2026-09-06T02:00:00Z",
        "2026-09-06T06:00:00Z",
        &[
            "2026-09-06T03:00:00Z..2026-09-06T04:00:00Z x2", // 23:00 -04, cut
            "2026-09-06T04:00:00Z..2026-09-06T05:30:00Z x2", // Sunday 01:00 -03
        ],
    );
}

// ---- America/New_York ----------------------------------------------------------------

#[test]
fn new_york_spring_forward_overnight_skips_the_missing_hour() {
    // Saturday 22:00 EST to Sunday 04:00 EDT is 5 real hours; 02:00 does not exist.
    let cal = calendar(
        "America/New_York",
        WeeklyHours::closed().with_day(Weekday::Saturday, &[iv((22, 0), (4, 0))]),
        60,
    );
    check(
        &cal,
        "2026-03-07T12:00:00Z",
        "2026-03-08T12:00:00Z",
        &[
            "2026-03-08T03:00:00Z..2026-03-08T04:00:00Z x2", // 22:00 EST
            "2026-03-08T04:00:00Z..2026-03-08T05:00:00Z x2", // 23:00 EST
            "2026-03-08T05:00:00Z..2026-03-08T06:00:00Z x2", // 00:00 EST
            "2026-03-08T06:00:00Z..2026-03-08T07:00:00Z x2", // 01:00 EST
            "2026-03-08T07:00:00Z..2026-03-08T08:00:00Z x2", // 03:00 EDT
        ],
    );
    assert!(cal.is_open_at(utc("2026-03-08T07:59:59Z")));
    assert!(!cal.is_open_at(utc("2026-03-08T08:00:00Z")));
    assert!(!cal.is_open_at(utc("2026-03-08T02:59:59Z")));
}

#[test]
fn new_york_spring_forward_shortens_a_slot_that_spans_the_gap() {
    // 90-minute grid from 00:00: the 01:30 slot ends at 03:00 EDT, 30 real minutes later.
    let cal = calendar(
        "America/New_York",
        WeeklyHours::every_day(&[iv((0, 0), (6, 0))]),
        90,
    );
    check(
        &cal,
        "2026-03-08T00:00:00Z",
        "2026-03-08T12:00:00Z",
        &[
            "2026-03-08T05:00:00Z..2026-03-08T06:30:00Z x2", // 00:00 EST
            "2026-03-08T06:30:00Z..2026-03-08T07:00:00Z x2", // 01:30 EST, shortened
            "2026-03-08T07:00:00Z..2026-03-08T08:30:00Z x2", // 03:00 EDT
            "2026-03-08T08:30:00Z..2026-03-08T10:00:00Z x2", // 04:30 EDT
        ],
    );
}

#[test]
fn new_york_fall_back_overnight_has_slots_for_both_repeated_hours() {
    // Saturday 22:00 EDT to Sunday 02:00 EST is 5 real hours; 01:00-02:00 happens twice.
    let cal = calendar(
        "America/New_York",
        WeeklyHours::closed().with_day(Weekday::Saturday, &[iv((22, 0), (2, 0))]),
        30,
    );
    let expect: Vec<String> = (0..10)
        .map(|i| {
            let start = utc("2026-11-01T02:00:00Z") + i * 30 * MINUTE_MS;
            format!("{}..{} x2", iso(start), iso(start + 30 * MINUTE_MS))
        })
        .collect();
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    check(
        &cal,
        "2026-10-31T12:00:00Z",
        "2026-11-01T12:00:00Z",
        &expect,
    );
}

#[test]
fn new_york_fall_back_long_slots_never_overlap_or_repeat() {
    // 90-minute grid: 01:30 exists twice; the first occurrence is cut where the second
    // starts.
    let cal = calendar(
        "America/New_York",
        WeeklyHours::every_day(&[iv((0, 0), (3, 0))]),
        90,
    );
    check(
        &cal,
        "2026-11-01T00:00:00Z",
        "2026-11-01T12:00:00Z",
        &[
            "2026-11-01T04:00:00Z..2026-11-01T05:30:00Z x2", // 00:00 EDT
            "2026-11-01T05:30:00Z..2026-11-01T06:30:00Z x2", // 01:30 EDT
            "2026-11-01T06:30:00Z..2026-11-01T08:00:00Z x2", // 01:30 EST
        ],
    );
}

#[test]
fn new_york_slots_per_day_follow_the_real_length_of_the_day() {
    let cal = calendar(
        "America/New_York",
        WeeklyHours::every_day(&[iv((0, 0), (0, 0))]),
        60,
    );
    // Local midnights in UTC.
    assert_eq!(
        count(&cal, "2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z"),
        24
    );
    assert_eq!(
        count(&cal, "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
        23
    );
    assert_eq!(
        count(&cal, "2026-03-09T04:00:00Z", "2026-03-10T04:00:00Z"),
        24
    );
    assert_eq!(
        count(&cal, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
        25
    );
    assert_eq!(
        count(&cal, "2026-11-02T05:00:00Z", "2026-11-03T05:00:00Z"),
        24
    );
    // The skipped 02:00 is not a slot id; both 01:00s in November are.
    assert_eq!(
        cal.slot_at(utc("2026-03-08T07:00:00Z")).map(|s| s.end_ms),
        Some(utc("2026-03-08T08:00:00Z"))
    );
    assert!(cal.slot_at(utc("2026-11-01T05:00:00Z")).is_some());
    assert!(cal.slot_at(utc("2026-11-01T06:00:00Z")).is_some());
}

#[test]
fn new_york_day_store_keeps_local_hours_across_the_change() {
    let cal = calendar(
        "America/New_York",
        WeeklyHours::every_day(&[iv((9, 0), (11, 0))]),
        60,
    );
    check(
        &cal,
        "2026-03-07T00:00:00Z",
        "2026-03-09T00:00:00Z",
        &[
            "2026-03-07T14:00:00Z..2026-03-07T15:00:00Z x2",
            "2026-03-07T15:00:00Z..2026-03-07T16:00:00Z x2",
            "2026-03-08T13:00:00Z..2026-03-08T14:00:00Z x2",
            "2026-03-08T14:00:00Z..2026-03-08T15:00:00Z x2",
        ],
    );
}

// ---- Europe/Berlin -------------------------------------------------------------------

#[test]
fn berlin_spring_forward_overnight() {
    // 02:00 CET jumps to 03:00 CEST at 01:00Z on 2026-03-29.
    let cal = calendar(
        "Europe/Berlin",
        WeeklyHours::closed().with_day(Weekday::Saturday, &[iv((22, 0), (4, 0))]),
        60,
    );
    check(
        &cal,
        "2026-03-28T00:00:00Z",
        "2026-03-30T00:00:00Z",
        &[
            "2026-03-28T21:00:00Z..2026-03-28T22:00:00Z x2", // 22:00 CET
            "2026-03-28T22:00:00Z..2026-03-28T23:00:00Z x2", // 23:00 CET
            "2026-03-28T23:00:00Z..2026-03-29T00:00:00Z x2", // 00:00 CET
            "2026-03-29T00:00:00Z..2026-03-29T01:00:00Z x2", // 01:00 CET
            "2026-03-29T01:00:00Z..2026-03-29T02:00:00Z x2", // 03:00 CEST
        ],
    );
}

#[test]
fn berlin_fall_back_overnight() {
    // 03:00 CEST falls back to 02:00 CET at 01:00Z on 2026-10-25: 02:00 happens twice.
    let cal = calendar(
        "Europe/Berlin",
        WeeklyHours::closed().with_day(Weekday::Saturday, &[iv((22, 0), (4, 0))]),
        60,
    );
    check(
        &cal,
        "2026-10-24T00:00:00Z",
        "2026-10-26T00:00:00Z",
        &[
            "2026-10-24T20:00:00Z..2026-10-24T21:00:00Z x2", // 22:00 CEST
            "2026-10-24T21:00:00Z..2026-10-24T22:00:00Z x2", // 23:00 CEST
            "2026-10-24T22:00:00Z..2026-10-24T23:00:00Z x2", // 00:00 CEST
            "2026-10-24T23:00:00Z..2026-10-25T00:00:00Z x2", // 01:00 CEST
            "2026-10-25T00:00:00Z..2026-10-25T01:00:00Z x2", // 02:00 CEST
            "2026-10-25T01:00:00Z..2026-10-25T02:00:00Z x2", // 02:00 CET
            "2026-10-25T02:00:00Z..2026-10-25T03:00:00Z x2", // 03:00 CET
        ],
    );
}

#[test]
fn berlin_day_store_counts_and_instants_around_both_changes() {
    let cal = calendar(
        "Europe/Berlin",
        WeeklyHours::every_day(&[iv((9, 0), (18, 0))]),
        30,
    );
    for (day_from, day_to, first_start) in [
        (
            "2026-03-28T00:00:00Z",
            "2026-03-29T00:00:00Z",
            "2026-03-28T08:00:00Z",
        ),
        (
            "2026-03-29T00:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-03-29T07:00:00Z",
        ),
        (
            "2026-10-24T00:00:00Z",
            "2026-10-25T00:00:00Z",
            "2026-10-24T07:00:00Z",
        ),
        (
            "2026-10-25T00:00:00Z",
            "2026-10-26T00:00:00Z",
            "2026-10-25T08:00:00Z",
        ),
    ] {
        let slots: Vec<Slot> = cal.slots(utc(day_from), utc(day_to)).collect();
        assert_eq!(slots.len(), 18, "{day_from}");
        assert_eq!(iso(slots[0].start_ms), first_start);
        assert_eq!(slots[17].end_ms - slots[0].start_ms, 9 * 60 * MINUTE_MS);
    }
    let full_day = cal
        .slots(utc("2026-03-29T00:00:00Z"), utc("2026-03-30T00:00:00Z"))
        .count();
    assert_eq!(full_day, 18);
}

// ---- Exceptions and overnight hours ----------------------------------------------------

fn holiday_calendar() -> StoreCalendar {
    let mut cfg = config(
        "America/New_York",
        WeeklyHours::every_day(&[iv((9, 0), (17, 0))]),
        60,
    );
    cfg.exceptions = vec![
        DateException {
            date: date("2026-11-26"),
            hours: DayHours::Closed,
        },
        DateException {
            date: date("2026-11-27"),
            hours: DayHours::Open(vec![iv((6, 0), (22, 0))]),
        },
        DateException {
            date: date("2026-12-24"),
            hours: DayHours::Open(vec![iv((9, 0), (13, 0))]),
        },
    ];
    StoreCalendar::new(cfg).unwrap()
}

#[test]
fn closed_day_and_short_days_replace_weekly_hours() {
    let cal = holiday_calendar();
    // Local midnights, EST = UTC-5.
    assert_eq!(
        count(&cal, "2026-11-25T05:00:00Z", "2026-11-26T05:00:00Z"),
        8
    );
    assert_eq!(
        count(&cal, "2026-11-26T05:00:00Z", "2026-11-27T05:00:00Z"),
        0
    );
    assert_eq!(
        count(&cal, "2026-11-27T05:00:00Z", "2026-11-28T05:00:00Z"),
        16
    );
    assert_eq!(
        count(&cal, "2026-12-24T05:00:00Z", "2026-12-25T05:00:00Z"),
        4
    );
    assert_eq!(
        count(&cal, "2026-12-31T05:00:00Z", "2027-01-01T05:00:00Z"),
        8
    );
    check(
        &cal,
        "2026-11-27T05:00:00Z",
        "2026-11-27T13:00:00Z",
        &[
            "2026-11-27T11:00:00Z..2026-11-27T12:00:00Z x2",
            "2026-11-27T12:00:00Z..2026-11-27T13:00:00Z x2",
        ],
    );
    assert!(!cal.is_open_at(utc("2026-11-26T15:00:00Z")));
    assert!(cal.is_open_at(utc("2026-11-25T15:00:00Z")));
    assert!(cal.is_open_at(utc("2026-12-24T17:59:00Z")));
    assert!(!cal.is_open_at(utc("2026-12-24T18:00:00Z")));
    assert_eq!(cal.slot_at(utc("2026-11-26T15:00:00Z")), None);
}

#[test]
fn a_closed_exception_keeps_the_previous_nights_tail() {
    let mut cfg = config(
        "America/New_York",
        WeeklyHours::every_day(&[iv((22, 0), (2, 0))]),
        60,
    );
    cfg.exceptions = vec![DateException {
        date: date("2026-11-24"), // a Tuesday
        hours: DayHours::Closed,
    }];
    let cal = StoreCalendar::new(cfg).unwrap();
    // Monday night runs into Tuesday 02:00; Tuesday night does not open.
    check(
        &cal,
        "2026-11-24T05:00:00Z",
        "2026-11-25T12:00:00Z",
        &[
            "2026-11-24T05:00:00Z..2026-11-24T06:00:00Z x2",
            "2026-11-24T06:00:00Z..2026-11-24T07:00:00Z x2",
        ],
    );
    assert!(!cal.is_open_at(utc("2026-11-25T04:00:00Z")));
}

#[test]
fn overnight_slots_are_found_from_a_range_starting_after_midnight() {
    let cal = calendar(
        "Europe/Berlin",
        WeeklyHours::every_day(&[iv((22, 0), (2, 0))]),
        60,
    );
    // 00:30 CET on Wed 2026-11-25: the slot opened Tuesday at 01:00 is next.
    let first = cal
        .slots(utc("2026-11-24T23:30:00Z"), utc("2026-11-25T12:00:00Z"))
        .next();
    assert_eq!(
        first.map(|s| render(&s)),
        Some("2026-11-25T00:00:00Z..2026-11-25T01:00:00Z x2".to_owned())
    );
    assert!(cal.is_open_at(utc("2026-11-25T00:59:59Z")));
    assert!(!cal.is_open_at(utc("2026-11-25T01:00:00Z")));
}

#[test]
fn scan_is_cut_at_fourteen_days() {
    let cal = calendar(
        "Europe/Berlin",
        WeeklyHours::every_day(&[iv((0, 0), (0, 0))]),
        60,
    );
    let from = utc("2026-11-26T00:00:00Z");
    let slots: Vec<Slot> = cal.slots(from, from + 100 * 24 * 60 * MINUTE_MS).collect();
    assert_eq!(slots.len(), 14 * 24);
    assert!(
        slots
            .iter()
            .all(|s| s.start_ms < from + pickline_engine::calendar::SLOT_SCAN_SPAN_MAX_MS)
    );
    assert_eq!(cal.slots(from, from).count(), 0);
    assert_eq!(cal.slots(from, from - 1).count(), 0);
    assert_eq!(cal.slots(i64::MAX - 10, i64::MAX).count(), 0);
    assert_eq!(cal.slots(i64::MIN, i64::MIN + 10).count(), 0);
    assert_eq!(cal.slot_at(i64::MAX), None);
    assert!(!cal.is_open_at(i64::MIN));
}

// ---- Capacity from staffing --------------------------------------------------------------

#[test]
fn capacity_is_staff_on_shift_at_slot_start_times_pickups_per_staff() {
    let mut cfg = config(
        "America/New_York",
        WeeklyHours::every_day(&[iv((8, 0), (21, 0)), iv((22, 0), (2, 0))]),
        60,
    );
    cfg.pickup.pickups_per_staff_per_slot = 4;
    cfg.staffing = WeeklyStaffing::every_day(&[
        shift((8, 0), (12, 0), 2),
        shift((11, 0), (20, 0), 3),
        shift((22, 0), (2, 0), 1),
    ])
    .with_day(Weekday::Sunday, &[shift((10, 0), (14, 0), 1)]);
    let cal = StoreCalendar::new(cfg).unwrap();
    let capacity = |at: &str| cal.slot_at(utc(at)).map(|s| s.capacity);
    // Wednesday 2026-11-25 (EST = UTC-5).
    assert_eq!(capacity("2026-11-25T13:00:00Z"), Some(8)); // 08:00, 2 staff
    assert_eq!(capacity("2026-11-25T16:00:00Z"), Some(20)); // 11:00, 2 + 3 staff
    assert_eq!(capacity("2026-11-25T17:00:00Z"), Some(12)); // 12:00, 3 staff
    assert_eq!(capacity("2026-11-26T01:00:00Z"), Some(0)); // 20:00, nobody
    assert_eq!(capacity("2026-11-26T03:00:00Z"), Some(4)); // 22:00, night shift
    assert_eq!(capacity("2026-11-26T06:00:00Z"), Some(4)); // 01:00 Thu, Wednesday's night shift
    // Sunday 2026-11-29: its own roster; Saturday's night shift still covers 01:00.
    assert_eq!(capacity("2026-11-29T06:00:00Z"), Some(4)); // 01:00
    assert_eq!(capacity("2026-11-29T13:00:00Z"), Some(0)); // 08:00
    assert_eq!(capacity("2026-11-29T15:00:00Z"), Some(4)); // 10:00, 1 staff
    // Sunday night has no night shift, so Monday 01:00 has no capacity.
    assert_eq!(capacity("2026-11-30T06:00:00Z"), Some(0));
    assert_eq!(cal.staff_on_shift_at(utc("2026-11-25T16:30:00Z")), 5);
    assert_eq!(cal.staff_on_shift_at(utc("2026-11-25T12:59:59Z")), 0);
}

#[test]
fn slot_expiry_is_slot_end_plus_grace() {
    let cal = holiday_calendar();
    let slot = cal.slot_at(utc("2026-11-25T14:00:00Z")).unwrap();
    assert_eq!(slot.end_ms, utc("2026-11-25T15:00:00Z"));
    assert_eq!(cal.slot_expiry_ms(&slot), utc("2026-11-25T15:15:00Z"));
    let far = Slot {
        start_ms: i64::MAX - 1,
        end_ms: i64::MAX,
        capacity: 1,
    };
    assert_eq!(cal.slot_expiry_ms(&far), i64::MAX);
}

// ---- Ready-time estimate ------------------------------------------------------------------

fn estimate_calendar() -> StoreCalendar {
    let mut cfg = config(
        "America/New_York",
        WeeklyHours::every_day(&[iv((9, 0), (17, 0))]),
        30,
    );
    cfg.pickup.pickups_per_staff_per_slot = 1;
    cfg.staffing = WeeklyStaffing::every_day(&[shift((9, 0), (17, 0), 2)]);
    StoreCalendar::new(cfg).unwrap()
}

fn query(now: &str, queue_len: u32, staff: Option<u32>) -> ReadyQuery {
    ReadyQuery {
        now_ms: utc(now),
        queue_len,
        staff_on_shift_now: staff,
        pick_time_per_order_ms: 10 * 60_000,
    }
}

#[test]
fn estimate_rounds_up_to_the_next_slot_start() {
    let cal = estimate_calendar();
    // 10:07 + 30 min lead + 4 orders x 10 min / 2 staff = 10:57 -> 11:00 slot.
    let est = cal
        .estimate_ready(&query("2026-11-25T15:07:00Z", 4, None), |_| 0)
        .unwrap();
    assert_eq!(iso(est.ready_ms), "2026-11-25T15:57:00Z");
    assert_eq!(iso(est.slot.start_ms), "2026-11-25T16:00:00Z");
    // Four staff checked in: 10:07 + 30 + 10 = 10:47 -> 11:00 still.
    let est = cal
        .estimate_ready(&query("2026-11-25T15:07:00Z", 4, Some(4)), |_| 0)
        .unwrap();
    assert_eq!(iso(est.ready_ms), "2026-11-25T15:47:00Z");
    // Ready exactly at a slot start takes that slot.
    let est = cal
        .estimate_ready(&query("2026-11-25T15:00:00Z", 0, None), |_| 0)
        .unwrap();
    assert_eq!(iso(est.slot.start_ms), "2026-11-25T15:30:00Z");
    // An odd queue rounds the wait up: 3 x 10 / 2 = 15 min.
    let est = cal
        .estimate_ready(&query("2026-11-25T15:00:00Z", 3, None), |_| 0)
        .unwrap();
    assert_eq!(iso(est.ready_ms), "2026-11-25T15:45:00Z");
}

#[test]
fn estimate_skips_full_slots_and_closed_days() {
    let cal = estimate_calendar();
    let full_until = utc("2026-11-25T17:00:00Z");
    // Capacity 2 per slot; slots before 12:00 are full.
    let booked = |start_ms: i64| if start_ms < full_until { 2 } else { 1 };
    let est = cal
        .estimate_ready(&query("2026-11-25T15:07:00Z", 4, None), booked)
        .unwrap();
    assert_eq!(iso(est.slot.start_ms), "2026-11-25T17:00:00Z");
    // Everything booked: nothing within the horizon.
    assert_eq!(
        cal.estimate_ready(&query("2026-11-25T15:07:00Z", 4, None), |_| 2),
        None
    );
    // Thanksgiving is closed: a query on Wednesday evening lands on Friday 09:00.
    let cal = {
        let mut cfg = estimate_calendar().config().clone();
        cfg.exceptions = vec![DateException {
            date: date("2026-11-26"),
            hours: DayHours::Closed,
        }];
        StoreCalendar::new(cfg).unwrap()
    };
    let est = cal
        .estimate_ready(&query("2026-11-25T21:50:00Z", 0, None), |_| 0)
        .unwrap();
    assert_eq!(iso(est.slot.start_ms), "2026-11-27T14:00:00Z");
}

#[test]
fn estimate_at_night_starts_picking_when_staff_arrive() {
    let cal = estimate_calendar();
    // 23:00 with 4 queued: picking starts 09:00, ready 09:00 + 30 + 20 = 09:50 -> 10:00.
    let est = cal
        .estimate_ready(&query("2026-11-26T04:00:00Z", 4, None), |_| 0)
        .unwrap();
    assert_eq!(iso(est.ready_ms), "2026-11-26T14:50:00Z");
    assert_eq!(iso(est.slot.start_ms), "2026-11-26T15:00:00Z");
    // The caller saying nobody is picking behaves the same during the day.
    let est = cal
        .estimate_ready(&query("2026-11-25T15:07:00Z", 0, Some(0)), |_| 0)
        .unwrap();
    assert_eq!(iso(est.ready_ms), "2026-11-25T16:00:00Z");
}

#[test]
fn estimate_gives_up_beyond_the_horizon_and_on_extreme_input() {
    let cal = estimate_calendar();
    let never = calendar("Europe/Berlin", WeeklyHours::closed(), 30);
    assert_eq!(
        never.estimate_ready(&query("2026-11-25T15:07:00Z", 0, None), |_| 0),
        None
    );
    let huge = ReadyQuery {
        queue_len: u32::MAX,
        pick_time_per_order_ms: u32::MAX,
        ..query("2026-11-25T15:07:00Z", 0, Some(1))
    };
    assert_eq!(cal.estimate_ready(&huge, |_| 0), None);
    let late = ReadyQuery {
        now_ms: i64::MAX,
        ..query("2026-11-25T15:07:00Z", 0, None)
    };
    assert_eq!(cal.estimate_ready(&late, |_| 0), None);
}

// ---- Validation --------------------------------------------------------------------------

fn rejects(cfg: CalendarConfig) -> CalendarError {
    StoreCalendar::new(cfg).expect_err("configuration should be refused")
}

fn day_store() -> CalendarConfig {
    config(
        "Europe/Berlin",
        WeeklyHours::every_day(&[iv((9, 0), (17, 0))]),
        30,
    )
}

#[test]
fn validation_names_the_problem() {
    let mut cfg = day_store();
    cfg.time_zone = "Mars/Olympus_Mons".to_owned();
    assert!(matches!(
        rejects(cfg),
        CalendarError::UnknownTimeZone { .. }
    ));
    let mut cfg = day_store();
    cfg.time_zone = "Etc/Unknown".to_owned();
    assert!(matches!(
        rejects(cfg),
        CalendarError::UnknownTimeZone { .. }
    ));
    let mut cfg = day_store();
    cfg.time_zone = "x".repeat(100);
    assert!(matches!(
        rejects(cfg),
        CalendarError::TimeZoneNameTooLong { .. }
    ));

    for bad in [0, 4, 241] {
        let mut cfg = day_store();
        cfg.pickup.slot_len_min = bad;
        assert!(
            matches!(rejects(cfg), CalendarError::SlotLenOutOfRange { .. }),
            "{bad}"
        );
    }
    let mut cfg = day_store();
    cfg.pickup.slot_len_min = 7;
    assert_eq!(
        rejects(cfg),
        CalendarError::SlotLenNotDividingDay { slot_len_min: 7 }
    );
    let mut cfg = day_store();
    cfg.pickup.slot_len_min = 45; // 8 hours is not a whole number of 45-minute slots
    assert!(matches!(
        rejects(cfg),
        CalendarError::IntervalNotMultipleOfSlot {
            len_min: 480,
            slot_len_min: 45,
            ..
        }
    ));

    let mut cfg = day_store();
    cfg.pickup.lead_time_min = 7 * 24 * 60 + 1;
    assert!(matches!(
        rejects(cfg),
        CalendarError::LeadTimeTooLong { .. }
    ));
    let mut cfg = day_store();
    cfg.pickup.hold_grace_min = 24 * 60 + 1;
    assert!(matches!(
        rejects(cfg),
        CalendarError::HoldGraceTooLong { .. }
    ));
    for bad in [0, 101] {
        let mut cfg = day_store();
        cfg.pickup.pickups_per_staff_per_slot = bad;
        assert!(matches!(
            rejects(cfg),
            CalendarError::PickupsPerStaffOutOfRange { .. }
        ));
    }

    let mut cfg = day_store();
    cfg.weekly_hours = WeeklyHours::every_day(&[
        iv((6, 0), (7, 0)),
        iv((8, 0), (9, 0)),
        iv((10, 0), (11, 0)),
        iv((12, 0), (13, 0)),
        iv((14, 0), (15, 0)),
    ]);
    assert!(matches!(
        rejects(cfg),
        CalendarError::TooManyIntervals { count: 5, .. }
    ));
    let mut cfg = day_store();
    cfg.weekly_hours = WeeklyHours::every_day(&[iv((13, 0), (18, 0)), iv((9, 0), (13, 30))]);
    assert!(matches!(
        rejects(cfg),
        CalendarError::OverlappingIntervals { .. }
    ));
    // Monday's overnight interval runs into Tuesday's opening.
    let mut cfg = day_store();
    cfg.weekly_hours = cfg
        .weekly_hours
        .with_day(Weekday::Monday, &[iv((22, 0), (10, 0))]);
    assert_eq!(
        rejects(cfg),
        CalendarError::OverlappingIntervals {
            day: DayRef::Weekly(Weekday::Tuesday)
        }
    );
    // A dated exception that opens before the previous night closes.
    let mut cfg = day_store();
    cfg.weekly_hours = WeeklyHours::every_day(&[iv((20, 0), (2, 0))]);
    cfg.exceptions = vec![DateException {
        date: date("2026-12-24"),
        hours: DayHours::Open(vec![iv((1, 0), (5, 0))]),
    }];
    assert_eq!(
        rejects(cfg),
        CalendarError::OverlappingIntervals {
            day: DayRef::Dated(date("2026-12-24"))
        }
    );
    // An exception whose overnight interval runs into the next day's hours.
    let mut cfg = day_store();
    cfg.exceptions = vec![DateException {
        date: date("2026-12-31"),
        hours: DayHours::Open(vec![iv((20, 0), (10, 0))]),
    }];
    assert_eq!(
        rejects(cfg),
        CalendarError::OverlappingIntervals {
            day: DayRef::Dated(date("2027-01-01"))
        }
    );
    let mut cfg = day_store();
    let christmas = DateException {
        date: date("2026-12-25"),
        hours: DayHours::Closed,
    };
    cfg.exceptions = vec![christmas.clone(), christmas];
    assert!(matches!(
        rejects(cfg),
        CalendarError::DuplicateException { .. }
    ));
    let mut cfg = day_store();
    cfg.exceptions = (0..733)
        .map(|i| DateException {
            date: date("2026-01-01")
                .checked_add(jiff::Span::new().days(i))
                .unwrap(),
            hours: DayHours::Closed,
        })
        .collect();
    assert!(matches!(
        rejects(cfg),
        CalendarError::TooManyExceptions { count: 733, .. }
    ));

    let mut cfg = day_store();
    cfg.staffing = WeeklyStaffing::every_day(&[shift((9, 0), (10, 0), 1); 17]);
    assert!(matches!(
        rejects(cfg),
        CalendarError::TooManyShifts { count: 17, .. }
    ));
    let mut cfg = day_store();
    cfg.staffing = WeeklyStaffing::every_day(&[shift((9, 0), (10, 0), 1_001)]);
    assert!(matches!(
        rejects(cfg),
        CalendarError::TooManyStaff { staff: 1_001, .. }
    ));

    assert!(LocalTime::new(24, 0).is_err());
    assert!(LocalTime::new(23, 60).is_err());
    assert_eq!(
        LocalTime::new(23, 59).map(LocalTime::minute_of_day),
        Ok(1439)
    );
    assert!(LocalTime::from_minute_of_day(1440).is_err());
    // The refused configurations above all have readable messages.
    let message = rejects({
        let mut cfg = day_store();
        cfg.pickup.slot_len_min = 45;
        cfg
    })
    .to_string();
    assert!(message.contains("09:00-17:00"), "{message}");
}

#[test]
fn twenty_four_hour_and_adjacent_intervals_are_accepted() {
    // Open around the clock, and back-to-back intervals that touch at midnight.
    StoreCalendar::new(config(
        "Asia/Kolkata",
        WeeklyHours::every_day(&[iv((0, 0), (0, 0))]),
        30,
    ))
    .unwrap();
    let cal = StoreCalendar::new(config(
        "Asia/Kolkata",
        WeeklyHours::every_day(&[iv((6, 0), (12, 0)), iv((18, 0), (6, 0))]),
        30,
    ))
    .unwrap();
    // Kolkata is UTC+05:30 with no DST: 06:00 local is 00:30Z.
    let day: Vec<Slot> = cal
        .slots(utc("2026-11-25T18:30:00Z"), utc("2026-11-26T18:30:00Z"))
        .collect();
    assert_eq!(day.len(), 12 + 24);
    assert!(day.windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
    assert_eq!(iso(day[0].start_ms), "2026-11-25T18:30:00Z"); // 00:00 Thu, Wed night
}
