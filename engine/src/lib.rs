//! # Pickline engine
//!
//! The in-memory core of Pickline, the inventory allocation engine behind Buy Online, Pick
//! up In Store. It reserves stock atomically per store and SKU, holds it for a limited time,
//! takes the stores' POS feed, and records every change as an ordered event so that a
//! write-ahead log can make it durable and a replay can rebuild it exactly.
//!
//! ## Layout
//!
//! - [`types`]: ids, time, quantities and cell views.
//! - [`config`]: every limit, named and validated.
//! - [`engine`]: the [`Engine`]: stores, SKUs, holds, POS feed, availability reads.
//! - [`event`]: the domain events and log records, and their binary encoding.
//! - [`snapshot`]: the whole state as bytes at one LSN, and back.
//! - [`log`]: the narrow interface to the write-ahead log ([`EventLog`]).
//! - [`durable`]: the engine over the WAL: recovery and checkpoints ([`durable::DurableEngine`]).
//! - [`wal`]: the segmented write-ahead log with group commit.
//! - [`calendar`]: store opening hours and pickup slots in the store's time zone.
//! - [`slot`]: per-store calendar, slot bookings and the ready estimate.
//! - [`engine::alloc`]: geo index and [`Engine::allocate`].
//! - [`pickup_code`]: pickup codes, their attempt limit and QR payloads.
//! - [`receipt`]: e-receipts in JSON, plain text and HTML.
//! - [`order`]: pickup orders from hold to hand-off, short picks, POS sale recognition.
//! - [`stream`]: the in-memory event stream with durable consumer cursors.
//! - [`kpi`]: fulfillment time, pickup conversion, short picks, inventory accuracy.
//!
//! ## Example
//!
//! ```
//! use pickline_engine::{Engine, EngineConfig, HoldOutcome, HoldRequest, LineRequest,
//!     PosDelta, PosDeltaKind, StoreDef, Timestamp};
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! let now = Timestamp::from_ms(1_780_000_000_000);
//! engine.define_store(StoreDef::new("berlin-mitte", 52.52, 13.40, "Europe/Berlin"), now)?;
//! engine.apply_delta(&PosDelta {
//!     store: "berlin-mitte".into(),
//!     sku: "SKU-1".into(),
//!     pos_event_id: "pos-1".into(),
//!     kind: PosDeltaKind::Receive,
//!     qty: 5,
//!     order_ref: None,
//!     pos_time: now,
//! }, now)?;
//!
//! let req = HoldRequest::new("berlin-mitte", vec![LineRequest::new("SKU-1", 2)])
//!     .with_key("checkout-42");
//! let HoldOutcome::Granted(grant) = engine.hold(&req, now)? else { panic!("in stock") };
//! assert_eq!(engine.availability("berlin-mitte", "SKU-1")?.atp(), 3);
//!
//! // A retry with the same key returns the same hold and changes nothing.
//! assert_eq!(engine.hold(&req, now)?.granted().map(|g| g.hold), Some(grant.hold));
//!
//! // Checkout completed. A confirmed hold keeps its expiry, the end of its pickup window
//! // (here the store's default hold time, 2 hours): a customer who has not collected by
//! // then is a no-show, and the units are available again.
//! engine.confirm(grant.hold, now)?;
//! let expired = engine.expire(now.add_ms(2 * 3_600_000), 1_000)?;
//! assert_eq!(expired.len(), 1);
//! assert_eq!(engine.availability("berlin-mitte", "SKU-1")?.atp(), 5);
//! # Ok::<(), pickline_engine::EngineError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod calendar;
mod chunk_map;
mod chunk_queue;
pub mod codec;
pub mod config;
pub mod durable;
pub mod engine;
pub mod error;
pub mod event;
mod key_digest;
mod keys;
pub mod kpi;
pub mod lock_order;
pub mod log;
mod order_facts;
mod order_state;
pub mod pickup_code;
pub mod receipt;
pub mod slot;
pub mod snapshot;
mod stock;
pub mod stream;
pub mod types;
pub mod wal;
mod wire;

pub use config::{EngineConfig, Limits};
pub use engine::alloc::{
    AllocateOutcome, AllocateRejection, AllocateRequest, AllocatedPart, Alternative, LineSupply,
    NearbyQuery, NearbySupply, REALLOCATE_ALTERNATIVES_MAX, REALLOCATE_DISTANCE_KM_DEFAULT,
};
pub use engine::batch::BatchAnswers;
pub use engine::{
    ConfirmOutcome, Engine, ExpiredHold, ExtendOutcome, HoldGrant, HoldInfo, HoldNotActive,
    HoldOutcome, HoldRequest, LoggedOutcome, PosCount, PosDelta, PosOutcome, ReleaseOutcome,
    Shortage,
};
pub use engine::{order, replies};
pub use error::{ApplyError, ConfigError, EngineError, HoldChange};
pub use event::{
    Event, HoldFacts, HoldRejection, KeptAnswer, KeptOf, KeptPart, LineShortage, LoggedRecord,
    PosDeltaKind, Record, ReleaseReason, StoreDef,
};
pub use kpi::{Kpis, StoreKpis};
pub use log::{Deferred, EventLog, MemoryLog, NoLog, defer_durability};
pub use order::{
    CancelledBy, Canceller, CollectOutcome, CreateOrder, CreateOrderOutcome, CreateOrderRejection,
    Customer, OrderFacts, OrderId, OrderLine, OrderLineRequest, OrderRejection, OrderStatus,
    OrderView, ReadyOutcome, ShortLine, ShortPick, ShortPickResolution, ShortReport,
    ShortReportOutcome, TransitionOutcome, VerifyCodeOutcome,
};
pub use slot::SlotProblem;
pub use stock::{ENDED_HOLDS_KEPT, HoldEnd, PAGE_LEN};
pub use stream::{EventStream, StreamError};
pub use types::{
    CellView, HoldId, Line, LineRequest, Lsn, Qty, SkuId, StoreId, StoreStatus, Timestamp,
};
