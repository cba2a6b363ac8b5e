//! The README's quickstart, as a newcomer runs it: the real `pickline serve --dev`
//! binary, then the Python and Rust clients of `examples/` against the token it printed.
//! Also: what the binary refuses (a public listener without tokens, `--dev` on one).

mod common;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{PATIENCE, ScratchDir, python};

#[allow(dead_code)] // its `main` is for `cargo run --example quickstart`
#[path = "../../examples/rust/quickstart.rs"]
mod quickstart;

/// `pickline serve --dev` in a child process, killed on drop.
struct DevServer {
    child: Child,
    grpc: String,
    token: String,
    _dir: ScratchDir,
}

impl DevServer {
    /// Starts the binary on ephemeral loopback ports and reads the address and the token
    /// from the banner it prints on stdout.
    fn start() -> DevServer {
        let dir = ScratchDir::new();
        let mut child = pickline(&dir)
            .args(["serve", "--dev", "--grpc-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0", "--log-format", "pretty"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pickline");
        let stdout = child.stdout.take().unwrap();
        let (mut grpc, mut token) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.expect("read the banner");
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("gRPC"), Some(addr)) => grpc = Some(addr.to_owned()),
                (Some("token"), Some(secret)) => token = Some(secret.to_owned()),
                _ => {}
            }
            if grpc.is_some() && token.is_some() {
                break;
            }
        }
        // Keep reading: a server whose stdout is closed fails on its next line.
        std::thread::spawn(move || lines.for_each(drop));
        let server = DevServer {
            child,
            grpc: grpc.expect("the banner names the gRPC address"),
            token: token.expect("the banner prints the token"),
            _dir: dir,
        };
        assert!(server.token.starts_with("pkl_dev_") && server.token.len() >= 16);
        server
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pickline(dir: &ScratchDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pickline"));
    cmd.env("PICKLINE_DATA_DIR", dir.0.join("data"))
        .env_remove("PICKLINE_TOKEN")
        .env_remove("PICKLINE_TOKENS")
        .env_remove("PICKLINE_CONFIG");
    cmd
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_works_against_serve_dev() {
    let server = DevServer::start();
    let output = Command::new(python())
        .arg(repo().join("examples/python/quickstart.py"))
        .arg(&server.grpc)
        .env("PICKLINE_TOKEN", &server.token)
        .output()
        .expect("python must be installed (scripts/test makes target/py)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python quickstart failed (scripts/test installs grpcio into target/py)\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("on_hand 10, held 2, atp 8"),
        "python quickstart: {stdout}"
    );

    // The Rust client, second: the same store and SKU, 10 more units, 2 more held.
    let seen = quickstart::run(&format!("http://{}", server.grpc), &server.token)
        .await
        .expect("rust quickstart");
    assert_eq!((seen.on_hand, seen.held, seen.atp), (20, 4, 16), "{seen:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        seen.expires_at_ms > now_ms,
        "a confirmed hold is kept until its expiry: {seen:?}"
    );

    // Without the token nothing is served.
    let refused = quickstart::run(
        &format!("http://{}", server.grpc),
        "not-the-token-0123456789",
    )
    .await
    .expect_err("a wrong token is refused");
    assert!(
        refused
            .to_string()
            .to_lowercase()
            .contains("unauthenticated")
            || format!("{refused:?}").contains("Unauthenticated"),
        "{refused:?}"
    );
}

/// Runs `pickline <args>` to completion (bounded), returning (success, stderr).
fn run_to_end(args: &[&str]) -> (bool, String) {
    let dir = ScratchDir::new();
    let mut child = pickline(&dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pickline");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pickline {args:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[test]
fn a_public_listener_without_tokens_refuses_to_start() {
    let (ok, stderr) = run_to_end(&["serve", "--grpc-listen", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(
        stderr.contains("not loopback and no token is configured")
            && stderr.contains("PICKLINE_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn dev_mode_refuses_a_public_listener() {
    let (ok, stderr) = run_to_end(&["serve", "--dev", "--grpc-listen", "0.0.0.0:0"]);
    assert!(!ok);
    // Refused before dev mode applies (no token on a public listener) or by it.
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn help_names_only_what_exists() {
    let out = Command::new(env!("CARGO_BIN_EXE_pickline"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success());
    assert!(help.contains("intake"), "{help}");
    assert!(help.contains("notify"), "{help}");
    assert!(help.contains("staff"), "{help}");
    assert!(help.contains("serve --dev"), "{help}");
}
