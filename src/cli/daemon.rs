//! `wanda-ipfs daemon`: open the repo once, run the node and its RPC until a signal.
//!
//! Output is Kubo-like on stdout, one line per event, so scripts and tests can read it:
//! `Swarm listening on <addr>/p2p/<id>` per listen address, `RPC API server listening on <addr>`,
//! `Gateway server listening on <addr>`, then `Daemon is ready`. Lifecycle (moonfire-nvr's run
//! command): the first SIGINT/SIGTERM starts a graceful stop and says that a second one forces
//! it; the `api` file is removed on every exit path we control; the repo lock goes with the
//! process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::args::DaemonArgs;
use crate::api::{self, server::ApiServer};
use crate::capture::control::CaptureControl;
use crate::cluster::ClusterClient;
use crate::gateway::GatewayServer;
use crate::node::{self, rpc, NodeConfig};
use crate::pipeline::events::Events;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::repo::{self, Repo};
use crate::session::{self, SessionStore};

/// Listeners that have not reported an address by then are an error (binding is local work).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A graceful stop that takes longer than this is cut short.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status of a forced (second-signal) stop, as a shell reports death by SIGINT.
const FORCED_EXIT: i32 = 130;

pub(super) fn run(args: DaemonArgs, config: Option<&Path>, repo_path: &Path) -> Result<()> {
    fix_mmap_threshold();
    if args.init && !repo_path.join(repo::CONFIG_FILE).exists() {
        Repo::init(repo_path)?;
        println!("initialized wanda-ipfs repo at {}", repo_path.display());
    }
    let repo = match Repo::open(repo_path, config, super::env_var) {
        Ok(r) => r,
        Err(e @ repo::Error::Locked { .. }) => {
            let hint = match node::client::RpcClient::discover(repo_path) {
                Ok(Some(_)) => {
                    "a wanda-ipfs daemon is already running on this repo: use it, or stop it first"
                }
                _ => "another wanda-ipfs process holds it",
            };
            return Err(anyhow::Error::new(e).context(hint));
        }
        Err(e) => return Err(e.into()),
    };
    let key = repo.identity()?;
    let mut cfg = NodeConfig::from_config(&repo.config)?;
    if !args.listen.is_empty() {
        cfg.listen = args
            .listen
            .iter()
            .map(|a| node::parse_multiaddr("--listen address", a))
            .collect::<Result<_, _>>()?;
    }
    if args.no_mdns {
        cfg.mdns = false;
    }
    let api = args.api.as_deref().unwrap_or(&repo.config.api.address);
    let api = node::parse_multiaddr("API address", api)?;
    api::server::check(&api, &repo.config.api)?;
    let mut gateway = repo.config.gateway.clone();
    if let Some(a) = &args.gateway {
        gateway.address = a.clone();
    }
    gateway.validate().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut pipeline = repo.config.pipeline.clone();
    if let Some(dir) = &args.watch {
        pipeline.captures_dir = dir.to_string_lossy().into_owned();
    }
    let result = rt.block_on(serve(&repo, key, cfg, api, pipeline, gateway));
    // Whatever happened, a file naming a server that is gone would only mislead.
    if let Err(e) = rpc::remove_api_file(repo.path()) {
        tracing::warn!("{e}");
    }
    // Background tasks (a lingering connection) must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(repo);
    result
}

/// Keeps glibc from holding on to freed block buffers.
///
/// A daemon's big allocations are short-lived: 256 KiB blocks read to be sent or just received,
/// messages of up to 4 MiB. glibc's threshold for serving an allocation with its own `mmap`
/// starts at 128 KiB but rises to the size of each such chunk freed, so after the first message
/// every block buffer comes from the per-thread heaps, which fragment and are rarely trimmed.
/// Setting the threshold fixes it (no more rising): buffers of 128 KiB and up go back to the
/// system when freed. `bash bench/node.sh` measured peak RSS serving a wanda-ipfs fetcher at
/// 47.7 MiB without this and 22.7 MiB with it, serving Kubo 25.6 and 16.7 MiB. The static arm64
/// build links glibc too (-gnu, +crt-static), so the Pi gets the same setting. Raising the
/// threshold or the trim threshold instead (freed buffers kept for reuse) did not move serving
/// speed beyond the runs' noise once messages stopped being copied whole (FrameParts).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 << 10;
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused; memory use may run higher");
        }
    }
}

