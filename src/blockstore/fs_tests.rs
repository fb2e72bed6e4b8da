//! Tests of [`FsBlockstore`]; the contract shared with `MemBlockstore` is in
//! `mod.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use bytes::Bytes;
use cid::{Cid, Version};
use proptest::prelude::*;

use super::*;
use crate::block::{Block, DAG_PB, RAW};
use crate::unixfs::pb::{PbLink, PbNode};

/// A leaf whose bytes are determined by `seed`.
pub(crate) fn leaf(seed: u64, len: usize) -> Block {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Block::new(Version::V1, RAW, data)
}

/// A dag-pb node linking to `children`, CIDv0 like Kubo's default.
pub(crate) fn node(children: &[&Block], tag: &str) -> Block {
    let n = PbNode {
        links: children
            .iter()
            .map(|c| PbLink::new(c.cid, "", c.data.len() as u64))
            .collect(),
        data: Some(Bytes::from(tag.as_bytes().to_vec())),
    };
    Block::new(Version::V0, DAG_PB, n.encode())
}

/// A two-level "file" over leaves `seeds`: (root, all blocks, root last).
pub(crate) fn file(seeds: &[u64], tag: &str) -> (Cid, Vec<Block>) {
    let leaves: Vec<Block> = seeds.iter().map(|&s| leaf(s, 1000 + s as usize)).collect();
    let half = leaves.len().div_ceil(2);
    let a = node(
        &leaves[..half].iter().collect::<Vec<_>>(),
        &format!("{tag}a"),
    );
    let b = node(
        &leaves[half..].iter().collect::<Vec<_>>(),
        &format!("{tag}b"),
    );
    let root = node(&[&a, &b], tag);
    let mut all = leaves;
    all.extend([a, b, root.clone()]);
    (root.cid, all)
}

fn import(store: &FsBlockstore, blocks: &[Block], root: &Cid) {
    let mut w = store.writer();
    for b in blocks {
        w.put(b).unwrap();
    }
    w.finish(root, PinMode::Recursive).unwrap();
}

fn tmp_entries(dir: &std::path::Path) -> usize {
    fs::read_dir(dir.join("blocks/.tmp")).unwrap().count()
}

fn corrupt_file(store: &FsBlockstore, cid: &Cid) {
    let (_, path) = store.inner.layout.block_path(&cid.hash().to_bytes());
    let mut data = fs::read(&path).unwrap();
    data[0] ^= 0xff;
    fs::write(&path, data).unwrap();
}

impl crate::blockstore::tests::Harness for FsBlockstore {
    fn put_all(&mut self, blocks: &[Block]) {
        let mut w = self.writer();
        for b in blocks {
            w.put(b).unwrap();
        }
        // Unpinned but durable; nothing runs gc here.
        drop(w.commit().unwrap());
    }
    fn get(&self, cid: &Cid) -> Result<Bytes, Error> {
        BlockSource::get(self, cid)
    }
    fn corrupt(&mut self, cid: &Cid) {
        corrupt_file(self, cid)
    }
}

#[test]
fn fs_contract_holds() {
    let dir = tempfile::tempdir().unwrap();
    crate::blockstore::tests::contract(&mut FsBlockstore::open(dir.path()).unwrap());
}

