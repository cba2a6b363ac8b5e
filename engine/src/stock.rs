//! Stores and their stock cells: the compact, lock-sharded part of the state.
//!
//! Every (store, SKU) cell is a 12-byte counter triple behind its own one-byte mutex
//! (16 bytes in all). A store's cells live in pages of [`PAGE_LEN`] cells, allocated on first
//! use and indexed by SKU id, so a lookup is two array indexes and a lock, never a hash.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::event::StoreDef;
use crate::types::{CellView, HoldId, Line, Qty, SkuId, StoreId, StoreStatus, Timestamp};

/// A hash map for keys the engine assigns (hold and SKU ids): foldhash instead of SipHash.
/// Still randomly seeded per map; not for keys that come from clients.
pub(crate) type FastHashMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Cells per page. 1,024 cells of 16 bytes: a 16 KiB page.
pub const PAGE_LEN: usize = 1024;

/// `safety` value meaning "use the store's default safety stock".
pub(crate) const SAFETY_INHERIT: u32 = u32::MAX;

/// One stock cell. Invariant: `held` equals the sum of the cell's lines in active holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) on_hand: Qty,
    pub(crate) held: Qty,
    pub(crate) safety: u32,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            on_hand: 0,
            held: 0,
            safety: SAFETY_INHERIT,
        }
    }
}

impl Cell {
    pub(crate) fn view(&self, default_safety: Qty) -> CellView {
        CellView {
            on_hand: self.on_hand,
            held: self.held,
            safety_stock: if self.safety == SAFETY_INHERIT {
                default_safety
            } else {
                self.safety
            },
        }
    }
}

type Page = Box<[Mutex<Cell>]>;

/// A hold's lines. Most holds have one line: it is kept in place (16 bytes, as a boxed
/// slice takes), so such a hold costs no allocation of its own, and walking the holds
/// (conservation check, snapshot, shortage search) follows no pointer to read it. Replay
/// of 4M one-line holds spent about half of the conservation check waiting for those
/// pointers. Private representation: a single line is always `One`, so equality is
/// equality of the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldLines(LinesRepr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LinesRepr {
    One(Line),
    Many(Box<[Line]>),
}

const _: () = assert!(std::mem::size_of::<HoldLines>() == 16);

impl HoldLines {
    pub(crate) fn into_vec(self) -> Vec<Line> {
        match self.0 {
            LinesRepr::One(line) => vec![line],
            LinesRepr::Many(lines) => lines.into_vec(),
        }
    }
}

impl std::ops::Deref for HoldLines {
    type Target = [Line];

    fn deref(&self) -> &[Line] {
        match &self.0 {
            LinesRepr::One(line) => std::slice::from_ref(line),
            LinesRepr::Many(lines) => lines,
        }
    }
}

impl std::ops::DerefMut for HoldLines {
    fn deref_mut(&mut self) -> &mut [Line] {
        match &mut self.0 {
            LinesRepr::One(line) => std::slice::from_mut(line),
            LinesRepr::Many(lines) => lines,
        }
    }
}

impl From<&[Line]> for HoldLines {
    fn from(lines: &[Line]) -> Self {
        match lines {
            [line] => HoldLines(LinesRepr::One(*line)),
            _ => HoldLines(LinesRepr::Many(lines.into())),
        }
    }
}

impl From<Vec<Line>> for HoldLines {
    fn from(lines: Vec<Line>) -> Self {
        match lines[..] {
            [line] => HoldLines(LinesRepr::One(line)),
            _ => HoldLines(LinesRepr::Many(lines.into_boxed_slice())),
        }
    }
}

/// A hold as its store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HoldRec {
    pub(crate) key: Option<Box<str>>,
    /// Sorted by SKU, no SKU twice: the order cells are locked in.
    pub(crate) lines: HoldLines,
    pub(crate) created: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) confirmed: bool,
    /// Its order was marked ready: picked, out of the picking queue.
    pub(crate) ready: bool,
    /// The pickup slot (`start_ms`) the hold booked, if any.
    pub(crate) slot: Option<i64>,
}

impl HoldRec {
    /// In the picking queue: confirmed, not yet ready.
    pub(crate) fn queued(&self) -> bool {
        self.confirmed && !self.ready
    }

