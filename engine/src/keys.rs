//! The one idempotency key table of requests the engine answers as a whole (keyed
//! allocations, keyed batches): a key is claimed while its request runs, then keeps the
//! request's identity and its answer for the dedupe window, in arrival order for aging out
//! and for snapshots.
//!
//! Holds keyed one by one keep their keys in their store's state instead (decided under the
//! store's lock with the hold itself), and kept replies of state transitions in
//! [`crate::replies`], whose entries outlive the dedupe window.

use std::collections::VecDeque;

use dashmap::{DashMap, mapref::entry::Entry};
use parking_lot::Mutex;

use crate::{error::EngineError, types::Timestamp};

/// Where a key stands.
enum Slot<T> {
    /// Its request is running.
    Pending,
    /// Its request was answered.
    Done {
        /// When the answer was kept (the arrival order's time for this key).
        at: Timestamp,
        /// What identifies the request (a CRC-32C of its fields), so a retry must repeat it.
        request: u32,
        answer: T,
        /// The answer's share of the table's bound (1 per allocation, 1 per batch answer).
        weight: usize,
    },
}

/// What [`KeyTable::claim`] found.
#[derive(Debug)]
pub(crate) enum Claim<T> {
    /// The key is now this caller's: run the request, then [`KeyTable::finish`] or
    /// [`KeyTable::abandon`].
    Claimed,
    /// The key's first request still runs.
    InFlight,
    /// The key answered this request before: the kept answer.
    Done(T),
}

/// Kept keys in arrival order and the weight they keep.
#[derive(Default)]
struct Kept {
    order: VecDeque<(Timestamp, Box<str>)>,
    weight: usize,
}

/// Keys of whole requests and their kept answers; see the module docs.
pub(crate) struct KeyTable<T> {
    map: DashMap<Box<str>, Slot<T>>,
    kept: Mutex<Kept>,
    /// Largest total weight kept (and claimed).
    weight_max: usize,
    /// The limit's name in [`EngineError::LimitReached`].
    limit: &'static str,
}

/// Kept keys aged out per call at most (bounds the work of one request).
const AGE_OUT_PER_CALL: usize = 64;

impl<T: Clone> KeyTable<T> {
    /// An empty table keeping at most `weight_max` weight, named `limit` when full.
    pub(crate) fn new(limit: &'static str, weight_max: usize) -> KeyTable<T> {
        KeyTable {
            map: DashMap::new(),
            kept: Mutex::new(Kept::default()),
            weight_max,
            limit,
        }
    }

    /// Claims `key` for a request identified by `request` and weighing `weight`, after
    /// aging out keys kept at or before `horizon`. A key kept for another request is
    /// [`EngineError::IdempotencyKeyReused`]; a full table [`EngineError::LimitReached`].
    pub(crate) fn claim(
        &self,
        key: &str,
        request: u32,
        weight: usize,
        horizon: Timestamp,
    ) -> Result<Claim<T>, EngineError> {
        self.age_out(horizon);
        // Lock order: `kept`, then the map's shard, as in every other method. Taking the
        // shard first (for `entry`) and `kept` inside it deadlocked against `finish`
        // under concurrent keyed batches (found by the gRPC bench's smoke test).
        let kept = self.kept.lock();
        match self.map.entry(key.into()) {
            Entry::Occupied(e) => match e.get() {
                Slot::Pending => Ok(Claim::InFlight),
                Slot::Done { request: r, .. } if *r != request => {
                    Err(EngineError::IdempotencyKeyReused {
                        key: key.to_owned(),
                    })
                }
                Slot::Done { answer, .. } => Ok(Claim::Done(answer.clone())),
            },
            Entry::Vacant(v) => {
                if kept.weight + weight > self.weight_max {
                    return Err(EngineError::LimitReached {
                        limit: self.limit,
                        value: self.weight_max as u64,
                    });
                }
                v.insert(Slot::Pending);
                Ok(Claim::Claimed)
            }
        }
    }

    /// Frees `key` claimed by a request that failed, with any answer it kept before it
    /// failed (its record may not be durable): its retry runs again.
    pub(crate) fn abandon(&self, key: &str) {
        let mut kept = self.kept.lock();
        if let Some((_, Slot::Done { weight, .. })) = self.map.remove(key) {
            assert!(kept.weight >= weight, "key table weight below an entry's");
            kept.weight -= weight;
        }
    }

    /// Keeps `answer` to `request` under `key` as of `at` (live after a claim, or from log
    /// replay and snapshot loading, which claim nothing). A key kept again replaces its
    /// earlier answer.
    pub(crate) fn finish(&self, key: &str, request: u32, answer: T, weight: usize, at: Timestamp) {
        let slot = Slot::Done {
            at,
            request,
            answer,
            weight,
        };
        let mut kept = self.kept.lock();
        if let Some(Slot::Done { weight: old, .. }) = self.map.insert(key.into(), slot) {
            assert!(kept.weight >= old, "key table weight below an entry's");
            kept.weight -= old;
        }
        kept.order.push_back((at, key.into()));
        kept.weight += weight;
    }

