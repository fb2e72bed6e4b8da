//! Sessions, their stills' CIDs and pin state, one CID's status, and capture start/stop.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cid::Cid;
use serde::Serialize;
use serde_json::{json, Value};

use super::envelope::{Data, Failure, Reply};
use super::ApiState;
use crate::capture::control::{CaptureStatus, ControlError, StartRequest};
use crate::session::{self, ImageState};

/// Runs store reads on the blocking pool (redb reads touch the disk).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Failure::internal)?
}

fn store_err(e: session::Error) -> Failure {
    Failure::internal(e)
}

/// One line of `GET /api/sessions`.
#[derive(Debug, Serialize)]
struct SessionSummary {
    name: String,
    created: String,
    images: usize,
    /// Images per state (`imported`, `pinning`, `pinned`, `failed`).
    states: BTreeMap<&'static str, usize>,
    /// Images whose file and blocks are still on this node.
    local: usize,
    /// With whole-session pins: the session directory's CID and whether it is pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pinned: Option<bool>,
    /// Whether a capture started through the API is writing into it now.
    capturing: bool,
}

fn state_name(s: ImageState) -> &'static str {
    match s {
        ImageState::Imported => "imported",
        ImageState::Pinning => "pinning",
        ImageState::Pinned => "pinned",
        ImageState::Failed => "failed",
    }
}

/// `GET /api/sessions`: every session the store knows, newest first.
pub(super) async fn list(State(st): State<ApiState>) -> Reply<Vec<Value>> {
    let capturing = st.capture.status().session;
    let s = st.clone();
    let mut out = blocking(move || {
        let mut out = Vec::new();
        for rec in s.sessions.sessions().map_err(store_err)? {
            let images = s.sessions.images(&rec.name).map_err(store_err)?;
            let mut states = BTreeMap::new();
            for i in &images {
                *states.entry(state_name(i.state)).or_insert(0) += 1;
            }
            let dir = s.sessions.session_pin(&rec.name).map_err(store_err)?;
            out.push(SessionSummary {
                capturing: capturing.as_deref() == Some(rec.name.as_str()),
                images: images.len(),
                local: images.iter().filter(|i| i.local).count(),
                states,
                cid: dir.as_ref().map(|d| d.cid.clone()),
                pinned: dir.map(|d| d.state == session::RoundState::Pinned),
                name: rec.name,
                created: rec.created,
            });
        }
        Ok(out)
    })
    .await?;
    out.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
    let out = out
        .into_iter()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    Ok(Data(out))
}

/// The seed format for one session, from the store: `name`, `created`, `ipfs{enabled, cluster,
/// [cid, pinned]}`, `images[{number, cid, pinned, ...}]`: what `session_metadata.json` holds.
fn session_doc(st: &ApiState, name: &str) -> Result<Value, Failure> {
    let rec = st
        .sessions
        .session(name)
        .map_err(store_err)?
        .ok_or_else(|| {
            Failure::not_found(
                "SESSION_NOT_FOUND",
                format!("no session named {name:?} has been imported"),
            )
        })?;
    let images = st.sessions.images(name).map_err(store_err)?;
    let ipfs = crate::pipeline::ipfs_info(
        &st.sessions,
        &st.pipeline,
        st.cluster.as_ref().map(|(_, c)| c),
        name,
    );
    Ok(Value::Object(session::merge_metadata(
        None, &rec, &ipfs, &images,
    )))
}

