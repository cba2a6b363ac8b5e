//! Shopify: the REST Admin order of `orders/create|updated` webhooks.
//!
//! - Ids are 64-bit (above 2^53) and kept as their digits.
//! - Quantities: `current_quantity` (after edits and removals) when present, else
//!   `quantity`; a line at 0 was removed and is skipped. Gift cards are never picked up.
//! - Unit price: the line `price` (shop currency, as entered: `taxes_included` says
//!   whether it includes tax). Total: `current_total_price`, else `total_price`.
//! - Pickup is not in the order: it is on its FulfillmentOrders
//!   (`delivery_method.method_type == "pick_up"` at `assigned_location_id`), passed as
//!   related documents (`{"fulfillment_order": {...}}`, `{"fulfillment_orders": [...]}` or a
//!   bare FulfillmentOrder). Lines of a pick-up FulfillmentOrder go to its location, one
//!   group per location, with the delivery method's `min/max_delivery_date_time` as the
//!   pickup window; lines of other FulfillmentOrders are not picked up. Without
//!   FulfillmentOrders, pickup apps' `note_attributes` (`Checkout-Method: pickup`, with
//!   `Pickup-Location-Id` or else `Pickup-Location-Company`) count; nothing else does (the
//!   shipping-line heuristics are guesses).
//! - Email: `email`, else `contact_email`, else `customer.email`. Phone: `phone`, else the
//!   billing, shipping, then customer phone. Name: customer, else billing address.
//! - Paid: `financial_status` is `paid`. Version: `updated_at` in ms.

use serde::Deserialize;

use super::fields::{
    Currency, Problems, Text, TimeFormat, flag, full_name, parse_json, quantity, required_time,
    text, version_ms,
};
use super::{
    Context, Destination, Draft, Line, Payload, PickupWindow, Reason, ReasonCode, done,
    sku_or_fallback,
};