#[test]
fn open_makes_layout_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let (root, blocks) = file(&[1, 2, 3], "f");
    {
        let store = FsBlockstore::open(&repo).unwrap();
        assert!(matches!(
            FsBlockstore::open(&repo),
            Err(Error::Locked { .. })
        ));
        import(&store, &blocks, &root);
    }
    assert_eq!(
        fs::read_to_string(repo.join("blocks/SHARDING")).unwrap(),
        "/repo/flatfs/shard/v1/next-to-last/2\n"
    );
    let store = FsBlockstore::open(&repo).unwrap();
    for b in &blocks {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }
    assert_eq!(store.pins().unwrap(), vec![(root, PinMode::Recursive)]);
    let st = store.stat().unwrap();
    assert_eq!(st.blocks, blocks.len() as u64);
    assert_eq!(
        st.bytes,
        blocks.iter().map(|b| b.data.len() as u64).sum::<u64>()
    );
    assert_eq!(st.pins, 1);
    assert_eq!(st.path, repo);
    assert!(st.free_bytes > 0);
    let mut listed: Vec<_> = store
        .list()
        .unwrap()
        .map(|c| c.unwrap().hash().to_bytes())
        .collect();
    let mut want: Vec<_> = blocks.iter().map(|b| b.cid.hash().to_bytes()).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn wrong_sharding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("blocks")).unwrap();
    fs::write(
        dir.path().join("blocks/SHARDING"),
        "/repo/flatfs/shard/v1/prefix/2\n",
    )
    .unwrap();
    let err = FsBlockstore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::BadRepo { .. }), "{err}");
}

#[test]
fn stale_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(FsBlockstore::open(dir.path()).unwrap());
    fs::write(dir.path().join("blocks/.tmp/CIQXYZ.1.0"), b"half a blo").unwrap();
    let _store = FsBlockstore::open(dir.path()).unwrap();
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn unflushed_blocks_are_invisible_and_dropped_with_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let b = leaf(7, 100);
    let mut w = store.writer();
    w.put(&b).unwrap();
    assert!(!store.has(&b.cid).unwrap());
    assert_eq!(tmp_entries(dir.path()), 1);
    drop(w);
    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(!store.has(&b.cid).unwrap());
}

/// Puts after which the sync thread has certainly finished the first batch:
/// it holds at most `SYNC_QUEUE` + 1 batches, so the hand-off of batch
/// `SYNC_QUEUE` + 2 waits until batch 1 is out of its hands.
const FIRST_BATCH_DONE: usize = (SYNC_QUEUE + 2) * BATCH_BLOCKS;

#[test]
fn batches_sync_by_themselves_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let mut w = store.writer();
    let blocks: Vec<Block> = (0..FIRST_BATCH_DONE as u64 + 3)
        .map(|i| leaf(i, 10))
        .collect();
    for b in &blocks {
        w.put(b).unwrap();
    }
    // The first batch's outcome was taken by a later put; the thread may
    // have finished the others as well by then.
    assert!(w.sync.as_ref().unwrap().in_flight < FIRST_BATCH_DONE / BATCH_BLOCKS);
    for b in &blocks[..BATCH_BLOCKS] {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }
    // The last three were never handed over.
    for b in &blocks[FIRST_BATCH_DONE..] {
        assert!(!store.has(&b.cid).unwrap());
    }
    w.flush().unwrap();
    for b in &blocks {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }
    assert_eq!(tmp_entries(dir.path()), 0);
    assert_eq!(w.sync.as_ref().unwrap().in_flight, 0);
}

/// Every shard holding one of `blocks` has no rename left to fsync.
fn all_synced(store: &FsBlockstore, blocks: &[Block]) -> bool {
    blocks.iter().all(|b| {
        let (shard, _) = store.inner.layout.block_path(&b.cid.hash().to_bytes());
        !store.inner.needs_sync(shard)
    })
}

