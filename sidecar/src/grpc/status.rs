//! THE one table mapping errors to gRPC statuses.
//!
//! Business outcomes (not enough stock, wrong pickup code, ...) are never errors: they
//! travel in the response's `outcome` oneof with status OK. What is left is misuse and
//! failure, and every such case reaches the wire through [`to_status`] or one of the
//! constructors below, so the codes in `proto/pickline/v1/common.proto` and the
//! behaviour cannot drift apart. A domain handler does:
//!
//! ```text
//! let outcome = engine.hold(cmd).map_err(DomainError::from)?; // From<engine error>
//! ```
//!
//! and `?` turns the [`DomainError`] into a [`tonic::Status`] through this table. When
//! the engine API lands, its error enums get `From` impls into [`DomainError`] (in the
//! sidecar's conversion module), never their own status mapping.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

use crate::grpc::auth::AuthError;

/// Metadata key of the retry hint on RESOURCE_EXHAUSTED and UNAVAILABLE, in
/// milliseconds, for clients that do not decode `google.rpc.RetryInfo`.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// `google.rpc.ErrorInfo.domain` of every error this server describes.
pub const ERROR_DOMAIN: &str = "pickline.v1";

/// What kind of object a NOT_FOUND or a wrong-state error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A store.
    Store,
    /// A stock cell (store, SKU).
    Cell,
    /// A hold.
    Hold,
    /// A pickup order.
    Order,
    /// An event consumer.
    Consumer,
}

impl ResourceKind {
    /// The name in messages and `ResourceInfo.resource_type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Store => "store",
            ResourceKind::Cell => "cell",
            ResourceKind::Hold => "hold",
            ResourceKind::Order => "order",
            ResourceKind::Consumer => "consumer",
        }
    }
}

/// Everything a domain call can fail with that is not a business outcome.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A request field is missing, malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Proto field path, e.g. `lines[2].qty`.
        field: String,
        /// What is wrong, for the caller.
        reason: String,
    },
    /// The named object does not exist.
    #[error("{} {:?} not found", kind.as_str(), echo(id))]
    NotFound {
        /// What kind of object.
        kind: ResourceKind,
        /// Its id as the caller gave it.
        id: String,
    },
    /// The idempotency key was already used for a different request.
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// The store already has an order for this channel order (pickup.proto: a
    /// `(channel, channel_order_id)` is unique per channel).
    #[error(
        "channel order {:?} of channel {channel:?} already has order {order}",
        echo(channel_order_id)
    )]
    ChannelOrderExists {
        /// The channel.
        channel: String,
        /// The channel's order id.
        channel_order_id: String,
        /// The existing order's id.
        order: u64,
    },
    /// The action is not allowed in the object's current state.
    #[error("{} {id} is {state}; cannot {action}", kind.as_str())]
    IllegalTransition {
        /// What kind of object.
        kind: ResourceKind,
        /// Its id.
        id: String,
        /// Its current state.
        state: String,
        /// The refused action, e.g. `mark ready`.
        action: &'static str,
    },
    /// A request exceeds a configured limit (batch length, lines per hold).
    #[error("{what} is {actual}, above the limit of {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The request's value.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// A table of the engine is full (e.g. a store's active holds): nothing was done; the
    /// request may succeed once entries end (holds released or expired).
    #[error("{what} = {limit} reached; retry once entries end")]
    TableFull {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A request with the same idempotency key is being applied right now.
    #[error("a request with idempotency key {key:?} is in flight; retry shortly")]
    InFlight {
        /// The key.
        key: String,
    },
    /// Another CreateOrder for the same channel order, or under the same key, for
    /// another hold is being decided right now.
    #[error(
        "another CreateOrder for channel order {:?} or under the same idempotency key is in \
         flight; retry shortly",
        echo(channel_order_id)
    )]
    OrderInFlight {
        /// The channel's order id.
        channel_order_id: String,
    },
    /// The engine is still replaying its log.
    #[error("the engine is recovering its log; retry shortly")]
    Recovering,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Durable storage failed; the mutation was not acknowledged.
    #[error("storage failure; the request was not applied: {0}")]
    Storage(#[source] std::io::Error),
    /// Cluster mode: the replicated log did not acknowledge the request's records (this
    /// node was deposed, or the JetStream cluster lost its quorum); never a false
    /// acknowledgement.
    #[error("{0}")]
    Replication(String),
    /// Cluster mode: Allocate asked another partition's leader for the caller, and it did
    /// not answer (docs/CLUSTER.md): it may hold the cart, so no farther partition was
    /// asked. A retry with the same idempotency key asks it again.
    #[error(
        "partition {partition} (leader at {leader_addr}) was asked to allocate and did not \
         answer ({why}); it may hold the cart: retry with the same idempotency key"
    )]
    PartitionUnanswered {
        /// The partition asked.
        partition: String,
        /// The leader asked.
        leader_addr: String,
        /// What happened to the call.
        why: String,
    },
    /// The log is corrupt.
    #[error("log corruption: {0}")]
    Corruption(String),
    /// The contract has the RPC or form, but this server does not provide it yet.
    #[error("not implemented: {0}")]
    Unimplemented(&'static str),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// The same error with `prefix()` put before the name of the invalid field, for an
    /// item of a repeated field (`holds[3].` + `lines[0].qty`).
    pub fn in_field(self, prefix: impl FnOnce() -> String) -> DomainError {
        match self {
            DomainError::InvalidArgument { field, reason } => DomainError::InvalidArgument {
                field: prefix() + &field,
                reason,
            },
            other => other,
        }
    }
}

