//! [`Node`]: the cloneable handle every other part (RPC, CLI, later the pipeline) uses to ask
//! the node loop for something. Each call is one [`Command`] with a oneshot reply.

use bytes::Bytes;
use cid::Cid;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::blockstore::{self, BlockSource, FsBlockstore};

use super::{Error, IdInfo, MdnsPeer, PeerInfo};

/// A request to the node loop. Public to the crate so the lead can add bitswap commands beside.
#[derive(Debug)]
pub(crate) enum Command {
    /// Starts listeners; replies once each has an address (or one failed).
    Listen {
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, Error>>,
    },
    /// Our identity and listen addresses.
    Id { reply: oneshot::Sender<IdInfo> },
    /// Connected peers, one entry per connection.
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// Peers mDNS currently knows, with their advertised addresses.
    MdnsPeers {
        reply: oneshot::Sender<Vec<MdnsPeer>>,
    },
    /// Dials `peer` at `addr`; replies once connected (or the dial failed).
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    /// Blocks just stored: peers waiting for them get them.
    Notify { cids: Vec<Cid> },
    /// Keeps exactly these cluster IPFS peers connected (peering, `Source::Cluster`), releasing
    /// cluster peers not listed.
    SetClusterPeers {
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    },
    /// Fetches a block the store lacks from connected peers; replies with its verified bytes
    /// (the loop also stores it).
    Want {
        cid: Cid,
        reply: oneshot::Sender<Result<Bytes, Error>>,
    },
}

/// Handle to a running node. Cheap to clone; every clone talks to the same loop.
#[derive(Debug, Clone)]
pub struct Node {
    tx: mpsc::Sender<Command>,
    /// Read directly, off the loop: a local hit never waits behind network work.
    store: FsBlockstore,
}

impl Node {
    pub(crate) fn new(tx: mpsc::Sender<Command>, store: FsBlockstore) -> Node {
        Node { tx, store }
    }

    /// The repo's blockstore, shared with the loop.
    pub fn store(&self) -> &FsBlockstore {
        &self.store
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Listens on `addrs`; returns every listen address once each listener is up.
    pub async fn listen(&self, addrs: Vec<Multiaddr>) -> Result<Vec<Multiaddr>, Error> {
        self.ask(|reply| Command::Listen { addrs, reply }).await?
    }

    /// Our `id`, with the current listen addresses.
    pub async fn id(&self) -> Result<IdInfo, Error> {
        self.ask(|reply| Command::Id { reply }).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Peers found by mDNS and not expired (empty with discovery off).
    pub async fn mdns_peers(&self) -> Result<Vec<MdnsPeer>, Error> {
        self.ask(|reply| Command::MdnsPeers { reply }).await
    }

    /// Connects to `/…/p2p/<id>` (Kubo's `swarm connect`); returns the peer once connected.
    /// The caller bounds the wait; a dial that never answers is ended by the transport's timeout.
    pub async fn connect(&self, addr: &str) -> Result<PeerId, Error> {
        let (peer, addr) = super::split_peer("address", addr)?;
        self.ask(|reply| Command::Connect { peer, addr, reply })
            .await?
    }

    /// Keeps the IPFS daemons at `addrs` (each ending in `/p2p/<id>`) connected, dialing out and
    /// redialing with backoff, and stops keeping cluster peers not named. An empty list releases
    /// them all. Addresses without a peer id are skipped.
    pub async fn set_cluster_peers(&self, addrs: &[Multiaddr]) -> Result<(), Error> {
        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for a in addrs {
            let Ok((peer, addr)) = super::split_peer("cluster peer address", &a.to_string()) else {
                continue;
            };
            match peers.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, v)) => v.push(addr),
                None => peers.push((peer, vec![addr])),
            }
        }
        self.tx
            .send(Command::SetClusterPeers { peers })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Tells the node these blocks were just stored (an import), so peers that want them get
    /// them at once. Blocking: call from a blocking thread.
    pub fn notify_new_blocks(&self, cids: Vec<Cid>) {
        // A stopped node has no peers to tell.
        let _ = self.tx.blocking_send(Command::Notify { cids });
    }

    /// A block's verified bytes: from the store, or else fetched over bitswap from connected
    /// peers (and stored). Fails after bitswap's get timeout if nobody sends it.
    pub async fn block(&self, cid: Cid) -> Result<Bytes, Error> {
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || store.get(&cid))
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        match local {
            Ok(data) => Ok(data),
            Err(blockstore::Error::NotFound(_)) => {
                self.ask(|reply| Command::Want { cid, reply }).await?
            }
            Err(e) => Err(Error::Store(e.to_string())),
        }
    }

    /// Makes sure a block is stored, without reading it when it already is.
    pub async fn ensure(&self, cid: Cid) -> Result<(), Error> {
        let store = self.store.clone();
        let have = tokio::task::spawn_blocking(move || store.has(&cid))
            .await
            .map_err(|e| Error::Store(e.to_string()))?
            .map_err(|e| Error::Store(e.to_string()))?;
        if !have {
            self.ask(|reply| Command::Want { cid, reply }).await??;
        }
        Ok(())
    }
}
