//! Stores and their stock cells: the compact, lock-sharded part of the state.
//!
//! Every (store, SKU) cell is a 12-byte counter triple behind its own one-byte mutex
//! (16 bytes in all). A store's cells live in pages of [`PAGE_LEN`] cells, allocated on first
//! use and indexed by SKU id, so a lookup is two array indexes and a lock, never a hash.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::chunk_map::ChunkMap;
use crate::chunk_queue::ChunkQueue;
use crate::event::StoreDef;
use crate::key_digest::KeyDigest;
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
    /// Sorted by SKU, no SKU twice: the order cells are locked in.
    pub(crate) lines: HoldLines,
    pub(crate) created: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) confirmed: bool,
    /// Its order was marked ready: picked, out of the picking queue.
    pub(crate) ready: bool,
    /// The pickup slot (`start_ms`) the hold booked, or [`NO_SLOT`]: an `Option<i64>`
    /// would take 16 bytes and make every hold 8 bytes larger ([`HoldRec::slot`]).
    slot: i64,
}

/// [`HoldRec::slot`] when the hold booked no slot. No slot starts then: slot starts are
/// calendar times (`check_place` grants only a calendar's slot), within `jiff`'s years
/// -9999..=9999; a snapshot or log that says otherwise is refused before a hold is made
/// of it ([`HoldRec::slot_is_valid`]).
const NO_SLOT: i64 = i64::MIN;

const _: () = assert!(std::mem::size_of::<HoldRec>() == 48);

impl HoldRec {
    /// A new hold: neither confirmed nor ready. Panics on a slot that is not
    /// [`HoldRec::slot_is_valid`] (callers grant calendar slots or check first).
    pub(crate) fn new(
        lines: HoldLines,
        created: Timestamp,
        expires_at: Timestamp,
        slot: Option<i64>,
    ) -> Self {
        assert!(Self::slot_is_valid(slot), "a slot cannot start at i64::MIN");
        HoldRec {
            lines,
            created,
            expires_at,
            confirmed: false,
            ready: false,
            slot: slot.unwrap_or(NO_SLOT),
        }
    }

    /// Whether a hold can book `slot` (one starting at [`NO_SLOT`] cannot).
    pub(crate) fn slot_is_valid(slot: Option<i64>) -> bool {
        slot != Some(NO_SLOT)
    }

    /// The pickup slot (`start_ms`) the hold booked, if any.
    pub(crate) fn slot(&self) -> Option<i64> {
        (self.slot != NO_SLOT).then_some(self.slot)
    }

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
            slot: self.slot(),
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
///
/// Its fields are private: they carry invariants between them (every active hold is in
/// the expiry index at its expiry, below `next_seq`, books its slot and, confirmed and not
/// ready, counts once in the picking queue), so they change only through the methods
/// below, which keep them, and [`StoreState::check_derived`] checks them. The cells' `held`
/// is the caller's: it holds their locks.
#[derive(Debug, Default)]
pub(crate) struct StoreState {
    next_seq: u64,
    /// Ordered by id, which is a per-store sequence: a new hold appends at the right edge
    /// of the table (hot in cache), and growth never rehashes. A hash map here put each
    /// insert on a cold cache line and, at each doubling, copied every active hold under
    /// this lock (with hundreds of thousands active, milliseconds for every hold of the
    /// store; about 12% of CPU in BatchHold profiles). A [`ChunkMap`] rather than `std`'s
    /// `BTreeMap`, whose leaves stay half full under right-edge inserts: about 60 bytes
    /// per hold instead of 120.
    active: ChunkMap<HoldId, HoldRec>,
    /// The active holds by expiry (a set: the values are `()`), dense for the same reason.
    by_expiry: ChunkMap<(Timestamp, HoldId), ()>,
    /// The POS dedupe window: event ids seen, and the same ids in arrival order to age
    /// them out.
    pos_seen: HashMap<Box<str>, Timestamp>,
    pos_fifo: VecDeque<(Timestamp, Box<str>)>,
    recent_deltas: HashMap<SkuId, VecDeque<RecentDelta>>,
    last_count_as_of: HashMap<SkuId, Timestamp>,
    /// Idempotency keys decided under this store, in arrival order, to age out of the
    /// engine's key map after the dedupe window.
    /// Digests, not the keys: 24 bytes in place per key ([`KeyDigest`]), in chunks that
    /// leave no spare room but in the newest ([`ChunkQueue`]).
    idem_fifo: ChunkQueue<(Timestamp, KeyDigest)>,
    orders: crate::order_state::OrderState,
    /// Pickup calendar, slot bookings and picking settings.
    slots: crate::slot::SlotState,
    /// How the store's most recently ended holds ended.
    ended: EndedHolds,
}

/// Why units could not be taken out of a hold's line ([`StoreState::take_from_hold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HoldLineError {
    /// The hold is not active.
    #[error("the hold is not active")]
    NotActive,
    /// The hold has no line of the SKU.
    #[error("the hold has no line of the sku")]
    SkuNotHeld,
    /// The line holds fewer units.
    #[error("more units than the hold's line has")]
    BeyondHold,
}

