//! The engine: stores, SKUs, stock cells, holds and the POS feed.
//!
//! Every mutation follows the same steps: validate (no lock), take the snapshot gate for
//! reading (a hold or the end of a hold then its store's admission lock,
//! `StoreShard::admit`), lock the cells it touches in ascending SKU order, then its store's state, decide,
//! append the record to the log, apply the record's events through the same `apply_*`
//! functions that replay uses, release the locks, and wait until the record is durable
//! before returning. Because the log append happens before any state changes, a log failure
//! leaves the state untouched. Those steps are written once, in `engine/commit.rs`
//! (`Engine::commit`, `Engine::mutate`); each mutation gives its lock, decide and apply
//! steps.

// Allocation, batches, the mutation skeleton, pickup orders and kept replies live in
// their own files (`src/engine/`) but are child modules: they drive holds through the
// engine's private helpers without widening their visibility, and name the engine as part
// of it, not as a layer above them.
pub mod alloc;
pub(crate) mod batch;
pub(crate) mod commit;
pub mod order;
pub mod replies;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use compact_str::CompactString;
use crossbeam::sync::ShardedLock;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::{Mutex, MutexGuard};

use crate::config::EngineConfig;
use crate::engine::commit::Decision;
use crate::error::{ApplyError, EngineError, HoldChange};
use crate::event::{
    Event, HoldRejection, KeptOf, LineShortage, PosDeltaKind, Record, ReleaseReason, StoreDef,
};
use crate::key_digest::KeyDigest;
use crate::lock_order::lock_in_order;
use crate::log::{EventLog, NoLog};
use crate::stock::{
    Cell, FastHashMap, HoldLines, HoldRec, RecentDelta, SAFETY_INHERIT, StoreShard, StoreState,
};
use crate::types::{
    CellView, HoldId, Line, LineRequest, Lsn, Qty, SkuId, StoreId, StoreStatus, Timestamp,
};

/// A request to hold stock at one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The store's external id.
    pub store: String,
    /// Lines; a SKU named twice is merged into one line.
    pub lines: Vec<LineRequest>,
    /// Retrying with the same key returns the original outcome and changes nothing.
    pub idempotency_key: Option<String>,
    /// Hold time; the store's default when `None`. Bounded by the store's maximum.
    pub ttl_ms: Option<i64>,
    /// The pickup slot to book with the hold (its `start_ms`). A slot-bound hold expires
    /// at the slot's end plus the store's grace period instead of after `ttl_ms`.
    pub slot_start_ms: Option<i64>,
}

impl HoldRequest {
    /// A hold of `lines` at `store` with the store's default hold time and no key.
    pub fn new(store: impl Into<String>, lines: Vec<LineRequest>) -> Self {
        HoldRequest {
            store: store.into(),
            lines,
            idempotency_key: None,
            ttl_ms: None,
            slot_start_ms: None,
        }
    }

    /// Books the pickup slot starting at `start_ms` together with the hold.
    pub fn with_slot(mut self, start_ms: i64) -> Self {
        self.slot_start_ms = Some(start_ms);
        self
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the hold time.
    pub fn with_ttl_ms(mut self, ttl_ms: i64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }
}

/// A granted hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldGrant {
    /// The hold.
    pub hold: HoldId,
    /// When it expires unless extended or ended first.
    pub expires_at: Timestamp,
    /// LSN of the record that granted it.
    pub lsn: Lsn,
}

/// Outcome of [`Engine::hold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Every line is reserved.
    Granted(HoldGrant),
    /// Nothing is reserved.
    Rejected(HoldRejection),
    /// A request with the same idempotency key is being applied right now; retry shortly.
    InFlight,
}

impl HoldOutcome {
    /// The grant, if granted.
    pub fn granted(&self) -> Option<&HoldGrant> {
        match self {
            HoldOutcome::Granted(g) => Some(g),
            _ => None,
        }
    }
}

/// State of a hold that is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldNotActive {
    /// It was granted and has ended (released, expired or collected: the event stream
    /// says which). Derived from the store's hold sequence, so it costs no memory.
    Ended,
    /// Never granted.
    Unknown,
}

/// Outcome of [`Engine::extend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The new expiry.
    Extended {
        /// New expiry.
        expires_at: Timestamp,
    },
    /// The hold is not active.
    NotActive(HoldNotActive),
    /// The hold booked a pickup slot and the new expiry would be past the slot's expiry
    /// (its end plus the store's grace period): a slot hold lives for its slot, not
    /// longer. Nothing changed.
    PastSlot {
        /// The booked slot's start.
        slot_start_ms: i64,
        /// The latest expiry the hold may have.
        slot_expires_at: Timestamp,
    },
}

/// Outcome of [`Engine::confirm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// The hold is confirmed (also returned for a hold confirmed before: idempotent).
    Confirmed {
        /// Its expiry.
        expires_at: Timestamp,
    },
    /// The hold is not active.
    NotActive(HoldNotActive),
}

/// Outcome of [`Engine::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Released now; its units are available again.
    Released,
    /// It had already ended: released (a retry of the same release) or expired.
    AlreadyEnded,
    /// Never granted.
    Unknown,
}

/// A hold ended by [`Engine::expire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredHold {
    /// The hold.
    pub hold: HoldId,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Whether checkout had confirmed it (an order's allocation: a no-show).
    pub confirmed: bool,
    /// LSN of the record that expired it.
    pub lsn: Lsn,
}

/// A POS stock delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosDelta {
    /// Store external id.
    pub store: String,
    /// SKU external id.
    pub sku: String,
    /// POS event id: deduplicated within the dedupe window.
    pub pos_event_id: String,
    /// Kind.
    pub kind: PosDeltaKind,
    /// For sale, return and receive: the units (positive). For adjust: the signed change.
    pub qty: i64,
    /// The order the POS event belongs to, if any.
    pub order_ref: Option<String>,
    /// When it happened at the POS.
    pub pos_time: Timestamp,
}

/// A POS absolute count of one cell as of a POS time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosCount {
    /// Store external id.
    pub store: String,
    /// SKU external id.
    pub sku: String,
    /// POS event id: deduplicated within the dedupe window.
    pub pos_event_id: String,
    /// Units counted.
    pub counted: Qty,
    /// The POS time the count is as of.
    pub as_of: Timestamp,
}

/// A shortage: `on_hand` fell below `held`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    /// `on_hand` now.
    pub on_hand: Qty,
    /// `held` now.
    pub held: Qty,
    /// The newest holds whose units together cover the missing units, newest first.
    pub holds: Vec<HoldId>,
}

/// Outcome of a POS delta or count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PosOutcome {
    /// Applied.
    Applied {
        /// `on_hand` after.
        on_hand: Qty,
        /// For a count: whether the engine's figure matched the count.
        matched: Option<bool>,
        /// Set when `on_hand` is now below `held`.
        shortage: Option<Shortage>,
        /// Its record.
        lsn: Lsn,
    },
    /// A SALE naming a pickup order the engine already handed off, for units the
    /// hand-off already took off `on_hand`: recorded against the order, `on_hand`
    /// unchanged. (A sale for more than the hand-off consumed is `Applied` for the rest.)
    AlreadyHandedOff {
        /// `on_hand`, unchanged.
        on_hand: Qty,
        /// Its record.
        lsn: Lsn,
    },
    /// The POS event id was seen before; nothing changed.
    Duplicate,
    /// A count older than a count already applied to this cell; nothing changed.
    StaleCount,
}

/// What the key table keeps for a hold's idempotency key: claimed, or the outcome the key
/// answered with. 32 bytes: a grant (the common outcome) is kept in place; a keyed
/// rejection, rarer and larger (its shortages name SKUs), is boxed so that it does not size
/// every entry. With the 16-byte [`KeyDigest`] a table entry is 48 bytes (it was a boxed key
/// and a whole `HoldOutcome`: about 150 bytes with the key's heap block).
pub(crate) enum IdemEntry {
    /// Claimed by a request being decided now.
    Pending,
    /// The key granted this hold.
    Granted {
        hold: HoldId,
        expires_at: Timestamp,
        /// The record of the grant (0 when recovered from the log or a snapshot).
        lsn: Lsn,
        /// [`hold_identity`] of the request that produced it; `None` where it is not known
        /// (a snapshot of format 3).
        request: Option<u32>,
    },
    /// The key's hold was refused.
    Rejected(Box<KeptRejection>),
}

/// A keyed hold's rejection as the key table keeps it ([`IdemEntry::Rejected`]).
pub(crate) struct KeptRejection {
    pub(crate) lsn: Lsn,
    pub(crate) rejection: HoldRejection,
    /// As [`IdemEntry::Granted`]'s; `None` for a rejection recovered from the log, which
    /// does not record it.
    pub(crate) request: Option<u32>,
}

const _: () = assert!(std::mem::size_of::<IdemEntry>() == 32);

impl IdemEntry {
    /// The entry of a key that answered `outcome`, decided by the record at `lsn` for a
    /// request of identity `request`. `None` for [`HoldOutcome::InFlight`], which is no
    /// answer to keep.
    pub(crate) fn done(lsn: Lsn, outcome: &HoldOutcome, request: Option<u32>) -> Option<Self> {
        match outcome {
            HoldOutcome::Granted(g) => Some(IdemEntry::Granted {
                hold: g.hold,
                expires_at: g.expires_at,
                lsn,
                request,
            }),
            HoldOutcome::Rejected(rejection) => {
                Some(IdemEntry::Rejected(Box::new(KeptRejection {
                    lsn,
                    rejection: rejection.clone(),
                    request,
                })))
            }
            HoldOutcome::InFlight => None,
        }
    }

    /// The kept outcome and the LSN of its record; `None` while the key is claimed.
    pub(crate) fn answer(&self) -> Option<(HoldOutcome, Lsn)> {
        match self {
            IdemEntry::Pending => None,
            IdemEntry::Granted {
                hold,
                expires_at,
                lsn,
                ..
            } => Some((
                HoldOutcome::Granted(HoldGrant {
                    hold: *hold,
                    expires_at: *expires_at,
                    lsn: *lsn,
                }),
                *lsn,
            )),
            IdemEntry::Rejected(r) => Some((HoldOutcome::Rejected(r.rejection.clone()), r.lsn)),
        }
    }

    /// The identity of the request that the key answered, where known.
    pub(crate) fn request(&self) -> Option<u32> {
        match self {
            IdemEntry::Pending => None,
            IdemEntry::Granted { request, .. } => *request,
            IdemEntry::Rejected(r) => r.request,
        }
    }

    fn is_done(&self) -> bool {
        !matches!(self, IdemEntry::Pending)
    }
}

