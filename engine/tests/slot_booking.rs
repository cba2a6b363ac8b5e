//! Slot-bound holds: all-or-nothing with the slot (SPEC invariant 2), capacity returned on
//! release and expiry (a model-based property test), no overbooking under 16 threads, and
//! pickup-aware expiry on DST days in Europe/Berlin.

use std::sync::{Arc, Barrier};

use jiff::civil::date;
use jiff::tz::TimeZone;
use pickline_engine::calendar::{
    CalendarConfig, LocalInterval, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
};
use pickline_engine::{
    Engine, EngineConfig, ExtendOutcome, HoldOutcome, HoldRejection, HoldRequest, LineRequest,
    MemoryLog, PosDelta, PosDeltaKind, ReleaseOutcome, SlotProblem, StoreDef, Timestamp,
};
use proptest::prelude::*;

const STORE: &str = "berlin";
const SKU: &str = "SKU-1";
const LEAD_MIN: u32 = 30;
const GRACE_MIN: u32 = 15;
const MINUTE_MS: i64 = 60_000;

fn calendar(staff: u32) -> CalendarConfig {
    CalendarConfig {
        time_zone: "Europe/Berlin".into(),
        weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((8, 0), (20, 0)).unwrap()]),
        exceptions: Vec::new(),
        pickup: PickupConfig {
            slot_len_min: 30,
            lead_time_min: LEAD_MIN,
            hold_grace_min: GRACE_MIN,
            pickups_per_staff_per_slot: 1,
        },
        staffing: WeeklyStaffing::every_day(&[StaffShift::hm((8, 0), (20, 0), staff).unwrap()]),
    }
}

/// Unix ms of a Berlin wall-clock time (the earlier instant if ambiguous).
fn berlin_ms(y: i16, m: i8, d: i8, h: i8, min: i8) -> i64 {
    TimeZone::get("Europe/Berlin")
        .unwrap()
        .to_ambiguous_timestamp(date(y, m, d).at(h, min, 0, 0))
        .compatible()
        .unwrap()
        .as_millisecond()
}

fn engine_with(stock: i64, staff: u32, now: Timestamp) -> Engine {
    logged_engine_with(stock, staff, now).1
}

/// [`engine_with`], and the log it writes to.
fn logged_engine_with(stock: i64, staff: u32, now: Timestamp) -> (Arc<MemoryLog>, Engine) {
    let log = Arc::new(MemoryLog::new());
    let engine = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    engine
        .define_store(StoreDef::new(STORE, 52.52, 13.40, "Europe/Berlin"), now)
        .unwrap();
    engine.set_calendar(STORE, calendar(staff), now).unwrap();
    engine
        .apply_delta(
            &PosDelta {
                store: STORE.into(),
                sku: SKU.into(),
                pos_event_id: "init".into(),
                kind: PosDeltaKind::Receive,
                qty: stock,
                order_ref: None,
                pos_time: now,
            },
            now,
        )
        .unwrap();
    (log, engine)
}

fn slot_hold(qty: u32, slot: i64) -> HoldRequest {
    HoldRequest::new(STORE, vec![LineRequest::new(SKU, qty)]).with_slot(slot)
}

#[test]
fn slot_hold_expires_at_slot_end_plus_grace_across_dst() {
    // Fall back: 2026-10-25 03:00 CEST -> 02:00 CET. Booked the evening before (CEST),
    // the slot 10:00-10:30 on the DST day is in CET (UTC+1).
    let now = Timestamp(berlin_ms(2026, 10, 24, 18, 0));
    let engine = engine_with(10, 2, now);
    let slot = berlin_ms(2026, 10, 25, 10, 0);
    assert_eq!(slot, 1_792_918_800_000, "10:00 CET is 09:00 UTC");
    let g = engine.hold(&slot_hold(1, slot), now).unwrap();
    let grant = g.granted().expect("granted").clone();
    // 10:30 + 15 min grace = 10:45 CET = 09:45 UTC.
    assert_eq!(grant.expires_at, Timestamp(1_792_921_500_000));
    assert_eq!(engine.slot_booked(STORE, slot).unwrap(), 1);
    // Not expired a millisecond before, expired at the instant; capacity returns.
    assert!(
        engine
            .expire(grant.expires_at.add_ms(-1), 100)
            .unwrap()
            .is_empty()
    );
    assert_eq!(engine.expire(grant.expires_at, 100).unwrap().len(), 1);
    assert_eq!(engine.slot_booked(STORE, slot).unwrap(), 0);
    engine.check_conservation().unwrap();

    // Spring forward: 2026-03-29 02:00 CET -> 03:00 CEST. Slot 10:00 CEST = 08:00 UTC.
    let now = Timestamp(berlin_ms(2026, 3, 28, 18, 0));
    let engine = engine_with(10, 2, now);
    let slot = berlin_ms(2026, 3, 29, 10, 0);
    assert_eq!(slot, 1_774_771_200_000);
    let g = engine.hold(&slot_hold(1, slot), now).unwrap();
    assert_eq!(
        g.granted().expect("granted").expires_at,
        Timestamp(1_774_771_200_000 + 45 * MINUTE_MS)
    );
}

