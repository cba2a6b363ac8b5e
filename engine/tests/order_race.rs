//! A channel order id and a CreateOrder idempotency key are unique across stores, also
//! when two requests for holds at different stores race: exactly one creates the order;
//! the other is told `ChannelOrderExists` or `KeyReused`, or `InFlight` while the first is
//! being decided (and the definite answer when it retries).

use std::sync::Barrier;

use pickline_engine::{
    CreateOrder, CreateOrderOutcome, CreateOrderRejection, Customer, Engine, EngineConfig, HoldId,
    HoldRequest, LineRequest, OrderLineRequest, PosDelta, PosDeltaKind, StoreDef, Timestamp,
};

const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);

fn rounds() -> usize {
    std::env::var("PICKLINE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn engine() -> Engine {
    let e = Engine::new(EngineConfig::default()).unwrap();
    for (name, lon) in [("s1", 13.40), ("s2", 13.45)] {
        e.define_store(StoreDef::new(name, 52.5, lon, "Europe/Berlin"), T0)
            .unwrap();
        e.apply_delta(
            &PosDelta {
                store: name.into(),
                sku: "A".into(),
                pos_event_id: format!("rcv-{name}"),
                kind: PosDeltaKind::Receive,
                qty: 1_000_000,
                order_ref: None,
                pos_time: T0,
            },
            T0,
        )
        .unwrap();
    }
    e
}

fn hold(e: &Engine, store: &str) -> HoldId {
    let out = e
        .hold(&HoldRequest::new(store, vec![LineRequest::new("A", 1)]), T0)
        .unwrap();
    out.granted().unwrap().hold
}

fn order(hold: HoldId, channel_order_id: String, key: Option<String>) -> CreateOrder {
    CreateOrder {
        hold,
        channel: "web".into(),
        channel_order_id,
        customer: Customer::default(),
        lines: vec![OrderLineRequest {
            sku: "A".into(),
            qty: 1,
            unit_price_minor: 100,
            description: String::new(),
        }],
        currency: "EUR".into(),
        idempotency_key: key,
    }
}

/// Creates the order, retrying while another request with one of its names is decided.
fn create(e: &Engine, req: &CreateOrder) -> CreateOrderOutcome {
    loop {
        match e.create_order(req, T0).unwrap() {
            CreateOrderOutcome::InFlight => std::thread::yield_now(),
            other => return other,
        }
    }
}

#[test]
fn racing_requests_for_one_channel_order_or_key_at_two_stores_create_one_order() {
    let e = engine();
    let barrier = Barrier::new(2);
    for round in 0..rounds() {
        // Even rounds: one channel order id, no keys. Odd rounds: one key, two ids.
        let reqs = [("s1", 'a'), ("s2", 'b')].map(|(store, side)| {
            let (id, key) = match round % 2 {
                0 => (format!("#{round}"), None),
                _ => (format!("#{round}-{side}"), Some(format!("k-{round}"))),
            };
            order(hold(&e, store), id, key)
        });
        let outcomes = std::thread::scope(|scope| {
            let racers = reqs.each_ref().map(|req| {
                let (e, barrier) = (&e, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    create(e, req)
                })
            });
            racers.map(|r| r.join().unwrap())
        });
        let created: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                CreateOrderOutcome::Created { order } => Some(*order),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {outcomes:?}");
        for o in &outcomes {
            match (o, round % 2) {
                (CreateOrderOutcome::Created { .. }, _) => {}
                (
                    CreateOrderOutcome::Rejected(CreateOrderRejection::ChannelOrderExists {
                        order,
                    }),
                    0,
                )
                | (CreateOrderOutcome::Rejected(CreateOrderRejection::KeyReused { order }), 1) => {
                    assert_eq!(*order, created[0], "round {round}")
                }
                _ => panic!("round {round}: {outcomes:?}"),
            }
        }
    }
    e.check_conservation().unwrap();
}
