//! A Python client, with stubs generated at test time by `grpc_tools.protoc` from the same
//! `.proto` files, runs a whole pickup against a server in this process. `scripts/test`
//! installs `grpcio`, `grpcio-tools` and `protobuf` into `target/py`; without them this
//! test fails with a message saying so (it is never skipped).

mod common;

use std::{path::Path, process::Command};

use common::{
    ADMIN_TOKEN, CHECKOUT_TOKEN, POS_TOKEN, STAFF_S1_TOKEN, ScratchDir, TestServer, python,
};

#[tokio::test]
async fn a_python_client_runs_a_pickup_end_to_end() {
    let server = TestServer::start(|_| {}).await;
    let stubs = ScratchDir::new();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_root = manifest.join("../proto");
    let protos: Vec<_> = std::fs::read_dir(proto_root.join("pickline/v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    let generated = Command::new(python())
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_root.display()))
        .arg(format!("--python_out={}", stubs.0.display()))
        .arg(format!("--grpc_python_out={}", stubs.0.display()))
        .args(&protos)
        .output()
        .expect("python3 must be installed (scripts/test installs the packages)");
    assert!(
        generated.status.success(),
        "grpc_tools.protoc failed (run scripts/test, which installs grpcio-tools): {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let scenario = manifest.join("tests/interop/scenario.py");
    let addr = server.grpc_addr.to_string();
    let stub_dir = stubs.0.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(scenario)
            .arg(addr)
            .arg(stub_dir)
            .env("PICKLINE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PICKLINE_CHECKOUT_TOKEN", CHECKOUT_TOKEN)
            .env("PICKLINE_POS_TOKEN", POS_TOKEN)
            .env("PICKLINE_STAFF_TOKEN", STAFF_S1_TOKEN)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python scenario failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("python interop: ok"), "{stdout}");
}