/// hold.proto `ExtendRequest.ttl_ms`: slot holds cannot be extended past their slot. Up
/// to the slot's expiry they can, and a refusal logs nothing (replay sees only outcomes).
#[test]
fn slot_hold_extends_within_its_slot_and_never_past_it() {
    let now = Timestamp(berlin_ms(2026, 10, 24, 18, 0));
    let log = Arc::new(MemoryLog::new());
    let engine = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    engine
        .define_store(StoreDef::new(STORE, 52.52, 13.40, "Europe/Berlin"), now)
        .unwrap();
    engine.set_calendar(STORE, calendar(2), now).unwrap();
    let slot = berlin_ms(2026, 10, 25, 10, 0);
    engine
        .apply_delta(
            &PosDelta {
                store: STORE.into(),
                sku: SKU.into(),
                pos_event_id: "init".into(),
                kind: PosDeltaKind::Receive,
                qty: 1,
                order_ref: None,
                pos_time: now,
            },
            now,
        )
        .unwrap();
    let grant = engine.hold(&slot_hold(1, slot), now).unwrap();
    let grant = grant.granted().expect("granted").clone();
    let slot_expires_at = grant.expires_at;
    let later = now.add_ms(60 * MINUTE_MS);
    let to_slot_end = slot_expires_at.as_ms() - later.as_ms();

    let records = log.records().len();
    for ttl_ms in [to_slot_end + 1, 23 * 60 * MINUTE_MS] {
        assert_eq!(
            engine.extend(grant.hold, Some(ttl_ms), later).unwrap(),
            ExtendOutcome::PastSlot {
                slot_start_ms: slot,
                slot_expires_at,
            },
            "ttl {ttl_ms} ms"
        );
    }
    assert_eq!(log.records().len(), records, "a refusal logs nothing");
    assert_eq!(
        engine.hold_info(grant.hold).unwrap().expires_at,
        slot_expires_at,
        "a refusal changes nothing"
    );

    // Within the slot: shorter, then back to exactly the slot's expiry.
    assert_eq!(
        engine.extend(grant.hold, Some(MINUTE_MS), later).unwrap(),
        ExtendOutcome::Extended {
            expires_at: later.add_ms(MINUTE_MS)
        }
    );
    assert_eq!(
        engine.extend(grant.hold, Some(to_slot_end), later).unwrap(),
        ExtendOutcome::Extended {
            expires_at: slot_expires_at
        }
    );

    // A replayed engine has the same expiry and refuses the same way.
    let fresh = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        fresh.replay(&r.record).unwrap();
    }
    assert_eq!(
        fresh.hold_info(grant.hold).unwrap().expires_at,
        slot_expires_at
    );
    assert!(matches!(
        fresh
            .extend(grant.hold, Some(to_slot_end + 1), later)
            .unwrap(),
        ExtendOutcome::PastSlot { .. }
    ));
}

