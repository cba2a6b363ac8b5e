//! The one entry flow every source (webhooks, gRPC, NATS) goes through.
//!
//! ```text
//! delivery -> evaluate (adapter + rules; enrichment fetches what a thin payload lacks)
//!   rejected for good ------------------------> dead letter (durable) -> DeadLettered
//!   nothing to do (not pickup, not an order, incomplete) -> NothingToDo
//!   accepted -> admission (bounded queue, priority classes) -- full --> RetryLater
//!            -> journal Accepted, appended   -- log down ------------> Unavailable
//!            -> priority queue -> worker -> sink::place   } at once; the sender is
//!            -> the Accepted record made durable           } answered after both
//!                                              -- commit failed --> Unavailable
//!                 placed ----------------> Settled            -> Accepted (to a waiting sender)
//!                 refused for good ------> dead letter         -> DeadLettered
//!                 may pass (engine down) -> retry, backoff + jitter; after attempts_max a dead letter
//! ```
//!
//! A sender that waited longer than `answer_wait_ms` is answered `Queued`: its delivery is
//! durable and will be placed. After a crash, every journaled entry that was neither
//! settled nor dead-lettered is queued again at start ([`Flow::attach`]).
//!
//! # Admission
//!
//! The queue is bounded by `queue_len_max` entries taken and not yet settled (waiting,
//! being placed, or backing off). Paid orders may use all of it; unpaid ones only
//! `unpaid_share_pct` percent, so a spike of unpaid orders cannot shut paid ones out.
//! Beyond that a delivery is refused with [`Refusal::RetryLater`] before anything is
//! written: the sender keeps the order and delivers it again (HTTP 429 + `Retry-After`,
//! gRPC RESOURCE_EXHAUSTED, NATS nak with a delay). Nothing is ever dropped.
//!
//! # Order of work
//!
//! Workers take the waiting entry of highest priority: paid before unpaid, then the
//! earliest requested pickup, then the oldest.

use std::{
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use super::{
    CanonicalOrder, Channel, Format, IntakeConfig, Payload, Reason, ReasonCode, Verdict,
    config::FlowConfig,
    enrich::{self, EnrichError, Enricher},
    evaluate, evaluate_as,
    journal::{self, Entry, Impact, Journal, JournalError, JournalRecord, Letter, Source},
    sink::{self, PlacedOrder, SinkOutcome},
};
use crate::grpc::domain::{Domain, SIMULATED_NOW, now};

/// One delivery from a source.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Where it came from.
    pub source: Source,
    /// The channel.
    pub channel: Channel,
    /// The channel account.
    pub account: String,
    /// Headers worth keeping ([`journal::keep_headers`]).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// How the body is read: the channel's adapter, or a canonical order.
    pub format: Format,
}

/// What a source tells its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    /// Every pickup group is a confirmed engine order, durable.
    Accepted {
        /// The journal entry.
        id: u64,
        /// The platform's order id.
        order_id: String,
        /// One per pickup group.
        orders: Vec<PlacedOrder>,
        /// Nothing new was written: an earlier delivery placed these orders.
        replayed: bool,
        /// Rules that only warn.
        warnings: Vec<Reason>,
    },
    /// Durable in the journal; it will be placed (the engine is busy or recovering).
    Queued {
        /// The journal entry.
        id: u64,
    },
    /// Parked in the dead-letter queue for operators, durable, with the raw payload.
    DeadLettered {
        /// The dead letter.
        id: u64,
        /// Why, as a stable code.
        reason: String,
        /// What exactly.
        message: String,
        /// The typed reasons (adapter and rules) or the engine's outcome.
        detail: serde_json::Value,
    },
    /// Nothing for Pickline to do: not a pickup order, not an order, an incomplete order.
    NothingToDo {
        /// `not_pickup`, `not_an_order`, `incomplete_order` or `cancelled_on_platform`.
        what: &'static str,
        /// The reasons.
        reasons: Vec<Reason>,
    },
}

/// Why a delivery was not taken: the sender must deliver it again later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The queue is full for this delivery's priority class (shed).
    #[error("intake queue full ({depth} of {limit} for this priority class); retry later")]
    RetryLater {
        /// Entries in the queue.
        depth: usize,
        /// The class's bound.
        limit: usize,
        /// When to come back.
        retry_after: Duration,
    },
    /// The journal cannot take it (not open, failed).
    #[error("intake unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
        /// When to come back.
        retry_after: Duration,
    },
}

