//! Idempotency of the mutations the engine does not deduplicate by key itself: order
//! transitions (start picking, report short, mark ready, verify code, collect, no-show,
//! cancel, staff override), hold extend, confirm and release, the store changes (upsert,
//! hours, staffing, slot config, pause, resume), safety stock, POS batches, and event
//! consumer registration and acknowledgement.
//!
//! The contract (common.proto) promises that a retry with the same idempotency key returns
//! the original outcome and changes nothing, and that a key reused for a different request
//! fails with ALREADY_EXISTS. Holds, POS events and allocations keep their keys in the
//! engine; these requests are state transitions whose second application is refused by
//! the state machine (the order is no longer where the first call found it), so without
//! this a client retrying after a lost response would see FAILED_PRECONDITION for a call
//! that succeeded. [`Replies`] keeps the first OK response per (caller, key), with a
//! fingerprint of the RPC and the request bytes:
//!
//! - same key, same request, answered before: the stored response, unchanged, nothing
//!   re-executed;
//! - same key, same request, still running: UNAVAILABLE with a retry hint (as for holds);
//! - same key, different request (or RPC): ALREADY_EXISTS (`IDEMPOTENCY_KEY_REUSED`);
//! - a request that ended in an error status is not kept: its retry runs again; nor is a
//!   response over [`REPLY_LEN_MAX`].
//!
//! Every OK response is also kept by the engine ([`Engine::keep_reply`]): logged right
//! after the request's own records and sent only once that record is durable (the
//! request's durability waits are deferred to [`Keyed::run`], so both usually ride one
//! commit), restored by replay and snapshots. A retry after a restart gets the first
//! response back from there, for the engine's retention (24 hours, the newest 65,536).
//! In memory, at most [`REPLIES_MAX`] responses are kept (spread over [`SHARDS`]
//! independently locked shards, each keeping its share) for at most [`REPLY_RETENTION`],
//! and the requests running now. A retry after both let the key go runs again: an order
//! transition then meets the state machine and is still never applied twice; an Extend
//! extends again from the later clock (a hold is never extended past its store's maximum).

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use prost::Message;
use tonic::{Response, Status};

use pickline_engine::Engine;

use crate::{
    grpc::auth::Caller,
    grpc::domain::{Domain, KEYED_WAIT, now},
    grpc::status::DomainError,
    pb,
};

/// Most responses kept.
pub const REPLIES_MAX: usize = 65_536;
/// Independently locked parts of the cache, by key hash: every keyed Release, Confirm and
/// order transition passes through it twice (begin, finish), so one lock was a point where
/// the two workers queued (about 20% of the `sched_yield` calls in the Hold + Release
/// phase of `pickline bench grpc`).
pub const SHARDS: usize = 16;
/// Largest response kept, in encoded bytes. A larger one (a POS batch of hundreds of
/// events) frees its key like an error does: its retry runs again (POS events are still
/// deduplicated by their own ids). Bounds the cache at `REPLIES_MAX` x 16 KiB = 1 GiB in
/// the worst case; answers are a few hundred bytes in practice.
pub const REPLY_LEN_MAX: usize = 16 << 10;
/// How long a response is kept for retries.
pub const REPLY_RETENTION: Duration = Duration::from_secs(24 * 3_600);

/// (principal, idempotency key).
type Key = (String, String);

enum Entry {
    Running { fingerprint: u64 },
    Done { fingerprint: u64, response: Vec<u8> },
}

#[derive(Default)]
struct Inner {
    /// Each key's entry and when it was inserted.
    map: HashMap<Key, (Instant, Entry)>,
    /// Keys by insertion time, oldest first, for eviction. A key freed by an error and
    /// used again is here twice; only the push matching the entry's time evicts it.
    order: VecDeque<(Instant, Key)>,
}

/// First responses of keyed mutations; see the module docs.
#[derive(Default)]
pub struct Replies {
    shards: [Mutex<Inner>; SHARDS],
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies")
            .field("kept", &self.len())
            .finish()
    }
}

