//! `pickline.v1.AdminService` handlers.

use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::{
    grpc::convert::idempotency_key,
    grpc::domain::{Domain, blocking, now},
    grpc::status::DomainError,
    pb::{
        ConsumerLag, ExpireHoldsRequest, ExpireHoldsResponse, PingRequest, PingResponse,
        SnapshotRequest, SnapshotResponse, StatsRequest, StatsResponse,
        admin_service_server::AdminService,
    },
};

/// Most holds one ExpireHolds call expires.
const EXPIRE_HOLDS_MAX: u32 = 10_000;

/// The AdminService handler. Ping needs nothing; Snapshot and Stats need the engine.
#[derive(Clone, Debug, Default)]
pub struct Admin {
    domain: Domain,
}

impl Admin {
    /// A handler over `domain`.
    pub fn new(domain: Domain) -> Admin {
        Admin { domain }
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {}))
    }

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        idempotency_key("idempotency_key", &request.get_ref().idempotency_key)?;
        let domain = self.domain.clone();
        blocking(move || {
            let started = Instant::now();
            let cp = domain.checkpoint()?;
            Ok(SnapshotResponse {
                seq: cp.lsn.0,
                file: pickline_engine::wal::format::snapshot_file_name(cp.lsn),
                size_bytes: cp.len_bytes as u64,
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            })
        })
        .await
        .map(Response::new)
    }

    async fn expire_holds(
        &self,
        request: Request<ExpireHoldsRequest>,
    ) -> Result<Response<ExpireHoldsResponse>, Status> {
        let max = match request.get_ref().max {
            0 => EXPIRE_HOLDS_MAX,
            n if n <= EXPIRE_HOLDS_MAX => n,
            n => {
                return Err(DomainError::InvalidArgument {
                    field: "max".into(),
                    reason: format!("{n} is above {EXPIRE_HOLDS_MAX}"),
                }
                .into());
            }
        };
        let engine = self.domain.engine()?;
        self.domain
            .durable(move || {
                // The engine bounds each call by its own batch limit too: go on until
                // nothing more is due or `max` holds are expired.
                let now = now();
                let mut hold_ids = Vec::new();
                while hold_ids.len() < max as usize {
                    let expired = engine.expire(now, max as usize - hold_ids.len())?;
                    if expired.is_empty() {
                        break;
                    }
                    hold_ids.extend(expired.iter().map(|e| e.hold.0));
                }
                Ok(ExpireHoldsResponse { hold_ids })
            })
            .await
            .map(Response::new)
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let domain = self.domain.clone();
        blocking(move || {
            let db = domain.db()?;
            let engine = db.engine();
            let stores = engine.stores();
            let mut cells = 0u64;
            for (_, def) in &stores {
                cells += engine
                    .store_availability(&def.external_id, None, usize::MAX)
                    .map_err(DomainError::from)?
                    .len() as u64;
            }
            let head_seq = engine.log().last_lsn().0;
            Ok(StatsResponse {
                stores: stores.len() as u64,
                cells,
                active_holds: engine.active_holds() as u64,
                open_orders: engine.open_orders() as u64,
                head_seq,
                durable_seq: db.wal().durable_lsn().0,
                wal_bytes: domain.wal_bytes_since_checkpoint(),
                consumers: db
                    .stream()
                    .cursors()
                    .into_iter()
                    .map(|(name, acked)| ConsumerLag {
                        name,
                        acked_seq: acked.0,
                        lag: head_seq.saturating_sub(acked.0),
                    })
                    .collect(),
                started_at_ms: domain.started_at_ms(),
            })
        })
        .await
        .map(Response::new)
    }
}
