//! The RPC's content routes, `cat` and `get`: UnixFS content streamed out of the node, fetched
//! over bitswap where the store lacks it.
//!
//! The exporter is synchronous, so it runs on the blocking pool over a [`NetSource`] and writes
//! into a bounded channel that is the response body: a slow reader slows the exporter, nothing
//! piles up. A failure after the status line went out is reported as Kubo does, in an
//! `X-Stream-Error` trailer; `cat` also sends `X-Content-Length` up front, so a client can tell
//! a cut-short stream from a finished one even without trailers.

use std::io::{self, Write};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use cid::Cid;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::fetch::{fetch_dag, NetSource};
use super::rpc::ApiError;
use super::Node;
use crate::unixfs::export;

/// Body chunks: large enough that a 256 KiB leaf is one or two sends.
const CHUNK: usize = 256 << 10;
/// Chunks queued towards the client.
const QUEUE: usize = 8;
/// The trailer Kubo's RPC reports a mid-stream failure in.
pub const STREAM_ERROR: &str = "X-Stream-Error";

#[derive(Debug, Deserialize)]
pub(super) struct CatQuery {
    arg: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct GetQuery {
    arg: Option<String>,
}

/// Splits `CID`, `/ipfs/CID/a/b` or `CID/a/b` into the root and the path below it.
pub fn split_ipfs_path(path: &str) -> Result<(Cid, String), String> {
    let p = path
        .strip_prefix("/ipfs/")
        .or_else(|| path.strip_prefix("ipfs://"))
        .unwrap_or(path);
    let (root, rest) = p.split_once('/').unwrap_or((p, ""));
    let root = Cid::try_from(root).map_err(|e| {
        format!("'{root}' is not a valid CID ({e}): expected e.g. Qm... or bafy...")
    })?;
    Ok((root, rest.trim_matches('/').to_string()))
}

fn required_path(arg: Option<String>) -> Result<(Cid, String), ApiError> {
    let arg = arg.filter(|a| !a.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "argument \"ipfs-path\" is required",
        )
    })?;
    split_ipfs_path(&arg).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// Runs exporter work that needs no streaming (resolving a path, a size) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, export::Error> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(export_error(e)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn export_error(e: export::Error) -> ApiError {
    let status = match &e {
        export::Error::NotFound { .. } => StatusCode::NOT_FOUND,
        export::Error::IsDirectory(_)
        | export::Error::NotAFile { .. }
        | export::Error::BadSegment(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

fn resolve(src: &NetSource, root: Cid, rest: &str) -> Result<Cid, export::Error> {
    if rest.is_empty() {
        Ok(root)
    } else {
        export::resolve(src, &root, rest)
    }
}

/// `POST /api/v0/cat?arg=<path>[&offset=N][&length=N]`.
pub(super) async fn cat(
    State(node): State<Node>,
    Query(q): Query<CatQuery>,
) -> Result<Response, ApiError> {
    let (root, rest) = required_path(q.arg)?;
    let src = NetSource::new(node.clone());
    let s = src.clone();
    let (cid, size) = blocking(move || {
        let cid = resolve(&s, root, &rest)?;
        Ok((cid, export::file_size(&s, &cid)?))
    })
    .await?;
    let offset = q.offset.unwrap_or(0).min(size);
    let len = (size - offset).min(q.length.unwrap_or(u64::MAX));
    // A whole file is fetched ahead, many blocks at once; a range only reads what it needs.
    let prefetch = (offset == 0 && len == size).then(|| prefetch(&node, cid));
    let (body, mut w) = stream_body();
    tokio::task::spawn_blocking(move || {
        let r = if prefetch.is_some() {
            export::cat(&src, &cid, &mut w).map(drop)
        } else {
            export::read_range(&src, &cid, offset, len, &mut w).map(drop)
        };
        if let Some(p) = prefetch {
            p.abort();
        }
        w.finish(r.map_err(|e| e.to_string()));
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    stream_headers(h, "text/plain");
    h.insert("X-Content-Length", HeaderValue::from(len));
    Ok(resp)
}

/// `POST /api/v0/get?arg=<path>`: a tar of the entry, named after the last path segment (or the
/// CID), as Kubo answers it.
pub(super) async fn get(
    State(node): State<Node>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let (root, rest) = required_path(q.arg)?;
    let name = rest
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map_or_else(|| root.to_string(), str::to_string);
    let src = NetSource::new(node.clone());
    let s = src.clone();
    let cid = blocking(move || resolve(&s, root, &rest)).await?;
    let prefetch = prefetch(&node, cid);
    let (body, mut w) = stream_body();
    tokio::task::spawn_blocking(move || {
        let r = crate::unixfs::tar::write_tar(&src, &cid, &name, &mut w)
            .map(drop)
            .map_err(|e| e.to_string());
        prefetch.abort();
        w.finish(r);
    });
    let mut resp = Response::new(body);
    stream_headers(resp.headers_mut(), "application/x-tar");
    Ok(resp)
}

pub(super) fn stream_headers(h: &mut HeaderMap, content_type: &'static str) {
    h.insert("Content-Type", HeaderValue::from_static(content_type));
    h.insert("X-Stream-Output", HeaderValue::from_static("1"));
    h.insert("Trailer", HeaderValue::from_static(STREAM_ERROR));
}

/// Fetches the DAG in the background; the handle stops it.
pub(crate) fn prefetch(node: &Node, cid: Cid) -> tokio::task::AbortHandle {
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = fetch_dag(&node, cid).await {
            tracing::debug!(%cid, error = %e, "prefetch stopped");
        }
    })
    .abort_handle()
}

/// How a [`BodyWriter`] reports a failure after the status line went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Kubo's RPC: an `X-Stream-Error` trailer; the chunked body itself ends normally.
    Trailer,
    /// The gateway: the body errors, so hyper cuts the connection without the final chunk (or
    /// short of `Content-Length`) and no client can take the stream for a whole one.
    Abort,
}

/// A response body fed by a blocking writer; failures reported in a trailer.
pub(super) fn stream_body() -> (Body, BodyWriter) {
    stream_body_with(OnFailure::Trailer)
}

/// A response body fed by a blocking writer.
pub(crate) fn stream_body_with(on_failure: OnFailure) -> (Body, BodyWriter) {
    let (tx, rx) = mpsc::channel::<io::Result<Frame<Bytes>>>(QUEUE);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let w = BodyWriter {
        tx: Some(tx),
        buf: BytesMut::new(),
        on_failure,
    };
    (Body::new(StreamBody::new(stream)), w)
}

/// The blocking side of [`stream_body`]. Dropped without [`BodyWriter::finish`] (the archive
/// writer failed), it reports a generic error so the client never takes a cut stream for a whole
/// one.
pub(crate) struct BodyWriter {
    tx: Option<mpsc::Sender<io::Result<Frame<Bytes>>>>,
    buf: BytesMut,
    on_failure: OnFailure,
}

impl BodyWriter {
    fn send(&mut self, frame: io::Result<Frame<Bytes>>) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the client went away");
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.blocking_send(frame).map_err(|_| gone())
    }

    /// Ends the body: the rest of the data, then the failure (see [`OnFailure`]) if `result` is
    /// one.
    pub(crate) fn finish(mut self, result: Result<(), String>) {
        let r = result.and_then(|()| self.flush().map_err(|e| e.to_string()));
        if let Err(message) = r {
            self.fail(&message);
        }
        self.tx = None;
    }

    fn fail(&mut self, message: &str) {
        if self.on_failure == OnFailure::Abort {
            let _ = self.send(Err(io::Error::other(message.to_string())));
            return;
        }
        let mut t = HeaderMap::new();
        // Header values cannot hold newlines or other controls.
        let clean: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        t.insert(
            STREAM_ERROR,
            HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static("stream failed")),
        );
        let _ = self.send(Ok(Frame::trailers(t)));
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            let chunk = self.buf.split().freeze();
            self.send(Ok(Frame::data(chunk)))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Ok(Frame::data(chunk)))?;
        }
        Ok(())
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.fail("the stream ended early");
        }
    }
}
