//! [`FsBlockstore`]: blocks as files (flatfs layout, see `flatfs.rs`), pins
//! and reference counts in redb (see `meta.rs`).
//!
//! Crash safety rests on one ordering: a block's bytes are fsync'd before its
//! name becomes visible (temp file, `fdatasync`, rename, fsync of the shard
//! directory), and a pin is committed only after every block of its import is
//! durable. A crash therefore leaves at worst temp files (removed at open) and
//! unpinned orphans (removed by `gc`), never a visible half-written block.
//!
//! Concurrency: `get`/`has` take no lock. Imports write without a lock too;
//! their blocks are protected from deletion by an [`ImportGuard`] until the
//! pin is committed. Everything that changes metadata or deletes blocks holds
//! `meta_lock`, so a pin cannot interleave with a sweep.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cid::Cid;
use multihash::Multihash;
use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::flatfs::{self, io_err, Layout, ShardFiles};
use super::meta::{self, db_err, LINKS, PINS, REFS};
use super::{BlockSink, BlockSource, Error};
use crate::block::{Block, DAG_PB, IDENTITY, RAW};

/// Largest block accepted or read: bitswap's message limit. Kubo's chunkers
/// stay at or under 1 MiB.
pub const MAX_BLOCK_BYTES: u64 = 2 << 20;
/// A writer makes its pending blocks durable after this many blocks ...
const BATCH_BLOCKS: usize = 64;
/// ... or this many bytes, whichever comes first; bounds the page cache and
/// file handles an import holds, and what a crash can cost it.
const BATCH_BYTES: usize = 16 << 20;
/// Threads issuing a batch's fsyncs; they wait on the disk, not the CPU, so
/// more than the Pi's 4 cores would still help, but 8 already overlaps the
/// flushes (see the bench).
const SYNC_THREADS: usize = 8;
/// Sub-directory of the repo with the block files.
const BLOCKS_DIR: &str = "blocks";
/// The metadata database inside the repo.
const DB_FILE: &str = "blockstore.redb";

/// Multihash bytes: the key of a block.
type Key = Box<[u8]>;

/// How a root is pinned, as Kubo's pin types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinMode {
    /// Only the root block itself.
    Direct,
    /// The root and every block reachable from it.
    Recursive,
}

impl PinMode {
    fn to_byte(self) -> u8 {
        match self {
            PinMode::Direct => meta::MODE_DIRECT,
            PinMode::Recursive => meta::MODE_RECURSIVE,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            meta::MODE_DIRECT => Some(PinMode::Direct),
            meta::MODE_RECURSIVE => Some(PinMode::Recursive),
            _ => None,
        }
    }
}

/// What `stat` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub blocks: u64,
    /// Sum of the block sizes (not of the disk blocks they occupy).
    pub bytes: u64,
    pub pins: u64,
    pub path: PathBuf,
    /// Space available to this user on the file system holding the repo.
    pub free_bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    /// Blocks whose bytes do not hash to their name (as CIDv1 raw: the store
    /// knows multihashes, not codecs).
    pub corrupt: Vec<Cid>,
    /// How many of `corrupt` were removed.
    pub removed: u64,
    /// Blocks some pin needs that are not on disk (as CIDv1 raw).
    pub missing: Vec<Cid>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt.len() as u64 == self.removed && self.missing.is_empty()
    }
}

/// What `gc` or `unpin` freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blocks: u64,
    pub bytes: u64,
}

/// A durable, crash-safe block store in a repo directory. Cheap to clone;
/// all clones share one store.
#[derive(Clone)]
pub struct FsBlockstore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    layout: Layout,
    db: Database,
    db_path: PathBuf,
    /// Held by everything that writes metadata or deletes block files.
    meta_lock: Mutex<()>,
    /// Keys protected by live [`ImportGuard`]s, with how many guards hold each.
    guards: Mutex<HashMap<Key, usize>>,
    /// Shard directories known to exist durably.
    shard_ready: Box<[AtomicBool]>,
    tmp_seq: AtomicU64,
}

impl std::fmt::Debug for FsBlockstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlockstore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stand-in CID for a bare multihash.
fn raw_cid(mh: Multihash<64>) -> Cid {
    Cid::new_v1(RAW, mh)
}

