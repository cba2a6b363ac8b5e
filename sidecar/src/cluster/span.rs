//! Nearest-store allocation across partitions: a leader whose own stores cannot serve an
//! `Allocate` asks the other partitions' leaders for the caller, nearest first, and stops
//! at the first that allocates (docs/CLUSTER.md, "Nearest-store allocation across
//! partitions"). The handler (`grpc/hold_svc.rs`) decides whether to ask and which
//! partitions ([`PartitionMap::partitions_near`](super::map::PartitionMap::partitions_near));
//! this module makes the calls.
//!
//! The rules, each for a reason:
//!
//! - **No loops.** Each leader is sent the caller's request with `this_partition_only`
//!   set: it allocates among its own stores and never passes the call on.
//! - **The caller's rights, no more.** The call carries the caller's own `authorization`
//!   header; the other leader authenticates it and checks its scopes itself. A node has no
//!   credential of its own to call with, so asking for a caller cannot widen what the
//!   caller may do (a token the other partition does not know is refused there).
//! - **At most one partition holds.** A partition is asked for the whole cart, so one
//!   that allocates holds all of it (at one store, or split among its own stores with
//!   `allow_split`) and one that rejects holds nothing. A partition that certainly did
//!   nothing is skipped and the next one asked: nobody leads it, its leader cannot be
//!   connected to, the node named no longer leads, or it refused the call before acting.
//!   One that was sent the call and did not answer (the deadline passed, the connection
//!   broke, an error after which it may have held) stops the allocation
//!   ([`Spanned::Unanswered`]): asking a farther one could hold a second time. A retry
//!   with the same idempotency key asks it again, and its engine answers with what it did
//!   (each partition keeps the keys of the allocations it decided).
//! - **The caller's deadline.** Every call ends by the caller's deadline (its
//!   `grpc-timeout`, at most the server's request timeout) less [`ANSWER_MARGIN`], so the
//!   answer reaches the caller in time; connecting takes at most [`CONNECT_TIMEOUT`], so a
//!   leader that does not answer the connection is skipped early.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;
use tonic::{
    Code, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
    transport::{Channel, Endpoint},
};

use super::map::NearPartition;
use crate::pb;

/// How long connecting to another partition's leader may take: a leader on the same
/// network connects in milliseconds; one that does not is skipped with time to spare.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// What is kept of the caller's deadline to answer it in, after the last call (a loaded
/// machine takes tens of milliseconds to schedule and send the answer).
pub const ANSWER_MARGIN: Duration = Duration::from_millis(100);

/// Most leaders' connections kept; beyond, the table starts again (leaders' addresses
/// change only at failovers, and there are few partitions).
const CHANNELS_MAX: usize = 64;

/// Characters of a refusal's message kept in [`Asked::detail`].
const DETAIL_CHARS_MAX: usize = 200;

/// The `authorization` header of gRPC requests.
const AUTHORIZATION: &str = "authorization";

/// The ErrorInfo reason of a node that does not lead its partition (`server.rs`).
const NOT_LEADER: &str = "NOT_LEADER";

/// What one partition asked answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It allocated.
    Allocated,
    /// Its stores cannot serve the cart; it held nothing.
    Rejected,
    /// Skipped: nobody leads it (or the node named no longer does).
    NoLeader,
    /// Skipped: its leader could not be connected to.
    Unreachable,
    /// Skipped: its leader refused the call before acting.
    Refused,
}

/// One partition asked, and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// The partition, with the leader asked and its distance.
    pub near: NearPartition,
    /// What it answered.
    pub answer: Answer,
    /// Why it was skipped; empty otherwise.
    pub detail: String,
}

/// The outcome of asking the other partitions.
#[derive(Debug)]
pub enum Spanned {
    /// The last partition of `asked` allocated; `response` is its answer as it gave it.
    Allocated {
        /// Its answer.
        response: pb::AllocateResponse,
        /// Every partition asked, the allocating one last.
        asked: Vec<Asked>,
    },
    /// None allocated.
    NotServed {
        /// Every partition asked, in order.
        asked: Vec<Asked>,
        /// The partitions still worth asking: every one that did not reject (skipped,
        /// or not reached before the deadline), nearest first.
        to_ask: Vec<NearPartition>,
    },
    /// A partition was sent the call and did not answer: it may hold the cart.
    Unanswered {
        /// The partition.
        partition: String,
        /// The leader asked.
        leader_addr: String,
        /// What happened to the call.
        why: String,
    },
}