/// What identifies a hold request for its idempotency key: a CRC-32C over the store, the
/// merged lines in SKU name order (name and units), and the slot, or without a slot the
/// hold time the request resolved to (its `ttl_ms`, or the store's default then): what
/// decides the expiry. A retry must repeat these. A replayed grant finds the hold time
/// as its expiry minus its record's time. The value is stored in snapshots, so it must
/// not depend on the process (no seeded hash).
pub(crate) fn hold_identity<'a>(
    store: StoreId,
    lines: impl IntoIterator<Item = (&'a str, u64)>,
    slot: Option<i64>,
    ttl_ms: i64,
) -> u32 {
    let mut lines: Vec<(&str, u64)> = lines.into_iter().collect();
    lines.sort_unstable();
    let mut crc = crc32c::crc32c(&store.0.to_le_bytes());
    for (name, qty) in lines {
        crc = crc32c::crc32c_append(crc, &(name.len() as u64).to_le_bytes());
        crc = crc32c::crc32c_append(crc, name.as_bytes());
        crc = crc32c::crc32c_append(crc, &qty.to_le_bytes());
    }
    match slot {
        Some(start) => {
            crc32c::crc32c_append(crc32c::crc32c_append(crc, &[1]), &start.to_le_bytes())
        }
        None => crc32c::crc32c_append(crc32c::crc32c_append(crc, &[0]), &ttl_ms.to_le_bytes()),
    }
}

/// A hold's outcome and the LSN of the record that decided it ([`Engine::hold_logged`]).
pub type LoggedOutcome = (HoldOutcome, Option<Lsn>);

/// A hold request checked and resolved before any lock is taken ([`Engine::prepare_hold`]).
pub(crate) struct PreparedHold<'a> {
    pub(crate) shard: &'a StoreShard,
    pub(crate) ttl_ms: i64,
    /// Merged by SKU name, in request order: SKU id (`None`: never seen), units, name.
    pub(crate) lines: Vec<(Option<SkuId>, u64, &'a str)>,
    /// [`hold_identity`] when the request has a key.
    pub(crate) identity: Option<u32>,
    /// The digest of the request's key, when it has one: computed once per request.
    pub(crate) key: Option<KeyDigest>,
}

/// The Pickline engine. Cheap to share: wrap it in an `Arc` and call it from any thread.
///
/// Architecture invariant: the engine never reads a clock or a random source; every
/// mutation takes `now` from its caller.
pub struct Engine {
    pub(crate) config: EngineConfig,
    /// Mutations hold it for reading; a snapshot takes it for writing to see a state that
    /// matches a log prefix exactly. Sharded, so writers on different threads do not
    /// contend on one cache line.
    pub(crate) gate: ShardedLock<()>,
    pub(crate) stores: Box<[OnceLock<Box<StoreShard>>]>,
    pub(crate) store_count: AtomicU32,
    /// Every hold looks up its store and each line's SKU by name: foldhash's keyed
    /// `quality` hasher, as for `idem`, rather than SipHash.
    ///
    /// Names of up to 24 bytes are kept inside the table's slot ([`CompactString`]), so the
    /// key comparison that ends a lookup reads the line the probe already loaded. With
    /// boxed names that comparison was a cache miss of its own: about a fifth of the
    /// single-thread hold path at 1M cells (perf, 2026-12-07).
    pub(crate) store_index: DashMap<CompactString, StoreId, foldhash::quality::RandomState>,
    pub(crate) skus: DashMap<CompactString, SkuId, foldhash::quality::RandomState>,
    pub(crate) sku_names: Mutex<Vec<Box<str>>>,
    /// Serializes store and SKU registration so their ids are dense and logged in order.
    pub(crate) registry_lock: Mutex<()>,
    /// Keyed by client-chosen strings: foldhash's keyed `quality` hasher (a per-process
    /// random seed) instead of SipHash, which was about 6% of CPU in BatchHold profiles.
    /// Keys are the keys' digests ([`KeyDigest`]): 16 bytes in place, not a boxed string.
    pub(crate) idem: DashMap<KeyDigest, IdemEntry, foldhash::quality::RandomState>,
    pub(crate) expire_cursor: AtomicU32,
    /// Event-stream consumer cursors (the last LSN each consumer acknowledged), kept in the
    /// state so that snapshots carry them.
    pub(crate) consumers: Mutex<std::collections::BTreeMap<String, Lsn>>,
    pub(crate) log: Arc<dyn EventLog>,
    /// Store positions for allocation; updated by every `StoreDefined` event.
    geo: alloc::GeoIndex,
    /// Allocation idempotency keys (in memory, for the dedupe window).
    alloc_keys: alloc::AllocKeys,
    /// Keys of whole batches of holds ([`Engine::hold_batch_keyed`]).
    pub(crate) batch_keys: batch::BatchKeys,
    /// Holds of replayed [`Event::KeyedPart`] records whose keyed answer has not been
    /// replayed (yet): what [`Engine::release_unanswered`] releases after recovery.
    unanswered: Mutex<Unanswered>,
    /// Channel references and keys of [`Engine::create_order`] calls in progress.
    pub(crate) order_claims: crate::order::OrderClaims,
    /// First answers to keyed requests, for retries ([`Engine::keep_reply`]).
    pub(crate) replies: Mutex<crate::replies::KeptReplies>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stores", &self.store_count.load(Ordering::Relaxed))
            .field("skus", &self.skus.len())
            .finish_non_exhaustive()
    }
}

pub(crate) type CellGuard<'a> = MutexGuard<'a, Cell>;

