//! The HTTP gateway: `/ipfs/<cid>[/<path>]` as a read-only path gateway (UnixFS files with
//! ranges, directories with `index.html` or a listing) and a trustless gateway (`format=raw`
//! blocks, `format=car` CARv1 streams), after specs.ipfs.tech's path and trustless gateway specs,
//! as Kubo's `Addresses.Gateway` serves them.
//!
//! Content the store lacks is fetched over bitswap through the [`Node`], within
//! `[gateway] timeout_secs`: a response whose first byte would need a block that has not come by
//! then is a 504 naming it; a block that fails to come later cuts the response (the connection
//! closes short of its length or final chunk), so no client takes it for whole.
//!
//! Layout: parsing of requests is pure ([`request`], [`range`], [`etag`], [`mime`],
//! [`disposition`], [`listing`]); [`handler`] does the I/O; [`car`] writes CAR responses;
//! [`source`] bounds block fetches. Read-only, so any interface may be served, unlike the RPC.

mod car;
pub mod config;
mod disposition;
mod etag;
mod handler;
mod listing;
mod mime;
mod range;
mod request;
mod source;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use libp2p::Multiaddr;
use tokio::sync::watch;

pub use config::GatewayConfig;

use crate::node::Node;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadAddress(String),
    #[error("cannot listen for the gateway on {addr}: {source} (is Kubo or another daemon using it? set [gateway] address or --gateway)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The gateway's routes (`/ipfs/...`, and `/ipns/...` to say it is not served), to serve alone
/// ([`GatewayServer`]) or to merge into another router.
pub fn router(node: Node, cfg: GatewayConfig) -> Router {
    let gw = Arc::new(handler::Gateway {
        node,
        timeout: cfg.timeout(),
        types: mime::TypeCache::default(),
    });
    Router::new()
        .route("/ipfs", any(handler::handle))
        .route("/ipfs/", any(handler::handle))
        .route("/ipfs/{*path}", any(handler::handle))
        .route("/ipns", any(handler::handle))
        .route("/ipns/{*path}", any(handler::handle))
        .with_state(gw)
}

/// A bound, not yet serving, gateway listener.
pub struct GatewayServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl GatewayServer {
    /// Binds `addr`, a TCP multiaddr on any interface.
    pub async fn bind(addr: &Multiaddr) -> Result<GatewayServer, Error> {
        let want = config::socket_addr(addr).map_err(Error::BadAddress)?;
        let (listener, addr) = crate::api::server::listen(want)
            .await
            .map_err(|source| Error::Bind { addr: want, source })?;
        Ok(GatewayServer { listener, addr })
    }

    /// The address actually bound (port 0 resolved).
    pub fn multiaddr(&self) -> Multiaddr {
        config::to_multiaddr(self.addr)
    }

    /// Serves until `shutdown` turns true, then finishes the requests under way (with the API
    /// listener's bounds on slow and many clients).
    pub async fn serve(
        self,
        node: Node,
        cfg: GatewayConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let app = router(node, cfg).fallback(not_found);
        crate::api::server::serve_http(self.listener, app, shutdown).await;
        Ok(())
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "404 Not Found: this gateway serves /ipfs/<cid>[/<path>]\n",
    )
}
