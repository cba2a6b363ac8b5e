//! Into the engine: each pickup group of a [`CanonicalOrder`] becomes a held, confirmed
//! pickup order, durably, exactly once however often the order is delivered.
//!
//! Every source (webhooks, gRPC, NATS) reaches it through the intake flow's workers
//! ([`super::flow`]), which call [`place`].
//!
//! # Exactly once
//!
//! - A group's hold and order carry idempotency keys derived from (channel, account,
//!   order id, version, group): a retried delivery of one version gets the first outcome
//!   back and holds nothing twice.
//! - A group's engine order is named by (channel, channel order id); an order the engine
//!   already has under that name (an earlier version, another key) is the accepted one:
//!   the delivery is answered with it and whatever this call held for it is released.
//!
//! # All or nothing per order
//!
//! Every group is held before any order is created; when a group cannot be held, the holds
//! made for the other groups of the same order are released, so a refused order leaves no
//! stock behind. (Once holds are in place, an order creation can only fail on a state an
//! earlier delivery left; the holds not yet turned into orders are released then too.)
//!
//! Customer email and phone go into the engine only: nothing here logs them.

use std::fmt::Write as _;

use pickline_engine::{
    CreateOrder, CreateOrderOutcome, CreateOrderRejection, Engine, EngineError, HoldId,
    HoldNotActive, HoldOutcome, HoldRejection, HoldRequest, LineRequest, OrderId, OrderLineRequest,
    Timestamp,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{CanonicalOrder, PickupGroup};
use crate::grpc::domain::{Domain, now};
use crate::grpc::status::DomainError;

/// One engine order made (or found) for one pickup group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlacedOrder {
    /// The engine's order id, as a string (it exceeds 2^53).
    pub order_id: String,
    /// The Pickline store.
    pub store: String,
    /// The channel order id the engine knows the order by: the platform's order id, with
    /// `/<n>` (the group's 1-based position) when the order has several pickup groups.
    pub channel_order_id: String,
}

/// A line the store cannot promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: u32,
    /// Units available to promise.
    pub available: u32,
}

/// Why the engine refused an order for good (the same delivery will be refused again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// A store the order maps to is not registered.
    UnknownStore,
    /// A SKU is not known to the engine.
    UnknownSku,
    /// A store takes no new holds (pickups paused or closed).
    StoreNotAccepting,
    /// The checkout hold reference does not name a Pickline hold.
    HoldRefInvalid,
    /// The checkout hold expired, was released, or was never granted.
    HoldNotActive,
    /// The order's lines are not the checkout hold's lines.
    LinesMismatch,
    /// The engine refused a field (a contact too long, a currency it does not know, ...).
    InvalidRequest,
}

/// What [`place`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SinkOutcome {
    /// Every pickup group is a confirmed engine order, durable.
    Accepted {
        /// One per pickup group, in the order of the groups.
        orders: Vec<PlacedOrder>,
        /// Nothing was written: every order came from an earlier delivery.
        replayed: bool,
    },
    /// The order has no pickup group: nothing to do.
    NotPickup,
    /// The platform cancelled the order: nothing is held for it, and the engine orders
    /// an earlier delivery placed are cancelled (their holds released).
    CancelledOnPlatform {
        /// The engine orders cancelled now (ids as strings).
        cancelled: Vec<String>,
    },
    /// A store cannot promise some lines; nothing of this order is held.
    InsufficientStock {
        /// The store.
        store: String,
        /// Its short lines.
        shortages: Vec<Shortfall>,
    },
    /// Refused for good; nothing of this order is held.
    Refused {
        /// Why, as a stable code.
        code: RefusalCode,
        /// What exactly, for a person.
        message: String,
    },
}

/// A failure that may pass: the sender should deliver again later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("engine unavailable: {0}")]
pub struct Unavailable(pub String);

/// Places `order` in the engine (see the module doc) and answers once everything it wrote
/// is as durable as the log's mode promises.
///
/// `generation` is how often an operator replayed this delivery from the dead-letter
/// queue: the engine keeps the first answer of a keyed hold, a refusal too, so a replay
/// (after the cause was fixed) needs keys of its own. 0 for every first placement.
pub async fn place(
    domain: &Domain,
    order: &CanonicalOrder,
    generation: u32,
) -> Result<SinkOutcome, Unavailable> {
    if order.pickups().is_empty() {
        return Ok(SinkOutcome::NotPickup);
    }
    let engine = domain
        .engine()
        .map_err(|e| Unavailable(tonic::Status::from(e).message().to_owned()))?;
    if order.cancelled() {
        return domain
            .durable(|| cancel_now(&engine, order, now()))
            .await
            .map_err(|s| Unavailable(s.message().to_owned()));
    }
    domain
        .durable(|| place_now(&engine, order, generation, now()))
        .await
        .map_err(|s| Unavailable(s.message().to_owned()))
}

