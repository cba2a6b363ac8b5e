//! `pickline.v1.PickupService` handlers.
//!
//! Every handler that names an order authorizes the order's store (the store is in the
//! order id's high bits), so a staff token of one store never reads or changes another
//! store's orders.

use std::sync::Arc;

use pickline_engine::{
    Canceller, CollectOutcome, CreateOrderOutcome, CreateOrderRejection, Engine, EngineError,
    HoldNotActive, OrderId, OrderStatus, ReadyOutcome, ShortLine, ShortPickResolution,
    ShortReportOutcome, Timestamp, TransitionOutcome, VerifyCodeOutcome,
};
use tonic::{Request, Response, Status};

use crate::{
    grpc::auth::{self, Caller},
    grpc::convert::{self, staff_id},
    grpc::domain::{Domain, entropy, now},
    grpc::rpc::ScopeKind,
    grpc::status::{DomainError, ResourceKind},
    pb::{self, pickup_service_server::PickupService},
};

/// Orders per ListOrders page: default and maximum (pickup.proto).
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1_000;

/// The PickupService handler.
#[derive(Clone, Debug)]
pub struct Pickups {
    domain: Domain,
}

impl Pickups {
    /// A handler over `domain`.
    pub fn new(domain: Domain) -> Pickups {
        Pickups { domain }
    }

    /// The engine, after checking that the caller may act on `order`'s store.
    fn engine_for(&self, caller: &Caller, order: OrderId) -> Result<Arc<Engine>, Status> {
        let engine = self.domain.engine()?;
        caller.authorize_store(&convert::store_name(&engine, order.store().0))?;
        Ok(engine)
    }

    /// The shape of every plain transition: authorize on the order's store, apply `apply`
    /// (an engine transition at `now`), await its commit, and answer with the order after
    /// it (or the status of a refused transition, naming `action`).
    async fn transition(
        &self,
        caller: &Caller,
        order: OrderId,
        action: &'static str,
        apply: impl FnOnce(&Engine, Timestamp) -> Result<TransitionOutcome, EngineError>,
    ) -> Result<pb::PickupOrder, Status> {
        let engine = self.engine_for(caller, order)?;
        self.domain
            .durable(move || {
                let outcome = apply(&engine, now())?;
                transitioned(&engine, order, outcome, action)
            })
            .await
    }
}

/// The order after a transition, or the status error of a refused one.
fn transitioned(
    engine: &Engine,
    order: OrderId,
    outcome: TransitionOutcome,
    action: &'static str,
) -> Result<pb::PickupOrder, DomainError> {
    match outcome {
        TransitionOutcome::Done { .. } => Ok(convert::order_pb(
            engine,
            &convert::order_view(engine, order)?,
        )),
        TransitionOutcome::Rejected(r) => Err(convert::order_rejection(order, &r, action)),
    }
}

/// Re-allocates the `missing` units of a short line with the engine's policy
/// ([`Engine::reallocate_short`]) and answers it as an Allocate.
fn reallocate(
    engine: &Engine,
    order: OrderId,
    pick: &ShortLine,
    missing: u32,
    max_distance_km: f64,
    now: pickline_engine::Timestamp,
) -> Result<pb::Reallocation, DomainError> {
    let head_before = engine.log().last_lsn().0;
    let (key, outcome) = engine.reallocate_short(
        order,
        &pick.sku,
        (pick.found, missing),
        max_distance_km,
        now,
    )?;
    Ok(pb::Reallocation {
        sku: pick.sku.clone(),
        missing_qty: missing,
        result: Some(convert::allocate_response(
            engine,
            &key,
            outcome,
            head_before,
            now,
        )?),
    })
}

fn order_rejected(reason: pb::OrderRejectReason, message: &str) -> pb::OrderRejected {
    pb::OrderRejected {
        reason: reason as i32,
        attempts_left: 0,
        message: message.to_owned(),
    }
}

