//! Compiles podmesh's protobuf API with protox (pure Rust: no system protoc needed) and generates the tonic
//! service code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/podmesh/v1/podmesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
