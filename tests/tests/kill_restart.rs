//! Real-process durability: a writer process doing durable holds (sync mode, group commit
//! with fdatasync) is killed with SIGKILL at random moments, 20 times. After each kill the
//! directory is recovered and every hold whose acknowledgement the client saw must be there,
//! with its quantity, and conservation must hold. The writer then restarts on the same
//! directory (recovering first) and goes on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pickline_engine::HoldId;
use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::FileStorage;

#[test]
fn sigkill_never_loses_an_acknowledged_hold() {
    let kills: usize = std::env::var("PICKLINE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("pickline-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = env!("CARGO_BIN_EXE_pickline-crash-writer");
    let mut acked: HashMap<u64, u32> = HashMap::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..kills {
        let mut child = Command::new(exe)
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().unwrap();
        // Random moment: after 1..=400 acknowledgements, or a time limit.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let want = 1 + (seed % 400) as usize;
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let start = Instant::now();
            while lines.len() < want && start.elapsed() < Duration::from_secs(20) {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lines.push(line.trim().to_owned()),
                }
            }
            (lines, r)
        });
        let (lines, rest) = reader.join().unwrap();
        // SIGKILL: no destructor, no flush, no final fsync.
        child.kill().expect("kill");
        let _ = child.wait();
        // Acknowledgements printed before the kill that we had not read yet still count: the
        // client saw them (they are in the pipe).
        let mut all = lines;
        for l in rest.lines().map_while(Result::ok) {
            all.push(l);
        }
        for l in &all {
            let mut parts = l.split_whitespace();
            if parts.next() == Some("ACK") {
                let id: u64 = parts.next().unwrap().parse().unwrap();
                let qty: u32 = parts.next().unwrap().parse().unwrap();
                acked.insert(id, qty);
            }
        }
        let db = DurableEngine::open(
            Arc::new(FileStorage::open(&dir).unwrap()),
            OpenOptions::default(),
        )
        .unwrap_or_else(|e| panic!("round {round}: recovery refused: {e}"));
        db.engine().check_conservation().unwrap();
        for (id, qty) in &acked {
            let info = db
                .engine()
                .hold_info(HoldId(*id))
                .unwrap_or_else(|| panic!("round {round}: acknowledged hold {id} lost"));
            assert_eq!(info.lines[0].qty, *qty, "round {round}: hold {id} quantity");
        }
        let total: u64 = acked.values().map(|q| u64::from(*q)).sum();
        let held = db.engine().availability("store-1", "SKU").unwrap().held;
        assert!(
            u64::from(held) >= total,
            "round {round}: held {held} < acknowledged {total}"
        );
        db.close().unwrap();
    }
    assert!(
        acked.len() > kills,
        "the writer should have acknowledged holds"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