/// Characters of a caller-supplied id an error repeats at most.
pub const ECHO_CHARS_MAX: usize = 64;

/// A caller-supplied id as error messages and details repeat it: at most
/// [`ECHO_CHARS_MAX`] characters, then `…`. Errors travel in trailers, and an id echoed in
/// full (a 10 KB store id, twice: message and details) would push them past the 16 KiB a
/// default client accepts, hiding the error behind "metadata size exceeds hard limit".
pub fn echo(id: &str) -> String {
    match id.char_indices().nth(ECHO_CHARS_MAX) {
        None => id.to_owned(),
        Some((cut, _)) => format!("{}…", &id[..cut]),
    }
}

/// How long clients should wait before retrying while a cluster node has not read the
/// partition map yet (a watch's first read: milliseconds).
const MAP_NOT_LOADED_RETRY: Duration = Duration::from_millis(250);

/// How long clients should wait before retrying after UNAVAILABLE during recovery.
const RECOVERING_RETRY: Duration = Duration::from_millis(500);

/// How long clients should wait before retrying a request whose key is in flight.
const IN_FLIGHT_RETRY: Duration = Duration::from_millis(20);

/// How long clients should wait before retrying an allocation whose asked partition did
/// not answer: about the time a failover or a stall takes to show.
const PARTITION_UNANSWERED_RETRY: Duration = Duration::from_secs(1);

