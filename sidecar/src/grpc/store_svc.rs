//! `pickline.v1.StoreService` handlers.

use pickline_engine::{Engine, EngineError, StoreStatus, calendar::CalendarConfig};
use tonic::{Request, Response, Status};

use crate::{
    grpc::auth,
    grpc::convert,
    grpc::domain::{Domain, now},
    grpc::status::{DomainError, ResourceKind},
    pb::{self, store_service_server::StoreService},
};

/// Stores per ListStores page: default and maximum (store.proto).
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1_000;

/// The StoreService handler.
#[derive(Clone, Debug)]
pub struct Stores {
    domain: Domain,
}

impl Stores {
    /// A handler over `domain`.
    pub fn new(domain: Domain) -> Stores {
        Stores { domain }
    }

    async fn set_status(&self, store_id: String, status: StoreStatus) -> Result<pb::Store, Status> {
        let engine = self.domain.engine()?;
        self.domain
            .durable(move || {
                engine.set_store_status(&store_id, status, now())?;
                store_by_name(&engine, &store_id)
            })
            .await
    }
}

fn store_by_name(engine: &Engine, store_id: &str) -> Result<pb::Store, DomainError> {
    engine
        .store_id(store_id)
        .and_then(|id| engine.store_def(id))
        .map(|def| convert::store_full_pb(engine, &def))
        .ok_or_else(|| DomainError::NotFound {
            kind: ResourceKind::Store,
            id: store_id.to_owned(),
        })
}

/// Replaces one part of a store's calendar (`edit` changes the base calendar: the
/// current one, or the default one before the first edit) and returns the store.
fn edit_calendar(
    engine: &Engine,
    store_id: &str,
    edit: impl FnOnce(&mut CalendarConfig),
) -> Result<pb::Store, DomainError> {
    let def = engine
        .store_id(store_id)
        .and_then(|id| engine.store_def(id))
        .ok_or_else(|| DomainError::NotFound {
            kind: ResourceKind::Store,
            id: store_id.to_owned(),
        })?;
    engine.update_calendar(store_id, now(), |current| {
        let mut config = CalendarConfig::to_edit(current, &def.time_zone);
        edit(&mut config);
        config
    })?;
    store_by_name(engine, store_id)
}

#[tonic::async_trait]
impl StoreService for Stores {
    async fn upsert_store(
        &self,
        request: Request<pb::UpsertStoreRequest>,
    ) -> Result<Response<pb::UpsertStoreResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        // Only the scope's row decides who may upsert; this is the partition map's check
        // (cluster mode: a store is created only in the partition the map names).
        if let Some(store) = &req.store {
            caller.authorize_store(&store.store_id)?;
        }
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let def = convert::store_def(req.store)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        let created = engine.store_id(&def.external_id).is_none();
                        let id = def.external_id.clone();
                        let time_zone = def.time_zone.clone();
                        engine.define_store(def, now())?;
                        // Hours are local: a store that moves to another time zone keeps its
                        // wall-clock hours in the new one.
                        if engine
                            .calendar_config(&id)?
                            .is_some_and(|c| c.time_zone != time_zone)
                        {
                            engine.update_calendar(&id, now(), |c| {
                                CalendarConfig::to_edit(c, &time_zone)
                            })?;
                        }
                        Ok(pb::UpsertStoreResponse {
                            store: Some(store_by_name(&engine, &id)?),
                            created,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn set_hours(
        &self,
        request: Request<pb::SetHoursRequest>,
    ) -> Result<Response<pb::SetHoursResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let (weekly, exceptions) = convert::hours(req.hours.as_ref(), &req.exceptions)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        let store = edit_calendar(&engine, &req.store_id, |c| {
                            c.weekly_hours = weekly;
                            c.exceptions = exceptions;
                        })?;
                        Ok(pb::SetHoursResponse { store: Some(store) })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn set_staffing(
        &self,
        request: Request<pb::SetStaffingRequest>,
    ) -> Result<Response<pb::SetStaffingResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staffing = convert::staffing(&req.windows)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        let store =
                            edit_calendar(&engine, &req.store_id, |c| c.staffing = staffing)?;
                        Ok(pb::SetStaffingResponse { store: Some(store) })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn set_slot_config(
        &self,
        request: Request<pb::SetSlotConfigRequest>,
    ) -> Result<Response<pb::SetSlotConfigResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let (pickup, pick_time_ms) = convert::slot_config(req.slot_config.as_ref())?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        // Two records: a crash between them keeps the new slots with the old pick
                        // time, which a retry with the same request completes.
                        let store = edit_calendar(&engine, &req.store_id, |c| c.pickup = pickup)?;
                        let store = match pick_time_ms {
                            Some(ms) => {
                                engine.set_pick_time(&req.store_id, ms, now()).map_err(
                                    |e| match e {
                                        EngineError::InvalidRequest { why, .. } => {
                                            DomainError::InvalidArgument {
                                                field: "slot_config.pick_time_per_order_ms".into(),
                                                reason: why,
                                            }
                                        }
                                        other => other.into(),
                                    },
                                )?;
                                store_by_name(&engine, &req.store_id)?
                            }
                            None => store,
                        };
                        Ok(pb::SetSlotConfigResponse { store: Some(store) })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn pause_pickups(
        &self,
        request: Request<pb::PausePickupsRequest>,
    ) -> Result<Response<pb::PausePickupsResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let store = self
                    .set_status(req.store_id, StoreStatus::PickupsPaused)
                    .await?;
                Ok(Response::new(pb::PausePickupsResponse {
                    store: Some(store),
                }))
            })
            .await
    }

    async fn resume_pickups(
        &self,
        request: Request<pb::ResumePickupsRequest>,
    ) -> Result<Response<pb::ResumePickupsResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        let caller = auth::caller(&request)?.clone();
        caller.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let store = self.set_status(req.store_id, StoreStatus::Open).await?;
                Ok(Response::new(pb::ResumePickupsResponse {
                    store: Some(store),
                }))
            })
            .await
    }

    async fn get_store(
        &self,
        request: Request<pb::GetStoreRequest>,
    ) -> Result<Response<pb::GetStoreResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        auth::caller(&request)?.authorize_store(&request.get_ref().store_id)?;
        let engine = self.domain.engine()?;
        let store = store_by_name(&engine, &request.get_ref().store_id)?;
        Ok(Response::new(pb::GetStoreResponse { store: Some(store) }))
    }

    async fn list_stores(
        &self,
        request: Request<pb::ListStoresRequest>,
    ) -> Result<Response<pb::ListStoresResponse>, Status> {
        // Every scope reads every store (an open read in rpc.rs).
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let after = convert::store_page_after(&req.page_token)?;
        let status = match req.status {
            0 => None,
            s => Some(convert::store_status("status", s)?),
        };
        let engine = self.domain.engine()?;
        let mut defs: Vec<_> = engine
            .stores()
            .into_iter()
            .map(|(_, def)| def)
            .filter(|d| status.is_none_or(|s| d.status == s))
            .filter(|d| after.as_ref().is_none_or(|a| d.external_id > *a))
            .collect();
        defs.sort_by(|a, b| a.external_id.cmp(&b.external_id));
        let next_page_token = if defs.len() > size {
            defs.truncate(size);
            defs.last()
                .map(|d| convert::store_page_token(&d.external_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListStoresResponse {
            stores: defs
                .iter()
                .map(|d| convert::store_full_pb(&engine, d))
                .collect(),
            next_page_token,
        }))
    }
}
