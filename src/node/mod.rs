//! The in-process libp2p node: swarm assembly, its actor, and the local control RPC.
//!
//! Shape (rust-libp2p examples/file-sharing/src/network.rs): [`Node`] is a cheap, cloneable
//! handle holding a bounded channel of commands, each with a oneshot reply; [`NodeLoop`] owns the
//! `Swarm` and is the only code that touches it, `select!`ing over swarm events, commands and the
//! shutdown signal. The CLI's `daemon` builds both with [`spawn`], runs the loop on tokio, and
//! serves [`rpc`] over the handle; other CLI verbs reach a running daemon through [`client`].
//!
//! Transports: TCP (TLS as go-libp2p picks its cipher, [`tls`], or noise; then yamux) and QUIC
//! v1 ([`quic`], which reads go-libp2p's one-shot streams), as Kubo listens by default.
//! Protocols: identify, ping, mDNS, peering, connection limits and bitswap ([`behaviour`]).

pub mod add;
pub mod behaviour;
pub mod blocks;
pub mod client;
pub mod content;
mod event_loop;
pub mod fetch;
mod handle;
pub mod identity;
pub mod peering;
pub mod pins;
pub mod query;
mod quic;
pub mod repo_stat;
pub mod rpc;
mod store_writer;
pub mod tls;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

pub use event_loop::NodeLoop;
pub use handle::Node;

/// What identify tells peers we are: `wanda-ipfs/<version>`, as Kubo says `kubo/<version>/`.
pub const AGENT_VERSION: &str = concat!("wanda-ipfs/", env!("CARGO_PKG_VERSION"));
/// The identify protocol version Kubo and every IPFS implementation announce.
pub const PROTOCOL_VERSION: &str = "ipfs/0.1.0";
/// Stream protocols the node answers, for `id`'s `Protocols` (identify gathers the same list per
/// connection, but a swarm with no connection cannot be asked). Keep in step with
/// [`behaviour::Behaviour`].
pub const PROTOCOLS: &[&str] = &[
    "/ipfs/bitswap",
    "/ipfs/bitswap/1.0.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.2.0",
    "/ipfs/id/1.0.0",
    "/ipfs/id/push/1.0.0",
    "/ipfs/ping/1.0.0",
];
/// Commands waiting for the node loop; senders wait when it is full (backpressure, not memory).
const COMMAND_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} '{addr}' is not a valid multiaddr ({reason})")]
    BadAddress {
        what: &'static str,
        addr: String,
        reason: String,
    },
    #[error("{what} '{addr}' must end in /p2p/<peer id>")]
    NoPeerId { what: &'static str, addr: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: Multiaddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start mDNS: {0}")]
    Mdns(#[source] std::io::Error),
    #[error("cannot set up the {0} transport: {1}")]
    Transport(&'static str, String),
    #[error("connecting to {peer} at {addr}: {reason}")]
    Dial {
        /// Base58, not `PeerId`: keeps every `Result<_, Error>` small (clippy::result_large_err).
        peer: String,
        addr: Multiaddr,
        reason: String,
    },
    #[error("the node has stopped")]
    Stopped,
    #[error("bitswap: {0}")]
    Fetch(#[from] crate::bitswap::GetError),
    #[error("the blockstore: {0}")]
    Store(String),
    #[error("block {cid} is not a readable dag-pb node: {reason}")]
    BadBlock { cid: String, reason: String },
    #[error(transparent)]
    Identity(#[from] identity::Error),
}

/// Everything the node needs to start, already parsed and checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where to listen (`[swarm] listen`, or `daemon --listen`).
    pub listen: Vec<Multiaddr>,
    /// mDNS on or off.
    pub mdns: bool,
    /// Peers to keep connected, with their addresses (no `/p2p/` suffix).
    pub peering: Vec<(PeerId, Vec<Multiaddr>)>,
    pub idle_timeout: Duration,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub max_pending: u32,
    /// How long a bitswap fetch waits for a block.
    pub fetch_timeout: Duration,
}

impl NodeConfig {
    /// The node's part of the config file, parsed.
    pub fn from_config(c: &crate::config::Config) -> Result<NodeConfig, Error> {
        let listen = c
            .swarm
            .listen
            .iter()
            .map(|a| parse_multiaddr("swarm.listen address", a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut grouped: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        let mut order = Vec::new();
        for a in &c.peering.peers {
            let (peer, addr) = split_peer("peering.peers address", a)?;
            let e = grouped.entry(peer).or_insert_with(|| {
                order.push(peer);
                Vec::new()
            });
            e.push(addr);
        }
        let peering = order
            .into_iter()
            .map(|p| (p, grouped.remove(&p).unwrap_or_default()))
            .collect();
        Ok(NodeConfig {
            listen,
            mdns: c.discovery.mdns,
            peering,
            idle_timeout: Duration::from_secs(c.swarm.idle_timeout_secs),
            max_connections: c.swarm.max_connections,
            max_connections_per_peer: c.swarm.max_connections_per_peer,
            max_pending: c.swarm.max_pending,
            fetch_timeout: Duration::from_secs(c.swarm.fetch_timeout_secs),
        })
    }
}

/// Parses a multiaddr, naming what it was for in the error.
pub fn parse_multiaddr(what: &'static str, s: &str) -> Result<Multiaddr, Error> {
    s.parse()
        .map_err(|e: libp2p::multiaddr::Error| Error::BadAddress {
            what,
            addr: s.to_string(),
            reason: e.to_string(),
        })
}

/// Splits `/…/p2p/<id>` into the peer and the address before it.
pub fn split_peer(what: &'static str, s: &str) -> Result<(PeerId, Multiaddr), Error> {
    let mut addr = parse_multiaddr(what, s)?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(Error::NoPeerId {
            what,
            addr: s.to_string(),
        }),
    }
}

/// `id`'s answer, shaped like Kubo 0.22's `ipfs id` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdInfo {
    #[serde(rename = "ID")]
    pub id: String,
    /// Base64 of the libp2p protobuf public key.
    pub public_key: String,
    /// Listen addresses ending in `/p2p/<id>`; `None` (JSON null) when the daemon is not running.
    pub addresses: Option<Vec<String>>,
    pub agent_version: String,
    pub protocol_version: String,
    /// `None` offline, as Kubo prints.
    pub protocols: Option<Vec<String>>,
}

impl IdInfo {
    /// The node's identity; `addrs` are its listen addresses when it runs.
    pub fn new(key: &libp2p::identity::PublicKey, addrs: Option<&[Multiaddr]>) -> IdInfo {
        let peer = key.to_peer_id();
        IdInfo {
            id: peer.to_base58(),
            public_key: data_encoding::BASE64.encode(&key.encode_protobuf()),
            addresses: addrs.map(|a| {
                a.iter()
                    .map(|m| m.clone().with_p2p(peer).unwrap_or_else(|m| m).to_string())
                    .collect()
            }),
            agent_version: AGENT_VERSION.to_string(),
            protocol_version: PROTOCOL_VERSION.to_string(),
            protocols: addrs.map(|_| PROTOCOLS.iter().map(|p| p.to_string()).collect()),
        }
    }
}

/// One connected peer, shaped like an entry of Kubo's `swarm peers` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerInfo {
    /// The remote address of one connection (without `/p2p/`).
    pub addr: String,
    pub peer: String,
    /// Last ping round trip, e.g. `1.2ms`; empty when not measured yet (as Kubo).
    pub latency: String,
    /// Kubo's numbering: 1 inbound, 2 outbound.
    pub direction: u8,
    /// What identify told us, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identify: Option<PeerIdentify>,
}

/// A peer mDNS found on the local network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdnsPeer {
    pub peer: String,
    /// Whether a connection to it is open now.
    pub connected: bool,
}

/// The part of a peer's identify answer `swarm peers` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerIdentify {
    pub agent_version: String,
    pub protocol_version: String,
    pub protocols: Vec<String>,
}

