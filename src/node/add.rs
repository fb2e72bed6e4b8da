//! The RPC's `add`: Kubo's multipart upload (`POST /api/v0/add`, one part per file, directory or
//! symlink, named by its relative path), imported as it streams in and answered with Kubo's
//! NDJSON lines, `{"Name","Hash","Size"}` per entry (and `{"Name","Bytes"}` progress).
//!
//! The request body is read on the async side and handed part by part, through a small bounded
//! channel, to the synchronous importer on the blocking pool, so a large upload is never held in
//! memory and a slow disk slows the upload. Blocks become durable, then the top-level entries
//! (or the `-w` wrapper) are pinned, exactly as the CLI's offline `add` does.

use std::io::{self, Read, Write};
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::content::{stream_body, stream_headers, BodyWriter};
use super::rpc::ApiError;
use super::Node;
use crate::blockstore::{BlockSink, FsBlockstore, NullSink, PinMode};
use crate::config::{AddOverrides, ImportConfig};
use crate::unixfs::dir::{build_symlink, AddedEntry};
use crate::unixfs::tree::TreeBuilder;
use crate::unixfs::{file, ImportOptions};

/// Parts (and chunks of them) waiting for the importer.
const PART_QUEUE: usize = 16;
/// Longest symlink target accepted (Linux's PATH_MAX).
const MAX_SYMLINK_TARGET: usize = 4096;
/// A progress line per this many bytes of a file, and one at its end (Kubo's
/// `progressReaderIncrement`).
const PROGRESS_EVERY: u64 = 256 << 10;

/// `add`'s options, with Kubo's names and Go's value syntax (`pin=True` from Python is true).
/// `quiet`/`quieter` only shape the CLI's printing, in Kubo too, so the server ignores them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AddQuery {
    pub cid_version: Option<u64>,
    pub raw_leaves: Option<bool>,
    pub chunker: Option<String>,
    pub trickle: bool,
    pub hash: Option<String>,
    pub only_hash: bool,
    pub pin: bool,
    pub wrap_with_directory: bool,
    pub progress: bool,
    /// No lines for files and symlinks (directories are still reported), as Kubo's `--silent`.
    pub silent: bool,
}

impl AddQuery {
    pub fn from_params(p: &super::query::Params) -> Result<AddQuery, String> {
        let flag = |name| p.bool(name).map(|v| v.unwrap_or(false));
        // Kubo features wanda-ipfs does not have: refused, never silently ignored.
        for (name, why) in [
            ("nocopy", "there is no filestore"),
            ("fscache", "there is no filestore"),
            ("inline", "inlined CIDs are not supported"),
        ] {
            if flag(name)? {
                return Err(format!("add: {name} is not supported ({why})"));
            }
        }
        if p.string("to-files")?.is_some() {
            return Err("add: to-files is not supported (there is no MFS)".into());
        }
        let cid_version = match p.int("cid-version")? {
            None => None,
            Some(v) => {
                Some(u64::try_from(v).map_err(|_| format!("unknown CID version {v}: use 0 or 1"))?)
            }
        };
        Ok(AddQuery {
            cid_version,
            raw_leaves: p.bool("raw-leaves")?,
            chunker: p.string("chunker")?.map(str::to_string),
            trickle: flag("trickle")?,
            hash: p.string("hash")?.map(str::to_string),
            only_hash: flag("only-hash")?,
            pin: p.bool("pin")?.unwrap_or(true),
            wrap_with_directory: flag("wrap-with-directory")?,
            progress: flag("progress")?,
            silent: flag("silent")?,
        })
    }
}

/// One NDJSON line of `add`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AddEvent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The entry's cumulative DAG size, as a decimal string (Kubo's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Progress: file bytes read so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

enum Kind {
    File,
    Dir,
    Symlink,
}

enum Part {
    Begin {
        path: String,
        kind: Kind,
    },
    Data(Bytes),
    End,
    /// The upload broke (malformed multipart, client gone); the import stops with this.
    Abort(String),
}

