//! [`NodeLoop`]: owns the `Swarm` and serves [`Command`]s. Nothing else touches the swarm.
//!
//! It keeps a small per-peer view (connections, identify answer, last ping) for `swarm peers`,
//! feeds mDNS discoveries into peering (which dials them and keeps them), and parks command replies
//! that wait on the network (listeners coming up, dials) in maps keyed by listener or peer.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use multihash::Multihash;

use futures::StreamExt;
use libp2p::core::transport::{ListenerId, TransportError};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, Swarm, SwarmEvent};
use libp2p::{identify, mdns, ping, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::handle::Command;
use super::peering::Source;
use super::store_writer::{StoreWriter, Stored};
use super::{Error, IdInfo, MdnsPeer, NodeConfig, PeerIdentify, PeerInfo};
use crate::bitswap::QueryId;

/// Per-connection facts `swarm peers` reports.
struct Conn {
    addr: Multiaddr,
    outbound: bool,
}

#[derive(Default)]
struct PeerView {
    conns: HashMap<ConnectionId, Conn>,
    identify: Option<PeerIdentify>,
    rtt: Option<Duration>,
}

type ListenReply = oneshot::Sender<Result<Vec<Multiaddr>, Error>>;
type ConnectReply = oneshot::Sender<Result<PeerId, Error>>;
type WantReply = oneshot::Sender<Result<Bytes, Error>>;

/// The task that drives the swarm.
pub struct NodeLoop {
    swarm: Swarm<Behaviour>,
    /// Ours (the swarm keeps only the peer id).
    public_key: libp2p::identity::PublicKey,
    commands: mpsc::Receiver<Command>,
    config: NodeConfig,
    /// Fetched blocks go to the repo's blockstore through this, in group commits.
    writer: StoreWriter,
    stored_rx: mpsc::Receiver<Stored>,
    /// Fetched blocks queued for the writer, with the wants they answer once stored (so a
    /// requester never runs further ahead of the disk than its own window of blocks).
    storing: HashMap<Multihash<64>, (Bytes, Vec<WantReply>)>,
    /// `Want` commands by the bitswap get that will answer them.
    pending_wants: HashMap<QueryId, WantReply>,
    peers: HashMap<PeerId, PeerView>,
    /// A `Listen` command waiting for these listeners to report their first address.
    pending_listen: Option<(HashMap<ListenerId, Multiaddr>, ListenReply)>,
    /// `Connect` commands by peer, with the dial each started.
    pending_connect: HashMap<PeerId, Vec<(ConnectionId, Multiaddr, ConnectReply)>>,
}

impl NodeLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        public_key: libp2p::identity::PublicKey,
        commands: mpsc::Receiver<Command>,
        config: NodeConfig,
        store: crate::blockstore::FsBlockstore,
    ) -> std::io::Result<NodeLoop> {
        let (writer, stored_rx) = StoreWriter::spawn(store)?;
        Ok(NodeLoop {
            swarm,
            public_key,
            commands,
            config,
            writer,
            stored_rx,
            storing: HashMap::new(),
            pending_wants: HashMap::new(),
            peers: HashMap::new(),
            pending_listen: None,
            pending_connect: HashMap::new(),
        })
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs until `shutdown` turns true (or every [`super::Node`] handle is gone).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        for (peer, addrs) in self.config.peering.clone() {
            self.swarm
                .behaviour_mut()
                .peering
                .add_peer(peer, addrs, Source::Configured);
        }
        loop {
            tokio::select! {
                // Local work first (docs/coding-guidelines.md): drain the swarm before new commands.
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(stored) = self.stored_rx.recv() => self.on_stored(stored),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
            }
        }
        tracing::info!("node stopping: closing connections");
        // Dropping the swarm closes every listener and connection; answer waiters first.
        if let Some((_, reply)) = self.pending_listen.take() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for (_, waiters) in self.pending_connect.drain() {
            for (_, _, reply) in waiters {
                let _ = reply.send(Err(Error::Stopped));
            }
        }
        for (_, reply) in self.pending_wants.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
        for (_, (_, waiters)) in self.storing.drain() {
            for w in waiters {
                let _ = w.send(Err(Error::Stopped));
            }
        }
    }

    fn on_stored(&mut self, stored: Stored) {
        for cid in &stored.cids {
            if let Some((data, waiters)) = self.storing.remove(cid.hash()) {
                // Stored or not, the requesters get the verified bytes; a failure is logged below.
                for w in waiters {
                    let _ = w.send(Ok(data.clone()));
                }
            }
        }
        match stored.error {
            None => self
                .swarm
                .behaviour_mut()
                .bitswap
                .notify_new_blocks(&stored.cids),
            // The requesters already have the bytes; the store will ask again when needed.
            Some(e) => {
                tracing::warn!(error = %e, blocks = stored.cids.len(), "storing fetched blocks failed")
            }
        }
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut v: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        for a in self.swarm.external_addresses() {
            if !v.contains(a) {
                v.push(a.clone());
            }
        }
        v
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Listen { addrs, reply } => {
                let mut ids = HashMap::new();
                for addr in addrs {
                    match self.swarm.listen_on(addr.clone()) {
                        Ok(id) => {
                            ids.insert(id, addr);
                        }
                        Err(e) => {
                            let source = match e {
                                TransportError::MultiaddrNotSupported(a) => std::io::Error::new(
                                    std::io::ErrorKind::Unsupported,
                                    format!("no transport for {a}: use /tcp/ or /udp/…/quic-v1"),
                                ),
                                TransportError::Other(e) => e,
                            };
                            let _ = reply.send(Err(Error::Listen { addr, source }));
                            return;
                        }
                    }
                }
                if ids.is_empty() {
                    let _ = reply.send(Ok(self.listen_addrs()));
                } else {
                    self.pending_listen = Some((ids, reply));
                }
            }
            Command::Id { reply } => {
                let _ = reply.send(IdInfo::new(&self.public_key, Some(&self.listen_addrs())));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::MdnsPeers { reply } => {
                let _ = reply.send(self.mdns_peers());
            }
            Command::Connect { peer, addr, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    // Dial even if peering is dialing too: the user named this address.
                    .condition(PeerCondition::Disconnected)
                    .build();
                let conn = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => self
                        .pending_connect
                        .entry(peer)
                        .or_default()
                        .push((conn, addr, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dial {
                            peer: peer.to_base58(),
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Notify { cids } => {
                self.swarm.behaviour_mut().bitswap.notify_new_blocks(&cids);
            }
            Command::SetClusterPeers { peers } => {
                let peering = &mut self.swarm.behaviour_mut().peering;
                for old in peering.cluster_peers() {
                    if !peers.iter().any(|(p, _)| *p == old) {
                        peering.remove_peer(&old, Source::Cluster);
                    }
                }
                for (peer, addrs) in peers {
                    peering.add_peer(peer, addrs, Source::Cluster);
                }
            }
            Command::Want { cid, reply } => {
                if let Some((_, waiters)) = self.storing.get_mut(cid.hash()) {
                    waiters.push(reply);
                    return;
                }
                // Requesters that gave up leave closed replies behind: drop them as we go.
                self.pending_wants.retain(|_, r| !r.is_closed());
                let query = self.swarm.behaviour_mut().bitswap.get(cid);
                self.pending_wants.insert(query, reply);
            }
        }
    }

    fn mdns_peers(&self) -> Vec<MdnsPeer> {
        let Some(mdns) = self.swarm.behaviour().mdns.as_ref() else {
            return Vec::new();
        };
        // One entry per advertised address: a peer is listed once.
        let peers: std::collections::BTreeSet<PeerId> = mdns.discovered_nodes().copied().collect();
        peers
            .into_iter()
            .map(|peer| MdnsPeer {
                connected: self.swarm.is_connected(&peer),
                peer: peer.to_string(),
            })
            .collect()
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut v = Vec::new();
        for (peer, view) in &self.peers {
            for c in view.conns.values() {
                v.push(PeerInfo {
                    addr: c.addr.to_string(),
                    peer: peer.to_base58(),
                    latency: view.rtt.map(|d| format!("{d:?}")).unwrap_or_default(),
                    direction: if c.outbound { 2 } else { 1 },
                    identify: view.identify.clone(),
                });
            }
        }
        v.sort_by(|a, b| (&a.peer, &a.addr).cmp(&(&b.peer, &b.addr)));
        v
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "listening");
                if let Some((ids, _)) = &mut self.pending_listen {
                    ids.remove(&listener_id);
                    if ids.is_empty() {
                        if let Some((_, reply)) = self.pending_listen.take() {
                            let _ = reply.send(Ok(self.listen_addrs()));
                        }
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "no longer listening");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                tracing::warn!(?addresses, ?reason, "listener closed");
                self.fail_pending_listen(listener_id, reason.err());
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(%error, "listener error");
                self.fail_pending_listen(listener_id, Some(error));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let (addr, outbound) = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        (send_back_addr.clone(), false)
                    }
                };
                tracing::info!(peer = %peer_id, %addr, outbound, "connected");
                let addr = strip_p2p(addr);
                self.peers
                    .entry(peer_id)
                    .or_default()
                    .conns
                    .insert(connection_id, Conn { addr, outbound });
                // Any connection to the peer answers every `swarm connect` waiting on it.
                for (_, _, reply) in self.pending_connect.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::info!(peer = %peer_id, cause = ?cause, "connection closed");
                if let Some(view) = self.peers.get_mut(&peer_id) {
                    view.conns.remove(&connection_id);
                    if view.conns.is_empty() {
                        self.peers.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id: Some(peer),
                error,
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                if let Some(waiters) = self.pending_connect.get_mut(&peer) {
                    if let Some(i) = waiters.iter().position(|w| w.0 == connection_id) {
                        let (_, addr, reply) = waiters.swap_remove(i);
                        let _ = reply.send(Err(Error::Dial {
                            peer: peer.to_base58(),
                            addr,
                            reason: error.to_string(),
                        }));
                    }
                    if waiters.is_empty() {
                        self.pending_connect.remove(&peer);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn fail_pending_listen(&mut self, id: ListenerId, error: Option<std::io::Error>) {
        let waiting = self
            .pending_listen
            .as_ref()
            .is_some_and(|(ids, _)| ids.contains_key(&id));
        if waiting {
            if let Some((mut ids, reply)) = self.pending_listen.take() {
                let addr = ids.remove(&id).unwrap_or_else(Multiaddr::empty);
                let source = error.unwrap_or_else(|| std::io::Error::other("listener closed"));
                let _ = reply.send(Err(Error::Listen { addr, source }));
            }
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                if let Some(view) = self.peers.get_mut(&peer_id) {
                    view.identify = Some(PeerIdentify {
                        agent_version: info.agent_version,
                        protocol_version: info.protocol_version,
                        protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                    });
                }
            }
            BehaviourEvent::Identify(identify::Event::Error { peer_id, error, .. }) => {
                tracing::debug!(peer = %peer_id, %error, "identify failed");
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Bitswap(crate::bitswap::Event::Block {
                cid,
                data,
                from,
                queries,
            }) => {
                tracing::debug!(%cid, peer = %from, bytes = data.len(), "bitswap: block received");
                let waiters: Vec<WantReply> = queries
                    .iter()
                    .filter_map(|q| self.pending_wants.remove(q))
                    .collect();
                if self.storing.contains_key(cid.hash()) {
                    // Already queued (a second peer sent it too): its waiters join the first's.
                    if let Some((_, w)) = self.storing.get_mut(cid.hash()) {
                        w.extend(waiters);
                    }
                    return;
                }
                // The behaviour verified the bytes against the CID; disk writes stay off this thread.
                let block = crate::block::Block {
                    cid,
                    data: data.clone(),
                };
                if self.writer.store(block) {
                    self.storing.insert(*cid.hash(), (data, waiters));
                } else {
                    tracing::warn!(%cid, "the store writer is full or stopped; fetched block not stored");
                    for w in waiters {
                        let _ = w.send(Ok(data.clone()));
                    }
                }
            }
            BehaviourEvent::Bitswap(crate::bitswap::Event::GetFailed { query, cid, error }) => {
                tracing::info!(%cid, %error, "bitswap: fetch failed");
                if let Some(reply) = self.pending_wants.remove(&query) {
                    let _ = reply.send(Err(Error::Fetch(error)));
                }
            }
            BehaviourEvent::Ping(ping::Event { peer, result, .. }) => {
                if let (Ok(rtt), Some(view)) = (result, self.peers.get_mut(&peer)) {
                    view.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addrs) in group(found) {
                    tracing::info!(%peer, ?addrs, "mDNS: discovered");
                    self.swarm
                        .behaviour_mut()
                        .peering
                        .add_peer(peer, addrs, Source::Discovered);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(gone)) => {
                for (peer, _) in group(gone) {
                    // mDNS may still know the peer by another address; only a full expiry lets go.
                    if !self
                        .swarm
                        .behaviour()
                        .mdns
                        .as_ref()
                        .is_some_and(|m| m.discovered_nodes().any(|p| *p == peer))
                    {
                        tracing::info!(%peer, "mDNS: expired");
                        self.swarm
                            .behaviour_mut()
                            .peering
                            .remove_peer(&peer, Source::Discovered);
                    }
                }
            }
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Peering(never) => match never {},
        }
    }
}

/// mDNS reports (peer, addr) pairs; peering wants each peer once with all its addresses.
fn group(pairs: Vec<(PeerId, Multiaddr)>) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for (peer, addr) in pairs {
        let addr = strip_p2p(addr);
        match out.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, v)) => v.push(addr),
            None => out.push((peer, vec![addr])),
        }
    }
    out
}

fn strip_p2p(mut a: Multiaddr) -> Multiaddr {
    if matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
        a.pop();
    }
    a
}
