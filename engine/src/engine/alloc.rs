//! Allocation: choose the store(s) for an order and hold the stock there, atomically.
//!
//! Stores are indexed by position in an R-tree ([`rstar`]) of 3D unit vectors: the
//! straight-line (chord) distance between two points on the unit sphere grows strictly
//! with their great-circle distance, so the tree's nearest-neighbour order *is* the
//! great-circle order, with no special case at the antimeridian or the poles. The
//! great-circle distance itself is `2 asin(chord / 2)` times the Earth's mean radius.
//!
//! [`Engine::allocate`] walks candidate stores (the preferred store first, then by
//! distance, within the maximum distance, open for pickups) and places an ordinary
//! [`Engine::hold`] at each in turn: the hold is the atomic step, so a concurrent request
//! that took the stock first only makes allocation move on to the next store. A split
//! allocation places one hold per store, one after the other (never two stores' locks at
//! once, so no lock-order cycle between stores can exist), and releases the parts it took
//! if a later part fails.
//!
//! Idempotency of allocation is kept in memory for the dedupe window: a retry with the
//! same key returns the original outcome. The holds themselves are logged as usual.
//!
//! This module is a child of [`crate::engine`] so that it uses the engine's private
//! helpers without widening their visibility.

use parking_lot::RwLock;
use rstar::RTree;
use rstar::primitives::GeomWithData;

use super::commit::Decision;
use super::{Engine, HoldGrant, HoldOutcome, HoldRequest, check_id, poisoned};
use std::sync::Arc;

use crate::calendar::{CalendarConfig, ReadyEstimate, Slot, StoreCalendar};
use crate::error::EngineError;
use crate::event::{Event, HoldRejection, KeptPart, Record};
use crate::keys::Claim;
use crate::slot::{PICK_TIME_PER_ORDER_MS_MAX, SlotProblem};
use crate::stock::StoreShard;
use crate::types::{LineRequest, Lsn, Qty, StoreId, StoreStatus, Timestamp};

/// Mean Earth radius (IUGG), in kilometres.
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;
/// Largest accepted `max_distance_km`: half the Earth's circumference.
pub const MAX_DISTANCE_KM_MAX: f64 = std::f64::consts::PI * EARTH_RADIUS_KM;
/// Most candidate stores one allocation tries.
pub const CANDIDATES_MAX: usize = 64;
/// Most stores the nearest-neighbour walk examines per allocation (closed or paused
/// stores included), so a region full of closed stores cannot make one call unbounded.
pub const SCAN_STORES_MAX: usize = 4_096;
/// Most alternatives one outcome lists.
pub const ALTERNATIVES_MAX: usize = 16;
/// Most stores a split allocation uses.
pub const SPLIT_STORES_MAX: usize = 3;
/// Candidates (nearest first) a split allocation combines: 12 stores give at most 220
/// combinations of three, cheap to rank.
pub const SPLIT_CANDIDATES_MAX: usize = 12;
/// Most store combinations a split allocation tries to hold before giving up.
pub const SPLIT_ATTEMPTS_MAX: usize = 8;
/// Times one store's slot is re-estimated when concurrent bookings filled the chosen one.
pub const SLOT_RETRIES_MAX: usize = 4;
/// How far a short pick's missing units are searched for when the caller gives no radius
/// ([`Engine::reallocate_short`]).
pub const REALLOCATE_DISTANCE_KM_DEFAULT: f64 = 50.0;
/// Alternatives a short pick's re-allocation lists at most (pickup.proto's Reallocation).
pub const REALLOCATE_ALTERNATIVES_MAX: usize = 5;
/// Most allocation idempotency keys remembered at once.
pub const ALLOC_KEYS_MAX: usize = 1 << 20;

type GeoPoint = GeomWithData<[f64; 3], u32>;

/// The 3D unit vector of a latitude/longitude in degrees.
pub fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Great-circle distance in kilometres between two positions in degrees.
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    chord_to_km(chord2(unit_vector(a.0, a.1), unit_vector(b.0, b.1)))
}

fn chord2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

fn chord_to_km(chord2: f64) -> f64 {
    2.0 * (chord2.sqrt() / 2.0).clamp(0.0, 1.0).asin() * EARTH_RADIUS_KM
}

fn km_to_chord2(km: f64) -> f64 {
    let half_angle = (km / EARTH_RADIUS_KM / 2.0).min(std::f64::consts::FRAC_PI_2);
    (2.0 * half_angle.sin()).powi(2)
}

/// The store position index. Updated by every `StoreDefined` event, live or replayed.
#[derive(Default)]
pub(crate) struct GeoIndex {
    inner: RwLock<GeoInner>,
}

#[derive(Default)]
struct GeoInner {
    tree: RTree<GeoPoint>,
    /// Position of each store id in the tree, to remove it when the store moves.
    points: Vec<Option<[f64; 3]>>,
}

impl GeoIndex {
    pub(crate) fn upsert(&self, store: StoreId, lat: f64, lon: f64) {
        let p = unit_vector(lat, lon);
        let mut g = self.inner.write();
        let idx = store.0 as usize;
        if g.points.len() <= idx {
            g.points.resize(idx + 1, None);
        }
        match g.points.get(idx).copied().flatten() {
            Some(old) if old == p => return,
            Some(old) => {
                g.tree.remove(&GeoPoint::new(old, store.0));
            }
            None => {}
        }
        g.tree.insert(GeoPoint::new(p, store.0));
        if let Some(slot) = g.points.get_mut(idx) {
            *slot = Some(p);
        }
    }

    /// Stores within `max_km` of `origin`, nearest first, passing `keep`, at most `limit`
    /// of them, examining at most [`SCAN_STORES_MAX`] stores.
    fn nearest(
        &self,
        origin: [f64; 3],
        max_km: f64,
        limit: usize,
        mut keep: impl FnMut(StoreId) -> bool,
    ) -> Vec<(StoreId, f64)> {
        let max_chord2 = km_to_chord2(max_km);
        let g = self.inner.read();
        let mut out = Vec::new();
        for (p, d2) in g
            .tree
            .nearest_neighbor_iter_with_distance_2(origin)
            .take(SCAN_STORES_MAX)
        {
            if d2 > max_chord2 || out.len() >= limit {
                break;
            }
            let store = StoreId(p.data);
            if keep(store) {
                out.push((store, chord_to_km(d2)));
            }
        }
        out
    }
}

