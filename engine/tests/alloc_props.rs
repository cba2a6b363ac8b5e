//! `Engine::allocate` against a brute-force oracle on random store networks (antimeridian
//! included), split allocation, slots, idempotency, and no deadlock under concurrent split
//! allocations over overlapping stores and SKUs.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use pickline_engine::calendar::{
    CalendarConfig, LocalInterval, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
};
use pickline_engine::{
    AllocateOutcome, AllocateRejection, AllocateRequest, Engine, EngineConfig, LineRequest,
    PosDelta, PosDeltaKind, StoreDef, StoreStatus, Timestamp,
};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp(1_795_680_000_000); // 2026-11-26T08:00:00Z
const SKUS: [&str; 3] = ["A", "B", "C"];

fn receive(engine: &Engine, store: &str, sku: &str, qty: i64) {
    if qty == 0 {
        return;
    }
    engine
        .apply_delta(
            &PosDelta {
                store: store.into(),
                sku: sku.into(),
                pos_event_id: format!("{store}/{sku}"),
                kind: PosDeltaKind::Receive,
                qty,
                order_ref: None,
                pos_time: NOW,
            },
            NOW,
        )
        .unwrap();
}

/// Independent haversine distance, km.
fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371.008_8 * h.sqrt().min(1.0).asin()
}

