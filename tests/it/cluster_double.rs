//! `ClusterDouble`: a test double of the IPFS Cluster REST API of ipfs-cluster v1.1.6, whose
//! cluster peers are real Kubo nodes ([`KuboPeer`]).
//!
//! Why a double: `ipfs-cluster-service` cannot be installed from any registry these machines
//! reach. So this answers as v1.1.6's REST API does, per shared/cluster-api.md and its source
//! (api/common/api.go, api/rest/restapi.go, api/types.go, cluster.go, allocate.go): the routes,
//! status codes and `{"code","message"}` error bodies, the 307 for a trailing `/`, Basic auth with
//! its 401 bodies and `WWW-Authenticate` headers (`GET /health` without auth), NDJSON streams with
//! `Trailer: X-Stream-Error` and 204 when empty, the allocation rules and their
//! "not enough peers to allocate" message, and `GlobalPinInfo` with every peer's IPFS id and
//! addresses. What makes a pin real is real: each allocated Kubo dials up to 10 origins
//! (ignoring failures, as the cluster does) and then pins, fetching the DAG over bitswap; its
//! status goes `pin_queued` -> `pinning` -> `pinned` or `pin_error`.
//!
//! Not modelled: consensus (one process holds the state), the cluster's own libp2p host (its
//! `addresses` are placeholders nobody listens on), JWT (`require_bearer` takes one literal
//! token), sharding, `pin/update`, expiry, recover, and the real server's double answer when a
//! pin option does not parse (it sends a 400 and then pins anyway; this sends the 400 only).
//! `POST /add?format=car` exports the CAR's file and lets each allocated Kubo `add` it, so it
//! only places CARs of files built with Kubo's default options (their root must come out the same).
//!
//! Test controls: `go_down`/`come_up` (connection refused, same port after), `fail_next` (garbage,
//! an error status, or a delay, for the next N requests), `stream_error_next`,
//! `require_basic_auth`, `require_bearer`, `set_follower`, `set_peer_online`. Traffic stays on
//! 127.0.0.1; every wait has a deadline.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cid::Cid;
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{json, Value};

use crate::kubo::KuboPeer;

/// The version the double claims.
pub(crate) const VERSION: &str = "1.1.6";
const RPC_PROTOCOL: &str = "/ipfscluster/1.0/rpc";
const REALM: &str = "Restricted IPFS Cluster API";
/// The cluster dials at most this many origins (ipfshttp.go).
const MAX_ORIGINS: usize = 10;
/// Per origin dial.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Jobs waiting for one peer's Kubo.
const QUEUE: usize = 256;
/// Uploads to `POST /add`.
const MAX_UPLOAD: usize = 64 << 20;
/// Requests remembered for `requests()`.
const LOG_KEEP: usize = 256;
/// How often an idle worker looks at the closing flag.
const WORKER_POLL: Duration = Duration::from_millis(100);
/// Rebinding the port after `go_down`.
const REBIND_TRIES: u32 = 100;
/// Of a TLS handshake, so that one stuck client cannot stall the accept loop.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Zero time, as Go writes it.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What the double does instead of answering, for the next requests.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// 200 with an HTML page: a captive portal, a proxy, the wrong port.
    Garbage,
    /// `{"code": status, "message": msg}` with that status.
    Status(u16, String),
    /// Waits this long, then answers normally.
    Delay(Duration),
}

/// Options of [`ClusterDouble::start_with`].
#[derive(Debug, Clone)]
pub(crate) struct DoubleOptions {
    /// Of each Kubo `pin` (the cluster's `pin_timeout`, 2 min, counts from the last block).
    pub(crate) pin_timeout: Duration,
    /// Serve HTTPS with a fresh self-signed certificate for 127.0.0.1.
    pub(crate) tls: bool,
    /// The cluster's IPFS daemons and wanda-ipfs cannot reach each other over the swarm (a
    /// firewall between them): no IPFS addresses are published and origins are not dialed.
    pub(crate) swarm_unreachable: bool,
}

impl Default for DoubleOptions {
    fn default() -> Self {
        DoubleOptions {
            pin_timeout: Duration::from_secs(120),
            tls: false,
            swarm_unreachable: false,
        }
    }
}

