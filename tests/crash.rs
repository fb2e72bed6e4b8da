//! kill -9 of a writer mid-import: on reopen no half-written block is
//! visible, `verify` is clean, and every block of every import that had
//! finished (returned from `finish`) is there and pinned.
//!
//! The test re-runs its own binary as the writer (the `crash_child` test,
//! selected by the `WANDA_CRASH_CHILD` environment variable). The child says
//! on stdout what it has done; the parent kills it when it reads the line it
//! waits for, so the timing follows the child's progress and nothing sleeps.
//! A kill only crashes the process, not the machine: what it shows is that
//! nothing visible depends on work the process had not finished.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use cid::{Cid, Version};
use wanda_ipfs::block::{Block, DAG_PB, RAW};
use wanda_ipfs::blockstore::{BlockSink, BlockSource, FsBlockstore, PinMode};
use wanda_ipfs::unixfs::pb::{PbLink, PbNode};

const CHILD_ENV: &str = "WANDA_CRASH_CHILD";
const ROUND_ENV: &str = "WANDA_CRASH_ROUND";
/// Leaves per finished import ("A").
const A_LEAVES: u64 = 70;
/// Blocks the unfinished import ("B") writes at most if never killed.
const B_BLOCKS: u64 = 400;
const LEAF_BYTES: usize = 64 << 10;

fn leaf(seed: u64) -> Block {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..LEAF_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Block::new(Version::V1, RAW, data)
}

/// Import A of round `round`: leaves, then a root linking them (root last).
/// Every third leaf is shared with the previous round's import.
fn import_a(round: u64) -> Vec<Block> {
    let mut blocks: Vec<Block> = (0..A_LEAVES)
        .map(|i| {
            let r = if i % 3 == 0 {
                round.saturating_sub(1)
            } else {
                round
            };
            leaf(r * 1_000_000 + i)
        })
        .collect();
    let root = PbNode {
        links: blocks
            .iter()
            .map(|b| PbLink::new(b.cid, "", b.data.len() as u64))
            .collect(),
        data: Some(Bytes::from(format!("round {round}"))),
    };
    blocks.push(Block::new(Version::V0, DAG_PB, root.encode()));
    blocks
}

/// Where the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After the child reported `n` puts of the finishing import A.
    DuringA(u64),
    /// After A finished and `n` puts of the never-finished import B.
    DuringB(u64),
}

/// The child role: runs only when the parent selects it.
#[test]
fn crash_child() {
    let Ok(repo) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let store = FsBlockstore::open(Path::new(&repo)).unwrap();
    let a = import_a(round);
    let mut w = store.writer();
    for (i, b) in a.iter().enumerate() {
        w.put(b).unwrap();
        println!("A {}", i + 1);
    }
    w.finish(&a.last().unwrap().cid, PinMode::Recursive)
        .unwrap();
    println!("FINISHED");
    let mut w = store.writer();
    for i in 0..B_BLOCKS {
        w.put(&leaf(u64::MAX / 2 + round * 1_000_000 + i)).unwrap();
        println!("B {}", i + 1);
    }
    w.flush().unwrap();
    println!("END");
}

/// Runs the child for `round` and kills it at `at`; returns whether A finished.
fn run_and_kill(repo: &Path, round: u64, at: KillAt) -> bool {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, repo)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let want = match at {
        KillAt::DuringA(n) => format!("A {n}"),
        KillAt::DuringB(n) => format!("B {n}"),
    };
    let mut finished = false;
    let mut reached = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        finished |= line == "FINISHED";
        if line == want {
            reached = true;
            break;
        }
    }
    assert!(reached, "child ended before {want}");
    // SIGKILL: no destructor, no flush, as a crash.
    child.kill().unwrap();
    child.wait().unwrap();
    finished
}

#[test]
fn kill_9_mid_import_loses_nothing_finished() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // Kill points around the batch boundaries (64 blocks), in both imports.
    let plan = [
        KillAt::DuringB(1),
        KillAt::DuringA(10),
        KillAt::DuringB(63),
        KillAt::DuringB(64),
        KillAt::DuringA(A_LEAVES),
        KillAt::DuringB(65),
        KillAt::DuringA(64),
        KillAt::DuringB(200),
    ];
    let mut finished_roots: Vec<(Cid, Vec<Block>)> = Vec::new();
    for (round, at) in plan.iter().enumerate() {
        let round = round as u64 + 1;
        let finished = run_and_kill(&repo, round, *at);
        let a = import_a(round);
        if finished {
            finished_roots.push((a.last().unwrap().cid, a));
        }

        let store = FsBlockstore::open(&repo).unwrap();
        assert_eq!(
            std::fs::read_dir(repo.join("blocks/.tmp")).unwrap().count(),
            0,
            "round {round}: temp files survived open"
        );
        let report = store.verify(false).unwrap();
        assert!(
            report.corrupt.is_empty(),
            "round {round} ({at:?}): {report:?}"
        );
        assert!(
            report.missing.is_empty(),
            "round {round} ({at:?}): {report:?}"
        );
        let pins: Vec<Cid> = store.pins().unwrap().into_iter().map(|(c, _)| c).collect();
        for (root, blocks) in &finished_roots {
            assert!(pins.contains(root), "round {round}: pin {root} lost");
            for b in blocks {
                assert_eq!(store.get(&b.cid).unwrap(), b.data, "round {round}");
            }
        }
        // Orphans of the killed import go with gc, pinned blocks stay.
        store.gc().unwrap();
        for (_, blocks) in &finished_roots {
            for b in blocks {
                assert!(store.has(&b.cid).unwrap());
            }
        }
    }
    assert!(finished_roots.len() >= 5);
}