impl Refusal {
    /// When the sender should come back.
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::RetryLater { retry_after, .. } | Refusal::Unavailable { retry_after, .. } => {
                *retry_after
            }
        }
    }
}

/// Per-source counters (health and metrics).
#[derive(Debug, Default)]
struct SourceStats {
    received: AtomicU64,
    accepted: AtomicU64,
    dead_lettered: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
    last_success_ms: AtomicI64,
    last_failure_ms: AtomicI64,
}

/// One source's health, as reported by gRPC and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    /// The source.
    pub source: Source,
    /// Deliveries received.
    pub received: u64,
    /// Taken durably (placed, queued or nothing to do).
    pub accepted: u64,
    /// Parked in the dead-letter queue.
    pub dead_lettered: u64,
    /// Refused with retry-later (queue full).
    pub shed: u64,
    /// Refused because the journal was unavailable.
    pub failed: u64,
    /// Last delivery taken, unix ms (0: never).
    pub last_success_ms: i64,
    /// Last refusal or dead letter, unix ms (0: never).
    pub last_failure_ms: i64,
}

/// What the whole flow reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowHealth {
    /// Entries taken and not yet settled.
    pub queue_depth: usize,
    /// The bound.
    pub queue_len_max: usize,
    /// Age of the oldest unsettled entry, ms (0 when none).
    pub lag_ms: i64,
    /// Dead letters waiting for an operator.
    pub dead_letters: usize,
    /// Whether the journal is open.
    pub journal_open: bool,
    /// Per source.
    pub sources: Vec<SourceHealth>,
}

/// A waiting entry in the priority queue.
#[derive(Debug)]
struct Job {
    id: u64,
    rank: Rank,
    attempts: u32,
    /// Evaluated already (the first attempt of a live delivery).
    order: Option<Box<CanonicalOrder>>,
    warnings: Vec<Reason>,
    reply: Option<oneshot::Sender<Answer>>,
    /// The simulated instant of the request that submitted it, on a server with
    /// `grpc.simulated_clock`: its placement runs at that time too (the worker is another
    /// task). `None`: the clock's time when placed.
    at: Option<pickline_engine::Timestamp>,
}

/// Higher runs first: paid, then the earliest pickup, then the oldest (lowest id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    paid: bool,
    pickup: std::cmp::Reverse<i64>,
    id: std::cmp::Reverse<u64>,
}

impl Rank {
    fn of(id: u64, impact: &Impact) -> Rank {
        Rank {
            paid: impact.paid,
            pickup: std::cmp::Reverse(impact.pickup_at_ms.unwrap_or(i64::MAX)),
            id: std::cmp::Reverse(id),
        }
    }
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// The intake flow. Cheap to share in an `Arc`.
#[derive(Debug)]
pub struct Flow {
    config: IntakeConfig,
    domain: Domain,
    journal: OnceLock<Arc<Journal>>,
    /// Why the journal is not open, when it failed to open.
    journal_error: Mutex<Option<String>>,
    ready: Mutex<BinaryHeap<Job>>,
    wake: Notify,
    /// Entries taken and not yet settled or dead-lettered.
    depth: AtomicUsize,
    stats: [SourceStats; 3],
    /// The HTTP client of enrichment, when a channel has `enrich`.
    enricher: Option<Enricher>,
}

/// The dead-letter reason of a delivery whose related documents the platform refused.
pub const ENRICHMENT_FAILED: &str = "enrichment_failed";

/// The reason codes that leave nothing for Pickline to do.
fn nothing_to_do(reasons: &[Reason]) -> Option<&'static str> {
    let only = |code| !reasons.is_empty() && reasons.iter().all(|r| r.code == code);
    if only(ReasonCode::NotPickup) {
        Some("not_pickup")
    } else if only(ReasonCode::NotAnOrder) {
        Some("not_an_order")
    } else if only(ReasonCode::IncompleteOrder) {
        // A checkout not finished (BigCommerce status 0, a failed payment; WooCommerce
        // drafts): the platform sends the order again once it is placed.
        Some("incomplete_order")
    } else {
        None
    }
}

