//! `add --only-hash` throughput of the file importer against raw SHA-256 of
//! the same bytes on one core: `cargo bench --bench import`.
//!
//! The importer hashes leaves on worker threads when more than one core is
//! available; `taskset -c 0 cargo bench --bench import` measures it serial.
//! Prints MB/s and the ratio; asserts nothing (timings vary with the machine).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wanda_ipfs::blockstore::NullSink;
use wanda_ipfs::unixfs::file::import_file;
use wanda_ipfs::unixfs::ImportOptions;

/// Size of the imported file (the acceptance benchmark's).
const LEN: usize = 256 * 1024 * 1024;
/// Best of this many runs, to skip cold caches and neighbours' bursts.
const RUNS: usize = 5;

fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mbps(d: Duration) -> f64 {
    LEN as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    // xorshift64: incompressible, deterministic, quick to make.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..LEN / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();

    let sha = best(|| {
        std::hint::black_box(Sha256::digest(std::hint::black_box(&data)));
    });
    println!("raw sha256 (1 core)      {:8.1} MB/s", mbps(sha));

    let cases = [
        ("import v0 dag-pb leaves", ImportOptions::default()),
        (
            "import v1 raw leaves",
            ImportOptions::default()
                .with_cid_version(1, None)
                .expect("valid CID version"),
        ),
    ];
    for (name, opts) in cases {
        let d = best(|| {
            import_file(&opts, &data[..], &mut NullSink, &mut |_| {}).expect("import");
        });
        println!(
            "{name:<24} {:8.1} MB/s  = {:.2}x raw sha256",
            mbps(d),
            sha.as_secs_f64() / d.as_secs_f64()
        );
    }
}
