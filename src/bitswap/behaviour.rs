//! The bitswap [`NetworkBehaviour`]: the I/O shell around [`Ledger`] (what
//! peers want from us) and [`WantList`] (what we want). It owns both, turns
//! handler events into their inputs and their actions into messages, and
//! keeps every disk access off the swarm's thread.
//!
//! Server path: a message's wantlist goes to a store lookup (`has` for each
//! CID, on tokio's blocking pool, at most [`MAX_CONCURRENT_LOOKUPS`] at once,
//! results applied in arrival order so a cancel never overtakes its want),
//! then to [`Ledger::on_message`]. The ledger's fair scheduler
//! ([`Ledger::next_batch`]) hands out about [`TARGET_MESSAGE_SIZE`] of work at
//! a time; blocks are read on the blocking pool ([`MAX_CONCURRENT_READS`]
//! jobs), packed with [`split_into_messages`] and sent. A peer with
//! [`MAX_OUTBOUND_MESSAGES_PER_PEER`] unwritten messages gets its work put
//! back, so a slow reader only slows itself.
//!
//! Client path: [`Behaviour::get`] wants a CID; the wantlist asks every
//! connected peer want-have, the first HAVE want-block; verified blocks come
//! out as [`Event::Block`] for the caller to store, and a `get` that outlives
//! [`Config::with_get_timeout`] fails with [`Event::GetFailed`]. Timeouts are
//! one tokio timer set to the nearest deadline.
//!
//! Sizes: a wantlist's lookup asks the store for each block's size (a
//! `stat`), so a want-have for a block of at most
//! [`MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK`] bytes is answered with the
//! block, as boxo does. Blocks announced by `notify_new_blocks` come without
//! a size and count as [`ASSUMED_BLOCK_SIZE`] (a HAVE; scheduling counts a
//! whole chunk).
//!
//! [`MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK`]: super::MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use multihash::Multihash;

use super::handler::{Command, Handler, HandlerEvent};
use super::ledger::{Action, Ledger, LedgerStats};
use super::message::{split_into_messages, BlockPresence, Message, PresenceType, WantEntry};
use super::recycle::FramePool;
use super::wantlist::{messages_for, ClientAction, WantList, WantListError};
use super::{
    ASSUMED_BLOCK_SIZE, DEFAULT_GET_TIMEOUT, MAX_CONCURRENT_LOOKUPS, MAX_CONCURRENT_READS,
    MAX_ENTRIES_PER_MESSAGE, MAX_INBOUND_STREAMS_PER_CONNECTION, MAX_OUTBOUND_MESSAGES_PER_PEER,
    MAX_QUERIES, MAX_QUEUED_WANTLISTS_PER_PEER, RECENTLY_ADDED, TARGET_MESSAGE_SIZE,
};
use crate::block::Block;
use crate::blockstore::FsBlockstore;

/// How often idle receive buffers are offered back to the allocator: a
/// buffer not reused for one whole period is freed (see [`FramePool::trim`]).
const POOL_TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Settings, in libp2p's builder shape. Defaults are the named consts in
/// [`super`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long a [`Behaviour::get`] waits. Default [`DEFAULT_GET_TIMEOUT`].
    pub get_timeout: Duration,
    /// Default [`MAX_INBOUND_STREAMS_PER_CONNECTION`].
    pub max_inbound_streams: usize,
    /// Default [`MAX_OUTBOUND_MESSAGES_PER_PEER`].
    pub max_outbound_messages_per_peer: usize,
    /// Default [`MAX_CONCURRENT_READS`].
    pub max_concurrent_reads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            get_timeout: DEFAULT_GET_TIMEOUT,
            max_inbound_streams: MAX_INBOUND_STREAMS_PER_CONNECTION,
            max_outbound_messages_per_peer: MAX_OUTBOUND_MESSAGES_PER_PEER,
            max_concurrent_reads: MAX_CONCURRENT_READS,
        }
    }
}

impl Config {
    pub fn with_get_timeout(mut self, d: Duration) -> Self {
        self.get_timeout = d;
        self
    }

    pub fn with_max_inbound_streams(mut self, n: usize) -> Self {
        self.max_inbound_streams = n.max(1);
        self
    }

    pub fn with_max_outbound_messages_per_peer(mut self, n: usize) -> Self {
        self.max_outbound_messages_per_peer = n.max(1);
        self
    }

    pub fn with_max_concurrent_reads(mut self, n: usize) -> Self {
        self.max_concurrent_reads = n.max(1);
        self
    }
}

/// Names one [`Behaviour::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(u64);

impl std::fmt::Display for QueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bitswap-get-{}", self.0)
    }
}

/// Why a `get` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    #[error("no connected peer sent {cid} within {after:?}: connect a peer that has it and retry")]
    Timeout { cid: Cid, after: Duration },
    #[error(transparent)]
    Refused(#[from] WantListError),
    #[error("cannot get {cid}: {MAX_QUERIES} gets are already waiting; retry later")]
    TooManyQueries { cid: Cid },
}

/// What the behaviour reports to the swarm's owner.
#[derive(Clone)]
pub enum Event {
    /// A block we wanted arrived and matches its CID: store it (then call
    /// [`Behaviour::notify_new_blocks`] so peers waiting for it get it).
    /// `queries` are the gets it answers (empty if all were cancelled).
    Block {
        cid: Cid,
        data: Bytes,
        from: PeerId,
        queries: Vec<QueryId>,
    },
    /// A get gave up.
    GetFailed {
        query: QueryId,
        cid: Cid,
        error: GetError,
    },
}

