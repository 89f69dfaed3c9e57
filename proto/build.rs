//! Generates the tonic/prost code. protoc comes from `protoc-bin-vendored`, so no system protoc is needed;
//! set `PROTOC` to use another one.

use std::path::PathBuf;

fn prost_config() -> Result<prost_build::Config, Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    Ok(config)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure().compile_with_config(
        prost_config()?,
        &["proto/cairn/raft/v1/raft.proto"],
        &["proto"],
    )?;
    // The public API decodes requests with a codec that answers INVALID_ARGUMENT (not INTERNAL) to
    // bytes that are not a valid message, and its descriptors feed gRPC server reflection.
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out.join("cairn_v1_descriptor.bin"))
        .compile_with_config(prost_config()?, &["proto/cairn/v1/log.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
