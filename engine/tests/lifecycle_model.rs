//! Model-based property test of the pickup lifecycle: random order operations (legal and
//! illegal) against a small model of each order's status and of the cells' `on_hand` and
//! `held`, with conservation checked after every step and a replay of the log into a
//! fresh engine compared at the end (determinism).

use std::sync::Arc;

use pickline_engine::pickup_code::{PickupCode, StaffId, VerifyOutcome};
use pickline_engine::{
    Canceller, CollectOutcome, CreateOrder, CreateOrderOutcome, Customer, Engine, EngineConfig,
    HoldRequest, LineRequest, MemoryLog, OrderId, OrderLineRequest, OrderRejection, OrderStatus,
    PosDelta, PosDeltaKind, ReadyOutcome, ShortPick, ShortPickResolution, StoreDef, Timestamp,
    TransitionOutcome,
};
use proptest::prelude::*;

const SKUS: [&str; 2] = ["A", "B"];
const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);
const TTL_MS: i64 = 60_000;

#[derive(Debug, Clone)]
enum Op {
    Place {
        a: u32,
        b: u32,
    },
    Confirm(usize),
    Pick(usize),
    Short {
        order: usize,
        sku: usize,
        found: u32,
        realloc: bool,
    },
    Ready(usize),
    Collect {
        order: usize,
        right: bool,
    },
    Override(usize),
    Cancel {
        order: usize,
        customer: bool,
    },
    PosSale {
        order: usize,
        sku: usize,
        qty: u32,
        by_channel: bool,
    },
    /// Staff record a no-show (allowed for a ready order once its hold's expiry, the
    /// pickup window of an order without a slot, has passed).
    NoShow(usize),
    Advance(i64),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3u32, 0..3u32).prop_map(|(a, b)| Op::Place { a, b }),
        2 => any::<usize>().prop_map(Op::Confirm),
        2 => any::<usize>().prop_map(Op::Pick),
        1 => (any::<usize>(), 0..2usize, 0..3u32, any::<bool>())
            .prop_map(|(order, sku, found, realloc)| Op::Short { order, sku, found, realloc }),
        2 => any::<usize>().prop_map(Op::Ready),
        3 => (any::<usize>(), prop::bool::weighted(0.6))
            .prop_map(|(order, right)| Op::Collect { order, right }),
        1 => any::<usize>().prop_map(Op::Override),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(order, customer)| Op::Cancel { order, customer }),
        1 => (any::<usize>(), 0..2usize, 1..3u32, any::<bool>())
            .prop_map(|(order, sku, qty, by_channel)| Op::PosSale { order, sku, qty, by_channel }),
        1 => (1..30_000i64).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => any::<usize>().prop_map(Op::NoShow),
    ]
}

#[derive(Debug, Clone)]
struct MOrder {
    id: OrderId,
    status: OrderStatus,
    /// Units still held per SKU.
    held: [u32; 2],
    /// Units ordered per SKU (after short picks).
    qty: [u32; 2],
    /// Units the POS reported for this order.
    pos: [u32; 2],
    expires_at: Timestamp,
    wrong: u32,
    locked: bool,
    code: Option<PickupCode>,
}

