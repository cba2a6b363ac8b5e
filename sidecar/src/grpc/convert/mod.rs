//! The one place that converts between protobuf messages and engine types, and engine
//! errors into [`DomainError`] (whose status mapping is the table in [`crate::grpc::status`]).
//! One file per proto file (`store`, `inventory`, `hold`, `pickup`, `event`; `allocation` for the
//! geography Allocate and NearbyAvailability share); this file has what they all use (field
//! checks, ids, paging) and re-exports them, so a handler names `convert::hold_id` wherever
//! it is defined.
//!
//! Request conversions validate what the engine cannot see (a proto enum left
//! UNSPECIFIED, a missing idempotency key) and return `DomainError::InvalidArgument`
//! naming the proto field; everything else (lengths, quantities, ttl bounds) the engine
//! validates itself and reports through [`From<EngineError>`].

use pickline_engine::{
    self as pe, CellView, EngineError, HoldId, HoldRejection, OrderId, OrderRejection, OrderStatus,
    OrderView, StoreDef, StoreStatus,
    calendar::{
        CalendarConfig, CalendarError, Date, DateException, DayHours, DayRef, LocalInterval,
        LocalTime, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
    },
    pickup_code::{QrPayload, StaffId, VerifyOutcome},
    receipt::Receipt,
};

use crate::{
    grpc::status::{DomainError, ResourceKind, echo},
    pb,
};

mod allocation;
mod event;
mod hold;
mod inventory;
mod pickup;
mod store;

pub use allocation::*;
pub use event::*;
pub use hold::*;
pub use inventory::*;
pub use pickup::*;
pub use store::*;

/// Longest idempotency key, bytes (common.proto).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
/// Longest store id, bytes (store.proto). The engine's own limit
/// (`Limits::external_id_len_max`) is looser; the contract's is the one callers see.
pub const STORE_ID_LEN_MAX: usize = 64;
/// Longest SKU id, bytes (common.proto).
pub const SKU_LEN_MAX: usize = 64;
/// Longest event consumer name, bytes (event.proto).
pub const CONSUMER_NAME_LEN_MAX: usize = 64;

