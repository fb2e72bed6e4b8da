//! The cluster side of whole-session pins (`pin_policy = "session"`): a session with no new
//! still for `session_idle_secs` is complete; its stills become one UnixFS directory (the CID
//! `ipfs add -r` gives a folder holding just those stills, with the configured options), which
//! is pinned, polled and confirmed like a single still in `cluster.rs`.
//!
//! The directory needs only each still's CID and DAG size, so a later round (a still that came
//! after the session was pinned) can list stills this node freed long ago; the cluster's peers
//! already hold those, and fetch only the new blocks from here.

use super::events::{Event, EventKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cid::Cid;
use libp2p::Multiaddr;

use super::cluster::{blocking, needed, origins, Stop};
use super::import::Collect;
use super::Shared;
use crate::blockstore::{self, BlockSource, PinMode};
use crate::cluster::{ClusterClient, ClusterConfig, PinOptions};
use crate::session::{self, ImageState, RoundState, SessionPin};
use crate::unixfs::hamt::DirEntry;

/// Sessions whose stills wait for a round, as the store holds them: called once as the cluster
/// task starts, so a restart does not forget a session that was not complete yet. Their idle
/// time counts from now.
pub(super) fn recover(shared: &Shared) -> Result<()> {
    for s in shared.sessions.sessions()? {
        let in_flight = shared
            .sessions
            .session_pin(&s.name)?
            .is_some_and(|p| p.in_flight());
        let waiting = shared
            .sessions
            .images(&s.name)?
            .iter()
            .any(|r| r.state == ImageState::Imported);
        if waiting && !in_flight {
            shared.note_for_round(&s.name);
        }
    }
    Ok(())
}

/// One round over whole-session pins: starts rounds of complete sessions, posts queued ones,
/// polls those pinning. Returns whether anything is still waiting or in flight.
pub(super) async fn pass(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    addrs: &mut Vec<Multiaddr>,
) -> Result<bool, Stop> {
    start_complete(shared).await?;
    let pins = blocking(shared, |s| Ok(s.sessions.session_pins()?)).await?;
    let mut busy = false;
    for (session, pin) in pins {
        match pin.state {
            RoundState::Queued => {
                post(shared, client, cfg, &session, &pin).await?;
                busy = true;
            }
            RoundState::Pinning => {
                busy |= !poll(shared, client, cfg, addrs, &session, &pin).await?;
            }
            RoundState::Pinned | RoundState::Failed => {}
        }
    }
    let waiting = !lock_idle(shared).is_empty();
    Ok(busy || waiting)
}

fn lock_idle(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Instant>> {
    shared
        .idle_since
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes a round of every session idle for `session_idle_secs` whose previous round is done.
async fn start_complete(shared: &Arc<Shared>) -> Result<(), Stop> {
    let idle = Duration::from_secs(shared.cfg.session_idle_secs);
    let complete: Vec<(String, Instant)> = lock_idle(shared)
        .iter()
        .filter(|(_, t)| t.elapsed() >= idle)
        .map(|(s, t)| (s.clone(), *t))
        .collect();
    for (session, seen) in complete {
        let s2 = session.clone();
        let started = blocking(shared, move |s| build_round(s, &s2)).await?;
        match started {
            // A round is still in flight: this one waits for it.
            None => continue,
            Some(Some(pin)) => {
                tracing::info!(%session, cid = %pin.cid, stills = pin.images.len(), "session complete; its directory is to be pinned");
                shared.mark_dirty(&session);
            }
            Some(None) => {}
        }
        // A still imported while the round was built may have been missed by it: then the
        // entry's time has moved on, and it stays for the next round.
        let mut waiting = lock_idle(shared);
        if waiting.get(&session) == Some(&seen) {
            waiting.remove(&session);
        }
    }
    Ok(())
}

/// Builds and records the session's next round. `None`: the previous round is still in
/// flight; `Some(None)`: nothing to pin.
fn build_round(shared: &Shared, session: &str) -> Result<Option<Option<SessionPin>>> {
    let previous = shared.sessions.session_pin(session)?;
    if previous.as_ref().is_some_and(SessionPin::in_flight) {
        return Ok(None);
    }
    let images = shared.sessions.images(session)?;
    let covered: Vec<u32> = images
        .iter()
        .filter(|r| matches!(r.state, ImageState::Imported | ImageState::Failed))
        .map(|r| r.number)
        .collect();
    if covered.is_empty() {
        return Ok(Some(None));
    }
    let mut entries = Vec::with_capacity(images.len());
    for r in &images {
        let cid: Cid = r
            .cid
            .parse()
            .with_context(|| format!("recorded CID {:?} is unreadable", r.cid))?;
        let tsize = match r.dag_size {
            Some(t) => t,
            None => dag_size(&shared.blocks, &cid).with_context(|| {
                format!(
                    "the DAG size of {session:?}/{} was not recorded and its blocks are gone",
                    r.file
                )
            })?,
        };
        entries.push(DirEntry {
            name: r.file.clone(),
            cid,
            tsize,
        });
    }
    let mut writer = shared.blocks.writer();
    let mut sink = Collect {
        inner: &mut writer,
        cids: Vec::new(),
    };
    let dir = crate::unixfs::dir::build_directory(&shared.import, entries, &mut sink)
        .with_context(|| format!("building the directory of {session:?}"))?;
    let blocks = sink.cids;
    writer
        .finish(&dir.cid, PinMode::Direct)
        .with_context(|| format!("storing the directory of {session:?}"))?;
    // A HAMT's inner shards are pinned one by one: a recursive pin would walk into stills
    // this node has freed.
    for c in &blocks {
        shared.blocks.pin(c, PinMode::Direct)?;
    }
    // The earlier round's directory is superseded by this one (here; on the cluster only once
    // this one is confirmed).
    if let Some(p) = &previous {
        unpin_blocks(shared, &p.blocks, &blocks)?;
    }
    let pin = SessionPin {
        cid: dir.cid.to_string(),
        blocks: blocks.iter().map(Cid::to_string).collect(),
        images: covered,
        state: RoundState::Queued,
        replicas: 0,
        since: session::unix_now(),
        error: None,
        replaces: previous
            .filter(|p| p.state == RoundState::Pinned && p.cid != dir.cid.to_string())
            .map(|p| p.cid),
    };
    shared.sessions.start_round(session, &pin)?;
    shared.node.notify_new_blocks(blocks);
    Ok(Some(Some(pin)))
}

/// Drops this node's direct pins of a directory's `blocks`, but those in `keep`.
fn unpin_blocks(shared: &Shared, blocks: &[String], keep: &[Cid]) -> Result<()> {
    for c in blocks.iter().filter_map(|c| c.parse::<Cid>().ok()) {
        if keep.contains(&c) {
            continue;
        }
        match shared.blocks.unpin(&c) {
            Ok(_) | Err(blockstore::Error::NotPinned(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("unpinning {c}")),
        }
    }
    Ok(())
}

/// A DAG's cumulative size from its root block: the block plus its links' sizes.
fn dag_size(store: &impl BlockSource, cid: &Cid) -> Result<u64> {
    let data = store.get(cid)?;
    if cid.codec() != crate::block::DAG_PB {
        return Ok(data.len() as u64);
    }
    let node = crate::unixfs::pb::PbNode::decode(&data)?;
    Ok(node.links.iter().map(|l| l.tsize.unwrap_or(0)).sum::<u64>() + data.len() as u64)
}

async fn post(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    session: &str,
    pin: &SessionPin,
) -> Result<(), Stop> {
    let origins = origins(shared).await;
    let cid: Cid = pin
        .cid
        .parse()
        .with_context(|| format!("recorded directory CID {:?} is unreadable", pin.cid))?;
    let opts = PinOptions::from_config(cfg)
        .with_name(session.to_string())
        .with_meta("session", session.to_string())
        .with_origins(origins.iter().cloned());
    let s2 = session.to_string();
    match client.pin(&cid, &opts).await {
        Ok(_) => {
            blocking(shared, move |s| Ok(s.sessions.round_pinning(&s2)?)).await?;
            tracing::info!(%session, %cid, "cluster accepted the session's directory");
            shared.emit(Event::new(EventKind::Pinning, session).cid(&pin.cid));
        }
        Err(e) if e.is_transient() => {
            let m = e.to_string();
            blocking(shared, move |s| {
                Ok(s.sessions.round_progress(&s2, Some(&m), None)?)
            })
            .await?;
            shared.mark_dirty(session);
            return Err(Stop::Transient(e.to_string()));
        }
        Err(e) => {
            tracing::warn!(%session, "cluster refused the session's directory: {e}");
            let m = e.to_string();
            blocking(shared, move |s| Ok(s.sessions.round_failed(&s2, &m)?)).await?;
            shared.emit(
                Event::new(EventKind::Failed, session)
                    .cid(&pin.cid)
                    .error(&e.to_string()),
            );
        }
    }
    shared.mark_dirty(session);
    Ok(())
}

/// Checks a pinning round; returns whether it is confirmed.
async fn poll(
    shared: &Arc<Shared>,
    client: &ClusterClient,
    cfg: &ClusterConfig,
    addrs: &mut Vec<Multiaddr>,
    session: &str,
    pin: &SessionPin,
) -> Result<bool, Stop> {
    let Ok(cid) = pin.cid.parse::<Cid>() else {
        return Ok(false);
    };
    let status = match client.status(&cid).await {
        Ok(s) => s,
        Err(e) if e.is_transient() => return Err(Stop::Transient(e.to_string())),
        Err(e) => {
            let (s2, m) = (session.to_string(), e.to_string());
            blocking(shared, move |s| {
                Ok(s.sessions.round_progress(&s2, Some(&m), None)?)
            })
            .await?;
            return Ok(false);
        }
    };
    for a in status.ipfs_addresses() {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    let count = status.pinned_count();
    let replicas = u32::try_from(count).unwrap_or(u32::MAX);
    if count < needed(cfg, &status) {
        if replicas != pin.replicas {
            let s2 = session.to_string();
            blocking(shared, move |s| {
                Ok(s.sessions.round_progress(&s2, None, Some(replicas))?)
            })
            .await?;
            shared.emit(
                Event::new(EventKind::Replicas, session)
                    .cid(&pin.cid)
                    .replicas(replicas),
            );
            shared.mark_dirty(session);
        }
        return Ok(false);
    }
    // The new directory lists every still of the old one: the old pin can go, first from the
    // cluster (so a crash here repeats it), then here.
    if let Some(old) = pin.replaces.as_deref().and_then(|c| c.parse::<Cid>().ok()) {
        match client.unpin(&old).await {
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(Stop::Transient(e.to_string())),
            Err(e) => {
                tracing::warn!(%session, %old, "cluster unpin of the replaced directory: {e}")
            }
        }
    }
    let free = shared.cfg.delete_after_pin;
    let s2 = session.to_string();
    let done = blocking(shared, move |s| {
        let done = s.sessions.round_pinned(&s2, replicas, free)?;
        Ok(done)
    })
    .await?;
    tracing::info!(%session, %cid, replicas, "session directory pinned by the cluster");
    shared.emit(
        Event::new(EventKind::Pinned, session)
            .cid(&pin.cid)
            .replicas(replicas),
    );
    if free {
        // The stills go through the usual free step; the directory's own blocks go here.
        let blocks = done.blocks.clone();
        blocking(shared, move |s| unpin_blocks(s, &blocks, &[])).await?;
    }
    shared.mark_dirty(session);
    Ok(true)
}