fn staff() -> StaffId {
    StaffId::new("s-1").unwrap()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let log = Arc::new(MemoryLog::new());
    let e = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    let mut now = T0;
    e.define_store(StoreDef::new("s", 0.0, 0.0, "UTC"), now)
        .unwrap();
    let mut on_hand = [6u32, 6];
    for (i, sku) in SKUS.iter().enumerate() {
        e.apply_delta(
            &PosDelta {
                store: "s".into(),
                sku: (*sku).into(),
                pos_event_id: format!("r{i}"),
                kind: PosDeltaKind::Receive,
                qty: 6,
                order_ref: None,
                pos_time: now,
            },
            now,
        )
        .unwrap();
    }
    let mut orders: Vec<MOrder> = Vec::new();
    let mut pos_seq = 0u32;
    let mut entropy_seq = 0u64;
    for op in ops {
        let pick = |i: usize| (!orders.is_empty()).then(|| i % orders.len());
        match op {
            Op::Place { a, b } => {
                let qty = [a, b];
                let lines: Vec<_> = (0..2)
                    .filter(|&i| qty[i] > 0)
                    .map(|i| LineRequest::new(SKUS[i], qty[i]))
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                let Some(g) = e
                    .hold(&HoldRequest::new("s", lines).with_ttl_ms(TTL_MS), now)
                    .unwrap()
                    .granted()
                    .cloned()
                else {
                    continue;
                };
                let req = CreateOrder {
                    hold: g.hold,
                    channel: "web".into(),
                    channel_order_id: format!("#{}", orders.len()),
                    customer: Customer::default(),
                    lines: (0..2)
                        .filter(|&i| qty[i] > 0)
                        .map(|i| OrderLineRequest {
                            sku: SKUS[i].into(),
                            qty: qty[i],
                            unit_price_minor: 100,
                            description: String::new(),
                        })
                        .collect(),
                    currency: "USD".into(),
                    idempotency_key: None,
                };
                let CreateOrderOutcome::Created { order } = e.create_order(&req, now).unwrap()
                else {
                    return Err(TestCaseError::fail("create refused"));
                };
                orders.push(MOrder {
                    id: order,
                    status: OrderStatus::Placed,
                    held: qty,
                    qty,
                    pos: [0; 2],
                    expires_at: g.expires_at,
                    wrong: 0,
                    locked: false,
                    code: None,
                });
            }
            Op::Confirm(i) => {
                let Some(i) = pick(i) else { continue };
                let m = &mut orders[i];
                let out = e.confirm_order(m.id, now).unwrap();
                match m.status {
                    OrderStatus::Placed | OrderStatus::Confirmed => {
                        m.status = OrderStatus::Confirmed;
                        prop_assert_eq!(out, TransitionOutcome::Done { status: m.status });
                    }
                    _ => assert!(matches!(out, TransitionOutcome::Rejected(_))),
                }
            }
            Op::Pick(i) => {
                let Some(i) = pick(i) else { continue };
                let m = &mut orders[i];
                let out = e.start_picking(m.id, &staff(), now).unwrap();
                match m.status {
                    OrderStatus::Confirmed | OrderStatus::Picking => {
                        m.status = OrderStatus::Picking;
                        prop_assert_eq!(out, TransitionOutcome::Done { status: m.status });
                    }
                    _ => assert!(matches!(out, TransitionOutcome::Rejected(_))),
                }
            }
            Op::Short {
                order,
                sku,
                found,
                realloc,
            } => {
                let Some(i) = pick(order) else { continue };
                let m = &mut orders[i];
                let out = e
                    .short_pick(
                        &ShortPick {
                            order: m.id,
                            sku: SKUS[sku].into(),
                            found,
                            resolution: if realloc {
                                ShortPickResolution::Reallocate
                            } else {
                                ShortPickResolution::CancelLine
                            },
                            staff: staff(),
                        },
                        now,
                    )
                    .unwrap();
                let missing = m.qty[sku].saturating_sub(found).min(m.held[sku]);
                if m.status == OrderStatus::Picking && m.qty[sku] > 0 && missing > 0 {
                    m.qty[sku] -= missing;
                    m.held[sku] -= missing;
                    on_hand[sku] = on_hand[sku].saturating_sub(missing);
                    // Nothing left to pick: the store cancels, the hold is released.
                    if m.qty == [0; 2] {
                        m.status = OrderStatus::Cancelled;
                        m.held = [0; 2];
                    }
                    prop_assert_eq!(out, TransitionOutcome::Done { status: m.status });
                } else {
                    assert!(matches!(out, TransitionOutcome::Rejected(_)));
                }
            }
            Op::Ready(i) => {
                let Some(i) = pick(i) else { continue };
                let m = &mut orders[i];
                entropy_seq += 1;
                let out = e
                    .mark_ready(m.id, &staff(), entropy_seq.to_le_bytes(), now)
                    .unwrap();
                if m.status == OrderStatus::Picking {
                    let ReadyOutcome::Ready { code, .. } = out else {
                        return Err(TestCaseError::fail("ready refused"));
                    };
                    m.status = OrderStatus::Ready;
                    m.code = Some(code);
                } else {
                    assert!(matches!(out, ReadyOutcome::Rejected(_)));
                }
            }
            Op::Collect { order, right } => {
                let Some(i) = pick(order) else { continue };
                let m = &mut orders[i];
                let code = m
                    .code
                    .map(|c| {
                        if right {
                            c
                        } else {
                            PickupCode::from_value(c.value() ^ 3).unwrap()
                        }
                    })
                    .unwrap_or_else(|| PickupCode::from_entropy([0; 8]));
                let out = e.collect(m.id, &code.to_string(), &staff(), now).unwrap();
                if m.status != OrderStatus::Ready {
                    assert!(matches!(out, CollectOutcome::Rejected(_)));
                } else if m.locked {
                    prop_assert_eq!(out, CollectOutcome::Code(VerifyOutcome::Locked));
                } else if right {
                    assert!(matches!(out, CollectOutcome::Collected { .. }));
                    m.status = OrderStatus::Collected;
                    for (oh, h) in on_hand.iter_mut().zip(m.held) {
                        *oh = oh.saturating_sub(h);
                    }
                    m.held = [0; 2];
                } else {
                    m.wrong += 1;
                    m.locked = m.wrong >= 5;
                    assert!(matches!(
                        out,
                        CollectOutcome::Code(
                            VerifyOutcome::Wrong { .. } | VerifyOutcome::WrongNowLocked
                        )
                    ));
                }
            }
            Op::Override(i) => {
                let Some(i) = pick(i) else { continue };
                let m = &mut orders[i];
                let out = e.staff_override(m.id, &staff(), now).unwrap();
                if m.status == OrderStatus::Ready && m.locked {
                    assert!(matches!(out, TransitionOutcome::Done { .. }));
                    m.locked = false;
                    m.wrong = 0;
                } else {
                    assert!(matches!(out, TransitionOutcome::Rejected(_)));
                }
            }
            Op::Cancel { order, customer } => {
                let Some(i) = pick(order) else { continue };
                let m = &mut orders[i];
                let by = if customer {
                    Canceller::Customer
                } else {
                    Canceller::Store(staff())
                };
                let out = e.cancel_order(m.id, &by, now).unwrap();
                if m.status.is_final() {
                    assert!(matches!(out, TransitionOutcome::Rejected(_)));
                } else {
                    assert!(matches!(out, TransitionOutcome::Done { .. }));
                    m.status = OrderStatus::Cancelled;
                    m.held = [0; 2];
                }
            }
            Op::PosSale {
                order,
                sku,
                qty,
                by_channel,
            } => {
                let Some(i) = pick(order) else { continue };
                let m = &mut orders[i];
                pos_seq += 1;
                let order_ref = if by_channel {
                    format!("#{i}")
                } else {
                    m.id.to_string()
                };
                e.apply_delta(
                    &PosDelta {
                        store: "s".into(),
                        sku: SKUS[sku].into(),
                        pos_event_id: format!("p{pos_seq}"),
                        kind: PosDeltaKind::Sale,
                        qty: i64::from(qty),
                        order_ref: Some(order_ref),
                        pos_time: now,
                    },
                    now,
                )
                .unwrap();
                let has_line = m.qty[sku] > 0 || m.pos[sku] > 0 || m.held[sku] > 0;
                let recognized = if m.status == OrderStatus::Collected && has_line {
                    qty.min(m.qty[sku].saturating_sub(m.pos[sku]))
                } else {
                    0
                };
                let from_hold = if !m.status.is_final() {
                    qty.min(m.held[sku])
                } else {
                    0
                };
                m.held[sku] -= from_hold;
                m.pos[sku] += recognized + from_hold;
                on_hand[sku] = on_hand[sku].saturating_sub(qty - recognized);
            }
            Op::NoShow(i) => {
                let Some(i) = pick(i) else { continue };
                let m = &mut orders[i];
                let out = e.no_show(m.id, &staff(), now).unwrap();
                let no_show = TransitionOutcome::Done {
                    status: OrderStatus::NoShow,
                };
                match m.status {
                    OrderStatus::NoShow => prop_assert_eq!(out, no_show),
                    OrderStatus::Ready if now >= m.expires_at => {
                        prop_assert_eq!(out, no_show);
                        m.status = OrderStatus::NoShow;
                        m.held = [0; 2];
                    }
                    OrderStatus::Ready => prop_assert_eq!(
                        out,
                        TransitionOutcome::Rejected(OrderRejection::PickupWindowOpen {
                            ends_at: m.expires_at
                        })
                    ),
                    from => prop_assert_eq!(
                        out,
                        TransitionOutcome::Rejected(OrderRejection::IllegalTransition { from })
                    ),
                }
            }
            Op::Advance(ms) => now = now.add_ms(ms),
            Op::Expire => {
                e.expire(now, 1_000).unwrap();
                for m in orders.iter_mut() {
                    if !m.status.is_final() && m.expires_at <= now {
                        m.status = if m.status == OrderStatus::Placed {
                            OrderStatus::Expired
                        } else {
                            OrderStatus::NoShow
                        };
                        m.held = [0; 2];
                    }
                }
            }
        }
        prop_assert!(
            e.check_conservation().is_ok(),
            "{:?}",
            e.check_conservation()
        );
        for (s, sku) in SKUS.iter().enumerate() {
            let v = e.availability("s", sku).unwrap();
            let held: u32 = orders.iter().map(|m| m.held[s]).sum();
            prop_assert_eq!((v.on_hand, v.held), (on_hand[s], held), "sku {}", sku);
        }
        for m in &orders {
            let v = e.order(m.id).unwrap();
            prop_assert_eq!(v.status, m.status);
            prop_assert_eq!(v.locked, m.locked);
        }
    }
    let fresh = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        let mut buf = Vec::new();
        r.record.encode(&mut buf);
        fresh
            .replay(&pickline_engine::Record::decode(&buf).unwrap())
            .unwrap();
    }
    prop_assert!(fresh.check_conservation().is_ok());
    for sku in SKUS {
        prop_assert_eq!(
            e.availability("s", sku).unwrap(),
            fresh.availability("s", sku).unwrap()
        );
    }
    for m in &orders {
        prop_assert_eq!(e.order(m.id), fresh.order(m.id));
    }
    // Snapshots carry the lifecycle: the live engine, the replayed one and one restored
    // from a snapshot all encode to the same bytes.
    let (_, live) = e.snapshot().unwrap();
    let (_, replayed) = fresh.snapshot().unwrap();
    prop_assert_eq!(
        &live,
        &replayed,
        "replayed state differs from the live state"
    );
    let restored = Engine::from_snapshot(
        EngineConfig::default(),
        std::sync::Arc::new(pickline_engine::NoLog::default()),
        &live,
    )
    .unwrap();
    for m in &orders {
        prop_assert_eq!(e.order(m.id), restored.order(m.id));
    }
    prop_assert_eq!(&restored.snapshot().unwrap().1, &live);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PICKLINE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn lifecycle_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