impl From<EngineError> for DomainError {
    fn from(e: EngineError) -> DomainError {
        match e {
            EngineError::UnknownStore(id) => DomainError::NotFound {
                kind: ResourceKind::Store,
                id,
            },
            EngineError::UnknownSku(id) => DomainError::NotFound {
                kind: ResourceKind::Cell,
                id,
            },
            EngineError::InvalidRequest { field, why } => DomainError::InvalidArgument {
                field: field.to_owned(),
                reason: why,
            },
            EngineError::LimitReached { limit, value } => DomainError::TableFull {
                what: limit,
                limit: value,
            },
            EngineError::InvalidCalendar(e) => calendar_error(&e),
            EngineError::LogFailed(why) => DomainError::Storage(std::io::Error::other(why)),
            EngineError::IdempotencyKeyReused { key } => DomainError::IdempotencyKeyReused { key },
            EngineError::InBatch { index, error } => {
                DomainError::from(*error).in_field(|| format!("holds[{index}]."))
            }
            // Server faults: never INVALID_ARGUMENT, which would tell the client to
            // change a request that was right.
            EngineError::Internal { what, why } => DomainError::Internal(format!("{what}: {why}")),
            EngineError::Corrupt { what, why } => DomainError::Corruption(format!("{what}: {why}")),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

/// An external id of 1..=`len_max` bytes without control characters.
fn external_id(field: &str, id: &str, len_max: usize) -> Result<(), DomainError> {
    match external_id_problem(id, len_max) {
        Some(reason) => Err(invalid(field, reason)),
        None => Ok(()),
    }
}

/// What is wrong with `id` as an external id, if anything ([`external_id`] without a field
/// name, for callers that name the field only when there is an error).
fn external_id_problem(id: &str, len_max: usize) -> Option<String> {
    if id.is_empty() || id.len() > len_max {
        return Some(format!("must be 1..={len_max} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    None
}

/// Checks a store id (1..=64 bytes, store.proto).
pub fn store_id(field: &str, id: &str) -> Result<(), DomainError> {
    external_id(field, id, STORE_ID_LEN_MAX)
}

/// Checks a SKU id (1..=64 bytes, common.proto).
pub fn sku(field: &str, id: &str) -> Result<(), DomainError> {
    external_id(field, id, SKU_LEN_MAX)
}

/// Checks the lines of a hold, an allocation or a cart: each SKU valid and named at
/// most once (hold.proto), each quantity at least 1. Field paths are relative to the
/// request (`lines[2].sku`).
pub fn lines(field: &str, lines: &[pb::Line]) -> Result<(), DomainError> {
    // Field paths are formatted only for an error: BatchHold checks a thousand holds'
    // lines per request.
    let at = |i: usize, what: &str| format!("{field}[{i}].{what}");
    // Carts are short: a scan of the earlier lines finds a repeated SKU without the
    // allocation of a set; longer lists use one.
    let mut seen = (lines.len() > LINES_SCANNED_MAX)
        .then(|| std::collections::HashSet::with_capacity(lines.len()));
    for (i, l) in lines.iter().enumerate() {
        if let Some(reason) = external_id_problem(&l.sku, SKU_LEN_MAX) {
            return Err(invalid(at(i, "sku"), reason));
        }
        if l.qty == 0 {
            return Err(invalid(at(i, "qty"), "must be at least 1"));
        }
        let repeated = match &mut seen {
            Some(seen) => !seen.insert(l.sku.as_str()),
            None => lines[..i].iter().any(|earlier| earlier.sku == l.sku),
        };
        if repeated {
            return Err(invalid(
                at(i, "sku"),
                "names a SKU of an earlier line; each SKU at most once",
            ));
        }
    }
    Ok(())
}

/// Lines up to which [`lines`] finds a repeated SKU by scanning instead of with a set.
const LINES_SCANNED_MAX: usize = 16;

/// Checks a consumer name (1..=64 bytes of `[a-z0-9_-]`, event.proto).
pub fn consumer_name(field: &str, name: &str) -> Result<(), DomainError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if name.is_empty() || name.len() > CONSUMER_NAME_LEN_MAX || !name.bytes().all(allowed) {
        return Err(invalid(
            field,
            format!("must be 1..={CONSUMER_NAME_LEN_MAX} bytes of [a-z0-9_-]"),
        ));
    }
    Ok(())
}

/// A consumer name that is looked up (Subscribe, Ack): present and not absurdly long.
/// Its shape is checked only at registration, so names registered before that check
/// keep working.
pub fn consumer_ref(field: &str, name: &str) -> Result<(), DomainError> {
    if name.is_empty() || name.len() > CONSUMER_REF_LEN_MAX {
        return Err(invalid(
            field,
            format!("must name a registered consumer (1..={CONSUMER_REF_LEN_MAX} bytes)"),
        ));
    }
    Ok(())
}

/// Longest consumer name Subscribe and Ack look up: the engine's own limit on ids
/// (`Limits::key_len_max`), which names registered before [`CONSUMER_NAME_LEN_MAX`]
/// applied may use.
pub const CONSUMER_REF_LEN_MAX: usize = 128;

/// Checks that a mutation carries its idempotency key (1..=128 bytes).
pub fn idempotency_key(field: &str, key: &str) -> Result<String, DomainError> {
    check_key(field, key)?;
    Ok(key.to_owned())
}

/// [`idempotency_key`] without the copy.
pub fn check_key(field: &str, key: &str) -> Result<(), DomainError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(invalid(
            field,
            format!("must be 1..={IDEMPOTENCY_KEY_LEN_MAX} bytes"),
        ));
    }
    Ok(())
}

/// A staff id as the engine validates it.
pub fn staff_id(field: &str, id: &str) -> Result<StaffId, DomainError> {
    StaffId::new(id).map_err(|e| invalid(field, e.to_string()))
}

/// A count limit on a repeated field: RESOURCE_EXHAUSTED above `max`, INVALID_ARGUMENT
/// when empty.
pub fn batch_len(what: &'static str, len: usize, max: usize) -> Result<(), DomainError> {
    if len == 0 {
        return Err(invalid(what, "must not be empty"));
    }
    if len > max {
        return Err(DomainError::LimitExceeded {
            what,
            actual: len as u64,
            limit: max as u64,
        });
    }
    Ok(())
}

/// The ListStores page token after the store `last`: its id in lower-case hex, so that
/// a token is recognisably one this server issued.
pub fn store_page_token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The store id a ListStores page token continues after (`None` for the first page).
pub fn store_page_after(token: &str) -> Result<Option<String>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let garbage = || invalid("page_token", "not a token this server issued");
    if !token.len().is_multiple_of(2) || token.len() > 2 * STORE_ID_LEN_MAX {
        return Err(garbage());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            let pair = token.get(i..i + 2).ok_or_else(garbage)?;
            if pair.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(garbage());
            }
            u8::from_str_radix(pair, 16).map_err(|_| garbage())
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let id = String::from_utf8(bytes).map_err(|_| garbage())?;
    store_id("page_token", &id).map_err(|_| garbage())?;
    Ok(Some(id))
}

/// A page token that is a decimal number (the last key of the previous page).
pub fn page_token(token: &str) -> Result<Option<u64>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| invalid("page_token", "not a token this server issued"))
}

/// A page size: 0 means `default`, otherwise 1..=`max`.
pub fn page_size(size: u32, default: usize, max: usize) -> Result<usize, DomainError> {
    match size as usize {
        0 => Ok(default),
        n if n <= max => Ok(n),
        n => Err(DomainError::LimitExceeded {
            what: "page_size",
            actual: n as u64,
            limit: max as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    /// A server fault reaches the client as INTERNAL or DATA_LOSS, never as
    /// INVALID_ARGUMENT (which tells the client to change a request that was right).
    #[test]
    fn engine_faults_are_not_the_callers() {
        let code = |e: EngineError| Status::from(DomainError::from(e)).code();
        assert_eq!(
            code(EngineError::Internal {
                what: "hold",
                why: "vanished under its locks".into(),
            }),
            Code::Internal
        );
        assert_eq!(
            code(EngineError::Corrupt {
                what: "log record",
                why: "hold 7 granted twice".into(),
            }),
            Code::DataLoss
        );
        assert_eq!(
            code(EngineError::InvalidRequest {
                field: "lines",
                why: "empty".into(),
            }),
            Code::InvalidArgument
        );
        let inner = EngineError::Internal {
            what: "holds",
            why: "not decided".into(),
        };
        assert_eq!(
            code(EngineError::InBatch {
                index: 2,
                error: Box::new(inner),
            }),
            Code::Internal
        );
    }
}
