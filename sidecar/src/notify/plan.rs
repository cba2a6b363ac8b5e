//! What the events of one logged record cause: outbox entries.
//!
//! | event (the order's status in `OrderChanged`) | messages |
//! |---|---|
//! | confirmed | confirmation; the reminder is scheduled |
//! | ready | ready for pickup (code, QR); the reminder is scheduled if it was not |
//! | collected | receipt; a pending reminder is cancelled |
//! | cancelled / expired / no-show | the matching kind; a pending reminder is cancelled |
//! | `HoldExtended` of an order with a pending reminder | the reminder is rescheduled |
//!
//! Per channel: a message only with the customer's consent for that channel, an address
//! for it and the channel configured; otherwise the key is recorded as skipped with the
//! reason. Facts come from the event (`OrderFacts` of its moment); the store's
//! definition, the SKU names and the ready estimate are read from the engine.
//!
//! Reminder time ([`reminder_due`]): `lead` before the hold ends, computed on instants;
//! if that falls in the store's quiet hours (store-local wall clock, its IANA zone, so
//! daylight saving changes are honoured) it moves to the end of the quiet period when
//! that is still before the hold ends, else to just before the quiet period began when
//! that is not already past; otherwise no reminder is sent.

use jiff::{civil::DateTime, tz::TimeZone};
use pickline_engine::{
    Customer, Engine, Event, LoggedRecord, OrderId, OrderStatus, OrderView, StoreDef,
    receipt::Currency,
};
use serde_json::{Value, json};

use super::{
    Channel, Kind, MsgKey,
    config::{NotifyConfig, parse_hhmm},
    outbox::{Entry, Message, Outbox, Status},
};

/// Store-local quiet hours: minutes since midnight, `[start, end)`, across midnight when
/// `end <= start`; none when equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    start_min: u16,
    end_min: u16,
}

impl QuietHours {
    /// From `HH:MM` strings (validated by the config).
    pub fn parse(start: &str, end: &str) -> Option<QuietHours> {
        Some(QuietHours {
            start_min: parse_hhmm(start)?,
            end_min: parse_hhmm(end)?,
        })
    }

    /// The quiet period containing local time `t`, as local (start, end) date-times.
    fn period(&self, t: DateTime) -> Option<(DateTime, DateTime)> {
        let (s, e) = (self.start_min, self.end_min);
        if s == e {
            return None;
        }
        let m = t.hour() as u16 * 60 + t.minute() as u16;
        let at = |d: jiff::civil::Date, min: u16| d.at((min / 60) as i8, (min % 60) as i8, 0, 0);
        let day = t.date();
        if s < e {
            return (s..e).contains(&m).then(|| (at(day, s), at(day, e)));
        }
        if m >= s {
            Some((at(day, s), at(day.tomorrow().ok()?, e)))
        } else if m < e {
            Some((at(day.yesterday().ok()?, s), at(day, e)))
        } else {
            None
        }
    }
}

fn local(ms: i64, tz: &TimeZone) -> Option<DateTime> {
    Some(tz.to_datetime(jiff::Timestamp::from_millisecond(ms).ok()?))
}

/// The instant of a store-local time: a time in a skipped hour moves forward by the gap,
/// one in a repeated hour is its first occurrence (the calendar's rule).
fn instant(dt: DateTime, tz: &TimeZone) -> Option<i64> {
    Some(
        tz.to_ambiguous_timestamp(dt)
            .compatible()
            .ok()?
            .as_millisecond(),
    )
}

/// When the reminder of a hold ending at `ends_ms` is sent (see the module doc), or
/// `None` if no time before the end is outside the quiet hours.
pub fn reminder_due(
    ends_ms: i64,
    lead_ms: i64,
    now_ms: i64,
    tz: &TimeZone,
    quiet: QuietHours,
) -> Option<i64> {
    if now_ms >= ends_ms {
        return None;
    }
    let due = (ends_ms - lead_ms).max(now_ms);
    let Some((qs, qe)) = quiet.period(local(due, tz)?) else {
        return Some(due);
    };
    let end = instant(qe, tz)?;
    if end < ends_ms {
        return Some(end.max(due));
    }
    let before = instant(qs, tz)? - 60_000;
    (before >= now_ms).then_some(before)
}