#[test]
fn flush_and_finish_leave_every_block_visible_and_its_directory_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    // Enough blocks for several background batches over many shards.
    let (root, blocks) = file(&(0..3 * BATCH_BLOCKS as u64 + 5).collect::<Vec<_>>(), "f");
    let mut w = store.writer();
    for b in &blocks {
        w.put(b).unwrap();
    }
    assert!(w.sync.is_some(), "the batches went through the sync thread");
    w.flush().unwrap();
    assert!(w.unsynced.is_empty());
    assert!(all_synced(&store, &blocks));
    for b in &blocks {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }

    // A second import, partly over the same leaves, ends with finish.
    let (root2, blocks2) = file(
        &(2 * BATCH_BLOCKS as u64..5 * BATCH_BLOCKS as u64).collect::<Vec<_>>(),
        "g",
    );
    let mut w = store.writer();
    for b in &blocks2 {
        w.put(b).unwrap();
    }
    // Once the sync thread is done with the batches handed over, their new
    // blocks are visible, but not yet durable by name.
    w.collect(true).unwrap();
    let new = &blocks2[BATCH_BLOCKS + 10];
    assert!(!blocks.iter().any(|b| b.cid == new.cid));
    assert!(store.has(&new.cid).unwrap());
    assert!(!all_synced(&store, &blocks2));
    w.finish(&root2, PinMode::Recursive).unwrap();
    assert!(all_synced(&store, &blocks2));
    for b in &blocks2 {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }
    assert_eq!(tmp_entries(dir.path()), 0);
    store.pin(&root, PinMode::Recursive).unwrap();
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn a_pin_syncs_the_directories_of_blocks_another_import_left_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (root, blocks) = file(&(0..BATCH_BLOCKS as u64).collect::<Vec<_>>(), "f");
    // One import hands its leaves to the sync thread and gets them renamed:
    // visible, but not durable by name until that import's flush.
    let mut a = store.writer();
    for b in &blocks {
        a.put(b).unwrap();
    }
    a.collect(true).unwrap();
    let visible: Vec<Block> = blocks[..BATCH_BLOCKS].to_vec();
    for b in &visible {
        assert!(store.has(&b.cid).unwrap());
    }
    assert!(!all_synced(&store, &visible));
    // Someone pins a DAG over those leaves, through a writer of its own
    // that only adds the root.
    let sub = node(&visible.iter().collect::<Vec<_>>(), "sub");
    let mut b = store.writer();
    b.put(&sub).unwrap();
    b.finish(&sub.cid, PinMode::Recursive).unwrap();
    assert!(all_synced(&store, &visible), "the pin made them durable");
    a.finish(&root, PinMode::Recursive).unwrap();
    assert!(all_synced(&store, &blocks));
}

/// A block whose shard is blocked by a plain file: its rename fails with
/// ENOTDIR, in the sync thread. Returns the file's path.
fn block_shard_of(store: &FsBlockstore, b: &Block) -> std::path::PathBuf {
    let (_, path) = store.inner.layout.block_path(&b.cid.hash().to_bytes());
    let shard = path.parent().unwrap().to_path_buf();
    fs::write(&shard, b"not a directory").unwrap();
    shard
}

#[test]
fn a_failed_background_batch_surfaces_from_flush_and_leaves_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let blocks: Vec<Block> = (0..BATCH_BLOCKS as u64).map(|i| leaf(i, 3000)).collect();
    let bad = &blocks[BATCH_BLOCKS / 2];
    let blocker = block_shard_of(&store, bad);
    let mut w = store.writer();
    for b in &blocks {
        w.put(b).unwrap();
    }
    // The whole batch went to the sync thread; flush waits for its failure.
    assert!(w.pending.is_empty());
    let err = w.flush().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Io {
                op: "rename block into place",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "the failed batch's temp files remain"
    );
    // The failed batch left the guard, so putting its blocks again writes them.
    assert!(blocks.iter().all(|b| !w.guard.protects(&b.cid)));
    fs::remove_file(&blocker).unwrap();
    assert!(!store.has(&bad.cid).unwrap());
    drop(w);
    drop(store);
    let store = FsBlockstore::open(dir.path()).unwrap();
    let report = store.verify(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut w = store.writer();
    for b in &blocks {
        w.put(b).unwrap();
    }
    w.flush().unwrap();
    for b in &blocks {
        assert_eq!(store.get(&b.cid).unwrap(), b.data);
    }
}