    /// The hold as an event records it.
    pub(crate) fn facts(&self) -> Box<crate::event::HoldFacts> {
        Box::new(crate::event::HoldFacts {
            lines: self.lines.to_vec(),
            created: self.created,
            expires_at: self.expires_at,
            slot: self.slot,
            confirmed: self.confirmed,
        })
    }
}

/// A POS delta remembered for count reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecentDelta {
    pub(crate) pos_time: Timestamp,
    pub(crate) applied_at: Timestamp,
    pub(crate) qty: i64,
}

/// The part of a store's state that is not per cell. Lock order: cells (ascending SKU)
/// first, then this.
#[derive(Debug, Default)]
pub(crate) struct StoreState {
    pub(crate) next_seq: u64,
    /// Ordered by id, which is a per-store sequence: a new hold appends at the right edge
    /// of the tree (hot in cache), and growth never rehashes. A hash map here put each
    /// insert on a cold cache line and, at each doubling, copied every active hold under
    /// this lock (with hundreds of thousands active, milliseconds for every hold of the
    /// store; about 12% of CPU in BatchHold profiles).
    pub(crate) active: BTreeMap<HoldId, HoldRec>,
    pub(crate) by_expiry: BTreeSet<(Timestamp, HoldId)>,
    pub(crate) pos_seen: HashMap<Box<str>, Timestamp>,
    pub(crate) pos_fifo: VecDeque<(Timestamp, Box<str>)>,
    pub(crate) recent_deltas: HashMap<SkuId, VecDeque<RecentDelta>>,
    pub(crate) last_count_as_of: HashMap<SkuId, Timestamp>,
    pub(crate) idem_fifo: VecDeque<(Timestamp, Box<str>)>,
    pub(crate) orders: crate::order::OrderState,
    /// Pickup calendar, slot bookings and picking settings.
    pub(crate) slots: crate::slot::SlotState,
    /// How the store's most recently ended holds ended.
    pub(crate) ended: EndedHolds,
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldEnd {
    /// Released by a caller, or by the order it belonged to (cancel, no-show).
    Released,
    /// Its time ran out.
    Expired,
    /// Its order was collected: the units left the store with the customer.
    Consumed,
}

impl HoldEnd {
    fn to_u8(self) -> u8 {
        match self {
            HoldEnd::Released => 0,
            HoldEnd::Expired => 1,
            HoldEnd::Consumed => 2,
        }
    }

    fn from_u8(v: u8) -> Option<HoldEnd> {
        match v {
            0 => Some(HoldEnd::Released),
            1 => Some(HoldEnd::Expired),
            2 => Some(HoldEnd::Consumed),
            _ => None,
        }
    }
}

impl From<crate::event::ReleaseReason> for HoldEnd {
    fn from(reason: crate::event::ReleaseReason) -> HoldEnd {
        match reason {
            crate::event::ReleaseReason::Released => HoldEnd::Released,
            crate::event::ReleaseReason::Expired => HoldEnd::Expired,
        }
    }
}

/// Slots of a store's ended-hold ring: a hold's end is remembered until a hold granted
/// a multiple of this many holds later at the store has ended too (so at least the newest
/// ends of the newest 4,096 holds); 32 KiB per store, allocated at its first end.
pub const ENDED_HOLDS_KEPT: usize = 4_096;

/// How a store's recently ended holds ended, so that an action on one can say whether it
/// was released, expired or collected. A ring indexed by the hold's sequence number: one
/// word written per end, no hashing, bounded memory. Filled by [`StoreState::end_hold`],
/// the one place a hold ends (live and on replay), and kept in snapshots.
#[derive(Debug, Default)]
pub(crate) struct EndedHolds {
    /// Per slot `seq << 2 | end code`, with end codes 1..=3; 0 is empty.
    ring: Vec<u64>,
}

impl EndedHolds {
    fn slot(seq: u64) -> usize {
        (seq % ENDED_HOLDS_KEPT as u64) as usize
    }

    fn remember(&mut self, hold: HoldId, how: HoldEnd) {
        if self.ring.is_empty() {
            self.ring = vec![0; ENDED_HOLDS_KEPT];
        }
        let seq = hold.seq();
        self.ring[Self::slot(seq)] = seq << 2 | (u64::from(how.to_u8()) + 1);
    }

