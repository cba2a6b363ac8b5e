//! BigCommerce: the v2 order with its products and consignments.
//!
//! - Webhooks are thin (`store/order/*` carries `{type, id}` only): they are refused with
//!   `needs_enrichment` naming the order to fetch (the flow fetches it when
//!   `[intake.bigcommerce.enrich]` is set, see [`super::enrich`], and gives the order as
//!   the body). A webhook about something else than an order is `not_an_order`. An order
//!   whose `products` is still the sub-resource reference is refused the same way. The
//!   products (`GET /v2/orders/{id}/products`, a JSON array) and consignments (`GET
//!   /v2/orders/{id}/consignments`, or `?include=consignments`, object structure:
//!   `{"pickups": [...], "shipping": [...]}`) come as related documents.
//! - Pickup: a non-empty `consignments.pickups`, at `location.code` (else its id).
//!   BigCommerce forbids mixing pickup and shipping, so every physical product goes there.
//!   Without consignments, pickup evidence (status 8 "Awaiting Pickup", or a product with
//!   `order_pickup_method_id` other than 0) is refused as `needs_enrichment`, never guessed.
//! - Money: 4-decimal strings; unit price `price_ex_tax`, or `price_inc_tax` when
//!   `is_tax_inclusive_pricing`. Bundled children (`parent_order_product_id`) are their own
//!   physical products and count once each; digital products are not picked up.
//! - Status: 0 (Incomplete: failed payments fire webhooks too) is refused; paid = status
//!   2, 3, 8, 9, 10 or 11; cancelled = 5 or 6. Version: `date_modified` in ms.

use serde::Deserialize;

use super::fields::{
    Currency, Flag, Problems, Text, TimeFormat, flag, full_name, parse_json, quantity,
    required_time, text, timestamp, version_ms,
};
use super::{
    Context, Destination, Draft, Line, Payload, Reason, ReasonCode, done, sku_or_fallback,
};