#[test]
fn a_failed_background_batch_surfaces_from_the_next_put_and_finish_pins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let seeds: Vec<u64> = (0..FIRST_BATCH_DONE as u64 + 10).collect();
    let (root, blocks) = file(&seeds, "f");
    let bad = &blocks[3];
    let blocker = block_shard_of(&store, bad);
    let mut w = store.writer();
    let mut failed_at = None;
    for (i, b) in blocks.iter().enumerate() {
        if let Err(e) = w.put(b) {
            assert!(matches!(e, Error::Io { .. }), "{e}");
            failed_at = Some(i);
            break;
        }
    }
    let failed_at = failed_at.expect("no put reported the failed batch");
    // By the hand-off that needed batch 1 out of the thread's hands, its
    // outcome was in; the put right after must have reported it.
    assert!(
        failed_at <= FIRST_BATCH_DONE,
        "reported only at put {failed_at}"
    );
    assert!(
        failed_at > BATCH_BLOCKS,
        "reported before the batch was handed over"
    );
    // The import carries on regardless: its pin must refuse the hole.
    for b in &blocks[failed_at..] {
        w.put(b).unwrap();
    }
    let err = w.finish(&root, PinMode::Recursive).unwrap_err();
    assert!(matches!(err, Error::MissingBlock { .. }), "{err}");
    assert!(store.pins().unwrap().is_empty());
    assert_eq!(tmp_entries(dir.path()), 0);
    fs::remove_file(&blocker).unwrap();
    assert!(store.verify(false).unwrap().corrupt.is_empty());
}

#[test]
fn recursive_pin_needs_the_whole_dag() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (root, blocks) = file(&[1, 2, 3, 4], "f");
    let missing = blocks[2].cid;
    let mut w = store.writer();
    for b in blocks.iter().filter(|b| b.cid != missing) {
        w.put(b).unwrap();
    }
    let err = w.finish(&root, PinMode::Recursive).unwrap_err();
    match &err {
        Error::MissingBlock {
            root: r,
            missing: m,
        } => assert_eq!((**r, **m), (root, missing)),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains(&missing.to_string()));
    assert!(store.pins().unwrap().is_empty());
    // A direct pin needs only the root.
    store.pin(&root, PinMode::Direct).unwrap();
    assert_eq!(store.pins().unwrap(), vec![(root, PinMode::Direct)]);
}

#[test]
fn shared_blocks_survive_unpinning_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (ra, a) = file(&[1, 2, 3], "a");
    let (rb, b) = file(&[2, 3, 4], "b");
    import(&store, &a, &ra);
    import(&store, &b, &rb);
    let before = store.stat().unwrap().blocks;

    let freed = store.unpin(&ra).unwrap();
    // a's own: leaf 1, two inner nodes, root.
    assert_eq!(freed.blocks, 4);
    assert_eq!(store.stat().unwrap().blocks, before - 4);
    for blk in &b {
        assert_eq!(store.get(&blk.cid).unwrap(), blk.data);
    }
    assert!(!store.has(&a[0].cid).unwrap());
    assert!(matches!(store.unpin(&ra), Err(Error::NotPinned(_))));

    store.unpin(&rb).unwrap();
    assert_eq!(store.stat().unwrap().blocks, 0);
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn gc_keeps_pinned_and_guarded_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (ra, a) = file(&[1, 2], "a");
    import(&store, &a, &ra);
    let loose = leaf(99, 50);
    store.put_block(&loose).unwrap();
    let fresh = leaf(100, 50);
    let mut w = store.writer();
    w.put(&fresh).unwrap();
    let guard = w.commit().unwrap();
    assert!(guard.protects(&fresh.cid));

    let r = store.gc().unwrap();
    assert_eq!(r.blocks, 1);
    assert!(!store.has(&loose.cid).unwrap());
    assert!(store.has(&fresh.cid).unwrap());
    for blk in &a {
        assert!(store.has(&blk.cid).unwrap());
    }
    drop(guard);
    assert_eq!(store.gc().unwrap().blocks, 1);
    assert!(!store.has(&fresh.cid).unwrap());
}

