//! Pickup lifecycle scenarios: POS double counting both ways round, code brute force and
//! staff override, hand-off stock, no-show, event stream cursors, KPIs. Every scenario
//! ends by replaying the log into a fresh engine and comparing.

use std::sync::Arc;

use pickline_engine::pickup_code::{PickupCode, StaffId, VerifyOutcome};
use pickline_engine::{
    Canceller, CellView, CollectOutcome, CreateOrder, CreateOrderOutcome, CreateOrderRejection,
    Customer, Engine, EngineConfig, Event, EventStream, HoldRequest, Kpis, LineRequest, Lsn,
    MemoryLog, OrderId, OrderLineRequest, OrderRejection, OrderStatus, PosCount, PosDelta,
    PosDeltaKind, PosOutcome, ReadyOutcome, ShortLine, ShortPick, ShortPickResolution, ShortReport,
    ShortReportOutcome, StoreDef, StreamError, Timestamp, TransitionOutcome,
};

const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);
const ENTROPY: [u8; 8] = [7, 1, 2, 3, 4, 5, 6, 9];

fn staff(s: &str) -> StaffId {
    StaffId::new(s).unwrap()
}

fn setup() -> (Engine, Arc<MemoryLog>) {
    let log = Arc::new(MemoryLog::new());
    let e = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    e.define_store(StoreDef::new("s1", 52.5, 13.4, "Europe/Berlin"), T0)
        .unwrap();
    receive(&e, "A", 10, "rcv-A");
    receive(&e, "B", 10, "rcv-B");
    (e, log)
}

fn receive(e: &Engine, sku: &str, qty: i64, id: &str) {
    e.apply_delta(
        &PosDelta {
            store: "s1".into(),
            sku: sku.into(),
            pos_event_id: id.into(),
            kind: PosDeltaKind::Receive,
            qty,
            order_ref: None,
            pos_time: T0,
        },
        T0,
    )
    .unwrap();
}

fn sale(e: &Engine, sku: &str, qty: i64, id: &str, order_ref: &str, now: Timestamp) {
    e.apply_delta(
        &PosDelta {
            store: "s1".into(),
            sku: sku.into(),
            pos_event_id: id.into(),
            kind: PosDeltaKind::Sale,
            qty,
            order_ref: Some(order_ref.into()),
            pos_time: now,
        },
        now,
    )
    .unwrap();
}

/// An order of 2 A + 1 B, placed at `now`, ttl 1 hour.
fn place(e: &Engine, channel_order_id: &str, now: Timestamp) -> OrderId {
    let grant = e
        .hold(
            &HoldRequest::new(
                "s1",
                vec![LineRequest::new("A", 2), LineRequest::new("B", 1)],
            )
            .with_ttl_ms(3_600_000),
            now,
        )
        .unwrap();
    let hold = grant.granted().unwrap().hold;
    let req = CreateOrder {
        hold,
        channel: "shopify".into(),
        channel_order_id: channel_order_id.into(),
        customer: Customer {
            email: Some("c@example.com".into()),
            phone: Some("+49301234".into()),
            sms_consent: true,
            email_consent: true,
            name: Some("Ada".into()),
            locale: Some("de-DE".into()),
        },
        lines: vec![
            OrderLineRequest {
                sku: "B".into(),
                qty: 1,
                unit_price_minor: 250,
                description: "Bag".into(),
            },
            OrderLineRequest {
                sku: "A".into(),
                qty: 2,
                unit_price_minor: 1_000,
                description: "Apple".into(),
            },
        ],
        currency: "EUR".into(),
        idempotency_key: Some(format!("k-{channel_order_id}")),
    };
    let CreateOrderOutcome::Created { order } = e.create_order(&req, now).unwrap() else {
        panic!("create refused")
    };
    // Retrying with the same key returns the same order and logs nothing.
    let before = e.log().last_lsn();
    assert_eq!(
        e.create_order(&req, now).unwrap(),
        CreateOrderOutcome::Created { order }
    );
    assert_eq!(e.log().last_lsn(), before);
    order
}

/// Places, confirms, picks and readies an order; returns it and its code.
fn ready(e: &Engine, id: &str, now: Timestamp, ready_after_ms: i64) -> (OrderId, PickupCode) {
    let o = place(e, id, now);
    let done = |s| TransitionOutcome::Done { status: s };
    assert_eq!(
        e.confirm_order(o, now).unwrap(),
        done(OrderStatus::Confirmed)
    );
    assert_eq!(
        e.start_picking(o, &staff("ann"), now).unwrap(),
        done(OrderStatus::Picking)
    );
    let ReadyOutcome::Ready { code, qr } = e
        .mark_ready(o, &staff("ann"), ENTROPY, now.add_ms(ready_after_ms))
        .unwrap()
    else {
        panic!("ready refused")
    };
    assert_eq!(qr.unwrap().code(), code);
    (o, code)
}

