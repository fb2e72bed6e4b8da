//! `cat`, `get` and `pin` while a daemon runs: the daemon owns the repo, so the content comes over
//! its RPC (and from peers, through it, when the store lacks blocks).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::sync_channel;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Empty;

use super::args::PinCmd;
use super::swarm::block_on;
use crate::node::client::{percent_encode, RpcClient};
use crate::unixfs::tar::ChunkReader;

/// `cat PATH` through the daemon, to stdout.
pub(super) fn cat(c: &RpcClient, path: &str) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let pq = format!("/api/v0/cat?arg={}", percent_encode(path));
    block_on(c.stream(&pq, None, Empty::<Bytes>::new(), |b| out.write_all(&b)))?
        .with_context(|| format!("reading {path} through the daemon"))?;
    out.flush()?;
    Ok(())
}

/// `pin add|rm|ls` through the daemon; `pin add` fetches what the store lacks from peers. Prints
/// what the offline commands print, except the freed-block counts of `rm`, which the RPC does not
/// report.
pub(super) fn pin(c: &RpcClient, p: PinCmd) -> Result<()> {
    match p {
        PinCmd::Add { cids, recursive } => {
            let out = block_on(c.pin_add(&cids, recursive))?
                .with_context(|| format!("pinning {} through the daemon", cids.join(", ")))?;
            let mode = if recursive { "recursive" } else { "direct" };
            for cid in out.pins {
                println!("pinned {cid} {mode}");
            }
        }
        PinCmd::Rm { cids } => {
            let out = block_on(c.pin_rm(&cids))?
                .with_context(|| format!("unpinning {} through the daemon", cids.join(", ")))?;
            for cid in out.pins {
                println!("unpinned {cid}");
            }
        }
        PinCmd::Ls { quiet } => {
            // Indirect pins are every block below a recursive one: not listed, as offline.
            for kind in ["recursive", "direct"] {
                let out = block_on(c.pin_ls(kind))?
                    .with_context(|| format!("listing {kind} pins through the daemon"))?;
                for cid in out.keys.keys() {
                    if quiet {
                        println!("{cid}");
                    } else {
                        println!("{cid} {kind}");
                    }
                }
            }
        }
    }
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
    let unpacker = std::thread::spawn(move || unpack(ChunkReader::new(rx), &unpack_dest));
    let pq = format!("/api/v0/get?arg={}", percent_encode(path));
    let fetched = block_on(c.stream(&pq, None, Empty::<Bytes>::new(), |b| {
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

/// `add` through the daemon: the files go up as Kubo's multipart upload, the daemon imports,
/// stores and pins them, and its NDJSON lines are printed as offline `add` prints.
pub(super) fn add(c: &RpcClient, a: &super::args::AddArgs, show_progress: bool) -> Result<()> {
    use crate::node::add::AddEvent;

    let args = crate::unixfs::dir::arguments(&a.paths, a.recursive)?;
    let boundary = boundary();
    let mut q = vec![format!("pin={}", a.pin)];
    let mut flag = |k: &str, v: String| q.push(format!("{k}={}", percent_encode(&v)));
    if let Some(v) = a.cid_version {
        flag("cid-version", v.to_string());
    }
    if let Some(v) = a.raw_leaves {
        flag("raw-leaves", v.to_string());
    }
    if let Some(v) = &a.chunker {
        flag("chunker", v.clone());
    }
    if let Some(v) = &a.hash {
        flag("hash", v.clone());
    }
    for (on, k) in [
        (a.trickle, "trickle"),
        (a.wrap_with_directory, "wrap-with-directory"),
        (show_progress, "progress"),
    ] {
        if on {
            flag(k, "true".into());
        }
    }
    let pq = format!("/api/v0/add?{}", q.join("&"));

    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<hyper::body::Frame<Bytes>>>(8);
    let hidden = a.hidden;
    let b = boundary.clone();
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut up = Upload { tx, boundary: b };
        let r = send_parts(&mut up, &args, hidden);
        match &r {
            Ok(()) => up.raw(format!("--{}--\r\n", up.boundary).into())?,
            // Abort the request, so the daemon never takes a partial upload for a whole one.
            Err(e) => {
                let _ = up.tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
        r
    });
    let body = http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));

    let bar = super::progress::AddProgress::new(show_progress, &a.paths, a.recursive);
    let mut pending = Vec::new();
    let mut root: Option<String> = None;
    let mut bad_line: Option<String> = None;
    // Progress lines count each file's own bytes (as Kubo's); the bar counts the whole upload.
    let mut finished_files = 0u64;
    let mut current: Option<(String, u64)> = None;
    let mut on_line = |line: &[u8]| {
        let Ok(ev) = serde_json::from_slice::<AddEvent>(line) else {
            bad_line.get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
            return;
        };
        let Some(hash) = ev.hash else {
            let n = ev.bytes.unwrap_or(0);
            match &mut current {
                Some((name, bytes)) if *name == ev.name => *bytes = n,
                _ => {
                    finished_files += current.take().map_or(0, |(_, b)| b);
                    current = Some((ev.name, n));
                }
            }
            bar.set(finished_files + n);
            return;
        };
        if ev.name.is_empty() || !ev.name.contains('/') {
            root = Some(hash.clone());
        }
        if a.silent || a.quieter {
            return;
        }
        bar.println(&if a.quiet {
            hash
        } else if ev.name.is_empty() {
            format!("added {hash}")
        } else {
            format!("added {hash} {}", ev.name)
        });
    };
    let answered = block_on(c.stream(
        &pq,
        Some(&format!("multipart/form-data; boundary={boundary}")),
        body,
        |chunk| {
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                on_line(&line[..line.len() - 1]);
            }
            Ok(())
        },
    ))?;
    let sent = sender
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    // A local read error explains why the daemon saw the upload break: it comes first.
    sent.context("sending the files to the daemon")?;
    answered.context("adding through the daemon")?;
    bar.finish();
    if let Some(l) = bad_line {
        bail!("the daemon answered a line that is not an add event: {l}");
    }
    let root = root.context("the daemon reported nothing added")?;
    if a.quieter && !a.silent {
        println!("{root}");
    }
    Ok(())
}

/// A boundary no file is likely to contain: 32 hex digits of a hash of the time and pid.
fn boundary() -> String {
    use sha2::Digest;
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let h = sha2::Sha256::digest(seed.as_bytes());
    format!("wanda{}", data_encoding::HEXLOWER.encode(&h[..16]))
}

/// The sending side of the upload.
struct Upload {
    tx: tokio::sync::mpsc::Sender<io::Result<hyper::body::Frame<Bytes>>>,
    boundary: String,
}

impl Upload {
    fn raw(&mut self, b: Bytes) -> Result<()> {
        self.tx
            .blocking_send(Ok(hyper::body::Frame::data(b)))
            .map_err(|_| anyhow::anyhow!("the daemon stopped reading the upload"))
    }

    /// One part's header: Kubo's client names parts by their escaped relative path.
    fn begin(&mut self, path: &str, content_type: &str) -> Result<()> {
        let h = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
            self.boundary,
            query_escape(path)
        );
        self.raw(h.into())
    }

    fn end(&mut self) -> Result<()> {
        self.raw(Bytes::from_static(b"\r\n"))
    }

    fn file(&mut self, name: &str, path: &Path) -> Result<()> {
        // O_NONBLOCK: a FIFO swapped in since the walk looked must not hang the upload.
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("cannot add {}: opening it failed", path.display()))?;
        if !f.metadata()?.is_file() {
            bail!("cannot add {}: it is not a regular file", path.display());
        }
        self.begin(name, "application/octet-stream")?;
        loop {
            let mut buf = vec![0u8; 256 << 10];
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            self.raw(buf.into())?;
        }
        self.end()
    }
}

