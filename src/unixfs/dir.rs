//! `ipfs add -r` / `-w`: filesystem paths become UnixFS directories, files
//! and symlinks in a [`BlockSink`], with the CIDs and the `added` lines of Kubo
//! v0.22 (boxo v0.11.0).
//!
//! Owns the directory walk and the directory node format; files are imported
//! by [`super::file::import_file`], HAMT shards built by [`super::hamt`].
//! Building (entries → blocks: [`build_directory`], [`build_symlink`]) is pure
//! and separate from the walk ([`add_paths`]).
//!
//! What Kubo does, and so what this does:
//! - a basic directory is a dag-pb node with Data `{Type: Directory}` and one
//!   link per entry, sorted bytewise by name, Tsize cumulative;
//! - it becomes a HAMT when the sum over its entries of
//!   `len(name) + len(cid bytes)` is `>=` the threshold (boxo's
//!   `needsToSwitchToHAMTDir` / `productionLinkSize`); a threshold of 0 turns
//!   sharding off, as boxo's `HAMTShardingSize = 0` does. Entries are only
//!   ever added during an import, so checking the final sum is the same as
//!   checking after each addition;
//! - entries inside directories are read in bytewise name order (Go's
//!   `os.ReadDir`), dot-files are skipped unless `hidden` (the paths given on
//!   the command line themselves are never filtered), symlinks are stored as
//!   UnixFS `Symlink` nodes holding the target and never followed;
//! - arguments are sorted by base name (go-ipfs-cmds sorts its file list); a
//!   base name repeated from the same parent directory is added once, from
//!   different ones is an error; `.` is named after the working directory;
//! - `added` lines: files and symlinks as they are imported (walk order), then
//!   every directory in post-order, children in the directory's link order
//!   (bytewise for basic directories, trie order for HAMTs): Kubo's
//!   `outputDirs` after the import.
//!
//! Deliberate differences: FIFOs, sockets and devices are refused with an
//! error naming the path and kind, even as direct arguments (Kubo would read a
//! FIFO argument; a camera node must never block on one); files are opened
//! with `O_NOFOLLOW | O_NONBLOCK` and re-checked after opening so a file
//! swapped for a FIFO or symlink mid-walk cannot hang or redirect the import.
//! The walk is iterative; directory cycles (bind mounts) are detected by
//! device and inode of the open ancestors.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cid::{Cid, Version};

use super::file;
pub use super::hamt::DirEntry;
use super::hamt::{self, BuiltNode};
use super::options::ImportOptions;
use super::pb::{encode_unixfs, DataType, PbLink, PbNode, UnixfsData};
use crate::block::{Block, DAG_PB};
use crate::blockstore::{self, BlockSink};

/// One `added <cid> <path>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedEntry {
    /// The name Kubo prints: relative to the argument's parent ("dir/a.txt"),
    /// "" for the `-w` wrapper.
    pub path: String,
    pub cid: Cid,
    /// Cumulative size of the entry's DAG.
    pub size: u64,
}

/// A directory that was built and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltDir {
    pub cid: Cid,
    pub tsize: u64,
    /// Whether it was written as a HAMT.
    pub sharded: bool,
}

/// Why an add failed. Every variant names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a {kind}: not a regular file, directory or symlink")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("'{0}' is a directory, use the '-r' flag to specify directories")]
    IsDirectory(PathBuf),
    #[error("{0}: file name is not valid UTF-8, which UnixFS link names must be")]
    NonUtf8Name(PathBuf),
    #[error("file name {name} repeated under different import directories: {a} and {b}")]
    RepeatedName {
        name: String,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("{0}: directory contains itself (a bind mount loop?)")]
    Loop(PathBuf),
    #[error("expected a file argument")]
    NoPaths,
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<file::Error>,
    },
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: Box<hamt::Error>,
    },
    #[error(transparent)]
    Sink(Box<blockstore::Error>),
}

impl From<blockstore::Error> for Error {
    fn from(e: blockstore::Error) -> Self {
        Error::Sink(Box::new(e))
    }
}