    /// Drops up to [`AGE_OUT_PER_CALL`] of the oldest answers kept at or before `horizon`.
    /// A key kept again later stays (its arrival-order entry is the later one).
    fn age_out(&self, horizon: Timestamp) {
        let mut kept = self.kept.lock();
        for _ in 0..AGE_OUT_PER_CALL {
            match kept.order.front() {
                Some((t, _)) if *t <= horizon => {}
                _ => break,
            }
            let Some((t, key)) = kept.order.pop_front() else {
                break;
            };
            let removed = self.map.remove_if(
                &key,
                |_, slot| matches!(slot, Slot::Done { at, .. } if *at == t),
            );
            if let Some((_, Slot::Done { weight, .. })) = removed {
                assert!(kept.weight >= weight, "key table weight below an entry's");
                kept.weight -= weight;
            }
        }
    }

    /// The kept answers, oldest first, as `(key, kept at, request, answer)` for which
    /// `pick` returns `Some` (for snapshots).
    pub(crate) fn kept<U>(
        &self,
        mut pick: impl FnMut(&T) -> Option<U>,
    ) -> Vec<(Box<str>, Timestamp, u32, U)> {
        let kept = self.kept.lock();
        kept.order
            .iter()
            .filter_map(|(t, key)| match self.map.get(key)?.value() {
                Slot::Done {
                    at,
                    request,
                    answer,
                    ..
                } if at == t => Some((key.clone(), *at, *request, pick(answer)?)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_ms(1_000_000);
    /// A horizon before everything kept: nothing ages out.
    const NONE_OLD: Timestamp = Timestamp::from_ms(0);

    /// Claims and finishes on many keys from several threads at once never deadlock
    /// (`claim` once took the map's shard before `kept`, `finish` the other way round).
    #[test]
    fn concurrent_claims_and_finishes_never_deadlock() {
        let table = std::sync::Arc::new(KeyTable::<u64>::new("keys_max", usize::MAX));
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..4u64 {
            let (table, tx) = (table.clone(), tx.clone());
            std::thread::spawn(move || {
                for i in 0..50_000u64 {
                    let key = format!("k{t}-{i}");
                    if let Ok(Claim::Claimed) = table.claim(&key, 1, 1, NONE_OLD) {
                        table.finish(&key, 1, i, 1, T0);
                    }
                }
                let _ = tx.send(());
            });
        }
        for _ in 0..4 {
            assert!(
                rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(),
                "claims and finishes deadlocked"
            );
        }
    }

    fn table() -> KeyTable<&'static str> {
        KeyTable::new("TEST_MAX", 3)
    }

    #[test]
    fn a_key_runs_once_and_answers_its_retries() {
        let t = table();
        assert!(matches!(
            t.claim("k", 7, 1, NONE_OLD).unwrap(),
            Claim::Claimed
        ));
        assert!(matches!(
            t.claim("k", 7, 1, NONE_OLD).unwrap(),
            Claim::InFlight
        ));
        t.finish("k", 7, "first", 1, T0);
        assert!(matches!(
            t.claim("k", 7, 1, NONE_OLD).unwrap(),
            Claim::Done("first")
        ));
        assert!(matches!(
            t.claim("k", 8, 1, NONE_OLD),
            Err(EngineError::IdempotencyKeyReused { .. })
        ));
    }

    #[test]
    fn an_abandoned_key_runs_again() {
        let t = table();
        assert!(matches!(
            t.claim("k", 7, 1, NONE_OLD).unwrap(),
            Claim::Claimed
        ));
        t.abandon("k");
        assert!(matches!(
            t.claim("k", 7, 1, NONE_OLD).unwrap(),
            Claim::Claimed
        ));
        // Kept, then its request failed (its record not durable): forgotten, weight freed.
        t.finish("k", 7, "kept", 3, T0);
        t.abandon("k");
        assert!(matches!(
            t.claim("k", 7, 3, NONE_OLD).unwrap(),
            Claim::Claimed
        ));
    }

    #[test]
    fn the_table_is_bounded_by_weight_and_ages_out() {
        let t = table();
        t.finish("a", 1, "a", 2, T0);
        t.finish("b", 1, "b", 1, T0.add_ms(10));
        assert!(matches!(
            t.claim("c", 1, 1, T0.add_ms(-1)),
            Err(EngineError::LimitReached {
                limit: "TEST_MAX",
                ..
            })
        ));
        // "a" ages out: its weight is free again, "b" stays.
        assert!(matches!(t.claim("c", 1, 2, T0).unwrap(), Claim::Claimed));
        assert_eq!(t.kept(|a| Some(*a)).len(), 1);
        assert!(matches!(t.claim("b", 1, 1, T0).unwrap(), Claim::Done("b")));
    }

    #[test]
    fn a_key_kept_again_is_not_aged_out_by_its_older_entry() {
        let t = table();
        t.finish("k", 1, "old", 1, T0);
        t.finish("k", 1, "new", 1, T0.add_ms(100));
        t.age_out(T0);
        assert!(matches!(
            t.claim("k", 1, 1, NONE_OLD).unwrap(),
            Claim::Done("new")
        ));
        let kept = t.kept(|a| Some(*a));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].3, "new");
        assert_eq!(t.kept.lock().weight, 1);
    }
}
