//! Bearer tokens, their scopes, and the caller identity handed to handlers.
//!
//! A request carries `authorization: Bearer <token>`. The admission layer
//! ([`crate::server`]) looks the token up in the [`TokenTable`] (constant time in the
//! token bytes), checks the RPC's scope row in [`crate::grpc::rpc::RPCS`], and stores a
//! [`Caller`] in the request extensions. Scope checks therefore never appear in handlers;
//! the one check left to a handler is the store of a store-bound token (`pos:S1`,
//! `staff:S1`), because only the handler knows the request's store:
//!
//! ```text
//! let caller = auth::caller(&request)?;          // set by the admission layer
//! caller.authorize_store(&request.get_ref().store_id)?; // PERMISSION_DENIED if not
//! ```
//!
//! In cluster mode the same call is where a store is checked against the partition map
//! ([`crate::cluster::map`]): the admission layer gives the [`Caller`] the node's map, and
//! a store of another partition is refused (FAILED_PRECONDITION, `WRONG_PARTITION`,
//! naming the partition and its leader's address) before the handler touches the engine.

use std::{collections::BTreeSet, fmt, str::FromStr, sync::Arc};

use serde::Deserialize;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::grpc::rpc::{RpcSpec, ScopeKind, ScopeSet};

/// Which stores a store-bound scope covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSet {
    /// Every store (`pos:*`).
    Any,
    /// One store by external id (`pos:S1`); a token lists several scopes for several.
    One(String),
}

/// A scope granted to a token, written in config as `checkout`, `oms`, `admin`,
/// `pos:<store_id>`, `pos:*`, `staff:<store_id>` or `staff:*`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Scope {
    /// E-commerce checkout.
    Checkout,
    /// Order management.
    Oms,
    /// Operations; may call every RPC for every store.
    Admin,
    /// Point of sale of some stores.
    Pos(StoreSet),
    /// Store staff of some stores.
    Staff(StoreSet),
}

impl Scope {
    /// The kind of caller this scope stands for.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::Checkout => ScopeKind::Checkout,
            Scope::Oms => ScopeKind::Oms,
            Scope::Admin => ScopeKind::Admin,
            Scope::Pos(_) => ScopeKind::Pos,
            Scope::Staff(_) => ScopeKind::Staff,
        }
    }
}

/// A scope string that is not one of the forms [`Scope`] documents.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown scope {0:?}: expected checkout, oms, admin, pos:<store_id>, pos:*, staff:<store_id> or staff:*"
)]
pub struct ScopeParseError(String);

impl FromStr for Scope {
    type Err = ScopeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let stores = |rest: &str| match rest {
            "" => None,
            "*" => Some(StoreSet::Any),
            id => Some(StoreSet::One(id.to_owned())),
        };
        let scope = match s.split_once(':') {
            None => match s {
                "checkout" => Some(Scope::Checkout),
                "oms" => Some(Scope::Oms),
                "admin" => Some(Scope::Admin),
                _ => None,
            },
            Some(("pos", rest)) => stores(rest).map(Scope::Pos),
            Some(("staff", rest)) => stores(rest).map(Scope::Staff),
            Some(_) => None,
        };
        scope.ok_or_else(|| ScopeParseError(s.to_owned()))
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stores = |set: &StoreSet| match set {
            StoreSet::Any => "*".to_owned(),
            StoreSet::One(id) => id.clone(),
        };
        match self {
            Scope::Checkout | Scope::Oms | Scope::Admin => f.write_str(self.kind().as_str()),
            Scope::Pos(set) => write!(f, "pos:{}", stores(set)),
            Scope::Staff(set) => write!(f, "staff:{}", stores(set)),
        }
    }
}

/// The stores a principal may act on under one store-bound kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StoreAccess {
    any: bool,
    stores: BTreeSet<String>,
}

impl StoreAccess {
    fn covers(&self, store_id: &str) -> bool {
        self.any || self.stores.contains(store_id)
    }
}

/// Who a token belongs to and what it may do. Built once from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    name: String,
    kinds: Vec<ScopeKind>,
    pos: StoreAccess,
    staff: StoreAccess,
}

