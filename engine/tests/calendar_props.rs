//! Property tests for store calendars: for random calendars (zones with 30-minute and
//! 45-minute offsets and DST shifts included) and random ranges around DST transitions,
//! slots are sorted, disjoint, unique, inside opening hours, exactly the instants of the
//! local slot grid, consistent with `slot_at` and with sub-ranges; and `estimate_ready`
//! picks the first slot with capacity left, checked by brute force.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{Span, Timestamp};
use pickline_engine::calendar::{
    CalendarConfig, DateException, DayHours, LocalInterval, LocalTime, PickupConfig, ReadyQuery,
    SLOT_SCAN_SPAN_MAX_MS, Slot, StaffShift, StoreCalendar, WeeklyHours, WeeklyStaffing,
};
use proptest::prelude::*;

const MINUTE_MS: i64 = 60_000;

/// Zones with DST in either hemisphere, a 30-minute DST shift (Lord Howe), a gap at
/// midnight (Santiago), odd offsets (Kolkata, Chatham, St John's) and none at all, each
/// with local days two days before its 2026 transitions.
const ZONES: &[(&str, &[&str])] = &[
    ("America/New_York", &["2026-03-06", "2026-10-30"]),
    ("Europe/Berlin", &["2026-03-27", "2026-10-23"]),
    ("Australia/Lord_Howe", &["2026-04-03", "2026-10-02"]),
    ("America/Santiago", &["2026-04-03", "2026-09-04"]),
    ("Pacific/Chatham", &["2026-04-03", "2026-09-25"]),
    ("America/St_Johns", &["2026-03-06", "2026-10-30"]),
    ("Asia/Kolkata", &["2026-11-25"]),
    ("UTC", &["2026-11-25"]),
];

/// Slot lengths that divide a day, shorter and longer than a DST shift.
const SLOT_LENS: &[u32] = &[15, 20, 30, 45, 60, 90, 120];

fn zone_and_base_day() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(ZONES)
        .prop_flat_map(|(zone, days)| prop::sample::select(days).prop_map(move |day| (zone, day)))
}

/// Raw interval: start minute and length in minutes, snapped to the slot grid later.
type RawInterval = (u32, u32);

#[derive(Clone, Debug)]
struct RawCalendar {
    zone: &'static str,
    slot_len_min: u32,
    lead_time_min: u32,
    pickups_per_staff_per_slot: u32,
    weekly: [Vec<RawInterval>; 7],
    /// (day offset from the base day, closed?, intervals)
    exceptions: Vec<(i64, bool, Vec<RawInterval>)>,
    /// Per weekday: (start minute, length minutes, staff)
    staffing: [Vec<(u32, u32, u32)>; 7],
    base_day: &'static str,
}

fn raw_intervals() -> impl Strategy<Value = Vec<RawInterval>> {
    // Stores open around 01:00-03:00 local are the ones DST transitions touch, so a good
    // share of days are round-the-clock or overnight.
    prop_oneof![
        3 => prop::collection::vec((0u32..1440, 1u32..=1440), 0..=3),
        1 => Just(vec![(0, 1440)]),
        1 => (1200u32..1440, 240u32..=600).prop_map(|interval| vec![interval]),
        1 => (0u32..180, 60u32..=360).prop_map(|interval| vec![interval]),
    ]
}

fn raw_calendar() -> impl Strategy<Value = RawCalendar> {
    (
        zone_and_base_day(),
        prop::sample::select(SLOT_LENS),
        0u32..=240,
        1u32..=4,
        prop::array::uniform7(raw_intervals()),
        prop::collection::vec((0i64..12, any::<bool>(), raw_intervals()), 0..=3),
        prop::array::uniform7(prop::collection::vec(
            (0u32..1440, 1u32..=1440, 0u32..=4),
            0..=3,
        )),
    )
        .prop_map(
            |(
                (zone, base_day),
                slot_len_min,
                lead_time_min,
                pickups_per_staff_per_slot,
                weekly,
                exceptions,
                staffing,
            )| RawCalendar {
                zone,
                slot_len_min,
                lead_time_min,
                pickups_per_staff_per_slot,
                weekly,
                exceptions,
                staffing,
                base_day,
            },
        )
}

