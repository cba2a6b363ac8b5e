//! [`Engine::hold_batch`]: many holds decided together. The holds of one store are decided
//! under one acquisition of their cells and the store's state and logged as one record,
//! where [`Engine::hold`] takes the locks and appends a record per hold.
//!
//! Each hold is still all-or-nothing on its own lines, and its outcome is the one
//! [`Engine::hold`] would give it at that point of the batch: holds are decided in request
//! order, each seeing the units and slot bookings of those before it. Replay applies the
//! record's events one by one, as it applies any record, so the live and the replayed state
//! cannot differ.

use std::collections::HashSet;
use std::sync::Arc;

use crate::engine::commit::Decision;
use crate::engine::{
    Engine, HoldGrant, HoldOutcome, HoldRequest, LoggedOutcome, PreparedHold, Refusal, check_id,
    check_place, check_units, hold_identity, poisoned, table_full,
};
use crate::error::EngineError;
use crate::event::{Event, KeptAnswer, KeptOf, Record};
use crate::key_digest::KeyDigest;
use crate::keys::Claim;
use crate::lock_order::lock_in_order;
use crate::stock::StoreShard;
use crate::types::{HoldId, Line, Lsn, Qty, SkuId, Timestamp};

/// Holds of one store decided under one lock set and logged as one record: at most this
/// many, so other requests of the store wait for a bounded time.
const GROUP_HOLDS_MAX: usize = 256;

/// A bound on one record's encoded events, by a generous per-hold estimate; a record's
/// payload may be at most [`crate::wal::RECORD_PAYLOAD_LEN_MAX`] (1 MiB).
const GROUP_BYTES_MAX: usize = 256 << 10;

/// One request of the batch on its way: its index in the batch and its prepared form.
struct Item<'a> {
    idx: usize,
    req: &'a HoldRequest,
    prep: PreparedHold<'a>,
}

impl Item<'_> {
    /// An upper estimate of the item's logged event, in bytes.
    fn estimated_len(&self) -> usize {
        let key = self.req.idempotency_key.as_ref().map_or(0, String::len);
        // A shortage rejection names each SKU.
        let per_line = self
            .prep
            .lines
            .iter()
            .map(|(_, _, n)| n.len() + 24)
            .sum::<usize>();
        64 + key + per_line
    }
}

/// What a decided hold turns into once its record is logged.
struct Decided {
    idx: usize,
    identity: Option<u32>,
    /// The digest of its key, if it has one.
    key: Option<KeyDigest>,
}

/// A batch's answers, one per request in request order.
pub type BatchAnswers = Vec<Result<LoggedOutcome, EngineError>>;

/// The outcome slots of a batch, filled as requests are answered.
type Answers = Vec<Option<Result<LoggedOutcome, EngineError>>>;

impl Engine {
    /// Holds each request of `reqs` as [`Engine::hold`] would, each all-or-nothing on its
    /// own, in request order, and waits for durability once, for the newest record of the
    /// batch. The holds of one store are decided under one acquisition of its locks and
    /// logged together (up to 256 per record), which is what makes a batch cheaper than
    /// as many calls to [`Engine::hold`].
    ///
    /// Per-request misuse is that request's `Err`. A key already used for a different
    /// request fails the whole batch before anything is held
    /// ([`EngineError::IdempotencyKeyReused`]); a batch that names a key twice is decided
    /// one hold at a time (its second use then answers as a retry of the first). A log
    /// failure fails the whole batch (nothing is acknowledged).
    pub fn hold_batch(
        &self,
        reqs: &[HoldRequest],
        now: Timestamp,
    ) -> Result<Vec<Result<HoldOutcome, EngineError>>, EngineError> {
        Ok(self
            .hold_batch_logged(reqs, now)?
            .into_iter()
            .map(|answer| answer.map(|(outcome, _)| outcome))
            .collect())
    }

    /// [`Engine::hold_batch`] with each outcome's LSN, as [`Engine::hold_logged`] gives it.
    pub fn hold_batch_logged(
        &self,
        reqs: &[HoldRequest],
        now: Timestamp,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        let mut answers: Answers = (0..reqs.len()).map(|_| None).collect();
        let mut items = Vec::with_capacity(reqs.len());
        for prepared in self.prepare_all(reqs) {
            match prepared {
                Ok(item) => items.push(item),
                Err((idx, e)) => answers[idx] = Some(Err(e)),
            }
        }
        self.decide_batch(items, answers, now)
    }

