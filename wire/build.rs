//! Compiles the wire protocol with protox (pure Rust, so no `protoc` is needed on any machine).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let proto_file = "../proto/flotilla/v1/flotilla.proto";
    println!("cargo:rerun-if-changed={proto_file}");
    let descriptors = protox::compile([proto_file], [proto_root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The rpc is named Connect (ARCHITECTURE.md, "Wire protocol"), which would clash with the
        // generated `connect` constructor; clients are built from a Channel.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
