//! The recovered engine as the handlers see it, and the two things every handler needs
//! besides it: the injected clock and a way to wait for the group commit.
//!
//! Engine calls are short (locks and an append to the WAL buffer, no I/O), so handlers run
//! them inline on the async worker under [`defer_durability`] and then await the commit of
//! the newest record they appended ([`Domain::durable`]): no thread is parked per request,
//! and thousands of requests share one `fdatasync`. Only calls that do I/O themselves
//! (snapshots, the final flush) go to a blocking thread ([`blocking`]).
//!
//! Services are registered before recovery ends (the server answers health probes and
//! Ping at once), so they share a [`Domain`] whose engine is set exactly once, when
//! [`crate::server::run`] has opened it. The admission layer answers UNAVAILABLE for
//! engine RPCs until then; [`Domain::db`] says the same if a request slips through.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use pickline_engine::{
    Deferred, Engine, Timestamp, defer_durability,
    durable::DurableEngine,
    wal::{Durability, WalError},
};
use tonic::Status;

use crate::{
    grpc::auth::Caller,
    grpc::replies::{Keyed, Replies},
    grpc::status::DomainError,
};

tokio::task_local! {
    /// The request's time under `grpc.simulated_clock`: set by the admission layer from
    /// the request's `pickline-sim-now-ms` header around the whole handler, read by [`now`].
    pub(crate) static SIMULATED_NOW: Timestamp;
    /// Set while a keyed request runs ([`Keyed::run`]): the newest LSN its engine calls
    /// appended, whose wait [`Domain::durable`] leaves to the end of the request.
    pub(crate) static KEYED_WAIT: std::cell::Cell<Option<pickline_engine::Lsn>>;
}

/// The engine shared by every service handler. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Domain {
    inner: Arc<Inner>,
}

