//! [`FsBlockstore`]: blocks as files (flatfs layout, see `flatfs.rs`), pins
//! and reference counts in redb (see `meta.rs`).
//!
//! Crash safety rests on two orderings: a block's bytes are fsync'd before its
//! name becomes visible (temp file, `fdatasync`, rename), and its name is
//! made durable (fsync of the shard directory) before anything that relies on
//! the block is reported or recorded: the end of an import, `put_block`, a
//! pin. A crash therefore leaves at worst temp files (removed at open) and
//! unpinned orphans (removed by `gc`), never a visible half-written block nor
//! a pin without its blocks. [`BlockWriter`] explains why the directory
//! fsyncs can wait for the end of an import.
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
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};

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
/// A writer hands its pending blocks to its sync thread after this many
/// blocks ...
const BATCH_BLOCKS: usize = 64;
/// ... or this many bytes, whichever comes first; bounds the page cache and
/// file handles an import holds.
const BATCH_BYTES: usize = 16 << 20;
/// Threads issuing a batch's fsyncs; they wait on the disk, not the CPU, so
/// more than the Pi's 4 cores would still help, but 8 already overlaps the
/// flushes (see the bench).
const SYNC_THREADS: usize = 8;
/// Full batches that may wait while a writer's sync thread syncs another: one
/// lets a slow fsync pass without stalling the import, and keeps what an
/// import has dirtied but not synced to about three batches (48 MiB).
const SYNC_QUEUE: usize = 1;
/// Threads fsyncing shard directories at a flush (up to one per shard
/// touched). On ext4 with a journal one commit covers every rename, so once
/// the first fsync has waited for it the others have little left to wait
/// for; without a journal each writes its directory and flushes the disk
/// cache, and the threads overlap those flushes.
const DIR_SYNC_THREADS: usize = 8;
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
    /// Children of the dag-pb blocks that guarded imports wrote, so pinning
    /// their DAG (by `finish`, or by `pin` while the caller holds the guard
    /// `commit` returned) needs no re-read and re-hash of every node. An
    /// entry goes when the last guard of its key does. Locked after
    /// `guards` when both are held.
    import_links: Mutex<HashMap<Key, Vec<Cid>>>,
    /// Per shard directory: whether it exists durably, and how far its
    /// entries are known to be durable (see [`Shard`]).
    shards: Box<[Shard]>,
    tmp_seq: AtomicU64,
}