/// Cancels the engine orders earlier deliveries of this order placed (a cancellation on
/// the platform is the customer's). An order already handed over or ended stays as it is.
fn cancel_now(
    engine: &Engine,
    order: &CanonicalOrder,
    now: Timestamp,
) -> Result<SinkOutcome, DomainError> {
    let channel = order.channel().as_str();
    let mut cancelled = Vec::new();
    for i in 0..order.pickups().len() {
        let Some(id) = engine.order_by_channel(channel, &channel_order_id(order, i)) else {
            continue;
        };
        match engine.cancel_order(id, &pickline_engine::Canceller::Customer, now)? {
            pickline_engine::TransitionOutcome::Done { .. } => cancelled.push(id.0.to_string()),
            pickline_engine::TransitionOutcome::Rejected(why) => tracing::info!(
                channel,
                order_id = order.order_id(),
                engine_order = id.0,
                ?why,
                "intake: a platform cancellation left the engine order as it is"
            ),
        }
    }
    if !cancelled.is_empty() {
        tracing::info!(
            channel,
            account = order.account(),
            order_id = order.order_id(),
            orders = cancelled.len(),
            "intake: order cancelled on the platform; engine orders cancelled"
        );
    }
    Ok(SinkOutcome::CancelledOnPlatform { cancelled })
}

/// The engine calls of [`place`], at `now`. `Err` only for what may pass.
fn place_now(
    engine: &Engine,
    order: &CanonicalOrder,
    generation: u32,
    now: Timestamp,
) -> Result<SinkOutcome, DomainError> {
    let channel = order.channel().as_str();
    let groups = order.pickups();
    let head_before = engine.log().last_lsn();
    let refs: Vec<String> = (0..groups.len())
        .map(|i| channel_order_id(order, i))
        .collect();
    let existing: Vec<Option<OrderId>> = refs
        .iter()
        .map(|r| engine.order_by_channel(channel, r))
        .collect();

    // 1. A hold per group not yet an order.
    let mut holds: Vec<Option<Held>> = Vec::with_capacity(groups.len());
    if let Some(reference) = order.hold_ref() {
        if groups.len() != 1 {
            return Ok(refused(
                RefusalCode::HoldRefInvalid,
                format!(
                    "a checkout hold covers one store; the order has {} pickup groups",
                    groups.len()
                ),
            ));
        }
        if existing[0].is_none() {
            match checkout_hold(engine, reference, now)? {
                Ok(hold) => holds.push(Some(hold)),
                Err(outcome) => return Ok(outcome),
            }
        } else {
            holds.push(None);
        }
    } else {
        for (i, group) in groups.iter().enumerate() {
            if existing[i].is_some() {
                holds.push(None);
                continue;
            }
            match hold_group(engine, order, i, group, generation, now) {
                Ok(Ok(hold)) => holds.push(Some(hold)),
                Ok(Err(outcome)) => {
                    release_all(engine, &holds, now)?;
                    return Ok(outcome);
                }
                Err(e) => {
                    // Best effort: the error is what the sender hears about.
                    let _ = release_all(engine, &holds, now);
                    return Err(e);
                }
            }
        }
    }

    // 2. An order per group, confirmed.
    let mut orders = Vec::with_capacity(groups.len());
    for (i, group) in groups.iter().enumerate() {
        let id = match (existing[i], &holds[i]) {
            (Some(id), _) => id,
            (None, Some(held)) => match create(engine, order, i, &refs[i], held, generation, now) {
                Ok(Ok(id)) => id,
                Ok(Err(outcome)) => {
                    release_all(engine, &holds[i..], now)?;
                    return Ok(outcome);
                }
                Err(e) => {
                    let _ = release_all(engine, &holds[i..], now);
                    return Err(e);
                }
            },
            (None, None) => {
                return Err(DomainError::Internal(
                    "intake: a pickup group has neither an order nor a hold".into(),
                ));
            }
        };
        orders.push(PlacedOrder {
            order_id: id.0.to_string(),
            store: group.store.clone(),
            channel_order_id: refs[i].clone(),
        });
    }
    let replayed = engine.log().last_lsn() == head_before;
    tracing::info!(
        channel,
        account = order.account(),
        order_id = order.order_id(),
        groups = orders.len(),
        replayed,
        "intake: order accepted"
    );
    Ok(SinkOutcome::Accepted { orders, replayed })
}

