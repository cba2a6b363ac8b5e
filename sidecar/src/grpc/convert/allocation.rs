//! Conversions of Allocation (`hold.proto` Allocate) and nearby availability (`inventory.proto`): radii, positions, carts, supply.

use super::*;
use crate::cluster::{lease::LeaseValue, map::NearPartition, span};

/// Largest search radius a request may give, metres (hold.proto, inventory.proto).
pub const DISTANCE_M_MAX: u32 = 500_000;
/// Lines of an Allocate or NearbyAvailability request at most.
pub const CART_LINES_MAX: usize = 100;
/// Alternatives an AllocateResponse lists at most (hold.proto).
pub const ALTERNATIVES_MAX: usize = 5;
/// Candidate stores of an Allocate: default and maximum (hold.proto).
pub(super) const CANDIDATES_DEFAULT: usize = 10;
pub(super) const CANDIDATES_MAX: usize = 50;

/// A radius in metres (1..=[`DISTANCE_M_MAX`]) as the engine's kilometres.
pub fn distance_km(field: &str, m: u32) -> Result<f64, DomainError> {
    if m == 0 || m > DISTANCE_M_MAX {
        return Err(invalid(
            field,
            format!("must be within 1..={DISTANCE_M_MAX} metres"),
        ));
    }
    Ok(f64::from(m) / 1_000.0)
}

pub(super) fn distance_m(km: f64) -> u32 {
    // Distances are below half the Earth's circumference, so the cast cannot saturate.
    (km * 1_000.0).round() as u32
}

/// A position from proto.
pub fn position(field: &str, p: Option<&pb::GeoPoint>) -> Result<(f64, f64), DomainError> {
    p.map(|p| (p.latitude_deg, p.longitude_deg))
        .ok_or_else(|| invalid(field, "required"))
}

pub(super) fn cart(cart_lines: &[pb::Line]) -> Result<Vec<pe::LineRequest>, DomainError> {
    batch_len("lines", cart_lines.len(), CART_LINES_MAX)?;
    lines("lines", cart_lines)?;
    Ok(cart_lines
        .iter()
        .map(|l| pe::LineRequest::new(l.sku.clone(), l.qty))
        .collect())
}

/// An Allocate request from proto.
pub fn allocate_request(r: &pb::AllocateRequest) -> Result<pe::AllocateRequest, DomainError> {
    let key = idempotency_key("idempotency_key", &r.idempotency_key)?;
    let (pos, preferred) = match &r.origin {
        Some(pb::allocate_request::Origin::Position(p)) => {
            (Some(position("origin.position", Some(p))?), None)
        }
        Some(pb::allocate_request::Origin::PreferredStoreId(s)) => {
            store_id("origin.preferred_store_id", s)?;
            (None, Some(s.clone()))
        }
        None => {
            return Err(invalid(
                "origin",
                "a position or a preferred_store_id is required",
            ));
        }
    };
    let max_candidates = match r.max_candidates as usize {
        0 => CANDIDATES_DEFAULT,
        n if n <= CANDIDATES_MAX => n,
        _ => {
            return Err(invalid(
                "max_candidates",
                format!("must be within 0..={CANDIDATES_MAX}"),
            ));
        }
    };
    if r.earliest_pickup_ms < 0 {
        return Err(invalid("earliest_pickup_ms", "must not be negative"));
    }
    let (lat, lon) = pos.unwrap_or_default();
    let mut req = pe::AllocateRequest::near(lat, lon, cart(&r.lines)?);
    req.position = pos;
    req.preferred_store = preferred;
    req.max_distance_km = distance_km("max_distance_m", r.max_distance_m)?;
    req.max_candidates = max_candidates;
    req.allow_split = r.allow_split;
    req.earliest_pickup_ms = (r.earliest_pickup_ms != 0).then_some(r.earliest_pickup_ms);
    req.want_slot = r.slot_wanted;
    req.alternatives_max = ALTERNATIVES_MAX;
    req.idempotency_key = Some(key);
    req.ttl_ms = (r.ttl_ms != 0).then_some(r.ttl_ms);
    Ok(req)
}

