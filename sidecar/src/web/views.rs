//! What the pages show: a model read from the engine per page, and its HTML (maud; every
//! interpolated value is escaped). Each page has a live region (`id="live"`) that the
//! script fetches again (`?part=live`) when the server says something changed.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use pickline_engine::{
    Engine, OrderId, OrderStatus, OrderView, StoreKpis, Timestamp,
    pickup_code::{MAX_WRONG_ATTEMPTS, QrPayload},
    receipt::Receipt,
};

use super::{PageError, WebConfig, auth::Session, live::Live};
use crate::order_link::OrderLinks;

/// Open orders one queue page shows at most (oldest first); the count says if more.
pub const QUEUE_ORDERS_MAX: usize = 2_000;

/// The word for a status, as staff and customers read it.
pub fn status_word(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Placed => "placed",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Picking => "picking",
        OrderStatus::Ready => "ready",
        OrderStatus::Collected => "collected",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
        OrderStatus::NoShow => "no-show",
    }
}

fn zone(name: &str) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// `ms` as local time in zone `tz`, e.g. `Sun 6 Dec, 14:30`.
pub fn local_time(tz: &jiff::tz::TimeZone, ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| "?".to_owned(),
        |t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%a %-d %b, %H:%M")
                .to_string()
        },
    )
}

/// `ms` as a UTC time.
pub fn utc_time(ms: i64) -> String {
    local_time(&jiff::tz::TimeZone::UTC, ms) + " UTC"
}

fn clock(tz: &jiff::tz::TimeZone, ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| "?".to_owned(),
        |t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%H:%M")
                .to_string()
        },
    )
}

/// A slot as the store's local day and times, e.g. `Sun 6 Dec, 14:00–14:30`.
pub fn local_slot(tz_name: &str, start_ms: i64, end_ms: i64) -> String {
    let tz = zone(tz_name);
    format!("{}–{}", local_time(&tz, start_ms), clock(&tz, end_ms))
}

fn layout(title: &str, body_attrs: &BodyAttrs, header: Markup, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                title { (title) " · Pickline" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body data-events=[body_attrs.events.as_deref()]
                data-live=[body_attrs.live.as_deref()]
                data-order=[body_attrs.order.as_deref()] {
                a.skip href="#main" { "Skip to content" }
                header.top { (header) }
                main #main tabindex="-1" { (main) }
            }
        }
    }
}

#[derive(Default)]
struct BodyAttrs {
    events: Option<String>,
    live: Option<String>,
    order: Option<String>,
}

fn staff_header(s: &Session) -> Markup {
    html! {
        nav aria-label="Staff" {
            a.brand href="/staff/queue" { "Pickline" }
            a href="/staff/queue" { "Queue" }
            span.who { "Signed in as " strong { (s.staff) } " · store " strong { (s.store) } }
            form.inline method="post" action="/staff/sign-out" {
                input type="hidden" name="csrf" value=(s.csrf);
                button.secondary type="submit" { "Sign out" }
            }
        }
    }
}

fn customer_header() -> Markup {
    html! { nav aria-label="Pickline" { span.brand { "Pickup" } a href="/stores" { "Find a store" } } }
}

fn flash(s: &Session) -> Markup {
    html! {
        @if let Some(f) = &s.flash {
            @if f.error {
                p.flash.error role="alert" { (f.text) }
            } @else {
                p.flash.ok role="status" { (f.text) }
            }
        }
    }
}

/// A small page for an error status.
pub fn error_page(title: &str, text: &str) -> Markup {
    layout(
        title,
        &BodyAttrs::default(),
        customer_header(),
        html! { h1 { (title) } p { (text) } p { a href="/staff/queue" { "Staff queue" } " · " a href="/stores" { "Find a store" } } },
    )
}

/// The sign-in page.
pub fn sign_in(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Staff sign-in",
        &BodyAttrs::default(),
        html! { nav aria-label="Pickline" { span.brand { "Pickline" } } },
        html! {
            h1 { "Staff sign-in" }
            @if let Some(e) = error { p.flash.error role="alert" { (e) } }
            form.card.narrow method="post" action="/staff/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label for="name" { "Name" }
                input #name name="name" type="text" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button.primary type="submit" { "Sign in" }
            }
        },
    )
}

// ------------------------------------------------------------------ queue

/// One order in the queue.
#[derive(Debug, Clone)]
pub struct QueueRow {
    order: OrderId,
    channel_order_id: String,
    customer: Option<String>,
    status: OrderStatus,
    units: u64,
    lines: usize,
    placed_ms: Option<i64>,
    late: bool,
}