#[test]
fn slot_problems_reserve_nothing() {
    let now = Timestamp(berlin_ms(2026, 11, 26, 9, 0));
    let engine = engine_with(10, 1, now);
    let check = |req: &HoldRequest, problem: SlotProblem| {
        let before = engine.availability(STORE, SKU).unwrap().atp();
        let out = engine.hold(req, now).unwrap();
        match out {
            HoldOutcome::Rejected(HoldRejection::SlotUnavailable { problem: p, .. }) => {
                assert_eq!(p, problem)
            }
            other => panic!("expected {problem:?}, got {other:?}"),
        }
        assert_eq!(engine.availability(STORE, SKU).unwrap().atp(), before);
    };
    // 09:00 starts before now + lead time; 09:15 is not on the grid; 21:00 is closed.
    check(&slot_hold(1, now.as_ms()), SlotProblem::TooSoon);
    check(
        &slot_hold(1, berlin_ms(2026, 11, 26, 9, 15)),
        SlotProblem::NoSuchSlot,
    );
    check(
        &slot_hold(1, berlin_ms(2026, 11, 26, 21, 0)),
        SlotProblem::NoSuchSlot,
    );
    let slot = berlin_ms(2026, 11, 26, 12, 0);
    assert!(
        engine
            .hold(&slot_hold(1, slot), now)
            .unwrap()
            .granted()
            .is_some()
    );
    check(&slot_hold(1, slot), SlotProblem::Full);
    // Not enough stock: the slot is not booked either.
    let other = berlin_ms(2026, 11, 26, 12, 30);
    assert!(matches!(
        engine.hold(&slot_hold(50, other), now).unwrap(),
        HoldOutcome::Rejected(HoldRejection::InsufficientStock { .. })
    ));
    assert_eq!(engine.slot_booked(STORE, other).unwrap(), 0);
    // A store without calendar takes no slot-bound hold.
    engine
        .define_store(StoreDef::new("plain", 52.5, 13.4, "Europe/Berlin"), now)
        .unwrap();
    let req = HoldRequest::new("plain", vec![LineRequest::new(SKU, 1)]).with_slot(slot);
    assert!(matches!(
        engine.hold(&req, now).unwrap(),
        HoldOutcome::Rejected(HoldRejection::SlotUnavailable {
            problem: SlotProblem::NoCalendar,
            ..
        }) | HoldOutcome::Rejected(HoldRejection::InsufficientStock { .. })
    ));
}

#[test]
fn a_batch_books_each_slot_once_and_its_log_replays_the_bookings() {
    let now = Timestamp(berlin_ms(2026, 11, 26, 9, 0));
    let (log, engine) = logged_engine_with(5, 2, now);
    // Capacity 2 per slot: in one batch, the third hold on the slot finds it full; a hold
    // short of stock books nothing; the other slot is unaffected.
    let slot = berlin_ms(2026, 11, 26, 12, 0);
    let other = berlin_ms(2026, 11, 26, 12, 30);
    let batch = [
        slot_hold(1, slot),
        slot_hold(50, slot),
        slot_hold(1, slot),
        slot_hold(1, slot),
        slot_hold(1, other),
    ];
    let out = engine.hold_batch(&batch, now).unwrap();
    assert!(out[0].as_ref().unwrap().granted().is_some());
    assert!(matches!(
        out[1],
        Ok(HoldOutcome::Rejected(
            HoldRejection::InsufficientStock { .. }
        ))
    ));
    assert!(out[2].as_ref().unwrap().granted().is_some());
    assert!(matches!(
        out[3],
        Ok(HoldOutcome::Rejected(HoldRejection::SlotUnavailable {
            problem: SlotProblem::Full,
            ..
        }))
    ));
    assert!(out[4].as_ref().unwrap().granted().is_some());
    assert_eq!(engine.slot_booked(STORE, slot).unwrap(), 2);
    assert_eq!(engine.slot_booked(STORE, other).unwrap(), 1);
    assert_eq!(engine.availability(STORE, SKU).unwrap().atp(), 2);

    let replayed = Engine::new(EngineConfig::default()).unwrap();
    for rec in log.records() {
        replayed.replay(&rec.record).unwrap();
    }
    assert_eq!(replayed.slot_booked(STORE, slot).unwrap(), 2);
    assert_eq!(replayed.slot_booked(STORE, other).unwrap(), 1);
    replayed.check_conservation().unwrap();
}

#[test]
fn replay_rebuilds_calendar_and_bookings() {
    let now = Timestamp(berlin_ms(2026, 11, 26, 9, 0));
    let (log, engine) = logged_engine_with(5, 2, now);
    engine.set_pick_time(STORE, 120_000, now).unwrap();
    let slot = berlin_ms(2026, 11, 26, 12, 0);
    let a = engine.hold(&slot_hold(1, slot), now).unwrap();
    let b = engine.hold(&slot_hold(1, slot), now).unwrap();
    engine.release(a.granted().unwrap().hold, now).unwrap();
    engine.confirm(b.granted().unwrap().hold, now).unwrap();

    let replayed = Engine::new(EngineConfig::default()).unwrap();
    for rec in log.records() {
        // Every record also survives its binary encoding.
        let mut buf = Vec::new();
        rec.record.encode(&mut buf);
        let back = pickline_engine::Record::decode(&buf).unwrap();
        assert_eq!(back, *rec.record);
        replayed.replay(&back).unwrap();
    }
    assert_eq!(replayed.slot_booked(STORE, slot).unwrap(), 1);
    assert_eq!(
        replayed.estimate_ready(STORE, now).unwrap(),
        engine.estimate_ready(STORE, now).unwrap()
    );
    assert!(replayed.estimate_ready(STORE, now).unwrap().is_some());
    replayed.check_conservation().unwrap();
}