impl Principal {
    /// A principal from its configured name and scopes.
    pub fn new(name: impl Into<String>, scopes: &[Scope]) -> Principal {
        let mut principal = Principal {
            name: name.into(),
            kinds: Vec::new(),
            pos: StoreAccess::default(),
            staff: StoreAccess::default(),
        };
        for scope in scopes {
            if !principal.kinds.contains(&scope.kind()) {
                principal.kinds.push(scope.kind());
            }
            let (access, set) = match scope {
                Scope::Pos(set) => (&mut principal.pos, set),
                Scope::Staff(set) => (&mut principal.staff, set),
                Scope::Checkout | Scope::Oms | Scope::Admin => continue,
            };
            match set {
                StoreSet::Any => access.any = true,
                StoreSet::One(id) => {
                    access.stores.insert(id.clone());
                }
            }
        }
        principal
    }

    /// The token's configured name (never the token itself): for logs and events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the principal holds a scope of this kind.
    pub fn has(&self, kind: ScopeKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Whether the principal may call the RPC at all (for some store).
    pub fn may_call(&self, rpc: &RpcSpec) -> bool {
        self.kinds.iter().any(|&kind| rpc.allowed.contains(kind))
    }

    /// Whether the principal may call the RPC for this store: through a kind that is not
    /// store-bound (checkout, oms, admin), through `pos`/`staff` covering the store, or
    /// through any allowed kind when the RPC is not store-bound (an open read).
    pub fn may_call_for_store(&self, rpc: &RpcSpec, store_id: &str) -> bool {
        if !rpc.store_bound {
            return self.may_call(rpc);
        }
        self.may_act_as(rpc.allowed, store_id)
    }

    /// Whether the principal holds one of `kinds`, covering `store_id` if store-bound.
    fn may_act_as(&self, kinds: ScopeSet, store_id: &str) -> bool {
        self.kinds.iter().any(|&kind| {
            kinds.contains(kind)
                && match kind {
                    ScopeKind::Pos => self.pos.covers(store_id),
                    ScopeKind::Staff => self.staff.covers(store_id),
                    ScopeKind::Checkout | ScopeKind::Oms | ScopeKind::Admin => true,
                }
        })
    }
}

/// Why a request was not let through. Mapped to a gRPC status in [`crate::grpc::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    MissingToken,
    /// `authorization` present but not `Bearer <token>`.
    #[error("malformed authorization metadata: expected `Bearer <token>`")]
    MalformedHeader,
    /// A token that is not configured.
    #[error("unknown bearer token")]
    UnknownToken,
    /// A known token without a scope allowed for this RPC.
    #[error("token {principal:?} may not call {rpc}")]
    MissingScope {
        /// The token's name.
        principal: String,
        /// The RPC path.
        rpc: &'static str,
    },
    /// A store-bound token used for another store.
    #[error("token {principal:?} may not call {rpc} for store {store_id:?}")]
    StoreNotAllowed {
        /// The token's name.
        principal: String,
        /// The RPC path.
        rpc: &'static str,
        /// The store the request named.
        store_id: String,
    },
    /// A token acting for an actor its scopes do not stand for (a checkout token
    /// cancelling as the store, a staff token as the customer).
    #[error("token {principal:?} may not call {rpc} as actor {actor} for store {store_id:?}")]
    ActorNotAllowed {
        /// The token's name.
        principal: String,
        /// The RPC path.
        rpc: &'static str,
        /// The actor the request named, e.g. `STORE`.
        actor: &'static str,
        /// The store the request is about.
        store_id: String,
    },
    /// Cluster mode: the store belongs to another partition, which the client should call.
    #[error("store {store_id:?} belongs to partition {partition}{}", led_by(.leader))]
    WrongPartition {
        /// The store the request named.
        store_id: String,
        /// Its partition.
        partition: String,
        /// That partition's leader, if known.
        leader: Option<crate::cluster::lease::LeaseValue>,
    },
    /// Cluster mode: the partition map has not been read yet.
    #[error("the partition map is not loaded yet; retry shortly")]
    MapNotLoaded,
    /// A handler asked for the caller of a request the admission layer did not admit
    /// (a wiring bug, not a client error).
    #[error("request reached a handler without passing the admission layer")]
    NotAdmitted,
}

