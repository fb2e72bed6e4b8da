//! The RPC's `repo/stat`, shaped as Kubo v0.22's: `RepoSize`, `StorageMax`, `NumObjects`,
//! `RepoPath`, `Version`; with `size-only`, only the two sizes are filled (the rest zero/empty,
//! as Kubo leaves them). Numbers come from the blockstore's own `stat`.
//!
//! What the fields mean here: `RepoSize` is the bytes of the stored blocks (what `wanda-ipfs
//! repo stat` prints), `StorageMax` is `u64::MAX` because no storage limit is configured (Kubo's
//! "no limit" value), and `Version` names our repo format (`wanda-ipfs-repo@N`), not Kubo's
//! `fs-repo@N`: a tool that reads it must not think it can open the repo as Kubo's.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::query::{bad_request, params};
use super::rpc::ApiError;
use super::Node;

/// `StorageMax` when there is no limit, as Kubo reports it.
pub const NO_LIMIT: u64 = u64::MAX;

/// `repo/stat`'s answer, fields in Kubo's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RepoStat {
    pub repo_size: u64,
    pub storage_max: u64,
    pub num_objects: u64,
    pub repo_path: String,
    pub version: String,
}

/// The repo format's version string.
pub fn repo_version() -> String {
    format!("wanda-ipfs-repo@{}", crate::blockstore::SCHEMA_VERSION)
}

/// `POST /api/v0/repo/stat[?size-only=true]`.
pub(super) async fn repo_stat(
    State(node): State<Node>,
    RawQuery(q): RawQuery,
) -> Result<Json<RepoStat>, ApiError> {
    let p = params(q.as_deref())?;
    let size_only = p.bool("size-only").map_err(bad_request)?.unwrap_or(false);
    let store = node.store().clone();
    let s = tokio::task::spawn_blocking(move || store.stat())
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("repo stat: {e}")))?;
    Ok(Json(if size_only {
        RepoStat {
            repo_size: s.bytes,
            storage_max: NO_LIMIT,
            num_objects: 0,
            repo_path: String::new(),
            version: String::new(),
        }
    } else {
        RepoStat {
            repo_size: s.bytes,
            storage_max: NO_LIMIT,
            num_objects: s.blocks,
            repo_path: s.path.display().to_string(),
            version: repo_version(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_stat_is_kubo_shaped() {
        let s = RepoStat {
            repo_size: 10,
            storage_max: NO_LIMIT,
            num_objects: 2,
            repo_path: "/r".into(),
            version: repo_version(),
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!(
                r#"{{"RepoSize":10,"StorageMax":18446744073709551615,"NumObjects":2,"RepoPath":"/r","Version":"wanda-ipfs-repo@{}"}}"#,
                crate::blockstore::SCHEMA_VERSION
            )
        );
    }
}
