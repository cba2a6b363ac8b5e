//! `pickline bench intake`: normalize + validate throughput of the Shopify fixture on one
//! thread (SPEC target: 50,000 orders per second per core).

use std::time::{Duration, Instant};

use super::{Channel, IntakeConfig, Payload, Verdict};

/// The Shopify orders/create sample (`tests/fixtures/channels/shopify_order.json`, 14,894
/// bytes), embedded so the benchmark runs from any directory.
pub const SHOPIFY_ORDER: &[u8] = include_bytes!("../../tests/fixtures/channels/shopify_order.json");

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct IntakeBenchConfig {
    /// Untimed iterations first (caches, allocator).
    pub warmup: Duration,
    /// Timed run length.
    pub measure: Duration,
}

impl IntakeBenchConfig {
    /// The full run.
    pub fn full() -> Self {
        IntakeBenchConfig {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        IntakeBenchConfig {
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(200),
        }
    }
}

/// The figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IntakeBenchReport {
    /// Orders normalized and validated per second, one thread.
    pub shopify_orders_per_s: f64,
    /// Orders processed in the timed run.
    pub orders: u64,
    /// Size of one payload.
    pub payload_bytes: usize,
}

impl IntakeBenchReport {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        format!(
            "shopify_orders_per_s {:.0} ({} orders of {} bytes, normalize + validate, 1 thread)\n",
            self.shopify_orders_per_s, self.orders, self.payload_bytes
        )
    }
}

/// Normalizes and validates the Shopify fixture in a loop on this thread.
pub fn run(cfg: &IntakeBenchConfig) -> IntakeBenchReport {
    let config = IntakeConfig::default();
    let once = || {
        let payload = Payload {
            body: std::hint::black_box(SHOPIFY_ORDER),
            related: &[],
        };
        let verdict = super::evaluate(Channel::Shopify, "bench", payload, &config);
        // The sample is a test order without pickup: refused by the default rules, after
        // the full normalization and every rule.
        debug_assert!(matches!(verdict, Verdict::Rejected { .. }));
        std::hint::black_box(verdict);
    };
    let start = Instant::now();
    while start.elapsed() < cfg.warmup {
        once();
    }
    let mut orders = 0u64;
    let start = Instant::now();
    let elapsed = loop {
        for _ in 0..256 {
            once();
        }
        orders += 256;
        let elapsed = start.elapsed();
        if elapsed >= cfg.measure {
            break elapsed;
        }
    };
    IntakeBenchReport {
        shopify_orders_per_s: orders as f64 / elapsed.as_secs_f64(),
        orders,
        payload_bytes: SHOPIFY_ORDER.len(),
    }
}
