//! An order's value types and its record as events carry it ([`OrderFacts`] in
//! [`crate::event::Event::OrderChanged`]): customer, lines, who cancelled, the record's
//! fields and its byte encoding. Below `event` in the layers (see ARCHITECTURE.md), so it
//! names no event: how an event changes the record (`OrderRec::apply`) is in
//! [`crate::order`], the order state's transitions.

use crate::codec::{Dec, DecodeError, Enc};
use crate::pickup_code::PickupCode;
use crate::types::{Line, OrderId, OrderStatus, Qty, SkuId, Timestamp};
use crate::wire::{Wire, decode_lines, encode_lines};

/// Customer contact and consent flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Customer {
    /// Name to greet the customer with, up to [`CONTACT_LEN_MAX`] bytes.
    pub name: Option<String>,
    /// BCP 47 locale for messages and the receipt (`de-DE`), up to [`LOCALE_LEN_MAX`]
    /// bytes; `None` means the store's default.
    pub locale: Option<String>,
    /// Email address, up to [`CONTACT_LEN_MAX`] bytes.
    pub email: Option<String>,
    /// Phone number, up to [`CONTACT_LEN_MAX`] bytes.
    pub phone: Option<String>,
    /// May be sent SMS.
    pub sms_consent: bool,
    /// May be sent email.
    pub email_consent: bool,
}

/// A priced order line as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// Interned SKU.
    pub sku: SkuId,
    /// Units (after short picks).
    pub qty: Qty,
    /// Price of one unit in minor units of the order's currency.
    pub unit_price_minor: i64,
    /// What the customer sees on the receipt.
    pub description: String,
}

/// What to do with the units a short pick found missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortPickResolution {
    /// Ask the allocation module to find them at another store
    /// ([`Event::ReallocationRequested`]).
    Reallocate,
    /// Drop them from the order.
    CancelLine,
}

/// Who cancelled an order, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelledBy {
    /// The customer.
    Customer,
    /// Store staff.
    Store,
    /// A direct release of the order's hold through [`Engine::release`].
    System,
}

impl CancelledBy {
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        [
            CancelledBy::Customer,
            CancelledBy::Store,
            CancelledBy::System,
        ]
        .get(usize::from(v))
        .copied()
    }
}

/// An order as [`Engine::order`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    /// The order.
    pub order: OrderId,
    /// Status now.
    pub status: OrderStatus,
    /// Sales channel.
    pub channel: String,
    /// The channel's order id.
    pub channel_order_id: String,
    /// Contact and consent.
    pub customer: Customer,
    /// Lines (after short picks).
    pub lines: Vec<OrderLine>,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Every transition with its time, oldest first.
    pub transitions: Vec<(OrderStatus, Timestamp)>,
    /// Pickup code, once ready.
    pub code: Option<PickupCode>,
    /// Wrong codes since the code was issued or last unlocked.
    pub wrong_attempts: u32,
    /// Locked by wrong codes.
    pub locked: bool,
    /// Staff overrides so far.
    pub overrides: u32,
    /// The last staff override: who and when.
    pub last_override: Option<(String, Timestamp)>,
    /// Short picks so far.
    pub short_picks: u32,
    /// Units sent for re-allocation elsewhere.
    pub reallocation_requested: Vec<Line>,
    /// Receipt sequence, once collected.
    pub receipt_seq: Option<u64>,
    /// The pickup time promised at confirmation (see [`Event::OrderConfirmed`]).
    pub ready_estimate: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderRec {
    pub(crate) status: OrderStatus,
    pub(crate) channel: Box<str>,
    pub(crate) channel_order_id: Box<str>,
    pub(crate) customer: Customer,
    pub(crate) lines: Vec<OrderLine>,
    /// Per line: units the POS reported sold for this order.
    pub(crate) pos_seen: Vec<Qty>,
    pub(crate) currency: Box<str>,
    pub(crate) currency_exponent: u8,
    pub(crate) key: Option<Box<str>>,
    pub(crate) times: Vec<(OrderStatus, Timestamp)>,
    pub(crate) code: Option<u64>,
    pub(crate) wrong: u32,
    pub(crate) locked: bool,
    pub(crate) overrides: u32,
    pub(crate) last_override: Option<(Box<str>, Timestamp)>,
    pub(crate) short_picks: u32,
    pub(crate) realloc: Vec<Line>,
    pub(crate) receipt_seq: Option<u64>,
    /// The pickup time promised at confirmation ([`Event::OrderConfirmed`]).
    pub(crate) ready_estimate: Option<Timestamp>,
}

