//! Compiles proto/ticketmesh/v1/*.proto with a vendored protoc and writes the
//! descriptor set that the servers register for reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ticketmesh");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.file_descriptor_set_path(out.join("ticketmesh_descriptor.bin"));
    let protos = ["ticket", "event", "storage", "notifier"].map(|name| format!("ticketmesh/v1/{name}.proto"));
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &protos,
        &[".".to_owned()],
    )?;
    Ok(())
}