/// Sink errors stay sink errors; the rest are about the directory at `path`.
fn dir_err(path: &Path) -> impl FnOnce(hamt::Error) -> Error + '_ {
    move |e| match e {
        hamt::Error::Block(b) => Error::Sink(b),
        e => Error::Dir {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// boxo's estimate of a basic directory's size: link names plus CIDs.
pub fn estimated_size(entries: &[DirEntry]) -> usize {
    entries
        .iter()
        .map(|e| e.name.len() + e.cid.encoded_len())
        .sum()
}

/// Whether Kubo would write `entries` as a HAMT under `opts`.
pub fn needs_sharding(opts: &ImportOptions, entries: &[DirEntry]) -> bool {
    opts.shard_threshold != 0 && estimated_size(entries) >= opts.shard_threshold
}

/// Writes a basic (single-node) directory of `entries`.
pub fn build_basic<S: BlockSink + ?Sized>(
    mut entries: Vec<DirEntry>,
    version: Version,
    sink: &mut S,
) -> Result<BuiltNode, hamt::Error> {
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if let Some(w) = entries.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(hamt::Error::DuplicateName(w[0].name.clone()));
    }
    let mut children: u64 = 0;
    let links = entries
        .into_iter()
        .map(|e| {
            children = children
                .checked_add(e.tsize)
                .ok_or(hamt::Error::SizeOverflow)?;
            Ok(PbLink::new(e.cid, e.name, e.tsize))
        })
        .collect::<Result<Vec<_>, hamt::Error>>()?;
    let node = PbNode {
        links,
        data: Some(
            encode_unixfs(&UnixfsData {
                r#type: DataType::Directory as i32,
                ..Default::default()
            })
            .into(),
        ),
    };
    let bytes = node.encode();
    let tsize = children
        .checked_add(bytes.len() as u64)
        .ok_or(hamt::Error::SizeOverflow)?;
    let block = Block::new(version, DAG_PB, bytes);
    sink.put(&block)?;
    Ok(BuiltNode {
        cid: block.cid,
        tsize,
    })
}

/// Writes the directory of `entries` as Kubo would: basic, or a HAMT once
/// large enough.
pub fn build_directory<S: BlockSink + ?Sized>(
    opts: &ImportOptions,
    entries: Vec<DirEntry>,
    sink: &mut S,
) -> Result<BuiltDir, hamt::Error> {
    let sharded = needs_sharding(opts, &entries);
    let n = if sharded {
        hamt::build(entries, opts.cid_version, sink)?
    } else {
        build_basic(entries, opts.cid_version, sink)?
    };
    Ok(BuiltDir {
        cid: n.cid,
        tsize: n.tsize,
        sharded,
    })
}

/// Writes a UnixFS symlink node pointing at `target` (boxo `SymlinkData`).
pub fn build_symlink<S: BlockSink + ?Sized>(
    opts: &ImportOptions,
    target: &[u8],
    sink: &mut S,
) -> Result<BuiltNode, hamt::Error> {
    let node = PbNode {
        links: Vec::new(),
        data: Some(
            encode_unixfs(&UnixfsData {
                r#type: DataType::Symlink as i32,
                data: Some(bytes::Bytes::copy_from_slice(target)),
                ..Default::default()
            })
            .into(),
        ),
    };
    let bytes = node.encode();
    let tsize = bytes.len() as u64;
    let block = Block::new(opts.cid_version, DAG_PB, bytes);
    sink.put(&block)?;
    Ok(BuiltNode {
        cid: block.cid,
        tsize,
    })
}

/// Sorts `names`-keyed items into the order of the directory's links, the
/// order Kubo lists (and prints) them in.
fn sort_link_order<T>(items: &mut [T], sharded: bool, name: impl Fn(&T) -> &str) {
    if sharded {
        items.sort_by_key(|t| hamt::trie_order_key(name(t)));
    } else {
        items.sort_by(|a, b| name(a).as_bytes().cmp(name(b).as_bytes()));
    }
}

/// `path.Join` for our already-clean pieces.
fn join_display(prefix: &str, name: &str) -> String {
    match (prefix, name) {
        ("", n) | (".", n) => n.to_string(),
        (p, "") => p.to_string(),
        (p, n) if p.ends_with('/') => format!("{p}{n}"),
        (p, n) => format!("{p}/{n}"),
    }
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

fn utf8_name(name: &std::ffi::OsStr, path: &Path) -> Result<String, Error> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::NonUtf8Name(path.to_path_buf()))
}

/// A directory whose `added` line is printed after the import.
struct DirRecord {
    name: String,
    display: String,
    cid: Cid,
    size: u64,
    /// Child directories, in link order.
    subdirs: Vec<DirRecord>,
}

