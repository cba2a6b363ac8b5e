//! `pickline bench compare`: one reservation workload against the engine and the usual
//! alternatives, with the same number of concurrent clients for each, each run followed
//! by a check that nothing was oversold.
//!
//! Workload: one store, `skus` SKUs with `stock` units each; every client repeats a
//! multi-line hold (1-5 distinct Zipf-hot SKUs, 1-2 units each, lines sorted by SKU) and,
//! when granted, its release. A hold refused for stock counts too (it was decided). The
//! figure is decided holds per second over `secs`.
//!
//! - engine `sync`: `DurableEngine` on files, WAL group commit with `fdatasync`; each
//!   client thread's hold and release return once their records are durable, so the
//!   threads waiting at one moment share one fsync.
//! - engine `async`: the same, WAL flushed every 1,000 ms without waiting (Redis' default
//!   persistence does not fsync either).
//!
//! Every system gets the same client OS threads ([`threads_loop`]).
//! - PostgreSQL: one connection per client, `synchronous_commit = on`, one transaction per
//!   hold: `SELECT ... FOR UPDATE` of the lines' rows in SKU order, then per line the
//!   guarded `UPDATE ... SET held = held + q WHERE sku = $1 AND on_hand - held >= q`; any
//!   line that updates no row rolls the transaction back. Release is one transaction.
//! - Redis: one connection per client, one Lua script per hold (checks every line, then
//!   increments every line) and one per release.
//! - The sidecar (in `pickline-sidecar`, which owns the gRPC client): Hold + Release over
//!   gRPC on loopback, durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::{Durability, FileStorage, WalConfig};
use pickline_engine::{
    EngineConfig, HoldOutcome, HoldRequest, Limits, LineRequest, PosDelta, PosDeltaKind, StoreDef,
    Timestamp,
};
use serde::Serialize;

use crate::zipf::{Rng, Zipf};

const T0: Timestamp = Timestamp(1_795_669_200_000);
const STORE: &str = "CMP1";

/// Settings of a comparison.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Concurrent clients for every system.
    pub clients: usize,
    /// SKUs.
    pub skus: u32,
    /// Units of each SKU.
    pub stock: u32,
    /// Zipf exponent of SKU choice.
    pub zipf_s: f64,
    /// Measured seconds per system.
    pub secs: f64,
    /// Directory for the engine's WAL (a real disk).
    pub dir: std::path::PathBuf,
    /// PostgreSQL connection string.
    pub postgres: String,
    /// Redis URL.
    pub redis: String,
}

impl CompareConfig {
    /// The full comparison.
    pub fn full(dir: std::path::PathBuf) -> Self {
        CompareConfig {
            clients: 64,
            skus: 10_000,
            stock: 50,
            zipf_s: 1.1,
            secs: 5.0,
            dir,
            postgres: "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into(),
            redis: "redis://127.0.0.1:6379/".into(),
        }
    }

    /// A short run (tests, smoke); figures are not representative.
    pub fn quick(dir: std::path::PathBuf) -> Self {
        CompareConfig {
            clients: 8,
            skus: 500,
            secs: 0.5,
            ..Self::full(dir)
        }
    }
}

/// One system's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemRun {
    /// Decided holds per second.
    pub holds_per_s: f64,
    /// Holds granted.
    pub granted: u64,
    /// Holds refused for stock.
    pub refused: u64,
    /// The oversell check after the run: cells with held > on_hand, or units still held
    /// after every release.
    pub oversold_cells: u64,
}

/// Pre-drawn holds of one client: per hold, its lines (SKU index, qty).
pub type ClientHolds = Vec<Vec<(u32, u32)>>;

/// Pre-drawn holds of one client: lines (SKU index, qty), sorted by SKU, distinct.
pub fn client_holds(cfg: &CompareConfig, client: usize, n: usize) -> ClientHolds {
    let zipf = Zipf::new(cfg.skus as usize, cfg.zipf_s);
    let mut rng = Rng::new(0xC0FFEE + client as u64);
    (0..n)
        .map(|_| {
            let lines = 1 + rng.below(5) as usize;
            let mut v: Vec<(u32, u32)> = Vec::with_capacity(lines);
            while v.len() < lines {
                let sku = zipf.sample(&mut rng) as u32;
                if v.iter().all(|l| l.0 != sku) {
                    v.push((sku, 1 + rng.below(2) as u32));
                }
            }
            v.sort_unstable();
            v
        })
        .collect()
}

