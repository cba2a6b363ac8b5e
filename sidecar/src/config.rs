//! Sidecar configuration: defaults compiled in, then a TOML file, then `PICKLINE_*`
//! environment variables, then command-line flags.
//!
//! Precedence, lowest to highest (a later source overrides an earlier one, key by key):
//!
//! 1. built-in defaults ([`Config::default`]; `pickline serve` alone works with them);
//! 2. the TOML file given by `--config` or `PICKLINE_CONFIG` (keys it leaves out keep
//!    their defaults; unknown keys are an error, so a typo never goes unnoticed);
//! 3. environment variables `PICKLINE_*` (see [`ENV_VARS`]);
//! 4. command-line flags of `pickline serve`.
//!
//! Flags win over the environment because they are the most local, explicit choice (the
//! operator typed them for this run); the environment wins over the file because
//! deployments inject per-instance values (ports, paths) into a shared file's defaults.
//!
//! Tokens come from the file's `[[tokens]]` and from the environment (`PICKLINE_TOKEN`:
//! one secret with every scope; `PICKLINE_TOKENS`: a TOML array of tables in the file's
//! form), added together; never from flags, which any user can read in `ps`.
//! `pickline serve --dev` adds a generated token ([`Config::enable_dev`]). A gRPC listener
//! that is not loopback with no token at all is refused at start-up (the server would
//! answer every call UNAUTHENTICATED to the whole network; more likely a mistake).
//!
//! The result is validated as a whole by [`Config::validate`], with messages that name
//! the key and the accepted range.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::grpc::auth::{Principal, Scope, TokenTable};

/// Bounds checked by [`Config::validate`]; each names its unit.
pub mod limits {
    /// Smallest accepted `grpc.max_message_bytes`.
    pub const MAX_MESSAGE_BYTES_MIN: usize = 1024;
    /// Largest accepted `grpc.max_message_bytes` (a batch of 10,000 POS events fits
    /// easily; larger messages belong in several batches).
    pub const MAX_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
    /// Largest accepted `grpc.concurrency_limit`.
    pub const CONCURRENCY_LIMIT_MAX: usize = 100_000;
    /// Largest accepted `grpc.request_timeout_ms` (10 minutes).
    pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
    /// Largest accepted `grpc.retry_after_ms` (1 minute).
    pub const RETRY_AFTER_MS_MAX: u64 = 60_000;
    /// Largest accepted `grpc.shutdown_grace_ms` (10 minutes).
    pub const SHUTDOWN_GRACE_MS_MAX: u64 = 600_000;
    /// Shortest accepted token, in bytes: tokens must be long random strings.
    pub const TOKEN_LEN_MIN: usize = 16;
    /// Largest accepted `data.expire_batch`.
    pub const EXPIRE_BATCH_MAX: usize = 100_000;
    /// Largest accepted `data.store_active_holds_max` (each active hold costs ~100 bytes
    /// of memory and of every snapshot).
    pub const STORE_ACTIVE_HOLDS_MAX: usize = 50_000_000;
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Durable state.
    pub data: DataConfig,
    /// The gRPC server.
    pub grpc: GrpcConfig,
    /// The HTTP server (metrics, readiness).
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Order intake: channel settings and validation rules.
    pub intake: crate::intake::IntakeConfig,
    /// The staff and customer pages.
    pub web: crate::web::WebConfig,
    /// Customer notifications (SMS and email); disabled by default.
    pub notify: crate::notify::NotifyConfig,
    /// Cluster mode on NATS JetStream; disabled by default.
    pub cluster: crate::cluster::ClusterConfig,
    /// Bearer tokens; none means every RPC is UNAUTHENTICATED (secure by default), which
    /// [`Config::validate`] only accepts on a loopback listener. Never serialized: it holds
    /// secrets.
    #[serde(skip_serializing)]
    pub tokens: Vec<TokenConfig>,
}

