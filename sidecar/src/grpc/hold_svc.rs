//! `pickline.v1.HoldService` handlers: convert, call the engine inline, await the group
//! commit, convert the outcome. In cluster mode an Allocate this partition's stores cannot
//! serve is asked of the other partitions ([`crate::cluster::span`]).

use std::{sync::Arc, time::Duration};

use pickline_engine::{
    ConfirmOutcome, Engine, EngineError, ExtendOutcome, HoldNotActive, HoldOutcome, ReleaseOutcome,
    Timestamp,
};
use tonic::{Request, Response, Status, metadata::AsciiMetadataValue};

use crate::{
    cluster::{
        map::NearPartition,
        span::{self, Spanned, Spanner},
    },
    grpc::auth,
    grpc::convert,
    grpc::domain::{Domain, now},
    grpc::status::{DomainError, ResourceKind},
    pb::{self, hold_service_server::HoldService},
};

/// Holds per BatchHold request at most (hold.proto).
pub const BATCH_HOLDS_MAX: usize = 1_000;

/// Most other partitions an allocation asks for its caller, or names when it does not
/// ask (hold.proto `partitions_asked`, `other_partitions`).
const PARTITIONS_TO_ASK_MAX: usize = 3;

/// The HoldService handler.
#[derive(Clone, Debug)]
pub struct Holds {
    domain: Domain,
    /// `grpc.request_timeout_ms`: an allocation asking other partitions ends by it.
    request_timeout: Duration,
    /// Cluster mode: the calls to other partitions' leaders an allocation makes.
    span: Arc<Spanner>,
}

impl Holds {
    /// A handler over `domain`, whose requests the server ends after `request_timeout`.
    pub fn new(domain: Domain, request_timeout: Duration) -> Holds {
        Holds {
            domain,
            request_timeout,
            span: Arc::default(),
        }
    }
}

/// The contract response of one engine hold outcome and the LSN of the record that
/// decided it ([`Engine::hold_logged`]). `head_before` is the log head read before the
/// call: an outcome whose record is at or below it was decided by an earlier request with
/// the same key (`replayed`), a grant or a keyed rejection alike. `now` is the time the engine call was given
/// (a fresh hold's creation time). Takes the request by value: a fresh grant is described
/// by its store and lines, moved rather than copied (BatchHold does this per line).
fn hold_response(
    engine: &Engine,
    req: pickline_engine::HoldRequest,
    (outcome, lsn): pickline_engine::LoggedOutcome,
    head_before: u64,
    now: Timestamp,
) -> Result<pb::HoldResponse, DomainError> {
    use pb::hold_response::Outcome;
    let replayed = lsn.is_some_and(|lsn| lsn.0 <= head_before);
    Ok(match outcome {
        HoldOutcome::Granted(g) => {
            // Only a replay reads the hold back: a fresh grant is described by the request.
            let existing = if replayed {
                engine.hold_info(g.hold)
            } else {
                None
            };
            let info = match existing {
                Some(h) => convert::active_hold_pb(engine, &h),
                None => {
                    let slot = req.slot_start_ms;
                    let lines = req
                        .lines
                        .into_iter()
                        .map(|l| pb::Line {
                            sku: l.sku,
                            qty: l.qty,
                        })
                        .collect();
                    convert::hold_info_pb(
                        req.store,
                        lines,
                        now.as_ms(),
                        g.expires_at.as_ms(),
                        pb::HoldState::Active,
                        g.hold,
                        convert::slot_pb(engine, g.hold.store(), slot),
                    )
                }
            };
            let estimated_ready_ms = match info.slot.as_ref() {
                Some(slot) => slot.start_ms,
                None => convert::pickup_estimate_ms(engine, &info.store_id, now),
            };
            pb::HoldResponse {
                outcome: Some(Outcome::Granted(info)),
                replayed,
                estimated_ready_ms,
            }
        }
        HoldOutcome::Rejected(r) => pb::HoldResponse {
            outcome: Some(Outcome::Rejected(convert::hold_rejected_pb(&r))),
            replayed,
            estimated_ready_ms: 0,
        },
        HoldOutcome::InFlight => {
            return Err(DomainError::InFlight {
                key: req.idempotency_key.unwrap_or_default(),
            });
        }
    })
}

fn not_active(
    engine: &Engine,
    hold: pickline_engine::HoldId,
    n: HoldNotActive,
) -> Result<pb::HoldRejected, DomainError> {
    match n {
        HoldNotActive::Ended => Ok(convert::hold_not_active_pb(engine, hold)),
        HoldNotActive::Unknown => Err(convert::unknown_hold(hold)),
    }
}

