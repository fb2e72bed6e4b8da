//! The static aarch64 release binary, the one a Raspberry Pi runs, tested here under qemu-user.
//!
//! `WANDA_ARM64_BIN` names the binary (`bash scripts/build-static.sh` builds it; `.ci/run` sets the
//! variable) and `WANDA_QEMU` the emulator (default `qemu-aarch64-static`). Without them these tests
//! skip loudly, and under `CI=true` they fail. qemu-user is a faithful CPU but not a Pi: the page
//! size it offers is the host's (4 KiB), so the Pi 5's 16 KiB pages are checked on the ELF itself
//! (every loadable segment must be aligned for them), not by running.
//! Narrow runs: `cargo test --test it arm64_`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::corpus::Corpus;
use crate::kubo::kubo_or_skip;
use crate::node::WandaDaemon;
use crate::util::{
    eqnice, parse_added, sha256_file, skip_or_fail, tempdir, Exe, TestRepo, WandaCmd,
};

/// The Pi 5 kernel's page size; 64 KiB kernels exist too, and GNU ld's default aarch64 alignment
/// (64 KiB) serves both.
const PI5_PAGE: u64 = 16 * 1024;
/// The issue's budget for the stripped binary.
const SIZE_BUDGET: u64 = 15 * 1024 * 1024;
/// Hashing under emulation is ~20x slower than native: generous, still bounded.
const EMULATED_DEADLINE: Duration = Duration::from_secs(600);
const FETCH_DEADLINE: Duration = Duration::from_secs(300);

struct Arm64 {
    bin: PathBuf,
    exe: Exe,
}

fn arm64_or_skip() -> Option<Arm64> {
    let Some(bin) = std::env::var_os("WANDA_ARM64_BIN").map(PathBuf::from) else {
        skip_or_fail(
            "the static arm64 binary",
            "WANDA_ARM64_BIN is not set (bash scripts/build-static.sh --install builds it)",
        );
        return None;
    };
    assert!(
        bin.is_file(),
        "WANDA_ARM64_BIN={} is not a file",
        bin.display()
    );
    let qemu = std::env::var_os("WANDA_QEMU").unwrap_or_else(|| "qemu-aarch64-static".into());
    let found = std::process::Command::new(&qemu)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_or_fail(
            "qemu-user",
            &format!("{qemu:?} does not run (apt-get install qemu-user-static)"),
        );
        return None;
    }
    let exe = Exe::emulated(PathBuf::from(qemu), &bin);
    Some(Arm64 { bin, exe })
}

/// ELF64 little-endian program headers: (type, offset, vaddr, align) of each.
fn program_headers(elf: &[u8]) -> Vec<(u32, u64, u64, u64)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF file");
    assert_eq!(elf[4], 2, "ELFCLASS64");
    assert_eq!(elf[5], 1, "little-endian");
    eqnice!(183, u16_at(18), "e_machine: EM_AARCH64");
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    (0..phnum)
        .map(|i| {
            let h = phoff + i * phentsize;
            (u32_at(h), u64_at(h + 8), u64_at(h + 16), u64_at(h + 48))
        })
        .collect()
}

#[test]
fn arm64_binary_is_static_aarch64_within_budget_and_loads_with_16k_pages() {
    let Some(a) = arm64_or_skip() else { return };
    let file = std::process::Command::new("file")
        .arg("-b")
        .arg(&a.bin)
        .output()
        .expect("file(1) runs (apt-get install file)");
    let what = String::from_utf8_lossy(&file.stdout).to_string();
    assert!(what.contains("ARM aarch64"), "file says: {what}");
    assert!(
        what.contains("statically linked") || what.contains("static-pie linked"),
        "file says: {what}"
    );

    let elf = std::fs::read(&a.bin).unwrap();
    let size = elf.len() as u64;
    eprintln!(
        "measured: arm64 binary {size} bytes ({:.2} MiB, budget 15 MiB)",
        size as f64 / (1 << 20) as f64
    );
    assert!(
        size <= SIZE_BUDGET,
        "{size} bytes is over the 15 MiB budget"
    );

    const PT_LOAD: u32 = 1;
    const PT_INTERP: u32 = 3;
    let headers = program_headers(&elf);
    assert!(
        !headers.iter().any(|h| h.0 == PT_INTERP),
        "no dynamic loader: {headers:?}"
    );
    let loads: Vec<_> = headers.iter().filter(|h| h.0 == PT_LOAD).collect();
    assert!(!loads.is_empty());
    for &&(_, offset, vaddr, align) in &loads {
        // A kernel maps a segment in whole pages: it needs file offset and address congruent
        // modulo its page size, which the segment's alignment promises up to `align`.
        assert!(
            align >= PI5_PAGE && align.is_power_of_two(),
            "segment aligned to {align:#x} < 16 KiB: {loads:?}"
        );
        eqnice!(offset % PI5_PAGE, vaddr % PI5_PAGE, "segment at {vaddr:#x}");
    }
}

