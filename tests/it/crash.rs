//! kill -9 in the middle of a large `add`: afterwards `repo verify` is clean, every block of an earlier
//! finished import is still there, and the same add runs to completion.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::corpus::Prng;
use crate::util::{eqnice, sha256_file, TestRepo};

/// Number of block files visible under the repo: `.data` files outside the store's hidden temp dir.
fn visible_blocks(repo: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![repo.join("blocks")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            if p.is_dir() && !hidden {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "data") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn kill_9_during_add_then_verify() {
    let repo = TestRepo::init();
    // An earlier, finished import whose blocks must all survive.
    let early = repo.path().join("early.jpg");
    let mut rng = Prng::new(99);
    std::fs::write(&early, rng.bytes(3 << 20)).unwrap();
    let early_cid = repo.cmd().args(["add", "-Q"]).arg(&early).stdout();

    // A large file: 192 MiB in 64 KiB chunks is ~3000 blocks, enough to be killed mid-way.
    let big = repo.path().join("big.raw");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..192 {
            rng.fill(&mut buf);
            f.write_all(&buf).unwrap();
        }
        f.flush().unwrap();
    }
    let before = visible_blocks(&repo.repo_path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_wanda-ipfs"))
        .env("WANDA_IPFS_PATH", repo.repo_path())
        .args(["add", "-Q", "--chunker", "size-65536"])
        .arg(&big)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wanda-ipfs add");
    // Wait (bounded) until the add has made some blocks visible, then kill -9 it by PID.
    let start = Instant::now();
    let mut killed_mid_add = false;
    while start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if visible_blocks(&repo.repo_path()) > before + 200 {
            child.kill().expect("kill -9");
            killed_mid_add = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().expect("wait");
    assert!(
        killed_mid_add,
        "the add finished ({status}) before it could be killed: make the file larger"
    );

    let v = repo.cmd().args(["repo", "verify"]).assert_ok().stdout_str();
    assert!(v.contains("all good"), "{v}");
    let got = repo.path().join("early.out");
    repo.cmd()
        .args(["get", &early_cid, "-o"])
        .arg(&got)
        .assert_ok();
    eqnice!(sha256_file(&early), sha256_file(&got));

    // The interrupted add, run again, completes and reads back.
    let cid = repo
        .cmd()
        .args(["add", "-Q", "--chunker", "size-65536"])
        .arg(&big)
        .stdout();
    let out = repo.path().join("big.out");
    repo.cmd().args(["get", &cid, "-o"]).arg(&out).assert_ok();
    eqnice!(sha256_file(&big), sha256_file(&out));
    repo.cmd().args(["repo", "verify"]).assert_ok();
}