/// Snaps raw intervals to the slot grid and drops those overlapping an earlier one of the
/// same day. With `allow_overnight == false` intervals are cut at midnight.
fn snap(raw: &[RawInterval], slot_len_min: u32, allow_overnight: bool) -> Vec<LocalInterval> {
    let mut spans: Vec<(u32, u32)> = raw
        .iter()
        .map(|&(start, len)| {
            let start = start / slot_len_min * slot_len_min;
            let mut len = (len / slot_len_min).max(1) * slot_len_min;
            if !allow_overnight {
                len = len.min(1440 - start);
            }
            (start, len)
        })
        .collect();
    spans.sort();
    let mut kept: Vec<(u32, u32)> = Vec::new();
    for (start, len) in spans {
        if kept.last().is_none_or(|&(s, l)| s + l <= start) {
            kept.push((start, len));
        }
    }
    kept.into_iter()
        .map(|(start, len)| {
            LocalInterval::new(
                LocalTime::from_minute_of_day(start).unwrap(),
                LocalTime::from_minute_of_day((start + len) % 1440).unwrap(),
            )
        })
        .collect()
}

fn base_date(raw: &RawCalendar) -> Date {
    raw.base_day.parse().unwrap()
}

fn build_config(raw: &RawCalendar, allow_overnight: bool) -> CalendarConfig {
    let base = base_date(raw);
    let mut seen = BTreeSet::new();
    let exceptions = raw
        .exceptions
        .iter()
        .filter(|(offset, _, _)| seen.insert(*offset))
        .map(|(offset, closed, intervals)| DateException {
            date: base.checked_add(Span::new().days(*offset)).unwrap(),
            hours: if *closed {
                DayHours::Closed
            } else {
                DayHours::Open(snap(intervals, raw.slot_len_min, allow_overnight))
            },
        })
        .collect();
    CalendarConfig {
        time_zone: raw.zone.to_owned(),
        weekly_hours: WeeklyHours {
            days: std::array::from_fn(|i| snap(&raw.weekly[i], raw.slot_len_min, allow_overnight)),
        },
        exceptions,
        pickup: PickupConfig {
            slot_len_min: raw.slot_len_min,
            lead_time_min: raw.lead_time_min,
            hold_grace_min: 10,
            pickups_per_staff_per_slot: raw.pickups_per_staff_per_slot,
        },
        staffing: WeeklyStaffing {
            days: std::array::from_fn(|i| {
                raw.staffing[i]
                    .iter()
                    .map(|&(start, len, staff)| StaffShift {
                        start: LocalTime::from_minute_of_day(start).unwrap(),
                        end: LocalTime::from_minute_of_day((start + len) % 1440).unwrap(),
                        staff,
                    })
                    .collect()
            }),
        },
    }
}

/// Builds the calendar; if overnight intervals collide with the next day's hours, the
/// same calendar without overnight intervals must be accepted.
fn build(raw: &RawCalendar) -> (CalendarConfig, StoreCalendar) {
    let cfg = build_config(raw, true);
    match StoreCalendar::new(cfg.clone()) {
        Ok(cal) => (cfg, cal),
        Err(_) => {
            let cfg = build_config(raw, false);
            let cal = StoreCalendar::new(cfg.clone())
                .unwrap_or_else(|err| panic!("same-day, non-overlapping hours refused: {err}"));
            (cfg, cal)
        }
    }
}

fn zone(name: &str) -> TimeZone {
    TimeZoneDatabase::bundled().get(name).unwrap()
}

fn hours_on(cfg: &CalendarConfig, date: Date) -> Vec<LocalInterval> {
    match cfg.exceptions.iter().find(|e| e.date == date) {
        Some(DateException {
            hours: DayHours::Closed,
            ..
        }) => Vec::new(),
        Some(DateException {
            hours: DayHours::Open(intervals),
            ..
        }) => intervals.clone(),
        None => cfg.weekly_hours.on(date.weekday()).to_vec(),
    }
}

fn local_at(date: Date, minute: u32) -> DateTime {
    date.to_datetime(jiff::civil::Time::midnight())
        .checked_add(Span::new().minutes(i64::from(minute)))
        .unwrap()
}

