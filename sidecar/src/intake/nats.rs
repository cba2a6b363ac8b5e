//! NATS JetStream source: orders published on `<subject_prefix>.<channel>` (default
//! `pickline.intake.shopify`, ...) go through the same flow as webhooks.
//!
//! A durable pull consumer (explicit acks) reads the stream; per message:
//!
//! | flow answer | to the server |
//! |---|---|
//! | accepted, queued, nothing to do | ack: the order is durably journaled (or needs nothing) |
//! | dead-lettered | term: parked in Pickline's dead-letter queue with its raw payload; redelivering could not change it |
//! | retry later (queue full), unavailable (journal down) | nak with `nak_delay_ms`: the server redelivers later |
//! | unknown channel, bad account header | term, logged: no delivery of it can ever be taken |
//!
//! A message is acked only after its `Accepted` journal record is durable, so a crash
//! before the ack makes the server redeliver it (after `ack_wait_ms`), and the sink's
//! idempotency keys make the redelivery change nothing. Messages are trusted as the
//! NATS account's permissions allow: there is no platform signature to check here (the
//! relay that published them checked it).
//!
//! The account comes from the `Pickline-Account` header (else `default`).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, pull},
    stream,
};
use futures_util::StreamExt as _;

use super::{
    Channel,
    config::NatsConfig,
    flow::{Answer, Delivery, Flow, Refusal},
    journal::{self, Source},
    webhook::{ACCOUNT_LEN_MAX, DEFAULT_ACCOUNT},
};

/// The header naming a message's channel account.
pub const ACCOUNT_HEADER: &str = "Pickline-Account";

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
#[error("NATS intake source: {0}")]
pub struct NatsError(String);

fn err(e: impl std::fmt::Display) -> NatsError {
    NatsError(e.to_string())
}

/// Runs the source until the task is aborted; reconnects (with a pause) after errors.
pub async fn run(flow: Arc<Flow>) {
    let config = flow.config().nats.clone();
    loop {
        match consume(&flow, &config).await {
            Ok(()) => tracing::warn!("NATS intake source: the message stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "NATS intake source failed; reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The stream's configuration as this source creates it when absent.
pub fn stream_config(config: &NatsConfig) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        ..Default::default()
    }
}

/// Connects, makes sure the stream and the durable consumer exist, and consumes.
async fn consume(flow: &Arc<Flow>, config: &NatsConfig) -> Result<(), NatsError> {
    let client = async_nats::connect(&config.url).await.map_err(err)?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream_config(config))
        .await
        .map_err(err)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &config.consumer,
            pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_millis(config.ack_wait_ms),
                filter_subject: format!("{}.>", config.subject_prefix),
                ..Default::default()
            },
        )
        .await
        .map_err(err)?;
    tracing::info!(
        stream = %config.stream,
        consumer = %config.consumer,
        "NATS intake source consuming"
    );
    let messages = consumer
        .stream()
        .max_messages_per_batch(config.batch)
        .messages()
        .await
        .map_err(err)?;
    let nak_delay = Duration::from_millis(config.nak_delay_ms);
    messages
        .for_each_concurrent(config.batch, |message| {
            let flow = flow.clone();
            async move {
                match message {
                    Ok(m) => handle(&flow, config, m, nak_delay).await,
                    Err(e) => tracing::warn!(error = %e, "NATS intake source: message error"),
                }
            }
        })
        .await;
    Ok(())
}

/// What a message of `subject` is: its channel, or why it can never be taken.
fn channel_of(prefix: &str, subject: &str) -> Option<Channel> {
    let name = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    Channel::ALL.into_iter().find(|c| c.as_str() == name)
}

async fn handle(flow: &Flow, config: &NatsConfig, m: jetstream::Message, nak_delay: Duration) {
    let Some(channel) = channel_of(&config.subject_prefix, m.subject.as_str()) else {
        tracing::warn!(subject = %m.subject, "NATS intake source: no such channel; terminated");
        ack(&m, AckKind::Term).await;
        return;
    };
    let account = match m.headers.as_ref().and_then(|h| h.get(ACCOUNT_HEADER)) {
        None => DEFAULT_ACCOUNT.to_owned(),
        Some(v) => {
            let a = v.as_str().trim();
            if a.is_empty() || a.len() > ACCOUNT_LEN_MAX {
                tracing::warn!(
                    subject = %m.subject,
                    "NATS intake source: unusable {ACCOUNT_HEADER} header; terminated"
                );
                ack(&m, AckKind::Term).await;
                return;
            }
            a.to_owned()
        }
    };
    let headers =
        m.headers
            .as_ref()
            .map(|h| {
                journal::keep_headers(h.iter().flat_map(|(k, vs)| {
                    vs.iter().map(move |v| (k.as_ref(), v.as_str().as_bytes()))
                }))
            })
            .unwrap_or_default();
    let delivery = Delivery {
        source: Source::Nats,
        channel,
        account,
        headers,
        body: m.payload.to_vec(),
        format: super::Format::Channel,
    };
    let kind = match flow.submit(delivery).await {
        Ok(Answer::Accepted { .. } | Answer::Queued { .. } | Answer::NothingToDo { .. }) => {
            AckKind::Ack
        }
        Ok(Answer::DeadLettered { .. }) => AckKind::Term,
        Err(Refusal::RetryLater { .. } | Refusal::Unavailable { .. }) => {
            AckKind::Nak(Some(nak_delay))
        }
    };
    ack(&m, kind).await;
}

async fn ack(m: &jetstream::Message, kind: AckKind) {
    // A lost ack means a redelivery, which the flow answers idempotently.
    if let Err(e) = m.ack_with(kind).await {
        tracing::warn!(error = %e, "NATS intake source: ack failed; the server will redeliver");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_channels() {
        assert_eq!(
            channel_of("pickline.intake", "pickline.intake.shopify"),
            Some(Channel::Shopify)
        );
        assert_eq!(
            channel_of("pickline.intake", "pickline.intake.amazon"),
            None
        );
        assert_eq!(
            channel_of("pickline.intake", "pickline.intakeshopify"),
            None
        );
        assert_eq!(channel_of("pickline.intake", "other.shopify"), None);
    }
}
