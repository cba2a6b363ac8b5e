//! A JetStream cluster of `nats-server` processes on loopback, for `pickline bench
//! cluster` and the cluster tests: each node with its own store directory under one
//! directory, clustered through routes on loopback ports. Nodes can be killed (SIGKILL)
//! and started again on the same ports and store. Clients reach the nodes on loopback,
//! or on another of the machine's addresses ([`LocalNats::start_on`]: a test's network
//! namespace reaches the host there, not on the host's loopback).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How long [`LocalNats::start`] waits for JetStream to answer.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// How many times [`LocalNats::start_on`] starts the cluster before it gives up.
const START_ATTEMPTS: u32 = 3;

/// The cluster's nodes.
#[derive(Debug)]
pub struct LocalNats {
    dir: PathBuf,
    /// The address the nodes listen for clients on.
    client_ip: IpAddr,
    client_ports: Vec<u16>,
    route_ports: Vec<u16>,
    servers: Vec<Option<Child>>,
}

fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl LocalNats {
    /// Starts `nodes` servers under `dir`, for clients on loopback, and waits until
    /// JetStream answers.
    pub async fn start(dir: &Path, nodes: usize) -> std::io::Result<LocalNats> {
        LocalNats::start_on(dir, nodes, Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`LocalNats::start`] with the nodes listening for clients on `client_ip`, one of
    /// the machine's addresses (routes between the nodes stay on loopback).
    ///
    /// A node that exits while the cluster forms (a port taken between choosing it and
    /// binding it) makes the attempt fail at once; the cluster is then started afresh on
    /// other ports, at most [`START_ATTEMPTS`] times.
    pub async fn start_on(
        dir: &Path,
        nodes: usize,
        client_ip: IpAddr,
    ) -> std::io::Result<LocalNats> {
        let mut attempt = 1;
        loop {
            match Self::try_start_on(dir, nodes, client_ip).await {
                Ok(nats) => return Ok(nats),
                Err(e) if attempt < START_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "local JetStream cluster did not form; starting afresh");
                    attempt += 1;
                    let _ = std::fs::rename(dir, dir.with_extension(format!("failed-{attempt}")));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start_on(
        dir: &Path,
        nodes: usize,
        client_ip: IpAddr,
    ) -> std::io::Result<LocalNats> {
        std::fs::create_dir_all(dir)?;
        let client_ports = (0..nodes)
            .map(|_| free_port(client_ip))
            .collect::<Result<_, _>>()?;
        let route_ports = (0..nodes)
            .map(|_| free_port(Ipv4Addr::LOCALHOST.into()))
            .collect::<Result<_, _>>()?;
        let mut nats = LocalNats {
            dir: dir.to_owned(),
            client_ip,
            client_ports,
            route_ports,
            servers: (0..nodes).map(|_| None).collect(),
        };
        for i in 0..nodes {
            nats.start_node(i)?;
        }
        nats.wait_jetstream().await?;
        Ok(nats)
    }

    /// The client URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.client_ports
            .iter()
            .map(|p| format!("nats://{}", SocketAddr::new(self.client_ip, *p)))
            .collect()
    }

    /// Node `i`'s server name (`n0`, `n1`, ...), as stream info names a leader.
    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    /// Starts (or restarts) node `i` on its ports and store.
    pub fn start_node(&mut self, i: usize) -> std::io::Result<()> {
        let routes: Vec<String> = self
            .route_ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let conf = self.dir.join(format!("n{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                r#"
server_name: "{name}"
listen: "{client}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 4GB
}}
cluster {{
  name: "pickline-local"
  listen: "127.0.0.1:{route}"
  routes: [{routes}]
}}
"#,
                name = Self::name(i),
                client = SocketAddr::new(self.client_ip, self.client_ports[i]),
                route = self.route_ports[i],
                store = self.dir.join(format!("n{i}")).display(),
                routes = routes.join(", "),
            ),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("n{i}.log")))?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting nats-server (install it: scripts/test does): {e}"),
                )
            })?;
        self.servers[i] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` (if it runs).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A JetStream context connected to every node.
    pub async fn jetstream(&self) -> std::io::Result<async_nats::jetstream::Context> {
        let addrs = self
            .urls()
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let client = async_nats::ConnectOptions::new()
            .connect(addrs)
            .await
            .map_err(std::io::Error::other)?;
        Ok(async_nats::jetstream::new(client))
    }

    async fn wait_jetstream(&mut self) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_PATIENCE;
        let url = self.urls()[0].clone();
        loop {
            // A replicated stream can be made once the metadata leader is elected and
            // every peer is known (account info does not say so, and its reply differs
            // between server versions).
            let ready = async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                let js = async_nats::jetstream::new(client);
                js.get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "PICKLINE_LOCAL_PROBE".to_owned(),
                    subjects: vec!["pickline.local.probe".to_owned()],
                    num_replicas: self.servers.len(),
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await
                .ok()?;
                js.delete_stream("PICKLINE_LOCAL_PROBE").await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), ready).await {
                return Ok(());
            }
            for (i, server) in self.servers.iter_mut().enumerate() {
                if let Some(child) = server
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(std::io::Error::other(format!(
                        "nats-server {} exited ({status}) before the cluster formed (logs in {})",
                        Self::name(i),
                        self.dir.display()
                    )));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "JetStream did not become ready within {READY_PATIENCE:?} (logs in {})",
                    self.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill_node(i);
        }
    }
}
