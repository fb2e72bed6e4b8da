//! The RPC's pin routes, `pin/add`, `pin/rm` and `pin/ls`, answered as Kubo v0.22 answers them.
//! The pins themselves are the blockstore's (`pin`, `unpin`, `pins`); this module resolves the
//! arguments, fetches what `pin/add` needs over bitswap (bounded), and shapes the answers.
//!
//! One difference from Kubo, from the store's design: `pin/rm` frees the blocks no other pin
//! needs at once (what Kubo leaves to the next `repo gc`).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cid::Cid;
use serde::{Deserialize, Serialize};

use super::blocks::{parse_path, resolve_arg, within};
use super::content::{stream_body, STREAM_ERROR};
use super::fetch::fetch_dag;
use super::query::{bad_request, params, Params};
use super::rpc::ApiError;
use super::Node;
use crate::block::RAW;
use crate::blockstore::{self, BlockSource, FsBlockstore, PinMode};

/// How long `pin/add` may fetch, unless `timeout=` says otherwise.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Tries at fetch-then-pin: a GC between the two can take fetched blocks away again.
const PIN_TRIES: usize = 2;

/// `pin/add`'s and `pin/rm`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PinsOutput {
    pub pins: Vec<String>,
}

/// `pin/ls`'s answer: `{"Keys":{cid:{"Type":…}}}`. As in Kubo, `Keys` is left out when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PinLsOutput {
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub keys: serde_json::Map<String, serde_json::Value>,
}

/// One line of `pin/ls?stream=true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PinLsLine {
    pub cid: String,
    #[serde(rename = "Type")]
    pub kind: String,
}

/// `pin ls --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinFilter {
    Direct,
    Indirect,
    Recursive,
    All,
}

impl PinFilter {
    pub fn parse(s: &str) -> Result<PinFilter, String> {
        Ok(match s {
            "direct" => PinFilter::Direct,
            "indirect" => PinFilter::Indirect,
            "recursive" => PinFilter::Recursive,
            "all" => PinFilter::All,
            _ => {
                return Err(format!(
                    "invalid type '{s}', must be one of {{direct, indirect, recursive, all}}"
                ))
            }
        })
    }

    fn wants(self, other: PinFilter) -> bool {
        self == PinFilter::All || self == other
    }
}

fn mode_name(m: PinMode) -> &'static str {
    match m {
        PinMode::Recursive => "recursive",
        PinMode::Direct => "direct",
    }
}