/// A directory on the current walk path.
struct OpenDir {
    path: PathBuf,
    name: String,
    display: String,
    /// (dev, ino): a directory reached again below itself is a loop.
    id: (u64, u64),
    /// Entries still to visit, in reverse order (popped from the end).
    todo: Vec<(OsString, fs::FileType)>,
    entries: Vec<DirEntry>,
    subdirs: Vec<DirRecord>,
}

struct Walker<'a, S: ?Sized> {
    opts: &'a ImportOptions,
    sink: &'a mut S,
    on_entry: &'a mut dyn FnMut(&AddedEntry),
    progress: &'a mut dyn FnMut(u64),
    /// File bytes read by finished files.
    done_bytes: u64,
}

impl<S: BlockSink + ?Sized> Walker<'_, S> {
    fn emit(&mut self, path: String, cid: Cid, size: u64) {
        (self.on_entry)(&AddedEntry { path, cid, size });
    }

    fn add_file(&mut self, path: &Path, display: String) -> Result<BuiltNode, Error> {
        // O_NONBLOCK: opening a FIFO swapped in since lstat must not block;
        // O_NOFOLLOW: nor may a swapped-in symlink redirect us.
        let f: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err("open", path))?;
        let md = f.metadata().map_err(io_err("stat", path))?;
        if !md.is_file() {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                kind: kind_of(&md.file_type()),
            });
        }
        let base = self.done_bytes;
        let progress = &mut *self.progress;
        let node = file::import_file(
            self.opts,
            std::io::BufReader::new(f),
            &mut *self.sink,
            &mut |n| progress(base + n),
        )
        .map_err(|e| match e {
            // Sink errors (disk full) are about the store, not this file.
            file::Error::Sink(b) => Error::Sink(Box::new(b)),
            e => Error::File {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        })?;
        self.done_bytes += node.file_size;
        self.emit(display, node.cid, node.tsize);
        Ok(BuiltNode {
            cid: node.cid,
            tsize: node.tsize,
        })
    }

    fn add_symlink(&mut self, path: &Path, display: String) -> Result<BuiltNode, Error> {
        let target = fs::read_link(path).map_err(io_err("readlink", path))?;
        let n = build_symlink(self.opts, target.as_os_str().as_bytes(), &mut *self.sink)
            .map_err(dir_err(path))?;
        self.emit(display, n.cid, n.tsize);
        Ok(n)
    }

    fn open_dir(&self, path: PathBuf, name: String, display: String) -> Result<OpenDir, Error> {
        let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let mut todo = Vec::new();
        for ent in fs::read_dir(&path).map_err(io_err("read directory", &path))? {
            let ent = ent.map_err(io_err("read directory", &path))?;
            let n = ent.file_name();
            if !self.opts.hidden && n.as_bytes().first() == Some(&b'.') {
                continue;
            }
            let ft = ent.file_type().map_err(io_err("stat", &ent.path()))?;
            todo.push((n, ft));
        }
        todo.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
        Ok(OpenDir {
            path,
            name,
            display,
            id: (md.dev(), md.ino()),
            todo,
            entries: Vec::new(),
            subdirs: Vec::new(),
        })
    }

    /// Adds the directory at `path` (already known to be one) with all it
    /// holds; returns its link entry and the record for the `added` lines.
    fn add_dir(
        &mut self,
        path: PathBuf,
        name: String,
        display: String,
    ) -> Result<(DirEntry, DirRecord), Error> {
        // `cur` is the directory being read, `parents` the open ones above it.
        let mut cur = self.open_dir(path, name, display)?;
        let mut parents: Vec<OpenDir> = Vec::new();
        loop {
            if let Some((os_name, ft)) = cur.todo.pop() {
                let child = cur.path.join(&os_name);
                let name = utf8_name(&os_name, &child)?;
                let display = join_display(&cur.display, &name);
                if ft.is_dir() {
                    let md = fs::symlink_metadata(&child).map_err(io_err("stat", &child))?;
                    let id = (md.dev(), md.ino());
                    if cur.id == id || parents.iter().any(|d| d.id == id) {
                        return Err(Error::Loop(child));
                    }
                    let d = self.open_dir(child, name, display)?;
                    parents.push(std::mem::replace(&mut cur, d));
                    continue;
                }
                let n = if ft.is_symlink() {
                    self.add_symlink(&child, display)?
                } else if ft.is_file() {
                    self.add_file(&child, display)?
                } else {
                    return Err(Error::Unsupported {
                        path: child,
                        kind: kind_of(&ft),
                    });
                };
                cur.entries.push(DirEntry {
                    name,
                    cid: n.cid,
                    tsize: n.tsize,
                });
                continue;
            }
            let entries = std::mem::take(&mut cur.entries);
            let built =
                build_directory(self.opts, entries, &mut *self.sink).map_err(dir_err(&cur.path))?;
            let mut subdirs = std::mem::take(&mut cur.subdirs);
            sort_link_order(&mut subdirs, built.sharded, |r| &r.name);
            let entry = DirEntry {
                name: cur.name.clone(),
                cid: built.cid,
                tsize: built.tsize,
            };
            let record = DirRecord {
                name: std::mem::take(&mut cur.name),
                display: std::mem::take(&mut cur.display),
                cid: built.cid,
                size: built.tsize,
                subdirs,
            };
            match parents.pop() {
                Some(parent) => {
                    cur = parent;
                    cur.entries.push(entry);
                    cur.subdirs.push(record);
                }
                None => return Ok((entry, record)),
            }
        }
    }

    /// Prints the `added` lines of `root` and every directory below it,
    /// children first.
    fn emit_dirs(&mut self, root: DirRecord) {
        let mut stack = vec![(root, false)];
        while let Some((mut r, expanded)) = stack.pop() {
            if expanded {
                self.emit(r.display, r.cid, r.size);
                continue;
            }
            let subdirs = std::mem::take(&mut r.subdirs);
            stack.push((r, true));
            stack.extend(subdirs.into_iter().rev().map(|d| (d, false)));
        }
    }
}

