//! The one skeleton of every mutation: lock → decide → append → apply → (unlock) → wait.
//!
//! Each mutation of the engine (holds, batches, release and expiry, extend and confirm,
//! the POS feed, safety stock, order transitions, allocation answers, calendars, stores
//! and SKUs, kept replies, consumer acknowledgements) is [`Engine::commit`] with its own
//! three steps:
//!
//! - `lock` takes the locks of the state the mutation reads and changes, in the global
//!   lock order (a store's cells by ascending SKU id, then its state; a hold or the end
//!   of a hold has taken its store's admission lock before, after the snapshot gate);
//! - `decide` reads the locked state and chooses: [`Decision::Answer`] when nothing
//!   changes (nothing is logged), or [`Decision::Log`] with the record and what `apply`
//!   needs besides it;
//! - the record is appended while the locks are held and before any state changes, so log
//!   order is apply order and a log failure leaves the state as it was;
//! - `apply` changes the locked state with the record's events, through the same functions
//!   replay uses, and gives the answer.
//!
//! The locks are released when `commit` returns, and the caller acknowledges only once
//! the returned LSN is durable: [`Engine::mutate`] takes the snapshot gate and waits
//! ([`Engine::durable`]); a caller that holds the gate across several mutations (an
//! allocation, a batch, expiry) calls `commit` and waits once for the newest LSN.
//!
//! Architecture invariant: no mutation appends a record or waits for durability other than
//! through this file. The steps are generic closures, monomorphized per mutation: no
//! boxing, no dynamic dispatch and no allocation of the skeleton's own.

use std::sync::Arc;

use crate::engine::{Engine, poisoned};
use crate::error::EngineError;
use crate::event::Record;
use crate::types::Lsn;

/// What a mutation's `decide` step chose ([`Engine::commit`]).
pub(crate) enum Decision<P, T> {
    /// Nothing changes and nothing is logged: the answer as it is.
    Answer(T),
    /// Append the record, then apply it, with `P` (what the decision computed for `apply`
    /// besides the record). Shared with the event stream, which keeps it without a copy.
    Log(Arc<Record>, P),
}

impl Engine {
    /// Lock → decide → append → apply, then unlock (the caller holds the snapshot gate):
    /// the answer, and the LSN that must be durable before it is acknowledged (`None`
    /// when nothing was logged). On `Err` from `decide` or from the log nothing was
    /// applied; an `Err` from `apply` is the engine's own fault (the record it decided
    /// does not apply).
    pub(crate) fn commit<G, P, T>(
        &self,
        lock: impl FnOnce() -> Result<G, EngineError>,
        decide: impl FnOnce(&mut G) -> Result<Decision<P, T>, EngineError>,
        apply: impl FnOnce(&mut G, Arc<Record>, Lsn, P) -> Result<T, EngineError>,
    ) -> Result<(T, Option<Lsn>), EngineError> {
        self.commit_or_undo(lock, decide, apply, |_, _| {})
    }

    /// [`Engine::commit`] for a `decide` that reserves something in the locked state
    /// before the record is logged (a batch books each hold's slot as it decides it, so
    /// the next hold sees the booking): `undo` takes the reservation back when the log
    /// refuses the record.
    pub(crate) fn commit_or_undo<G, P, T>(
        &self,
        lock: impl FnOnce() -> Result<G, EngineError>,
        decide: impl FnOnce(&mut G) -> Result<Decision<P, T>, EngineError>,
        apply: impl FnOnce(&mut G, Arc<Record>, Lsn, P) -> Result<T, EngineError>,
        undo: impl FnOnce(&mut G, P),
    ) -> Result<(T, Option<Lsn>), EngineError> {
        let mut locked = lock()?;
        let (record, pass) = match decide(&mut locked)? {
            Decision::Answer(answer) => return Ok((answer, None)),
            Decision::Log(record, pass) => (record, pass),
        };
        let lsn = match self.log.append_shared(&record) {
            Ok(lsn) => lsn,
            Err(e) => {
                undo(&mut locked, pass);
                return Err(e);
            }
        };
        let answer = apply(&mut locked, record, lsn, pass)?;
        drop(locked);
        Ok((answer, Some(lsn)))
    }

    /// A whole mutation: [`Engine::commit`] under the snapshot gate, then the wait for
    /// durability (or its deferral, [`crate::log::defer_durability`]) once every lock is
    /// released.
    pub(crate) fn mutate<G, P, T>(
        &self,
        lock: impl FnOnce() -> Result<G, EngineError>,
        decide: impl FnOnce(&mut G) -> Result<Decision<P, T>, EngineError>,
        apply: impl FnOnce(&mut G, Arc<Record>, Lsn, P) -> Result<T, EngineError>,
    ) -> Result<(T, Option<Lsn>), EngineError> {
        let gate = self.gate.read().map_err(|_| poisoned())?;
        let (answer, lsn) = self.commit(lock, decide, apply)?;
        drop(gate);
        self.durable(lsn)?;
        Ok((answer, lsn))
    }

    /// Waits until `lsn` is durable (under [`crate::log::defer_durability`]: notes it);
    /// nothing to wait for when `None`. Every durability wait of the engine's mutations.
    pub(crate) fn durable(&self, lsn: Option<Lsn>) -> Result<(), EngineError> {
        match lsn {
            Some(lsn) => crate::log::wait_durable_or_defer(&*self.log, lsn),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::Decision;
    use crate::config::EngineConfig;
    use crate::engine::Engine;
    use crate::error::EngineError;
    use crate::event::Record;
    use crate::log::{EventLog, MemoryLog};
    use crate::types::{Lsn, Timestamp};

    /// A log that refuses every record.
    struct Refusing;

    impl EventLog for Refusing {
        fn append(&self, _record: &Record) -> Result<Lsn, EngineError> {
            Err(EngineError::LogFailed("refused".into()))
        }
        fn wait_durable(&self, _lsn: Lsn) -> Result<(), EngineError> {
            Ok(())
        }
        fn last_lsn(&self) -> Lsn {
            Lsn(0)
        }
    }

    fn record() -> Arc<Record> {
        Arc::new(Record {
            at: Timestamp(1),
            events: Vec::new(),
        })
    }

    #[test]
    fn a_refused_record_is_undone_and_never_applied() {
        let engine = Engine::with_log(EngineConfig::default(), Arc::new(Refusing)).unwrap();
        let (applied, undone) = (Cell::new(false), Cell::new(false));
        let result = engine.commit_or_undo(
            || Ok(()),
            |_| Ok(Decision::Log(record(), ())),
            |_, _, _, ()| {
                applied.set(true);
                Ok(())
            },
            |_, ()| undone.set(true),
        );
        assert!(matches!(result, Err(EngineError::LogFailed(_))));
        assert!(!applied.get());
        assert!(undone.get());
    }

    #[test]
    fn an_answer_logs_nothing_and_a_logged_record_is_applied_with_its_lsn() {
        let log = Arc::new(MemoryLog::default());
        let engine = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
        let before = log.last_lsn();
        let (answer, lsn) = engine
            .mutate(
                || Ok(()),
                |_| Ok(Decision::<(), u8>::Answer(7)),
                |_, _, _, ()| unreachable!("nothing to apply"),
            )
            .unwrap();
        assert_eq!((answer, lsn, log.last_lsn()), (7, None, before));
        let (seen, lsn) = engine
            .mutate(
                || Ok(()),
                |_| Ok(Decision::Log(record(), ())),
                |_, _, lsn, ()| Ok(lsn),
            )
            .unwrap();
        assert_eq!(Some(seen), lsn);
        assert_eq!(log.last_lsn(), seen);
    }
}