fn cell(e: &Engine, sku: &str) -> (u32, u32) {
    let v = e.availability("s1", sku).unwrap();
    (v.on_hand, v.held)
}

fn check_replay(e: &Engine, log: &MemoryLog, orders: &[OrderId]) {
    e.check_conservation().unwrap();
    let fresh = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        // Through the binary codec, as recovery would read it.
        let mut buf = Vec::new();
        r.record.encode(&mut buf);
        let rec = pickline_engine::Record::decode(&buf).unwrap();
        assert_eq!(rec, *r.record);
        fresh.replay(&rec).unwrap();
    }
    fresh.check_conservation().unwrap();
    for sku in ["A", "B"] {
        assert_eq!(
            e.availability("s1", sku).unwrap(),
            fresh.availability("s1", sku).unwrap()
        );
    }
    for o in orders {
        assert_eq!(e.order(*o), fresh.order(*o));
    }
}

#[test]
fn collect_consumes_on_hand_and_held_and_makes_a_receipt() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#1001", T0, 60_000);
    assert_eq!(cell(&e, "A"), (10, 2));
    let CollectOutcome::Collected { receipt, .. } = e
        .collect(o, &code.to_string(), &staff("bob"), T0.add_ms(120_000))
        .unwrap()
    else {
        panic!("collect refused")
    };
    assert_eq!(cell(&e, "A"), (8, 0));
    assert_eq!(cell(&e, "B"), (9, 0));
    let receipt = (*receipt).unwrap();
    assert_eq!(receipt.receipt_number().as_str(), "R-s1-000001");
    assert_eq!(receipt.total_minor(), 2_250);
    assert!(receipt.to_json().contains("#1001"));
    assert_eq!(e.order(o).unwrap().status, OrderStatus::Collected);
    assert_eq!(e.hold_info(o.hold()), None);
    // A second hand-off is an illegal transition, not a second decrement.
    assert!(matches!(
        e.collect(o, &code.to_string(), &staff("bob"), T0.add_ms(130_000))
            .unwrap(),
        CollectOutcome::Rejected(_)
    ));
    assert_eq!(cell(&e, "A"), (8, 0));
    // The next receipt of the store gets the next number.
    let (o2, code2) = ready(&e, "#1002", T0, 1);
    let CollectOutcome::Collected { receipt, .. } = e
        .collect(o2, &code2.to_compact(), &staff("bob"), T0.add_ms(5))
        .unwrap()
    else {
        panic!("collect refused")
    };
    assert_eq!((*receipt).unwrap().receipt_number().as_str(), "R-s1-000002");
    check_replay(&e, &log, &[o, o2]);
}

#[test]
fn pos_sale_after_hand_off_is_not_counted_twice() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#2001", T0, 1);
    e.collect(o, &code.to_string(), &staff("bob"), T0.add_ms(10))
        .unwrap();
    assert_eq!(cell(&e, "A"), (8, 0));
    // POS reports the sale by channel order id: recognized, on_hand unchanged.
    sale(&e, "A", 2, "pos-1", "#2001", T0.add_ms(20));
    assert_eq!(cell(&e, "A"), (8, 0));
    // ... and by pickline order id for the other line.
    sale(&e, "B", 1, "pos-2", &o.to_string(), T0.add_ms(21));
    assert_eq!(cell(&e, "B"), (9, 0));
    // A further sale naming the same order is beyond what was handed off: applied.
    sale(&e, "A", 1, "pos-3", "#2001", T0.add_ms(22));
    assert_eq!(cell(&e, "A"), (7, 0));
    check_replay(&e, &log, &[o]);
}

/// The gRPC API carries order ids as 64-bit numbers; `inventory.proto` lets a POS name the
/// order by that number in decimal. Such a sale after the hand-off is recognized and
/// answered `AlreadyHandedOff`, not counted a second time.
#[test]
fn pos_sale_by_decimal_order_id_after_hand_off_is_already_handed_off() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#2101", T0, 1);
    e.collect(o, &code.to_string(), &staff("bob"), T0.add_ms(10))
        .unwrap();
    assert_eq!(cell(&e, "A"), (8, 0));
    let decimal = o.hold().0.to_string();
    let sale_of = |sku: &str, qty, id: &str, r: &str| {
        e.apply_delta(
            &PosDelta {
                store: "s1".into(),
                sku: sku.into(),
                pos_event_id: id.into(),
                kind: PosDeltaKind::Sale,
                qty,
                order_ref: Some(r.into()),
                pos_time: T0.add_ms(20),
            },
            T0.add_ms(20),
        )
        .unwrap()
    };
    let out = sale_of("A", 2, "pos-d1", &decimal);
    assert!(
        matches!(out, PosOutcome::AlreadyHandedOff { on_hand: 8, .. }),
        "{out:?}"
    );
    assert_eq!(cell(&e, "A"), (8, 0));
    // The displayed form is recognized the same way.
    let out = sale_of("B", 1, "pos-d2", &o.to_string());
    assert!(
        matches!(out, PosOutcome::AlreadyHandedOff { .. }),
        "{out:?}"
    );
    assert_eq!(cell(&e, "B"), (9, 0));
    // Beyond the hand-off: applied. Leading zeros or signs name no order: applied.
    let out = sale_of("A", 1, "pos-d3", &decimal);
    assert!(
        matches!(out, PosOutcome::Applied { on_hand: 7, .. }),
        "{out:?}"
    );
    let out = sale_of("A", 1, "pos-d4", &format!("0{decimal}"));
    assert!(
        matches!(out, PosOutcome::Applied { on_hand: 6, .. }),
        "{out:?}"
    );
    check_replay(&e, &log, &[o]);
}