#[test]
fn sixteen_threads_never_overbook_the_last_slot_or_units() {
    const THREADS: usize = 16;
    let now = Timestamp(berlin_ms(2026, 11, 26, 9, 0));
    let slot = berlin_ms(2026, 11, 26, 15, 0);
    // Capacity 3 per slot, 100 units: the slot is the limit.
    // Capacity 3 per slot, 2 units: the stock is the limit.
    for (stock, want) in [(100, 3), (2, 2)] {
        let engine = Arc::new(engine_with(stock, 3, now));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (engine, barrier) = (engine.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    engine
                        .hold(&slot_hold(1, slot), now)
                        .unwrap()
                        .granted()
                        .is_some()
                })
            })
            .collect();
        let granted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|g| *g)
            .count();
        assert_eq!(granted, want);
        assert_eq!(engine.slot_booked(STORE, slot).unwrap(), want as u32);
        assert_eq!(engine.active_holds(), want);
        engine.check_conservation().unwrap();
    }

    // Churn: hold + release loops on one slot of capacity 3; at the end bookings equal the
    // active slot-bound holds and never exceed the capacity.
    let engine = Arc::new(engine_with(1_000, 3, now));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    if let HoldOutcome::Granted(g) = engine.hold(&slot_hold(1, slot), now).unwrap()
                        && (i + t) % 3 != 0
                    {
                        assert_eq!(
                            engine.release(g.hold, now).unwrap(),
                            ReleaseOutcome::Released
                        );
                    }
                    assert!(engine.slot_booked(STORE, slot).unwrap() <= 3);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let booked = engine.slot_booked(STORE, slot).unwrap();
    assert!(booked <= 3);
    assert_eq!(booked as usize, engine.active_holds());
    engine.check_conservation().unwrap();
}

/// One operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Hold `qty` units, on slot index `slot` (of `SLOTS`) or without slot.
    Hold { qty: u32, slot: Option<usize> },
    /// Release the n-th active hold (modulo their count).
    Release(usize),
    /// Move the clock forward by `minutes` and expire.
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, proptest::option::of(0usize..4)).prop_map(|(qty, slot)| Op::Hold { qty, slot }),
        2 => (0usize..8).prop_map(Op::Release),
        1 => (10u32..300).prop_map(Op::Advance),
    ]
}

struct ModelHold {
    id: pickline_engine::HoldId,
    qty: u32,
    slot: Option<i64>,
    expires_at: i64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The engine against a naive model: stock, per-slot bookings (capacity 2), lead
    /// time, slot-bound and TTL expiry.
    #[test]
    fn slot_bookings_match_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let start = berlin_ms(2026, 11, 26, 9, 0);
        let slots: Vec<i64> = [(10, 0), (10, 30), (13, 0), (19, 30)]
            .iter()
            .map(|(h, m)| berlin_ms(2026, 11, 26, *h, *m))
            .collect();
        let mut now = start;
        let engine = engine_with(8, 2, Timestamp(now));
        let mut stock_free: u32 = 8;
        let mut active: Vec<ModelHold> = Vec::new();
        for op in ops {
            match op {
                Op::Hold { qty, slot } => {
                    let mut req = HoldRequest::new(STORE, vec![LineRequest::new(SKU, qty)]);
                    let slot_ms = slot.and_then(|i| slots.get(i).copied());
                    req.slot_start_ms = slot_ms;
                    let out = engine.hold(&req, Timestamp(now)).unwrap();
                    let booked = |s: i64| active.iter().filter(|h| h.slot == Some(s)).count();
                    let expect_ok = qty <= stock_free
                        && slot_ms.is_none_or(|s| {
                            s >= now + i64::from(LEAD_MIN) * MINUTE_MS && booked(s) < 2
                        });
                    prop_assert_eq!(out.granted().is_some(), expect_ok, "{:?}", out);
                    if let HoldOutcome::Granted(g) = out {
                        let expires_at = match slot_ms {
                            Some(s) => s + 30 * MINUTE_MS + i64::from(GRACE_MIN) * MINUTE_MS,
                            None => now + 2 * 3_600_000,
                        };
                        prop_assert_eq!(g.expires_at.as_ms(), expires_at);
                        stock_free -= qty;
                        active.push(ModelHold { id: g.hold, qty, slot: slot_ms, expires_at });
                    }
                }
                Op::Release(n) => {
                    if !active.is_empty() {
                        let h = active.remove(n % active.len());
                        prop_assert_eq!(
                            engine.release(h.id, Timestamp(now)).unwrap(),
                            ReleaseOutcome::Released
                        );
                        stock_free += h.qty;
                    }
                }
                Op::Advance(minutes) => {
                    now += i64::from(minutes) * MINUTE_MS;
                    let expired = engine.expire(Timestamp(now), 10_000).unwrap();
                    let before = active.len();
                    active.retain(|h| {
                        if h.expires_at <= now {
                            stock_free += h.qty;
                            false
                        } else {
                            true
                        }
                    });
                    prop_assert_eq!(expired.len(), before - active.len());
                }
            }
            for s in &slots {
                let want = active.iter().filter(|h| h.slot == Some(*s)).count() as u32;
                prop_assert_eq!(engine.slot_booked(STORE, *s).unwrap(), want);
            }
            prop_assert_eq!(engine.availability(STORE, SKU).unwrap().atp(), stock_free);
        }
        prop_assert!(engine.check_conservation().is_ok());
    }
}

