//! The capture pipeline: stills -> import -> blockstore (pinned locally) -> outbox -> cluster
//! pin -> confirm replicas -> free the local copy, with every step recorded in the
//! [`SessionStore`] before the next starts.
//!
//! Three tasks share the store:
//! - ingest: scans the captures folder ([`ingest::Scanner`]), imports each settled still on the
//!   blocking pool, records it (and queues it for the cluster) in one transaction, and tells
//!   the node about the new blocks so peers waiting for them get them at once;
//! - cluster ([`cluster`]): hands the outbox to IPFS Cluster, keeps the cluster's IPFS daemons
//!   connected (always: once the Pi freed a still they are where it is fetched back from),
//!   polls them until `replication_min` peers hold each image, then frees the local file and
//!   blocks;
//! - metadata: rewrites the `session_metadata.json` of sessions that changed, at most once a
//!   second each.

mod cluster;
pub mod events;
mod import;
pub mod ingest;
mod rounds;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::blockstore::FsBlockstore;
use crate::cluster::{ClusterClient, ClusterConfig};
use crate::node::Node;
use crate::session::{self, IpfsInfo, SessionRecord, SessionStore};
use crate::unixfs::ImportOptions;

/// Folder of the repo that holds CARs being uploaded.
const UPLOADS_DIR: &str = "uploads";

/// `[pipeline]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Import stills at all (the seed's `IPFS_ENABLED`). Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The folder WANDA writes `<session>/image_NNNN.jpg` into, watched by the daemon. Empty:
    /// none. Env `WANDA_CAPTURES_DIR`, flag `daemon --watch DIR`.
    #[serde(default)]
    pub captures_dir: String,
    /// Milliseconds a still's size and time must stay unchanged before it is imported.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Milliseconds between scans of the folder and between cluster status polls.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Delete the local still and its blocks once the cluster confirms replication_min
    /// replicas (the seed's `IPFS_DELETE_AFTER_PIN`). Default true: the Pi's card is small.
    #[serde(default = "yes")]
    pub delete_after_pin: bool,
    /// What the cluster is asked to pin: `image`, each still as soon as it is imported (the
    /// default, the seed's option A), or `session`, one directory of a session's stills once
    /// the session is complete (option B).
    #[serde(default)]
    pub pin_policy: PinPolicy,
    /// With `pin_policy = "session"`: seconds without a new still after which a session counts
    /// as complete. Default 300.
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
}

/// `[pipeline] pin_policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinPolicy {
    #[default]
    Image,
    Session,
}

fn yes() -> bool {
    true
}
fn default_settle_ms() -> u64 {
    1000
}
fn default_poll_ms() -> u64 {
    500
}
fn default_session_idle_secs() -> u64 {
    300
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            enabled: true,
            captures_dir: String::new(),
            settle_ms: default_settle_ms(),
            poll_ms: default_poll_ms(),
            delete_after_pin: true,
            pin_policy: PinPolicy::Image,
            session_idle_secs: default_session_idle_secs(),
        }
    }
}