/// A store state's snapshot section did not load ([`StoreState::load`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateDecodeError {
    /// Malformed bytes.
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
    /// A value is inconsistent.
    #[error("{0}")]
    Bad(&'static str),
}

impl HoldLineError {
    /// The [`crate::error::ApplyError`] of `change` of `order`'s hold that failed so.
    pub(crate) fn in_change(
        self,
        change: crate::error::HoldChange,
        order: crate::types::OrderId,
    ) -> crate::error::ApplyError {
        use crate::error::ApplyError;
        match self {
            HoldLineError::NotActive => ApplyError::NoHold { change, order },
            HoldLineError::SkuNotHeld => ApplyError::SkuNotHeld { change },
            HoldLineError::BeyondHold => ApplyError::BeyondHold { change },
        }
    }
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
    // ------------------------------------------------------------ read-only accessors

    /// The sequence the store's next hold gets (every active hold is below it).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The id the store's next hold gets. Sequences start at 1: hold (and order) id 0 is
    /// never issued, so a client's unset id field (proto3's 0) can never address store 0's
    /// first hold.
    pub(crate) fn next_hold_seq(&self) -> u64 {
        self.next_seq.max(1)
    }

    /// Active holds.
    pub(crate) fn active_len(&self) -> usize {
        self.active.len()
    }

    /// The active hold `hold`, if it is active.
    pub(crate) fn hold(&self, hold: HoldId) -> Option<&HoldRec> {
        self.active.get(&hold)
    }

    /// Whether `hold` is active. Every active hold's sequence is below `next_seq` (a grant
    /// raises it, and snapshot loading refuses a hold at or above it), so a hold at or
    /// above it is not active: one comparison instead of a tree search for the new holds a
    /// log grants.
    pub(crate) fn is_active(&self, hold: HoldId) -> bool {
        hold.seq() < self.next_seq && self.active.contains_key(&hold)
    }

    /// The active holds in id order.
    pub(crate) fn holds(&self) -> impl Iterator<Item = (&HoldId, &HoldRec)> {
        self.active.iter()
    }

    /// Up to `max` active holds whose expiry is at or before `now`, earliest first.
    pub(crate) fn due(&self, now: Timestamp, max: usize) -> Vec<HoldId> {
        self.by_expiry
            .keys()
            .take_while(|(t, _)| *t <= now)
            .take(max)
            .map(|(_, h)| *h)
            .collect()
    }

    /// How `hold` ended, if the ring of recently ended holds still has it.
    pub(crate) fn ended(&self, hold: HoldId) -> Option<HoldEnd> {
        self.ended.get(hold)
    }

    /// The store's pickup orders.
    pub(crate) fn orders(&self) -> &crate::order_state::OrderState {
        &self.orders
    }

    /// The store's pickup orders, to change. Orders keep their own invariants
    /// ([`crate::order_state::OrderState`]'s fields are private to it); the holds they
    /// name change only through this state's methods.
    pub(crate) fn orders_mut(&mut self) -> &mut crate::order_state::OrderState {
        &mut self.orders
    }