#[test]
fn unpin_spares_blocks_an_import_found_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (ra, a) = file(&[1, 2], "a");
    import(&store, &a, &ra);
    // Same image captured again: every leaf is already there.
    let (rb, b) = file(&[1, 2], "b");
    let mut w = store.writer();
    for blk in &b {
        w.put(blk).unwrap();
    }
    // The cluster confirms `a` mid-import.
    let freed = store.unpin(&ra).unwrap();
    assert_eq!(freed.blocks, 3, "only a's own nodes go");
    w.finish(&rb, PinMode::Recursive).unwrap();
    for blk in &b {
        assert_eq!(store.get(&blk.cid).unwrap(), blk.data);
    }
    assert_eq!(store.gc().unwrap().blocks, 0);
}

#[test]
fn direct_pins_upgrade_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (r, blocks) = file(&[5, 6], "f");
    let mut w = store.writer();
    for b in &blocks {
        w.put(b).unwrap();
    }
    let guard = w.commit().unwrap();
    store.pin(&r, PinMode::Direct).unwrap();
    store.pin(&r, PinMode::Recursive).unwrap();
    store.pin(&r, PinMode::Direct).unwrap(); // keeps recursive
    drop(guard);
    assert_eq!(store.pins().unwrap(), vec![(r, PinMode::Recursive)]);
    assert_eq!(store.gc().unwrap().blocks, 0);
    assert_eq!(store.unpin(&r).unwrap().blocks, blocks.len() as u64);
}

#[test]
fn delete_block_respects_pins_and_guards() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (r, blocks) = file(&[1], "f");
    import(&store, &blocks, &r);
    assert!(matches!(
        store.delete_block(&blocks[0].cid),
        Err(Error::Pinned(_))
    ));
    let loose = leaf(42, 10);
    let mut w = store.writer();
    w.put(&loose).unwrap();
    let guard = w.commit().unwrap();
    assert!(matches!(
        store.delete_block(&loose.cid),
        Err(Error::InUse(_))
    ));
    drop(guard);
    assert!(store.delete_block(&loose.cid).unwrap());
    assert!(!store.delete_block(&loose.cid).unwrap());
}

#[test]
fn verify_finds_and_removes_corrupt_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (r, blocks) = file(&[1, 2, 3], "f");
    import(&store, &blocks, &r);
    assert!(store.verify(false).unwrap().is_clean());
    let bad = &blocks[1];
    corrupt_file(&store, &bad.cid);
    assert!(matches!(store.get(&bad.cid), Err(Error::Corrupt(_))));
    // What bitswap peers get (they hash it themselves): the bytes as stored.
    let raw = store.get_unverified(&bad.cid).unwrap();
    assert_eq!(raw.len(), bad.data.len());
    assert_ne!(raw, bad.data);
    assert_eq!(
        store.get_unverified(&blocks[0].cid).unwrap(),
        blocks[0].data
    );
    let report = store.verify(false).unwrap();
    assert_eq!(report.checked, blocks.len() as u64);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].hash(), bad.cid.hash());
    assert!(!report.is_clean());
    let report = store.verify(true).unwrap();
    assert_eq!(report.removed, 1);
    // The pin now lacks that block.
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].hash(), bad.cid.hash());
}

#[test]
fn identity_cids_are_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let mh = multihash::Multihash::<64>::wrap(crate::block::IDENTITY, b"hi").unwrap();
    let cid = Cid::new_v1(RAW, mh);
    store
        .put_block(&Block {
            cid,
            data: Bytes::from_static(b"hi"),
        })
        .unwrap();
    assert!(store.has(&cid).unwrap());
    assert_eq!(store.get(&cid).unwrap(), Bytes::from_static(b"hi"));
    assert_eq!(store.stat().unwrap().blocks, 0);
}

