//! Conversions of `pickup.proto`: orders, their states, rejections, short picks, pickup codes and receipts.

use super::*;

/// The engine's channel name for a proto channel.
pub fn channel(c: i32, name: &str) -> Result<String, DomainError> {
    Ok(match pb::Channel::try_from(c) {
        Ok(pb::Channel::Shopify) => "shopify".into(),
        Ok(pb::Channel::Woocommerce) => "woocommerce".into(),
        Ok(pb::Channel::Bigcommerce) => "bigcommerce".into(),
        Ok(pb::Channel::Magento) => "magento".into(),
        Ok(pb::Channel::Commercetools) => "commercetools".into(),
        Ok(pb::Channel::Direct) => "direct".into(),
        Ok(pb::Channel::Other) if !name.is_empty() => format!("other:{name}"),
        Ok(pb::Channel::Other) => return Err(invalid("channel_name", "required for OTHER")),
        _ => return Err(invalid("channel", "must be set")),
    })
}

pub(super) fn channel_pb(c: &str) -> (pb::Channel, String) {
    let ch = match c {
        "shopify" => pb::Channel::Shopify,
        "woocommerce" => pb::Channel::Woocommerce,
        "bigcommerce" => pb::Channel::Bigcommerce,
        "magento" => pb::Channel::Magento,
        "commercetools" => pb::Channel::Commercetools,
        "direct" => pb::Channel::Direct,
        other => {
            return (
                pb::Channel::Other,
                other.strip_prefix("other:").unwrap_or(other).to_owned(),
            );
        }
    };
    (ch, String::new())
}

/// A `CreateOrder` command from proto.
pub fn create_order(r: pb::CreateOrderRequest) -> Result<pe::CreateOrder, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    for (i, l) in r.lines.iter().enumerate() {
        sku(&format!("lines[{i}].sku"), &l.sku)?;
        if l.unit_price_minor < 0 {
            return Err(invalid(
                format!("lines[{i}].unit_price_minor"),
                "must not be negative",
            ));
        }
    }
    let customer = r.customer.unwrap_or_default();
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(pe::CreateOrder {
        hold: hold_id("hold_id", r.hold_id)?,
        channel: channel(r.channel, &r.channel_name)?,
        channel_order_id: r.channel_order_id,
        customer: pe::Customer {
            name: opt(customer.name),
            locale: opt(customer.locale),
            email: opt(customer.email),
            phone: opt(customer.phone),
            sms_consent: customer.sms_consent,
            email_consent: customer.email_consent,
        },
        lines: r
            .lines
            .into_iter()
            .map(|l| pe::OrderLineRequest {
                sku: l.sku,
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                description: l.title,
            })
            .collect(),
        currency: r.currency,
        idempotency_key: Some(key),
    })
}

pub(super) fn order_state_pb(s: OrderStatus) -> pb::OrderState {
    match s {
        OrderStatus::Placed => pb::OrderState::Placed,
        OrderStatus::Confirmed => pb::OrderState::Confirmed,
        OrderStatus::Picking => pb::OrderState::Picking,
        OrderStatus::Ready => pb::OrderState::Ready,
        OrderStatus::Collected => pb::OrderState::Collected,
        OrderStatus::Cancelled => pb::OrderState::Cancelled,
        OrderStatus::Expired => pb::OrderState::Expired,
        OrderStatus::NoShow => pb::OrderState::NoShow,
    }
}

/// An engine status from a proto order state (for ListOrders filters).
pub fn order_status(field: &str, s: i32) -> Result<OrderStatus, DomainError> {
    Ok(match pb::OrderState::try_from(s) {
        Ok(pb::OrderState::Placed) => OrderStatus::Placed,
        Ok(pb::OrderState::Confirmed) => OrderStatus::Confirmed,
        Ok(pb::OrderState::Picking) => OrderStatus::Picking,
        Ok(pb::OrderState::Ready) => OrderStatus::Ready,
        Ok(pb::OrderState::Collected) => OrderStatus::Collected,
        Ok(pb::OrderState::Cancelled) => OrderStatus::Cancelled,
        Ok(pb::OrderState::Expired) => OrderStatus::Expired,
        Ok(pb::OrderState::NoShow) => OrderStatus::NoShow,
        _ => return Err(invalid(field, "must be a set order state")),
    })
}

