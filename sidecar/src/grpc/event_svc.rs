//! `pickline.v1.EventService` handlers: consumers, the server-streaming subscription and
//! durable acknowledgements.

use std::{pin::Pin, time::Duration};

use pickline_engine::{Lsn, StreamError};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::{
    grpc::auth,
    grpc::convert,
    grpc::domain::{Domain, now},
    grpc::status::{DomainError, ResourceKind},
    pb::{self, event_service_server::EventService},
};

/// Records per batch: default and maximum (event.proto).
const BATCH_DEFAULT: usize = 500;
const BATCH_MAX: usize = 10_000;
/// How long a subscription sleeps when it has caught up before it looks again. The
/// stream has no wake-up signal, so an idle subscriber polls at this rate: bounded
/// latency, no busy loop.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Batches buffered per subscriber: a slow client stops the reader, not the engine.
const SUBSCRIBER_BUFFER: usize = 4;

/// The EventService handler.
#[derive(Clone, Debug)]
pub struct Events {
    domain: Domain,
}

impl Events {
    /// A handler over `domain`.
    pub fn new(domain: Domain) -> Events {
        Events { domain }
    }
}

fn stream_error(e: StreamError) -> DomainError {
    match e {
        StreamError::UnknownConsumer(name) => DomainError::NotFound {
            kind: ResourceKind::Consumer,
            id: name,
        },
        StreamError::Truncated { after, oldest } => DomainError::IllegalTransition {
            kind: ResourceKind::Consumer,
            id: format!("after seq {after}"),
            state: format!("older than the oldest retained event {oldest}"),
            action: "subscribe",
        },
        StreamError::TooManyConsumers => DomainError::LimitExceeded {
            what: "consumers",
            actual: pickline_engine::stream::STREAM_CONSUMERS_MAX as u64 + 1,
            limit: pickline_engine::stream::STREAM_CONSUMERS_MAX as u64,
        },
    }
}

/// The server stream of Subscribe.
pub type EventBatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Events {
    async fn register_consumer(
        &self,
        request: Request<pb::RegisterConsumerRequest>,
    ) -> Result<Response<pb::RegisterConsumerResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        // Only at registration: Subscribe and Ack look names up, and an unknown one is
        // NOT_FOUND whatever its shape (consumers registered before this check keep
        // working).
        convert::consumer_name("name", &req.name)?;
        let start = pb::ConsumerStart::try_from(req.start)
            .ok()
            .filter(|s| *s != pb::ConsumerStart::Unspecified)
            .ok_or_else(|| DomainError::InvalidArgument {
                field: "start".into(),
                reason: "must be EARLIEST or LATEST".into(),
            })?;
        let db = self.domain.db()?.clone();
        keyed
            .run(async move {
                self.domain
                    .durable(move || {
                        let stream = db.stream();
                        let created = stream.cursor(&req.name).is_none();
                        let mut acked =
                            stream.register_consumer(&req.name).map_err(stream_error)?;
                        let head = db.engine().log().last_lsn();
                        if created {
                            // A new consumer's start is logged as its first acknowledgement: the
                            // durable cursor is what makes the registration survive a restart.
                            if start == pb::ConsumerStart::Latest {
                                acked = acked.max(head);
                            }
                            db.engine().ack_consumer(&req.name, acked, now())?;
                        }
                        Ok(pb::RegisterConsumerResponse {
                            consumer: Some(pb::Consumer {
                                name: req.name,
                                acked_seq: acked.0,
                                head_seq: head.0,
                            }),
                            created,
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }

    type SubscribeStream = EventBatchStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        convert::consumer_ref("consumer", &req.consumer)?;
        let batch = convert::page_size(req.batch_size, BATCH_DEFAULT, BATCH_MAX)?;
        let db = self.domain.db()?.clone();
        let mut after = match req.after_seq {
            0 => db
                .stream()
                .cursor(&req.consumer)
                .ok_or_else(|| DomainError::NotFound {
                    kind: ResourceKind::Consumer,
                    id: req.consumer.clone(),
                })?,
            seq => Lsn(seq),
        };
        // Fail fast on an unknown consumer or a position already dropped.
        db.stream()
            .read(&req.consumer, after, 0)
            .map_err(stream_error)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(async move {
            loop {
                let records = match db.stream().read(&req.consumer, after, batch) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(stream_error(e)))).await;
                        return;
                    }
                };
                let Some(last) = records.last().map(|r| r.lsn) else {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                };
                let engine = db.engine();
                let events = records
                    .iter()
                    .flat_map(|r| convert::record_pb(engine, r))
                    .collect();
                let head_seq = engine.log().last_lsn().0;
                if tx
                    .send(Ok(pb::EventBatch { events, head_seq }))
                    .await
                    .is_err()
                {
                    return; // the client went away
                }
                after = last;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let req = request.into_inner();
        let keyed = self.domain.keyed(&caller, &req.idempotency_key, &req)?;
        convert::consumer_ref("consumer", &req.consumer)?;
        let db = self.domain.db()?.clone();
        keyed
            .run(async move {
                self.domain
                    .durable(move || {
                        if db.stream().cursor(&req.consumer).is_none() {
                            return Err(DomainError::NotFound {
                                kind: ResourceKind::Consumer,
                                id: req.consumer,
                            });
                        }
                        db.engine()
                            .ack_consumer(&req.consumer, Lsn(req.seq), now())?;
                        Ok(pb::AckResponse {
                            consumer: Some(pb::Consumer {
                                acked_seq: db.stream().cursor(&req.consumer).unwrap_or_default().0,
                                head_seq: db.engine().log().last_lsn().0,
                                name: req.consumer,
                            }),
                        })
                    })
                    .await
                    .map(Response::new)
            })
            .await
    }
}
