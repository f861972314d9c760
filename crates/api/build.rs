//! Compiles podmesh's protobuf API with protox (pure Rust: no system protoc needed) and generates the tonic
//! service code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/podmesh/v1/podmesh.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // Maps as BTreeMaps: their entries are then encoded in key order, so equal values encode to equal bytes (a
    // resource's version is a hash of its bytes).
    tonic_prost_build::configure().btree_map(".").build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
