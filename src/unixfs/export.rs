//! Reading UnixFS back out of a [`BlockSource`]: `cat`, byte ranges, path
//! resolution, `ls` and `get`.
//!
//! Owns the traversal of file DAGs and directories; assumes blocks come from
//! a source that verifies their hashes (identity CIDs are answered from the
//! CID itself) and the codecs of [`super::pb`] and [`super::hamt`].
//!
//! Nothing read is trusted. File DAGs (balanced or trickle, raw or dag-pb
//! leaves, UnixFS `File` or `Raw`, data inline in any node) are checked node
//! by node: `blocksizes` must match the links, a node's data plus its
//! `blocksizes` must equal its `filesize` and the size its parent claims for
//! it, raw leaves must be as long as claimed. Because every node is checked
//! against its parent's claim, ranges can skip whole subtrees using
//! `blocksizes` and still never emit a byte from the wrong offset. Walks are
//! iterative with named depth limits; memory is bounded by the open path
//! (at most [`MAX_FILE_DEPTH`] nodes' link lists), not by file size.
//! `get` never writes outside its destination: link names that are empty,
//! `.`, `..`, or contain `/` or NUL are refused, directories and files are
//! created exclusively (an existing path, including a symlink the DAG itself
//! just made, is an error, never followed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cid::Cid;

use super::hamt::{self, DirEntry};
use super::pb::{self, DataType, PbError, PbNode, UnixfsData};
use crate::block::{DAG_PB, RAW};
use crate::blockstore::{self, BlockSource};

/// Deepest file DAG read. Balanced DAGs of 174-link nodes need 8 levels for
/// 2^64 bytes and Kubo's trickle DAGs about 20; this leaves room for other
/// importers' settings while bounding a hostile DAG's memory.
pub const MAX_FILE_DEPTH: usize = 64;
/// Deepest directory nesting `get` writes (beyond it paths outgrow PATH_MAX).
pub const MAX_DIR_DEPTH: usize = 256;

/// Errors of reading UnixFS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Large sources are boxed: errors pass through every per-block call.
    #[error(transparent)]
    Block(Box<blockstore::Error>),
    #[error("{cid}: {source}")]
    Pb { cid: Cid, source: Box<PbError> },
    #[error(transparent)]
    Hamt(Box<hamt::Error>),
    #[error("{0} is a directory: use `get`")]
    IsDirectory(Cid),
    #[error("{cid} is a {kind}, not a file")]
    NotAFile { cid: Cid, kind: &'static str },
    #[error("{0} is not a directory")]
    NotADirectory(Cid),
    #[error("block {cid} has codec 0x{codec:x}; only dag-pb (0x70) and raw (0x55) are understood")]
    UnsupportedCodec { cid: Cid, codec: u64 },
    #[error("{cid} is malformed: {reason}")]
    Malformed { cid: Cid, reason: String },
    #[error("no link named {name:?} under {cid}")]
    NotFound { cid: Cid, name: String },
    #[error("path segment {0:?} is not allowed")]
    BadSegment(String),
    #[error("{cid} holds an entry named {name:?}, which cannot be written safely")]
    HostileName { cid: Cid, name: String },
    #[error("{0} nests deeper than the limit")]
    TooDeep(Cid),
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<blockstore::Error> for Error {
    fn from(e: blockstore::Error) -> Self {
        Error::Block(Box::new(e))
    }
}

impl From<hamt::Error> for Error {
    fn from(e: hamt::Error) -> Self {
        match e {
            // Keep "block not found" and friends recognisable to callers.
            hamt::Error::Block(b) => Error::Block(b),
            e => Error::Hamt(Box::new(e)),
        }
    }
}

fn pb_err(cid: &Cid) -> impl FnOnce(PbError) -> Error + '_ {
    move |e| Error::Pb {
        cid: *cid,
        source: Box::new(e),
    }
}

fn malformed(cid: &Cid, reason: impl Into<String>) -> Error {
    Error::Malformed {
        cid: *cid,
        reason: reason.into(),
    }
}

/// What a UnixFS node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// Not UnixFS, or a UnixFS type this reader does not know (Metadata).
    Unknown,
}

/// One entry of `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsEntry {
    pub name: String,
    pub cid: Cid,
    /// The link's Tsize (cumulative DAG size).
    pub tsize: u64,
    pub kind: EntryKind,
    /// File content bytes for files, target length for symlinks, 0 otherwise.
    pub size: u64,
}