/// A request to allocate an order to the nearest store(s) that can supply it.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocateRequest {
    /// The customer's position (latitude, longitude in degrees).
    pub position: Option<(f64, f64)>,
    /// A store to try first (the customer's usual store). Without `position`, distances
    /// are measured from it.
    pub preferred_store: Option<String>,
    /// Lines; a SKU named twice is merged.
    pub lines: Vec<LineRequest>,
    /// Only stores within this great-circle distance are candidates (the preferred store
    /// always is). At most [`MAX_DISTANCE_KM_MAX`].
    pub max_distance_km: f64,
    /// Most candidate stores tried, `1..=`[`CANDIDATES_MAX`].
    pub max_candidates: usize,
    /// Allow the order to be split over several stores (off by default: customers prefer
    /// one trip). Each line goes whole to one store.
    pub allow_split: bool,
    /// The customer wants to pick up no earlier than this; stores closed then are skipped.
    pub earliest_pickup_ms: Option<i64>,
    /// Book a pickup slot with each hold: the first slot with capacity at or after the
    /// estimated ready time.
    pub want_slot: bool,
    /// Most alternatives returned, at most [`ALTERNATIVES_MAX`].
    pub alternatives_max: usize,
    /// A retry with the same key returns the original outcome.
    pub idempotency_key: Option<String>,
    /// Hold time of holds without a slot; the store's default when `None`.
    pub ttl_ms: Option<i64>,
    /// Stores never chosen nor offered as alternatives, by external id (a re-allocation
    /// excludes the store that came up short). Unknown ids are ignored.
    pub exclude_stores: Vec<String>,
}

impl AllocateRequest {
    /// A request for `lines` near `position` with defaults: 50 km, 10 candidates, no
    /// split, no slot, 3 alternatives, no key.
    pub fn near(lat: f64, lon: f64, lines: Vec<LineRequest>) -> Self {
        AllocateRequest {
            position: Some((lat, lon)),
            preferred_store: None,
            lines,
            max_distance_km: 50.0,
            max_candidates: 10,
            allow_split: false,
            earliest_pickup_ms: None,
            want_slot: false,
            alternatives_max: 3,
            idempotency_key: None,
            ttl_ms: None,
            exclude_stores: Vec::new(),
        }
    }
}

/// One store's part of an allocation: an ordinary hold.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocatedPart {
    /// The store.
    pub store: StoreId,
    /// Its external id.
    pub store_external_id: String,
    /// Great-circle distance from the customer (or preferred store), km.
    pub distance_km: f64,
    /// The hold placed there.
    pub grant: HoldGrant,
    /// The lines this part holds (merged).
    pub lines: Vec<LineRequest>,
    /// The pickup slot booked with the hold, if one was asked for.
    pub slot: Option<Slot>,
    /// Estimated ready time and first free slot (`None` for a store without calendar).
    pub estimate: Option<ReadyEstimate>,
}

/// What one line could get at an alternative store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSupply {
    /// SKU external id.
    pub sku: String,
    /// Units asked for.
    pub requested: Qty,
    /// Units available to promise there when read.
    pub available: Qty,
}

/// Another candidate store and what it could supply.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// The store.
    pub store: StoreId,
    /// Its external id.
    pub store_external_id: String,
    /// Great-circle distance, km.
    pub distance_km: f64,
    /// Per line: what it could supply.
    pub supply: Vec<LineSupply>,
}

/// Why nothing was allocated. A business outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocateRejection {
    /// No store within the distance is open for pickups at the requested time.
    NoCandidates,
    /// No candidate (or, with split, no combination of up to [`SPLIT_STORES_MAX`]
    /// candidates) could supply every line (and a slot, if asked).
    NotCoverable,
}

/// Outcome of [`Engine::allocate`].
#[derive(Debug, Clone, PartialEq)]
pub enum AllocateOutcome {
    /// Allocated: one part, or several with split.
    Allocated {
        /// The holds, nearest store first.
        parts: Vec<AllocatedPart>,
        /// Other candidates and what they could supply.
        alternatives: Vec<Alternative>,
    },
    /// Nothing is held.
    Rejected {
        /// Why.
        reason: AllocateRejection,
        /// Candidates and what they could supply.
        alternatives: Vec<Alternative>,
    },
    /// A request with the same idempotency key is being applied right now.
    InFlight,
}

impl AllocateOutcome {
    /// The parts, if allocated.
    pub fn parts(&self) -> Option<&[AllocatedPart]> {
        match self {
            AllocateOutcome::Allocated { parts, .. } => Some(parts),
            _ => None,
        }
    }
}

/// What identifies an allocation request for its idempotency key: a CRC-32C over every
/// field but the key (lines merged and in SKU name order, exclusions sorted). A retry must
/// repeat them. Stored in the log and in snapshots, so it must not depend on the process.
pub(crate) fn allocate_identity(req: &AllocateRequest) -> u32 {
    let mut lines: Vec<(&str, u64)> = Vec::with_capacity(req.lines.len());
    for l in &req.lines {
        match lines.iter_mut().find(|(name, _)| *name == l.sku) {
            Some(line) => line.1 += u64::from(l.qty),
            None => lines.push((&l.sku, u64::from(l.qty))),
        }
    }
    lines.sort_unstable();
    let mut excluded: Vec<&str> = req.exclude_stores.iter().map(String::as_str).collect();
    excluded.sort_unstable();
    excluded.dedup();
    let mut buf = Vec::with_capacity(128);
    let mut e = crate::codec::Enc::new(&mut buf);
    match req.position {
        Some((lat, lon)) => {
            e.bool(true);
            e.f64(lat);
            e.f64(lon);
        }
        None => e.bool(false),
    }
    e.opt_str(req.preferred_store.as_deref());
    e.seq_len(lines.len());
    for (name, qty) in lines {
        e.str(name);
        e.u64(qty);
    }
    e.f64(req.max_distance_km);
    e.u64(req.max_candidates as u64);
    e.bool(req.allow_split);
    e.opt_i64(req.earliest_pickup_ms);
    e.bool(req.want_slot);
    e.u64(req.alternatives_max as u64);
    e.opt_i64(req.ttl_ms);
    e.seq_len(excluded.len());
    for name in excluded {
        e.str(name);
    }
    crc32c::crc32c(&buf)
}

