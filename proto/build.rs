//! Generates the tonic/prost code. protoc comes from `protoc-bin-vendored`, so no system protoc is needed;
//! set `PROTOC` to use another one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(protoc) => config.protoc_executable(protoc),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/cairn/raft/v1/raft.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