/// The table: one arm per [`DomainError`] variant.
pub fn to_status(err: &DomainError) -> Status {
    let message = err.to_string();
    match err {
        DomainError::InvalidArgument { field, reason } => Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(vec![FieldViolation::new(field, reason)]),
        ),
        DomainError::NotFound { kind, id } => Status::with_error_details(
            Code::NotFound,
            message,
            ErrorDetails::with_resource_info(kind.as_str(), echo(id), "", "not found"),
        ),
        DomainError::IdempotencyKeyReused { key } => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_error_info(
                "IDEMPOTENCY_KEY_REUSED",
                ERROR_DOMAIN,
                HashMap::from([("idempotency_key".to_owned(), key.clone())]),
            ),
        ),
        DomainError::ChannelOrderExists {
            channel,
            channel_order_id,
            order,
        } => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_error_info(
                "CHANNEL_ORDER_EXISTS",
                ERROR_DOMAIN,
                HashMap::from([
                    ("channel".to_owned(), channel.clone()),
                    ("channel_order_id".to_owned(), echo(channel_order_id)),
                    ("order_id".to_owned(), order.to_string()),
                ]),
            ),
        ),
        DomainError::IllegalTransition {
            kind,
            id,
            state,
            action,
        } => Status::with_error_details(
            Code::FailedPrecondition,
            message,
            ErrorDetails::with_precondition_failure_violation(
                "ILLEGAL_TRANSITION",
                format!("{}/{id}", kind.as_str()),
                format!("{state} -> {action}"),
            ),
        ),
        DomainError::LimitExceeded { what, limit, .. } | DomainError::TableFull { what, limit } => {
            Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_quota_failure_violation(*what, format!("limit {limit}")),
            )
        }
        DomainError::Recovering => unavailable_retry(message, RECOVERING_RETRY),
        DomainError::InFlight { .. } | DomainError::OrderInFlight { .. } => {
            unavailable_retry(message, IN_FLIGHT_RETRY)
        }
        DomainError::ShuttingDown | DomainError::Storage(_) | DomainError::Replication(_) => {
            Status::unavailable(message)
        }
        DomainError::PartitionUnanswered {
            partition,
            leader_addr,
            ..
        } => {
            let mut details = ErrorDetails::with_error_info(
                "PARTITION_UNANSWERED",
                ERROR_DOMAIN,
                HashMap::from([
                    ("partition".to_owned(), partition.clone()),
                    ("leader_addr".to_owned(), leader_addr.clone()),
                ]),
            );
            details.set_retry_info(Some(PARTITION_UNANSWERED_RETRY));
            let mut status = Status::with_error_details(Code::Unavailable, message, details);
            insert_retry_after(&mut status, PARTITION_UNANSWERED_RETRY);
            status
        }
        DomainError::Corruption(_) => Status::data_loss(message),
        DomainError::Unimplemented(_) => Status::unimplemented(message),
        DomainError::Internal(_) => Status::internal(message),
    }
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Status {
        to_status(&err)
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        let message = err.to_string();
        match err {
            AuthError::MissingToken | AuthError::MalformedHeader | AuthError::UnknownToken => {
                Status::unauthenticated(message)
            }
            AuthError::MissingScope { rpc, .. }
            | AuthError::StoreNotAllowed { rpc, .. }
            | AuthError::ActorNotAllowed { rpc, .. } => {
                let mut metadata = HashMap::from([("rpc".to_owned(), rpc.to_owned())]);
                if let AuthError::ActorNotAllowed { actor, .. } = err {
                    metadata.insert("actor".to_owned(), actor.to_owned());
                }
                Status::with_error_details(
                    Code::PermissionDenied,
                    message,
                    ErrorDetails::with_error_info("MISSING_SCOPE", ERROR_DOMAIN, metadata),
                )
            }
            // The client's idea of where the store lives is wrong: retrying here cannot
            // help (so not UNAVAILABLE); the details name where to go (docs/CLUSTER.md).
            AuthError::WrongPartition {
                store_id,
                partition,
                leader,
            } => {
                let mut metadata = HashMap::from([
                    ("store_id".to_owned(), store_id),
                    ("partition".to_owned(), partition),
                ]);
                if let Some(l) = leader {
                    metadata.insert("leader_node".to_owned(), l.node);
                    metadata.insert("leader_addr".to_owned(), l.addr);
                }
                Status::with_error_details(
                    Code::FailedPrecondition,
                    message,
                    ErrorDetails::with_error_info("WRONG_PARTITION", ERROR_DOMAIN, metadata),
                )
            }
            AuthError::MapNotLoaded => unavailable_retry(message, MAP_NOT_LOADED_RETRY),
            AuthError::NotAdmitted => Status::internal(message),
        }
    }
}

/// RESOURCE_EXHAUSTED for a request shed because the server is at its concurrency
/// limit, with the retry hint both as `google.rpc.RetryInfo` and as `retry-after-ms`
/// metadata.
pub fn overloaded(limit: usize, retry_after: Duration) -> Status {
    let mut status = Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "server overloaded: {limit} requests in flight; retry after {} ms",
            retry_after.as_millis()
        ),
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    insert_retry_after(&mut status, retry_after);
    status
}

/// DEADLINE_EXCEEDED for a request that ran past the server's per-request limit. The
/// handler's future is dropped; a mutation it had already applied is kept, and a retry
/// with the same idempotency key returns its outcome.
pub fn request_timeout(limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "request exceeded the server's {} ms limit",
        limit.as_millis()
    ))
}

/// The response as the contract wants it when tonic refused a request message above
/// `grpc.max_message_bytes`: tonic answers OUT_OF_RANGE (trailers-only, before any
/// handler runs), common.proto says RESOURCE_EXHAUSTED with a QuotaFailure. No handler
/// of this server answers OUT_OF_RANGE, so every such response is tonic's size check;
/// any other response passes unchanged. (A *response* above the limit fails in the body
/// trailers, after the headers left, and keeps tonic's code: that is a server-side limit
/// the client cannot fix by sending less.)
pub fn message_too_large(
    response: http::Response<tonic::body::Body>,
    max_message_bytes: usize,
) -> http::Response<tonic::body::Body> {
    let Some(refused) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if refused.code() != Code::OutOfRange {
        return response;
    }
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "request message larger than grpc.max_message_bytes ({max_message_bytes} bytes): {}",
            refused.message()
        ),
        ErrorDetails::with_quota_failure_violation(
            "grpc.max_message_bytes",
            format!("limit {max_message_bytes} bytes"),
        ),
    )
    .into_http()
}