    /// How `hold` ended, if the ring still has it.
    pub(crate) fn get(&self, hold: HoldId) -> Option<HoldEnd> {
        let word = *self.ring.get(Self::slot(hold.seq()))?;
        if word == 0 || word >> 2 != hold.seq() {
            return None;
        }
        HoldEnd::from_u8((word & 3) as u8 - 1)
    }

    pub(crate) fn encode(&self, e: &mut crate::codec::Enc<'_>) {
        let used = self.ring.iter().filter(|w| **w != 0).count();
        e.seq_len(used);
        for w in self.ring.iter().filter(|w| **w != 0) {
            e.u64(*w);
        }
    }

    pub(crate) fn decode(
        d: &mut crate::codec::Dec<'_>,
    ) -> Result<EndedHolds, crate::codec::DecodeError> {
        let n = d.seq_len()?;
        let mut ended = EndedHolds::default();
        for _ in 0..n {
            let at = d.pos();
            let word = d.u64()?;
            let bad = crate::codec::DecodeError::Invalid {
                what: "ended hold",
                at,
            };
            let how = match word & 3 {
                0 => return Err(bad),
                code => HoldEnd::from_u8(code as u8 - 1).ok_or(bad)?,
            };
            if ended
                .ring
                .get(Self::slot(word >> 2))
                .is_some_and(|w| *w != 0)
            {
                return Err(crate::codec::DecodeError::Invalid {
                    what: "ended holds",
                    at,
                });
            }
            ended.remember(HoldId(word >> 2), how);
        }
        Ok(ended)
    }
}

impl StoreState {
    /// Adds a granted hold. Its slot, if any, is already booked (by the caller, which
    /// checks capacity under this lock before it decides). The cells' `held` is the
    /// caller's: it holds their locks.
    pub(crate) fn insert_hold(&mut self, hold: HoldId, rec: HoldRec) {
        assert!(
            !rec.confirmed && !rec.ready,
            "a new hold starts unconfirmed"
        );
        self.next_seq = self.next_seq.max(hold.seq() + 1);
        self.by_expiry.insert((rec.expires_at, hold));
        let prev = self.active.insert(hold, rec);
        assert!(prev.is_none(), "hold {hold:?} granted twice");
    }

    /// Confirms an active hold: it joins the picking queue. False if it is not active
    /// or already confirmed.
    pub(crate) fn confirm_hold(&mut self, hold: HoldId) -> bool {
        match self.active.get_mut(&hold) {
            Some(h) if !h.confirmed => {
                h.confirmed = true;
                if h.queued() {
                    self.slots.enqueue();
                }
                true
            }
            _ => false,
        }
    }

    /// The hold's order was marked ready: it leaves the picking queue.
    pub(crate) fn hold_ready(&mut self, hold: HoldId) {
        if let Some(h) = self.active.get_mut(&hold)
            && !h.ready
        {
            let was_queued = h.queued();
            h.ready = true;
            if was_queued {
                self.slots.dequeue();
            }
        }
    }

    /// Moves an active hold's expiry.
    pub(crate) fn extend_hold(&mut self, hold: HoldId, expires_at: Timestamp) {
        if let Some(h) = self.active.get_mut(&hold) {
            let was = self.by_expiry.remove(&(h.expires_at, hold));
            assert!(was, "expiry index out of step for {hold:?}");
            h.expires_at = expires_at;
            self.by_expiry.insert((expires_at, hold));
        }
    }

    /// Ends an active hold, however it ends (release, expiry, cancel, no-show, collect):
    /// out of the expiry index, its slot unbooked, out of the picking queue. The cells'
    /// `held` is the caller's. `None` if the hold is not active.
    pub(crate) fn end_hold(&mut self, hold: HoldId, how: HoldEnd) -> Option<HoldRec> {
        let rec = self.active.remove(&hold)?;
        self.ended.remember(hold, how);
        let was = self.by_expiry.remove(&(rec.expires_at, hold));
        assert!(was, "expiry index out of step for {hold:?}");
        self.slots.unbook(rec.slot);
        if rec.queued() {
            self.slots.dequeue();
        }
        Some(rec)
    }