fn ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

/// The oracle, straight from the configuration and jiff: every real instant of every
/// local grid time of every interval touching `from..to`, kept if it lies within the
/// interval's real opening hours and the range, with the interval's real closing instant.
fn oracle_starts(cfg: &CalendarConfig, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
    let tz = zone(&cfg.time_zone);
    let local_date = |at: i64| {
        tz.to_datetime(Timestamp::from_millisecond(at).unwrap())
            .date()
    };
    let slot_len = cfg.pickup.slot_len_min;
    let mut out = Vec::new();
    let mut date = local_date(from_ms).yesterday().unwrap();
    let last = local_date(to_ms - 1);
    while date <= last {
        for interval in hours_on(cfg, date) {
            let open = interval.open.minute_of_day();
            let end = open + interval.len_min();
            let open_ms = ms(tz
                .to_ambiguous_timestamp(local_at(date, open))
                .compatible()
                .unwrap());
            let close_ms = ms(tz
                .to_ambiguous_timestamp(local_at(date, end))
                .compatible()
                .unwrap());
            let mut minute = open;
            while minute < end {
                let local = local_at(date, minute);
                // A gap has no real instant for the grid time; a fold has two.
                let instants: Vec<i64> = match tz.to_ambiguous_timestamp(local).offset() {
                    AmbiguousOffset::Unambiguous { offset } => vec![offset],
                    AmbiguousOffset::Gap { .. } => vec![],
                    AmbiguousOffset::Fold { before, after } => vec![before, after],
                }
                .into_iter()
                .map(|offset| ms(offset.to_timestamp(local).unwrap()))
                .collect();
                for at in instants {
                    if open_ms <= at && at < close_ms && from_ms <= at && at < to_ms {
                        out.push((at, close_ms));
                    }
                }
                minute += slot_len;
            }
        }
        date = date.tomorrow().unwrap();
    }
    out.sort();
    out
}

/// Staff on shift at a local time, straight from the configuration.
fn oracle_staff(cfg: &CalendarConfig, at_ms: i64) -> u32 {
    let tz = zone(&cfg.time_zone);
    let local = tz.to_datetime(Timestamp::from_millisecond(at_ms).unwrap());
    let minute = u32::try_from(local.hour()).unwrap() * 60 + u32::try_from(local.minute()).unwrap();
    let covers = |shift: &StaffShift, m: u32| {
        let start = shift.start.minute_of_day();
        start <= m && m < start + shift.len_min()
    };
    let today: u32 = cfg
        .staffing
        .on(local.date().weekday())
        .iter()
        .filter(|s| covers(s, minute))
        .map(|s| s.staff)
        .sum();
    let yesterday: u32 = cfg
        .staffing
        .on(local.date().weekday().previous())
        .iter()
        .filter(|s| covers(s, minute + 1440))
        .map(|s| s.staff)
        .sum();
    today + yesterday
}