/// Why a call did not allocate or reject.
#[derive(Debug, PartialEq)]
enum Failure {
    /// It certainly did nothing: skip it.
    Skipped(Answer, String),
    /// It may have acted: stop.
    Unknown(String),
}

/// Calls other partitions' leaders; keeps a connection per leader address.
#[derive(Debug, Default)]
pub struct Spanner {
    channels: parking_lot::Mutex<HashMap<String, Channel>>,
}

impl Spanner {
    /// Asks `near` (nearest first) for `request` with the caller's `authorization`, one at
    /// a time, until one allocates, one does not answer, or `deadline` passes. `request`
    /// must have `this_partition_only` set and a position for its origin (the other
    /// partitions do not know this one's stores).
    pub async fn allocate(
        &self,
        near: &[NearPartition],
        request: &pb::AllocateRequest,
        authorization: Option<&AsciiMetadataValue>,
        deadline: Instant,
    ) -> Spanned {
        debug_assert!(request.this_partition_only);
        let mut asked = Vec::with_capacity(near.len());
        for partition in near {
            let Some(leader) = &partition.leader else {
                asked.push(Asked::new(
                    partition,
                    Answer::NoLeader,
                    "no leader now".into(),
                ));
                continue;
            };
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
            let answer = match self
                .call(&leader.addr, request, authorization, timeout)
                .await
            {
                Ok(response) => response,
                Err(Failure::Skipped(answer, detail)) => {
                    tracing::info!(partition = %partition.partition, addr = %leader.addr, ?answer, %detail, "allocation: partition skipped");
                    asked.push(Asked::new(partition, answer, detail));
                    continue;
                }
                Err(Failure::Unknown(why)) => {
                    tracing::warn!(partition = %partition.partition, addr = %leader.addr, %why, "allocation: partition did not answer");
                    return Spanned::Unanswered {
                        partition: partition.partition.clone(),
                        leader_addr: leader.addr.clone(),
                        why,
                    };
                }
            };
            use pb::allocate_response::Outcome;
            match answer.outcome {
                Some(Outcome::Allocated(_)) => {
                    asked.push(Asked::new(partition, Answer::Allocated, String::new()));
                    return Spanned::Allocated {
                        response: answer,
                        asked,
                    };
                }
                Some(Outcome::Rejected(_)) => {
                    asked.push(Asked::new(partition, Answer::Rejected, String::new()));
                }
                // Not an answer this contract gives: what it did is unknown.
                None => {
                    return Spanned::Unanswered {
                        partition: partition.partition.clone(),
                        leader_addr: leader.addr.clone(),
                        why: "an answer without an outcome".into(),
                    };
                }
            }
        }
        let to_ask = near
            .iter()
            .filter(|p| {
                !asked
                    .iter()
                    .any(|a| a.near.partition == p.partition && a.answer == Answer::Rejected)
            })
            .cloned()
            .collect();
        Spanned::NotServed { asked, to_ask }
    }

    /// One call to the leader at `addr`, ending after `timeout`.
    async fn call(
        &self,
        addr: &str,
        request: &pb::AllocateRequest,
        authorization: Option<&AsciiMetadataValue>,
        timeout: Duration,
    ) -> Result<pb::AllocateResponse, Failure> {
        let channel = self
            .channel(addr)
            .map_err(|e| Failure::Skipped(Answer::Unreachable, e))?;
        let mut call = tonic::Request::new(request.clone());
        // The other leader's server ends its handler by the same deadline.
        call.set_timeout(timeout);
        if let Some(authorization) = authorization {
            call.metadata_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        let mut client = pb::hold_service_client::HoldServiceClient::new(channel);
        match tokio::time::timeout(timeout, client.allocate(call)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_elapsed) => Err(Failure::Unknown(format!(
                "no answer within the caller's deadline ({} ms)",
                timeout.as_millis()
            ))),
        }
    }