fn code_str(code: ReasonCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

fn impact_of(order: &CanonicalOrder) -> Impact {
    let pickup_at_ms = order
        .pickups()
        .iter()
        .filter_map(|g| g.window.as_ref())
        .filter_map(|w| w.start.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .min();
    Impact {
        paid: order.paid(),
        total_minor: order.total_minor(),
        pickup_at_ms,
        order_ref: format!("{}@{}", order.order_id(), order.version()),
    }
}

impl Flow {
    /// A flow over `domain`; the journal is attached once it is open.
    pub fn new(config: IntakeConfig, domain: Domain) -> Arc<Flow> {
        let enricher = if Channel::ALL
            .iter()
            .any(|c| config.channel(*c).enrich.is_some())
        {
            Enricher::new()
                .map_err(|e| tracing::error!(error = %e, "intake: no enrichment client"))
                .ok()
        } else {
            None
        };
        Arc::new(Flow {
            enricher,
            config,
            domain,
            journal: OnceLock::new(),
            journal_error: Mutex::new(None),
            ready: Mutex::new(BinaryHeap::new()),
            wake: Notify::new(),
            depth: AtomicUsize::new(0),
            stats: Default::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &IntakeConfig {
        &self.config
    }

    fn flow_config(&self) -> &FlowConfig {
        &self.config.flow
    }

    fn stats(&self, source: Source) -> &SourceStats {
        &self.stats[match source {
            Source::Webhook => 0,
            Source::Grpc => 1,
            Source::Nats => 2,
        }]
    }

    /// Attaches the opened journal, queues every entry it holds that was neither settled
    /// nor dead-lettered, and starts the workers. Returns their tasks.
    pub fn attach(self: &Arc<Self>, journal: Arc<Journal>) -> Vec<tokio::task::JoinHandle<()>> {
        let pending: Vec<(u64, Entry)> =
            journal.with_state(|s| s.pending().iter().map(|(id, e)| (*id, e.clone())).collect());
        if self.journal.set(journal).is_err() {
            return Vec::new();
        }
        if !pending.is_empty() {
            tracing::info!(
                entries = pending.len(),
                "intake: journaled entries not yet placed are queued again"
            );
        }
        {
            let mut ready = self.ready.lock();
            for (id, entry) in pending {
                self.depth.fetch_add(1, Ordering::AcqRel);
                ready.push(Job {
                    id,
                    rank: Rank::of(id, &entry.impact),
                    attempts: 0,
                    order: None,
                    warnings: Vec::new(),
                    reply: None,
                    at: None,
                });
            }
        }
        let mut tasks = Vec::new();
        for _ in 0..self.flow_config().workers {
            let flow = self.clone();
            tasks.push(tokio::spawn(async move { flow.work().await }));
        }
        let flow = self.clone();
        tasks.push(tokio::spawn(async move { flow.checkpoints().await }));
        self.wake.notify_waiters();
        tasks
    }

    /// Records that the journal could not be opened: deliveries are answered Unavailable.
    pub fn journal_failed(&self, why: String) {
        *self.journal_error.lock() = Some(why);
    }

    /// The journal, when open.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.get()
    }

    fn unavailable(&self, message: String) -> Refusal {
        Refusal::Unavailable {
            message,
            retry_after: Duration::from_secs(u64::from(self.config.webhooks.retry_after_s)),
        }
    }

    fn open_journal(&self) -> Result<&Arc<Journal>, Refusal> {
        self.journal.get().ok_or_else(|| {
            self.unavailable(
                self.journal_error
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "the intake journal is recovering".to_owned()),
            )
        })
    }

    /// Takes one delivery through the flow (see the module doc).
    pub async fn submit(&self, d: Delivery) -> Result<Answer, Refusal> {
        let source = d.source;
        let stats = self.stats(source);
        stats.received.fetch_add(1, Ordering::Relaxed);
        let result = self.submit_inner(d).await;
        let now_ms = now().as_ms();
        match &result {
            Ok(Answer::DeadLettered { .. }) => {
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                stats.last_failure_ms.store(now_ms, Ordering::Relaxed);
            }
            Ok(_) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.last_success_ms.store(now_ms, Ordering::Relaxed);
            }
            Err(Refusal::RetryLater { .. }) => {
                stats.shed.fetch_add(1, Ordering::Relaxed);
                stats.last_failure_ms.store(now_ms, Ordering::Relaxed);
            }
            Err(Refusal::Unavailable { .. }) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.last_failure_ms.store(now_ms, Ordering::Relaxed);
            }
        }
        let outcome = match &result {
            Ok(Answer::Accepted { .. }) => "accepted",
            Ok(Answer::Queued { .. }) => "queued",
            Ok(Answer::DeadLettered { .. }) => "dead_lettered",
            Ok(Answer::NothingToDo { .. }) => "nothing_to_do",
            Err(Refusal::RetryLater { .. }) => "shed",
            Err(Refusal::Unavailable { .. }) => "unavailable",
        };
        ::metrics::counter!(
            crate::metrics::INTAKE_DELIVERIES_TOTAL,
            "source" => source.as_str(),
            "outcome" => outcome
        )
        .increment(1);
        result
    }

    async fn submit_inner(&self, d: Delivery) -> Result<Answer, Refusal> {
        let journal = self.open_journal()?.clone();
        let verdict = match self.judge(d.format, d.channel, &d.account, &d.body).await {
            Ok(verdict) => verdict,
            Err(EnrichError::Unavailable(message)) => return Err(self.unavailable(message)),
            Err(EnrichError::Refused(message)) => {
                let entry = self.entry(&d, Impact::default());
                let id = self
                    .dead_letter(&journal, None, entry, ENRICHMENT_FAILED, &message)
                    .await?;
                return Ok(Answer::DeadLettered {
                    id,
                    reason: ENRICHMENT_FAILED.to_owned(),
                    message: journal::bounded_message(&message),
                    detail: serde_json::Value::Null,
                });
            }
        };
        let (order, warnings) = match verdict {
            Verdict::Accepted { order, warnings } => (order, warnings),
            Verdict::Rejected { reasons, warnings } => {
                if let Some(what) = nothing_to_do(&reasons) {
                    return Ok(Answer::NothingToDo { what, reasons });
                }
                let first = reasons.first();
                let reason = first.map_or_else(|| "rejected".to_owned(), |r| code_str(r.code));
                let message = reasons
                    .iter()
                    .map(|r| r.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                let detail = serde_json::json!({ "reasons": reasons, "warnings": warnings });
                let entry = self.entry(&d, Impact::default());
                let id = self
                    .dead_letter(&journal, None, entry, &reason, &message)
                    .await?;
                return Ok(Answer::DeadLettered {
                    id,
                    reason,
                    message: journal::bounded_message(&message),
                    detail,
                });
            }
        };
        if order.pickups().is_empty() {
            return Ok(Answer::NothingToDo {
                what: "not_pickup",
                reasons: Vec::new(),
            });
        }
        let impact = impact_of(&order);
        self.admit(impact.paid)?;
        let entry = self.entry(&d, impact.clone());
        let id = match journal.append(JournalRecord::Accepted(entry)) {
            Ok(lsn) => lsn,
            Err(e) => {
                self.settled_slot();
                return Err(self.unavailable(e.to_string()));
            }
        };
        // The placement starts now, while the journal's group commit runs: the two fsyncs
        // (the journal's, then the engine's hold and order) overlap instead of following
        // each other. The sender still hears nothing before the entry is durable: if the
        // journal fails, the answer is Unavailable whatever the worker did, and the
        // sender's retry finds the engine orders under the same keys (placement is
        // idempotent per delivery). A crash before the journal's commit loses nothing
        // acknowledged for the same reason.
        let (tx, rx) = oneshot::channel();
        self.push(Job {
            id: id.0,
            rank: Rank::of(id.0, &impact),
            attempts: 0,
            order: Some(order),
            warnings,
            reply: Some(tx),
            at: SIMULATED_NOW.try_with(|t| *t).ok(),
        });
        let wait = Duration::from_millis(self.flow_config().answer_wait_ms);
        let (durable, answer) = tokio::join!(journal.durable(id), tokio::time::timeout(wait, rx));
        if let Err(e) = durable {
            // Not acknowledged; the sender delivers again. The job keeps its queue slot
            // until a worker is done with it (if the record did reach the disk, it is
            // placed at the next start too, idempotently).
            return Err(self.unavailable(e.to_string()));
        }
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            // The worker kept the job (it backs off) or the wait ended: durable either way.
            Ok(Err(_)) | Err(_) => Ok(Answer::Queued { id: id.0 }),
        }
    }

    /// The verdict on a delivery's body: [`evaluate_as`], and when the payload alone wants
    /// related documents ([`enrich::needed`]: a Shopify order that is not a pickup order,
    /// a thin BigCommerce webhook) and its channel has `enrich`, again with what was
    /// fetched from the platform (see [`super::enrich`]).
    async fn judge(
        &self,
        format: Format,
        channel: Channel,
        account: &str,
        body: &[u8],
    ) -> Result<Verdict, EnrichError> {
        let verdict = evaluate_as(format, channel, account, body, &self.config);
        let Some(config) = self.config.channel(channel).enrich.as_ref() else {
            return Ok(verdict);
        };
        if format != Format::Channel || !enrich::needed(channel, &verdict) {
            return Ok(verdict);
        }
        let Some(enricher) = &self.enricher else {
            return Err(EnrichError::Unavailable(
                "the enrichment HTTP client could not be built".to_owned(),
            ));
        };
        let fetched = enricher.fetch(channel, account, body, config).await?;
        let related: Vec<&[u8]> = fetched.related.iter().map(Vec::as_slice).collect();
        let payload = Payload {
            body: fetched.order.as_deref().unwrap_or(body),
            related: &related,
        };
        Ok(evaluate(channel, account, payload, &self.config))
    }

    fn entry(&self, d: &Delivery, impact: Impact) -> Entry {
        Entry {
            source: d.source,
            channel: d.channel,
            account: d.account.clone(),
            headers: d.headers.clone(),
            body: d.body.clone(),
            format: d.format,
            received_at_ms: now().as_ms(),
            impact,
            replays: 0,
        }
    }

    /// Takes a queue slot for a delivery of this class, or refuses it.
    fn admit(&self, paid: bool) -> Result<(), Refusal> {
        let c = self.flow_config();
        let limit = if paid {
            c.queue_len_max
        } else {
            (c.queue_len_max * usize::from(c.unpaid_share_pct) / 100).max(1)
        };
        let taken = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d < limit).then_some(d + 1)
            });
        match taken {
            Ok(_) => Ok(()),
            Err(depth) => Err(Refusal::RetryLater {
                depth,
                limit,
                retry_after: Duration::from_secs(u64::from(self.config.webhooks.retry_after_s)),
            }),
        }
    }

    fn settled_slot(&self) {
        let before = self.depth.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "intake queue depth went below zero");
    }

    fn push(&self, job: Job) {
        self.ready.lock().push(job);
        self.wake.notify_one();
    }

    async fn next_job(&self) -> Job {
        loop {
            let notified = self.wake.notified();
            if let Some(job) = self.ready.lock().pop() {
                return job;
            }
            notified.await;
        }
    }

    async fn work(self: Arc<Self>) {
        loop {
            let job = self.next_job().await;
            self.process(job).await;
        }
    }

    /// Writes journal snapshots so the log stays bounded, and publishes the gauges.
    async fn checkpoints(self: Arc<Self>) {
        let Some(journal) = self.journal.get().cloned() else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let h = self.health();
            ::metrics::gauge!(crate::metrics::INTAKE_QUEUE_DEPTH).set(h.queue_depth as f64);
            ::metrics::gauge!(crate::metrics::INTAKE_DEAD_LETTERS).set(h.dead_letters as f64);
            ::metrics::gauge!(crate::metrics::INTAKE_LAG_SECONDS).set(h.lag_ms as f64 / 1000.0);
            if journal.bytes_since_checkpoint() < self.flow_config().checkpoint_bytes {
                continue;
            }
            let j = journal.clone();
            match tokio::task::spawn_blocking(move || j.checkpoint()).await {
                Ok(Ok(())) => tracing::info!("intake journal checkpoint written"),
                Ok(Err(e)) => tracing::warn!(error = %e, "intake journal checkpoint failed"),
                Err(e) => tracing::warn!(error = %e, "intake journal checkpoint task failed"),
            }
        }
    }

    /// One placement attempt of one entry, at the submitting request's simulated time
    /// when it had one.
    async fn process(self: &Arc<Self>, job: Job) {
        match job.at {
            Some(at) => SIMULATED_NOW.scope(at, self.process_now(job)).await,
            None => self.process_now(job).await,
        }
    }

    async fn process_now(self: &Arc<Self>, mut job: Job) {
        let Some(journal) = self.journal.get().cloned() else {
            return;
        };
        let Some(entry) = journal.with_state(|s| s.pending().get(&job.id).cloned()) else {
            // Settled or discarded meanwhile.
            self.settled_slot();
            return;
        };
        let (order, warnings) = match job.order.take() {
            Some(order) => (order, std::mem::take(&mut job.warnings)),
            None => {
                let verdict = self
                    .judge(entry.format, entry.channel, &entry.account, &entry.body)
                    .await;
                match verdict {
                    Ok(Verdict::Accepted { order, warnings }) => (order, warnings),
                    Ok(Verdict::Rejected { reasons, .. }) => {
                        if nothing_to_do(&reasons).is_some() {
                            self.settle(&journal, job.id);
                            return;
                        }
                        let reason = reasons
                            .first()
                            .map_or_else(|| "rejected".into(), |r| code_str(r.code));
                        let message = reasons
                            .iter()
                            .map(|r| r.message.as_str())
                            .collect::<Vec<_>>()
                            .join("; ");
                        let detail = serde_json::json!({ "reasons": reasons });
                        self.fail_for_good(&journal, job, entry, reason, message, detail)
                            .await;
                        return;
                    }
                    Err(EnrichError::Refused(message)) => {
                        self.fail_for_good(
                            &journal,
                            job,
                            entry,
                            ENRICHMENT_FAILED.to_owned(),
                            message,
                            serde_json::Value::Null,
                        )
                        .await;
                        return;
                    }
                    Err(EnrichError::Unavailable(message)) => {
                        self.retry_later(&journal, job, entry, message).await;
                        return;
                    }
                }
            }
        };
        match sink::place(&self.domain, &order, entry.replays).await {
            Ok(SinkOutcome::Accepted { orders, replayed }) => {
                self.settle(&journal, job.id);
                if let Some(reply) = job.reply.take() {
                    let _ = reply.send(Answer::Accepted {
                        id: job.id,
                        order_id: order.order_id().to_owned(),
                        orders,
                        replayed,
                        warnings,
                    });
                }
            }
            Ok(SinkOutcome::NotPickup | SinkOutcome::CancelledOnPlatform { .. }) => {
                self.settle(&journal, job.id);
                if let Some(reply) = job.reply.take() {
                    let _ = reply.send(Answer::NothingToDo {
                        what: if order.cancelled() {
                            "cancelled_on_platform"
                        } else {
                            "not_pickup"
                        },
                        reasons: Vec::new(),
                    });
                }
            }
            Ok(outcome @ SinkOutcome::InsufficientStock { .. }) => {
                let detail = serde_json::to_value(&outcome).unwrap_or_default();
                let SinkOutcome::InsufficientStock { store, shortages } = outcome else {
                    return;
                };
                let message = format!(
                    "store {store:?} cannot promise {}",
                    shortages
                        .iter()
                        .map(|s| format!("{} ({} of {})", s.sku, s.available, s.requested))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.fail_for_good(
                    &journal,
                    job,
                    entry,
                    "insufficient_stock".into(),
                    message,
                    detail,
                )
                .await;
            }
            Ok(outcome @ SinkOutcome::Refused { .. }) => {
                let detail = serde_json::to_value(&outcome).unwrap_or_default();
                let SinkOutcome::Refused { code, message } = outcome else {
                    return;
                };
                self.fail_for_good(
                    &journal,
                    job,
                    entry,
                    code_str_refusal(code),
                    message,
                    detail,
                )
                .await;
            }
            Err(e) => {
                job.order = Some(order);
                job.warnings = warnings;
                self.retry_later(&journal, job, entry, e.0).await;
            }
        }
    }

    /// A failure that may pass: the job comes back after a backoff, or is dead-lettered
    /// as `retries_exhausted` after `attempts_max` attempts. A waiting sender is answered
    /// `Queued` (the entry is durable).
    async fn retry_later(
        self: &Arc<Self>,
        journal: &Arc<Journal>,
        mut job: Job,
        entry: Entry,
        error: String,
    ) {
        job.attempts += 1;
        let c = self.flow_config();
        if job.attempts >= c.attempts_max {
            let message = format!("{} attempts; last: {error}", job.attempts);
            self.fail_for_good(
                journal,
                job,
                entry,
                "retries_exhausted".to_owned(),
                message,
                serde_json::Value::Null,
            )
            .await;
            return;
        }
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(Answer::Queued { id: job.id });
        }
        let delay = backoff(c, job.attempts);
        tracing::info!(
            id = job.id,
            attempts = job.attempts,
            delay_ms = delay.as_millis() as u64,
            error = %error,
            "intake: placement failed for now; retrying"
        );
        let flow = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            flow.push(job);
        });
    }

    /// Marks the entry settled (not waited durable: if the record is lost, the entry is
    /// placed again at the next start and the sink answers with the same orders).
    fn settle(&self, journal: &Journal, id: u64) {
        if let Err(e) = journal.append(JournalRecord::Settled { id }) {
            tracing::warn!(id, error = %e, "intake: cannot record a settled entry");
        }
        self.settled_slot();
    }

    async fn fail_for_good(
        &self,
        journal: &Arc<Journal>,
        mut job: Job,
        entry: Entry,
        reason: String,
        message: String,
        detail: serde_json::Value,
    ) {
        let answer = match self
            .dead_letter(journal, Some(job.id), entry, &reason, &message)
            .await
        {
            Ok(id) => {
                self.settled_slot();
                Answer::DeadLettered {
                    id,
                    reason,
                    message: journal::bounded_message(&message),
                    detail,
                }
            }
            Err(e) => {
                // The entry stays pending in the journal: the next start tries again.
                tracing::warn!(id = job.id, error = %e, "intake: cannot dead-letter an entry");
                self.settled_slot();
                Answer::Queued { id: job.id }
            }
        };
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(answer);
        }
    }

    /// Parks `entry` (pending as `from`, or new) as a dead letter, durably; a letter for
    /// the same delivery (same order and version, or the same bytes) is updated instead.
    async fn dead_letter(
        &self,
        journal: &Journal,
        from: Option<u64>,
        entry: Entry,
        reason: &str,
        message: &str,
    ) -> Result<u64, Refusal> {
        let fail = |e: JournalError| self.unavailable(e.to_string());
        let (id, lsn) = journal
            .dead_letter(
                from,
                entry,
                reason,
                journal::bounded_message(message),
                now().as_ms(),
            )
            .map_err(fail)?;
        journal.durable(lsn).await.map_err(fail)?;
        tracing::info!(reason, "intake: delivery dead-lettered");
        Ok(id)
    }

    /// The dead letters, most impact first (see [`rank_letters`]).
    pub fn letters(&self) -> Result<Vec<(u64, Letter, usize)>, Refusal> {
        let journal = self.open_journal()?;
        Ok(journal.with_state(|s| rank_letters(s.letters())))
    }

    /// One dead letter.
    pub fn letter(&self, id: u64) -> Result<Option<Letter>, Refusal> {
        let journal = self.open_journal()?;
        Ok(journal.with_state(|s| s.letters().get(&id).cloned()))
    }

    /// Puts a dead letter back into the queue (after its cause was fixed); false when
    /// there is no such letter.
    pub async fn replay(&self, id: u64) -> Result<bool, Refusal> {
        let journal = self.open_journal()?.clone();
        let Some(letter) = journal.with_state(|s| s.letters().get(&id).cloned()) else {
            return Ok(false);
        };
        let lsn = journal
            .append(JournalRecord::Requeued { id })
            .map_err(|e| self.unavailable(e.to_string()))?;
        journal
            .durable(lsn)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        self.depth.fetch_add(1, Ordering::AcqRel);
        self.push(Job {
            id,
            rank: Rank::of(id, &letter.entry.impact),
            attempts: 0,
            order: None,
            warnings: Vec::new(),
            reply: None,
            at: None,
        });
        Ok(true)
    }

    /// Drops a dead letter; false when there is no such letter.
    pub async fn discard(&self, id: u64) -> Result<bool, Refusal> {
        let journal = self.open_journal()?.clone();
        if !journal.with_state(|s| s.letters().contains_key(&id)) {
            return Ok(false);
        }
        let lsn = journal
            .append(JournalRecord::Discarded { id })
            .map_err(|e| self.unavailable(e.to_string()))?;
        journal
            .durable(lsn)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        Ok(true)
    }

    /// Per-source health, queue depth and lag.
    pub fn health(&self) -> FlowHealth {
        let now_ms = now().as_ms();
        let (lag_ms, dead_letters) = match self.journal.get() {
            Some(j) => j.with_state(|s| {
                let oldest = s.pending().values().map(|e| e.received_at_ms).min();
                (
                    oldest.map_or(0, |t| now_ms.saturating_sub(t).max(0)),
                    s.letters().len(),
                )
            }),
            None => (0, 0),
        };
        FlowHealth {
            queue_depth: self.depth.load(Ordering::Acquire),
            queue_len_max: self.flow_config().queue_len_max,
            lag_ms,
            dead_letters,
            journal_open: self.journal.get().is_some(),
            sources: Source::ALL
                .into_iter()
                .map(|source| {
                    let s = self.stats(source);
                    SourceHealth {
                        source,
                        received: s.received.load(Ordering::Relaxed),
                        accepted: s.accepted.load(Ordering::Relaxed),
                        dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
                        shed: s.shed.load(Ordering::Relaxed),
                        failed: s.failed.load(Ordering::Relaxed),
                        last_success_ms: s.last_success_ms.load(Ordering::Relaxed),
                        last_failure_ms: s.last_failure_ms.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }

    /// Flushes the journal (shutdown).
    pub fn flush(&self) {
        if let Some(j) = self.journal.get()
            && let Err(e) = j.flush()
        {
            tracing::warn!(error = %e, "intake journal flush failed");
        }
    }
}

fn code_str_refusal(code: sink::RefusalCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// The delay before attempt `attempts + 1`: exponential from `retry_base_ms`, capped at
/// `retry_max_ms`, with "equal jitter" (half fixed, half random) so that entries that
/// failed together do not come back together.
pub fn backoff(c: &FlowConfig, attempts: u32) -> Duration {
    let exp = c
        .retry_base_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
    let capped = exp.min(c.retry_max_ms).max(1);
    let half = capped / 2;
    let r = crate::grpc::domain::entropy().map_or(0, u64::from_le_bytes);
    Duration::from_millis(half + r % (capped - half + 1))
}

/// Dead letters with the size of their incident (letters sharing their cause), most
/// impact first: paid before unpaid, then the nearest pickup, then the largest incident,
/// then the largest amount, then the oldest.
pub fn rank_letters(
    letters: &std::collections::BTreeMap<u64, Letter>,
) -> Vec<(u64, Letter, usize)> {
    let mut incident: HashMap<(&str, &str), usize> = HashMap::new();
    for l in letters.values() {
        *incident.entry(l.cause()).or_default() += 1;
    }
    let mut out: Vec<(u64, Letter, usize)> = letters
        .iter()
        .map(|(id, l)| {
            (
                *id,
                l.clone(),
                incident.get(&l.cause()).copied().unwrap_or(1),
            )
        })
        .collect();
    out.sort_by(|(ia, a, na), (ib, b, nb)| {
        let ka = (
            std::cmp::Reverse(a.entry.impact.paid),
            a.entry.impact.pickup_at_ms.unwrap_or(i64::MAX),
            std::cmp::Reverse(*na),
            std::cmp::Reverse(a.entry.impact.total_minor.unwrap_or(0)),
            *ia,
        );
        let kb = (
            std::cmp::Reverse(b.entry.impact.paid),
            b.entry.impact.pickup_at_ms.unwrap_or(i64::MAX),
            std::cmp::Reverse(*nb),
            std::cmp::Reverse(b.entry.impact.total_minor.unwrap_or(0)),
            *ib,
        );
        ka.cmp(&kb)
    });
    out
}

/// The flow's background tasks (journal opening, workers, checkpoints, the NATS source),
/// aborted together at shutdown.
#[derive(Clone, Debug, Default)]
pub struct Tasks(Arc<Mutex<(bool, Vec<tokio::task::JoinHandle<()>>)>>);

impl Tasks {
    fn add(&self, task: tokio::task::JoinHandle<()>) {
        let mut t = self.0.lock();
        if t.0 {
            task.abort();
        } else {
            t.1.push(task);
        }
    }

    /// Aborts every task, including those started later.
    pub fn abort(&self) {
        let mut t = self.0.lock();
        t.0 = true;
        for task in t.1.drain(..) {
            task.abort();
        }
    }
}

/// Opens the journal in the data directory (on a blocking thread, beside the engine's
/// recovery), attaches it to `flow`, and starts the NATS source when enabled. A journal
/// that cannot be opened leaves intake answering Unavailable (503), and says why.
pub fn start(config: &crate::config::Config, flow: &Arc<Flow>) -> Tasks {
    let tasks = Tasks::default();
    let dir = config.data.dir.clone();
    let wal = config.data.wal_config();
    let nats = config.intake.nats.enabled;
    let (flow, all) = (flow.clone(), tasks.clone());
    tasks.add(tokio::spawn(async move {
        let opened = tokio::task::spawn_blocking(move || Journal::open(&dir, wal)).await;
        match opened {
            Ok(Ok(journal)) => {
                for task in flow.attach(Arc::new(journal)) {
                    all.add(task);
                }
                if nats {
                    all.add(tokio::spawn(super::nats::run(flow.clone())));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "intake journal cannot be opened; intake answers unavailable");
                flow.journal_failed(e.to_string());
            }
            Err(e) => flow.journal_failed(format!("opening the intake journal failed: {e}")),
        }
    }));
    tasks
}