fn key_to_cid(key: &[u8]) -> Cid {
    match Multihash::<64>::from_bytes(key) {
        Ok(mh) => raw_cid(mh),
        // Keys are written from multihashes; show something rather than fail.
        Err(_) => raw_cid(crate::block::multihash(key)),
    }
}

/// The children of a dag-pb block.
fn dag_links(cid: &Cid, data: &Bytes) -> Result<Vec<Cid>, Error> {
    crate::unixfs::pb::links(cid, data).map_err(|source| Error::BadNode {
        cid: *cid,
        source: Box::new(source),
    })
}

impl FsBlockstore {
    /// Opens the block store in `dir`, creating it if needed, and removes the
    /// temp files a crash left behind.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(|e| io_err("create repo directory", dir, e))?;
        let blocks = dir.join(BLOCKS_DIR);
        flatfs::create_dir_durable(&blocks)?;
        let sharding = blocks.join(flatfs::SHARDING_FILE);
        match fs::read_to_string(&sharding) {
            Ok(s) if s == flatfs::SHARDING => {}
            Ok(s) => {
                return Err(Error::BadRepo {
                    path: dir.to_path_buf(),
                    reason: format!("blocks are sharded as {:?}", s.trim()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                flatfs::write_file_durable(&sharding, flatfs::SHARDING.as_bytes())?
            }
            Err(e) => return Err(io_err("read", &sharding, e)),
        }

        // The database's file lock is what keeps two processes from sharing a
        // repo, so take it before touching temp files another one may own.
        let db_path = dir.join(DB_FILE);
        let db = redb::Builder::new()
            .set_cache_size(meta::CACHE_BYTES)
            .create(&db_path)
            .map_err(db_err("open", &db_path))?;
        init_schema(&db, &db_path, dir)?;

        let layout = Layout::new(blocks);
        flatfs::create_dir_durable(&layout.tmp)?;
        let removed = flatfs::clean_tmp(&layout.tmp)?;
        if removed > 0 {
            tracing::info!(removed, "removed temp files of an interrupted import");
        }
        // Shard directories a crashed run created may not be durable yet.
        flatfs::sync_dir(&layout.blocks)?;
        let shard_ready: Box<[AtomicBool]> = (0..flatfs::SHARDS)
            .map(|_| AtomicBool::new(false))
            .collect();
        for d in layout.shard_dirs()? {
            if let Some(i) = d
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(flatfs::shard_index)
            {
                shard_ready[i].store(true, Ordering::Relaxed);
            }
        }
        Ok(FsBlockstore {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
                layout,
                db,
                db_path,
                meta_lock: Mutex::new(()),
                guards: Mutex::new(HashMap::new()),
                shard_ready,
                tmp_seq: AtomicU64::new(0),
            }),
        })
    }

    /// The repo directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// A handle for one import: blocks put through it are protected from GC
    /// until [`BlockWriter::finish`] pins the root (or the guard is dropped).
    pub fn writer(&self) -> BlockWriter {
        BlockWriter {
            store: self.clone(),
            guard: ImportGuard::new(self.inner.clone()),
            pending: Vec::new(),
            pending_bytes: 0,
            dedup_shards: BTreeSet::new(),
            links: HashMap::new(),
        }
    }

    /// Stores one block durably (`block put`). It is not pinned: pin it, or
    /// the next `gc` removes it.
    pub fn put_block(&self, block: &Block) -> Result<(), Error> {
        let mut w = self.writer();
        w.put(block)?;
        w.flush()
    }