#[test]
fn pos_sale_before_hand_off_consumes_from_the_hold() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#3001", T0, 1);
    sale(&e, "A", 2, "pos-1", "#3001", T0.add_ms(5));
    // on_hand and held fall together: availability elsewhere is unchanged.
    assert_eq!(cell(&e, "A"), (8, 0));
    e.check_conservation().unwrap();
    e.collect(o, &code.to_string(), &staff("bob"), T0.add_ms(10))
        .unwrap();
    // The hand-off takes only what the POS had not reported.
    assert_eq!(cell(&e, "A"), (8, 0));
    assert_eq!(cell(&e, "B"), (9, 0));
    // The receipt still lists both units of A.
    let receipt = e.order_receipt(o).unwrap().unwrap();
    assert_eq!(receipt.total_qty(), 3);
    check_replay(&e, &log, &[o]);
}

#[test]
fn count_before_hand_off_does_not_resurrect_units() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#3501", T0, 1);
    e.collect(o, &code.to_string(), &staff("bob"), T0.add_ms(100))
        .unwrap();
    // A count of 10 as of a time before the hand-off: on_hand stays 8.
    let out = e
        .apply_count(
            &PosCount {
                store: "s1".into(),
                sku: "A".into(),
                pos_event_id: "cnt-1".into(),
                counted: 10,
                as_of: T0.add_ms(50),
            },
            T0.add_ms(200),
        )
        .unwrap();
    assert!(matches!(
        out,
        pickline_engine::PosOutcome::Applied {
            on_hand: 8,
            matched: Some(true),
            ..
        }
    ));
    check_replay(&e, &log, &[o]);
}

#[test]
fn code_brute_force_locks_after_five_and_override_is_recorded() {
    let (e, log) = setup();
    let (o, code) = ready(&e, "#4001", T0, 1);
    let wrong = PickupCode::from_value(code.value() ^ 1)
        .unwrap()
        .to_string();
    let bob = staff("bob");
    // Malformed input is not a guess.
    assert!(matches!(
        e.collect(o, "not a code!", &bob, T0).unwrap(),
        CollectOutcome::Code(VerifyOutcome::Malformed(_))
    ));
    for left in (1..5).rev() {
        assert_eq!(
            e.collect(o, &wrong, &bob, T0).unwrap(),
            CollectOutcome::Code(VerifyOutcome::Wrong {
                attempts_left: left
            })
        );
    }
    assert_eq!(
        e.collect(o, &wrong, &bob, T0).unwrap(),
        CollectOutcome::Code(VerifyOutcome::WrongNowLocked)
    );
    // Locked: even the right code is refused, and stock is untouched.
    assert_eq!(
        e.collect(o, &code.to_string(), &bob, T0).unwrap(),
        CollectOutcome::Code(VerifyOutcome::Locked)
    );
    assert_eq!(cell(&e, "A"), (10, 2));
    let v = e.order(o).unwrap();
    assert!(v.locked);
    assert_eq!(v.wrong_attempts, 5);
    // The lockout survives a replay.
    check_replay(&e, &log, &[o]);
    assert_eq!(
        e.staff_override(o, &staff("mgr-7"), T0.add_ms(9)).unwrap(),
        TransitionOutcome::Done {
            status: OrderStatus::Ready
        }
    );
    let v = e.order(o).unwrap();
    assert!(!v.locked);
    assert_eq!(v.last_override, Some(("mgr-7".into(), T0.add_ms(9))));
    assert!(
        log.records()
            .iter()
            .any(|r| r.record.events.iter().any(|ev| matches!(
                ev,
                Event::PickupCodeOverride { staff, sequence: 1, .. } if staff == "mgr-7"
            )))
    );
    // A second override of an open order is refused.
    assert!(matches!(
        e.staff_override(o, &staff("mgr-7"), T0).unwrap(),
        TransitionOutcome::Rejected(_)
    ));
    assert!(matches!(
        e.collect(o, &code.to_string(), &bob, T0.add_ms(10))
            .unwrap(),
        CollectOutcome::Collected { .. }
    ));
    check_replay(&e, &log, &[o]);
}