#[test]
fn oversized_blocks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let big = Block::new(Version::V1, RAW, vec![0u8; MAX_BLOCK_BYTES as usize + 1]);
    assert!(matches!(store.put_block(&big), Err(Error::TooLarge { .. })));
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn store_is_send_sync_and_errors_are_too() {
    fn check<T: Send + Sync>() {}
    check::<FsBlockstore>();
    check::<Error>();
    fn send<T: Send>() {}
    send::<BlockWriter>();
    send::<ImportGuard>();
}

#[test]
fn concurrent_imports_and_gc_keep_every_pinned_block() {
    const ROUNDS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let store = store.clone();
            s.spawn(move || {
                for r in 0..ROUNDS {
                    // Both threads share leaves 0..3 and unpin their previous file.
                    let (root, blocks) = file(&[0, 1, 2, 10 + t * 100 + r], &format!("t{t}r{r}"));
                    import(&store, &blocks, &root);
                    if r > 0 {
                        let prev =
                            file(&[0, 1, 2, 10 + t * 100 + r - 1], &format!("t{t}r{}", r - 1));
                        store.unpin(&prev.0).unwrap();
                    }
                    for b in &blocks {
                        assert_eq!(store.get(&b.cid).unwrap(), b.data);
                    }
                }
            });
        }
        let store = store.clone();
        s.spawn(move || {
            for _ in 0..2 * ROUNDS {
                store.gc().unwrap();
            }
        });
    });
    assert_eq!(store.pins().unwrap().len(), 2);
    store.gc().unwrap();
    // Two pinned files of 4 leaves (3 shared) + 3 nodes each.
    assert_eq!(store.stat().unwrap().blocks, 5 + 6);
    assert!(store.verify(false).unwrap().is_clean());
}

#[derive(Debug, Clone)]
enum Op {
    Import(usize),
    Unpin(usize),
    Gc,
    Reopen,
}

/// Six files over eight shared leaves.
fn files() -> Vec<(Cid, Vec<Block>)> {
    let seeds: [&[u64]; 6] = [
        &[0, 1, 2],
        &[1, 2, 3],
        &[4],
        &[4, 5, 6, 7],
        &[0, 7],
        &[0, 1, 2],
    ];
    seeds
        .iter()
        .enumerate()
        .map(|(i, s)| file(s, &format!("f{i}")))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model: pinned files stay whole, and after `unpin`/`gc`
    /// exactly the blocks some pinned file needs remain.
    #[test]
    fn pins_and_gc_match_a_model(ops in proptest::collection::vec(
        prop_oneof![
            (0..6usize).prop_map(Op::Import),
            (0..6usize).prop_map(Op::Unpin),
            Just(Op::Gc),
            Just(Op::Reopen),
        ],
        1..14,
    )) {
        let files = files();
        let dir = tempfile::tempdir().unwrap();
        let mut store = FsBlockstore::open(dir.path()).unwrap();
        let mut pinned: BTreeSet<usize> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Import(i) => {
                    import(&store, &files[i].1, &files[i].0);
                    pinned.insert(i);
                }
                Op::Unpin(i) => {
                    let r = store.unpin(&files[i].0);
                    prop_assert_eq!(r.is_ok(), pinned.remove(&i));
                }
                Op::Gc => {
                    store.gc().unwrap();
                }
                Op::Reopen => {
                    drop(store);
                    store = FsBlockstore::open(dir.path()).unwrap();
                }
            }
            let mut want: BTreeMap<Vec<u8>, Bytes> = BTreeMap::new();
            for &i in &pinned {
                for b in &files[i].1 {
                    want.insert(b.cid.hash().to_bytes(), b.data.clone());
                    prop_assert_eq!(store.get(&b.cid).unwrap(), b.data.clone());
                }
            }
            let have: BTreeSet<Vec<u8>> = store
                .list()
                .unwrap()
                .map(|c| c.unwrap().hash().to_bytes())
                .collect();
            prop_assert_eq!(have, want.keys().cloned().collect::<BTreeSet<_>>());
        }
        prop_assert!(store.verify(false).unwrap().is_clean());
    }
}

