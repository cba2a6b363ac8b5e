//! The one table of every RPC the contract defines: who may call it and how it is
//! admitted.
//!
//! The admission layer ([`crate::server`]) looks every request up here by its HTTP/2
//! path before any handler runs, so a handler never checks a scope by hand; it only
//! checks the *store* of a store-bound token ([`crate::grpc::auth::Principal::authorize_store`]),
//! which needs the request body.
//!
//! Architecture invariant: every method of `proto/pickline/v1/*.proto` has exactly one
//! row here (a test compares this table with the compiled descriptor set), so adding an
//! RPC without deciding who may call it fails the build's tests.

use std::{collections::HashMap, sync::LazyLock};

/// The kinds of caller a token can stand for (see the `tokens` section of the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// E-commerce checkout: availability, holds, order creation.
    Checkout,
    /// Order management: everything around orders and the event stream.
    Oms,
    /// A store's point of sale: the stock feed of its own store(s).
    Pos,
    /// Store staff tablets: the pickup workflow of their own store(s).
    Staff,
    /// Operations: every RPC.
    Admin,
}

impl ScopeKind {
    /// The name used in config files and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Checkout => "checkout",
            ScopeKind::Oms => "oms",
            ScopeKind::Pos => "pos",
            ScopeKind::Staff => "staff",
            ScopeKind::Admin => "admin",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A small set of [`ScopeKind`]s, usable in `const` tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// The set of the given kinds. `Admin` is always added: the admin scope may call
    /// every RPC, so the table does not repeat it on every row.
    pub const fn of(kinds: &[ScopeKind]) -> ScopeSet {
        let mut bits = ScopeKind::Admin.bit();
        let mut i = 0;
        while i < kinds.len() {
            bits |= kinds[i].bit();
            i += 1;
        }
        ScopeSet(bits)
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: ScopeKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// How an RPC streams; it decides how the admission layer bounds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcShape {
    /// One request, one response: counted against the concurrency limit and the
    /// per-request timeout.
    Unary,
    /// The client streams (a POS feed): long-lived, so exempt from the per-request
    /// timeout and the unary concurrency permits; bounded by HTTP/2 stream limits.
    ClientStreaming,
    /// The server streams (event subscription): long-lived, treated like
    /// `ClientStreaming`.
    ServerStreaming,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct RpcSpec {
    /// HTTP/2 path, `/pickline.v1.Service/Method`.
    pub path: &'static str,
    /// Scopes allowed to call it (admin always is).
    pub allowed: ScopeSet,
    /// Streaming shape.
    pub shape: RpcShape,
    /// False only for RPCs that work before the engine has recovered (Ping); the others
    /// answer UNAVAILABLE until then.
    pub needs_engine: bool,
    /// Whether a store-bound token (`pos:S1`, `staff:S1`) may call it only for its own
    /// stores. False for reads of data that is not a customer's (store metadata, stock
    /// availability): a till or a tablet of one store may read every store's, as
    /// checkout does. Orders are customer data: their RPCs stay store-bound.
    pub store_bound: bool,
    /// Cluster mode: a standby answers it from the state it applied, with `as_of_seq`
    /// its last applied LSN, instead of NOT_LEADER (reads that say how fresh they are).
    pub standby_reads: bool,
}

impl RpcSpec {
    /// Whether the call is long-lived and therefore exempt from the unary limits.
    pub const fn is_streaming(&self) -> bool {
        !matches!(self.shape, RpcShape::Unary)
    }
}

use RpcShape::{ClientStreaming, ServerStreaming, Unary};
use ScopeKind::{Checkout, Oms, Pos, Staff};

const fn row(path: &'static str, allowed: &[ScopeKind], shape: RpcShape) -> RpcSpec {
    RpcSpec {
        path,
        allowed: ScopeSet::of(allowed),
        shape,
        needs_engine: true,
        store_bound: true,
        standby_reads: false,
    }
}

/// A read of data that is not a customer's: store-bound tokens read every store.
const fn open_read(path: &'static str, allowed: &[ScopeKind]) -> RpcSpec {
    RpcSpec {
        store_bound: false,
        ..row(path, allowed, Unary)
    }
}

/// An open read whose answer carries `as_of_seq`: standbys answer it too.
const fn stock_read(path: &'static str, allowed: &[ScopeKind]) -> RpcSpec {
    RpcSpec {
        standby_reads: true,
        ..open_read(path, allowed)
    }
}

/// Every RPC of the contract. Keep the rows in proto order, one service per block.
pub const RPCS: &[RpcSpec] = &[
    // StoreService: configuration is admin's; staff may pause/resume their store; every
    // scope reads every store.
    row("/pickline.v1.StoreService/UpsertStore", &[], Unary),
    row("/pickline.v1.StoreService/SetHours", &[], Unary),
    row("/pickline.v1.StoreService/SetStaffing", &[], Unary),
    row("/pickline.v1.StoreService/SetSlotConfig", &[], Unary),
    row("/pickline.v1.StoreService/PausePickups", &[Staff], Unary),
    row("/pickline.v1.StoreService/ResumePickups", &[Staff], Unary),
    open_read(
        "/pickline.v1.StoreService/GetStore",
        &[Checkout, Oms, Pos, Staff],
    ),
    open_read(
        "/pickline.v1.StoreService/ListStores",
        &[Checkout, Oms, Pos, Staff],
    ),
    // InventoryService: the POS writes, everyone who sells reads every store's stock.
    row(
        "/pickline.v1.InventoryService/ApplyPosEvents",
        &[Pos],
        Unary,
    ),
    row(
        "/pickline.v1.InventoryService/StreamPosEvents",
        &[Pos],
        ClientStreaming,
    ),
    stock_read(
        "/pickline.v1.InventoryService/GetAvailability",
        &[Checkout, Oms, Staff],
    ),
    stock_read(
        "/pickline.v1.InventoryService/GetSkuAvailability",
        &[Checkout, Oms, Staff],
    ),
    stock_read(
        "/pickline.v1.InventoryService/ListStoreAvailability",
        &[Checkout, Oms, Staff],
    ),
    open_read(
        "/pickline.v1.InventoryService/NearbyAvailability",
        &[Checkout, Oms, Staff],
    ),
    row(
        "/pickline.v1.InventoryService/SetSafetyStock",
        &[Oms],
        Unary,
    ),
    // HoldService: checkout and the OMS reserve.
    row("/pickline.v1.HoldService/Hold", &[Checkout, Oms], Unary),
    row(
        "/pickline.v1.HoldService/BatchHold",
        &[Checkout, Oms],
        Unary,
    ),
    row("/pickline.v1.HoldService/Extend", &[Checkout, Oms], Unary),
    row("/pickline.v1.HoldService/Confirm", &[Checkout, Oms], Unary),
    row("/pickline.v1.HoldService/Release", &[Checkout, Oms], Unary),
    row("/pickline.v1.HoldService/Allocate", &[Checkout, Oms], Unary),
    row(
        "/pickline.v1.HoldService/ListSlots",
        &[Checkout, Oms, Staff],
        Unary,
    ),
    // PickupService: orders come from checkout/OMS; the floor workflow is staff's.
    row(
        "/pickline.v1.PickupService/CreateOrder",
        &[Checkout, Oms],
        Unary,
    ),
    row(
        "/pickline.v1.PickupService/GetOrder",
        &[Checkout, Oms, Staff],
        Unary,
    ),
    row(
        "/pickline.v1.PickupService/ListOrders",
        &[Oms, Staff],
        Unary,
    ),
    row("/pickline.v1.PickupService/StartPicking", &[Staff], Unary),
    row("/pickline.v1.PickupService/ReportShort", &[Staff], Unary),
    row("/pickline.v1.PickupService/MarkReady", &[Staff], Unary),
    row("/pickline.v1.PickupService/VerifyCode", &[Staff], Unary),
    row("/pickline.v1.PickupService/Collect", &[Staff], Unary),
    row("/pickline.v1.PickupService/NoShow", &[Staff], Unary),
    row(
        "/pickline.v1.PickupService/Cancel",
        &[Checkout, Oms, Staff],
        Unary,
    ),
    row("/pickline.v1.PickupService/StaffOverride", &[Staff], Unary),
    // EventService: consumers are OMS-side services.
    row("/pickline.v1.EventService/RegisterConsumer", &[Oms], Unary),
    row(
        "/pickline.v1.EventService/Subscribe",
        &[Oms],
        ServerStreaming,
    ),
    row("/pickline.v1.EventService/Ack", &[Oms], Unary),
    // AdminService: Ping is the transport ceiling for the callers of Hold, and works
    // during recovery so that benchmarks and probes can reach the server.
    RpcSpec {
        path: "/pickline.v1.AdminService/Ping",
        allowed: ScopeSet::of(&[Checkout, Oms]),
        shape: Unary,
        needs_engine: false,
        store_bound: true,
        standby_reads: false,
    },
    row("/pickline.v1.AdminService/Snapshot", &[], Unary),
    row("/pickline.v1.AdminService/Stats", &[], Unary),
    row("/pickline.v1.AdminService/ExpireHolds", &[], Unary),
    // IntakeService: order management submits and watches intake; operators handle the
    // dead letters. None needs the engine: the journal takes orders while it recovers.
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/Submit", &[Oms], Unary)
    },
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/ListDeadLetters", &[], Unary)
    },
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/GetDeadLetter", &[], Unary)
    },
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/ReplayDeadLetter", &[], Unary)
    },
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/DiscardDeadLetter", &[], Unary)
    },
    RpcSpec {
        needs_engine: false,
        store_bound: false,
        ..row("/pickline.v1.IntakeService/GetIntakeHealth", &[Oms], Unary)
    },
    // NotifyService: the dead-letter list is operations' (admin only).
    open_read("/pickline.v1.NotifyService/ListDeadLetters", &[]),
    open_read("/pickline.v1.NotifyService/GetDeadLetter", &[]),
    RpcSpec {
        store_bound: false,
        ..row("/pickline.v1.NotifyService/ReplayDeadLetter", &[], Unary)
    },
];