    /// The store's calendar, bookings and picking settings, to read. Bookings and the
    /// picking queue change only with the holds (grant, confirm, ready, end).
    pub(crate) fn slots(&self) -> &crate::slot::SlotState {
        &self.slots
    }

    /// Replaces the store's calendar (bookings stay: they belong to the active holds).
    pub(crate) fn set_calendar(
        &mut self,
        calendar: Option<std::sync::Arc<crate::calendar::StoreCalendar>>,
    ) {
        self.slots.set_calendar(calendar);
    }

    /// Sets the average time one staff member needs to pick one order.
    pub(crate) fn set_pick_time(&mut self, pick_time_per_order_ms: u32) {
        self.slots.set_pick_time(pick_time_per_order_ms);
    }

    /// Whether the POS event `id` is inside the dedupe window.
    pub(crate) fn pos_seen(&self, id: &str) -> bool {
        self.pos_seen.contains_key(id)
    }

    /// The POS deltas of `sku` remembered for count reconciliation, oldest first.
    pub(crate) fn recent_deltas(&self, sku: SkuId) -> Option<&VecDeque<RecentDelta>> {
        self.recent_deltas.get(&sku)
    }

    /// The `as_of` time of the last POS count of `sku` applied.
    pub(crate) fn last_count_as_of(&self, sku: SkuId) -> Option<Timestamp> {
        self.last_count_as_of.get(&sku).copied()
    }

    // ------------------------------------------------------------ dedupe windows

    /// Remembers the POS event `id`, seen at `now`, for the dedupe window.
    pub(crate) fn remember_pos_event(&mut self, id: &str, now: Timestamp) {
        self.pos_seen.insert(id.into(), now);
        self.pos_fifo.push_back((now, id.into()));
    }

    /// Remembers a POS delta of `sku` for count reconciliation, forgetting the ones
    /// applied before `horizon` (`now - dedupe_window_ms`).
    pub(crate) fn push_recent_delta(&mut self, sku: SkuId, delta: RecentDelta, horizon: Timestamp) {
        let recent = self.recent_deltas.entry(sku).or_default();
        while recent.front().is_some_and(|r| r.applied_at < horizon) {
            recent.pop_front();
        }
        recent.push_back(delta);
    }

    /// A POS count of `sku` as of `as_of` was applied.
    pub(crate) fn set_last_count_as_of(&mut self, sku: SkuId, as_of: Timestamp) {
        self.last_count_as_of.insert(sku, as_of);
    }

    /// Queues an idempotency key decided at `now` under this store, to age out of the
    /// engine's key map after the dedupe window.
    pub(crate) fn note_idem_key(&mut self, now: Timestamp, key: KeyDigest) {
        self.idem_fifo.push_back((now, key));
    }

    /// Ages out the dedupe state at or before `horizon`: each idempotency key is handed to
    /// `forget_key` (which removes it from the engine's map), and POS event ids leave the
    /// window.
    pub(crate) fn age_out(&mut self, horizon: Timestamp, mut forget_key: impl FnMut(&KeyDigest)) {
        while self.idem_fifo.front().is_some_and(|(t, _)| *t <= horizon) {
            if let Some((_, key)) = self.idem_fifo.pop_front() {
                forget_key(&key);
            }
        }
        while self.pos_fifo.front().is_some_and(|(t, _)| *t <= horizon) {
            if let Some((_, id)) = self.pos_fifo.pop_front() {
                self.pos_seen.remove(&id);
            }
        }
    }

    // ------------------------------------------------------------ hold transitions

    /// Checks that a new hold at `now_ms` may book the slot starting at `start_ms`, and
    /// returns the slot. Does not book it.
    pub(crate) fn check_slot(
        &self,
        start_ms: i64,
        now_ms: i64,
    ) -> Result<crate::calendar::Slot, crate::slot::SlotProblem> {
        self.slots.check_slot(start_ms, now_ms)
    }

    /// Books one unit of `start_ms`'s capacity for a hold about to be granted with
    /// [`StoreState::grant_booked`] (the batch path books each slot as it decides the
    /// hold, so the next hold of the batch sees the booking).
    pub(crate) fn book_slot(&mut self, start_ms: i64) {
        self.slots.book(Some(start_ms));
    }

