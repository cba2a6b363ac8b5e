//! The KPIs the simulator reports, each with its definition (kept next to its code and
//! printed in the report).

use std::collections::BTreeMap;

use serde::Serialize;

/// KPI definitions, as printed under the table and in the HTML report.
pub const DEFINITIONS: [(&str, &str); 8] = [
    (
        "fulfillment_avg_min / fulfillment_p90_min",
        "time from order placed (hold granted, order created and confirmed) to ready for \
         pickup, counting only minutes the store is open (an order placed at night is not \
         late before the store opens); over every order that reached ready",
    ),
    (
        "inventory_accuracy",
        "share of sampled store-SKU cells whose engine on_hand equals the simulated physical \
         stock in the store (shelf plus picked, not yet collected units); cells drawn \
         uniformly every sample_every_min minutes of simulated time",
    ),
    (
        "pickup_conversion",
        "orders collected / orders that reached ready and whose outcome is known at the \
         end of the run (collected or no-show)",
    ),
    (
        "oversells",
        "units the engine granted to a hold while the shelf could not cover every unit \
         promised to not yet picked orders of that cell (a promise beyond physical stock, \
         from a stale, dropped or missing POS event); counted when granted",
    ),
    (
        "shortages",
        "short_pick_units: units found missing when picking (walk-ins took promised units, \
         shrink); shortage_events: POS events after which the engine had on_hand < held",
    ),
    (
        "orders / orders_refused",
        "online orders placed; orders refused by the first store and up to two nearest \
         alternatives, by the last refusal's reason",
    ),
    (
        "no_shows",
        "ready orders whose shopper did not come by the slot end plus the grace period",
    ),
    (
        "lost_walkin_units",
        "walk-in demand that found an empty shelf",
    ),
];

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Kpis {
    /// Online orders placed.
    pub orders: u64,
    /// Orders refused, by reason.
    pub orders_refused: BTreeMap<String, u64>,
    /// Orders that reached ready.
    pub orders_ready: u64,
    /// Orders collected.
    pub orders_collected: u64,
    /// Orders cancelled because picking found nothing left.
    pub orders_cancelled_short: u64,
    /// No-shows.
    pub no_shows: u64,
    /// Average fulfillment time, open-store minutes.
    pub fulfillment_avg_min: f64,
    /// 90th percentile fulfillment time, open-store minutes.
    pub fulfillment_p90_min: f64,
    /// Collected / ready.
    pub pickup_conversion: f64,
    /// Matching cells / sampled cells.
    pub inventory_accuracy: f64,
    /// Cells sampled.
    pub accuracy_cells_sampled: u64,
    /// Units promised beyond the shelf.
    pub oversells: u64,
    /// Units found missing when picking.
    pub short_pick_units: u64,
    /// Picks with a missing unit.
    pub short_picks: u64,
    /// POS events after which on_hand < held.
    pub shortage_events: u64,
    /// Walk-in units sold.
    pub walkin_units: u64,
    /// Walk-in units that found an empty shelf.
    pub lost_walkin_units: u64,
    /// POS events sent (duplicates included).
    pub pos_events_sent: u64,
    /// Duplicates sent.
    pub pos_duplicates_sent: u64,
    /// Duplicates the backend recognized.
    pub pos_duplicates_dropped: u64,
    /// POS events lost in the feed.
    pub pos_events_lost: u64,
    /// Units lost without a POS event.
    pub shrink_units: u64,
    /// Nightly counts applied (cells).
    pub counts_applied: u64,
    /// Spot counts applied when a picker left a shelf empty (cells).
    pub empty_shelf_counts: u64,
    /// Holds the backend expired on its own.
    pub holds_expired: u64,
    /// Whether the engine's conservation check passed at the end (absent over gRPC).
    pub conservation_ok: Option<bool>,
}

/// Accumulates fulfillment times and ratios.
#[derive(Debug, Default, Clone)]
pub struct KpiAcc {
    /// Fulfillment times, ms of open store time.
    pub fulfillment_ms: Vec<i64>,
    /// Accuracy matches.
    pub acc_match: u64,
    /// Accuracy samples.
    pub acc_total: u64,
}

impl KpiAcc {
    /// Average of the fulfillment times, minutes (0 when none).
    pub fn fulfillment_avg_min(&self) -> f64 {
        if self.fulfillment_ms.is_empty() {
            return 0.0;
        }
        self.fulfillment_ms.iter().map(|v| *v as f64).sum::<f64>()
            / self.fulfillment_ms.len() as f64
            / 60_000.0
    }

    /// Nearest-rank 90th percentile of the fulfillment times, minutes (0 when none).
    pub fn fulfillment_p90_min(&self) -> f64 {
        percentile_min(&self.fulfillment_ms, 0.9)
    }

    /// Matching / sampled (1 when nothing was sampled).
    pub fn accuracy(&self) -> f64 {
        ratio(self.acc_match, self.acc_total)
    }
}

/// Nearest-rank percentile `q` of `ms` values, in minutes (0 when empty).
pub fn percentile_min(ms: &[i64], q: f64) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    let mut v = ms.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64 / 60_000.0
}

/// `num / den`, or 1 when `den` is 0 (nothing to get wrong).
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Units a grant promises beyond the shelf: the excess of promised over shelf after the
/// grant, less the excess that was already there before it.
pub fn oversold_units(shelf: u32, promised_before: u32, qty: u32) -> u32 {
    let after = promised_before.saturating_add(qty);
    after
        .saturating_sub(shelf)
        .saturating_sub(promised_before.saturating_sub(shelf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let ms: Vec<i64> = (1..=10).map(|m| m * 60_000).collect();
        assert_eq!(percentile_min(&ms, 0.9), 9.0);
        assert_eq!(percentile_min(&ms, 0.5), 5.0);
        assert_eq!(percentile_min(&ms[..1], 0.9), 1.0);
        assert_eq!(percentile_min(&[], 0.9), 0.0);
    }

    #[test]
    fn averages_and_ratios() {
        let acc = KpiAcc {
            fulfillment_ms: vec![60_000, 180_000],
            acc_match: 998,
            acc_total: 1000,
        };
        assert_eq!(acc.fulfillment_avg_min(), 2.0);
        assert_eq!(acc.accuracy(), 0.998);
        assert_eq!(ratio(0, 0), 1.0);
        assert_eq!(ratio(19, 20), 0.95);
    }

    #[test]
    fn oversell_counts_only_new_excess() {
        // Shelf covers everything: nothing oversold.
        assert_eq!(oversold_units(5, 2, 3), 0);
        // One unit beyond the shelf.
        assert_eq!(oversold_units(5, 2, 4), 1);
        // Already 2 beyond (walk-ins took them): a new grant of 1 adds 1.
        assert_eq!(oversold_units(3, 5, 1), 1);
        // Empty shelf: every unit is oversold.
        assert_eq!(oversold_units(0, 0, 2), 2);
    }
}
