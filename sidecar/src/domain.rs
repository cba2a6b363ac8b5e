//! The recovered engine as the handlers see it, and the two things every handler needs
//! besides it: the injected clock and a blocking thread for calls that wait on fsync.
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

use pickline_engine::{Engine, Timestamp, durable::DurableEngine};
use tonic::Status;

use crate::status::DomainError;

/// The engine shared by every service handler. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Domain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    db: OnceLock<Arc<DurableEngine>>,
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

    /// Sets the recovered engine (once; later calls are ignored).
    pub fn set(&self, db: Arc<DurableEngine>) {
        let _ = self.inner.db.set(db);
    }

    /// The durable engine, or UNAVAILABLE while it recovers.
    pub fn db(&self) -> Result<&Arc<DurableEngine>, DomainError> {
        self.inner.db.get().ok_or(DomainError::Recovering)
    }

    /// The engine, or UNAVAILABLE while it recovers.
    pub fn engine(&self) -> Result<Arc<Engine>, DomainError> {
        Ok(self.db()?.engine().clone())
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

/// The injected clock: wall time as a [`Timestamp`]. The engine never reads a clock; the
/// sidecar reads it once per request and passes it in.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_ms(ms)
}

/// Runs an engine call on a blocking thread: mutations wait for their group commit's
/// fdatasync, which must not stall the async workers.
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
