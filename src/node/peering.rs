//! Peering: keep chosen peers connected, as Kubo's `Peering.Peers` does.
//!
//! A small [`NetworkBehaviour`] with no protocol of its own. For every peer it tracks it dials
//! when the peer is not connected, and after a failed dial or a lost connection it dials again
//! after a backoff that doubles up to [`Config::max_backoff`], with jitter so that peers restarted
//! together do not redial in lockstep (Kubo: boxo's peering service, 10 minute cap). Its
//! connection handler keeps the connections of tracked peers alive, so the swarm's idle timeout
//! never drops them.
//!
//! Two sources put a peer here: the config (kept for the daemon's lifetime) and mDNS discovery
//! (kept until mDNS reports it expired). A peer known from both stays until both let go.
//!
//! Assumes a tokio runtime: the redial timer is a `tokio::time::Sleep`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;
use tokio::time::{Instant, Sleep};

/// First wait before redialing (Kubo's peering starts near here too).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between redials: boxo's peering `maxBackoff`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);
/// Each wait is scaled by a factor in `[1 - JITTER, 1 + JITTER]`.
const JITTER: f64 = 0.2;
/// Addresses remembered per peer; mDNS may report many (one per interface and transport).
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// Why a peer is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[peering] peers` in the config: kept for the node's lifetime.
    Configured,
    /// Found by mDNS: kept until mDNS says it expired.
    Discovered,
    /// An IPFS daemon of the cluster: kept while pins are in flight, so it can fetch from us
    /// even when we are behind NAT (we dial out).
    Cluster,
}

/// Backoff bounds, in the libp2p builder shape.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// First redial wait. Default [`INITIAL_BACKOFF`].
    pub initial_backoff: Duration,
    /// Cap on the redial wait. Default [`MAX_BACKOFF`].
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

impl Config {
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
}

#[derive(Debug)]
struct PeerState {
    addrs: Vec<Multiaddr>,
    configured: bool,
    discovered: bool,
    cluster: bool,
    connections: HashSet<ConnectionId>,
    /// The wait after the next failure.
    backoff: Duration,
    /// When to dial next; `None` while connected or while a dial is under way.
    next_dial: Option<Instant>,
}

/// The peering behaviour.
pub struct Behaviour {
    config: Config,
    peers: HashMap<PeerId, PeerState>,
    actions: VecDeque<ToSwarm<Infallible, bool>>,
    timer: Option<Pin<Box<Sleep>>>,
    waker: Option<Waker>,
    rng: u64,
}

impl Behaviour {
    pub fn new(config: Config) -> Self {
        // Seeded from std's per-process random hasher keys: jitter needs no crypto RNG.
        let rng = RandomState::new().hash_one(std::process::id()) | 1;
        Behaviour {
            config,
            peers: HashMap::new(),
            actions: VecDeque::new(),
            timer: None,
            waker: None,
            rng,
        }
    }

    /// Keeps `peer` connected, dialing `addrs`; dials at once if it is not connected.
    pub fn add_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, source: Source) {
        let initial = self.config.initial_backoff;
        let st = self.peers.entry(peer).or_insert_with(|| PeerState {
            addrs: Vec::new(),
            configured: false,
            discovered: false,
            cluster: false,
            connections: HashSet::new(),
            backoff: initial,
            next_dial: Some(Instant::now()),
        });
        let newly_kept = !st.configured && !st.discovered && !st.cluster;
        match source {
            Source::Configured => st.configured = true,
            Source::Discovered => st.discovered = true,
            Source::Cluster => st.cluster = true,
        }
        for a in addrs {
            if !st.addrs.contains(&a) && st.addrs.len() < MAX_ADDRS_PER_PEER {
                st.addrs.push(a);
            }
        }
        if newly_kept {
            for c in &st.connections {
                self.actions.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(*c),
                    event: true,
                });
            }
        }
        self.wake();
    }

    /// Stops keeping `peer` for `source`; once no source keeps it, its connections may idle out.
    pub fn remove_peer(&mut self, peer: &PeerId, source: Source) {
        let Some(st) = self.peers.get_mut(peer) else {
            return;
        };
        match source {
            Source::Configured => st.configured = false,
            Source::Discovered => st.discovered = false,
            Source::Cluster => st.cluster = false,
        }
        if st.configured || st.discovered || st.cluster {
            return;
        }
        if let Some(st) = self.peers.remove(peer) {
            for c in st.connections {
                self.actions.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer,
                    handler: NotifyHandler::One(c),
                    event: false,
                });
            }
        }
        self.wake();
    }

    /// Peers kept for `Source::Cluster`.
    pub fn cluster_peers(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, st)| st.cluster)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether `peer` is being kept.
    pub fn is_kept(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The peers being kept.
    pub fn kept_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64: cheap, and good enough to spread redials.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
    }

    /// Schedules the next dial of `peer` after its backoff, and doubles the backoff.
    fn schedule_retry(&mut self, peer: &PeerId) {
        let Some(backoff) = self.peers.get(peer).map(|s| s.backoff) else {
            return;
        };
        let wait = self.jittered(backoff);
        let max = self.config.max_backoff;
        if let Some(st) = self.peers.get_mut(peer) {
            st.next_dial = Some(Instant::now() + wait);
            st.backoff = next_backoff(st.backoff, max);
            tracing::debug!(%peer, ?wait, "peering: redial scheduled");
        }
        self.wake();
    }
}

