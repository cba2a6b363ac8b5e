//! Compiles the gRPC contract in `proto/pickline/v1/` without a system `protoc`:
//! protox parses the files into a `FileDescriptorSet`, tonic-prost-build turns that set
//! into message types plus server and client code, and the encoded set is written next
//! to the generated code for tonic-reflection.

use std::{env, fs, io, path::PathBuf};

use protox::prost::Message as _;

/// The directory protos import each other from (`import "pickline/v1/common.proto"`).
const PROTO_ROOT: &str = "../proto";
/// The package directory; every `.proto` file in it is compiled.
const PROTO_PACKAGE_DIR: &str = "../proto/pickline/v1";
/// File name, inside `OUT_DIR`, of the encoded descriptor set for reflection.
const DESCRIPTOR_FILE: &str = "pickline_v1_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_PACKAGE_DIR}");
    let mut protos = fs::read_dir(PROTO_PACKAGE_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    protos.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    // Sorted so the descriptor set (and so the reflection bytes) are reproducible.
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let fds = protox::compile(&protos, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Malformed request bytes are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::grpc::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