/// Allocation idempotency: each key's request identity and outcome.
pub(crate) type AllocKeys = crate::keys::KeyTable<AllocateOutcome>;

/// An empty [`AllocKeys`] bounded by [`ALLOC_KEYS_MAX`].
pub(crate) fn alloc_keys() -> AllocKeys {
    AllocKeys::new("ALLOC_KEYS_MAX", ALLOC_KEYS_MAX)
}

/// A kept allocation as snapshots store it: key, when it was kept, the request's
/// [`allocate_identity`], and its parts.
pub(crate) type KeptAllocation = (Box<str>, Timestamp, u32, Vec<KeptPart>);

/// A split allocation: the candidate indexes used and the parts held there.
type SplitPlan = (Vec<usize>, Vec<AllocatedPart>);

struct Candidate<'a> {
    shard: &'a StoreShard,
    distance_km: f64,
}

/// What an allocation's log record keeps of one part.
fn kept_part(p: &AllocatedPart) -> KeptPart {
    KeptPart {
        hold: p.grant.hold,
        expires_at: p.grant.expires_at,
        distance_km: p.distance_km,
        lines: p.lines.clone(),
        slot: p.slot,
    }
}

/// A line resolved for reading availability.
struct ReqLine {
    name: String,
    qty: Qty,
    sku: Option<crate::types::SkuId>,
}

impl Engine {
    /// Sets (or replaces) a store's pickup calendar. The configuration is validated,
    /// logged, and rebuilt on replay.
    pub fn set_calendar(
        &self,
        store: &str,
        config: CalendarConfig,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.update_calendar(store, now, |_| config).map(|_| ())
    }

    /// Edits a store's pickup calendar atomically: `edit` receives the configuration in
    /// force (`None` before the first) and returns the new one, which is validated
    /// ([`EngineError::InvalidCalendar`] names what is wrong), logged as
    /// [`Event::CalendarSet`] and applied, all under the store state lock. So two
    /// concurrent edits of different parts (opening hours, staffing) both survive, and
    /// the log order is the order in which they were applied. Returns the new
    /// configuration.
    pub fn update_calendar(
        &self,
        store: &str,
        now: Timestamp,
        edit: impl FnOnce(Option<&CalendarConfig>) -> CalendarConfig,
    ) -> Result<CalendarConfig, EngineError> {
        let shard = self.shard_by_name(store)?;
        let (config, _) = self.mutate(
            || Ok(shard.state.lock()),
            |st| {
                let config = edit(st.slots().calendar().map(|c| c.config()));
                let calendar = StoreCalendar::new(config.clone())?;
                let events = vec![Event::CalendarSet {
                    store: shard.id,
                    config: Box::new(config.clone()),
                }];
                Ok(Decision::Log(
                    Arc::new(Record { at: now, events }),
                    (calendar, config),
                ))
            },
            |st, _, _, (calendar, config)| {
                // The same change replay makes for `CalendarSet` (`Engine::apply_event`).
                st.set_calendar(Some(Arc::new(calendar)));
                shard.touch(now);
                Ok(config)
            },
        )?;
        Ok(config)
    }

    /// A store's calendar configuration, `None` before the first
    /// [`Engine::set_calendar`].
    pub fn calendar_config(&self, store: &str) -> Result<Option<CalendarConfig>, EngineError> {
        let shard = self.shard_by_name(store)?;
        let st = shard.state.lock();
        Ok(st.slots().calendar().map(|c| c.config().clone()))
    }

    /// A store's average pick time per order, ms.
    pub fn pick_time_per_order_ms(&self, store: &str) -> Result<u32, EngineError> {
        let shard = self.shard_by_name(store)?;
        Ok(shard.state.lock().slots().pick_time_per_order_ms())
    }

    /// The pickup slots of one local day of a store (in the store's time zone), in time
    /// order, each with the pickups booked on it. `None` if the store has no calendar.
    pub fn slots_on(
        &self,
        store: &str,
        date: crate::calendar::Date,
    ) -> Result<Option<Vec<(Slot, u32)>>, EngineError> {
        let shard = self.shard_by_name(store)?;
        let st = shard.state.lock();
        Ok(st.slots().calendar().map(|cal| {
            cal.slots_on(date)
                .into_iter()
                .map(|slot| (slot, st.slots().booked_on(slot.start_ms)))
                .collect()
        }))
    }

    /// The slot of `store` that starts at `start_ms`, if its calendar has one.
    pub fn slot_at(&self, store: StoreId, start_ms: i64) -> Option<Slot> {
        let shard = self.shard(store)?;
        let st = shard.state.lock();
        st.slots().calendar()?.slot_at(start_ms)
    }

