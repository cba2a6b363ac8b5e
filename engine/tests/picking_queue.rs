//! The store's picking queue and slot bookings follow every way a hold ends (issue 15,
//! found 3): collecting an order unbooks its slot and leaves the queue, as cancel and
//! no-show do; a READY order is no longer in the picking queue (SPEC: confirmed, not yet
//! ready); and the counters survive a replay and a snapshot unchanged.

use std::sync::Arc;

use jiff::civil::date;
use jiff::tz::TimeZone;
use pickline_engine::calendar::{
    CalendarConfig, LocalInterval, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
};
use pickline_engine::pickup_code::StaffId;
use pickline_engine::{
    CollectOutcome, CreateOrder, CreateOrderOutcome, Customer, Engine, EngineConfig, HoldRequest,
    LineRequest, MemoryLog, OrderId, OrderLineRequest, PosDelta, PosDeltaKind, ReadyOutcome,
    StoreDef, Timestamp,
};

const STORE: &str = "berlin";
const MINUTE_MS: i64 = 60_000;

/// Monday 2026-12-07 09:00 in Berlin.
fn now() -> Timestamp {
    Timestamp::from_ms(
        TimeZone::get("Europe/Berlin")
            .unwrap()
            .to_ambiguous_timestamp(date(2026, 12, 7).at(9, 0, 0, 0))
            .compatible()
            .unwrap()
            .as_millisecond(),
    )
}

/// 1 staff, 30-minute slots of capacity 2, 30 minutes lead, 60 minutes pick time.
fn engine(log: Arc<MemoryLog>, pick_min: u32) -> Engine {
    let e = Engine::with_log(EngineConfig::default(), log).unwrap();
    let t = now();
    e.define_store(StoreDef::new(STORE, 52.52, 13.40, "Europe/Berlin"), t)
        .unwrap();
    e.set_calendar(
        STORE,
        CalendarConfig {
            time_zone: "Europe/Berlin".into(),
            weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((8, 0), (20, 0)).unwrap()]),
            exceptions: Vec::new(),
            pickup: PickupConfig {
                slot_len_min: 30,
                lead_time_min: 30,
                hold_grace_min: 15,
                pickups_per_staff_per_slot: 2,
            },
            staffing: WeeklyStaffing::every_day(&[StaffShift::hm((8, 0), (20, 0), 1).unwrap()]),
        },
        t,
    )
    .unwrap();
    e.set_pick_time(STORE, pick_min * 60_000, t).unwrap();
    e.apply_delta(
        &PosDelta {
            store: STORE.into(),
            sku: "A".into(),
            pos_event_id: "rcv".into(),
            kind: PosDeltaKind::Receive,
            qty: 1_000,
            order_ref: None,
            pos_time: t,
        },
        t,
    )
    .unwrap();
    e
}

fn staff() -> StaffId {
    StaffId::new("ann").unwrap()
}

/// Holds one A on the estimated slot and makes it a confirmed order.
fn place(e: &Engine, n: u32, t: Timestamp) -> (OrderId, i64) {
    let est = e.estimate_ready(STORE, t).unwrap().expect("a free slot");
    let grant = e
        .hold(
            &HoldRequest::new(STORE, vec![LineRequest::new("A", 1)]).with_slot(est.slot.start_ms),
            t,
        )
        .unwrap();
    let hold = grant.granted().expect("granted").hold;
    let CreateOrderOutcome::Created { order } = e
        .create_order(
            &CreateOrder {
                hold,
                channel: "web".into(),
                channel_order_id: format!("o-{n}"),
                customer: Customer::default(),
                lines: vec![OrderLineRequest {
                    sku: "A".into(),
                    qty: 1,
                    unit_price_minor: 100,
                    description: "Apple".into(),
                }],
                currency: "EUR".into(),
                idempotency_key: None,
            },
            t,
        )
        .unwrap()
    else {
        panic!("create refused")
    };
    e.confirm_order(order, t).unwrap();
    (order, est.slot.start_ms)
}

fn ready(e: &Engine, order: OrderId, t: Timestamp) -> String {
    e.start_picking(order, &staff(), t).unwrap();
    let ReadyOutcome::Ready { code, .. } =
        e.mark_ready(order, &staff(), [n8(order); 8], t).unwrap()
    else {
        panic!("ready refused")
    };
    code.to_string()
}

fn n8(order: OrderId) -> u8 {
    (order.to_string().len() as u8).wrapping_mul(37)
}

fn collect(e: &Engine, order: OrderId, code: &str, t: Timestamp) {
    let out = e.collect(order, code, &staff(), t).unwrap();
    assert!(
        matches!(out, CollectOutcome::Collected { .. }),
        "collect: {out:?}"
    );
}