/// If `ms` falls in the quiet hours in `tz`, the instant they end (a reminder whose
/// retries ran into the quiet hours waits for it).
pub fn quiet_until(ms: i64, tz: &TimeZone, quiet: QuietHours) -> Option<i64> {
    let (_, qe) = quiet.period(local(ms, tz)?)?;
    instant(qe, tz)
}

/// What the planner reads besides the record.
pub struct PlanEnv<'a> {
    /// The engine (store definitions, SKU names, ready estimates, receipts).
    pub engine: &'a Engine,
    /// `[notify]`.
    pub config: &'a NotifyConfig,
    /// The outbox (pending reminders).
    pub outbox: &'a Outbox,
    /// The notifier's clock now.
    pub now_ms: i64,
}

/// The outbox entries the events of `rec` cause.
pub fn plan(rec: &LoggedRecord, env: &PlanEnv<'_>) -> Vec<Entry> {
    let mut out = Vec::new();
    let events = &rec.record.events;
    let at = rec.record.at.as_ms();
    for ev in events {
        match ev {
            Event::OrderChanged {
                order, slot, facts, ..
            } => {
                let view = facts.view(*order);
                let kinds: &[Kind] = match facts.status() {
                    OrderStatus::Confirmed => &[Kind::Confirmation],
                    OrderStatus::Ready => &[Kind::Ready],
                    OrderStatus::Collected => &[Kind::Receipt],
                    OrderStatus::Cancelled => &[Kind::Cancelled],
                    OrderStatus::Expired => &[Kind::Expired],
                    OrderStatus::NoShow => &[Kind::NoShow],
                    OrderStatus::Placed | OrderStatus::Picking => &[],
                };
                let Some(def) = env.engine.store_def(order.store()) else {
                    continue;
                };
                let tz = TimeZone::get(&def.time_zone).unwrap_or(TimeZone::UTC);
                let mut ctx = base_context(env.engine, &view, &def, &tz);
                if facts.status() == OrderStatus::Confirmed
                    && let Ok(Some(est)) =
                        env.engine.estimate_ready(&def.external_id, rec.record.at)
                {
                    ctx["ready_estimate"] = fmt_local(est.slot.start_ms, &tz);
                }
                if let Some(s) = slot {
                    ctx["pickup_slot"] = fmt_local(*s, &tz);
                }
                if facts.status() == OrderStatus::Collected
                    && let Some(Ok(r)) = env.engine.receipt_of(*order, facts)
                {
                    ctx["receipt_number"] = json!(r.receipt_number().as_str());
                    ctx["receipt_text"] = json!(r.to_text());
                    ctx["receipt_html"] = json!(r.to_html());
                }
                let open = matches!(facts.status(), OrderStatus::Confirmed | OrderStatus::Ready);
                let ends = open.then(|| hold_end(env.engine, events, *order)).flatten();
                if let Some(t) = ends {
                    ctx["expires_at"] = fmt_local(t, &tz);
                }
                for kind in kinds {
                    let mut c = ctx.clone();
                    c["kind"] = json!(kind.as_str());
                    messages(&mut out, env, *order, *kind, &view.customer, c, at, at);
                }
                match facts.status() {
                    OrderStatus::Confirmed | OrderStatus::Ready => {
                        schedule_reminder(
                            &mut out,
                            env,
                            *order,
                            &view.customer,
                            ctx,
                            ends,
                            &tz,
                            at,
                        );
                    }
                    s if s.is_final() => {
                        for ch in [Channel::Email, Channel::Sms] {
                            let key = MsgKey::new(*order, Kind::Reminder, ch);
                            if matches!(
                                env.outbox.slot(&key).map(|s| &s.status),
                                Some(Status::Pending { .. })
                            ) {
                                out.push(Entry::Cancelled {
                                    key,
                                    reason: format!("order {}", status_name(s)),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::HoldExtended { hold, facts } => {
                let order = OrderId::from_hold(*hold);
                for ch in [Channel::Email, Channel::Sms] {
                    let key = MsgKey::new(order, Kind::Reminder, ch);
                    let Some(slot) = env.outbox.slot(&key) else {
                        continue;
                    };
                    let (Status::Pending { attempts: 0, .. }, Some(msg)) =
                        (&slot.status, &slot.msg)
                    else {
                        continue;
                    };
                    let Some(def) = env.engine.store_def(order.store()) else {
                        continue;
                    };
                    let tz = TimeZone::get(&def.time_zone).unwrap_or(TimeZone::UTC);
                    if let Some(due) = due_for(env, facts.expires_at.as_ms(), &tz) {
                        let mut msg = msg.clone();
                        msg.ctx["expires_at"] = fmt_local(facts.expires_at.as_ms(), &tz);
                        msg.due_ms = due;
                        out.push(Entry::Enqueued { msg });
                    } else {
                        out.push(Entry::Cancelled {
                            key,
                            reason: "no time outside quiet hours".into(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Collected => "collected",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
        OrderStatus::NoShow => "no_show",
        _ => "open",
    }
}

/// When the order's hold ends: the `HoldConfirmed` of the same record if any, else the
/// hold as the engine has it now (the latest extension included).
fn hold_end(engine: &Engine, events: &[Event], order: OrderId) -> Option<i64> {
    events
        .iter()
        .find_map(|e| match e {
            Event::HoldConfirmed { hold, facts } if *hold == order.hold() => {
                Some(facts.expires_at.as_ms())
            }
            _ => None,
        })
        .or_else(|| engine.hold_info(order.hold()).map(|h| h.expires_at.as_ms()))
}

fn due_for(env: &PlanEnv<'_>, ends_ms: i64, tz: &TimeZone) -> Option<i64> {
    let quiet = QuietHours::parse(&env.config.quiet_start, &env.config.quiet_end)?;
    reminder_due(
        ends_ms,
        env.config.reminder_lead_ms as i64,
        env.now_ms,
        tz,
        quiet,
    )
}

#[allow(clippy::too_many_arguments)]
fn schedule_reminder(
    out: &mut Vec<Entry>,
    env: &PlanEnv<'_>,
    order: OrderId,
    customer: &Customer,
    mut ctx: Value,
    ends_ms: Option<i64>,
    tz: &TimeZone,
    event_ms: i64,
) {
    let Some(ends) = ends_ms else { return };
    // Scheduled once: a later status (ready after confirmed) keeps the first schedule.
    let scheduled = [Channel::Email, Channel::Sms].iter().any(|ch| {
        env.outbox
            .slot(&MsgKey::new(order, Kind::Reminder, *ch))
            .is_some()
    });
    if scheduled {
        return;
    }
    ctx["kind"] = json!(Kind::Reminder.as_str());
    ctx["expires_at"] = fmt_local(ends, tz);
    match due_for(env, ends, tz) {
        Some(due) => messages(
            out,
            env,
            order,
            Kind::Reminder,
            customer,
            ctx,
            due,
            event_ms,
        ),
        None => {
            for ch in [Channel::Email, Channel::Sms] {
                out.push(Entry::Skipped {
                    key: MsgKey::new(order, Kind::Reminder, ch),
                    reason: "no time outside quiet hours before the hold ends".into(),
                });
            }
        }
    }
}

/// One entry per channel: the message, or why it is skipped.
#[allow(clippy::too_many_arguments)]
fn messages(
    out: &mut Vec<Entry>,
    env: &PlanEnv<'_>,
    order: OrderId,
    kind: Kind,
    customer: &Customer,
    ctx: Value,
    due_ms: i64,
    event_ms: i64,
) {
    let c = env.config;
    let locale = customer
        .locale
        .clone()
        .filter(|l| super::config::valid_locale(l))
        .unwrap_or_else(|| c.default_locale.clone());
    for (channel, on, consent, to) in [
        (
            Channel::Email,
            c.email.enabled,
            customer.email_consent,
            &customer.email,
        ),
        (
            Channel::Sms,
            c.sms.enabled,
            customer.sms_consent,
            &customer.phone,
        ),
    ] {
        let key = MsgKey::new(order, kind, channel);
        let skip = if !consent {
            Some("no consent")
        } else if to.as_deref().is_none_or(str::is_empty) {
            Some("no address")
        } else if !on {
            Some("channel not configured")
        } else {
            None
        };
        match (skip, to) {
            (None, Some(to)) => out.push(Entry::Enqueued {
                msg: Message {
                    key,
                    to: to.clone(),
                    locale: locale.clone(),
                    ctx: ctx.clone(),
                    due_ms,
                    event_ms,
                },
            }),
            (reason, _) => out.push(Entry::Skipped {
                key,
                reason: reason.unwrap_or("no address").to_owned(),
            }),
        }
    }
}

/// A store-local time as templates show it.
pub fn fmt_local(ms: i64, tz: &TimeZone) -> Value {
    match local(ms, tz) {
        Some(t) => json!(format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute()
        )),
        None => Value::Null,
    }
}

/// The facts every template may use.
pub fn base_context(engine: &Engine, view: &OrderView, def: &StoreDef, tz: &TimeZone) -> Value {
    let exponent = Currency::iso(&view.currency).map_or(2, |c| c.exponent());
    let total: i64 = view
        .lines
        .iter()
        .map(|l| l.unit_price_minor.saturating_mul(i64::from(l.qty)))
        .fold(0i64, i64::saturating_add);
    let lines: Vec<Value> = view
        .lines
        .iter()
        .filter(|l| l.qty > 0)
        .map(|l| {
            json!({
                "sku": engine.sku_name(l.sku).unwrap_or_default(),
                "description": l.description,
                "qty": l.qty,
            })
        })
        .collect();
    let code = view.code.as_ref();
    let qr = code.and_then(|c| {
        pickline_engine::pickup_code::QrPayload::new(&def.external_id, &view.order.to_string(), *c)
            .ok()
            .map(|p| p.encode())
    });
    json!({
        "order_id": view.order.to_string(),
        "channel_order_id": view.channel_order_id,
        "customer_name": view.customer.name,
        "store": {
            "id": def.external_id,
            "name": def.name,
            "instructions": def.pickup_instructions,
            "time_zone": def.time_zone,
        },
        "lines": lines,
        "currency": view.currency,
        "total": format!("{} {}", pickline_engine::receipt::format_minor_units(total, exponent), view.currency),
        "pickup_code": code.map(|c| c.to_string()),
        "qr_payload": qr,
        "placed_at": view.transitions.first().map_or(Value::Null, |(_, t)| fmt_local(t.as_ms(), tz)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn reminder_outside_quiet_hours_in_store_time_across_dst() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let quiet = QuietHours::parse("21:00", "08:00").unwrap();
        let hour = 3_600_000;
        // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT. Hold ends 10:00 EDT (14:00Z);
        // 3 h lead is 07:00 EDT, quiet; moved to 08:00 EDT = 12:00Z (not 13:00Z, which
        // 08:00 EST would be).
        let now = ms("2026-03-08T05:00:00Z");
        assert_eq!(
            reminder_due(ms("2026-03-08T14:00:00Z"), 3 * hour, now, &ny, quiet),
            Some(ms("2026-03-08T12:00:00Z"))
        );
        // Outside quiet hours: exactly the lead.
        assert_eq!(
            reminder_due(ms("2026-03-08T20:00:00Z"), hour, now, &ny, quiet),
            Some(ms("2026-03-08T19:00:00Z"))
        );
        // Fall back (2026-11-01, 02:00 EDT -> 01:00 EST): ends 08:30 EST (13:30Z), due
        // 06:30 EST in quiet hours -> 08:00 EST = 13:00Z.
        assert_eq!(
            reminder_due(
                ms("2026-11-01T13:30:00Z"),
                2 * hour,
                ms("2026-11-01T00:00:00Z"),
                &ny,
                quiet
            ),
            Some(ms("2026-11-01T13:00:00Z"))
        );
        // Ends 07:30 EDT: the quiet period ends after it, so the reminder goes just before
        // 21:00 the evening before (20:59 EST = 01:59Z).
        assert_eq!(
            reminder_due(
                ms("2026-03-08T11:30:00Z"),
                hour,
                ms("2026-03-07T12:00:00Z"),
                &ny,
                quiet
            ),
            Some(ms("2026-03-08T01:59:00Z"))
        );
        // ... unless that is already past: no reminder at all.
        assert_eq!(
            reminder_due(
                ms("2026-03-08T11:30:00Z"),
                hour,
                ms("2026-03-08T03:00:00Z"),
                &ny,
                quiet
            ),
            None
        );
        // Every answer is outside the quiet hours, in store time.
        for start_h in 0..48 {
            let now = ms("2026-03-07T00:00:00Z") + start_h * hour;
            for end_h in 1..30 {
                let ends = now + end_h * hour;
                if let Some(due) = reminder_due(ends, 2 * hour, now, &ny, quiet) {
                    let t = local(due, &ny).unwrap();
                    assert!(quiet.period(t).is_none(), "{due} is quiet");
                    assert!(due >= now && due < ends);
                }
            }
        }
    }
}
