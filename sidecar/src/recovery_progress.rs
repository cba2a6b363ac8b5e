//! Progress of the engine's recovery at start-up, for a restart that takes longer than a
//! second: an indicatif bar on stderr when stderr is a terminal, otherwise a log line every
//! few seconds. Recovery (`DurableEngine::open_with_progress`) reports its steps through
//! [`RecoveryProgress::observe`]; a watcher thread draws or logs them, so nothing shows for
//! a quick restart and a long snapshot load (which reports no steps while it runs) still
//! shows that the server is working.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pickline_engine::durable::RecoveryStep;
use tracing::info;

/// Recovery shorter than this shows nothing.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(100);

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    step: Option<RecoveryStep>,
    done: bool,
}

/// The watcher of one recovery: create it before opening, pass [`RecoveryProgress::observe`]
/// as the progress callback, and call [`RecoveryProgress::finish`] when open returns.
#[derive(Debug)]
pub struct RecoveryProgress {
    shared: Arc<(Mutex<State>, Condvar)>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl RecoveryProgress {
    /// Starts the watcher (a bar on stderr if it is a terminal, else log lines).
    pub fn start() -> Self {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let terminal = std::io::stderr().is_terminal();
        let watcher = std::thread::Builder::new()
            .name("pickline-recovery-progress".into())
            .spawn({
                let shared = shared.clone();
                move || watch(&shared, terminal)
            })
            .ok();
        RecoveryProgress { shared, watcher }
    }

    /// The progress callback.
    pub fn observe(&self, step: RecoveryStep) {
        self.shared.0.lock().step = Some(step);
    }

    /// Recovery returned: clears the bar and stops the watcher.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let (state, wake) = &*self.shared;
        state.lock().done = true;
        wake.notify_all();
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

impl Drop for RecoveryProgress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line saying where recovery is.
fn describe(step: Option<RecoveryStep>) -> String {
    match step {
        None => "reading the log files".to_owned(),
        Some(RecoveryStep::Loading {
            snapshot: Some(lsn),
            snapshot_len_bytes,
            records,
        }) => format!(
            "loading the snapshot at LSN {lsn} ({} MB), then {records} records",
            snapshot_len_bytes >> 20
        ),
        Some(RecoveryStep::Loading {
            snapshot: None,
            records,
            ..
        }) => format!("replaying {records} records"),
        Some(RecoveryStep::Replaying { done, total }) => {
            format!("replayed {done} of {total} records")
        }
    }
}

fn watch(shared: &(Mutex<State>, Condvar), terminal: bool) {
    let started = Instant::now();
    let (state, wake) = shared;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut logged_at: Option<Instant> = None;
    let mut guard = state.lock();
    loop {
        if guard.done {
            break;
        }
        let step = guard.step;
        if started.elapsed() >= SHOW_AFTER {
            if terminal {
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(0);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "recovering {bar:40} {pos}/{len} records ({elapsed}) {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b
                });
                match step {
                    Some(RecoveryStep::Replaying { done, total }) => {
                        b.set_length(total);
                        b.set_position(done);
                        b.set_message("");
                    }
                    Some(RecoveryStep::Loading { records, .. }) => {
                        b.set_length(records);
                        b.set_message(describe(step));
                    }
                    None => b.set_message(describe(step)),
                }
                b.tick();
            } else if logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                logged_at = Some(Instant::now());
                info!(
                    elapsed_s = started.elapsed().as_secs(),
                    "recovering: {}",
                    describe(step)
                );
            }
        }
        let wait = if started.elapsed() < SHOW_AFTER {
            SHOW_AFTER.saturating_sub(started.elapsed())
        } else {
            DRAW_EVERY
        };
        wake.wait_for(&mut guard, wait);
    }
    drop(guard);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickline_engine::Lsn;

    #[test]
    fn steps_read_as_sentences() {
        assert_eq!(describe(None), "reading the log files");
        assert_eq!(
            describe(Some(RecoveryStep::Loading {
                snapshot: Some(Lsn(42)),
                snapshot_len_bytes: 3 << 20,
                records: 7,
            })),
            "loading the snapshot at LSN 42 (3 MB), then 7 records"
        );
        assert_eq!(
            describe(Some(RecoveryStep::Replaying { done: 5, total: 9 })),
            "replayed 5 of 9 records"
        );
    }

    #[test]
    fn finishing_stops_the_watcher() {
        let p = RecoveryProgress::start();
        p.observe(RecoveryStep::Replaying { done: 1, total: 1 });
        // Returns once the watcher thread has ended (it is woken, not waited out).
        p.finish();
    }
}