pub(super) fn supply_pb(supply: &[pe::LineSupply]) -> (Vec<pb::Line>, bool) {
    let lines = supply
        .iter()
        .map(|l| pb::Line {
            sku: l.sku.clone(),
            qty: l.available.min(l.requested),
        })
        .collect();
    (lines, supply.iter().all(|l| l.available >= l.requested))
}

/// When an order placed at `store` now could be picked up: the start of the first slot
/// with capacity after the ready estimate (SPEC: rounded up to a slot); 0 without a
/// calendar.
pub fn pickup_estimate_ms(engine: &pe::Engine, store: &str, now: pe::Timestamp) -> i64 {
    engine
        .estimate_ready(store, now)
        .ok()
        .flatten()
        .map_or(0, |e| e.slot.start_ms)
}

pub(super) fn estimated_ready_ms(engine: &pe::Engine, store: &str, now: pe::Timestamp) -> i64 {
    engine
        .estimate_ready(store, now)
        .ok()
        .flatten()
        .map_or(0, |e| e.ready_ms)
}

/// The contract response of an allocation outcome. `head_before` is the log head read
/// before the call: holds whose records are at or below it were granted by an earlier
/// request with the same key (`replayed`).
pub fn allocate_response(
    engine: &pe::Engine,
    key: &str,
    outcome: pe::AllocateOutcome,
    head_before: u64,
    now: pe::Timestamp,
) -> Result<pb::AllocateResponse, DomainError> {
    use pb::allocate_response::Outcome;
    let alternatives_pb = |alts: &[pe::Alternative]| -> Vec<pb::Alternative> {
        alts.iter()
            .map(|a| {
                let (can_supply, complete) = supply_pb(&a.supply);
                pb::Alternative {
                    store_id: a.store_external_id.clone(),
                    distance_m: distance_m(a.distance_km),
                    can_supply,
                    complete,
                    estimated_ready_ms: estimated_ready_ms(engine, &a.store_external_id, now),
                }
            })
            .collect()
    };
    Ok(match outcome {
        pe::AllocateOutcome::Allocated {
            parts,
            alternatives,
        } => {
            let replayed = parts.iter().all(|p| p.grant.lsn.0 <= head_before);
            let holds = parts
                .iter()
                .map(|p| {
                    let created = engine
                        .hold_info(p.grant.hold)
                        .map_or(now.as_ms(), |h| h.created.as_ms());
                    hold_info_pb(
                        p.store_external_id.clone(),
                        p.lines
                            .iter()
                            .map(|l| pb::Line {
                                sku: l.sku.clone(),
                                qty: l.qty,
                            })
                            .collect(),
                        created,
                        p.grant.expires_at.as_ms(),
                        pb::HoldState::Active,
                        p.grant.hold,
                        p.slot.map(|s| pb::PickupSlot {
                            start_ms: s.start_ms,
                            end_ms: s.end_ms,
                        }),
                    )
                })
                .collect();
            let estimated_ready_ms = parts
                .iter()
                .filter_map(|p| p.estimate.map(|e| e.ready_ms))
                .max()
                .unwrap_or(0);
            pb::AllocateResponse {
                outcome: Some(Outcome::Allocated(pb::Allocation {
                    holds,
                    estimated_ready_ms,
                })),
                alternatives: alternatives_pb(&alternatives),
                replayed,
                // Cluster mode: filled by the handler.
                other_partitions: Vec::new(),
                served_by: None,
                partitions_asked: Vec::new(),
            }
        }
        pe::AllocateOutcome::Rejected {
            reason,
            alternatives,
        } => {
            // The shortages a checkout shows are those of the nearest candidate.
            let shortages = alternatives.first().map_or(Vec::new(), |a| {
                a.supply
                    .iter()
                    .filter(|l| l.available < l.requested)
                    .map(|l| pb::LineShortage {
                        sku: l.sku.clone(),
                        requested: l.requested,
                        available: l.available,
                    })
                    .collect()
            });
            let message = match reason {
                pe::AllocateRejection::NoCandidates => {
                    "no store within the distance takes pickups at that time"
                }
                pe::AllocateRejection::NotCoverable => {
                    "no candidate store (or allowed split) could supply every line"
                }
            };
            pb::AllocateResponse {
                outcome: Some(Outcome::Rejected(pb::HoldRejected {
                    reason: pb::HoldRejectReason::NoStore as i32,
                    shortages,
                    hold_state: 0,
                    message: message.to_owned(),
                })),
                alternatives: alternatives_pb(&alternatives),
                replayed: false,
                other_partitions: Vec::new(),
                served_by: None,
                partitions_asked: Vec::new(),
            }
        }
        pe::AllocateOutcome::InFlight => {
            return Err(DomainError::InFlight {
                key: key.to_owned(),
            });
        }
    })
}