#[test]
fn no_show_releases_stock_and_unconfirmed_order_expires() {
    let (e, log) = setup();
    let (ready_order, _) = ready(&e, "#5001", T0, 1);
    let placed = place(&e, "#5002", T0);
    assert_eq!(cell(&e, "A"), (10, 4));
    let expired = e.expire(T0.add_ms(3_600_000), 100).unwrap();
    assert_eq!(expired.len(), 2);
    assert_eq!(cell(&e, "A"), (10, 0));
    assert_eq!(e.order(ready_order).unwrap().status, OrderStatus::NoShow);
    assert_eq!(e.order(placed).unwrap().status, OrderStatus::Expired);
    check_replay(&e, &log, &[ready_order, placed]);
}

#[test]
fn short_pick_adjusts_on_hand_and_requests_reallocation() {
    let (e, log) = setup();
    let o = place(&e, "#6001", T0);
    e.confirm_order(o, T0).unwrap();
    // Short pick before picking is illegal.
    let req = ShortPick {
        order: o,
        sku: "A".into(),
        found: 1,
        resolution: ShortPickResolution::Reallocate,
        staff: staff("ann"),
    };
    assert!(matches!(
        e.short_pick(&req, T0).unwrap(),
        TransitionOutcome::Rejected(_)
    ));
    e.start_picking(o, &staff("ann"), T0).unwrap();
    e.short_pick(&req, T0).unwrap();
    // One unit of A was not on the shelf: on_hand and held both fall by one.
    assert_eq!(cell(&e, "A"), (9, 1));
    let v = e.order(o).unwrap();
    assert_eq!(v.short_picks, 1);
    assert_eq!(v.reallocation_requested.len(), 1);
    let recs = log.records();
    let last = &recs.last().unwrap().record.events;
    assert!(matches!(
        last[0],
        Event::StockAdjusted {
            qty: -1,
            after: CellView {
                on_hand: 9,
                held: 1,
                ..
            },
            ..
        }
    ));
    assert!(matches!(
        last[2],
        Event::ReallocationRequested { missing: 1, .. }
    ));
    // Found as many as the line needs: not short.
    let not_short = ShortPick { found: 1, ..req };
    assert!(matches!(
        e.short_pick(&not_short, T0).unwrap(),
        TransitionOutcome::Rejected(_)
    ));
    check_replay(&e, &log, &[o]);
}

#[test]
fn cancel_releases_the_hold_and_illegal_transitions_are_values() {
    let (e, log) = setup();
    let o = place(&e, "#7001", T0);
    assert!(matches!(
        e.start_picking(o, &staff("ann"), T0).unwrap(),
        TransitionOutcome::Rejected(_)
    ));
    assert!(matches!(
        e.mark_ready(o, &staff("ann"), ENTROPY, T0).unwrap(),
        ReadyOutcome::Rejected(_)
    ));
    e.cancel_order(o, &Canceller::Customer, T0).unwrap();
    assert_eq!(cell(&e, "A"), (10, 0));
    assert!(matches!(
        e.cancel_order(o, &Canceller::Customer, T0).unwrap(),
        TransitionOutcome::Rejected(_)
    ));
    check_replay(&e, &log, &[o]);
}

#[test]
fn event_stream_cursors_survive_replay() {
    let mem = Arc::new(MemoryLog::new());
    let stream = Arc::new(EventStream::new(mem.clone(), 1_000));
    let e = Engine::with_log(EngineConfig::default(), stream.clone()).unwrap();
    stream.register_consumer("notify").unwrap();
    e.define_store(StoreDef::new("s1", 52.5, 13.4, "Europe/Berlin"), T0)
        .unwrap();
    receive(&e, "A", 10, "r1");
    let got = stream.read("notify", Lsn(0), 10).unwrap();
    assert_eq!(got.len(), mem.records().len());
    assert!(got.windows(2).all(|w| w[0].lsn < w[1].lsn));
    let upto = got[1].lsn;
    e.ack_consumer("notify", upto, T0).unwrap();
    assert_eq!(stream.cursor("notify"), Some(upto));
    // Acknowledged records are dropped; reading before them is a typed error.
    assert!(matches!(
        stream.read("notify", Lsn(0), 10),
        Err(StreamError::Truncated { .. })
    ));
    assert!(matches!(
        stream.read("nobody", upto, 10),
        Err(StreamError::UnknownConsumer(_))
    ));
    // Recovery: a fresh stream fed the log restores the cursor.
    let restored = EventStream::new(Arc::new(MemoryLog::new()), 1_000);
    for r in mem.records() {
        restored.replayed(&r);
    }
    assert_eq!(restored.register_consumer("notify").unwrap(), upto);
    let rest = restored.read("notify", upto, 100).unwrap();
    assert_eq!(rest.first().map(|r| r.lsn), Some(Lsn(upto.0 + 1)));
}

