//! Snapshots: the whole engine state at one log sequence number, as bytes.
//!
//! [`Engine::snapshot`] takes the snapshot gate for writing, so no mutation is between its
//! first lock and its log append: the state copied is exactly the state after the last
//! appended record (its LSN is returned with the bytes). Encoding happens under the gate;
//! the pause is proportional to the state's size (`paused_snapshot_pause_ms` in `pickline
//! bench wal`).
//!
//! Layout (all with the varint codec of [`crate::codec`]): format version; stores (their
//! definitions in id order); SKU external ids in id order; idempotency outcomes; consumer
//! cursors; kept allocations (oldest first); kept batches of holds (oldest
//! first); kept replies (oldest first); then per store, as a length-prefixed section
//! (format 10; inline before): non-empty cells, hold sequence, active holds, POS dedupe
//! window, recent POS deltas, last count times, idempotency aging queue, pickup orders,
//! calendar and slot bookings, ended holds. Stores' sections load on two threads.
//!
//! [`crate::durable::DurableEngine::checkpoint`] does not call [`Engine::snapshot`]: it
//! rebuilds the same bytes from the log beside the writers (`Engine::encode_state` on a
//! shadow engine), so writers never wait for the encoding.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::codec::{Dec, DecodeError, Enc};
use crate::config::EngineConfig;
use crate::engine::{Engine, HoldGrant, HoldOutcome, IdemEntry};
use crate::error::EngineError;
use crate::event::{Event, Record, StoreDef, decode_store_def, encode_store_def};
use crate::key_digest::{KeyDigest, KeyNames, decode_key, encode_key};
use crate::log::EventLog;
use crate::stock::{Cell, StoreShard};
use crate::types::{HoldId, Lsn, SkuId, StoreId, Timestamp};

/// Version 7 goes with the log's event format 2 ([`crate::event::RECORD_KIND_EVENTS`]):
/// customers with name and locale. Earlier versions are refused: their log records could
/// not be replayed after them anyway. Version 8 adds each store's last change time after
/// its definition; version 7 still loads (change times unknown, 0). Version 9 adds each
/// order's ready estimate and how each store's newest holds ended; 7 and 8 still load
/// (estimates and ends unknown). Version 10 prefixes each store's section with its length
/// (same contents), so a load decodes the stores on two threads; 7 to 9 still load.
/// Version 11 drops each active hold's idempotency key from its store's section (the key
/// table keeps the keys, and the hold no longer does: 40 to 70 bytes per keyed hold in
/// memory); 7 to 10 still load. Version 12 keeps each hold idempotency key (in the key
/// table and in each store's aging queue) as its 16-byte digest ([`KeyDigest`]), which is
/// all the engine keeps of it; 7 to 11 still load (their keys are digested as they load).
const SNAPSHOT_VERSION: u32 = 12;

/// The oldest version that loads.
const SNAPSHOT_VERSION_MIN: u32 = 7;

/// Consumer names with the last LSN each acknowledged.
pub type ConsumerCursors = Vec<(String, Lsn)>;

impl Engine {
    /// Encodes the whole state. Returns the LSN of the last record it includes.
    pub fn snapshot(&self) -> Result<(Lsn, Vec<u8>), EngineError> {
        self.snapshot_with_cursors()
            .map(|(lsn, bytes, _)| (lsn, bytes))
    }

    /// [`Engine::snapshot`], plus the consumer cursors it contains (read under the same
    /// gate, so they are exactly the cursors a restart from these bytes begins with).
    pub fn snapshot_with_cursors(&self) -> Result<(Lsn, Vec<u8>, ConsumerCursors), EngineError> {
        let _gate = self
            .gate
            .write()
            .map_err(|_| EngineError::internal("engine", "snapshot gate poisoned"))?;
        let lsn = self.log.last_lsn();
        self.encode_state(lsn)
    }

    /// Encodes the state as it is, stamped with `lsn`, without the snapshot gate: the
    /// caller makes sure no mutation runs (the gate held for writing, or an engine nobody
    /// else reaches: the shadow a checkpoint rebuilds, `crate::durable`).
    pub(crate) fn encode_state(
        &self,
        lsn: Lsn,
    ) -> Result<(Lsn, Vec<u8>, ConsumerCursors), EngineError> {
        self.encode_state_as(lsn, SNAPSHOT_VERSION, None)
    }