#[test]
fn arm64_version_matches_the_host_build() {
    let Some(a) = arm64_or_skip() else { return };
    let t = Instant::now();
    let emulated = WandaCmd::of(&a.exe).arg("--version").stdout();
    eprintln!("measured: --version under qemu in {:?}", t.elapsed());
    // Same crate version and same commit (when both come from one checkout).
    eqnice!(WandaCmd::new().arg("--version").stdout(), emulated);
}

/// `add --only-hash -r` of the whole interop corpus (boundary sizes, trees, both HAMT boundaries),
/// with the defaults and with CIDv1 raw leaves: the aarch64 build (its SHA-256 instructions and
/// all) prints exactly what the host build prints, line for line.
#[test]
fn arm64_only_hash_of_the_corpus_matches_the_host_build() {
    let Some(a) = arm64_or_skip() else { return };
    let corpus = Corpus::shared();
    for opts in [&[][..], &["--cid-version", "1"][..], &["--trickle"][..]] {
        let run = |exe: &Exe| {
            let t = Instant::now();
            let out = WandaCmd::of(exe)
                .args(["add", "-r", "--only-hash"])
                .args(opts)
                .arg(&corpus.root)
                .deadline(EMULATED_DEADLINE)
                .stdout();
            (parse_added(&out).unwrap(), t.elapsed())
        };
        let (host, host_t) = run(&Exe::host());
        let (arm, arm_t) = run(&a.exe);
        eprintln!(
            "measured: add -r --only-hash {opts:?} of the corpus: host {host_t:?}, arm64 under qemu {arm_t:?}"
        );
        assert!(host.len() > 2000, "{} entries", host.len());
        eqnice!(host, arm, "add -r --only-hash {opts:?}");
    }
}

/// The emulated daemon serves a 10 MiB file that a real Kubo on the host fetches over loopback
/// bitswap: bytes equal. Its start time (spawn to listening, to ready) under qemu is reported.
#[test]
fn arm64_daemon_serves_kubo_over_loopback() {
    let Some(a) = arm64_or_skip() else { return };
    let Some(mut k) = kubo_or_skip() else { return };
    let repo = TestRepo::new();
    WandaCmd::of(&a.exe)
        .env("WANDA_IPFS_PATH", repo.repo_path())
        .arg("init")
        .assert_ok();
    let src = repo.path().join("still.bin");
    write_pseudo_random(&src, 10 << 20);
    let cid = WandaCmd::of(&a.exe)
        .env("WANDA_IPFS_PATH", repo.repo_path())
        .args(["add", "-Q"])
        .arg(&src)
        .deadline(EMULATED_DEADLINE)
        .stdout();
    eqnice!(
        k.add(&src, true).unwrap(),
        cid,
        "Kubo's CID of the same bytes"
    );

    let d = WandaDaemon::start_exe(&a.exe, &repo).unwrap_or_else(|e| panic!("{e}"));
    let (to_listening, to_ready) = d.start_times();
    eprintln!("measured: arm64 daemon under qemu: start -> listening {to_listening:?}, start -> ready {to_ready:?}");
    k.connect(&d.tcp_addr(), Duration::from_secs(30))
        .expect("Kubo connects to the emulated daemon");
    let dir = tempdir("arm64-fetch");
    let dest = dir.path().join("fetched");
    let t = Instant::now();
    k.download(&cid, &dest, FETCH_DEADLINE)
        .unwrap_or_else(|e| panic!("Kubo could not fetch {cid} from the emulated daemon: {e}"));
    eprintln!(
        "measured: Kubo fetched 10 MiB from the emulated daemon in {:?}",
        t.elapsed()
    );
    eqnice!(sha256_file(&src), sha256_file(&dest));
    let (status, _) = d.terminate();
    assert!(status.success(), "daemon exit: {status}");
}

fn write_pseudo_random(path: &Path, len: usize) {
    let mut rng = crate::corpus::Prng::new(0xa64);
    std::fs::write(path, rng.bytes(len)).unwrap();
}