    /// [`Engine::hold_batch_logged`] for callers that want a malformed batch refused whole:
    /// if any request is misuse (unknown store, invalid lines or hold time), nothing is
    /// held and the error is [`EngineError::InBatch`], naming the first such request by its
    /// index. Otherwise as [`Engine::hold_batch_logged`]; a request's `Err` is then only a
    /// full table ([`EngineError::LimitReached`]), decided in its turn like a rejection.
    pub fn hold_batch_whole(
        &self,
        reqs: &[HoldRequest],
        now: Timestamp,
    ) -> Result<BatchAnswers, EngineError> {
        let items = self.prepare_whole(reqs)?;
        let answers: Answers = (0..reqs.len()).map(|_| None).collect();
        self.decide_batch(items, answers, now)
    }

    /// Every request of `reqs` prepared, or [`EngineError::InBatch`] for the first that is
    /// misuse.
    fn prepare_whole<'a>(&'a self, reqs: &'a [HoldRequest]) -> Result<Vec<Item<'a>>, EngineError> {
        self.prepare_all(reqs)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(index, e)| EngineError::in_batch(index, e))
    }

    /// The part of [`Engine::hold_batch_logged`] after preparing: decides `items` (the
    /// well-formed requests) into `answers`, which holds the others' errors.
    fn decide_batch(
        &self,
        items: Vec<Item<'_>>,
        mut answers: Answers,
        now: Timestamp,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        let mut newest: Option<Lsn> = None;
        let gate = self.gate.read().map_err(|_| poisoned())?;
        let mut in_batch: HashSet<&str> = HashSet::new();
        let repeated = items.iter().any(|item| {
            item.req
                .idempotency_key
                .as_deref()
                .is_some_and(|key| !in_batch.insert(key))
        });
        if repeated {
            // A key twice in one batch: its later uses depend on how the first one ends, so
            // the batch is decided one hold at a time, in request order (after the same
            // whole-batch check of keys used before). Callers do not normally do this (the
            // sidecar refuses such a batch).
            for item in &items {
                if let (Some(key), Some(digest)) =
                    (item.req.idempotency_key.as_deref(), item.prep.key)
                {
                    self.key_reused(key, digest, item.prep.identity)?;
                }
            }
            drop(gate);
            for item in items {
                answers[item.idx] = Some(match self.hold_unsynced(item.req, now) {
                    Ok((outcome, lsn)) => {
                        newest = newest.max(lsn);
                        Ok((outcome, lsn))
                    }
                    Err(e @ EngineError::LogFailed(_)) => return Err(e),
                    Err(e) => Err(e),
                });
            }
            return self.answered(answers, newest);
        }
        // Claim every key before anything is held, so a reused key fails the batch whole.
        // `owned`: claims this batch still has to end (settle or release).
        let mut owned: HashSet<KeyDigest> = HashSet::with_capacity(in_batch.len());
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let (Some(key), Some(digest)) = (item.req.idempotency_key.as_deref(), item.prep.key)
            else {
                fresh.push(item);
                continue;
            };
            match self.claim_key(key, digest, item.prep.identity) {
                Ok(None) => {
                    owned.insert(digest);
                    fresh.push(item);
                }
                Ok(Some((outcome, lsn))) => {
                    newest = newest.max(lsn);
                    answers[item.idx] = Some(Ok((outcome, lsn)));
                }
                Err(e) => {
                    self.release_claims(owned);
                    return Err(e);
                }
            }
        }
        match self.decide_groups(&mut fresh, now, &mut answers, &mut owned, None) {
            Ok(lsn) => newest = newest.max(lsn),
            Err(e) => {
                self.release_claims(owned);
                return Err(e);
            }
        }
        drop(gate);
        self.answered(answers, newest)
    }

    /// Each request of `reqs` prepared ([`Engine::prepare_hold`]), or its index and error.
    fn prepare_all<'a>(
        &'a self,
        reqs: &'a [HoldRequest],
    ) -> Vec<Result<Item<'a>, (usize, EngineError)>> {
        // The last store looked up: a batch's holds are mostly for one store.
        let mut last: Option<(&str, &StoreShard)> = None;
        let mut out = Vec::with_capacity(reqs.len());
        for (idx, req) in reqs.iter().enumerate() {
            let shard_of = |name: &str| match last {
                Some((last_name, shard)) if last_name == name => Ok(shard),
                _ => {
                    let shard = self.shard_by_name(name)?;
                    last = Some((req.store.as_str(), shard));
                    Ok(shard)
                }
            };
            out.push(
                self.prepare_hold_with(req, shard_of)
                    .map(|prep| Item { idx, req, prep })
                    .map_err(|e| (idx, e)),
            );
        }
        out
    }

    /// Decides `items` (keys claimed) store by store, in groups of [`GROUP_HOLDS_MAX`]
    /// ([`Engine::hold_group`]), keeping request order within a store. Returns the newest
    /// record's LSN; on `Err` (a log failure) the groups before the failing one stay.
    /// `batch_key`: the key of a keyed batch, which marks each group's record as its part
    /// ([`Event::KeyedPart`]).
    fn decide_groups<'k>(
        &self,
        items: &mut [Item<'k>],
        now: Timestamp,
        answers: &mut Answers,
        owned: &mut HashSet<KeyDigest>,
        batch_key: Option<&str>,
    ) -> Result<Option<Lsn>, EngineError> {
        items.sort_by_key(|item| item.prep.shard.id.0);
        let mut newest = None;
        let mut rest = items;
        while !rest.is_empty() {
            let store = rest[0].prep.shard.id;
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && rest[n].prep.shard.id == store && n < GROUP_HOLDS_MAX {
                bytes += rest[n].estimated_len();
                if n > 0 && bytes > GROUP_BYTES_MAX {
                    break;
                }
                n += 1;
            }
            let (group, tail) = rest.split_at_mut(n);
            rest = tail;
            newest = newest.max(self.hold_group(group, now, answers, owned, batch_key)?);
        }
        Ok(newest)
    }

    /// The batch's answers once every request has one, after waiting (or deferring the
    /// wait) for `newest` to be durable.
    fn answered(
        &self,
        answers: Answers,
        newest: Option<Lsn>,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        self.durable(newest)?;
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(EngineError::internal("holds", "not decided"))))
            .collect())
    }

    /// Decides the holds of `group` (one store, keys claimed), logs their grants and keyed
    /// rejections as one record (led by [`Event::KeyedPart`] in a batch under
    /// `batch_key`), applies it and fills their answers. Returns the record's LSN (`None`
    /// when nothing was logged). On `Err` (a log failure) nothing was applied.
    fn hold_group<'k>(
        &self,
        group: &mut [Item<'k>],
        now: Timestamp,
        answers: &mut Answers,
        owned: &mut HashSet<KeyDigest>,
        batch_key: Option<&str>,
    ) -> Result<Option<Lsn>, EngineError> {
        let Some(first) = group.first() else {
            return Ok(None);
        };
        let shard: &StoreShard = first.prep.shard;
        let limits = &self.config.limits;
        // Every cell the group touches, locked once in the global order (ascending SKU id),
        // then the store's state: the order every other mutation takes them in.
        let mut ids: Vec<u32> = group
            .iter()
            .flat_map(|item| {
                item.prep
                    .lines
                    .iter()
                    .filter_map(|(id, _, _)| id.map(|s| s.0))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut cells = Vec::with_capacity(ids.len());
        for &id in &ids {
            match shard.cell(SkuId(id)) {
                Some(cell) => cells.push((id, cell)),
                // Interning never hands out such an id; refuse the holds that name it.
                None => {
                    for item in group.iter().filter(|item| {
                        item.prep
                            .lines
                            .iter()
                            .any(|(s, _, _)| *s == Some(SkuId(id)))
                    }) {
                        answers[item.idx] =
                            Some(Err(EngineError::invalid("sku", "beyond skus_max")));
                    }
                }
            }
        }
        let ids: Vec<u32> = cells.iter().map(|(id, _)| *id).collect();
        let status = shard.status();
        let default_safety = shard.default_safety();
        // Each grant of the group took at most the ATP left after the ones before it.
        let atp = |taken: &[u64], gi: usize, guards: &[crate::engine::CellGuard<'_>]| {
            u64::from(guards[gi].view(default_safety).atp())
                .checked_sub(taken[gi])
                .expect("a group took more than the cells' ATP")
        };
        let (_, lsn) = self.commit_or_undo(
            || {
                let guards = lock_in_order(&cells)
                    .ok_or_else(|| EngineError::invalid("lines", "not in lock order"))?;
                // The answers and claims ride with the locks: `decide` and `apply` fill them.
                Ok((guards, shard.state.lock(), answers, owned))
            },
            |(guards, st, answers, owned)| {
                // Units taken by the group's grants so far, per locked cell (applied after
                // logging).
                let mut taken: Vec<u64> = vec![0; ids.len()];
                let mut next_seq = st.next_hold_seq();
                let mut granted = 0usize;
                let mut booked: Vec<i64> = Vec::new();
                let mut events = Vec::with_capacity(group.len() + 1);
                if let Some(key) = batch_key {
                    events.push(Event::KeyedPart {
                        key: key.to_owned(),
                        of: KeptOf::Batch,
                    });
                }
                let marked = events.len();
                let mut decided = Vec::with_capacity(group.len());
                for item in group.iter_mut() {
                    if answers[item.idx].is_some() {
                        if let Some(key) = item.prep.key {
                            owned.remove(&key);
                            self.release_claim(key);
                        }
                        continue;
                    }
                    let req = item.req;
                    // As `Engine::hold` does: a hold naming a SKU the engine does not know
                    // reports its shortages in request order, any other in SKU id order.
                    let lines = &mut item.prep.lines;
                    if lines.iter().all(|(id, _, _)| id.is_some()) {
                        lines.sort_unstable_by_key(|(id, _, _)| *id);
                    }
                    let lines = &item.prep.lines;
                    let units = check_units(status, lines, |i| match lines[i].0 {
                        Some(id) => ids
                            .binary_search(&id.0)
                            .map_or(0, |gi| atp(&taken, gi, guards)),
                        None => 0,
                    });
                    let place = (item.prep.ttl_ms, req.slot_start_ms);
                    let decision = units.map_err(Refusal::Rejected).and_then(|()| {
                        check_place(st, st.active_len() + granted, limits, place, now)
                    });
                    let expires_at = match decision {
                        Ok(expires_at) => {
                            if let Some(start_ms) = req.slot_start_ms {
                                // Booked now so the next hold of the group sees it.
                                st.book_slot(start_ms);
                                booked.push(start_ms);
                            }
                            expires_at
                        }
                        Err(Refusal::Rejected(rejection)) => {
                            match &req.idempotency_key {
                                Some(key) => {
                                    events.push(Event::HoldRejected {
                                        store: shard.id,
                                        key: key.clone(),
                                        rejection,
                                    });
                                    decided.push(Decided {
                                        idx: item.idx,
                                        identity: item.prep.identity,
                                        key: item.prep.key,
                                    });
                                }
                                None => {
                                    answers[item.idx] =
                                        Some(Ok((HoldOutcome::Rejected(rejection), None)))
                                }
                            }
                            continue;
                        }
                        Err(Refusal::Full) => {
                            answers[item.idx] = Some(Err(table_full(limits)));
                            if let Some(key) = item.prep.key {
                                owned.remove(&key);
                                self.release_claim(key);
                            }
                            continue;
                        }
                    };
                    let hold = HoldId::new(shard.id, next_seq);
                    next_seq += 1;
                    granted += 1;
                    let lines: Vec<Line> = item
                        .prep
                        .lines
                        .iter()
                        .map(|(id, q, _)| {
                            let sku = id.unwrap_or(SkuId(0));
                            if let Ok(gi) = ids.binary_search(&sku.0) {
                                taken[gi] += q;
                            }
                            Line {
                                sku,
                                qty: *q as Qty,
                            }
                        })
                        .collect();
                    events.push(crate::engine::grant_event(hold, req, lines, expires_at));
                    decided.push(Decided {
                        idx: item.idx,
                        identity: item.prep.identity,
                        key: item.prep.key,
                    });
                }
                if decided.is_empty() {
                    return Ok(Decision::Answer(()));
                }
                // Shared with the event stream, which keeps it without a copy.
                let record = Arc::new(Record { at: now, events });
                Ok(Decision::Log(record, (marked, decided, taken, booked)))
            },
            |(guards, st, answers, owned), record, lsn, (marked, decided, taken, _)| {
                for (g, t) in guards.iter_mut().zip(&taken) {
                    // Within the cell's on-hand units (each grant was checked against its
                    // ATP).
                    g.held += *t as Qty;
                }
                for (ev, d) in record.events[marked..].iter().zip(decided) {
                    let outcome = match ev {
                        Event::HoldGranted {
                            hold,
                            lines,
                            expires_at,
                            slot,
                            ..
                        } => {
                            st.grant_booked(
                                *hold,
                                d.key,
                                lines.as_slice().into(),
                                now,
                                (*expires_at, *slot),
                            );
                            let grant = HoldGrant {
                                hold: *hold,
                                expires_at: *expires_at,
                                lsn,
                            };
                            HoldOutcome::Granted(grant)
                        }
                        Event::HoldRejected { rejection, .. } => {
                            let Some(key) = d.key else {
                                unreachable!("a rejection is logged only for a keyed hold")
                            };
                            st.note_idem_key(now, key);
                            HoldOutcome::Rejected(rejection.clone())
                        }
                        _ => continue,
                    };
                    if let Some(key) = d.key {
                        owned.remove(&key);
                        self.settle_claim(key, lsn, &outcome, d.identity);
                    }
                    answers[d.idx] = Some(Ok((outcome, Some(lsn))));
                }
                Ok(())
            },
            |(_, st, _, _), (_, _, _, booked)| {
                // The log refused the record: the slots the group booked are free again.
                for start_ms in booked {
                    st.unbook_slot(start_ms);
                }
            },
        )?;
        Ok(lsn)
    }
}

// ---------------------------------------------------------------- keyed batches

/// Answers of keyed batches kept at most, over all batches (each keeps one answer per
/// hold, about 40 bytes, for the dedupe window): 33.5M, about 1.3 GB. Keys on every hold
/// would keep a map entry per hold instead, more than twice that.
pub const BATCH_ANSWERS_MAX: usize = 1 << 25;

/// The keys of whole batches ([`Engine::hold_batch_keyed`]): each key's batch identity,
/// the LSN of its `BatchKept` record (0 when recovered: durable by then) and its answers,
/// weighing one per answer.
pub(crate) type BatchKeys = crate::keys::KeyTable<(Lsn, Arc<[KeptAnswer]>)>;

/// An empty [`BatchKeys`] bounded by [`BATCH_ANSWERS_MAX`].
pub(crate) fn batch_keys() -> BatchKeys {
    BatchKeys::new("BATCH_ANSWERS_MAX", BATCH_ANSWERS_MAX)
}

/// A kept batch as snapshots store it: key, when it was kept, the batch's identity and its
/// answers.
pub(crate) type KeptBatch = (Box<str>, Timestamp, u32, Vec<KeptAnswer>);

/// What identifies a batch for its key: a CRC-32C over the number of holds and each hold's
/// [`crate::engine::hold_identity`] in request order. A retry must repeat them all.
fn batch_identity(items: &[Item<'_>]) -> u32 {
    let mut crc = crc32c::crc32c(&(items.len() as u64).to_le_bytes());
    for item in items {
        let hold = hold_identity(
            item.prep.shard.id,
            item.prep.lines.iter().map(|(_, q, name)| (*name, *q)),
            item.req.slot_start_ms,
            item.prep.ttl_ms,
        );
        crc = crc32c::crc32c_append(crc, &hold.to_le_bytes());
    }
    crc
}

/// The static name of a limit a kept answer names.
fn limit_name(limit: &str) -> &'static str {
    match limit {
        "store_active_holds_max" => "store_active_holds_max",
        _ => "limit",
    }
}

/// A kept answer as the batch call returns it, with the LSN of the batch's record.
fn kept_outcome(answer: &KeptAnswer, lsn: Lsn) -> Result<LoggedOutcome, EngineError> {
    match answer {
        KeptAnswer::Granted { hold, expires_at } => Ok((
            HoldOutcome::Granted(HoldGrant {
                hold: *hold,
                expires_at: *expires_at,
                lsn,
            }),
            Some(lsn),
        )),
        KeptAnswer::Rejected(r) => Ok((HoldOutcome::Rejected(r.clone()), Some(lsn))),
        KeptAnswer::LimitReached { limit, value } => Err(EngineError::LimitReached {
            limit: limit_name(limit),
            value: *value,
        }),
    }
}

impl Engine {
    /// A batch of holds under one idempotency key for the whole batch: the batched path's
    /// cheaper form of idempotency (one key per call instead of one per hold).
    ///
    /// The holds carry no keys of their own, and every one must be well formed: any misuse
    /// refuses the whole batch before anything is held. They are then decided as
    /// [`Engine::hold_batch`] decides them, and the answers (grants, rejections, a full
    /// hold table) are kept under `key` and logged as [`Event::BatchKept`] after the holds'
    /// own records: a retry with the key and the same holds gets the same answers back,
    /// also after a restart; other holds under the key are
    /// [`EngineError::IdempotencyKeyReused`]; a retry while the first call runs gets
    /// [`HoldOutcome::InFlight`] for every hold. Each answer's LSN is its grant's record
    /// (`None` for a rejection) or, for a retry, the `BatchKept` record.
    pub fn hold_batch_keyed(
        &self,
        key: &str,
        reqs: &[HoldRequest],
        now: Timestamp,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        check_id("idempotency_key", key, self.config.limits.key_len_max)?;
        if let Some(i) = reqs.iter().position(|r| r.idempotency_key.is_some()) {
            let e = EngineError::invalid("idempotency_key", "a keyed batch's holds have none");
            return Err(EngineError::in_batch(i, e));
        }
        let items = self.prepare_whole(reqs)?;
        let identity = batch_identity(&items);
        let horizon = now.add_ms(-self.config.limits.dedupe_window_ms);
        match self.batch_keys.claim(key, identity, reqs.len(), horizon)? {
            Claim::InFlight => {
                return Ok(reqs
                    .iter()
                    .map(|_| Ok((HoldOutcome::InFlight, None)))
                    .collect());
            }
            Claim::Done((lsn, answers)) => {
                self.durable(Some(lsn))?;
                return Ok(answers.iter().map(|a| kept_outcome(a, lsn)).collect());
            }
            Claim::Claimed => {}
        }
        let result = self.hold_batch_kept(key, identity, items, now);
        if result.is_err() {
            self.batch_keys.abandon(key);
        }
        result
    }

    /// [`Engine::hold_batch_keyed`] once the key is claimed.
    fn hold_batch_kept(
        &self,
        key: &str,
        identity: u32,
        mut items: Vec<Item<'_>>,
        now: Timestamp,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        let mut answers: Answers = (0..items.len()).map(|_| None).collect();
        let gate = self.gate.read().map_err(|_| poisoned())?;
        let mut owned = HashSet::new();
        self.decide_groups(&mut items, now, &mut answers, &mut owned, Some(key))?;
        let mut kept = Vec::with_capacity(answers.len());
        for answer in &answers {
            kept.push(match answer {
                Some(Ok((HoldOutcome::Granted(g), _))) => KeptAnswer::Granted {
                    hold: g.hold,
                    expires_at: g.expires_at,
                },
                Some(Ok((HoldOutcome::Rejected(r), _))) => KeptAnswer::Rejected(r.clone()),
                Some(Err(EngineError::LimitReached { limit, value })) => KeptAnswer::LimitReached {
                    limit: (*limit).to_owned(),
                    value: *value,
                },
                // Holds without keys are never in flight, and a hold refused otherwise
                // names a SKU id interning never hands out: not keepable, not expected.
                _ => {
                    return Err(EngineError::invalid(
                        "holds",
                        "a hold of the batch could not be decided",
                    ));
                }
            });
        }
        // After the holds' records, and under the snapshot gate: a snapshot has both the
        // record and the kept answer, or neither.
        let record = Record {
            at: now,
            events: vec![Event::BatchKept {
                key: key.to_owned(),
                request: identity,
                answers: kept,
            }],
        };
        let (_, lsn) = self.commit(
            || Ok(()),
            |_| Ok(Decision::Log(std::sync::Arc::new(record), ())),
            |_, record, lsn, ()| {
                let Some(Event::BatchKept { answers: kept, .. }) = record.events.first() else {
                    unreachable!("the record was built with one BatchKept event")
                };
                self.keep_batch(key, (identity, kept.as_slice().into()), lsn, now);
                Ok(())
            },
        )?;
        drop(gate);
        self.answered(answers, lsn)
    }

    /// Keeps a batch's answers under its key (live, log replay, snapshot load).
    pub(crate) fn keep_batch(
        &self,
        key: &str,
        (request, answers): (u32, Arc<[KeptAnswer]>),
        lsn: Lsn,
        at: Timestamp,
    ) {
        let weight = answers.len();
        self.batch_keys
            .finish(key, request, (lsn, answers), weight, at);
    }

    /// The kept batches, oldest first (for snapshots).
    pub(crate) fn kept_batches(&self) -> Vec<KeptBatch> {
        self.batch_keys.kept(|(_, answers)| Some(answers.to_vec()))
    }
}
