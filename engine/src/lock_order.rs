//! The multi-line locking protocol, written once and generic over the lock, so that the
//! engine runs it with `parking_lot` mutexes and the concurrency tests run the very same
//! code under the `shuttle` scheduler.
//!
//! Architecture invariant: a mutation locks the cells it touches in ascending SKU id order
//! (a hold's lines are stored sorted, without a SKU twice), and only then its store's state.
//! Every thread takes locks in one global order, so no cycle of waiting threads, hence no
//! deadlock, can form.

/// A lock that guards one stock cell.
pub trait CellLock {
    /// The guard that holds it.
    type Guard<'a>
    where
        Self: 'a;

    /// Blocks until the lock is held.
    fn lock_cell(&self) -> Self::Guard<'_>;
}

impl<T> CellLock for parking_lot::Mutex<T> {
    type Guard<'a>
        = parking_lot::MutexGuard<'a, T>
    where
        T: 'a;

    fn lock_cell(&self) -> Self::Guard<'_> {
        self.lock()
    }
}

/// Locks `cells` in order. `cells` must be sorted by strictly ascending key; a slice that is
/// not is refused (`None`) before any lock is taken, so a caller bug cannot deadlock.
pub fn lock_in_order<'a, L: CellLock>(cells: &[(u32, &'a L)]) -> Option<Vec<L::Guard<'a>>> {
    if cells.windows(2).any(|w| w[0].0 >= w[1].0) {
        return None;
    }
    Some(cells.iter().map(|(_, c)| c.lock_cell()).collect())
}