/// SKU name of index `k`.
pub fn sku_name(k: u32) -> String {
    format!("SKU-{k:05}")
}

/// Runs `op(client, i)` from `clients` OS threads for `secs`; returns (decided/s,
/// granted, refused). `op` returns `Ok(true)` granted, `Ok(false)` refused.
pub fn threads_loop<S, F>(
    clients: usize,
    secs: f64,
    mut make: impl FnMut(usize) -> Result<S, String>,
    op: F,
) -> Result<(f64, u64, u64), String>
where
    S: Send + 'static,
    F: Fn(&mut S, usize, usize) -> Result<bool, String> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut states = Vec::with_capacity(clients);
    for c in 0..clients {
        states.push(make(c)?);
    }
    let barrier = Arc::new(std::sync::Barrier::new(clients + 1));
    let handles: Vec<_> = states
        .into_iter()
        .enumerate()
        .map(|(c, mut st)| {
            let (op, stop, granted, refused, barrier) = (
                op.clone(),
                stop.clone(),
                granted.clone(),
                refused.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || -> Result<(), String> {
                barrier.wait();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if op(&mut st, c, i)? {
                        granted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some("client thread panicked".to_owned())),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(e);
    }
    let (g, r) = (
        granted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    Ok(((g + r) as f64 / elapsed, g, r))
}

/// The engine, durable on files, driven by `clients` threads.
pub fn run_engine(cfg: &CompareConfig, durability: Durability) -> Result<SystemRun, String> {
    let dir = cfg.dir.join(match durability {
        Durability::Sync => "compare-sync",
        _ => "compare-async",
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let storage = Arc::new(FileStorage::open(&dir).map_err(|e| e.to_string())?);
    let db = Arc::new(
        DurableEngine::open(
            storage,
            OpenOptions {
                engine: EngineConfig {
                    limits: Limits {
                        skus_max: cfg.skus.next_power_of_two().max(1024),
                        ..Limits::default()
                    },
                },
                wal: WalConfig {
                    durability,
                    ..WalConfig::default()
                },
                ..OpenOptions::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let e = db.engine();
    e.define_store(StoreDef::new(STORE, 40.7, -74.0, "America/New_York"), T0)
        .map_err(|e| e.to_string())?;
    for k in 0..cfg.skus {
        e.apply_delta(
            &PosDelta {
                store: STORE.into(),
                sku: sku_name(k),
                pos_event_id: format!("init-{k}"),
                kind: PosDeltaKind::Receive,
                qty: i64::from(cfg.stock),
                order_ref: None,
                pos_time: T0,
            },
            T0,
        )
        .map_err(|e| e.to_string())?;
    }
    let holds: Vec<Arc<Vec<HoldRequest>>> = (0..cfg.clients)
        .map(|c| {
            Arc::new(
                client_holds(cfg, c, 4096)
                    .into_iter()
                    .map(|lines| {
                        HoldRequest::new(
                            STORE,
                            lines
                                .into_iter()
                                .map(|(k, q)| LineRequest::new(sku_name(k), q))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    // The same client threads as PostgreSQL and Redis get. With `sync` a hold returns once
    // its record's group commit is durable, so the threads waiting share fsyncs; with
    // `async` it never waits for the log.
    let engine = db.clone();
    let (rate, g, r) = threads_loop(
        cfg.clients,
        cfg.secs,
        |c| Ok(holds[c].clone()),
        move |reqs, _, i| {
            let e = engine.engine();
            match e
                .hold(&reqs[i % reqs.len()], T0)
                .map_err(|e| e.to_string())?
            {
                HoldOutcome::Granted(h) => {
                    e.release(h.hold, T0).map_err(|e| e.to_string())?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        },
    )?;
    // Oversell check: every cell back to its stock with nothing held, and conservation.
    let mut oversold = 0;
    for k in 0..cfg.skus {
        let v = e
            .availability(STORE, &sku_name(k))
            .map_err(|e| e.to_string())?;
        if v.held > v.on_hand || v.held != 0 || v.on_hand != cfg.stock {
            oversold += 1;
        }
    }
    if let Err(msg) = e.check_conservation() {
        return Err(format!("engine conservation check failed: {msg}"));
    }
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SystemRun {
        holds_per_s: rate,
        granted: g,
        refused: r,
        oversold_cells: oversold,
    })
}

/// PostgreSQL, one connection per client thread.
pub fn run_postgres(cfg: &CompareConfig) -> Result<SystemRun, String> {
    let connect = || {
        postgres::Client::connect(&cfg.postgres, postgres::NoTls).map_err(|e| {
            format!(
                "could not reach PostgreSQL at {:?}: {e} (start it, e.g. `service postgresql start`)",
                cfg.postgres
            )
        })
    };
    let mut admin = connect()?;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS pickline_cmp_stock;
             CREATE TABLE pickline_cmp_stock (sku text PRIMARY KEY, on_hand integer NOT NULL,
                                               held integer NOT NULL);",
        )
        .map_err(|e| e.to_string())?;
    admin
        .execute(
            "INSERT INTO pickline_cmp_stock SELECT 'SKU-' || lpad(g::text, 5, '0'), $1, 0
             FROM generate_series(0, $2 - 1) g",
            &[&(cfg.stock as i32), &(cfg.skus as i32)],
        )
        .map_err(|e| e.to_string())?;
    let holds: Vec<Arc<ClientHolds>> = (0..cfg.clients)
        .map(|c| Arc::new(client_holds(cfg, c, 4096)))
        .collect();
    let (rate, g, r) = threads_loop(
        cfg.clients,
        cfg.secs,
        |c| {
            let mut client = connect()?;
            client
                .batch_execute("SET synchronous_commit = on")
                .map_err(|e| e.to_string())?;
            Ok((client, holds[c].clone()))
        },
        |(client, holds), _, i| {
            let lines = &holds[i % holds.len()];
            let skus: Vec<String> = lines.iter().map(|l| sku_name(l.0)).collect();
            let mut tx = client.transaction().map_err(|e| e.to_string())?;
            // Lock the rows in a fixed (SKU) order first: no deadlocks between holds.
            tx.execute(
                "SELECT 1 FROM pickline_cmp_stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
                &[&skus],
            )
            .map_err(|e| e.to_string())?;
            for (sku, (_, q)) in skus.iter().zip(lines) {
                let n = tx
                    .execute(
                        "UPDATE pickline_cmp_stock SET held = held + $2
                         WHERE sku = $1 AND on_hand - held >= $2",
                        &[sku, &(*q as i32)],
                    )
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    tx.rollback().map_err(|e| e.to_string())?;
                    return Ok(false);
                }
            }
            tx.commit().map_err(|e| e.to_string())?;
            let mut tx = client.transaction().map_err(|e| e.to_string())?;
            for (sku, (_, q)) in skus.iter().zip(lines) {
                tx.execute(
                    "UPDATE pickline_cmp_stock SET held = held - $2 WHERE sku = $1",
                    &[sku, &(*q as i32)],
                )
                .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())?;
            Ok(true)
        },
    )?;
    let row = admin
        .query_one(
            "SELECT count(*) FROM pickline_cmp_stock WHERE held > on_hand OR held <> 0",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let oversold: i64 = row.get(0);
    let _ = admin.batch_execute("DROP TABLE IF EXISTS pickline_cmp_stock");
    Ok(SystemRun {
        holds_per_s: rate,
        granted: g,
        refused: r,
        oversold_cells: oversold as u64,
    })
}

const HOLD_LUA: &str = r#"
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'on_hand', 'held')
  if tonumber(c[1]) - tonumber(c[2]) < tonumber(ARGV[i]) then return 0 end
end
for i = 1, #KEYS do redis.call('HINCRBY', KEYS[i], 'held', ARGV[i]) end
return 1
"#;
const RELEASE_LUA: &str = r#"
for i = 1, #KEYS do redis.call('HINCRBY', KEYS[i], 'held', -tonumber(ARGV[i])) end
return 1
"#;
const CHECK_LUA: &str = r#"
local bad = 0
for i = 0, tonumber(ARGV[1]) - 1 do
  local c = redis.call('HMGET', 'pkcmp:' .. string.format('SKU-%05d', i), 'on_hand', 'held')
  if tonumber(c[2]) > tonumber(c[1]) or tonumber(c[2]) ~= 0 then bad = bad + 1 end
end
return bad
"#;

/// Redis, one connection per client thread, one Lua script per hold.
pub fn run_redis(cfg: &CompareConfig) -> Result<SystemRun, String> {
    let reach = |e: redis::RedisError| {
        format!(
            "could not reach Redis at {}: {e} (start it, e.g. `redis-server --daemonize yes`)",
            cfg.redis
        )
    };
    let client = redis::Client::open(cfg.redis.as_str()).map_err(reach)?;
    let mut admin = client.get_connection().map_err(reach)?;
    for k in 0..cfg.skus {
        redis::cmd("HSET")
            .arg(format!("pkcmp:{}", sku_name(k)))
            .arg("on_hand")
            .arg(cfg.stock)
            .arg("held")
            .arg(0)
            .exec(&mut admin)
            .map_err(|e| e.to_string())?;
    }
    let hold = redis::Script::new(HOLD_LUA);
    let release = redis::Script::new(RELEASE_LUA);
    let holds: Vec<Arc<ClientHolds>> = (0..cfg.clients)
        .map(|c| Arc::new(client_holds(cfg, c, 4096)))
        .collect();
    let (rate, g, r) = threads_loop(
        cfg.clients,
        cfg.secs,
        |c| {
            let conn = client.get_connection().map_err(reach)?;
            Ok((conn, holds[c].clone(), hold.clone(), release.clone()))
        },
        |(conn, holds, hold, release), _, i| {
            let lines = &holds[i % holds.len()];
            let mut inv = hold.prepare_invoke();
            for (k, q) in lines {
                inv.key(format!("pkcmp:{}", sku_name(*k))).arg(*q);
            }
            let ok: i64 = inv.invoke(conn).map_err(|e| e.to_string())?;
            if ok == 0 {
                return Ok(false);
            }
            let mut inv = release.prepare_invoke();
            for (k, q) in lines {
                inv.key(format!("pkcmp:{}", sku_name(*k))).arg(*q);
            }
            let _: i64 = inv.invoke(conn).map_err(|e| e.to_string())?;
            Ok(true)
        },
    )?;
    let oversold: i64 = redis::Script::new(CHECK_LUA)
        .arg(cfg.skus)
        .invoke(&mut admin)
        .map_err(|e| e.to_string())?;
    for k in 0..cfg.skus {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(format!("pkcmp:{}", sku_name(k)))
            .query(&mut admin);
    }
    Ok(SystemRun {
        holds_per_s: rate,
        granted: g,
        refused: r,
        oversold_cells: oversold as u64,
    })
}

/// The figures of `pickline bench compare`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompareReport {
    /// Engine, WAL sync (group commit + fdatasync), decided holds/s.
    pub engine_holds_per_s: f64,
    /// Engine, WAL async (flush every second), decided holds/s.
    pub engine_async_holds_per_s: f64,
    /// Sidecar over gRPC on loopback, durable.
    pub sidecar_holds_per_s: f64,
    /// PostgreSQL, synchronous_commit = on.
    pub postgres_holds_per_s: f64,
    /// Redis, Lua script per hold.
    pub redis_holds_per_s: f64,
    /// engine_holds_per_s / postgres_holds_per_s.
    pub vs_postgres: f64,
    /// engine_async_holds_per_s / redis_holds_per_s.
    pub vs_redis: f64,
    /// sidecar_holds_per_s / postgres_holds_per_s.
    pub sidecar_vs_postgres: f64,
    /// Concurrent clients of every system.
    pub clients: usize,
    /// Cells oversold per system (every one must be 0).
    pub oversold_cells: std::collections::BTreeMap<String, u64>,
    /// Each system's run.
    pub runs: std::collections::BTreeMap<String, SystemRun>,
}

impl CompareReport {
    /// Fills the ratios from the rates.
    pub fn finish(&mut self) {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.vs_postgres = div(self.engine_holds_per_s, self.postgres_holds_per_s);
        self.vs_redis = div(self.engine_async_holds_per_s, self.redis_holds_per_s);
        self.sidecar_vs_postgres = div(self.sidecar_holds_per_s, self.postgres_holds_per_s);
        self.oversold_cells = self
            .runs
            .iter()
            .map(|(k, v)| (k.clone(), v.oversold_cells))
            .collect();
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let t = |ok: bool| if ok { "met" } else { "MISSED" };
        format!(
            "bench compare ({} clients each; decided multi-line holds + release per second)\n\
             engine_holds_per_s        {:>12.0}   (WAL sync, group commit)\n\
             engine_async_holds_per_s  {:>12.0}   (WAL async)\n\
             sidecar_holds_per_s       {:>12.0}   (gRPC loopback, durable)\n\
             postgres_holds_per_s      {:>12.0}   (synchronous_commit=on)\n\
             redis_holds_per_s         {:>12.0}   (Lua per hold)\n\
             vs_postgres               {:>12.1}   target >= 100 {}\n\
             vs_redis                  {:>12.1}   target >= 10 {}\n\
             sidecar_vs_postgres       {:>12.1}   target >= 10 {}\n\
             oversold cells            {:?}\n",
            self.clients,
            self.engine_holds_per_s,
            self.engine_async_holds_per_s,
            self.sidecar_holds_per_s,
            self.postgres_holds_per_s,
            self.redis_holds_per_s,
            self.vs_postgres,
            t(self.vs_postgres >= 100.0),
            self.vs_redis,
            t(self.vs_redis >= 10.0),
            self.sidecar_vs_postgres,
            t(self.sidecar_vs_postgres >= 10.0),
            self.oversold_cells,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CompareConfig {
        let mut c = CompareConfig::quick(
            std::env::temp_dir().join(format!("pickline-compare-test-{}", std::process::id())),
        );
        c.secs = 0.3;
        c.clients = 4;
        c
    }

    #[test]
    fn holds_are_sorted_distinct_and_hot() {
        let c = cfg();
        let h = client_holds(&c, 0, 2000);
        assert!(
            h.iter()
                .all(|l| l.windows(2).all(|w| w[0].0 < w[1].0) && !l.is_empty())
        );
        let hot = h.iter().flatten().filter(|l| l.0 == 0).count();
        let cold = h.iter().flatten().filter(|l| l.0 == 400).count();
        assert!(hot > 10 * cold.max(1), "hot {hot} cold {cold}");
    }

    #[test]
    fn engine_runs_both_durabilities_without_oversell() {
        let c = cfg();
        for d in [
            Durability::Sync,
            Durability::Async {
                flush_interval_ms: 1000,
            },
        ] {
            let r = run_engine(&c, d).expect("engine run");
            assert!(r.granted > 0 && r.holds_per_s > 0.0);
            assert_eq!(r.oversold_cells, 0);
        }
    }

    /// Against the machine's PostgreSQL and Redis (scripts/test starts them).
    #[test]
    fn postgres_and_redis_run_without_oversell() {
        let c = cfg();
        let pg = run_postgres(&c).expect("postgres run");
        assert!(pg.granted > 0 && pg.oversold_cells == 0, "{pg:?}");
        let rd = run_redis(&c).expect("redis run");
        assert!(rd.granted > 0 && rd.oversold_cells == 0, "{rd:?}");
    }

    #[test]
    fn unreachable_database_is_named() {
        let mut c = cfg();
        c.postgres = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2".into();
        c.redis = "redis://127.0.0.1:1/".into();
        let e = run_postgres(&c).expect_err("no server on port 1");
        assert!(e.contains("could not reach PostgreSQL"), "{e}");
        let e = run_redis(&c).expect_err("no server on port 1");
        assert!(e.contains("could not reach Redis"), "{e}");
    }
}
