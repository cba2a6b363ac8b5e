//! The outbox: every message the notifier owes, its state, and the dead-letter list,
//! kept durable in the [`Journal`] (one JSON [`Entry`] per frame).
//!
//! Architecture invariant: an entry is written to the journal (and fsynced) before anything
//! it decides is acted on (a send, the engine cursor's acknowledgement, an answer to an
//! operator), so the state after a restart is at least the state anyone was told about. An entry that would change nothing (a second enqueue of the same
//! key, a replay of a message that is not dead) is not written at all.
//!
//! Each message has one key per (order, kind, channel): the deduplication key. A key is
//! enqueued once; only a pending reminder is replaced by a later enqueue (it is
//! rescheduled when the hold is extended).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{
    MsgKey,
    journal::{Journal, JournalError},
};

/// Finished (sent or skipped) keys older than this are forgotten when the journal is
/// compacted: the planned-LSN mark already keeps their events from being planned again,
/// and by then their orders have ended.
pub const FINISHED_RETENTION_MS: i64 = 3 * 86_400_000;

/// A message owed to a customer: who, in which locale, and the facts its template renders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// (order, kind, channel): the deduplication key.
    pub key: MsgKey,
    /// Email address or phone number. Never logged.
    pub to: String,
    /// The order's locale (or the default).
    pub locale: String,
    /// Template context (order, store, code, times in the store's zone).
    pub ctx: serde_json::Value,
    /// Not sent before this time (a reminder's due time; else the event's time).
    pub due_ms: i64,
    /// Time of the event that caused it (for the event-to-send latency).
    pub event_ms: i64,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Entry {
    /// A message is owed.
    Enqueued {
        /// It.
        msg: Message,
    },
    /// No message for this key: no consent, no address or the channel is off.
    Skipped {
        /// The key.
        key: MsgKey,
        /// Why.
        reason: String,
    },
    /// A pending message is no longer wanted (a reminder of an order that ended).
    Cancelled {
        /// The key.
        key: MsgKey,
        /// Why.
        reason: String,
    },
    /// An attempt failed and will be retried at `next_ms`.
    Failed {
        /// The key.
        key: MsgKey,
        /// Attempts made so far.
        attempt: u32,
        /// The provider's answer.
        error: String,
        /// When to try again.
        next_ms: i64,
    },
    /// The provider accepted the message.
    Sent {
        /// The key.
        key: MsgKey,
        /// Attempts it took.
        attempt: u32,
        /// When.
        at_ms: i64,
    },
    /// Given up: on the dead-letter list.
    Dead {
        /// The key.
        key: MsgKey,
        /// Attempts made.
        attempt: u32,
        /// The last error.
        error: String,
        /// When.
        at_ms: i64,
    },
    /// An operator replayed a dead letter: pending again, attempts from zero.
    Replayed {
        /// The key.
        key: MsgKey,
        /// When.
        at_ms: i64,
    },
    /// Every event up to this LSN has been planned (its entries are before this one).
    Planned {
        /// The LSN.
        lsn: u64,
    },
}

/// Where a message stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// To be sent at `next_ms`.
    Pending {
        /// Attempts made.
        attempts: u32,
        /// Earliest next attempt.
        next_ms: i64,
    },
    /// Accepted by the provider.
    Sent {
        /// When.
        at_ms: i64,
    },
    /// Not sent, by rule.
    Skipped {
        /// Why.
        reason: String,
    },
    /// On the dead-letter list.
    Dead {
        /// Attempts made.
        attempts: u32,
        /// When.
        at_ms: i64,
    },
}

/// A key's state.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The message (none for a key that was skipped without one).
    pub msg: Option<Message>,
    /// Its status.
    pub status: Status,
    /// The last provider error.
    pub last_error: Option<String>,
}