/// An order as the contract shows it. Customer name and locale are not kept by the
/// engine, so they are empty.
pub fn order_pb(engine: &pe::Engine, v: &OrderView) -> pb::PickupOrder {
    let slot = engine.hold_info(v.order.hold()).and_then(|h| h.slot);
    order_pb_with_slot(engine, v, slot)
}

/// An order in proto form with the pickup slot (`start_ms`) its hold booked.
pub fn order_pb_with_slot(
    engine: &pe::Engine,
    v: &OrderView,
    slot: Option<i64>,
) -> pb::PickupOrder {
    let (channel, channel_name) = channel_pb(&v.channel);
    let mut history = Vec::with_capacity(v.transitions.len());
    let mut from = pb::OrderState::Unspecified;
    for (status, at) in &v.transitions {
        let to = order_state_pb(*status);
        history.push(pb::OrderTransition {
            from: from as i32,
            to: to as i32,
            at_ms: at.as_ms(),
            staff_id: String::new(),
            reason: String::new(),
        });
        from = to;
    }
    pb::PickupOrder {
        order_id: v.order.0,
        hold_id: v.order.hold().0,
        store_id: store_name(engine, v.order.store().0),
        channel: channel as i32,
        channel_name,
        channel_order_id: v.channel_order_id.clone(),
        customer: Some(pb::CustomerContact {
            name: v.customer.name.clone().unwrap_or_default(),
            email: v.customer.email.clone().unwrap_or_default(),
            phone: v.customer.phone.clone().unwrap_or_default(),
            email_consent: v.customer.email_consent,
            sms_consent: v.customer.sms_consent,
            locale: v.customer.locale.clone().unwrap_or_default(),
        }),
        lines: v
            .lines
            .iter()
            .map(|l| pb::PricedLine {
                sku: engine.sku_name(l.sku).unwrap_or_default(),
                qty: l.qty,
                unit_price_minor: l.unit_price_minor,
                picked_qty: l.qty,
                title: l.description.clone(),
            })
            .collect(),
        currency: v.currency.clone(),
        state: order_state_pb(v.status) as i32,
        slot: slot_pb(engine, v.order.store(), slot),
        estimated_ready_ms: v.ready_estimate.map_or(0, |t| t.as_ms()),
        pickup_code: v.code.map(|c| c.to_string()).unwrap_or_default(),
        code_attempts: v.wrong_attempts,
        code_locked: v.locked,
        history,
    }
}

/// The current view of an order, or NOT_FOUND.
pub fn order_view(engine: &pe::Engine, order: OrderId) -> Result<OrderView, DomainError> {
    engine.order(order).ok_or_else(|| unknown_order(order))
}

/// NOT_FOUND for an order id.
pub fn unknown_order(order: OrderId) -> DomainError {
    DomainError::NotFound {
        kind: ResourceKind::Order,
        id: order.0.to_string(),
    }
}

/// The status error of a refused order action that is misuse, not a business answer.
pub fn order_rejection(order: OrderId, r: &OrderRejection, action: &'static str) -> DomainError {
    match r {
        OrderRejection::UnknownOrder => unknown_order(order),
        OrderRejection::IllegalTransition { from } => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: format!("{:?}", order_state_pb(*from)),
            action,
        },
        OrderRejection::NoSuchLine => invalid("lines.sku", "the order has no line of that SKU"),
        OrderRejection::NotShort { line_qty } => invalid(
            "lines.picked_qty",
            format!("must be below the line's {line_qty} units"),
        ),
        OrderRejection::NotLocked => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: "not locked".to_owned(),
            action,
        },
        OrderRejection::NothingLeft => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: "left without any unit to hand off (every line was short)".to_owned(),
            action,
        },
        OrderRejection::PickupWindowOpen { ends_at } => DomainError::IllegalTransition {
            kind: ResourceKind::Order,
            id: order.0.to_string(),
            state: format!(
                "READY with its pickup window open until {} ms",
                ends_at.as_ms()
            ),
            action,
        },
    }
}

/// Short lines per ReportShort at most (the order's lines are bounded like a hold's).
pub const SHORT_LINES_MAX: usize = 100;