/// A hold this order's orders are made from.
#[derive(Clone, Copy, Debug)]
struct Held {
    hold: HoldId,
    /// Made by intake (released when the order fails); a checkout hold is the checkout's.
    ours: bool,
}

fn refused(code: RefusalCode, message: impl Into<String>) -> SinkOutcome {
    SinkOutcome::Refused {
        code,
        message: message.into(),
    }
}

/// The channel order id of group `i`.
fn channel_order_id(order: &CanonicalOrder, i: usize) -> String {
    if order.pickups().len() == 1 {
        order.order_id().to_owned()
    } else {
        format!("{}/{}", order.order_id(), i + 1)
    }
}

/// The idempotency key of `kind` ("hold", "order") for group `i` of this version of the
/// order, placed for the `generation`-th time (see [`place`]): a digest, so that it stays
/// short whatever the account and order id.
pub fn idempotency_key(order: &CanonicalOrder, kind: &str, i: usize, generation: u32) -> String {
    let mut h = Sha256::new();
    // Generation 0 adds nothing: first placements keep the keys they always had.
    let generation = if generation == 0 {
        String::new()
    } else {
        generation.to_string()
    };
    for part in [
        order.channel().as_str(),
        order.account(),
        order.order_id(),
        &order.version().to_string(),
        kind,
        &i.to_string(),
    ]
    .into_iter()
    .chain((!generation.is_empty()).then_some(generation.as_str()))
    {
        // Length-prefixed, so that no two tuples give the same bytes.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut key = String::from("intake-");
    for b in &digest[..16] {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The group's lines, one per SKU (the engine merges a SKU named twice in a hold, and an
/// order's lines must be exactly the hold's): quantities add up, the first price stands.
fn merged(group: &PickupGroup) -> Vec<(String, u32, i64)> {
    let mut lines: Vec<(String, u32, i64)> = Vec::with_capacity(group.lines.len());
    for l in &group.lines {
        match lines.iter_mut().find(|(sku, _, _)| *sku == l.sku) {
            Some(line) => line.1 = line.1.saturating_add(l.qty),
            None => lines.push((l.sku.clone(), l.qty, l.unit_price_minor)),
        }
    }
    lines
}

/// An engine error: refused for good (a value), or one that may pass (`Err`).
fn classify(e: EngineError) -> Result<SinkOutcome, DomainError> {
    match e {
        EngineError::UnknownStore(s) => Ok(refused(
            RefusalCode::UnknownStore,
            format!("unknown store {s:?}"),
        )),
        EngineError::UnknownSku(s) => Ok(refused(
            RefusalCode::UnknownSku,
            format!("unknown SKU {s:?}"),
        )),
        EngineError::InvalidRequest { .. } | EngineError::IdempotencyKeyReused { .. } => {
            Ok(refused(RefusalCode::InvalidRequest, e.to_string()))
        }
        other => Err(DomainError::from(other)),
    }
}

type Step<T> = Result<Result<T, SinkOutcome>, DomainError>;

/// Lifts a classified engine error into a step.
fn failed<T>(e: EngineError) -> Step<T> {
    classify(e).map(Err)
}

fn hold_group(
    engine: &Engine,
    order: &CanonicalOrder,
    i: usize,
    group: &PickupGroup,
    generation: u32,
    now: Timestamp,
) -> Step<Held> {
    let lines = merged(group)
        .into_iter()
        .map(|(sku, qty, _)| LineRequest::new(sku, qty))
        .collect();
    let req = HoldRequest::new(group.store.clone(), lines)
        .with_key(idempotency_key(order, "hold", i, generation));
    let outcome = match engine.hold(&req, now) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    match outcome {
        HoldOutcome::Granted(g) => Ok(Ok(Held {
            hold: g.hold,
            ours: true,
        })),
        HoldOutcome::Rejected(HoldRejection::InsufficientStock { shortages }) => {
            Ok(Err(SinkOutcome::InsufficientStock {
                store: group.store.clone(),
                shortages: shortages
                    .into_iter()
                    .map(|s| Shortfall {
                        sku: s.sku,
                        requested: s.requested,
                        available: s.available,
                    })
                    .collect(),
            }))
        }
        HoldOutcome::Rejected(HoldRejection::StoreNotAccepting { status }) => Ok(Err(refused(
            RefusalCode::StoreNotAccepting,
            format!("store {:?} takes no pickups ({status:?})", group.store),
        ))),
        HoldOutcome::Rejected(HoldRejection::SlotUnavailable { .. }) => {
            // Intake books no slot; the engine cannot answer this.
            Err(DomainError::Internal(
                "intake: a hold without a slot was refused a slot".into(),
            ))
        }
        HoldOutcome::InFlight => Err(DomainError::OrderInFlight {
            channel_order_id: order.order_id().to_owned(),
        }),
    }
}

/// The checkout hold named by `reference` (a Pickline hold id in decimal), confirmed.
fn checkout_hold(engine: &Engine, reference: &str, now: Timestamp) -> Step<Held> {
    let Some(hold) = reference.trim().parse::<u64>().ok().filter(|&h| h != 0) else {
        return Ok(Err(refused(
            RefusalCode::HoldRefInvalid,
            format!("checkout hold reference {reference:?} is not a Pickline hold id"),
        )));
    };
    let hold = HoldId(hold);
    let outcome = match engine.confirm(hold, now) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    match outcome {
        pickline_engine::ConfirmOutcome::Confirmed { .. } => Ok(Ok(Held { hold, ours: false })),
        pickline_engine::ConfirmOutcome::NotActive(state) => Ok(Err(refused(
            RefusalCode::HoldNotActive,
            format!("checkout hold {} is not active ({state:?})", hold.0),
        ))),
    }
}

/// Creates and confirms the engine order of pickup group `i` (named `channel_order_id`)
/// from `held`.
fn create(
    engine: &Engine,
    order: &CanonicalOrder,
    i: usize,
    channel_order_id: &str,
    held: &Held,
    generation: u32,
    now: Timestamp,
) -> Step<OrderId> {
    let group = &order.pickups()[i];
    let c = order.customer();
    let cmd = CreateOrder {
        hold: held.hold,
        channel: order.channel().as_str().to_owned(),
        channel_order_id: channel_order_id.to_owned(),
        customer: pickline_engine::Customer {
            name: c.name.clone(),
            locale: c.locale.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            // The canonical order carries no consent statement; none is assumed.
            sms_consent: false,
            email_consent: false,
        },
        lines: merged(group)
            .into_iter()
            .map(|(sku, qty, unit_price_minor)| OrderLineRequest {
                description: sku.clone(),
                sku,
                qty,
                unit_price_minor,
            })
            .collect(),
        currency: order.currency().to_owned(),
        idempotency_key: Some(idempotency_key(order, "order", i, generation)),
    };
    let outcome = match engine.create_order(&cmd, now) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    let id = match outcome {
        CreateOrderOutcome::Created { order } => order,
        // Accepted before (another version or key): that order is the answer, and the
        // hold just made for it is not needed.
        CreateOrderOutcome::Rejected(CreateOrderRejection::ChannelOrderExists { order }) => {
            if held.ours {
                engine.release(held.hold, now)?;
            }
            return Ok(Ok(order));
        }
        // The hold already became an order (a retry under an older key).
        CreateOrderOutcome::Rejected(
            CreateOrderRejection::OrderExists { order } | CreateOrderRejection::KeyReused { order },
        ) => return Ok(Ok(order)),
        CreateOrderOutcome::Rejected(CreateOrderRejection::HoldNotActive(state)) => {
            let why = match state {
                HoldNotActive::Ended => "ended",
                HoldNotActive::Unknown => "never granted",
            };
            return Ok(Err(refused(
                RefusalCode::HoldNotActive,
                format!("hold {} {why} before the order was created", held.hold.0),
            )));
        }
        CreateOrderOutcome::Rejected(CreateOrderRejection::LinesMismatch) => {
            return Ok(Err(refused(
                RefusalCode::LinesMismatch,
                format!(
                    "the lines of pickup group {} are not the hold's lines",
                    i + 1
                ),
            )));
        }
        CreateOrderOutcome::InFlight => {
            return Err(DomainError::OrderInFlight {
                channel_order_id: channel_order_id.to_owned(),
            });
        }
    };
    // Checkout is complete: placed -> confirmed (idempotent; a later state stays).
    if let Err(e) = engine.confirm_order(id, now) {
        return failed(e);
    }
    Ok(Ok(id))
}

/// Releases the holds intake made (not a checkout's). An already ended hold is fine.
fn release_all(engine: &Engine, holds: &[Option<Held>], now: Timestamp) -> Result<(), DomainError> {
    for held in holds.iter().flatten().filter(|h| h.ours) {
        engine.release(held.hold, now)?;
    }
    Ok(())
}