/// The path prefix of every RPC of the contract.
pub const PACKAGE_PATH_PREFIX: &str = "/pickline.v1.";

static BY_PATH: LazyLock<HashMap<&'static str, &'static RpcSpec>> =
    LazyLock::new(|| RPCS.iter().map(|spec| (spec.path, spec)).collect());

/// The row for an HTTP/2 request path, if the contract defines it.
pub fn lookup(path: &str) -> Option<&'static RpcSpec> {
    BY_PATH.get(path).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Every method of the compiled contract has one row, and every row is a method.
    #[test]
    fn table_matches_the_compiled_contract() {
        let fds = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let mut from_proto = Vec::new();
        for file in fds.file.iter().filter(|f| f.package() == "pickline.v1") {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/pickline.v1.{}/{}", service.name(), method.name());
                    let shape = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => Unary,
                        (true, false) => ClientStreaming,
                        (false, true) => ServerStreaming,
                        (true, true) => panic!("{path}: bidirectional RPCs have no shape yet"),
                    };
                    from_proto.push((path, shape));
                }
            }
        }
        for (path, shape) in &from_proto {
            let spec = lookup(path).unwrap_or_else(|| panic!("{path} has no row in RPCS"));
            assert_eq!(
                spec.shape, *shape,
                "{path}: streaming shape differs from the proto"
            );
        }
        assert_eq!(
            RPCS.len(),
            from_proto.len(),
            "RPCS has rows the proto does not define"
        );
        assert_eq!(BY_PATH.len(), RPCS.len(), "RPCS has duplicate paths");
    }

    #[test]
    fn admin_is_in_every_set_and_others_only_where_listed() {
        for spec in RPCS {
            assert!(spec.allowed.contains(ScopeKind::Admin), "{}", spec.path);
        }
        let ping = lookup("/pickline.v1.AdminService/Ping").unwrap();
        assert!(ping.allowed.contains(Checkout));
        assert!(!ping.allowed.contains(Pos));
        assert!(!ping.needs_engine);
        let hold = lookup("/pickline.v1.HoldService/Hold").unwrap();
        assert!(!hold.allowed.contains(Staff));
        assert!(hold.needs_engine);
    }
}