    /// [`Engine::encode_state`] in format `version` (12; 11 with the hold keys' text; 10
    /// also with every hold's key field empty; 9 also without the stores' length prefixes:
    /// tests check that older snapshots still load). The engine keeps only the keys'
    /// digests: a format before 12 is written with `old_keys` naming the key of each
    /// digest, which only a test that chose the keys can do.
    fn encode_state_as(
        &self,
        lsn: Lsn,
        version: u32,
        old_keys: Option<KeyNames<'_>>,
    ) -> Result<(Lsn, Vec<u8>, ConsumerCursors), EngineError> {
        assert_eq!(
            version < 12,
            old_keys.is_some(),
            "formats before 12 name keys, 12 on digests them"
        );
        let mut buf = Vec::with_capacity(1 << 20);
        let mut e = Enc::new(&mut buf);
        e.u32(version);
        let n = self.store_count.load(Ordering::Acquire);
        e.u32(n);
        for i in 0..n {
            let shard = self
                .shard(StoreId(i))
                .ok_or_else(|| EngineError::internal("snapshot", "store slot empty"))?;
            encode_store_def(&mut e, &shard.def.read());
            e.i64(shard.updated_at().0);
        }
        let names = self.sku_names.lock();
        e.seq_len(names.len());
        for name in names.iter() {
            e.str(name);
        }
        drop(names);
        let mut idem: Vec<(KeyDigest, HoldOutcome, Option<u32>)> = self
            .idem
            .iter()
            .filter_map(|r| {
                let (outcome, _) = r.value().answer()?;
                // A rejection's identity is not in its log record, so a snapshot does
                // not keep it either: recovery from either gives the same state.
                let request = match outcome {
                    HoldOutcome::Granted(_) => r.value().request(),
                    _ => None,
                };
                Some((*r.key(), outcome, request))
            })
            .collect();
        // Sorted, so that equal states give equal bytes: by digest (format 12), by the
        // keys themselves before.
        match old_keys {
            None => idem.sort_unstable_by_key(|a| a.0),
            Some(name) => idem.sort_by_cached_key(|a| name(&a.0)),
        }
        e.seq_len(idem.len());
        for (key, outcome, request) in &idem {
            encode_key(&mut e, key, old_keys);
            encode_outcome(&mut e, outcome);
            e.opt_i64(request.map(i64::from));
        }
        let consumers = self.consumer_cursors();
        e.seq_len(consumers.len());
        for (name, lsn) in &consumers {
            e.str(name);
            e.u64(lsn.0);
        }
        let kept = self.kept_allocations();
        e.seq_len(kept.len());
        for (key, at, request, parts) in &kept {
            e.str(key);
            e.i64(at.0);
            e.u32(*request);
            crate::event::encode_kept_parts(&mut e, parts);
        }
        let batches = self.kept_batches();
        e.seq_len(batches.len());
        for (key, at, request, answers) in &batches {
            e.str(key);
            e.i64(at.0);
            e.u32(*request);
            crate::event::encode_kept_answers(&mut e, answers);
        }
        let replies = self.kept_replies();
        e.seq_len(replies.len());
        for (principal, key, reply) in &replies {
            e.str(principal);
            e.str(key);
            e.u64(reply.fingerprint);
            e.bytes(&reply.response);
            e.i64(reply.at.0);
        }
        // Each store's section is length-prefixed (format 10), so a load decodes the
        // stores in parallel.
        let mut section = Vec::new();
        for i in 0..n {
            let shard = self
                .shard(StoreId(i))
                .ok_or_else(|| EngineError::internal("snapshot", "store slot empty"))?;
            if version >= 10 {
                section.clear();
                encode_store(shard, &mut Enc::new(&mut section), version, old_keys);
                e.bytes(&section);
            } else {
                encode_store(shard, &mut e, version, old_keys);
            }
        }
        Ok((lsn, buf, consumers))
    }

    /// Rebuilds an engine from [`Engine::snapshot`] bytes, writing new records to `log`.
    pub fn from_snapshot(
        config: EngineConfig,
        log: Arc<dyn EventLog>,
        bytes: &[u8],
    ) -> Result<Engine, EngineError> {
        let engine = Engine::from_snapshot_unchecked(config, log, bytes)?;
        // Assert after reading back: the snapshot must satisfy conservation.
        engine.check_conservation().map_err(|why| {
            EngineError::corrupt("snapshot", SnapshotError::Invariant(why).to_string())
        })?;
        Ok(engine)
    }