/// What [`Replies::begin`] found.
#[derive(Debug)]
pub enum Begun<'a, T> {
    /// The request was answered before: send this again.
    Replay(T),
    /// Run the request, then hand its result to [`Ticket::finish`].
    Run(Ticket<'a>),
}

/// A request being run under its key. Dropped without [`Ticket::finish`] (the handler
/// returned early or the client went away), the key is free again.
#[derive(Debug)]
pub struct Ticket<'a> {
    replies: &'a Replies,
    key: Option<Key>,
    fingerprint: u64,
}

impl Replies {
    /// Prepares to run `caller`'s request `req` under `key`: fingerprints it now, before
    /// the handler takes it apart; [`Keyed::run`] then runs it once.
    pub fn keyed<'a, Req: Message>(
        &'a self,
        domain: &'a Domain,
        caller: &Caller,
        key: &str,
        req: &Req,
    ) -> Keyed<'a> {
        Keyed {
            replies: self,
            domain,
            caller: caller.clone(),
            key: key.to_owned(),
            fingerprint: fingerprint(caller, req),
        }
    }

    /// Looks `key` up for `caller`'s request with this `fingerprint` (see [`fingerprint`]).
    pub fn begin<Resp: Message + Default>(
        &self,
        caller: &Caller,
        key: &str,
        fingerprint: u64,
    ) -> Result<Begun<'_, Resp>, Status> {
        let k: Key = (caller.principal().name().to_owned(), key.to_owned());
        let mut inner = self.shard(&k).lock();
        match inner.map.get(&k).map(|(_, e)| e) {
            Some(Entry::Done {
                fingerprint: f,
                response,
            }) if *f == fingerprint => {
                return Resp::decode(response.as_slice())
                    .map(Begun::Replay)
                    .map_err(|e| Status::internal(format!("stored response: {e}")));
            }
            Some(Entry::Running { fingerprint: f }) if *f == fingerprint => {
                return Err(DomainError::InFlight {
                    key: key.to_owned(),
                }
                .into());
            }
            Some(_) => {
                return Err(DomainError::IdempotencyKeyReused {
                    key: key.to_owned(),
                }
                .into());
            }
            None => {}
        }
        let now = Instant::now();
        evict(&mut inner, now);
        inner
            .map
            .insert(k.clone(), (now, Entry::Running { fingerprint }));
        inner.order.push_back((now, k.clone()));
        Ok(Begun::Run(Ticket {
            replies: self,
            key: Some(k),
            fingerprint,
        }))
    }

    /// Responses kept now (running requests included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// The shard that keeps `key`.
    fn shard(&self, key: &Key) -> &Mutex<Inner> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() % SHARDS as u64) as usize]
    }

    /// No response is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket<'_> {
    /// Keeps an OK `result` for retries (an error frees the key) and returns it.
    pub fn finish<T: Message>(self, result: Result<T, Status>) -> Result<T, Status> {
        let encoded = result.as_ref().ok().map(Message::encode_to_vec);
        self.finish_encoded(result, encoded)
    }

    /// [`Ticket::finish`] with the OK response already encoded (`encoded`).
    pub fn finish_encoded<T>(
        mut self,
        result: Result<T, Status>,
        encoded: Option<Vec<u8>>,
    ) -> Result<T, Status> {
        let Some(key) = self.key.take() else {
            return result;
        };
        let encoded = encoded.filter(|bytes| result.is_ok() && bytes.len() <= REPLY_LEN_MAX);
        let mut inner = self.replies.shard(&key).lock();
        match (encoded, inner.map.get_mut(&key)) {
            // Still ours (eviction may have dropped it meanwhile: then keep nothing).
            (Some(response), Some((_, entry))) => {
                *entry = Entry::Done {
                    fingerprint: self.fingerprint,
                    response,
                };
            }
            (None, Some(_)) => {
                inner.map.remove(&key);
            }
            (_, None) => {}
        }
        result
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.replies.shard(&key).lock();
            if matches!(inner.map.get(&key), Some((_, Entry::Running { .. }))) {
                inner.map.remove(&key);
            }
        }
    }
}