// Block bytes can be megabytes: print their length only.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Block {
                cid,
                data,
                from,
                queries,
            } => f
                .debug_struct("Block")
                .field("cid", cid)
                .field("data", &format_args!("[{} bytes]", data.len()))
                .field("from", from)
                .field("queries", queries)
                .finish(),
            Event::GetFailed { query, cid, error } => f
                .debug_struct("GetFailed")
                .field("query", query)
                .field("cid", cid)
                .field("error", error)
                .finish(),
        }
    }
}

/// Counters for logs and `stats bitswap`-like output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub ledger: LedgerStats,
    /// Wantlist messages dropped: the peer had [`MAX_QUEUED_WANTLISTS_PER_PEER`] waiting and
    /// folding this one into the newest would pass [`MAX_ENTRIES_PER_MESSAGE`].
    pub dropped_wantlists: u64,
    /// Received blocks not accepted (unwanted or corrupt).
    pub rejected_blocks: u64,
    /// Blocks accepted from peers.
    pub blocks_received: u64,
    /// Blocks sent to peers.
    pub blocks_sent: u64,
    /// Messages a handler could not write.
    pub send_failures: u64,
}

/// A finished store lookup for one wantlist message.
struct Lookup {
    peer: PeerId,
    msg: Message,
    /// Multihashes of the message's CIDs that the store has, with sizes.
    have: HashMap<Multihash<64>, usize>,
}

/// A finished block read for one scheduled batch.
struct Read {
    peer: PeerId,
    blocks: Vec<Block>,
    presences: Vec<BlockPresence>,
}

/// Per connected peer.
#[derive(Default)]
struct Peer {
    /// Its connections, oldest first; we send on the oldest.
    conns: Vec<ConnectionId>,
    /// Client wantlist entries not yet sent (one per CID, the latest wins).
    wants: Vec<WantEntry>,
    /// Server messages ready to send.
    out: VecDeque<Message>,
    /// Read jobs running for it.
    reads: usize,
    /// Wantlist messages waiting for (or in) a lookup.
    lookups: usize,
}