#[test]
fn pin_after_commit_uses_the_import_links_while_the_guard_lives() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    // Imports dag-pb leaves (as Kubo's default CIDv0 add makes them) under a
    // root, keeps the guard or not, corrupts a leaf, then pins the root.
    let pin_after_corruption = |tag: &str, keep_guard: bool| {
        let leaves: Vec<Block> = (0..4).map(|i| node(&[], &format!("{tag} {i}"))).collect();
        let root = node(&leaves.iter().collect::<Vec<_>>(), tag);
        let mut w = store.writer();
        for b in leaves.iter().chain([&root]) {
            w.put(b).unwrap();
        }
        let guard = w.commit().unwrap();
        let guard = keep_guard.then_some(guard);
        corrupt_file(&store, &leaves[2].cid);
        let pinned = store.pin(&root.cid, PinMode::Recursive);
        drop(guard);
        pinned
    };
    // With the guard held the pin learns the leaves' links from the import
    // and reads none of them: it cannot see the corruption.
    pin_after_corruption("kept", true).unwrap();
    assert!(store.inner.import_links.lock().unwrap().is_empty());
    // Without it, it reads them (and so finds the corrupt one).
    let err = pin_after_corruption("dropped", false).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

#[test]
fn pin_with_links_reads_no_block_it_was_told_about_but_needs_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    // dag-pb leaves under a root, stored with no guard left (as fetched blocks are).
    let leaves: Vec<Block> = (0..4).map(|i| node(&[], &format!("fetched {i}"))).collect();
    let root = node(&leaves.iter().collect::<Vec<_>>(), "fetched");
    for b in leaves.iter().chain([&root]) {
        store.put_block(b).unwrap();
    }
    let known: HashMap<Cid, Vec<Cid>> = leaves
        .iter()
        .map(|l| (l.cid, Vec::new()))
        .chain([(root.cid, leaves.iter().map(|l| l.cid).collect())])
        .collect();
    // A missing leaf fails the pin whatever the caller knows.
    assert!(store.delete_block(&leaves[3].cid).unwrap());
    let err = store
        .pin_with_links(&root.cid, PinMode::Recursive, &known)
        .unwrap_err();
    assert!(matches!(err, Error::MissingBlock { .. }), "{err}");
    store.put_block(&leaves[3]).unwrap();
    // A leaf that rotted after the fetch is not read, so not seen; a plain pin would read it.
    corrupt_file(&store, &leaves[1].cid);
    store
        .pin_with_links(&root.cid, PinMode::Recursive, &known)
        .unwrap();
    assert!(store
        .pins()
        .unwrap()
        .contains(&(root.cid, PinMode::Recursive)));
    // What it was told is remembered: unpinning frees every block.
    let freed = store.unpin(&root.cid).unwrap();
    assert_eq!(freed.blocks, 5);
}

#[test]
fn reopen_keeps_a_current_schema_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FsBlockstore::open(dir.path()).unwrap();
        // A repo whose links table is missing gets it back at open.
        let wtx = store.inner.db.begin_write().unwrap();
        assert!(wtx.delete_table(LINKS).unwrap());
        wtx.commit().unwrap();
    }
    let (root, blocks) = file(&[1, 2], "f");
    {
        let store = FsBlockstore::open(dir.path()).unwrap();
        import(&store, &blocks, &root);
        let wtx = store.inner.db.begin_write().unwrap();
        wtx.open_table(meta::INFO)
            .unwrap()
            .insert("version", meta::SCHEMA_VERSION + 1)
            .unwrap();
        wtx.commit().unwrap();
    }
    let err = FsBlockstore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::BadRepo { .. }), "{err}");
    assert!(err.to_string().contains("upgrade wanda-ipfs"), "{err}");
}