/// An engine logging through an event stream that keeps `retained` records, with one
/// registered consumer and one store `s1`.
fn streamed_engine(retained: usize, consumer: &str) -> (Arc<MemoryLog>, Arc<EventStream>, Engine) {
    let mem = Arc::new(MemoryLog::new());
    let stream = Arc::new(EventStream::new(mem.clone(), retained));
    let e = Engine::with_log(EngineConfig::default(), stream.clone()).unwrap();
    stream.register_consumer(consumer).unwrap();
    e.define_store(StoreDef::new("s1", 52.5, 13.4, "Europe/Berlin"), T0)
        .unwrap();
    (mem, stream, e)
}

#[test]
fn event_stream_replayed_owned_skips_only_records_it_would_drop() {
    let (mem, _stream, e) = streamed_engine(1_000, "notify");
    for i in 0..4 {
        receive(&e, "A", 1, &format!("r{i}"));
    }
    let acked = mem.records()[2].lsn;
    e.ack_consumer("notify", acked, T0).unwrap();
    for i in 4..8 {
        receive(&e, "A", 1, &format!("r{i}"));
    }
    let records = mem.records();
    // The same log fed record by record (each kept, then trimmed) and by value with the
    // count that follows (early records never stored): same buffer, same cursors.
    let one = EventStream::new(Arc::new(MemoryLog::new()), 3);
    let two = EventStream::new(Arc::new(MemoryLog::new()), 3);
    for (n, r) in records.iter().enumerate() {
        one.replayed(r);
        let following = (records.len() - 1 - n) as u64;
        let handed_back = two.replayed_owned(r.clone(), following);
        // Exactly the records the stream does not keep come back to the caller.
        assert_eq!(handed_back.as_ref(), (following >= 3).then_some(r));
    }
    assert_eq!(one.retained(), 3);
    assert_eq!(two.retained(), 3);
    assert_eq!(one.cursors(), two.cursors());
    assert_eq!(two.cursor("notify"), Some(acked));
    for s in [&one, &two] {
        s.register_consumer("late").unwrap();
    }
    let last = records.last().unwrap().lsn;
    for after in [Lsn(0), Lsn(last.0 - 4), Lsn(last.0 - 3), Lsn(last.0 - 1)] {
        assert_eq!(
            one.read("late", after, 10),
            two.read("late", after, 10),
            "read after {after}"
        );
    }
}

#[test]
fn event_stream_retention_is_bounded() {
    let (mem, stream, e) = streamed_engine(3, "slow");
    for i in 0..5 {
        receive(&e, "A", 1, &format!("r{i}"));
    }
    assert_eq!(stream.retained(), 3);
    assert!(matches!(
        stream.read("slow", Lsn(0), 10),
        Err(StreamError::Truncated { .. })
    ));
    let last = mem.records().last().unwrap().lsn;
    assert_eq!(stream.read("slow", Lsn(last.0 - 3), 10).unwrap().len(), 3);
}

#[test]
fn event_stream_retention_counts_events_and_keeps_the_newest_record() {
    // A batch of holds logs up to 256 grants per record: the bound counts events, so a
    // stream of batch records holds no more than a stream of single holds would.
    let (_mem, stream, e) = streamed_engine(300, "slow");
    receive(&e, "A", 10_000, "r0");
    let batch: Vec<HoldRequest> = (0..300)
        .map(|_| HoldRequest::new("s1", vec![LineRequest::new("A", 1)]))
        .collect();
    for _ in 0..2 {
        let out = e.hold_batch(&batch, T0).unwrap();
        assert!(out.iter().all(|o| o.as_ref().unwrap().granted().is_some()));
    }
    // Two records (256 and 44 grants) of the second batch: 300 events.
    assert_eq!(stream.retained(), 2);
    // A record alone above the bound is still kept while it is the newest.
    let (_mem, stream, e) = streamed_engine(100, "slow");
    receive(&e, "A", 10_000, "r0");
    e.hold_batch(&batch[..200], T0).unwrap();
    assert_eq!(stream.retained(), 1);
    let kept = stream.read("slow", Lsn(0), 10);
    assert!(
        matches!(kept, Err(StreamError::Truncated { .. })),
        "{kept:?}"
    );
}

