//! Errors: misuse (the caller's fault), internal faults and corruption (never the caller's),
//! configuration and I/O. Business rejections are outcome values, not errors.

use thiserror::Error;

/// A configuration value is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The named field is out of range.
    #[error("invalid configuration `{field}`: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// The caller used the engine wrongly, or the engine cannot work (I/O, log failure).
///
/// Expected business outcomes (not enough stock, hold already expired, wrong pickup code)
/// are never errors: they are variants of the operation's outcome type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The store id is not registered.
    #[error("unknown store `{0}`")]
    UnknownStore(String),
    /// The SKU id is not known to the engine.
    #[error("unknown SKU `{0}`")]
    UnknownSku(String),
    /// A request field is invalid; the message names it.
    #[error("invalid request: {field}: {why}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A store calendar configuration was refused; the error names the part (field,
    /// weekday or date) that is wrong.
    #[error("invalid calendar: {0}")]
    InvalidCalendar(#[from] crate::calendar::CalendarError),
    /// A table is full; the message names the limit.
    #[error("limit reached: {limit} = {value}")]
    LimitReached {
        /// The named limit.
        limit: &'static str,
        /// Its configured value.
        value: u64,
    },
    /// The write-ahead log failed; the engine refuses all further writes (fail-stop).
    #[error("write-ahead log failed, engine stopped accepting writes: {0}")]
    LogFailed(String),
    /// The idempotency key was used before for a different request (another store, other
    /// lines or another slot); nothing was done.
    #[error("idempotency key `{key}` was used for a different request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// The engine broke one of its own invariants: a bug, never the caller's fault (a
    /// client is told INTERNAL, not INVALID_ARGUMENT). `what` names the piece of state.
    #[error("internal error: {what}: {why}")]
    Internal {
        /// The piece of state or step that failed.
        what: &'static str,
        /// What was found.
        why: String,
    },
    /// A log record or snapshot does not apply to the state it follows: the log or the
    /// snapshot is damaged, or not this engine's.
    #[error("corrupt {what}: {why}")]
    Corrupt {
        /// What was being read (`log record`, `snapshot`, `recovered state`).
        what: &'static str,
        /// What was found.
        why: String,
    },
    /// A request of a batch that is refused whole ([`crate::Engine::hold_batch_whole`],
    /// [`crate::Engine::hold_batch_keyed`]) is misuse; nothing of the batch was done.
    #[error("request {index} of the batch: {error}")]
    InBatch {
        /// The request's index in the batch.
        index: usize,
        /// What is wrong with it.
        error: Box<EngineError>,
    },
}

impl EngineError {
    /// `error` of request `index` of a batch refused whole.
    pub(crate) fn in_batch(index: usize, error: EngineError) -> Self {
        EngineError::InBatch {
            index,
            error: Box::new(error),
        }
    }

    /// The engine broke an invariant of `what` (see [`EngineError::Internal`]).
    pub(crate) fn internal(what: &'static str, why: impl Into<String>) -> Self {
        EngineError::Internal {
            what,
            why: why.into(),
        }
    }

    /// `what` read from the log or a snapshot is damaged (see [`EngineError::Corrupt`]).
    pub(crate) fn corrupt(what: &'static str, why: impl Into<String>) -> Self {
        EngineError::Corrupt {
            what,
            why: why.into(),
        }
    }