    /// Whether the block named by `cid` (any version/codec) is stored.
    pub fn has(&self, cid: &Cid) -> Result<bool, Error> {
        if cid.hash().code() == IDENTITY {
            return Ok(true);
        }
        let (_, path) = self.inner.layout.block_path(&cid.hash().to_bytes());
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", &path, e)),
        }
    }

    /// Every stored block, as CIDv1 raw (the store keeps multihashes, not
    /// codecs), shard by shard.
    pub fn list(&self) -> Result<BlockIter, Error> {
        let mut dirs = self.inner.layout.shard_dirs()?;
        dirs.reverse();
        Ok(BlockIter {
            dirs,
            current: None,
        })
    }

    /// Removes one block (`block rm`). Refuses pinned blocks and blocks of an
    /// import in progress. Returns whether it was there.
    pub fn delete_block(&self, cid: &Cid) -> Result<bool, Error> {
        let key: Key = cid.hash().to_bytes().into();
        let _m = lock(&self.inner.meta_lock);
        let rtx = self
            .inner
            .db
            .begin_read()
            .map_err(self.db_err("begin read"))?;
        let refs = rtx.open_table(REFS).map_err(self.db_err("open refs"))?;
        if refs.get(&*key).map_err(self.db_err("read refs"))?.is_some() {
            return Err(Error::Pinned(*cid));
        }
        drop(refs);
        drop(rtx);
        let (_, path) = self.inner.layout.block_path(&key);
        match self.inner.delete_unless_guarded(&key, &path)? {
            Deleted::Yes(_) => {}
            Deleted::Absent => return Ok(false),
            Deleted::Guarded => return Err(Error::InUse(*cid)),
        }
        let wtx = self
            .inner
            .db
            .begin_write()
            .map_err(self.db_err("begin write"))?;
        {
            let mut links = wtx.open_table(LINKS).map_err(self.db_err("open links"))?;
            links.remove(&*key).map_err(self.db_err("remove links"))?;
        }
        wtx.commit().map_err(self.db_err("commit"))?;
        Ok(true)
    }

    /// Pins `root`: recursively (the whole DAG, which must be present) or
    /// directly (the root block only). Re-pinning is a no-op; pinning
    /// directly what is pinned recursively keeps the recursive pin.
    pub fn pin(&self, root: &Cid, mode: PinMode) -> Result<(), Error> {
        self.pin_with_hint(root, mode, &HashMap::new())
    }

    fn pin_with_hint(
        &self,
        root: &Cid,
        mode: PinMode,
        hint: &HashMap<Key, Vec<Cid>>,
    ) -> Result<(), Error> {
        let _m = lock(&self.inner.meta_lock);
        let wtx = self
            .inner
            .db
            .begin_write()
            .map_err(self.db_err("begin write"))?;
        {
            let mut pins = wtx.open_table(PINS).map_err(self.db_err("open pins"))?;
            let mut refs = wtx.open_table(REFS).map_err(self.db_err("open refs"))?;
            let mut links = wtx.open_table(LINKS).map_err(self.db_err("open links"))?;
            let root_bytes = root.to_bytes();
            let old = pins
                .get(&*root_bytes)
                .map_err(self.db_err("read pins"))?
                .map(|v| v.value());
            let old = old.and_then(PinMode::from_byte);
            if old == Some(mode) || old == Some(PinMode::Recursive) {
                return Ok(());
            }
            let walk = self.walk(&links, root, mode, hint, true)?;
            if let Some(old) = old {
                let old_walk = self.walk(&links, root, old, hint, false)?;
                decrement(&mut refs, &old_walk.keys, self)?;
            }
            for key in &walk.keys {
                let n = refs
                    .get(&**key)
                    .map_err(self.db_err("read refs"))?
                    .map_or(0, |v| v.value());
                refs.insert(&**key, n + 1)
                    .map_err(self.db_err("write refs"))?;
            }
            for (key, children) in &walk.learned {
                links
                    .insert(&**key, &*meta::encode_links(children))
                    .map_err(self.db_err("write links"))?;
            }
            pins.insert(&*root_bytes, mode.to_byte())
                .map_err(self.db_err("write pins"))?;
        }
        wtx.commit().map_err(self.db_err("commit pin"))
    }

    /// Removes the pin on `root` and deletes the blocks no other pin needs
    /// (the path taken once a cluster confirms replicas).
    pub fn unpin(&self, root: &Cid) -> Result<GcReport, Error> {
        let _m = lock(&self.inner.meta_lock);
        let wtx = self
            .inner
            .db
            .begin_write()
            .map_err(self.db_err("begin write"))?;
        let zeroed = {
            let mut pins = wtx.open_table(PINS).map_err(self.db_err("open pins"))?;
            let mut refs = wtx.open_table(REFS).map_err(self.db_err("open refs"))?;
            let mut links = wtx.open_table(LINKS).map_err(self.db_err("open links"))?;
            let mode = pins
                .remove(&*root.to_bytes())
                .map_err(self.db_err("remove pin"))?
                .map(|v| v.value())
                .ok_or(Error::NotPinned(*root))?;
            let mode = PinMode::from_byte(mode).unwrap_or(PinMode::Recursive);
            let walk = self.walk(&links, root, mode, &HashMap::new(), false)?;
            let zeroed = decrement(&mut refs, &walk.keys, self)?;
            for key in &zeroed {
                links.remove(&**key).map_err(self.db_err("remove links"))?;
            }
            zeroed
        };
        wtx.commit().map_err(self.db_err("commit unpin"))?;
        // Files go only after the metadata no longer needs them.
        let mut report = GcReport::default();
        for key in zeroed {
            let (_, path) = self.inner.layout.block_path(&key);
            if let Deleted::Yes(n) = self.inner.delete_unless_guarded(&key, &path)? {
                report.blocks += 1;
                report.bytes += n;
            }
        }
        Ok(report)
    }

    /// Pinned roots and how they are pinned.
    pub fn pins(&self) -> Result<Vec<(Cid, PinMode)>, Error> {
        let rtx = self
            .inner
            .db
            .begin_read()
            .map_err(self.db_err("begin read"))?;
        let pins = rtx.open_table(PINS).map_err(self.db_err("open pins"))?;
        let mut out = Vec::new();
        for item in pins.iter().map_err(self.db_err("list pins"))? {
            let (k, v) = item.map_err(self.db_err("list pins"))?;
            let cid = Cid::try_from(k.value()).map_err(|e| Error::Meta(format!("pin key: {e}")))?;
            let mode = PinMode::from_byte(v.value())
                .ok_or_else(|| Error::Meta(format!("pin {cid} has unknown mode {}", v.value())))?;
            out.push((cid, mode));
        }
        Ok(out)
    }

    /// Deletes every block that no pin needs and no import guards, and
    /// rebuilds the reference counts from the pins (repairing any drift).
    pub fn gc(&self) -> Result<GcReport, Error> {
        let _m = lock(&self.inner.meta_lock);
        let wtx = self
            .inner
            .db
            .begin_write()
            .map_err(self.db_err("begin write"))?;
        let mut report = GcReport::default();
        {
            let pins = wtx.open_table(PINS).map_err(self.db_err("open pins"))?;
            let mut refs = wtx.open_table(REFS).map_err(self.db_err("open refs"))?;
            let mut links = wtx.open_table(LINKS).map_err(self.db_err("open links"))?;
            let mut counts: HashMap<Key, u64> = HashMap::new();
            let mut learned = Vec::new();
            for item in pins.iter().map_err(self.db_err("list pins"))? {
                let (k, v) = item.map_err(self.db_err("list pins"))?;
                let Ok(root) = Cid::try_from(k.value()) else {
                    tracing::warn!("unreadable pin key ignored by gc");
                    continue;
                };
                let mode = PinMode::from_byte(v.value()).unwrap_or(PinMode::Recursive);
                let walk = self.walk(&links, &root, mode, &HashMap::new(), false)?;
                for key in walk.keys {
                    *counts.entry(key).or_default() += 1;
                }
                learned.extend(walk.learned);
            }
            self.inner.layout.for_each_block(|mh, path| {
                let key: Key = mh.to_bytes().into();
                if !counts.contains_key(&key) {
                    if let Deleted::Yes(n) = self.inner.delete_unless_guarded(&key, &path)? {
                        report.blocks += 1;
                        report.bytes += n;
                    }
                }
                Ok(())
            })?;
            refs.retain(|_, _| false)
                .map_err(self.db_err("clear refs"))?;
            for (key, n) in &counts {
                refs.insert(&**key, *n).map_err(self.db_err("write refs"))?;
            }
            links
                .retain(|k, _| counts.contains_key(k))
                .map_err(self.db_err("prune links"))?;
            for (key, children) in &learned {
                links
                    .insert(&**key, &*meta::encode_links(children))
                    .map_err(self.db_err("write links"))?;
            }
        }
        wtx.commit().map_err(self.db_err("commit gc"))?;
        Ok(report)
    }

    /// Re-hashes every block; with `remove`, deletes the corrupt ones. Also
    /// lists blocks that pins need but the disk lacks.
    pub fn verify(&self, remove: bool) -> Result<VerifyReport, Error> {
        let mut report = VerifyReport::default();
        self.inner.layout.for_each_block(|mh, path| {
            report.checked += 1;
            let cid = raw_cid(mh);
            let ok = match read_block(&cid, &path) {
                Ok(data) => crate::block::verify(&cid, &data).is_ok(),
                Err(Error::NotFound(_)) => return Ok(()),
                Err(Error::TooLarge { .. }) => false,
                Err(e) => return Err(e),
            };
            if !ok {
                tracing::warn!(%cid, path = %path.display(), "corrupt block");
                report.corrupt.push(cid);
                if remove {
                    match fs::remove_file(&path) {
                        Ok(()) => report.removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("remove corrupt block", &path, e)),
                    }
                }
            }
            Ok(())
        })?;
        let rtx = self
            .inner
            .db
            .begin_read()
            .map_err(self.db_err("begin read"))?;
        let refs = rtx.open_table(REFS).map_err(self.db_err("open refs"))?;
        for item in refs.iter().map_err(self.db_err("list refs"))? {
            let (k, _) = item.map_err(self.db_err("list refs"))?;
            let cid = key_to_cid(k.value());
            if !self.has(&cid)? {
                report.missing.push(cid);
            }
        }
        Ok(report)
    }

    /// Block count and size, pins, and free space.
    pub fn stat(&self) -> Result<Stat, Error> {
        let mut blocks = 0;
        let mut bytes = 0;
        self.inner.layout.for_each_block(|_, path| {
            match fs::metadata(&path) {
                Ok(m) => {
                    blocks += 1;
                    bytes += m.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &path, e)),
            }
            Ok(())
        })?;
        let rtx = self
            .inner
            .db
            .begin_read()
            .map_err(self.db_err("begin read"))?;
        let pins = rtx
            .open_table(PINS)
            .map_err(self.db_err("open pins"))?
            .len()
            .map_err(self.db_err("count pins"))?;
        Ok(Stat {
            blocks,
            bytes,
            pins,
            path: self.inner.root.clone(),
            free_bytes: free_space(&self.inner.root)?,
        })
    }

    fn db_err<E: Into<redb::Error>>(&self, op: &'static str) -> impl Fn(E) -> Error {
        db_err(op, &self.inner.db_path)
    }

    /// The distinct blocks a pin of `root` in `mode` covers. With `strict`
    /// (pinning), every block must be present; otherwise (unpin, gc) absent
    /// blocks are skipped, since their children cannot be learned.
    fn walk(
        &self,
        links: &impl ReadableTable<&'static [u8], &'static [u8]>,
        root: &Cid,
        mode: PinMode,
        hint: &HashMap<Key, Vec<Cid>>,
        strict: bool,
    ) -> Result<Walk, Error> {
        let mut walk = Walk::default();
        let mut seen: HashSet<Key> = HashSet::new();
        let mut stack = vec![*root];
        while let Some(cid) = stack.pop() {
            let mh = cid.hash();
            let recurse = mode == PinMode::Recursive && cid.codec() != RAW;
            if mh.code() == IDENTITY {
                // Inline blocks are never stored but may link to stored ones.
                if recurse {
                    let data = Bytes::copy_from_slice(mh.digest());
                    stack.extend(dag_links(&cid, &data)?);
                }
                continue;
            }
            let key: Key = mh.to_bytes().into();
            if !seen.insert(key.clone()) {
                continue;
            }
            if strict && !self.has(&cid)? {
                return Err(Error::MissingBlock {
                    root: Box::new(*root),
                    missing: Box::new(cid),
                });
            }
            walk.keys.push(key.clone());
            if !recurse {
                continue;
            }
            let indexed = links.get(&*key).map_err(self.db_err("read links"))?;
            let children = if let Some(v) = indexed {
                meta::decode_links(v.value()).ok_or_else(|| {
                    Error::Meta(format!("links index entry of {cid} is unreadable; run gc"))
                })?
            } else if let Some(c) = hint.get(&key) {
                walk.learned.push((key, c.clone()));
                c.clone()
            } else {
                match self.get(&cid) {
                    Ok(data) => {
                        if cid.codec() != DAG_PB && !strict {
                            // Not a DAG we understand: keep the block, skip its children.
                            continue;
                        }
                        let c = dag_links(&cid, &data)?;
                        walk.learned.push((key, c.clone()));
                        c
                    }
                    Err(Error::NotFound(_)) if !strict => {
                        tracing::warn!(%cid, root = %root, "pinned block missing; its children are not counted");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            stack.extend(children);
        }
        Ok(walk)
    }
}

#[derive(Default)]
struct Walk {
    keys: Vec<Key>,
    /// Links index entries the walk had to compute.
    learned: Vec<(Key, Vec<Cid>)>,
}

/// Decrements the reference counts of `keys`; returns those that reached 0
/// (their entries are removed).
fn decrement(
    refs: &mut redb::Table<&'static [u8], u64>,
    keys: &[Key],
    store: &FsBlockstore,
) -> Result<Vec<Key>, Error> {
    let mut zeroed = Vec::new();
    for key in keys {
        let n = refs
            .get(&**key)
            .map_err(store.db_err("read refs"))?
            .map_or(0, |v| v.value());
        if n <= 1 {
            refs.remove(&**key).map_err(store.db_err("write refs"))?;
            zeroed.push(key.clone());
        } else {
            refs.insert(&**key, n - 1)
                .map_err(store.db_err("write refs"))?;
        }
    }
    Ok(zeroed)
}

fn init_schema(db: &Database, db_path: &Path, dir: &Path) -> Result<(), Error> {
    let wtx = db.begin_write().map_err(db_err("begin write", db_path))?;
    {
        wtx.open_table(PINS)
            .map_err(db_err("create table", db_path))?;
        wtx.open_table(REFS)
            .map_err(db_err("create table", db_path))?;
        wtx.open_table(LINKS)
            .map_err(db_err("create table", db_path))?;
        let mut info = wtx
            .open_table(meta::INFO)
            .map_err(db_err("create table", db_path))?;
        let version = info
            .get("version")
            .map_err(db_err("read schema version", db_path))?
            .map(|v| v.value());
        match version {
            None => {
                info.insert("version", meta::SCHEMA_VERSION)
                    .map_err(db_err("write schema version", db_path))?;
            }
            Some(meta::SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Error::BadRepo {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "metadata schema version {v}, this build knows {}: upgrade wanda-ipfs",
                        meta::SCHEMA_VERSION
                    ),
                })
            }
        }
    }
    wtx.commit().map_err(db_err("commit schema", db_path))
}