/// The hold after a change to it (extend, confirm): its description, or the rejection when
/// it was not active (`not_active`) or ended in between.
fn hold_after(
    engine: &Engine,
    hold: pickline_engine::HoldId,
    not_active: Option<HoldNotActive>,
) -> Result<Result<pb::HoldInfo, pb::HoldRejected>, DomainError> {
    if let Some(n) = not_active {
        return Ok(Err(self::not_active(engine, hold, n)?));
    }
    Ok(match engine.hold_info(hold) {
        Some(h) => Ok(convert::active_hold_pb(engine, &h)),
        None => Err(convert::hold_not_active_pb(engine, hold)),
    })
}

/// Cluster mode: an allocation this partition's stores could not serve, to ask of the
/// other partitions.
struct Ask {
    /// The other partitions in reach, nearest first.
    near: Vec<NearPartition>,
    /// Where distances are measured from (degrees).
    origin: [f64; 2],
    /// The caller's `authorization` header, which the calls carry.
    authorization: Option<AsciiMetadataValue>,
    /// When the calls must have ended.
    deadline: tokio::time::Instant,
}

impl Holds {
    /// Cluster mode: after this partition rejected `req` (`rejected`), asks the other
    /// partitions in reach for the caller, nearest first, unless the request says not
    /// to (`this_partition_only`: it names them instead); docs/CLUSTER.md.
    async fn span_partitions(
        &self,
        req: pb::AllocateRequest,
        rejected: pb::AllocateResponse,
        ask: Ask,
    ) -> Result<pb::AllocateResponse, DomainError> {
        if req.this_partition_only || ask.near.is_empty() {
            return Ok(pb::AllocateResponse {
                other_partitions: convert::partitions_to_ask_pb(&ask.near),
                ..rejected
            });
        }
        // The caller's request, allocated there among its stores only, from a position
        // (the other partitions do not know this one's stores).
        let [latitude_deg, longitude_deg] = ask.origin;
        let forwarded = pb::AllocateRequest {
            origin: Some(pb::allocate_request::Origin::Position(pb::GeoPoint {
                latitude_deg,
                longitude_deg,
            })),
            this_partition_only: true,
            ..req
        };
        let spanned = self
            .span
            .allocate(
                &ask.near,
                &forwarded,
                ask.authorization.as_ref(),
                ask.deadline,
            )
            .await;
        Ok(match spanned {
            Spanned::Allocated { response, asked } => {
                let server = &asked.last().expect("the allocating partition").near;
                pb::AllocateResponse {
                    served_by: Some(convert::partition_leader_pb(
                        &server.partition,
                        server.leader.as_ref(),
                    )),
                    partitions_asked: convert::partitions_asked_pb(&asked),
                    // That partition's own view of the others is not this answer's.
                    other_partitions: Vec::new(),
                    ..response
                }
            }
            Spanned::NotServed { asked, to_ask } => pb::AllocateResponse {
                other_partitions: convert::partitions_to_ask_pb(&to_ask),
                partitions_asked: convert::partitions_asked_pb(&asked),
                ..rejected
            },
            Spanned::Unanswered {
                partition,
                leader_addr,
                why,
            } => {
                return Err(DomainError::PartitionUnanswered {
                    partition,
                    leader_addr,
                    why,
                });
            }
        })
    }
}

#[tonic::async_trait]
impl HoldService for Holds {
    async fn hold(
        &self,
        request: Request<pb::HoldRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        auth::caller(&request)?.authorize_store(&request.get_ref().store_id)?;
        let cmd = convert::hold_request(request.into_inner())?;
        let engine = self.domain.engine()?;
        self.domain
            .durable(move || {
                let now = now();
                let head_before = engine.log().last_lsn().0;
                let outcome = engine.hold_logged(&cmd, now)?;
                hold_response(&engine, cmd, outcome, head_before, now)
            })
            .await
            .map(Response::new)
    }

