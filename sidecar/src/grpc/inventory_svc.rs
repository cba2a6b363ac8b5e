//! `pickline.v1.InventoryService` handlers.

use std::sync::Arc;

use pickline_engine::{Engine, EngineError, PosOutcome, SkuId};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    grpc::auth::{self, Caller},
    grpc::convert::{self, PosCommand, idempotency_key},
    grpc::domain::{Domain, now},
    grpc::status::DomainError,
    pb::{self, inventory_service_server::InventoryService},
};

/// POS events per batch at most (inventory.proto).
pub const POS_EVENTS_MAX: usize = 10_000;
/// Stores named in one GetSkuAvailability at most.
const SKU_STORES_MAX: usize = 1_000;
/// Cells per ListStoreAvailability page: default and maximum.
const CELLS_PAGE_DEFAULT: usize = 1_000;
const CELLS_PAGE_MAX: usize = 10_000;

/// The InventoryService handler.
#[derive(Clone, Debug)]
pub struct Inventory {
    domain: Domain,
}

impl Inventory {
    /// A handler over `domain`.
    pub fn new(domain: Domain) -> Inventory {
        Inventory { domain }
    }

    /// Converts and authorizes a batch, then applies it and awaits one group commit.
    async fn apply(
        &self,
        caller: &Caller,
        req: pb::ApplyPosEventsRequest,
    ) -> Result<Vec<pb::PosEventOutcome>, Status> {
        idempotency_key("idempotency_key", &req.idempotency_key)?;
        convert::batch_len("events", req.events.len(), POS_EVENTS_MAX)?;
        let mut cmds = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.into_iter().enumerate() {
            caller.authorize_store(&e.store_id)?;
            cmds.push(convert::pos_command(i, e)?);
        }
        let engine = self.domain.engine()?;
        self.domain
            .durable(move || cmds.iter().map(|c| apply_one(&engine, c)).collect())
            .await
    }
}