/// `[data]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Directory of the write-ahead log and snapshots; created if missing.
    pub dir: PathBuf,
    /// When a mutation is acknowledged: `sync` (after its group commit's fdatasync, the
    /// default and the only mode that keeps SPEC invariant 5), `async` (flushed every
    /// `async_flush_interval_ms`; a crash loses that window) or `off` (benchmarks only).
    pub durability: DurabilityMode,
    /// Flush interval of `durability = "async"`, ms.
    pub async_flush_interval_ms: u64,
    /// Group-commit gathering window of `durability = "sync"`, µs (0 turns it off): after
    /// a commit that acknowledged N records, the next one starts when N more were appended
    /// or this much time has passed. Bounds the delay it can add to a commit.
    pub commit_delay_us: u64,
    /// Write a snapshot at least this often, ms, so recovery replays a bounded log.
    pub checkpoint_interval_ms: u64,
    /// Also write one as soon as this many log bytes were written since the last one.
    pub checkpoint_wal_bytes: u64,
    /// How often the expiry ticker runs, ms.
    pub expire_interval_ms: u64,
    /// Holds examined per expiry call: bounds the work (and the lock hold times) of one
    /// tick; a full batch makes the ticker run again at once.
    pub expire_batch: usize,
    /// Active holds one store may have at once; a hold beyond it is RESOURCE_EXHAUSTED
    /// until holds end.
    pub store_active_holds_max: usize,
}

/// `data.durability`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge after fdatasync (group commit).
    #[default]
    Sync,
    /// Acknowledge at once; flush on an interval.
    Async,
    /// Write nothing (benchmarks and tests only).
    Off,
}

impl FromStr for DurabilityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(DurabilityMode::Sync),
            "async" => Ok(DurabilityMode::Async),
            "off" => Ok(DurabilityMode::Off),
            other => Err(format!(
                "unknown durability {other:?}: expected sync, async or off"
            )),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("./pickline-data"),
            durability: DurabilityMode::Sync,
            async_flush_interval_ms: 10,
            commit_delay_us: pickline_engine::wal::WalConfig::default().commit_delay_us,
            checkpoint_interval_ms: 5 * 60_000,
            checkpoint_wal_bytes: 256 << 20,
            expire_interval_ms: 250,
            expire_batch: 1_000,
            store_active_holds_max: pickline_engine::EngineConfig::default()
                .limits
                .store_active_holds_max,
        }
    }
}

impl DataConfig {
    /// The engine configuration these settings ask for.
    pub fn engine_config(&self) -> pickline_engine::EngineConfig {
        let mut engine = pickline_engine::EngineConfig::default();
        engine.limits.store_active_holds_max = self.store_active_holds_max;
        engine
    }

    /// The WAL configuration these settings ask for.
    pub fn wal_config(&self) -> pickline_engine::wal::WalConfig {
        use pickline_engine::wal::{Durability, WalConfig};
        WalConfig {
            durability: match self.durability {
                DurabilityMode::Sync => Durability::Sync,
                DurabilityMode::Async => Durability::Async {
                    flush_interval_ms: self.async_flush_interval_ms,
                },
                DurabilityMode::Off => Durability::Off,
            },
            commit_delay_us: self.commit_delay_us,
            ..WalConfig::default()
        }
    }
}

/// `[grpc]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address. Loopback by default: exposing the port is a deliberate choice.
    pub listen: SocketAddr,
    /// Largest accepted request (and sent response) message, bytes.
    pub max_message_bytes: usize,
    /// Unary requests in flight at once, over all connections. One more is answered
    /// RESOURCE_EXHAUSTED at once instead of queueing: a queue only adds latency when
    /// the engine is the bottleneck, and clients retry with the hint.
    pub concurrency_limit: usize,
    /// Longest a unary request may run before DEADLINE_EXCEEDED, ms.
    pub request_timeout_ms: u64,
    /// Retry hint sent with RESOURCE_EXHAUSTED, ms.
    pub retry_after_ms: u64,
    /// HTTP/2 streams per connection (bounds streaming RPCs, which are exempt from
    /// `concurrency_limit`).
    pub max_concurrent_streams: u32,
    /// On shutdown, how long in-flight requests get to finish before connections are
    /// dropped, ms.
    pub shutdown_grace_ms: u64,
    /// For simulations only (`pickline simulate --target`): the clock is the time each
    /// engine request carries in its `pickline-sim-now-ms` header instead of the wall
    /// clock, and the expiry ticker is off (holds expire through AdminService.ExpireHolds).
    /// Simulated time then runs as fast as the simulator drives it, exactly as it does
    /// against the engine in process.
    pub simulated_clock: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit: 1024,
            request_timeout_ms: 5_000,
            retry_after_ms: 50,
            max_concurrent_streams: 256,
            shutdown_grace_ms: 10_000,
            simulated_clock: false,
        }
    }
}

