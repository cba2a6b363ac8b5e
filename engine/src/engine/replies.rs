//! Replies kept for retries: the first answer to a keyed request that the engine does not
//! deduplicate by key itself, because its second application is refused by the state
//! machine instead (an order transition, a hold's extend, confirm or release, a store
//! change). A caller (the gRPC sidecar) keeps the encoded answer here under the caller's
//! name and the request's idempotency key, with a fingerprint of the request; it is
//! logged ([`Event::ReplyKept`]) and kept in snapshots, so a retry after a restart gets
//! the first answer back instead of a refusal.
//!
//! Bounded: at most [`REPLIES_KEPT_MAX`] answers of at most [`REPLY_KEPT_LEN_MAX`] bytes,
//! [`REPLIES_KEPT_BYTES_MAX`] bytes in all, each for [`REPLY_KEPT_MS`] from when it was kept
//! (the oldest go first). Time is the records' own, and answers are kept in log order, so
//! replay keeps exactly what the live engine kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::engine::commit::Decision;
use crate::engine::{Engine, check_id, poisoned};
use crate::error::EngineError;
use crate::event::{Event, Record};
use crate::types::{Lsn, Timestamp};

/// Most answers kept.
pub const REPLIES_KEPT_MAX: usize = 65_536;
/// Largest answer kept, in bytes.
pub const REPLY_KEPT_LEN_MAX: usize = 16 << 10;
/// Most bytes of answers (and their callers' names and keys) kept in all: 64 MiB.
pub const REPLIES_KEPT_BYTES_MAX: usize = 64 << 20;
/// How long an answer is kept, ms (24 hours).
pub const REPLY_KEPT_MS: i64 = 24 * 3_600_000;
/// Longest caller name.
const PRINCIPAL_LEN_MAX: usize = 256;

/// A kept answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptReply {
    /// What identifies the request under its key (the caller's choice of hash).
    pub fingerprint: u64,
    /// The answer, as the caller encoded it.
    pub response: Arc<[u8]>,
    /// When it was kept.
    pub at: Timestamp,
    /// Its record, which must be durable before the answer is sent again (0 when it was
    /// recovered: durable by then).
    pub lsn: Lsn,
}

/// What a kept answer counts against [`REPLIES_KEPT_BYTES_MAX`].
fn kept_len(key: &ReplyKey, reply: &KeptReply) -> usize {
    key.0.len() + key.1.len() + reply.response.len()
}

/// (caller, idempotency key).
type ReplyKey = (Box<str>, Box<str>);

/// The kept answers, and their keys oldest first. Each keeping has a sequence number, so
/// that a key kept again is dropped by its newest keeping only.
#[derive(Debug, Default)]
pub(crate) struct KeptReplies {
    map: HashMap<ReplyKey, (u64, KeptReply)>,
    order: VecDeque<(u64, ReplyKey)>,
    next: u64,
    /// [`kept_len`] of every answer in `map`.
    bytes: usize,
}

impl KeptReplies {
    /// Keeps `reply` under `key` (replacing an earlier answer), then drops what is too old
    /// at the reply's time or beyond the bound, oldest first.
    fn insert(&mut self, key: ReplyKey, reply: KeptReply) {
        let at = reply.at;
        let seq = self.next;
        self.next += 1;
        self.order.push_back((seq, key.clone()));
        self.bytes += kept_len(&key, &reply);
        if let Some((_, old)) = self.map.insert(key.clone(), (seq, reply)) {
            self.bytes -= kept_len(&key, &old);
        }
        while let Some((seq, oldest)) = self.order.front() {
            // A keeping superseded by a newer one of its key goes; so does the oldest
            // answer once too old, or while there are too many.
            let drop_answer = match self.map.get(oldest) {
                Some((s, r)) if s == seq => {
                    let expired = r.at.0 <= at.0.saturating_sub(REPLY_KEPT_MS);
                    let within =
                        self.map.len() <= REPLIES_KEPT_MAX && self.bytes <= REPLIES_KEPT_BYTES_MAX;
                    if !expired && within {
                        break;
                    }
                    true
                }
                _ => false,
            };
            if let Some((_, key)) = self.order.pop_front()
                && drop_answer
                && let Some((_, old)) = self.map.remove(&key)
            {
                self.bytes -= kept_len(&key, &old);
            }
        }
    }
}

impl Engine {
    /// Keeps `response`, the first OK answer to `principal`'s request with `fingerprint`
    /// under idempotency `key`, for retries ([`Engine::kept_reply`]). Logs it and returns
    /// the record's LSN: the caller sends the answer once that LSN is durable (it is
    /// appended after the request's own records, so it usually rides their commit).
    pub fn keep_reply(
        &self,
        principal: &str,
        key: &str,
        fingerprint: u64,
        response: Vec<u8>,
        now: Timestamp,
    ) -> Result<Lsn, EngineError> {
        check_id("principal", principal, PRINCIPAL_LEN_MAX)?;
        check_id("idempotency_key", key, self.config.limits.key_len_max)?;
        if response.len() > REPLY_KEPT_LEN_MAX {
            return Err(EngineError::invalid(
                "response",
                format!("longer than {REPLY_KEPT_LEN_MAX} bytes"),
            ));
        }
        let record = Record {
            at: now,
            events: vec![Event::ReplyKept {
                principal: principal.to_owned(),
                key: key.to_owned(),
                fingerprint,
                response,
            }],
        };
        // Under the snapshot gate: a snapshot has the record and the answer, or neither.
        // Appended and kept under one lock: answers are kept in log order, as replay
        // keeps them (the order decides which go first). The caller waits.
        let _gate = self.gate.read().map_err(|_| poisoned())?;
        let (lsn, _) = self.commit(
            || Ok(self.replies.lock()),
            |_| Ok(Decision::Log(std::sync::Arc::new(record), ())),
            |replies, record, lsn, ()| {
                let Some(Event::ReplyKept { response, .. }) = record.events.last() else {
                    unreachable!("the record was built with one ReplyKept event")
                };
                replies.insert(
                    (principal.into(), key.into()),
                    KeptReply {
                        fingerprint,
                        response: response.as_slice().into(),
                        at: now,
                        lsn,
                    },
                );
                Ok(lsn)
            },
        )?;
        Ok(lsn)
    }

    /// The answer kept for `principal`'s idempotency `key`, unless older than
    /// [`REPLY_KEPT_MS`] at `now`.
    pub fn kept_reply(&self, principal: &str, key: &str, now: Timestamp) -> Option<KeptReply> {
        let replies = self.replies.lock();
        let (_, reply) = replies.map.get(&(principal.into(), key.into()))?;
        (reply.at.0 > now.0.saturating_sub(REPLY_KEPT_MS)).then(|| reply.clone())
    }

    /// Takes in a logged or snapshotted answer (replay, snapshot load).
    pub(crate) fn keep_reply_replayed(&self, principal: &str, key: &str, reply: KeptReply) {
        self.replies
            .lock()
            .insert((principal.into(), key.into()), reply);
    }

    /// Every kept answer, oldest first, as snapshots store them.
    pub(crate) fn kept_replies(&self) -> Vec<(Box<str>, Box<str>, KeptReply)> {
        let replies = self.replies.lock();
        replies
            .order
            .iter()
            .filter_map(|(seq, key)| {
                let (_, reply) = replies.map.get(key).filter(|(s, _)| s == seq)?;
                Some((key.0.clone(), key.1.clone(), reply.clone()))
            })
            .collect()
    }
}