    /// The derived per-store counters recounted from the active holds: bookings per slot
    /// and the picking queue.
    fn recount(&self) -> (std::collections::BTreeMap<i64, u32>, u32) {
        let mut booked = std::collections::BTreeMap::new();
        let mut queued = 0u32;
        for h in self.active.values() {
            if let Some(s) = h.slot {
                *booked.entry(s).or_insert(0u32) += 1;
            }
            queued += u32::from(h.queued());
        }
        (booked, queued)
    }

    /// Rebuilds the derived counters from the active holds (after a snapshot load).
    pub(crate) fn rebuild_derived(&mut self) {
        let (booked, queued) = self.recount();
        self.slots.set_derived(booked, queued);
    }

    /// Checks every per-store counter against the holds it is derived from.
    pub(crate) fn check_derived(&self) -> Result<(), String> {
        if self.by_expiry.len() != self.active.len() {
            return Err("expiry index out of step".into());
        }
        if let Some((at, id)) = self
            .by_expiry
            .iter()
            .find(|(at, id)| self.active.get(id).is_none_or(|h| h.expires_at != *at))
        {
            return Err(format!(
                "expiry index entry ({}, {id:?}) names no hold",
                at.0
            ));
        }
        if let Some(id) = self.active.keys().find(|id| id.seq() >= self.next_seq) {
            return Err(format!("hold {id:?} at or past next_seq {}", self.next_seq));
        }
        let (booked, queued) = self.recount();
        let (have_booked, have_queued) = self.slots.derived();
        if *have_booked != booked {
            return Err(format!(
                "slot bookings {have_booked:?} but active holds book {booked:?}"
            ));
        }
        if have_queued != queued {
            return Err(format!(
                "picking queue {have_queued} but {queued} active holds are confirmed, not ready"
            ));
        }
        Ok(())
    }

