//! A writer process for the kill-and-restart test: opens a durable engine in the directory
//! given as its argument (recovering whatever is there), then places durable holds forever,
//! printing `ACK <hold id> <qty>` only after each hold's record is durable. The test kills
//! it with SIGKILL at random moments.

use std::io::Write;
use std::sync::Arc;

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::FileStorage;
use pickline_engine::{
    HoldOutcome, HoldRequest, LineRequest, PosDelta, PosDeltaKind, StoreDef, Timestamp,
};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: pickline-crash-writer DIR");
    let storage = Arc::new(FileStorage::open(&dir).expect("open dir"));
    let db = DurableEngine::open(storage, OpenOptions::default()).expect("recover");
    let engine = db.engine().clone();
    // Time is injected; a fixed clock keeps every hold far from expiry.
    let now = Timestamp::from_ms(1_780_000_000_000);
    if engine.store_id("store-1").is_none() {
        let mut def = StoreDef::new("store-1", 52.5, 13.4, "Europe/Berlin");
        def.max_hold_ms = 14 * 24 * 3_600_000;
        def.default_hold_ms = 14 * 24 * 3_600_000;
        engine.define_store(def, now).expect("store");
        engine
            .apply_delta(
                &PosDelta {
                    store: "store-1".into(),
                    sku: "SKU".into(),
                    pos_event_id: "stock".into(),
                    kind: PosDeltaKind::Receive,
                    qty: 1_000_000_000,
                    order_ref: None,
                    pos_time: now,
                },
                now,
            )
            .expect("stock");
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    i += 1;
                    let qty = 1 + ((i + t) % 3) as u32;
                    let req = HoldRequest::new("store-1", vec![LineRequest::new("SKU", qty)]);
                    match engine.hold(&req, now) {
                        Ok(HoldOutcome::Granted(g)) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "ACK {} {}", g.hold.0, qty);
                            let _ = out.flush();
                        }
                        Ok(other) => panic!("hold refused: {other:?}"),
                        Err(e) => panic!("hold failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
