//! The notifier's loop inside `pickline serve`: read events with its named cursor, plan,
//! journal, acknowledge, send what is due, journal the outcomes.
//!
//! One task owns the loop; sends run concurrently (at most `concurrency`), each after its
//! provider's rate-limit slot. The outbox is shared with the gRPC `NotifyService`
//! through [`NotifyHandle`] (a mutex; every operation on it is short: no I/O but the
//! journal's fsync).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use parking_lot::Mutex;
use pickline_engine::{Event, Lsn, StreamError, Timestamp, durable::DurableEngine};
use thiserror::Error;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::{
    Channel, Clock, Kind, MsgKey, NotifyConfig,
    deliver::{EmailSender, SendError, SmsSender, backoff_ms},
    journal::JournalError,
    outbox::{Due, Entry, Outbox, Slot, Status},
    plan::{PlanEnv, QuietHours, plan, quiet_until},
    render::{Rendered, Renderer},
};

/// Records read from the stream per planning step.
const PLAN_BATCH: usize = 1_000;
/// Longest a finished send waits for its outcome to be journaled while the loop has
/// other work (outcomes of many sends share one fsync).
const SETTLE_INTERVAL: Duration = Duration::from_millis(5);
/// How long a graceful stop waits for sends in flight before it leaves them to the next
/// start (which sends them again: at least once).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The journal's file inside the data directory.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("notify").join("outbox.log")
}

/// Why the notifier could not start or an operation failed.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The journal.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A provider could not be set up.
    #[error("{0}")]
    Provider(String),
    /// The engine's stream refused the consumer.
    #[error("event stream: {0}")]
    Stream(#[from] StreamError),
    /// The engine refused the acknowledgement.
    #[error("engine: {0}")]
    Engine(#[from] pickline_engine::EngineError),
    /// The notifier is not running (disabled, or the engine has not recovered).
    #[error("notifications are not enabled on this server")]
    Disabled,
}

/// A dead letter as operators see it (never the recipient's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The key.
    pub key: MsgKey,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it was given up.
    pub dead_at_ms: i64,
    /// The order's locale.
    pub locale: String,
}

/// A dead letter with the message it would send now.
#[derive(Clone, Debug)]
pub struct DeadLetterDetail {
    /// The list entry.
    pub letter: DeadLetter,
    /// The recipient, masked (`j***@example.com`, `***4567`).
    pub to_masked: String,
    /// The message rendered with today's templates (or why it cannot be).
    pub rendered: Result<Rendered, String>,
}

/// `j***@example.com`, `***4567`: enough to recognize, not enough to use.
pub fn mask(to: &str) -> String {
    match to.split_once('@') {
        Some((user, domain)) => {
            format!("{}***@{domain}", user.chars().next().unwrap_or('*'))
        }
        None => {
            let digits: Vec<char> = to.chars().collect();
            let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
            format!("***{tail}")
        }
    }
}

#[derive(Debug)]
struct Shared {
    outbox: Mutex<Outbox>,
    clock: Arc<dyn Clock>,
    renderer: Renderer,
    wake: tokio::sync::Notify,
}

/// The running notifier's outbox, for the gRPC service; empty until it starts.
#[derive(Clone, Debug, Default)]
pub struct NotifyHandle(Arc<OnceLock<Arc<Shared>>>);

impl NotifyHandle {
    fn shared(&self) -> Result<&Arc<Shared>, NotifyError> {
        self.0.get().ok_or(NotifyError::Disabled)
    }

    /// The dead-letter list.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, NotifyError> {
        let s = self.shared()?;
        Ok(s.outbox
            .lock()
            .dead()
            .into_iter()
            .filter_map(|(k, slot)| letter(k, &slot))
            .collect())
    }

    /// One dead letter with its message rendered now.
    pub fn dead_letter(&self, key: &MsgKey) -> Result<Option<DeadLetterDetail>, NotifyError> {
        let s = self.shared()?;
        let slot = s.outbox.lock().slot(key).cloned();
        let Some(slot) = slot else { return Ok(None) };
        let Some(letter) = letter(key.clone(), &slot) else {
            return Ok(None);
        };
        let Some(msg) = slot.msg else { return Ok(None) };
        Ok(Some(DeadLetterDetail {
            letter,
            to_masked: mask(&msg.to),
            rendered: s
                .renderer
                .render(key.kind, &msg.locale, &msg.ctx)
                .map_err(|e| e.to_string()),
        }))
    }

    /// Makes a dead letter pending again (attempts from zero). `Ok(false)`: not dead.
    pub fn replay(&self, key: &MsgKey) -> Result<bool, NotifyError> {
        let s = self.shared()?;
        let now = s.clock.now_ms();
        let n = s.outbox.lock().record(
            vec![Entry::Replayed {
                key: key.clone(),
                at_ms: now,
            }],
            now,
        )?;
        s.wake.notify_one();
        Ok(n == 1)
    }

    /// Messages by status: (pending, sent, skipped, dead).
    pub fn counts(&self) -> Result<(usize, usize, usize, usize), NotifyError> {
        Ok(self.shared()?.outbox.lock().counts())
    }
}