/// A staff no-show of a slot-bound order is allowed from the end of its slot (staff may
/// cut the grace period short), not before, and frees both the units and the slot.
#[test]
fn staff_no_show_after_the_slot_frees_units_and_capacity() {
    use pickline_engine::pickup_code::StaffId;
    use pickline_engine::{
        CreateOrder, CreateOrderOutcome, Customer, OrderLineRequest, OrderRejection, OrderStatus,
        ReadyOutcome, TransitionOutcome,
    };
    let now = Timestamp(berlin_ms(2026, 6, 1, 9, 0));
    let engine = engine_with(5, 2, now);
    let slot = berlin_ms(2026, 6, 1, 10, 0);
    let HoldOutcome::Granted(g) = engine.hold(&slot_hold(2, slot), now).unwrap() else {
        panic!("slot hold refused");
    };
    let create = CreateOrder {
        hold: g.hold,
        channel: "direct".into(),
        channel_order_id: "#1".into(),
        customer: Customer::default(),
        lines: vec![OrderLineRequest {
            sku: SKU.into(),
            qty: 2,
            unit_price_minor: 500,
            description: String::new(),
        }],
        currency: "EUR".into(),
        idempotency_key: None,
    };
    let CreateOrderOutcome::Created { order } = engine.create_order(&create, now).unwrap() else {
        panic!("order refused");
    };
    let staff = StaffId::new("s-1").unwrap();
    engine.confirm_order(order, now).unwrap();
    engine.start_picking(order, &staff, now).unwrap();
    let ready = engine.mark_ready(order, &staff, [7; 8], now).unwrap();
    assert!(matches!(ready, ReadyOutcome::Ready { .. }));
    assert_eq!(engine.slot_booked(STORE, slot).unwrap(), 1);

    let slot_end = slot + 30 * MINUTE_MS;
    let early = engine
        .no_show(order, &staff, Timestamp(slot_end - 1))
        .unwrap();
    assert_eq!(
        early,
        TransitionOutcome::Rejected(OrderRejection::PickupWindowOpen {
            ends_at: Timestamp(slot_end)
        })
    );
    assert_eq!(engine.availability(STORE, SKU).unwrap().atp(), 3);

    // At the slot's end, though the hold itself would live on for the grace period.
    assert!(g.expires_at.as_ms() > slot_end);
    let done = engine.no_show(order, &staff, Timestamp(slot_end)).unwrap();
    assert_eq!(
        done,
        TransitionOutcome::Done {
            status: OrderStatus::NoShow
        }
    );
    assert_eq!(engine.availability(STORE, SKU).unwrap().atp(), 5);
    assert_eq!(engine.slot_booked(STORE, slot).unwrap(), 0);
    assert_eq!(engine.order(order).unwrap().status, OrderStatus::NoShow);
    assert!(engine.check_conservation().is_ok());
    // Repeating it changes nothing.
    let again = engine.no_show(order, &staff, Timestamp(slot_end)).unwrap();
    assert_eq!(again, done);
}