/// `POST /api/v0/add`.
pub(super) async fn add(
    State(node): State<Node>,
    Extension(import): Extension<Arc<ImportConfig>>,
    RawQuery(raw): RawQuery,
    upload: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut upload = upload.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed multipart upload: {}: send multipart/form-data, one part per file",
                e.body_text()
            ),
        )
    })?;
    let q = AddQuery::from_params(&super::query::params(raw.as_deref())?)
        .map_err(super::query::bad_request)?;
    let opts = import
        .with_overrides(&AddOverrides {
            cid_version: q.cid_version,
            raw_leaves: q.raw_leaves,
            chunker: q.chunker.clone(),
            trickle: q.trickle,
            hash: q.hash.clone(),
            hidden: true,
            wrap: q.wrap_with_directory,
        })
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (tx, rx) = mpsc::channel(PART_QUEUE);
    let (ready_tx, ready) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = feed(&mut upload, &tx, ready_tx).await {
            let _ = tx.send(Part::Abort(e)).await;
        }
    });
    // A body that is not multipart at all, or has no file, is answered 400 before anything is
    // imported; a break later on can only be reported in the stream's trailer.
    ready
        .await
        .map_err(|_| ApiError::internal("the upload reader stopped"))?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let (body, out) = stream_body();
    let store = (!q.only_hash).then(|| node.store().clone());
    let job = Import {
        node: node.clone(),
        opts,
        store,
        pin: q.pin,
        progress: q.progress,
        silent: q.silent,
    };
    tokio::task::spawn_blocking(move || job.run(rx, out));
    let mut resp = Response::new(body);
    stream_headers(resp.headers_mut(), "application/json");
    resp.headers_mut()
        .insert("X-Chunked-Output", HeaderValue::from_static("1"));
    Ok(resp)
}

/// Reads the multipart body into parts for the importer. Whether the first part's header reads
/// well goes to `ready` (so that failure is a 400), everything later to the importer.
async fn feed(
    upload: &mut Multipart,
    tx: &mpsc::Sender<Part>,
    ready: oneshot::Sender<Result<(), String>>,
) -> Result<(), String> {
    let gone = |_| "the import stopped".to_string();
    let mut ready = Some(ready);
    loop {
        let next = upload
            .next_field()
            .await
            .map_err(|e| format!("malformed multipart upload: {e}"));
        let begun = match next {
            Ok(Some(field)) => part_header(&field).map(|h| Some((field, h))),
            // Kubo's message for an upload without files.
            Ok(None) if ready.is_some() => Err("file argument 'path' is required".to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(r) = ready.take() {
            let _ = r.send(begun.as_ref().map(drop).map_err(Clone::clone));
            if begun.is_err() {
                // Answered as the request's error; nothing was imported.
                return Ok(());
            }
        }
        let Some((mut field, (path, kind))) = begun? else {
            return Ok(());
        };
        tx.send(Part::Begin { path, kind }).await.map_err(gone)?;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| format!("reading the upload: {e}"))?
        {
            tx.send(Part::Data(chunk)).await.map_err(gone)?;
        }
        tx.send(Part::End).await.map_err(gone)?;
    }
}

/// A part's path and kind, from its filename and content type.
fn part_header(field: &axum::extract::multipart::Field<'_>) -> Result<(String, Kind), String> {
    let name = field
        .file_name()
        .ok_or("a multipart part has no filename: name each part by its path")?;
    let path = query_unescape(name)?;
    let kind = match field.content_type() {
        Some("application/x-directory") => Kind::Dir,
        Some("application/symlink") => Kind::Symlink,
        _ => Kind::File,
    };
    Ok((path, kind))
}

/// Go's `url.QueryUnescape`, which Kubo applies to part names (`+` is a space).
pub fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("part name '{s}' has a bad %-escape"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("part name '{s}' is not UTF-8"))
}

/// CIDs per notification sent to the node loop.
const NOTIFY_CHUNK: usize = 1024;

/// Keeps the CIDs written, to announce them once they are durable.
struct Recording<'a> {
    inner: &'a mut dyn BlockSink,
    cids: Vec<cid::Cid>,
}

impl BlockSink for Recording<'_> {
    fn put(&mut self, block: &crate::block::Block) -> Result<(), crate::blockstore::Error> {
        self.inner.put(block)?;
        self.cids.push(block.cid);
        Ok(())
    }
}

struct Import {
    node: Node,
    opts: ImportOptions,
    /// `None` with `only-hash`.
    store: Option<FsBlockstore>,
    pin: bool,
    progress: bool,
    silent: bool,
}

impl Import {
    fn run(self, rx: mpsc::Receiver<Part>, mut out: BodyWriter) {
        let r = self.import(rx, &mut out);
        out.finish(r);
    }