    /// Whether the caller is at fault (a request to correct, not to retry as it is):
    /// false for internal faults, corruption and a failed log.
    pub fn is_misuse(&self) -> bool {
        match self {
            EngineError::UnknownStore(_)
            | EngineError::UnknownSku(_)
            | EngineError::InvalidRequest { .. }
            | EngineError::InvalidCalendar(_)
            | EngineError::LimitReached { .. }
            | EngineError::IdempotencyKeyReused { .. } => true,
            EngineError::InBatch { error, .. } => error.is_misuse(),
            EngineError::Internal { .. }
            | EngineError::Corrupt { .. }
            | EngineError::LogFailed(_) => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        EngineError::InvalidRequest {
            field,
            why: why.into(),
        }
    }
}

/// A state change that names a hold, order or store the state does not have in the form the
/// event says: why an event did not apply. Replay maps it to [`EngineError::Corrupt`] (the
/// record does not follow the state it was applied to); a live operation, whose record it
/// decided itself under the same locks, to [`EngineError::Internal`].
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The event names a store that is not registered.
    #[error("unknown store")]
    UnknownStore,
    /// The event should name a store and does not.
    #[error("event without store")]
    NoStore,
    /// A store defined beyond `stores_max`.
    #[error("store id {0} beyond stores_max")]
    StoreBeyondMax(u32),
    /// A new store whose id is not the next one.
    #[error("store id {0} out of order")]
    StoreOutOfOrder(u32),
    /// A new SKU whose id is not the next one.
    #[error("sku id {0} out of order")]
    SkuOutOfOrder(u32),
    /// A new SKU beyond `skus_max`.
    #[error("sku id {0} beyond skus_max")]
    SkuIdBeyondMax(u32),
    /// A cell of a SKU beyond `skus_max`.
    #[error("sku beyond skus_max")]
    SkuBeyondMax,
    /// A hold's lines that cannot be locked (a SKU beyond `skus_max`, or not in lock
    /// order).
    #[error(transparent)]
    Lines(Box<EngineError>),
    /// A grant of a hold that is already active.
    #[error("hold {0} granted twice")]
    GrantedTwice(crate::types::HoldId),
    /// A grant of a slot no calendar has (one starting at `i64::MIN`).
    #[error("hold {0} books a slot starting at i64::MIN")]
    SlotStart(crate::types::HoldId),
    /// A grant that would overflow a cell's `held`.
    #[error("hold {0} overflows held")]
    HeldOverflow(crate::types::HoldId),
    /// A change of a hold that is not active.
    #[error("{change} of inactive hold {hold}")]
    InactiveHold {
        /// The change.
        change: HoldChange,
        /// The hold.
        hold: crate::types::HoldId,
    },
    /// A change of an order whose hold is not active.
    #[error("{change} of order {order} without hold")]
    NoHold {
        /// The change.
        change: HoldChange,
        /// The order.
        order: crate::types::OrderId,
    },
    /// A change of a SKU the hold has no line of.
    #[error("{change} of a sku not held")]
    SkuNotHeld {
        /// The change.
        change: HoldChange,
    },
    /// A change of more units than the hold's line has.
    #[error("{change} beyond hold")]
    BeyondHold {
        /// The change.
        change: HoldChange,
    },
    /// A change of more units than the cell holds.
    #[error("{change} of more than the cell holds")]
    BeyondCell {
        /// The change.
        change: HoldChange,
    },
    /// A short pick of a SKU the order has no line of.
    #[error("short pick of a sku not ordered")]
    SkuNotOrdered,
    /// A short pick of more units than the order's line has.
    #[error("short pick of more than ordered")]
    BeyondOrdered,
    /// A POS sale recognizing more units than it reports.
    #[error("pos sale recognizes more than reported")]
    RecognizedBeyondReported,
    /// An order change of a cell the operation did not lock.
    #[error("cell of sku {0} not locked")]
    CellNotLocked(u32),
    /// A logged calendar that does not build.
    #[error("calendar of store {store}: {source}")]
    Calendar {
        /// The store.
        store: u32,
        /// Why the calendar was refused.
        source: crate::calendar::CalendarError,
    },
    /// An event where another kind was expected.
    #[error("{kind} is not {expected}")]
    UnexpectedEvent {
        /// The event's kind.
        kind: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// An order created twice.
    #[error("order {0} created twice")]
    OrderCreatedTwice(crate::types::OrderId),
    /// A change of an order the store does not have.
    #[error("unknown order {0}")]
    UnknownOrder(crate::types::OrderId),
    /// A transition of an order that has ended.
    #[error("order is already {0:?}")]
    OrderFinal(crate::types::OrderStatus),
    /// A change that does not apply to the order's record.
    #[error("order {order}: {source}")]
    Order {
        /// The order.
        order: crate::types::OrderId,
        /// What did not apply.
        source: Box<ApplyError>,
    },
}

/// The hold change an [`ApplyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    /// An extension.
    Extend,
    /// A confirmation.
    Confirm,
    /// A release (by a caller, expiry or its order).
    Release,
    /// A short pick.
    ShortPick,
    /// A collection.
    Collect,
    /// A POS sale of an order's units.
    PosSale,
}

impl std::fmt::Display for HoldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HoldChange::Extend => "extend",
            HoldChange::Confirm => "confirm",
            HoldChange::Release => "release",
            HoldChange::ShortPick => "short pick",
            HoldChange::Collect => "collect",
            HoldChange::PosSale => "pos sale",
        })
    }
}

impl From<EngineError> for ApplyError {
    fn from(e: EngineError) -> Self {
        ApplyError::Lines(Box::new(e))
    }
}
