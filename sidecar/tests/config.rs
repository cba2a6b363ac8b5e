//! Configuration layering (defaults < file < env < flags) and validation messages.

mod common;

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser as _;
use common::ScratchDir;
use pickline_sidecar::{
    cli::{Cli, Command},
    config::{Config, ConfigError, LogFormat, Overrides},
    grpc::auth::Scope,
};

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The flag overrides of `pickline serve <args>`.
fn flags(args: &[&str]) -> (Option<PathBuf>, Overrides) {
    let cli = Cli::try_parse_from(["pickline", "serve"].iter().chain(args)).unwrap();
    let Command::Serve(serve) = cli.command else {
        panic!("`pickline serve` parses as Serve");
    };
    (serve.config.clone(), serve.overrides())
}

/// Loads with the given file contents (if any), environment and flags.
fn check(file: Option<&str>, vars: &[(&str, &str)], args: &[&str]) -> Result<Config, ConfigError> {
    let dir = ScratchDir::new();
    let path = dir.0.join("pickline.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
    }
    let (flag_file, overrides) = flags(args);
    let file = flag_file.or(file.map(|_| path));
    Config::load(file.as_deref(), env(vars), overrides)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_alone_are_a_valid_config() {
    let config = check(None, &[], &[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.data.dir, PathBuf::from("./pickline-data"));
    assert_eq!(config.grpc.listen, addr("127.0.0.1:50051"));
    assert_eq!(config.http.listen, addr("127.0.0.1:9090"));
    assert_eq!(config.log.format, LogFormat::Json);
    assert!(config.tokens.is_empty());
}

const FILE: &str = r#"
[grpc]
listen = "127.0.0.1:7000"
concurrency_limit = 10

[[tokens]]
name = "web"
token = "file-token-0123456789abcdef"
scopes = ["checkout", "staff:S1"]
"#;

#[test]
fn the_file_overrides_defaults_key_by_key() {
    let config = check(Some(FILE), &[], &[]).unwrap();
    assert_eq!(config.grpc.listen, addr("127.0.0.1:7000"));
    assert_eq!(config.grpc.concurrency_limit, 10);
    // Keys the file leaves out keep their defaults.
    assert_eq!(
        config.grpc.request_timeout_ms,
        Config::default().grpc.request_timeout_ms
    );
    assert_eq!(config.http, Config::default().http);
    assert_eq!(config.tokens.len(), 1);
    assert_eq!(
        config.tokens[0].scopes,
        vec![Scope::Checkout, "staff:S1".parse().unwrap()]
    );
}

#[test]
fn env_overrides_the_file_and_flags_override_env() {
    let vars = [
        ("PICKLINE_GRPC_CONCURRENCY_LIMIT", "20"),
        ("PICKLINE_DATA_DIR", "/var/lib/pickline"),
        ("PICKLINE_LOG_FORMAT", "pretty"),
        // Variables the sidecar does not own are ignored.
        ("PICKLINE_PROPTEST_CASES", "1000"),
    ];
    let config = check(Some(FILE), &vars, &[]).unwrap();
    assert_eq!(config.grpc.concurrency_limit, 20, "env beats file");
    assert_eq!(config.data.dir, PathBuf::from("/var/lib/pickline"));
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(
        config.grpc.listen,
        addr("127.0.0.1:7000"),
        "file value kept"
    );

    let args = [
        "--concurrency-limit",
        "30",
        "--grpc-listen",
        "127.0.0.1:7001",
    ];
    let config = check(Some(FILE), &vars, &args).unwrap();
    assert_eq!(config.grpc.concurrency_limit, 30, "flag beats env");
    assert_eq!(
        config.grpc.listen,
        addr("127.0.0.1:7001"),
        "flag beats file"
    );
    assert_eq!(
        config.data.dir,
        PathBuf::from("/var/lib/pickline"),
        "env kept"
    );
}

#[test]
fn the_config_file_comes_from_the_flag_before_pickline_config() {
    let dir = ScratchDir::new();
    let from_env = dir.0.join("env.toml");
    let from_flag = dir.0.join("flag.toml");
    std::fs::write(&from_env, "[grpc]\nconcurrency_limit = 11\n").unwrap();
    std::fs::write(&from_flag, "[grpc]\nconcurrency_limit = 12\n").unwrap();
    let vars = env(&[("PICKLINE_CONFIG", from_env.to_str().unwrap())]);
    let config = Config::load(None, vars.clone(), Overrides::default()).unwrap();
    assert_eq!(config.grpc.concurrency_limit, 11);
    let config = Config::load(Some(&from_flag), vars, Overrides::default()).unwrap();
    assert_eq!(config.grpc.concurrency_limit, 12);
}

/// Loading fails, and the message names what is wrong.
fn check_invalid(file: Option<&str>, vars: &[(&str, &str)], args: &[&str], expect: &[&str]) {
    let err = check(file, vars, args).expect_err("config should be rejected");
    let message = err.to_string();
    for part in expect {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
}

#[test]
fn invalid_configs_are_rejected_with_clear_messages() {
    check_invalid(
        Some("[grpc]\nconcurency_limit = 5\n"),
        &[],
        &[],
        &["invalid config file", "concurency_limit"],
    );
    check_invalid(
        Some("[grpc]\nconcurrency_limit = \"many\"\n"),
        &[],
        &[],
        &["invalid config file", "concurrency_limit"],
    );
    check_invalid(
        None,
        &[],
        &["--concurrency-limit", "0"],
        &["grpc.concurrency_limit", "0 is outside 1..=100000"],
    );
    check_invalid(
        Some("[data]\ncommit_delay_us = 20000\n"),
        &[],
        &[],
        &["data.commit_delay_us", "20000 is outside 0..=10000"],
    );
    check_invalid(
        Some("[data]\nstore_active_holds_max = 0\n"),
        &[],
        &[],
        &["data.store_active_holds_max", "0 is outside 1..=50000000"],
    );
    check_invalid(
        None,
        &[("PICKLINE_GRPC_LISTEN", "localhost")],
        &[],
        &["PICKLINE_GRPC_LISTEN", "\"localhost\""],
    );
    check_invalid(
        None,
        &[("PICKLINE_GRPC_LISTEN", "127.0.0.1:9090")],
        &[],
        &["http.listen", "use two ports"],
    );
    check_invalid(
        Some("[[tokens]]\nname = \"a\"\ntoken = \"short\"\nscopes = [\"admin\"]\n"),
        &[],
        &[],
        &["tokens[0].token", "at least 16 bytes"],
    );
    check_invalid(
        Some("[[tokens]]\nname = \"a\"\ntoken = \"long-enough-token-0123\"\nscopes = [\"root\"]\n"),
        &[],
        &[],
        &["unknown scope \"root\"", "line 4"],
    );
    check_invalid(
        Some(
            "[[tokens]]\nname = \"a\"\ntoken = \"long-enough-token-0123\"\nscopes = [\"oms\"]\n\
             [[tokens]]\nname = \"b\"\ntoken = \"long-enough-token-0123\"\nscopes = [\"oms\"]\n",
        ),
        &[],
        &[],
        &["tokens[1].token", "repeats"],
    );
    check_invalid(None, &[], &["--log", "info,[=bad"], &["log.filter"]);
    let missing = ScratchDir::new().0.join("absent.toml");
    check_invalid(
        None,
        &[],
        &["--config", missing.to_str().unwrap()],
        &["cannot read config file", "absent.toml"],
    );
}