fn wrap_lon(lon: f64) -> f64 {
    if lon > 180.0 {
        lon - 360.0
    } else if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

#[derive(Debug, Clone)]
struct StoreSpec {
    lat: f64,
    lon: f64,
    open: bool,
    stock: [i64; 3],
}

fn store_spec(center_lon: f64) -> impl Strategy<Value = StoreSpec> {
    (
        -10.0f64..10.0,
        -8.0f64..8.0,
        prop::bool::weighted(0.85),
        [0i64..4, 0i64..4, 0i64..4],
    )
        .prop_map(move |(lat, dlon, open, stock)| StoreSpec {
            lat: 45.0 + lat,
            lon: wrap_lon(center_lon + dlon),
            open,
            stock,
        })
}

fn network() -> impl Strategy<Value = (f64, Vec<StoreSpec>)> {
    // Half the networks straddle the antimeridian.
    prop_oneof![Just(180.0f64), Just(10.0f64)].prop_flat_map(|center| {
        (
            Just(center),
            proptest::collection::vec(store_spec(center), 1..30),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Without split, the allocation is at the nearest open store within the distance
    /// that has every line in stock, and is rejected exactly when there is none.
    #[test]
    fn allocate_matches_brute_force_oracle(
        (center, stores) in network(),
        pos in (-10.0f64..10.0, -8.0f64..8.0),
        max_km in 0.0f64..1_500.0,
        wants in proptest::collection::vec((0usize..3, 1u32..3), 1..3),
    ) {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        for (i, s) in stores.iter().enumerate() {
            let name = format!("s{i}");
            let mut def = StoreDef::new(name.clone(), s.lat, s.lon, "Europe/Berlin");
            if !s.open {
                def.status = StoreStatus::PickupsPaused;
            }
            engine.define_store(def, NOW).unwrap();
            for (k, q) in SKUS.iter().zip(s.stock) {
                receive(&engine, &name, k, q);
            }
        }
        let position = (45.0 + pos.0, wrap_lon(center + pos.1));
        let lines: Vec<LineRequest> =
            wants.iter().map(|(k, q)| LineRequest::new(SKUS[*k], *q)).collect();
        let mut need = [0i64; 3];
        for (k, q) in &wants {
            need[*k] += i64::from(*q);
        }
        let oracle = stores
            .iter()
            .filter(|s| s.open && (0..3).all(|k| s.stock[k] >= need[k]))
            .map(|s| haversine_km(position, (s.lat, s.lon)))
            .filter(|d| *d <= max_km)
            .min_by(f64::total_cmp);

        let mut req = AllocateRequest::near(position.0, position.1, lines);
        req.max_distance_km = max_km;
        req.max_candidates = 64;
        req.alternatives_max = 4;
        let out = engine.allocate(&req, NOW).unwrap();
        match (&out, oracle) {
            (AllocateOutcome::Allocated { parts, alternatives }, Some(best)) => {
                prop_assert_eq!(parts.len(), 1);
                prop_assert!((parts[0].distance_km - best).abs() < 1e-6,
                    "allocated at {} km, oracle {} km", parts[0].distance_km, best);
                prop_assert!(alternatives.len() <= 4);
                prop_assert!(alternatives.iter().all(|a| a.store != parts[0].store));
                let info = engine.hold_info(parts[0].grant.hold).unwrap();
                prop_assert_eq!(info.lines.iter().map(|l| u64::from(l.qty)).sum::<u64>(),
                    need.iter().sum::<i64>() as u64);
            }
            (AllocateOutcome::Rejected { .. }, None) => {
                prop_assert_eq!(engine.active_holds(), 0);
            }
            (out, oracle) => prop_assert!(false, "engine {:?}, oracle {:?}", out, oracle),
        }
        prop_assert!(engine.check_conservation().is_ok());
    }
}

fn three_stores() -> Engine {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    for (i, lon) in [13.40, 13.45, 13.50].iter().enumerate() {
        engine
            .define_store(
                StoreDef::new(format!("s{i}"), 52.5, *lon, "Europe/Berlin"),
                NOW,
            )
            .unwrap();
    }
    receive(&engine, "s0", "C", 5);
    receive(&engine, "s1", "A", 5);
    receive(&engine, "s2", "B", 5);
    engine
}

#[test]
fn split_only_when_allowed_and_all_or_nothing() {
    let engine = three_stores();
    let lines = vec![LineRequest::new("A", 2), LineRequest::new("B", 1)];
    let mut req = AllocateRequest::near(52.5, 13.40, lines);
    let out = engine.allocate(&req, NOW).unwrap();
    let AllocateOutcome::Rejected {
        reason,
        alternatives,
    } = out
    else {
        panic!("no single store has A and B: {out:?}")
    };
    assert_eq!(reason, AllocateRejection::NotCoverable);
    assert_eq!(alternatives.len(), 3);
    assert_eq!(alternatives[1].supply[0].available, 5, "s1 has 5 A");
    assert_eq!(engine.active_holds(), 0);

    req.allow_split = true;
    let out = engine.allocate(&req, NOW).unwrap();
    let parts = out.parts().expect("split allocation");
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].store_external_id, "s1");
    assert_eq!(parts[1].store_external_id, "s2");
    assert_eq!(engine.availability("s1", "A").unwrap().atp(), 3);
    assert_eq!(engine.availability("s2", "B").unwrap().atp(), 4);

    // Not coverable even split (D exists nowhere): nothing stays held.
    req.lines.push(LineRequest::new("D", 1));
    let before = engine.active_holds();
    assert!(matches!(
        engine.allocate(&req, NOW).unwrap(),
        AllocateOutcome::Rejected { .. }
    ));
    assert_eq!(engine.active_holds(), before);
    engine.check_conservation().unwrap();
}

#[test]
fn retry_with_the_same_key_returns_the_original_outcome() {
    let engine = three_stores();
    let mut req = AllocateRequest::near(52.5, 13.40, vec![LineRequest::new("A", 1)]);
    req.idempotency_key = Some("order-1".into());
    let first = engine.allocate(&req, NOW).unwrap();
    assert!(first.parts().is_some());
    let second = engine.allocate(&req, NOW).unwrap();
    assert_eq!(first, second);
    assert_eq!(engine.active_holds(), 1);
    assert_eq!(engine.availability("s1", "A").unwrap().atp(), 4);
}

fn calendar() -> CalendarConfig {
    CalendarConfig {
        time_zone: "Europe/Berlin".into(),
        weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((8, 0), (20, 0)).unwrap()]),
        exceptions: Vec::new(),
        pickup: PickupConfig {
            slot_len_min: 30,
            lead_time_min: 30,
            hold_grace_min: 15,
            pickups_per_staff_per_slot: 1,
        },
        staffing: WeeklyStaffing::every_day(&[StaffShift::hm((8, 0), (20, 0), 1).unwrap()]),
    }
}