#[test]
fn kpis_on_a_hand_built_scenario() {
    let (e, log) = setup();
    // Four orders ready after 5, 10, 15 and 20 minutes.
    let mut ready_orders = Vec::new();
    for (i, mins) in [5i64, 10, 15, 20].iter().enumerate() {
        ready_orders.push(ready(&e, &format!("#80{i}"), T0, mins * 60_000));
    }
    // Short pick on a fifth order, which the customer then cancels.
    let o5 = place(&e, "#805", T0);
    e.confirm_order(o5, T0).unwrap();
    e.start_picking(o5, &staff("ann"), T0).unwrap();
    e.short_pick(
        &ShortPick {
            order: o5,
            sku: "B".into(),
            found: 0,
            resolution: ShortPickResolution::CancelLine,
            staff: staff("ann"),
        },
        T0,
    )
    .unwrap();
    e.cancel_order(o5, &Canceller::Customer, T0).unwrap();
    // Three collected, one no-show.
    for (o, code) in &ready_orders[..3] {
        e.collect(*o, &code.to_string(), &staff("bob"), T0.add_ms(1_500_000))
            .unwrap();
    }
    e.expire(T0.add_ms(3_600_000), 100).unwrap();
    // Two counts, one matching.
    for (id, counted) in [("c1", 4u32), ("c2", 3)] {
        e.apply_count(
            &PosCount {
                store: "s1".into(),
                sku: "A".into(),
                pos_event_id: id.into(),
                counted,
                as_of: T0.add_ms(3_700_000),
            },
            T0.add_ms(3_700_000),
        )
        .unwrap();
    }
    let mut k = Kpis::new();
    for r in log.records() {
        k.observe(&r.record);
    }
    let s = k.store(pickline_engine::StoreId(0));
    assert_eq!(s.avg_fulfillment_ms(), Some(12.5 * 60_000.0));
    assert_eq!(s.p90_fulfillment_ms(), Some(20 * 60_000));
    // 3 collected / (3 + 1 no-show + 1 customer cancel).
    assert_eq!(s.pickup_conversion(), Some(0.6));
    assert_eq!(s.short_pick_rate(), Some(0.2));
    assert_eq!(s.counts, 2);
    assert_eq!(s.inventory_accuracy(), Some(0.5));
    assert_eq!(s.shortages, 0);
    assert_eq!(k.overall(), &s);
}

/// Short-picking every unit of an order leaves nothing to pick: the same record cancels
/// the order (by the store) and releases its hold, so it can never become ready or be
/// handed off without anything to put on a receipt.
#[test]
fn shorting_every_unit_cancels_the_order_in_the_same_record() {
    let (e, log) = setup();
    let o = place(&e, "#6101", T0);
    e.confirm_order(o, T0).unwrap();
    e.start_picking(o, &staff("ann"), T0).unwrap();
    let short = |sku: &str| ShortPick {
        order: o,
        sku: sku.into(),
        found: 0,
        resolution: ShortPickResolution::CancelLine,
        staff: staff("ann"),
    };
    assert_eq!(
        e.short_pick(&short("A"), T0).unwrap(),
        TransitionOutcome::Done {
            status: OrderStatus::Picking
        }
    );
    let records = log.records().len();
    assert_eq!(
        e.short_pick(&short("B"), T0).unwrap(),
        TransitionOutcome::Done {
            status: OrderStatus::Cancelled
        }
    );
    assert_eq!(log.records().len(), records + 1, "one record");
    assert_eq!(e.order(o).unwrap().status, OrderStatus::Cancelled);
    // The missing units left on_hand; nothing is held any more.
    assert_eq!(cell(&e, "A"), (8, 0));
    assert_eq!(cell(&e, "B"), (9, 0));
    assert!(matches!(
        e.mark_ready(o, &staff("ann"), ENTROPY, T0).unwrap(),
        ReadyOutcome::Rejected(_)
    ));
    check_replay(&e, &log, &[o]);
}

