//! Random engine operations drawn from a seed, shared by the crash simulation
//! (`crash_sim.rs`) and the checkpoint test (`checkpoint_shadow.rs`): multi-line holds
//! (some keyed), releases, confirms, extends, POS deltas and counts, expiries, the pickup
//! lifecycle (orders, picking, ready with a logged code, collect, cancel), checkpoints.

use std::collections::HashMap;

use pickline_engine::pickup_code::StaffId;
use pickline_engine::wal::SimRng;
use pickline_engine::{
    Canceller, CreateOrder, Customer, Engine, EngineError, HoldId, HoldOutcome, HoldRequest,
    LineRequest, OrderId, OrderLineRequest, PosCount, PosDelta, PosDeltaKind, ReadyOutcome,
    StoreDef, Timestamp,
};

pub const STORES: [&str; 2] = ["s0", "s1"];
pub const SKUS: [&str; 4] = ["A", "B", "C", "D"];

/// One operation, drawn from the seed. Applied identically to the durable engine and the
/// reference engine.
#[derive(Debug, Clone)]
pub enum Op {
    Hold(HoldRequest),
    Release(usize),
    Confirm(usize),
    Extend(usize, i64),
    Delta(PosDelta),
    Count(PosCount),
    Expire,
    Checkpoint,
    Order(usize),
    Pick(usize),
    Ready(usize, [u8; 8]),
    Collect(usize, bool),
    Cancel(usize),
}

pub fn draw(rng: &mut SimRng, step: u64) -> Op {
    let store = STORES[rng.below(2) as usize];
    match rng.below(20) {
        0..=5 => {
            let n = 1 + rng.below(3) as usize;
            let lines = (0..n)
                .map(|_| LineRequest::new(SKUS[rng.below(4) as usize], 1 + rng.below(3) as u32))
                .collect();
            let mut req =
                HoldRequest::new(store, lines).with_ttl_ms(1_000 + rng.below(20_000) as i64);
            if rng.below(3) == 0 {
                req = req.with_key(format!("k{}", rng.below(30)));
            }
            Op::Hold(req)
        }
        7..=8 => Op::Release(rng.below(1 << 20) as usize),
        6 | 9 => Op::Confirm(rng.below(1 << 20) as usize),
        10 => Op::Extend(
            rng.below(1 << 20) as usize,
            1_000 + rng.below(30_000) as i64,
        ),
        11..=15 => Op::Delta(PosDelta {
            store: store.into(),
            sku: SKUS[rng.below(4) as usize].into(),
            pos_event_id: format!("e{}", rng.below(200)),
            kind: if rng.below(3) == 0 {
                PosDeltaKind::Sale
            } else {
                PosDeltaKind::Receive
            },
            qty: 1 + rng.below(4) as i64,
            order_ref: None,
            pos_time: Timestamp(1_700_000_000_000 + step as i64 * 100 - rng.below(500) as i64),
        }),
        16 => Op::Count(PosCount {
            store: store.into(),
            sku: SKUS[rng.below(4) as usize].into(),
            pos_event_id: format!("c{}", rng.below(200)),
            counted: rng.below(12) as u32,
            as_of: Timestamp(1_700_000_000_000 + step as i64 * 100 - rng.below(2_000) as i64),
        }),
        17..=18 => Op::Expire,
        19 => match rng.below(6) {
            0 => Op::Order(rng.below(1 << 20) as usize),
            1 => Op::Pick(rng.below(1 << 20) as usize),
            2 => Op::Ready(rng.below(1 << 20) as usize, rng.next_u64().to_le_bytes()),
            3 => Op::Collect(rng.below(1 << 20) as usize, rng.below(4) != 0),
            4 => Op::Cancel(rng.below(1 << 20) as usize),
            _ => Op::Checkpoint,
        },
        _ => unreachable!("below(20)"),
    }
}

/// Applies `op`; `holds` collects granted hold ids so later ops can name them.
pub fn apply(
    engine: &Engine,
    op: &Op,
    now: Timestamp,
    holds: &mut Vec<HoldId>,
    codes: &mut HashMap<u64, String>,
) -> Result<(), EngineError> {
    let pick = |holds: &Vec<HoldId>, i: usize| holds.get(i % holds.len().max(1)).copied();
    match op {
        Op::Hold(req) => match engine.hold(req, now) {
            Ok(HoldOutcome::Granted(g)) if !holds.contains(&g.hold) => holds.push(g.hold),
            // A key drawn again for other lines: refused, nothing applied.
            Ok(_) | Err(EngineError::IdempotencyKeyReused { .. }) => {}
            Err(e) => return Err(e),
        },
        Op::Release(i) => {
            if let Some(h) = pick(holds, *i) {
                engine.release(h, now)?;
            }
        }
        Op::Confirm(i) => {
            if let Some(h) = pick(holds, *i) {
                engine.confirm(h, now)?;
            }
        }
        Op::Extend(i, ttl) => {
            if let Some(h) = pick(holds, *i) {
                engine.extend(h, Some(*ttl), now)?;
            }
        }
        Op::Delta(d) => {
            engine.apply_delta(d, now)?;
        }
        Op::Count(c) => {
            engine.apply_count(c, now)?;
        }
        Op::Expire => {
            engine.expire(now, 1_000)?;
        }
        Op::Checkpoint => {}
        Op::Order(i) => {
            if let Some(h) = pick(holds, *i)
                && let Some(info) = engine.hold_info(h)
            {
                let lines = info
                    .lines
                    .iter()
                    .map(|l| OrderLineRequest {
                        sku: engine.sku_name(l.sku).unwrap(),
                        qty: l.qty,
                        unit_price_minor: 1_999,
                        description: "item".into(),
                    })
                    .collect();
                engine.create_order(
                    &CreateOrder {
                        hold: h,
                        channel: "web".into(),
                        channel_order_id: format!("web-{}", h.0),
                        customer: Customer {
                            email: Some("a@example.com".into()),
                            phone: None,
                            sms_consent: false,
                            email_consent: true,
                            ..Customer::default()
                        },
                        lines,
                        currency: "EUR".into(),
                        idempotency_key: None,
                    },
                    now,
                )?;
            }
        }
        Op::Pick(i) => {
            if let Some(h) = pick(holds, *i) {
                engine.confirm_order(OrderId::from_hold(h), now)?;
                engine.start_picking(OrderId::from_hold(h), &staff(), now)?;
            }
        }
        Op::Ready(i, entropy) => {
            if let Some(h) = pick(holds, *i)
                && let ReadyOutcome::Ready { code, .. } =
                    engine.mark_ready(OrderId::from_hold(h), &staff(), *entropy, now)?
            {
                codes.insert(h.0, code.to_string());
            }
        }
        Op::Collect(i, right) => {
            if let Some(h) = pick(holds, *i) {
                let code = match (right, codes.get(&h.0)) {
                    (true, Some(c)) => c.clone(),
                    _ => "00000-00000".to_owned(),
                };
                engine.collect(OrderId::from_hold(h), &code, &staff(), now)?;
            }
        }
        Op::Cancel(i) => {
            if let Some(h) = pick(holds, *i) {
                engine.cancel_order(OrderId::from_hold(h), &Canceller::Customer, now)?;
            }
        }
    }
    Ok(())
}

pub fn staff() -> StaffId {
    StaffId::new("staff-1").unwrap()
}

pub fn setup(engine: &Engine, now: Timestamp) -> Result<(), EngineError> {
    for s in STORES {
        engine.define_store(StoreDef::new(s, 50.1, 8.7, "Europe/Berlin"), now)?;
    }
    Ok(())
}