/// A running double. Dropping it stops the server and the Kubo peers.
pub(crate) struct ClusterDouble {
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
    workers: Vec<thread::JoinHandle<()>>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

struct Peer {
    cluster_id: String,
    name: String,
    ipfs_id: String,
    /// As Kubo reported them at start, each ending in /p2p/<ipfs id>.
    ipfs_addrs: Vec<String>,
    cluster_addr: String,
    kubo: Mutex<KuboPeer>,
    kubo_pid: u32,
    jobs: SyncSender<Job>,
    online: AtomicBool,
}

enum Job {
    Pin {
        cid: String,
        origins: Vec<String>,
        epoch: u64,
    },
    Unpin {
        cid: String,
    },
    /// `ipfs add` of the file a CAR holds; the CID Kubo got goes back on `done`.
    AddFile {
        path: PathBuf,
        done: SyncSender<(usize, Result<String, String>)>,
    },
}

struct PeerPin {
    status: &'static str,
    error: String,
    timestamp: String,
    attempts: u32,
}

struct PinEntry {
    name: String,
    rmin: i32,
    rmax: i32,
    allocations: Vec<usize>,
    origins: Vec<String>,
    metadata: BTreeMap<String, String>,
    timestamp: String,
    epoch: u64,
    per_peer: BTreeMap<usize, PeerPin>,
}

#[derive(Default)]
struct PinState {
    pins: BTreeMap<String, PinEntry>,
    epoch: u64,
}

enum Auth {
    Basic(String, String),
    Bearer(String),
}

struct Shared {
    peers: Vec<Peer>,
    state: Mutex<PinState>,
    faults: Mutex<VecDeque<Fault>>,
    stream_errors: Mutex<VecDeque<String>>,
    auth: Mutex<Option<Auth>>,
    follower: AtomicBool,
    closing: AtomicBool,
    log: Mutex<VecDeque<String>>,
    /// `POST /pins/<cid>` requests by CID, all of them (the log keeps only the last ones).
    pin_posts: Mutex<BTreeMap<String, usize>>,
    /// `POST /add` requests, all of them.
    add_posts: std::sync::atomic::AtomicUsize,
    pin_timeout: Duration,
    swarm_unreachable: bool,
    work: tempfile::TempDir,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClusterDouble {
    /// A double whose cluster peers are `kubos` (peer 0 is the one behind the API).
    pub(crate) fn start(kubos: Vec<KuboPeer>) -> ClusterDouble {
        ClusterDouble::start_with(kubos, DoubleOptions::default())
    }

    pub(crate) fn start_with(kubos: Vec<KuboPeer>, opts: DoubleOptions) -> ClusterDouble {
        assert!(!kubos.is_empty(), "a cluster has at least one peer");
        let mut receivers = Vec::new();
        let peers: Vec<Peer> = kubos
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                let (tx, rx) = sync_channel(QUEUE);
                receivers.push(rx);
                let cluster_id = libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
                    .to_string();
                Peer {
                    cluster_addr: format!("/ip4/127.0.0.1/tcp/{}/p2p/{cluster_id}", 9096 + i),
                    cluster_id,
                    name: format!("double-peer-{i}"),
                    ipfs_id: k.id().to_string(),
                    ipfs_addrs: if opts.swarm_unreachable {
                        Vec::new()
                    } else {
                        k.addrs().to_vec()
                    },
                    kubo_pid: k.pid(),
                    kubo: Mutex::new(k),
                    jobs: tx,
                    online: AtomicBool::new(true),
                }
            })
            .collect();
        // A real cluster's IPFS daemons are peered with each other (its docs ask for it), so a
        // replica that starts late fetches from the replicas already made, not only from the
        // pin's origin.
        let addrs: Vec<Vec<String>> = peers
            .iter()
            .map(|p| lock(&p.kubo).addrs().to_vec())
            .collect();
        for (i, p) in peers.iter().enumerate() {
            for (j, a) in addrs.iter().enumerate() {
                if let (true, Some(a)) = (i != j, a.iter().find(|a| a.contains("/tcp/"))) {
                    if let Err(e) = lock(&p.kubo).connect(a, CONNECT_TIMEOUT) {
                        eprintln!("cluster double: peering {i} -> {j}: {e}");
                    }
                }
            }
        }
        let shared = Arc::new(Shared {
            peers,
            state: Mutex::new(PinState::default()),
            faults: Mutex::new(VecDeque::new()),
            stream_errors: Mutex::new(VecDeque::new()),
            auth: Mutex::new(None),
            follower: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            log: Mutex::new(VecDeque::new()),
            pin_posts: Mutex::new(BTreeMap::new()),
            pin_timeout: opts.pin_timeout,
            swarm_unreachable: opts.swarm_unreachable,
            add_posts: std::sync::atomic::AtomicUsize::new(0),
            work: crate::util::tempdir("cluster-double"),
        });
        let workers = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let s = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("cluster-double-peer-{i}"))
                    .spawn(move || worker(s, i, rx))
                    .expect("spawn worker")
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let tls = opts.tls.then(self_signed_config);
        let mut d = ClusterDouble {
            rt: Some(rt),
            shared,
            addr,
            server: None,
            workers,
            tls,
        };
        d.serve(listener);
        d
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime until drop")
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = router(Arc::clone(&self.shared));
        let task = match &self.tls {
            None => self.rt().spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("cluster double: server ended: {e}");
                }
            }),
            Some(cfg) => {
                let l = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(cfg)),
                };
                self.rt().spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        eprintln!("cluster double: server ended: {e}");
                    }
                })
            }
        };
        self.server = Some(task);
    }

    /// The API URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `[cluster]` pointing at this double, otherwise the defaults.
    pub(crate) fn config(&self) -> wanda_ipfs::cluster::ClusterConfig {
        wanda_ipfs::cluster::ClusterConfig {
            api: Some(self.url()),
            ..Default::default()
        }
    }

    pub(crate) fn peer_count(&self) -> usize {
        self.shared.peers.len()
    }

    pub(crate) fn cluster_id(&self, i: usize) -> String {
        self.shared.peers[i].cluster_id.clone()
    }

    pub(crate) fn ipfs_id(&self, i: usize) -> String {
        self.shared.peers[i].ipfs_id.clone()
    }

    pub(crate) fn ipfs_addrs(&self, i: usize) -> Vec<String> {
        self.shared.peers[i].ipfs_addrs.clone()
    }

    /// Runs `f` on peer `i`'s Kubo (waits while a pin job holds it).
    pub(crate) fn with_kubo<R>(&self, i: usize, f: impl FnOnce(&mut KuboPeer) -> R) -> R {
        f(&mut lock(&self.shared.peers[i].kubo))
    }

    /// An offline peer is no allocation candidate, shows `cluster_error` where allocated, and an
    /// error in `/peers`, as a peer whose ping metric expired does.
    pub(crate) fn set_peer_online(&self, i: usize, online: bool) {
        self.shared.peers[i].online.store(online, Ordering::SeqCst);
    }

    /// The next `n` requests get `fault` (before auth, as a proxy or the network would).
    pub(crate) fn fail_next(&self, n: usize, fault: Fault) {
        let mut q = lock(&self.shared.faults);
        q.extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` streamed answers end with `X-Stream-Error: msg`.
    pub(crate) fn stream_error_next(&self, n: usize, msg: &str) {
        let mut q = lock(&self.shared.stream_errors);
        q.extend(std::iter::repeat_n(msg.to_string(), n));
    }

    pub(crate) fn require_basic_auth(&self, user: &str, password: &str) {
        *lock(&self.shared.auth) = Some(Auth::Basic(user.into(), password.into()));
    }

    /// Accepts `Authorization: Bearer <token>` for this literal token (no JWT here).
    pub(crate) fn require_bearer(&self, token: &str) {
        *lock(&self.shared.auth) = Some(Auth::Bearer(token.into()));
    }

    pub(crate) fn set_follower(&self, follower: bool) {
        self.shared.follower.store(follower, Ordering::SeqCst);
    }

    /// How many `POST /pins/<cid>` each CID received.
    pub(crate) fn pin_posts(&self) -> BTreeMap<String, usize> {
        lock(&self.shared.pin_posts).clone()
    }

    /// `METHOD path?query` of the requests seen, oldest first (the last 256).
    pub(crate) fn add_posts(&self) -> usize {
        self.shared.add_posts.load(Ordering::Relaxed)
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Stops listening: new connections are refused until [`ClusterDouble::come_up`].
    pub(crate) fn go_down(&mut self) {
        if let Some(task) = self.server.take() {
            task.abort();
            // The listener is dropped when the aborted task is.
            let _ = self.rt().block_on(task);
        }
    }

    /// Listens again on the same port.
    pub(crate) fn come_up(&mut self) {
        assert!(self.server.is_none(), "already up");
        let addr = self.addr;
        let mut tries = 0;
        let listener = loop {
            match self.rt().block_on(tokio::net::TcpListener::bind(addr)) {
                Ok(l) => break l,
                Err(e) if tries < REBIND_TRIES => {
                    tries += 1;
                    eprintln!("cluster double: rebind {addr}: {e}; retrying");
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cluster double: cannot rebind {addr}: {e}"),
            }
        };
        self.serve(listener);
    }

    /// Peer `i`'s tracker status for `cid`, as the double holds it (None: not allocated/pinned).
    pub(crate) fn peer_status(&self, cid: &str, i: usize) -> Option<String> {
        let st = lock(&self.shared.state);
        st.pins
            .get(cid)
            .and_then(|p| p.per_peer.get(&i))
            .map(|p| p.status.to_string())
    }
}

impl Drop for ClusterDouble {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(t) = self.server.take() {
            t.abort();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        // A worker may be inside a Kubo call of up to `pin_timeout`: end our Kubo children now
        // (by PID; KuboPeer's Drop reaps them, so the PIDs cannot have been reused), which makes
        // those calls return at once.
        for p in &self.shared.peers {
            unsafe { libc::kill(p.kubo_pid as libc::pid_t, libc::SIGKILL) };
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

// ---- the peers' pin trackers ---------------------------------------------------------------------

fn worker(s: Arc<Shared>, i: usize, rx: Receiver<Job>) {
    while !s.closing.load(Ordering::SeqCst) {
        let job = match rx.recv_timeout(WORKER_POLL) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let peer = &s.peers[i];
        match job {
            Job::Pin {
                cid,
                origins,
                epoch,
            } => {
                if !s.set_status(&cid, i, epoch, "pinning", String::new()) {
                    continue;
                }
                let mut k = lock(&peer.kubo);
                let reach = if s.swarm_unreachable { 0 } else { MAX_ORIGINS };
                for o in origins.iter().take(reach) {
                    // As the cluster: in the background, ignoring failures.
                    if let Err(e) = k.connect(o, CONNECT_TIMEOUT) {
                        eprintln!("cluster double: peer {i}: connect {o}: {e}");
                    }
                }
                let r = k.pin(&cid, s.pin_timeout);
                drop(k);
                match r {
                    Ok(()) => s.set_status(&cid, i, epoch, "pinned", String::new()),
                    Err(e) => s.set_status(&cid, i, epoch, "pin_error", e),
                };
            }
            Job::Unpin { cid } => {
                if let Err(e) = lock(&peer.kubo).unpin(&cid) {
                    eprintln!("cluster double: peer {i}: unpin {cid}: {e}");
                }
            }
            Job::AddFile { path, done } => {
                let r = lock(&peer.kubo).add(&path, false);
                let _ = done.send((i, r));
            }
        }
    }
}

impl Shared {
    /// Sets peer `i`'s status for `cid` if the pin is still the one the job was for.
    fn set_status(
        &self,
        cid: &str,
        i: usize,
        epoch: u64,
        status: &'static str,
        error: String,
    ) -> bool {
        let mut st = lock(&self.state);
        let Some(p) = st.pins.get_mut(cid).filter(|p| p.epoch == epoch) else {
            return false;
        };
        let Some(pp) = p.per_peer.get_mut(&i) else {
            return false;
        };
        if status == "pin_error" {
            pp.attempts += 1;
        }
        pp.status = status;
        pp.error = error;
        pp.timestamp = now();
        true
    }

    fn online(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].online.load(Ordering::SeqCst))
            .collect()
    }

    /// allocate.go: keep current valid allocations, add candidates up to max, fail under min.
    fn allocate(&self, current: &[usize], rmin: i32, rmax: i32) -> Result<Vec<usize>, String> {
        if rmin + rmax == 0 {
            return Err(format!("bad replication factors: {rmin}/{rmax}"));
        }
        if rmin < 0 && rmax < 0 {
            return Ok(Vec::new()); // everywhere
        }
        let online = self.online();
        let current: Vec<usize> = current
            .iter()
            .copied()
            .filter(|i| online.contains(i))
            .collect();
        let needed = rmin - current.len() as i32;
        let wanted = rmax - current.len() as i32;
        if wanted < 0 {
            return Ok(current[..(current.len() as i32 + wanted) as usize].to_vec());
        }
        if needed <= 0 {
            return Ok(current);
        }
        let candidates: Vec<usize> = online
            .into_iter()
            .filter(|i| !current.contains(i))
            .collect();
        if (candidates.len() as i32) < needed {
            return Err(format!(
                "not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: \
                 {wanted}. Available candidates: {}. See logs for more info.",
                candidates.len()
            ));
        }
        let take = (wanted as usize).min(candidates.len());
        Ok(current
            .into_iter()
            .chain(candidates.into_iter().take(take))
            .collect())
    }

    fn pin_object(&self, cid: &str, p: &PinEntry) -> Value {
        json!({
            "replication_factor_min": p.rmin,
            "replication_factor_max": p.rmax,
            "name": p.name,
            "mode": "recursive",
            "shard_size": 0,
            "user_allocations": null,
            "expire_at": ZERO_TIME,
            "metadata": p.metadata,
            "pin_update": null,
            "origins": if p.origins.is_empty() { Value::Null } else { json!(p.origins) },
            "cid": cid,
            "type": "pin",
            "allocations": p.allocations.iter().map(|&i| self.peers[i].cluster_id.clone()).collect::<Vec<_>>(),
            "max_depth": -1,
            "reference": null,
            "timestamp": p.timestamp,
        })
    }

    fn pin_info(&self, i: usize, status: &str, error: &str, ts: &str, attempts: u32) -> Value {
        let p = &self.peers[i];
        let mut v = json!({
            "peername": p.name,
            "ipfs_peer_id": p.ipfs_id,
            "status": status,
            "timestamp": ts,
            "error": error,
            "attempt_count": attempts,
            "priority_pin": false,
        });
        // omitempty in PinInfoShort.
        if !p.ipfs_addrs.is_empty() {
            v["ipfs_peer_addresses"] = json!(p.ipfs_addrs);
        }
        v
    }

    /// cluster.go globalPinInfoCid.
    fn global_pin_info(&self, cid: &str) -> Value {
        let st = lock(&self.state);
        let now = now();
        let mut map = serde_json::Map::new();
        let Some(p) = st.pins.get(cid) else {
            for (i, peer) in self.peers.iter().enumerate() {
                map.insert(
                    peer.cluster_id.clone(),
                    self.pin_info(i, "unpinned", "", &now, 0),
                );
            }
            return json!({"cid": cid, "name": "", "allocations": null, "origins": null,
                "created": ZERO_TIME, "metadata": null, "peer_map": map});
        };
        let everywhere = p.allocations.is_empty();
        for (i, peer) in self.peers.iter().enumerate() {
            let info = if !everywhere && !p.allocations.contains(&i) {
                self.pin_info(i, "remote", "", &now, 0)
            } else if !peer.online.load(Ordering::SeqCst) {
                self.pin_info(i, "cluster_error", "dial backoff", &now, 0)
            } else {
                match p.per_peer.get(&i) {
                    Some(pp) => self.pin_info(i, pp.status, &pp.error, &pp.timestamp, pp.attempts),
                    None => self.pin_info(i, "pin_queued", "", &now, 0),
                }
            };
            map.insert(peer.cluster_id.clone(), info);
        }
        json!({
            "cid": cid,
            "name": p.name,
            "allocations": p.allocations.iter().map(|&i| self.peers[i].cluster_id.clone()).collect::<Vec<_>>(),
            "origins": if p.origins.is_empty() { Value::Null } else { json!(p.origins) },
            "created": p.timestamp,
            "metadata": p.metadata,
            "peer_map": map,
        })
    }

    /// types.go ID, of peer `i`; an offline peer as the cluster reports one it cannot reach.
    fn id_object(&self, i: usize) -> Value {
        let p = &self.peers[i];
        if !p.online.load(Ordering::SeqCst) {
            return json!({"id": p.cluster_id, "addresses": null, "cluster_peers": null,
                "cluster_peers_addresses": null, "version": "", "commit": "",
                "rpc_protocol_version": "", "error": "dial backoff",
                "ipfs": {"addresses": null, "error": ""}, "peername": ""});
        }
        json!({
            "id": p.cluster_id,
            "addresses": [p.cluster_addr],
            "cluster_peers": self.peers.iter().map(|q| q.cluster_id.clone()).collect::<Vec<_>>(),
            "cluster_peers_addresses": self.peers.iter().enumerate().filter(|&(j, _)| j != i)
                .map(|(_, q)| q.cluster_addr.clone()).collect::<Vec<_>>(),
            "version": VERSION,
            "commit": "",
            "rpc_protocol_version": RPC_PROTOCOL,
            "error": "",
            "ipfs": {"id": p.ipfs_id, "addresses": p.ipfs_addrs, "error": ""},
            "peername": p.name,
        })
    }

    /// Records the pin and queues the peers' work. Returns the Pin object.
    fn commit_pin(&self, cid: &str, opts: PinOpts, allocations: Vec<usize>) -> Value {
        let mut st = lock(&self.state);
        st.epoch += 1;
        let epoch = st.epoch;
        let targets: Vec<usize> = if allocations.is_empty() {
            (0..self.peers.len()).collect()
        } else {
            allocations.clone()
        };
        let ts = now();
        let per_peer = targets
            .iter()
            .map(|&i| {
                (
                    i,
                    PeerPin {
                        status: "pin_queued",
                        error: String::new(),
                        timestamp: ts.clone(),
                        attempts: 0,
                    },
                )
            })
            .collect();
        let entry = PinEntry {
            name: opts.name,
            rmin: opts.rmin,
            rmax: opts.rmax,
            allocations,
            origins: opts.origins,
            metadata: opts.metadata,
            timestamp: ts,
            epoch,
            per_peer,
        };
        let obj = self.pin_object(cid, &entry);
        let origins = entry.origins.clone();
        st.pins.insert(cid.to_string(), entry);
        drop(st);
        for i in targets {
            let job = Job::Pin {
                cid: cid.to_string(),
                origins: origins.clone(),
                epoch,
            };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.peers[i].jobs.try_send(job)
            {
                self.set_status(cid, i, epoch, "pin_error", "pinning queue full".into());
            }
        }
        obj
    }
}

// ---- HTTP ----------------------------------------------------------------------------------------

fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/id", get(id_handler))
        .route(
            "/version",
            get(|| async { json_response(StatusCode::OK, &json!({"version": VERSION})) }),
        )
        .route("/peers", get(peers_handler))
        .route("/health", get(|| async { no_content() }))
        .route(
            "/pins/{cid}",
            get(status_handler).post(pin_handler).delete(unpin_handler),
        )
        .route("/add", post(add_handler))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&s), front))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(s)
}

/// Test faults, then api.go's authHandler and strictSlashHandler, in that order.
async fn front(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    {
        let mut log = lock(&s.log);
        if log.len() == LOG_KEEP {
            log.pop_front();
        }
        log.push_back(format!("{} {}", req.method(), req.uri()));
        if req.method() == axum::http::Method::POST {
            if let Some(cid) = req.uri().path().strip_prefix("/pins/") {
                *lock(&s.pin_posts).entry(cid.to_string()).or_default() += 1;
            } else if req.uri().path() == "/add" {
                s.add_posts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let fault = lock(&s.faults).pop_front();
    match fault {
        Some(Fault::Garbage) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>Welcome to the guest network</body></html>",
            )
                .into_response()
        }
        Some(Fault::Status(code, msg)) => {
            return api_error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &msg,
            )
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let health = req.method() == Method::GET && req.uri().path() == "/health";
    if req.method() != Method::OPTIONS && !health {
        if let Some(denied) = check_auth(&s, req.headers()) {
            return denied;
        }
    }
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let mut loc = path.trim_end_matches('/').to_string();
        if loc.is_empty() {
            loc.push('/');
        }
        if let Some(q) = req.uri().query() {
            loc = format!("{loc}?{q}");
        }
        let mut r = if req.method() == Method::GET {
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                format!("<a href=\"{loc}\">Temporary Redirect</a>.\n\n"),
            )
                .into_response()
        } else {
            Response::new(Body::empty())
        };
        *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(v) = HeaderValue::from_str(&loc) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    next.run(req).await
}

fn check_auth(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let auth = lock(&s.auth);
    let want = auth.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let basic = prefixed(given, "Basic ")
        .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let bearer = prefixed(given, "Bearer ");
    let www = |scheme: &str, error: Option<&str>| {
        let mut v = format!("{scheme} realm=\"{REALM}\"");
        if let Some(e) = error {
            v.push_str(&format!(", error=\"{e}\""));
        }
        v
    };
    let deny = |msg: &str, challenges: Vec<String>| {
        let mut r = api_error(StatusCode::UNAUTHORIZED, msg);
        for c in challenges {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::WWW_AUTHENTICATE, v);
            }
        }
        Some(r)
    };
    match (basic, bearer) {
        (Some((u, p)), _) => {
            let ok = matches!(want, Auth::Basic(wu, wp) if !u.is_empty() && !p.is_empty() && *wu == u && *wp == p);
            if ok {
                None
            } else {
                deny("unauthorized: access denied", vec![www("Basic", None)])
            }
        }
        (None, Some(t)) => {
            let ok = matches!(want, Auth::Bearer(wt) if wt == t);
            if ok {
                None
            } else {
                deny(
                    "unauthorized: invalid token",
                    vec![www("Bearer", Some("invalid_token"))],
                )
            }
        }
        (None, None) => deny(
            "unauthorized: no auth provided",
            vec![www("Bearer", None), www("Basic", None)],
        ),
    }
}

fn prefixed<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut body = v.to_string();
    body.push('\n'); // json.Encoder
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"code": status.as_u16(), "message": message}),
    )
}

fn no_content() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::CONTENT_TYPE, "application/json")],
    )
        .into_response()
}

/// api.go StreamResponse: 204 when empty, else 200, one JSON per line, `X-Stream-Error` trailer.
fn stream_response(s: &Shared, items: Vec<Value>, mut error: Option<String>) -> Response {
    if error.is_none() {
        error = lock(&s.stream_errors).pop_front();
    }
    if items.is_empty() {
        return match error {
            Some(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            None => no_content(),
        };
    }
    let mut frames: Vec<Frame<Bytes>> = items
        .iter()
        .map(|v| Frame::data(Bytes::from(format!("{v}\n"))))
        .collect();
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "x-stream-error",
        HeaderValue::from_str(error.as_deref().unwrap_or(""))
            .unwrap_or(HeaderValue::from_static("error")),
    );
    frames.push(Frame::trailers(trailers));
    streamed(StatusCode::OK, frames, &[])
}

fn streamed(
    status: StatusCode,
    frames: Vec<Frame<Bytes>>,
    extra: &[(&'static str, &'static str)],
) -> Response {
    let body = StreamBody::new(futures::stream::iter(
        frames.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::TRAILER, HeaderValue::from_static("X-Stream-Error"));
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    r
}

async fn id_handler(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &s.id_object(0))
}

async fn peers_handler(State(s): State<Arc<Shared>>) -> Response {
    let items = (0..s.peers.len()).map(|i| s.id_object(i)).collect();
    stream_response(&s, items, None)
}

async fn status_handler(State(s): State<Arc<Shared>>, Path(cid): Path<String>) -> Response {
    match Cid::try_from(cid.as_str()) {
        Ok(c) => json_response(StatusCode::OK, &s.global_pin_info(&c.to_string())),
        Err(e) => api_error(StatusCode::BAD_REQUEST, &format!("error decoding Cid: {e}")),
    }
}

struct PinOpts {
    name: String,
    rmin: i32,
    rmax: i32,
    metadata: BTreeMap<String, String>,
    origins: Vec<String>,
}

/// types.go PinOptions.FromQuery (first value of each key, as `url.Values.Get`).
fn pin_opts(q: &[(String, String)]) -> Result<PinOpts, String> {
    let get = |k: &str| {
        q.iter()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let int = |k: &str| -> Result<i32, String> {
        let v = match get("replication") {
            "" => get(k),
            both => both,
        };
        if v.is_empty() {
            return Ok(0);
        }
        v.parse().map_err(|_| format!("parameter {k} invalid"))
    };
    let rmin = int("replication-min")?;
    let rmax = int("replication-max")?;
    let mut metadata = BTreeMap::new();
    for (k, v) in q {
        if let Some(mk) = k.strip_prefix("meta-").filter(|mk| !mk.is_empty()) {
            metadata.entry(mk.to_string()).or_insert_with(|| v.clone());
        }
    }
    let mut origins = Vec::new();
    let o = get("origins");
    if !o.is_empty() {
        for a in o.split(',') {
            let m: libp2p::Multiaddr = a
                .parse()
                .map_err(|e| format!("error decoding multiaddress: {e}"))?;
            if !m
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return Err(format!("multiaddress does not contain peer ID: {a}"));
            }
            origins.push(m.to_string());
        }
    }
    Ok(PinOpts {
        name: get("name").to_string(),
        rmin,
        rmax,
        metadata,
        origins,
    })
}

/// cluster.go setupReplicationFactor + isReplicationFactorValid, with the double's defaults
/// (service.json's: -1/-1).
fn replication(rmin: i32, rmax: i32) -> Result<(i32, i32), String> {
    let rmin = if rmin == 0 { -1 } else { rmin };
    let rmax = if rmax == 0 { -1 } else { rmax };
    if rmin > rmax {
        return Err("cluster.replication_factor_min is larger than max".into());
    }
    if rmin < -1 {
        return Err("cluster.replication_factor_min is wrong".into());
    }
    if rmax < -1 {
        return Err("cluster.replication_factor_max is wrong".into());
    }
    Ok((rmin, rmax))
}

const FOLLOWER: &str =
    "this peer is configured to be in follower mode. Write operations are disabled";

async fn pin_handler(
    State(s): State<Arc<Shared>>,
    Path(cid): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let c = match Cid::try_from(cid.as_str()) {
        Ok(c) => c.to_string(),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("error decoding Cid: {e}")),
    };
    let mut opts = match pin_opts(&q) {
        Ok(o) => o,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    if s.follower.load(Ordering::SeqCst) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, FOLLOWER);
    }
    match replication(opts.rmin, opts.rmax) {
        Ok((a, b)) => (opts.rmin, opts.rmax) = (a, b),
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
    let current = lock(&s.state)
        .pins
        .get(&c)
        .map(|p| p.allocations.clone())
        .unwrap_or_default();
    let allocations = match s.allocate(&current, opts.rmin, opts.rmax) {
        Ok(a) => a,
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let obj = s.commit_pin(&c, opts, allocations);
    json_response(StatusCode::OK, &obj)
}

async fn unpin_handler(State(s): State<Arc<Shared>>, Path(cid): Path<String>) -> Response {
    let c = match Cid::try_from(cid.as_str()) {
        Ok(c) => c.to_string(),
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("error decoding Cid: {e}")),
    };
    if s.follower.load(Ordering::SeqCst) {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, FOLLOWER);
    }
    let Some(entry) = lock(&s.state).pins.remove(&c) else {
        return api_error(StatusCode::NOT_FOUND, "pin is not part of the pinset");
    };
    for &i in entry.per_peer.keys() {
        let _ = s.peers[i].jobs.try_send(Job::Unpin { cid: c.clone() });
    }
    json_response(StatusCode::OK, &s.pin_object(&c, &entry))
}

/// `POST /add?format=car` (adderutils.go): 200 at once, then one AddedOutput, errors in the trailer.
async fn add_handler(
    State(s): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let opts = match pin_opts(&q) {
        Ok(o) => o,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    let format = q
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !matches!(format, "car" | "unixfs" | "") {
        return api_error(StatusCode::BAD_REQUEST, "format parameter is invalid");
    }
    let trailer_only = |e: String| {
        let mut t = HeaderMap::new();
        t.insert(
            "x-stream-error",
            HeaderValue::from_str(&e).unwrap_or(HeaderValue::from_static("error")),
        );
        streamed(
            StatusCode::OK,
            vec![Frame::trailers(t)],
            &[("x-chunked-output", "1"), ("cache-control", "no-cache")],
        )
    };
    if format != "car" {
        return trailer_only("the cluster test double only implements format=car".into());
    }
    let (name, car) = match multipart.next_field().await {
        Ok(Some(f)) => {
            let name = f.file_name().unwrap_or("").to_string();
            match f.bytes().await {
                Ok(b) => (name, b),
                Err(e) => return trailer_only(e.body_text()),
            }
        }
        Ok(None) => return trailer_only("no file in the upload".into()),
        Err(e) => return trailer_only(e.body_text()),
    };
    let s2 = Arc::clone(&s);
    let r = tokio::task::spawn_blocking(move || add_car(&s2, opts, car))
        .await
        .unwrap_or_else(|e| Err(format!("add task: {e}")));
    match r {
        Ok((root, bytes, size, allocations)) => {
            let out = json!({"name": name, "cid": root, "bytes": bytes, "size": size,
                "allocations": allocations});
            streamed(
                StatusCode::OK,
                vec![Frame::data(Bytes::from(format!("{out}\n")))],
                &[("x-chunked-output", "1"), ("cache-control", "no-cache")],
            )
        }
        Err(e) => trailer_only(e),
    }
}

/// The CAR adder: a single root, every block decoded; then (the double's stand-in for sending
/// blocks to the allocated peers' IPFS) each allocated Kubo adds the file the CAR holds and must
/// get the same root; then the pin is committed.
fn add_car(
    s: &Shared,
    mut opts: PinOpts,
    car: Bytes,
) -> Result<(String, u64, u64, Vec<String>), String> {
    use wanda_ipfs::blockstore::BlockSink;
    if s.follower.load(Ordering::SeqCst) {
        return Err(FOLLOWER.into());
    }
    let mut reader = wanda_ipfs::car::CarReader::new(&car[..]).map_err(|e| e.to_string())?;
    let [root] = reader.roots() else {
        return Err("only CAR files with a single root are supported".into());
    };
    let root = *root;
    let mut store = wanda_ipfs::blockstore::MemBlockstore::new();
    let mut bytes = 0u64;
    while let Some(b) = reader.next_block().map_err(|e| e.to_string())? {
        bytes += b.data.len() as u64;
        store.put(&b).map_err(|e| e.to_string())?;
    }
    let size = wanda_ipfs::unixfs::export::file_size(&store, &root).unwrap_or(0);
    let (rmin, rmax) = replication(opts.rmin, opts.rmax)?;
    (opts.rmin, opts.rmax) = (rmin, rmax);
    let allocations = s.allocate(&[], rmin, rmax)?;
    let targets: Vec<usize> = if allocations.is_empty() {
        (0..s.peers.len()).collect()
    } else {
        allocations.clone()
    };
    let path = s.work.path().join(format!("{root}-{}", now()));
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    wanda_ipfs::unixfs::export::cat(&store, &root, &mut f)
        .map_err(|e| format!("the cluster test double can only add CARs of files: {e}"))?;
    drop(f);
    let (done, results) = sync_channel(targets.len());
    for &i in &targets {
        s.peers[i]
            .jobs
            .try_send(Job::AddFile {
                path: path.clone(),
                done: done.clone(),
            })
            .map_err(|_| format!("peer {i}: queue full"))?;
    }
    drop(done);
    let deadline = Instant::now() + s.pin_timeout;
    let mut got = Vec::new();
    for _ in &targets {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(r) => got.push(r),
            Err(_) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    let root_s = root.to_string();
    if got.len() < targets.len() {
        return Err(format!(
            "adding to the peers took longer than {:?}",
            s.pin_timeout
        ));
    }
    for (i, r) in got {
        match r {
            Ok(cid) if cid == root_s => {}
            Ok(cid) => {
                return Err(format!(
                    "cluster test double: peer {i}'s Kubo added the CAR's file as {cid}, not as \
                     the CAR root {root_s}: only CARs of files built with Kubo's default options \
                     can be placed"
                ))
            }
            Err(e) => return Err(format!("peer {i}: {e}")),
        }
    }
    // The pin jobs this queues find the blocks already there, as after the real adder's
    // BlockStream to the allocated peers.
    s.commit_pin(&root_s, opts, allocations.clone());
    Ok((
        root_s,
        bytes,
        size,
        allocations
            .iter()
            .map(|&i| s.peers[i].cluster_id.clone())
            .collect(),
    ))
}

// ---- TLS -----------------------------------------------------------------------------------------

fn self_signed_config() -> Arc<tokio_rustls::rustls::ServerConfig> {
    use tokio_rustls::rustls;
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server certificate");
    Arc::new(cfg)
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // A server's accept loop: each turn waits for a new connection; failed handshakes
        // (a client that rejects our certificate) are skipped.
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => eprintln!("cluster double: TLS handshake from {addr}: {e}"),
                Err(_) => eprintln!("cluster double: TLS handshake from {addr} timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

// ---- time ----------------------------------------------------------------------------------------

/// RFC 3339 with nanoseconds, UTC, as Go's RFC3339Nano.
fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[test]
fn cluster_double_civil_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert!(now().ends_with('Z') && now().len() == 30, "{}", now());
}