/// A command-line argument after Kubo's argument parsing.
struct Arg {
    path: PathBuf,
    name: String,
    ft: fs::FileType,
}

/// `p` without `.` components (Go's `filepath.Clean` for what matters here).
fn clean(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The path to add and its name: Go's `filepath.Base(filepath.Clean(p))`,
/// with `.` resolved to the working directory as go-ipfs-cmds does. A path
/// ending in `..` is resolved too (Kubo would name the entry ".."; `get`
/// refuses such names).
fn arg_name(p: &Path) -> Result<(PathBuf, String), Error> {
    let mut path = clean(p);
    if path.as_os_str().is_empty() {
        path = std::env::current_dir().map_err(io_err("get working directory", p))?;
    } else if path.file_name().is_none() {
        path = fs::canonicalize(&path).map_err(io_err("resolve", p))?;
    }
    let name = match path.file_name() {
        Some(n) => utf8_name(n, &path)?,
        None => "/".to_string(),
    };
    Ok((path, name))
}

/// The directory an argument was found in, for telling repeats apart.
fn import_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn parse_args(paths: &[PathBuf], recursive: bool) -> Result<Vec<Arg>, Error> {
    let mut args: Vec<Arg> = Vec::new();
    for p in paths {
        let (path, name) = arg_name(p)?;
        let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let ft = md.file_type();
        if ft.is_dir() && !recursive {
            return Err(Error::IsDirectory(p.clone()));
        }
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            return Err(Error::Unsupported {
                path: p.clone(),
                kind: kind_of(&ft),
            });
        }
        if let Some(prev) = args.iter().find(|a| a.name == name) {
            let (a, b) = (import_dir(&path), import_dir(&prev.path));
            if a == b {
                continue;
            }
            return Err(Error::RepeatedName { name, a, b });
        }
        args.push(Arg { path, name, ft });
    }
    if args.is_empty() {
        return Err(Error::NoPaths);
    }
    args.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(args)
}

/// The arguments of `add` as Kubo reads them: each path with the name it is added under
/// (`filepath.Base` of the cleaned path), sorted by name, repeats of one path dropped; a
/// directory without `recursive`, a special file or a clash of names is an error.
pub fn arguments(paths: &[PathBuf], recursive: bool) -> Result<Vec<(PathBuf, String)>, Error> {
    Ok(parse_args(paths, recursive)?
        .into_iter()
        .map(|a| (a.path, a.name))
        .collect())
}

