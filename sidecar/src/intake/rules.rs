//! Validation rules over a canonical order. Pure: no I/O, no side effects, so
//! `pickline intake rules` and the live flow give the same answers.

use serde::Serialize;

use super::config::{Action, RequiredField, Rules};
use super::model::{CanonicalOrder, SkuSource};
use super::reason::{Reason, ReasonCode};

/// A rule that tripped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    /// Reject or warn (rules that are off never trip).
    pub action: Action,
    /// The reason.
    #[serde(flatten)]
    pub reason: Reason,
}

/// Every rule of `rules` that `order` trips, in a fixed order.
pub fn check(order: &CanonicalOrder, rules: &Rules) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    let mut hit = |action: Action, code: ReasonCode, message: String| {
        if action != Action::Off {
            hits.push(RuleHit {
                action,
                reason: Reason::new(code, message),
            });
        }
    };
    if order.pickups.is_empty() {
        hit(
            rules.not_pickup,
            ReasonCode::NotPickup,
            format!(
                "no line is for store pickup ({})",
                order.not_pickup.as_deref().unwrap_or("no pickup indicated")
            ),
        );
    }
    if order.test {
        hit(
            rules.test_order,
            ReasonCode::TestOrder,
            "the platform marks this as a test order".to_owned(),
        );
    }
    if order.customer.email.is_none() && order.customer.phone.is_none() {
        hit(
            rules.contact,
            ReasonCode::ContactMissing,
            "neither an email address nor a phone number".to_owned(),
        );
    }
    if !rules.currencies.is_empty() && !rules.currencies.contains(&order.currency) {
        hit(
            rules.currency,
            ReasonCode::CurrencyNotAllowed,
            format!(
                "currency {} is not one of {}",
                order.currency,
                rules.currencies.join(", ")
            ),
        );
    }
    for g in &order.pickups {
        if !rules.stores.is_empty() && !rules.stores.contains(&g.store) {
            hit(
                rules.store,
                ReasonCode::StoreNotAllowed,
                format!("pickup store {:?} is not an allowed store", g.store),
            );
        }
    }
    let pickup_lines = order.pickups.iter().map(|g| g.lines.len()).sum::<usize>();
    if pickup_lines > rules.lines_max as usize {
        hit(
            rules.lines,
            ReasonCode::TooManyLines,
            format!("{pickup_lines} pickup lines, more than {}", rules.lines_max),
        );
    }
    for line in order.pickups.iter().flat_map(|g| &g.lines) {
        if line.qty > rules.line_qty_max {
            hit(
                rules.line_qty,
                ReasonCode::QuantityTooLarge,
                format!(
                    "SKU {:?}: {} units, more than {}",
                    line.sku, line.qty, rules.line_qty_max
                ),
            );
        }
    }
    for field in &rules.required_fields {
        let present = match field {
            RequiredField::CustomerName => order.customer.name.is_some(),
            RequiredField::Email => order.customer.email.is_some(),
            RequiredField::Phone => order.customer.phone.is_some(),
            RequiredField::OrderNumber => order.order_number.is_some(),
            RequiredField::Total => order.total_minor.is_some(),
            RequiredField::HoldRef => order.hold_ref.is_some(),
        };
        if !present {
            let name = serde_json::to_value(field)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            hit(
                rules.required,
                ReasonCode::RequiredFieldMissing,
                format!("required field {name} is missing"),
            );
        }
    }
    for line in order.all_lines() {
        if line.sku_source == SkuSource::VariantId {
            hit(
                rules.sku_fallback,
                ReasonCode::SkuFallback,
                format!(
                    "a line has no SKU; its variant or product id {:?} stands in",
                    line.sku
                ),
            );
        }
    }
    hits
}