/// A decoded block.
enum Node {
    Raw(Bytes),
    Pb { node: PbNode, fs: UnixfsData },
}

fn load_node<B: BlockSource + ?Sized>(src: &B, cid: &Cid) -> Result<Node, Error> {
    let bytes = hamt::load(src, cid)?;
    match cid.codec() {
        RAW => Ok(Node::Raw(bytes)),
        DAG_PB => {
            let node = PbNode::decode(&bytes).map_err(pb_err(cid))?;
            let data = node
                .data
                .as_ref()
                .ok_or_else(|| malformed(cid, "dag-pb node without UnixFS Data"))?;
            let fs = pb::decode_unixfs(data).map_err(pb_err(cid))?;
            Ok(Node::Pb { node, fs })
        }
        codec => Err(Error::UnsupportedCodec { cid: *cid, codec }),
    }
}

fn kind_of(fs: &UnixfsData) -> EntryKind {
    match DataType::try_from(fs.r#type) {
        Ok(DataType::File | DataType::Raw) => EntryKind::File,
        Ok(DataType::Directory | DataType::HamtShard) => EntryKind::Directory,
        Ok(DataType::Symlink) => EntryKind::Symlink,
        _ => EntryKind::Unknown,
    }
}

/// The part of a file node that lies in one place: inline data and children.
struct FileNode {
    data: Bytes,
    /// (child, its claimed size), in order.
    children: Vec<(Cid, u64)>,
    /// data + all children.
    size: u64,
}

/// Checks a file node and returns its pieces. `claimed` is the size its
/// parent's `blocksizes` gives it (None at the root).
fn file_node(cid: &Cid, node: Node, claimed: Option<u64>, root: bool) -> Result<FileNode, Error> {
    let fnode = match node {
        Node::Raw(data) => FileNode {
            size: data.len() as u64,
            data,
            children: Vec::new(),
        },
        Node::Pb { node, fs } => {
            match kind_of(&fs) {
                EntryKind::File => {}
                EntryKind::Directory if root => return Err(Error::IsDirectory(*cid)),
                EntryKind::Symlink if root => {
                    return Err(Error::NotAFile {
                        cid: *cid,
                        kind: "symlink",
                    })
                }
                _ if root => {
                    return Err(Error::NotAFile {
                        cid: *cid,
                        kind: "UnixFS node of an unsupported type",
                    })
                }
                _ => return Err(malformed(cid, "a file's DAG holds a non-file node")),
            }
            if fs.blocksizes.len() != node.links.len() {
                return Err(malformed(
                    cid,
                    format!(
                        "{} links but {} blocksizes",
                        node.links.len(),
                        fs.blocksizes.len()
                    ),
                ));
            }
            let data = fs.data.clone().unwrap_or_default();
            let mut size = data.len() as u64;
            for b in &fs.blocksizes {
                size = size
                    .checked_add(*b)
                    .ok_or_else(|| malformed(cid, "blocksizes overflow"))?;
            }
            if let Some(fsz) = fs.filesize {
                if fsz != size {
                    return Err(malformed(
                        cid,
                        format!("filesize {fsz} but data and blocksizes add up to {size}"),
                    ));
                }
            }
            let children = node
                .links
                .iter()
                .map(|l| l.cid)
                .zip(fs.blocksizes.iter().copied())
                .collect();
            FileNode {
                data,
                children,
                size,
            }
        }
    };
    if let Some(c) = claimed {
        if c != fnode.size {
            return Err(malformed(
                cid,
                format!("holds {} bytes but its parent says {c}", fnode.size),
            ));
        }
    }
    Ok(fnode)
}

/// Writes the part of `data` (which starts at file offset `start`) that lies
/// in `[lo, hi)`.
fn write_overlap<W: Write + ?Sized>(
    w: &mut W,
    data: &[u8],
    start: u64,
    lo: u64,
    hi: u64,
) -> Result<u64, Error> {
    let end = start.saturating_add(data.len() as u64);
    let a = lo.max(start);
    let b = hi.min(end);
    if a >= b {
        return Ok(0);
    }
    let slice = &data[(a - start) as usize..(b - start) as usize];
    w.write_all(slice).map_err(Error::Write)?;
    Ok(slice.len() as u64)
}