/// Orders of one pickup slot (`None`: no slot booked, as soon as possible).
#[derive(Debug, Clone)]
pub struct SlotGroup {
    slot: Option<(i64, i64)>,
    rows: Vec<QueueRow>,
}

/// The queue page's data.
#[derive(Debug, Clone)]
pub struct QueueModel {
    store_name: String,
    tz: jiff::tz::TimeZone,
    groups: Vec<SlotGroup>,
    counts: [usize; 4],
    truncated: bool,
    kpis: StoreKpis,
}

impl QueueModel {
    /// Reads `store`'s open orders (confirmed, picking, ready), grouped by slot, and its
    /// KPIs of today.
    pub fn read(
        engine: &Engine,
        store: &str,
        now: Timestamp,
        live: &Live,
    ) -> Result<QueueModel, PageError> {
        let id = engine.store_id(store).ok_or(PageError::NotFound)?;
        let def = engine.store_def(id).ok_or(PageError::NotFound)?;
        let tz = zone(&def.time_zone);
        let views = engine.store_orders(store, None, QUEUE_ORDERS_MAX + 1, |s| {
            matches!(
                s,
                OrderStatus::Confirmed | OrderStatus::Picking | OrderStatus::Ready
            )
        })?;
        let truncated = views.len() > QUEUE_ORDERS_MAX;
        let mut by_slot: BTreeMap<Option<i64>, Vec<QueueRow>> = BTreeMap::new();
        let mut counts = [0usize; 4];
        for v in views.into_iter().take(QUEUE_ORDERS_MAX) {
            let slot = engine.hold_info(v.order.hold()).and_then(|h| h.slot);
            let late = matches!(v.status, OrderStatus::Confirmed | OrderStatus::Picking)
                && slot.is_some_and(|start| start <= now.as_ms());
            match v.status {
                OrderStatus::Confirmed => counts[0] += 1,
                OrderStatus::Picking => counts[1] += 1,
                _ => counts[2] += 1,
            }
            if late {
                counts[3] += 1;
            }
            by_slot.entry(slot).or_default().push(row(v, late));
        }
        let groups = by_slot
            .into_iter()
            .map(|(slot, rows)| SlotGroup {
                slot: slot.map(|start| {
                    let end = engine.slot_at(id, start).map_or(start, |s| s.end_ms);
                    (start, end)
                }),
                rows,
            })
            .collect();
        let today = jiff::Timestamp::from_millisecond(now.as_ms())
            .map(|t| t.to_zoned_datetime(tz.clone()).date())
            .unwrap_or_default();
        Ok(QueueModel {
            store_name: def.name,
            tz,
            groups,
            counts,
            truncated,
            kpis: live.today(id, today),
        })
    }

    /// Orders shown.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.rows.len()).sum()
    }

    /// Whether no order is shown.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn row(v: OrderView, late: bool) -> QueueRow {
    QueueRow {
        order: v.order,
        channel_order_id: v.channel_order_id,
        customer: v.customer.name,
        status: v.status,
        units: v.lines.iter().map(|l| u64::from(l.qty)).sum(),
        lines: v.lines.iter().filter(|l| l.qty > 0).count(),
        placed_ms: v.transitions.first().map(|(_, t)| t.as_ms()),
        late,
    }
}

/// The whole queue page.
pub fn queue_page(m: &QueueModel, s: &Session) -> Markup {
    layout(
        "Pickup queue",
        &BodyAttrs {
            events: Some("/staff/events".into()),
            live: Some("/staff/queue?part=live".into()),
            order: None,
        },
        staff_header(s),
        html! {
            h1 { "Pickup queue · " (m.store_name) }
            (flash(s))
            p.hint #conn role="status" { "Updates by itself." }
            (queue_live(m))
        },
    )
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.0} %", v * 100.0))
}

fn minutes(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |ms| format!("{:.0} min", ms / 60_000.0))
}