fn ready_in_min(e: &Engine, t: Timestamp) -> i64 {
    let est = e.estimate_ready(STORE, t).unwrap().expect("estimate");
    (est.ready_ms - t.as_ms()) / MINUTE_MS
}

#[test]
fn collected_orders_leave_the_queue_and_their_slots() {
    let log = Arc::new(MemoryLog::new());
    let e = engine(log.clone(), 60);
    let t = now();
    assert_eq!(ready_in_min(&e, t), 30, "a fresh store: lead time only");
    let mut first_slot = None;
    for n in 0..20 {
        let (order, slot) = place(&e, n, t);
        first_slot.get_or_insert(slot);
        // One confirmed order waits: lead + 60 minutes of picking for the one staff.
        assert_eq!(ready_in_min(&e, t), 90, "order {n} queued");
        let code = ready(&e, order, t);
        // Ready: out of the picking queue.
        assert_eq!(ready_in_min(&e, t), 30, "order {n} ready");
        collect(&e, order, &code, t);
        assert_eq!(
            e.slot_booked(STORE, slot).unwrap(),
            0,
            "order {n} collected"
        );
    }
    assert_eq!(ready_in_min(&e, t), 30, "nothing waits after 20 collects");
    let first_slot = first_slot.unwrap();
    assert_eq!(e.slot_booked(STORE, first_slot).unwrap(), 0);
    // The first slot takes holds again.
    let again = e
        .hold(
            &HoldRequest::new(STORE, vec![LineRequest::new("A", 1)]).with_slot(first_slot),
            t,
        )
        .unwrap();
    assert!(
        again.granted().is_some(),
        "first slot free again: {again:?}"
    );
    e.check_conservation().unwrap();

    // Replay gives the same counters.
    let fresh = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        fresh.replay(&r.record).unwrap();
    }
    fresh.check_conservation().unwrap();
    assert_eq!(ready_in_min(&fresh, t), 30);
    assert_eq!(fresh.slot_booked(STORE, first_slot).unwrap(), 1);
}

#[test]
fn long_pick_times_never_run_the_estimate_out() {
    let e = engine(Arc::new(MemoryLog::new()), 240);
    let t = now();
    for n in 0..84 {
        let (order, _) = place(&e, n, t);
        let code = ready(&e, order, t);
        collect(&e, order, &code, t);
    }
    assert_eq!(ready_in_min(&e, t), 30);
    e.check_conservation().unwrap();
}

#[test]
fn snapshot_keeps_queue_and_bookings() {
    let log = Arc::new(MemoryLog::new());
    let e = engine(log, 60);
    let t = now();
    let (a, slot_a) = place(&e, 1, t);
    let (_b, _) = place(&e, 2, t);
    let code = ready(&e, a, t);
    collect(&e, a, &code, t);
    let before = ready_in_min(&e, t);
    let (_, bytes) = e.snapshot().unwrap();
    let back =
        Engine::from_snapshot(EngineConfig::default(), Arc::new(MemoryLog::new()), &bytes).unwrap();
    back.check_conservation().unwrap();
    assert_eq!(ready_in_min(&back, t), before);
    assert_eq!(
        back.slot_booked(STORE, slot_a).unwrap(),
        e.slot_booked(STORE, slot_a).unwrap()
    );
}