/// A short report is all or nothing: a SKU listed twice is misuse and a refused later
/// line refuses the report, and neither logs or changes anything; a good report is one
/// record.
#[test]
fn a_short_report_is_applied_whole_or_not_at_all() {
    let (e, log) = setup();
    let o = place(&e, "#6201", T0);
    e.confirm_order(o, T0).unwrap();
    e.start_picking(o, &staff("ann"), T0).unwrap();
    let line = |sku: &str, found| ShortLine {
        sku: sku.into(),
        found,
        resolution: ShortPickResolution::Reallocate,
    };
    let report = |lines| ShortReport {
        order: o,
        lines,
        staff: staff("ann"),
    };
    let before = (
        log.records().len(),
        e.order(o),
        cell(&e, "A"),
        cell(&e, "B"),
    );
    let unchanged = || {
        assert_eq!(
            (
                log.records().len(),
                e.order(o),
                cell(&e, "A"),
                cell(&e, "B")
            ),
            before
        );
    };
    let twice = e.report_short(&report(vec![line("A", 1), line("A", 0)]), T0);
    assert!(
        matches!(
            &twice,
            Err(pickline_engine::EngineError::InvalidRequest { field: "lines", .. })
        ),
        "{twice:?}"
    );
    unchanged();
    assert_eq!(
        e.report_short(&report(vec![line("A", 1), line("C", 0)]), T0)
            .unwrap(),
        ShortReportOutcome::Rejected {
            line: Some(1),
            rejection: OrderRejection::NoSuchLine
        }
    );
    unchanged();
    assert_eq!(
        e.report_short(&report(vec![line("A", 0), line("B", 1)]), T0)
            .unwrap(),
        ShortReportOutcome::Rejected {
            line: Some(1),
            rejection: OrderRejection::NotShort { line_qty: 1 }
        }
    );
    unchanged();

    assert_eq!(
        e.report_short(&report(vec![line("B", 0), line("A", 1)]), T0)
            .unwrap(),
        ShortReportOutcome::Done {
            status: OrderStatus::Picking,
            missing: vec![1, 1]
        }
    );
    assert_eq!(log.records().len(), before.0 + 1, "one record");
    let v = e.order(o).unwrap();
    let qty: Vec<u32> = v.lines.iter().map(|l| l.qty).collect();
    assert_eq!(qty, [1, 0]);
    assert_eq!(v.reallocation_requested.len(), 2);
    assert_eq!((cell(&e, "A"), cell(&e, "B")), ((9, 1), (9, 0)));
    check_replay(&e, &log, &[o]);
}

/// An idempotency key names one CreateOrder request: the same hold and channel order
/// replays, anything else under the key is `KeyReused`; another key on a hold that has
/// an order is `OrderExists`.
#[test]
fn create_order_keys_are_bound_to_their_request() {
    let (e, log) = setup();
    let o = place(&e, "#6301", T0);
    let grant = e
        .hold(
            &HoldRequest::new("s1", vec![LineRequest::new("A", 1)]).with_ttl_ms(3_600_000),
            T0,
        )
        .unwrap();
    let other = grant.granted().unwrap().hold;
    let req = |hold, key: &str, channel_order_id: &str| CreateOrder {
        hold,
        channel: "shopify".into(),
        channel_order_id: channel_order_id.into(),
        customer: Customer::default(),
        lines: vec![OrderLineRequest {
            sku: "A".into(),
            qty: 1,
            unit_price_minor: 100,
            description: "Apple".into(),
        }],
        currency: "EUR".into(),
        idempotency_key: Some(key.into()),
    };
    let records = log.records().len();
    assert_eq!(
        e.create_order(&req(other, "k-#6301", "#6302"), T0).unwrap(),
        CreateOrderOutcome::Rejected(CreateOrderRejection::KeyReused { order: o })
    );
    assert_eq!(e.order(OrderId::from_hold(other)), None);
    assert_eq!(
        e.create_order(&req(o.hold(), "k-#6301", "#other"), T0)
            .unwrap(),
        CreateOrderOutcome::Rejected(CreateOrderRejection::KeyReused { order: o })
    );
    assert_eq!(
        e.create_order(&req(o.hold(), "k-fresh", "#6301"), T0)
            .unwrap(),
        CreateOrderOutcome::Rejected(CreateOrderRejection::OrderExists { order: o })
    );
    assert_eq!(log.records().len(), records, "nothing logged");
    let second = e.create_order(&req(other, "k-6302", "#6302"), T0).unwrap();
    assert_eq!(
        second,
        CreateOrderOutcome::Created {
            order: OrderId::from_hold(other)
        }
    );
    check_replay(&e, &log, &[o, OrderId::from_hold(other)]);
    // A replayed engine knows the keys too.
    let fresh = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        fresh.replay(&r.record).unwrap();
    }
    assert_eq!(
        fresh
            .create_order(&req(other, "k-#6301", "#6302"), T0)
            .unwrap(),
        CreateOrderOutcome::Rejected(CreateOrderRejection::KeyReused { order: o })
    );
}