/// The wait after `current`: doubled, capped at `max`.
pub fn next_backoff(current: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).min(max)
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            keep_alive: self.is_kept(&peer),
        })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler {
            keep_alive: self.is_kept(&peer),
        })
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // Anyone dialing a kept peer by id alone (a later `swarm connect /p2p/ID`) gets our addresses.
        Ok(peer
            .and_then(|p| self.peers.get(&p))
            .map(|s| s.addrs.clone())
            .unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let Some(st) = self.peers.get_mut(&e.peer_id) {
                    st.connections.insert(e.connection_id);
                    st.next_dial = None;
                    st.backoff = self.config.initial_backoff;
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                let lost = match self.peers.get_mut(&e.peer_id) {
                    Some(st) => {
                        st.connections.remove(&e.connection_id);
                        st.connections.is_empty() && e.remaining_established == 0
                    }
                    None => false,
                };
                if lost {
                    tracing::info!(peer = %e.peer_id, "peering: connection lost; will redial");
                    self.schedule_retry(&e.peer_id);
                }
            }
            FromSwarm::DialFailure(e) => {
                let Some(peer) = e.peer_id else { return };
                let waiting = self
                    .peers
                    .get(&peer)
                    .is_some_and(|s| s.connections.is_empty() && s.next_dial.is_none());
                if waiting {
                    tracing::debug!(%peer, error = %e.error, "peering: dial failed");
                    self.schedule_retry(&peer);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(a) = self.actions.pop_front() {
            return Poll::Ready(a);
        }
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        let mut due: Option<PeerId> = None;
        for (peer, st) in &self.peers {
            match st.next_dial {
                Some(t) if t <= now => {
                    due = Some(*peer);
                    break;
                }
                Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                None => {}
            }
        }
        if let Some(peer) = due {
            let st = self.peers.get_mut(&peer).expect("due peer is tracked");
            st.next_dial = None;
            if st.addrs.is_empty() {
                // Nothing to dial; mDNS or a later add_peer may bring addresses.
                return self.poll(cx);
            }
            tracing::debug!(%peer, "peering: dialing");
            return Poll::Ready(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .addresses(st.addrs.clone())
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            });
        }
        self.waker = Some(cx.waker().clone());
        match earliest {
            Some(t) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(t)));
                if timer.deadline() != t {
                    timer.as_mut().reset(t);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // The deadline passed while we were scanning: look again.
                    cx.waker().wake_by_ref();
                }
            }
            None => self.timer = None,
        }
        Poll::Pending
    }
}

/// Keeps a connection alive while its peer is kept; speaks no protocol.
#[derive(Debug)]
pub struct Handler {
    keep_alive: bool,
}