#[test]
fn want_slot_books_the_estimated_slot_and_moves_on_when_full() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    engine
        .define_store(StoreDef::new("near", 52.5, 13.40, "Europe/Berlin"), NOW)
        .unwrap();
    engine.set_calendar("near", calendar(), NOW).unwrap();
    receive(&engine, "near", "A", 10);
    let mut req = AllocateRequest::near(52.5, 13.40, vec![LineRequest::new("A", 1)]);
    req.want_slot = true;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let out = engine.allocate(&req, NOW).unwrap();
        let part = &out.parts().expect("allocated")[0];
        let slot = part.slot.expect("slot booked");
        let est = part.estimate.expect("estimate");
        assert_eq!(est.slot, slot);
        // Capacity 1 per slot: every allocation gets a later slot.
        assert!(seen.iter().all(|s: &i64| *s < slot.start_ms));
        assert!(slot.start_ms >= NOW.as_ms() + 30 * 60_000);
        assert_eq!(engine.slot_booked("near", slot.start_ms).unwrap(), 1);
        assert_eq!(
            engine.hold_info(part.grant.hold).unwrap().expires_at,
            Timestamp(slot.end_ms + 15 * 60_000)
        );
        seen.push(slot.start_ms);
    }
    // The next estimate is after the booked slots.
    let est = engine.estimate_ready("near", NOW).unwrap().unwrap();
    assert!(est.slot.start_ms > *seen.last().unwrap());

    // A store closed at the requested time is skipped: at 21:00 Berlin "near" is closed,
    // the farther store without calendar is open.
    engine
        .define_store(StoreDef::new("far", 52.5, 13.60, "Europe/Berlin"), NOW)
        .unwrap();
    receive(&engine, "far", "A", 10);
    let mut req = AllocateRequest::near(52.5, 13.40, vec![LineRequest::new("A", 1)]);
    req.earliest_pickup_ms = Some(NOW.as_ms() + 12 * 3_600_000); // 21:00 CET
    let out = engine.allocate(&req, NOW).unwrap();
    assert_eq!(out.parts().unwrap()[0].store_external_id, "far");
}

#[test]
fn concurrent_split_allocations_never_deadlock_or_oversell() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
    let skus = ["P", "Q", "R", "S"];
    for i in 0..6 {
        let name = format!("s{i}");
        engine
            .define_store(
                StoreDef::new(name.clone(), 50.0, 10.0 + 0.01 * i as f64, "Europe/Berlin"),
                NOW,
            )
            .unwrap();
        // Each store stocks two of the four SKUs: most orders need a split.
        for (j, k) in skus.iter().enumerate() {
            if (i + j) % 3 != 0 {
                receive(&engine, &name, k, 40);
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let (engine, tx) = (engine.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut granted = 0usize;
            for r in 0..ROUNDS {
                // Lines in different orders, from different ends of the network.
                let mut lines: Vec<LineRequest> =
                    skus.iter().map(|k| LineRequest::new(*k, 1)).collect();
                lines.rotate_left((t + r) % 4);
                if t % 2 == 1 {
                    lines.reverse();
                }
                let lon = if t % 2 == 0 { 10.0 } else { 10.05 };
                let mut req = AllocateRequest::near(50.0, lon, lines);
                req.allow_split = true;
                let out = engine.allocate(&req, NOW).unwrap();
                if let Some(parts) = out.parts() {
                    granted += 1;
                    if r % 2 == 0 {
                        for p in parts {
                            engine.release(p.grant.hold, NOW).unwrap();
                        }
                    }
                }
            }
            tx.send(granted).unwrap();
        });
    }
    drop(tx);
    let mut total = 0;
    for _ in 0..THREADS {
        total += rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a split allocation thread is stuck: deadlock");
    }
    assert!(total > 0);
    engine.check_conservation().unwrap();
    for i in 0..6 {
        for k in skus {
            let v = engine.availability(&format!("s{i}"), k).unwrap();
            assert!(v.held <= v.on_hand, "s{i}/{k}: {v:?}");
        }
    }
}
