//! Cluster mode against real processes: a 3-node NATS JetStream cluster on loopback
//! (the machine's `nats-server`, which `scripts/test` installs) and real `pickline serve`
//! processes, killed with SIGKILL, stopped with SIGSTOP, cut off from NATS by a network
//! partition (a network namespace, where the machine allows one), and NATS nodes lost and
//! brought back. The tests run one at a time (a lock): each starts its own NATS cluster
//! and nodes, and together they would crowd a 2-core machine.

mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::ScratchDir;
use pickline_engine::EngineConfig;
use pickline_sidecar::{
    cluster::{follower, local::LocalNats, saved, wire},
    pb,
};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt as _;

const TOKEN: &str = "pkl_cluster_test_token_0123456789abcdef";
/// The tests' lease: short, so that failover is quick.
const LEASE_MS: u64 = 1_000;
/// How long a test waits for something that should happen before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// One test at a time (see the module documentation).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is passed.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

// ------------------------------------------------------------------ NATS cluster

async fn nats(dir: &Path) -> LocalNats {
    nats_on(dir, Ipv4Addr::LOCALHOST.into()).await
}

/// The NATS nodes listening for clients on `client_ip`.
async fn nats_on(dir: &Path, client_ip: IpAddr) -> LocalNats {
    LocalNats::start_on(&dir.join("nats"), 3, client_ip)
        .await
        .expect("a 3-node JetStream cluster (scripts/test installs nats-server)")
}

// ------------------------------------------------------------------ network namespace

/// Runs `ip` with `args`; why it failed, if it did.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace for one node, joined to the host by two veth pairs: the NATS link
/// (the NATS nodes listen on the host's address on it), which a test cuts, and the client
/// link, on which the test reaches the node inside and which stays up. Names and the
/// 10.x.y.0/29 subnet are drawn at random, so parallel runs and leftovers of killed ones
/// do not collide. Removed on drop, panicking or not; drop it after the nodes inside.
struct Netns {
    name: String,
    /// The host's ends of the two pairs.
    host_ends: [String; 2],
    /// The namespace's end of the NATS link.
    nats_end: String,
    /// The host's address on the NATS link.
    nats_host: IpAddr,
    /// The namespace's address on the client link.
    inside: IpAddr,
}

impl Netns {
    /// The namespace, or `None` (saying why) where the machine does not allow one: it
    /// takes root or CAP_NET_ADMIN. With `PICKLINE_REQUIRE_NETNS=1` (`scripts/test` sets
    /// it where it can make one) that is a failure instead.
    fn create() -> Option<Netns> {
        use std::hash::BuildHasher as _;
        let random = std::hash::RandomState::new().hash_one(std::process::id());
        let tag = format!("{:06x}", random & 0xff_ffff);
        let name = format!("pickline-test-{tag}");
        if let Err(why) = ip(&["netns", "add", &name]) {
            assert!(
                std::env::var("PICKLINE_REQUIRE_NETNS").as_deref() != Ok("1"),
                "PICKLINE_REQUIRE_NETNS=1, but no network namespace: {why}"
            );
            eprintln!(
                "SKIPPED: this machine does not allow a network namespace here (it takes root \
                 or CAP_NET_ADMIN): {why}"
            );
            return None;
        }
        let subnet = free_subnet(random >> 24);
        let net = Netns {
            host_ends: [format!("pk{tag}h0"), format!("pk{tag}h1")],
            nats_end: format!("pk{tag}n0"),
            nats_host: format!("{subnet}.1").parse().unwrap(),
            inside: format!("{subnet}.6").parse().unwrap(),
            name,
        };
        // Once the namespace exists a failure is the test's, never a skip.
        let ns = net.name.as_str();
        let [h0, h1] = &net.host_ends;
        let n1 = format!("pk{tag}n1");
        for (host, inside, host_ip, inside_ip) in [
            (
                h0,
                &net.nats_end,
                format!("{subnet}.1/30"),
                format!("{subnet}.2/30"),
            ),
            (h1, &n1, format!("{subnet}.5/30"), format!("{subnet}.6/30")),
        ] {
            let steps: [&[&str]; 5] = [
                &[
                    "link", "add", host, "type", "veth", "peer", "name", inside, "netns", ns,
                ],
                &["addr", "add", &host_ip, "dev", host],
                &["link", "set", host, "up"],
                &["-n", ns, "addr", "add", &inside_ip, "dev", inside],
                &["-n", ns, "link", "set", inside, "up"],
            ];
            for step in steps {
                ip(step).unwrap();
            }
        }
        Some(net)
    }

    /// Cuts the NATS link: the namespace's end goes down, so nothing inside reaches NATS
    /// (the host's end keeps its address: the host's clients still reach NATS there).
    fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.nats_end, "down"]).unwrap();
    }

    /// Brings the NATS link back.
    fn restore(&self) {
        ip(&["-n", &self.name, "link", "set", &self.nats_end, "up"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends and so the pairs, unless a process
        // still inside keeps it alive: then the host's ends go by name.
        let _ = ip(&["netns", "del", &self.name]);
        for end in &self.host_ends {
            let _ = ip(&["link", "del", end]);
        }
    }
}

/// A 10.x.y /24 prefix (of which the namespace uses a /29) that no address or route of the
/// machine is in, drawn from `random`.
fn free_subnet(random: u64) -> String {
    let taken = ["-4 addr show", "-4 route show table all"]
        .map(|args| {
            let out = Command::new("ip").args(args.split(' ')).output().unwrap();
            String::from_utf8_lossy(&out.stdout).replace('\n', " ")
        })
        .join(" ");
    let taken = format!(" {taken}");
    (0..64)
        .map(|i| {
            let r = random.rotate_left(i * 7);
            format!("10.{}.{}", 64 + r % 160, (r >> 8) % 256)
        })
        .find(|subnet| !taken.contains(&format!(" {subnet}.")))
        .expect("a free 10.x.y.0/24")
}

// ------------------------------------------------------------------ Pickline nodes

/// A `pickline serve` process in cluster mode.
struct Node {
    name: String,
    log: std::path::PathBuf,
    grpc: SocketAddr,
    child: Option<Child>,
}

impl Node {
    /// A node on the host, listening on loopback.
    fn start(dir: &Path, name: &str, partition: &str, nats: &LocalNats, extra: &str) -> Node {
        Node::spawn(dir, name, partition, nats, extra, None)
    }

    /// A node inside `netns`, listening on the namespace's address.
    fn start_in(
        netns: &Netns,
        dir: &Path,
        name: &str,
        partition: &str,
        nats: &LocalNats,
        extra: &str,
    ) -> Node {
        Node::spawn(dir, name, partition, nats, extra, Some(netns))
    }

    fn spawn(
        dir: &Path,
        name: &str,
        partition: &str,
        nats: &LocalNats,
        extra: &str,
        netns: Option<&Netns>,
    ) -> Node {
        let ip = netns.map_or(Ipv4Addr::LOCALHOST.into(), |n| n.inside);
        // Free on the host's loopback; in a fresh namespace every port is.
        let grpc = SocketAddr::new(ip, free_port());
        let http = SocketAddr::new(ip, free_port());
        let servers: Vec<String> = nats.urls().iter().map(|u| format!("\"{u}\"")).collect();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[data]
dir = "{data}"

[grpc]
listen = "{grpc}"
request_timeout_ms = 20000

[http]
listen = "{http}"

[web]
enabled = false

[cluster]
enabled = true
servers = [{servers}]
node = "{name}"
partition = "{partition}"
lease_ms = {LEASE_MS}
replicas = 3
{extra}
"#,
                data = dir.join(format!("{name}-data")).display(),
                servers = servers.join(", "),
            ),
        )
        .unwrap();
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let program = env!("CARGO_BIN_EXE_pickline");
        // `ip netns exec` execs the program: the child's pid is the node's.
        let mut command = match netns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name, program]);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--log", "info,async_nats=warn", "--log-format", "pretty"])
            .env("PICKLINE_TOKEN", TOKEN)
            .env_remove("PICKLINE_TOKENS")
            .env_remove("PICKLINE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Node {
            name: name.to_owned(),
            log: log_path,
            grpc,
            child: Some(child),
        }
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("node running")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself; its exit status.
    async fn exited(&mut self, patience: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the graceful shutdown.
    async fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.child(), libc::SIGTERM);
        self.exited(PATIENCE).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(&self.log)
        {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node {} log (last 40 lines, newest first):", self.name);
            for line in tail {
                eprintln!("{line}");
            }
        }
        if let Some(child) = &self.child {
            // A SIGSTOPped process must run again to die of SIGKILL promptly everywhere.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
        }
        self.kill();
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r.set_timeout(Duration::from_secs(25));
    r
}

