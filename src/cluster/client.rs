//! [`ClusterClient`]: the REST calls a camera node needs, each bounded in time and size.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use hyper::Method;

use super::config::{ClusterConfig, ConfigError, Endpoint};
use super::error::{Error, ErrorKind, Refusal};
use super::http::{Answer, ReqBody, Transport};
use super::ndjson::Limits;
use super::query::{add_car_query, pin_query, PinOptions};
use super::types::{decode, AddedOutput, GlobalPinInfo, IdInfo, Pin};
use crate::node::client::percent_encode;

/// A single JSON answer (a Pin, a GlobalPinInfo of a few hundred peers, an error) is far smaller.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// `GET /peers`: one line per cluster peer.
pub(crate) const PEERS_LIMITS: Limits = Limits {
    max_line: 1 << 20,
    max_items: 10_000,
    max_bytes: 32 << 20,
};
/// `POST /add` of one CAR answers one line (more with `stream-channels` progress).
pub(crate) const ADD_LIMITS: Limits = Limits {
    max_line: 64 << 10,
    max_items: 10_000,
    max_bytes: 16 << 20,
};
/// An upload gets the configured timeout plus its size at this rate: a slow mesh link, not a
/// hung server.
pub const ADD_MIN_BYTES_PER_SEC: u64 = 256 << 10;
/// Chunks of a CAR file read for upload, and how many may wait for the socket.
const FILE_CHUNK: usize = 256 << 10;
const FILE_CHUNKS_QUEUED: usize = 4;

/// Where the CAR of a `POST /add` comes from.
#[derive(Debug, Clone)]
pub enum CarSource {
    Bytes(Bytes),
    /// Read in chunks while uploading, never whole into memory.
    File(PathBuf),
}

impl From<Bytes> for CarSource {
    fn from(b: Bytes) -> Self {
        CarSource::Bytes(b)
    }
}

impl From<Vec<u8>> for CarSource {
    fn from(b: Vec<u8>) -> Self {
        CarSource::Bytes(Bytes::from(b))
    }
}

impl From<PathBuf> for CarSource {
    fn from(p: PathBuf) -> Self {
        CarSource::File(p)
    }
}

