//! Configuration layering (defaults < file < env < flags) and validation messages.

mod common;

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser as _;
use common::ScratchDir;
use pickline_sidecar::{
    cli::{Cli, Command},
    config::{ALL_SCOPES, Config, ConfigError, DEV_TOKEN_NAME, LogFormat, Overrides},
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

#[test]
fn tokens_come_from_the_environment_too() {
    let secret = "env-token-0123456789abcdef";
    let config = check(Some(FILE), &[("PICKLINE_TOKEN", secret)], &[]).unwrap();
    let names: Vec<&str> = config.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web", "env"], "added to the file's tokens");
    let env = &config.tokens[1];
    assert_eq!(env.token, secret);
    let every: Vec<Scope> = ALL_SCOPES.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(env.scopes, every);

    let tokens = r#"[{name="till", token="till-token-0123456789ab", scopes=["pos:S1"]},
                     {name="oms", token="oms-token-0123456789abcd", scopes=["oms"]}]"#;
    let config = check(None, &[("PICKLINE_TOKENS", tokens)], &[]).unwrap();
    let names: Vec<&str> = config.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["oms", "till"]);
    assert_eq!(config.tokens[1].scopes, vec!["pos:S1".parse().unwrap()]);
}

#[test]
fn bad_environment_tokens_are_refused_without_echoing_the_secret() {
    let secret = "leaky-secret-0123456789";
    for tokens in [
        format!(r#"[{{name="a", token="{secret}", scopes=["root"]}}]"#),
        format!(r#"[{{name="a", token="{secret}", scope=["oms"]}}]"#),
        secret.to_owned(),
    ] {
        let err = check(None, &[("PICKLINE_TOKENS", &tokens)], &[]).expect_err(&tokens);
        let message = err.to_string();
        assert!(message.contains("PICKLINE_TOKENS"), "{message}");
        assert!(!message.contains(secret), "{message} repeats the secret");
    }
    // Too short: named by its key and name, not by its value.
    let err = check(None, &[("PICKLINE_TOKEN", "short")], &[]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("at least 16 bytes") && message.contains("\"env\""),
        "{message}"
    );
    assert!(!message.contains("short\""), "{message}");
}

#[test]
fn a_public_listener_needs_a_token() {
    check_invalid(
        None,
        &[],
        &["--grpc-listen", "0.0.0.0:50051"],
        &["grpc.listen", "not loopback and no token", "PICKLINE_TOKEN"],
    );
    let config = check(
        None,
        &[("PICKLINE_TOKEN", "env-token-0123456789abcdef")],
        &["--grpc-listen", "0.0.0.0:50051"],
    )
    .unwrap();
    assert_eq!(config.grpc.listen, addr("0.0.0.0:50051"));
    // Loopback without tokens starts (health answers; every RPC is UNAUTHENTICATED), and
    // the startup log says how to authenticate.
    let config = check(None, &[], &[]).unwrap();
    assert!(config.auth_summary().contains("--dev"));
}

#[test]
fn dev_mode_adds_a_fresh_token_with_every_scope_on_loopback_only() {
    let mut config = check(None, &[], &[]).unwrap();
    let token = config.enable_dev().unwrap();
    assert!(
        token.starts_with("pkl_dev_") && token.len() == 8 + 48,
        "{token}"
    );
    let dev = config
        .tokens
        .iter()
        .find(|t| t.name == DEV_TOKEN_NAME)
        .unwrap();
    assert_eq!(dev.token, token);
    assert_eq!(dev.scopes.len(), ALL_SCOPES.len());
    assert!(
        !config.auth_summary().contains(&token),
        "the log never shows secrets"
    );
    let mut again = check(None, &[], &[]).unwrap();
    assert_ne!(again.enable_dev().unwrap(), token, "a new token per start");

    let mut public = check(
        None,
        &[("PICKLINE_TOKEN", "env-token-0123456789abcdef")],
        &["--http-listen", "0.0.0.0:9090"],
    )
    .unwrap();
    let err = public.enable_dev().unwrap_err().to_string();
    assert!(
        err.contains("http.listen") && err.contains("loopback only"),
        "{err}"
    );
}
