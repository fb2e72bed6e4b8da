//! [`Node`]: the cloneable handle every other part (RPC, CLI, later the pipeline) uses to ask
//! the node loop for something. Each call is one [`Command`] with a oneshot reply.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use super::{Error, IdInfo, PeerInfo};

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
    /// Dials `peer` at `addr`; replies once connected (or the dial failed).
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
}

/// Handle to a running node. Cheap to clone; every clone talks to the same loop.
#[derive(Debug, Clone)]
pub struct Node {
    tx: mpsc::Sender<Command>,
}

impl Node {
    pub(crate) fn new(tx: mpsc::Sender<Command>) -> Node {
        Node { tx }
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

    /// Connects to `/…/p2p/<id>` (Kubo's `swarm connect`); returns the peer once connected.
    /// The caller bounds the wait; a dial that never answers is ended by the transport's timeout.
    pub async fn connect(&self, addr: &str) -> Result<PeerId, Error> {
        let (peer, addr) = super::split_peer("address", addr)?;
        self.ask(|reply| Command::Connect { peer, addr, reply })
            .await?
    }
}