fn range(raw: &RawCalendar, offset_min: i64, jitter_ms: i64, span_min: i64) -> (i64, i64) {
    let tz = zone(raw.zone);
    let base = ms(tz
        .to_ambiguous_timestamp(base_date(raw).to_datetime(jiff::civil::Time::midnight()))
        .compatible()
        .unwrap());
    let from = base + offset_min * MINUTE_MS + jitter_ms;
    (from, from + span_min * MINUTE_MS)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn slots_are_sorted_disjoint_unique_and_inside_opening_hours(
        raw in raw_calendar(),
        offset_min in 0i64..(2 * 1440),
        jitter_ms in 0i64..MINUTE_MS,
        span_min in prop_oneof![1 => 0i64..60, 4 => 1440i64..(4 * 1440)],
    ) {
        let (cfg, cal) = build(&raw);
        let (from, to) = range(&raw, offset_min, jitter_ms, span_min);
        let slots: Vec<Slot> = cal.slots(from, to).collect();
        let slot_len_ms = i64::from(raw.slot_len_min) * MINUTE_MS;

        for slot in &slots {
            prop_assert!(from <= slot.start_ms && slot.start_ms < to, "{slot:?} outside range");
            prop_assert!(slot.start_ms < slot.end_ms, "{slot:?} empty");
            prop_assert!(slot.end_ms - slot.start_ms <= slot_len_ms, "{slot:?} too long");
            prop_assert!(cal.is_open_at(slot.start_ms) && cal.is_open_at(slot.end_ms - 1));
            prop_assert_eq!(
                slot.capacity,
                oracle_staff(&cfg, slot.start_ms) * raw.pickups_per_staff_per_slot
            );
            prop_assert_eq!(cal.slot_at(slot.start_ms), Some(*slot));
        }
        for pair in slots.windows(2) {
            prop_assert!(pair[0].end_ms <= pair[1].start_ms, "overlap {:?}", pair);
            prop_assert!(pair[0].start_ms < pair[1].start_ms, "not strictly sorted {:?}", pair);
        }

        // Exactly the real instants of the local grid, each ending by its closing time.
        let expected = oracle_starts(&cfg, from, to);
        let got: Vec<i64> = slots.iter().map(|s| s.start_ms).collect();
        let want: Vec<i64> = expected.iter().map(|&(start, _)| start).collect();
        prop_assert_eq!(&got, &want);
        for (slot, &(_, close_ms)) in slots.iter().zip(&expected) {
            prop_assert!(slot.end_ms <= close_ms, "{slot:?} ends after closing");
        }

        // Splitting the range changes nothing.
        let mid = from + (to - from) / 2;
        let mut halves: Vec<Slot> = cal.slots(from, mid).collect();
        halves.extend(cal.slots(mid, to));
        prop_assert_eq!(halves, slots);
    }

    #[test]
    fn estimate_ready_is_the_first_slot_with_capacity(
        raw in raw_calendar(),
        offset_min in 0i64..(4 * 1440),
        jitter_ms in 0i64..MINUTE_MS,
        queue_len in 0u32..40,
        staff_now in prop::option::of(0u32..4),
        pick_time_min in 0u32..20,
        seed in any::<u64>(),
        booked_mod in 1u64..6,
    ) {
        let (_, cal) = build(&raw);
        let (now, _) = range(&raw, offset_min, jitter_ms, 0);
        let booked = |start_ms: i64| {
            let mixed = (start_ms as u64 / 60_000).wrapping_mul(seed | 1).rotate_left(17);
            u32::try_from(mixed % booked_mod).unwrap()
        };
        let query = ReadyQuery {
            now_ms: now,
            queue_len,
            staff_on_shift_now: staff_now,
            pick_time_per_order_ms: pick_time_min * 60_000,
        };
        let got = cal.estimate_ready(&query, booked);

        // Brute force over every slot in the horizon.
        let all: Vec<Slot> = cal.slots(now, now + SLOT_SCAN_SPAN_MAX_MS).collect();
        let staff = staff_now.unwrap_or_else(|| cal.staff_on_shift_at(now));
        let start = if staff > 0 {
            Some((now, staff))
        } else {
            all.iter()
                .find(|s| s.capacity > 0)
                .map(|s| (s.start_ms, s.capacity / raw.pickups_per_staff_per_slot))
        };
        let expected = start.and_then(|(work_start, staff)| {
            let work = u64::from(queue_len) * u64::from(pick_time_min) * 60_000;
            let wait = i64::try_from(work.div_ceil(u64::from(staff))).unwrap();
            let ready = work_start + i64::from(raw.lead_time_min) * MINUTE_MS + wait;
            all.iter()
                .find(|s| s.start_ms >= ready && booked(s.start_ms) < s.capacity)
                .map(|s| (ready, *s))
        });
        prop_assert_eq!(got.map(|e| (e.ready_ms, e.slot)), expected);
        if let Some(estimate) = got {
            prop_assert!(estimate.slot.start_ms >= now + i64::from(raw.lead_time_min) * MINUTE_MS);
            prop_assert!(estimate.slot.start_ms < now + SLOT_SCAN_SPAN_MAX_MS);
            prop_assert!(all
                .iter()
                .filter(|s| s.start_ms >= estimate.ready_ms && s.start_ms < estimate.slot.start_ms)
                .all(|s| booked(s.start_ms) >= s.capacity));
        }
    }
}