/// A message due for an attempt.
#[derive(Clone, Debug)]
pub struct Due {
    /// The message.
    pub msg: Message,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// The state the journal's entries build.
#[derive(Debug, Default, Clone)]
struct State {
    slots: BTreeMap<MsgKey, Slot>,
    /// Pending keys by next attempt time.
    due: BTreeSet<(i64, MsgKey)>,
    planned_lsn: u64,
}

/// The outbox: the journal and the state it builds.
#[derive(Debug)]
pub struct Outbox {
    journal: Journal,
    state: State,
    compact_bytes: u64,
    /// Journal size that triggers the next compaction.
    compact_at: u64,
    /// Encoded entries applied to the state but not yet written (see [`Outbox::stage`]).
    staged: Vec<Vec<u8>>,
}

impl Outbox {
    /// Opens the journal at `path` and rebuilds the state from it. Returns the outbox and
    /// the bytes of a torn tail that were cut off.
    pub fn open(path: &Path, compact_bytes: u64) -> Result<(Outbox, u64), JournalError> {
        let (journal, recovered) = Journal::open(path)?;
        let mut outbox = Outbox {
            journal,
            state: State::default(),
            compact_bytes,
            compact_at: compact_bytes,
            staged: Vec::new(),
        };
        for (i, payload) in recovered.payloads.iter().enumerate() {
            let entry: Entry =
                serde_json::from_slice(payload).map_err(|e| JournalError::Corrupt {
                    path: path.to_owned(),
                    offset: i as u64,
                    detail: format!("record {i} does not decode: {e}"),
                })?;
            outbox.state.apply(entry);
        }
        Ok((outbox, recovered.torn_tail_bytes))
    }

    /// The last LSN whose events were planned.
    pub fn planned_lsn(&self) -> u64 {
        self.state.planned_lsn
    }

    /// A key's state.
    pub fn slot(&self, key: &MsgKey) -> Option<&Slot> {
        self.state.slots.get(key)
    }

    /// Applies the entries that change something to the state and keeps them for the
    /// next [`Outbox::commit`]. Returns how many were kept.
    ///
    /// Staged entries are not yet durable: nothing they decide may be acted on (a send,
    /// an engine acknowledgement, an answer to an operator) before `commit` returns.
    /// Staging lets the entries of many events share one fsync while each event is
    /// planned against the state the earlier ones left.
    pub fn stage(&mut self, entries: Vec<Entry>) -> usize {
        let mut n = 0;
        for e in entries {
            if self.state.changes(&e) {
                self.staged
                    .push(serde_json::to_vec(&e).expect("entries serialize"));
                self.state.apply(e);
                n += 1;
            }
        }
        n
    }

    /// Whether entries are staged and not yet durable.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Makes the staged entries durable (one write, one fsync). On error they stay staged
    /// and the next commit tries again.
    pub fn commit(&mut self, now_ms: i64) -> Result<(), JournalError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.journal.append(&self.staged)?;
        self.staged.clear();
        if self.journal.len_bytes() > self.compact_at {
            self.compact(Some(now_ms))?;
            // A live state larger than the threshold must not be rewritten on every batch.
            self.compact_at = self.compact_bytes.max(2 * self.journal.len_bytes());
        }
        Ok(())
    }

    /// [`Outbox::stage`] and [`Outbox::commit`]: returns how many entries were written.
    pub fn record(&mut self, entries: Vec<Entry>, now_ms: i64) -> Result<usize, JournalError> {
        let n = self.stage(entries);
        self.commit(now_ms)?;
        Ok(n)
    }

    /// Pending messages due at `now_ms`, earliest first, skipping `busy` keys, at most `max`.
    pub fn due(&self, now_ms: i64, max: usize, busy: &BTreeSet<MsgKey>) -> Vec<Due> {
        let mut out = Vec::new();
        for (next, key) in &self.state.due {
            if *next > now_ms || out.len() >= max {
                break;
            }
            if busy.contains(key) {
                continue;
            }
            if let Some(Slot {
                msg: Some(msg),
                status: Status::Pending { attempts, .. },
                ..
            }) = self.state.slots.get(key)
            {
                out.push(Due {
                    msg: msg.clone(),
                    attempts: *attempts,
                });
            }
        }
        out
    }