enum Deleted {
    Yes(u64),
    Absent,
    Guarded,
}

impl Inner {
    /// Deletes a block file unless an import guards it. The check and the
    /// unlink happen under the guard lock, and an import registers a key
    /// before it looks for the file, so an import that found the block
    /// already stored cannot lose it to a concurrent sweep.
    fn delete_unless_guarded(&self, key: &[u8], path: &Path) -> Result<Deleted, Error> {
        let guards = lock(&self.guards);
        if guards.contains_key(key) {
            return Ok(Deleted::Guarded);
        }
        let len = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Deleted::Absent),
            Err(e) => return Err(io_err("stat", path, e)),
        };
        match fs::remove_file(path) {
            Ok(()) => Ok(Deleted::Yes(len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Deleted::Absent),
            Err(e) => Err(io_err("remove block", path, e)),
        }
    }

    /// Makes sure shard `idx` exists durably.
    fn ensure_shard(&self, idx: usize) -> Result<(), Error> {
        if self.shard_ready[idx].load(Ordering::Acquire) {
            return Ok(());
        }
        flatfs::create_dir_durable(&self.layout.shard_dir(idx))?;
        self.shard_ready[idx].store(true, Ordering::Release);
        Ok(())
    }
}

fn read_block(cid: &Cid, path: &Path) -> Result<Bytes, Error> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound(*cid)),
        Err(e) => return Err(io_err("open block", path, e)),
    };
    let len = f.metadata().map_err(|e| io_err("stat", path, e))?.len();
    if len > MAX_BLOCK_BYTES {
        return Err(Error::TooLarge {
            cid: *cid,
            len,
            max: MAX_BLOCK_BYTES,
        });
    }
    // `len` fits: it is at most MAX_BLOCK_BYTES.
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| io_err("read block", path, e))?;
    Ok(Bytes::from(buf))
}