    /// Sets a store's average pick time per order (default
    /// [`crate::slot::PICK_TIME_PER_ORDER_MS_DEFAULT`]), used by the ready estimate.
    pub fn set_pick_time(
        &self,
        store: &str,
        pick_time_per_order_ms: u32,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        if pick_time_per_order_ms == 0 || pick_time_per_order_ms > PICK_TIME_PER_ORDER_MS_MAX {
            return Err(EngineError::invalid(
                "pick_time_per_order_ms",
                format!("must be within 1..={PICK_TIME_PER_ORDER_MS_MAX}"),
            ));
        }
        let shard = self.shard_by_name(store)?;
        let events = vec![Event::PickTimeSet {
            store: shard.id,
            pick_time_per_order_ms,
        }];
        // Under the store state lock, which orders this change with holds at the store.
        self.mutate(
            || Ok(shard.state.lock()),
            |_| Ok(Decision::Log(Arc::new(Record { at: now, events }), ())),
            |st, _, _, ()| {
                // The same change replay makes for `PickTimeSet` (`Engine::apply_event`).
                st.set_pick_time(pick_time_per_order_ms);
                shard.touch(now);
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Estimated ready time of an order placed now at `store`: lead time plus the picking
    /// queue (confirmed active holds) shared by the staff on shift, rounded up to the
    /// first slot with capacity. `None` if the store has no calendar or no free slot in
    /// the calendar's scan span.
    pub fn estimate_ready(
        &self,
        store: &str,
        now: Timestamp,
    ) -> Result<Option<ReadyEstimate>, EngineError> {
        let shard = self.shard_by_name(store)?;
        Ok(shard.state.lock().slots().estimate(now.as_ms(), None))
    }

    /// Pickups booked on a store's slot starting at `start_ms`.
    pub fn slot_booked(&self, store: &str, start_ms: i64) -> Result<u32, EngineError> {
        let shard = self.shard_by_name(store)?;
        Ok(shard.state.lock().slots().booked_on(start_ms))
    }

    /// The policy for the units a picker could not find ([`crate::ShortPickResolution::Reallocate`]):
    /// holds the `missing` units of `sku` at the nearest other stores within
    /// `max_distance_km` of `order`'s store, with the rules of [`Engine::allocate`] (split
    /// allowed, the short store never chosen, up to [`REALLOCATE_ALTERNATIVES_MAX`]
    /// alternatives). Keyed by the order, the SKU and the units found, so one short of one
    /// line is allocated once however often, and from wherever (staff pages, gRPC
    /// ReportShort), it is reported within the dedupe window. Returns the key and the
    /// outcome.
    pub fn reallocate_short(
        &self,
        order: crate::OrderId,
        sku: &str,
        (found, missing): (Qty, Qty),
        max_distance_km: f64,
        now: Timestamp,
    ) -> Result<(String, AllocateOutcome), EngineError> {
        let def = self
            .store_def(order.store())
            .ok_or_else(|| EngineError::UnknownStore(format!("of order {}", order.0)))?;
        let mut req = AllocateRequest::near(def.lat, def.lon, vec![LineRequest::new(sku, missing)]);
        req.max_distance_km = max_distance_km;
        req.allow_split = true;
        req.alternatives_max = REALLOCATE_ALTERNATIVES_MAX;
        req.exclude_stores = vec![def.external_id];
        let sku_id = self.sku_id(sku).map_or(u32::MAX, |s| s.0);
        let key = format!("reallocate:{}:{sku_id}:{found}", order.0);
        req.idempotency_key = Some(key.clone());
        let outcome = self.allocate(&req, now)?;
        Ok((key, outcome))
    }

    /// Allocates an order: holds every line at the nearest open store within the distance
    /// that can supply all of it (and a slot, if asked), or with `allow_split` at the
    /// fewest nearest stores; returns the hold(s), the ready estimate and alternatives.
    ///
    /// Rejections are outcomes; `Err` means misuse (invalid request, unknown preferred
    /// store, a limit) or a log failure. After an `Err`, holds taken by this call have
    /// been released (or, after a log failure, may remain: the log is then unusable).
    pub fn allocate(
        &self,
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<AllocateOutcome, EngineError> {
        self.validate_allocate(req)?;
        let Some(key) = req.idempotency_key.as_deref() else {
            let _gate = self.gate.read().map_err(|_| poisoned())?;
            return self.allocate_inner(req, now);
        };
        let identity = allocate_identity(req);
        let horizon = now.add_ms(-self.config.limits.dedupe_window_ms);
        match self.alloc_keys.claim(key, identity, 1, horizon)? {
            Claim::InFlight => return Ok(AllocateOutcome::InFlight),
            Claim::Done(outcome) => return Ok(outcome),
            Claim::Claimed => {}
        }
        // The whole allocation under the snapshot gate: a snapshot has its holds and their
        // answer (`AllocationKept`), or neither. The holds' records are marked as its parts
        // (`Event::KeyedPart`): after a crash before the answer, recovery releases them.
        let result = {
            let _gate = self.gate.read().map_err(|_| poisoned())?;
            self.allocate_inner(req, now).and_then(|outcome| {
                self.keep_outcome(key, (&outcome, identity), now)?;
                Ok(outcome)
            })
        };
        if result.is_err() {
            self.alloc_keys.abandon(key);
        }
        result
    }

    /// Remembers `key`'s outcome for retries. An allocation that holds stock is also
    /// logged (`AllocationKept`, after its holds' own records, waited for like them), so a
    /// retry after a restart gets the same holds back instead of holding a second time.
    /// A rejection is kept in memory only: it held nothing, and a retry after a restart
    /// simply allocates against the state of then.
    fn keep_outcome(
        &self,
        key: &str,
        (outcome, request): (&AllocateOutcome, u32),
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let AllocateOutcome::Allocated { parts, .. } = outcome else {
            self.alloc_keys
                .finish(key, request, outcome.clone(), 1, now);
            return Ok(());
        };
        let record = Record {
            at: now,
            events: vec![Event::AllocationKept {
                key: key.to_owned(),
                request,
                parts: parts.iter().map(kept_part).collect(),
            }],
        };
        // The caller holds the snapshot gate: a snapshot has both the record and the map
        // entry, or neither.
        let (_, lsn) = self.commit(
            || Ok(()),
            |_| Ok(Decision::Log(std::sync::Arc::new(record), ())),
            |_, _, _, ()| {
                self.alloc_keys
                    .finish(key, request, outcome.clone(), 1, now);
                Ok(())
            },
        )?;
        self.durable(lsn)
    }

    /// Takes in a kept allocation (log replay, snapshot load): its answer for retries,
    /// without the ready estimates and alternatives, which a retry does not get back.
    pub(crate) fn keep_allocation(
        &self,
        key: &str,
        (request, parts): (u32, &[KeptPart]),
        at: Timestamp,
    ) {
        let parts = parts
            .iter()
            .map(|p| {
                let store = p.hold.store();
                AllocatedPart {
                    store,
                    store_external_id: self
                        .shard(store)
                        .map(|s| s.def.read().external_id.clone())
                        .unwrap_or_default(),
                    distance_km: p.distance_km,
                    grant: HoldGrant {
                        hold: p.hold,
                        expires_at: p.expires_at,
                        lsn: Lsn(0),
                    },
                    lines: p.lines.clone(),
                    slot: p.slot,
                    estimate: None,
                }
            })
            .collect();
        let outcome = AllocateOutcome::Allocated {
            parts,
            alternatives: Vec::new(),
        };
        self.alloc_keys.finish(key, request, outcome, 1, at);
    }

    /// The kept allocations, oldest first, as `(key, kept at, request identity, parts)`
    /// (for snapshots).
    pub(crate) fn kept_allocations(&self) -> Vec<KeptAllocation> {
        self.alloc_keys.kept(|outcome| match outcome {
            AllocateOutcome::Allocated { parts, .. } => Some(parts.iter().map(kept_part).collect()),
            _ => None,
        })
    }

    /// The lines of an allocation or a nearby query: `1..=hold_lines_max` lines of
    /// `1..=line_qty_max` units each, SKU names well formed.
    fn check_cart(&self, lines: &[LineRequest]) -> Result<(), EngineError> {
        let limits = &self.config.limits;
        if lines.is_empty() || lines.len() > limits.hold_lines_max {
            return Err(EngineError::invalid(
                "lines",
                format!("must have 1..={} lines", limits.hold_lines_max),
            ));
        }
        for l in lines {
            if l.qty == 0 || l.qty > limits.line_qty_max {
                return Err(EngineError::invalid(
                    "qty",
                    format!("must be within 1..={}", limits.line_qty_max),
                ));
            }
            check_id("sku", &l.sku, limits.external_id_len_max)?;
        }
        Ok(())
    }

    fn validate_allocate(&self, req: &AllocateRequest) -> Result<(), EngineError> {
        let limits = &self.config.limits;
        self.check_cart(&req.lines)?;
        check_max_distance(req.max_distance_km)?;
        if req.max_candidates == 0 || req.max_candidates > CANDIDATES_MAX {
            return Err(EngineError::invalid(
                "max_candidates",
                format!("must be within 1..={CANDIDATES_MAX}"),
            ));
        }
        if req.alternatives_max > ALTERNATIVES_MAX {
            return Err(EngineError::invalid(
                "alternatives_max",
                format!("at most {ALTERNATIVES_MAX}"),
            ));
        }
        if let Some(position) = req.position {
            check_position(position)?;
        }
        if req.position.is_none() && req.preferred_store.is_none() {
            return Err(EngineError::invalid(
                "position",
                "a position or a preferred store is needed",
            ));
        }
        if let Some(key) = &req.idempotency_key {
            check_id("idempotency_key", key, limits.key_len_max)?;
        }
        if req.exclude_stores.len() > CANDIDATES_MAX {
            return Err(EngineError::invalid(
                "exclude_stores",
                format!("at most {CANDIDATES_MAX} stores"),
            ));
        }
        Ok(())
    }

    fn allocate_inner(
        &self,
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<AllocateOutcome, EngineError> {
        let lines = self.merge_lines(&req.lines);
        let candidates = self.candidates(req, now)?;
        if candidates.is_empty() {
            return Ok(AllocateOutcome::Rejected {
                reason: AllocateRejection::NoCandidates,
                alternatives: Vec::new(),
            });
        }
        let line_reqs: Vec<LineRequest> = lines
            .iter()
            .map(|l| LineRequest::new(l.name.clone(), l.qty))
            .collect();
        // One store for everything, nearest first.
        for (i, c) in candidates.iter().enumerate() {
            if !covers(c.shard, &lines) {
                continue;
            }
            if let Some(part) = self.try_part(c, &line_reqs, req, now)? {
                let alternatives = self.alternatives(&candidates, &[i], &lines, req);
                return Ok(AllocateOutcome::Allocated {
                    parts: vec![part],
                    alternatives,
                });
            }
        }
        if req.allow_split
            && lines.len() > 1
            && let Some((used, parts)) = self.try_split(&candidates, &lines, req, now)?
        {
            let alternatives = self.alternatives(&candidates, &used, &lines, req);
            return Ok(AllocateOutcome::Allocated {
                parts,
                alternatives,
            });
        }
        Ok(AllocateOutcome::Rejected {
            reason: AllocateRejection::NotCoverable,
            alternatives: self.alternatives(&candidates, &[], &lines, req),
        })
    }

    fn merge_lines(&self, lines: &[LineRequest]) -> Vec<ReqLine> {
        let mut out: Vec<ReqLine> = Vec::with_capacity(lines.len());
        for l in lines {
            match out.iter_mut().find(|r| r.name == l.sku) {
                Some(r) => r.qty = r.qty.saturating_add(l.qty),
                None => out.push(ReqLine {
                    name: l.sku.clone(),
                    qty: l.qty,
                    sku: self.sku_id(&l.sku),
                }),
            }
        }
        out
    }

    /// Whether a store takes holds now and is open at the requested pickup time.
    fn is_candidate(&self, shard: &StoreShard, at_ms: i64) -> bool {
        shard.status() == StoreStatus::Open && shard.state.lock().slots().is_open_at(at_ms)
    }

    fn candidates(
        &self,
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<Vec<Candidate<'_>>, EngineError> {
        let at_ms = req
            .earliest_pickup_ms
            .unwrap_or(now.as_ms())
            .max(now.as_ms());
        let preferred = match &req.preferred_store {
            Some(name) => Some(self.shard_by_name(name)?),
            None => None,
        };
        let pref_pos = preferred.map(|s| {
            let d = s.def.read();
            (d.lat, d.lon)
        });
        let origin = match (req.position, pref_pos) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => return Ok(Vec::new()),
        };
        let excluded: Vec<StoreId> = req
            .exclude_stores
            .iter()
            .filter_map(|name| self.store_id(name))
            .collect();
        let mut out = Vec::new();
        if let (Some(shard), Some(pos)) = (preferred, pref_pos)
            && !excluded.contains(&shard.id)
            && self.is_candidate(shard, at_ms)
        {
            out.push(Candidate {
                shard,
                distance_km: great_circle_km(origin, pos),
            });
        }
        let pref_id = preferred.map(|s| s.id);
        let limit = req.max_candidates.saturating_sub(out.len());
        let near = self.geo.nearest(
            unit_vector(origin.0, origin.1),
            req.max_distance_km,
            limit,
            |id| {
                Some(id) != pref_id
                    && !excluded.contains(&id)
                    && self.shard(id).is_some_and(|s| self.is_candidate(s, at_ms))
            },
        );
        for (id, distance_km) in near {
            if let Some(shard) = self.shard(id) {
                out.push(Candidate { shard, distance_km });
            }
        }
        Ok(out)
    }

    /// Places the hold of `lines` at one candidate (with a slot if asked). `None` when
    /// the store could not take it (stock taken concurrently, no slot).
    fn try_part(
        &self,
        c: &Candidate<'_>,
        lines: &[LineRequest],
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<Option<AllocatedPart>, EngineError> {
        let external_id = c.shard.def.read().external_id.clone();
        let mut hold_req = HoldRequest::new(external_id.clone(), lines.to_vec());
        hold_req.ttl_ms = req.ttl_ms;
        let attempts = if req.want_slot { SLOT_RETRIES_MAX } else { 1 };
        for _ in 0..attempts {
            let estimate = c
                .shard
                .state
                .lock()
                .slots()
                .estimate(now.as_ms(), req.earliest_pickup_ms);
            if req.want_slot {
                let Some(est) = estimate else {
                    return Ok(None);
                };
                hold_req.slot_start_ms = Some(est.slot.start_ms);
            }
            match self.hold_part(&hold_req, now, req.idempotency_key.as_deref())? {
                HoldOutcome::Granted(grant) => {
                    return Ok(Some(AllocatedPart {
                        store: c.shard.id,
                        store_external_id: external_id,
                        distance_km: c.distance_km,
                        grant,
                        lines: lines.to_vec(),
                        slot: estimate.filter(|_| req.want_slot).map(|e| e.slot),
                        estimate,
                    }));
                }
                HoldOutcome::Rejected(HoldRejection::SlotUnavailable {
                    problem: SlotProblem::Full | SlotProblem::TooSoon,
                    ..
                }) => continue,
                HoldOutcome::Rejected(_) | HoldOutcome::InFlight => return Ok(None),
            }
        }
        Ok(None)
    }

    fn try_split(
        &self,
        candidates: &[Candidate<'_>],
        lines: &[ReqLine],
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<Option<SplitPlan>, EngineError> {
        let n = candidates.len().min(SPLIT_CANDIDATES_MAX);
        // Which lines each candidate could supply whole, as read now.
        let supplies: Vec<Vec<bool>> = candidates
            .iter()
            .take(n)
            .map(|c| lines.iter().map(|l| line_covered(c.shard, l)).collect())
            .collect();
        let mut attempts = 0;
        for k in 2..=SPLIT_STORES_MAX.min(n) {
            let mut combos: Vec<(f64, Vec<usize>)> = Vec::new();
            for_each_combination(n, k, &mut |combo| {
                let feasible = (0..lines.len()).all(|li| {
                    combo
                        .iter()
                        .any(|&ci| supplies.get(ci).and_then(|s| s.get(li)) == Some(&true))
                });
                if feasible {
                    let total: f64 = combo
                        .iter()
                        .filter_map(|&ci| candidates.get(ci))
                        .map(|c| c.distance_km)
                        .sum();
                    combos.push((total, combo.to_vec()));
                }
            });
            combos.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            for (_, combo) in combos {
                if attempts >= SPLIT_ATTEMPTS_MAX {
                    return Ok(None);
                }
                attempts += 1;
                // Each line goes to the nearest store of the combination that has it.
                let mut assigned: Vec<Vec<LineRequest>> = vec![Vec::new(); combo.len()];
                for (li, l) in lines.iter().enumerate() {
                    let pos = combo
                        .iter()
                        .position(|&ci| supplies.get(ci).and_then(|s| s.get(li)) == Some(&true));
                    if let Some(part) = pos.and_then(|p| assigned.get_mut(p)) {
                        part.push(LineRequest::new(l.name.clone(), l.qty));
                    }
                }
                // A store of the combination may end up with no line (another, nearer
                // store of it covers everything it had); that combination is not minimal
                // and a smaller one was tried before.
                if assigned.iter().any(Vec::is_empty) {
                    continue;
                }
                if let Some(parts) = self.hold_parts(candidates, &combo, &assigned, req, now)? {
                    return Ok(Some((combo, parts)));
                }
            }
        }
        Ok(None)
    }

    /// Holds each part in turn; on the first failure releases the parts taken.
    fn hold_parts(
        &self,
        candidates: &[Candidate<'_>],
        combo: &[usize],
        assigned: &[Vec<LineRequest>],
        req: &AllocateRequest,
        now: Timestamp,
    ) -> Result<Option<Vec<AllocatedPart>>, EngineError> {
        let mut parts: Vec<AllocatedPart> = Vec::with_capacity(combo.len());
        for (&ci, lines) in combo.iter().zip(assigned) {
            let Some(c) = candidates.get(ci) else {
                continue;
            };
            let placed = match self.try_part(c, lines, req, now) {
                Ok(p) => p,
                Err(e) => {
                    self.release_parts(&parts, now)?;
                    return Err(e);
                }
            };
            match placed {
                Some(p) => parts.push(p),
                None => {
                    self.release_parts(&parts, now)?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(parts))
    }

    fn release_parts(&self, parts: &[AllocatedPart], now: Timestamp) -> Result<(), EngineError> {
        for p in parts {
            self.release_part(p.grant.hold, now)?;
        }
        Ok(())
    }

    fn alternatives(
        &self,
        candidates: &[Candidate<'_>],
        used: &[usize],
        lines: &[ReqLine],
        req: &AllocateRequest,
    ) -> Vec<Alternative> {
        candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.contains(i))
            .take(req.alternatives_max)
            .map(|(_, c)| Alternative {
                store: c.shard.id,
                store_external_id: c.shard.def.read().external_id.clone(),
                distance_km: c.distance_km,
                supply: lines
                    .iter()
                    .map(|l| LineSupply {
                        sku: l.name.clone(),
                        requested: l.qty,
                        available: l.sku.map_or(0, |id| c.shard.view(id).atp()),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A customer position (latitude, longitude in degrees) on the globe.
fn check_position((lat, lon): (f64, f64)) -> Result<(), EngineError> {
    if lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
    {
        return Ok(());
    }
    Err(EngineError::invalid(
        "position",
        "latitude must be within -90..=90 and longitude within -180..=180",
    ))
}

/// A search radius within `0..=`[`MAX_DISTANCE_KM_MAX`].
fn check_max_distance(km: f64) -> Result<(), EngineError> {
    if km.is_finite() && (0.0..=MAX_DISTANCE_KM_MAX).contains(&km) {
        return Ok(());
    }
    Err(EngineError::invalid(
        "max_distance_km",
        format!("must be within 0..={MAX_DISTANCE_KM_MAX}"),
    ))
}

/// Most stores one [`Engine::nearby_availability`] query returns.
pub const NEARBY_STORES_MAX: usize = 100;

/// A query for what the stores near a position could supply now
/// ([`Engine::nearby_availability`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyQuery {
    /// Where the customer is (latitude, longitude in degrees).
    pub position: (f64, f64),
    /// Only stores within this great-circle distance, km (at most [`MAX_DISTANCE_KM_MAX`]).
    pub max_distance_km: f64,
    /// What the customer wants; a SKU named twice is merged.
    pub lines: Vec<LineRequest>,
    /// Most stores returned, `1..=`[`NEARBY_STORES_MAX`].
    pub max_stores: usize,
    /// Also return stores that take no holds now (pickups paused, closed); off by
    /// default because a checkout cannot use them.
    pub include_not_accepting: bool,
}

/// What one store near the query position could supply now.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbySupply {
    /// The store.
    pub store: StoreId,
    /// Its external id.
    pub store_external_id: String,
    /// Great-circle distance from the query position, km.
    pub distance_km: f64,
    /// Whether the store takes holds now (its status is open).
    pub accepting: bool,
    /// Per (merged) line: units available to promise there when read.
    pub supply: Vec<LineSupply>,
}

impl Engine {
    /// The stores within `q.max_distance_km` of `q.position`, nearest first, at most
    /// `q.max_stores` of them, that `keep` accepts (the sidecar passes its
    /// authorization filter), each with what it could supply of `q.lines` now.
    ///
    /// A read: it locks nothing but single cells one at a time, so it never blocks
    /// writers for long, and a store's numbers are at most as stale as its last write.
    /// The store walk is the same geo index [`Engine::allocate`] uses, bounded by
    /// [`SCAN_STORES_MAX`].
    pub fn nearby_availability(
        &self,
        q: &NearbyQuery,
        mut keep: impl FnMut(StoreId) -> bool,
    ) -> Result<Vec<NearbySupply>, EngineError> {
        self.check_cart(&q.lines)?;
        check_position(q.position)?;
        let (lat, lon) = q.position;
        check_max_distance(q.max_distance_km)?;
        if q.max_stores == 0 || q.max_stores > NEARBY_STORES_MAX {
            return Err(EngineError::invalid(
                "max_stores",
                format!("must be within 1..={NEARBY_STORES_MAX}"),
            ));
        }
        let lines = self.merge_lines(&q.lines);
        let near = self.geo.nearest(
            unit_vector(lat, lon),
            q.max_distance_km,
            q.max_stores,
            |id| {
                self.shard(id)
                    .is_some_and(|s| q.include_not_accepting || s.status().accepts_holds())
                    && keep(id)
            },
        );
        Ok(near
            .into_iter()
            .filter_map(|(id, distance_km)| {
                let shard = self.shard(id)?;
                Some(NearbySupply {
                    store: id,
                    store_external_id: shard.def.read().external_id.clone(),
                    distance_km,
                    accepting: shard.status().accepts_holds(),
                    supply: lines
                        .iter()
                        .map(|l| LineSupply {
                            sku: l.name.clone(),
                            requested: l.qty,
                            available: l.sku.map_or(0, |sku| shard.view(sku).atp()),
                        })
                        .collect(),
                })
            })
            .collect())
    }
}

fn line_covered(shard: &StoreShard, l: &ReqLine) -> bool {
    l.sku.is_some_and(|id| shard.view(id).atp() >= l.qty)
}

/// Whether `shard` reads as able to supply every line (a hint: the hold decides under
/// its locks).
fn covers(shard: &StoreShard, lines: &[ReqLine]) -> bool {
    lines.iter().all(|l| line_covered(shard, l))
}

/// Calls `f` with every `k`-combination of `0..n` in lexicographic order.
fn for_each_combination(n: usize, k: usize, f: &mut impl FnMut(&[usize])) {
    fn rec(start: usize, n: usize, k: usize, acc: &mut Vec<usize>, f: &mut impl FnMut(&[usize])) {
        if acc.len() == k {
            f(acc);
            return;
        }
        for i in start..n {
            acc.push(i);
            rec(i + 1, n, k, acc, f);
            acc.pop();
        }
    }
    if k <= n {
        rec(0, n, k, &mut Vec::with_capacity(k), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle() {
        // Berlin - Paris is about 878 km.
        let d = great_circle_km((52.52, 13.405), (48.8566, 2.3522));
        assert!((d - 878.0).abs() < 5.0, "{d}");
        // Across the antimeridian: 0.2 degrees of longitude on the equator.
        let d = great_circle_km((0.0, 179.9), (0.0, -179.9));
        assert!((d - 22.24).abs() < 0.1, "{d}");
        assert!(
            (km_to_chord2(d) - chord2(unit_vector(0.0, 179.9), unit_vector(0.0, -179.9))).abs()
                < 1e-12
        );
    }

    fn stocked_engine(stores: &[(&str, f64, f64, u32)]) -> Engine {
        use crate::{EngineConfig, PosDelta, PosDeltaKind, StoreDef};
        let e = Engine::new(EngineConfig::default()).unwrap();
        let now = Timestamp::from_ms(1_780_000_000_000);
        for (name, lat, lon, qty) in stores {
            e.define_store(StoreDef::new(*name, *lat, *lon, "Europe/Berlin"), now)
                .unwrap();
            if *qty == 0 {
                continue;
            }
            e.apply_delta(
                &PosDelta {
                    store: (*name).into(),
                    sku: "MUG".into(),
                    pos_event_id: format!("r-{name}"),
                    kind: PosDeltaKind::Receive,
                    qty: i64::from(*qty),
                    order_ref: None,
                    pos_time: now,
                },
                now,
            )
            .unwrap();
        }
        e
    }

    /// The staff pages and gRPC ReportShort share one policy: the same short reported
    /// twice (from either) holds once and answers the same, never the short store.
    #[test]
    fn a_short_pick_is_reallocated_once_elsewhere() {
        let e = stocked_engine(&[
            ("alex", 52.52, 13.41, 5),
            ("potsdam", 52.39, 13.06, 4),
            ("hamburg", 53.55, 10.0, 9),
        ]);
        let now = Timestamp::from_ms(1_780_000_000_100);
        let alex = e.store_id("alex").unwrap();
        let order = crate::OrderId::from_hold(crate::HoldId::new(alex, 1));
        let (key, first) = e
            .reallocate_short(order, "MUG", (1, 2), REALLOCATE_DISTANCE_KM_DEFAULT, now)
            .unwrap();
        let AllocateOutcome::Allocated { parts, .. } = &first else {
            panic!("{first:?}");
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].store_external_id, "potsdam", "nearest other store");
        assert!(key.starts_with("reallocate:"));
        let (again_key, again) = e
            .reallocate_short(order, "MUG", (1, 2), REALLOCATE_DISTANCE_KM_DEFAULT, now)
            .unwrap();
        assert_eq!(again_key, key);
        let AllocateOutcome::Allocated { parts: again, .. } = &again else {
            panic!("{again:?}");
        };
        assert_eq!(again[0].grant.hold, parts[0].grant.hold, "held once");
        assert_eq!(e.active_holds(), 1);
    }

    #[test]
    fn nearby_availability_is_nearest_first_within_the_radius() {
        // From Berlin Mitte: Alexanderplatz ~1.5 km, Potsdam ~27 km, Hamburg ~255 km.
        let e = stocked_engine(&[
            ("hamburg", 53.55, 10.0, 9),
            ("potsdam", 52.39, 13.06, 0),
            ("alex", 52.52, 13.41, 3),
        ]);
        let q = NearbyQuery {
            position: (52.52, 13.39),
            max_distance_km: 100.0,
            lines: vec![
                LineRequest::new("MUG", 2),
                LineRequest::new("MUG", 2),
                LineRequest::new("NEVER-SEEN", 1),
            ],
            max_stores: 10,
            include_not_accepting: false,
        };
        let got = e.nearby_availability(&q, |_| true).unwrap();
        let names: Vec<_> = got.iter().map(|s| s.store_external_id.as_str()).collect();
        assert_eq!(names, ["alex", "potsdam"], "Hamburg is beyond 100 km");
        assert!(got[0].distance_km < got[1].distance_km);
        // The two MUG lines are merged; an unknown SKU reads as zero everywhere.
        let alex = &got[0].supply;
        assert_eq!(alex.len(), 2);
        assert_eq!((alex[0].requested, alex[0].available), (4, 3));
        assert_eq!((alex[1].requested, alex[1].available), (1, 0));
        assert_eq!(got[1].supply[0].available, 0);

        // A paused store is left out unless asked for, and marked.
        let now = Timestamp::from_ms(1_780_000_000_000);
        e.set_store_status("alex", StoreStatus::PickupsPaused, now)
            .unwrap();
        let got = e.nearby_availability(&q, |_| true).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].store_external_id, "potsdam");
        let all = NearbyQuery {
            include_not_accepting: true,
            max_stores: 1,
            ..q.clone()
        };
        let got = e.nearby_availability(&all, |_| true).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].store_external_id, "alex");
        assert!(!got[0].accepting);
        // The caller's filter applies before the limit.
        let alex = e.store_id("alex").unwrap();
        let got = e.nearby_availability(&all, |id| id != alex).unwrap();
        assert_eq!(got[0].store_external_id, "potsdam");
        // Bad input is an error naming the field.
        let bad = NearbyQuery { max_stores: 0, ..q };
        assert!(matches!(
            e.nearby_availability(&bad, |_| true),
            Err(EngineError::InvalidRequest {
                field: "max_stores",
                ..
            })
        ));
    }

    #[test]
    fn combinations_are_complete() {
        let mut seen = Vec::new();
        for_each_combination(4, 2, &mut |c| seen.push(c.to_vec()));
        assert_eq!(seen.len(), 6);
        assert_eq!(seen.first(), Some(&vec![0, 1]));
        assert_eq!(seen.last(), Some(&vec![2, 3]));
    }
}