    /// When the earliest pending message is due.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.state.due.first().map(|(t, _)| *t)
    }

    /// The dead-letter list, oldest key first.
    pub fn dead(&self) -> Vec<(MsgKey, Slot)> {
        self.state
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.status, Status::Dead { .. }))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// Counts by status: (pending, sent, skipped, dead).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for s in self.state.slots.values() {
            match s.status {
                Status::Pending { .. } => c.0 += 1,
                Status::Sent { .. } => c.1 += 1,
                Status::Skipped { .. } => c.2 += 1,
                Status::Dead { .. } => c.3 += 1,
            }
        }
        c
    }

    /// Rewrites the journal with the live state only; finished keys finished before
    /// `now_ms - FINISHED_RETENTION_MS` (when given) are dropped.
    pub fn compact(&mut self, now_ms: Option<i64>) -> Result<(), JournalError> {
        let horizon = now_ms.map(|t| t - FINISHED_RETENTION_MS);
        let mut entries = Vec::new();
        let mut dropped = Vec::new();
        for (key, s) in &self.state.slots {
            let enq = |entries: &mut Vec<Entry>| {
                if let Some(m) = &s.msg {
                    entries.push(Entry::Enqueued { msg: m.clone() });
                }
            };
            match &s.status {
                Status::Pending { attempts, next_ms } => {
                    enq(&mut entries);
                    if *attempts > 0 {
                        entries.push(Entry::Failed {
                            key: key.clone(),
                            attempt: *attempts,
                            error: s.last_error.clone().unwrap_or_default(),
                            next_ms: *next_ms,
                        });
                    }
                }
                Status::Dead { attempts, at_ms } => {
                    enq(&mut entries);
                    entries.push(Entry::Dead {
                        key: key.clone(),
                        attempt: *attempts,
                        error: s.last_error.clone().unwrap_or_default(),
                        at_ms: *at_ms,
                    });
                }
                Status::Sent { at_ms } => {
                    if horizon.is_some_and(|h| *at_ms < h) {
                        dropped.push(key.clone());
                    } else {
                        entries.push(Entry::Sent {
                            key: key.clone(),
                            attempt: 0,
                            at_ms: *at_ms,
                        });
                    }
                }
                Status::Skipped { reason } => {
                    let at = s.msg.as_ref().map(|m| m.event_ms).unwrap_or(i64::MAX);
                    if horizon.is_some_and(|h| at < h) {
                        dropped.push(key.clone());
                    } else {
                        entries.push(Entry::Skipped {
                            key: key.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
        entries.push(Entry::Planned {
            lsn: self.state.planned_lsn,
        });
        let payloads: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| serde_json::to_vec(e).expect("entries serialize"))
            .collect();
        self.journal.rewrite(&payloads)?;
        for k in dropped {
            self.state.slots.remove(&k);
        }
        Ok(())
    }
}

impl State {
    /// Whether `entry` would change the state.
    fn changes(&self, entry: &Entry) -> bool {
        let slot = |k: &MsgKey| self.slots.get(k);
        let pending =
            |k: &MsgKey| matches!(slot(k).map(|s| &s.status), Some(Status::Pending { .. }));
        match entry {
            Entry::Enqueued { msg } => match slot(&msg.key) {
                None => true,
                Some(s) => {
                    msg.key.kind == super::Kind::Reminder
                        && matches!(s.status, Status::Pending { attempts: 0, .. })
                        && s.msg.as_ref() != Some(msg)
                }
            },
            Entry::Skipped { key, .. } => slot(key).is_none(),
            Entry::Cancelled { key, .. } => pending(key),
            Entry::Failed { key, .. } | Entry::Dead { key, .. } => pending(key),
            // A sent key without its message is a compacted journal's marker.
            Entry::Sent { key, .. } => pending(key) || slot(key).is_none(),
            Entry::Replayed { key, .. } => {
                matches!(slot(key).map(|s| &s.status), Some(Status::Dead { .. }))
            }
            Entry::Planned { lsn } => *lsn > self.planned_lsn,
        }
    }

    fn unschedule(&mut self, key: &MsgKey) {
        if let Some(Slot {
            status: Status::Pending { next_ms, .. },
            ..
        }) = self.slots.get(key)
        {
            self.due.remove(&(*next_ms, key.clone()));
        }
    }

    fn set_pending(&mut self, key: &MsgKey, attempts: u32, next_ms: i64) {
        self.unschedule(key);
        if let Some(s) = self.slots.get_mut(key) {
            s.status = Status::Pending { attempts, next_ms };
            self.due.insert((next_ms, key.clone()));
        }
    }

    fn set_final(&mut self, key: &MsgKey, status: Status, error: Option<String>) {
        self.unschedule(key);
        let s = self.slots.entry(key.clone()).or_insert(Slot {
            msg: None,
            status: status.clone(),
            last_error: None,
        });
        s.status = status;
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// Applies one entry to the state (recovery and [`Outbox::record`]).
    fn apply(&mut self, entry: Entry) {
        if !self.changes(&entry) {
            return;
        }
        match entry {
            Entry::Enqueued { msg } => {
                let key = msg.key.clone();
                let due = msg.due_ms;
                self.unschedule(&key);
                self.slots.insert(
                    key.clone(),
                    Slot {
                        msg: Some(msg),
                        status: Status::Pending {
                            attempts: 0,
                            next_ms: due,
                        },
                        last_error: None,
                    },
                );
                self.due.insert((due, key));
            }
            Entry::Skipped { key, reason } | Entry::Cancelled { key, reason } => {
                self.set_final(&key, Status::Skipped { reason }, None);
            }
            Entry::Failed {
                key,
                attempt,
                error,
                next_ms,
            } => {
                self.set_pending(&key, attempt, next_ms);
                if let Some(s) = self.slots.get_mut(&key) {
                    s.last_error = Some(error);
                }
            }
            Entry::Sent { key, at_ms, .. } => self.set_final(&key, Status::Sent { at_ms }, None),
            Entry::Dead {
                key,
                attempt,
                error,
                at_ms,
            } => self.set_final(
                &key,
                Status::Dead {
                    attempts: attempt,
                    at_ms,
                },
                Some(error),
            ),
            Entry::Replayed { key, at_ms } => self.set_pending(&key, 0, at_ms),
            Entry::Planned { lsn } => self.planned_lsn = lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Channel, Kind};

    fn msg(kind: Kind, due_ms: i64) -> Message {
        Message {
            key: MsgKey {
                order: 7,
                kind,
                channel: Channel::Email,
            },
            to: "a@example.com".into(),
            locale: "en".into(),
            ctx: serde_json::json!({}),
            due_ms,
            event_ms: 1,
        }
    }

    #[test]
    fn dedupe_retry_dead_replay_and_recovery() {
        let dir = std::env::temp_dir().join(format!("pickline-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("outbox.log");
        let ready = msg(Kind::Ready, 10);
        let key = ready.key.clone();
        {
            let (mut o, _) = Outbox::open(&path, 1 << 20).unwrap();
            let e = Entry::Enqueued { msg: ready.clone() };
            assert_eq!(o.record(vec![e.clone(), e.clone()], 0).unwrap(), 1);
            // A second enqueue of the same key, or a skip, changes nothing.
            let skip = Entry::Skipped {
                key: key.clone(),
                reason: "x".into(),
            };
            assert_eq!(o.record(vec![e, skip], 0).unwrap(), 0);
            assert_eq!(o.due(9, 10, &BTreeSet::new()).len(), 0);
            assert_eq!(o.due(10, 10, &BTreeSet::new()).len(), 1);
            let failed = Entry::Failed {
                key: key.clone(),
                attempt: 1,
                error: "503".into(),
                next_ms: 50,
            };
            let dead = Entry::Dead {
                key: key.clone(),
                attempt: 2,
                error: "503".into(),
                at_ms: 60,
            };
            o.record(vec![failed, dead], 0).unwrap();
            assert_eq!(o.dead().len(), 1);
            assert!(o.due(1_000, 10, &BTreeSet::new()).is_empty());
            // A reminder is replaced while pending, never after it was sent.
            let r1 = msg(Kind::Reminder, 100);
            let mut r2 = r1.clone();
            r2.due_ms = 200;
            o.record(
                vec![
                    Entry::Enqueued { msg: r1.clone() },
                    Entry::Enqueued { msg: r2.clone() },
                ],
                0,
            )
            .unwrap();
            assert_eq!(o.next_due_ms(), Some(200));
            o.record(vec![Entry::Planned { lsn: 42 }], 0).unwrap();
        }
        let (mut o, torn) = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(torn, 0);
        assert_eq!(o.planned_lsn(), 42);
        assert_eq!(o.dead().len(), 1);
        assert_eq!(o.next_due_ms(), Some(200));
        assert_eq!(
            o.record(
                vec![Entry::Replayed {
                    key: key.clone(),
                    at_ms: 70
                }],
                0
            )
            .unwrap(),
            1
        );
        let due = o.due(70, 10, &BTreeSet::new());
        assert_eq!((due.len(), due[0].attempts), (1, 0));
        o.record(
            vec![Entry::Sent {
                key: key.clone(),
                attempt: 1,
                at_ms: 80,
            }],
            0,
        )
        .unwrap();
        assert_eq!(o.counts(), (1, 1, 0, 0));
        // Compaction keeps the live state.
        o.compact(Some(90)).unwrap();
        drop(o);
        let (o, _) = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.counts(), (1, 1, 0, 0));
        assert_eq!((o.planned_lsn(), o.next_due_ms()), (42, Some(200)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
