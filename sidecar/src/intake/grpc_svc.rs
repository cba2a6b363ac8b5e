//! `pickline.v1.IntakeService`: gRPC into the same intake flow, the dead-letter queue and
//! per-source health. The handlers convert and call [`Flow`]; they hold no logic of their
//! own. Scopes are decided by the admission layer's table (`crate::grpc::rpc`).

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use prost::Message as _;

use super::{
    Channel, Format,
    flow::{Answer, Delivery, Flow, Refusal},
    journal::{self, Letter, Source},
    webhook::{ACCOUNT_LEN_MAX, DEFAULT_ACCOUNT},
};
use crate::{
    grpc::status::retry_later,
    pb::{
        DeadLetter, DeadLetterActionResponse, DeadLetterRequest, GetDeadLetterRequest,
        GetIntakeHealthRequest, IntakeHeader, IntakeHealth, IntakePlacedOrder, IntakeSourceHealth,
        ListDeadLettersRequest, ListDeadLettersResponse, SubmitOutcome, SubmitRequest,
        SubmitResponse, intake_service_server::IntakeService,
    },
};

/// Letters listed when the request names no limit.
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// Most letters one list returns.
pub const LIST_LIMIT_MAX: usize = 1000;

/// The IntakeService handler.
#[derive(Clone, Debug)]
pub struct Intake {
    flow: Arc<Flow>,
}

impl Intake {
    /// A handler over `flow`.
    pub fn new(flow: Arc<Flow>) -> Intake {
        Intake { flow }
    }
}

fn refused(r: &Refusal) -> Status {
    let code = match r {
        Refusal::RetryLater { .. } => Code::ResourceExhausted,
        Refusal::Unavailable { .. } => Code::Unavailable,
    };
    retry_later(code, r.to_string(), r.retry_after())
}

fn letter_pb(id: u64, l: Letter, incident: usize, full: bool) -> DeadLetter {
    let (headers, body) = if full {
        (
            l.entry
                .headers
                .into_iter()
                .map(|(name, value)| IntakeHeader { name, value })
                .collect(),
            l.entry.body,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    DeadLetter {
        id,
        channel: l.entry.channel.as_str().to_owned(),
        account: l.entry.account,
        source: l.entry.source.as_str().to_owned(),
        order_ref: l.entry.impact.order_ref,
        paid: l.entry.impact.paid,
        total_minor: l.entry.impact.total_minor.unwrap_or(0),
        pickup_at_ms: l.entry.impact.pickup_at_ms.unwrap_or(0),
        reason: l.reason,
        message: l.message,
        attempts: l.attempts,
        first_failure_ms: l.first_failure_ms,
        last_failure_ms: l.last_failure_ms,
        incident_size: u32::try_from(incident).unwrap_or(u32::MAX),
        headers,
        body,
    }
}

/// The delivery a Submit request stands for, or INVALID_ARGUMENT naming the field.
pub fn delivery(req: SubmitRequest) -> Result<Delivery, Status> {
    let channel = Channel::ALL
        .into_iter()
        .find(|c| c.as_str() == req.channel)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "channel: {:?} is not one of shopify, woocommerce, bigcommerce, magento, commercetools",
                req.channel
            ))
        })?;
    let account = match req.account.trim() {
        "" => DEFAULT_ACCOUNT.to_owned(),
        a if a.len() <= ACCOUNT_LEN_MAX => a.to_owned(),
        _ => {
            return Err(Status::invalid_argument(format!(
                "account: at most {ACCOUNT_LEN_MAX} bytes"
            )));
        }
    };
    if req.body.len() > journal::BODY_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "body: {} bytes, at most {}",
            req.body.len(),
            journal::BODY_BYTES_MAX
        )));
    }
    let headers = journal::keep_headers(
        req.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_bytes())),
    );
    // A canonical order travels (and is journaled) as its own encoding.
    let (body, format) = match req.order {
        None => (req.body, Format::Channel),
        Some(_) if !req.body.is_empty() => {
            return Err(Status::invalid_argument(
                "body: must be empty when order is set (one or the other)",
            ));
        }
        Some(order) => {
            let body = order.encode_to_vec();
            if body.len() > journal::BODY_BYTES_MAX {
                return Err(Status::invalid_argument(format!(
                    "order: {} bytes encoded, at most {}",
                    body.len(),
                    journal::BODY_BYTES_MAX
                )));
            }
            (body, Format::Canonical)
        }
    };
    Ok(Delivery {
        source: Source::Grpc,
        channel,
        account,
        headers,
        body,
        format,
    })
}