/// A client of one cluster's REST API. Cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    transport: Arc<Transport>,
    timeout: Duration,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("endpoint", &self.transport.endpoint.to_string())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClusterClient {
    /// A client for `[cluster]`; fails when it is invalid or names no `api`.
    pub fn new(cfg: &ClusterConfig) -> Result<ClusterClient, ConfigError> {
        Ok(ClusterClient {
            transport: Arc::new(Transport::new(cfg)?),
            timeout: cfg.timeout(),
        })
    }

    /// A client when `[cluster] api` is set, `None` when it is not.
    pub fn from_config(cfg: &ClusterConfig) -> Result<Option<ClusterClient>, ConfigError> {
        match cfg.api {
            None => {
                cfg.validate()?;
                Ok(None)
            }
            Some(_) => ClusterClient::new(cfg).map(Some),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.transport.endpoint
    }

    /// `POST /pins/{cid}`: asks the cluster to pin `cid` recursively. The answer comes once the
    /// pin is in the cluster's shared state, not once any peer has the data: poll
    /// [`ClusterClient::status`] for that.
    pub async fn pin(&self, cid: &Cid, opts: &PinOptions) -> Result<Pin, Error> {
        let path = format!("/pins/{cid}");
        self.run("POST", &path, self.timeout, async {
            let q = pin_query(opts)?;
            let a = self
                .whole(Method::POST, &format!("{path}?{q}"), ReqBody::Empty, None)
                .await?;
            match a.status {
                200 => decode_ok(&a),
                _ => Err(a.into_error()),
            }
        })
        .await
    }

    /// `GET /pins/{cid}`: the pin's state on every cluster peer (an unknown CID is `unpinned`
    /// everywhere, not an error).
    pub async fn status(&self, cid: &Cid) -> Result<GlobalPinInfo, Error> {
        let path = format!("/pins/{cid}");
        self.run("GET", &path, self.timeout, async {
            let a = self.whole(Method::GET, &path, ReqBody::Empty, None).await?;
            match a.status {
                200 => decode_ok(&a),
                _ => Err(a.into_error()),
            }
        })
        .await
    }

    /// `DELETE /pins/{cid}`: the removed pin, or `None` when the cluster did not pin `cid`.
    pub async fn unpin(&self, cid: &Cid) -> Result<Option<Pin>, Error> {
        let path = format!("/pins/{cid}");
        self.run("DELETE", &path, self.timeout, async {
            let a = self
                .whole(Method::DELETE, &path, ReqBody::Empty, None)
                .await?;
            match a.status {
                200 => decode_ok(&a).map(Some),
                _ => match a.into_error() {
                    ErrorKind::Api {
                        refusal: Refusal::NotInPinset,
                        ..
                    } => Ok(None),
                    other => Err(other),
                },
            }
        })
        .await
    }

    /// `GET /peers`: every cluster peer, read line by line (NDJSON).
    pub async fn peers(&self) -> Result<Vec<IdInfo>, Error> {
        self.run("GET", "/peers", self.timeout, async {
            self.transport
                .stream(Method::GET, "/peers", ReqBody::Empty, None, PEERS_LIMITS)
                .await
        })
        .await
    }

    /// `GET /id`: the cluster peer behind the API, with its IPFS daemon's addresses.
    pub async fn id(&self) -> Result<IdInfo, Error> {
        self.run("GET", "/id", self.timeout, async {
            let a = self.whole(Method::GET, "/id", ReqBody::Empty, None).await?;
            match a.status {
                200 => decode_ok(&a),
                _ => Err(a.into_error()),
            }
        })
        .await
    }

    /// `GET /health` (no auth needed): whether the API answers at all.
    pub async fn health(&self) -> Result<(), Error> {
        self.run("GET", "/health", self.timeout, async {
            let a = self
                .whole(Method::GET, "/health", ReqBody::Empty, None)
                .await?;
            match a.status {
                200 | 204 => Ok(()),
                _ => Err(a.into_error()),
            }
        })
        .await
    }

    /// `POST /add?format=car`: uploads a single-root CAR over HTTP and pins its root with `opts`
    /// (the fallback when the cluster's IPFS daemons cannot fetch from this node). The time
    /// allowed is the configured timeout plus the size at [`ADD_MIN_BYTES_PER_SEC`].
    pub async fn add_car(
        &self,
        car: impl Into<CarSource>,
        opts: &PinOptions,
    ) -> Result<Vec<AddedOutput>, Error> {
        let car = car.into();
        let len = match &car {
            CarSource::Bytes(b) => b.len() as u64,
            CarSource::File(p) => {
                let p2 = p.clone();
                match tokio::task::spawn_blocking(move || std::fs::metadata(&p2)).await {
                    Ok(Ok(m)) => m.len(),
                    Ok(Err(error)) => {
                        return Err(self.error(
                            "POST",
                            "/add",
                            ErrorKind::ReadFile {
                                path: p.clone(),
                                error,
                            },
                        ))
                    }
                    Err(join) => {
                        return Err(self.error(
                            "POST",
                            "/add",
                            ErrorKind::ReadFile {
                                path: p.clone(),
                                error: std::io::Error::other(join.to_string()),
                            },
                        ))
                    }
                }
            }
        };
        let limit = self.timeout + Duration::from_secs(len / ADD_MIN_BYTES_PER_SEC);
        self.run("POST", "/add", limit, async {
            let q = add_car_query(opts, false)?;
            let boundary = format!("wanda-{:016x}{:016x}", super::entropy(), super::entropy());
            let file_name = if opts.name.is_empty() {
                "data.car".to_string()
            } else {
                format!("{}.car", opts.name)
            };
            let head = Bytes::from(format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                percent_encode(&file_name)
            ));
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let body = match car {
                CarSource::Bytes(b) => ReqBody::Parts(VecDeque::from([head, b, tail])),
                CarSource::File(p) => file_body(p, len, head, tail),
            };
            let ctype = format!("multipart/form-data; boundary={boundary}");
            let out: Vec<AddedOutput> = self
                .transport
                .stream(
                    Method::POST,
                    &format!("/add?{q}"),
                    body,
                    Some(&ctype),
                    ADD_LIMITS,
                )
                .await?;
            if out.is_empty() {
                return Err(ErrorKind::Garbage {
                    status: 200,
                    reason: "the add stream ended without naming what was added".into(),
                    snippet: String::new(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn whole(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<Answer, ErrorKind> {
        self.transport
            .whole(method, path_and_query, body, content_type, MAX_BODY_BYTES)
            .await
    }

    fn error(&self, method: &'static str, path: &str, kind: ErrorKind) -> Error {
        Error::new(
            self.transport.endpoint.to_string(),
            method,
            path.to_string(),
            kind,
        )
    }

    /// Runs one call within `limit`, logs it, and names the cluster, method and path in its error.
    async fn run<T>(
        &self,
        method: &'static str,
        path: &str,
        limit: Duration,
        call: impl Future<Output = Result<T, ErrorKind>>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let r = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::Timeout(limit)),
        };
        let elapsed = start.elapsed();
        match r {
            Ok(v) => {
                tracing::debug!(method, path, ?elapsed, "cluster: ok");
                Ok(v)
            }
            Err(kind) => {
                let e = self.error(method, path, kind);
                tracing::debug!(method, path, ?elapsed, transient = e.is_transient(), error = %e, "cluster: failed");
                Err(e)
            }
        }
    }
}

fn decode_ok<T: serde::de::DeserializeOwned>(a: &Answer) -> Result<T, ErrorKind> {
    decode(&a.body).map_err(|d| ErrorKind::Garbage {
        status: a.status,
        reason: d.reason,
        snippet: d.snippet,
    })
}

/// A multipart body whose file part is read from `path` on the blocking pool, a chunk at a time.
/// If the upload is abandoned the channel closes and the reader stops.
fn file_body(path: PathBuf, len: u64, head: Bytes, tail: Bytes) -> ReqBody {
    let (tx, rx) = tokio::sync::mpsc::channel(FILE_CHUNKS_QUEUED);
    let total = head.len() as u64 + len + tail.len() as u64;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        if tx.blocking_send(Ok(head)).is_err() {
            return;
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        // Exactly `len` bytes, as promised in Content-Length, even if the file grows meanwhile.
        let mut file = file.take(len);
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; FILE_CHUNK];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    sent += n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if sent < len {
            let _ = tx.blocking_send(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} shrank during the upload", path.display()),
            )));
            return;
        }
        let _ = tx.blocking_send(Ok(tail));
    });
    ReqBody::Channel { rx, len: total }
}