/// A durability step after the local log, set once at start: in cluster mode the
/// partition's JetStream stream ([`crate::cluster`]). Resolves `Err(why)` when the record
/// is not (or not yet) acknowledged by it; the request is then answered UNAVAILABLE.
pub type Replication = Arc<
    dyn Fn(
            pickline_engine::Lsn,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

#[derive(Default)]
struct Inner {
    db: OnceLock<Arc<DurableEngine>>,
    /// Set in cluster mode: [`Domain::wait_durable`] also waits for it.
    replication: OnceLock<Replication>,
    /// First responses of the keyed mutations the engine does not deduplicate itself.
    replies: Replies,
    started_at_ms: AtomicU64,
    /// WAL bytes written when the last snapshot was taken: `wal_bytes` in Stats and the
    /// size trigger of the checkpoint ticker are measured from here.
    wal_bytes_at_checkpoint: AtomicU64,
}

impl Domain {
    /// A domain whose engine is not recovered yet.
    pub fn new() -> Domain {
        let d = Domain::default();
        d.inner
            .started_at_ms
            .store(now().as_ms().max(0) as u64, Ordering::Relaxed);
        d
    }

    /// Sets the replication step (once, before [`Domain::set`]; later calls are ignored).
    pub fn set_replication(&self, replication: Replication) {
        let _ = self.inner.replication.set(replication);
    }

    /// Sets the recovered engine (once; later calls are ignored).
    pub fn set(&self, db: Arc<DurableEngine>) {
        let _ = self.inner.db.set(db);
    }

    /// Runs the engine calls of `f` inline with their durability waits deferred, then waits
    /// (without parking a thread) until the newest record they appended is as durable as
    /// the configured mode promises. Only then is the result handed back to be sent: a
    /// response is the acknowledgement. `f` must not do I/O; it runs on an async worker.
    ///
    /// Inside a keyed request ([`Keyed::run`]) the wait is left to the end of the request,
    /// which waits once for its records and the record that keeps its answer.
    pub async fn durable<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce() -> Result<T, DomainError>,
    {
        let Deferred { value, wait_for } = defer_durability(f);
        let value = value?;
        if let Some(lsn) = wait_for {
            let deferred = KEYED_WAIT.try_with(|w| w.set(w.get().max(Some(lsn))));
            if deferred.is_err() {
                self.wait_durable(lsn).await?;
            }
        }
        Ok(value)
    }

    /// Waits until `lsn` is durable as the mode promises: `sync` waits for the group commit,
    /// `async` and `off` do not wait (but a fail-stopped WAL is still an error); in cluster
    /// mode, then until the replicated log acknowledged it.
    pub(crate) async fn wait_durable(&self, lsn: pickline_engine::Lsn) -> Result<(), DomainError> {
        self.wait_local(lsn).await?;
        if let Some(replicated) = self.inner.replication.get() {
            replicated(lsn).await.map_err(DomainError::Replication)?;
        }
        Ok(())
    }

    async fn wait_local(&self, lsn: pickline_engine::Lsn) -> Result<(), DomainError> {
        let wal = self.db()?.wal();
        match wal.config().durability {
            Durability::Sync => {}
            Durability::Async { .. } => {
                return match wal.failure() {
                    Some(reason) => Err(wal_failed(WalError::FailStopped { reason })),
                    None => Ok(()),
                };
            }
            Durability::Off => return Ok(()),
        }
        // The committer wakes this task when the commit covering `lsn` is done.
        wal.durable(lsn).await.map_err(wal_failed)
    }

    /// `caller`'s request `req`, to be run once per idempotency `key`: a retry of the same
    /// request gets the first OK response again, a different request under the same key
    /// ALREADY_EXISTS (see [`crate::grpc::replies`]). Checks the key first (INVALID_ARGUMENT
    /// naming `idempotency_key`).
    pub fn keyed<Req: prost::Message>(
        &self,
        caller: &Caller,
        key: &str,
        req: &Req,
    ) -> Result<Keyed<'_>, DomainError> {
        crate::grpc::convert::idempotency_key("idempotency_key", key)?;
        Ok(self.inner.replies.keyed(self, caller, key, req))
    }

    /// The durable engine, or UNAVAILABLE while it recovers.
    pub fn db(&self) -> Result<&Arc<DurableEngine>, DomainError> {
        self.inner.db.get().ok_or(DomainError::Recovering)
    }

    /// The engine, or UNAVAILABLE while it recovers.
    pub fn engine(&self) -> Result<Arc<Engine>, DomainError> {
        Ok(self.db()?.engine().clone())
    }

    /// The engine a read by `caller` is answered from, and its read point (`as_of_seq`),
    /// taken now, before the read: on a standby (cluster mode, a read the admission layer
    /// let through there) its applied state and last applied LSN, else the served
    /// engine and its log head. Every change up to the read point is in what is read
    /// after it.
    pub fn read_view(&self, caller: &Caller) -> Result<(Arc<Engine>, u64), DomainError> {
        if let Some(standby) = caller.standby() {
            let seq = standby.read_point().0;
            return Ok((standby.engine().clone(), seq));
        }
        let engine = self.engine()?;
        let seq = crate::grpc::convert::read_point(&engine);
        Ok((engine, seq))
    }

    /// When this process started, unix ms.
    pub fn started_at_ms(&self) -> i64 {
        self.inner.started_at_ms.load(Ordering::Relaxed) as i64
    }

    /// WAL bytes written since the last snapshot.
    pub fn wal_bytes_since_checkpoint(&self) -> u64 {
        let Ok(db) = self.db() else { return 0 };
        db.wal()
            .metrics()
            .bytes_written
            .saturating_sub(self.inner.wal_bytes_at_checkpoint.load(Ordering::Relaxed))
    }

    /// Writes a snapshot (blocking: call from a blocking thread) and restarts the
    /// `wal_bytes` count.
    pub fn checkpoint(&self) -> Result<pickline_engine::durable::Checkpoint, DomainError> {
        let db = self.db()?;
        let before = db.wal().metrics().bytes_written;
        let cp = db.checkpoint().map_err(DomainError::from)?;
        self.inner
            .wal_bytes_at_checkpoint
            .store(before, Ordering::Relaxed);
        Ok(cp)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("db", &self.db)
            .field("replicated", &self.replication.get().is_some())
            .finish_non_exhaustive()
    }
}

fn wal_failed(e: WalError) -> DomainError {
    DomainError::from(pickline_engine::EngineError::LogFailed(e.to_string()))
}

/// The injected clock: wall time as a [`Timestamp`]. The engine never reads a clock; the
/// sidecar reads it once per request and passes it in. Under `grpc.simulated_clock` it is
/// the time the request carries ([`SIMULATED_NOW`]).
pub fn now() -> Timestamp {
    if let Ok(simulated) = SIMULATED_NOW.try_with(|t| *t) {
        return simulated;
    }
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_ms(ms)
}

/// Runs a call that does I/O itself (a snapshot, a flush) on a blocking thread, so that it
/// does not stall the async workers. Engine calls use [`Domain::durable`] instead.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DomainError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Status::from),
        Err(join) => Err(DomainError::Internal(format!("engine call failed: {join}")).into()),
    }
}

/// 8 bytes from the operating system's CSPRNG, for pickup codes.
pub fn entropy() -> Result<[u8; 8], DomainError> {
    use rand::TryRng as _;
    let mut bytes = [0u8; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| DomainError::Internal(format!("OS random source failed: {e}")))?;
    Ok(bytes)
}
