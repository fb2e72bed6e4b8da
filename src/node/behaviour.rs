//! The composed [`NetworkBehaviour`]: one field per protocol, joined with the derive macro as
//! rust-libp2p's examples/chat does.
//!
//! Order matters a little: the derive polls and asks fields in declaration order, so
//! `limits` comes first and denies a connection before any protocol sets up state for it.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{connection_limits, identify, mdns, ping};

use super::{peering, NodeConfig, AGENT_VERSION, PROTOCOL_VERSION};

/// Identify re-runs this often on a connection (libp2p's default is 5 minutes; Kubo's too).
const IDENTIFY_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Everything the node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// `[swarm] max_*`: denies connections over the limits before anything else sees them.
    pub limits: connection_limits::Behaviour,
    /// `/ipfs/id/1.0.0` (+ push): our agent, protocols and listen addresses; theirs likewise.
    pub identify: identify::Behaviour,
    /// `/ipfs/ping/1.0.0`: liveness and the latency `swarm peers` shows.
    pub ping: ping::Behaviour,
    /// mDNS discovery, off with `--no-mdns` / `[discovery] mdns = false`.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Keeps `[peering] peers` and mDNS-found peers connected.
    pub peering: peering::Behaviour,
    /// Serves blocks from the repo's store and fetches missing ones.
    pub bitswap: crate::bitswap::Behaviour,
}

impl Behaviour {
    /// Builds every part from the node's config; fails only if mDNS cannot open its sockets.
    pub fn new(
        key: &Keypair,
        config: &NodeConfig,
        store: crate::blockstore::FsBlockstore,
    ) -> std::io::Result<Behaviour> {
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending))
            .with_max_pending_outgoing(Some(config.max_pending));
        let identify = identify::Behaviour::new(
            identify::Config::new(PROTOCOL_VERSION.to_string(), key.public())
                .with_agent_version(AGENT_VERSION.to_string())
                .with_interval(IDENTIFY_INTERVAL)
                // New listen addresses (a QUIC listener coming up late, an interface) reach peers.
                .with_push_listen_addr_updates(true),
        );
        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                key.public().to_peer_id(),
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: Toggle::from(mdns),
            peering: peering::Behaviour::new(peering::Config::default()),
            bitswap: crate::bitswap::Behaviour::new(
                store,
                crate::bitswap::Config::default().with_get_timeout(config.fetch_timeout),
            ),
        })
    }
}