fn store_error(e: blockstore::Error) -> ApiError {
    ApiError::internal(format!("pin: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The `arg`s, at least one required.
fn paths(p: &Params) -> Result<Vec<String>, ApiError> {
    p.required_arg("ipfs-path").map_err(bad_request)?;
    Ok(p.args.clone())
}

/// `POST /api/v0/pin/add?arg=<path>…[&recursive=false]`: fetches what is missing, pins, and
/// answers `{"Pins":[…]}`. The whole call is bounded by `timeout=` or [`PIN_TIMEOUT`].
pub(super) async fn pin_add(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Json<PinsOutput>, ApiError> {
    let p = params(q.as_deref())?;
    let args = paths(&p)?;
    let recursive = p.bool("recursive").map_err(bad_request)?.unwrap_or(true);
    let limit = p.timeout().map_err(bad_request)?.unwrap_or(PIN_TIMEOUT);
    // One bound for the whole call, as Kubo's timeout option is.
    let what = || format!("pin: fetching {}", args.join(", "));
    let pins = within(limit, what, async {
        let mut pins = Vec::with_capacity(args.len());
        for arg in &args {
            pins.push(pin_one(&node, arg, recursive).await?.to_string());
        }
        Ok(pins)
    })
    .await?;
    Ok(Json(PinsOutput { pins }))
}

async fn pin_one(node: &Node, arg: &str, recursive: bool) -> Result<Cid, ApiError> {
    let cid = resolve_arg(node, arg).await?;
    let mode = if recursive {
        PinMode::Recursive
    } else {
        PinMode::Direct
    };
    let store = node.store().clone();
    if !recursive {
        let s = store.clone();
        let current = blocking(move || s.pins().map_err(store_error)).await?;
        if current.contains(&(cid, PinMode::Recursive)) {
            return Err(ApiError::internal(format!(
                "pin: {cid} already pinned recursively"
            )));
        }
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let known = if recursive {
            fetch_dag(node, cid)
                .await
                .map_err(|e| ApiError::internal(format!("pin: {e}")))?
                .links
        } else {
            node.ensure(cid)
                .await
                .map_err(|e| ApiError::internal(format!("pin: block {cid}: {e}")))?;
            HashMap::new()
        };
        let s = store.clone();
        match blocking(move || Ok(s.pin_with_links(&cid, mode, &known))).await? {
            Ok(()) => return Ok(cid),
            Err(blockstore::Error::MissingBlock { .. }) if tries < PIN_TRIES => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// `POST /api/v0/pin/rm?arg=<path>…[&recursive=false]`: `{"Pins":[…]}`. With `recursive=false`
/// only a direct pin may go, as in Kubo.
pub(super) async fn pin_rm(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Json<PinsOutput>, ApiError> {
    let p = params(q.as_deref())?;
    let args = paths(&p)?;
    let recursive = p.bool("recursive").map_err(bad_request)?.unwrap_or(true);
    let mut pins = Vec::with_capacity(args.len());
    for arg in args {
        let cid = resolve_local(&node, &arg).await?;
        let store = node.store().clone();
        blocking(move || {
            let mode = store
                .pins()
                .map_err(store_error)?
                .into_iter()
                .find(|(c, _)| *c == cid)
                .map(|(_, m)| m);
            match mode {
                None => Err(ApiError::internal("not pinned or pinned indirectly")),
                Some(PinMode::Recursive) if !recursive => {
                    Err(ApiError::internal(format!("{cid} is pinned recursively")))
                }
                Some(_) => store.unpin(&cid).map(drop).map_err(store_error),
            }
        })
        .await?;
        pins.push(cid.to_string());
    }
    Ok(Json(PinsOutput { pins }))
}

/// Resolves `arg` through the store alone: what is pinned is local, and a listing must not wait
/// on the network.
async fn resolve_local(node: &Node, arg: &str) -> Result<Cid, ApiError> {
    let (root, rest) = parse_path(arg)?;
    if rest.is_empty() {
        return Ok(root);
    }
    let store = node.store().clone();
    let arg = arg.to_string();
    blocking(move || {
        crate::unixfs::export::resolve(&store, &root, &rest)
            .map_err(|e| ApiError::internal(format!("resolving {arg}: {e}")))
    })
    .await
}

/// `POST /api/v0/pin/ls[?arg=<path>…][&type=all|direct|indirect|recursive][&stream=true]`.
/// Without arguments: every pin of the type, recursive roots first, then direct ones, then the
/// blocks recursive pins cover (`indirect`), as Kubo lists them. With arguments: how each is
/// pinned (`indirect through <root>` for a covered block), failing on one that is not.
pub(super) async fn pin_ls(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = params(q.as_deref())?;
    let filter = PinFilter::parse(p.string("type").map_err(bad_request)?.unwrap_or("all"))
        .map_err(bad_request)?;
    let stream = p.bool("stream").map_err(bad_request)?.unwrap_or(false);
    let mut cids = Vec::with_capacity(p.args.len());
    for arg in &p.args {
        cids.push((arg.clone(), resolve_local(&node, arg).await?));
    }
    let store = node.store().clone();
    if !stream {
        let out = blocking(move || {
            let mut out = PinLsOutput::default();
            let mut add = |cid: &Cid, kind: &str| {
                out.keys
                    .insert(cid.to_string(), serde_json::json!({ "Type": kind }));
                Ok(())
            };
            list(&store, filter, &cids, &mut add).map_err(ApiError::internal)?;
            Ok(out)
        })
        .await?;
        return Ok(Json(out).into_response());
    }
    // Arguments are checked before anything is sent, so a bad one is still a plain error.
    if !cids.is_empty() {
        let s = store.clone();
        let c = cids.clone();
        blocking(move || list(&s, filter, &c, &mut |_, _| Ok(())).map_err(ApiError::internal))
            .await?;
    }
    let (body, mut w) = stream_body();
    tokio::task::spawn_blocking(move || {
        let r = list(&store, filter, &cids, &mut |cid, kind| {
            let mut line = serde_json::to_vec(&PinLsLine {
                cid: cid.to_string(),
                kind: kind.to_string(),
            })
            .map_err(|e| e.to_string())?;
            line.push(b'\n');
            w.write_all(&line)
                .and_then(|()| w.flush())
                .map_err(|e| e.to_string())
        });
        w.finish(r);
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    h.insert("X-Chunked-Output", HeaderValue::from_static("1"));
    h.insert("Trailer", HeaderValue::from_static(STREAM_ERROR));
    Ok(resp)
}

type Emit<'a> = dyn FnMut(&Cid, &str) -> Result<(), String> + 'a;

/// Lists pins (no `args`) or checks each of `args`, handing `(cid, type)` to `emit`.
fn list(
    store: &FsBlockstore,
    filter: PinFilter,
    args: &[(String, Cid)],
    emit: &mut Emit<'_>,
) -> Result<(), String> {
    let pins = store.pins().map_err(|e| format!("pin: {e}"))?;
    let roots = |m: PinMode| pins.iter().filter(move |(_, pm)| *pm == m).map(|(c, _)| *c);
    if !args.is_empty() {
        for (arg, cid) in args {
            let kind = pin_type(store, &pins, filter, cid)?
                .ok_or_else(|| format!("path '{arg}' is not pinned"))?;
            emit(cid, &kind)?;
        }
        return Ok(());
    }
    let mut emitted: HashSet<Cid> = HashSet::new();
    for (mode, kind) in [
        (PinMode::Recursive, PinFilter::Recursive),
        (PinMode::Direct, PinFilter::Direct),
    ] {
        for cid in roots(mode) {
            if filter.wants(kind) {
                if emitted.insert(cid) {
                    emit(&cid, mode_name(mode))?;
                }
            } else if filter == PinFilter::Indirect {
                // A pinned root is listed as what it is pinned as, never as indirect.
                emitted.insert(cid);
            }
        }
    }
    if filter.wants(PinFilter::Indirect) {
        let mut walked = HashSet::new();
        for root in roots(PinMode::Recursive) {
            walk_below(store, &root, &mut walked, &mut |cid| {
                if emitted.insert(*cid) {
                    emit(cid, "indirect")?;
                }
                Ok(false)
            })?;
        }
    }
    Ok(())
}

/// How `cid` is pinned, as Kubo's `IsPinned` says it, within `filter`; `None` if not.
fn pin_type(
    store: &FsBlockstore,
    pins: &[(Cid, PinMode)],
    filter: PinFilter,
    cid: &Cid,
) -> Result<Option<String>, String> {
    for (mode, kind) in [
        (PinMode::Recursive, PinFilter::Recursive),
        (PinMode::Direct, PinFilter::Direct),
    ] {
        if filter.wants(kind) && pins.contains(&(*cid, mode)) {
            return Ok(Some(mode_name(mode).to_string()));
        }
    }
    if filter.wants(PinFilter::Indirect) {
        let mut walked = HashSet::new();
        for (root, _) in pins.iter().filter(|(_, m)| *m == PinMode::Recursive) {
            let mut found = false;
            walk_below(store, root, &mut walked, &mut |c| {
                found = c == cid;
                Ok(found)
            })?;
            if found {
                return Ok(Some(format!("indirect through {root}")));
            }
        }
    }
    Ok(None)
}

/// Visits every block below `root` (not `root` itself) once per `walked` set, depth first in
/// link order; `visit` returning true stops the walk.
fn walk_below(
    store: &FsBlockstore,
    root: &Cid,
    walked: &mut HashSet<Cid>,
    visit: &mut dyn FnMut(&Cid) -> Result<bool, String>,
) -> Result<(), String> {
    let mut stack = children(store, root)?;
    stack.reverse();
    while let Some(cid) = stack.pop() {
        if !walked.insert(cid) {
            continue;
        }
        if visit(&cid)? {
            return Ok(());
        }
        let mut c = children(store, &cid)?;
        c.reverse();
        stack.extend(c);
    }
    Ok(())
}

fn children(store: &FsBlockstore, cid: &Cid) -> Result<Vec<Cid>, String> {
    if cid.codec() == RAW {
        return Ok(Vec::new());
    }
    let data = store.get(cid).map_err(|e| format!("listing pins: {e}"))?;
    crate::unixfs::pb::links(cid, &data).map_err(|e| format!("listing pins: block {cid}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::BlockSink;
    use crate::unixfs::{file, ImportOptions};

    fn import(store: &FsBlockstore, data: &[u8], chunk: usize) -> Cid {
        let opts = ImportOptions {
            chunker: crate::unixfs::options::Chunker::Size(chunk),
            ..ImportOptions::default()
        };
        let mut w = store.writer();
        let f = file::import_file(&opts, &mut &data[..], &mut w, &mut |_| {}).unwrap();
        drop(w.commit().unwrap());
        f.cid
    }

    fn listed(store: &FsBlockstore, filter: PinFilter, args: &[Cid]) -> Vec<(String, String)> {
        let args: Vec<(String, Cid)> = args.iter().map(|c| (c.to_string(), *c)).collect();
        let mut out = Vec::new();
        list(store, filter, &args, &mut |c, k| {
            out.push((c.to_string(), k.to_string()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn lists_pins_by_type_as_kubo_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockstore::open(dir.path()).unwrap();
        // Three 4-byte chunks: a root over three leaves.
        let big = import(&store, b"aaaabbbbcccc", 4);
        let small = import(&store, b"direct", 1024);
        store.pin(&big, PinMode::Recursive).unwrap();
        store.pin(&small, PinMode::Direct).unwrap();
        let leaves = children(&store, &big).unwrap();
        assert_eq!(leaves.len(), 3);

        let all = listed(&store, PinFilter::All, &[]);
        assert_eq!(all[0], (big.to_string(), "recursive".into()));
        assert_eq!(all[1], (small.to_string(), "direct".into()));
        let indirect: Vec<_> = leaves
            .iter()
            .map(|c| (c.to_string(), "indirect".to_string()))
            .collect();
        assert_eq!(all[2..], indirect[..]);
        assert_eq!(listed(&store, PinFilter::Indirect, &[]), indirect);
        assert_eq!(
            listed(&store, PinFilter::Recursive, &[]),
            vec![(big.to_string(), "recursive".to_string())]
        );

        assert_eq!(
            listed(&store, PinFilter::All, &[leaves[1]]),
            vec![(leaves[1].to_string(), format!("indirect through {big}"))]
        );
        assert_eq!(
            listed(&store, PinFilter::All, &[small])[0].1,
            "direct".to_string()
        );
        let args = vec![(small.to_string(), small)];
        let e = list(&store, PinFilter::Recursive, &args, &mut |_, _| Ok(())).unwrap_err();
        assert_eq!(e, format!("path '{small}' is not pinned"));
    }

    #[test]
    fn pin_ls_shapes_are_kubo_shaped() {
        let mut out = PinLsOutput::default();
        assert_eq!(serde_json::to_string(&out).unwrap(), "{}");
        out.keys
            .insert("Qm1".into(), serde_json::json!({"Type": "recursive"}));
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"Keys":{"Qm1":{"Type":"recursive"}}}"#
        );
        let line = PinLsLine {
            cid: "Qm1".into(),
            kind: "direct".into(),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"Cid":"Qm1","Type":"direct"}"#
        );
        assert_eq!(
            serde_json::to_string(&PinsOutput {
                pins: vec!["Qm1".into()]
            })
            .unwrap(),
            r#"{"Pins":["Qm1"]}"#
        );
        assert!(PinFilter::parse("sideways")
            .unwrap_err()
            .contains("must be one of {direct, indirect, recursive, all}"));
    }

    #[test]
    fn raw_leaves_are_never_read_for_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockstore::open(dir.path()).unwrap();
        let b = crate::block::Block::new(cid::Version::V1, RAW, b"leaf".to_vec());
        let mut w = store.writer();
        w.put(&b).unwrap();
        drop(w.commit().unwrap());
        assert!(children(&store, &b.cid).unwrap().is_empty());
    }
}