    /// Returns a booking made with [`StoreState::book_slot`] for a hold that was then not
    /// granted (its batch's record did not append).
    pub(crate) fn unbook_slot(&mut self, start_ms: i64) {
        self.slots.unbook(Some(start_ms));
    }

    /// Grants a hold: books its slot, queues its key for aging out, and adds it. The
    /// cells' `held` is the caller's.
    pub(crate) fn grant(
        &mut self,
        hold: HoldId,
        key: Option<KeyDigest>,
        lines: HoldLines,
        now: Timestamp,
        expiry: (Timestamp, Option<i64>),
    ) {
        self.slots.book(expiry.1);
        self.grant_booked(hold, key, lines, now, expiry);
    }

    /// [`StoreState::grant`] for a hold whose slot is already booked
    /// ([`StoreState::book_slot`]).
    pub(crate) fn grant_booked(
        &mut self,
        hold: HoldId,
        key: Option<KeyDigest>,
        lines: HoldLines,
        now: Timestamp,
        (expires_at, slot): (Timestamp, Option<i64>),
    ) {
        if let Some(key) = key {
            self.note_idem_key(now, key);
        }
        self.insert_hold(hold, HoldRec::new(lines, now, expires_at, slot));
    }

    /// Takes `qty` units of `sku` out of an active hold's line (a short pick, or a POS sale
    /// of the order's units). The cells' `held` is the caller's.
    pub(crate) fn take_from_hold(
        &mut self,
        hold: HoldId,
        sku: SkuId,
        qty: Qty,
    ) -> Result<(), HoldLineError> {
        let h = self.active.get_mut(&hold).ok_or(HoldLineError::NotActive)?;
        let line = h
            .lines
            .iter_mut()
            .find(|l| l.sku == sku)
            .ok_or(HoldLineError::SkuNotHeld)?;
        line.qty = line.qty.checked_sub(qty).ok_or(HoldLineError::BeyondHold)?;
        Ok(())
    }