    fn import(&self, mut rx: mpsc::Receiver<Part>, out: &mut BodyWriter) -> Result<(), String> {
        let mut writer = self.store.as_ref().map(FsBlockstore::writer);
        let mut null = NullSink;
        let inner: &mut dyn BlockSink = match &mut writer {
            Some(w) => w,
            None => &mut null,
        };
        let mut recording = Recording {
            inner,
            cids: Vec::new(),
        };
        let sink = &mut recording;
        let mut tree = TreeBuilder::new();
        let mut current_top: Option<String> = None;
        // Lines come from the tree's callback and the progress callback both.
        let lines = std::cell::RefCell::new(Lines { out, err: None });
        let mut emit = |e: &AddedEntry| {
            lines.borrow_mut().send(&AddEvent {
                name: e.path.clone(),
                hash: Some(e.cid.to_string()),
                size: Some(e.size.to_string()),
                bytes: None,
            });
        };
        loop {
            let (path, kind) = match rx.blocking_recv() {
                None => break,
                Some(Part::Begin { path, kind }) => (path, kind),
                Some(Part::Abort(e)) => return Err(e),
                Some(Part::Data(_) | Part::End) => return Err("malformed upload".into()),
            };
            let top = TreeBuilder::top_of(&path).to_string();
            if let Some(prev) = current_top.as_ref().filter(|p| **p != top) {
                tree.close_top(prev, &self.opts, sink, &mut emit)
                    .map_err(|e| e.to_string())?;
            }
            current_top = Some(top);
            match kind {
                Kind::Dir => {
                    tree.add_dir(&path).map_err(|e| e.to_string())?;
                    drain_part(&mut rx)?;
                }
                Kind::Symlink => {
                    let mut target = Vec::new();
                    PartReader::new(&mut rx)
                        .take(MAX_SYMLINK_TARGET as u64 + 1)
                        .read_to_end(&mut target)
                        .map_err(|e| format!("{path}: {e}"))?;
                    if target.len() > MAX_SYMLINK_TARGET {
                        return Err(format!("{path}: symlink target is too long"));
                    }
                    let n = build_symlink(&self.opts, &target, sink)
                        .map_err(|e| format!("{path}: {e}"))?;
                    tree.add_node(&path, n.cid, n.tsize)
                        .map_err(|e| e.to_string())?;
                    if !self.silent {
                        emit(&AddedEntry {
                            path,
                            cid: n.cid,
                            size: n.tsize,
                        });
                    }
                }
                Kind::File => {
                    let mut reader = PartReader::new(&mut rx);
                    // As Kubo: this file's bytes so far, every PROGRESS_EVERY and at its end
                    // (a zero count is left out of the line, as Go's omitempty does).
                    let report = |n: u64| {
                        lines.borrow_mut().send(&AddEvent {
                            name: path.clone(),
                            hash: None,
                            size: None,
                            bytes: (n > 0).then_some(n),
                        })
                    };
                    let mut reported = 0u64;
                    let mut on_progress = |n: u64| {
                        if self.progress && n >= reported + PROGRESS_EVERY {
                            reported = n;
                            report(n);
                        }
                    };
                    let f = file::import_file(&self.opts, &mut reader, sink, &mut on_progress)
                        .map_err(|e| match reader.abort.take() {
                            Some(why) => why,
                            None => format!("{path}: {e}"),
                        })?;
                    if self.progress {
                        report(f.file_size);
                    }
                    // A nameless part (raw bytes from the JS client, stdin) is named by its CID,
                    // as Kubo's adder names it.
                    let path = if path.is_empty() {
                        f.cid.to_string()
                    } else {
                        path
                    };
                    tree.add_node(&path, f.cid, f.tsize)
                        .map_err(|e| e.to_string())?;
                    if !self.silent {
                        emit(&AddedEntry {
                            path,
                            cid: f.cid,
                            size: f.tsize,
                        });
                    }
                }
            }
            if let Some(e) = lines.borrow_mut().err.take() {
                return Err(format!("the client went away: {e}"));
            }
        }
        let (top, wrapper) = tree
            .finish(&self.opts, sink, &mut emit)
            .map_err(|e| e.to_string())?;
        let added = std::mem::take(&mut recording.cids);
        if let (Some(w), Some(store)) = (writer, &self.store) {
            // Durable first; the guard keeps GC off the blocks until the pins name them.
            let guard = w.commit().map_err(|e| e.to_string())?;
            if self.pin {
                let roots: Vec<_> = match &wrapper {
                    Some(w) => vec![w.cid],
                    None => top.iter().map(|e| e.cid).collect(),
                };
                for cid in roots {
                    store
                        .pin(&cid, PinMode::Recursive)
                        .map_err(|e| format!("pinning {cid}: {e}"))?;
                }
            }
            drop(guard);
            // Peers that asked for any of these while they were being added get them now.
            for chunk in added.chunks(NOTIFY_CHUNK) {
                self.node.notify_new_blocks(chunk.to_vec());
            }
        }
        if let Some(e) = lines.into_inner().err {
            return Err(format!("the client went away: {e}"));
        }
        Ok(())
    }
}