/// Drops a shard's oldest entries beyond its share of [`REPLIES_MAX`] or older than
/// [`REPLY_RETENTION`].
fn evict(inner: &mut Inner, now: Instant) {
    while let Some((at, _)) = inner.order.front() {
        let expired = now.duration_since(*at) >= REPLY_RETENTION;
        if !expired && inner.order.len() < REPLIES_MAX / SHARDS {
            break;
        }
        if let Some((at, key)) = inner.order.pop_front()
            && inner
                .map
                .get(&key)
                .is_some_and(|(inserted, _)| *inserted == at)
        {
            inner.map.remove(&key);
        }
    }
}

/// Sets a response's `replayed` flag, where it has one, when [`Replies`] sends it again.
pub trait MarkReplayed {
    /// Whether the engine keeps the response for retries after a restart. Not for
    /// requests that change nothing when repeated (RegisterConsumer, Ack): a record per
    /// Ack would only grow the log.
    const KEPT_DURABLY: bool = true;

    /// Marks the response as a replay of the first one.
    fn mark_replayed(&mut self) {}
}

/// Responses with a `replayed` field: a replay sets it.
macro_rules! replayed_flag {
    ($($response:ty),* $(,)?) => {
        $(impl MarkReplayed for $response {
            fn mark_replayed(&mut self) {
                self.replayed = true;
            }
        })*
    };
}

replayed_flag!(
    pb::CollectResponse,
    pb::ExtendResponse,
    pb::ConfirmResponse,
    pb::ReleaseResponse,
);

impl MarkReplayed for pb::StartPickingResponse {}
impl MarkReplayed for pb::ReportShortResponse {}
impl MarkReplayed for pb::MarkReadyResponse {}
impl MarkReplayed for pb::VerifyCodeResponse {}
impl MarkReplayed for pb::NoShowResponse {}
impl MarkReplayed for pb::CancelResponse {}
impl MarkReplayed for pb::StaffOverrideResponse {}
impl MarkReplayed for pb::UpsertStoreResponse {}
impl MarkReplayed for pb::SetHoursResponse {}
impl MarkReplayed for pb::SetStaffingResponse {}
impl MarkReplayed for pb::SetSlotConfigResponse {}
impl MarkReplayed for pb::PausePickupsResponse {}
impl MarkReplayed for pb::ResumePickupsResponse {}
impl MarkReplayed for pb::ApplyPosEventsResponse {}
impl MarkReplayed for pb::SetSafetyStockResponse {}
impl MarkReplayed for pb::RegisterConsumerResponse {
    const KEPT_DURABLY: bool = false;
}
impl MarkReplayed for pb::AckResponse {
    const KEPT_DURABLY: bool = false;
}

/// A request fingerprinted under its key; see [`Replies::keyed`].
#[derive(Debug)]
pub struct Keyed<'a> {
    replies: &'a Replies,
    domain: &'a Domain,
    caller: Caller,
    key: String,
    fingerprint: u64,
}

