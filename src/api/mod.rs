//! The daemon's HTTP API for WANDA and people: sessions and their pin state in WANDA's JSON
//! envelope ([`envelope`]), node status, capture start/stop, a server-sent-events feed of the
//! pipeline, and the web page. It shares one listener with the Kubo RPC (`/api/v0`) and the
//! gateway's `/ipfs/` paths; [`server`] binds it and applies the access rules.
//!
//! Handlers only read the session store and the node; everything they change goes through the
//! same paths as the CLI and the pipeline (the capture folder, the node's commands).

mod envelope;
mod events;
mod info;
pub mod server;
mod sessions;
mod web;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;

use crate::capture::control::CaptureControl;
use crate::cluster::{ClusterClient, ClusterConfig};
use crate::node::Node;
use crate::pipeline::events::Events;
use crate::pipeline::PipelineConfig;
use crate::session::SessionStore;

/// What the API reads and drives.
pub struct ApiContext {
    pub node: Node,
    pub sessions: SessionStore,
    pub events: Events,
    pub capture: CaptureControl,
    pub cluster: Option<(ClusterClient, ClusterConfig)>,
    pub pipeline: PipelineConfig,
    /// Turns true when the daemon stops: open event streams end then, so the server's
    /// graceful shutdown does not wait on them.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct ApiState(Arc<Inner>);

pub(crate) struct Inner {
    ctx: ApiContext,
    /// `repo stat` walks every block file: the page polls the node's status, so its answer is
    /// kept for a few seconds.
    repo_stat: Mutex<Option<(Instant, info::RepoInfo)>>,
}

impl std::ops::Deref for ApiState {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.0.ctx
    }
}

/// Largest JSON body the WANDA routes read (a start request is a few dozen bytes).
const MAX_BODY: usize = 64 << 10;

/// How long a cluster status query of `GET /api/ipfs/status/<cid>` may take.
const CLUSTER_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's `/ipfs/` routes for the API's listener, where the page loads stills from.
///
/// Content from the network must not run as the API's origin (a pinned HTML page could then
/// drive the node with its same-origin requests): each response is sandboxed by CSP, which gives
/// a document an opaque origin (its requests carry `Origin: null`, refused by [`server`]'s
/// rules) and leaves images, the page's use of these routes, as they are.
pub fn gateway_routes(gateway: Router) -> Router {
    gateway.layer(axum::middleware::map_response(
        |mut r: axum::response::Response| async move {
            r.headers_mut().insert(
                axum::http::header::CONTENT_SECURITY_POLICY,
                axum::http::HeaderValue::from_static("sandbox"),
            );
            r
        },
    ))
}

/// The WANDA API's routes and the web page.
pub fn router(ctx: ApiContext) -> Router {
    let state = ApiState(Arc::new(Inner {
        ctx,
        repo_stat: Mutex::new(None),
    }));
    Router::new()
        .route("/api/sessions", get(sessions::list))
        .route("/api/session/{name}/ipfs", get(sessions::session_ipfs))
        .route("/api/session/start", post(sessions::start))
        .route("/api/session/stop", post(sessions::stop))
        .route("/api/capture", get(sessions::capture_status))
        .route("/api/ipfs/status/{cid}", get(sessions::cid_status))
        .route("/api/node", get(info::node))
        .route("/api/events", get(events::stream))
        .route("/", get(web::index))
        .route("/assets/{file}", get(web::asset))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