fn free_space(path: &Path) -> Result<u64, Error> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        op: "statvfs",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs
    // that the call fills in; it is read only on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err("statvfs", path, io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

impl BlockSource for FsBlockstore {
    /// Reads and verifies a block; a CIDv0 and CIDv1 of the same bytes name
    /// the same block, whatever codec was used to store it.
    fn get(&self, cid: &Cid) -> Result<Bytes, Error> {
        let mh = cid.hash();
        if mh.code() == IDENTITY {
            return Ok(Bytes::copy_from_slice(mh.digest()));
        }
        let (_, path) = self.inner.layout.block_path(&mh.to_bytes());
        let data = read_block(cid, &path)?;
        crate::block::verify(cid, &data)?;
        Ok(data)
    }
}

/// Protects the blocks of an import from `gc`/`unpin` until it is dropped.
/// Drop it only after the import's root is pinned (or abandoned).
#[must_use = "dropping the guard lets gc delete the import's blocks before they are pinned"]
pub struct ImportGuard {
    store: Arc<Inner>,
    keys: HashSet<Key>,
}

impl ImportGuard {
    fn new(store: Arc<Inner>) -> Self {
        ImportGuard {
            store,
            keys: HashSet::new(),
        }
    }

    /// Protects `key`; false if this guard already did.
    fn add(&mut self, key: &Key) -> bool {
        if self.keys.contains(key) {
            return false;
        }
        *lock(&self.store.guards).entry(key.clone()).or_default() += 1;
        self.keys.insert(key.clone());
        true
    }

