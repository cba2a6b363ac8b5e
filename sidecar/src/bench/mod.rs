//! `pickline bench ...`: the benchmark command. The engine's workloads live in the
//! `pickline-benches` crate, shared with the criterion benches; the drivers that need the
//! sidecar are the modules here, in the `pickline` binary:
//!
//! - [`grpc`]: `bench grpc`, the gRPC server in this process and a tonic load generator.
//! - [`compare`]: `bench compare`'s runner and its sidecar-over-gRPC leg.
//! - [`intake`]: `bench intake`, normalize + validate, then signed webhooks.
//! - [`notify`]: `bench notify`, events to an SMTP sink.
//! - [`web`]: `bench pages`, server-side render time of the staff and customer pages.
//! - [`cluster`]: `bench cluster`, replicated holds and failover on a 3-node JetStream.
//!
//! Architecture invariant: these modules use `pickline_sidecar` only through its public
//! API, as any service embedding it would; the library names none of them.

mod cluster;
mod compare;
mod grpc;
mod intake;
mod notify;
mod web;

use clap::Args as _;
use pickline_benches::alloc_bench::{self, AllocBenchConfig};
use pickline_benches::engine_bench::{self, EngineBenchConfig};
use pickline_benches::wal_bench::{self, WalBenchConfig};

use grpc::GrpcBenchConfig;

/// The name of the subcommand.
pub const SUBCOMMAND: &str = "bench";

/// The bearer token of the in-process servers the gRPC, compare and webhook benchmarks
/// start ([`LocalServer`]).
const TOKEN: &str = "pickline-bench-token-0123456789abcdef";

/// Runs `work` to completion on a multi-threaded runtime of its own (every benchmark that
/// starts servers or clients in this process).
fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work))
}

/// `message` with [`TOKEN`] as its bearer token.
fn authed<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    r
}

/// `pickline bench` as a subcommand, for `main` to add to the library's `Cli`.
pub fn subcommand() -> clap::Command {
    BenchArgs::augment_args(clap::Command::new(SUBCOMMAND))
        .about("Run a benchmark and print its figures")
        // Listed second, after `serve` (0), as when the library declared it: the library's
        // subcommands are numbered from 0 in order, and equal numbers sort by name, so
        // `bench` comes before `simulate` (1).
        .display_order(1)
}

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// In-process engine: holds, hot keys, 5-line orders, memory per cell.
    Engine,
    /// Durability: group commit, one fsync per hold, replay, restart with 10M holds.
    Wal,
    /// The gRPC server in-process: Ping vs Hold, BatchHold lines, open-loop p99.
    Grpc,
    /// Allocation: geo search + holds over 2,000 stores, allocate + release loops.
    Allocate,
    /// Order intake: normalize + validate the Shopify fixture, one thread; then signed
    /// webhooks to durable acceptance and a confirmed hold (closed loop, and p99 at half
    /// that rate).
    Intake,
    /// Customer notifications: events to an SMTP sink (messages per second, event to
    /// send p99).
    Notify,
    /// The same multi-line hold workload against the engine (sync, async), the sidecar
    /// over gRPC, PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379).
    Compare,
    /// The staff queue page with 500 open orders, the order and status pages: server-side
    /// read + render time.
    Pages,
    /// Cluster mode: holds replicated through a 3-node JetStream cluster on loopback
    /// (throughput, commit p99) and failover after a SIGKILL of the leader process.
    Cluster,
}

/// Arguments of `pickline bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A small, fast configuration (smoke test; figures are not representative).
    #[arg(long)]
    pub quick: bool,
    /// Directory for benchmark files (must be on a real disk, not tmpfs).
    #[arg(long, default_value = "./pickline-bench-data")]
    pub dir: std::path::PathBuf,
    /// WAL durability of the server in `bench grpc`: sync (the default and the headline:
    /// every hold is acknowledged after its group commit's fdatasync), async or off.
    #[arg(long, default_value = "sync")]
    pub durability: pickline_sidecar::config::DurabilityMode,
    /// `allocate` only: give every store a pickup calendar (estimates on).
    #[arg(long)]
    pub calendars: bool,
    /// `wal` only: run just the replay workload, writing its log once and timing this many
    /// reopens (prints `replay_records_per_s` of each and their median).
    #[arg(long, value_name = "ROUNDS")]
    pub replay_only: Option<usize>,
    /// `grpc` and `intake`: calls in flight in the closed loops (default 64; the
    /// open loop's rate is half of the Hold loop's throughput at this concurrency).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// `grpc` only: BatchHold requests in flight (default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_concurrency: Option<u16>,
}