/// The bitswap behaviour; see the module docs.
pub struct Behaviour {
    config: Config,
    store: FsBlockstore,
    ledger: Ledger<PeerId>,
    wantlist: WantList<PeerId>,
    peers: HashMap<PeerId, Peer>,
    /// Messages handed to each connection's handler and not yet acknowledged.
    in_flight: HashMap<ConnectionId, usize>,
    /// Wantlist messages waiting for a lookup slot, in arrival order.
    backlog: VecDeque<(PeerId, Message)>,
    lookups: FuturesOrdered<BoxFuture<'static, Lookup>>,
    reads: FuturesUnordered<BoxFuture<'static, Read>>,
    recently_added: VecDeque<Multihash<64>>,
    recently_added_set: HashSet<Multihash<64>>,
    next_query: u64,
    queries: HashMap<QueryId, Cid>,
    by_hash: HashMap<Multihash<64>, Vec<QueryId>>,
    /// Query deadlines in creation order (one timeout for all, so sorted).
    deadlines: VecDeque<(Instant, QueryId)>,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    /// Receive buffers shared by every connection's handler.
    pool: FramePool,
    /// When the pool is next trimmed; armed by inbound messages.
    pool_trim_at: Option<Instant>,
    /// Peers with something to flush.
    dirty: HashSet<PeerId>,
    events: VecDeque<ToSwarm<Event, Command>>,
    stats: Stats,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("peers", &self.peers.len())
            .field("queries", &self.queries.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Serves blocks from `store`; fetched blocks are *not* stored here (the
    /// caller stores each [`Event::Block`]).
    pub fn new(store: FsBlockstore, config: Config) -> Self {
        Behaviour {
            config,
            store,
            ledger: Ledger::new(),
            wantlist: WantList::new(),
            peers: HashMap::new(),
            in_flight: HashMap::new(),
            backlog: VecDeque::new(),
            lookups: FuturesOrdered::new(),
            reads: FuturesUnordered::new(),
            recently_added: VecDeque::new(),
            recently_added_set: HashSet::new(),
            next_query: 0,
            queries: HashMap::new(),
            by_hash: HashMap::new(),
            deadlines: VecDeque::new(),
            timer: None,
            pool: FramePool::new(),
            pool_trim_at: None,
            dirty: HashSet::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            waker: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            ledger: self.ledger.stats(),
            ..self.stats
        }
    }

    /// Gets outstanding.
    pub fn queries(&self) -> usize {
        self.queries.len()
    }

    /// Starts fetching one block from connected (and later connecting)
    /// peers. The answer is an [`Event::Block`] listing this query, or an
    /// [`Event::GetFailed`]. Many gets may run at once; the wantlist bounds
    /// how many are on the wire.
    pub fn get(&mut self, cid: Cid) -> QueryId {
        let query = QueryId(self.next_query);
        self.next_query += 1;
        let now = Instant::now();
        if self.queries.len() >= MAX_QUERIES {
            self.fail(query, cid, GetError::TooManyQueries { cid });
            return query;
        }
        match self.wantlist.want(cid, now) {
            Ok(actions) => {
                self.queries.insert(query, cid);
                self.by_hash.entry(*cid.hash()).or_default().push(query);
                self.deadlines
                    .push_back((now + self.config.get_timeout, query));
                self.send_client_actions(actions);
            }
            Err(e) => self.fail(query, cid, e.into()),
        }
        self.wake();
        query
    }

    /// Stops a get; its CID stays wanted while other gets need it. Returns
    /// whether the query was outstanding.
    pub fn cancel(&mut self, query: QueryId) -> bool {
        let Some(cid) = self.queries.remove(&query) else {
            return false;
        };
        self.forget_query(query, &cid);
        self.wake();
        true
    }

    /// Blocks just stored locally: peers that asked for them get them (or a
    /// HAVE). Call after storing each [`Event::Block`] and after imports.
    pub fn notify_new_blocks(&mut self, cids: &[Cid]) {
        for cid in cids {
            let mh = *cid.hash();
            if self.recently_added_set.insert(mh) {
                self.recently_added.push_back(mh);
                if self.recently_added.len() > RECENTLY_ADDED {
                    if let Some(old) = self.recently_added.pop_front() {
                        self.recently_added_set.remove(&old);
                    }
                }
            }
            let actions = self.ledger.on_block_added(cid, ASSUMED_BLOCK_SIZE);
            self.ledger.schedule(actions);
        }
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn fail(&mut self, query: QueryId, cid: Cid, error: GetError) {
        tracing::debug!(%query, %cid, %error, "bitswap get failed");
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::GetFailed {
                query,
                cid,
                error,
            }));
    }

    /// Drops `query` from the CID index; cancels the want if nobody else
    /// needs it.
    fn forget_query(&mut self, query: QueryId, cid: &Cid) {
        let mh = *cid.hash();
        let Some(qs) = self.by_hash.get_mut(&mh) else {
            return;
        };
        qs.retain(|q| *q != query);
        if qs.is_empty() {
            self.by_hash.remove(&mh);
            let actions = self.wantlist.cancel(cid, Instant::now());
            self.send_client_actions(actions);
        }
    }

    /// Queues wantlist entries per peer; they go out as slots free up.
    fn send_client_actions(&mut self, actions: Vec<ClientAction<PeerId>>) {
        for (peer, msg) in messages_for(actions) {
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            tracing::trace!(%peer, wants = msg.wantlist.len(), "bitswap client wants queued");
            for e in msg.wantlist {
                // A later entry for a CID replaces an earlier one: a want
                // after a cancel must not merge into the cancel remotely.
                match p.wants.iter_mut().find(|w| w.cid == e.cid) {
                    Some(w) => *w = e,
                    None => p.wants.push(e),
                }
            }
            self.dirty.insert(peer);
        }
    }

    /// Sends what `peer` has waiting, within its in-flight cap. Wants first:
    /// they are small and let the peer start serving us.
    fn flush(&mut self, peer: &PeerId) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(&conn) = p.conns.first() else {
            return;
        };
        let cap = self.config.max_outbound_messages_per_peer;
        let in_flight = self.in_flight.entry(conn).or_default();
        while *in_flight < cap {
            let msg = if !p.wants.is_empty() {
                Message {
                    wantlist: std::mem::take(&mut p.wants),
                    ..Default::default()
                }
            } else if let Some(m) = p.out.pop_front() {
                self.stats.blocks_sent += m.blocks.len() as u64;
                m
            } else {
                break;
            };
            *in_flight += 1;
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: *peer,
                handler: NotifyHandler::One(conn),
                event: Command::Send(msg),
            });
        }
    }

    /// Whether `peer` already has as much server work underway as it may.
    fn congested(&self, peer: &PeerId) -> bool {
        let Some(p) = self.peers.get(peer) else {
            return true;
        };
        let in_flight = p
            .conns
            .first()
            .and_then(|c| self.in_flight.get(c))
            .copied()
            .unwrap_or(0);
        in_flight + p.out.len() + p.reads >= self.config.max_outbound_messages_per_peer
    }

    fn on_message(&mut self, peer: PeerId, msg: Message) {
        let Message {
            wantlist,
            full,
            blocks,
            presences,
            pending_bytes: _,
        } = msg;
        tracing::trace!(%peer, blocks = blocks.len(), presences = presences.len(), wants = wantlist.len(), full, "bitswap message in");
        if !blocks.is_empty() || !presences.is_empty() {
            let client_part = Message {
                blocks,
                presences,
                ..Default::default()
            };
            let (accepted, actions, rejected) =
                self.wantlist.on_message(&peer, client_part, Instant::now());
            for r in rejected {
                self.stats.rejected_blocks += 1;
                tracing::debug!(%peer, error = %r, "rejected a bitswap block");
            }
            for block in accepted {
                self.stats.blocks_received += 1;
                let queries = self.by_hash.remove(block.cid.hash()).unwrap_or_default();
                for q in &queries {
                    self.queries.remove(q);
                }
                self.events.push_back(ToSwarm::GenerateEvent(Event::Block {
                    cid: block.cid,
                    data: block.data,
                    from: peer,
                    queries,
                }));
            }
            self.send_client_actions(actions);
        }
        if !wantlist.is_empty() || full {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.lookups >= MAX_QUEUED_WANTLISTS_PER_PEER {
                // Dropping an update would leave the peer waiting for blocks it asked for until
                // its next rebroadcast (a minute for boxo and for us): fold it into the peer's
                // newest queued message instead, which the ledger then applies in order.
                let queued = self
                    .backlog
                    .iter_mut()
                    .rev()
                    .find(|(p, _)| *p == peer)
                    .map(|(_, m)| m);
                match queued {
                    Some(m) if full => {
                        m.wantlist = wantlist;
                        m.full = true;
                    }
                    Some(m) if m.wantlist.len() + wantlist.len() <= MAX_ENTRIES_PER_MESSAGE => {
                        m.wantlist.extend(wantlist);
                    }
                    _ => {
                        self.stats.dropped_wantlists += 1;
                        tracing::debug!(%peer, "dropping a bitswap wantlist: too many queued");
                    }
                }
                return;
            }
            p.lookups += 1;
            self.backlog.push_back((
                peer,
                Message {
                    wantlist,
                    full,
                    ..Default::default()
                },
            ));
        }
    }

    /// Starts lookups from the backlog while slots are free.
    fn start_lookups(&mut self) {
        while self.lookups.len() < MAX_CONCURRENT_LOOKUPS {
            let Some((peer, msg)) = self.backlog.pop_front() else {
                return;
            };
            let cids: Vec<Cid> = msg
                .wantlist
                .iter()
                .filter(|e| !e.cancel)
                .map(|e| e.cid)
                .collect();
            if cids.is_empty() {
                // Cancels only: nothing to ask the disk, but keep the order.
                self.lookups.push_back(
                    futures::future::ready(Lookup {
                        peer,
                        msg,
                        have: HashMap::new(),
                    })
                    .boxed(),
                );
                continue;
            }
            let store = self.store.clone();
            let job = tokio::task::spawn_blocking(move || {
                cids.iter()
                    .filter_map(|cid| match store.size(cid) {
                        Ok(size) => {
                            size.map(|n| (*cid.hash(), usize::try_from(n).unwrap_or(usize::MAX)))
                        }
                        Err(e) => {
                            tracing::warn!(%cid, error = %e, "bitswap store lookup failed");
                            None
                        }
                    })
                    .collect::<HashMap<_, _>>()
            });
            self.lookups.push_back(
                async move {
                    let have = job.await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "bitswap lookup task failed");
                        HashMap::new()
                    });
                    Lookup { peer, msg, have }
                }
                .boxed(),
            );
        }
    }

    fn on_lookup(&mut self, l: Lookup) {
        let Some(p) = self.peers.get_mut(&l.peer) else {
            return; // gone meanwhile; its ledger state is already cleared
        };
        p.lookups = p.lookups.saturating_sub(1);
        let recent = &self.recently_added_set;
        let actions = self.ledger.on_message(&l.peer, &l.msg, |cid| {
            l.have
                .get(cid.hash())
                .copied()
                .or_else(|| recent.contains(cid.hash()).then_some(ASSUMED_BLOCK_SIZE))
        });
        self.ledger.schedule(actions);
    }

    /// Takes fair batches off the ledger into read jobs while slots are free.
    fn schedule_reads(&mut self) {
        while self.reads.len() < self.config.max_concurrent_reads && self.ledger.queued() > 0 {
            let batch = self.ledger.next_batch(TARGET_MESSAGE_SIZE);
            if batch.is_empty() {
                return;
            }
            let mut dispatched = false;
            for (peer, actions) in batch {
                if !self.peers.contains_key(&peer) {
                    continue; // disconnected: the ledger forgot it already
                }
                if self.congested(&peer) {
                    // Back to the ledger, which merges it into the peer's
                    // queue; it is taken again once a send completes.
                    self.ledger.schedule(actions);
                    continue;
                }
                dispatched = true;
                self.start_read(peer, actions);
            }
            if !dispatched {
                // Everything left belongs to congested peers: wait for a
                // handler to acknowledge a send (which polls us again).
                return;
            }
        }
    }

    fn start_read(&mut self, peer: PeerId, actions: Vec<Action<PeerId>>) {
        let mut presences = Vec::new();
        let mut to_read = Vec::new();
        for a in actions {
            match a {
                Action::SendBlock { cid, .. } => to_read.push(cid),
                Action::SendHave { cid, .. } => presences.push(BlockPresence {
                    cid,
                    kind: PresenceType::Have,
                }),
                Action::SendDontHave { cid, .. } => presences.push(BlockPresence {
                    cid,
                    kind: PresenceType::DontHave,
                }),
            }
        }
        if to_read.is_empty() {
            self.on_read(Read {
                peer,
                blocks: Vec::new(),
                presences,
            });
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.reads += 1;
        }
        let store = self.store.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut blocks = Vec::with_capacity(to_read.len());
            for cid in to_read {
                match store.get_unverified(&cid) {
                    Ok(data) => blocks.push(Block { cid, data }),
                    Err(e) => {
                        // Gone (gc) since the lookup: say so
                        // rather than leave the peer waiting.
                        tracing::warn!(%cid, error = %e, "cannot read a block to send");
                        presences.push(BlockPresence {
                            cid,
                            kind: PresenceType::DontHave,
                        });
                    }
                }
            }
            (blocks, presences)
        });
        self.reads.push(
            async move {
                let (blocks, presences) = job.await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "bitswap read task failed");
                    (Vec::new(), Vec::new())
                });
                Read {
                    peer,
                    blocks,
                    presences,
                }
            }
            .boxed(),
        );
    }

    fn on_read(&mut self, r: Read) {
        let Some(p) = self.peers.get_mut(&r.peer) else {
            return;
        };
        if !r.blocks.is_empty() {
            p.reads = p.reads.saturating_sub(1);
        }
        p.out.extend(split_into_messages(
            r.blocks,
            r.presences,
            TARGET_MESSAGE_SIZE,
        ));
        self.dirty.insert(r.peer);
    }

    /// Fails gets past their deadline and runs the wantlist's timers.
    fn on_timer(&mut self, now: Instant) {
        if self.pool_trim_at.is_some_and(|at| at <= now) {
            // Keep trimming while the pool holds buffers: the last ones can
            // come back from the store writer after the last message.
            self.pool_trim_at = self.pool.trim().then(|| now + POOL_TRIM_PERIOD);
        }
        let actions = self.wantlist.on_tick(now);
        self.send_client_actions(actions);
        while let Some(&(at, query)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(cid) = self.queries.remove(&query) else {
                continue; // answered or cancelled already
            };
            self.forget_query(query, &cid);
            self.fail(
                query,
                cid,
                GetError::Timeout {
                    cid,
                    after: self.config.get_timeout,
                },
            );
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        // Drop deadlines of finished queries so the timer does not fire for them.
        while let Some((_, q)) = self.deadlines.front() {
            if self.queries.contains_key(q) {
                break;
            }
            self.deadlines.pop_front();
        }
        let query = self.deadlines.front().map(|(at, _)| *at);
        [self.wantlist.next_deadline(), query, self.pool_trim_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Polls the timer; true if it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.next_deadline() else {
            self.timer = None;
            return false;
        };
        match &mut self.timer {
            Some((armed, sleep)) if *armed == at => {}
            Some((armed, sleep)) => {
                *armed = at;
                sleep.as_mut().reset(tokio::time::Instant::from_std(at));
            }
            None => {
                self.timer = Some((
                    at,
                    Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at))),
                ));
            }
        }
        let Some((_, sleep)) = &mut self.timer else {
            return false;
        };
        if sleep.poll_unpin(cx).is_ready() {
            self.timer = None;
            self.on_timer(Instant::now());
            return true;
        }
        false
    }

    fn new_handler(&self) -> Handler {
        Handler::new(
            self.config.max_inbound_streams,
            self.config.max_outbound_messages_per_peer,
        )
        .with_pool(self.pool.clone())
    }

    fn on_connection_closed(&mut self, c: ConnectionClosed<'_>) {
        self.in_flight.remove(&c.connection_id);
        let Some(p) = self.peers.get_mut(&c.peer_id) else {
            return;
        };
        p.conns.retain(|id| *id != c.connection_id);
        if !p.conns.is_empty() {
            // Messages queued on the closed connection are lost; the rest
            // go out on the next oldest one.
            self.dirty.insert(c.peer_id);
            return;
        }
        self.peers.remove(&c.peer_id);
        self.backlog.retain(|(peer, _)| *peer != c.peer_id);
        self.ledger.on_peer_disconnected(&c.peer_id);
        let actions = self
            .wantlist
            .on_peer_disconnected(&c.peer_id, Instant::now());
        self.send_client_actions(actions);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                let p = self.peers.entry(c.peer_id).or_default();
                p.conns.push(c.connection_id);
                if p.conns.len() == 1 {
                    let actions = self.wantlist.on_peer_connected(&c.peer_id);
                    self.send_client_actions(actions);
                }
                self.wake();
            }
            FromSwarm::ConnectionClosed(c) => {
                self.on_connection_closed(c);
                self.wake();
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerEvent::Message(m) => {
                if self.pool_trim_at.is_none() {
                    self.pool_trim_at = Some(Instant::now() + POOL_TRIM_PERIOD);
                }
                self.on_message(peer, m)
            }
            HandlerEvent::Sent | HandlerEvent::SendFailed => {
                if matches!(event, HandlerEvent::SendFailed) {
                    self.stats.send_failures += 1;
                }
                if let Some(n) = self.in_flight.get_mut(&conn) {
                    *n = n.saturating_sub(1);
                }
                self.dirty.insert(peer);
            }
            HandlerEvent::Unsupported => {
                // Not a bitswap peer: stop counting it among those we ask.
                if self.peers.get(&peer).is_some_and(|p| p.conns.len() == 1) {
                    let actions = self.wantlist.on_peer_disconnected(&peer, Instant::now());
                    self.send_client_actions(actions);
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(e);
        }
        self.waker = Some(cx.waker().clone());
        // Each pass may free slots for the next; stop once nothing moved.
        loop {
            // Start work before polling its futures, so a job that is ready
            // at once is seen now rather than never (nothing would wake us).
            let mut progress = self.poll_timer(cx);
            self.start_lookups();
            while let Poll::Ready(Some(l)) = self.lookups.poll_next_unpin(cx) {
                self.on_lookup(l);
                progress = true;
            }
            self.schedule_reads();
            while let Poll::Ready(Some(r)) = self.reads.poll_next_unpin(cx) {
                self.on_read(r);
                progress = true;
            }
            for peer in std::mem::take(&mut self.dirty) {
                self.flush(&peer);
            }
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two (or three) in-memory swarms: a server holding a DAG, a client
    //! fetching it, and a raw peer that writes arbitrary bytes on bitswap
    //! streams and reports what comes back.

    use std::collections::BTreeSet;
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::{Swarm, SwarmEvent};
    use libp2p_swarm_test::SwarmExt;

    use super::*;
    use crate::bitswap::message::{encode_frame, WantType};
    use crate::blockstore::{BlockSource, PinMode};
    use crate::unixfs::{file::import_bytes, pb::links, Chunker, ImportOptions};

    const WAIT: Duration = Duration::from_secs(20);

    fn open_store() -> (tempfile::TempDir, FsBlockstore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockstore::open(dir.path()).unwrap();
        (dir, store)
    }

    /// Deterministic bytes (xorshift), so failures reproduce.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A file imported with 1 KiB chunks and 3 links per node: 20 leaves
    /// make a tree of root, 2 levels of inner nodes, then leaves.
    fn server_with_dag(data: &[u8]) -> (tempfile::TempDir, FsBlockstore, Cid, Vec<Cid>) {
        let (dir, store) = open_store();
        let opts = ImportOptions {
            chunker: Chunker::Size(1024),
            max_links: 3,
            ..Default::default()
        };
        let mut w = store.writer();
        let root = import_bytes(&opts, data, &mut w).unwrap().cid;
        w.finish(&root, PinMode::Recursive).unwrap();
        let (mut all, mut next, mut depth) = (vec![root], vec![root], 0);
        while !next.is_empty() {
            let mut below = Vec::new();
            for c in next {
                below.extend(links(&c, &store.get(&c).unwrap()).unwrap());
            }
            all.extend(&below);
            next = below;
            depth += 1;
        }
        assert!(
            depth >= 4,
            "want root + 2 inner levels + leaves, got {depth}"
        );
        (dir, store, root, all)
    }

    fn swarm(store: FsBlockstore, config: Config) -> Swarm<Behaviour> {
        Swarm::new_ephemeral_tokio(|_| Behaviour::new(store, config))
    }

    /// Gets `root` and everything below it, storing each block; returns the
    /// CIDs received.
    async fn fetch_dag(b: &mut Swarm<Behaviour>, store: &FsBlockstore, root: Cid) -> Vec<Cid> {
        let mut waiting = BTreeSet::from([b.behaviour_mut().get(root)]);
        let mut got = Vec::new();
        while !waiting.is_empty() {
            let ev = tokio::time::timeout(WAIT, b.select_next_some())
                .await
                .expect("DAG fetch stalled");
            match ev {
                SwarmEvent::Behaviour(Event::Block {
                    cid, data, queries, ..
                }) => {
                    store
                        .put_block(&Block {
                            cid,
                            data: data.clone(),
                        })
                        .unwrap();
                    b.behaviour_mut().notify_new_blocks(&[cid]);
                    for q in queries {
                        waiting.remove(&q);
                    }
                    for l in links(&cid, &data).unwrap() {
                        waiting.insert(b.behaviour_mut().get(l));
                    }
                    got.push(cid);
                }
                SwarmEvent::Behaviour(e @ Event::GetFailed { .. }) => panic!("{e:?}"),
                _ => {}
            }
        }
        got
    }

    #[tokio::test]
    async fn fetches_a_three_level_dag() {
        let data = bytes(20 * 1024, 1);
        let (_a_dir, a_store, root, all) = server_with_dag(&data);
        let (_b_dir, b_store) = open_store();
        let mut a = swarm(a_store, Config::default());
        let mut b = swarm(b_store.clone(), Config::default());
        a.listen().with_memory_addr_external().await;
        b.connect(&mut a).await;
        tokio::spawn(a.loop_on_next());

        let got = fetch_dag(&mut b, &b_store, root).await;
        assert_eq!(
            got.iter().collect::<BTreeSet<_>>(),
            all.iter().collect::<BTreeSet<_>>()
        );
        let mut out = Vec::new();
        crate::unixfs::export::cat(&b_store, &root, &mut out).unwrap();
        assert!(out == data, "fetched file differs");
        assert_eq!(b.behaviour().queries(), 0);
        assert_eq!(b.behaviour().stats().rejected_blocks, 0);
    }

    #[tokio::test]
    async fn missing_block_times_out_and_the_connection_stays() {
        let (_a_dir, a_store, root, _) = server_with_dag(&bytes(20 * 1024, 2));
        let (_b_dir, b_store) = open_store();
        let mut a = swarm(a_store, Config::default());
        let mut b = swarm(
            b_store.clone(),
            Config::default().with_get_timeout(Duration::from_millis(500)),
        );
        a.listen().with_memory_addr_external().await;
        b.connect(&mut a).await;
        let a_id = *a.local_peer_id();
        tokio::spawn(a.loop_on_next());

        let missing = Block::new(
            cid::Version::V1,
            crate::block::RAW,
            b"nobody has me".to_vec(),
        )
        .cid;
        let q = b.behaviour_mut().get(missing);
        let failed = b
            .wait(|e| match e {
                SwarmEvent::Behaviour(Event::GetFailed { query, error, .. }) => {
                    Some((query, error))
                }
                SwarmEvent::Behaviour(Event::Block { .. }) => panic!("got a block nobody has"),
                _ => None,
            })
            .await;
        assert_eq!(failed.0, q);
        assert!(
            matches!(failed.1, GetError::Timeout { .. }),
            "{:?}",
            failed.1
        );
        assert!(b.is_connected(&a_id), "the connection must survive a miss");
        // And it still works afterwards.
        fetch_dag(&mut b, &b_store, root).await;
    }

    #[tokio::test]
    async fn dont_have_is_answered_on_a_raw_stream_and_more_streams_are_read() {
        let (_a_dir, a_store, root, _) = server_with_dag(&bytes(20 * 1024, 3));
        let (mut r, a_id) = raw_peer_of(a_store).await;

        let missing = Block::new(cid::Version::V1, crate::block::RAW, b"absent".to_vec()).cid;
        r.behaviour_mut()
            .send(a_id, want_frame(&[(missing, WantType::Have)]));
        let m = raw::next_message(&mut r).await;
        assert_eq!(
            m.presences,
            vec![BlockPresence {
                cid: missing,
                kind: PresenceType::DontHave
            }]
        );
        // A second stream, as Kubo opens one per message: served too.
        r.behaviour_mut()
            .send(a_id, want_frame(&[(root, WantType::Block)]));
        let m = raw::next_message(&mut r).await;
        assert_eq!(m.blocks.len(), 1);
        assert_eq!(m.blocks[0].cid, root);
        assert!(r.is_connected(&a_id));
    }

    #[tokio::test]
    async fn want_have_gets_a_small_block_itself_and_a_have_for_a_large_one() {
        let (_a_dir, a_store) = open_store();
        // boxo's limit is inclusive: a block of exactly 1024 bytes is sent.
        let small = Block::new(cid::Version::V1, crate::block::RAW, bytes(1024, 5));
        let large = Block::new(cid::Version::V1, crate::block::RAW, bytes(1025, 6));
        a_store.put_block(&small).unwrap();
        a_store.put_block(&large).unwrap();
        let (mut r, a_id) = raw_peer_of(a_store).await;

        r.behaviour_mut().send(
            a_id,
            want_frame(&[(small.cid, WantType::Have), (large.cid, WantType::Have)]),
        );
        let (mut blocks, mut presences) = (Vec::new(), Vec::new());
        // The answers may come in one message or two.
        for _ in 0..2 {
            let m = raw::next_message(&mut r).await;
            blocks.extend(m.blocks);
            presences.extend(m.presences);
            if !blocks.is_empty() && !presences.is_empty() {
                break;
            }
        }
        assert_eq!(blocks, vec![small.clone()]);
        assert_eq!(
            presences,
            vec![BlockPresence {
                cid: large.cid,
                kind: PresenceType::Have
            }]
        );
    }

    /// A server over `store`, running on its own task, and a raw peer connected to it.
    async fn raw_peer_of(store: FsBlockstore) -> (Swarm<raw::Raw>, PeerId) {
        let mut a = swarm(store, Config::default());
        let mut r = Swarm::new_ephemeral_tokio(|_| raw::Raw::default());
        a.listen().with_memory_addr_external().await;
        r.connect(&mut a).await;
        let a_id = *a.local_peer_id();
        tokio::spawn(a.loop_on_next());
        (r, a_id)
    }

    /// A frame holding one message that wants `wants`.
    fn want_frame(wants: &[(Cid, WantType)]) -> Vec<u8> {
        encode_frame(&Message {
            wantlist: wants.iter().map(|(c, t)| WantEntry::want(*c, *t)).collect(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_corrupt_block_is_rejected_and_the_right_one_accepted() {
        let good = Block::new(
            cid::Version::V1,
            crate::block::RAW,
            b"the real bytes".to_vec(),
        );
        let (_b_dir, b_store) = open_store();
        let mut b = swarm(b_store, Config::default());
        let mut r = Swarm::new_ephemeral_tokio(|_| raw::Raw::default());
        r.listen().with_memory_addr_external().await;
        b.connect(&mut r).await;
        let b_id = *b.local_peer_id();
        let q = b.behaviour_mut().get(good.cid);

        // Wait until our want reaches the raw peer, driving both swarms.
        let asked = loop {
            tokio::select! {
                e = r.select_next_some() => if let SwarmEvent::Behaviour(raw::RawEvent::Message(m)) = e { break m },
                _ = b.select_next_some() => {}
            }
        };
        assert_eq!(asked.wantlist[0].cid, good.cid);
        // Same CID, wrong bytes: boxo's payload carries the prefix, and the
        // receiver rehashes, so this is a block nobody asked for.
        let bad = Message {
            blocks: vec![Block {
                cid: good.cid,
                data: Bytes::from_static(b"forged bytes"),
            }],
            ..Default::default()
        };
        r.behaviour_mut().send(b_id, encode_frame(&bad));
        // Streams race, so let the forged one land before the real one.
        tokio::time::timeout(WAIT, async {
            while b.behaviour().stats().rejected_blocks == 0 {
                tokio::select! {
                    e = b.select_next_some() => if let SwarmEvent::Behaviour(e) = e { panic!("{e:?}") },
                    _ = r.select_next_some() => {}
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        })
        .await
        .expect("the forged block was never seen");
        let ok = Message {
            blocks: vec![good.clone()],
            ..Default::default()
        };
        r.behaviour_mut().send(b_id, encode_frame(&ok));
        let got = loop {
            tokio::select! {
                e = b.select_next_some() => match e {
                    SwarmEvent::Behaviour(Event::Block { cid, data, queries, .. }) => break (cid, data, queries),
                    SwarmEvent::Behaviour(e) => panic!("{e:?}"),
                    _ => {}
                },
                _ = r.select_next_some() => {}
            }
        };
        assert_eq!(got, (good.cid, good.data, vec![q]));
        assert_eq!(b.behaviour().stats().rejected_blocks, 1);
    }

    #[tokio::test]
    async fn garbage_on_raw_streams_does_not_stop_serving() {
        let data = bytes(20 * 1024, 4);
        let (_a_dir, a_store, root, _) = server_with_dag(&data);
        let (_b_dir, b_store) = open_store();
        let mut a = swarm(a_store, Config::default());
        let mut b = swarm(b_store.clone(), Config::default());
        let mut r = Swarm::new_ephemeral_tokio(|_| raw::Raw::default());
        a.listen().with_memory_addr_external().await;
        r.connect(&mut a).await;
        b.connect(&mut a).await;
        let a_id = *a.local_peer_id();
        tokio::spawn(a.loop_on_next());

        // Random bytes; a 5 MiB length prefix; a varint that never ends; a
        // truncated frame; a message with 10k entries (over the decode cap,
        // under the frame cap); a 100k-entry wantlist (over the frame cap);
        // and more streams than a connection keeps.
        let mut oversized = Vec::new();
        crate::unixfs::pb::put_varint(&mut oversized, 5 << 20);
        oversized.extend_from_slice(&[0; 1024]);
        let many = |n: u32| {
            let wants: Vec<_> = (0..n)
                .map(|i| {
                    let c = Block::new(
                        cid::Version::V1,
                        crate::block::RAW,
                        i.to_be_bytes().to_vec(),
                    )
                    .cid;
                    (c, WantType::Have)
                })
                .collect();
            want_frame(&wants)
        };
        let mut garbage = vec![
            bytes(64 << 10, 5),
            oversized,
            vec![0xff; 32],
            vec![0x80, 0x80, 0x01, 1, 2, 3],
            many(10_000),
            many(100_000),
        ];
        for i in 0..(MAX_INBOUND_STREAMS_PER_CONNECTION as u64 + 8) {
            garbage.push(bytes(100, 100 + i));
        }
        for g in garbage {
            r.behaviour_mut().send(a_id, g);
        }
        // Meanwhile B fetches the whole DAG from A.
        let fetch = fetch_dag(&mut b, &b_store, root);
        let raw_side = async {
            // Drive R (its writes) until B is done; R should hear nothing.
            tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    if let SwarmEvent::Behaviour(e) = r.select_next_some().await {
                        panic!("garbage got an answer: {e:?}");
                    }
                }
            })
            .await
        };
        let (_, _) = futures::future::join(fetch, raw_side).await;
        // A bad message then a good one on one stream: only the first is lost.
        let mut mixed = many(10_000);
        mixed.extend(want_frame(&[(root, WantType::Block)]));
        r.behaviour_mut().send(a_id, mixed);
        let m = raw::next_message(&mut r).await;
        assert_eq!(
            m.blocks.iter().map(|b| b.cid).collect::<Vec<_>>(),
            vec![root],
            "the good message after a bad one is answered"
        );
        let mut out = Vec::new();
        crate::unixfs::export::cat(&b_store, &root, &mut out).unwrap();
        assert!(out == data);
        assert!(r.is_connected(&a_id) && b.is_connected(&a_id));
    }

    /// A test-only behaviour: each `send` opens a fresh bitswap stream,
    /// writes the bytes as they are and closes it; every message the other
    /// side sends on its own streams comes out as an event.
    mod raw {
        use std::collections::VecDeque;
        use std::task::{Context, Poll};

        use futures::future::BoxFuture;
        use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
        use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
        use libp2p::core::transport::PortUse;
        use libp2p::core::Endpoint;
        use libp2p::swarm::handler::{
            ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        };
        use libp2p::swarm::{
            ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
            NetworkBehaviour, NotifyHandler, SubstreamProtocol, Swarm, SwarmEvent, THandler,
            THandlerInEvent, THandlerOutEvent, ToSwarm,
        };
        use libp2p::{Multiaddr, PeerId};

        use crate::bitswap::handler::Upgrade;
        use crate::bitswap::message::{FrameDecoder, Message};

        #[derive(Debug)]
        pub(super) enum RawEvent {
            Message(Message),
        }

        #[derive(Default)]
        pub(super) struct Raw {
            out: VecDeque<ToSwarm<RawEvent, Vec<u8>>>,
        }

        impl Raw {
            pub(super) fn send(&mut self, peer: PeerId, bytes: Vec<u8>) {
                self.out.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::Any,
                    event: bytes,
                });
            }
        }

        pub(super) async fn next_message(r: &mut Swarm<Raw>) -> Message {
            loop {
                let e = tokio::time::timeout(super::WAIT, r.select_next_some())
                    .await
                    .expect("no answer");
                if let SwarmEvent::Behaviour(RawEvent::Message(m)) = e {
                    return m;
                }
            }
        }

        impl NetworkBehaviour for Raw {
            type ConnectionHandler = RawHandler;
            type ToSwarm = RawEvent;

            fn handle_established_inbound_connection(
                &mut self,
                _: ConnectionId,
                _: PeerId,
                _: &Multiaddr,
                _: &Multiaddr,
            ) -> Result<THandler<Self>, ConnectionDenied> {
                Ok(RawHandler::default())
            }

            fn handle_established_outbound_connection(
                &mut self,
                _: ConnectionId,
                _: PeerId,
                _: &Multiaddr,
                _: Endpoint,
                _: PortUse,
            ) -> Result<THandler<Self>, ConnectionDenied> {
                Ok(RawHandler::default())
            }

            fn on_swarm_event(&mut self, _: FromSwarm) {}

            fn on_connection_handler_event(
                &mut self,
                _: PeerId,
                _: ConnectionId,
                m: THandlerOutEvent<Self>,
            ) {
                self.out
                    .push_back(ToSwarm::GenerateEvent(RawEvent::Message(m)));
            }

            fn poll(
                &mut self,
                _: &mut Context<'_>,
            ) -> Poll<ToSwarm<RawEvent, THandlerInEvent<Self>>> {
                match self.out.pop_front() {
                    Some(e) => Poll::Ready(e),
                    None => Poll::Pending,
                }
            }
        }

        #[derive(Default)]
        pub(super) struct RawHandler {
            to_open: VecDeque<Vec<u8>>,
            writes: FuturesUnordered<BoxFuture<'static, ()>>,
            reads: SelectAll<BoxStream<'static, Message>>,
        }

        impl ConnectionHandler for RawHandler {
            type FromBehaviour = Vec<u8>;
            type ToBehaviour = Message;
            type InboundProtocol = Upgrade;
            type OutboundProtocol = Upgrade;
            type InboundOpenInfo = ();
            type OutboundOpenInfo = Vec<u8>;

            fn listen_protocol(&self) -> SubstreamProtocol<Upgrade> {
                SubstreamProtocol::new(Upgrade, ())
            }

            fn connection_keep_alive(&self) -> bool {
                true
            }

            fn on_behaviour_event(&mut self, bytes: Vec<u8>) {
                self.to_open.push_back(bytes);
            }

            fn poll(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<ConnectionHandlerEvent<Upgrade, Vec<u8>, Message>> {
                if let Some(bytes) = self.to_open.pop_front() {
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(Upgrade, bytes),
                    });
                }
                while let Poll::Ready(Some(())) = self.writes.poll_next_unpin(cx) {}
                match self.reads.poll_next_unpin(cx) {
                    Poll::Ready(Some(m)) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(m)),
                    _ => Poll::Pending,
                }
            }

            fn on_connection_event(
                &mut self,
                event: ConnectionEvent<Upgrade, Upgrade, (), Vec<u8>>,
            ) {
                match event {
                    ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                        protocol: (mut stream, _),
                        info: bytes,
                    }) => self.writes.push(
                        async move {
                            // The peer may reset a stream it dislikes: ignore.
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.close().await;
                        }
                        .boxed(),
                    ),
                    ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                        protocol: (stream, _),
                        ..
                    }) => {
                        let s = futures::stream::unfold(
                            (stream, FrameDecoder::new(), VecDeque::new()),
                            |(mut stream, mut dec, mut ready)| async move {
                                loop {
                                    if let Some(m) = ready.pop_front() {
                                        return Some((m, (stream, dec, ready)));
                                    }
                                    let mut buf = vec![0; 64 << 10];
                                    let n = stream.read(&mut buf).await.ok()?;
                                    if n == 0 {
                                        return None;
                                    }
                                    for f in dec.push(&buf[..n]).ok()? {
                                        ready.push_back(Message::decode(f).ok()?);
                                    }
                                }
                            },
                        );
                        self.reads.push(s.boxed());
                    }
                    _ => {}
                }
            }
        }
    }
}
