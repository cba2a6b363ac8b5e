//! The smoke preset end to end against the real engine: deterministic, no oversell by the
//! engine's own accounting, KPIs in their ranges, and the HTML report renders.

use super::*;

fn smoke_run(seed: u64) -> SimReport {
    let sc = Scenario::smoke(seed);
    let mut be = EngineBackend::new(sc.stores, sc.skus).expect("engine");
    run(&sc, &mut be, "engine", |_, _| {}).expect("smoke run")
}

#[test]
fn smoke_is_deterministic_and_sane() {
    let a = smoke_run(7);
    let b = smoke_run(7);
    assert_eq!(a.to_json(), b.to_json(), "same seed, same report");
    let c = smoke_run(8);
    assert_ne!(a.to_json(), c.to_json(), "another seed, another run");

    let k = &a.kpis;
    assert!(a.orders > 100, "orders {}", a.orders);
    assert_eq!(k.conservation_ok, Some(true));
    assert_eq!(a.oversells, 0, "{}", a.to_table());
    assert!(k.orders_ready > 0 && k.orders_collected > 0);
    assert!(k.orders_collected <= k.orders_ready);
    assert!(k.orders_ready <= a.orders);
    assert!((0.0..=1.0).contains(&a.inventory_accuracy));
    assert!((0.0..=1.0).contains(&a.pickup_conversion));
    assert!(a.fulfillment_avg_min > 0.0 && a.fulfillment_p90_min >= a.fulfillment_avg_min * 0.5);
    // The feed's faults happened and the engine dropped the duplicates it received.
    assert!(k.pos_duplicates_sent > 0);
    assert_eq!(k.pos_duplicates_dropped, k.pos_duplicates_sent);
    assert!(k.counts_applied > 0);
    assert_eq!(a.timeline.len(), 24 * 60 / 15);
    let json: serde_json::Value = serde_json::from_str(&a.to_json()).expect("json");
    for f in [
        "oversells",
        "inventory_accuracy",
        "fulfillment_avg_min",
        "fulfillment_p90_min",
        "pickup_conversion",
        "orders",
    ] {
        assert!(json[f].is_number(), "{f} missing");
    }
    let html = html::render(&a).expect("html");
    assert!(html.starts_with("<!doctype html>") && html.matches("<svg").count() == 5);
}

#[test]
fn store_hours_follow_the_time_zone() {
    let sc = Scenario::smoke(1);
    let mut be = EngineBackend::new(sc.stores, sc.skus).expect("engine");
    let mut sim = Sim::new(&sc, &mut be);
    sim.setup().expect("setup");
    for s in 0..sim.stores.len() {
        let off = ZONES[sim.stores[s].zone].utc_offset_h;
        // Local 07:00 of day 0 (campaign day: open from 6) and local 23:00.
        let seven = sc.start_ms - (off + 5) * HOUR + 7 * HOUR;
        assert!(sim.is_open(s, seven));
        assert!(!sim.is_open(s, seven + 16 * HOUR));
        // Open 06:00-22:00 on the campaign day: 16 hours in a whole day.
        let midnight = seven - 7 * HOUR;
        assert_eq!(sim.open_ms_between(s, midnight, midnight + DAY), 16 * HOUR);
        // Closed evening to next morning: only the morning's open time counts.
        assert_eq!(
            sim.open_ms_between(s, midnight + 21 * HOUR, midnight + DAY + 9 * HOUR),
            HOUR + HOUR
        );
    }
}