    /// Active holds that have a line of `sku`, newest first, taking holds until their
    /// units cover `deficit`.
    pub(crate) fn holds_covering(&self, sku: SkuId, deficit: Qty) -> Vec<HoldId> {
        let mut on_cell: Vec<(HoldId, Qty)> = self
            .active
            .iter()
            .filter_map(|(id, h)| {
                h.lines
                    .binary_search_by_key(&sku, |l| l.sku)
                    .ok()
                    .map(|i| (*id, h.lines[i].qty))
            })
            .collect();
        on_cell.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        let mut covered: u64 = 0;
        let mut out = Vec::new();
        for (id, qty) in on_cell {
            if covered >= u64::from(deficit) {
                break;
            }
            covered += u64::from(qty);
            out.push(id);
        }
        out
    }
}

/// The lock of a store's [`StoreState`]: `std`'s futex mutex, which on contention spins
/// briefly and then sleeps in the kernel.
///
/// Why not `parking_lot` here: every hold, release and order change of a store takes this
/// lock, and a hot store (a campaign on one store) is the normal case, not the exception.
/// `parking_lot` spins for a few hundred nanoseconds and then calls `sched_yield` up to
/// seven times before it parks; on a 2-vCPU VM those yields were ~80% of all
/// `sched_yield` calls in `pickline bench grpc` (63k in 2 s of BatchHold), each a syscall
/// and often a context switch to the WAL committer. A panic while it is held does not
/// poison it (as with `parking_lot`): the engine never panics with it held on purpose, and
/// refusing every later request of the store would lose more than it protects.
pub(crate) struct StateLock<T>(std::sync::Mutex<T>);

impl<T> StateLock<T> {
    pub(crate) fn new(value: T) -> Self {
        StateLock(std::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A registered store: definition, cells and hold table.
pub(crate) struct StoreShard {
    pub(crate) id: StoreId,
    pub(crate) def: RwLock<StoreDef>,
    // The fields read on every hold are mirrored in atomics so the hot path takes no lock
    // for them; they are written under `def`'s write lock.
    pub(crate) status: AtomicU8,
    pub(crate) default_safety: AtomicU32,
    pub(crate) default_hold_ms: AtomicI64,
    pub(crate) max_hold_ms: AtomicI64,
    /// When the store's definition, calendar or pick time last changed (the record's time,
    /// ms; kept in snapshots). The latest time seen: a change never moves it back.
    updated_at_ms: AtomicI64,
    pages: Box<[OnceLock<Page>]>,
    pub(crate) state: StateLock<StoreState>,
}

impl StoreShard {
    pub(crate) fn new(id: StoreId, def: StoreDef, skus_max: u32) -> Self {
        let page_count = (skus_max as usize).div_ceil(PAGE_LEN);
        let shard = StoreShard {
            id,
            status: AtomicU8::new(0),
            default_safety: AtomicU32::new(0),
            default_hold_ms: AtomicI64::new(0),
            max_hold_ms: AtomicI64::new(0),
            updated_at_ms: AtomicI64::new(0),
            def: RwLock::new(def.clone()),
            pages: (0..page_count).map(|_| OnceLock::new()).collect(),
            state: StateLock::new(StoreState::default()),
        };
        shard.set_def(def);
        shard
    }

    /// Records a change of the store at `at` (see `updated_at_ms`).
    pub(crate) fn touch(&self, at: Timestamp) {
        self.updated_at_ms.fetch_max(at.0, Ordering::AcqRel);
    }

    /// When the store last changed (0: never, or before snapshot format 8).
    pub(crate) fn updated_at(&self) -> Timestamp {
        Timestamp(self.updated_at_ms.load(Ordering::Acquire))
    }

    pub(crate) fn set_def(&self, def: StoreDef) {
        let mut guard = self.def.write();
        self.status.store(def.status.to_u8(), Ordering::Release);
        self.default_safety
            .store(def.default_safety_stock, Ordering::Release);
        self.default_hold_ms
            .store(def.default_hold_ms, Ordering::Release);
        self.max_hold_ms.store(def.max_hold_ms, Ordering::Release);
        *guard = def;
    }

    pub(crate) fn status(&self) -> StoreStatus {
        StoreStatus::from_u8(self.status.load(Ordering::Acquire)).unwrap_or(StoreStatus::Closed)
    }

    pub(crate) fn default_safety(&self) -> Qty {
        self.default_safety.load(Ordering::Acquire)
    }

    /// The cell of `sku`, allocating its page on first use. `None` only for a SKU id beyond
    /// the configured `skus_max`, which interning never hands out.
    pub(crate) fn cell(&self, sku: SkuId) -> Option<&Mutex<Cell>> {
        let idx = sku.0 as usize;
        let page = self
            .pages
            .get(idx / PAGE_LEN)?
            .get_or_init(|| (0..PAGE_LEN).map(|_| Mutex::new(Cell::default())).collect());
        page.get(idx % PAGE_LEN)
    }

    /// [`StoreShard::cell`] through exclusive access (recovery, before the engine is
    /// shared): no lock taken. Returns the store state alongside, a disjoint field.
    pub(crate) fn cell_mut(&mut self, sku: SkuId) -> (Option<&mut Cell>, &mut StoreState) {
        let idx = sku.0 as usize;
        let cell = self.pages.get_mut(idx / PAGE_LEN).and_then(|page| {
            if page.get().is_none() {
                let _ = page.set((0..PAGE_LEN).map(|_| Mutex::new(Cell::default())).collect());
            }
            page.get_mut()?.get_mut(idx % PAGE_LEN).map(Mutex::get_mut)
        });
        (cell, self.state.get_mut())
    }

    /// The cell of `sku` if its page exists; reads use this so they never allocate.
    pub(crate) fn existing_cell(&self, sku: SkuId) -> Option<&Mutex<Cell>> {
        let idx = sku.0 as usize;
        self.pages.get(idx / PAGE_LEN)?.get()?.get(idx % PAGE_LEN)
    }

    /// Snapshot of one cell.
    pub(crate) fn view(&self, sku: SkuId) -> CellView {
        let default_safety = self.default_safety();
        match self.existing_cell(sku) {
            Some(c) => c.lock().view(default_safety),
            None => Cell::default().view(default_safety),
        }
    }

    /// Allocated pages, with their first SKU id.
    pub(crate) fn pages(&self) -> impl Iterator<Item = (u32, &[Mutex<Cell>])> {
        self.pages
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.get().map(|p| ((i * PAGE_LEN) as u32, &p[..])))
    }
}