impl PipelineConfig {
    pub fn captures_dir(&self) -> Option<PathBuf> {
        (!self.captures_dir.trim().is_empty()).then(|| PathBuf::from(&self.captures_dir))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.poll_ms == 0 {
            return Err("pipeline: poll_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// What the tasks share.
pub(crate) struct Shared {
    pub(crate) node: Node,
    pub(crate) blocks: FsBlockstore,
    pub(crate) sessions: SessionStore,
    pub(crate) import: ImportOptions,
    pub(crate) cfg: PipelineConfig,
    pub(crate) cluster: Option<(ClusterClient, ClusterConfig)>,
    /// Sessions whose metadata file is to be rewritten.
    dirty: Mutex<BTreeSet<String>>,
    /// Wakes the cluster task when the outbox grows.
    pub(crate) outbox_grew: Notify,
    /// With whole-session pins: sessions with stills no round covers yet, and when the last
    /// of them was imported.
    idle_since: Mutex<std::collections::HashMap<String, Instant>>,
    /// Live views' feed.
    pub(crate) events: events::Events,
    /// Where CARs for `POST /add` are written (`<repo>/uploads`): on the card, not in a
    /// RAM-backed /tmp.
    uploads: PathBuf,
}

impl Shared {
    pub(crate) fn mark_dirty(&self, session: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.to_string());
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_ms)
    }

    fn ipfs_info(&self, session: &str) -> IpfsInfo {
        ipfs_info(
            &self.sessions,
            &self.cfg,
            self.cluster.as_ref().map(|(_, c)| c),
            session,
        )
    }

    /// Whether stills go to the cluster one by one (as opposed to a session at a time).
    pub(crate) fn per_image(&self) -> bool {
        self.cfg.pin_policy == PinPolicy::Image
    }

    pub(crate) fn emit(&self, e: events::Event) {
        self.events.emit(e);
    }

    /// A still of `session` was imported for a later whole-session round.
    pub(crate) fn note_for_round(&self, session: &str) {
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.to_string(), Instant::now());
    }
}

/// A session's `ipfs` object: whether the pipeline runs, the cluster's URL, and with
/// whole-session pins the session directory and whether it is pinned.
pub fn ipfs_info(
    sessions: &SessionStore,
    cfg: &PipelineConfig,
    cluster: Option<&ClusterConfig>,
    session: &str,
) -> IpfsInfo {
    let directory = match sessions.session_pin(session) {
        Ok(Some(p)) => Some((p.cid, p.state == session::RoundState::Pinned)),
        _ => None,
    };
    IpfsInfo {
        enabled: cfg.enabled,
        cluster: cluster.and_then(|c| c.api.clone()),
        directory,
    }
}

/// The running pipeline's tasks.
#[derive(Debug)]
pub struct Pipeline {
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the pipeline's tasks; they end when `stop` turns true.
    pub fn spawn(
        node: Node,
        sessions: SessionStore,
        import: ImportOptions,
        cfg: PipelineConfig,
        cluster: Option<(ClusterClient, ClusterConfig)>,
        events: events::Events,
        stop: watch::Receiver<bool>,
    ) -> Pipeline {
        let uploads = sessions
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(UPLOADS_DIR);
        // Left by a crash mid-upload; each is made again when needed.
        let _ = std::fs::remove_dir_all(&uploads);
        let shared = Arc::new(Shared {
            uploads,
            idle_since: Mutex::new(std::collections::HashMap::new()),
            blocks: node.store().clone(),
            node,
            sessions,
            import,
            cfg,
            cluster,
            dirty: Mutex::new(BTreeSet::new()),
            outbox_grew: Notify::new(),
            events,
        });
        let mut tasks = Vec::new();
        if shared.cfg.enabled {
            if let Some(root) = shared.cfg.captures_dir() {
                tasks.push(tokio::spawn(ingest_task(
                    shared.clone(),
                    root,
                    stop.clone(),
                )));
            }
        }
        if shared.cluster.is_some() {
            tasks.push(tokio::spawn(cluster::run(shared.clone(), stop.clone())));
        }
        tasks.push(tokio::spawn(metadata_task(shared, stop)));
        Pipeline { tasks }
    }

    /// Waits for every task to end (after `stop`).
    pub async fn join(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "a pipeline task failed");
            }
        }
    }
}

/// Sleeps `d`, or less if `stop` turns true; returns whether to stop.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        () = tokio::time::sleep(d) => false,
    };
    stopped || *stop.borrow()
}

async fn ingest_task(shared: Arc<Shared>, root: PathBuf, mut stop: watch::Receiver<bool>) {
    tracing::info!(folder = %root.display(), "watching for captures");
    let mut scanner = ingest::Scanner::new(root, Duration::from_millis(shared.cfg.settle_ms));
    loop {
        let s = shared.clone();
        let (sc, result) = match tokio::task::spawn_blocking(move || {
            let result = ingest_once(&s, &mut scanner);
            (scanner, result)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "the ingest task panicked; ingest stops");
                return;
            }
        };
        scanner = sc;
        let more = match result {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!("{e:#}");
                false
            }
        };
        if *stop.borrow() || (!more && pause(&mut stop, shared.poll()).await) {
            return;
        }
    }
}

/// One scan and the imports it finds ready; returns how many were imported.
fn ingest_once(shared: &Shared, scanner: &mut ingest::Scanner) -> anyhow::Result<usize> {
    use anyhow::Context;
    let ready = scanner
        .scan(Instant::now(), |s, n| {
            matches!(shared.sessions.image(s, n), Ok(Some(_)))
        })
        .with_context(|| format!("scanning {}", scanner.root().display()))?;
    let mut imported = 0;
    for r in ready {
        let session = shared
            .sessions
            .add_session(SessionRecord {
                name: r.session.clone(),
                created: session::now_rfc3339(),
                dir: r.dir.clone(),
            })
            .context("recording a session")?;
        match import::import_image(shared, &session, &r) {
            Ok(()) => {
                scanner.mark_done(&r.session, r.number);
                imported += 1;
            }
            // A still that cannot be read now may be readable later; the others go on.
            Err(e) => tracing::warn!(path = %r.path.display(), "import failed: {e:#}"),
        }
    }
    Ok(imported)
}

async fn metadata_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = pause(&mut stop, Duration::from_secs(1)).await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || write_dirty(&s)).await;
        if stopping {
            return;
        }
    }
}

/// Rewrites the metadata of every dirty session; a session that fails stays dirty.
fn write_dirty(shared: &Shared) {
    let dirty = std::mem::take(
        &mut *shared
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for name in dirty {
        let ipfs = shared.ipfs_info(&name);
        let result = shared
            .sessions
            .session(&name)
            .map_err(|e| e.to_string())
            .and_then(|s| s.ok_or_else(|| "no such session".to_string()))
            .and_then(|s| {
                let images = shared.sessions.images(&name).map_err(|e| e.to_string())?;
                session::write_metadata(&s, &ipfs, &images).map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(session = %name, "session metadata not written: {e}");
            shared.mark_dirty(&name);
        }
    }
}
