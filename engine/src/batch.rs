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

use crate::engine::{
    Engine, HoldGrant, HoldOutcome, HoldRequest, IdemEntry, LoggedOutcome, PreparedHold,
    grant_state_booked, poisoned,
};
use crate::error::EngineError;
use crate::event::{Event, HoldRejection, LineShortage, Record};
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
}

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
    /// ([`EngineError::IdempotencyKeyReused`]); a key twice in one batch answers its second
    /// use as a retry of the first. A log failure fails the whole batch (nothing is
    /// acknowledged).
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
        let mut newest: Option<Lsn> = None;
        let mut items = Vec::with_capacity(reqs.len());
        // The last store looked up: a batch's holds are mostly for one store.
        let mut last: Option<(&str, &StoreShard)> = None;
        for (idx, req) in reqs.iter().enumerate() {
            let shard_of = |name: &str| match last {
                Some((last_name, shard)) if last_name == name => Ok(shard),
                _ => {
                    let shard = self.shard_by_name(name)?;
                    last = Some((req.store.as_str(), shard));
                    Ok(shard)
                }
            };
            match self.prepare_hold_with(req, shard_of) {
                Ok(prep) => items.push(Item { idx, req, prep }),
                Err(e) => answers[idx] = Some(Err(e)),
            }
        }
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
                if let Some(key) = item.req.idempotency_key.as_deref() {
                    self.key_reused(key, item.prep.identity)?;
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
        let mut owned: HashSet<&str> = HashSet::with_capacity(in_batch.len());
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            let Some(key) = item.req.idempotency_key.as_deref() else {
                fresh.push(item);
                continue;
            };
            match self.claim_key(key, item.prep.identity) {
                Ok(None) => {
                    owned.insert(key);
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
        // Group by store, keeping request order within a store.
        fresh.sort_by_key(|item| item.prep.shard.id.0);
        let mut rest = &mut fresh[..];
        while !rest.is_empty() {
            let store = rest[0].prep.shard.id;
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len()
                && rest[n].prep.shard.id == store
                && n < GROUP_HOLDS_MAX
                && (n == 0 || bytes + rest[n].estimated_len() <= GROUP_BYTES_MAX)
            {
                bytes += rest[n].estimated_len();
                n += 1;
            }
            let (group, tail) = rest.split_at_mut(n);
            rest = tail;
            match self.hold_group(group, now, &mut answers, &mut owned) {
                Ok(lsn) => newest = newest.max(lsn),
                Err(e) => {
                    self.release_claims(owned);
                    return Err(e);
                }
            }
        }
        drop(gate);
        self.answered(answers, newest)
    }

    /// The batch's answers once every request has one, after waiting (or deferring the
    /// wait) for `newest` to be durable.
    fn answered(
        &self,
        answers: Answers,
        newest: Option<Lsn>,
    ) -> Result<Vec<Result<LoggedOutcome, EngineError>>, EngineError> {
        if let Some(lsn) = newest {
            crate::log::wait_durable_or_defer(&*self.log, lsn)?;
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(EngineError::invalid("holds", "not decided"))))
            .collect())
    }

    /// Decides the holds of `group` (one store, keys claimed), logs their grants and keyed
    /// rejections as one record, applies it and fills their answers. Returns the record's
    /// LSN (`None` when nothing was logged). On `Err` (a log failure) nothing was applied.
    fn hold_group<'k>(
        &self,
        group: &mut [Item<'k>],
        now: Timestamp,
        answers: &mut Answers,
        owned: &mut HashSet<&'k str>,
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
        let mut guards = lock_in_order(&cells)
            .ok_or_else(|| EngineError::invalid("lines", "not in lock order"))?;
        let ids: Vec<u32> = cells.iter().map(|(id, _)| *id).collect();
        let mut st = shard.state.lock();
        let status = shard.status();
        let default_safety = shard.default_safety();
        // Units taken by the group's grants so far, per locked cell (applied after logging).
        let mut taken: Vec<u64> = vec![0; ids.len()];
        let atp = |taken: &[u64], gi: usize, guards: &[crate::engine::CellGuard<'_>]| {
            u64::from(guards[gi].view(default_safety).atp()).saturating_sub(taken[gi])
        };
        let mut next_seq = st.next_seq.max(1);
        let mut granted = 0usize;
        let mut booked: Vec<i64> = Vec::new();
        let mut events = Vec::with_capacity(group.len());
        let mut decided = Vec::with_capacity(group.len());
        for item in group.iter_mut() {
            if answers[item.idx].is_some() {
                if let Some(key) = item.req.idempotency_key.as_deref() {
                    owned.remove(key);
                    self.release_claim(key);
                }
                continue;
            }
            let req = item.req;
            let rejection = if !status.accepts_holds() {
                Some(HoldRejection::StoreNotAccepting { status })
            } else {
                // As `Engine::hold` does: a hold naming a SKU the engine does not know
                // reports its shortages in request order, any other in SKU id order.
                let lines = &mut item.prep.lines;
                if lines.iter().all(|(id, _, _)| id.is_some()) {
                    lines.sort_unstable_by_key(|(id, _, _)| *id);
                }
                let shortages: Vec<LineShortage> = lines
                    .iter()
                    .filter_map(|(id, q, name)| {
                        let available = match id {
                            Some(id) => ids
                                .binary_search(&id.0)
                                .map_or(0, |gi| atp(&taken, gi, &guards)),
                            None => 0,
                        };
                        (available < *q).then(|| LineShortage {
                            sku: (*name).to_owned(),
                            requested: *q as Qty,
                            available: available.min(u64::from(Qty::MAX)) as Qty,
                        })
                    })
                    .collect();
                if !shortages.is_empty() {
                    Some(HoldRejection::InsufficientStock { shortages })
                } else {
                    None
                }
            };
            if rejection.is_none() && st.active.len() + granted >= limits.store_active_holds_max {
                answers[item.idx] = Some(Err(EngineError::LimitReached {
                    limit: "store_active_holds_max",
                    value: limits.store_active_holds_max as u64,
                }));
                if let Some(key) = req.idempotency_key.as_deref() {
                    owned.remove(key);
                    self.release_claim(key);
                }
                continue;
            }
            let mut expires_at = now.add_ms(item.prep.ttl_ms);
            let rejection = match (rejection, req.slot_start_ms) {
                (None, Some(start_ms)) => match st.slots.check_slot(start_ms, now.as_ms()) {
                    Ok(slot) => {
                        let cal = st.slots.calendar.as_ref();
                        expires_at =
                            Timestamp(cal.map_or(slot.end_ms, |c| c.slot_expiry_ms(&slot)));
                        // Booked now so the next hold of the group sees it.
                        st.slots.book(Some(start_ms));
                        booked.push(start_ms);
                        None
                    }
                    Err(problem) => Some(HoldRejection::SlotUnavailable {
                        slot_start_ms: start_ms,
                        problem,
                    }),
                },
                (r, _) => r,
            };
            if let Some(rejection) = rejection {
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
                        });
                    }
                    None => answers[item.idx] = Some(Ok((HoldOutcome::Rejected(rejection), None))),
                }
                continue;
            }
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
            events.push(Event::HoldGranted {
                hold,
                key: req.idempotency_key.clone(),
                lines,
                expires_at,
                slot: req.slot_start_ms,
            });
            decided.push(Decided {
                idx: item.idx,
                identity: item.prep.identity,
            });
        }
        if events.is_empty() {
            return Ok(None);
        }
        // Shared with the event stream, which keeps it without a copy.
        let record = Arc::new(Record { at: now, events });
        let lsn = match self.log.append_shared(&record) {
            Ok(lsn) => lsn,
            Err(e) => {
                for start_ms in booked {
                    st.slots.unbook(Some(start_ms));
                }
                return Err(e);
            }
        };
        for (g, t) in guards.iter_mut().zip(&taken) {
            // Within the cell's on-hand units (each grant was checked against its ATP).
            g.held += *t as Qty;
        }
        for (ev, d) in record.events.iter().zip(decided) {
            let (key, outcome) = match ev {
                Event::HoldGranted {
                    hold,
                    key,
                    lines,
                    expires_at,
                    slot,
                } => {
                    grant_state_booked(
                        &mut st,
                        *hold,
                        key.as_deref(),
                        lines.as_slice().into(),
                        now,
                        (*expires_at, *slot),
                    );
                    let grant = HoldGrant {
                        hold: *hold,
                        expires_at: *expires_at,
                        lsn,
                    };
                    (key.as_deref(), HoldOutcome::Granted(grant))
                }
                Event::HoldRejected { key, rejection, .. } => {
                    st.idem_fifo.push_back((now, key.as_str().into()));
                    (Some(key.as_str()), HoldOutcome::Rejected(rejection.clone()))
                }
                _ => continue,
            };
            if let Some(key) = key {
                owned.remove(key);
                self.settle_claim(
                    key,
                    IdemEntry::Done {
                        lsn,
                        outcome: outcome.clone(),
                        request: d.identity,
                    },
                );
            }
            answers[d.idx] = Some(Ok((outcome, Some(lsn))));
        }
        Ok(Some(lsn))
    }
}
