//! A client for the running daemon's RPC ([`super::rpc`]): how CLI verbs reach the node instead
//! of opening the repo a second time.
//!
//! [`RpcClient::discover`] reads `<repo>/api` and probes the address. A daemon killed with -9
//! leaves the file behind; its address then refuses connections (or, rarely, belongs to some
//! other program, which answers our POST with something that is not our JSON), so a probe that
//! fails means "no daemon" and the caller goes on offline.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use libp2p::Multiaddr;
use serde::de::DeserializeOwned;

use super::pins::{PinLsOutput, PinsOutput, PIN_TIMEOUT};
use super::rpc::{self, ErrorBody, PeersInfo, Strings, VersionInfo};
use super::IdInfo;

/// How long the liveness probe may take: the daemon is on this machine, so this is generous.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Slack on top of the server's own timeouts before the client gives up.
const RESPONSE_SLACK: Duration = Duration::from_secs(5);
/// Responses bigger than this are not ours (the largest, `swarm peers`, is far below it).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} does not hold an RPC address ({reason}): remove it if no daemon is running")]
    BadApiFile { path: String, reason: String },
    #[error("cannot reach the daemon's RPC at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("RPC {path}: {source}")]
    Http {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("RPC {path}: {message}")]
    Remote { path: String, message: String },
    #[error("RPC {path}: unexpected answer ({reason})")]
    Decode { path: String, reason: String },
    #[error("RPC {path}: no answer within {after:?}")]
    Timeout { path: String, after: Duration },
}

/// A daemon known to be listening.
#[derive(Debug, Clone)]
pub struct RpcClient {
    addr: SocketAddr,
    /// `[api] token`, sent as a Bearer token when the daemon has one.
    token: Option<String>,
}

impl RpcClient {
    /// The running daemon of the repo at `repo`, if one answers; `None` when there is no api
    /// file or it is stale.
    pub fn discover(repo: &Path) -> Result<Option<RpcClient>, Error> {
        let path = rpc::api_file(repo);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::BadApiFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let bad = |reason: String| Error::BadApiFile {
            path: path.display().to_string(),
            reason,
        };
        let m: Multiaddr = text.trim().parse().map_err(|e| bad(format!("{e}")))?;
        let addr = rpc::socket_addr(&m).map_err(|e| bad(e.to_string()))?;
        match std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => Ok(Some(RpcClient { addr, token: None })),
            Err(e) => {
                tracing::debug!(path = %path.display(), %addr, error = %e,
                    "stale api file (left by a daemon that did not exit cleanly); going offline");
                Ok(None)
            }
        }
    }

    /// A client for a known address (tests, or a daemon on another repo).
    pub fn new(addr: SocketAddr) -> RpcClient {
        RpcClient { addr, token: None }
    }

    /// Sends `token` with every request (the daemon's `[api] token`).
    pub fn with_token(mut self, token: Option<String>) -> RpcClient {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    fn authorize(&self, req: hyper::http::request::Builder) -> hyper::http::request::Builder {
        match &self.token {
            Some(t) => req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// POSTs `path_and_query` with an empty body and decodes the JSON answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<T, Error> {
        let p = path_and_query.split('?').next().unwrap_or("").to_string();
        match tokio::time::timeout(timeout, self.post_inner(path_and_query, &p)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                path: p,
                after: timeout,
            }),
        }
    }

    /// One HTTP/1 connection to the daemon; the task drives it until aborted.
    async fn open<B>(
        &self,
        p: &str,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<B>,
            tokio::task::JoinHandle<hyper::Result<()>>,
        ),
        Error,
    >
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: self.addr,
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| Error::Http {
                path: p.to_string(),
                source,
            })?;
        Ok((sender, tokio::spawn(conn)))
    }

    async fn post_inner<T: DeserializeOwned>(&self, pq: &str, p: &str) -> Result<T, Error> {
        let http = |source| Error::Http {
            path: p.to_string(),
            source,
        };
        let (mut sender, driver) = self.open(p).await?;
        let req = self
            .authorize(hyper::Request::post(pq).header(hyper::header::HOST, self.addr.to_string()))
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::Decode {
                path: p.to_string(),
                reason: e.to_string(),
            })?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::Decode {
                path: p.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(Error::Remote {
                path: p.to_string(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::Decode {
            path: p.to_string(),
            reason: e.to_string(),
        })
    }

    /// POSTs `path_and_query` with `body` and hands each chunk of a successful answer to
    /// `on_data`; returns the bytes received. Fails with the server's message on an error status
    /// or an `X-Stream-Error` trailer, and when fewer bytes came than `X-Content-Length` promised.
    /// No overall timeout: content can be large; the server bounds each block's fetch.
    pub async fn stream<B>(
        &self,
        path_and_query: &str,
        content_type: Option<&str>,
        body: B,
        mut on_data: impl FnMut(Bytes) -> std::io::Result<()>,
    ) -> Result<u64, Error>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let p = path_and_query.split('?').next().unwrap_or("").to_string();
        let http = |source| Error::Http {
            path: p.clone(),
            source,
        };
        let decode = |reason: String| Error::Decode {
            path: p.clone(),
            reason,
        };
        let (mut sender, driver) = self.open(&p).await?;
        let mut req = self
            .authorize(hyper::Request::post(path_and_query))
            .header(hyper::header::HOST, self.addr.to_string())
            // Without it hyper's server drops trailers, and with them the stream's error.
            .header(hyper::header::TE, "trailers");
        if let Some(t) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, t);
        }
        let req = req.body(body).map_err(|e| decode(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let promised: Option<u64> = resp
            .headers()
            .get("X-Content-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| decode(e.to_string()))?
                .to_bytes();
            driver.abort();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.message)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(Error::Remote { path: p, message });
        }
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http)?;
            match frame.into_data() {
                Ok(data) => {
                    got += data.len() as u64;
                    on_data(data).map_err(|e| decode(format!("writing the answer: {e}")))?;
                }
                Err(frame) => {
                    if let Some(e) = frame
                        .trailers_ref()
                        .and_then(|t| t.get(super::content::STREAM_ERROR))
                    {
                        let message = String::from_utf8_lossy(e.as_bytes()).into_owned();
                        return Err(Error::Remote { path: p, message });
                    }
                }
            }
        }
        driver.abort();
        if let Some(n) = promised.filter(|&n| n != got) {
            return Err(decode(format!("the stream ended after {got} of {n} bytes")));
        }
        Ok(got)
    }

    pub async fn id(&self) -> Result<IdInfo, Error> {
        self.post("/api/v0/id", rpc::REQUEST_TIMEOUT + RESPONSE_SLACK)
            .await
    }

    pub async fn version(&self) -> Result<VersionInfo, Error> {
        self.post("/api/v0/version", rpc::REQUEST_TIMEOUT + RESPONSE_SLACK)
            .await
    }

    pub async fn swarm_peers(&self) -> Result<PeersInfo, Error> {
        self.post("/api/v0/swarm/peers", rpc::REQUEST_TIMEOUT + RESPONSE_SLACK)
            .await
    }

    /// Pins `paths` (fetching what the store lacks from peers); the answer names the pinned CIDs.
    pub async fn pin_add(&self, paths: &[String], recursive: bool) -> Result<PinsOutput, Error> {
        let pq = format!("/api/v0/pin/add?{}&recursive={recursive}", args(paths));
        self.post(&pq, PIN_TIMEOUT + RESPONSE_SLACK).await
    }

    /// Removes the pins of `paths`; the daemon frees the blocks they alone held.
    pub async fn pin_rm(&self, paths: &[String]) -> Result<PinsOutput, Error> {
        let pq = format!("/api/v0/pin/rm?{}", args(paths));
        self.post(&pq, rpc::REQUEST_TIMEOUT + RESPONSE_SLACK).await
    }

    /// The pins of one type (`recursive`, `direct`, `indirect` or `all`).
    pub async fn pin_ls(&self, kind: &str) -> Result<PinLsOutput, Error> {
        let pq = format!("/api/v0/pin/ls?type={}", percent_encode(kind));
        self.post(&pq, rpc::REQUEST_TIMEOUT + RESPONSE_SLACK).await
    }

    /// Connects the daemon to `addr` (`/…/p2p/<id>`); returns Kubo's "connect <id> success".
    pub async fn swarm_connect(&self, addr: &str) -> Result<Strings, Error> {
        let pq = format!("/api/v0/swarm/connect?arg={}", percent_encode(addr));
        self.post(&pq, rpc::CONNECT_TIMEOUT + RESPONSE_SLACK).await
    }
}