/// `GET /api/session/<name>/ipfs`.
pub(super) async fn session_ipfs(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Reply<Value> {
    let s = st.clone();
    Ok(Data(blocking(move || session_doc(&s, &name)).await?))
}

/// `GET /api/ipfs/status/<cid>`: whether this node has it, which stills it is, and what the
/// cluster says about it (per peer, with names).
pub(super) async fn cid_status(
    State(st): State<ApiState>,
    Path(arg): Path<String>,
) -> Reply<Value> {
    let cid: Cid = arg.parse().map_err(|e| {
        Failure::bad_request(
            "INVALID_CID",
            format!("{arg:?} is not a valid CID ({e}): expected e.g. Qm... or bafy..."),
        )
    })?;
    let s = st.clone();
    let (local, pinned_here, images) = blocking(move || local_status(&s, &cid)).await?;
    let cluster = match &st.cluster {
        None => json!({ "configured": false }),
        Some((client, cfg)) => {
            match tokio::time::timeout(super::CLUSTER_QUERY_TIMEOUT, client.status(&cid)).await {
                Ok(Ok(g)) => {
                    let peers: Vec<Value> = g
                        .peer_map
                        .iter()
                        .map(|(id, p)| {
                            json!({
                                "peer": id,
                                "peername": p.peername,
                                "ipfs_peer_id": p.ipfs_peer_id,
                                "status": p.status.as_str(),
                                "error": (!p.error.is_empty()).then_some(&p.error),
                            })
                        })
                        .collect();
                    json!({
                        "configured": true,
                        "replicas": g.pinned_count(),
                        "replication_min": cfg.replication_min,
                        "replication_max": cfg.replication_max,
                        "peers": peers,
                    })
                }
                Ok(Err(e)) => json!({ "configured": true, "error": e.to_string() }),
                Err(_) => json!({
                    "configured": true,
                    "error": format!("the cluster did not answer within {:?}", super::CLUSTER_QUERY_TIMEOUT),
                }),
            }
        }
    };
    Ok(Data(json!({
        "cid": cid.to_string(),
        "local": local,
        "pinned_locally": pinned_here,
        "images": images,
        "cluster": cluster,
    })))
}

fn local_status(st: &ApiState, cid: &Cid) -> Result<(bool, bool, Vec<Value>), Failure> {
    let store = st.node.store();
    let local = store.has(cid).map_err(Failure::internal)?;
    let pinned = store
        .pins()
        .map_err(Failure::internal)?
        .iter()
        .any(|(c, _)| c.hash() == cid.hash());
    let images = st
        .sessions
        .images_with_cid(&cid.to_string())
        .map_err(store_err)?
        .into_iter()
        .map(|(session, i)| {
            json!({
                "session": session,
                "number": i.number,
                "file": i.file,
                "state": state_name(i.state),
                "pinned": i.pinned(),
                "replicas": i.replicas,
                "local": i.local,
                "error": i.error,
            })
        })
        .collect();
    Ok((local, pinned, images))
}

fn control_failure(e: ControlError) -> Failure {
    let (status, code) = match e {
        ControlError::NoFolder => (StatusCode::CONFLICT, "CAPTURE_NOT_CONFIGURED"),
        ControlError::Busy(_) => (StatusCode::CONFLICT, "CAPTURE_RUNNING"),
        ControlError::NotRunning => (StatusCode::CONFLICT, "NO_CAPTURE_RUNNING"),
        ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_INPUT"),
    };
    Failure::new(status, code, e.to_string())
}

/// `POST /api/session/start` with a JSON body `{"session": "...", "mode"?, "count"?,
/// "interval_secs"?, "hours"?}`; the rest comes from `[capture]`.
pub(super) async fn start(
    State(st): State<ApiState>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Reply<CaptureStatus> {
    let Json(req) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Failure::new(
                e.status(),
                "PAYLOAD_TOO_LARGE",
                format!("the request body is over {} bytes", super::MAX_BODY),
            );
        }
        Failure::bad_request(
            "INVALID_INPUT",
            format!(
                "{} (expected JSON like {{\"session\": \"night 1\", \"count\": 10}})",
                e.body_text()
            ),
        )
    })?;
    st.capture.start(&req).map(Data).map_err(control_failure)
}

/// `POST /api/session/stop`: the running capture ends after the still under way.
pub(super) async fn stop(State(st): State<ApiState>) -> Reply<CaptureStatus> {
    st.capture.stop().map(Data).map_err(control_failure)
}

/// `GET /api/capture`.
pub(super) async fn capture_status(State(st): State<ApiState>) -> Reply<CaptureStatus> {
    Ok(Data(st.capture.status()))
}