impl Engine {
    /// An engine without a durable log (LSNs only).
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        Self::with_log(config, Arc::new(NoLog::default()))
    }

    /// An engine writing its records to `log`.
    pub fn with_log(config: EngineConfig, log: Arc<dyn EventLog>) -> Result<Self, EngineError> {
        config
            .validate()
            .map_err(|e| EngineError::invalid("config", e.to_string()))?;
        Ok(Engine {
            stores: (0..config.limits.stores_max)
                .map(|_| OnceLock::new())
                .collect(),
            config,
            gate: ShardedLock::new(()),
            store_count: AtomicU32::new(0),
            store_index: DashMap::with_hasher(foldhash::quality::RandomState::default()),
            skus: DashMap::with_hasher(foldhash::quality::RandomState::default()),
            sku_names: Mutex::new(Vec::new()),
            registry_lock: Mutex::new(()),
            idem: DashMap::with_hasher(foldhash::quality::RandomState::default()),
            expire_cursor: AtomicU32::new(0),
            consumers: Mutex::new(Default::default()),
            log,
            geo: alloc::GeoIndex::default(),
            alloc_keys: alloc::alloc_keys(),
            batch_keys: batch::batch_keys(),
            unanswered: Mutex::new(FastHashMap::default()),
            order_claims: Default::default(),
            replies: Mutex::new(Default::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Every consumer cursor: the last LSN each event-stream consumer acknowledged.
    pub fn consumer_cursors(&self) -> Vec<(String, Lsn)> {
        self.consumers
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The log the engine writes to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    // ---------------------------------------------------------------- stores and SKUs

    /// Registers a store, or replaces the definition of a store with the same external id.
    pub fn define_store(&self, def: StoreDef, now: Timestamp) -> Result<StoreId, EngineError> {
        self.validate_store_def(&def)?;
        let (store, _) = self.mutate(
            || Ok(self.registry_lock.lock()),
            |_| {
                let store = match self.store_index.get(def.external_id.as_str()) {
                    Some(id) => *id,
                    None => {
                        let n = self.store_count.load(Ordering::Acquire);
                        if n >= self.config.limits.stores_max {
                            return Err(EngineError::LimitReached {
                                limit: "stores_max",
                                value: u64::from(self.config.limits.stores_max),
                            });
                        }
                        StoreId(n)
                    }
                };
                let events = vec![Event::StoreDefined { store, def }];
                Ok(Decision::Log(Arc::new(Record { at: now, events }), store))
            },
            |_, record, _, store| {
                self.apply_record_event(&record, now, "store")?;
                Ok(store)
            },
        )?;
        Ok(store)
    }

    /// Applies the one event of a registry record (a store or a SKU) with
    /// [`Engine::apply_event`], as replay does.
    fn apply_record_event(
        &self,
        record: &Record,
        now: Timestamp,
        field: &'static str,
    ) -> Result<(), EngineError> {
        for event in &record.events {
            self.apply_event(event, now)
                .map_err(|e| EngineError::invalid(field, e.to_string()))?;
        }
        Ok(())
    }

    fn validate_store_def(&self, def: &StoreDef) -> Result<(), EngineError> {
        let limits = &self.config.limits;
        check_id("external_id", &def.external_id, limits.external_id_len_max)?;
        if def.name.len() > 256 {
            return Err(EngineError::invalid("name", "longer than 256 bytes"));
        }
        if def.pickup_instructions.len() > 4096 {
            return Err(EngineError::invalid(
                "pickup_instructions",
                "longer than 4096 bytes",
            ));
        }
        if !(def.lat.is_finite() && (-90.0..=90.0).contains(&def.lat)) {
            return Err(EngineError::invalid("lat", "must be within -90..=90"));
        }
        if !(def.lon.is_finite() && (-180.0..=180.0).contains(&def.lon)) {
            return Err(EngineError::invalid("lon", "must be within -180..=180"));
        }
        if jiff::tz::TimeZone::get(&def.time_zone).is_err() {
            return Err(EngineError::invalid(
                "time_zone",
                format!("`{}` is not an IANA time zone", def.time_zone),
            ));
        }
        if def.max_hold_ms < limits.hold_time_min_ms || def.max_hold_ms > limits.hold_time_max_ms {
            return Err(EngineError::invalid(
                "max_hold_ms",
                format!(
                    "must be within {}..={}",
                    limits.hold_time_min_ms, limits.hold_time_max_ms
                ),
            ));
        }
        if def.default_hold_ms < limits.hold_time_min_ms || def.default_hold_ms > def.max_hold_ms {
            return Err(EngineError::invalid(
                "default_hold_ms",
                "must be at least hold_time_min_ms and at most max_hold_ms",
            ));
        }
        if def.default_safety_stock == SAFETY_INHERIT {
            return Err(EngineError::invalid("default_safety_stock", "out of range"));
        }
        Ok(())
    }

    /// Sets a store's pickup status.
    pub fn set_store_status(
        &self,
        store: &str,
        status: StoreStatus,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let shard = self.shard_by_name(store)?;
        let mut def = shard.def.read().clone();
        def.status = status;
        self.define_store(def, now).map(|_| ())
    }

    /// The compact id of a store.
    pub fn store_id(&self, external_id: &str) -> Option<StoreId> {
        self.store_index.get(external_id).map(|r| *r)
    }

    /// A store's definition.
    pub fn store_def(&self, store: StoreId) -> Option<StoreDef> {
        self.shard(store).map(|s| s.def.read().clone())
    }

    /// When a store's definition, calendar or pick time last changed (the time passed
    /// with that change); `Timestamp(0)` if unknown (recovered from a snapshot older
    /// than format 8 and unchanged since).
    pub fn store_updated_at(&self, store: &str) -> Result<Timestamp, EngineError> {
        Ok(self.shard_by_name(store)?.updated_at())
    }

    /// Every registered store, in id order.
    pub fn stores(&self) -> Vec<(StoreId, StoreDef)> {
        (0..self.store_count.load(Ordering::Acquire))
            .filter_map(|i| self.shard(StoreId(i)).map(|s| (s.id, s.def.read().clone())))
            .collect()
    }

    /// The compact id of a SKU, if the engine has seen it.
    pub fn sku_id(&self, external_id: &str) -> Option<SkuId> {
        self.skus.get(external_id).map(|r| *r)
    }

    /// The external id of a SKU.
    pub fn sku_name(&self, sku: SkuId) -> Option<String> {
        self.sku_names
            .lock()
            .get(sku.0 as usize)
            .map(|s| s.to_string())
    }

    /// The id of `external_id`, interning (and logging) it on first use.
    pub fn intern_sku(&self, external_id: &str, now: Timestamp) -> Result<SkuId, EngineError> {
        if let Some(id) = self.sku_id(external_id) {
            return Ok(id);
        }
        check_id("sku", external_id, self.config.limits.external_id_len_max)?;
        let (sku, _) = self.mutate(
            || Ok(self.registry_lock.lock()),
            |_| {
                if let Some(id) = self.sku_id(external_id) {
                    return Ok(Decision::Answer(id));
                }
                let n = self.sku_names.lock().len() as u32;
                if n >= self.config.limits.skus_max {
                    return Err(EngineError::LimitReached {
                        limit: "skus_max",
                        value: u64::from(self.config.limits.skus_max),
                    });
                }
                let events = vec![Event::SkuRegistered {
                    sku: SkuId(n),
                    external_id: external_id.to_owned(),
                }];
                Ok(Decision::Log(
                    Arc::new(Record { at: now, events }),
                    SkuId(n),
                ))
            },
            |_, record, _, sku| {
                self.apply_record_event(&record, now, "sku")?;
                Ok(sku)
            },
        )?;
        Ok(sku)
    }

    pub(crate) fn shard(&self, store: StoreId) -> Option<&StoreShard> {
        self.stores.get(store.0 as usize)?.get().map(|b| &**b)
    }

    pub(crate) fn shard_by_name(&self, store: &str) -> Result<&StoreShard, EngineError> {
        self.store_id(store)
            .and_then(|id| self.shard(id))
            .ok_or_else(|| EngineError::UnknownStore(truncate(store)))
    }

    // ---------------------------------------------------------------- holds

    /// Holds every line of `req` at its store, or nothing.
    ///
    /// Rejections (not enough stock, store not accepting) are outcomes; `Err` means misuse
    /// (unknown store, invalid lines, a limit) or a log failure.
    pub fn hold(&self, req: &HoldRequest, now: Timestamp) -> Result<HoldOutcome, EngineError> {
        self.hold_logged(req, now).map(|(outcome, _)| outcome)
    }

    /// [`Engine::hold`] with the LSN of the record that decided the outcome: the grant or
    /// keyed rejection logged by this call or, for a retry under the same key, by the first
    /// call (0 when that record was recovered from the log or a snapshot); `None` for an
    /// unkeyed rejection, which is not logged. An outcome whose LSN is at or below the
    /// log's `last_lsn` read before the call is a retry's stored outcome.
    pub fn hold_logged(
        &self,
        req: &HoldRequest,
        now: Timestamp,
    ) -> Result<LoggedOutcome, EngineError> {
        let (outcome, lsn) = self.hold_unsynced(req, now)?;
        self.durable(lsn)?;
        Ok((outcome, lsn))
    }

    /// [`Engine::hold`] without the wait for durability: the outcome and the LSN the
    /// caller must see durable before acknowledging it.
    pub(crate) fn hold_unsynced(
        &self,
        req: &HoldRequest,
        now: Timestamp,
    ) -> Result<(HoldOutcome, Option<Lsn>), EngineError> {
        let mut prep = self.prepare_hold(req)?;
        let gate = self.gate.read().map_err(|_| poisoned())?;
        let admitted = prep.shard.admit();
        if let (Some(key), Some(digest)) = (&req.idempotency_key, prep.key)
            && let Some(answer) = self.claim_key(key, digest, prep.identity)?
        {
            return Ok(answer);
        }
        let result = self.hold_locked(&mut prep, req, now, None);
        drop(admitted);
        drop(gate);
        match result {
            Ok(done) => Ok(done),
            Err(e) => {
                if let Some(key) = prep.key {
                    self.release_claim(key);
                }
                Err(e)
            }
        }
    }

    /// Checks `req` and resolves its store, hold time, lines (merged by SKU name) and
    /// request identity, taking no lock: the part of a hold that [`Engine::hold`] and
    /// [`Engine::hold_batch`] share before they lock anything.
    pub(crate) fn prepare_hold<'a>(
        &'a self,
        req: &'a HoldRequest,
    ) -> Result<PreparedHold<'a>, EngineError> {
        self.prepare_hold_with(req, |store| self.shard_by_name(store))
    }

    /// [`Engine::prepare_hold`] with the store looked up by `shard_of` (a batch reuses the
    /// previous request's lookup when the store is the same).
    pub(crate) fn prepare_hold_with<'a>(
        &'a self,
        req: &'a HoldRequest,
        shard_of: impl FnOnce(&'a str) -> Result<&'a StoreShard, EngineError>,
    ) -> Result<PreparedHold<'a>, EngineError> {
        let limits = &self.config.limits;
        if req.lines.is_empty() {
            return Err(EngineError::invalid(
                "lines",
                "a hold needs at least one line",
            ));
        }
        if req.lines.len() > limits.hold_lines_max {
            return Err(EngineError::invalid(
                "lines",
                format!("more than hold_lines_max = {}", limits.hold_lines_max),
            ));
        }
        if let Some(key) = &req.idempotency_key {
            check_id("idempotency_key", key, limits.key_len_max)?;
        }
        let shard = shard_of(&req.store)?;
        let ttl_ms = req
            .ttl_ms
            .unwrap_or_else(|| shard.default_hold_ms.load(Ordering::Acquire));
        let max_hold_ms = shard
            .max_hold_ms
            .load(Ordering::Acquire)
            .min(limits.hold_time_max_ms);
        if ttl_ms < limits.hold_time_min_ms || ttl_ms > max_hold_ms {
            return Err(EngineError::invalid(
                "ttl_ms",
                format!("must be within {}..={max_hold_ms}", limits.hold_time_min_ms),
            ));
        }
        // Resolve and merge lines. A SKU the engine never saw has no stock anywhere.
        let mut lines: Vec<(Option<SkuId>, u64, &str)> = Vec::with_capacity(req.lines.len());
        for l in &req.lines {
            if l.qty == 0 || l.qty > limits.line_qty_max {
                return Err(EngineError::invalid(
                    "qty",
                    format!("must be within 1..={}", limits.line_qty_max),
                ));
            }
            if l.sku.is_empty() || l.sku.len() > limits.external_id_len_max {
                return Err(EngineError::invalid("sku", "empty or too long"));
            }
            match lines.iter_mut().find(|(_, _, name)| *name == l.sku) {
                Some(existing) => existing.1 += u64::from(l.qty),
                None => lines.push((self.sku_id(&l.sku), u64::from(l.qty), &l.sku)),
            }
        }
        if lines
            .iter()
            .any(|(_, q, _)| *q > u64::from(limits.line_qty_max))
        {
            return Err(EngineError::invalid(
                "qty",
                format!("merged line above line_qty_max = {}", limits.line_qty_max),
            ));
        }
        let identity = req.idempotency_key.as_ref().map(|_| {
            hold_identity(
                shard.id,
                lines.iter().map(|(_, q, name)| (*name, *q)),
                req.slot_start_ms,
                ttl_ms,
            )
        });
        Ok(PreparedHold {
            shard,
            ttl_ms,
            lines,
            identity,
            key: req.idempotency_key.as_deref().map(KeyDigest::of),
        })
    }

    /// Claims `key` (its digest `digest`) for a new hold whose request has `identity`:
    /// `None` when the key was free and is now `Pending` (the caller must end the claim:
    /// the outcome, or [`Engine::release_claim`]); otherwise the answer the key already
    /// has. A key that answered a different request is [`EngineError::IdempotencyKeyReused`]
    /// (named by `key`, the request's: the table keeps only digests).
    pub(crate) fn claim_key(
        &self,
        key: &str,
        digest: KeyDigest,
        identity: Option<u32>,
    ) -> Result<Option<(HoldOutcome, Option<Lsn>)>, EngineError> {
        match self.idem.entry(digest) {
            Entry::Occupied(e) => {
                let entry = e.get();
                match entry.request() {
                    Some(r) if Some(r) != identity => Err(EngineError::IdempotencyKeyReused {
                        key: key.to_owned(),
                    }),
                    _ => Ok(Some(match entry.answer() {
                        Some((outcome, lsn)) => (outcome, Some(lsn)),
                        None => (HoldOutcome::InFlight, None),
                    })),
                }
            }
            Entry::Vacant(v) => {
                v.insert(IdemEntry::Pending);
                Ok(None)
            }
        }
    }

    /// `Err(IdempotencyKeyReused)` when `key` (its digest `digest`) has answered a request
    /// other than `identity`.
    pub(crate) fn key_reused(
        &self,
        key: &str,
        digest: KeyDigest,
        identity: Option<u32>,
    ) -> Result<(), EngineError> {
        match self.idem.get(&digest).and_then(|e| e.request()) {
            Some(r) if Some(r) != identity => Err(EngineError::IdempotencyKeyReused {
                key: key.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Ends a claim of [`Engine::claim_key`] that produced no outcome (the hold failed):
    /// the key is free again. A key that already has an outcome keeps it.
    pub(crate) fn release_claim(&self, key: KeyDigest) {
        self.idem
            .remove_if(&key, |_, v| matches!(v, IdemEntry::Pending));
    }

    /// [`Engine::release_claim`] of each of `keys`.
    pub(crate) fn release_claims(&self, keys: impl IntoIterator<Item = KeyDigest>) {
        for key in keys {
            self.release_claim(key);
        }
    }

    /// Records the outcome of a claimed key (normally our own `Pending`, overwritten in
    /// place: one lookup; inserted if it is gone).
    pub(crate) fn settle_claim(
        &self,
        key: KeyDigest,
        lsn: Lsn,
        outcome: &HoldOutcome,
        request: Option<u32>,
    ) {
        let Some(done) = IdemEntry::done(lsn, outcome, request) else {
            return;
        };
        match self.idem.get_mut(&key) {
            Some(mut e) => *e = done,
            None => {
                self.idem.insert(key, done);
            }
        }
    }

    /// One hold of an allocation ([`Engine::allocate`], which holds the snapshot gate):
    /// an unkeyed hold whose grant is led by [`Event::KeyedPart`] when the allocation has
    /// a key (`allocation_key`), waited for like any hold.
    pub(crate) fn hold_part(
        &self,
        req: &HoldRequest,
        now: Timestamp,
        allocation_key: Option<&str>,
    ) -> Result<HoldOutcome, EngineError> {
        debug_assert!(
            req.idempotency_key.is_none(),
            "allocation holds have no keys"
        );
        let mut prep = self.prepare_hold(req)?;
        let (outcome, lsn) = self.hold_locked(&mut prep, req, now, allocation_key)?;
        self.durable(lsn)?;
        Ok(outcome)
    }

    /// Decides and applies the hold `prep` (from [`Engine::prepare_hold`] of `req`; its key
    /// claimed when it has one) through the hold decision and the mutation skeleton.
    /// `allocation_key`: see [`Engine::hold_part`].
    fn hold_locked(
        &self,
        prep: &mut PreparedHold<'_>,
        req: &HoldRequest,
        now: Timestamp,
        allocation_key: Option<&str>,
    ) -> Result<(HoldOutcome, Option<Lsn>), EngineError> {
        let (shard, ttl_ms, identity, key) = (prep.shard, prep.ttl_ms, prep.identity, prep.key);
        let lines = &mut prep.lines;
        let status = shard.status();
        if !status.accepts_holds() || lines.iter().any(|(id, _, _)| id.is_none()) {
            // Refused without a lock: a store that takes no holds, or a SKU the engine never
            // saw (no cell, no stock anywhere), read on the other cells' views as they are.
            let units = check_units(status, lines, |i| {
                lines[i].0.map_or(0, |id| u64::from(shard.view(id).atp()))
            });
            let rejection = units
                .err()
                .ok_or_else(|| EngineError::internal("hold", "an unknown SKU had stock"))?;
            return self.reject(shard, req, rejection, (identity, key), now);
        }
        // Global lock order: cells by ascending SKU id, then the store's state.
        lines.sort_unstable_by_key(|(id, _, _)| *id);
        let lines = &*lines;
        let limits = &self.config.limits;
        let default_safety = shard.default_safety();
        let (placed, lsn) = self.commit(
            || {
                let mut cells = Vec::with_capacity(lines.len());
                for (id, _, _) in lines {
                    let id = id.ok_or_else(|| EngineError::invalid("sku", "unknown"))?;
                    let cell = shard
                        .cell(id)
                        .ok_or_else(|| EngineError::invalid("sku", "beyond skus_max"))?;
                    cells.push((id.0, cell));
                }
                lock_in_order(&cells)
                    .ok_or_else(|| EngineError::invalid("lines", "not in lock order"))
            },
            |guards| {
                let units = check_units(status, lines, |i| {
                    u64::from(guards[i].view(default_safety).atp())
                });
                if let Err(rejection) = units {
                    return Ok(Decision::Answer(Err(rejection)));
                }
                // The store's state after its cells, and only for a hold the units allow:
                // a shortage never waits for the store.
                let st = shard.state.lock();
                let place = (ttl_ms, req.slot_start_ms);
                let expires_at = match check_place(&st, st.active_len(), limits, place, now) {
                    Ok(expires_at) => expires_at,
                    Err(Refusal::Full) => return Err(table_full(limits)),
                    Err(Refusal::Rejected(rejection)) => {
                        return Ok(Decision::Answer(Err(rejection)));
                    }
                };
                // Sequences start at 1: hold (and order) id 0 is never issued, so a
                // client's unset id field (proto3's 0) can never address store 0's first
                // hold.
                let hold = HoldId::new(shard.id, st.next_hold_seq());
                let lines: Vec<Line> = lines
                    .iter()
                    .map(|(id, q, _)| Line {
                        sku: id.unwrap_or(SkuId(0)),
                        qty: *q as Qty,
                    })
                    .collect();
                let mut events = Vec::with_capacity(1 + usize::from(allocation_key.is_some()));
                if let Some(key) = allocation_key {
                    events.push(Event::KeyedPart {
                        key: key.to_owned(),
                        of: KeptOf::Allocation,
                    });
                }
                events.push(grant_event(hold, req, lines, expires_at));
                // Shared with the event stream, which keeps it without a copy.
                let record = Arc::new(Record { at: now, events });
                Ok(Decision::Log(record, (st, hold, expires_at)))
            },
            |guards, record, lsn, (mut st, hold, expires_at)| {
                let Some(Event::HoldGranted { lines, .. }) = record.events.last() else {
                    unreachable!("the record was built with one HoldGranted event")
                };
                let outcome = HoldOutcome::Granted(HoldGrant {
                    hold,
                    expires_at,
                    lsn,
                });
                apply_grant(
                    guards,
                    &mut st,
                    hold,
                    key,
                    lines.as_slice().into(),
                    now,
                    (expires_at, req.slot_start_ms),
                );
                if let Some(key) = key {
                    self.settle_claim(key, lsn, &outcome, identity);
                }
                Ok(Ok(outcome))
            },
        )?;
        match placed {
            Ok(outcome) => Ok((outcome, lsn)),
            Err(rejection) => self.reject(shard, req, rejection, (identity, key), now),
        }
    }

    /// Answers `req` (its identity and key digest in `keyed`) with `rejection`: logged,
    /// and kept under its key, when it has one.
    fn reject(
        &self,
        shard: &StoreShard,
        req: &HoldRequest,
        rejection: HoldRejection,
        (identity, digest): (Option<u32>, Option<KeyDigest>),
        now: Timestamp,
    ) -> Result<(HoldOutcome, Option<Lsn>), EngineError> {
        let outcome = HoldOutcome::Rejected(rejection.clone());
        let (Some(key), Some(digest)) = (&req.idempotency_key, digest) else {
            return Ok((outcome, None));
        };
        self.commit(
            || Ok(shard.state.lock()),
            |_| {
                let events = vec![Event::HoldRejected {
                    store: shard.id,
                    key: key.clone(),
                    rejection,
                }];
                Ok(Decision::Log(Arc::new(Record { at: now, events }), ()))
            },
            |st, _, lsn, ()| {
                st.note_idem_key(now, digest);
                self.settle_claim(digest, lsn, &outcome, identity);
                Ok(outcome)
            },
        )
    }

    /// Moves an active hold's expiry to `now + ttl_ms` (the store's default when `None`).
    pub fn extend(
        &self,
        hold: HoldId,
        ttl_ms: Option<i64>,
        now: Timestamp,
    ) -> Result<ExtendOutcome, EngineError> {
        let shard = self.hold_shard(hold)?;
        let ttl_ms = ttl_ms.unwrap_or_else(|| shard.default_hold_ms.load(Ordering::Acquire));
        let max = shard
            .max_hold_ms
            .load(Ordering::Acquire)
            .min(self.config.limits.hold_time_max_ms);
        if ttl_ms < self.config.limits.hold_time_min_ms || ttl_ms > max {
            return Err(EngineError::invalid(
                "ttl_ms",
                format!(
                    "must be within {}..={max}",
                    self.config.limits.hold_time_min_ms
                ),
            ));
        }
        let (outcome, _) = self.mutate(
            || Ok(shard.state.lock()),
            |st| {
                let Some(rec) = st.hold(hold) else {
                    return Ok(Decision::Answer(ExtendOutcome::NotActive(not_active(
                        st, hold,
                    ))));
                };
                let expires_at = now.add_ms(ttl_ms);
                if let Some(slot_start_ms) = rec.slot() {
                    // The slot's expiry, computed as the grant computed it. A calendar
                    // changed since the grant may no longer have that slot: the hold then
                    // cannot be extended past the expiry it has, which is never past the
                    // slot.
                    let slot_expires_at = st
                        .slots()
                        .calendar()
                        .and_then(|c| c.slot_at(slot_start_ms).map(|slot| c.slot_expiry_ms(&slot)))
                        .map_or(rec.expires_at, Timestamp);
                    if expires_at > slot_expires_at {
                        return Ok(Decision::Answer(ExtendOutcome::PastSlot {
                            slot_start_ms,
                            slot_expires_at,
                        }));
                    }
                }
                let mut facts = rec.facts();
                facts.expires_at = expires_at;
                let events = vec![Event::HoldExtended { hold, facts }];
                Ok(Decision::Log(
                    Arc::new(Record { at: now, events }),
                    expires_at,
                ))
            },
            |st, _, _, expires_at| {
                apply_extend(st, hold, expires_at);
                Ok(ExtendOutcome::Extended { expires_at })
            },
        )?;
        Ok(outcome)
    }

    /// Marks a hold as confirmed: checkout completed, the hold is an order's allocation.
    /// It keeps its expiry, the end of its pickup window (slot end plus grace, or the hold
    /// time; [`Engine::extend`] moves it): a confirmed hold still expires, as a no-show.
    pub fn confirm(&self, hold: HoldId, now: Timestamp) -> Result<ConfirmOutcome, EngineError> {
        let shard = self.hold_shard(hold)?;
        let (outcome, _) = self.mutate(
            || Ok(shard.state.lock()),
            |st| {
                let Some(h) = st.hold(hold) else {
                    return Ok(Decision::Answer(ConfirmOutcome::NotActive(not_active(
                        st, hold,
                    ))));
                };
                let expires_at = h.expires_at;
                if h.confirmed {
                    return Ok(Decision::Answer(ConfirmOutcome::Confirmed { expires_at }));
                }
                let events = vec![Event::HoldConfirmed {
                    hold,
                    facts: h.facts(),
                }];
                Ok(Decision::Log(
                    Arc::new(Record { at: now, events }),
                    expires_at,
                ))
            },
            |st, _, _, expires_at| {
                apply_confirm(st, hold);
                Ok(ConfirmOutcome::Confirmed { expires_at })
            },
        )?;
        Ok(outcome)
    }

    /// Releases a hold: its units are available again.
    pub fn release(&self, hold: HoldId, now: Timestamp) -> Result<ReleaseOutcome, EngineError> {
        self.release_described(hold, now)
            .map(|(outcome, _)| outcome)
    }

    /// [`Engine::release`], also returning the hold as it was when this call released it
    /// (`None` unless the outcome is [`ReleaseOutcome::Released`]): a release response
    /// that describes the hold needs no second look under the store's lock.
    pub fn release_described(
        &self,
        hold: HoldId,
        now: Timestamp,
    ) -> Result<(ReleaseOutcome, Option<HoldInfo>), EngineError> {
        let shard = self.hold_shard(hold)?;
        match self.end_hold(shard, hold, ReleaseReason::Released, now)? {
            Ended::Now(lsn, rec) => {
                self.durable(Some(lsn))?;
                let info = HoldInfo {
                    hold,
                    slot: rec.slot(),
                    created: rec.created,
                    expires_at: rec.expires_at,
                    confirmed: rec.confirmed,
                    lines: rec.lines.into_vec(),
                };
                Ok((ReleaseOutcome::Released, Some(info)))
            }
            Ended::Not(HoldNotActive::Ended) => Ok((ReleaseOutcome::AlreadyEnded, None)),
            Ended::Not(HoldNotActive::Unknown) => Ok((ReleaseOutcome::Unknown, None)),
        }
    }

    /// Ends holds whose expiry is at or before `now`, examining at most `max` holds (and
    /// at most `expire_batch_max`). Returns what expired. Also ages out dedupe state older
    /// than the dedupe window. Call it from a ticker; bounded work per call.
    pub fn expire(&self, now: Timestamp, max: usize) -> Result<Vec<ExpiredHold>, EngineError> {
        let budget = max.min(self.config.limits.expire_batch_max);
        let n = self.store_count.load(Ordering::Acquire);
        let mut out = Vec::new();
        if n == 0 || budget == 0 {
            return Ok(out);
        }
        let start = self.expire_cursor.load(Ordering::Relaxed) % n;
        let mut last_lsn = None;
        for i in 0..n {
            let store = StoreId((start + i) % n);
            let Some(shard) = self.shard(store) else {
                continue;
            };
            let due: Vec<HoldId> = {
                let mut st = shard.state.lock();
                self.age_out(&mut st, now);
                st.due(now, budget - out.len())
            };
            for hold in due {
                if let Ended::Now(lsn, rec) =
                    self.end_hold(shard, hold, ReleaseReason::Expired, now)?
                {
                    last_lsn = Some(lsn);
                    out.push(ExpiredHold {
                        hold,
                        lines: rec.lines.into_vec(),
                        confirmed: rec.confirmed,
                        lsn,
                    });
                }
            }
            if out.len() >= budget {
                self.expire_cursor.store((start + i) % n, Ordering::Relaxed);
                break;
            }
        }
        self.durable(last_lsn)?;
        Ok(out)
    }

    fn age_out(&self, st: &mut StoreState, now: Timestamp) {
        let horizon = now.add_ms(-self.config.limits.dedupe_window_ms);
        st.age_out(horizon, |key| {
            self.idem.remove_if(key, |_, v| v.is_done());
        });
    }

    pub(crate) fn hold_shard(&self, hold: HoldId) -> Result<&StoreShard, EngineError> {
        self.shard(hold.store())
            .ok_or_else(|| EngineError::invalid("hold", format!("no store for hold {hold}")))
    }

    fn end_hold(
        &self,
        shard: &StoreShard,
        hold: HoldId,
        reason: ReleaseReason,
        now: Timestamp,
    ) -> Result<Ended, EngineError> {
        let _gate = self.gate.read().map_err(|_| poisoned())?;
        let _admitted = shard.admit();
        self.end_hold_gated(shard, hold, reason, now)
    }

    /// Releases an allocation's hold (as [`Engine::release`]) under the snapshot gate the
    /// allocation holds.
    pub(crate) fn release_part(&self, hold: HoldId, now: Timestamp) -> Result<(), EngineError> {
        let shard = self.hold_shard(hold)?;
        if let Ended::Now(lsn, _) =
            self.end_hold_gated(shard, hold, ReleaseReason::Released, now)?
        {
            self.durable(Some(lsn))?;
        }
        Ok(())
    }

    /// [`Engine::end_hold`] with the snapshot gate held by the caller.
    fn end_hold_gated(
        &self,
        shard: &StoreShard,
        hold: HoldId,
        reason: ReleaseReason,
        now: Timestamp,
    ) -> Result<Ended, EngineError> {
        // Read the lines first (the state lock comes after the cell locks in lock order),
        // then lock cells and state and check again.
        let lines = {
            let st = shard.state.lock();
            match st.hold(hold) {
                Some(h) => h.lines.clone(),
                None => return Ok(Ended::Not(not_active(&st, hold))),
            }
        };
        let (ended, _) = self.commit(
            || Ok((lock_cells(shard, &lines)?, shard.state.lock())),
            |(_, st)| {
                let facts = match st.hold(hold) {
                    Some(h) if reason == ReleaseReason::Released || h.expires_at <= now => {
                        h.facts()
                    }
                    Some(_) => return Ok(Decision::Answer(Ended::Not(HoldNotActive::Unknown))),
                    None => return Ok(Decision::Answer(Ended::Not(not_active(st, hold)))),
                };
                // A hold that is a pickup order's allocation ends the order in the same
                // record.
                let order_event = crate::order::hold_end_event(st, hold, reason);
                let mut events = vec![Event::HoldReleased {
                    hold,
                    reason,
                    facts,
                }];
                events.extend(order_event);
                let events = crate::order::with_order_facts(st, events, now)?;
                Ok(Decision::Log(Arc::new(Record { at: now, events }), ()))
            },
            |(guards, st), record, lsn, ()| {
                let rec = apply_release(guards, st, hold, reason)
                    .ok_or_else(|| EngineError::internal("hold", "vanished under its locks"))?;
                for ev in &record.events[1..] {
                    crate::order::apply_state_event(ev, st, now)
                        .map_err(|e| EngineError::internal("order", e.to_string()))?;
                }
                Ok(Ended::Now(lsn, rec))
            },
        )?;
        Ok(ended)
    }

    // ---------------------------------------------------------------- POS feed

    /// Applies a POS delta. Deduplicated by POS event id within the dedupe window.
    pub fn apply_delta(&self, d: &PosDelta, now: Timestamp) -> Result<PosOutcome, EngineError> {
        check_id(
            "pos_event_id",
            &d.pos_event_id,
            self.config.limits.key_len_max,
        )?;
        if let Some(r) = &d.order_ref {
            check_id("order_ref", r, self.config.limits.external_id_len_max)?;
        }
        let signed = match d.kind {
            PosDeltaKind::Sale => -d.qty,
            PosDeltaKind::Return | PosDeltaKind::Receive => d.qty,
            PosDeltaKind::Adjust => d.qty,
        };
        let qty_max = i64::from(u32::MAX);
        if !(-qty_max..=qty_max).contains(&d.qty)
            || (d.kind != PosDeltaKind::Adjust && d.qty <= 0)
            || (d.kind == PosDeltaKind::Adjust && d.qty == 0)
        {
            return Err(EngineError::invalid(
                "qty",
                "must be positive for sale, return and receive; non-zero for adjust",
            ));
        }
        let shard = self.shard_by_name(&d.store)?;
        let sku = self.intern_sku(&d.sku, now)?;
        let default_safety = shard.default_safety();
        let horizon = now.add_ms(-self.config.limits.dedupe_window_ms);
        let (outcome, _) = self.mutate(
            || Ok((cell_of(shard, sku)?.lock(), shard.state.lock())),
            |(guard, st)| {
                if st.pos_seen(&d.pos_event_id) {
                    return Ok(Decision::Answer(PosOutcome::Duplicate));
                }
                // A sale naming a pickup order is recognized against the order (SPEC 4,
                // POS feed).
                let (ev, after, sale) =
                    match crate::order::pos_sale_event(st, guard, default_safety, shard.id, sku, d)
                    {
                        Some(ev) => {
                            let after = match &ev {
                                Event::PosOrderSale { after, .. } => *after,
                                _ => guard.view(default_safety),
                            };
                            let handed_off = matches!(
                                ev,
                                Event::PosOrderSale { reported, recognized, .. }
                                    if recognized == reported
                            );
                            (ev, after, Some(handed_off))
                        }
                        None => {
                            let after = CellView {
                                on_hand: clamp_qty(i64::from(guard.on_hand) + signed),
                                ..guard.view(default_safety)
                            };
                            let ev = Event::PosDelta {
                                store: shard.id,
                                sku,
                                pos_event_id: d.pos_event_id.clone(),
                                kind: d.kind,
                                qty: signed,
                                order_ref: d.order_ref.clone(),
                                pos_time: d.pos_time,
                                after,
                            };
                            (ev, after, None)
                        }
                    };
                let mut events = vec![ev];
                let shortage = shortage_event(shard.id, sku, st, after);
                events.extend(shortage.clone());
                let pass = (after.on_hand, sale, shortage.map(into_shortage));
                Ok(Decision::Log(Arc::new(Record { at: now, events }), pass))
            },
            |(guard, st), record, lsn, (on_hand, sale, shortage)| {
                match sale {
                    Some(handed_off) => {
                        if let Some(ev) = record.events.first() {
                            crate::order::apply_pos_sale(ev, guard, st, now, horizon)
                                .map_err(|e| EngineError::internal("pos sale", e.to_string()))?;
                        }
                        if handed_off {
                            return Ok(PosOutcome::AlreadyHandedOff { on_hand, lsn });
                        }
                    }
                    None => apply_pos_delta(
                        guard,
                        st,
                        DeltaApply {
                            sku,
                            pos_event_id: &d.pos_event_id,
                            signed_qty: signed,
                            pos_time: d.pos_time,
                            on_hand_after: on_hand,
                            now,
                            horizon,
                        },
                    ),
                }
                Ok(PosOutcome::Applied {
                    on_hand,
                    matched: None,
                    shortage,
                    lsn,
                })
            },
        )?;
        Ok(outcome)
    }

    /// Applies a POS count: `on_hand` becomes the count plus the POS deltas the engine
    /// applied that happened after the count's time. Never changes `held`.
    pub fn apply_count(&self, c: &PosCount, now: Timestamp) -> Result<PosOutcome, EngineError> {
        check_id(
            "pos_event_id",
            &c.pos_event_id,
            self.config.limits.key_len_max,
        )?;
        let shard = self.shard_by_name(&c.store)?;
        let sku = self.intern_sku(&c.sku, now)?;
        let (outcome, _) = self.mutate(
            || Ok((cell_of(shard, sku)?.lock(), shard.state.lock())),
            |(guard, st)| {
                if st.pos_seen(&c.pos_event_id) {
                    return Ok(Decision::Answer(PosOutcome::Duplicate));
                }
                if st.last_count_as_of(sku).is_some_and(|t| t > c.as_of) {
                    return Ok(Decision::Answer(PosOutcome::StaleCount));
                }
                let after_count: i64 = st
                    .recent_deltas(sku)
                    .map(|d| {
                        d.iter()
                            .filter(|d| d.pos_time > c.as_of)
                            .map(|d| d.qty)
                            .sum()
                    })
                    .unwrap_or(0);
                let on_hand_before = guard.on_hand;
                let on_hand_after = clamp_qty(i64::from(c.counted) + after_count);
                let matched = on_hand_after == on_hand_before;
                let after = CellView {
                    on_hand: on_hand_after,
                    ..guard.view(shard.default_safety())
                };
                let mut events = vec![Event::PosCount {
                    store: shard.id,
                    sku,
                    pos_event_id: c.pos_event_id.clone(),
                    counted: c.counted,
                    as_of: c.as_of,
                    on_hand_before,
                    after,
                    matched,
                }];
                let shortage = shortage_event(shard.id, sku, st, after);
                events.extend(shortage.clone());
                let pass = (on_hand_after, matched, shortage.map(into_shortage));
                Ok(Decision::Log(Arc::new(Record { at: now, events }), pass))
            },
            |(guard, st), _, lsn, (on_hand_after, matched, shortage)| {
                apply_pos_count(guard, st, sku, &c.pos_event_id, c.as_of, on_hand_after, now);
                Ok(PosOutcome::Applied {
                    on_hand: on_hand_after,
                    matched: Some(matched),
                    shortage,
                    lsn,
                })
            },
        )?;
        Ok(outcome)
    }

    /// Sets the safety stock of one cell (units never promised online).
    pub fn set_safety_stock(
        &self,
        store: &str,
        sku: &str,
        safety_stock: Qty,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        if safety_stock == SAFETY_INHERIT {
            return Err(EngineError::invalid("safety_stock", "out of range"));
        }
        let shard = self.shard_by_name(store)?;
        let sku = self.intern_sku(sku, now)?;
        let events = vec![Event::SafetyStockSet {
            store: shard.id,
            sku,
            safety_stock,
        }];
        self.mutate(
            || Ok(cell_of(shard, sku)?.lock()),
            |_| Ok(Decision::Log(Arc::new(Record { at: now, events }), ())),
            |guard, _, _, ()| {
                // The change replay makes for `SafetyStockSet` (`Engine::apply_event`).
                guard.safety = safety_stock;
                Ok(())
            },
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    /// Availability of one cell. An unknown SKU reads as all zeros.
    pub fn availability(&self, store: &str, sku: &str) -> Result<CellView, EngineError> {
        let shard = self.shard_by_name(store)?;
        Ok(match self.sku_id(sku) {
            Some(id) => shard.view(id),
            None => CellView {
                safety_stock: shard.default_safety(),
                ..CellView::default()
            },
        })
    }

    /// Availability of one SKU in every store that has a cell for it, in store id order.
    pub fn sku_availability(&self, sku: &str) -> Vec<(StoreId, CellView)> {
        let Some(id) = self.sku_id(sku) else {
            return Vec::new();
        };
        (0..self.store_count.load(Ordering::Acquire))
            .filter_map(|i| self.shard(StoreId(i)))
            .filter(|s| s.existing_cell(id).is_some())
            .map(|s| (s.id, s.view(id)))
            .collect()
    }

    /// A page of one store's cells in SKU id order, starting after `after` (exclusive),
    /// at most `limit` cells with any stock, holds or safety stock set.
    pub fn store_availability(
        &self,
        store: &str,
        after: Option<SkuId>,
        limit: usize,
    ) -> Result<Vec<(SkuId, CellView)>, EngineError> {
        let shard = self.shard_by_name(store)?;
        let first = after.map_or(0, |s| s.0.saturating_add(1));
        let default_safety = shard.default_safety();
        let mut out = Vec::new();
        for (base, page) in shard.pages() {
            if base as usize + page.len() <= first as usize {
                continue;
            }
            for (i, cell) in page.iter().enumerate() {
                let sku = base + i as u32;
                if sku < first {
                    continue;
                }
                let c = *cell.lock();
                if c == Cell::default() {
                    continue;
                }
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push((SkuId(sku), c.view(default_safety)));
            }
        }
        Ok(out)
    }

    /// An active hold's lines, expiry and confirmation, if it is active.
    pub fn hold_info(&self, hold: HoldId) -> Option<HoldInfo> {
        let shard = self.shard(hold.store())?;
        let st = shard.state.lock();
        st.hold(hold).map(|h| HoldInfo {
            hold,
            lines: h.lines.to_vec(),
            created: h.created,
            expires_at: h.expires_at,
            confirmed: h.confirmed,
            slot: h.slot(),
        })
    }

    /// How an ended hold ended, if its store still remembers (see
    /// [`crate::ENDED_HOLDS_KEPT`]); `None` for an active, unknown or older one.
    pub fn hold_end(&self, hold: HoldId) -> Option<crate::HoldEnd> {
        let shard = self.shard(hold.store())?;
        let st = shard.state.lock();
        st.ended(hold)
    }

    /// Number of active holds in every store.
    pub fn active_holds(&self) -> usize {
        (0..self.store_count.load(Ordering::Acquire))
            .filter_map(|i| self.shard(StoreId(i)))
            .map(|s| s.state.lock().active_len())
            .sum()
    }

    /// Checks the conservation invariant (SPEC 3.3) over the whole state: for every cell,
    /// `held` equals the sum of its lines in active holds. Takes every lock in order, so
    /// call it when writers are quiet (tests, after recovery). Returns the first violation.
    pub fn check_conservation(&self) -> Result<(), String> {
        let _gate = self.gate.write().map_err(|_| "gate poisoned".to_owned())?;
        let stores = self.store_count.load(Ordering::Acquire);
        let check = |first: u32| {
            (first..stores)
                .step_by(2)
                .try_for_each(|i| self.check_store_conservation(StoreId(i)))
        };
        // Walking the holds is bound by memory latency (a tree node, then each hold's
        // lines), so with many holds (as after a recovery) a second thread taking every
        // other store halves the time; with few, a thread costs more than it saves.
        let holds: usize = (0..stores)
            .filter_map(|i| self.shard(StoreId(i)))
            .map(|s| s.state.lock().active_len())
            .sum();
        let (even, odd) = if holds < CONSERVATION_CHECK_PARALLEL_HOLDS_MIN {
            (check(0), check(1))
        } else {
            std::thread::scope(|scope| {
                let odd = std::thread::Builder::new()
                    .name("pickline-check".into())
                    .spawn_scoped(scope, || check(1));
                let even = check(0);
                let odd = match odd {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        Err((1, "the conservation check thread panicked".to_owned()))
                    }),
                    // No thread to be had: check those stores here.
                    Err(_) => check(1),
                };
                (even, odd)
            })
        };
        // The first violation in store order, whichever thread found it.
        match (even, odd) {
            (Ok(()), Ok(())) => Ok(()),
            (Err((_, why)), Ok(())) | (Ok(()), Err((_, why))) => Err(why),
            (Err(a), Err(b)) => Err(if a.0 < b.0 { a.1 } else { b.1 }),
        }
    }

    /// [`Engine::check_conservation`] for one store; the error carries the store's index.
    fn check_store_conservation(&self, store: StoreId) -> Result<(), (u32, String)> {
        let i = store.0;
        let Some(shard) = self.shard(store) else {
            return Ok(());
        };
        let st = shard.state.lock();
        let mut sums: FastHashMap<SkuId, u64> = Default::default();
        for (_, h) in st.holds() {
            for l in h.lines.iter() {
                *sums.entry(l.sku).or_default() += u64::from(l.qty);
            }
        }
        for (base, page) in shard.pages() {
            for (j, cell) in page.iter().enumerate() {
                let sku = SkuId(base + j as u32);
                let held = u64::from(cell.lock().held);
                let want = sums.remove(&sku).unwrap_or(0);
                if held != want {
                    return Err((
                        i,
                        format!(
                            "store {} sku {}: held {held} but active holds sum to {want}",
                            i, sku.0
                        ),
                    ));
                }
            }
        }
        if let Some((sku, q)) = sums.into_iter().find(|(_, q)| *q > 0) {
            return Err((
                i,
                format!("store {i} sku {}: holds of {q} on no cell", sku.0),
            ));
        }
        st.check_derived()
            .map_err(|why| (i, format!("store {i}: {why}")))
    }

    // ---------------------------------------------------------------- replay

    /// Applies a logged record to the state, as recovery does. Records must be applied in
    /// LSN order, to an engine that has applied every earlier record.
    pub fn replay(&self, record: &Record) -> Result<(), EngineError> {
        note_keyed_part(&mut self.unanswered.lock(), record);
        for ev in &record.events {
            self.apply_event(ev, record.at)
                .map_err(|why| EngineError::corrupt("log record", why.to_string()))?;
        }
        Ok(())
    }

    /// A keyed operation's answer was replayed: its parts are answered.
    fn answered_part(&self, of: KeptOf, key: &str) {
        let mut unanswered = self.unanswered.lock();
        if !unanswered.is_empty() {
            unanswered.remove(&(of, key.into()));
        }
    }

    /// After a replay: releases the holds of keyed operations (batches and allocations
    /// under an idempotency key) whose answer never reached the log, as of `now`, and
    /// returns how many were still active. Nobody was told about those holds (an answer is
    /// given only once its record is durable), so the caller retries; releasing them
    /// makes the retry hold afresh instead of holding the same stock twice. Each release
    /// is logged like any other, so the next recovery replays it. Holds released or
    /// confirmed since (by a caller who learnt the id from the event stream) are left as
    /// they are.
    pub fn release_unanswered(&self, now: Timestamp) -> Result<usize, EngineError> {
        let holds: Vec<HoldId> = {
            let mut unanswered = self.unanswered.lock();
            let mut holds: Vec<HoldId> = unanswered.drain().flat_map(|(_, h)| h).collect();
            holds.sort_unstable();
            holds
        };
        let mut released = 0;
        let mut newest = None;
        for hold in holds {
            let Some(shard) = self.shard(hold.store()) else {
                continue;
            };
            if let Ended::Now(lsn, _) = self.end_hold(shard, hold, ReleaseReason::Released, now)? {
                released += 1;
                newest = Some(lsn);
            }
        }
        self.durable(newest)?;
        Ok(released)
    }

    /// [`Engine::replay`] through exclusive access, as recovery does before the engine is
    /// shared: the same checks and the same state, but hold grants (most of a log) touch
    /// their cells and store state without taking locks, so replay does not stall on an
    /// atomic per lock.
    pub fn replay_exclusive(&mut self, record: &Record) -> Result<(), EngineError> {
        note_keyed_part(self.unanswered.get_mut(), record);
        for ev in &record.events {
            let applied = match ev {
                Event::HoldGranted {
                    hold,
                    key,
                    lines,
                    expires_at,
                    slot,
                } => self.replay_grant_exclusive(
                    *hold,
                    key.as_deref(),
                    lines,
                    record.at,
                    (*expires_at, *slot),
                ),
                _ => self.apply_event(ev, record.at),
            };
            applied.map_err(|why| EngineError::corrupt("log record", why.to_string()))?;
        }
        Ok(())
    }

    /// `apply_event`'s `HoldGranted` arm without locks: checks in the same order
    /// (`lock_cells`: every SKU has a cell, then lock order; not granted twice; no
    /// overflow), then the same mutation (`apply_grant`).
    fn replay_grant_exclusive(
        &mut self,
        hold: HoldId,
        key: Option<&str>,
        lines: &[Line],
        at: Timestamp,
        expiry: (Timestamp, Option<i64>),
    ) -> Result<(), ApplyError> {
        let shard = self
            .stores
            .get_mut(hold.store().0 as usize)
            .and_then(OnceLock::get_mut)
            .ok_or(ApplyError::UnknownStore)?;
        for l in lines {
            if shard.cell_mut(l.sku).0.is_none() {
                return Err(EngineError::invalid("sku", "beyond skus_max").into());
            }
        }
        if lines.windows(2).any(|w| w[0].sku.0 >= w[1].sku.0) {
            return Err(EngineError::invalid("lines", "not in lock order").into());
        }
        // Every active hold's sequence is below `next_seq` (a grant raises it, and
        // snapshot loading refuses a hold at or above it), so a hold at or above it is not
        // active: one comparison instead of a tree search for the new holds a log grants.
        let st = shard.state.get_mut();
        if st.is_active(hold) {
            return Err(ApplyError::GrantedTwice(hold));
        }
        if !HoldRec::slot_is_valid(expiry.1) {
            return Err(ApplyError::SlotStart(hold));
        }
        for l in lines {
            if let (Some(c), _) = shard.cell_mut(l.sku)
                && c.held.checked_add(l.qty).is_none()
            {
                return Err(ApplyError::HeldOverflow(hold));
            }
        }
        for l in lines {
            if let (Some(c), _) = shard.cell_mut(l.sku) {
                c.held += l.qty;
            }
        }
        let digest = key.map(KeyDigest::of);
        shard
            .state
            .get_mut()
            .grant(hold, digest, lines.into(), at, expiry);
        self.replayed_grant_key(hold, digest, lines, at, expiry);
        Ok(())
    }

    /// A replayed grant's idempotency key answers a retry with the grant (and refuses a
    /// different request under it: the grant records the store, lines and slot).
    fn replayed_grant_key(
        &self,
        hold: HoldId,
        key: Option<KeyDigest>,
        lines: &[Line],
        at: Timestamp,
        (expires_at, slot): (Timestamp, Option<i64>),
    ) {
        if let Some(key) = key {
            let names = self.sku_names.lock();
            let named = lines.iter().map(|l| {
                let name = names.get(l.sku.0 as usize).map_or("", |n| &**n);
                (name, u64::from(l.qty))
            });
            let ttl_ms = expires_at.0 - at.0;
            let request = hold_identity(hold.store(), named, slot, ttl_ms);
            drop(names);
            // The LSN is not known here; 0 is durable by definition after recovery.
            self.idem.insert(
                key,
                IdemEntry::Granted {
                    hold,
                    expires_at,
                    lsn: Lsn(0),
                    request: Some(request),
                },
            );
        }
    }

    /// The state of `hold`'s store, locked, for a change to the hold, which must be active.
    fn active_hold_state(
        &self,
        hold: HoldId,
        change: HoldChange,
    ) -> Result<std::sync::MutexGuard<'_, StoreState>, ApplyError> {
        let shard = self.shard(hold.store()).ok_or(ApplyError::UnknownStore)?;
        let st = shard.state.lock();
        if !st.is_active(hold) {
            return Err(ApplyError::InactiveHold { change, hold });
        }
        Ok(st)
    }

    /// The cell of `sku` at `store` and the store's state, locked in that order (the
    /// replay of a POS event).
    fn replay_cell(
        &self,
        store: StoreId,
        sku: SkuId,
    ) -> Result<(MutexGuard<'_, Cell>, std::sync::MutexGuard<'_, StoreState>), ApplyError> {
        let shard = self.shard(store).ok_or(ApplyError::UnknownStore)?;
        let guard = shard.cell(sku).ok_or(ApplyError::SkuBeyondMax)?.lock();
        Ok((guard, shard.state.lock()))
    }

    fn apply_event(&self, ev: &Event, at: Timestamp) -> Result<(), ApplyError> {
        match ev {
            Event::StoreDefined { store, def } => {
                let slot = self
                    .stores
                    .get(store.0 as usize)
                    .ok_or(ApplyError::StoreBeyondMax(store.0))?;
                match slot.get() {
                    Some(shard) => {
                        shard.set_def(def.clone());
                        shard.touch(at);
                    }
                    None => {
                        if store.0 != self.store_count.load(Ordering::Acquire) {
                            return Err(ApplyError::StoreOutOfOrder(store.0));
                        }
                        let shard =
                            StoreShard::new(*store, def.clone(), self.config.limits.skus_max);
                        shard.touch(at);
                        let _ = slot.set(Box::new(shard));
                        self.store_count.store(store.0 + 1, Ordering::Release);
                    }
                }
                self.store_index
                    .insert(def.external_id.as_str().into(), *store);
                self.geo.upsert(*store, def.lat, def.lon);
            }
            Event::SkuRegistered { sku, external_id } => {
                let mut names = self.sku_names.lock();
                if sku.0 as usize != names.len() {
                    return Err(ApplyError::SkuOutOfOrder(sku.0));
                }
                if sku.0 >= self.config.limits.skus_max {
                    return Err(ApplyError::SkuIdBeyondMax(sku.0));
                }
                names.push(external_id.as_str().into());
                self.skus.insert(external_id.as_str().into(), *sku);
            }
            Event::SafetyStockSet {
                store,
                sku,
                safety_stock,
            } => {
                let shard = self.shard(*store).ok_or(ApplyError::UnknownStore)?;
                shard
                    .cell(*sku)
                    .ok_or(ApplyError::SkuBeyondMax)?
                    .lock()
                    .safety = *safety_stock;
            }
            Event::HoldGranted {
                hold,
                key,
                lines,
                expires_at,
                slot,
            } => {
                let shard = self.shard(hold.store()).ok_or(ApplyError::UnknownStore)?;
                let mut guards = lock_cells(shard, lines)?;
                let mut st = shard.state.lock();
                if st.is_active(*hold) {
                    return Err(ApplyError::GrantedTwice(*hold));
                }
                if !HoldRec::slot_is_valid(*slot) {
                    return Err(ApplyError::SlotStart(*hold));
                }
                for (l, g) in lines.iter().zip(&guards) {
                    if g.held.checked_add(l.qty).is_none() {
                        return Err(ApplyError::HeldOverflow(*hold));
                    }
                }
                let key = key.as_deref().map(KeyDigest::of);
                apply_grant(
                    &mut guards,
                    &mut st,
                    *hold,
                    key,
                    lines.as_slice().into(),
                    at,
                    (*expires_at, *slot),
                );
                self.replayed_grant_key(*hold, key, lines, at, (*expires_at, *slot));
            }
            Event::HoldRejected {
                store,
                key,
                rejection,
            } => {
                let shard = self.shard(*store).ok_or(ApplyError::UnknownStore)?;
                let key = KeyDigest::of(key);
                shard.state.lock().note_idem_key(at, key);
                self.idem.insert(
                    key,
                    IdemEntry::Rejected(Box::new(KeptRejection {
                        lsn: Lsn(0),
                        rejection: rejection.clone(),
                        request: None,
                    })),
                );
            }
            Event::HoldExtended { hold, facts } => {
                let mut st = self.active_hold_state(*hold, HoldChange::Extend)?;
                apply_extend(&mut st, *hold, facts.expires_at);
            }
            Event::HoldConfirmed { hold, .. } => {
                let mut st = self.active_hold_state(*hold, HoldChange::Confirm)?;
                apply_confirm(&mut st, *hold);
            }
            Event::HoldReleased { hold, reason, .. } => {
                let shard = self.shard(hold.store()).ok_or(ApplyError::UnknownStore)?;
                let lines = shard
                    .state
                    .lock()
                    .hold(*hold)
                    .map(|h| h.lines.clone())
                    .ok_or(ApplyError::InactiveHold {
                        change: HoldChange::Release,
                        hold: *hold,
                    })?;
                let mut guards = lock_cells(shard, &lines)?;
                let mut st = shard.state.lock();
                apply_release(&mut guards, &mut st, *hold, *reason).ok_or(
                    ApplyError::InactiveHold {
                        change: HoldChange::Release,
                        hold: *hold,
                    },
                )?;
            }
            Event::PosDelta {
                store,
                sku,
                pos_event_id,
                qty,
                pos_time,
                after,
                ..
            } => {
                let (mut guard, mut st) = self.replay_cell(*store, *sku)?;
                apply_pos_delta(
                    &mut guard,
                    &mut st,
                    DeltaApply {
                        sku: *sku,
                        pos_event_id,
                        signed_qty: *qty,
                        pos_time: *pos_time,
                        on_hand_after: after.on_hand,
                        now: at,
                        horizon: at.add_ms(-self.config.limits.dedupe_window_ms),
                    },
                );
            }
            Event::PosCount {
                store,
                sku,
                pos_event_id,
                as_of,
                after,
                ..
            } => {
                let (mut guard, mut st) = self.replay_cell(*store, *sku)?;
                apply_pos_count(
                    &mut guard,
                    &mut st,
                    *sku,
                    pos_event_id,
                    *as_of,
                    after.on_hand,
                    at,
                );
            }
            // Shortages are derived facts: they record what the state showed, change nothing.
            Event::Shortage { .. } => {}
            Event::AllocationKept {
                key,
                request,
                parts,
            } => {
                self.answered_part(KeptOf::Allocation, key);
                self.keep_allocation(key, (*request, parts), at)
            }
            Event::BatchKept {
                key,
                request,
                answers,
            } => {
                self.answered_part(KeptOf::Batch, key);
                self.keep_batch(key, (*request, answers.as_slice().into()), Lsn(0), at)
            }
            // Noted by `replay` for its whole record (`note_keyed_part`).
            Event::KeyedPart { .. } => {}
            Event::ReplyKept {
                principal,
                key,
                fingerprint,
                response,
            } => self.keep_reply_replayed(
                principal,
                key,
                crate::replies::KeptReply {
                    fingerprint: *fingerprint,
                    response: response.as_slice().into(),
                    at,
                    lsn: Lsn(0),
                },
            ),
            // Cursors live in the event stream, which reads them from the log itself.
            Event::ConsumerAcked { consumer, lsn } => {
                let mut c = self.consumers.lock();
                let cur = c.entry(consumer.clone()).or_default();
                *cur = (*cur).max(*lsn);
            }
            Event::OrderCreated { .. }
            | Event::OrderConfirmed { .. }
            | Event::PickingStarted { .. }
            | Event::StockAdjusted { .. }
            | Event::OrderShortPicked { .. }
            | Event::ReallocationRequested { .. }
            | Event::OrderReady { .. }
            | Event::PickupCodeRejected { .. }
            | Event::PickupCodeOverride { .. }
            | Event::OrderCollected { .. }
            | Event::OrderCancelled { .. }
            | Event::OrderExpired { .. }
            | Event::OrderNoShow { .. }
            | Event::PosOrderSale { .. } => self.replay_order_event(ev, at)?,
            // A fact for readers of the stream; the transition before it changed the state.
            Event::OrderChanged { .. } => {}
            Event::CalendarSet { store, config } => {
                let shard = self.shard(*store).ok_or(ApplyError::UnknownStore)?;
                let cal =
                    crate::calendar::StoreCalendar::new((**config).clone()).map_err(|source| {
                        ApplyError::Calendar {
                            store: store.0,
                            source,
                        }
                    })?;
                shard.state.lock().set_calendar(Some(Arc::new(cal)));
                shard.touch(at);
            }
            Event::PickTimeSet {
                store,
                pick_time_per_order_ms,
            } => {
                let shard = self.shard(*store).ok_or(ApplyError::UnknownStore)?;
                shard.state.lock().set_pick_time(*pick_time_per_order_ms);
                shard.touch(at);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the hold decision
//
// One decision for every hold: [`Engine::hold`] (and an allocation's holds, through
// `Engine::hold_locked`) and each hold of a batch group (`Engine::hold_group`) call the same
// two checks in the same order, the first under the hold's cell locks, the second under
// the store's state lock (which comes after the cells in the global lock order).

/// Why [`check_place`] refuses a hold.
pub(crate) enum Refusal {
    /// A business rejection (the requested slot), an outcome of the hold.
    Rejected(HoldRejection),
    /// The store's table of active holds is full: [`table_full`], an error of the hold.
    Full,
}

/// The first half of the hold decision: the store takes holds, and every line's units are
/// available to promise. `atp(i)`: what line `i` can take (its cell's ATP less what
/// earlier holds of a batch group took; 0 for a SKU without a cell). Shortages are named
/// in the order of `lines`.
pub(crate) fn check_units(
    status: StoreStatus,
    lines: &[(Option<SkuId>, u64, &str)],
    atp: impl Fn(usize) -> u64,
) -> Result<(), HoldRejection> {
    if !status.accepts_holds() {
        return Err(HoldRejection::StoreNotAccepting { status });
    }
    let shortages: Vec<LineShortage> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, (_, q, name))| {
            let available = atp(i);
            (available < *q).then(|| LineShortage {
                sku: (*name).to_owned(),
                requested: *q as Qty,
                available: available.min(u64::from(Qty::MAX)) as Qty,
            })
        })
        .collect();
    if shortages.is_empty() {
        Ok(())
    } else {
        Err(HoldRejection::InsufficientStock { shortages })
    }
}

/// The second half of the hold decision, under the store's state lock: the store's hold
/// table has room (`active`: its active holds, with the grants of a batch group decided
/// so far) and the requested slot can take the hold. The hold's expiry: `now + ttl_ms`,
/// or for a slot-bound hold the slot's end plus the store's grace period.
pub(crate) fn check_place(
    st: &StoreState,
    active: usize,
    limits: &crate::config::Limits,
    (ttl_ms, slot_start_ms): (i64, Option<i64>),
    now: Timestamp,
) -> Result<Timestamp, Refusal> {
    if active >= limits.store_active_holds_max {
        return Err(Refusal::Full);
    }
    let Some(start_ms) = slot_start_ms else {
        return Ok(now.add_ms(ttl_ms));
    };
    // Units and slot capacity are granted together or not at all: both are decided under
    // the locks the grant is applied under.
    match st.check_slot(start_ms, now.as_ms()) {
        Ok(slot) => {
            let cal = st.slots().calendar();
            Ok(Timestamp(
                cal.map_or(slot.end_ms, |c| c.slot_expiry_ms(&slot)),
            ))
        }
        Err(problem) => Err(Refusal::Rejected(HoldRejection::SlotUnavailable {
            slot_start_ms: start_ms,
            problem,
        })),
    }
}

/// The error of a hold refused by a full table of active holds ([`Refusal::Full`]).
pub(crate) fn table_full(limits: &crate::config::Limits) -> EngineError {
    EngineError::LimitReached {
        limit: "store_active_holds_max",
        value: limits.store_active_holds_max as u64,
    }
}

/// An active hold as [`Engine::hold_info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInfo {
    /// The hold.
    pub hold: HoldId,
    /// Its lines, sorted by SKU id.
    pub lines: Vec<Line>,
    /// When it was granted.
    pub created: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Whether checkout confirmed it.
    pub confirmed: bool,
    /// The pickup slot (`start_ms`) booked with it, if any.
    pub slot: Option<i64>,
}

enum Ended {
    Now(Lsn, HoldRec),
    Not(HoldNotActive),
}

/// The holds of each keyed operation replayed without its answer (so far).
type Unanswered = FastHashMap<(KeptOf, Box<str>), Vec<HoldId>>;

/// Notes the holds of a record that begins with [`Event::KeyedPart`] as unanswered until
/// the operation's answer is replayed ([`Engine::release_unanswered`]).
fn note_keyed_part(unanswered: &mut Unanswered, record: &Record) {
    let Some(Event::KeyedPart { key, of }) = record.events.first() else {
        return;
    };
    let holds = unanswered.entry((*of, key.as_str().into())).or_default();
    for ev in &record.events {
        if let Event::HoldGranted { hold, .. } = ev {
            holds.push(*hold);
        }
    }
}

pub(crate) fn poisoned() -> EngineError {
    EngineError::internal("engine", "snapshot gate poisoned by a panic")
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(crate) fn check_id(field: &'static str, v: &str, len_max: usize) -> Result<(), EngineError> {
    if v.is_empty() {
        return Err(EngineError::invalid(field, "must not be empty"));
    }
    if v.len() > len_max {
        return Err(EngineError::invalid(
            field,
            format!("longer than {len_max} bytes"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(EngineError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Active holds from which [`Engine::check_conservation`] checks on two threads.
const CONSERVATION_CHECK_PARALLEL_HOLDS_MIN: usize = 100_000;

pub(crate) fn clamp_qty(v: i64) -> Qty {
    v.clamp(0, i64::from(u32::MAX - 1)) as Qty
}

pub(crate) fn not_active(st: &StoreState, hold: HoldId) -> HoldNotActive {
    if hold.seq() < st.next_seq() {
        HoldNotActive::Ended
    } else {
        HoldNotActive::Unknown
    }
}

/// The cell of `sku` at `shard` (its page allocated on first use, so under the snapshot
/// gate, as every write).
fn cell_of(shard: &StoreShard, sku: SkuId) -> Result<&Mutex<Cell>, EngineError> {
    shard
        .cell(sku)
        .ok_or_else(|| EngineError::invalid("sku", "beyond skus_max"))
}

pub(crate) fn lock_cells<'a>(
    shard: &'a StoreShard,
    lines: &[Line],
) -> Result<Vec<CellGuard<'a>>, EngineError> {
    let cells = lines
        .iter()
        .map(|l| {
            shard
                .cell(l.sku)
                .map(|c| (l.sku.0, c))
                .ok_or_else(|| EngineError::invalid("sku", "beyond skus_max"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    lock_in_order(&cells).ok_or_else(|| EngineError::invalid("lines", "not in lock order"))
}

pub(crate) fn shortage_event(
    store: StoreId,
    sku: SkuId,
    st: &StoreState,
    after: CellView,
) -> Option<Event> {
    (after.on_hand < after.held).then(|| Event::Shortage {
        store,
        sku,
        on_hand: after.on_hand,
        held: after.held,
        safety_stock: after.safety_stock,
        holds: st.holds_covering(sku, after.held - after.on_hand),
    })
}

fn into_shortage(ev: Event) -> Shortage {
    match ev {
        Event::Shortage {
            on_hand,
            held,
            holds,
            ..
        } => Shortage {
            on_hand,
            held,
            holds,
        },
        _ => Shortage {
            on_hand: 0,
            held: 0,
            holds: Vec::new(),
        },
    }
}

// ---------------------------------------------------------------- state transitions
//
// The only functions that change cells and hold tables. Live mutations and replay both call
// them, with the same locks held, so the live state and the replayed state cannot diverge.

fn apply_grant(
    guards: &mut [CellGuard<'_>],
    st: &mut StoreState,
    hold: HoldId,
    key: Option<KeyDigest>,
    lines: HoldLines,
    now: Timestamp,
    (expires_at, slot): (Timestamp, Option<i64>),
) {
    for (g, l) in guards.iter_mut().zip(lines.iter()) {
        g.held += l.qty;
    }
    st.grant(hold, key, lines, now, (expires_at, slot));
}

pub(crate) fn apply_confirm(st: &mut StoreState, hold: HoldId) {
    st.confirm_hold(hold);
}

/// The grant of `req` as hold `hold` with `lines`: the one place a single or batched
/// hold's `HoldGranted` event is built.
pub(crate) fn grant_event(
    hold: HoldId,
    req: &HoldRequest,
    lines: Vec<Line>,
    expires_at: Timestamp,
) -> Event {
    Event::HoldGranted {
        hold,
        key: req.idempotency_key.clone(),
        lines,
        expires_at,
        slot: req.slot_start_ms,
    }
}

fn apply_extend(st: &mut StoreState, hold: HoldId, expires_at: Timestamp) {
    st.extend_hold(hold, expires_at);
}

pub(crate) fn apply_release(
    guards: &mut [CellGuard<'_>],
    st: &mut StoreState,
    hold: HoldId,
    reason: ReleaseReason,
) -> Option<HoldRec> {
    let rec = st.end_hold(hold, reason.into())?;
    for (g, l) in guards.iter_mut().zip(rec.lines.iter()) {
        g.held = g
            .held
            .checked_sub(l.qty)
            .expect("a cell holds less than its active holds");
    }
    Some(rec)
}

pub(crate) fn remember_pos_event(st: &mut StoreState, id: &str, now: Timestamp) {
    st.remember_pos_event(id, now);
}

/// What a POS delta changes. `horizon` is `now - dedupe_window_ms`: deltas applied before
/// it are forgotten for count reconciliation.
struct DeltaApply<'a> {
    sku: SkuId,
    pos_event_id: &'a str,
    signed_qty: i64,
    pos_time: Timestamp,
    on_hand_after: Qty,
    now: Timestamp,
    horizon: Timestamp,
}

fn apply_pos_delta(cell: &mut Cell, st: &mut StoreState, d: DeltaApply<'_>) {
    cell.on_hand = d.on_hand_after;
    remember_pos_event(st, d.pos_event_id, d.now);
    st.push_recent_delta(
        d.sku,
        RecentDelta {
            pos_time: d.pos_time,
            applied_at: d.now,
            qty: d.signed_qty,
        },
        d.horizon,
    );
}

fn apply_pos_count(
    cell: &mut Cell,
    st: &mut StoreState,
    sku: SkuId,
    pos_event_id: &str,
    as_of: Timestamp,
    on_hand_after: Qty,
    now: Timestamp,
) {
    cell.on_hand = on_hand_after;
    remember_pos_event(st, pos_event_id, now);
    st.set_last_count_as_of(sku, as_of);
}