#[tonic::async_trait]
impl PickupService for Pickups {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let cmd = convert::create_order(request.into_inner())?;
        let order = OrderId::from_hold(cmd.hold);
        let engine = self.engine_for(&caller, order)?;
        self.domain
            .durable(move || {
                use pb::create_order_response::Outcome;
                let now = now();
                let head_before = engine.log().last_lsn();
                let outcome = match engine.create_order(&cmd, now)? {
                    CreateOrderOutcome::Created { order } => {
                        // The contract's CreateOrder also confirms: checkout is complete.
                        let confirmed = engine.confirm_order(order, now)?;
                        Outcome::Order(transitioned(&engine, order, confirmed, "confirm")?)
                    }
                    CreateOrderOutcome::Rejected(CreateOrderRejection::HoldNotActive(
                        HoldNotActive::Ended,
                    )) => Outcome::Rejected(order_rejected(
                        pb::OrderRejectReason::HoldNotActive,
                        "the hold expired or was released before the order was created",
                    )),
                    CreateOrderOutcome::Rejected(CreateOrderRejection::HoldNotActive(
                        HoldNotActive::Unknown,
                    )) => return Err(convert::unknown_hold(cmd.hold)),
                    CreateOrderOutcome::Rejected(CreateOrderRejection::OrderExists { order }) => {
                        // Not a reused key: the hold is past the state that takes an order.
                        return Err(DomainError::IllegalTransition {
                            kind: ResourceKind::Hold,
                            id: cmd.hold.0.to_string(),
                            state: format!("already the hold of order {}", order.0),
                            action: "create another order",
                        });
                    }
                    CreateOrderOutcome::Rejected(CreateOrderRejection::ChannelOrderExists {
                        order,
                    }) => {
                        return Err(DomainError::ChannelOrderExists {
                            channel: cmd.channel,
                            channel_order_id: cmd.channel_order_id,
                            order: order.0,
                        });
                    }
                    CreateOrderOutcome::Rejected(CreateOrderRejection::KeyReused { .. }) => {
                        return Err(DomainError::IdempotencyKeyReused {
                            key: cmd.idempotency_key.unwrap_or_default(),
                        });
                    }
                    CreateOrderOutcome::InFlight => {
                        return Err(DomainError::OrderInFlight {
                            channel_order_id: cmd.channel_order_id,
                        });
                    }
                    CreateOrderOutcome::Rejected(CreateOrderRejection::LinesMismatch) => {
                        return Err(DomainError::InvalidArgument {
                            field: "lines".into(),
                            reason: "must be exactly the hold's lines (SKU and quantity)".into(),
                        });
                    }
                };
                // Nothing appended by this request: the order came from an earlier one.
                let replayed =
                    matches!(outcome, Outcome::Order(_)) && engine.log().last_lsn() == head_before;
                Ok(pb::CreateOrderResponse {
                    outcome: Some(outcome),
                    replayed,
                })
            })
            .await
            .map(Response::new)
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let engine = self.domain.engine()?;
        let order = match request.into_inner().key {
            Some(pb::get_order_request::Key::OrderId(id)) => convert::order_id("order_id", id)?,
            Some(pb::get_order_request::Key::ChannelRef(r)) => {
                if r.channel == pb::Channel::Unspecified as i32 {
                    return Err(DomainError::InvalidArgument {
                        field: "channel_ref.channel".into(),
                        reason: "must be set".into(),
                    }
                    .into());
                }
                if r.channel_order_id.is_empty() {
                    return Err(DomainError::InvalidArgument {
                        field: "channel_ref.channel_order_id".into(),
                        reason: "must not be empty".into(),
                    }
                    .into());
                }
                // A named channel and its order id name one order (pickup.proto). The
                // reference carries no name for OTHER: the order id alone then picks.
                match convert::channel(r.channel, "") {
                    Ok(channel) => engine.order_by_channel(&channel, &r.channel_order_id),
                    Err(_) => engine.stores().iter().find_map(|(_, def)| {
                        engine.order_by_ref(&def.external_id, &r.channel_order_id)
                    }),
                }
                .ok_or_else(|| DomainError::NotFound {
                    kind: ResourceKind::Order,
                    id: r.channel_order_id.clone(),
                })?
            }
            None => {
                return Err(DomainError::InvalidArgument {
                    field: "key".into(),
                    reason: "order_id or channel_ref is required".into(),
                }
                .into());
            }
        };
        let engine = self.engine_for(&caller, order)?;
        let view = convert::order_view(&engine, order)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(convert::order_pb(&engine, &view)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        auth::caller(&request)?.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let after = convert::page_token(&req.page_token)?.map(OrderId);
        let states = req
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| convert::order_status(&format!("states[{i}]"), *s))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = move |s: OrderStatus| {
            if states.is_empty() {
                matches!(
                    s,
                    OrderStatus::Confirmed | OrderStatus::Picking | OrderStatus::Ready
                )
            } else {
                states.contains(&s)
            }
        };
        let engine = self.domain.engine()?;
        // Orders come in id (creation) order: without pickup slots that is the order
        // in which they entered the queue.
        let views = engine
            .store_orders(&req.store_id, after, size, wanted)
            .map_err(DomainError::from)?;
        let next_page_token = if views.len() == size {
            views
                .last()
                .map(|v| v.order.0.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: views
                .iter()
                .map(|v| convert::order_pb(&engine, v))
                .collect(),
            next_page_token,
        }))
    }

    async fn start_picking(
        &self,
        request: Request<pb::StartPickingRequest>,
    ) -> Result<Response<pb::StartPickingResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let order_pb = self
                    .transition(&caller, order, "start picking", |engine, now| {
                        engine.start_picking(order, &staff, now)
                    })
                    .await?;
                Ok(Response::new(pb::StartPickingResponse {
                    order: Some(order_pb),
                }))
            })
            .await
    }

    async fn report_short(
        &self,
        request: Request<pb::ReportShortRequest>,
    ) -> Result<Response<pb::ReportShortResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let report = convert::short_report(&req)?;
                let order = report.order;
                let realloc_km = match req.reallocate_max_distance_m {
                    0 => pickline_engine::REALLOCATE_DISTANCE_KM_DEFAULT,
                    m => convert::distance_km("reallocate_max_distance_m", m)?,
                };
                let engine = self.engine_for(&caller, order)?;
                self.domain
                    .durable(move || {
                        let now = now();
                        // All lines or none, in one record: a refusal changed nothing.
                        let missing = match engine.report_short(&report, now)? {
                            ShortReportOutcome::Done { missing, .. } => missing,
                            ShortReportOutcome::Rejected { line, rejection } => {
                                return Err(convert::short_rejection(order, line, &rejection));
                            }
                        };
                        let mut reallocations = Vec::new();
                        for (line, missing) in report.lines.iter().zip(missing) {
                            if line.resolution == ShortPickResolution::Reallocate && missing > 0 {
                                reallocations.push(reallocate(
                                    &engine, order, line, missing, realloc_km, now,
                                )?);
                            }
                        }
                        let view = convert::order_view(&engine, order)?;
                        Ok(pb::ReportShortResponse {
                            order: Some(convert::order_pb(&engine, &view)),
                            reallocations,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn mark_ready(
        &self,
        request: Request<pb::MarkReadyRequest>,
    ) -> Result<Response<pb::MarkReadyResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let engine = self.engine_for(&caller, order)?;
                self.domain
                    .durable(move || {
                        let entropy = entropy()?;
                        match engine.mark_ready(order, &staff, entropy, now())? {
                            ReadyOutcome::Ready { code, qr } => {
                                let view = convert::order_view(&engine, order)?;
                                Ok(pb::MarkReadyResponse {
                                    order: Some(convert::order_pb(&engine, &view)),
                                    pickup_code: code.to_string(),
                                    qr_payload: qr.map(|q| q.encode()).unwrap_or_default(),
                                })
                            }
                            ReadyOutcome::Rejected(r) => {
                                Err(convert::order_rejection(order, &r, "mark ready"))
                            }
                        }
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let code = convert::presented_code(order, &req.code)?;
                let engine = self.engine_for(&caller, order)?;
                self.domain
                    .durable(move || {
                        use pb::verify_code_response::Outcome;
                        let outcome = match engine.verify_code(order, &code, &staff, now())? {
                            VerifyCodeOutcome::Code(v) => match convert::code_rejected_pb(&v)? {
                                Some(rejected) => Outcome::Rejected(rejected),
                                None => Outcome::Verified(convert::order_pb(
                                    &engine,
                                    &convert::order_view(&engine, order)?,
                                )),
                            },
                            VerifyCodeOutcome::Rejected(r) => {
                                return Err(convert::order_rejection(order, &r, "verify code"));
                            }
                        };
                        Ok(pb::VerifyCodeResponse {
                            outcome: Some(outcome),
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn collect(
        &self,
        request: Request<pb::CollectRequest>,
    ) -> Result<Response<pb::CollectResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let code = convert::presented_code(order, &req.code)?;
                let engine = self.engine_for(&caller, order)?;
                self.domain
                    .durable(move || {
                        use pb::collect_response::Outcome;
                        let outcome = match engine.collect(order, &code, &staff, now())? {
                            CollectOutcome::Collected { receipt, .. } => {
                                let receipt = (*receipt).map_err(|e| {
                                    DomainError::Internal(format!("collected, but no receipt: {e}"))
                                })?;
                                let view = convert::order_view(&engine, order)?;
                                Outcome::Collected(pb::CollectedOrder {
                                    order: Some(convert::order_pb(&engine, &view)),
                                    receipt: Some(convert::receipt_pb(&receipt)),
                                })
                            }
                            CollectOutcome::Code(v) => match convert::code_rejected_pb(&v)? {
                                Some(rejected) => Outcome::Rejected(rejected),
                                None => {
                                    return Err(DomainError::Internal(
                                        "code accepted but the order was not collected".into(),
                                    ));
                                }
                            },
                            CollectOutcome::Rejected(r) => {
                                return Err(convert::order_rejection(order, &r, "collect"));
                            }
                        };
                        Ok(pb::CollectResponse {
                            outcome: Some(outcome),
                            replayed: false,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn no_show(
        &self,
        request: Request<pb::NoShowRequest>,
    ) -> Result<Response<pb::NoShowResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let order_pb = self
                    .transition(&caller, order, "record no-show", |engine, now| {
                        engine.no_show(order, &staff, now)
                    })
                    .await?;
                Ok(Response::new(pb::NoShowResponse {
                    order: Some(order_pb),
                }))
            })
            .await
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                // The token must stand for the actor it names: the customer cancels
                // through checkout or the OMS, the store through its own staff.
                let (by, actor, kinds) = match pb::CancelActor::try_from(req.actor) {
                    Ok(pb::CancelActor::Customer) => (
                        Canceller::Customer,
                        "CUSTOMER",
                        &[ScopeKind::Checkout, ScopeKind::Oms][..],
                    ),
                    Ok(pb::CancelActor::Store) => (
                        Canceller::Store(staff_id("staff_id", &req.staff_id)?),
                        "STORE",
                        &[ScopeKind::Staff][..],
                    ),
                    _ => {
                        return Err(DomainError::InvalidArgument {
                            field: "actor".into(),
                            reason: "must be CUSTOMER or STORE".into(),
                        }
                        .into());
                    }
                };
                let order = convert::order_id("order_id", req.order_id)?;
                let engine = self.domain.engine()?;
                caller.authorize_actor(
                    actor,
                    kinds,
                    &convert::store_name(&engine, order.store().0),
                )?;
                let order_pb = self
                    .transition(&caller, order, "cancel", |engine, now| {
                        engine.cancel_order(order, &by, now)
                    })
                    .await?;
                Ok(Response::new(pb::CancelResponse {
                    order: Some(order_pb),
                }))
            })
            .await
    }

    async fn staff_override(
        &self,
        request: Request<pb::StaffOverrideRequest>,
    ) -> Result<Response<pb::StaffOverrideResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let staff = staff_id("staff_id", &req.staff_id)?;
                let order = convert::order_id("order_id", req.order_id)?;
                let order_pb = self
                    .transition(&caller, order, "override", |engine, now| {
                        engine.staff_override(order, &staff, now)
                    })
                    .await?;
                Ok(Response::new(pb::StaffOverrideResponse {
                    order: Some(order_pb),
                }))
            })
            .await
    }
}