/// Sends every argument, directories depth first with entries by name, as offline `add -r`
/// walks them (hidden entries only with `--hidden`).
fn send_parts(up: &mut Upload, args: &[(PathBuf, String)], hidden: bool) -> Result<()> {
    for (path, name) in args {
        let mut todo = vec![(path.clone(), name.clone())];
        while let Some((path, name)) = todo.pop() {
            let md = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot add {}", path.display()))?;
            let ft = md.file_type();
            if ft.is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                let target = fs::read_link(&path)?;
                up.begin(&name, "application/symlink")?;
                up.raw(Bytes::copy_from_slice(target.as_os_str().as_bytes()))?;
                up.end()?;
            } else if ft.is_dir() {
                up.begin(&name, "application/x-directory")?;
                up.end()?;
                let mut entries: Vec<(String, PathBuf)> = Vec::new();
                for e in
                    fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?
                {
                    let e = e.with_context(|| format!("listing {}", path.display()))?;
                    let n = e.file_name().into_string().map_err(|n| {
                        anyhow::anyhow!("{}: the name {n:?} is not UTF-8", path.display())
                    })?;
                    if hidden || !n.starts_with('.') {
                        entries.push((n, e.path()));
                    }
                }
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (n, p) in entries.into_iter().rev() {
                    todo.push((p, format!("{name}/{n}")));
                }
            } else if ft.is_file() {
                up.file(&name, &path)?;
            } else {
                bail!(
                    "cannot add {}: it is not a file, directory or symlink",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Go's `url.QueryEscape`, which Kubo's client applies to part names.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn part_names_round_trip_through_the_servers_unescape() {
        for name in ["night 1/image_0001.jpg", "café/a+b%c", "plain"] {
            let e = super::query_escape(name);
            assert!(!e.contains('/') && !e.contains(' '), "{e}");
            assert_eq!(crate::node::add::query_unescape(&e).unwrap(), name);
        }
    }
}
