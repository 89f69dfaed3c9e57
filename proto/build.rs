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
    // The Rekor v2 service (`dev.sigstore.rekor.v2.Rekor`), described here from its published contract
    // (package, service, method and message names) over the message types of the
    // `sigstore_protobuf_specs` crate; only CreateEntry: rekor-tiles serves reads as plain HTTP.
    let specs = "::sigstore_protobuf_specs::dev::sigstore::rekor";
    let rekor = tonic_build::manual::Service::builder()
        .name("Rekor")
        .package("dev.sigstore.rekor.v2")
        .comment("Rekor v2: log a hashedrekord entry.")
        .method(
            tonic_build::manual::Method::builder()
                .name("create_entry")
                .route_name("CreateEntry")
                .input_type(format!("{specs}::v2::CreateEntryRequest"))
                .output_type(format!("{specs}::v1::TransparencyLogEntry"))
                .codec_path("crate::codec::StrictCodec")
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .out_dir(&out)
        .compile(&[rekor]);
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