    /// [`Engine::from_snapshot`] without the conservation check, for a caller that replays
    /// records onto the engine and checks conservation after them (recovery, the
    /// checkpoint's shadow): one walk of every hold instead of two.
    pub(crate) fn from_snapshot_unchecked(
        config: EngineConfig,
        log: Arc<dyn EventLog>,
        bytes: &[u8],
    ) -> Result<Engine, EngineError> {
        let engine = Engine::with_log(config, log)?;
        engine
            .load_snapshot(bytes)
            .map_err(|e| EngineError::corrupt("snapshot", e.to_string()))?;
        Ok(engine)
    }

    fn load_snapshot(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut d = Dec::new(bytes);
        let version = d.u32()?;
        if !(SNAPSHOT_VERSION_MIN..=SNAPSHOT_VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        let at = Timestamp(0);
        let n = d.u32()?;
        for i in 0..n {
            let def: StoreDef = decode_store_def(&mut d)?;
            // Replayed at its last change time, which is how the store records it.
            let updated_at = if version >= 8 {
                Timestamp(d.i64()?)
            } else {
                at
            };
            self.replay(&Record {
                at: updated_at,
                events: vec![Event::StoreDefined {
                    store: StoreId(i),
                    def,
                }],
            })?;
        }
        let skus = d.seq_len()?;
        for i in 0..skus {
            let external_id = d.string()?;
            self.replay(&Record {
                at,
                events: vec![Event::SkuRegistered {
                    sku: SkuId(i as u32),
                    external_id,
                }],
            })?;
        }
        let idem = d.long_seq_len()?;
        for _ in 0..idem {
            let key = decode_key(&mut d, version)?;
            let outcome = decode_outcome(&mut d)?;
            let request = d
                .opt_i64()?
                .map(u32::try_from)
                .transpose()
                .map_err(|_| SnapshotError::Bad("idempotency request identity"))?;
            let entry = IdemEntry::done(Lsn(0), &outcome, request)
                .ok_or(SnapshotError::Bad("idempotency outcome in flight"))?;
            self.idem.insert(key, entry);
        }
        let consumers = d.seq_len()?;
        for _ in 0..consumers {
            let name = d.string()?;
            let lsn = Lsn(d.u64()?);
            self.consumers.lock().insert(name, lsn);
        }
        let kept = d.seq_len()?;
        for _ in 0..kept {
            let key = d.string()?;
            let at = Timestamp(d.i64()?);
            let request = d.u32()?;
            let parts = crate::event::decode_kept_parts(&mut d)?;
            self.keep_allocation(&key, (request, &parts), at);
        }
        let kept = d.seq_len()?;
        for _ in 0..kept {
            let key = d.string()?;
            let at = Timestamp(d.i64()?);
            let request = d.u32()?;
            let answers = crate::event::decode_kept_answers(&mut d)?;
            self.keep_batch(&key, (request, answers.into()), Lsn(0), at);
        }
        let kept = d.seq_len()?;
        for _ in 0..kept {
            let principal = d.string()?;
            let key = d.string()?;
            let fingerprint = d.u64()?;
            let response = d.bytes()?.into();
            let at = Timestamp(d.i64()?);
            self.keep_reply_replayed(
                &principal,
                &key,
                crate::replies::KeptReply {
                    fingerprint,
                    response,
                    at,
                    lsn: Lsn(0),
                },
            );
        }
        if version >= 10 {
            let mut sections = Vec::with_capacity(n as usize);
            for i in 0..n {
                let shard = self.shard(StoreId(i)).ok_or(SnapshotError::Bad("store"))?;
                sections.push((shard, d.section()?));
            }
            d.finish()?;
            load_stores(&sections, version)?;
        } else {
            for i in 0..n {
                let shard = self.shard(StoreId(i)).ok_or(SnapshotError::Bad("store"))?;
                load_store(shard, &mut d, version)?;
            }
            d.finish()?;
        }
        Ok(())
    }
}

/// One store's section: non-empty cells, hold sequence, active holds, POS dedupe window,
/// recent POS deltas, last count times, idempotency aging queue, pickup orders, calendar
/// and slot bookings, ended holds.
fn encode_store(shard: &StoreShard, e: &mut Enc<'_>, version: u32, old_keys: Option<KeyNames<'_>>) {
    let mut cells = Vec::new();
    for (base, page) in shard.pages() {
        for (j, cell) in page.iter().enumerate() {
            let c = *cell.lock();
            if c != Cell::default() {
                cells.push((base + j as u32, c));
            }
        }
    }
    e.seq_len(cells.len());
    for (sku, c) in cells {
        e.u32(sku);
        e.u32(c.on_hand);
        e.u32(c.held);
        e.u32(c.safety);
    }
    shard.state.lock().encode(e, version, old_keys);
}

/// Snapshot sections of more bytes than this in all are loaded on two threads.
const PARALLEL_LOAD_LEN_MIN: usize = 1 << 20;

/// Loads the stores' sections (format 10 on), every other store on a second thread when
/// there is much to load: each section touches only its own store. The first error in
/// store order wins.
fn load_stores(sections: &[(&StoreShard, &[u8])], version: u32) -> Result<(), SnapshotError> {
    let load = |first: usize| -> Result<(), (usize, SnapshotError)> {
        sections
            .iter()
            .enumerate()
            .skip(first)
            .step_by(2)
            .try_for_each(|(i, (shard, bytes))| {
                let mut d = Dec::new(bytes);
                load_store(shard, &mut d, version)
                    .and_then(|()| d.finish().map_err(SnapshotError::from))
                    .map_err(|e| (i, e))
            })
    };
    let total: usize = sections.iter().map(|(_, b)| b.len()).sum();
    let (even, odd) = if total < PARALLEL_LOAD_LEN_MIN || sections.len() < 2 {
        (load(0), load(1))
    } else {
        std::thread::scope(|scope| {
            let odd = std::thread::Builder::new()
                .name("pickline-snapshot-load".into())
                .spawn_scoped(scope, || load(1));
            let even = load(0);
            let odd = match odd {
                Ok(handle) => handle.join().unwrap_or(Err((
                    1,
                    SnapshotError::Bad("the snapshot loading thread panicked"),
                ))),
                // No thread to be had: load those stores here.
                Err(_) => load(1),
            };
            (even, odd)
        })
    };
    match (even, odd) {
        (Ok(()), Ok(())) => Ok(()),
        (Err((_, e)), Ok(())) | (Ok(()), Err((_, e))) => Err(e),
        (Err(a), Err(b)) => Err(if a.0 < b.0 { a.1 } else { b.1 }),
    }
}

/// One store's section (see [`encode_store`]).
fn load_store(shard: &StoreShard, d: &mut Dec<'_>, version: u32) -> Result<(), SnapshotError> {
    let cells = d.long_seq_len()?;
    for _ in 0..cells {
        let sku = SkuId(d.u32()?);
        let cell = Cell {
            on_hand: d.u32()?,
            held: d.u32()?,
            safety: d.u32()?,
        };
        *shard.cell(sku).ok_or(SnapshotError::Bad("cell"))?.lock() = cell;
    }
    shard.state.lock().load(shard.id, d, version)?;
    Ok(())
}

fn encode_outcome(e: &mut Enc<'_>, outcome: &HoldOutcome) {
    match outcome {
        HoldOutcome::Granted(g) => {
            e.u8(0);
            e.u64(g.hold.0);
            e.i64(g.expires_at.0);
        }
        HoldOutcome::Rejected(r) => {
            // Reuse the event encoding of a rejection.
            e.u8(1);
            let mut tmp = Vec::new();
            Record {
                at: Timestamp(0),
                events: vec![Event::HoldRejected {
                    store: StoreId(0),
                    key: String::new(),
                    rejection: r.clone(),
                }],
            }
            .encode(&mut tmp);
            e.bytes(&tmp);
        }
        HoldOutcome::InFlight => e.u8(2),
    }
}

fn decode_outcome(d: &mut Dec<'_>) -> Result<HoldOutcome, SnapshotError> {
    Ok(match d.u8()? {
        0 => HoldOutcome::Granted(HoldGrant {
            hold: HoldId(d.u64()?),
            expires_at: Timestamp(d.i64()?),
            lsn: Lsn(0),
        }),
        1 => {
            let rec = Record::decode(d.bytes()?)?;
            match rec.events.into_iter().next() {
                Some(Event::HoldRejected { rejection, .. }) => HoldOutcome::Rejected(rejection),
                _ => return Err(SnapshotError::Bad("rejection")),
            }
        }
        2 => HoldOutcome::InFlight,
        _ => return Err(SnapshotError::Bad("outcome tag")),
    })
}

/// A snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Malformed bytes.
    #[error("snapshot decode: {0}")]
    Decode(#[from] DecodeError),
    /// Written by an unknown format version.
    #[error(
        "snapshot format version {0} is not {SNAPSHOT_VERSION_MIN}..={SNAPSHOT_VERSION}: written by another pickline version"
    )]
    Version(u32),
    /// A value is inconsistent.
    #[error("inconsistent snapshot: {0}")]
    Bad(&'static str),
    /// The loaded state breaks an invariant.
    #[error("snapshot breaks an invariant: {0}")]
    Invariant(String),
    /// Applying a definition failed.
    #[error("snapshot: {0}")]
    Engine(#[from] EngineError),
}

impl From<crate::stock::StateDecodeError> for SnapshotError {
    fn from(e: crate::stock::StateDecodeError) -> SnapshotError {
        match e {
            crate::stock::StateDecodeError::Decode(e) => SnapshotError::Decode(e),
            crate::stock::StateDecodeError::Bad(what) => SnapshotError::Bad(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HoldRequest, LineRequest, PosDelta, PosDeltaKind};

    const T0: Timestamp = Timestamp(1_780_000_000_000);

    /// Three stores with enough holds that their sections load on two threads and are
    /// longer than any other byte string the decoder takes ([`crate::codec::BYTES_LEN_MAX`]).
    fn busy_engine() -> Engine {
        let e = Engine::new(EngineConfig::default()).unwrap();
        for store in ["s0", "s1", "s2"] {
            e.define_store(StoreDef::new(store, 52.0, 13.0, "Europe/Berlin"), T0)
                .unwrap();
            for sku in ["A", "B", "C"] {
                e.apply_delta(
                    &PosDelta {
                        store: store.into(),
                        sku: sku.into(),
                        pos_event_id: format!("rcv-{store}-{sku}"),
                        kind: PosDeltaKind::Receive,
                        qty: 1_000_000,
                        order_ref: None,
                        pos_time: T0,
                    },
                    T0,
                )
                .unwrap();
            }
        }
        for i in 0..180_000u32 {
            let store = ["s0", "s1", "s2"][(i % 3) as usize];
            let mut lines = vec![LineRequest::new("A", 1 + i % 4)];
            if i.is_multiple_of(5) {
                lines.push(LineRequest::new("C", 2));
            }
            let mut req = HoldRequest::new(store, lines);
            if i.is_multiple_of(7) {
                req = req.with_key(format!("key-{i}"));
            }
            let g = e.hold(&req, T0.add_ms(i64::from(i))).unwrap();
            if i.is_multiple_of(9) {
                let hold = g.granted().unwrap().hold;
                e.release(hold, T0.add_ms(i64::from(i))).unwrap();
            }
        }
        e
    }

    fn reloaded(bytes: &[u8]) -> Vec<u8> {
        let e = Engine::from_snapshot(
            EngineConfig::default(),
            Arc::new(crate::log::NoLog::default()),
            bytes,
        )
        .unwrap();
        e.snapshot().unwrap().1
    }

    /// The keys [`busy_engine`] used, by digest: what writing a format before 12 needs.
    fn busy_engine_keys() -> impl Fn(&KeyDigest) -> String {
        let names: std::collections::HashMap<KeyDigest, String> = (0..180_000u32)
            .filter(|i| i.is_multiple_of(7))
            .map(|i| {
                let key = format!("key-{i}");
                (KeyDigest::of(&key), key)
            })
            .collect();
        move |digest| names[digest].clone()
    }

    #[test]
    fn format_12_loads_on_two_threads_and_formats_9_to_11_still_load() {
        let e = busy_engine();
        let names = busy_engine_keys();
        let (_, current) = e.snapshot().unwrap();
        assert!(
            current.len() > PARALLEL_LOAD_LEN_MIN,
            "the parallel load is exercised"
        );
        assert!(
            current.len() > 3 * crate::codec::BYTES_LEN_MAX + 100_000,
            "each of the three sections is longer than BYTES_LEN_MAX"
        );
        assert_eq!(reloaded(&current), current);
        for version in 9..=11 {
            let (_, older, _) = e.encode_state_as(Lsn(0), version, Some(&names)).unwrap();
            assert_ne!(older, current, "format {version}");
            assert_eq!(reloaded(&older), current, "format {version}");
        }
    }

    #[test]
    fn a_cut_or_damaged_section_is_an_error_not_a_panic() {
        let (_, current) = busy_engine().snapshot().unwrap();
        let load = |bytes: &[u8]| {
            Engine::from_snapshot(
                EngineConfig::default(),
                Arc::new(crate::log::NoLog::default()),
                bytes,
            )
        };
        for cut in [
            current.len() - 1,
            current.len() / 2,
            current.len() - 100_000,
        ] {
            assert!(load(&current[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = current.clone();
        let at = current.len() - 300_000;
        flipped[at] ^= 0x55;
        // Damage either fails to decode or breaks an invariant; it never loads silently
        // different without an error, nor panics.
        if let Ok(e) = load(&flipped) {
            assert_ne!(e.snapshot().unwrap().1, current);
        }
    }
}