impl Keyed<'_> {
    /// Runs `run` unless the key answered this request before (then its first response
    /// comes back, with `replayed` set where the response has it), or answers the errors of
    /// [`Replies::begin`]. `run` does nothing until awaited here.
    pub async fn run<Resp>(
        self,
        run: impl Future<Output = Result<Response<Resp>, Status>>,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: Message + Default + MarkReplayed,
    {
        let ticket = match self
            .replies
            .begin::<Resp>(&self.caller, &self.key, self.fingerprint)?
        {
            Begun::Replay(mut resp) => {
                resp.mark_replayed();
                return Ok(Response::new(resp));
            }
            Begun::Run(ticket) => ticket,
        };
        let engine = self.domain.engine()?;
        let principal = self.caller.principal().name();
        // Memory forgets at a restart; the engine's log does not.
        if let Some(kept) = engine.kept_reply(principal, &self.key, now()) {
            if kept.fingerprint != self.fingerprint {
                return Err(DomainError::IdempotencyKeyReused {
                    key: self.key.clone(),
                }
                .into());
            }
            let resp = Resp::decode(&*kept.response)
                .map_err(|e| Status::internal(format!("kept response: {e}")))?;
            // Kept by a call that may not have seen it durable (it failed or went away
            // first): the answer is sent again only once it is.
            if kept.lsn.0 > 0 {
                self.domain.wait_durable(kept.lsn).await?;
            }
            let mut resp = ticket.finish_encoded(Ok(resp), Some(kept.response.to_vec()))?;
            resp.mark_replayed();
            return Ok(Response::new(resp));
        }
        let (result, mut wait_for) = KEYED_WAIT
            .scope(std::cell::Cell::new(None), async {
                let result = run.await;
                (result, KEYED_WAIT.with(std::cell::Cell::get))
            })
            .await;
        // Encoded once, for the engine and for the memory above.
        let encoded = result.as_ref().ok().map(|r| r.get_ref().encode_to_vec());
        if let Some(bytes) = &encoded
            && Resp::KEPT_DURABLY
        {
            wait_for = wait_for.max(self.keep(&engine, bytes));
        }
        if let Some(lsn) = wait_for {
            self.domain.wait_durable(lsn).await?;
        }
        ticket
            .finish_encoded(result.map(Response::into_inner), encoded)
            .map(Response::new)
    }

    /// Keeps the encoded response `bytes` in the engine for retries after a restart; the
    /// LSN to wait for. A response too large to keep, or a log that refuses it, leaves the
    /// retry to run again (as it did before answers were kept): the request itself is done
    /// either way.
    fn keep(&self, engine: &Engine, bytes: &[u8]) -> Option<pickline_engine::Lsn> {
        if bytes.len() > pickline_engine::replies::REPLY_KEPT_LEN_MAX {
            return None;
        }
        let principal = self.caller.principal().name();
        match engine.keep_reply(
            principal,
            &self.key,
            self.fingerprint,
            bytes.to_vec(),
            now(),
        ) {
            Ok(lsn) => Some(lsn),
            Err(e) => {
                tracing::warn!(error = %e, "a response was not kept for retries");
                None
            }
        }
    }
}