/// Stores returned by a NearbyAvailability: default and maximum (inventory.proto).
pub(super) const NEARBY_DEFAULT: usize = 10;

/// A NearbyAvailability query from proto.
pub fn nearby_query(r: &pb::NearbyAvailabilityRequest) -> Result<pe::NearbyQuery, DomainError> {
    let max_stores = match r.max_stores as usize {
        0 => NEARBY_DEFAULT,
        n if n <= pe::engine::alloc::NEARBY_STORES_MAX => n,
        _ => {
            return Err(invalid(
                "max_stores",
                format!(
                    "must be within 0..={}",
                    pe::engine::alloc::NEARBY_STORES_MAX
                ),
            ));
        }
    };
    Ok(pe::NearbyQuery {
        position: position("position", r.position.as_ref())?,
        max_distance_km: distance_km("radius_m", r.radius_m)?,
        lines: cart(&r.lines)?,
        max_stores,
        include_not_accepting: r.include_not_accepting,
    })
}

/// What one nearby store could supply, as the contract shows it.
pub fn store_supply_pb(s: &pe::NearbySupply) -> pb::StoreSupply {
    let (available, complete) = supply_pb(&s.supply);
    pb::StoreSupply {
        store_id: s.store_external_id.clone(),
        distance_m: distance_m(s.distance_km),
        accepting_pickups: s.accepting,
        available,
        complete,
    }
}

/// The other partitions a rejected allocation names, as the contract shows them.
pub fn partitions_to_ask_pb(near: &[NearPartition]) -> Vec<pb::PartitionToAsk> {
    near.iter()
        .map(|n| pb::PartitionToAsk {
            partition: n.partition.clone(),
            leader_addr: leader_addr(n),
            distance_m: distance_m(n.distance_km),
        })
        .collect()
}

/// The partitions an allocation asked for its caller, as the contract shows them.
pub fn partitions_asked_pb(asked: &[span::Asked]) -> Vec<pb::PartitionAsked> {
    asked
        .iter()
        .map(|a| {
            let answer = match a.answer {
                span::Answer::Allocated => pb::PartitionAnswer::Allocated,
                span::Answer::Rejected => pb::PartitionAnswer::Rejected,
                span::Answer::NoLeader => pb::PartitionAnswer::NoLeader,
                span::Answer::Unreachable => pb::PartitionAnswer::Unreachable,
                span::Answer::Refused => pb::PartitionAnswer::Refused,
            };
            pb::PartitionAsked {
                partition: a.near.partition.clone(),
                leader_addr: leader_addr(&a.near),
                distance_m: distance_m(a.near.distance_km),
                answer: answer as i32,
                detail: a.detail.clone(),
            }
        })
        .collect()
}

/// A partition and its leader (`AllocateResponse.served_by`).
pub fn partition_leader_pb(partition: &str, leader: Option<&LeaseValue>) -> pb::PartitionLeader {
    pb::PartitionLeader {
        partition: partition.to_owned(),
        leader_addr: leader.map(|l| l.addr.clone()).unwrap_or_default(),
    }
}

fn leader_addr(near: &NearPartition) -> String {
    near.leader
        .as_ref()
        .map(|l| l.addr.clone())
        .unwrap_or_default()
}
