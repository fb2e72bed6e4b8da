//! `cat` and `get` while a daemon runs: the daemon owns the repo, so the content comes over its
//! RPC (and from peers, through it, when the store lacks blocks).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Empty;

use super::swarm::block_on;
use crate::node::client::{percent_encode, RpcClient};

/// `cat PATH` through the daemon, to stdout.
pub(super) fn cat(c: &RpcClient, path: &str) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let pq = format!("/api/v0/cat?arg={}", percent_encode(path));
    block_on(c.stream(&pq, Empty::<Bytes>::new(), |b| out.write_all(&b)))?
        .with_context(|| format!("reading {path} through the daemon"))?;
    out.flush()?;
    Ok(())
}

/// `get PATH [-o DEST]` through the daemon: the daemon sends a tar, unpacked here into `dest`
/// (default: the last path segment, or the CID, as offline `get`).
pub(super) fn get(c: &RpcClient, path: &str, output: Option<PathBuf>) -> Result<()> {
    let (root, rest) = crate::node::content::split_ipfs_path(path).map_err(anyhow::Error::msg)?;
    let dest = output.unwrap_or_else(|| {
        PathBuf::from(
            rest.rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .map_or_else(|| root.to_string(), str::to_string),
        )
    });
    if fs::symlink_metadata(&dest).is_ok() {
        bail!(
            "{} already exists: remove it or choose another -o",
            dest.display()
        );
    }
    let (tx, rx) = sync_channel::<Bytes>(8);
    let unpack_dest = dest.clone();
    let unpacker = std::thread::spawn(move || {
        unpack(
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
            &unpack_dest,
        )
    });
    let pq = format!("/api/v0/get?arg={}", percent_encode(path));
    let fetched = block_on(c.stream(&pq, Empty::<Bytes>::new(), |b| {
        tx.send(b)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "unpacking stopped"))
    }))?;
    drop(tx);
    let unpacked = unpacker
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    // The daemon's error explains an unpacking failure (a cut stream), so it comes first.
    fetched.with_context(|| format!("fetching {path} through the daemon"))?;
    unpacked.with_context(|| format!("writing {path} to {}", dest.display()))?;
    eprintln!("Saving file(s) to {}", dest.display());
    Ok(())
}

/// Unpacks an archive whose entries all sit under one top name, which becomes `dest`.
fn unpack(r: impl Read, dest: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let mut top: Option<PathBuf> = None;
    for e in ar.entries().context("reading the archive")? {
        let mut e = e.context("reading the archive")?;
        let path = e.path().context("an archive entry's name")?.into_owned();
        let mut parts = path.components();
        let first = parts.next();
        let rest: PathBuf = parts.collect();
        let ok = matches!(first, Some(Component::Normal(_)))
            && rest.components().all(|c| matches!(c, Component::Normal(_)));
        let first = PathBuf::from(first.map_or("".as_ref(), |c| c.as_os_str()));
        if !ok || top.get_or_insert_with(|| first.clone()) != &first {
            bail!("the archive holds an unsafe entry name {}", path.display());
        }
        let target = dest.join(&rest);
        let kind = e.header().entry_type();
        if kind.is_dir() {
            fs::create_dir(&target).with_context(|| format!("creating {}", target.display()))?;
        } else if kind.is_file() {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            io::copy(&mut e, &mut f).with_context(|| format!("writing {}", target.display()))?;
        } else if kind.is_symlink() {
            let link = e
                .link_name()
                .context("a symlink's target")?
                .context("a symlink without a target")?;
            std::os::unix::fs::symlink(&link, &target)
                .with_context(|| format!("creating symlink {}", target.display()))?;
        } else {
            bail!(
                "the archive holds {} of an unsupported kind",
                path.display()
            );
        }
    }
    if top.is_none() {
        bail!("the archive is empty");
    }
    Ok(())
}

struct ChannelReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
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
