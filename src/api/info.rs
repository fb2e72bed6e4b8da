//! `GET /api/node`: who this node is, whom it is connected to, how full its repo is and how
//! much the pipeline has left to do.

use std::time::{Duration, Instant};

use axum::extract::State;
use serde::Serialize;
use serde_json::{json, Value};

use super::envelope::{Data, Failure, Reply};
use super::ApiState;

/// How long a repo size reading is reused.
const REPO_STAT_TTL: Duration = Duration::from_secs(10);
/// A node that does not answer within this is reported as such.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RepoInfo {
    path: String,
    blocks: u64,
    bytes: u64,
    pins: u64,
    free_bytes: u64,
}

async fn repo_info(st: &ApiState) -> Result<RepoInfo, Failure> {
    if let Some((at, r)) =
        st.0.repo_stat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
    {
        if at.elapsed() < REPO_STAT_TTL {
            return Ok(r.clone());
        }
    }
    let store = st.node.store().clone();
    let s = tokio::task::spawn_blocking(move || store.stat())
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    let r = RepoInfo {
        path: s.path.display().to_string(),
        blocks: s.blocks,
        bytes: s.bytes,
        pins: s.pins,
        free_bytes: s.free_bytes,
    };
    *st.0
        .repo_stat
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), r.clone()));
    Ok(r)
}

async fn bounded<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(NODE_TIMEOUT, f).await {
        Ok(r) => r.map_err(Failure::internal),
        Err(_) => Err(Failure::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "NODE_BUSY",
            format!("the node did not answer within {NODE_TIMEOUT:?}"),
        )),
    }
}

/// `GET /api/node`.
pub(super) async fn node(State(st): State<ApiState>) -> Reply<Value> {
    let id = bounded(st.node.id()).await?;
    let peers = bounded(st.node.peers()).await?;
    let mdns = bounded(st.node.mdns_peers()).await?;
    let repo = repo_info(&st).await?;
    let sessions = st.sessions.clone();
    let (outbox, pinning, to_free) = tokio::task::spawn_blocking(move || sessions.backlog())
        .await
        .map_err(Failure::internal)?
        .map_err(Failure::internal)?;
    let peers: Vec<Value> = peers
        .into_iter()
        .map(|p| {
            json!({
                "peer": p.peer,
                "addr": p.addr,
                "latency": p.latency,
                "direction": if p.direction == 1 { "inbound" } else { "outbound" },
                "agent": p.identify.map(|i| i.agent_version),
            })
        })
        .collect();
    Ok(Data(json!({
        "peer_id": id.id,
        "agent": id.agent_version,
        "version": env!("CARGO_PKG_VERSION"),
        "addresses": id.addresses.unwrap_or_default(),
        "peers": peers,
        "mdns": mdns,
        "repo": repo,
        "pipeline": {
            "enabled": st.pipeline.enabled,
            "captures_dir": st.pipeline.captures_dir(),
            "pin_policy": st.pipeline.pin_policy,
            "delete_after_pin": st.pipeline.delete_after_pin,
            "outbox": outbox,
            "pinning": pinning,
            "to_free": to_free,
        },
        "cluster": st.cluster.as_ref().map(|(c, cfg)| json!({
            "api": c.endpoint().to_string(),
            "replication_min": cfg.replication_min,
            "replication_max": cfg.replication_max,
        })),
        "capture": st.capture.status(),
    })))
}
