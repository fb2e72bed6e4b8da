//! The daemon's Kubo RPC: a subset of Kubo v0.22's `/api/v0/`, with its shapes.
//!
//! axum, not bare hyper: the Kubo RPC subset, the gateway and the session API that later issues
//! add are many routes with query arguments and JSON bodies, which axum's router and extractors
//! give for a small layer over the same hyper (already in the tree for the client side).
//!
//! Security (a token for changing routes, browser origins, connection limits) is the listener's
//! job: [`crate::api::server`] applies it to every route it carries, these included.
//!
//! Discovery: the daemon writes the bound address as a multiaddr to `<repo>/api` (as Kubo writes
//! `$IPFS_PATH/api`) once the server is up, and removes it on a clean exit. A kill -9 leaves it
//! behind; [`super::client`] treats a file whose address refuses connections as stale.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::{Node, PeerInfo};

/// The file in the repo naming the running daemon's RPC address.
pub const API_FILE: &str = "api";
const API_TMP_FILE: &str = ".api.tmp";
/// `swarm connect` gives up after this (Kubo's default dial timeout is in this range too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Any other request is answered within this, or fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("address '{addr}' {reason}: use e.g. /ip4/127.0.0.1/tcp/PORT")]
    BadAddress { addr: String, reason: &'static str },
    #[error("{op} {path}: {source}")]
    ApiFile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A `/ip4|ip6/…/tcp/PORT` multiaddr as a socket address.
pub fn socket_addr(m: &Multiaddr) -> Result<SocketAddr, Error> {
    let bad = |reason| Error::BadAddress {
        addr: m.to_string(),
        reason,
    };
    let mut it = m.iter();
    let ip: IpAddr = match it.next() {
        Some(Protocol::Ip4(a)) => a.into(),
        Some(Protocol::Ip6(a)) => a.into(),
        _ => return Err(bad("does not start with /ip4/ or /ip6/")),
    };
    let Some(Protocol::Tcp(port)) = it.next() else {
        return Err(bad("has no /tcp/PORT"));
    };
    if it.next().is_some() {
        return Err(bad("has parts after /tcp/PORT"));
    }
    Ok(SocketAddr::new(ip, port))
}

pub fn to_multiaddr(a: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(match a.ip() {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        })
        .with(Protocol::Tcp(a.port()))
}

/// The routes. Everything is POST, as in Kubo's RPC (GET gets 405).
/// `import` holds the `[import]` settings `add` starts from.
pub fn router(node: Node, import: crate::config::ImportConfig) -> Router {
    Router::new()
        .route("/api/v0/add", post(super::add::add))
        .route("/api/v0/id", post(id))
        .route("/api/v0/version", post(version))
        .route("/api/v0/swarm/peers", post(swarm_peers))
        .route("/api/v0/swarm/connect", post(swarm_connect))
        .route("/api/v0/cat", post(super::content::cat))
        .route("/api/v0/get", post(super::content::get))
        .route("/api/v0/block/get", post(super::blocks::block_get))
        .route("/api/v0/block/stat", post(super::blocks::block_stat))
        .route("/api/v0/dag/export", post(super::blocks::dag_export))
        .route("/api/v0/pin/add", post(super::pins::pin_add))
        .route("/api/v0/pin/rm", post(super::pins::pin_rm))
        .route("/api/v0/pin/ls", post(super::pins::pin_ls))
        .route("/api/v0/repo/stat", post(super::repo_stat::repo_stat))
        .layer(axum::Extension(std::sync::Arc::new(import)))
        // Uploads are streamed to the importer, never buffered, so no size cap is needed.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(node)
}

/// Kubo's error body: `{"Message": "...", "Code": 0, "Type": "error"}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub message: String,
    pub code: i32,
    #[serde(rename = "Type")]
    pub kind: String,
}

pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    #[cfg(test)]
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }
    #[cfg(test)]
    pub(super) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Kubo: Code 1 for client errors, 0 for the rest.
        let code = i32::from(self.status.is_client_error());
        let body = ErrorBody {
            message: self.message,
            code,
            kind: "error".into(),
        };
        (self.status, Json(body)).into_response()
    }
}

async fn bounded<T, E: std::fmt::Display>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(ApiError::internal),
        Err(_) => Err(ApiError::internal(format!("no answer within {d:?}"))),
    }
}

async fn id(State(node): State<Node>) -> Result<Json<super::IdInfo>, ApiError> {
    Ok(Json(bounded(REQUEST_TIMEOUT, node.id()).await?))
}

/// `version`'s answer, Kubo-shaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub system: String,
}

async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("WANDA_GIT_HASH").into(),
        system: format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
    })
}

/// `swarm peers`' answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeersInfo {
    pub peers: Vec<PeerInfo>,
}

async fn swarm_peers(State(node): State<Node>) -> Result<Json<PeersInfo>, ApiError> {
    let peers = bounded(REQUEST_TIMEOUT, node.peers()).await?;
    Ok(Json(PeersInfo { peers }))
}

#[derive(Debug, Deserialize)]
struct ArgQuery {
    arg: Option<String>,
}

/// Kubo's `{"Strings": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Strings {
    pub strings: Vec<String>,
}

async fn swarm_connect(
    State(node): State<Node>,
    Query(q): Query<ArgQuery>,
) -> Result<Json<Strings>, ApiError> {
    let Some(addr) = q.arg.filter(|a| !a.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "argument \"address\" is required",
        ));
    };
    // Parse here so a bad address is the caller's error (400), not the node's (500).
    super::split_peer("address", &addr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let peer = bounded(CONNECT_TIMEOUT, node.connect(&addr)).await?;
    Ok(Json(Strings {
        strings: vec![format!("connect {peer} success")],
    }))
}

/// `<repo>/api`.
pub fn api_file(repo: &Path) -> PathBuf {
    repo.join(API_FILE)
}

/// Writes `<repo>/api` atomically (temp file, rename), so a reader never sees half an address.
pub fn write_api_file(repo: &Path, addr: &Multiaddr) -> Result<(), Error> {
    let tmp = repo.join(API_TMP_FILE);
    let dest = api_file(repo);
    let err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::ApiFile { op, path, source }
    };
    std::fs::write(&tmp, addr.to_string()).map_err(err("writing", &tmp))?;
    std::fs::rename(&tmp, &dest).map_err(err("renaming", &tmp))
}

/// Removes `<repo>/api`; a file already gone is fine.
pub fn remove_api_file(repo: &Path) -> Result<(), Error> {
    let p = api_file(repo);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::ApiFile {
            op: "removing",
            path: p,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_must_be_loopback_tcp() {
        let ok: Multiaddr = "/ip4/127.0.0.1/tcp/5001".parse().unwrap();
        assert_eq!(socket_addr(&ok).unwrap().port(), 5001);
        assert_eq!(to_multiaddr(socket_addr(&ok).unwrap()), ok);
        let v6: Multiaddr = "/ip6/::1/tcp/0".parse().unwrap();
        assert!(socket_addr(&v6).unwrap().ip().is_loopback());
        for bad in [
            "/ip4/127.0.0.1/udp/5001",
            "/dns4/localhost/tcp/1",
            "/ip4/127.0.0.1/tcp/1/ws",
        ] {
            assert!(socket_addr(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let m: Multiaddr = "/ip4/127.0.0.1/tcp/4567".parse().unwrap();
        write_api_file(dir.path(), &m).unwrap();
        assert_eq!(
            std::fs::read_to_string(api_file(dir.path())).unwrap(),
            m.to_string()
        );
        remove_api_file(dir.path()).unwrap();
        remove_api_file(dir.path()).unwrap();
        assert!(!api_file(dir.path()).exists());
    }
}