#[derive(Deserialize)]
struct Order {
    id: Option<Text>,
    admin_graphql_api_id: Option<Text>,
    name: Option<Text>,
    created_at: Option<Text>,
    updated_at: Option<Text>,
    cancelled_at: Option<Text>,
    currency: Option<Text>,
    current_total_price: Option<Text>,
    total_price: Option<Text>,
    taxes_included: Option<super::fields::Flag>,
    financial_status: Option<Text>,
    test: Option<super::fields::Flag>,
    email: Option<Text>,
    contact_email: Option<Text>,
    phone: Option<Text>,
    customer_locale: Option<Text>,
    customer: Option<Customer>,
    billing_address: Option<Address>,
    shipping_address: Option<Address>,
    #[serde(default)]
    note_attributes: Option<Vec<NoteAttribute>>,
    line_items: Option<Vec<LineItem>>,
    /// Not a Shopify field: present when the body itself is a FulfillmentOrder.
    fulfillment_order: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Customer {
    first_name: Option<Text>,
    last_name: Option<Text>,
    email: Option<Text>,
    phone: Option<Text>,
}

#[derive(Deserialize)]
struct Address {
    name: Option<Text>,
    first_name: Option<Text>,
    last_name: Option<Text>,
    phone: Option<Text>,
}

#[derive(Deserialize)]
struct NoteAttribute {
    name: Option<Text>,
    value: Option<Text>,
}

#[derive(Deserialize)]
struct LineItem {
    id: Option<Text>,
    sku: Option<Text>,
    variant_id: Option<Text>,
    product_id: Option<Text>,
    quantity: Option<Text>,
    current_quantity: Option<Text>,
    price: Option<Text>,
    gift_card: Option<super::fields::Flag>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FulfillmentDoc {
    Wrapped {
        fulfillment_order: FulfillmentOrder,
    },
    List {
        fulfillment_orders: Vec<FulfillmentOrder>,
    },
    Bare(FulfillmentOrder),
}

#[derive(Deserialize)]
struct FulfillmentOrder {
    order_id: Text,
    assigned_location_id: Option<Text>,
    delivery_method: Option<DeliveryMethod>,
    #[serde(default)]
    line_items: Vec<FulfillmentLine>,
}

#[derive(Deserialize)]
struct DeliveryMethod {
    method_type: Option<Text>,
    presented_name: Option<Text>,
    min_delivery_date_time: Option<Text>,
    max_delivery_date_time: Option<Text>,
}

#[derive(Deserialize)]
struct FulfillmentLine {
    line_item_id: Option<Text>,
    quantity: Option<Text>,
}

/// The pickup window of a pick-up FulfillmentOrder, from its delivery method's min and
/// max times (RFC 3339 with an offset).
fn window(m: &DeliveryMethod) -> Result<Option<PickupWindow>, Reason> {
    let utc = |field: &str, raw: &Option<Text>| {
        text(raw)
            .map(|t| super::fields::timestamp(field, &t, TimeFormat::Rfc3339))
            .transpose()
    };
    let start = utc("min_delivery_date_time", &m.min_delivery_date_time)?;
    let end = utc("max_delivery_date_time", &m.max_delivery_date_time)?;
    Ok(start.map(|start| PickupWindow {
        start: start.to_string(),
        end: end.map(|e| e.to_string()),
    }))
}

/// Builds the draft of a Shopify order (see the module doc).
pub(crate) fn adapt(payload: Payload<'_>, ctx: &Context<'_>) -> Result<Draft, Vec<Reason>> {
    let order: Order = parse_json("Shopify order", payload.body).map_err(|r| vec![r])?;
    if order.fulfillment_order.is_some() {
        return Err(vec![Reason::new(
            ReasonCode::NotAnOrder,
            "a Shopify FulfillmentOrder says where an order's lines are fulfilled; pass it \
             with its order (CLI: --with FILE)",
        )]);
    }
    let mut p = Problems::default();
    let mut fulfillment_orders = Vec::new();
    for (i, doc) in payload.related.iter().enumerate() {
        match parse_json::<FulfillmentDoc>(&format!("related document {i}"), doc) {
            Ok(FulfillmentDoc::Wrapped { fulfillment_order }) => {
                fulfillment_orders.push(fulfillment_order)
            }
            Ok(FulfillmentDoc::List {
                fulfillment_orders: list,
            }) => fulfillment_orders.extend(list),
            Ok(FulfillmentDoc::Bare(fo)) => fulfillment_orders.push(fo),
            Err(_) => p.push(Reason::new(
                ReasonCode::Malformed,
                format!("related document {i}: not a Shopify FulfillmentOrder"),
            )),
        }
    }
    let mut d = Draft {
        order_id: text(&order.id)
            .or_else(|| {
                text(&order.admin_graphql_api_id)
                    .and_then(|g| g.rsplit('/').next().map(str::to_owned))
            })
            .unwrap_or_default(),
        ..Draft::default()
    };
    d.order_number = text(&order.name);
    d.created_at = p.take(required_time(
        "created_at",
        &order.created_at,
        TimeFormat::Rfc3339,
    ));
    d.version = match text(&order.updated_at) {
        Some(t) => p
            .take(super::fields::timestamp(
                "updated_at",
                &t,
                TimeFormat::Rfc3339,
            ))
            .map_or(0, version_ms),
        None => d.created_at.map_or(0, version_ms),
    };
    d.currency = p.take(Currency::parse(
        "currency",
        text(&order.currency).as_deref(),
    ));
    d.prices_include_tax = flag(order.taxes_included);
    if let Some(c) = d.currency {
        let total = text(&order.current_total_price).or_else(|| text(&order.total_price));
        d.total_minor = total.and_then(|t| p.take(c.minor("total_price", &t)));
    }
    d.paid = text(&order.financial_status).as_deref() == Some("paid");
    d.test = flag(order.test);
    d.cancelled = text(&order.cancelled_at).is_some();
    let customer = order.customer.as_ref();
    d.customer.name = customer
        .and_then(|c| full_name(&c.first_name, &c.last_name))
        .or_else(|| {
            order
                .billing_address
                .as_ref()
                .and_then(|a| text(&a.name).or_else(|| full_name(&a.first_name, &a.last_name)))
        });
    d.customer.email = text(&order.email)
        .or_else(|| text(&order.contact_email))
        .or_else(|| customer.and_then(|c| text(&c.email)));
    d.customer.phone = text(&order.phone)
        .or_else(|| order.billing_address.as_ref().and_then(|a| text(&a.phone)))
        .or_else(|| order.shipping_address.as_ref().and_then(|a| text(&a.phone)))
        .or_else(|| customer.and_then(|c| text(&c.phone)));
    d.customer.locale = text(&order.customer_locale);
    let attributes = order.note_attributes.unwrap_or_default();
    let attribute = |key: &str| {
        attributes
            .iter()
            .find(|a| text(&a.name).is_some_and(|n| n.eq_ignore_ascii_case(key)))
            .and_then(|a| text(&a.value))
    };
    d.hold_ref = attribute(&ctx.config.hold_ref_key);

    // Where each line item goes: by FulfillmentOrder, else by a pickup app's attributes.
    let mut routes: Vec<(String, Destination, u32)> = Vec::new(); // (line item id, dest, qty)
    let mut not_pickup = Vec::new();
    for fo in &fulfillment_orders {
        if fo.order_id.non_empty() != Some(d.order_id.as_str()) {
            p.push(Reason::new(
                ReasonCode::Inconsistent,
                format!(
                    "a FulfillmentOrder of order {} came with order {}",
                    fo.order_id.0, d.order_id
                ),
            ));
            continue;
        }
        let method = fo.delivery_method.as_ref();
        let dest = if method.and_then(|m| text(&m.method_type)).as_deref() == Some("pick_up") {
            match text(&fo.assigned_location_id) {
                Some(loc) => {
                    if let Some(window) = method.and_then(|m| p.take(window(m)).flatten()) {
                        d.windows.push((loc.clone(), window));
                    }
                    Destination::Pickup(loc)
                }
                None => {
                    p.push(Reason::new(
                        ReasonCode::PickupLocationMissing,
                        "a pick-up FulfillmentOrder has no assigned_location_id",
                    ));
                    continue;
                }
            }
        } else {
            not_pickup.push(
                method
                    .and_then(|m| text(&m.presented_name).or_else(|| text(&m.method_type)))
                    .unwrap_or_else(|| "no delivery method".to_owned()),
            );
            Destination::Other
        };
        for (i, fl) in fo.line_items.iter().enumerate() {
            let field = format!("fulfillment_order.line_items[{i}]");
            let id = text(&fl.line_item_id);
            let qty = fl
                .quantity
                .as_ref()
                .and_then(|q| p.take(quantity(&format!("{field}.quantity"), q)));
            if let (Some(id), Some(qty)) = (id, qty) {
                routes.push((id, dest.clone(), qty));
            }
        }
    }
    let app_pickup = attribute("Checkout-Method").is_some_and(|m| m.eq_ignore_ascii_case("pickup"));
    let default_dest = if !fulfillment_orders.is_empty() {
        if not_pickup.is_empty() {
            not_pickup.push("not in any FulfillmentOrder".to_owned());
        }
        Destination::Other
    } else if app_pickup {
        match attribute("Pickup-Location-Id").or_else(|| attribute("Pickup-Location-Company")) {
            Some(loc) => Destination::Pickup(loc),
            None => {
                p.push(Reason::new(
                    ReasonCode::PickupLocationMissing,
                    "note_attributes say Checkout-Method pickup but name no Pickup-Location-Id \
                     or Pickup-Location-Company",
                ));
                Destination::Other
            }
        }
    } else {
        not_pickup.push(
            "a Shopify order states pickup only on its FulfillmentOrders (none given) or in \
             a pickup app's note_attributes (none)"
                .to_owned(),
        );
        Destination::Other
    };
    d.not_pickup = Some(not_pickup.join("; "));

    let Some(items) = order.line_items else {
        p.push(Reason::new(ReasonCode::MissingField, "line_items: missing"));
        return done(d, p);
    };
    for (i, item) in items.iter().enumerate() {
        let field = format!("line_items[{i}]");
        let qty_field = if item.current_quantity.is_some() {
            &item.current_quantity
        } else {
            &item.quantity
        };
        let Some(raw_qty) = qty_field.as_ref() else {
            p.push(Reason::new(
                ReasonCode::MissingField,
                format!("{field}.quantity: missing"),
            ));
            continue;
        };
        if raw_qty.non_empty() == Some("0") {
            continue; // removed by an order edit
        }
        let qty = p.take(quantity(&format!("{field}.quantity"), raw_qty));
        let sku = p.take(sku_or_fallback(
            &field,
            text(&item.sku),
            text(&item.variant_id).or_else(|| text(&item.product_id)),
        ));
        let price = match (d.currency, text(&item.price)) {
            (Some(c), Some(t)) => p.take(c.minor(&format!("{field}.price"), &t)),
            (_, None) => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.price: missing"),
                ));
                None
            }
            (None, _) => None,
        };
        let (Some(qty), Some((sku, sku_source)), Some(unit_price_minor)) = (qty, sku, price) else {
            continue;
        };
        let line = |qty| Line {
            sku: sku.clone(),
            sku_source,
            qty,
            unit_price_minor,
        };
        if flag(item.gift_card) {
            d.lines.push((Destination::Other, line(qty)));
            continue;
        }
        // Split the line over the FulfillmentOrders that name it; the rest takes the
        // default destination.
        let id = text(&item.id);
        let mut left = qty;
        for (_, dest, routed) in routes
            .iter()
            .filter(|(rid, _, _)| id.as_deref() == Some(rid.as_str()))
        {
            let take = (*routed).min(left);
            if take > 0 {
                d.lines.push((dest.clone(), line(take)));
                left -= take;
            }
        }
        if left > 0 {
            d.lines.push((default_dest.clone(), line(left)));
        }
    }
    done(d, p)
}
