//! The gateway's one handler: method, path and format first (cheap, no I/O), then the blocks a
//! response needs before its status line, all within `[gateway] timeout_secs` (else 504), then
//! the body, streamed from a blocking exporter and cut, never finished, if a block fails to come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cid::Cid;

use super::request::{self, CarParams, ContentPath, DagScope, Format, Negotiated};
use super::source::{GatewaySource, Recording};
use super::{disposition, etag, listing, mime, range};
use crate::block::{DAG_PB, IDENTITY, RAW};
use crate::blockstore::{self, BlockSource};
use crate::node::content::{self, OnFailure};
use crate::node::Node;
use crate::unixfs::export::{self, EntryKind};
use crate::unixfs::hamt;

/// The path gateway spec's caching directive for everything under `/ipfs/`.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
const ALLOW: &str = "GET, HEAD, OPTIONS";
/// Seconds a client is told to wait before retrying a 504.
const RETRY_AFTER_SECS: u64 = 30;
/// Beyond the per-block bound: the rest of a response's preparation (disk, CPU).
const PREPARE_GRACE: Duration = Duration::from_secs(5);

/// Shared by every request.
pub(crate) struct Gateway {
    pub(crate) node: Node,
    pub(crate) timeout: Duration,
    /// Sniffed content types by file CID: a page that loads a still in ranges (or again) would
    /// otherwise read and hash its first block on every request just to name its type.
    pub(crate) types: mime::TypeCache,
}

/// An error answer, as plain text naming what failed.
#[derive(Debug)]
pub(crate) struct GwError {
    status: StatusCode,
    message: String,
}

impl GwError {
    fn new(status: StatusCode, message: impl Into<String>) -> GwError {
        GwError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> GwError {
        GwError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for GwError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("");
        let body = format!("{} {reason}: {}\n", self.status.as_u16(), self.message);
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status == StatusCode::GATEWAY_TIMEOUT {
            h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        }
        r
    }
}

/// Every request of the gateway's routes.
pub(crate) async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = serve(gw, req)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let status = resp.status();
    if status.is_server_error() {
        tracing::info!(%method, %path, %status, elapsed = ?started.elapsed(), "gateway request failed");
    } else {
        tracing::debug!(%method, %path, %status, elapsed = ?started.elapsed(), "gateway request");
    }
    resp
}

async fn serve(gw: Arc<Gateway>, req: Request) -> Result<Response, GwError> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        Method::OPTIONS => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            return Ok(r);
        }
        ref m => {
            return Err(GwError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{m} is not allowed: the gateway is read-only ({ALLOW})"),
            ))
        }
    };
    let raw_path = req.uri().path().to_string();
    if raw_path == "/ipns" || raw_path.starts_with("/ipns/") {
        return Err(GwError::new(
            StatusCode::NOT_IMPLEMENTED,
            "IPNS names are not resolved by this gateway: use /ipfs/<cid>[/<path>]",
        ));
    }
    let path = request::parse_path(&raw_path).map_err(GwError::bad)?;
    let raw_query = req.uri().query().map(str::to_string);
    let query = request::parse_query(raw_query.as_deref()).map_err(GwError::bad)?;
    let headers = req.headers().clone();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let neg = request::negotiate(&query, accept).map_err(|e| {
        let status = if e.not_implemented {
            StatusCode::NOT_IMPLEMENTED
        } else {
            StatusCode::BAD_REQUEST
        };
        GwError::new(status, e.message)
    })?;
    // Path gateway spec: a service worker may claim /ipfs/<cid>/..., never a whole origin path.
    let service_worker = headers
        .get("service-worker")
        .is_some_and(|v| v.as_bytes() == b"script");
    if service_worker && path.segments.is_empty() {
        return Err(GwError::bad(
            "a service worker cannot be registered for a whole /ipfs/<cid>: serve it from a \
             path below it",
        ));
    }
    let ctx = Ctx {
        gw,
        head,
        path,
        raw_path,
        raw_query,
        query,
        headers,
        neg,
    };
    if ctx.only_if_cached() && !ctx.root_is_local().await? {
        return Err(GwError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "{} is not stored here, and Cache-Control: only-if-cached forbids fetching it",
                ctx.path.root
            ),
        ));
    }
    match ctx.neg.format {
        Format::Raw => ctx.raw().await,
        Format::Car(p) => ctx.car(p).await,
        Format::Deserialized => ctx.unixfs().await,
    }
}