    /// The connection to the leader at `addr` (made on first use).
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("leader address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if channels.len() >= CHANNELS_MAX {
            channels.clear();
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl Asked {
    fn new(near: &NearPartition, answer: Answer, detail: String) -> Asked {
        Asked {
            near: near.clone(),
            answer,
            detail,
        }
    }
}

/// Whether a refused call certainly did nothing (skip the partition) or may have acted
/// (stop). Only refusals made before the engine runs, or by an engine call that holds
/// nothing when it fails, count as nothing done; anything else may have held.
fn classify(status: &Status) -> Failure {
    let mut detail = format!("{:?}: {}", status.code(), status.message());
    if let Some((cut, _)) = detail.char_indices().nth(DETAIL_CHARS_MAX) {
        detail.truncate(cut);
        detail.push('…');
    }
    if never_connected(status) {
        return Failure::Skipped(Answer::Unreachable, detail);
    }
    match status.code() {
        // The admission layer's refusals and the handler's checks before the engine; an
        // engine call that refuses (a full table, a reused key) has released what it held.
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Unimplemented => Failure::Skipped(Answer::Refused, detail),
        Code::Unavailable if not_leader(status) => Failure::Skipped(Answer::NoLeader, detail),
        // A durability wait that failed, a key in flight, the deadline, a broken
        // connection, a bug: the engine may have held.
        _ => Failure::Unknown(detail),
    }
}

/// Whether the call failed connecting, so it never left this node.
fn never_connected(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the node called refused as one that does not lead its partition.
fn not_leader(status: &Status) -> bool {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == NOT_LEADER)
}

/// The caller's deadline: `start` plus its `grpc-timeout` (at most `server_timeout`, the
/// server's own limit on a request), less [`ANSWER_MARGIN`].
pub fn deadline(metadata: &MetadataMap, server_timeout: Duration, start: Instant) -> Instant {
    let asked = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout)
        .unwrap_or(server_timeout);
    start + asked.min(server_timeout).saturating_sub(ANSWER_MARGIN)
}

/// A `grpc-timeout` value (gRPC over HTTP/2: 1 to 8 digits and a unit: H, M, S, m, u, n).
/// tonic reads it for its own timeout but does not expose the parser.
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3_600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_the_protocol_writes_them() {
        assert_eq!(grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(
            grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "3", "3s", "123456789S", "-1S", "1.5S", "é"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
        let start = Instant::now();
        let mut metadata = MetadataMap::new();
        let server = Duration::from_secs(20);
        assert_eq!(
            deadline(&metadata, server, start),
            start + server - ANSWER_MARGIN
        );
        metadata.insert("grpc-timeout", "3000m".parse().unwrap());
        assert_eq!(
            deadline(&metadata, server, start),
            start + Duration::from_secs(3) - ANSWER_MARGIN
        );
        metadata.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(
            deadline(&metadata, server, start),
            start + server - ANSWER_MARGIN
        );
        metadata.insert("grpc-timeout", "80m".parse().unwrap());
        assert_eq!(deadline(&metadata, server, start), start);
    }

    #[test]
    fn only_a_call_that_certainly_did_nothing_is_skipped() {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let skipped = |s: &Status| match classify(s) {
            Failure::Skipped(answer, _) => Some(answer),
            Failure::Unknown(_) => None,
        };
        let refused = tonic::ConnectError("connection refused".into());
        let never_sent = Status::from_error(Box::new(refused));
        assert_eq!(never_sent.code(), Code::Unavailable);
        assert_eq!(skipped(&never_sent), Some(Answer::Unreachable));
        let not_leading = Status::with_error_details(
            Code::Unavailable,
            "not the leader",
            ErrorDetails::with_error_info(NOT_LEADER, "pickline.v1", HashMap::new()),
        );
        assert_eq!(skipped(&not_leading), Some(Answer::NoLeader));
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::ResourceExhausted,
        ] {
            assert_eq!(skipped(&Status::new(code, "no")), Some(Answer::Refused));
        }
        // Any other UNAVAILABLE (a replication wait that failed, a key in flight), the
        // deadline, a lost connection, a bug: it may have held.
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
        ] {
            assert_eq!(skipped(&Status::new(code, "?")), None, "{code:?}");
        }
        let long = Status::unauthenticated("x".repeat(1_000));
        match classify(&long) {
            Failure::Skipped(_, detail) => assert!(detail.chars().count() <= 201, "{detail}"),
            other => panic!("{other:?}"),
        }
    }
}