#[test]
fn dag_links_agrees_with_pb_links() {
    let leaves: Vec<Block> = (0..3).map(|i| leaf(i, 100)).collect();
    let inner = node(&leaves.iter().collect::<Vec<_>>(), "inner");
    let pb_leaf = node(&[], "a dag-pb leaf");
    let garbage = Block {
        cid: Cid::new_v0(inner.cid.hash().to_owned()).unwrap(),
        data: Bytes::from_static(b"\xff\xff not dag-pb"),
    };
    for b in [&leaves[0], &inner, &pb_leaf, &garbage] {
        let ours = dag_links(&b.cid, &b.data).ok();
        let theirs = crate::unixfs::pb::links(&b.cid, &b.data).ok();
        assert_eq!(ours, theirs, "{}", b.cid);
    }
    assert_eq!(
        dag_links(&inner.cid, &inner.data).unwrap(),
        leaves.iter().map(|b| b.cid).collect::<Vec<_>>()
    );
    assert!(dag_links(&garbage.cid, &garbage.data).is_err());
}

#[test]
fn pinned_recursively_knows_both_spellings_and_not_direct_pins() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let (root, blocks) = file(&[1, 2, 3], "r");
    assert!(!store.pinned_recursively(&root).unwrap());
    import(&store, &blocks, &root);
    assert_eq!(root.version(), Version::V0);
    let v1 = Cid::new_v1(DAG_PB, *root.hash());
    assert!(store.pinned_recursively(&root).unwrap());
    assert!(store.pinned_recursively(&v1).unwrap(), "the CIDv1 spelling");
    // A block inside the DAG is stored but is not itself a pinned root.
    assert!(!store.pinned_recursively(&blocks[0].cid).unwrap());
    store.unpin(&root).unwrap();
    assert!(!store.pinned_recursively(&root).unwrap());

    // A direct pin promises only the root block: not enough to skip fetching ahead.
    let (d, dblocks) = file(&[4, 5], "d");
    let root_block = dblocks.last().unwrap();
    store.put_block(root_block).unwrap();
    store.pin(&d, PinMode::Direct).unwrap();
    assert!(!store.pinned_recursively(&d).unwrap());
}

/// The kernel's page size (4 KiB here, 16 KiB on a Pi 5).
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Pages of `path` resident in the page cache, out of its pages.
#[cfg(target_os = "linux")]
fn resident_pages(path: &std::path::Path) -> (usize, usize) {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let pages = len.div_ceil(page_size());
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore only reports which of its pages are in the page cache.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

#[cfg(target_os = "linux")]
#[test]
fn synced_blocks_leave_the_page_cache_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlockstore::open(dir.path()).unwrap();
    let path_of = |b: &Block| store.inner.layout.block_path(&b.cid.hash().to_bytes()).1;

    let imported = leaf(71, 256 << 10);
    let mut w = store.writer();
    w.put(&imported).unwrap();
    drop(w.commit().unwrap());
    assert_eq!(store.get(&imported.cid).unwrap(), imported.data);
    // Reading it back above cached it again: check a second one unread.
    let unread = leaf(72, 256 << 10);
    let mut w = store.writer();
    w.put(&unread).unwrap();
    drop(w.commit().unwrap());
    let (resident, pages) = resident_pages(&path_of(&unread));
    assert_eq!(pages, (256 << 10) / page_size());
    assert_eq!(
        resident, 0,
        "an imported block's pages were dropped once synced"
    );

    let fetched = leaf(73, 256 << 10);
    let mut w = store.writer().keep_cached();
    w.put(&fetched).unwrap();
    drop(w.commit().unwrap());
    let (resident, pages) = resident_pages(&path_of(&fetched));
    assert_eq!(resident, pages, "a kept writer's block stays cached");
}