    fn remove(&mut self, key: &Key) {
        if self.keys.remove(key) {
            release(&mut lock(&self.store.guards), key);
        }
    }

    /// Whether this guard protects the block `cid` names.
    pub fn protects(&self, cid: &Cid) -> bool {
        self.keys.contains(&*cid.hash().to_bytes())
    }

    /// Number of blocks protected.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn release(guards: &mut HashMap<Key, usize>, key: &Key) {
    if let Some(n) = guards.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            guards.remove(key);
        }
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        let mut guards = lock(&self.store.guards);
        for key in &self.keys {
            release(&mut guards, key);
        }
    }
}

impl std::fmt::Debug for ImportGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImportGuard({} blocks)", self.keys.len())
    }
}

/// One import's writer: a [`BlockSink`] whose blocks become durable in
/// batches, and visible only once durable.
pub struct BlockWriter {
    store: FsBlockstore,
    guard: ImportGuard,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Shards of blocks found already stored: their directory is fsync'd at
    /// the next flush, as whoever renamed them may have crashed before.
    dedup_shards: BTreeSet<usize>,
    /// Children of the dag-pb blocks written, so pinning needs no re-read.
    links: HashMap<Key, Vec<Cid>>,
}

struct Pending {
    key: Key,
    file: File,
    tmp: PathBuf,
    dst: PathBuf,
    shard: usize,
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("guarded", &self.guard.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl BlockSink for BlockWriter {
    /// Writes the block to a temp file; it becomes durable and visible at
    /// the next batch boundary or [`BlockWriter::flush`]. Trusts the CID (as
    /// [`Block::new`] computed it); `get` and `verify` check it.
    fn put(&mut self, block: &Block) -> Result<(), Error> {
        let mh = block.cid.hash();
        if mh.code() == IDENTITY {
            return Ok(());
        }
        let len = block.data.len() as u64;
        if len > MAX_BLOCK_BYTES {
            return Err(Error::TooLarge {
                cid: block.cid,
                len,
                max: MAX_BLOCK_BYTES,
            });
        }
        let key: Key = mh.to_bytes().into();
        // Guard first, look second: see `delete_unless_guarded`.
        if !self.guard.add(&key) {
            return Ok(());
        }
        if let Err(e) = self.stage(&key, block) {
            self.guard.remove(&key);
            return Err(e);
        }
        if self.pending.len() >= BATCH_BLOCKS || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

impl BlockWriter {
    fn stage(&mut self, key: &Key, block: &Block) -> Result<(), Error> {
        if block.cid.codec() == DAG_PB {
            // Ill-formed nodes are stored all the same; pinning reports them.
            if let Ok(children) = crate::unixfs::pb::links(&block.cid, &block.data) {
                self.links.insert(key.clone(), children);
            }
        }
        let inner = &self.store.inner;
        let (shard, dst) = inner.layout.block_path(key);
        if dst.is_file() {
            self.dedup_shards.insert(shard);
            return Ok(());
        }
        let seq = inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = inner.layout.tmp.join(format!(
            "{}.{}.{seq}",
            flatfs::key_of(key),
            std::process::id()
        ));
        let file = flatfs::write_new(&tmp, &block.data)?;
        flatfs::start_writeback(&file);
        self.pending_bytes += block.data.len();
        self.pending.push(Pending {
            key: key.clone(),
            file,
            tmp,
            dst,
            shard,
        });
        Ok(())
    }

    /// Makes every block put so far durable and visible.
    pub fn flush(&mut self) -> Result<(), Error> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        match self.commit_batch(&batch) {
            Ok(()) => {
                self.dedup_shards.clear();
                Ok(())
            }
            Err(e) => {
                for p in batch {
                    drop(p.file);
                    let _ = fs::remove_file(&p.tmp);
                    // A retry must write it again.
                    self.guard.remove(&p.key);
                }
                Err(e)
            }
        }
    }

    fn commit_batch(&self, batch: &[Pending]) -> Result<(), Error> {
        let inner = &self.store.inner;
        parallel(batch, |p| {
            p.file
                .sync_data()
                .map_err(|e| io_err("fsync block", &p.tmp, e))
        })?;
        let mut shards = self.dedup_shards.clone();
        for p in batch {
            inner.ensure_shard(p.shard)?;
            fs::rename(&p.tmp, &p.dst).map_err(|e| io_err("rename block into place", &p.dst, e))?;
            shards.insert(p.shard);
        }
        let dirs: Vec<PathBuf> = shards
            .into_iter()
            .map(|s| inner.layout.shard_dir(s))
            .collect();
        parallel(&dirs, |d| flatfs::sync_dir(d))
    }

    /// Flushes, then pins `root` (whose blocks need not all come from this
    /// import), then releases the guard: the end of an import.
    pub fn finish(mut self, root: &Cid, mode: PinMode) -> Result<(), Error> {
        self.flush()?;
        self.store.pin_with_hint(root, mode, &self.links)
    }

    /// Flushes and hands back the guard, for a caller that pins later; keep
    /// the guard until [`FsBlockstore::pin`] has returned.
    pub fn commit(mut self) -> Result<ImportGuard, Error> {
        self.flush()?;
        let empty = ImportGuard::new(self.store.inner.clone());
        Ok(std::mem::replace(&mut self.guard, empty))
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        // Blocks never flushed were never reported: discard them.
        for p in self.pending.drain(..) {
            drop(p.file);
            let _ = fs::remove_file(&p.tmp);
        }
    }
}

/// Runs `f` on every item from up to [`SYNC_THREADS`] threads; the first
/// error wins. fsyncs issued together share journal commits and disk cache
/// flushes (ext4's jbd2 batches them), where one after another each waits
/// for its own.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<(), Error> + Sync) -> Result<(), Error> {
    if items.len() <= 1 {
        return items.iter().try_for_each(&f);
    }
    let per = items.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| s.spawn(|| chunk.iter().try_for_each(&f)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Iterator over the stored blocks (see [`FsBlockstore::list`]).
pub struct BlockIter {
    dirs: Vec<PathBuf>,
    current: Option<ShardFiles>,
}

impl Iterator for BlockIter {
    type Item = Result<Cid, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(files) = &mut self.current {
                match files.next() {
                    Some(Ok((mh, _))) => return Some(Ok(raw_cid(mh))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.current = None,
                }
            }
            let dir = self.dirs.pop()?;
            match ShardFiles::open(&dir) {
                Ok(f) => self.current = Some(f),
                // A shard removed under us holds nothing to list.
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