/// A fingerprint of the caller's RPC and the request's bytes: FNV-1a (64 bits) over them,
/// with a CRC-32C of them in the high half. Both are fixed functions (no per-process
/// seed), as the engine keeps the fingerprint in its log; they are unrelated, so two
/// requests under one key that collide in one are still told apart by the other.
pub fn fingerprint<Req: Message>(caller: &Caller, req: &Req) -> u64 {
    let path = caller.rpc().path.as_bytes();
    let bytes = req.encode_to_vec();
    let crc = crc32c::crc32c_append(crc32c::crc32c(path), &bytes);
    let fnv = path
        .iter()
        .chain(&[0u8])
        .chain(&bytes)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    fnv ^ (u64::from(crc) << 32)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::{Begun, REPLIES_MAX, Replies, fingerprint};
    use crate::{
        grpc::auth::{Caller, Principal},
        grpc::rpc,
        pb,
    };

    fn caller(name: &str, path: &str) -> Caller {
        let spec = rpc::lookup(path).expect("a contract RPC");
        Caller::new(Arc::new(Principal::new(name, &[])), spec)
    }

    fn ready(key: &str, staff: &str) -> pb::MarkReadyRequest {
        pb::MarkReadyRequest {
            idempotency_key: key.into(),
            order_id: 7,
            staff_id: staff.into(),
        }
    }

    fn response(code: &str) -> pb::MarkReadyResponse {
        pb::MarkReadyResponse {
            pickup_code: code.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_key_runs_once_replays_its_ok_answer_and_refuses_other_requests() {
        let replies = Replies::default();
        let anna = caller("staff-s1", "/pickline.v1.PickupService/MarkReady");
        let req = ready("k1", "anna");
        let Ok(Begun::Run(ticket)) =
            replies.begin::<pb::MarkReadyResponse>(&anna, "k1", fingerprint(&anna, &req))
        else {
            panic!("a new key runs");
        };
        // While it runs, the same request is told to retry shortly.
        let running = replies
            .begin::<pb::MarkReadyResponse>(&anna, "k1", fingerprint(&anna, &req))
            .unwrap_err();
        assert_eq!(running.code(), Code::Unavailable);
        ticket.finish(Ok(response("AAAAA-BBBBB"))).unwrap();
        match replies.begin::<pb::MarkReadyResponse>(&anna, "k1", fingerprint(&anna, &req)) {
            Ok(Begun::Replay(r)) => assert_eq!(r, response("AAAAA-BBBBB")),
            other => panic!("{other:?}"),
        }
        // A different request, or another RPC, under the same key is misuse.
        let other = replies
            .begin::<pb::MarkReadyResponse>(&anna, "k1", fingerprint(&anna, &ready("k1", "bob")))
            .unwrap_err();
        assert_eq!(other.code(), Code::AlreadyExists);
        let collect = caller("staff-s1", "/pickline.v1.PickupService/Collect");
        let other_rpc = replies
            .begin::<pb::MarkReadyResponse>(&collect, "k1", fingerprint(&collect, &req))
            .unwrap_err();
        assert_eq!(other_rpc.code(), Code::AlreadyExists);
        // Keys are per caller.
        let other_caller = caller("staff-s2", "/pickline.v1.PickupService/MarkReady");
        assert!(matches!(
            replies.begin::<pb::MarkReadyResponse>(
                &other_caller,
                "k1",
                fingerprint(&other_caller, &req)
            ),
            Ok(Begun::Run(_))
        ));
    }

    #[test]
    fn an_error_or_an_abandoned_run_frees_the_key() {
        let replies = Replies::default();
        let anna = caller("staff-s1", "/pickline.v1.PickupService/MarkReady");
        let req = ready("k2", "anna");
        let Ok(Begun::Run(ticket)) =
            replies.begin::<pb::MarkReadyResponse>(&anna, "k2", fingerprint(&anna, &req))
        else {
            panic!("a new key runs");
        };
        let failed: Result<pb::MarkReadyResponse, _> =
            ticket.finish(Err(tonic::Status::unavailable("try again")));
        assert!(failed.is_err());
        let Ok(Begun::Run(ticket)) =
            replies.begin::<pb::MarkReadyResponse>(&anna, "k2", fingerprint(&anna, &req))
        else {
            panic!("an error is not kept: the retry runs");
        };
        drop(ticket);
        assert!(matches!(
            replies.begin::<pb::MarkReadyResponse>(&anna, "k2", fingerprint(&anna, &req)),
            Ok(Begun::Run(_))
        ));
    }

    #[test]
    fn the_oldest_answers_go_first_and_the_cache_stays_bounded() {
        let replies = Replies::default();
        let anna = caller("staff-s1", "/pickline.v1.PickupService/MarkReady");
        let keys: Vec<String> = (0..2 * REPLIES_MAX).map(|i| format!("k{i}")).collect();
        for key in &keys {
            let req = ready(key, "anna");
            let Ok(Begun::Run(ticket)) =
                replies.begin::<pb::MarkReadyResponse>(&anna, key, fingerprint(&anna, &req))
            else {
                panic!("a new key runs");
            };
            ticket.finish(Ok(response("AAAAA-BBBBB"))).unwrap();
            assert!(replies.len() <= REPLIES_MAX);
        }
        // Every shard is full: nearly the whole budget is in use.
        assert!(replies.len() > REPLIES_MAX * 9 / 10, "{}", replies.len());
        let begin = |key: &str| {
            replies.begin::<pb::MarkReadyResponse>(
                &anna,
                key,
                fingerprint(&anna, &ready(key, "anna")),
            )
        };
        // The first keys were evicted (their retry runs again); the last are replayed.
        assert!(matches!(begin(&keys[0]), Ok(Begun::Run(_))));
        assert!(matches!(
            begin(&keys[2 * REPLIES_MAX - 1]),
            Ok(Begun::Replay(_))
        ));
    }
}