/// Applies one POS event; an unknown store is that event's outcome, not the batch's error.
fn apply_one(engine: &Engine, cmd: &PosCommand) -> Result<pb::PosEventOutcome, DomainError> {
    let (store, sku, id, result) = match cmd {
        PosCommand::Delta(d) => (
            &d.store,
            &d.sku,
            &d.pos_event_id,
            engine.apply_delta(d, now()),
        ),
        PosCommand::Count(c) => (
            &c.store,
            &c.sku,
            &c.pos_event_id,
            engine.apply_count(c, now()),
        ),
    };
    let outcome = |result: pb::PosEventResult, seq, holds_at_risk| -> Result<_, DomainError> {
        Ok(pb::PosEventOutcome {
            pos_event_id: id.clone(),
            result: result as i32,
            cell: Some(convert::availability_pb(
                store,
                sku,
                engine.availability(store, sku)?,
                seq,
            )),
            holds_at_risk,
        })
    };
    match result {
        Ok(PosOutcome::Applied { shortage, lsn, .. }) => outcome(
            pb::PosEventResult::Applied,
            lsn.0,
            shortage.map_or(Vec::new(), |s| s.holds.iter().map(|h| h.0).collect()),
        ),
        Ok(PosOutcome::AlreadyHandedOff { lsn, .. }) => {
            outcome(pb::PosEventResult::AlreadyHandedOff, lsn.0, Vec::new())
        }
        Ok(PosOutcome::Duplicate) => outcome(
            pb::PosEventResult::Duplicate,
            convert::read_point(engine),
            Vec::new(),
        ),
        Ok(PosOutcome::StaleCount) => outcome(
            pb::PosEventResult::StaleCount,
            convert::read_point(engine),
            Vec::new(),
        ),
        Err(EngineError::UnknownStore(_)) => Ok(pb::PosEventOutcome {
            pos_event_id: id.clone(),
            result: pb::PosEventResult::UnknownStore as i32,
            cell: None,
            holds_at_risk: Vec::new(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn cell(engine: &Arc<Engine>, store: &str, sku: &str) -> Result<pb::Availability, DomainError> {
    let seq = convert::read_point(engine);
    Ok(convert::availability_pb(
        store,
        sku,
        engine.availability(store, sku)?,
        seq,
    ))
}

#[tonic::async_trait]
impl InventoryService for Inventory {
    async fn apply_pos_events(
        &self,
        request: Request<pb::ApplyPosEventsRequest>,
    ) -> Result<Response<pb::ApplyPosEventsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let outcomes = self.apply(&caller, req).await?;
                Ok(Response::new(pb::ApplyPosEventsResponse { outcomes }))
            })
            .await
    }

    async fn stream_pos_events(
        &self,
        request: Request<Streaming<pb::ApplyPosEventsRequest>>,
    ) -> Result<Response<pb::StreamPosEventsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let mut stream = request.into_inner();
        let mut totals = pb::StreamPosEventsResponse::default();
        while let Some(batch) = stream.message().await? {
            let outcomes = self.apply(&caller, batch).await?;
            totals.batches += 1;
            for o in outcomes {
                match o.result() {
                    pb::PosEventResult::Applied => totals.applied += 1,
                    pb::PosEventResult::UnknownStore => totals.unknown_store += 1,
                    _ => totals.ignored += 1,
                }
                totals.holds_at_risk.extend(o.holds_at_risk);
            }
        }
        Ok(Response::new(totals))
    }

    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        convert::sku("sku", &req.sku)?;
        let (engine, seq) = self.domain.read_view(&caller)?;
        let view = engine
            .availability(&req.store_id, &req.sku)
            .map_err(DomainError::from)?;
        Ok(Response::new(pb::GetAvailabilityResponse {
            cell: Some(convert::availability_pb(&req.store_id, &req.sku, view, seq)),
        }))
    }

    async fn get_sku_availability(
        &self,
        request: Request<pb::GetSkuAvailabilityRequest>,
    ) -> Result<Response<pb::GetSkuAvailabilityResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        convert::sku("sku", &req.sku)?;
        if req.store_ids.len() > SKU_STORES_MAX {
            return Err(DomainError::LimitExceeded {
                what: "store_ids",
                actual: req.store_ids.len() as u64,
                limit: SKU_STORES_MAX as u64,
            }
            .into());
        }
        for (i, s) in req.store_ids.iter().enumerate() {
            convert::store_id(&format!("store_ids[{i}]"), s)?;
            caller.authorize_store(s)?;
        }
        let (engine, seq) = self.domain.read_view(&caller)?;
        let mut cells: Vec<pb::Availability> = engine
            .sku_availability(&req.sku)
            .into_iter()
            .map(|(store, view)| {
                let name = convert::store_name(&engine, store.0);
                convert::availability_pb(&name, &req.sku, view, seq)
            })
            .filter(|c| req.store_ids.is_empty() || req.store_ids.contains(&c.store_id))
            // What the token may see (every store: an open read in rpc.rs).
            .filter(|c| caller.authorize_store(&c.store_id).is_ok())
            .collect();
        cells.sort_by(|a, b| a.store_id.cmp(&b.store_id));
        Ok(Response::new(pb::GetSkuAvailabilityResponse { cells }))
    }

    async fn list_store_availability(
        &self,
        request: Request<pb::ListStoreAvailabilityRequest>,
    ) -> Result<Response<pb::ListStoreAvailabilityResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, CELLS_PAGE_DEFAULT, CELLS_PAGE_MAX)?;
        let after = convert::page_token(&req.page_token)?
            .map(|t| u32::try_from(t).map(SkuId))
            .transpose()
            .map_err(|_| DomainError::InvalidArgument {
                field: "page_token".into(),
                reason: "not a token this server issued".into(),
            })?;
        let (engine, seq) = self.domain.read_view(&caller)?;
        let page = engine
            .store_availability(&req.store_id, after, size)
            .map_err(DomainError::from)?;
        // The page is cut in SKU id order before the prefix filter, so a page may hold
        // fewer than page_size cells; the token still moves forward.
        let next_page_token = if page.len() == size {
            page.last()
                .map(|(sku, _)| sku.0.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let cells = page
            .into_iter()
            .filter_map(|(sku, view)| {
                let name = engine.sku_name(sku)?;
                name.starts_with(&req.sku_prefix)
                    .then(|| convert::availability_pb(&req.store_id, &name, view, seq))
            })
            .collect();
        Ok(Response::new(pb::ListStoreAvailabilityResponse {
            cells,
            next_page_token,
        }))
    }

    async fn nearby_availability(
        &self,
        request: Request<pb::NearbyAvailabilityRequest>,
    ) -> Result<Response<pb::NearbyAvailabilityResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let query = convert::nearby_query(request.get_ref())?;
        let engine = self.domain.engine()?;
        // A store-bound token (staff) sees only its own stores; the filter runs inside
        // the nearest-first walk so that `max_stores` counts visible stores.
        let stores = engine
            .nearby_availability(&query, |store| {
                caller
                    .authorize_store(&convert::store_name(&engine, store.0))
                    .is_ok()
            })
            .map_err(DomainError::from)?;
        Ok(Response::new(pb::NearbyAvailabilityResponse {
            stores: stores.iter().map(convert::store_supply_pb).collect(),
        }))
    }

    async fn set_safety_stock(
        &self,
        request: Request<pb::SetSafetyStockRequest>,
    ) -> Result<Response<pb::SetSafetyStockResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        if !req.sku.is_empty() {
            convert::sku("sku", &req.sku)?;
        }
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        let now = now();
                        if req.sku.is_empty() {
                            let store = engine
                                .store_id(&req.store_id)
                                .and_then(|id| engine.store_def(id));
                            let mut def =
                                store.ok_or(EngineError::UnknownStore(req.store_id.clone()))?;
                            def.default_safety_stock = req.safety_stock;
                            engine.define_store(def, now)?;
                            return Ok(pb::SetSafetyStockResponse { cell: None });
                        }
                        engine.set_safety_stock(&req.store_id, &req.sku, req.safety_stock, now)?;
                        Ok(pb::SetSafetyStockResponse {
                            cell: Some(cell(&engine, &req.store_id, &req.sku)?),
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }
}
