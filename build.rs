//! Compiles proto/*.proto into Rust with protox (a pure-Rust protobuf parser),
//! so neither a native build nor the arm64 cross build needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/dag_pb.proto", "proto/unixfs.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