/// `code` (RESOURCE_EXHAUSTED for a shed request, UNAVAILABLE for one that cannot be
/// taken now) with the retry hint as RetryInfo and `retry-after-ms`.
pub fn retry_later(code: Code, message: String, retry_after: Duration) -> Status {
    let mut status = Status::with_error_details(
        code,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    insert_retry_after(&mut status, retry_after);
    status
}

fn unavailable_retry(message: String, retry_after: Duration) -> Status {
    let mut status = Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    insert_retry_after(&mut status, retry_after);
    status
}

fn insert_retry_after(status: &mut Status, retry_after: Duration) {
    let millis = MetadataValue::from(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
    status.metadata_mut().insert(RETRY_AFTER_MS, millis);
}

/// The canonical upper-case name of a code, as used in metric labels.
pub const fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(err: DomainError, expect: Code) -> Status {
        let status = to_status(&err);
        assert_eq!(status.code(), expect, "{err}");
        assert_eq!(status.message(), err.to_string());
        status
    }

    #[test]
    fn every_domain_error_has_its_code_and_details() {
        let s = check(
            DomainError::InvalidArgument {
                field: "lines[0].qty".into(),
                reason: "must be at least 1".into(),
            },
            Code::InvalidArgument,
        );
        let bad = s.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "lines[0].qty");

        let s = check(
            DomainError::NotFound {
                kind: ResourceKind::Hold,
                id: "42".into(),
            },
            Code::NotFound,
        );
        assert_eq!(s.get_details_resource_info().unwrap().resource_type, "hold");

        let s = check(
            DomainError::IdempotencyKeyReused { key: "k1".into() },
            Code::AlreadyExists,
        );
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "IDEMPOTENCY_KEY_REUSED"
        );

        let s = check(
            DomainError::IllegalTransition {
                kind: ResourceKind::Order,
                id: "7".into(),
                state: "cancelled".into(),
                action: "mark ready",
            },
            Code::FailedPrecondition,
        );
        let pf = s.get_details_precondition_failure().unwrap();
        assert_eq!(pf.violations[0].subject, "order/7");

        check(
            DomainError::LimitExceeded {
                what: "events per batch",
                actual: 20_000,
                limit: 10_000,
            },
            Code::ResourceExhausted,
        );
        let s = check(
            DomainError::TableFull {
                what: "store_active_holds_max",
                limit: 2_000_000,
            },
            Code::ResourceExhausted,
        );
        assert_eq!(
            s.message(),
            "store_active_holds_max = 2000000 reached; retry once entries end"
        );
        let s = check(
            DomainError::OrderInFlight {
                channel_order_id: "#1001".into(),
            },
            Code::Unavailable,
        );
        assert!(s.get_details_retry_info().is_some());
        assert!(s.message().contains("\"#1001\""), "{}", s.message());
        let s = check(DomainError::Recovering, Code::Unavailable);
        assert!(s.get_details_retry_info().is_some());
        assert!(s.metadata().get(RETRY_AFTER_MS).is_some());
        check(DomainError::ShuttingDown, Code::Unavailable);
        let s = check(
            DomainError::PartitionUnanswered {
                partition: "west".into(),
                leader_addr: "10.0.0.2:50051".into(),
                why: "no answer by the deadline".into(),
            },
            Code::Unavailable,
        );
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, "PARTITION_UNANSWERED");
        assert_eq!(info.metadata["partition"], "west");
        assert_eq!(info.metadata["leader_addr"], "10.0.0.2:50051");
        assert!(s.get_details_retry_info().is_some());
        assert!(s.metadata().get(RETRY_AFTER_MS).is_some());
        check(
            DomainError::Storage(std::io::Error::other("disk full")),
            Code::Unavailable,
        );
        check(
            DomainError::Corruption("wal-3 @ 4096".into()),
            Code::DataLoss,
        );
        check(
            DomainError::Unimplemented("a form the engine cannot serve yet"),
            Code::Unimplemented,
        );
        check(DomainError::Internal("bug".into()), Code::Internal);
    }

    #[test]
    fn auth_errors_map_to_unauthenticated_or_permission_denied() {
        for err in [
            AuthError::MissingToken,
            AuthError::MalformedHeader,
            AuthError::UnknownToken,
        ] {
            assert_eq!(Status::from(err).code(), Code::Unauthenticated);
        }
        let s = Status::from(AuthError::MissingScope {
            principal: "till".into(),
            rpc: "/pickline.v1.AdminService/Ping",
        });
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.get_details_error_info().unwrap().reason, "MISSING_SCOPE");
    }

    #[test]
    fn overload_carries_the_retry_hint_twice() {
        let s = overloaded(8, Duration::from_millis(25));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get(RETRY_AFTER_MS).unwrap(), "25");
        let retry = s.get_details_retry_info().unwrap().retry_delay.unwrap();
        assert_eq!(retry, Duration::from_millis(25));
    }
}