/// `ipfs add [-r] [-w] paths...` into `sink`.
///
/// Returns the CID Kubo prints last (`-Q`): the wrapper with `opts.wrap`,
/// otherwise the last argument's in name order. `on_entry` receives every
/// `added` line in Kubo's order; `progress` the total file bytes read so far.
/// Adding stops at the first error; blocks already written stay in the sink.
pub fn add_paths<S: BlockSink + ?Sized>(
    opts: &ImportOptions,
    paths: &[PathBuf],
    recursive: bool,
    sink: &mut S,
    on_entry: &mut dyn FnMut(&AddedEntry),
    progress: &mut dyn FnMut(u64),
) -> Result<Cid, Error> {
    let args = parse_args(paths, recursive)?;
    let mut w = Walker {
        opts,
        sink,
        on_entry,
        progress,
        done_bytes: 0,
    };
    let mut wrapper = Vec::new();
    let mut wrapper_dirs = Vec::new();
    let mut last = None;
    for a in args {
        let display = a.name.clone();
        let (entry, record) = if a.ft.is_dir() {
            let (e, r) = w.add_dir(a.path, a.name, display)?;
            (e, Some(r))
        } else {
            let n = if a.ft.is_symlink() {
                w.add_symlink(&a.path, display)?
            } else {
                w.add_file(&a.path, display)?
            };
            let e = DirEntry {
                name: a.name,
                cid: n.cid,
                tsize: n.tsize,
            };
            (e, None)
        };
        last = Some(entry.cid);
        if opts.wrap {
            wrapper.push(entry);
            wrapper_dirs.extend(record);
        } else if let Some(r) = record {
            w.emit_dirs(r);
        }
    }
    if !opts.wrap {
        return last.ok_or(Error::NoPaths);
    }
    let built = build_directory(opts, wrapper, &mut *w.sink).map_err(dir_err(Path::new("")))?;
    sort_link_order(&mut wrapper_dirs, built.sharded, |r| &r.name);
    w.emit_dirs(DirRecord {
        name: String::new(),
        display: String::new(),
        cid: built.cid,
        size: built.tsize,
        subdirs: wrapper_dirs,
    });
    Ok(built.cid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::MemBlockstore;
    use crate::unixfs::export;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Entries "file-00000".. holding "<i>\n" as CIDv0 dag-pb files: the JS
    /// reference script's `nfiles`.
    fn nfiles(n: usize, store: &mut MemBlockstore) -> Vec<DirEntry> {
        (0..n)
            .map(|i| {
                let f = file::import_bytes(
                    &ImportOptions::default(),
                    format!("{i}\n").as_bytes(),
                    store,
                )
                .unwrap();
                DirEntry {
                    name: format!("file-{i:05}"),
                    cid: f.cid,
                    tsize: f.tsize,
                }
            })
            .collect()
    }

    fn with_threshold(t: usize) -> ImportOptions {
        ImportOptions {
            shard_threshold: t,
            ..Default::default()
        }
    }

    // Expected CIDs below come from ipfs-unixfs-importer 17.1.1 (node), script
    // /tmp/jsref/wanda_dir_gen.mjs, run with shardSplitThresholdBytes = the
    // boxo threshold - 1: JS shards when its estimate (the same
    // len(name) + len(cid) sum) is `>` the threshold, boxo when `>=`, and
    // boxo decides.

    #[test]
    fn basic_directories_match_reference() {
        let mut store = MemBlockstore::new();
        let d = build_directory(
            &ImportOptions::default(),
            nfiles(10, &mut store),
            &mut store,
        )
        .unwrap();
        assert!(!d.sharded);
        assert_eq!(
            d.cid.to_string(),
            "QmTUMBymdcAUCGHx8M1pbZD691pNaYfn6GcNvhztodjQKX"
        );
        assert_eq!(d.tsize, 624);

        let es = nfiles(2000, &mut store);
        assert_eq!(estimated_size(&es), 2000 * 44);
        let d = build_directory(&ImportOptions::default(), es, &mut store).unwrap();
        assert!(!d.sharded);
        assert_eq!(
            d.cid.to_string(),
            "QmZPYb57PaWPzLvx3gByTbQ4aBPyGcmEz17yTB2UvGYzaH"
        );
        assert_eq!(d.tsize, 128_894);
    }

    #[test]
    fn threshold_is_inclusive() {
        // 10 entries of 44 bytes: 440 in all.
        let mut store = MemBlockstore::new();
        let es = nfiles(10, &mut store);
        let at = build_directory(&with_threshold(440), es.clone(), &mut store).unwrap();
        assert!(at.sharded);
        assert_eq!(
            at.cid.to_string(),
            "QmejYre3aVn82x6RHWMq3G5a6KpPto7vF69nyySHCnvTKq"
        );
        let below = build_directory(&with_threshold(441), es.clone(), &mut store).unwrap();
        assert!(!below.sharded);
        assert_eq!(
            below.cid.to_string(),
            "QmTUMBymdcAUCGHx8M1pbZD691pNaYfn6GcNvhztodjQKX"
        );
        // boxo's HAMTShardingSize = 0 turns sharding off.
        assert!(
            !build_directory(&with_threshold(0), es, &mut store)
                .unwrap()
                .sharded
        );
    }

    #[test]
    fn default_threshold_boundary_matches_reference() {
        // 5957 * 44 + (2 + 34) = 262144 exactly: sharded. With a one-byte
        // name the sum is 262143: basic (a 386 KB block, as boxo writes it).
        let mut store = MemBlockstore::new();
        let base = nfiles(5957, &mut store);
        let z = file::import_bytes(&ImportOptions::default(), b"z\n", &mut store).unwrap();
        for (extra, sharded, cid, tsize) in [
            (
                "zz",
                true,
                "QmX7uMX23oeZYcmMuUuQoQbLDrKL7aF8ovZab5cNHmfcyZ",
                440_337,
            ),
            (
                "z",
                false,
                "QmTd9ghzqqKRqko8Vugto9kXv6Lc4nWBnFK7vKU1ZyjP8C",
                386_152,
            ),
        ] {
            let mut es = base.clone();
            es.push(DirEntry {
                name: extra.into(),
                cid: z.cid,
                tsize: z.tsize,
            });
            assert_eq!(estimated_size(&es), 262_144 - usize::from(extra.len() == 1));
            let d = build_directory(&ImportOptions::default(), es, &mut store).unwrap();
            assert_eq!(d.sharded, sharded, "{extra}");
            assert_eq!(d.cid.to_string(), cid, "{extra}");
            assert_eq!(d.tsize, tsize, "{extra}");
        }
    }

    #[test]
    fn symlink_node_layout() {
        let mut store = MemBlockstore::new();
        let n = build_symlink(&ImportOptions::default(), b"foo", &mut store).unwrap();
        // dag-pb {Data: UnixFS {Type: Symlink, Data: "foo"}} (boxo SymlinkData).
        let want = [0x0a, 0x07, 0x08, 0x04, 0x12, 0x03, b'f', b'o', b'o'];
        assert_eq!(n.cid, crate::block::cid_of(Version::V0, DAG_PB, &want));
        assert_eq!(n.tsize, 9);
    }

    fn write_tree(root: &Path, files: &[(&str, Option<&[u8]>)]) {
        for (p, content) in files {
            let path = root.join(p);
            match content {
                Some(c) => {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, c).unwrap();
                }
                None => fs::create_dir_all(&path).unwrap(),
            }
        }
    }

    fn add(
        opts: &ImportOptions,
        paths: &[&Path],
        recursive: bool,
    ) -> (Result<Cid, Error>, Vec<String>, MemBlockstore) {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        let mut store = MemBlockstore::new();
        let mut lines = Vec::new();
        let r = add_paths(
            opts,
            &paths,
            recursive,
            &mut store,
            &mut |e| lines.push(format!("{} {}", e.cid, e.path)),
            &mut |_| {},
        );
        (r, lines, store)
    }

    #[test]
    fn tree_matches_reference_and_kubo_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        write_tree(
            &root,
            &[
                ("a.txt", Some(b"hello world\n")),
                ("sub/b.txt", Some(b"b\n")),
                ("sub/deeper/c", Some(b"")),
                ("empty", None),
                ("é日本", Some(b"unicode\n")),
                (".hidden", Some(b"secret\n")),
            ],
        );
        let (r, lines, store) = add(&ImportOptions::default(), &[&root], true);
        let cid = r.unwrap();
        // JS reference case `tree` (which has no .hidden file).
        assert_eq!(
            cid.to_string(),
            "QmXPPCgWvvvW97JLVVBSmrst8KPSP7kY75gJGRjbEpshX1"
        );
        // Kubo's order: files as walked, then directories in post-order.
        assert_eq!(
            lines,
            [
                "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o root/a.txt",
                "QmR9pC5uCF3UExca8RSrCVL8eKv7nHMpATzbEQkAHpXmVM root/sub/b.txt",
                "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH root/sub/deeper/c",
                "QmQKkkA1UoPMs13TcEVXfrrfpmMDNJK6LEmvR1Sn4TzUmj root/é日本",
                "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn root/empty",
                "QmWHACGMz7giRb9GVbXvRX8EHgmkcxyNwC7xywZpGFf4Fr root/sub/deeper",
                "Qma61vDLekYE1gKGPHqj7YcRjULyxrmgHxheGnBnRNfkDo root/sub",
                "QmXPPCgWvvvW97JLVVBSmrst8KPSP7kY75gJGRjbEpshX1 root",
            ]
        );
        // --hidden includes the dot-file; a dot-directory given as the
        // argument itself is never filtered.
        let hidden = ImportOptions {
            hidden: true,
            ..Default::default()
        };
        let (r2, lines2, _) = add(&hidden, &[&root], true);
        assert_ne!(r2.unwrap(), cid);
        assert!(lines2.iter().any(|l| l.ends_with("root/.hidden")));
        let dot = tmp.path().join(".dotdir");
        write_tree(&dot, &[("x", Some(b"x"))]);
        let (r3, lines3, _) = add(&ImportOptions::default(), &[&dot], true);
        assert!(r3.is_ok());
        assert!(lines3.last().unwrap().ends_with(" .dotdir"));

        // Round trip through the exporter.
        let out = tmp.path().join("out");
        export::get(&store, &cid, &out).unwrap();
        assert_eq!(fs::read(out.join("sub/b.txt")).unwrap(), b"b\n");
        assert!(out.join("empty").is_dir());
        assert!(!out.join(".hidden").exists());
        assert_eq!(
            export::resolve(&store, &cid, "sub/deeper/c")
                .unwrap()
                .to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
    }

    #[test]
    fn single_file_wrap_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("hello.txt");
        fs::write(&f, b"hello world\n").unwrap();
        let (r, lines, _) = add(&ImportOptions::default(), &[&f], false);
        assert_eq!(
            r.unwrap().to_string(),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        );
        assert_eq!(
            lines,
            ["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o hello.txt"]
        );

        // -w: JS reference case `wrap` (wrapWithDirectory).
        let wrap = ImportOptions {
            wrap: true,
            ..Default::default()
        };
        let (r, lines, _) = add(&wrap, &[&f], false);
        assert_eq!(
            r.unwrap().to_string(),
            "QmfLiVjH2vujCVP2e75zyzBYmpcjktmDeU1YBz6Ct8BBsc"
        );
        assert_eq!(
            lines,
            [
                "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o hello.txt",
                "QmfLiVjH2vujCVP2e75zyzBYmpcjktmDeU1YBz6Ct8BBsc ",
            ]
        );

        // A directory without -r.
        let (r, _, _) = add(&ImportOptions::default(), &[tmp.path()], false);
        let e = r.unwrap_err();
        assert!(matches!(e, Error::IsDirectory(_)), "{e}");
        assert!(e.to_string().contains("use the '-r' flag"));

        // A FIFO, inside a directory and as an argument: an error, no hang.
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        let fifo = d.join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (r, _, _) = add(&ImportOptions::default(), &[&d], true);
        let e = r.unwrap_err();
        assert!(
            e.to_string().contains("pipe")
                && e.to_string()
                    .contains("FIFO: not a regular file, directory or symlink"),
            "{e}"
        );
        let (r, _, _) = add(&ImportOptions::default(), &[&fifo], false);
        assert!(matches!(r, Err(Error::Unsupported { .. })));

        // The same base name from two directories.
        let other = tmp.path().join("o");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("hello.txt"), b"x").unwrap();
        let (r, _, _) = add(
            &ImportOptions::default(),
            &[&f, &other.join("hello.txt")],
            false,
        );
        assert!(matches!(r, Err(Error::RepeatedName { .. })));
    }

    #[test]
    fn arguments_in_name_order_repeats_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.txt"), tmp.path().join("b.txt"));
        fs::write(&a, b"a\n").unwrap();
        fs::write(&b, b"b\n").unwrap();
        let (r, lines, _) = add(&ImportOptions::default(), &[&b, &a, &b], false);
        let names: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        // The last line's CID is what `-Q` prints.
        assert_eq!(lines[1].split(' ').next().unwrap(), r.unwrap().to_string());
    }

    #[test]
    fn symlinks_are_stored_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        // A loop through a symlink: must not be followed.
        std::os::unix::fs::symlink("..", d.join("up")).unwrap();
        std::os::unix::fs::symlink("missing", d.join("dangling")).unwrap();
        let (r, lines, store) = add(&ImportOptions::default(), &[&d], true);
        let cid = r.unwrap();
        assert_eq!(lines.len(), 3);
        let ls = export::ls(&store, &cid).unwrap();
        assert_eq!(
            ls.iter()
                .map(|e| (e.name.as_str(), e.kind))
                .collect::<Vec<_>>(),
            [
                ("dangling", export::EntryKind::Symlink),
                ("up", export::EntryKind::Symlink)
            ]
        );
        let out = tmp.path().join("out");
        export::get(&store, &cid, &out).unwrap();
        assert_eq!(fs::read_link(out.join("up")).unwrap(), Path::new(".."));
    }

    #[test]
    fn hamt_directory_through_the_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("big");
        fs::create_dir(&d).unwrap();
        for i in 0..10 {
            fs::write(d.join(format!("file-{i:05}")), format!("{i}\n")).unwrap();
        }
        fs::create_dir(d.join("file-sub")).unwrap();
        fs::create_dir(d.join("file-sub2")).unwrap();
        let (r, lines, store) = add(&with_threshold(440), &[&d], true);
        let cid = r.unwrap();
        // Directories are listed in trie order inside a HAMT.
        let dirs: Vec<&str> = lines[10..]
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        let mut want = ["file-sub", "file-sub2"];
        want.sort_by_key(|n| hamt::trie_order_key(n));
        let want: Vec<String> = want.iter().map(|n| format!("big/{n}")).collect();
        assert_eq!(dirs[..2], want[..]);
        assert_eq!(dirs[2], "big");
        assert_eq!(export::ls(&store, &cid).unwrap().len(), 12);
        assert_eq!(
            export::resolve(&store, &cid, "file-00003").unwrap(),
            nfiles(4, &mut MemBlockstore::new())[3].cid
        );
    }

    #[derive(Debug, Clone)]
    enum Tree {
        File(Vec<u8>),
        Dir(BTreeMap<String, Tree>),
    }

    /// Names from a small alphabet with dots (hidden files) and non-ASCII.
    fn name() -> impl Strategy<Value = String> {
        "[ab.é日]{1,4}".prop_filter("a real file name", |n| n != "." && n != "..")
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = proptest::collection::vec(any::<u8>(), 0..40).prop_map(Tree::File);
        leaf.prop_recursive(3, 24, 5, |inner| {
            proptest::collection::btree_map(name(), inner, 0..5).prop_map(Tree::Dir)
        })
    }

    fn materialize(t: &Tree, path: &Path) {
        match t {
            Tree::File(b) => fs::write(path, b).unwrap(),
            Tree::Dir(m) => {
                fs::create_dir(path).unwrap();
                for (n, c) in m {
                    materialize(c, &path.join(n));
                }
            }
        }
    }

    /// What `ls`/`get` should give back: the tree without hidden names.
    fn visible(t: &Tree) -> Tree {
        match t {
            Tree::File(b) => Tree::File(b.clone()),
            Tree::Dir(m) => Tree::Dir(
                m.iter()
                    .filter(|(n, _)| !n.starts_with('.'))
                    .map(|(n, c)| (n.clone(), visible(c)))
                    .collect(),
            ),
        }
    }

    fn read_back(path: &Path) -> Tree {
        if path.is_dir() {
            Tree::Dir(
                fs::read_dir(path)
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        (e.file_name().into_string().unwrap(), read_back(&e.path()))
                    })
                    .collect(),
            )
        } else {
            Tree::File(fs::read(path).unwrap())
        }
    }

    fn same(a: &Tree, b: &Tree) -> bool {
        match (a, b) {
            (Tree::File(x), Tree::File(y)) => x == y,
            (Tree::Dir(x), Tree::Dir(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((n1, c1), (n2, c2))| n1 == n2 && same(c1, c2))
            }
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_trees_round_trip(m in proptest::collection::btree_map(name(), tree(), 0..6), small in any::<bool>()) {
            let t = Tree::Dir(m);
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            materialize(&t, &root);
            // A tiny threshold makes most directories HAMTs.
            let opts = if small { with_threshold(60) } else { ImportOptions::default() };
            let (r, _, store) = add(&opts, &[&root], true);
            let cid = r.unwrap();
            let out = tmp.path().join("out");
            export::get(&store, &cid, &out).unwrap();
            let want = visible(&t);
            prop_assert!(same(&read_back(&out), &want));
            if let Tree::Dir(m) = &want {
                let mut names: Vec<String> = export::ls(&store, &cid).unwrap().into_iter().map(|e| e.name).collect();
                names.sort();
                prop_assert_eq!(names, m.keys().cloned().collect::<Vec<_>>());
            }
        }
    }
}