async fn channel(addr: SocketAddr) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
}

/// Whether the node at `addr` leads (answers an engine RPC).
async fn leads(addr: SocketAddr) -> bool {
    let Some(ch) = channel(addr).await else {
        return false;
    };
    let mut admin = pb::admin_service_client::AdminServiceClient::new(ch);
    admin.stats(request(pb::StatsRequest {})).await.is_ok()
}

/// The node's overall gRPC health: `Some(true)` SERVING, `Some(false)` another status,
/// `None` unreachable. Polled for a moment: it follows the node's state every 200 ms.
async fn health(addr: SocketAddr) -> Option<bool> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut last = None;
    for _ in 0..10 {
        let ch = channel(addr).await?;
        let r = tonic_health::pb::health_client::HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        last = Some(r.into_inner().status == ServingStatus::Serving as i32);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Waits until one of `nodes` leads; its index.
async fn leader(nodes: &[&Node]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.child.is_some() && leads(n.grpc).await {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no node leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn setup_store(addr: SocketAddr, qty: u32) {
    store_with_stock(addr, "S1", BERLIN, &[("SKU-1", qty)]).await;
}

/// Upserts `store` at `[latitude, longitude]` and receives `stock` (SKU, units) into it.
async fn store_with_stock(addr: SocketAddr, store: &str, at: [f64; 2], stock: &[(&str, u32)]) {
    let ch = channel(addr).await.unwrap();
    pb::store_service_client::StoreServiceClient::new(ch.clone())
        .upsert_store(request(pb::UpsertStoreRequest {
            idempotency_key: format!("store-{store}"),
            store: Some(pb::StoreIdentity {
                store_id: store.into(),
                name: format!("Store {store}"),
                location: Some(pb::GeoPoint {
                    latitude_deg: at[0],
                    longitude_deg: at[1],
                }),
                time_zone: "Europe/Berlin".into(),
                status: pb::StoreStatus::Open as i32,
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    receive(addr, store, stock).await;
}

/// The key of a delivery of `stock` (SKU, units) to `store`.
fn events_key(store: &str, stock: &[(&str, u32)]) -> String {
    let lines: Vec<String> = stock
        .iter()
        .map(|(sku, qty)| format!("{sku}x{qty}"))
        .collect();
    format!("receive-{store}-{}", lines.join("-"))
}

/// Receives `stock` (SKU, units) into `store` (a POS delivery).
async fn receive(addr: SocketAddr, store: &str, stock: &[(&str, u32)]) {
    if stock.is_empty() {
        return;
    }
    let events = common::receipts(store, stock);
    pb::inventory_service_client::InventoryServiceClient::new(channel(addr).await.unwrap())
        .apply_pos_events(request(pb::ApplyPosEventsRequest {
            idempotency_key: events_key(store, stock),
            events,
        }))
        .await
        .unwrap();
}

fn hold_request(key: &str) -> pb::HoldRequest {
    pb::HoldRequest {
        idempotency_key: key.into(),
        store_id: "S1".into(),
        lines: vec![pb::Line {
            sku: "SKU-1".into(),
            qty: 1,
        }],
        expiry: None,
    }
}

async fn hold(addr: SocketAddr, key: &str) -> Result<pb::HoldResponse, tonic::Status> {
    let ch = channel(addr)
        .await
        .ok_or_else(|| tonic::Status::unavailable("no connection"))?;
    pb::hold_service_client::HoldServiceClient::new(ch)
        .hold(request(hold_request(key)))
        .await
        .map(|r| r.into_inner())
}

async fn availability(addr: SocketAddr) -> pb::Availability {
    let ch = channel(addr).await.unwrap();
    pb::inventory_service_client::InventoryServiceClient::new(ch)
        .get_availability(request(pb::GetAvailabilityRequest {
            store_id: "S1".into(),
            sku: "SKU-1".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .cell
        .unwrap()
}

/// S1's SKU-1 as the standby at `addr` answers it once it applied LSN `as_of_seq` (a
/// standby answers stock reads from the state it applied).
async fn standby_availability(addr: SocketAddr, as_of_seq: u64) -> pb::Availability {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = match channel(addr).await {
            Some(ch) => pb::inventory_service_client::InventoryServiceClient::new(ch)
                .get_availability(request(pb::GetAvailabilityRequest {
                    store_id: "S1".into(),
                    sku: "SKU-1".into(),
                }))
                .await
                .map(|r| r.into_inner().cell.unwrap()),
            None => Err(tonic::Status::unavailable("no connection")),
        };
        match r {
            Ok(cell) if cell.as_of_seq >= as_of_seq => return cell,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the standby never caught up to LSN {as_of_seq}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The leader named by a NOT_LEADER refusal.
fn leader_hint(status: &tonic::Status) -> Option<SocketAddr> {
    let info = status.get_details_error_info()?;
    if info.reason != "NOT_LEADER" {
        return None;
    }
    info.metadata.get("leader_addr")?.parse().ok()
}

/// Replays the whole stream of `partition` into a fresh follower (which checks LSN
/// continuity and that no batch follows a fence of another epoch); returns it.
async fn replay_stream(js: &async_nats::jetstream::Context, partition: &str) -> follower::Follower {
    let stream = js.get_stream(wire::stream_name(partition)).await.unwrap();
    let last = stream.clone().info().await.unwrap().state.last_sequence;
    let mut f = follower::Follower::empty(EngineConfig::default()).unwrap();
    // Right after a NATS node returned, the stream may still be electing its leader.
    let deadline = Instant::now() + PATIENCE;
    let mut messages = loop {
        match f.subscribe(&stream).await {
            Ok(messages) => break messages,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot read the stream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::time::timeout(PATIENCE, f.catch_up(&mut messages, last))
        .await
        .expect("stream replayed in time")
        .unwrap();
    f
}

/// Every message of the stream as (sequence, epoch, is fence).
async fn stream_epochs(
    js: &async_nats::jetstream::Context,
    partition: &str,
) -> Vec<(u64, u64, bool)> {
    let stream = js.get_stream(wire::stream_name(partition)).await.unwrap();
    let last = stream.clone().info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let epoch: u64 = m
            .headers
            .get(wire::EPOCH_HEADER)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        out.push((seq, epoch, m.headers.get(wire::FIRST_LSN_HEADER).is_none()));
    }
    out
}

/// Every message of the stream after the newest epoch's fence is of that epoch: no
/// earlier leader appended after it.
fn assert_fenced(epochs: &[(u64, u64, bool)]) {
    let new_epoch = epochs.last().unwrap().1;
    let fence_at = epochs
        .iter()
        .find(|(_, epoch, fence)| *fence && *epoch == new_epoch)
        .unwrap()
        .0;
    assert!(
        epochs
            .iter()
            .all(|(seq, epoch, _)| *seq < fence_at || *epoch == new_epoch),
        "{epochs:?}"
    );
}

/// Stops the leader `survivor` gracefully (it uploads its state) and checks that state
/// equals a replay of the stream, byte for byte, to the same LSN; the stream's epochs.
async fn stop_and_compare_with_replay(
    survivor: &mut Node,
    nats: &LocalNats,
    partition: &str,
) -> Vec<(u64, u64, bool)> {
    assert!(survivor.stop().await.success());
    let js = nats.jetstream().await.unwrap();
    let objects = js.get_object_store(wire::SNAPSHOTS).await.unwrap();
    let uploaded = follower::load_snapshot(&objects, partition)
        .await
        .unwrap()
        .expect("final snapshot uploaded");
    let (_, lsn, state) = follower::decode_snapshot(&uploaded).unwrap();
    let replayed = replay_stream(&js, partition).await;
    assert_eq!(replayed.applied_lsn(), lsn);
    let (_, replayed_state) = replayed.engine().snapshot().unwrap();
    assert!(
        replayed_state == state,
        "the leader's state differs from a replay of the stream"
    );
    replayed.engine().check_conservation().unwrap();
    stream_epochs(&js, partition).await
}

/// Waits until the standby at `standby` names `leader` in its NOT_LEADER refusal.
async fn stands_by_for(standby: SocketAddr, leader: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match hold(standby, "at-standby").await {
            Err(status) if leader_hint(&status) == Some(leader) => break,
            other => {
                assert!(Instant::now() < deadline, "no NOT_LEADER hint: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ------------------------------------------------------------------ load

/// Clients holding one unit of SKU-1 per key, each client its keys one after another,
/// first at the leader. An error is retried with the same key until it is answered: at
/// the leader a NOT_LEADER names, else at the other of the two nodes.
struct Load {
    answers: Arc<parking_lot::Mutex<Answers>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the clients of a [`Load`] were told.
#[derive(Default)]
struct Answers {
    keys: usize,
    granted: BTreeMap<String, u64>,
    rejected: Vec<String>,
    /// When something happened to the leader (a kill, a cut) and when the standby first
    /// answered after it.
    marked_at: Option<Instant>,
    standby_answered_at: Option<Instant>,
}

impl Load {
    fn start(clients: usize, keys_per_client: usize, [leader, standby]: [SocketAddr; 2]) -> Load {
        let answers = Arc::new(parking_lot::Mutex::new(Answers {
            keys: clients * keys_per_client,
            ..Answers::default()
        }));
        let tasks = (0..clients)
            .map(|c| {
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut target = leader;
                    for k in 0..keys_per_client {
                        let key = format!("c{c}-k{k}");
                        let deadline = Instant::now() + PATIENCE;
                        loop {
                            match hold(target, &key).await {
                                Ok(r) => {
                                    let mut a = answers.lock();
                                    match r.outcome.unwrap() {
                                        pb::hold_response::Outcome::Granted(h) => {
                                            a.granted.insert(key.clone(), h.hold_id);
                                        }
                                        pb::hold_response::Outcome::Rejected(_) => {
                                            a.rejected.push(key.clone());
                                        }
                                    }
                                    if a.marked_at.is_some() && target == standby {
                                        a.standby_answered_at.get_or_insert_with(Instant::now);
                                    }
                                    break;
                                }
                                Err(status) => {
                                    assert!(
                                        Instant::now() < deadline,
                                        "{key} never answered: {status:?}"
                                    );
                                    target = match leader_hint(&status) {
                                        Some(hint) => hint,
                                        None if target == leader => standby,
                                        None => leader,
                                    };
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load { answers, tasks }
    }

    /// Waits until a third of the keys were answered.
    async fn a_third_answered(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (answered, keys) = {
                let a = self.answers.lock();
                (a.answered(), a.keys)
            };
            if answered * 3 >= keys {
                return;
            }
            assert!(Instant::now() < deadline, "load did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Notes that something happened to the leader now; how many keys were answered.
    fn mark(&self) -> usize {
        let mut a = self.answers.lock();
        a.marked_at = Some(Instant::now());
        a.answered()
    }

    /// Waits until every key was answered.
    async fn finish(self) -> Answers {
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::into_inner(self.answers).unwrap().into_inner()
    }
}

impl Answers {
    fn answered(&self) -> usize {
        self.granted.len() + self.rejected.len()
    }

    /// From the mark to the standby's first answer.
    fn failover(&self) -> Duration {
        self.standby_answered_at
            .expect("the standby answered")
            .duration_since(self.marked_at.unwrap())
    }

    /// Every acknowledged grant is at the leader `at`, with `stock` units, fewer than the
    /// keys, received before the load: the same key answers the same hold, replayed, and
    /// held is exactly the acknowledged grants (nothing oversold).
    async fn check_at(&self, at: SocketAddr, stock: u32) {
        assert_eq!(self.answered(), self.keys);
        assert_eq!(
            self.granted.len(),
            stock as usize,
            "all stock held, then rejections"
        );
        for (key, id) in &self.granted {
            let again = hold(at, key).await.unwrap();
            assert!(again.replayed, "{key}");
            match again.outcome.unwrap() {
                pb::hold_response::Outcome::Granted(h) => assert_eq!(h.hold_id, *id, "{key}"),
                other => panic!("{key} was granted, now {other:?}"),
            }
        }
        let cell = availability(at).await;
        assert_eq!((cell.on_hand, cell.held, cell.atp), (stock, stock, 0));
    }
}

// ------------------------------------------------------------------ tests

/// SIGKILL of the leader under load: the standby serves within a few lease times, every
/// acknowledged hold is there, nothing is oversold, and the state the new leader
/// uploads at its graceful stop equals a replay of the stream, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_under_load_loses_no_acknowledged_hold() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let nats = nats(&dir.0).await;
    let partition = "failover";
    let mut a = Node::start(&dir.0, "a", partition, &nats, "");
    let mut b = Node::start(&dir.0, "b", partition, &nats, "");
    let first = leader(&[&a, &b]).await;
    let (leader_addr, standby_addr) = if first == 0 {
        (a.grpc, b.grpc)
    } else {
        (b.grpc, a.grpc)
    };
    const STOCK: u32 = 150;
    setup_store(leader_addr, STOCK).await;

    // Kill the leader once a third of the requests were answered.
    let load = Load::start(6, 40, [leader_addr, standby_addr]);
    load.a_third_answered().await;
    if first == 0 {
        signal(a.child(), libc::SIGKILL);
        a.kill();
    } else {
        signal(b.child(), libc::SIGKILL);
        b.kill();
    }
    let answered_before_kill = load.mark();
    let answers = load.finish().await;
    let failover = answers.failover();
    eprintln!(
        "{answered_before_kill} answered before the SIGKILL; first hold at the new leader {failover:?} after it"
    );
    answers.check_at(standby_addr, STOCK).await;

    // The new leader's state equals a replay of the stream: it uploads its state at a
    // graceful stop; a fresh follower replays the stream to the same LSN.
    let survivor = if first == 0 { &mut b } else { &mut a };
    let epochs = stop_and_compare_with_replay(survivor, &nats, partition).await;
    // Two leaders' epochs, each opened by its fence.
    let fences: Vec<u64> = epochs.iter().filter(|e| e.2).map(|e| e.1).collect();
    assert_eq!(fences.len(), 2, "{fences:?}");
    // Last, so that a slow machine never hides a lost or oversold hold: the standby
    // served within a bound of lease times (about one lease on a quiet machine; 9.8 s was
    // seen with a load average of 13 on 2 cores). `pickline bench cluster` measures it.
    assert!(
        failover < Duration::from_millis(LEASE_MS * 15),
        "the standby took {failover:?} to serve"
    );
}

/// Fencing: the leader stopped with SIGSTOP past its lease, then continued, cannot append
/// a single record; its clients get errors, not acknowledgements; it steps down (exits).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_cannot_append_and_acknowledges_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let nats = nats(&dir.0).await;
    let partition = "fencing";
    let mut a = Node::start(&dir.0, "a", partition, &nats, "");
    let mut b = Node::start(&dir.0, "b", partition, &nats, "");
    let first = leader(&[&a, &b]).await;
    let (old, new) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    setup_store(old.grpc, 100).await;
    assert!(matches!(
        hold(old.grpc, "before").await.unwrap().outcome,
        Some(pb::hold_response::Outcome::Granted(_))
    ));

    signal(old.child(), libc::SIGSTOP);
    // The standby takes the lease after a lease time and fences.
    let deadline = Instant::now() + PATIENCE;
    while !leads(new.grpc).await {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let js = nats.jetstream().await.unwrap();
    let before = stream_epochs(&js, partition).await;

    // Requests reach the stopped process and wait in its socket; then it runs again.
    let stopped = old.grpc;
    let calls: Vec<_> = (0..8)
        .map(|i| tokio::spawn(async move { hold(stopped, &format!("during-{i}")).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(old.child(), libc::SIGCONT);
    for (i, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap();
        assert!(
            answer.is_err(),
            "the deposed leader acknowledged during-{i}: {answer:?}"
        );
    }
    // It steps down at once: the process exits with an error.
    let status = old.exited(PATIENCE).await;
    assert!(!status.success());

    // Not a single record of the old leader after the fence.
    let after = stream_epochs(&js, partition).await;
    assert_eq!(after, before, "the deposed leader appended to the stream");
    assert_fenced(&after);
    // Those requests changed nothing: the new leader grants the same keys afresh.
    for i in 0..8 {
        let r = hold(new.grpc, &format!("during-{i}")).await.unwrap();
        assert!(!r.replayed);
    }
    let cell = availability(new.grpc).await;
    assert_eq!(cell.held, 9);
    replay_stream(&js, partition).await; // checks continuity and epochs
}

/// A network partition between the leader and NATS, made with a network namespace where
/// the machine allows one: the leader runs inside, the standby, NATS and the clients on
/// the host, and the leader's link to NATS is cut under load. While cut off the leader
/// acknowledges nothing (its clients get UNAVAILABLE, promptly); the standby serves within
/// a few lease times; no acknowledged hold is lost and nothing is oversold. When the link
/// returns the old leader appends nothing and exits (status 1, deposed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_nats_acknowledges_nothing_and_steps_down_when_the_link_returns() {
    /// The longest a refusal of the cut-off leader may take: the replication timeout
    /// (2 s by default), with a margin for a loaded machine.
    const PROMPT: Duration = Duration::from_secs(8);
    let _serial = SERIAL.lock().await;
    // First, so that it is dropped after the nodes inside it.
    let Some(net) = Netns::create() else {
        return;
    };
    let dir = ScratchDir::new();
    let nats = nats_on(&dir.0, net.nats_host).await;
    let partition = "netsplit";
    // Alone, the node inside takes the lease; the one on the host stands by.
    let mut old = Node::start_in(&net, &dir.0, "a", partition, &nats, "");
    leader(&[&old]).await;
    let mut new = Node::start(&dir.0, "b", partition, &nats, "");
    stands_by_for(new.grpc, old.grpc).await;
    const STOCK: u32 = 100;
    setup_store(old.grpc, STOCK).await;

    let load = Load::start(4, 40, [old.grpc, new.grpc]);
    load.a_third_answered().await;
    net.cut();
    let answered_before_cut = load.mark();

    // Every hold asked of the cut-off leader from here on is refused with UNAVAILABLE
    // (its record cannot reach NATS), promptly, until the standby leads and after.
    let mut refused = Vec::new();
    let refuse = |key: String| {
        let addr = old.grpc;
        async move {
            let asked = Instant::now();
            let answer = hold(addr, &key).await;
            let took = asked.elapsed();
            match answer {
                Ok(r) => panic!("the cut-off leader acknowledged {key}: {r:?}"),
                Err(status) => assert_eq!(status.code(), Code::Unavailable, "{key}: {status:?}"),
            }
            assert!(took < PROMPT, "{key} took {took:?} to be refused");
            (key, took)
        }
    };
    let deadline = Instant::now() + PATIENCE;
    while !leads(new.grpc).await {
        refused.push(refuse(format!("cut-off-{}", refused.len())).await);
        assert!(Instant::now() < deadline, "the standby never took over");
    }
    let answers = load.finish().await;
    let failover = answers.failover();
    refused.push(refuse(format!("cut-off-{}", refused.len())).await);
    // And it tells load balancers: its health is NOT_SERVING while it cannot acknowledge.
    assert_eq!(
        health(old.grpc).await,
        Some(false),
        "the cut-off leader reports SERVING"
    );
    assert_eq!(health(new.grpc).await, Some(true));
    eprintln!(
        "{answered_before_cut} answered before the cut; first hold at the new leader \
         {failover:?} after it; the cut-off leader refused {} holds, the slowest in {:?}",
        refused.len(),
        refused.iter().map(|(_, took)| took).max().unwrap()
    );
    answers.check_at(new.grpc, STOCK).await;

    // The link returns: the old leader learns it was deposed (its lease renewal or its
    // next append is refused) and exits, having appended nothing.
    let js = nats.jetstream().await.unwrap();
    let before = stream_epochs(&js, partition).await;
    net.restore();
    let restored_at = Instant::now();
    let status = old.exited(PATIENCE).await;
    eprintln!(
        "the old leader exited {:?} after the link returned",
        restored_at.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = std::fs::read_to_string(&old.log).unwrap();
    assert!(log.contains("deposed as the partition's leader"), "{log}");
    let after = stream_epochs(&js, partition).await;
    assert_eq!(after, before, "the deposed leader appended to the stream");
    assert_fenced(&after);
    // What it refused changed nothing: the new leader has never seen those keys.
    for (key, _) in &refused {
        assert!(!hold(new.grpc, key).await.unwrap().replayed, "{key}");
    }

    let epochs = stop_and_compare_with_replay(&mut new, &nats, partition).await;
    let fences: Vec<u64> = epochs.iter().filter(|e| e.2).map(|e| e.1).collect();
    assert_eq!(fences, vec![1, 2]);
    // Last, as in the SIGKILL test: a slow machine must never hide a lost hold.
    assert!(
        failover < Duration::from_millis(LEASE_MS * 15),
        "the standby took {failover:?} to serve"
    );
}

/// Losing one NATS node of three changes nothing for clients; losing two stops writes
/// with UNAVAILABLE; they resume when a node returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_nats_node_lost_changes_nothing_two_stop_writes_until_one_returns() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let mut nats = nats(&dir.0).await;
    let partition = "quorum";
    let node = Node::start(
        &dir.0,
        "a",
        partition,
        &nats,
        "replication_timeout_ms = 8000",
    );
    leader(&[&node]).await;
    setup_store(node.grpc, 1000).await;
    let js = nats.jetstream().await.unwrap();
    // Lose the node that leads the partition's stream: the hardest single loss.
    let mut stream = js.get_stream(wire::stream_name(partition)).await.unwrap();
    let stream_leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a clustered stream has a leader");
    let lost: usize = stream_leader.trim_start_matches('n').parse().unwrap();

    // Holds run all along; not one may fail while one node is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (stop, addr) = (stop.clone(), node.grpc);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = hold(addr, &format!("one-lost-{n}")).await;
                assert!(r.is_ok(), "hold {n} failed with one NATS node lost: {r:?}");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill_node(lost);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let during = loader.await.unwrap();
    assert!(during > 0);

    // Lose a second one: no quorum, writes stop with a clear UNAVAILABLE.
    let second = (lost + 1) % 3;
    nats.kill_node(second);
    let refused = hold(node.grpc, "no-quorum-1").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let refused = hold(node.grpc, "no-quorum-2").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // A node returns: writes resume, and the refused requests' keys answer once.
    nats.start_node(second).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match hold(node.grpc, "no-quorum-1").await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(Instant::now() < deadline, "writes never resumed: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let r = hold(node.grpc, "after-return").await.unwrap();
    assert!(matches!(
        r.outcome,
        Some(pb::hold_response::Outcome::Granted(_))
    ));
    let cell = availability(node.grpc).await;
    // Every grant (those during the single loss, the one refused-then-answered key, maybe
    // its refused twin if its record made it, and the last) is held once.
    assert!(
        (during as u32 + 2..=during as u32 + 3).contains(&cell.held),
        "held {} after {during} holds",
        cell.held
    );
    drop(node);
    let f = replay_stream(&js, partition).await;
    f.engine().check_conservation().unwrap();
    assert_eq!(f.engine().active_holds() as u32, cell.held);
}

/// The ErrorInfo of a refusal, if it has the given reason.
fn error_info(status: &tonic::Status, reason: &str) -> Option<BTreeMap<String, String>> {
    let info = status.get_details_error_info()?;
    (info.reason == reason).then(|| info.metadata.into_iter().collect())
}

/// Stores are checked against the partition map: a node answers a store of another
/// partition FAILED_PRECONDITION / WRONG_PARTITION naming that partition and its
/// leader's address, serves its own and unmapped stores, and a standby of the right
/// partition still answers NOT_LEADER with its leader's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_of_another_partition_is_refused_naming_its_partition_and_leader() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let nats = nats(&dir.0).await;
    let east = Node::start(&dir.0, "east-a", "east", &nats, "");
    let west = Node::start(&dir.0, "west-a", "west", &nats, "");
    leader(&[&east]).await;
    leader(&[&west]).await;
    // Started once east leads, so that it stands by.
    let standby = Node::start(&dir.0, "east-b", "east", &nats, "");
    let servers = pickline_sidecar::cluster::cli::Servers {
        servers: nats.urls(),
    };
    pickline_sidecar::cluster::cli::assign(&servers, "W1", Some("west"))
        .await
        .unwrap();
    pickline_sidecar::cluster::cli::assign(&servers, "S1", Some("east"))
        .await
        .unwrap();

    // The map reaches east by its watch: wait for the refusal, then check all of it.
    let ch = channel(east.grpc).await.unwrap();
    let mut inventory = pb::inventory_service_client::InventoryServiceClient::new(ch.clone());
    let deadline = Instant::now() + PATIENCE;
    let refused = loop {
        let r = inventory
            .get_availability(request(pb::GetAvailabilityRequest {
                store_id: "W1".into(),
                sku: "SKU-1".into(),
            }))
            .await;
        match r {
            Err(status) if error_info(&status, "WRONG_PARTITION").is_some() => break status,
            other => {
                assert!(Instant::now() < deadline, "never refused: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let info = error_info(&refused, "WRONG_PARTITION").unwrap();
    assert_eq!(info["partition"], "west");
    assert_eq!(info["store_id"], "W1");
    assert_eq!(info["leader_node"], "west-a");
    assert_eq!(info["leader_addr"], west.grpc.to_string());

    // Every store-scoped RPC passes the same check: a hold, an upsert, an allocation
    // preferring the store.
    let mut h = hold_request("w1-at-east");
    h.store_id = "W1".into();
    let ch_east = channel(east.grpc).await.unwrap();
    let refused = pb::hold_service_client::HoldServiceClient::new(ch_east.clone())
        .hold(request(h.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(error_info(&refused, "WRONG_PARTITION").is_some());
    let upsert = |addr: SocketAddr| async move {
        pb::store_service_client::StoreServiceClient::new(channel(addr).await.unwrap())
            .upsert_store(request(pb::UpsertStoreRequest {
                idempotency_key: format!("store-W1-{addr}"),
                store: Some(pb::StoreIdentity {
                    store_id: "W1".into(),
                    name: "Store W1".into(),
                    // Potsdam, about 27 km from S1 in Berlin.
                    location: Some(pb::GeoPoint {
                        latitude_deg: 52.39,
                        longitude_deg: 13.06,
                    }),
                    time_zone: "Europe/Berlin".into(),
                    status: pb::StoreStatus::Open as i32,
                    ..Default::default()
                }),
            }))
            .await
    };
    let refused = upsert(east.grpc).await.unwrap_err();
    assert!(
        error_info(&refused, "WRONG_PARTITION").is_some(),
        "{refused:?}"
    );
    let refused = pb::hold_service_client::HoldServiceClient::new(ch_east)
        .allocate(request(pb::AllocateRequest {
            idempotency_key: "alloc-w1".into(),
            origin: Some(pb::allocate_request::Origin::PreferredStoreId("W1".into())),
            lines: h.lines.clone(),
            max_distance_m: 10_000,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        error_info(&refused, "WRONG_PARTITION").is_some(),
        "{refused:?}"
    );

    // The partition the map names serves it.
    upsert(west.grpc).await.unwrap();
    let r = pb::hold_service_client::HoldServiceClient::new(channel(west.grpc).await.unwrap())
        .hold(request(h))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        r.outcome,
        Some(pb::hold_response::Outcome::Rejected(_))
    ));
    // East serves its own store, and one the map does not name.
    setup_store(east.grpc, 5).await;
    assert_eq!(availability(east.grpc).await.on_hand, 5);
    pb::store_service_client::StoreServiceClient::new(ch)
        .get_store(request(pb::GetStoreRequest {
            store_id: "S1".into(),
        }))
        .await
        .unwrap();

    // A standby answers stock reads from the state it applied, saying how fresh: once it
    // applied the leader's last record, the same cell at the same LSN.
    let at_leader = availability(east.grpc).await;
    let at_standby = standby_availability(standby.grpc, at_leader.as_of_seq).await;
    assert_eq!(at_standby, at_leader);
    let mut standby_inventory = pb::inventory_service_client::InventoryServiceClient::new(
        channel(standby.grpc).await.unwrap(),
    );
    let sku_cells = standby_inventory
        .get_sku_availability(request(pb::GetSkuAvailabilityRequest {
            sku: "SKU-1".into(),
            store_ids: vec![],
        }))
        .await
        .unwrap()
        .into_inner()
        .cells;
    assert_eq!(sku_cells, vec![at_leader.clone()]);
    // The standby checks the map too.
    let refused = standby_inventory
        .get_availability(request(pb::GetAvailabilityRequest {
            store_id: "W1".into(),
            sku: "SKU-1".into(),
        }))
        .await
        .unwrap_err();
    assert!(
        error_info(&refused, "WRONG_PARTITION").is_some(),
        "{refused:?}"
    );

    // Nearest-store allocation across partitions, asked not to span them: east allocates
    // among its own stores; when they cannot serve the cart it holds nothing and names
    // west (W1 is in reach, its leader publishes where its stores are), which does.
    receive(west.grpc, "W1", &[("SKU-1", 20)]).await;
    let allocate = |addr: SocketAddr, key: String| async move {
        pb::hold_service_client::HoldServiceClient::new(channel(addr).await.unwrap())
            .allocate(request(pb::AllocateRequest {
                idempotency_key: key,
                origin: Some(pb::allocate_request::Origin::Position(pb::GeoPoint {
                    latitude_deg: 52.52,
                    longitude_deg: 13.40,
                })),
                lines: vec![pb::Line {
                    sku: "SKU-1".into(),
                    qty: 10,
                }],
                max_distance_m: 100_000,
                // The partitions to ask are named, not asked (the client asks them).
                this_partition_only: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
    };
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    let at_east = loop {
        n += 1;
        let r = allocate(east.grpc, format!("cart-1-try-{n}")).await;
        assert!(
            matches!(r.outcome, Some(pb::allocate_response::Outcome::Rejected(_))),
            "{r:?}"
        );
        if !r.other_partitions.is_empty() {
            break r;
        }
        assert!(Instant::now() < deadline, "west never named: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(at_east.other_partitions.len(), 1, "{at_east:?}");
    let next = &at_east.other_partitions[0];
    assert_eq!(next.partition, "west");
    assert_eq!(next.leader_addr, west.grpc.to_string());
    assert!((20_000..35_000).contains(&next.distance_m), "{next:?}");
    assert_eq!(availability(east.grpc).await.held, 0, "east held nothing");
    let at_west = allocate(next.leader_addr.parse().unwrap(), "cart-1".into()).await;
    match at_west.outcome {
        Some(pb::allocate_response::Outcome::Allocated(a)) => {
            assert_eq!(a.holds.len(), 1, "one store");
            assert_eq!(a.holds[0].store_id, "W1");
        }
        other => panic!("west did not allocate: {other:?}"),
    }
    assert!(at_west.other_partitions.is_empty());
    assert!(at_west.partitions_asked.is_empty());
    assert_eq!(
        at_west.served_by,
        Some(pb::PartitionLeader {
            partition: "west".into(),
            leader_addr: west.grpc.to_string(),
        })
    );

    // A standby of east names east's leader, whatever the store.
    stands_by_for(standby.grpc, east.grpc).await;
}

/// A restarted standby starts from its own saved snapshot plus the stream's tail: with
/// every message up to its snapshot purged from the stream and no snapshot in the object
/// store, nothing else could give it the state. It then answers the leader's state at
/// the leader's LSN, and serves it after the leader's SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_standby_starts_from_its_saved_snapshot_and_the_stream_tail() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let nats = nats(&dir.0).await;
    let partition = "restart";
    // The leader uploads no snapshot during the test; the standby saves every second.
    let mut a = Node::start(
        &dir.0,
        "a",
        partition,
        &nats,
        "snapshot_interval_ms = 600000",
    );
    assert_eq!(leader(&[&a]).await, 0);
    let mut b = Node::start(&dir.0, "b", partition, &nats, "snapshot_interval_ms = 1000");
    setup_store(a.grpc, 100).await;
    for k in 0..20 {
        hold(a.grpc, &format!("before-{k}")).await.unwrap();
    }
    let js = nats.jetstream().await.unwrap();
    let stream = js.get_stream(wire::stream_name(partition)).await.unwrap();
    let path = saved::path(&dir.0.join("b-data"), partition);
    let last = stream.clone().info().await.unwrap().state.last_sequence;
    let deadline = Instant::now() + PATIENCE;
    let copy = loop {
        match saved::load(&path).unwrap() {
            Some(copy) if copy.seq >= last => break copy,
            _ => {
                assert!(Instant::now() < deadline, "the standby saved no snapshot");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    b.kill();
    for k in 0..10 {
        hold(a.grpc, &format!("after-{k}")).await.unwrap();
    }
    // Only the messages after the saved snapshot are left in the stream.
    stream.purge().sequence(copy.seq + 1).await.unwrap();
    let objects = js.get_object_store(wire::SNAPSHOTS).await.unwrap();
    assert!(
        objects.get(wire::snapshot_object(partition)).await.is_err(),
        "the leader uploaded a snapshot"
    );
    let at_leader = availability(a.grpc).await;
    assert_eq!(at_leader.held, 30);
    let b = Node::start(&dir.0, "b", partition, &nats, "snapshot_interval_ms = 1000");
    assert_eq!(
        standby_availability(b.grpc, at_leader.as_of_seq).await,
        at_leader
    );
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.contains("starting from this node's saved snapshot"),
        "{log}"
    );
    // And it serves that state once the leader is gone.
    a.kill();
    assert_eq!(leader(&[&b]).await, 0);
    let r = hold(b.grpc, "after-failover").await.unwrap();
    assert!(matches!(
        r.outcome,
        Some(pb::hold_response::Outcome::Granted(_))
    ));
    assert_eq!(availability(b.grpc).await.held, 31);
}

// ------------------------------------------------------------------ allocation across partitions
//
// Issue 22, item 4: one Allocate at a partition's leader asks the other partitions' leaders
// for the caller, nearest first, and holds at one store of the first that serves. Three
// partitions, one node each, around Berlin: east (E1, the origin's own store, no stock),
// near (N1 in Potsdam, ~27 km) and far (F1 in Leipzig, ~150 km).

/// Where the carts are picked up from: Berlin, where E1 (and S1) are.
const BERLIN: [f64; 2] = [52.52, 13.40];
const POTSDAM: [f64; 2] = [52.39, 13.06];
const LEIPZIG: [f64; 2] = [51.34, 12.37];

/// A token only east's configuration has (checkout scope).
const EAST_ONLY_TOKEN: &str = "pkl_east_only_token_0123456789abcdef";

/// The three partitions' leaders, each with its store.
struct Partitions {
    east: Node,
    near: Node,
    far: Node,
    /// Last: dropped after the nodes.
    nats: LocalNats,
}

/// The three partitions, their stores mapped to them, `near_stock` and `far_stock` (SKU,
/// units) in N1 and F1, once east knows where the others' stores are.
async fn partitions(
    dir: &Path,
    near_stock: &[(&str, u32)],
    far_stock: &[(&str, u32)],
) -> Partitions {
    let nats = nats(dir).await;
    let east_token = format!(
        "\n[[tokens]]\nname = \"east-only\"\ntoken = \"{EAST_ONLY_TOKEN}\"\nscopes = [\"checkout\"]\n"
    );
    let east = Node::start(dir, "east-a", "east", &nats, &east_token);
    let near = Node::start(dir, "near-a", "near", &nats, "");
    let far = Node::start(dir, "far-a", "far", &nats, "");
    for node in [&east, &near, &far] {
        leader(&[node]).await;
    }
    let servers = pickline_sidecar::cluster::cli::Servers {
        servers: nats.urls(),
    };
    for (store, partition) in [("E1", "east"), ("N1", "near"), ("F1", "far")] {
        pickline_sidecar::cluster::cli::assign(&servers, store, Some(partition))
            .await
            .unwrap();
    }
    store_with_stock(east.grpc, "E1", BERLIN, &[]).await;
    store_with_stock(near.grpc, "N1", POTSDAM, near_stock).await;
    store_with_stock(far.grpc, "F1", LEIPZIG, far_stock).await;
    // East knows where the others' stores are once their leaders published them: until
    // then it names fewer partitions.
    let deadline = Instant::now() + PATIENCE;
    for n in 0.. {
        let mut r = cart(&format!("ready-{n}"), &[("SKU-1", 1)]);
        r.this_partition_only = true;
        let r = allocate(east.grpc, TOKEN, r).await.unwrap();
        if r.other_partitions.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "east never named both: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Partitions {
        east,
        near,
        far,
        nats,
    }
}

/// An allocation of `lines` (SKU, units) picked up near Berlin, within 200 km.
fn cart(key: &str, lines: &[(&str, u32)]) -> pb::AllocateRequest {
    pb::AllocateRequest {
        idempotency_key: key.into(),
        origin: Some(pb::allocate_request::Origin::Position(pb::GeoPoint {
            latitude_deg: BERLIN[0],
            longitude_deg: BERLIN[1],
        })),
        lines: common::lines(lines),
        max_distance_m: 200_000,
        ..Default::default()
    }
}

/// Allocate at `addr` with `token`, answered within the request's 25 s.
async fn allocate(
    addr: SocketAddr,
    token: &str,
    req: pb::AllocateRequest,
) -> Result<pb::AllocateResponse, tonic::Status> {
    let mut r = request(req);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    pb::hold_service_client::HoldServiceClient::new(channel(addr).await.unwrap())
        .allocate(r)
        .await
        .map(|r| r.into_inner())
}

/// The holds of an allocation.
fn allocated_holds(r: &pb::AllocateResponse) -> &[pb::HoldInfo] {
    match &r.outcome {
        Some(pb::allocate_response::Outcome::Allocated(a)) => &a.holds,
        other => panic!("expected an allocation, got {other:?}"),
    }
}

/// The partitions a response says were asked, with their answers.
fn asked(r: &pb::AllocateResponse) -> Vec<(&str, pb::PartitionAnswer)> {
    r.partitions_asked
        .iter()
        .map(|a| (a.partition.as_str(), a.answer()))
        .collect()
}

fn served_by(node: &Node, partition: &str) -> Option<pb::PartitionLeader> {
    Some(pb::PartitionLeader {
        partition: partition.into(),
        leader_addr: node.grpc.to_string(),
    })
}

/// The active holds of the partition `addr` leads.
async fn active_holds(addr: SocketAddr) -> u64 {
    let ch = channel(addr).await.unwrap();
    pb::admin_service_client::AdminServiceClient::new(ch)
        .stats(request(pb::StatsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .active_holds
}

/// Active holds of east, near and far.
async fn holds_everywhere(p: &Partitions) -> [u64; 3] {
    [
        active_holds(p.east.grpc).await,
        active_holds(p.near.grpc).await,
        active_holds(p.far.grpc).await,
    ]
}

/// One Allocate at east spans partitions: asked nearest first, the first that serves the
/// whole cart holds it at one store (its stream has the hold, east's nothing), the answer
/// names that partition's leader (where the hold is released), a retry gets the same
/// hold, and a cart no single partition can serve is held nowhere, even with allow_split.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_allocate_asks_the_other_partitions_nearest_first_and_holds_at_one_store() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let p = partitions(&dir.0, &[("SKU-2", 5)], &[("SKU-1", 5), ("SKU-3", 5)]).await;

    // Only far has SKU-1: near is asked first and rejects, far holds.
    let first = allocate(p.east.grpc, TOKEN, cart("span-1", &[("SKU-1", 2)]))
        .await
        .unwrap();
    let holds = allocated_holds(&first);
    assert_eq!(holds.len(), 1, "{first:?}");
    assert_eq!(
        (holds[0].store_id.as_str(), holds[0].lines[0].qty),
        ("F1", 2)
    );
    assert_eq!(first.served_by, served_by(&p.far, "far"));
    assert_eq!(
        asked(&first),
        [
            ("near", pb::PartitionAnswer::Rejected),
            ("far", pb::PartitionAnswer::Allocated)
        ]
    );
    let distances: Vec<u32> = first
        .partitions_asked
        .iter()
        .map(|a| a.distance_m)
        .collect();
    assert!(
        (20_000..35_000).contains(&distances[0]) && (140_000..160_000).contains(&distances[1]),
        "{distances:?}"
    );
    assert_eq!(
        first.partitions_asked[1].leader_addr,
        p.far.grpc.to_string()
    );
    assert!(first.other_partitions.is_empty() && !first.replayed);
    assert_eq!(holds_everywhere(&p).await, [0, 0, 1]);
    // The hold is in far's replicated log, and east's log holds nothing.
    let js = p.nats.jetstream().await.unwrap();
    assert_eq!(replay_stream(&js, "far").await.engine().active_holds(), 1);
    assert_eq!(replay_stream(&js, "east").await.engine().active_holds(), 0);

    // A retry with the same key reaches far again and gets the same hold back.
    let again = allocate(p.east.grpc, TOKEN, cart("span-1", &[("SKU-1", 2)]))
        .await
        .unwrap();
    assert_eq!(allocated_holds(&again)[0].hold_id, holds[0].hold_id);
    assert!(again.replayed);
    assert_eq!(holds_everywhere(&p).await, [0, 0, 1]);

    // The hold id is far's: released at the leader the answer names.
    let far_leader: SocketAddr = first
        .served_by
        .as_ref()
        .unwrap()
        .leader_addr
        .parse()
        .unwrap();
    let released =
        pb::hold_service_client::HoldServiceClient::new(channel(far_leader).await.unwrap())
            .release(request(pb::ReleaseRequest {
                idempotency_key: "release-span-1".into(),
                hold_id: holds[0].hold_id,
                reason: "test".into(),
            }))
            .await
            .unwrap()
            .into_inner();
    assert!(released.released_now);
    assert_eq!(holds_everywhere(&p).await, [0, 0, 0]);

    // Both have SKU-1 now: the nearer one serves and the farther one is not asked.
    receive(p.near.grpc, "N1", &[("SKU-1", 5)]).await;
    let second = allocate(p.east.grpc, TOKEN, cart("span-2", &[("SKU-1", 2)]))
        .await
        .unwrap();
    assert_eq!(allocated_holds(&second)[0].store_id, "N1");
    assert_eq!(second.served_by, served_by(&p.near, "near"));
    assert_eq!(asked(&second), [("near", pb::PartitionAnswer::Allocated)]);
    assert_eq!(holds_everywhere(&p).await, [0, 1, 0]);

    // SKU-2 is only at near, SKU-3 only at far: no partition serves the cart, and a cart
    // is not split across partitions, so nothing is held anywhere.
    let mut split = cart("span-3", &[("SKU-2", 1), ("SKU-3", 1)]);
    split.allow_split = true;
    let refused = allocate(p.east.grpc, TOKEN, split).await.unwrap();
    assert!(
        matches!(
            refused.outcome,
            Some(pb::allocate_response::Outcome::Rejected(_))
        ),
        "{refused:?}"
    );
    assert_eq!(
        asked(&refused),
        [
            ("near", pb::PartitionAnswer::Rejected),
            ("far", pb::PartitionAnswer::Rejected)
        ]
    );
    assert!(refused.other_partitions.is_empty() && refused.served_by.is_none());
    assert_eq!(holds_everywhere(&p).await, [0, 1, 0]);
}

/// A partition that certainly did nothing is skipped and reported: the caller's token is
/// unknown there (the call carries the caller's own credentials), its leader is dead, it
/// has no leader. One that was sent the call and did not answer (stopped with SIGSTOP)
/// stops the allocation with UNAVAILABLE before the caller's deadline, and the retry with
/// the same key is held once, there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_that_cannot_answer_is_skipped_or_stops_the_allocation() {
    let _serial = SERIAL.lock().await;
    let dir = ScratchDir::new();
    let mut p = partitions(&dir.0, &[("SKU-1", 5)], &[("SKU-1", 5)]).await;

    // A token only east knows: east admits it; near and far refuse the calls made with it.
    let r = allocate(
        p.east.grpc,
        EAST_ONLY_TOKEN,
        cart("token-1", &[("SKU-1", 1)]),
    )
    .await
    .unwrap();
    assert!(
        matches!(r.outcome, Some(pb::allocate_response::Outcome::Rejected(_))),
        "{r:?}"
    );
    assert_eq!(
        asked(&r),
        [
            ("near", pb::PartitionAnswer::Refused),
            ("far", pb::PartitionAnswer::Refused)
        ]
    );
    assert!(
        r.partitions_asked[0].detail.contains("Unauthenticated"),
        "{r:?}"
    );
    let to_ask: Vec<&str> = r
        .other_partitions
        .iter()
        .map(|o| o.partition.as_str())
        .collect();
    assert_eq!(
        to_ask,
        ["near", "far"],
        "skipped partitions are still to ask"
    );
    assert_eq!(holds_everywhere(&p).await, [0, 0, 0]);

    // Near stopped: the call waits in its socket; east answers UNAVAILABLE naming it
    // before the caller's 3 s deadline, and asks no farther partition.
    signal(p.near.child(), libc::SIGSTOP);
    let mut stopped = request(cart("stopped-1", &[("SKU-1", 1)]));
    stopped.set_timeout(Duration::from_secs(3));
    let started = Instant::now();
    let refused =
        pb::hold_service_client::HoldServiceClient::new(channel(p.east.grpc).await.unwrap())
            .allocate(stopped)
            .await
            .unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let info = error_info(&refused, "PARTITION_UNANSWERED").expect("PARTITION_UNANSWERED");
    assert_eq!(info["partition"], "near");
    assert_eq!(info["leader_addr"], p.near.grpc.to_string());
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(active_holds(p.far.grpc).await, 0, "far was not asked");

    // Near runs again: the retry with the same key is answered by near, and held once.
    signal(p.near.child(), libc::SIGCONT);
    let deadline = Instant::now() + PATIENCE;
    let retried = loop {
        match allocate(p.east.grpc, TOKEN, cart("stopped-1", &[("SKU-1", 1)])).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(error_info(&e, "PARTITION_UNANSWERED").is_some(), "{e:?}");
                assert!(Instant::now() < deadline, "never answered: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(allocated_holds(&retried)[0].store_id, "N1");
    assert_eq!(retried.served_by, served_by(&p.near, "near"));
    assert_eq!(holds_everywhere(&p).await, [0, 1, 0]);

    // Near's leader killed: its lease still names it, but it cannot be connected to;
    // it is skipped and far serves.
    let near_addr = p.near.grpc;
    p.near.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = allocate(p.east.grpc, TOKEN, cart("dead-1", &[("SKU-1", 1)]))
        .await
        .unwrap();
    assert_eq!(allocated_holds(&r)[0].store_id, "F1");
    assert_eq!(
        asked(&r),
        [
            ("near", pb::PartitionAnswer::Unreachable),
            ("far", pb::PartitionAnswer::Allocated)
        ]
    );
    assert_eq!(r.partitions_asked[0].leader_addr, near_addr.to_string());
    assert_eq!(r.served_by, served_by(&p.far, "far"));
    assert_eq!(
        [
            active_holds(p.east.grpc).await,
            active_holds(p.far.grpc).await
        ],
        [0, 1]
    );

    // Nobody leads near (its lease deleted, as a graceful stop does): skipped as such; a
    // cart far cannot serve either leaves near the partition still to ask.
    let js = p.nats.jetstream().await.unwrap();
    js.get_key_value(wire::BUCKET)
        .await
        .unwrap()
        .delete(wire::lease_key("near"))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let r = allocate(p.east.grpc, TOKEN, cart("leaderless", &[("SKU-1", 100)]))
            .await
            .unwrap();
        if r.partitions_asked[0].answer() == pb::PartitionAnswer::NoLeader {
            break r;
        }
        assert!(Instant::now() < deadline, "near still has a leader: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        asked(&r),
        [
            ("near", pb::PartitionAnswer::NoLeader),
            ("far", pb::PartitionAnswer::Rejected)
        ]
    );
    assert_eq!(r.partitions_asked[0].leader_addr, "");
    let to_ask: Vec<&str> = r
        .other_partitions
        .iter()
        .map(|o| o.partition.as_str())
        .collect();
    assert_eq!(to_ask, ["near"]);
    assert_eq!(
        [
            active_holds(p.east.grpc).await,
            active_holds(p.far.grpc).await
        ],
        [0, 1]
    );
}