/// The size in bytes of the file at `cid` (from its root node alone).
pub fn file_size<B: BlockSource + ?Sized>(src: &B, cid: &Cid) -> Result<u64, Error> {
    let node = load_node(src, cid)?;
    Ok(file_node(cid, node, None, true)?.size)
}

/// Writes bytes `[offset, offset + len)` of the file at `cid` to `w`
/// (clamped to the file's end), skipping subtrees outside the range.
/// Returns the number of bytes written.
pub fn read_range<B: BlockSource + ?Sized, W: Write + ?Sized>(
    src: &B,
    cid: &Cid,
    offset: u64,
    len: u64,
    w: &mut W,
) -> Result<u64, Error> {
    struct Frame {
        children: Vec<(Cid, u64)>,
        next: usize,
        /// File offset of the next child.
        pos: u64,
    }
    let (lo, hi) = (offset, offset.saturating_add(len));
    let root = file_node(cid, load_node(src, cid)?, None, true)?;
    let mut written = write_overlap(w, &root.data, 0, lo, hi)?;
    let mut stack = vec![Frame {
        pos: root.data.len() as u64,
        children: root.children,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(&(child, claimed)) = top.children.get(top.next) else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let start = top.pos;
        let end = start.saturating_add(claimed);
        top.pos = end;
        if start >= hi {
            // Everything after this lies beyond the range too.
            break;
        }
        if claimed == 0 || end <= lo {
            continue;
        }
        if stack.len() >= MAX_FILE_DEPTH {
            return Err(Error::TooDeep(*cid));
        }
        let n = file_node(&child, load_node(src, &child)?, Some(claimed), false)?;
        written += write_overlap(w, &n.data, start, lo, hi)?;
        if !n.children.is_empty() {
            stack.push(Frame {
                pos: start + n.data.len() as u64,
                children: n.children,
                next: 0,
            });
        }
    }
    Ok(written)
}

/// Writes the whole file at `cid` to `w`; returns its size.
pub fn cat<B: BlockSource + ?Sized, W: Write + ?Sized>(
    src: &B,
    cid: &Cid,
    w: &mut W,
) -> Result<u64, Error> {
    read_range(src, cid, 0, u64::MAX, w)
}

/// Calls `f` for every entry of the directory `cid` (already decoded), in
/// link order: as stored for basic directories, trie order for HAMTs.
fn for_each_entry<B: BlockSource + ?Sized>(
    src: &B,
    cid: &Cid,
    node: &PbNode,
    fs: &UnixfsData,
    f: &mut dyn FnMut(DirEntry) -> Result<(), Error>,
) -> Result<(), Error> {
    if hamt::is_shard(fs) {
        return hamt::for_each_in(src, cid, node, f);
    }
    if fs.r#type != DataType::Directory as i32 {
        return Err(Error::NotADirectory(*cid));
    }
    for l in &node.links {
        f(DirEntry {
            name: l.name_str().to_string(),
            cid: l.cid,
            tsize: l.tsize.unwrap_or(0),
        })?;
    }
    Ok(())
}

/// Follows `path` ("a/b/c"; empty segments ignored) from `root` through
/// basic and HAMT directories.
pub fn resolve<B: BlockSource + ?Sized>(src: &B, root: &Cid, path: &str) -> Result<Cid, Error> {
    let mut cur = *root;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(Error::BadSegment(seg.to_string()));
        }
        let Node::Pb { node, fs } = load_node(src, &cur)? else {
            return Err(Error::NotADirectory(cur));
        };
        let found = if hamt::is_shard(&fs) {
            hamt::lookup_in(src, &cur, &node, seg)?.map(|e| e.cid)
        } else if fs.r#type == DataType::Directory as i32 {
            node.links
                .iter()
                .find(|l| l.name_str() == seg)
                .map(|l| l.cid)
        } else {
            return Err(Error::NotADirectory(cur));
        };
        cur = found.ok_or_else(|| Error::NotFound {
            cid: cur,
            name: seg.to_string(),
        })?;
    }
    Ok(cur)
}