/// A ReportShort request as the engine's all-or-nothing [`pe::ShortReport`]. Each SKU at
/// most once: a second line of the same SKU could only be judged against the state the
/// first one left, so it is refused before anything runs.
pub fn short_report(r: &pb::ReportShortRequest) -> Result<pe::ShortReport, DomainError> {
    let staff = staff_id("staff_id", &r.staff_id)?;
    batch_len("lines", r.lines.len(), SHORT_LINES_MAX)?;
    let mut lines = Vec::with_capacity(r.lines.len());
    for (i, l) in r.lines.iter().enumerate() {
        if r.lines[..i].iter().any(|o| o.sku == l.sku) {
            return Err(invalid(
                format!("lines[{i}].sku"),
                format!("SKU {:?} is already listed in an earlier line", l.sku),
            ));
        }
        let resolution = match pb::ShortResolution::try_from(l.resolution) {
            Ok(pb::ShortResolution::Cancel) => pe::ShortPickResolution::CancelLine,
            Ok(pb::ShortResolution::Reallocate) => pe::ShortPickResolution::Reallocate,
            _ => return Err(invalid(format!("lines[{i}].resolution"), "must be set")),
        };
        lines.push(pe::ShortLine {
            sku: l.sku.clone(),
            found: l.picked_qty,
            resolution,
        });
    }
    Ok(pe::ShortReport {
        order: order_id("order_id", r.order_id)?,
        lines,
        staff,
    })
}

/// A refused line of a ReportShort (`line`: its index in the request), or the refused
/// report as a whole.
pub fn short_rejection(order: OrderId, line: Option<usize>, r: &OrderRejection) -> DomainError {
    match (line, r) {
        (Some(i), OrderRejection::NoSuchLine) => invalid(
            format!("lines[{i}].sku"),
            "the order has no line of that SKU",
        ),
        (Some(i), OrderRejection::NotShort { line_qty }) => invalid(
            format!("lines[{i}].picked_qty"),
            format!("must be below the line's {line_qty} units"),
        ),
        _ => order_rejection(order, r, "report short"),
    }
}

/// The code a customer presents: the code itself, or a scanned QR payload of this
/// order (whose code is then checked).
pub fn presented_code(order: OrderId, input: &str) -> Result<String, DomainError> {
    if input.starts_with(pe::pickup_code::QR_PAYLOAD_PREFIX) {
        let qr = QrPayload::parse(input).map_err(|e| invalid("code", e.to_string()))?;
        if qr.order_id() != order.to_string() {
            return Err(invalid("code", "the QR payload belongs to another order"));
        }
        return Ok(qr.code().to_string());
    }
    Ok(input.to_owned())
}

/// A code check that did not pass, as the contract shows it; `Ok(None)` when accepted.
pub fn code_rejected_pb(v: &VerifyOutcome) -> Result<Option<pb::OrderRejected>, DomainError> {
    let rejected = |reason: pb::OrderRejectReason, attempts_left, message: &str| {
        Ok(Some(pb::OrderRejected {
            reason: reason as i32,
            attempts_left,
            message: message.to_owned(),
        }))
    };
    match v {
        VerifyOutcome::Accepted | VerifyOutcome::AlreadyAccepted => Ok(None),
        VerifyOutcome::Wrong { attempts_left } => rejected(
            pb::OrderRejectReason::WrongCode,
            *attempts_left,
            "wrong code",
        ),
        VerifyOutcome::WrongNowLocked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "wrong code; the order is now locked",
        ),
        VerifyOutcome::Locked => rejected(
            pb::OrderRejectReason::CodeLocked,
            0,
            "locked by wrong codes; a staff override is needed",
        ),
        VerifyOutcome::Malformed(e) => Err(invalid("code", e.to_string())),
    }
}

/// An e-receipt in its three renderings.
pub fn receipt_pb(r: &Receipt) -> pb::Receipt {
    pb::Receipt {
        json: r.to_json(),
        text: r.to_text(),
        html: r.to_html(),
        total: Some(pb::Money {
            amount_minor: r.total_minor(),
            currency: r.currency().code().to_owned(),
        }),
    }
}
