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