/// One request, parsed.
struct Ctx {
    gw: Arc<Gateway>,
    head: bool,
    path: ContentPath,
    /// As on the request line (percent-encoded): redirects and `X-Ipfs-Path` use it.
    raw_path: String,
    raw_query: Option<String>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    neg: Negotiated,
}

/// Resolves `segs` below `root` one at a time: every logical root of the path (`X-Ipfs-Roots`).
fn resolve_roots<S: BlockSource + ?Sized>(
    src: &S,
    root: Cid,
    segs: &[String],
) -> Result<Vec<Cid>, export::Error> {
    let mut roots = vec![root];
    let mut cur = root;
    for s in segs {
        cur = export::resolve(src, &cur, s)?;
        roots.push(cur);
    }
    Ok(roots)
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

impl Ctx {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The decoded content path, for messages and the listing's title.
    fn shown(&self) -> String {
        let mut s = format!("/ipfs/{}", self.path.root);
        for seg in &self.path.segments {
            s.push('/');
            s.push_str(seg);
        }
        s
    }

    fn only_if_cached(&self) -> bool {
        self.header(header::CACHE_CONTROL).is_some_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
        })
    }

    /// Whether the path's root is pinned recursively, so every block under it is stored here and
    /// fetching ahead would only read (and hash) each block a second time.
    async fn all_local(&self) -> bool {
        let root = self.path.root;
        let store = self.gw.node.store().clone();
        tokio::task::spawn_blocking(move || store.pinned_recursively(&root))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    }

    async fn root_is_local(&self) -> Result<bool, GwError> {
        let root = self.path.root;
        if root.hash().code() == IDENTITY {
            return Ok(true);
        }
        let store = self.gw.node.store().clone();
        tokio::task::spawn_blocking(move || store.has(&root))
            .await
            .map_err(|e| GwError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| GwError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    /// Runs `f` on the blocking pool over a source whose every fetch ends by the deadline: the
    /// work before a response's first byte.
    async fn prepare<T: Send + 'static>(
        &self,
        f: impl FnOnce(&GatewaySource) -> Result<T, export::Error> + Send + 'static,
    ) -> Result<T, GwError> {
        let timeout = self.gw.timeout;
        let src = GatewaySource::new(
            self.gw.node.clone(),
            timeout,
            Some(Instant::now() + timeout),
        );
        let s = src.clone();
        let task = tokio::task::spawn_blocking(move || f(&s));
        match tokio::time::timeout(timeout + PREPARE_GRACE, task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(self.export_error(e, &src)),
            Ok(Err(join)) => Err(GwError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {join}", self.shown()),
            )),
            Err(_) => Err(GwError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{}: not ready within {} s ([gateway] timeout_secs)",
                    self.shown(),
                    timeout.as_secs()
                ),
            )),
        }
    }

    fn export_error(&self, e: export::Error, src: &GatewaySource) -> GwError {
        use export::Error as E;
        let what = self.shown();
        if let Some(cid) = src.missed() {
            return GwError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{what}: block {cid} was not retrieved within {} s: it is not stored here \
                     and no connected peer sent it ([gateway] timeout_secs)",
                    self.gw.timeout.as_secs()
                ),
            );
        }
        let status = match &e {
            E::Block(b) => match **b {
                blockstore::Error::Unavailable { .. } => StatusCode::GATEWAY_TIMEOUT,
                blockstore::Error::Corrupt(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            E::NotFound { .. } | E::NotADirectory(_) => StatusCode::NOT_FOUND,
            E::BadSegment(_) | E::HostileName { .. } => StatusCode::BAD_REQUEST,
            E::UnsupportedCodec { .. } | E::IsDirectory(_) | E::NotAFile { .. } => {
                return GwError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "{what}: {e}: this gateway serves UnixFS (dag-pb, raw) as files and \
                         directories; any block is available as ?format=raw"
                    ),
                )
            }
            E::Pb { .. } | E::Malformed { .. } | E::Hamt(_) | E::TooDeep(_) => {
                StatusCode::BAD_GATEWAY
            }
            E::Write(_) | E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        GwError::new(status, format!("{what}: {e}"))
    }

    /// `ETag`, `Cache-Control`, `X-Ipfs-Path`, `X-Ipfs-Roots`.
    fn common_headers(&self, h: &mut HeaderMap, tag: &str, roots: &[Cid]) {
        if let Some(v) = header_value(tag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        if let Some(v) = header_value(&self.raw_path) {
            h.insert("x-ipfs-path", v);
        }
        let roots: Vec<String> = roots.iter().map(Cid::to_string).collect();
        if let Some(v) = header_value(&roots.join(",")) {
            h.insert("x-ipfs-roots", v);
        }
    }

    /// 304 when `If-None-Match` names `tag`.
    fn not_modified(&self, tag: &str, roots: &[Cid]) -> Option<Response> {
        let inm = self.header(header::IF_NONE_MATCH)?;
        if !etag::none_match(inm, tag) {
            return None;
        }
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        self.common_headers(r.headers_mut(), tag, roots);
        Some(r)
    }

    /// `Content-Location` for a format negotiated by `Accept` alone, so caches keep the formats
    /// apart.
    fn content_location(&self, h: &mut HeaderMap, format: &str) {
        if !self.neg.from_accept {
            return;
        }
        let loc = match &self.raw_query {
            Some(q) if !q.is_empty() => format!("{}?{q}&format={format}", self.raw_path),
            _ => format!("{}?format={format}", self.raw_path),
        };
        if let Some(v) = header_value(&loc) {
            h.insert(header::CONTENT_LOCATION, v);
        }
    }

    fn response(&self, status: StatusCode, body: Body) -> Response {
        let mut r = Response::new(if self.head { Body::empty() } else { body });
        *r.status_mut() = status;
        r
    }

    /// A source for streaming: each block within the timeout, no overall deadline.
    fn stream_source(&self) -> GatewaySource {
        GatewaySource::new(self.gw.node.clone(), self.gw.timeout, None)
    }

    async fn unixfs(&self) -> Result<Response, GwError> {
        let root = self.path.root;
        let segs = self.path.segments.clone();
        let (roots, kind, size) = self
            .prepare(move |src| {
                let roots = resolve_roots(src, root, &segs)?;
                let end = *roots.last().expect("the root");
                let (kind, size) = export::stat(src, &end)?;
                Ok((roots, kind, size))
            })
            .await?;
        let end = *roots.last().expect("the root");
        match kind {
            EntryKind::File => {
                let name = self.path.segments.last().cloned();
                self.file(&roots, end, size, name).await
            }
            EntryKind::Directory => self.directory(&roots, end).await,
            EntryKind::Symlink => self.symlink(&roots, end).await,
            EntryKind::Unknown => Err(GwError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{}: {end} is a UnixFS node of a type this gateway does not serve; its \
                     block is available as ?format=raw",
                    self.shown()
                ),
            )),
        }
    }

    async fn directory(&self, roots: &[Cid], dir: Cid) -> Result<Response, GwError> {
        if !self.path.trailing_slash {
            // Relative links in the listing and in index.html need the slash.
            let loc = match &self.raw_query {
                Some(q) if !q.is_empty() => format!("{}/?{q}", self.raw_path),
                _ => format!("{}/", self.raw_path),
            };
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Some(v) = header_value(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(r);
        }
        let index = self
            .prepare(move |src| match export::resolve(src, &dir, "index.html") {
                Ok(c) => Ok(Some((c, export::stat(src, &c)?))),
                Err(export::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            })
            .await?;
        if let Some((c, (EntryKind::File, size))) = index {
            return self.file(roots, c, size, Some("index.html".into())).await;
        }
        let tag = etag::dir_index(&dir);
        if let Some(r) = self.not_modified(&tag, roots) {
            return Ok(r);
        }
        let entries = self.prepare(move |src| export::ls(src, &dir)).await?;
        let mut shown = self.shown();
        shown.push('/');
        let page = listing::render(
            &dir.to_string(),
            &shown,
            !self.path.segments.is_empty(),
            &entries,
        );
        let len = page.len();
        let mut r = self.response(StatusCode::OK, Body::from(page));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        self.common_headers(h, &tag, roots);
        Ok(r)
    }

    async fn symlink(&self, roots: &[Cid], link: Cid) -> Result<Response, GwError> {
        let tag = etag::file(&link);
        if let Some(r) = self.not_modified(&tag, roots) {
            return Ok(r);
        }
        let target = self
            .prepare(move |src| export::symlink_target(src, &link))
            .await?;
        let len = target.len();
        let mut r = self.response(StatusCode::OK, Body::from(target));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("inode/symlink"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        self.common_headers(h, &tag, roots);
        Ok(r)
    }

    async fn file(
        &self,
        roots: &[Cid],
        cid: Cid,
        size: u64,
        name: Option<String>,
    ) -> Result<Response, GwError> {
        let tag = etag::file(&cid);
        if let Some(r) = self.not_modified(&tag, roots) {
            return Ok(r);
        }
        let typed_by = self.q("filename").map(str::to_string).or(name);
        let ctype = match typed_by.as_deref().and_then(mime::by_extension) {
            Some(t) => t,
            None => match self.gw.types.get(&cid) {
                Some(t) => t,
                None => {
                    let head = self
                        .prepare(move |src| {
                            let mut head = Vec::with_capacity(mime::SNIFF_LEN);
                            export::read_range(src, &cid, 0, mime::SNIFF_LEN as u64, &mut head)?;
                            Ok(head)
                        })
                        .await?;
                    let t = mime::sniff(&head);
                    self.gw.types.insert(cid, t);
                    t
                }
            },
        };
        // If-Range naming another version: the whole file (RFC 9110 13.1.5).
        let if_range_ok = self
            .header(header::IF_RANGE)
            .is_none_or(|v| v.trim() == tag);
        let range_header = self.header(header::RANGE).filter(|_| if_range_ok);
        let (status, start, len) = match range::parse_range(range_header, size) {
            range::Ranged::Whole => (StatusCode::OK, 0, size),
            range::Ranged::Part { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
            range::Ranged::Unsatisfiable => {
                let mut r = GwError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "{}: the range '{}' lies outside its {size} bytes",
                        self.shown(),
                        range_header.unwrap_or_default()
                    ),
                )
                .into_response();
                if let Some(v) = header_value(&format!("bytes */{size}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(r);
            }
        };
        let body = if self.head {
            Body::empty()
        } else {
            let ahead = status == StatusCode::OK && !self.all_local().await;
            self.stream_file(cid, start, len, ahead)
        };
        let mut r = self.response(status, body);
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if status == StatusCode::PARTIAL_CONTENT {
            if let Some(v) = header_value(&range::content_range(start, len, size)) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        if let Some(d) = disposition::for_file(self.q("filename"), self.q("download")) {
            if let Some(v) = header_value(&d) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
        }
        self.common_headers(h, &tag, roots);
        Ok(r)
    }

    /// Bytes `[start, start + len)` of the file, streamed; with `ahead`, its blocks are fetched
    /// ahead of the stream (a whole file that may be missing blocks).
    fn stream_file(&self, cid: Cid, start: u64, len: u64, ahead: bool) -> Body {
        let (body, mut w) = content::stream_body_with(OnFailure::Abort);
        let src = self.stream_source();
        let prefetch = ahead.then(|| content::prefetch(&self.gw.node, cid));
        tokio::task::spawn_blocking(move || {
            let r = export::read_range(&src, &cid, start, len, &mut w);
            if let Some(p) = prefetch {
                p.abort();
            }
            let r = match r {
                Ok(n) if n == len => Ok(()),
                Ok(n) => Err(format!("{cid} ended after {n} of {len} bytes")),
                Err(export::Error::Write(e)) => {
                    tracing::debug!(%cid, error = %e, "gateway client went away");
                    Err(e.to_string())
                }
                Err(e) => {
                    tracing::warn!(%cid, error = %e, "gateway response cut short");
                    Err(e.to_string())
                }
            };
            w.finish(r);
        });
        body
    }

    async fn raw(&self) -> Result<Response, GwError> {
        let root = self.path.root;
        let segs = self.path.segments.clone();
        let (roots, data) = self
            .prepare(move |src| {
                let roots = resolve_roots(src, root, &segs)?;
                let data = hamt::load(src, roots.last().expect("the root"))?;
                Ok((roots, data))
            })
            .await?;
        let end = *roots.last().expect("the root");
        let tag = etag::raw(&end);
        if let Some(r) = self.not_modified(&tag, &roots) {
            return Ok(r);
        }
        let size = data.len() as u64;
        let part = match range::parse_range(self.header(header::RANGE), size) {
            range::Ranged::Part { start, len } => Some((start, len)),
            _ => None,
        };
        let (status, body) = match part {
            Some((start, len)) => (
                StatusCode::PARTIAL_CONTENT,
                data.slice(start as usize..(start + len) as usize),
            ),
            None => (StatusCode::OK, data),
        };
        let len = body.len();
        let mut r = self.response(status, Body::from(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.ipld.raw"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some((start, len)) = part {
            if let Some(v) = header_value(&range::content_range(start, len, size)) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        self.trustless_headers(h, &format!("{end}.bin"));
        self.content_location(h, "raw");
        self.common_headers(h, &tag, &roots);
        Ok(r)
    }

    fn trustless_headers(&self, h: &mut HeaderMap, filename: &str) {
        let d = disposition::value(true, Some(self.q("filename").unwrap_or(filename)));
        if let Some(v) = header_value(&d) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }

    async fn car(&self, params: CarParams) -> Result<Response, GwError> {
        let root = self.path.root;
        let segs = self.path.segments.clone();
        let (roots, path_blocks) = self
            .prepare(move |src| {
                let rec = Recording::new(src);
                let roots = resolve_roots(&rec, root, &segs)?;
                let end = *roots.last().expect("the root");
                // The end block is here before the status line goes out: a missing root is a
                // 504, never a 200 with a cut CAR.
                hamt::load(src, &end)?;
                let codec = end.codec();
                if params.scope != DagScope::Block && codec != DAG_PB && codec != RAW {
                    return Err(export::Error::UnsupportedCodec { cid: end, codec });
                }
                Ok((roots, rec.blocks.into_inner()))
            })
            .await?;
        let end = *roots.last().expect("the root");
        let tag = etag::car(&root, &self.path.segments, &params);
        if let Some(r) = self.not_modified(&tag, &roots) {
            return Ok(r);
        }
        let body = if self.head {
            Body::empty()
        } else {
            let ahead = params.scope == DagScope::All && !self.all_local().await;
            let (body, mut w) = content::stream_body_with(OnFailure::Abort);
            let src = self.stream_source();
            let prefetch = ahead.then(|| content::prefetch(&self.gw.node, end));
            tokio::task::spawn_blocking(move || {
                let r = super::car::write_car(&src, &root, &path_blocks, &end, params, &mut w)
                    .map(drop);
                if let Some(p) = prefetch {
                    p.abort();
                }
                if let Err(e) = &r {
                    tracing::warn!(%root, error = %e, "gateway CAR cut short");
                }
                w.finish(r);
            });
            body
        };
        let mut r = self.response(StatusCode::OK, body);
        let h = r.headers_mut();
        if let Some(v) = header_value(&params.content_type()) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
        self.trustless_headers(h, &format!("{root}.car"));
        self.content_location(h, "car");
        self.common_headers(h, &tag, &roots);
        Ok(r)
    }
}
