//! A UnixFS DAG as a tar stream: what Kubo's RPC `get` answers, and how `wanda-ipfs get` receives
//! content from a running daemon.
//!
//! Entries are written depth first in link order, directories before their contents; file bytes
//! stream through (a scoped thread runs the exporter into a small channel that the tar writer
//! reads), so a large file never sits in memory. Names are checked with the exporter's rule, so a
//! hostile DAG (a link named `..` or `a/b`) fails here instead of escaping on the reader's side.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::Bytes;
use cid::Cid;

use super::export::{self, EntryKind, Error};
use crate::blockstore::BlockSource;

/// Deepest directory nesting written (as the exporter's `get`).
const MAX_DEPTH: usize = 256;
/// Chunks of file bytes in flight between the exporter thread and the tar writer.
const CHANNEL_CHUNKS: usize = 4;

/// Writes the entry at `cid` under the name `name` (and everything below it) as a tar archive.
pub fn write_tar<B, W>(src: &B, cid: &Cid, name: &str, out: W) -> Result<W, Error>
where
    B: BlockSource + Sync + ?Sized,
    W: Write,
{
    if !export::safe_name(name) {
        return Err(Error::Malformed {
            cid: *cid,
            reason: format!("'{name}' cannot be an archive entry name"),
        });
    }
    let mut tar = tar::Builder::new(out);
    let (kind, size) = export::stat(src, cid)?;
    let mut todo = vec![(*cid, name.to_string(), kind, size, 0usize)];
    while let Some((cid, path, kind, size, depth)) = todo.pop() {
        match kind {
            EntryKind::File => append_file(&mut tar, src, &cid, &path, size)?,
            EntryKind::Symlink => {
                let target = export::symlink_target(src, &cid)?;
                let target = std::str::from_utf8(&target).map_err(|_| Error::Malformed {
                    cid,
                    reason: "symlink target is not UTF-8".into(),
                })?;
                let mut h = header(tar::EntryType::Symlink, 0o777);
                tar.append_link(&mut h, &path, target)
                    .map_err(tar_err(&path))?;
            }
            EntryKind::Directory => {
                if depth >= MAX_DEPTH {
                    return Err(Error::TooDeep(cid));
                }
                let mut h = header(tar::EntryType::Directory, 0o755);
                tar.append_data(&mut h, &path, io::empty())
                    .map_err(tar_err(&path))?;
                let entries = export::ls(src, &cid)?;
                for e in entries.into_iter().rev() {
                    if !export::safe_name(&e.name) {
                        return Err(Error::HostileName { cid, name: e.name });
                    }
                    let child = format!("{path}/{}", e.name);
                    todo.push((e.cid, child, e.kind, e.size, depth + 1));
                }
            }
            EntryKind::Unknown => {
                return Err(Error::NotAFile {
                    cid,
                    kind: "UnixFS node of an unsupported type",
                })
            }
        }
    }
    tar.into_inner().map_err(tar_err(name))
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(0);
    h
}

fn tar_err(path: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        op: "write tar entry",
        path: path.into(),
        source,
    }
}

fn append_file<B, W>(
    tar: &mut tar::Builder<W>,
    src: &B,
    cid: &Cid,
    path: &str,
    size: u64,
) -> Result<(), Error>
where
    B: BlockSource + Sync + ?Sized,
    W: Write,
{
    let mut h = header(tar::EntryType::Regular, 0o644);
    h.set_size(size);
    let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
    std::thread::scope(|s| {
        let exporter = s.spawn(move || {
            let mut w = ChunkWriter { tx };
            export::cat(src, cid, &mut w)
        });
        let mut r = ChunkReader::new(rx);
        let written = tar.append_data(&mut h, path, &mut r);
        // Whatever the writer did, stop the exporter (dropping the reader ends its sends).
        drop(r);
        let exported = exporter
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The exporter's error is the cause; the tar writer only saw the stream end early.
        match (exported, written) {
            (Err(e), _) => Err(e),
            (Ok(n), _) if n != size => Err(Error::Malformed {
                cid: *cid,
                reason: format!("file holds {n} bytes but says {size}"),
            }),
            (Ok(_), Err(e)) => Err(tar_err(path)(e)),
            (Ok(_), Ok(())) => Ok(()),
        }
    })
}

/// The exporter's side of the channel.
struct ChunkWriter {
    tx: SyncSender<Bytes>,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the archive writer stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Chunks from a channel as a `Read`, ending when the sender hangs up: the tar writer's side
/// here, and the CLI's unpacker reading a `get` answer.
pub struct ChunkReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl ChunkReader {
    pub fn new(rx: Receiver<Bytes>) -> ChunkReader {
        ChunkReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::{BlockSink, MemBlockstore};
    use crate::unixfs::{dir, file, ImportOptions};

    #[test]
    fn a_directory_tree_round_trips_through_tar() {
        let mut store = MemBlockstore::new();
        let opts = ImportOptions::default();
        let big: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let f1 = file::import_bytes(&opts, &big, &mut store).unwrap();
        let f2 = file::import_bytes(&opts, b"hello\n", &mut store).unwrap();
        let link = dir::build_symlink(&opts, b"b.txt", &mut store).unwrap();
        let sub = dir::build_directory(
            &opts,
            vec![dir::DirEntry {
                name: "b.txt".into(),
                cid: f2.cid,
                tsize: f2.tsize,
            }],
            &mut store,
        )
        .unwrap();
        let root = dir::build_directory(
            &opts,
            vec![
                dir::DirEntry {
                    name: "a.bin".into(),
                    cid: f1.cid,
                    tsize: f1.tsize,
                },
                dir::DirEntry {
                    name: "sub".into(),
                    cid: sub.cid,
                    tsize: sub.tsize,
                },
                dir::DirEntry {
                    name: "ln".into(),
                    cid: link.cid,
                    tsize: link.tsize,
                },
            ],
            &mut store,
        )
        .unwrap();
        let bytes = write_tar(&store, &root.cid, "top", Vec::new()).unwrap();
        let mut got = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            got.push((path, kind, data, link));
        }
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            ["top", "top/a.bin", "top/ln", "top/sub", "top/sub/b.txt"]
        );
        assert_eq!(got[1].2, big);
        assert_eq!(got[2].3.as_deref(), Some("b.txt"));
        assert!(got[3].1.is_dir());
        assert_eq!(got[4].2, b"hello\n");
    }

    #[test]
    fn a_missing_block_fails_instead_of_a_short_archive() {
        let mut full = MemBlockstore::new();
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 7) as u8).collect();
        let f = file::import_bytes(&ImportOptions::default(), &data, &mut full).unwrap();
        // Only the root: the leaves are missing.
        let mut partial = MemBlockstore::new();
        partial
            .put(&crate::block::Block {
                cid: f.cid,
                data: full.get(&f.cid).unwrap(),
            })
            .unwrap();
        let e = write_tar(&partial, &f.cid, "f", Vec::new()).unwrap_err();
        assert!(e.to_string().contains("not in the local store"), "{e}");
        assert!(write_tar(&full, &f.cid, "../x", Vec::new()).is_err());
    }
}