    /// Adds a granted hold. Its slot, if any, is already booked (by the caller, which
    /// checks capacity under this lock before it decides). The cells' `held` is the
    /// caller's: it holds their locks.
    fn insert_hold(&mut self, hold: HoldId, rec: HoldRec) {
        assert!(
            !rec.confirmed && !rec.ready,
            "a new hold starts unconfirmed"
        );
        self.next_seq = self.next_seq.max(hold.seq() + 1);
        self.by_expiry.insert((rec.expires_at, hold), ());
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
            assert!(was.is_some(), "expiry index out of step for {hold:?}");
            h.expires_at = expires_at;
            self.by_expiry.insert((expires_at, hold), ());
        }
    }

    /// Ends an active hold, however it ends (release, expiry, cancel, no-show, collect):
    /// out of the expiry index, its slot unbooked, out of the picking queue. The cells'
    /// `held` is the caller's. `None` if the hold is not active.
    pub(crate) fn end_hold(&mut self, hold: HoldId, how: HoldEnd) -> Option<HoldRec> {
        let rec = self.active.remove(&hold)?;
        self.ended.remember(hold, how);
        let was = self.by_expiry.remove(&(rec.expires_at, hold));
        assert!(was.is_some(), "expiry index out of step for {hold:?}");
        self.slots.unbook(rec.slot());
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
            if let Some(s) = h.slot() {
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
            .keys()
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

    // ------------------------------------------------------------ snapshot

    /// Appends the state's snapshot encoding (after the store's cells; see
    /// `snapshot::encode_store`). The byte layout: `next_seq` (u64); the active holds in id
    /// order (id, key, lines, created, expires_at, confirmed, ready, slot); the POS dedupe
    /// window in arrival order; the recent POS deltas by SKU; the last count times by SKU;
    /// the idempotency aging queue; the orders; the slot state; the ended holds. The
    /// derived counters (bookings, picking queue) are not written: a load recounts them.
    pub(crate) fn encode(
        &self,
        e: &mut crate::codec::Enc<'_>,
        version: u32,
        old_keys: Option<crate::key_digest::KeyNames<'_>>,
    ) {
        e.u64(self.next_seq);
        // A tree ordered by id: already in id order.
        e.seq_len(self.active.len());
        for (id, h) in self.active.iter() {
            e.u64(id.0);
            if version <= 10 {
                // Formats up to 10 kept each hold's idempotency key with it as well (the
                // key table has it); 11 on does not.
                e.opt_str(None);
            }
            e.seq_len(h.lines.len());
            for l in h.lines.iter() {
                e.u32(l.sku.0);
                e.u32(l.qty);
            }
            e.i64(h.created.0);
            e.i64(h.expires_at.0);
            e.bool(h.confirmed);
            e.bool(h.ready);
            e.opt_i64(h.slot());
        }
        e.seq_len(self.pos_fifo.len());
        for (at, id) in &self.pos_fifo {
            e.i64(at.0);
            e.str(id);
        }
        let mut recent: Vec<_> = self.recent_deltas.iter().collect();
        recent.sort_unstable_by_key(|(sku, _)| **sku);
        e.seq_len(recent.len());
        for (sku, deltas) in recent {
            e.u32(sku.0);
            e.seq_len(deltas.len());
            for d in deltas {
                e.i64(d.pos_time.0);
                e.i64(d.applied_at.0);
                e.i64(d.qty);
            }
        }
        let mut counts: Vec<_> = self.last_count_as_of.iter().collect();
        counts.sort_unstable_by_key(|(sku, _)| **sku);
        e.seq_len(counts.len());
        for (sku, t) in counts {
            e.u32(sku.0);
            e.i64(t.0);
        }
        e.seq_len(self.idem_fifo.len());
        for (at, key) in self.idem_fifo.iter() {
            e.i64(at.0);
            crate::key_digest::encode_key(e, key, old_keys);
        }
        self.orders.encode(e);
        self.slots.encode(e);
        self.ended.encode(e);
    }

    /// Loads what [`StoreState::encode`] wrote into this (empty) state of store `store`,
    /// as snapshot format `version` wrote it (9 on: orders with their ready estimate, and
    /// the ended holds), then rebuilds the derived counters.
    pub(crate) fn load(
        &mut self,
        store: StoreId,
        d: &mut crate::codec::Dec<'_>,
        version: u32,
    ) -> Result<(), StateDecodeError> {
        self.next_seq = d.u64()?;
        let holds = d.long_seq_len()?;
        // The hold table and the expiry index are each built in one go once the holds
        // are read (a bulk build from sorted keys, not one tree insert per hold).
        // A hold takes at least 8 encoded bytes: room for no more than the bytes left hold.
        let room = holds.min(d.remaining() / 8);
        let mut active = Vec::with_capacity(room);
        let mut expiry = Vec::with_capacity(room);
        // One line (most holds) is kept in place: decoded here, no allocation.
        let mut lines = Vec::new();
        for _ in 0..holds {
            let id = HoldId(d.u64()?);
            if id.store() != store
                || id.seq() >= self.next_seq
                || active.last().is_some_and(|(prev, _)| *prev >= id)
            {
                return Err(StateDecodeError::Bad("hold id"));
            }
            if version <= 10 {
                // The hold's idempotency key, kept again in the key table: not needed.
                d.opt_string()?;
            }
            let nl = d.seq_len()?;
            lines.clear();
            for _ in 0..nl {
                lines.push(Line {
                    sku: SkuId(d.u32()?),
                    qty: d.u32()?,
                });
            }
            let created = Timestamp(d.i64()?);
            let expires_at = Timestamp(d.i64()?);
            let (confirmed, ready) = (d.bool()?, d.bool()?);
            let slot = d.opt_i64()?;
            if !HoldRec::slot_is_valid(slot) {
                return Err(StateDecodeError::Bad("hold slot"));
            }
            let rec = HoldRec {
                confirmed,
                ready,
                ..HoldRec::new(lines[..].into(), created, expires_at, slot)
            };
            expiry.push((rec.expires_at, id));
            active.push((id, rec));
        }
        if !self.active.is_empty() || !self.by_expiry.is_empty() {
            return Err(StateDecodeError::Bad("store state loaded twice"));
        }
        // Ascending ids (checked above): the build finds them sorted.
        self.active = ChunkMap::from_sorted(active).ok_or(StateDecodeError::Bad("hold id"))?;
        expiry.sort_unstable();
        self.by_expiry = ChunkMap::from_sorted(expiry.into_iter().map(|k| (k, ())))
            .ok_or(StateDecodeError::Bad("hold expiry"))?;
        let pos = d.seq_len()?;
        for _ in 0..pos {
            let at = Timestamp(d.i64()?);
            let id: Box<str> = d.string()?.into();
            self.pos_seen.insert(id.clone(), at);
            self.pos_fifo.push_back((at, id));
        }
        let recent = d.seq_len()?;
        for _ in 0..recent {
            let sku = SkuId(d.u32()?);
            let nd = d.seq_len()?;
            let q = self.recent_deltas.entry(sku).or_default();
            for _ in 0..nd {
                q.push_back(RecentDelta {
                    pos_time: Timestamp(d.i64()?),
                    applied_at: Timestamp(d.i64()?),
                    qty: d.i64()?,
                });
            }
        }
        let counts = d.seq_len()?;
        for _ in 0..counts {
            let sku = SkuId(d.u32()?);
            let t = Timestamp(d.i64()?);
            self.last_count_as_of.insert(sku, t);
        }
        let fifo = d.long_seq_len()?;
        for _ in 0..fifo {
            let at = Timestamp(d.i64()?);
            let key = crate::key_digest::decode_key(d, version)?;
            self.idem_fifo.push_back((at, key));
        }
        self.orders = crate::order_state::OrderState::decode(
            d,
            if version >= 9 {
                crate::order_facts::RecLayout::WithEstimate
            } else {
                crate::order_facts::RecLayout::WithoutEstimate
            },
        )?;
        self.slots = crate::slot::SlotState::decode(d)?;
        if version >= 9 {
            self.ended = EndedHolds::decode(d)?;
        }
        self.rebuild_derived();
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

    /// The lock if it is free now, without waiting.
    pub(crate) fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
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
    /// One is taken by each hold and each end of a hold of this store at its entry,
    /// before its cells (see [`StoreShard::admit`]): one per core.
    admission: Box<[StateLock<()>]>,
    pub(crate) state: StateLock<StoreState>,
}

/// Admission permits of a store: the cores this process may use (1 to 8).
fn admission_permits() -> usize {
    static PERMITS: OnceLock<usize> = OnceLock::new();
    *PERMITS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, 8)
    })
}

