//! The multi-line locking protocol under the `shuttle` randomized scheduler: threads place
//! overlapping multi-line holds on a few shared cells through the same `lock_in_order` the
//! engine uses. Shuttle explores many interleavings; a deadlock fails the test (shuttle
//! reports it), and so does any oversell.

use std::sync::Arc;

use pickline_engine::lock_order::{CellLock, lock_in_order};
use shuttle::sync::{Mutex, MutexGuard};

struct ShuttleCell(Mutex<(u32, u32)>); // (on_hand, held)

impl CellLock for ShuttleCell {
    type Guard<'a> = MutexGuard<'a, (u32, u32)>;

    fn lock_cell(&self) -> Self::Guard<'_> {
        self.0.lock().expect("not poisoned")
    }
}

fn scenario() {
    const CELLS: u32 = 3;
    let cells: Arc<Vec<ShuttleCell>> = Arc::new(
        (0..CELLS)
            .map(|_| ShuttleCell(Mutex::new((2, 0))))
            .collect(),
    );
    // Each thread holds a different overlapping set, listed in a different order; the
    // protocol sorts before locking, as the engine does.
    let sets: [&[u32]; 3] = [&[0, 1, 2], &[2, 0], &[1, 2]];
    let handles: Vec<_> = sets
        .iter()
        .map(|set| {
            let cells = cells.clone();
            let mut keys = set.to_vec();
            shuttle::thread::spawn(move || {
                keys.sort_unstable();
                let refs: Vec<(u32, &ShuttleCell)> =
                    keys.iter().map(|k| (*k, &cells[*k as usize])).collect();
                let mut guards = lock_in_order(&refs).expect("sorted");
                let ok = guards.iter().all(|g| g.0 - g.1 >= 1);
                if ok {
                    for g in guards.iter_mut() {
                        g.1 += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let granted: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, c) in cells.iter().enumerate() {
        let (on_hand, held) = *c.0.lock().unwrap();
        assert!(
            held <= on_hand,
            "cell {i} oversold: held {held} > on_hand {on_hand}"
        );
        let want: u32 = sets
            .iter()
            .zip(&granted)
            .filter(|(set, g)| **g && set.contains(&(i as u32)))
            .count() as u32;
        assert_eq!(held, want, "cell {i}: all-or-nothing broken");
    }
}

#[test]
fn multi_line_locking_never_deadlocks_nor_oversells() {
    shuttle::check_random(scenario, 5_000);
}

#[test]
fn multi_line_locking_exhaustive_small() {
    shuttle::check_pct(scenario, 2_000, 3);
}

#[test]
fn unsorted_lock_sets_are_refused_before_locking() {
    let a = parking_lot::Mutex::new(0u8);
    let b = parking_lot::Mutex::new(0u8);
    assert!(lock_in_order(&[(2, &a), (1, &b)]).is_none());
    assert!(lock_in_order(&[(1, &a), (1, &b)]).is_none());
    assert!(lock_in_order(&[(1, &a), (2, &b)]).is_some());
}