/// Issue 15, found 3: `estimated_ready_ms` was always 0. An order keeps the pickup time
/// promised when it was confirmed: its booked slot's start, or without a slot the store's
/// estimate at that moment (later orders do not move it); the confirming record carries it,
/// so a replay and a snapshot give it back unchanged.
#[test]
fn an_order_keeps_the_ready_estimate_of_its_confirmation() {
    let log = Arc::new(MemoryLog::new());
    let e = engine(log.clone(), 60);
    let t = now();
    let (slotted, slot_start) = place(&e, 1, t);
    assert_eq!(
        e.order(slotted).unwrap().ready_estimate,
        Some(Timestamp::from_ms(slot_start))
    );

    // Without a slot: the estimate just before confirming (this order not yet queued).
    let expected = e.estimate_ready(STORE, t).unwrap().unwrap().slot.start_ms;
    let hold = e
        .hold(&HoldRequest::new(STORE, vec![LineRequest::new("A", 1)]), t)
        .unwrap()
        .granted()
        .expect("granted")
        .hold;
    let CreateOrderOutcome::Created { order: unslotted } = e
        .create_order(
            &CreateOrder {
                hold,
                channel: "web".into(),
                channel_order_id: "no-slot".into(),
                customer: Customer::default(),
                lines: vec![OrderLineRequest {
                    sku: "A".into(),
                    qty: 1,
                    unit_price_minor: 100,
                    description: "Apple".into(),
                }],
                currency: "EUR".into(),
                idempotency_key: None,
            },
            t,
        )
        .unwrap()
    else {
        panic!("create refused")
    };
    assert_eq!(e.order(unslotted).unwrap().ready_estimate, None, "placed");
    e.confirm_order(unslotted, t).unwrap();
    let promised = Some(Timestamp::from_ms(expected));
    assert_eq!(e.order(unslotted).unwrap().ready_estimate, promised);
    // More orders lengthen the queue: the store's estimate moves, the promise does not.
    for n in 2..6 {
        place(&e, n, t);
    }
    assert!(e.estimate_ready(STORE, t).unwrap().unwrap().slot.start_ms > expected);
    assert_eq!(e.order(unslotted).unwrap().ready_estimate, promised);

    // The confirming record's facts say it.
    let facts = log
        .records()
        .iter()
        .flat_map(|r| r.record.events.clone())
        .find_map(|ev| match ev {
            pickline_engine::Event::OrderChanged { order, facts, .. }
                if order == unslotted
                    && facts.status() == pickline_engine::OrderStatus::Confirmed =>
            {
                Some(facts.view(order).ready_estimate)
            }
            _ => None,
        });
    assert_eq!(facts, Some(promised));

    // Replay and snapshot give it back.
    let fresh = Engine::with_log(EngineConfig::default(), Arc::new(MemoryLog::new())).unwrap();
    for r in log.records() {
        fresh.replay(&r.record).unwrap();
    }
    assert_eq!(fresh.order(unslotted).unwrap().ready_estimate, promised);
    let (_, bytes) = e.snapshot().unwrap();
    let loaded =
        Engine::from_snapshot(EngineConfig::default(), Arc::new(MemoryLog::new()), &bytes).unwrap();
    assert_eq!(loaded.order(unslotted).unwrap().ready_estimate, promised);
    assert_eq!(
        loaded.order(slotted).unwrap().ready_estimate,
        Some(Timestamp::from_ms(slot_start))
    );
}

/// Issue 15, found 4: the state of a hold that is no longer active was UNSPECIFIED. The
/// engine remembers how each store's newest holds ended (released, expired, collected),
/// through a replay and a snapshot, and forgets beyond its bound.
#[test]
fn ended_holds_say_how_they_ended() {
    use pickline_engine::{ENDED_HOLDS_KEPT, HoldEnd, ReleaseOutcome};
    let log = Arc::new(MemoryLog::new());
    let e = engine(log.clone(), 1);
    let t = now();
    let hold = |ttl_ms: i64| {
        e.hold(
            &HoldRequest::new(STORE, vec![LineRequest::new("A", 1)]).with_ttl_ms(ttl_ms),
            t,
        )
        .unwrap()
        .granted()
        .expect("granted")
        .hold
    };
    let released = hold(60_000);
    let expired = hold(1_000);
    assert_eq!(e.hold_end(released), None, "active");
    assert_eq!(
        e.release_described(released, t).unwrap().0,
        ReleaseOutcome::Released
    );
    assert_eq!(
        e.expire(Timestamp::from_ms(t.as_ms() + 2_000), 100)
            .unwrap()
            .len(),
        1
    );
    let (order, _) = place(&e, 1, t);
    let code = ready(&e, order, t);
    collect(&e, order, &code, t);
    let ends = |e: &Engine| [released, expired, order.hold()].map(|h| e.hold_end(h));
    let want = [
        Some(HoldEnd::Released),
        Some(HoldEnd::Expired),
        Some(HoldEnd::Consumed),
    ];
    assert_eq!(ends(&e), want);
    assert_eq!(
        e.release_described(expired, t).unwrap().0,
        ReleaseOutcome::AlreadyEnded
    );

    let fresh = Engine::with_log(EngineConfig::default(), Arc::new(MemoryLog::new())).unwrap();
    for r in log.records() {
        fresh.replay(&r.record).unwrap();
    }
    assert_eq!(ends(&fresh), want);
    let (_, bytes) = e.snapshot().unwrap();
    let loaded =
        Engine::from_snapshot(EngineConfig::default(), Arc::new(MemoryLog::new()), &bytes).unwrap();
    assert_eq!(ends(&loaded), want);

    // Bounded: after ENDED_HOLDS_KEPT more ends, the oldest are forgotten.
    for _ in 0..ENDED_HOLDS_KEPT {
        let h = hold(60_000);
        e.release_described(h, t).unwrap();
    }
    assert_eq!(ends(&e), [None, None, None]);
}