/// Whether an encoded [`OrderRec`] ends with its ready estimate: records of snapshots
/// before format 9 and of [`Event::OrderChanged`] under its first tag do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecLayout {
    /// Without `ready_estimate` (read as `None`).
    WithoutEstimate,
    /// With it: what is written now.
    WithEstimate,
}

impl OrderRec {
    /// Appends the record's encoding (every field), for snapshots and order events.
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        e.u8(self.status.to_u8());
        e.str(&self.channel);
        e.str(&self.channel_order_id);
        encode_customer(e, &self.customer);
        encode_order_lines(e, &self.lines);
        e.seq_len(self.pos_seen.len());
        for q in &self.pos_seen {
            e.u32(*q);
        }
        e.str(&self.currency);
        e.u8(self.currency_exponent);
        e.opt_str(self.key.as_deref());
        e.seq_len(self.times.len());
        for (s, t) in &self.times {
            e.u8(s.to_u8());
            e.i64(t.0);
        }
        e.opt_i64(self.code.map(|c| c as i64));
        e.u32(self.wrong);
        e.bool(self.locked);
        e.u32(self.overrides);
        match &self.last_override {
            None => e.u8(0),
            Some((s, t)) => {
                e.u8(1);
                e.str(s);
                e.i64(t.0);
            }
        }
        e.u32(self.short_picks);
        encode_lines(e, &self.realloc);
        e.opt_i64(self.receipt_seq.map(|s| s as i64));
        e.opt_i64(self.ready_estimate.map(|t| t.0));
    }

    /// Decodes what [`OrderRec::encode`] wrote (in `layout`).
    pub(crate) fn decode(d: &mut Dec<'_>, layout: RecLayout) -> Result<OrderRec, DecodeError> {
        let status = decode_status(d)?;
        let channel: Box<str> = d.string()?.into();
        let channel_order_id: Box<str> = d.string()?.into();
        let customer = decode_customer(d)?;
        let lines = decode_order_lines(d)?;
        let k = d.seq_len()?;
        let mut pos_seen = Vec::with_capacity(k);
        for _ in 0..k {
            pos_seen.push(d.u32()?);
        }
        let at = d.pos();
        if pos_seen.len() != lines.len() {
            return Err(DecodeError::Invalid {
                what: "order pos_seen",
                at,
            });
        }
        let currency = d.string()?.into();
        let currency_exponent = d.u8()?;
        let key = d.opt_string()?.map(Into::into);
        let k = d.seq_len()?;
        let mut times = Vec::with_capacity(k);
        for _ in 0..k {
            let s = decode_status(d)?;
            times.push((s, Timestamp(d.i64()?)));
        }
        let code = d.opt_i64()?.map(|c| c as u64);
        let wrong = d.u32()?;
        let locked = d.bool()?;
        let overrides = d.u32()?;
        let last_override = match d.u8()? {
            0 => None,
            _ => Some((d.string()?.into(), Timestamp(d.i64()?))),
        };
        let short_picks = d.u32()?;
        let realloc = decode_lines(d)?;
        let receipt_seq = d.opt_i64()?.map(|s| s as u64);
        let ready_estimate = match layout {
            RecLayout::WithoutEstimate => None,
            RecLayout::WithEstimate => d.opt_i64()?.map(Timestamp),
        };
        Ok(OrderRec {
            status,
            channel,
            channel_order_id,
            customer,
            lines,
            pos_seen,
            currency,
            currency_exponent,
            key,
            times,
            code,
            wrong,
            locked,
            overrides,
            last_override,
            short_picks,
            realloc,
            receipt_seq,
            ready_estimate,
        })
    }
}