/// Starts the capture pipeline (ingest when a captures folder is set, cluster pinning when a
/// cluster is).
fn start_pipeline(
    repo: &Repo,
    node: &node::Node,
    sessions: SessionStore,
    cfg: PipelineConfig,
    cluster: Option<(ClusterClient, crate::cluster::ClusterConfig)>,
    events: Events,
    stop: watch::Receiver<bool>,
) -> Result<Pipeline> {
    if let Some(dir) = cfg.captures_dir() {
        println!("Watching captures in {}", dir.display());
    }
    if let Some((c, _)) = &cluster {
        println!("Pinning through IPFS Cluster at {}", c.endpoint());
    }
    let import = repo.config.import.to_options()?;
    Ok(Pipeline::spawn(
        node.clone(),
        sessions,
        import,
        cfg,
        cluster,
        events,
        stop,
    ))
}

async fn serve(
    repo: &Repo,
    key: libp2p::identity::Keypair,
    cfg: NodeConfig,
    api: libp2p::Multiaddr,
    pipeline_cfg: PipelineConfig,
    gateway: crate::gateway::GatewayConfig,
) -> Result<()> {
    let peer = key.public().to_peer_id();
    let listen = cfg.listen.clone();
    let (node, node_loop) = node::spawn(key, cfg, repo.store.clone())?;
    let (stop, stopped) = watch::channel(false);
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let node_task = tokio::spawn(node_loop.run(stopped.clone()));

    let addrs = tokio::time::timeout(LISTEN_TIMEOUT, node.listen(listen))
        .await
        .context("the listeners did not come up in time")??;
    for a in &addrs {
        println!("Swarm listening on {a}/p2p/{peer}");
    }
    let sessions = SessionStore::open(&repo.path().join(session::SESSIONS_DB))?;
    let cluster =
        ClusterClient::from_config(&repo.config.cluster)?.map(|c| (c, repo.config.cluster.clone()));
    let events = Events::new();
    let capture = CaptureControl::new(
        pipeline_cfg.captures_dir(),
        repo.config.capture.clone(),
        events.clone(),
    );
    let app = rpc::router(node.clone(), repo.config.import.clone())
        .merge(api::gateway_routes(crate::gateway::router(
            node.clone(),
            gateway.clone(),
        )))
        .merge(api::router(api::ApiContext {
            node: node.clone(),
            sessions: sessions.clone(),
            events: events.clone(),
            capture: capture.clone(),
            cluster: cluster.clone(),
            pipeline: pipeline_cfg.clone(),
            stop: stopped.clone(),
        }));
    let server = ApiServer::bind(&api, &repo.config.api).await?;
    let api_addr = server.multiaddr();
    let server_task = tokio::spawn(server.serve(app, stopped.clone()));
    let gateway_server =
        GatewayServer::bind(&node::parse_multiaddr("gateway address", &gateway.address)?).await?;
    let gateway_addr = gateway_server.multiaddr();
    let gateway_task = tokio::spawn(gateway_server.serve(node.clone(), gateway, stopped.clone()));
    let pipeline = start_pipeline(
        repo,
        &node,
        sessions,
        pipeline_cfg,
        cluster,
        events,
        stopped.clone(),
    )?;
    rpc::write_api_file(repo.path(), &api_addr)?;
    println!("RPC API server listening on {api_addr}");
    println!("Gateway server listening on {gateway_addr}");
    println!("Daemon is ready");
    tracing::info!(%peer, "daemon ready");

    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    println!("Received interrupt signal, shutting down...");
    println!("(Hit ctrl-c again to force-shutdown the daemon.)");
    let repo_path = repo.path().to_path_buf();
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        eprintln!("second signal: forcing shutdown");
        let _ = rpc::remove_api_file(&repo_path);
        std::process::exit(FORCED_EXIT);
    });
    let _ = stop.send(true);
    // A capture under way ends after its current still, before the pipeline stops.
    let _ = tokio::task::spawn_blocking(move || capture.shutdown(SHUTDOWN_TIMEOUT / 2)).await;
    // The RPC first, so no request reaches a stopping node; then the node.
    let graceful = async {
        pipeline.join().await;
        let served = server_task.await;
        if let Ok(Err(e)) = gateway_task.await {
            tracing::warn!("{e}");
        }
        let _ = node_task.await;
        served
    };
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, graceful).await {
        Ok(Ok(r)) => r?,
        Ok(Err(join)) => return Err(join).context("the RPC task failed"),
        Err(_) => {
            tracing::warn!(after = ?SHUTDOWN_TIMEOUT, "graceful shutdown took too long; exiting anyway")
        }
    }
    Ok(())
}