impl GrpcConfig {
    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `retry_after_ms` as a duration.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.retry_after_ms)
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[http]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of `/metrics` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default: logs are read by machines).
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            other => Err(format!(
                "unknown log format {other:?}: expected json or pretty"
            )),
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info,pickline_sidecar=debug`.
    pub filter: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_owned(),
            format: LogFormat::Json,
        }
    }
}

/// One `[[tokens]]` entry.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Name used in logs and events (never the secret).
    pub name: String,
    /// The secret bearer token, at least [`limits::TOKEN_LEN_MIN`] bytes.
    pub token: String,
    /// Scopes: `checkout`, `oms`, `admin`, `pos:<store>`/`pos:*`, `staff:<store>`/`staff:*`.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Values that the environment or flags may set; `None` leaves the value below alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `data.dir`
    pub data_dir: Option<PathBuf>,
    /// `grpc.listen`
    pub grpc_listen: Option<SocketAddr>,
    /// `http.listen`
    pub http_listen: Option<SocketAddr>,
    /// `grpc.max_message_bytes`
    pub max_message_bytes: Option<usize>,
    /// `grpc.concurrency_limit`
    pub concurrency_limit: Option<usize>,
    /// `grpc.request_timeout_ms`
    pub request_timeout_ms: Option<u64>,
    /// `log.filter`
    pub log_filter: Option<String>,
    /// `log.format`
    pub log_format: Option<LogFormat>,
    /// `grpc.simulated_clock`
    pub simulated_clock: Option<bool>,
}

/// The environment variables read, with the key each sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PICKLINE_CONFIG", "the TOML file to read"),
    ("PICKLINE_DATA_DIR", "data.dir"),
    ("PICKLINE_GRPC_LISTEN", "grpc.listen"),
    ("PICKLINE_HTTP_LISTEN", "http.listen"),
    ("PICKLINE_GRPC_MAX_MESSAGE_BYTES", "grpc.max_message_bytes"),
    ("PICKLINE_GRPC_CONCURRENCY_LIMIT", "grpc.concurrency_limit"),
    (
        "PICKLINE_GRPC_REQUEST_TIMEOUT_MS",
        "grpc.request_timeout_ms",
    ),
    ("PICKLINE_LOG", "log.filter"),
    ("PICKLINE_LOG_FORMAT", "log.format"),
    (
        "PICKLINE_TOKEN",
        "adds one token named \"env\" with every scope",
    ),
    (
        "PICKLINE_TOKENS",
        "adds tokens, a TOML array: [{name=\"web\", token=\"...\", scopes=[\"checkout\"]}]",
    ),
];

/// Every scope: what a `PICKLINE_TOKEN` or `--dev` token may do.
pub const ALL_SCOPES: &[&str] = &["admin", "checkout", "oms", "pos:*", "staff:*"];

/// Name of the token `PICKLINE_TOKEN` adds.
pub const ENV_TOKEN_NAME: &str = "env";
/// Name of the token `pickline serve --dev` adds.
pub const DEV_TOKEN_NAME: &str = "dev";

fn all_scopes() -> Vec<Scope> {
    ALL_SCOPES.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Tokens from `PICKLINE_TOKEN` and `PICKLINE_TOKENS` in `vars`. Errors never repeat the
/// variable's value: it holds secrets.
pub fn tokens_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<TokenConfig>, ConfigError> {
    /// `PICKLINE_TOKENS` is parsed as the value of a `tokens` key, so it has the file's
    /// schema and its checks (unknown keys, scope syntax).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EnvTokens {
        tokens: Vec<TokenConfig>,
    }
    let mut tokens = Vec::new();
    for (name, value) in vars {
        match name.as_str() {
            "PICKLINE_TOKEN" => tokens.push(TokenConfig {
                name: ENV_TOKEN_NAME.to_owned(),
                token: value,
                scopes: all_scopes(),
            }),
            "PICKLINE_TOKENS" => {
                let parsed: EnvTokens = toml::from_str(&format!("tokens = {value}"))
                    .map_err(|e| ConfigError::Env {
                        var: "PICKLINE_TOKENS",
                        value: "<redacted>".to_owned(),
                        // The message only: the full error quotes the input line.
                        reason: format!(
                            "{}; expected a TOML array like [{{name=\"web\", token=\"...\", scopes=[\"checkout\"]}}]",
                            e.message()
                        ),
                    })?;
                tokens.extend(parsed.tokens);
            }
            _ => {}
        }
    }
    // Variables come in no particular order; the table and messages should not depend on it.
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tokens)
}

impl Overrides {
    /// Reads the `PICKLINE_*` variables of [`ENV_VARS`] from `vars` (pass
    /// `std::env::vars()`; tests pass a list). Other variables are ignored, including
    /// other `PICKLINE_*` ones that tools such as the test script use.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Overrides, ConfigError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        fn parse<T: FromStr>(
            vars: &HashMap<String, String>,
            name: &'static str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            vars.get(name)
                .map(|raw| {
                    raw.parse().map_err(|e: T::Err| ConfigError::Env {
                        var: name,
                        value: raw.clone(),
                        reason: e.to_string(),
                    })
                })
                .transpose()
        }
        Ok(Overrides {
            data_dir: parse(&vars, "PICKLINE_DATA_DIR")?,
            grpc_listen: parse(&vars, "PICKLINE_GRPC_LISTEN")?,
            http_listen: parse(&vars, "PICKLINE_HTTP_LISTEN")?,
            max_message_bytes: parse(&vars, "PICKLINE_GRPC_MAX_MESSAGE_BYTES")?,
            concurrency_limit: parse(&vars, "PICKLINE_GRPC_CONCURRENCY_LIMIT")?,
            request_timeout_ms: parse(&vars, "PICKLINE_GRPC_REQUEST_TIMEOUT_MS")?,
            log_filter: vars.get("PICKLINE_LOG").cloned(),
            log_format: parse(&vars, "PICKLINE_LOG_FORMAT")?,
            simulated_clock: None,
        })
    }

    /// The config file named by `PICKLINE_CONFIG` in `vars`.
    pub fn config_file_from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Option<PathBuf> {
        vars.into_iter()
            .find(|(k, _)| k == "PICKLINE_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    }

    fn apply(self, config: &mut Config) {
        let Overrides {
            data_dir,
            grpc_listen,
            http_listen,
            max_message_bytes,
            concurrency_limit,
            request_timeout_ms,
            log_filter,
            log_format,
            simulated_clock,
        } = self;
        set(&mut config.data.dir, data_dir);
        set(&mut config.grpc.listen, grpc_listen);
        set(&mut config.http.listen, http_listen);
        set(&mut config.grpc.max_message_bytes, max_message_bytes);
        set(&mut config.grpc.concurrency_limit, concurrency_limit);
        set(&mut config.grpc.request_timeout_ms, request_timeout_ms);
        set(&mut config.log.filter, log_filter);
        set(&mut config.log.format, log_format);
        set(&mut config.grpc.simulated_clock, simulated_clock);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// An environment variable has a value of the wrong form.
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config value {key}: {reason}")]
    Invalid {
        /// The key, e.g. `grpc.concurrency_limit` or `tokens[2].token`.
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl Config {
    /// Parses a TOML document over the defaults.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Loads defaults < `file` < `env` < `flags`, then validates. `file` is the
    /// explicit path (flag), else `PICKLINE_CONFIG` from `env`, else none.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Overrides,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file = file
            .map(Path::to_owned)
            .or_else(|| Overrides::config_file_from_env(env.iter().cloned()));
        let mut config = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::from_toml(&text, path)?
            }
            None => Config::default(),
        };
        config.tokens.extend(tokens_from_env(env.iter().cloned())?);
        Overrides::from_env(env)?.apply(&mut config);
        flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Development mode (`pickline serve --dev`): refuses listeners that are not
    /// loopback, then adds a freshly generated token with every scope ([`ALL_SCOPES`],
    /// named [`DEV_TOKEN_NAME`]) and returns its secret for the caller to print. The
    /// token lives as long as the process; nothing is written to disk.
    pub fn enable_dev(&mut self) -> Result<String, ConfigError> {
        for (key, addr) in [
            ("grpc.listen", self.grpc.listen),
            ("http.listen", self.http.listen),
        ] {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!(
                        "{addr} is not a loopback address; --dev serves on loopback only (use 127.0.0.1)"
                    ),
                });
            }
        }
        let secret = generate_token()?;
        self.tokens.push(TokenConfig {
            name: DEV_TOKEN_NAME.to_owned(),
            token: secret.clone(),
            scopes: all_scopes(),
        });
        self.validate()?;
        Ok(secret)
    }

    /// One line saying how callers authenticate, for the startup log. Names tokens, never
    /// secrets.
    pub fn auth_summary(&self) -> String {
        if self.tokens.is_empty() {
            return "no tokens: every RPC answers UNAUTHENTICATED; run `pickline serve --dev`, \
                    or set PICKLINE_TOKEN, PICKLINE_TOKENS or [[tokens]] (sidecar/pickline.example.toml)"
                .to_owned();
        }
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        format!(
            "send `authorization: Bearer <token>`; tokens: {}",
            names.join(", ")
        )
    }

    /// Checks every limit and cross-field rule, naming the key in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use limits::*;
        fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            }
        }
        let g = &self.grpc;
        if self.data.dir.as_os_str().is_empty() {
            return Err(invalid("data.dir", "must not be empty"));
        }
        let d = &self.data;
        for (key, value, max) in [
            (
                "data.async_flush_interval_ms",
                d.async_flush_interval_ms,
                60_000,
            ),
            (
                "data.checkpoint_interval_ms",
                d.checkpoint_interval_ms,
                86_400_000,
            ),
            ("data.expire_interval_ms", d.expire_interval_ms, 60_000),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(key, format!("{value} is outside 1..={max}")));
            }
        }
        let commit_delay_us_max = pickline_engine::wal::COMMIT_DELAY_US_MAX;
        if d.commit_delay_us > commit_delay_us_max {
            return Err(invalid(
                "data.commit_delay_us",
                format!("{} is outside 0..={commit_delay_us_max}", d.commit_delay_us),
            ));
        }
        if d.checkpoint_wal_bytes < (1 << 20) {
            return Err(invalid(
                "data.checkpoint_wal_bytes",
                "must be at least 1 MiB",
            ));
        }
        if !(1..=EXPIRE_BATCH_MAX).contains(&d.expire_batch) {
            return Err(invalid(
                "data.expire_batch",
                format!("{} is outside 1..={EXPIRE_BATCH_MAX}", d.expire_batch),
            ));
        }
        if !(1..=STORE_ACTIVE_HOLDS_MAX).contains(&d.store_active_holds_max) {
            return Err(invalid(
                "data.store_active_holds_max",
                format!(
                    "{} is outside 1..={STORE_ACTIVE_HOLDS_MAX}",
                    d.store_active_holds_max
                ),
            ));
        }
        if !(MAX_MESSAGE_BYTES_MIN..=MAX_MESSAGE_BYTES_MAX).contains(&g.max_message_bytes) {
            return Err(invalid(
                "grpc.max_message_bytes",
                format!(
                    "{} is outside {MAX_MESSAGE_BYTES_MIN}..={MAX_MESSAGE_BYTES_MAX}",
                    g.max_message_bytes
                ),
            ));
        }
        if !(1..=CONCURRENCY_LIMIT_MAX).contains(&g.concurrency_limit) {
            return Err(invalid(
                "grpc.concurrency_limit",
                format!(
                    "{} is outside 1..={CONCURRENCY_LIMIT_MAX}",
                    g.concurrency_limit
                ),
            ));
        }
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&g.request_timeout_ms) {
            return Err(invalid(
                "grpc.request_timeout_ms",
                format!(
                    "{} is outside 1..={REQUEST_TIMEOUT_MS_MAX}",
                    g.request_timeout_ms
                ),
            ));
        }
        if !(1..=RETRY_AFTER_MS_MAX).contains(&g.retry_after_ms) {
            return Err(invalid(
                "grpc.retry_after_ms",
                format!("{} is outside 1..={RETRY_AFTER_MS_MAX}", g.retry_after_ms),
            ));
        }
        if g.max_concurrent_streams == 0 {
            return Err(invalid("grpc.max_concurrent_streams", "must be at least 1"));
        }
        if g.shutdown_grace_ms > SHUTDOWN_GRACE_MS_MAX {
            return Err(invalid(
                "grpc.shutdown_grace_ms",
                format!("{} is above {SHUTDOWN_GRACE_MS_MAX}", g.shutdown_grace_ms),
            ));
        }
        if g.listen == self.http.listen && g.listen.port() != 0 {
            return Err(invalid(
                "http.listen",
                format!("{} is also grpc.listen; use two ports", self.http.listen),
            ));
        }
        if let Err((key, reason)) = self.intake.validate() {
            return Err(invalid(key, reason));
        }
        if let Err((key, reason)) = self.web.validate() {
            return Err(invalid(key, reason));
        }
        if let Err((key, reason)) = self.notify.validate() {
            return Err(invalid(key, reason));
        }
        if let Err((key, reason)) = self.cluster.validate() {
            return Err(invalid(key, reason));
        }
        // The pages and the notifier act on the engine outside the request path that
        // waits for the replicated log; until they do, cluster mode serves gRPC only.
        if self.cluster.enabled && (self.web.enabled || self.notify.enabled) {
            return Err(invalid(
                "cluster.enabled",
                "the staff and customer pages ([web]) and notifications ([notify]) do not                  wait for the replicated log yet: set web.enabled = false and                  notify.enabled = false on cluster nodes",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", e.to_string()));
        }
        if self.tokens.is_empty() && !g.listen.ip().is_loopback() {
            return Err(invalid(
                "grpc.listen",
                format!(
                    "{} is not loopback and no token is configured: every call would be \
                     refused; set PICKLINE_TOKEN, PICKLINE_TOKENS or [[tokens]] \
                     (sidecar/pickline.example.toml), or serve on 127.0.0.1 (--dev)",
                    g.listen
                ),
            ));
        }
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.name.trim().is_empty() {
                return Err(invalid(format!("tokens[{i}].name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    format!("tokens[{i}].name"),
                    format!("{:?} is used by an earlier token", t.name),
                ));
            }
            if t.token.len() < TOKEN_LEN_MIN || t.token.trim() != t.token {
                return Err(invalid(
                    format!("tokens[{i}].token"),
                    format!(
                        "token {:?} must be at least {TOKEN_LEN_MIN} bytes without surrounding spaces",
                        t.name
                    ),
                ));
            }
            if !secrets.insert(t.token.as_str()) {
                return Err(invalid(
                    format!("tokens[{i}].token"),
                    format!("token {:?} repeats an earlier token's secret", t.name),
                ));
            }
            if t.scopes.is_empty() {
                return Err(invalid(
                    format!("tokens[{i}].scopes"),
                    format!("token {:?} needs at least one scope", t.name),
                ));
            }
        }
        Ok(())
    }

    /// The token table for the admission layer.
    pub fn token_table(&self) -> TokenTable {
        TokenTable::new(
            self.tokens
                .iter()
                .map(|t| (t.token.clone(), Principal::new(&t.name, &t.scopes))),
        )
    }
}

/// Length of a generated token's random part, bytes (hex-encoded: twice as many chars).
const GENERATED_TOKEN_BYTES: usize = 24;

/// A token from the operating system's CSPRNG: `pkl_dev_` and 48 hex digits.
fn generate_token() -> Result<String, ConfigError> {
    use rand::TryRng as _;
    use std::fmt::Write as _;
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| ConfigError::Invalid {
            key: "--dev".to_owned(),
            reason: format!("the OS random source failed: {e}"),
        })?;
    let mut token = String::from("pkl_dev_");
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The annotated example file documents the defaults; it must stay equal to them.
    #[test]
    fn example_file_equals_the_defaults() {
        let text = include_str!("../pickline.example.toml");
        let config = Config::from_toml(text, Path::new("pickline.example.toml")).unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
    }

    /// ... and it names every option (a key it left out would also parse as the default).
    #[test]
    fn example_file_lists_every_option() {
        let text = include_str!("../pickline.example.toml");
        let example: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (section, keys) in &defaults {
            let toml::Value::Table(keys) = keys else {
                panic!("[{section}] is a table");
            };
            for key in keys.keys() {
                let listed = example
                    .get(section)
                    .and_then(|t| t.as_table())
                    .is_some_and(|t| t.contains_key(key));
                if !listed {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "pickline.example.toml lacks {missing:?}"
        );
        assert!(text.contains("[[tokens]]") && text.contains("PICKLINE_TOKEN"));
    }
}
