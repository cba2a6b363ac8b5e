//! The one place tests start a server and talk to it.
#![allow(dead_code)] // each test file uses a different part

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use pickline_sidecar::{
    config::{Config, TokenConfig},
    pb::{
        admin_service_client::AdminServiceClient, hold_service_client::HoldServiceClient,
        inventory_service_client::InventoryServiceClient,
        pickup_service_client::PickupServiceClient, store_service_client::StoreServiceClient,
    },
    server::{self, ServerError},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const CHECKOUT_TOKEN: &str = "test-checkout-token-0123456789abc";
pub const POS_TOKEN: &str = "test-pos-s1-token-0123456789abcde";
pub const STAFF_S1_TOKEN: &str = "test-staff-s1-token-0123456789abc";

/// How long a test waits for something that should happen promptly before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The Python interpreter for the Python clients: `PICKLINE_PYTHON` (set by
/// `scripts/test`), else the virtual environment `scripts/test` makes (`target/py`), else
/// `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PICKLINE_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A unique, empty scratch directory, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> ScratchDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pickline-sidecar-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn token(name: &str, token: &str, scopes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.to_owned(),
        token: token.to_owned(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

/// Adds a token to `config` (for scopes the default test tokens do not cover).
pub fn add_token(config: &mut Config, name: &str, secret: &str, scopes: &[&str]) {
    config.tokens.push(token(name, secret, scopes));
}

/// Defaults with the three test tokens and a data dir under `dir`.
pub fn test_config(dir: &ScratchDir) -> Config {
    let mut config = Config::default();
    config.data.dir = dir.0.join("data");
    config.grpc.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.grpc.shutdown_grace_ms = 2_000;
    config.tokens = vec![
        token("ops", ADMIN_TOKEN, &["admin"]),
        token("web", CHECKOUT_TOKEN, &["checkout"]),
        token("till-s1", POS_TOKEN, &["pos:S1"]),
        token("tablet-s1", STAFF_S1_TOKEN, &["staff:S1"]),
    ];
    config.validate().unwrap();
    config
}

/// A server running in this process on ephemeral loopback ports.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    dir: Option<ScratchDir>,
}

impl TestServer {
    /// Starts a server with `configure` applied to [`test_config`], and waits until its
    /// health check reports SERVING.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_in(ScratchDir::new(), configure).await
    }

    /// [`TestServer::start`] on an existing directory (a restart).
    pub async fn start_in(dir: ScratchDir, configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(&dir);
        configure(&mut config);
        config.validate().unwrap();
        let grpc = TcpListener::bind(config.grpc.listen).await.unwrap();
        let http = TcpListener::bind(config.http.listen).await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(config, grpc, http, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            grpc_addr,
            http_addr,
            stop: Some(stop),
            task: Some(task),
            dir: Some(dir),
        };
        server.wait_serving("").await;
        server
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn admin_client(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    pub async fn health(&self, service: &str) -> ServingStatus {
        let mut client = HealthClient::new(self.channel().await);
        let response = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap();
        response.into_inner().status()
    }

    async fn wait_serving(&self, service: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.health(service).await != ServingStatus::Serving {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never became SERVING"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
    }
}

impl TestServer {
    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.as_ref().unwrap().0.join("data")
    }

    /// Stops the server cleanly and hands back its directory for a restart.
    pub async fn stop_keeping_dir(mut self) -> ScratchDir {
        let dir = self.dir.take().unwrap();
        self.stop().await.unwrap();
        dir
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `request` with `authorization: Bearer <token>`.
/// One client per domain service over one channel to `server`.
pub struct Clients {
    pub stores: StoreServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub holds: HoldServiceClient<Channel>,
    pub pickups: PickupServiceClient<Channel>,
}

/// The clients of `server`'s domain services.
pub async fn clients(server: &TestServer) -> Clients {
    let channel = server.channel().await;
    Clients {
        stores: StoreServiceClient::new(channel.clone()),
        inventory: InventoryServiceClient::new(channel.clone()),
        holds: HoldServiceClient::new(channel.clone()),
        pickups: PickupServiceClient::new(channel),
    }
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Request lines from (SKU, units).
pub fn lines(lines: &[(&str, u32)]) -> Vec<pickline_sidecar::pb::Line> {
    lines
        .iter()
        .map(|(sku, qty)| pickline_sidecar::pb::Line {
            sku: (*sku).into(),
            qty: *qty,
        })
        .collect()
}

/// POS events receiving (SKU, units) into `store`, one per line (ids
/// `receive-<store>-<sku>`).
pub fn receipts(store: &str, lines: &[(&str, u32)]) -> Vec<pickline_sidecar::pb::PosEvent> {
    use pickline_sidecar::pb;
    lines
        .iter()
        .map(|(sku, qty)| pb::PosEvent {
            pos_event_id: format!("receive-{store}-{sku}"),
            store_id: store.into(),
            sku: (*sku).into(),
            occurred_at_ms: 1,
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: pb::PosDeltaKind::Receive as i32,
                qty: *qty,
            })),
            order_ref: String::new(),
        })
        .collect()
}

/// A minimal HTTP/1.1 GET: returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
