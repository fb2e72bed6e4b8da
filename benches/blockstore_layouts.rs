//! Measures the two candidate layouts for block data, and the disk itself:
//!
//! * `disk`: one file written sequentially and fsync'd (the physical limit);
//! * `flatfs`: [`FsBlockstore`] as an import uses it (file per block; each
//!   batch of 64 fdatasync'd and renamed by the writer's sync thread while
//!   the next is written; shard directories fsync'd once, at `finish`);
//! * `flatfs+flush`: the same store with a `flush` after every batch, so the
//!   caller waits for each batch's fsyncs and directory fsyncs (how the store
//!   worked before the sync thread; also what the crash child does, so that
//!   each batch it reports is durable);
//! * `flatfs+syncfs`: the same files, but one `syncfs` per batch instead of
//!   per-file fsyncs (a possible optimisation, measured to decide);
//! * `redb`: blocks as values in a redb table, one durable commit per batch
//!   of 64 blocks.
//!
//! For each: fsync'd import throughput (256 MiB of 256 KiB blocks by
//! default), crash behaviour (a child writer re-executed from this binary is
//! kill -9'd mid-batch; reopen, re-hash everything, count committed blocks
//! that survived) and disk space released after deleting the older half.
//!
//! Every import runs before any deletion: on ext4 without a journal (this
//! development VM's disk) a new inode skips, one by one, the inodes freed in
//! the last minutes, so deleting between runs would slow the next run's file
//! creation and measure the order of the runs rather than the layouts.
//!
//! `cargo bench --bench blockstore_layouts`; env `BENCH_DIR` (default: the
//! temp dir; point it at the SD card on a Pi), `BENCH_MIB` (default 256),
//! `BENCH_RUNS` (default 3; the median is reported).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cid::Version;
use redb::{ReadableTable, TableDefinition};
use wanda_ipfs::block::{Block, RAW};
use wanda_ipfs::blockstore::{BlockSink, FsBlockstore, PinMode};
use wanda_ipfs::unixfs::pb::{PbLink, PbNode};

const BLOCK: usize = 256 << 10;
/// Blocks per durable batch in every layout (what FsBlockstore uses).
const BATCH: usize = 64;
const CHILD_ENV: &str = "BENCH_CRASH_CHILD";
/// Batches the crash child commits before the parent kills it mid-batch.
const KILL_AFTER: [u64; 3] = [1, 2, 5];
const CRASH_BLOCKS: u64 = 10 * BATCH as u64;
const BLOCKS_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");

fn block(seed: u64) -> Block {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = vec![0u8; BLOCK];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Block::new(Version::V1, RAW, data)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn free_bytes(path: &Path) -> u64 {
    // SAFETY: sync() takes nothing; statvfs gets a valid path and buffer.
    unsafe {
        libc::sync();
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        #[allow(clippy::unnecessary_cast)]
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        free
    }
}

fn syncfs(dir: &Path) {
    let f = File::open(dir).unwrap();
    // SAFETY: a valid open descriptor.
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0);
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    Flatfs,
    FlatfsFlush,
    FlatfsSyncfs,
    Redb,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Flatfs => "flatfs",
            Layout::FlatfsFlush => "flatfs+flush",
            Layout::FlatfsSyncfs => "flatfs+syncfs",
            Layout::Redb => "redb",
        }
    }
}

/// Writes `blocks` durably; returns the elapsed time. Except for `flatfs`,
/// which is durable only at its end, `on_batch` is told how many batches are
/// durable.
fn import(layout: Layout, dir: &Path, blocks: &[Block], on_batch: &mut dyn FnMut(u64)) -> Duration {
    let t = Instant::now();
    match layout {
        Layout::Flatfs | Layout::FlatfsFlush => {
            let store = FsBlockstore::open(dir).unwrap();
            let mut w = store.writer();
            for (i, chunk) in blocks.chunks(BATCH).enumerate() {
                for b in chunk {
                    w.put(b).unwrap();
                }
                if layout == Layout::FlatfsFlush {
                    w.flush().unwrap();
                    on_batch(i as u64 + 1);
                }
            }
            let root = root_of(blocks);
            w.put(&root).unwrap();
            for chunk in blocks[blocks.len() / 2..].chunks(BATCH) {
                w.put(&root_of(chunk)).unwrap();
            }
            w.finish(&root.cid, PinMode::Recursive).unwrap();
        }
        Layout::FlatfsSyncfs => {
            let data = dir.join("blocks");
            let tmp = dir.join("tmp");
            fs::create_dir_all(&data).unwrap();
            fs::create_dir_all(&tmp).unwrap();
            for (i, chunk) in blocks.chunks(BATCH).enumerate() {
                let mut names = Vec::new();
                for b in chunk {
                    let name = b.cid.to_string();
                    let mut f = File::create_new(tmp.join(&name)).unwrap();
                    f.write_all(&b.data).unwrap();
                    names.push(name);
                }
                syncfs(dir);
                for n in &names {
                    fs::rename(tmp.join(n), data.join(n)).unwrap();
                }
                sync_dir(&data);
                on_batch(i as u64 + 1);
            }
        }
        Layout::Redb => {
            let db = redb::Database::create(dir.join("blocks.redb")).unwrap();
            for (i, chunk) in blocks.chunks(BATCH).enumerate() {
                let wtx = db.begin_write().unwrap();
                {
                    let mut t = wtx.open_table(BLOCKS_TABLE).unwrap();
                    for b in chunk {
                        t.insert(&*b.cid.hash().to_bytes(), &*b.data).unwrap();
                    }
                }
                wtx.commit().unwrap();
                on_batch(i as u64 + 1);
            }
        }
    }
    t.elapsed()
}