/// The queue's live region.
pub fn queue_live(m: &QueueModel) -> Markup {
    html! {
        div #live aria-live="polite" {
            section.counters aria-label="Counters" {
                div.counter { span.n #count-confirmed { (m.counts[0]) } span { "to pick" } }
                div.counter { span.n #count-picking { (m.counts[1]) } span { "picking" } }
                div.counter { span.n #count-ready { (m.counts[2]) } span { "ready" } }
                div.counter.late[m.counts[3] > 0] { span.n #count-late { (m.counts[3]) } span { "late" } }
            }
            section.kpis aria-label="Today" {
                h2 { "Today" }
                dl {
                    div { dt { "Average fulfillment" } dd { (minutes(m.kpis.avg_fulfillment_ms())) } }
                    div { dt { "Pickup conversion" } dd { (pct(m.kpis.pickup_conversion())) } }
                    div { dt { "Orders late now" } dd { (m.counts[3]) } }
                    div { dt { "Collected" } dd { (m.kpis.collected) } }
                }
            }
            @if m.is_empty() {
                p.empty { "No open pickups. New orders appear here by themselves." }
            }
            @for g in &m.groups {
                section.slot {
                    h2 {
                        @match g.slot {
                            Some((start, end)) => { "Slot " (local_time(&m.tz, start)) "–" (clock(&m.tz, end)) }
                            None => { "No slot: as soon as possible" }
                        }
                        " (" (g.rows.len()) ")"
                    }
                    ul.orders {
                        @for r in &g.rows {
                            li {
                                a.order-row.late[r.late] href={ "/staff/orders/" (r.order) } data-order=(r.order.to_string()) {
                                    span.badge.(status_word(r.status)) { (status_word(r.status)) }
                                    @if r.late { span.badge.late-badge { "late" } }
                                    span.ref { (r.channel_order_id) }
                                    span.cust { (r.customer.as_deref().unwrap_or("")) }
                                    span.units { (r.units) " units, " (r.lines) @if r.lines == 1 { " line" } @else { " lines" } }
                                    @if let Some(p) = r.placed_ms { span.time { "placed " (clock(&m.tz, p)) } }
                                }
                            }
                        }
                    }
                }
            }
            @if m.truncated {
                p.hint { "Showing the oldest " (QUEUE_ORDERS_MAX) " open orders." }
            }
        }
    }
}

// ------------------------------------------------------------------ order detail

/// The order page's data.
#[derive(Debug, Clone)]
pub struct OrderModel {
    view: OrderView,
    tz: jiff::tz::TimeZone,
    slot: Option<(i64, i64)>,
    expires_ms: Option<i64>,
    skus: Vec<String>,
    link: String,
    receipt: bool,
}

impl OrderModel {
    /// Reads `order` (the caller checked its store).
    pub fn read(
        engine: &Engine,
        order: OrderId,
        _now: Timestamp,
        links: &OrderLinks,
    ) -> Result<OrderModel, PageError> {
        let view = engine.order(order).ok_or(PageError::NotFound)?;
        let def = engine.store_def(order.store()).ok_or(PageError::NotFound)?;
        let hold = engine.hold_info(order.hold());
        let slot = hold.as_ref().and_then(|h| h.slot).map(|start| {
            let end = engine
                .slot_at(order.store(), start)
                .map_or(start, |s| s.end_ms);
            (start, end)
        });
        let skus = view
            .lines
            .iter()
            .map(|l| engine.sku_name(l.sku).unwrap_or_default())
            .collect();
        Ok(OrderModel {
            receipt: view.status == OrderStatus::Collected && view.receipt_seq.is_some(),
            tz: zone(&def.time_zone),
            slot,
            expires_ms: hold.map(|h| h.expires_at.as_ms()),
            skus,
            link: links.status_path(order),
            view,
        })
    }
}

/// The whole order page.
pub fn order_page(m: &OrderModel, s: &Session) -> Markup {
    let id = m.view.order.to_string();
    layout(
        &format!("Order {}", m.view.channel_order_id),
        &BodyAttrs {
            events: Some("/staff/events".into()),
            live: Some(format!("/staff/orders/{id}?part=live")),
            order: Some(id.clone()),
        },
        staff_header(s),
        html! {
            p { a href="/staff/queue" { "← Back to the queue" } }
            h1 { "Order " (m.view.channel_order_id) " " small { "(" (id) ")" } }
            (flash(s))
            p.hint #conn role="status" { "Updates by itself." }
            (order_live(m, s))
        },
    )
}

fn action_form(id: &str, action: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/staff/orders/" (id) "/" (action) } {
            input type="hidden" name="csrf" value=(csrf);
            button class=(class) type="submit" { (label) }
        }
    }
}

/// The order page's live region: state, lines and the actions the state allows.
pub fn order_live(m: &OrderModel, s: &Session) -> Markup {
    let v = &m.view;
    let id = v.order.to_string();
    let csrf = s.csrf.as_str();
    let currency = pickline_engine::receipt::Currency::iso(&v.currency).ok();
    html! {
        div #live aria-live="polite" {
            section.card {
                p.state { "Status: " span #order-status.badge.(status_word(v.status)) { (status_word(v.status)) } }
                dl.facts {
                    div { dt { "Customer" } dd { (v.customer.name.as_deref().unwrap_or("–")) } }
                    div { dt { "Channel" } dd { (v.channel) " " (v.channel_order_id) } }
                    div { dt { "Pickup slot" } dd {
                        @match m.slot { Some((a, b)) => { (local_time(&m.tz, a)) "–" (clock(&m.tz, b)) } None => { "none" } }
                    } }
                    @if let Some(e) = m.expires_ms { div { dt { "Held until" } dd { (local_time(&m.tz, e)) } } }
                    div { dt { "Customer page" } dd { a #customer-link href=(m.link) { "status link" } } }
                }
                h2 { "Lines" }
                table.lines {
                    thead { tr { th scope="col" { "Item" } th scope="col" { "SKU" } th scope="col" { "Units" } th scope="col" { "Price" } } }
                    tbody {
                        @for (l, sku) in v.lines.iter().zip(&m.skus) {
                            tr.gone[l.qty == 0] {
                                td { (l.description) }
                                td { (sku) }
                                td.num { (l.qty) }
                                td.num { @match currency { Some(c) => (c.format(l.unit_price_minor)), None => (l.unit_price_minor) } }
                            }
                        }
                    }
                }
                @if v.short_picks > 0 { p.hint { (v.short_picks) " short pick(s) recorded." } }
                h2 { "History" }
                ol.history {
                    @for (st, at) in &v.transitions { li { (status_word(*st)) " · " (local_time(&m.tz, at.as_ms())) } }
                }
            }
            section.actions aria-label="Actions" {
                @match v.status {
                    OrderStatus::Confirmed => {
                        (action_form(&id, "start", csrf, "Start picking", "primary"))
                        (action_form(&id, "cancel", csrf, "Cancel order", "danger"))
                    }
                    OrderStatus::Picking => {
                        (action_form(&id, "ready", csrf, "Mark ready", "primary"))
                        form.card method="post" action={ "/staff/orders/" (id) "/short" } {
                            h2 { "Report a short line" }
                            input type="hidden" name="csrf" value=(csrf);
                            label for="short-sku" { "Item" }
                            select #short-sku name="sku" {
                                @for (l, sku) in v.lines.iter().zip(&m.skus) {
                                    @if l.qty > 0 { option value=(sku) { (sku) " – " (l.description) " (" (l.qty) ")" } }
                                }
                            }
                            label for="short-found" { "Units found" }
                            input #short-found name="found" type="number" min="0" inputmode="numeric" required;
                            fieldset {
                                legend { "Missing units" }
                                label.radio { input type="radio" name="resolution" value="reallocate" checked; " Find them at another store" }
                                label.radio { input type="radio" name="resolution" value="cancel"; " Drop them from the order" }
                            }
                            button.secondary type="submit" { "Report short" }
                        }
                        (action_form(&id, "cancel", csrf, "Cancel order", "danger"))
                    }
                    OrderStatus::Ready => {
                        form.card #code-form method="post" action={ "/staff/orders/" (id) "/verify" } {
                            h2 { "Hand over" }
                            input type="hidden" name="csrf" value=(csrf);
                            label for="code" { "Customer's pickup code (type or scan)" }
                            input #code name="code" type="text" autocomplete="off" autocapitalize="characters"
                                spellcheck="false" inputmode="text" required autofocus;
                            p.attempts #attempts {
                                @if v.locked {
                                    "Locked after " (MAX_WRONG_ATTEMPTS) " wrong codes."
                                } @else {
                                    "Wrong codes: " (v.wrong_attempts) " of " (MAX_WRONG_ATTEMPTS) " allowed."
                                }
                            }
                            div.buttons {
                                button.secondary #verify type="submit" { "Check code" }
                                button.primary #collect type="submit" formaction={ "/staff/orders/" (id) "/collect" } { "Check code and hand over" }
                            }
                        }
                        @if v.locked { (action_form(&id, "unlock", csrf, "Unlock code check (manager)", "secondary")) }
                        (action_form(&id, "no-show", csrf, "Not collected (no-show)", "secondary"))
                        (action_form(&id, "cancel", csrf, "Cancel order", "danger"))
                    }
                    _ => {}
                }
                @if m.receipt {
                    p { a.button.primary #receipt-link href={ "/staff/orders/" (id) "/receipt" } { "Show receipt" } }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ customer status

/// The customer status page's data.
#[derive(Debug, Clone)]
pub struct StatusModel {
    status: OrderStatus,
    channel_order_id: String,
    store_name: String,
    address: Option<String>,
    instructions: String,
    tz: jiff::tz::TimeZone,
    slot: Option<(i64, i64)>,
    estimate_ms: Option<i64>,
    collect_by_ms: Option<i64>,
    code: Option<String>,
    qr_svg: Option<String>,
    lines: Vec<(String, u32)>,
    receipt: bool,
}

impl StatusModel {
    /// Reads what the customer of `order` may see.
    pub fn read(
        engine: &Engine,
        order: OrderId,
        now: Timestamp,
        config: &WebConfig,
    ) -> Result<StatusModel, PageError> {
        let v = engine.order(order).ok_or(PageError::NotFound)?;
        let def = engine.store_def(order.store()).ok_or(PageError::NotFound)?;
        let hold = engine.hold_info(order.hold());
        let slot = hold.as_ref().and_then(|h| h.slot).map(|start| {
            let end = engine
                .slot_at(order.store(), start)
                .map_or(start, |s| s.end_ms);
            (start, end)
        });
        let waiting = matches!(
            v.status,
            OrderStatus::Placed | OrderStatus::Confirmed | OrderStatus::Picking
        );
        let estimate_ms = if waiting && slot.is_none() {
            engine
                .estimate_ready(&def.external_id, now)
                .ok()
                .flatten()
                .map(|e| e.slot.start_ms)
        } else {
            None
        };
        let ready = v.status == OrderStatus::Ready;
        let code = v.code.filter(|_| ready);
        let qr_svg = code.as_ref().and_then(|c| {
            let payload = QrPayload::new(&def.external_id, &order.to_string(), *c).ok()?;
            crate::qr::qr_svg(&payload.encode()).ok()
        });
        Ok(StatusModel {
            status: v.status,
            channel_order_id: v.channel_order_id.clone(),
            address: config.address(&def.external_id).map(str::to_owned),
            instructions: def.pickup_instructions.clone(),
            store_name: def.name,
            tz: zone(&def.time_zone),
            slot,
            estimate_ms,
            collect_by_ms: hold.filter(|_| ready).map(|h| h.expires_at.as_ms()),
            code: code.map(|c| c.to_string()),
            qr_svg,
            lines: v
                .lines
                .iter()
                .filter(|l| l.qty > 0)
                .map(|l| (l.description.clone(), l.qty))
                .collect(),
            receipt: v.status == OrderStatus::Collected && v.receipt_seq.is_some(),
        })
    }
}

/// The whole status page.
pub fn status_page(m: &StatusModel, token: &str) -> Markup {
    layout(
        &format!("Order {}", m.channel_order_id),
        &BodyAttrs {
            events: Some(format!("/p/{token}/events")),
            live: Some(format!("/p/{token}?part=live")),
            order: None,
        },
        customer_header(),
        html! {
            h1 { "Your order " (m.channel_order_id) }
            p.hint #conn role="status" { "This page updates by itself." }
            (status_live(m, token))
        },
    )
}

fn customer_state(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Placed => "We have your order.",
        OrderStatus::Confirmed => "Your order is confirmed and waiting to be picked.",
        OrderStatus::Picking => "We are picking your order now.",
        OrderStatus::Ready => "Your order is ready for pickup.",
        OrderStatus::Collected => "You collected your order. Thank you!",
        OrderStatus::Cancelled => "Your order was cancelled.",
        OrderStatus::Expired | OrderStatus::NoShow => {
            "The pickup time has passed; the order was released."
        }
    }
}

/// The status page's live region.
pub fn status_live(m: &StatusModel, token: &str) -> Markup {
    html! {
        div #live aria-live="polite" {
            section.card {
                p.state #customer-state data-status=(status_word(m.status)) { (customer_state(m.status)) }
                @if let Some((a, b)) = m.slot {
                    p { "Pickup time: " strong { (local_time(&m.tz, a)) "–" (clock(&m.tz, b)) } }
                }
                @if let Some(e) = m.estimate_ms {
                    p { "Estimated ready: " strong #estimate { (local_time(&m.tz, e)) } }
                }
                @if let Some(code) = &m.code {
                    div.pickup {
                        p { "Show this code at the store:" }
                        p.code #pickup-code { (code) }
                        @if let Some(svg) = &m.qr_svg {
                            figure.qr role="img" aria-label="QR code of your pickup code" { (PreEscaped(svg)) }
                        }
                        @if let Some(by) = m.collect_by_ms { p { "Please collect by " strong { (local_time(&m.tz, by)) } "." } }
                    }
                }
                @if m.receipt {
                    p { a.button.primary #receipt-link href={ "/p/" (token) "/receipt" } { "Your receipt" } }
                }
            }
            section.card {
                h2 { "Where" }
                p { strong { (m.store_name) } }
                @if let Some(a) = &m.address { p { (a) } }
                @if !m.instructions.is_empty() { p { "Pickup: " (m.instructions) } }
                h2 { "Items" }
                ul { @for (d, q) in &m.lines { li { (q) " × " (d) } } }
            }
        }
    }
}

// ------------------------------------------------------------------ receipt

/// An e-receipt page, printable.
pub fn receipt_page(r: &Receipt, back: Option<&str>) -> Markup {
    let c = r.currency();
    layout(
        &format!("Receipt {}", r.receipt_number()),
        &BodyAttrs::default(),
        customer_header(),
        html! {
            @if let Some(b) = back { p.noprint { a href=(b) { "← Back" } } }
            article.card.receipt #receipt {
                h1 { "Receipt " (r.receipt_number().as_str()) }
                p { (r.store_name()) " · " (r.collected_local_display()) }
                p { "Order " (r.channel_order_id()) }
                table.lines {
                    thead { tr { th scope="col" { "Item" } th scope="col" { "Units" } th scope="col" { "Price" } th scope="col" { "Total" } } }
                    tbody {
                        @for l in r.lines() {
                            tr {
                                td { (l.line().description) " " small { (l.line().sku) } }
                                td.num { (l.line().qty) }
                                td.num { (c.format(l.line().unit_price_minor)) }
                                td.num { (c.format(l.line_total_minor())) }
                            }
                        }
                    }
                    tfoot { tr { th scope="row" colspan="3" { "Total (" (r.total_qty()) " units)" } td.num #receipt-total { (c.format(r.total_minor())) } } }
                }
                p.noprint { button.secondary type="button" data-print { "Print" } }
            }
        },
    )
}

// ------------------------------------------------------------------ store finder

/// One store the finder lists.
#[derive(Debug, Clone)]
pub struct FinderRow {
    /// Display name.
    pub name: String,
    /// Configured address.
    pub address: Option<String>,
    /// Distance from the position searched, km.
    pub distance_km: f64,
    /// Units available to promise.
    pub available: u32,
    /// Whether that covers the quantity asked.
    pub enough: bool,
    /// The next pickup slot with room, local text.
    pub next_slot: Option<String>,
}

/// The finder's form and results.
#[derive(Debug, Clone)]
pub struct FinderModel {
    /// SKU typed.
    pub sku: String,
    /// Quantity typed.
    pub qty: String,
    /// Postal code or position typed.
    pub near: String,
    /// Why nothing could be searched.
    pub error: Option<String>,
    /// Stores found, nearest first.
    pub results: Option<Vec<FinderRow>>,
}

/// The store finder.
pub fn finder_page(m: &FinderModel) -> Markup {
    layout(
        "Find a store",
        &BodyAttrs::default(),
        customer_header(),
        html! {
            h1 { "Find it in a store near you" }
            form.card method="get" action="/stores" {
                label for="sku" { "Item number (SKU)" }
                input #sku name="sku" type="text" value=(m.sku) required;
                label for="qty" { "How many" }
                input #qty name="qty" type="number" min="1" max="999" inputmode="numeric" value=(m.qty);
                label for="near" { "Postal code, or latitude, longitude" }
                input #near name="near" type="text" value=(m.near) required;
                button.primary type="submit" { "Search" }
            }
            @if let Some(e) = &m.error { p.flash.error role="alert" { (e) } }
            @if let Some(rows) = &m.results {
                @if rows.is_empty() {
                    p #no-stores { "No store nearby has this item." }
                } @else {
                    ul.stores #stores {
                        @for r in rows {
                            li.card {
                                h2 { (r.name) }
                                @if let Some(a) = &r.address { p { (a) } }
                                p { (format!("{:.1}", r.distance_km)) " km away · "
                                    @if r.enough { strong.avail { (r.available) " available" } }
                                    @else if r.available > 0 { "only " (r.available) " available" }
                                    @else { "not available" } }
                                p { "Next pickup slot: " (r.next_slot.as_deref().unwrap_or("ask the store")) }
                            }
                        }
                    }
                }
            }
        },
    )
}