/// The end of a [`AuthError::WrongPartition`] message.
fn led_by(leader: &Option<crate::cluster::lease::LeaseValue>) -> String {
    match leader {
        Some(l) => format!(", led by {} at {}", l.node, l.addr),
        None => ", which has no leader now; retry shortly".to_owned(),
    }
}

/// The configured tokens. Lookup compares the presented token against every
/// configured one in constant time, so response timing does not reveal how much of a
/// guessed token was right (only, at most, its length).
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<(Box<[u8]>, Arc<Principal>)>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secrets.
        f.debug_list()
            .entries(self.entries.iter().map(|(_, p)| p.name()))
            .finish()
    }
}

impl TokenTable {
    /// A table of `(token, principal)` pairs. Uniqueness and minimum length are checked
    /// by config validation.
    pub fn new(entries: impl IntoIterator<Item = (String, Principal)>) -> TokenTable {
        TokenTable {
            entries: entries
                .into_iter()
                .map(|(token, p)| (token.into_bytes().into_boxed_slice(), Arc::new(p)))
                .collect(),
        }
    }

    /// Number of configured tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is configured (every RPC is then UNAUTHENTICATED).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal for an `authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Principal>, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let token = bearer_token(header).ok_or(AuthError::MalformedHeader)?;
        // Visit every entry and select the match without branching on secret data.
        let mut found: u32 = 0;
        for (i, (configured, _)) in self.entries.iter().enumerate() {
            let index = u32::try_from(i + 1).expect("token table is small");
            found = u32::conditional_select(&found, &index, configured.as_ref().ct_eq(token));
        }
        match found {
            0 => Err(AuthError::UnknownToken),
            index => Ok(self.entries[index as usize - 1].1.clone()),
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() <= SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = header[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The admitted caller of a request: who, and through which RPC row. The admission
/// layer inserts it into the request extensions; handlers read it with [`caller`].
#[derive(Clone, Debug)]
pub struct Caller {
    principal: Arc<Principal>,
    rpc: &'static RpcSpec,
    /// Cluster mode: the node's partition map, which every store is checked against.
    partitions: Option<crate::cluster::map::PartitionMap>,
    /// Cluster mode, a read admitted on a standby: the state it is answered from.
    standby: Option<crate::cluster::follower::StandbyView>,
}

impl Caller {
    pub(crate) fn new(principal: Arc<Principal>, rpc: &'static RpcSpec) -> Caller {
        Caller {
            principal,
            rpc,
            partitions: None,
            standby: None,
        }
    }

    /// The caller of a read a standby answers from `view` (cluster mode).
    pub(crate) fn on_standby(mut self, view: crate::cluster::follower::StandbyView) -> Caller {
        self.standby = Some(view);
        self
    }

    /// Cluster mode: the standby state a read admitted on a standby is answered from.
    pub fn standby(&self) -> Option<&crate::cluster::follower::StandbyView> {
        self.standby.as_ref()
    }

    /// The caller, with every store it names checked against `map` (cluster mode).
    pub(crate) fn with_partitions(mut self, map: crate::cluster::map::PartitionMap) -> Caller {
        self.partitions = Some(map);
        self
    }

    /// Who called.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Which RPC was called.
    pub fn rpc(&self) -> &'static RpcSpec {
        self.rpc
    }

    /// Cluster mode: the node's partition map.
    pub fn partitions(&self) -> Option<&crate::cluster::map::PartitionMap> {
        self.partitions.as_ref()
    }

    /// Checks that the caller may act on `store_id` in this RPC, and in cluster mode that
    /// this node's partition serves the store: every handler of an RPC that names a store
    /// calls this before acting (pos and staff tokens are bound to stores; the admission
    /// layer cannot see the store in the request body). It is the one place both checks
    /// live, so no handler checks a partition by hand.
    pub fn authorize_store(&self, store_id: &str) -> Result<(), AuthError> {
        if !self.principal.may_call_for_store(self.rpc, store_id) {
            return Err(AuthError::StoreNotAllowed {
                principal: self.principal.name.clone(),
                rpc: self.rpc.path,
                store_id: crate::grpc::status::echo(store_id),
            });
        }
        use crate::cluster::map::Placement;
        match self.partitions.as_ref().map(|m| m.place(store_id)) {
            None | Some(Placement::Here) => Ok(()),
            Some(Placement::NotLoaded) => Err(AuthError::MapNotLoaded),
            Some(Placement::Elsewhere { partition, leader }) => Err(AuthError::WrongPartition {
                store_id: crate::grpc::status::echo(store_id),
                partition,
                leader,
            }),
        }
    }
}

impl Caller {
    /// Checks that the caller may act as `actor` on `store_id`: it holds one of `kinds`
    /// (admin always counts), covering the store if that kind is store-bound. For RPCs
    /// whose request names who acts (Cancel by the customer or by the store), so one
    /// caller cannot speak for another.
    pub fn authorize_actor(
        &self,
        actor: &'static str,
        kinds: &[ScopeKind],
        store_id: &str,
    ) -> Result<(), AuthError> {
        if self.principal.may_act_as(ScopeSet::of(kinds), store_id) {
            Ok(())
        } else {
            Err(AuthError::ActorNotAllowed {
                principal: self.principal.name.clone(),
                rpc: self.rpc.path,
                actor,
                store_id: crate::grpc::status::echo(store_id),
            })
        }
    }
}

/// The caller the admission layer admitted for this request.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, AuthError> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or(AuthError::NotAdmitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::rpc::lookup;

    fn table() -> TokenTable {
        TokenTable::new([
            (
                "checkout-token-0123456789".to_owned(),
                Principal::new("web", &[Scope::Checkout]),
            ),
            (
                "pos-token-s1-0123456789ab".to_owned(),
                Principal::new("till-s1", &["pos:S1".parse().unwrap()]),
            ),
        ])
    }

    #[test]
    fn authenticate_finds_the_right_principal_or_says_why_not() {
        let t = table();
        let p = t
            .authenticate(Some(b"Bearer checkout-token-0123456789"))
            .unwrap();
        assert_eq!(p.name(), "web");
        let p = t
            .authenticate(Some(b"bearer  pos-token-s1-0123456789ab "))
            .unwrap();
        assert_eq!(p.name(), "till-s1");
        assert_eq!(t.authenticate(None), Err(AuthError::MissingToken));
        assert_eq!(
            t.authenticate(Some(b"Basic abc")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            t.authenticate(Some(b"Bearer ")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            t.authenticate(Some(b"Bearer checkout-token-012345678")),
            Err(AuthError::UnknownToken)
        );
    }

    #[test]
    fn scopes_parse_display_and_reject_unknown_forms() {
        for s in ["checkout", "oms", "admin", "pos:*", "pos:S1", "staff:S-2"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for s in ["", "root", "pos", "pos:", "staff:", "checkout:S1", "POS:S1"] {
            assert!(s.parse::<Scope>().is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn store_bound_scopes_cover_only_their_stores() {
        let apply = lookup("/pickline.v1.InventoryService/ApplyPosEvents").unwrap();
        let till = Principal::new("till", &["pos:S1".parse().unwrap()]);
        assert!(till.may_call(apply));
        assert!(till.may_call_for_store(apply, "S1"));
        assert!(!till.may_call_for_store(apply, "S2"));
        let admin = Principal::new("ops", &[Scope::Admin]);
        assert!(admin.may_call_for_store(apply, "S2"));
        let web = Principal::new("web", &[Scope::Checkout]);
        assert!(!web.may_call(apply));
        let caller = Caller::new(Arc::new(till), apply);
        assert!(caller.authorize_store("S1").is_ok());
        assert!(matches!(
            caller.authorize_store("S2"),
            Err(AuthError::StoreNotAllowed { .. })
        ));
    }
}