/// What a node is, and its size (see [`LsEntry::size`]).
pub fn stat<B: BlockSource + ?Sized>(src: &B, cid: &Cid) -> Result<(EntryKind, u64), Error> {
    match load_node(src, cid)? {
        Node::Raw(b) => Ok((EntryKind::File, b.len() as u64)),
        Node::Pb { node, fs } => {
            let kind = kind_of(&fs);
            let size = match kind {
                EntryKind::File => file_node(cid, Node::Pb { node, fs }, None, true)?.size,
                EntryKind::Symlink => fs.data.as_ref().map_or(0, |d| d.len() as u64),
                _ => 0,
            };
            Ok((kind, size))
        }
    }
}

/// The entries of the directory `cid`, each child fetched for its type.
pub fn ls<B: BlockSource + ?Sized>(src: &B, cid: &Cid) -> Result<Vec<LsEntry>, Error> {
    let Node::Pb { node, fs } = load_node(src, cid)? else {
        return Err(Error::NotADirectory(*cid));
    };
    let mut out = Vec::new();
    for_each_entry(src, cid, &node, &fs, &mut |e| {
        let (kind, size) = stat(src, &e.cid)?;
        out.push(LsEntry {
            name: e.name,
            cid: e.cid,
            tsize: e.tsize,
            kind,
            size,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Whether `name` can be a single path component safely.
/// Whether a directory entry's name is one path component that cannot escape its directory.
pub(crate) fn safe_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']))
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn write_file<B: BlockSource + ?Sized>(src: &B, cid: &Cid, path: &Path) -> Result<(), Error> {
    // create_new: O_EXCL, so an existing file or symlink is never followed.
    let f = fs::File::create_new(path).map_err(io_err("create", path))?;
    let mut w = std::io::BufWriter::new(f);
    cat(src, cid, &mut w)?;
    w.flush().map_err(io_err("write", path))?;
    Ok(())
}

fn write_symlink(cid: &Cid, fs: &UnixfsData, path: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let target = fs.data.as_deref().unwrap_or(&[]);
    if target.is_empty() || target.contains(&0) {
        return Err(malformed(cid, "symlink target is empty or holds NUL"));
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
        .map_err(io_err("create symlink", path))
}

/// The target of the UnixFS symlink at `cid`.
pub fn symlink_target<B: BlockSource + ?Sized>(src: &B, cid: &Cid) -> Result<Vec<u8>, Error> {
    match load_node(src, cid)? {
        Node::Pb { fs, .. } if kind_of(&fs) == EntryKind::Symlink => {
            let target = fs.data.as_deref().unwrap_or(&[]);
            if target.is_empty() || target.contains(&0) {
                return Err(malformed(cid, "symlink target is empty or holds NUL"));
            }
            Ok(target.to_vec())
        }
        _ => Err(malformed(cid, "not a UnixFS symlink")),
    }
}

/// Directories `get` still has to write: (cid, where, depth).
type DirTodo = Vec<(Cid, PathBuf, usize)>;

/// Writes a file or symlink at `path` now, or queues a directory.
fn place<B: BlockSource + ?Sized>(
    src: &B,
    cid: &Cid,
    node: Node,
    path: PathBuf,
    depth: usize,
    todo: &mut DirTodo,
) -> Result<(), Error> {
    let Node::Pb { fs, .. } = node else {
        return write_file(src, cid, &path);
    };
    match kind_of(&fs) {
        EntryKind::Directory => {
            todo.push((*cid, path, depth));
            Ok(())
        }
        EntryKind::Symlink => write_symlink(cid, &fs, &path),
        EntryKind::File => write_file(src, cid, &path),
        EntryKind::Unknown => Err(Error::NotAFile {
            cid: *cid,
            kind: "UnixFS node of an unsupported type",
        }),
    }
}

/// Writes the file, directory or symlink at `cid` to `dest`, which must not
/// exist yet.
pub fn get<B: BlockSource + ?Sized>(src: &B, cid: &Cid, dest: &Path) -> Result<(), Error> {
    // Files and symlinks are written as their directory is listed, so only
    // directories wait here, not whole listings.
    let mut todo = DirTodo::new();
    place(
        src,
        cid,
        load_node(src, cid)?,
        dest.to_path_buf(),
        0,
        &mut todo,
    )?;
    while let Some((dir, path, depth)) = todo.pop() {
        if depth >= MAX_DIR_DEPTH {
            return Err(Error::TooDeep(dir));
        }
        let Node::Pb { node, fs } = load_node(src, &dir)? else {
            return Err(Error::NotADirectory(dir));
        };
        fs::create_dir(&path).map_err(io_err("create directory", &path))?;
        for_each_entry(src, &dir, &node, &fs, &mut |e| {
            if !safe_name(&e.name) {
                return Err(Error::HostileName {
                    cid: dir,
                    name: e.name,
                });
            }
            let child = load_node(src, &e.cid)?;
            place(src, &e.cid, child, path.join(&e.name), depth + 1, &mut todo)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Block;
    use crate::blockstore::{BlockSink, MemBlockstore};
    use crate::unixfs::pb::PbLink;
    use crate::unixfs::{file, ImportOptions, Layout};
    use cid::Version;
    use proptest::prelude::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i % 251) ^ (i / 4096 % 256)) as u8)
            .collect()
    }

    fn put(store: &mut MemBlockstore, version: Version, codec: u64, data: Vec<u8>) -> Cid {
        let b = Block::new(version, codec, data);
        store.put(&b).unwrap();
        b.cid
    }

    #[test]
    fn cat_and_ranges_across_layouts() {
        let data = pattern(300_000);
        for (layout, raw, version, chunk) in [
            (Layout::Balanced, false, 0, 1000),
            (Layout::Balanced, true, 1, 997),
            (Layout::Trickle, false, 0, 1000),
            (Layout::Trickle, true, 1, 333),
        ] {
            let opts = ImportOptions {
                layout,
                chunker: crate::unixfs::Chunker::Size(chunk),
                max_links: 7,
                ..ImportOptions::default()
                    .with_cid_version(version, Some(raw))
                    .unwrap()
            };
            let mut store = MemBlockstore::new();
            let f = file::import_bytes(&opts, &data, &mut store).unwrap();
            let mut out = Vec::new();
            assert_eq!(cat(&store, &f.cid, &mut out).unwrap(), data.len() as u64);
            assert_eq!(out, data, "{layout:?} raw={raw}");
            assert_eq!(file_size(&store, &f.cid).unwrap(), data.len() as u64);
            for (off, len) in [
                (0, 1),
                (999, 2),
                (12_345, 50_000),
                (299_999, 10),
                (400_000, 5),
            ] {
                let mut out = Vec::new();
                read_range(&store, &f.cid, off, len, &mut out).unwrap();
                let lo = (off as usize).min(data.len());
                let hi = (off + len).min(data.len() as u64) as usize;
                assert_eq!(out, &data[lo..hi], "{layout:?} {off}+{len}");
            }
        }
    }

    #[test]
    fn inline_data_in_internal_node_and_identity_leaf() {
        // A File node with inline data "ab" and two children: a raw leaf "cd"
        // and an identity-CID raw leaf "ef" that is in no store.
        let mut store = MemBlockstore::new();
        let c1 = put(&mut store, Version::V1, RAW, b"cd".to_vec());
        let id = Cid::new_v1(
            RAW,
            multihash::Multihash::wrap(crate::block::IDENTITY, b"ef").unwrap(),
        );
        let node = PbNode {
            links: vec![PbLink::new(c1, "", 2), PbLink::new(id, "", 2)],
            data: Some(
                pb::encode_unixfs(&UnixfsData {
                    r#type: DataType::File as i32,
                    data: Some(Bytes::from_static(b"ab")),
                    filesize: Some(6),
                    blocksizes: vec![2, 2],
                    ..Default::default()
                })
                .into(),
            ),
        };
        let root = put(&mut store, Version::V0, DAG_PB, node.encode());
        let mut out = Vec::new();
        cat(&store, &root, &mut out).unwrap();
        assert_eq!(out, b"abcdef");
        let mut out = Vec::new();
        read_range(&store, &root, 1, 4, &mut out).unwrap();
        assert_eq!(out, b"bcde");

        // Lying blocksizes are caught.
        let mut bad = node.clone();
        bad.data = Some(
            pb::encode_unixfs(&UnixfsData {
                r#type: DataType::File as i32,
                data: Some(Bytes::from_static(b"ab")),
                filesize: Some(7),
                blocksizes: vec![3, 2],
                ..Default::default()
            })
            .into(),
        );
        let bad = put(&mut store, Version::V0, DAG_PB, bad.encode());
        let e = cat(&store, &bad, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
    }

    #[test]
    fn directory_is_not_a_file() {
        let mut store = MemBlockstore::new();
        let d =
            crate::unixfs::dir::build_directory(&ImportOptions::default(), Vec::new(), &mut store)
                .unwrap();
        let e = cat(&store, &d.cid, &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn is a directory: use `get`"
        );
    }

    fn dir_with(store: &mut MemBlockstore, name: &str) -> Cid {
        let f = file::import_bytes(&ImportOptions::default(), b"pwned\n", store).unwrap();
        let node = PbNode {
            links: vec![PbLink::new(f.cid, name, f.tsize)],
            data: Some(
                pb::encode_unixfs(&UnixfsData {
                    r#type: DataType::Directory as i32,
                    ..Default::default()
                })
                .into(),
            ),
        };
        put(store, Version::V0, DAG_PB, node.encode())
    }

    #[test]
    fn get_refuses_hostile_names() {
        for name in ["../x", "..", ".", "", "a/b", "/etc/passwd", "nul\0x"] {
            let mut store = MemBlockstore::new();
            let root = dir_with(&mut store, name);
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("out");
            let e = get(&store, &root, &dest).unwrap_err();
            assert!(matches!(e, Error::HostileName { .. }), "{name:?}: {e}");
            assert!(!tmp.path().join("x").exists());
            assert!(!dest.join("x").exists());
        }
    }

    #[test]
    fn get_does_not_follow_a_symlink_it_wrote() {
        // "a" is a symlink to the outside; a second entry "a" (a file) must
        // not be written through it.
        let mut store = MemBlockstore::new();
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let link = crate::unixfs::dir::build_symlink(
            &ImportOptions::default(),
            outside.as_os_str().as_encoded_bytes(),
            &mut store,
        )
        .unwrap();
        let f = file::import_bytes(&ImportOptions::default(), b"pwned\n", &mut store).unwrap();
        let node = PbNode {
            links: vec![
                PbLink::new(link.cid, "a", link.tsize),
                PbLink::new(f.cid, "a", f.tsize),
            ],
            data: Some(
                pb::encode_unixfs(&UnixfsData {
                    r#type: DataType::Directory as i32,
                    ..Default::default()
                })
                .into(),
            ),
        };
        let root = put(&mut store, Version::V0, DAG_PB, node.encode());
        assert!(get(&store, &root, &tmp.path().join("out")).is_err());
        assert!(!outside.exists());
    }

    proptest! {
        #[test]
        fn random_blocks_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..300),
            raw in any::<bool>(),
            off in 0u64..400,
        ) {
            let mut store = MemBlockstore::new();
            let c = put(&mut store, Version::V1, if raw { RAW } else { DAG_PB }, b);
            let _ = cat(&store, &c, &mut Vec::new());
            let _ = read_range(&store, &c, off, 10, &mut Vec::new());
            let _ = ls(&store, &c);
            let _ = resolve(&store, &c, "a/b");
            let _ = stat(&store, &c);
            let _ = file_size(&store, &c);
            let tmp = tempfile::tempdir().unwrap();
            let _ = get(&store, &c, &tmp.path().join("o"));
        }

        #[test]
        fn random_file_node_fields_never_panic(
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            filesize in proptest::option::of(0u64..100),
            blocksizes in proptest::collection::vec(0u64..50, 0..4),
            nlinks in 0usize..4,
            ty in 0i32..7,
        ) {
            let mut store = MemBlockstore::new();
            let leaf = put(&mut store, Version::V1, RAW, b"0123456789".to_vec());
            let node = PbNode {
                links: (0..nlinks).map(|_| PbLink::new(leaf, "", 10)).collect(),
                data: Some(pb::encode_unixfs(&UnixfsData {
                    r#type: ty,
                    data: data.map(Bytes::from),
                    filesize,
                    blocksizes,
                    ..Default::default()
                }).into()),
            };
            let root = put(&mut store, Version::V0, DAG_PB, node.encode());
            let _ = cat(&store, &root, &mut Vec::new());
            let _ = read_range(&store, &root, 5, 7, &mut Vec::new());
            let _ = ls(&store, &root);
        }
    }

    #[test]
    fn identity_root() {
        let id = Cid::new_v1(
            RAW,
            multihash::Multihash::wrap(crate::block::IDENTITY, b"hi").unwrap(),
        );
        let mut out = Vec::new();
        cat(&MemBlockstore::new(), &id, &mut out).unwrap();
        assert_eq!(out, b"hi");
    }
}