/// Runs the benchmark and prints its report on stdout (progress goes to stderr).
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.suite {
        Suite::Engine => {
            let cfg = if args.quick {
                EngineBenchConfig::quick()
            } else {
                EngineBenchConfig::default()
            };
            let report = engine_bench::run(&cfg, |step| eprintln!("bench engine: {step}"));
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Notify => {
            let cfg = if args.quick {
                notify::NotifyBenchConfig::quick()
            } else {
                notify::NotifyBenchConfig::full()
            };
            let report = notify::run(&cfg, &args.dir)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Wal => {
            let cfg = if args.quick {
                WalBenchConfig::quick(args.dir.clone())
            } else {
                WalBenchConfig::full(args.dir.clone())
            };
            if let Some(rounds) = args.replay_only {
                let mut rates = wal_bench::run_replay_only(&cfg, rounds.max(1), |step| {
                    eprintln!("bench wal: {step}")
                });
                let rounds: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                if args.json {
                    println!(
                        "{{\"replay_records\":{},\"replay_records_per_s\":{median:.0},\"rounds\":[{}]}}",
                        cfg.replay_records,
                        rounds.join(",")
                    );
                } else {
                    println!(
                        "replay_records_per_s {median:.0} (median of {}: {})",
                        rounds.len(),
                        rounds.join(", ")
                    );
                }
                return Ok(());
            }
            let report = wal_bench::run(&cfg, |step| eprintln!("bench wal: {step}"));
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Grpc => {
            let mut cfg = if args.quick {
                GrpcBenchConfig::quick(args.dir.clone(), args.durability)
            } else {
                GrpcBenchConfig::full(args.dir.clone(), args.durability)
            };
            if let Some(n) = args.concurrency {
                cfg.concurrency = n.into();
            }
            if let Some(n) = args.batch_concurrency {
                cfg.batch_concurrency = n.into();
            }
            let report = grpc::run(&cfg, |step| eprintln!("bench grpc: {step}"))?;
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Compare => {
            let cfg = if args.quick {
                pickline_benches::compare::CompareConfig::quick(args.dir.clone())
            } else {
                pickline_benches::compare::CompareConfig::full(args.dir.clone())
            };
            let report = compare::run(&cfg, |step| eprintln!("bench compare: {step}"))?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Intake => {
            let cfg = if args.quick {
                intake::IntakeBenchConfig::quick()
            } else {
                intake::IntakeBenchConfig::full()
            };
            eprintln!("bench intake: normalize + validate the Shopify fixture, 1 thread");
            let report = intake::run(&cfg);
            let webhook_cfg = intake::WebhookBenchConfig {
                dir: args.dir.clone(),
                connections: usize::from(args.concurrency.unwrap_or(64)),
                warmup: cfg.warmup,
                measure: cfg.measure,
            };
            let webhook = intake::run_webhook(&webhook_cfg, |step| {
                eprintln!("bench intake: webhooks: {step}")
            })?;
            if args.json {
                let mut all = serde_json::to_value(&report)?;
                if let (Some(all), serde_json::Value::Object(w)) =
                    (all.as_object_mut(), serde_json::to_value(&webhook)?)
                {
                    all.extend(w);
                }
                println!("{all}");
            } else {
                print!("{}", report.to_table());
                println!(
                    "webhook_orders_per_s {:.0} (signed Shopify webhook to durable acceptance and a confirmed hold, {} connections, sync)\n\
                     webhook_p99_ms_at_half_load {:.2} (p50 {:.2}), errors {}",
                    webhook.webhook_orders_per_s,
                    webhook.connections,
                    webhook.webhook_p99_ms_at_half_load,
                    webhook.webhook_p50_ms_at_half_load,
                    webhook.webhook_errors
                );
            }
        }
        Suite::Pages => {
            let cfg = if args.quick {
                web::PagesBenchConfig::quick()
            } else {
                web::PagesBenchConfig::full()
            };
            eprintln!(
                "bench pages: queue of {} open orders, {} renders per page",
                cfg.orders, cfg.rounds
            );
            let report = web::run(&cfg)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Cluster => {
            let mut cfg = if args.quick {
                cluster::ClusterBenchConfig::quick()
            } else {
                cluster::ClusterBenchConfig::full()
            };
            if let Some(n) = args.concurrency {
                cfg.writers = n.into();
            }
            let report = cluster::run(&cfg, &args.dir, |step| eprintln!("bench cluster: {step}"))?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_table());
            }
        }
        Suite::Allocate => {
            let mut cfg = if args.quick {
                AllocBenchConfig::quick()
            } else {
                AllocBenchConfig::default()
            };
            cfg.calendars = args.calendars;
            let report = alloc_bench::run(&cfg, |step| eprintln!("bench allocate: {step}"));
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
        }
    }
    Ok(())
}

/// A sidecar running in this process on loopback ports, for the benchmarks that drive it
/// over gRPC or HTTP.
struct LocalServer {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), pickline_sidecar::server::ServerError>>,
}

impl LocalServer {
    /// Starts `config` with one admin token, `token`, on two free loopback ports.
    async fn start(
        mut config: pickline_sidecar::config::Config,
        token: &str,
    ) -> anyhow::Result<LocalServer> {
        config.tokens = vec![pickline_sidecar::config::TokenConfig {
            name: "bench".into(),
            token: token.into(),
            scopes: vec!["admin".parse()?],
        }];
        config.validate()?;
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pickline_sidecar::server::run(config, grpc, http, async {
            let _ = stopped.await;
        }));
        Ok(LocalServer {
            grpc: grpc_addr,
            http: http_addr,
            stop,
            task,
        })
    }

    /// Shuts the server down and waits for it.
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
