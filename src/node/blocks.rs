//! The RPC's block and DAG routes: `block/get`, `block/stat` and `dag/export` (a CARv1 stream),
//! answered as Kubo v0.22 answers them. A block the store lacks is fetched over bitswap, but only
//! for as long as the request's bound (Kubo's `timeout=` option, else a default): a CID nobody
//! has ends in a clear error, never a request that hangs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Json;
use cid::Cid;
use serde::{Deserialize, Serialize};

use super::content::{prefetch, split_ipfs_path, stream_body, STREAM_ERROR};
use super::fetch::NetSource;
use super::query::{bad_request, params};
use super::rpc::ApiError;
use super::Node;

/// How long `block/get` and `block/stat` wait for a block no peer has sent, unless `timeout=`
/// says otherwise (the node's own per-block fetch timeout may end it sooner).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// `block/stat`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockStat {
    pub key: String,
    pub size: u64,
}

/// Parses `CID`, `/ipfs/CID[/path]` or `CID/path`; a bad one is the caller's error, worded as
/// Kubo words it (`invalid path "…"`) with our hint.
pub(super) fn parse_path(arg: &str) -> Result<(Cid, String), ApiError> {
    split_ipfs_path(arg).map_err(|e| bad_request(format!("invalid path {arg:?}: {e}")))
}

/// Runs `f` within `limit`; running out is reported with `what` and the bound.
pub(super) async fn within<T>(
    limit: Duration,
    what: impl FnOnce() -> String,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::internal(format!(
            "{}: not done within {limit:?} (the request's timeout; raise it with timeout=, \
             or connect a peer that has the content)",
            what()
        ))),
    }
}

/// The CID `arg` names: its root, or what its path leads to, fetching directories over bitswap
/// where the store lacks them.
pub(super) async fn resolve_arg(node: &Node, arg: &str) -> Result<Cid, ApiError> {
    let (root, rest) = parse_path(arg)?;
    if rest.is_empty() {
        return Ok(root);
    }
    let src = NetSource::new(node.clone());
    match tokio::task::spawn_blocking(move || crate::unixfs::export::resolve(&src, &root, &rest))
        .await
    {
        Ok(Ok(cid)) => Ok(cid),
        Ok(Err(e)) => Err(ApiError::internal(format!("resolving {arg}: {e}"))),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// One block's bytes, local or fetched.
async fn fetch_block(node: &Node, cid: Cid) -> Result<bytes::Bytes, ApiError> {
    node.block(cid)
        .await
        .map_err(|e| ApiError::internal(format!("block {cid}: {e}")))
}

/// `POST /api/v0/block/get?arg=<cid>`: the block's bytes, as Kubo streams them (`text/plain`).
pub(super) async fn block_get(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref())?;
    let arg = p.required_arg("cid").map_err(bad_request)?.to_string();
    let limit = p.timeout().map_err(bad_request)?.unwrap_or(BLOCK_TIMEOUT);
    let data = within(limit, || format!("getting block {arg}"), async {
        let cid = resolve_arg(&node, &arg).await?;
        fetch_block(&node, cid).await
    })
    .await?;
    let mut resp = Response::new(Body::from(data));
    let h = resp.headers_mut();
    h.insert("Content-Type", HeaderValue::from_static("text/plain"));
    h.insert("X-Stream-Output", HeaderValue::from_static("1"));
    Ok(resp)
}

/// `POST /api/v0/block/stat?arg=<cid>`: `{"Key","Size"}`; a block the store lacks is fetched
/// first, as Kubo does.
pub(super) async fn block_stat(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Json<BlockStat>, ApiError> {
    let p = params(q.as_deref())?;
    let arg = p.required_arg("cid").map_err(bad_request)?.to_string();
    let limit = p.timeout().map_err(bad_request)?.unwrap_or(BLOCK_TIMEOUT);
    within(limit, || format!("getting block {arg}"), async {
        let cid = resolve_arg(&node, &arg).await?;
        let store = node.store().clone();
        // A stored block's size is one stat of its file; only a missing one is fetched.
        let local = tokio::task::spawn_blocking(move || store.size(&cid))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("block {cid}: {e}")))?;
        let size = match local {
            Some(n) => n,
            None => fetch_block(&node, cid).await?.len() as u64,
        };
        Ok(Json(BlockStat {
            key: cid.to_string(),
            size,
        }))
    })
    .await
}

/// `POST /api/v0/dag/export?arg=<root>`: the DAG as a CARv1 stream, blocks in depth-first
/// pre-order, fetched where missing. The root must be available within the bound (so a CID
/// nobody has is a plain error); a later block that cannot be had ends the stream with the
/// `X-Stream-Error` trailer.
pub(super) async fn dag_export(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref())?;
    let arg = p.required_arg("root").map_err(bad_request)?;
    // Kubo takes a bare CID here, no path.
    let root = Cid::try_from(arg).map_err(|e| {
        bad_request(format!(
            "unable to parse root specification (currently only bare CIDs are supported): \
             '{arg}' is not a valid CID ({e})"
        ))
    })?;
    let limit = p.timeout().map_err(bad_request)?.unwrap_or(BLOCK_TIMEOUT);
    within(
        limit,
        || format!("getting the root block {root}"),
        fetch_block(&node, root),
    )
    .await?;
    let src = NetSource::new(node.clone());
    let ahead = prefetch(&node, root);
    let (body, mut w) = stream_body();
    tokio::task::spawn_blocking(move || {
        let r = crate::car::export_dag(&src, &root, &mut w)
            .map(drop)
            .map_err(|e| format!("exporting {root}: {e:#}"));
        ahead.abort();
        w.finish(r);
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    // Kubo v0.22 said text/plain here; later Kubo (and the gateway spec) name the CAR type.
    h.insert(
        "Content-Type",
        HeaderValue::from_static("application/vnd.ipld.car"),
    );
    h.insert("X-Stream-Output", HeaderValue::from_static("1"));
    h.insert("Trailer", HeaderValue::from_static(STREAM_ERROR));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn block_stat_is_kubo_shaped() {
        let v = serde_json::to_value(BlockStat {
            key: "bafkqaaa".into(),
            size: 3,
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"Key": "bafkqaaa", "Size": 3}));
    }

    #[test]
    fn bad_paths_are_client_errors_named_as_kubo_names_them() {
        let e = parse_path("not-a-cid").err().unwrap();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(
            e.message().starts_with("invalid path \"not-a-cid\": "),
            "{}",
            e.message()
        );
        let Ok((c, rest)) = parse_path("/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn/a/b")
        else {
            panic!("a good path was refused");
        };
        assert_eq!(
            c.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!(rest, "a/b");
    }
}
