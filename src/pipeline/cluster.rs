//! The pipeline's cluster side: outbox -> `POST /pins` -> poll `GET /pins/{cid}` -> free.
//!
//! Pinning goes over the swarm: while anything is in flight the node keeps the cluster's IPFS
//! daemons connected (dialing out, so a Pi behind NAT is reachable over its own connections),
//! and those daemons fetch the blocks over bitswap. Transient errors (cluster down, 5xx,
//! timeouts) back the whole loop off and are retried; a refusal that retrying cannot fix (not
//! enough peers, 4xx) marks the image `failed` and keeps it local.

use super::events::{Event, EventKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cid::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use tokio::sync::watch;

use super::{rounds, Shared};
use crate::blockstore;
use crate::cluster::{self, Backoff, ClusterClient, ClusterConfig, PinOptions};
use crate::session::{self, ImageRecord, OutboxEntry};

/// Images handed to the cluster, polled or freed per pass.
const PER_PASS: usize = 64;
/// How often the list of cluster peers (their IPFS addresses) is fetched again while busy.
const PEERS_REFRESH: Duration = Duration::from_secs(60);
/// Backoff of the whole loop after a transient error.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a pass stopped early.
pub(super) enum Stop {
    /// The cluster is unreachable or erring: wait and retry.
    Transient(String),
    /// Local trouble (the store): log and retry later.
    Local(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Local(e)
    }
}

struct State {
    backoff: Backoff,
    peers_at: Option<Instant>,
    /// IPFS addresses of the cluster's peers, from `/peers`.
    cluster_addrs: Vec<Multiaddr>,
    /// What the node was last told to keep.
    kept: Vec<Multiaddr>,
}

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some((client, cfg)) = shared.cluster.clone() else {
        return;
    };
    tracing::info!(api = %client.endpoint(), policy = ?shared.cfg.pin_policy, "pinning through IPFS Cluster");
    if !shared.per_image() {
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || rounds::recover(&s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("pipeline: finding sessions to pin: {e:#}"),
            Err(e) => tracing::error!("pipeline: finding sessions to pin: {e}"),
        }
    }
    let mut st = State {
        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_MAX),
        peers_at: None,
        cluster_addrs: Vec::new(),
        kept: Vec::new(),
    };
    loop {
        let wait = match pass(&shared, &client, &cfg, &mut st).await {
            Ok(busy) => {
                st.backoff.reset();
                if busy {
                    shared.poll()
                } else {
                    // Nothing in flight: sleep until the outbox grows (or a while, to be sure).
                    Duration::from_secs(30)
                }
            }
            Err(Stop::Transient(e)) => {
                let d = st.backoff.next_delay(cluster::entropy());
                tracing::warn!(retry_in = ?d, "cluster: {e}");
                d
            }
            Err(Stop::Local(e)) => {
                tracing::error!("pipeline: {e:#}");
                BACKOFF_MAX
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = shared.outbox_grew.notified(), if wait > shared.poll() => {}
            () = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    // Let the cluster peers' connections idle out like any other.
    let _ = shared.node.set_cluster_peers(&[]).await;
}

/// One round over the queues; returns whether anything is still in flight.
async fn pass(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    st: &mut State,
) -> Result<bool, Stop> {
    let (outbox, pinning, _) = blocking(shared, |s| Ok(s.sessions.backlog()?)).await?;
    refresh_peers(shared, client, st).await;
    let mut status_addrs: Vec<Multiaddr> = Vec::new();
    if outbox > 0 {
        pin_outbox(shared, client, cfg).await?;
    }
    if pinning > 0 {
        poll_pinning(shared, client, cfg, &mut status_addrs).await?;
    }
    let mut rounds_busy = false;
    if !shared.per_image() {
        rounds_busy = rounds::pass(shared, client, cfg, &mut status_addrs).await?;
    }
    free_confirmed(shared).await?;

    let (outbox, pinning, _) = blocking(shared, |s| Ok(s.sessions.backlog()?)).await?;
    let busy = outbox + pinning > 0 || rounds_busy;
    // The cluster's IPFS daemons stay connected even when nothing is in flight: once the Pi
    // freed its stills, they are where the gateway (and the web page) fetch them back from.
    // The addresses pin statuses name are kept only while those pins are in flight.
    let mut want: Vec<Multiaddr> = st.cluster_addrs.clone();
    if busy {
        for a in &status_addrs {
            if !want.contains(a) {
                want.push(a.clone());
            }
        }
    }
    if want != st.kept && shared.node.set_cluster_peers(&want).await.is_ok() {
        tracing::debug!(peers = want.len(), "cluster IPFS peers kept connected");
        st.kept = want;
    }
    Ok(busy)
}

/// Learns the IPFS addresses of every cluster peer, at most once per [`PEERS_REFRESH`].
async fn refresh_peers(shared: &Arc<Shared>, client: &ClusterClient, st: &mut State) {
    if st.peers_at.is_some_and(|t| t.elapsed() < PEERS_REFRESH) {
        return;
    }
    match client.peers().await {
        Ok(peers) => {
            let own = shared.node.id().await.ok().map(|i| i.id);
            st.cluster_addrs = peers
                .iter()
                .filter(|p| own.as_deref() != p.ipfs.id.as_deref())
                .flat_map(|p| p.ipfs_addresses())
                .collect();
            st.peers_at = Some(Instant::now());
        }
        // Pins can still work through origins and the status's addresses.
        Err(e) => tracing::debug!("cluster peers: {e}"),
    }
}

/// Our addresses for `origins`, dialable ones first (the cluster dials at most 10).
pub(super) async fn origins(shared: &Arc<Shared>) -> Vec<Multiaddr> {
    let Ok(id) = shared.node.id().await else {
        return Vec::new();
    };
    let mut addrs: Vec<Multiaddr> = id
        .addresses
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    addrs.sort_by_key(is_loopback);
    addrs
}

fn is_loopback(a: &Multiaddr) -> bool {
    a.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

async fn pin_outbox(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
) -> Result<(), Stop> {
    let entries = blocking(shared, |s| Ok(s.sessions.outbox(PER_PASS)?)).await?;
    let origins = origins(shared).await;
    for entry in entries {
        let Some(rec) = blocking(shared, {
            let e = entry.clone();
            move |s| Ok(s.sessions.image(&e.session, e.number)?)
        })
        .await?
        else {
            continue;
        };
        let cid: Cid = match rec.cid.parse() {
            Ok(c) => c,
            Err(e) => {
                fail(
                    shared,
                    &entry,
                    &format!("recorded CID {:?} is unreadable: {e}", rec.cid),
                )
                .await?;
                continue;
            }
        };
        let opts =
            image_pin_options(cfg, &entry.session, &rec).with_origins(origins.iter().cloned());
        match client.pin(&cid, &opts).await {
            Ok(_) => {
                let e = entry.clone();
                blocking(shared, move |s| Ok(s.sessions.set_pinning(&e)?)).await?;
                tracing::info!(session = %entry.session, number = entry.number, %cid, "cluster accepted the pin");
                shared.emit(
                    Event::new(EventKind::Pinning, &entry.session).image(entry.number, &rec.cid),
                );
                shared.mark_dirty(&entry.session);
            }
            Err(e) if e.is_transient() => {
                let msg = e.to_string();
                let en = entry.clone();
                let m = msg.clone();
                blocking(shared, move |s| {
                    Ok(s.sessions.note_error(&en.session, en.number, &m)?)
                })
                .await?;
                return Err(Stop::Transient(msg));
            }
            Err(e) => {
                tracing::warn!(session = %entry.session, number = entry.number, "cluster refused the pin: {e}");
                fail(shared, &entry, &e.to_string()).await?;
            }
        }
    }
    Ok(())
}

/// How a still is named to the cluster, whether pinned or uploaded.
fn image_pin_options(cfg: &ClusterConfig, session: &str, rec: &ImageRecord) -> PinOptions {
    PinOptions::from_config(cfg)
        .with_name(format!("{session}/{}", rec.file))
        .with_meta("session", session.to_string())
        .with_meta("number", rec.number.to_string())
}

async fn fail(shared: &Arc<Shared>, entry: &OutboxEntry, msg: &str) -> Result<(), Stop> {
    let e = entry.clone();
    let m = msg.to_string();
    blocking(shared, move |s| {
        Ok(s.sessions
            .set_failed(&e.session, e.number, Some(e.seq), &m)?)
    })
    .await?;
    shared.emit(
        Event::new(EventKind::Failed, &entry.session)
            .number(entry.number)
            .error(msg),
    );
    shared.mark_dirty(&entry.session);
    Ok(())
}

/// Replicas needed: `replication_min`, or with -1/0 (every peer / the cluster's default) every
/// peer the cluster allocated.
pub(super) fn needed(cfg: &ClusterConfig, status: &cluster::GlobalPinInfo) -> usize {
    if cfg.replication_min > 0 {
        return cfg.replication_min as usize;
    }
    status.allocated().count().max(1)
}

async fn poll_pinning(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    addrs: &mut Vec<Multiaddr>,
) -> Result<(), Stop> {
    let list = blocking(shared, |s| Ok(s.sessions.pinning(PER_PASS)?)).await?;
    for (session, number, since) in list {
        let Some(rec) = blocking(shared, {
            let s2 = session.clone();
            move |s| Ok(s.sessions.image(&s2, number)?)
        })
        .await?
        else {
            continue;
        };
        let Ok(cid) = rec.cid.parse::<Cid>() else {
            continue;
        };
        let status = match client.status(&cid).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => return Err(Stop::Transient(e.to_string())),
            Err(e) => {
                // A status we cannot read does not undo the pin: note it and keep polling.
                let m = e.to_string();
                let s2 = session.clone();
                blocking(shared, move |s| {
                    Ok(s.sessions.note_error(&s2, number, &m)?)
                })
                .await?;
                continue;
            }
        };
        for a in status.ipfs_addresses() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let count = status.pinned_count();
        let replicas = u32::try_from(count).unwrap_or(u32::MAX);
        if count >= needed(cfg, &status) {
            let free = shared.cfg.delete_after_pin;
            let s2 = session.clone();
            blocking(shared, move |s| {
                Ok(s.sessions.set_pinned(&s2, number, replicas, free)?)
            })
            .await?;
            tracing::info!(%session, number, %cid, replicas, "pinned by the cluster");
            shared.emit(
                Event::new(EventKind::Pinned, &session)
                    .image(number, &rec.cid)
                    .replicas(replicas),
            );
            shared.mark_dirty(&session);
        } else {
            if replicas != rec.replicas {
                let s2 = session.clone();
                blocking(shared, move |s| {
                    Ok(s.sessions.set_replicas(&s2, number, replicas)?)
                })
                .await?;
                shared.emit(
                    Event::new(EventKind::Replicas, &session)
                        .image(number, &rec.cid)
                        .replicas(replicas),
                );
                shared.mark_dirty(&session);
            }
            let waited = session::unix_now().saturating_sub(since);
            if rec.local && cfg.car_fallback().is_some_and(|d| waited >= d.as_secs()) {
                upload_car(shared, client, cfg, &cid, &session, &rec).await?;
            }
        }
    }
    Ok(())
}

/// The swarm has not delivered an image for `car_fallback_secs` (the cluster's IPFS daemons
/// cannot reach this node, or cannot fetch from it): uploads its DAG over HTTP as a CAR to
/// `POST /add`, which pins the same CID, then waits as long again before another try.
async fn upload_car(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    cid: &Cid,
    session: &str,
    rec: &ImageRecord,
) -> Result<(), Stop> {
    let number = rec.number;
    let path = shared.uploads.join(format!("{cid}.car"));
    let (p2, c2) = (path.clone(), *cid);
    blocking(shared, move |s| {
        std::fs::create_dir_all(&s.uploads)
            .with_context(|| format!("creating {}", s.uploads.display()))?;
        let file =
            std::fs::File::create(&p2).with_context(|| format!("creating {}", p2.display()))?;
        crate::car::export_dag(&s.blocks, &c2, std::io::BufWriter::new(file))
            .with_context(|| format!("exporting {c2} for upload"))?;
        Ok(())
    })
    .await?;
    tracing::warn!(%session, number, %cid, "replicas are late over the swarm; uploading the blocks as a CAR");
    let result = client
        .add_car(path.clone(), &image_pin_options(cfg, session, rec))
        .await;
    let p2 = path.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(p2)).await;
    let note = match result {
        Ok(out) if out.last().is_some_and(|o| o.cid == *cid) => None,
        Ok(out) => Some(format!(
            "the cluster added the CAR as {}, not {cid}",
            out.last()
                .map_or("nothing".to_string(), |o| o.cid.to_string())
        )),
        Err(e) if e.is_transient() => return Err(Stop::Transient(e.to_string())),
        Err(e) => Some(format!("CAR upload refused: {e}")),
    };
    let s2 = session.to_string();
    blocking(shared, move |s| {
        if let Some(m) = &note {
            s.sessions.note_error(&s2, number, m)?;
        }
        Ok(s.sessions.restart_pinning(&s2, number)?)
    })
    .await?;
    Ok(())
}

/// Removes the local still and its blocks of every confirmed image. The file goes first, then
/// the pin (unless another image with the same CID is still kept), then the record says so; a
/// crash in between repeats the steps, each of which is idempotent.
async fn free_confirmed(shared: &Arc<Shared>) -> Result<(), Stop> {
    let list = blocking(shared, |s| Ok(s.sessions.to_free(PER_PASS)?)).await?;
    for (session, number) in list {
        let s2 = session.clone();
        blocking(shared, move |s| free_one(s, &s2, number)).await?;
        shared.mark_dirty(&session);
    }
    Ok(())
}

fn free_one(shared: &Shared, session: &str, number: u32) -> Result<()> {
    let Some(rec) = shared.sessions.image(session, number)? else {
        return Ok(());
    };
    let sess = shared
        .sessions
        .session(session)?
        .with_context(|| format!("session {session:?} of a confirmed image is not recorded"))?;
    let path = sess.dir.join(&rec.file);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("deleting {}", path.display())),
    }
    let shared_cid = shared
        .sessions
        .images_with_cid(&rec.cid)?
        .into_iter()
        .any(|(s, other)| other.local && !(s == session && other.number == number));
    if !shared_cid {
        let cid: Cid = rec
            .cid
            .parse()
            .with_context(|| format!("recorded CID {:?} is unreadable", rec.cid))?;
        match shared.blocks.unpin(&cid) {
            Ok(report) => {
                tracing::info!(%session, number, %cid, freed_blocks = report.blocks, freed_bytes = report.bytes, "local copy freed")
            }
            Err(blockstore::Error::NotPinned(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("unpinning {cid}")),
        }
    }
    shared.sessions.set_freed(session, number)?;
    shared.emit(Event::new(EventKind::Freed, session).image(number, &rec.cid));
    Ok(())
}

/// Runs store work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
) -> Result<T, Stop> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .context("a pipeline job panicked")?
        .map_err(Stop::Local)
}