/// pickup.proto: `(channel, channel_order_id)` is unique per channel. Another hold with a
/// fresh key cannot create a second order for it while the first is open or after it was
/// collected (`ChannelOrderExists`, nothing logged); another channel may use the same id;
/// once the first order was cancelled the channel may place it again, and GetOrder's
/// lookup then finds the new order. All of it holds after replay and a snapshot load.
#[test]
fn channel_order_ids_are_unique_per_channel() {
    let (e, log) = setup();
    let hold = |e: &Engine| {
        let grant = e
            .hold(
                &HoldRequest::new("s1", vec![LineRequest::new("A", 1)]).with_ttl_ms(3_600_000),
                T0,
            )
            .unwrap();
        grant.granted().unwrap().hold
    };
    let req = |hold, channel: &str, channel_order_id: &str, key: &str| CreateOrder {
        hold,
        channel: channel.into(),
        channel_order_id: channel_order_id.into(),
        customer: Customer::default(),
        lines: vec![OrderLineRequest {
            sku: "A".into(),
            qty: 1,
            unit_price_minor: 100,
            description: "Apple".into(),
        }],
        currency: "EUR".into(),
        idempotency_key: Some(key.into()),
    };
    let exists =
        |order| CreateOrderOutcome::Rejected(CreateOrderRejection::ChannelOrderExists { order });
    // Held before the first order, so its order id sorts before the first order's.
    let early = hold(&e);
    let first = place(&e, "#7001", T0);
    let dup = hold(&e);
    let records = log.records().len();
    assert_eq!(
        e.create_order(&req(dup, "shopify", "#7001", "k-dup"), T0)
            .unwrap(),
        exists(first)
    );
    assert_eq!(log.records().len(), records, "a refusal logs nothing");
    assert_eq!(e.order(OrderId::from_hold(dup)), None);
    assert_eq!(e.order_by_ref("s1", "#7001"), Some(first));

    // Another channel's order id space is its own.
    let amazon = hold(&e);
    assert_eq!(
        e.create_order(&req(amazon, "amazon", "#7001", "k-amazon"), T0)
            .unwrap(),
        CreateOrderOutcome::Created {
            order: OrderId::from_hold(amazon)
        }
    );

    // Collected: still taken.
    let (collected, code) = ready(&e, "#7002", T0, 60_000);
    assert!(matches!(
        e.collect(
            collected,
            &code.to_string(),
            &staff("bob"),
            T0.add_ms(120_000)
        )
        .unwrap(),
        CollectOutcome::Collected { .. }
    ));
    assert_eq!(
        e.create_order(&req(dup, "shopify", "#7002", "k-dup-2"), T0)
            .unwrap(),
        exists(collected)
    );

    // Another store: the reference is unique across stores too.
    e.define_store(StoreDef::new("s2", 48.1, 11.6, "Europe/Berlin"), T0)
        .unwrap();
    e.apply_delta(
        &PosDelta {
            store: "s2".into(),
            sku: "A".into(),
            pos_event_id: "rcv-s2".into(),
            kind: PosDeltaKind::Receive,
            qty: 1,
            order_ref: None,
            pos_time: T0,
        },
        T0,
    )
    .unwrap();
    let elsewhere = e
        .hold(
            &HoldRequest::new("s2", vec![LineRequest::new("A", 1)]).with_ttl_ms(3_600_000),
            T0,
        )
        .unwrap();
    let elsewhere = elsewhere.granted().unwrap().hold;
    let records = log.records().len();
    assert_eq!(
        e.create_order(&req(elsewhere, "shopify", "#7002", "k-s2"), T0)
            .unwrap(),
        exists(collected)
    );
    assert_eq!(log.records().len(), records, "a refusal logs nothing");

    // Cancelled: the channel may place it again, here on the hold that sorts first.
    assert!(matches!(
        e.cancel_order(first, &Canceller::Customer, T0.add_ms(1_000))
            .unwrap(),
        TransitionOutcome::Done { .. }
    ));
    let again = OrderId::from_hold(early);
    assert_eq!(
        e.create_order(&req(early, "shopify", "#7001", "k-again"), T0.add_ms(2_000))
            .unwrap(),
        CreateOrderOutcome::Created { order: again }
    );
    assert!(
        again < first,
        "the new order's id sorts before the cancelled one's"
    );
    assert_eq!(e.order_by_ref("s1", "#7001"), Some(again));
    assert_eq!(e.order_by_channel("shopify", "#7001"), Some(again));
    assert_eq!(
        e.order_by_channel("amazon", "#7001"),
        Some(OrderId::from_hold(amazon))
    );

    // After a restart, from the log and from a snapshot, the same answers.
    check_replay(&e, &log, &[first, again, collected]);
    let replayed = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        replayed.replay(&r.record).unwrap();
    }
    let (_, bytes) = e.snapshot().unwrap();
    let loaded =
        Engine::from_snapshot(EngineConfig::default(), Arc::new(MemoryLog::new()), &bytes).unwrap();
    for restarted in [&replayed, &loaded] {
        assert_eq!(
            restarted
                .create_order(&req(dup, "shopify", "#7001", "k-dup-3"), T0.add_ms(3_000))
                .unwrap(),
            exists(again)
        );
        assert_eq!(
            restarted
                .create_order(&req(dup, "shopify", "#7002", "k-dup-4"), T0.add_ms(3_000))
                .unwrap(),
            exists(collected)
        );
        assert_eq!(restarted.order_by_ref("s1", "#7001"), Some(again));
        assert_eq!(restarted.order_by_channel("shopify", "#7001"), Some(again));
    }
}
