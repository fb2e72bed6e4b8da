//! `wanda-ipfs id` and `wanda-ipfs swarm …`: ask the running daemon over its RPC; `id` also
//! works offline from the repo's key, as `ipfs id` does.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::args::SwarmCmd;
use crate::node::client::RpcClient;
use crate::node::IdInfo;

/// The running daemon of this repo, if any (a stale `api` file counts as none).
pub(super) fn daemon(repo_path: &Path) -> Result<Option<RpcClient>> {
    let Some(c) = RpcClient::discover(repo_path).context("looking for a running daemon")? else {
        return Ok(None);
    };
    // The daemon's token, if it has one, from the repo's config (or WANDA_API_TOKEN).
    let file = repo_path.join(crate::repo::CONFIG_FILE);
    let token = crate::config::Config::load(&file, super::env_var)
        .ok()
        .and_then(|c| c.api.token);
    Ok(Some(c.with_token(token)))
}

/// A small runtime for one RPC call from the synchronous CLI.
pub(super) fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f))
}

pub(super) fn id(config: Option<&Path>, repo_path: &Path) -> Result<()> {
    let info = match daemon(repo_path)? {
        Some(c) => block_on(c.id())?.context("asking the daemon for its id")?,
        None => {
            let repo = super::open(config, repo_path)?;
            IdInfo::new(&repo.identity()?.public(), None)
        }
    };
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

pub(super) fn swarm(cmd: SwarmCmd, repo_path: &Path) -> Result<()> {
    let Some(c) = daemon(repo_path)? else {
        bail!(
            "this command needs a running daemon, and none runs on {}: start `wanda-ipfs daemon` first",
            repo_path.display()
        );
    };
    match cmd {
        SwarmCmd::Peers => {
            let peers = block_on(c.swarm_peers())??;
            for p in peers.peers {
                println!("{}/p2p/{}", p.addr, p.peer);
            }
        }
        SwarmCmd::Connect { addrs } => {
            for a in addrs {
                let out =
                    block_on(c.swarm_connect(&a))?.with_context(|| format!("connecting to {a}"))?;
                for s in out.strings {
                    println!("{s}");
                }
            }
        }
    }
    Ok(())
}