/// `arg=a&arg=b`, each encoded.
fn args(paths: &[String]) -> String {
    let args: Vec<String> = paths
        .iter()
        .map(|p| format!("arg={}", percent_encode(p)))
        .collect();
    args.join("&")
}

/// Query-string encoding: everything but unreserved characters (RFC 3986) is %XX.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multiaddrs_for_a_query() {
        assert_eq!(
            percent_encode("/ip4/1.2.3.4/tcp/1/p2p/Qm"),
            "%2Fip4%2F1.2.3.4%2Ftcp%2F1%2Fp2p%2FQm"
        );
    }

    #[test]
    fn no_file_and_stale_file_mean_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RpcClient::discover(dir.path()).unwrap().is_none());
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            rpc::api_file(dir.path()),
            format!("/ip4/127.0.0.1/tcp/{port}"),
        )
        .unwrap();
        assert!(RpcClient::discover(dir.path()).unwrap().is_none());
        std::fs::write(rpc::api_file(dir.path()), "garbage").unwrap();
        assert!(RpcClient::discover(dir.path()).is_err());
    }

    #[tokio::test]
    async fn talks_to_the_router_and_maps_errors() {
        use crate::blockstore::FsBlockstore;
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockstore::open(dir.path()).unwrap();
        let mut cfg =
            super::super::NodeConfig::from_config(&crate::config::Config::default()).unwrap();
        cfg.mdns = false;
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let key = libp2p::identity::Keypair::generate_ed25519();
        let (node, node_loop) = super::super::spawn(key.clone(), cfg.clone(), store).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(node_loop.run(stopped.clone()));
        node.listen(cfg.listen.clone()).await.unwrap();
        let server = crate::api::server::ApiServer::bind(
            &"/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            &crate::config::ApiConfig::default(),
        )
        .await
        .unwrap();
        let addr = rpc::socket_addr(&server.multiaddr()).unwrap();
        let app = rpc::router(node.clone(), Default::default());
        let srv = tokio::spawn(server.serve(app, stopped));
        let c = RpcClient::new(addr);
        let id = c.id().await.unwrap();
        assert_eq!(id.id, key.public().to_peer_id().to_base58());
        assert!(id.addresses.unwrap()[0].starts_with("/ip4/127.0.0.1/tcp/"));
        assert!(c.swarm_peers().await.unwrap().peers.is_empty());
        assert_eq!(
            c.version().await.unwrap().version,
            env!("CARGO_PKG_VERSION")
        );
        let e = c.swarm_connect("/ip4/127.0.0.1/tcp/1").await.unwrap_err();
        assert!(e.to_string().contains("/p2p/"), "{e}");
        let e = c
            .post::<Strings>("/api/v0/swarm/connect", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("required"), "{e}");
        stop.send(true).unwrap();
        task.await.unwrap();
        srv.await.unwrap().unwrap();
    }
}