#[tonic::async_trait]
impl IntakeService for Intake {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let d = delivery(request.into_inner())?;
        let answer = self.flow.submit(d).await.map_err(|r| refused(&r))?;
        let response = match answer {
            Answer::Accepted {
                id,
                orders,
                replayed,
                ..
            } => SubmitResponse {
                outcome: SubmitOutcome::Accepted as i32,
                id,
                orders: orders
                    .into_iter()
                    .map(|o| IntakePlacedOrder {
                        order_id: o.order_id.parse().unwrap_or(0),
                        store_id: o.store,
                        channel_order_id: o.channel_order_id,
                    })
                    .collect(),
                replayed,
                ..Default::default()
            },
            Answer::Queued { id } => SubmitResponse {
                outcome: SubmitOutcome::Queued as i32,
                id,
                ..Default::default()
            },
            Answer::DeadLettered {
                id,
                reason,
                message,
                ..
            } => SubmitResponse {
                outcome: SubmitOutcome::DeadLettered as i32,
                id,
                reason,
                message,
                ..Default::default()
            },
            Answer::NothingToDo { what, reasons } => SubmitResponse {
                outcome: SubmitOutcome::NothingToDo as i32,
                reason: what.to_owned(),
                message: reasons
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let limit = match request.get_ref().limit as usize {
            0 => LIST_LIMIT_DEFAULT,
            n => n.min(LIST_LIMIT_MAX),
        };
        let letters = self.flow.letters().map_err(|r| refused(&r))?;
        let total = letters.len() as u64;
        Ok(Response::new(ListDeadLettersResponse {
            letters: letters
                .into_iter()
                .take(limit)
                .map(|(id, l, n)| letter_pb(id, l, n, false))
                .collect(),
            total,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<DeadLetter>, Status> {
        let id = request.get_ref().id;
        let letters = self.flow.letters().map_err(|r| refused(&r))?;
        letters
            .into_iter()
            .find(|(i, _, _)| *i == id)
            .map(|(id, l, n)| Response::new(letter_pb(id, l, n, true)))
            .ok_or_else(|| Status::not_found(format!("no dead letter {id}")))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<DeadLetterRequest>,
    ) -> Result<Response<DeadLetterActionResponse>, Status> {
        let done = self
            .flow
            .replay(request.get_ref().id)
            .await
            .map_err(|r| refused(&r))?;
        Ok(Response::new(DeadLetterActionResponse { done }))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<DeadLetterRequest>,
    ) -> Result<Response<DeadLetterActionResponse>, Status> {
        let done = self
            .flow
            .discard(request.get_ref().id)
            .await
            .map_err(|r| refused(&r))?;
        Ok(Response::new(DeadLetterActionResponse { done }))
    }

    async fn get_intake_health(
        &self,
        _request: Request<GetIntakeHealthRequest>,
    ) -> Result<Response<IntakeHealth>, Status> {
        let h = self.flow.health();
        Ok(Response::new(IntakeHealth {
            queue_depth: h.queue_depth as u64,
            queue_len_max: h.queue_len_max as u64,
            lag_ms: h.lag_ms,
            dead_letters: h.dead_letters as u64,
            journal_open: h.journal_open,
            sources: h
                .sources
                .into_iter()
                .map(|s| IntakeSourceHealth {
                    source: s.source.as_str().to_owned(),
                    received: s.received,
                    accepted: s.accepted,
                    dead_lettered: s.dead_lettered,
                    shed: s.shed,
                    failed: s.failed,
                    last_success_ms: s.last_success_ms,
                    last_failure_ms: s.last_failure_ms,
                })
                .collect(),
        }))
    }
}