/// A dag-pb root over all blocks, so the flatfs import ends with a pin.
fn root_of(blocks: &[Block]) -> Block {
    let n = PbNode {
        links: blocks
            .iter()
            .map(|b| PbLink::new(b.cid, "", b.data.len() as u64))
            .collect(),
        data: None,
    };
    Block::new(Version::V1, wanda_ipfs::block::DAG_PB, n.encode())
}

/// Deletes the older half of what the import wrote, as the pipeline does once
/// a cluster confirms the oldest images; returns the time taken.
fn delete_oldest_half(layout: Layout, dir: &Path, all: &[Block]) -> Duration {
    let blocks = &all[..all.len() / 2];
    let t = Instant::now();
    match layout {
        Layout::Flatfs | Layout::FlatfsFlush => {
            // As if each batch had been one image, pinned on its own.
            let store = FsBlockstore::open(dir).unwrap();
            for chunk in all[all.len() / 2..].chunks(BATCH) {
                store.pin(&root_of(chunk).cid, PinMode::Recursive).unwrap();
            }
            let t = Instant::now();
            let freed = store.unpin(&root_of(all).cid).unwrap();
            assert_eq!(freed.blocks, blocks.len() as u64 + 1);
            return t.elapsed();
        }
        Layout::FlatfsSyncfs => {
            for b in blocks {
                fs::remove_file(dir.join("blocks").join(b.cid.to_string())).unwrap();
            }
        }
        Layout::Redb => {
            let db = redb::Database::create(dir.join("blocks.redb")).unwrap();
            let wtx = db.begin_write().unwrap();
            {
                let mut t = wtx.open_table(BLOCKS_TABLE).unwrap();
                for b in blocks {
                    t.remove(&*b.cid.hash().to_bytes()).unwrap();
                }
            }
            wtx.commit().unwrap();
        }
    }
    t.elapsed()
}

/// Re-hashes every visible block; returns (blocks found, corrupt).
fn reopen_and_verify(layout: Layout, dir: &Path) -> (u64, u64, Duration) {
    let t = Instant::now();
    let (mut found, mut corrupt) = (0, 0);
    match layout {
        Layout::Flatfs | Layout::FlatfsFlush => {
            let store = FsBlockstore::open(dir).unwrap();
            let r = store.verify(false).unwrap();
            found = r.checked;
            corrupt = r.corrupt.len() as u64;
        }
        Layout::FlatfsSyncfs => unreachable!("not crash-tested: same visibility rule as flatfs"),
        Layout::Redb => {
            let db = redb::Database::create(dir.join("blocks.redb")).unwrap();
            let rtx = db.begin_read().unwrap();
            if let Ok(t) = rtx.open_table(BLOCKS_TABLE) {
                for item in t.iter().unwrap() {
                    let (k, v) = item.unwrap();
                    found += 1;
                    let mh = multihash::Multihash::<64>::from_bytes(k.value()).unwrap();
                    let cid = cid::Cid::new_v1(RAW, mh);
                    if wanda_ipfs::block::verify(&cid, v.value()).is_err() {
                        corrupt += 1;
                    }
                }
            }
        }
    }
    (found, corrupt, t.elapsed())
}

/// The crash child: imports CRASH_BLOCKS blocks and says after each durable batch.
fn child(layout: Layout, dir: &Path) {
    let blocks: Vec<Block> = (0..CRASH_BLOCKS).map(|i| block(1 << 40 | i)).collect();
    let mut out = std::io::stdout();
    import(layout, dir, &blocks, &mut |n| {
        writeln!(out, "BATCH {n}").unwrap();
        out.flush().unwrap();
    });
    writeln!(out, "END").unwrap();
}