#[derive(Deserialize)]
struct Order {
    id: Option<Text>,
    scope: Option<Text>,
    data: Option<WebhookData>,
    date_created: Option<Text>,
    date_modified: Option<Text>,
    status_id: Option<Text>,
    currency_code: Option<Text>,
    total_inc_tax: Option<Text>,
    is_tax_inclusive_pricing: Option<Flag>,
    customer_locale: Option<Text>,
    billing_address: Option<Billing>,
    products: Option<serde_json::Value>,
    consignments: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WebhookData {
    #[serde(rename = "type")]
    kind: Option<Text>,
    id: Option<Text>,
}

#[derive(Deserialize)]
struct Billing {
    first_name: Option<Text>,
    last_name: Option<Text>,
    email: Option<Text>,
    phone: Option<Text>,
}

#[derive(Deserialize)]
struct Product {
    order_id: Option<Text>,
    product_id: Option<Text>,
    variant_id: Option<Text>,
    sku: Option<Text>,
    #[serde(rename = "type")]
    kind: Option<Text>,
    quantity: Option<Text>,
    price_ex_tax: Option<Text>,
    price_inc_tax: Option<Text>,
    order_pickup_method_id: Option<Text>,
}

#[derive(Deserialize)]
struct Consignments {
    #[serde(default)]
    pickups: Vec<PickupConsignment>,
}

#[derive(Deserialize)]
struct PickupConsignment {
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Location {
    id: Option<Text>,
    code: Option<Text>,
}

/// Whether `v` is the consignments object, not the `{url, resource}` reference an order
/// has in its place without `?include=consignments`: it has at least one of its lists (a
/// missing `pickups` reads as none).
fn is_consignments(v: &serde_json::Value) -> bool {
    ["pickups", "shipping", "downloads", "email"]
        .iter()
        .any(|k| v.get(k).is_some())
}

/// Status ids BigCommerce gives paid orders.
const PAID_STATUS: [&str; 6] = ["2", "3", "8", "9", "10", "11"];
/// "Awaiting Pickup".
const AWAITING_PICKUP: &str = "8";

/// Builds the draft of a BigCommerce order (see the module doc).
pub(crate) fn adapt(payload: Payload<'_>, _ctx: &Context<'_>) -> Result<Draft, Vec<Reason>> {
    let order: Order = parse_json("BigCommerce order", payload.body).map_err(|r| vec![r])?;
    if let Some(scope) = text(&order.scope) {
        let data = order.data.as_ref();
        if let Some(kind) = data.and_then(|d| text(&d.kind)).filter(|k| k != "order") {
            return Err(vec![Reason::new(
                ReasonCode::NotAnOrder,
                format!("webhook {scope} is about a {kind}, not an order"),
            )]);
        }
        let id = data.and_then(|d| text(&d.id)).unwrap_or_default();
        return Err(vec![Reason::new(
            ReasonCode::NeedsEnrichment,
            format!(
                "thin webhook {scope}: fetch order {id}, its products and consignments \
                 (GET /v2/orders/{id}, /v2/orders/{id}/products, /v2/orders/{id}/consignments)"
            ),
        )]);
    }
    let mut p = Problems::default();
    let mut d = Draft {
        order_id: text(&order.id).unwrap_or_default(),
        ..Draft::default()
    };
    d.order_number = (!d.order_id.is_empty()).then(|| d.order_id.clone());
    let status = text(&order.status_id).unwrap_or_default();
    if status == "0" {
        return Err(vec![Reason::new(
            ReasonCode::IncompleteOrder,
            format!("order {} is Incomplete (status 0)", d.order_id),
        )]);
    }
    d.created_at = p.take(required_time(
        "date_created",
        &order.date_created,
        TimeFormat::Rfc2822,
    ));
    d.version = match text(&order.date_modified) {
        Some(t) => p
            .take(timestamp("date_modified", &t, TimeFormat::Rfc2822))
            .map_or(0, version_ms),
        None => d.created_at.map_or(0, version_ms),
    };
    d.currency = p.take(Currency::parse(
        "currency_code",
        text(&order.currency_code).as_deref(),
    ));
    d.prices_include_tax = flag(order.is_tax_inclusive_pricing);
    if let (Some(c), Some(t)) = (d.currency, text(&order.total_inc_tax)) {
        d.total_minor = p.take(c.minor("total_inc_tax", &t));
    }
    d.paid = PAID_STATUS.contains(&status.as_str());
    d.cancelled = status == "5" || status == "6";
    if let Some(b) = &order.billing_address {
        d.customer.name = full_name(&b.first_name, &b.last_name);
        d.customer.email = text(&b.email);
        d.customer.phone = text(&b.phone);
    }
    d.customer.locale = text(&order.customer_locale);

    // Sub-resources: embedded in the order, or as related documents.
    let mut products = order
        .products
        .filter(serde_json::Value::is_array)
        .map(serde_json::from_value::<Vec<Product>>);
    let mut consignments = order
        .consignments
        .filter(is_consignments)
        .map(serde_json::from_value::<Consignments>);
    for (i, doc) in payload.related.iter().enumerate() {
        match serde_json::from_slice::<serde_json::Value>(doc) {
            Ok(v @ serde_json::Value::Array(_)) => products = Some(serde_json::from_value(v)),
            Ok(v) if is_consignments(&v) => consignments = Some(serde_json::from_value(v)),
            _ => p.push(Reason::new(
                ReasonCode::Malformed,
                format!("related document {i}: neither a products array nor a consignments object"),
            )),
        }
    }
    let products = match products {
        Some(Ok(list)) => list,
        Some(Err(e)) => {
            p.push(Reason::new(ReasonCode::Malformed, format!("products: {e}")));
            return done(d, p);
        }
        None => {
            p.push(Reason::new(
                ReasonCode::NeedsEnrichment,
                format!(
                    "order {} without its products: fetch GET /v2/orders/{}/products",
                    d.order_id, d.order_id
                ),
            ));
            return done(d, p);
        }
    };
    let pickup_location = match consignments {
        Some(Ok(c)) => match c.pickups.as_slice() {
            [] => None,
            [one] => {
                let loc = one
                    .location
                    .as_ref()
                    .and_then(|l| text(&l.code).or_else(|| text(&l.id)));
                if loc.is_none() {
                    p.push(Reason::new(
                        ReasonCode::PickupLocationMissing,
                        "a pickup consignment without a location code or id",
                    ));
                }
                loc
            }
            _ => {
                p.push(Reason::new(
                    ReasonCode::Inconsistent,
                    "several pickup consignments (BigCommerce allows one)",
                ));
                None
            }
        },
        Some(Err(e)) => {
            p.push(Reason::new(
                ReasonCode::Malformed,
                format!("consignments: {e}"),
            ));
            None
        }
        None => {
            let pickup_method = products
                .iter()
                .any(|pr| text(&pr.order_pickup_method_id).is_some_and(|m| m != "0"));
            if status == AWAITING_PICKUP || pickup_method {
                p.push(Reason::new(
                    ReasonCode::NeedsEnrichment,
                    format!(
                        "order {} is for pickup but came without its consignments: fetch \
                         GET /v2/orders/{}?include=consignments",
                        d.order_id, d.order_id
                    ),
                ));
            }
            None
        }
    };
    d.not_pickup = Some(match &pickup_location {
        Some(_) => "digital products are not picked up".to_owned(),
        None => "no pickup consignment; status and products name no pickup method".to_owned(),
    });

    for (i, pr) in products.iter().enumerate() {
        let field = format!("products[{i}]");
        if let Some(other) = text(&pr.order_id).filter(|o| *o != d.order_id) {
            p.push(Reason::new(
                ReasonCode::Inconsistent,
                format!("{field} belongs to order {other}, not {}", d.order_id),
            ));
            continue;
        }
        let qty = match &pr.quantity {
            Some(q) => p.take(quantity(&format!("{field}.quantity"), q)),
            None => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.quantity: missing"),
                ));
                None
            }
        };
        let sku = p.take(sku_or_fallback(
            &field,
            text(&pr.sku),
            text(&pr.variant_id).or_else(|| text(&pr.product_id)),
        ));
        let (price_name, price) = if d.prices_include_tax {
            ("price_inc_tax", &pr.price_inc_tax)
        } else {
            ("price_ex_tax", &pr.price_ex_tax)
        };
        let price = match (d.currency, text(price)) {
            (Some(c), Some(t)) => p.take(c.minor(&format!("{field}.{price_name}"), &t)),
            (_, None) => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.{price_name}: missing"),
                ));
                None
            }
            (None, _) => None,
        };
        let digital = text(&pr.kind).as_deref() == Some("digital");
        let dest = match (&pickup_location, digital) {
            (Some(loc), false) => Destination::Pickup(loc.clone()),
            _ => Destination::Other,
        };
        if let (Some(qty), Some((sku, sku_source)), Some(unit_price_minor)) = (qty, sku, price) {
            d.lines.push((
                dest,
                Line {
                    sku,
                    sku_source,
                    qty,
                    unit_price_minor,
                },
            ));
        }
    }
    done(d, p)
}