/// Builds the swarm and the actor pair. Nothing runs until [`NodeLoop::run`] is polled.
///
/// `store` is the repo's blockstore, kept by the loop for the bitswap behaviour to come.
pub fn spawn(
    key: Keypair,
    config: NodeConfig,
    store: crate::blockstore::FsBlockstore,
) -> Result<(Node, NodeLoop), Error> {
    let behaviour_config = config.clone();
    let behaviour_store = store.clone();
    let public_key = key.public();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            // Small request/response exchanges (identify, later bitswap wants) should not wait
            // for Nagle.
            tcp::Config::default().nodelay(true),
            // TLS first, then noise: go-libp2p's order, so Kubo and we meet on TLS (AES-GCM
            // where the CPU has it, see [`tls`]) and anything speaking only noise still works.
            (tls::Config::new, noise::Config::new),
            yamux::Config::default,
        )
        .map_err(|e| Error::Transport("tcp+tls/noise", e.to_string()))?
        .with_other_transport(quic::transport)
        .map_err(|e| Error::Transport("quic", e.to_string()))?
        .with_behaviour(|key| {
            behaviour::Behaviour::new(key, &behaviour_config, behaviour_store)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| Error::Mdns(std::io::Error::other(e.to_string())))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    let (tx, rx) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
    Ok((
        Node::new(tx, store.clone()),
        NodeLoop::new(swarm, public_key, rx, config, store)
            .map_err(|e| Error::Store(format!("cannot start the store writer: {e}")))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_addresses_parse_and_peers_group() {
        let mut c = crate::config::Config::default();
        assert_eq!(NodeConfig::from_config(&c).unwrap().listen.len(), 4);
        let p = PeerId::random();
        c.peering.peers = vec![
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{p}"),
            format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{p}"),
        ];
        let n = NodeConfig::from_config(&c).unwrap();
        assert_eq!(n.peering.len(), 1);
        assert_eq!(n.peering[0].0, p);
        assert_eq!(n.peering[0].1[0].to_string(), "/ip4/10.0.0.1/tcp/4001");
        c.peering.peers = vec!["/ip4/10.0.0.1/tcp/4001".into()];
        let e = NodeConfig::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("/p2p/<peer id>"), "{e}");
        c.peering.peers.clear();
        c.swarm.listen = vec!["/ip4/nope".into()];
        assert!(NodeConfig::from_config(&c).is_err());
    }

    #[test]
    fn id_info_is_kubo_shaped() {
        let k = Keypair::generate_ed25519();
        let off = serde_json::to_value(IdInfo::new(&k.public(), None)).unwrap();
        assert_eq!(off["Addresses"], serde_json::Value::Null);
        assert_eq!(off["AgentVersion"], AGENT_VERSION);
        assert!(off["ID"].as_str().unwrap().starts_with("12D3KooW"));
        let pk = data_encoding::BASE64
            .decode(off["PublicKey"].as_str().unwrap().as_bytes())
            .unwrap();
        assert_eq!(
            libp2p::identity::PublicKey::try_decode_protobuf(&pk).unwrap(),
            k.public()
        );
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let on = IdInfo::new(&k.public(), Some(std::slice::from_ref(&a)));
        assert_eq!(
            on.addresses.unwrap(),
            vec![format!("{a}/p2p/{}", k.public().to_peer_id())]
        );
    }
}