fn crash_round(layout: Layout, dir: &Path, kill_after: u64) -> String {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, format!("{}:{}", layout.name(), dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let want = format!("BATCH {kill_after}");
    for line in BufReader::new(c.stdout.take().unwrap()).lines() {
        if line.unwrap() == want {
            break;
        }
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let committed = kill_after * BATCH as u64;
    let (found, corrupt, t) = reopen_and_verify(layout, dir);
    let ok = found >= committed && corrupt == 0;
    format!(
        "{:>14}  kill after batch {kill_after}: committed {committed}, visible {found} \
         (<= {}), corrupt {corrupt}, reopen+verify {:.0} ms  {}",
        layout.name(),
        committed + BATCH as u64,
        t.as_secs_f64() * 1e3,
        if ok { "OK" } else { "LOST/CORRUPT" }
    )
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (name, dir) = spec.split_once(':').unwrap();
        let layout = [Layout::FlatfsFlush, Layout::Redb]
            .into_iter()
            .find(|l| l.name() == name)
            .unwrap();
        child(layout, Path::new(dir));
        return;
    }
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("wanda-bench-")
        .tempdir_in(&base)
        .unwrap();
    let mib = env_u64("BENCH_MIB", 256);
    let runs = env_u64("BENCH_RUNS", 3).max(1);
    let n = mib * (1 << 20) / BLOCK as u64;
    let total = n * BLOCK as u64;
    println!(
        "blockstore layouts: {n} blocks of {} KiB = {mib} MiB, batches of {BATCH}, \
         median of {runs} runs, in {}",
        BLOCK >> 10,
        base.display()
    );
    let blocks: Vec<Block> = (0..n).map(block).collect();

    // The physical limit: the same bytes, one file, one fsync at the end.
    let disk = median(
        (0..runs)
            .map(|_| {
                let p = work.path().join("seq");
                let t = Instant::now();
                let mut f = File::create(&p).unwrap();
                for b in &blocks {
                    f.write_all(&b.data).unwrap();
                }
                f.sync_all().unwrap();
                let d = t.elapsed();
                fs::remove_file(&p).unwrap();
                mib_s(total, d)
            })
            .collect(),
    );
    println!(
        "{:>14}  {disk:7.1} MiB/s  (sequential write + fsync: the limit)",
        "disk"
    );

    let layouts = [
        Layout::Flatfs,
        Layout::FlatfsFlush,
        Layout::FlatfsSyncfs,
        Layout::Redb,
    ];
    // Runs interleave the layouts, so a slow spell of the shared disk hits
    // them all alike.
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); layouts.len()];
    let mut dirs = Vec::new();
    for run in 0..runs {
        for (i, &layout) in layouts.iter().enumerate() {
            let dir = work.path().join(format!("{}-{run}", layout.name()));
            fs::create_dir_all(&dir).unwrap();
            let before = free_bytes(&dir);
            let d = import(layout, &dir, &blocks, &mut |_| {});
            rates[i].push(mib_s(total, d));
            let after_import = free_bytes(&dir);
            dirs.push((i, dir, before.saturating_sub(after_import)));
        }
    }
    // Then the deletions (see the module comment for why not in between).
    let mut space = vec![(0, 0, Duration::ZERO); layouts.len()];
    for (i, dir, used) in dirs {
        let before_delete = free_bytes(&dir);
        let del = delete_oldest_half(layouts[i], &dir, &blocks);
        let after_delete = free_bytes(&dir);
        space[i] = (used, after_delete.saturating_sub(before_delete), del);
    }
    for (i, layout) in layouts.iter().enumerate() {
        let all = rates[i]
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        let rate = median(rates[i].clone());
        println!(
            "{:>14}  {rate:7.1} MiB/s  ({:.0}% of disk; runs: {all})  used {} MiB; deleting the older half freed {} MiB in {:.0} ms",
            layout.name(),
            100.0 * rate / disk,
            space[i].0 >> 20,
            space[i].1 >> 20,
            space[i].2.as_secs_f64() * 1e3,
        );
    }

    // redb returns space only through compaction, which needs the database
    // to itself: measure what that costs.
    {
        let dir = work.path().join("redb-compact");
        fs::create_dir_all(&dir).unwrap();
        import(Layout::Redb, &dir, &blocks, &mut |_| {});
        delete_oldest_half(Layout::Redb, &dir, &blocks);
        let before = free_bytes(&dir);
        let t = Instant::now();
        let mut db = redb::Database::create(dir.join("blocks.redb")).unwrap();
        while db.compact().unwrap() {}
        drop(db);
        let d = t.elapsed();
        let freed = free_bytes(&dir).saturating_sub(before);
        println!(
            "{:>14}  then compaction freed {} MiB more in {:.0} ms (needs the database to itself)",
            "redb",
            freed >> 20,
            d.as_secs_f64() * 1e3
        );
    }

    for layout in [Layout::FlatfsFlush, Layout::Redb] {
        for k in KILL_AFTER {
            let dir = work.path().join(format!("crash-{}", layout.name()));
            println!("{}", crash_round(layout, &dir, k));
        }
    }
}
