//! Compiles proto/*.proto into Rust with protox (a pure-Rust protobuf parser),
//! so neither a native build nor the arm64 cross build needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/dag_pb.proto",
        "proto/unixfs.proto",
        "proto/bitswap.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // `--version` names the commit it was built from; a tarball build without
    // git says "unknown" rather than failing.
    // WANDA_GIT_HASH wins: builds in a container without git (cross.toml passes it through).
    println!("cargo:rerun-if-env-changed=WANDA_GIT_HASH");
    let hash = std::env::var("WANDA_GIT_HASH")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .map(|h| h.trim().to_string());
    let hash = hash
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WANDA_GIT_HASH={hash}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let fds = protox::compile(protos, ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