/// The NDJSON answer; the first write error is kept and stops the import at the next entry.
struct Lines<'a> {
    out: &'a mut BodyWriter,
    err: Option<io::Error>,
}

impl Lines<'_> {
    fn send(&mut self, line: &AddEvent) {
        if self.err.is_some() {
            return;
        }
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        // Each line goes out at once: clients show progress from them.
        self.err = self
            .out
            .write_all(&bytes)
            .and_then(|()| self.out.flush())
            .err();
    }
}

/// Skips a part's data (a directory part has none worth keeping).
fn drain_part(rx: &mut mpsc::Receiver<Part>) -> Result<(), String> {
    let mut r = PartReader::new(rx);
    io::copy(&mut r, &mut io::sink()).map_err(|e| e.to_string())?;
    Ok(())
}

/// One part's bytes as a `Read`, ending at the part's end.
struct PartReader<'a> {
    rx: &'a mut mpsc::Receiver<Part>,
    cur: Bytes,
    done: bool,
    /// Why the upload broke, when it did: the real cause behind the importer's read error.
    abort: Option<String>,
}

impl<'a> PartReader<'a> {
    fn new(rx: &'a mut mpsc::Receiver<Part>) -> PartReader<'a> {
        PartReader {
            rx,
            cur: Bytes::new(),
            done: false,
            abort: None,
        }
    }
}

impl Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Part::Data(b)) => self.cur = b,
                Some(Part::End) => self.done = true,
                Some(Part::Abort(e)) => {
                    self.abort = Some(e.clone());
                    return Err(io::Error::other(e));
                }
                Some(Part::Begin { .. }) | None => {
                    let e = "the upload ended in the middle of a part".to_string();
                    self.abort = Some(e.clone());
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
                }
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

    #[test]
    fn add_options_parse_as_kubo_clients_send_them() {
        let parse =
            |q: &str| AddQuery::from_params(&crate::node::query::Params::parse(Some(q)).unwrap());
        // What Python's ipfshttpclient 0.7.0 sends for `add(path)`.
        let py = parse(
            "stream-channels=true&trickle=False&only-hash=False&wrap-with-directory=False\
             &pin=True&raw-leaves=False&nocopy=False",
        )
        .unwrap();
        assert_eq!(
            py,
            AddQuery {
                raw_leaves: Some(false),
                pin: true,
                ..AddQuery::default()
            }
        );
        let js =
            parse("stream-channels=true&progress=false&cid-version=1&chunker=size-1024").unwrap();
        assert_eq!(js.cid_version, Some(1));
        assert_eq!(js.chunker.as_deref(), Some("size-1024"));
        assert!(js.pin, "pinned by default");
        assert!(!js.progress);
        assert!(parse("pin=false&silent&quieter=true")
            .map(|q| !q.pin && q.silent)
            .unwrap());
        for refused in ["nocopy=true", "inline=1", "fscache=true", "to-files=/x"] {
            let e = parse(refused).unwrap_err();
            assert!(e.contains("not supported"), "{refused}: {e}");
        }
        assert!(parse("cid-version=-1").is_err());
        assert!(parse("trickle=yes").unwrap_err().contains("\"-trickle\""));
    }

    #[test]
    fn unescapes_part_names_as_go_does() {
        assert_eq!(
            query_unescape("night%2Fimage+1.jpg").unwrap(),
            "night/image 1.jpg"
        );
        assert_eq!(query_unescape("caf%C3%A9").unwrap(), "café");
        assert!(query_unescape("bad%2").is_err());
        assert!(query_unescape("bad%zz").is_err());
        assert!(query_unescape("%ff").is_err());
    }
}