thread_local! {
    /// Which admission permit this thread waits for when none is free: threads are spread
    /// over them in the order they first wait.
    static ADMISSION_SLOT: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
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
            admission: (0..admission_permits())
                .map(|_| StateLock::new(()))
                .collect(),
            state: StateLock::new(StoreState::default()),
        };
        shard.set_def(def);
        shard
    }

    /// Admits as many holds and ends of holds of this store at a time as there are cores
    /// (one permit each): the caller holds the guard from after the snapshot gate until
    /// its record is appended and applied.
    ///
    /// Correctness never depends on it (the cells and the state lock decide); it is there
    /// for speed. Every hold and release of a store passes the same chain of locks (its
    /// cells, the state, the log's buffer, the event stream): with more threads than
    /// cores, a thread preempted inside that chain parked the others on whichever link
    /// they reached, and each link handed over with a wake-up. Waiting here instead, while
    /// holding nothing, the chain is uncontended behind it. `pickline bench compare`'s
    /// engine, 64 client threads on 2 cores: see docs/BENCHMARKS.md (issue 20).
    ///
    /// Lock order: the snapshot gate, then this, then cells, then the state (a guard is
    /// never taken while a cell or the state is locked).
    pub(crate) fn admit(&self) -> std::sync::MutexGuard<'_, ()> {
        // A free permit if there is one (two threads on one store's hot SKUs overlap, as
        // without admission); otherwise wait for one, holding nothing.
        if let Some(guard) = self.admission.iter().find_map(StateLock::try_lock) {
            return guard;
        }
        let mine = ADMISSION_SLOT.with(|slot| *slot) % self.admission.len();
        self.admission[mine].lock()
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