fn letter(key: MsgKey, slot: &Slot) -> Option<DeadLetter> {
    let Status::Dead { attempts, at_ms } = slot.status else {
        return None;
    };
    Some(DeadLetter {
        key,
        attempts,
        error: slot.last_error.clone().unwrap_or_default(),
        dead_at_ms: at_ms,
        locale: slot
            .msg
            .as_ref()
            .map(|m| m.locale.clone())
            .unwrap_or_default(),
    })
}

/// What a send task reports.
struct Outcome {
    key: MsgKey,
    attempt: u32,
    event_ms: i64,
    result: Result<(), SendError>,
}

/// The notifier.
#[derive(Debug)]
pub struct Notifier {
    config: NotifyConfig,
    db: Arc<DurableEngine>,
    shared: Arc<Shared>,
    email: Option<EmailSender>,
    sms: Option<SmsSender>,
}

impl Notifier {
    /// Opens the journal under `data_dir`, sets up the providers, registers the consumer
    /// (a new one starts at the oldest record the stream keeps, and its start is
    /// acknowledged so the registration survives a restart), and fills `handle`.
    pub fn open(
        config: NotifyConfig,
        db: Arc<DurableEngine>,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        handle: &NotifyHandle,
    ) -> Result<Notifier, NotifyError> {
        // reqwest and lettre use rustls; this build links the ring provider only (rustls
        // deprecates it for lacking post-quantum key exchange; aws-lc-rs has that but
        // needs cmake and a long C build on every machine). An error means a provider is
        // installed already, which is as good.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = journal_path(data_dir);
        let (outbox, torn) = Outbox::open(&path, config.journal_compact_bytes)?;
        if torn > 0 {
            warn!(file = %path.display(), bytes = torn, "notify journal: cut a torn tail (never acknowledged)");
        }
        let email = if config.email.enabled {
            Some(
                EmailSender::new(&config.email, config.concurrency as u32)
                    .map_err(NotifyError::Provider)?,
            )
        } else {
            None
        };
        let sms = if config.sms.enabled {
            Some(SmsSender::new(&config.sms).map_err(NotifyError::Provider)?)
        } else {
            None
        };
        let stream = db.stream();
        let known = stream.cursor(&config.consumer).is_some();
        let start = stream.register_consumer(&config.consumer)?;
        if !known {
            db.engine()
                .ack_consumer(&config.consumer, start, Timestamp(clock.now_ms()))?;
        }
        let (pending, sent, skipped, dead) = outbox.counts();
        info!(
            consumer = %config.consumer,
            cursor = %start,
            planned = outbox.planned_lsn(),
            pending, sent, skipped, dead,
            "notifier ready"
        );
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            renderer: Renderer::new(
                &config.template_dir,
                &config.default_locale,
                config.sms.segments_max,
            ),
            clock,
            wake: tokio::sync::Notify::new(),
        });
        let _ = handle.0.set(shared.clone());
        Ok(Notifier {
            config,
            db,
            shared,
            email,
            sms,
        })
    }

    /// Runs until `stop` completes; then waits up to [`STOP_GRACE`] for sends in flight
    /// and journals their outcomes.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let stream = self.db.stream().clone();
        let consumer = self.config.consumer.clone();
        let mut after = {
            let planned = Lsn(self.shared.outbox.lock().planned_lsn());
            stream.cursor(&consumer).unwrap_or_default().max(planned)
        };
        let mut inflight: JoinSet<Outcome> = JoinSet::new();
        let mut busy: BTreeSet<MsgKey> = BTreeSet::new();
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut last_settle = tokio::time::Instant::now();
        loop {
            let now = self.shared.clock.now_ms();
            let mut progressed = false;
            // 1. Plan new events; journal; then acknowledge.
            match stream.read(&consumer, after, PLAN_BATCH) {
                Ok(recs) if !recs.is_empty() => {
                    progressed = true;
                    let last = recs.last().map_or(after, |r| r.lsn);
                    let interesting = recs.iter().any(|r| {
                        r.record
                            .events
                            .iter()
                            .any(|e| !matches!(e, Event::ConsumerAcked { .. }))
                    });
                    let committed = {
                        let mut ob = self.shared.outbox.lock();
                        for rec in &recs {
                            if rec.lsn.0 <= ob.planned_lsn() {
                                continue;
                            }
                            let entries = plan(
                                rec,
                                &PlanEnv {
                                    engine: self.db.engine(),
                                    config: &self.config,
                                    outbox: &ob,
                                    now_ms: now,
                                },
                            );
                            ob.stage(entries);
                        }
                        ob.stage(vec![Entry::Planned { lsn: last.0 }]);
                        ob.commit(now)
                    };
                    match committed {
                        Ok(()) => {
                            after = last;
                            if interesting {
                                self.ack(last, now).await;
                            }
                        }
                        Err(e) => {
                            error!(error = %e, "notify journal write failed; retrying");
                            tokio::time::sleep(self.config.poll_interval()).await;
                            continue;
                        }
                    }
                }
                Ok(_) => {}
                Err(StreamError::Truncated { oldest, .. }) => {
                    error!(
                        after = after.0,
                        oldest,
                        "notify cursor fell behind the stream's retention: events in between get no message"
                    );
                    after = Lsn(oldest.saturating_sub(1));
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "notifier stopped: event stream");
                    return;
                }
            }
            // 2. Send what is due (only once nothing staged is undurable).
            let free = self.config.concurrency.saturating_sub(inflight.len());
            if free > 0 && !self.shared.outbox.lock().has_staged() {
                let due = self.shared.outbox.lock().due(now, free, &busy);
                for d in due {
                    progressed = true;
                    self.dispatch(d, now, &mut inflight, &mut busy, &mut outcomes);
                }
            }
            // 3. Journal finished sends, many per fsync: at once when there is nothing
            // else to do, else when enough finished or the oldest waited long enough.
            while let Some(done) = inflight.try_join_next() {
                if let Ok(o) = done {
                    outcomes.push(o);
                }
            }
            let settle = !outcomes.is_empty()
                && (!progressed
                    || outcomes.len() >= (self.config.concurrency / 2).max(1)
                    || last_settle.elapsed() >= SETTLE_INTERVAL);
            if settle {
                progressed = true;
                self.settle(&mut outcomes, &mut busy, now);
                last_settle = tokio::time::Instant::now();
            }
            if progressed {
                tokio::task::yield_now().await;
                continue;
            }
            // 4. Idle: wait for a send to finish, a replay, the poll interval, or stop.
            tokio::select! {
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(o) = done { outcomes.push(o); }
                }
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval()) => {}
                () = &mut stop => break,
            }
        }
        // Graceful stop: bounded wait for sends in flight.
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !inflight.is_empty() {
            match tokio::time::timeout_at(deadline, inflight.join_next()).await {
                Ok(Some(Ok(o))) => outcomes.push(o),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let now = self.shared.clock.now_ms();
        self.settle(&mut outcomes, &mut busy, now);
        info!("notifier stopped");
    }

    async fn ack(&self, lsn: Lsn, now: i64) {
        let db = self.db.clone();
        let consumer = self.config.consumer.clone();
        let acked = tokio::task::spawn_blocking(move || {
            db.engine().ack_consumer(&consumer, lsn, Timestamp(now))
        })
        .await;
        match acked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "notify: acknowledging the cursor failed (events will be re-read and deduplicated)")
            }
            Err(e) => warn!(error = %e, "notify: acknowledgement task failed"),
        }
    }

    /// Journals finished attempts: sent, retry later, or dead.
    fn settle(&self, outcomes: &mut Vec<Outcome>, busy: &mut BTreeSet<MsgKey>, now: i64) {
        if outcomes.is_empty() {
            return;
        }
        let c = &self.config;
        let mut entries = Vec::with_capacity(outcomes.len());
        for o in outcomes.drain(..) {
            busy.remove(&o.key);
            let (kind, channel) = (o.key.kind.as_str(), o.key.channel.as_str());
            match o.result {
                Ok(()) => {
                    metrics::counter!("pickline_notify_sent_total", "kind" => kind, "channel" => channel)
                        .increment(1);
                    metrics::histogram!("pickline_notify_event_to_send_ms")
                        .record((now - o.event_ms).max(0) as f64);
                    entries.push(Entry::Sent {
                        key: o.key,
                        attempt: o.attempt,
                        at_ms: now,
                    });
                }
                Err(e) => {
                    let give_up = matches!(e, SendError::GiveUp(_)) || o.attempt >= c.max_attempts;
                    warn!(key = %o.key, attempt = o.attempt, error = %e.message(), give_up, "notify: send failed");
                    if give_up {
                        metrics::counter!("pickline_notify_dead_total", "kind" => kind, "channel" => channel)
                            .increment(1);
                        entries.push(Entry::Dead {
                            key: o.key,
                            attempt: o.attempt,
                            error: e.message().to_owned(),
                            at_ms: now,
                        });
                    } else {
                        let delay = backoff_ms(
                            o.attempt,
                            c.backoff_base_ms,
                            c.backoff_max_ms,
                            rand::RngExt::random::<u64>(&mut rand::rng()),
                        );
                        entries.push(Entry::Failed {
                            key: o.key,
                            attempt: o.attempt,
                            error: e.message().to_owned(),
                            next_ms: now + delay as i64,
                        });
                    }
                }
            }
        }
        let mut ob = self.shared.outbox.lock();
        ob.stage(entries);
        if let Err(e) = ob.commit(now) {
            error!(error = %e, "notify journal write failed; outcomes stay staged");
        }
    }

    /// When the quiet hours of the message's store end, if they are on now.
    fn quiet_until(&self, msg: &super::outbox::Message, now: i64) -> Option<i64> {
        let tz = jiff::tz::TimeZone::get(msg.ctx["store"]["time_zone"].as_str()?).ok()?;
        let quiet = QuietHours::parse(&self.config.quiet_start, &self.config.quiet_end)?;
        quiet_until(now, &tz, quiet)
    }

    /// Renders one due message and starts its send.
    fn dispatch(
        &self,
        d: Due,
        now: i64,
        inflight: &mut JoinSet<Outcome>,
        busy: &mut BTreeSet<MsgKey>,
        outcomes: &mut Vec<Outcome>,
    ) {
        let key = d.msg.key.clone();
        let attempt = d.attempts + 1;
        let event_ms = d.msg.event_ms.min(now);
        let give_up = |outcomes: &mut Vec<Outcome>, why: String| {
            outcomes.push(Outcome {
                key: key.clone(),
                attempt,
                event_ms,
                result: Err(SendError::GiveUp(why)),
            });
        };
        if key.kind == Kind::Reminder
            && let Some(until) = self.quiet_until(&d.msg, now)
        {
            // Due before the quiet hours, but retries (or a late start) ran into them.
            let mut ob = self.shared.outbox.lock();
            ob.stage(vec![Entry::Failed {
                key,
                attempt: d.attempts,
                error: "deferred: the store's quiet hours".into(),
                next_ms: until,
            }]);
            if let Err(e) = ob.commit(now) {
                error!(error = %e, "notify journal write failed; retrying");
            }
            return;
        }
        busy.insert(key.clone());
        let rendered = match self
            .shared
            .renderer
            .render(key.kind, &d.msg.locale, &d.msg.ctx)
        {
            Ok(r) => r,
            Err(e) => {
                give_up(outcomes, format!("render: {e}"));
                return;
            }
        };
        match key.channel {
            Channel::Email => {
                let Some(email) = self.email.clone() else {
                    give_up(outcomes, "email is not configured".into());
                    return;
                };
                let qr = d.msg.ctx["qr_payload"]
                    .as_str()
                    .filter(|_| rendered.html.contains("cid:qr"))
                    .and_then(|p| crate::qr::qr_png(p).ok());
                let msg = match email.build(&key, &d.msg.to, &rendered, qr) {
                    Ok(m) => m,
                    Err(e) => {
                        give_up(outcomes, e.message().to_owned());
                        return;
                    }
                };
                inflight.spawn(async move {
                    let result = email.send(msg).await;
                    Outcome {
                        key,
                        attempt,
                        event_ms,
                        result,
                    }
                });
            }
            Channel::Sms => {
                let Some(sms) = self.sms.clone() else {
                    give_up(outcomes, "sms is not configured".into());
                    return;
                };
                let to = d.msg.to.clone();
                inflight.spawn(async move {
                    let result = sms.send(&key, &to, &rendered.sms).await;
                    Outcome {
                        key,
                        attempt,
                        event_ms,
                        result,
                    }
                });
            }
        }
    }
}

/// Starts the notifier of `pickline serve` on its own task. Returns the task and the
/// sender that stops it gracefully; `None` if it could not start (logged).
pub fn spawn(
    config: &NotifyConfig,
    db: Arc<DurableEngine>,
    data_dir: &Path,
    handle: &NotifyHandle,
) -> Option<(
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let notifier = match Notifier::open(
        config.clone(),
        db,
        data_dir,
        Arc::new(super::SystemClock),
        handle,
    ) {
        Ok(n) => n,
        Err(e) => {
            error!(error = %e, "notifier could not start; no customer messages will be sent");
            return None;
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(notifier.run(async {
        let _ = rx.await;
    }));
    Some((task, tx))
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_hide_most_of_an_address() {
        assert_eq!(mask("jane.doe@example.com"), "j***@example.com");
        assert_eq!(mask("+4915112345678"), "***5678");
        assert_eq!(mask("12"), "***12");
    }
}