/// What the store knows about one shard directory.
///
/// A block is renamed into its shard as soon as its bytes are durable, but
/// the rename itself is durable only once the directory is fsync'd, and that
/// fsync is deferred to the end of the import (see [`BlockWriter`]). Two
/// counters let anything about to report blocks durable (a writer's flush, a
/// pin) fsync exactly the shards that still need it, including those another
/// live writer has renamed into but not yet synced.
#[derive(Default)]
struct Shard {
    /// The directory exists and its entry in `blocks/` is durable.
    ready: AtomicBool,
    /// Renames into the directory so far, counted after each returns. Set to
    /// 1 at open for existing shards: a crashed process may have renamed
    /// into them without the fsync.
    renamed: AtomicU64,
    /// The `renamed` count read before the latest completed fsync of the
    /// directory: every rename up to it is durable.
    synced: AtomicU64,
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
        let shards: Box<[Shard]> = (0..flatfs::SHARDS).map(|_| Shard::default()).collect();
        for d in layout.shard_dirs()? {
            if let Some(i) = d
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(flatfs::shard_index)
            {
                shards[i].ready.store(true, Ordering::Relaxed);
                shards[i].renamed.store(1, Ordering::Relaxed);
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
                import_links: Mutex::new(HashMap::new()),
                shards,
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
            unsynced: BTreeSet::new(),
            sync: None,
            pid: std::process::id(),
            drop_cached: true,
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
        Ok(self.size(cid)?.is_some())
    }

    /// The size of the block named by `cid` if it is stored, from the file's
    /// length (one `stat`, as `has`): lets bitswap answer a want-have for a
    /// small block with the block itself without reading it.
    pub fn size(&self, cid: &Cid) -> Result<Option<u64>, Error> {
        if cid.hash().code() == IDENTITY {
            return Ok(Some(cid.hash().digest().len() as u64));
        }
        let (_, path) = self.inner.layout.block_path(&cid.hash().to_bytes());
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
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
        let refs = self.read_table(REFS, "open refs")?;
        if refs.get(&*key).map_err(self.db_err("read refs"))?.is_some() {
            return Err(Error::Pinned(*cid));
        }
        // The read snapshot ends here, before the file goes.
        drop(refs);
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
        self.pin_with_links(root, mode, &HashMap::new())
    }

    /// [`FsBlockstore::pin`], told the links of dag-pb nodes the caller
    /// has just parsed (a fetch walked the DAG already), so the walk need not
    /// read those blocks back; every block must still be present. Without
    /// this, pinning a fetched 256 MiB CIDv0 file read and hashed all of it a
    /// second time (its leaves are dag-pb too).
    pub fn pin_with_links(
        &self,
        root: &Cid,
        mode: PinMode,
        known: &HashMap<Cid, Vec<Cid>>,
    ) -> Result<(), Error> {
        let known: HashMap<Vec<u8>, &Vec<Cid>> = known
            .iter()
            .map(|(c, l)| (c.hash().to_bytes(), l))
            .collect();
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
            // Locked per lookup: a walk may read blocks from disk, and
            // imports take this lock for each dag-pb node they write.
            let hint = |key: &[u8]| {
                let imported = lock(&self.inner.import_links).get(key).cloned();
                imported.or_else(|| known.get(key).map(|l| l.to_vec()))
            };
            let walk = self.walk(&links, root, mode, &hint, true)?;
            if let Some(old) = old {
                let old_walk = self.walk(&links, root, old, &hint, false)?;
                decrement(&mut refs, &old_walk.keys, self)?;
            }
            // A block another import made visible may not have had its
            // directory fsync'd yet; the pin must not outlive it in a crash.
            self.inner.sync_shards(
                walk.keys
                    .iter()
                    .map(|k| flatfs::shard_of(&flatfs::key_of(k)))
                    .collect::<BTreeSet<_>>(),
            )?;
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
            let walk = self.walk(&links, root, mode, &|_| None, false)?;
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
        let pins = self.read_table(PINS, "open pins")?;
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

    /// Whether `root` (as given, or its CIDv0/CIDv1 twin) is pinned recursively: then its whole
    /// DAG is stored here, which a reader can rely on to skip fetching ahead.
    pub fn pinned_recursively(&self, root: &Cid) -> Result<bool, Error> {
        let pins = self.read_table(PINS, "open pins")?;
        for cid in [Some(*root), twin(root)].into_iter().flatten() {
            let mode = pins
                .get(&*cid.to_bytes())
                .map_err(self.db_err("read pins"))?
                .and_then(|v| PinMode::from_byte(v.value()));
            if mode == Some(PinMode::Recursive) {
                return Ok(true);
            }
        }
        Ok(false)
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
                let walk = self.walk(&links, &root, mode, &|_| None, false)?;
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
        let refs = self.read_table(REFS, "open refs")?;
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
        let pins = self
            .read_table(PINS, "open pins")?
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

    /// A table as of now, in a read transaction of its own (the table keeps it alive).
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: redb::TableDefinition<K, V>,
        what: &'static str,
    ) -> Result<redb::ReadOnlyTable<K, V>, Error> {
        let rtx = self
            .inner
            .db
            .begin_read()
            .map_err(self.db_err("begin read"))?;
        rtx.open_table(table).map_err(self.db_err(what))
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
        hint: &dyn Fn(&[u8]) -> Option<Vec<Cid>>,
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
            } else if let Some(c) = hint(&key) {
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
    // A write would cost every open a durable commit (fsyncs) for nothing.
    if schema_is_current(db, db_path)? {
        return Ok(());
    }
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

/// Whether every table exists and the schema version is this build's; any
/// other answer goes through `init_schema`'s write, which creates what is
/// missing or reports a version it does not know.
fn schema_is_current(db: &Database, db_path: &Path) -> Result<bool, Error> {
    let rtx = db.begin_read().map_err(db_err("begin read", db_path))?;
    fn present<T>(r: Result<T, redb::TableError>, db_path: &Path) -> Result<bool, Error> {
        match r {
            Ok(_) => Ok(true),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(db_err("open table", db_path)(e)),
        }
    }
    if !present(rtx.open_table(PINS), db_path)?
        || !present(rtx.open_table(REFS), db_path)?
        || !present(rtx.open_table(LINKS), db_path)?
    {
        return Ok(false);
    }
    let info = match rtx.open_table(meta::INFO) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(e) => return Err(db_err("open table", db_path)(e)),
    };
    let version = info
        .get("version")
        .map_err(db_err("read schema version", db_path))?
        .map(|v| v.value());
    Ok(version == Some(meta::SCHEMA_VERSION))
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

    /// Records that a rename into shard `idx` has returned.
    fn note_renamed(&self, idx: usize) {
        self.shards[idx].renamed.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether shard `idx` has renames no completed fsync covers.
    fn needs_sync(&self, idx: usize) -> bool {
        let s = &self.shards[idx];
        s.synced.load(Ordering::Acquire) < s.renamed.load(Ordering::Acquire)
    }

    /// Makes every rename into `shards` so far durable: fsyncs, in
    /// parallel, those with renames not covered yet (skipping the ones
    /// another writer or pin already synced).
    fn sync_shards(&self, shards: impl IntoIterator<Item = usize>) -> Result<(), Error> {
        // The count is read before the fsync starts, so every rename it
        // counts had returned by then and is covered once the fsync returns.
        let todo: Vec<(usize, u64)> = shards
            .into_iter()
            .filter(|&i| self.needs_sync(i))
            .map(|i| (i, self.shards[i].renamed.load(Ordering::Acquire)))
            .collect();
        parallel(&todo, DIR_SYNC_THREADS, |&(i, seen)| {
            flatfs::sync_dir(&self.layout.shard_dir(i))?;
            self.shards[i].synced.fetch_max(seen, Ordering::AcqRel);
            Ok(())
        })
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
        let data = self.get_unverified(cid)?;
        crate::block::verify(cid, &data)?;
        Ok(data)
    }
}

impl FsBlockstore {
    /// Reads a block without hashing it: for bitswap peers, who hash every
    /// block they receive before using it (as Kubo's default `HashOnRead =
    /// false` relies on), so a block rotten on disk costs them a retry
    /// elsewhere, never bad data; and it cannot cost us a capture, which is
    /// only deleted once the cluster holds verified copies. Hashing again
    /// here was a tenth of a serving node's CPU. Anything we read for
    /// ourselves (`cat`, the gateway, `repo verify`) goes through
    /// [`BlockSource::get`], which checks.
    pub fn get_unverified(&self, cid: &Cid) -> Result<Bytes, Error> {
        let mh = cid.hash();
        if mh.code() == IDENTITY {
            return Ok(Bytes::copy_from_slice(mh.digest()));
        }
        let (_, path) = self.inner.layout.block_path(&mh.to_bytes());
        read_block(cid, &path)
    }
}

/// The other spelling of a dag-pb SHA-256 CID: v0 for a v1, v1 for a v0 (same block).
fn twin(cid: &Cid) -> Option<Cid> {
    match cid.version() {
        cid::Version::V0 => Some(Cid::new_v1(DAG_PB, *cid.hash())),
        cid::Version::V1 if cid.codec() == DAG_PB => Cid::new_v0(*cid.hash()).ok(),
        cid::Version::V1 => None,
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
            let mut guards = lock(&self.store.guards);
            let mut links = lock(&self.store.import_links);
            release(&mut guards, &mut links, key);
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

/// Drops one guard's hold on `key`; the last one also drops its links.
fn release(guards: &mut HashMap<Key, usize>, links: &mut HashMap<Key, Vec<Cid>>, key: &Key) {
    if let Some(n) = guards.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            guards.remove(key);
            links.remove(key);
        }
    }
}

impl Drop for ImportGuard {
    fn drop(&mut self) {
        let mut guards = lock(&self.store.guards);
        let mut links = lock(&self.store.import_links);
        for key in &self.keys {
            release(&mut guards, &mut links, key);
        }
    }
}

impl std::fmt::Debug for ImportGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImportGuard({} blocks)", self.keys.len())
    }
}

/// One import's writer: a [`BlockSink`] whose blocks become visible batch by
/// batch, each only once its bytes are durable, and all durable, names
/// included, when [`flush`](BlockWriter::flush), [`finish`](BlockWriter::finish)
/// or [`commit`](BlockWriter::commit) returns.
///
/// The caller's thread only writes: each block goes to a temp file whose
/// writeback starts at once. A full batch is handed to the writer's sync
/// thread, which fdatasyncs its files (from [`SYNC_THREADS`] threads) and
/// renames them into their shards while the caller hashes and writes the next
/// batch. The sync thread holds at most [`SYNC_QUEUE`] + 1 batches; a caller
/// with a full batch beyond that waits, so a slow disk slows the import
/// instead of letting dirty pages and open files pile up.
///
/// The shard directories' fsyncs, which make the renames durable, are not
/// issued per batch but once per directory at the next flush, all in
/// parallel. This keeps every guarantee:
/// - nothing is visible before its bytes are durable, so a crash can lose a
///   rename (the block is then absent, an orphan nobody was told about) but
///   never show a torn block;
/// - nothing is reported before a flush: `finish` pins, `commit` hands back
///   the guard and `put_block` returns only after every shard directory this
///   writer renamed into, or found one of its blocks already in, was fsync'd;
/// - a pin fsyncs the directories of the blocks it names that still need it
///   ([`Shard`] tracks them), so a block another, unfinished import made
///   visible cannot be pinned before its name is durable.
///
/// A shard directory is created durably before anything is renamed into it;
/// the fsync of `blocks/` that records it rides with the batch's fdatasyncs.
///
/// A batch that fails in the sync thread is reported by the writer's next
/// `put`, `flush`, `finish` or `commit`; its temp files are removed and its
/// blocks leave the guard, so putting them again writes them again.
pub struct BlockWriter {
    store: FsBlockstore,
    guard: ImportGuard,
    /// The batch being filled.
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Shards this writer renamed blocks into, or found its blocks already in
    /// (whoever renamed those may have crashed before the fsync), since its
    /// last successful flush.
    unsynced: BTreeSet<usize>,
    /// Started at the first full batch: a writer only ever flushed by hand
    /// (`put_block`, small imports) syncs on its caller's thread.
    sync: Option<SyncThread>,
    /// Part of temp file names; read once, as each read is a syscall.
    pid: u32,
    /// Whether synced blocks leave the page cache (see [`BlockWriter::keep_cached`]).
    drop_cached: bool,
}

struct Pending {
    key: Key,
    file: File,
    tmp: PathBuf,
    dst: PathBuf,
    shard: usize,
}

/// A writer's sync thread and its two queues.
struct SyncThread {
    /// Batches to sync; taken (closing the queue) when the writer is dropped.
    jobs: Option<mpsc::SyncSender<Vec<Pending>>>,
    done: mpsc::Receiver<Synced>,
    /// Batches sent whose outcome has not been received yet.
    in_flight: usize,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The outcome of syncing one batch.
enum Synced {
    /// Durable and renamed into these shards (not yet fsync'd).
    Renamed(Vec<usize>),
    /// Not stored: the temp files are gone and these keys must leave the
    /// writer's guard.
    Failed { error: Error, keys: Vec<Key> },
}

impl SyncThread {
    fn spawn(inner: Arc<Inner>, drop_cached: bool) -> io::Result<SyncThread> {
        let (jobs, queue) = mpsc::sync_channel::<Vec<Pending>>(SYNC_QUEUE);
        let (report, done) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wanda-block-sync".into())
            .spawn(move || {
                for batch in queue {
                    if report.send(sync_batch(&inner, batch, drop_cached)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SyncThread {
            jobs: Some(jobs),
            done,
            in_flight: 0,
            handle: Some(handle),
        })
    }

    /// The thread stopped answering, which only a panic does: re-raise it
    /// here rather than report its batches as stored.
    fn died(&mut self) -> ! {
        match self.handle.take().map(|h| h.join()) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => panic!("the block sync thread stopped with batches in flight"),
        }
    }
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("guarded", &self.guard.len())
            .field("pending", &self.pending.len())
            .field("in_flight", &self.sync.as_ref().map_or(0, |t| t.in_flight))
            .finish_non_exhaustive()
    }
}

impl BlockSink for BlockWriter {
    /// Writes the block to a temp file; it becomes visible once its batch is
    /// synced, and durable at the next [`BlockWriter::flush`]. Trusts the CID
    /// (as [`Block::new`] computed it); `get` and `verify` check it.
    fn put(&mut self, block: &Block) -> Result<(), Error> {
        // A batch that failed in the background is reported first, before
        // this block is taken, so the caller knows it was not stored.
        self.collect(false)?;
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
            let batch = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.hand_off(batch)?;
        }
        Ok(())
    }
}

impl BlockWriter {
    fn stage(&mut self, key: &Key, block: &Block) -> Result<(), Error> {
        let inner = &self.store.inner;
        if block.cid.codec() == DAG_PB {
            // Ill-formed nodes are stored all the same; pinning reports them.
            if let Ok(children) = crate::unixfs::pb::links(&block.cid, &block.data) {
                lock(&inner.import_links).insert(key.clone(), children);
            }
        }
        let (shard, dst) = inner.layout.block_path(key);
        if dst.is_file() {
            self.unsynced.insert(shard);
            return Ok(());
        }
        let seq = inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = inner
            .layout
            .tmp
            .join(format!("{}.{}.{seq}", flatfs::key_of(key), self.pid));
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

    /// Gives a full batch to the sync thread, starting it at the first one;
    /// waits while the thread already holds all it may.
    fn hand_off(&mut self, batch: Vec<Pending>) -> Result<(), Error> {
        if self.sync.is_none() {
            match SyncThread::spawn(self.store.inner.clone(), self.drop_cached) {
                Ok(t) => self.sync = Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a block sync thread; syncing inline");
                    return self.sync_here(batch);
                }
            }
        }
        let Some(t) = self.sync.as_mut() else {
            unreachable!("started above")
        };
        let sent = t.jobs.as_ref().map(|j| j.send(batch));
        if !matches!(sent, Some(Ok(()))) {
            t.died();
        }
        t.in_flight += 1;
        Ok(())
    }

    /// Syncs a batch on the caller's thread.
    fn sync_here(&mut self, batch: Vec<Pending>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let outcome = sync_batch(&self.store.inner, batch, self.drop_cached);
        let mut first = None;
        take_outcome(outcome, &mut self.unsynced, &mut self.guard, &mut first);
        first.map_or(Ok(()), Err)
    }

    /// Takes the outcomes of the batches the sync thread has finished (with
    /// `wait`, of all it holds); returns the first failure. Every outcome is
    /// taken even after a failure, so each failed batch leaves the guard.
    fn collect(&mut self, wait: bool) -> Result<(), Error> {
        let Some(t) = self.sync.as_mut() else {
            return Ok(());
        };
        let mut first = None;
        while t.in_flight > 0 {
            let outcome = if wait {
                match t.done.recv() {
                    Ok(o) => o,
                    Err(mpsc::RecvError) => t.died(),
                }
            } else {
                match t.done.try_recv() {
                    Ok(o) => o,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => t.died(),
                }
            };
            t.in_flight -= 1;
            take_outcome(outcome, &mut self.unsynced, &mut self.guard, &mut first);
        }
        first.map_or(Ok(()), Err)
    }

    /// Makes every block put so far durable and visible: hands over (or, if
    /// no sync thread was needed, syncs here) the pending batch, waits for
    /// every batch, then fsyncs the shard directories they went into. If it
    /// fails, nothing of this writer may be reported; the directories stay
    /// listed, so a retry fsyncs them again.
    pub fn flush(&mut self) -> Result<(), Error> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let handed = if self.sync.is_some() && !batch.is_empty() {
            self.hand_off(batch)
        } else {
            self.sync_here(batch)
        };
        // Without a sync thread `collect` has nothing to wait for, and with
        // one `hand_off` cannot fail: at most one of the two is an error.
        let waited = self.collect(true);
        handed.and(waited)?;
        self.store
            .inner
            .sync_shards(self.unsynced.iter().copied())?;
        self.unsynced.clear();
        Ok(())
    }

    /// Keeps the blocks in the page cache once synced, for a writer whose
    /// blocks are read again at once (fetched ones, which a `cat` or the
    /// gateway is waiting for); by default an import's leave it.
    pub fn keep_cached(mut self) -> Self {
        self.drop_cached = false;
        self
    }

    /// Flushes, then pins `root` (whose blocks need not all come from this
    /// import), then releases the guard: the end of an import.
    pub fn finish(mut self, root: &Cid, mode: PinMode) -> Result<(), Error> {
        self.flush()?;
        self.store.pin(root, mode)
    }

    /// Flushes and hands back the guard, for a caller that pins later; keep
    /// the guard until [`FsBlockstore::pin`] has returned.
    pub fn commit(mut self) -> Result<ImportGuard, Error> {
        self.flush()?;
        let empty = ImportGuard::new(self.store.inner.clone());
        Ok(std::mem::replace(&mut self.guard, empty))
    }
}

/// Applies one batch's outcome to its writer's state; keeps the first error.
fn take_outcome(
    outcome: Synced,
    unsynced: &mut BTreeSet<usize>,
    guard: &mut ImportGuard,
    first: &mut Option<Error>,
) {
    match outcome {
        Synced::Renamed(shards) => unsynced.extend(shards),
        Synced::Failed { error, keys } => {
            // A retry must write them again.
            for key in &keys {
                guard.remove(key);
            }
            match first {
                None => *first = Some(error),
                Some(_) => tracing::warn!(%error, "another batch of the same import failed"),
            }
        }
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        // Batches the sync thread holds are finished first (they may become
        // visible, as orphans for gc), so no thread outlives the writer and
        // the guard (dropped after this) covers them until then.
        if let Some(mut t) = self.sync.take() {
            drop(t.jobs.take());
            if let Some(h) = t.handle.take() {
                // A panic there is already being reported, or was.
                let _ = h.join();
            }
        }
        // Blocks never handed over were never reported: discard them.
        for p in self.pending.drain(..) {
            drop(p.file);
            let _ = fs::remove_file(&p.tmp);
        }
    }
}

/// Syncs one batch and renames it into place; on failure removes what is
/// left of its temp files. Runs on the sync thread (or the caller's).
fn sync_batch(inner: &Inner, batch: Vec<Pending>, drop_cached: bool) -> Synced {
    match commit_batch(inner, &batch, drop_cached) {
        // Dropping the batch closes its files here, off the caller's thread.
        Ok(()) => Synced::Renamed(batch.iter().map(|p| p.shard).collect()),
        Err(error) => {
            // Blocks renamed before the failure are whole (their bytes were
            // synced first): they stay, unguarded, for gc.
            let keys = batch
                .into_iter()
                .map(|p| {
                    drop(p.file);
                    let _ = fs::remove_file(&p.tmp);
                    p.key
                })
                .collect();
            Synced::Failed { error, keys }
        }
    }
}

/// One fsync a batch needs.
enum BatchSync<'a> {
    Block(&'a Pending),
    /// `blocks/`, recording shard directories the batch created.
    Parent(&'a Path),
}

/// fdatasyncs a batch's files, creates the shard directories it is the
/// first to need, then renames the files into place.
fn commit_batch(inner: &Inner, batch: &[Pending], drop_cached: bool) -> Result<(), Error> {
    let new_shards: BTreeSet<usize> = batch
        .iter()
        .map(|p| p.shard)
        .filter(|&s| !inner.shards[s].ready.load(Ordering::Acquire))
        .collect();
    for &s in &new_shards {
        // Another writer may have just made it, but not its parent's fsync:
        // that is why the parent is synced whether or not this call made it.
        flatfs::create_dir(&inner.layout.shard_dir(s))?;
    }
    let mut syncs: Vec<BatchSync> = Vec::with_capacity(batch.len() + 1);
    if !new_shards.is_empty() {
        // Issued with the fdatasyncs so one journal commit serves them all.
        syncs.push(BatchSync::Parent(&inner.layout.blocks));
    }
    syncs.extend(batch.iter().map(BatchSync::Block));
    parallel(&syncs, SYNC_THREADS, |s| match s {
        BatchSync::Block(p) => {
            p.file
                .sync_data()
                .map_err(|e| io_err("fsync block", &p.tmp, e))?;
            // Its pages are clean now: give them back rather than keep a
            // second cached copy of what was just imported (the source file
            // is usually cached too). The next batch's writes reuse them.
            if drop_cached {
                flatfs::drop_cached(&p.file);
            }
            Ok(())
        }
        BatchSync::Parent(dir) => flatfs::sync_dir(dir),
    })?;
    for &s in &new_shards {
        inner.shards[s].ready.store(true, Ordering::Release);
    }
    for p in batch {
        fs::rename(&p.tmp, &p.dst).map_err(|e| io_err("rename block into place", &p.dst, e))?;
        inner.note_renamed(p.shard);
    }
    Ok(())
}

/// Runs `f` on every item from up to `threads` threads; the first error
/// wins. fsyncs issued together share journal commits and disk cache
/// flushes (ext4's jbd2 batches them), where one after another each waits
/// for its own.
fn parallel<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<(), Error> + Sync,
) -> Result<(), Error> {
    if items.len() <= 1 {
        return items.iter().try_for_each(&f);
    }
    let per = items.len().div_ceil(threads);
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