/// A pickup order as it stood right after a transition, carried by
/// [`Event::OrderChanged`] so that a reader of the stream learns every state the order
/// went through, also long after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts(pub(crate) OrderRec);

impl OrderFacts {
    /// The order's status then.
    pub fn status(&self) -> OrderStatus {
        self.0.status
    }

    /// The order as [`Engine::order`] showed it then.
    pub fn view(&self, order: OrderId) -> OrderView {
        order_view(order, &self.0)
    }
}

#[cfg_attr(not(test), allow(dead_code))]
fn decode_status(d: &mut Dec<'_>) -> Result<OrderStatus, DecodeError> {
    let at = d.pos();
    OrderStatus::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
        what: "order status",
        at,
    })
}

fn encode_customer(e: &mut Enc<'_>, c: &Customer) {
    e.opt_str(c.name.as_deref());
    e.opt_str(c.locale.as_deref());
    e.opt_str(c.email.as_deref());
    e.opt_str(c.phone.as_deref());
    e.bool(c.sms_consent);
    e.bool(c.email_consent);
}

fn decode_customer(d: &mut Dec<'_>) -> Result<Customer, DecodeError> {
    Ok(Customer {
        name: d.opt_string()?,
        locale: d.opt_string()?,
        email: d.opt_string()?,
        phone: d.opt_string()?,
        sms_consent: d.bool()?,
        email_consent: d.bool()?,
    })
}

fn encode_order_lines(e: &mut Enc<'_>, lines: &[OrderLine]) {
    e.seq_len(lines.len());
    for l in lines {
        e.u32(l.sku.0);
        e.u32(l.qty);
        e.i64(l.unit_price_minor);
        e.str(&l.description);
    }
}

fn decode_order_lines(d: &mut Dec<'_>) -> Result<Vec<OrderLine>, DecodeError> {
    let n = d.seq_len()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(OrderLine {
            sku: SkuId(d.u32()?),
            qty: d.u32()?,
            unit_price_minor: d.i64()?,
            description: d.string()?,
        });
    }
    Ok(v)
}

impl Wire for OrderId {
    fn put(&self, e: &mut Enc<'_>) {
        e.u64(self.0);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(OrderId(d.u64()?))
    }
}

impl Wire for Customer {
    fn put(&self, e: &mut Enc<'_>) {
        encode_customer(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_customer(d)
    }
}

impl Wire for Vec<OrderLine> {
    fn put(&self, e: &mut Enc<'_>) {
        encode_order_lines(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_order_lines(d)
    }
}

crate::wire::wire_enum!(ShortPickResolution, "short pick resolution" { Reallocate = 0, CancelLine = 1 });

impl Wire for CancelledBy {
    fn put(&self, e: &mut Enc<'_>) {
        e.u8(self.to_u8());
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let at = d.pos();
        CancelledBy::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
            what: "cancelled by",
            at,
        })
    }
}

/// An order's facts as events write them now (ending with the ready estimate).
impl Wire for OrderFacts {
    fn put(&self, e: &mut Enc<'_>) {
        self.0.encode(e);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(OrderFacts(OrderRec::decode(d, RecLayout::WithEstimate)?))
    }
}

/// The view of one order record.
pub(crate) fn order_view(order: OrderId, r: &OrderRec) -> OrderView {
    OrderView {
        order,
        status: r.status,
        channel: r.channel.to_string(),
        channel_order_id: r.channel_order_id.to_string(),
        customer: r.customer.clone(),
        lines: r.lines.clone(),
        currency: r.currency.to_string(),
        transitions: r.times.clone(),
        code: r.code.and_then(|c| PickupCode::from_value(c).ok()),
        wrong_attempts: r.wrong,
        locked: r.locked,
        overrides: r.overrides,
        last_override: r.last_override.as_ref().map(|(s, t)| (s.to_string(), *t)),
        short_picks: r.short_picks,
        reallocation_requested: r.realloc.clone(),
        receipt_seq: r.receipt_seq,
        ready_estimate: r.ready_estimate,
    }
}