impl libp2p::swarm::ConnectionHandler for Handler {
    /// Whether to keep the connection alive from now on.
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn on_behaviour_event(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => match protocol {},
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => match protocol {},
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::{Swarm, SwarmEvent};
    use libp2p_swarm_test::SwarmExt;

    /// Every wait in these tests ends by then.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn fast() -> Config {
        Config::default()
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_millis(400))
    }

    fn swarm(config: Config) -> Swarm<Behaviour> {
        Swarm::new_ephemeral_tokio(|_| Behaviour::new(config))
    }

    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f)
            .await
            .expect("peering test timed out")
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_in_bounds() {
        let max = Duration::from_secs(600);
        let mut d = INITIAL_BACKOFF;
        let mut seen = vec![d];
        for _ in 0..12 {
            d = next_backoff(d, max);
            seen.push(d);
        }
        assert_eq!(seen[1], Duration::from_secs(2));
        assert_eq!(*seen.last().unwrap(), max);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        let mut b = Behaviour::new(Config::default());
        for _ in 0..1000 {
            let j = b.jittered(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }

    #[tokio::test]
    async fn dials_a_configured_peer_by_itself() {
        let mut a = swarm(fast());
        let mut b = swarm(fast());
        let (b_addr, _) = b.listen().with_memory_addr_external().await;
        let b_id = *b.local_peer_id();
        a.behaviour_mut()
            .add_peer(b_id, vec![b_addr], Source::Configured);
        tokio::spawn(b.loop_on_next());
        let got = bounded(a.wait(|e| match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(peer_id),
            _ => None,
        }))
        .await;
        assert_eq!(got, b_id);
    }

    #[tokio::test]
    async fn redials_after_the_connection_is_lost() {
        let mut a = swarm(fast());
        let mut b = swarm(fast());
        let (b_addr, _) = b.listen().with_memory_addr_external().await;
        let b_id = *b.local_peer_id();
        a.behaviour_mut()
            .add_peer(b_id, vec![b_addr], Source::Configured);
        // Connect, then let B drop every connection to A, three times over: A must come back.
        for round in 0..3 {
            bounded(async {
                loop {
                    tokio::select! {
                        e = a.next_swarm_event() => {
                            if matches!(e, SwarmEvent::ConnectionEstablished { .. }) { break; }
                        }
                        _ = b.next_swarm_event() => {}
                    }
                }
            })
            .await;
            let a_id = *a.local_peer_id();
            // The connection may take a moment to show up on B's side.
            bounded(async {
                while !b.is_connected(&a_id) {
                    tokio::select! {
                        _ = a.next_swarm_event() => {}
                        _ = b.next_swarm_event() => {}
                    }
                }
            })
            .await;
            let _ = b.disconnect_peer_id(a_id);
            bounded(async {
                loop {
                    tokio::select! {
                        e = a.next_swarm_event() => {
                            if matches!(e, SwarmEvent::ConnectionClosed { .. }) { break; }
                        }
                        _ = b.next_swarm_event() => {}
                    }
                }
            })
            .await;
            assert!(a.behaviour().is_kept(&b_id), "round {round}");
        }
    }

    #[tokio::test]
    async fn retries_a_dead_address_with_growing_waits() {
        let mut a = swarm(fast());
        let nobody = PeerId::random();
        // A memory port nobody listens on: every dial fails at once.
        let dead: Multiaddr = "/memory/4242424242".parse().unwrap();
        a.behaviour_mut()
            .add_peer(nobody, vec![dead], Source::Configured);
        let mut dial_times = Vec::new();
        bounded(async {
            while dial_times.len() < 5 {
                if let SwarmEvent::Dialing { peer_id, .. } = a.next_swarm_event().await {
                    assert_eq!(peer_id, Some(nobody));
                    dial_times.push(Instant::now());
                }
            }
        })
        .await;
        let gaps: Vec<Duration> = dial_times.windows(2).map(|w| w[1] - w[0]).collect();
        // 50 ms doubling to the 400 ms cap, each +-20%: the last gap is well above the first.
        assert!(gaps[0] >= Duration::from_millis(35), "{gaps:?}");
        assert!(gaps[3] >= Duration::from_millis(300), "{gaps:?}");
        assert!(gaps[3] > gaps[0], "{gaps:?}");
    }

    #[tokio::test]
    async fn a_peer_kept_by_two_sources_stays_until_both_let_go() {
        let mut b = Behaviour::new(fast());
        let p = PeerId::random();
        b.add_peer(p, vec![], Source::Configured);
        b.add_peer(p, vec![], Source::Discovered);
        b.remove_peer(&p, Source::Discovered);
        assert!(b.is_kept(&p));
        b.remove_peer(&p, Source::Configured);
        assert!(!b.is_kept(&p));
        assert_eq!(b.kept_peers().count(), 0);
    }
}