    async fn batch_hold(
        &self,
        request: Request<pb::BatchHoldRequest>,
    ) -> Result<Response<pb::BatchHoldResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let pb::BatchHoldRequest {
            holds: reqs,
            idempotency_key: batch_key,
        } = request.into_inner();
        convert::batch_len("holds", reqs.len(), BATCH_HOLDS_MAX)?;
        let batch_key = (!batch_key.is_empty()).then_some(batch_key);
        match &batch_key {
            // One key for the batch: the holds have none of their own.
            Some(key) => {
                convert::check_key("idempotency_key", key)?;
                if let Some(i) = reqs.iter().position(|r| !r.idempotency_key.is_empty()) {
                    return Err(DomainError::InvalidArgument {
                        field: format!("holds[{i}].idempotency_key"),
                        reason: "must be empty: the batch has an idempotency key".into(),
                    }
                    .into());
                }
            }
            // Every hold is its own operation with its own key: a key twice in one batch
            // is refused before anything is held (the second would otherwise answer with
            // the first's hold, or a later hold fail after earlier ones were applied).
            None => {
                let mut keys = std::collections::HashSet::with_capacity(reqs.len());
                for (i, r) in reqs.iter().enumerate() {
                    convert::check_key("idempotency_key", &r.idempotency_key)
                        .map_err(|e| e.in_field(|| format!("holds[{i}].")))?;
                    if !keys.insert(r.idempotency_key.as_str()) {
                        return Err(DomainError::InvalidArgument {
                            field: format!("holds[{i}].idempotency_key"),
                            reason: "appears more than once in this batch".into(),
                        }
                        .into());
                    }
                }
            }
        }
        let mut cmds = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.into_iter().enumerate() {
            caller.authorize_store(&r.store_id)?;
            // The field prefix is formatted only for an error, not per hold.
            let cmd =
                convert::hold_command(r).map_err(|e| e.in_field(|| format!("holds[{i}].")))?;
            cmds.push(cmd);
        }
        let engine = self.domain.engine()?;
        self.domain
            .durable(move || {
                let now = now();
                let head_before = engine.log().last_lsn().0;
                let outcomes = match &batch_key {
                    Some(key) => {
                        let outcomes = engine.hold_batch_keyed(key, &cmds, now)?;
                        if outcomes
                            .iter()
                            .any(|o| matches!(o, Ok((HoldOutcome::InFlight, _))))
                        {
                            return Err(DomainError::InFlight { key: key.clone() });
                        }
                        outcomes
                    }
                    // A malformed hold refuses the batch before anything is held.
                    None => engine.hold_batch_whole(&cmds, now)?,
                };
                // A kept batch's retry answers every hold from its record, older than the
                // call; a full table has no record of its own, so it takes the batch's word.
                let retried = outcomes
                    .iter()
                    .any(|o| matches!(o, Ok((_, Some(lsn))) if lsn.0 <= head_before));
                let results = cmds
                    .into_iter()
                    .zip(outcomes)
                    .map(|(req, outcome)| match outcome {
                        Ok(outcome) => hold_response(&engine, req, outcome, head_before, now),
                        Err(EngineError::LimitReached { limit, value }) => Ok(pb::HoldResponse {
                            outcome: Some(pb::hold_response::Outcome::Rejected(
                                convert::store_holds_full_pb(limit, value),
                            )),
                            replayed: batch_key.is_some() && retried,
                            estimated_ready_ms: 0,
                        }),
                        Err(e) => Err(e.into()),
                    })
                    .collect::<Result<_, DomainError>>()?;
                Ok(pb::BatchHoldResponse { results })
            })
            .await
            .map(Response::new)
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let hold = convert::hold_id("hold_id", req.hold_id)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        use pb::extend_response::Outcome;
                        let not_active = match engine.extend(hold, Some(req.ttl_ms), now())? {
                            ExtendOutcome::Extended { .. } => None,
                            ExtendOutcome::NotActive(n) => Some(n),
                            ExtendOutcome::PastSlot {
                                slot_start_ms,
                                slot_expires_at,
                            } => {
                                // hold.proto: slot holds cannot be extended past their
                                // slot. The caller's model of the hold is wrong (it is
                                // a slot hold), so a status, not an outcome.
                                return Err(DomainError::IllegalTransition {
                                    kind: ResourceKind::Hold,
                                    id: hold.0.to_string(),
                                    state: format!(
                                        "booked on the slot starting at {slot_start_ms} \
                                         (expires at {} at the latest)",
                                        slot_expires_at.0
                                    ),
                                    action: "extend past its slot",
                                });
                            }
                        };
                        let outcome = match hold_after(&engine, hold, not_active)? {
                            Ok(info) => Outcome::Extended(info),
                            Err(rejected) => Outcome::Rejected(rejected),
                        };
                        Ok(pb::ExtendResponse {
                            outcome: Some(outcome),
                            replayed: false,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn confirm(
        &self,
        request: Request<pb::ConfirmRequest>,
    ) -> Result<Response<pb::ConfirmResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let hold = convert::hold_id("hold_id", req.hold_id)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        use pb::confirm_response::Outcome;
                        let not_active = match engine.confirm(hold, now())? {
                            ConfirmOutcome::Confirmed { .. } => None,
                            ConfirmOutcome::NotActive(n) => Some(n),
                        };
                        let outcome = match hold_after(&engine, hold, not_active)? {
                            Ok(info) => Outcome::Confirmed(info),
                            Err(rejected) => Outcome::Rejected(rejected),
                        };
                        Ok(pb::ConfirmResponse {
                            outcome: Some(outcome),
                            replayed: false,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        keyed
            .run(async move {
                let hold = convert::hold_id("hold_id", req.hold_id)?;
                let engine = self.domain.engine()?;
                self.domain
                    .durable(move || {
                        let (outcome, released) = engine.release_described(hold, now())?;
                        let (state, released_now) = match outcome {
                            ReleaseOutcome::Released => (pb::HoldState::Released, true),
                            // Ended earlier: released (perhaps by a retry of this request),
                            // expired or consumed, as the engine remembers.
                            ReleaseOutcome::AlreadyEnded => {
                                (convert::ended_hold_state_pb(&engine, hold), false)
                            }
                            ReleaseOutcome::Unknown => return Err(convert::unknown_hold(hold)),
                        };
                        let store = convert::store_name(&engine, hold.store().0);
                        let (lines, created, expires) =
                            released.as_ref().map_or((Vec::new(), 0, 0), |h| {
                                (
                                    convert::lines_pb(&engine, &h.lines),
                                    h.created.as_ms(),
                                    h.expires_at.as_ms(),
                                )
                            });
                        let slot = released
                            .as_ref()
                            .and_then(|h| convert::slot_pb(&engine, hold.store(), h.slot));
                        Ok(pb::ReleaseResponse {
                            hold: Some(convert::hold_info_pb(
                                store, lines, created, expires, state, hold, slot,
                            )),
                            released_now,
                            replayed: false,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn allocate(
        &self,
        request: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateResponse>, Status> {
        // Cluster mode: what a call to another partition for this caller carries.
        let deadline = span::deadline(
            request.metadata(),
            self.request_timeout,
            tokio::time::Instant::now(),
        );
        let authorization = request.metadata().get("authorization").cloned();
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let cmd = convert::allocate_request(&req)?;
        if let Some(store) = &cmd.preferred_store {
            caller.authorize_store(store)?;
        }
        let engine = self.domain.engine()?;
        // Cluster mode: where the other partitions are looked for, should this
        // partition's stores not serve the cart (the request's position, else its
        // preferred store's).
        let origin = caller.partitions().and_then(|_| match cmd.position {
            Some((lat, lon)) => Some([lat, lon]),
            None => cmd
                .preferred_store
                .as_deref()
                .and_then(|s| engine.store_id(s))
                .and_then(|id| engine.store_def(id))
                .map(|def| [def.lat, def.lon]),
        });
        let max_distance_km = cmd.max_distance_km;
        let key = req.idempotency_key.clone();
        let response = self
            .domain
            .durable(move || {
                let now = now();
                let head_before = engine.log().last_lsn().0;
                let outcome = engine.allocate(&cmd, now)?;
                convert::allocate_response(&engine, &key, outcome, head_before, now)
            })
            .await?;
        let Some(map) = caller.partitions() else {
            return Ok(Response::new(response));
        };
        let response = match (&response.outcome, origin) {
            (Some(pb::allocate_response::Outcome::Allocated(_)), _) => pb::AllocateResponse {
                served_by: Some(convert::partition_leader_pb(
                    map.own(),
                    map.leader(map.own()).as_ref(),
                )),
                ..response
            },
            (Some(pb::allocate_response::Outcome::Rejected(_)), Some(origin)) => {
                let near = map.partitions_near(origin, max_distance_km, PARTITIONS_TO_ASK_MAX);
                let ask = Ask {
                    near,
                    origin,
                    authorization,
                    deadline,
                };
                self.span_partitions(req, response, ask).await?
            }
            _ => response,
        };
        Ok(Response::new(response))
    }

    async fn list_slots(
        &self,
        request: Request<pb::ListSlotsRequest>,
    ) -> Result<Response<pb::ListSlotsResponse>, Status> {
        convert::store_id("store_id", &request.get_ref().store_id)?;
        auth::caller(&request)?.authorize_store(&request.get_ref().store_id)?;
        let req = request.into_inner();
        let date = convert::local_date("date", &req.date)?;
        let engine = self.domain.engine()?;
        // A read under one store lock: no blocking thread needed, like GetAvailability.
        let slots = engine
            .slots_on(&req.store_id, date)
            .map_err(DomainError::from)?
            .unwrap_or_default()
            .into_iter()
            .map(|(slot, booked)| pb::SlotAvailability {
                slot: Some(pb::PickupSlot {
                    start_ms: slot.start_ms,
                    end_ms: slot.end_ms,
                }),
                capacity: slot.capacity,
                booked,
                free: slot.capacity.saturating_sub(booked),
            })
            .collect();
        Ok(Response::new(pb::ListSlotsResponse { slots }))
    }
}
