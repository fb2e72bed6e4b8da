//! The client side of bitswap: what we want, whom we asked, and what to send
//! next. Pure state: the caller feeds in wants, peer (dis)connections,
//! received presences and blocks, and the time (`now`, never read here), and
//! gets back [`ClientAction`]s to send ([`messages_for`] packs them).
//!
//! The strategy is a simplified boxo session (`bitswap/client/internal/
//! session/sessionwantsender.go`):
//! 1. A new want goes out as want-have (with sendDontHave) to every
//!    connected peer, and to peers that connect later.
//! 2. The first peer to say HAVE gets a want-block; other HAVEs are kept as
//!    backups. Only one want-block per CID is outstanding at a time, so a
//!    block is downloaded once, not from every peer that has it.
//! 3. DONT_HAVE from (or [`BLOCK_REQUEST_TIMEOUT`] on) the peer asked for the
//!    block moves the want-block to the next backup. When nobody has it, the
//!    want stays: Kubo servers keep a want after DONT_HAVE and send the block
//!    if it arrives; after [`REBROADCAST_INTERVAL`] we also ask everyone again.
//! 4. A received block is looked up by the multihash of its bytes, which
//!    [`Message::decode`] computed (a payload carries only a CID prefix), so
//!    finding the want is the check against the CID we asked with; it is
//!    then yielded under our CID, and every other peer we asked gets a
//!    cancel. A block nobody asked for counts against its sender, unless we
//!    received it recently (it crossed our cancel).
//!
//! Bounded: [`MAX_WANTS_IN_FLIGHT`] wants are active, up to
//! [`MAX_PENDING_WANTS`] wait behind them, and a peer has at most
//! [`MAX_BLOCK_REQUESTS_PER_PEER`] want-blocks outstanding.
//!
//! Assumes the peer speaks bitswap 1.2.0 (HAVE/DONT_HAVE); a 1.0.0/1.1.0
//! peer reads a want-have as a want-block and just sends the block, which is
//! accepted all the same.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

use cid::Cid;
use multihash::Multihash;

use super::message::{Message, PresenceType, WantEntry, WantType};
use super::{
    ANSWER_TIMEOUT, BLOCK_REQUEST_TIMEOUT, MAX_BLOCK_REQUESTS_PER_PEER, MAX_PENDING_WANTS,
    MAX_WANTS_IN_FLIGHT, REBROADCAST_INTERVAL, RECENTLY_RECEIVED,
};
use crate::block::{Block, IDENTITY};

/// Something the client should send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction<P> {
    WantHave { peer: P, cid: Cid },
    WantBlock { peer: P, cid: Cid },
    Cancel { peer: P, cid: Cid },
}

impl<P> ClientAction<P> {
    pub fn peer(&self) -> &P {
        match self {
            ClientAction::WantHave { peer, .. }
            | ClientAction::WantBlock { peer, .. }
            | ClientAction::Cancel { peer, .. } => peer,
        }
    }
}

/// Why `want` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WantListError {
    #[error("cannot want {cid}: {MAX_PENDING_WANTS} blocks are already waiting; retry later")]
    Full { cid: Cid },
    #[error("{cid} is an identity CID: its data is inside it, decode it instead of fetching it")]
    IdentityCid { cid: Cid },
}

/// Why a received block was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Also what bytes that do not match the CID asked for come to: they hash
    /// to some other CID.
    #[error("block {cid} was never asked for")]
    Unwanted { cid: Cid },
}

/// What became of a received block.
#[derive(Debug)]
pub enum Received<P> {
    /// Wanted and verified: store it. `actions` are the cancels (and any
    /// wants that took its slot) to send.
    Accepted {
        block: Block,
        actions: Vec<ClientAction<P>>,
    },
    /// Received recently already; it crossed our cancel. Harmless.
    Duplicate,
    /// Not accepted; the sender's misbehaviour count went up.
    Rejected(Rejection),
}

#[derive(Debug)]
struct Want<P> {
    /// The CID we asked with (blocks are matched by multihash).
    cid: Cid,
    /// Peers we sent a want to; they keep it until cancelled.
    asked: BTreeSet<P>,
    /// Peers that said HAVE and were not asked for the block yet.
    haves: BTreeSet<P>,
    dont_haves: BTreeSet<P>,
    /// The peer asked for the block, and when.
    block_from: Option<(P, Instant)>,
    last_broadcast: Instant,
    /// How long peers that said nothing at all get before they are asked again (doubling up to
    /// [`REBROADCAST_INTERVAL`]).
    silence: std::time::Duration,
}

/// What we want. `P` is the peer id.
#[derive(Debug)]
pub struct WantList<P> {
    connected: BTreeSet<P>,
    /// Active wants in the order they were made (oldest gets slots first).
    active: BTreeMap<u64, Want<P>>,
    by_hash: HashMap<Multihash<64>, u64>,
    seq: u64,
    pending: VecDeque<Cid>,
    pending_set: HashSet<Multihash<64>>,
    /// Outstanding want-blocks per peer.
    block_requests: HashMap<P, usize>,
    recent: VecDeque<Multihash<64>>,
    recent_set: HashSet<Multihash<64>>,
    misbehaviour: HashMap<P, u32>,
}

impl<P: Clone + Eq + Hash + Ord + Debug> Default for WantList<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone + Eq + Hash + Ord + Debug> WantList<P> {
    pub fn new() -> Self {
        WantList {
            connected: BTreeSet::new(),
            active: BTreeMap::new(),
            by_hash: HashMap::new(),
            seq: 0,
            pending: VecDeque::new(),
            pending_set: HashSet::new(),
            block_requests: HashMap::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            misbehaviour: HashMap::new(),
        }
    }

    /// Wants being fetched now.
    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// Wants waiting for a slot.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether `cid` (by multihash) is wanted, active or pending.
    pub fn is_wanted(&self, cid: &Cid) -> bool {
        self.by_hash.contains_key(cid.hash()) || self.pending_set.contains(cid.hash())
    }

    /// Blocks `peer` sent that we did not ask for or that were corrupt.
    pub fn misbehaviour(&self, peer: &P) -> u32 {
        self.misbehaviour.get(peer).copied().unwrap_or(0)
    }

    /// Start fetching `cid`. Wanting it again is a no-op.
    pub fn want(&mut self, cid: Cid, now: Instant) -> Result<Vec<ClientAction<P>>, WantListError> {
        // Kubo's server drops the connection of a peer that wants one.
        if cid.hash().code() == IDENTITY {
            return Err(WantListError::IdentityCid { cid });
        }
        if self.is_wanted(&cid) {
            return Ok(Vec::new());
        }
        if self.active.len() < MAX_WANTS_IN_FLIGHT {
            return Ok(self.activate(cid, now));
        }
        if self.pending.len() >= MAX_PENDING_WANTS {
            return Err(WantListError::Full { cid });
        }
        self.pending_set.insert(*cid.hash());
        self.pending.push_back(cid);
        Ok(Vec::new())
    }

    /// Stop fetching `cid`: cancels to everyone asked.
    pub fn cancel(&mut self, cid: &Cid, now: Instant) -> Vec<ClientAction<P>> {
        let mh = *cid.hash();
        if self.pending_set.remove(&mh) {
            self.pending.retain(|c| c.hash() != &mh);
            return Vec::new();
        }
        let Some(want) = self.remove_active(&mh) else {
            return Vec::new();
        };
        let mut actions = cancels(&want, None);
        actions.extend(self.promote(now));
        actions.extend(self.fill_block_slots(now));
        actions
    }

    /// A peer connected: it gets every active want.
    pub fn on_peer_connected(&mut self, peer: &P) -> Vec<ClientAction<P>> {
        if !self.connected.insert(peer.clone()) {
            return Vec::new();
        }
        self.active
            .values_mut()
            .map(|w| {
                w.asked.insert(peer.clone());
                ClientAction::WantHave {
                    peer: peer.clone(),
                    cid: w.cid,
                }
            })
            .collect()
    }

    /// A peer went away: its block requests move to other peers with it.
    pub fn on_peer_disconnected(&mut self, peer: &P, now: Instant) -> Vec<ClientAction<P>> {
        self.connected.remove(peer);
        self.block_requests.remove(peer);
        self.misbehaviour.remove(peer);
        for w in self.active.values_mut() {
            w.asked.remove(peer);
            w.haves.remove(peer);
            w.dont_haves.remove(peer);
            if w.block_from.as_ref().is_some_and(|(p, _)| p == peer) {
                w.block_from = None;
            }
        }
        self.fill_block_slots(now)
    }

    /// A HAVE or DONT_HAVE from `peer`.
    pub fn on_presence(
        &mut self,
        peer: &P,
        cid: &Cid,
        kind: PresenceType,
        now: Instant,
    ) -> Vec<ClientAction<P>> {
        if !self.connected.contains(peer) {
            return Vec::new();
        }
        let Some(&seq) = self.by_hash.get(cid.hash()) else {
            return Vec::new();
        };
        let Some(w) = self.active.get_mut(&seq) else {
            return Vec::new();
        };
        match kind {
            PresenceType::Have => {
                w.dont_haves.remove(peer);
                if w.block_from.as_ref().is_none_or(|(p, _)| p != peer) {
                    w.haves.insert(peer.clone());
                }
            }
            PresenceType::DontHave => {
                w.haves.remove(peer);
                w.dont_haves.insert(peer.clone());
                if w.block_from.as_ref().is_some_and(|(p, _)| p == peer) {
                    w.block_from = None;
                    release(&mut self.block_requests, peer);
                }
            }
        }
        self.fill_block_slots(now)
    }

    /// A block from `peer`; see the module docs for the rules. `block.cid`
    /// must name the hash of `block.data`, as [`Message::decode`] and
    /// [`Block::new`] make it: the want is found by that hash, and nothing
    /// here hashes the bytes again (a second SHA-256 of every fetched byte).
    pub fn on_block(&mut self, peer: &P, block: Block, now: Instant) -> Received<P> {
        let mh = *block.cid.hash();
        let Some(want) = self.remove_active(&mh) else {
            if self.recent_set.contains(&mh) {
                return Received::Duplicate;
            }
            self.penalize(peer);
            return Received::Rejected(Rejection::Unwanted { cid: block.cid });
        };
        self.remember(mh);
        let mut actions = cancels(&want, Some(peer));
        actions.extend(self.promote(now));
        actions.extend(self.fill_block_slots(now));
        Received::Accepted {
            block: Block {
                cid: want.cid,
                data: block.data,
            },
            actions,
        }
    }

    /// Everything a message from `peer` carries: presences first (they may
    /// trigger want-blocks), then blocks.
    pub fn on_message(
        &mut self,
        peer: &P,
        msg: Message,
        now: Instant,
    ) -> (Vec<Block>, Vec<ClientAction<P>>, Vec<Rejection>) {
        let (mut blocks, mut actions, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
        for p in &msg.presences {
            actions.extend(self.on_presence(peer, &p.cid, p.kind, now));
        }
        for b in msg.blocks {
            match self.on_block(peer, b, now) {
                Received::Accepted { block, actions: a } => {
                    blocks.push(block);
                    actions.extend(a);
                }
                Received::Duplicate => {}
                Received::Rejected(r) => rejected.push(r),
            }
        }
        (blocks, actions, rejected)
    }

    /// Timeouts and rebroadcasts due at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<ClientAction<P>> {
        let mut actions = Vec::new();
        for w in self.active.values_mut() {
            if let Some((p, at)) = &w.block_from {
                if now.saturating_duration_since(*at) >= BLOCK_REQUEST_TIMEOUT {
                    // Treated as DONT_HAVE. No cancel: if the block still
                    // comes, it is accepted.
                    let p = p.clone();
                    release(&mut self.block_requests, &p);
                    w.dont_haves.insert(p);
                    w.block_from = None;
                }
            }
            let waited = now.saturating_duration_since(w.last_broadcast);
            if w.block_from.is_none() && w.haves.is_empty() && waited >= w.silence {
                // A 1.2.0 peer answers every want-have (HAVE, DONT_HAVE or the block): one
                // that said nothing lost the want (a message dropped with a stream, or a
                // wantlist it could not take). Ask it again rather than wait a minute.
                let silent: Vec<P> = self
                    .connected
                    .iter()
                    .filter(|p| w.asked.contains(*p) && !w.dont_haves.contains(*p))
                    .cloned()
                    .collect();
                if waited < REBROADCAST_INTERVAL && !silent.is_empty() {
                    w.last_broadcast = now;
                    w.silence = (w.silence * 2).min(REBROADCAST_INTERVAL);
                    for p in silent {
                        actions.push(ClientAction::WantHave {
                            peer: p,
                            cid: w.cid,
                        });
                    }
                    continue;
                }
            }
            if w.block_from.is_none()
                && w.haves.is_empty()
                && now.saturating_duration_since(w.last_broadcast) >= REBROADCAST_INTERVAL
            {
                w.last_broadcast = now;
                w.dont_haves.clear();
                for p in &self.connected {
                    w.asked.insert(p.clone());
                    actions.push(ClientAction::WantHave {
                        peer: p.clone(),
                        cid: w.cid,
                    });
                }
            }
        }
        actions.extend(self.fill_block_slots(now));
        actions
    }

    /// When [`WantList::on_tick`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.active
            .values()
            .map(|w| match &w.block_from {
                Some((_, at)) => *at + BLOCK_REQUEST_TIMEOUT,
                None => {
                    let silent = w
                        .asked
                        .iter()
                        .any(|p| self.connected.contains(p) && !w.dont_haves.contains(p));
                    let wait = if silent && w.haves.is_empty() {
                        w.silence
                    } else {
                        REBROADCAST_INTERVAL
                    };
                    w.last_broadcast + wait
                }
            })
            .min()
    }

    fn activate(&mut self, cid: Cid, now: Instant) -> Vec<ClientAction<P>> {
        let actions = self
            .connected
            .iter()
            .map(|p| ClientAction::WantHave {
                peer: p.clone(),
                cid,
            })
            .collect();
        self.seq += 1;
        self.by_hash.insert(*cid.hash(), self.seq);
        self.active.insert(
            self.seq,
            Want {
                cid,
                asked: self.connected.clone(),
                haves: BTreeSet::new(),
                dont_haves: BTreeSet::new(),
                block_from: None,
                last_broadcast: now,
                silence: ANSWER_TIMEOUT,
            },
        );
        actions
    }

    /// Moves pending wants into free slots.
    fn promote(&mut self, now: Instant) -> Vec<ClientAction<P>> {
        let mut actions = Vec::new();
        while self.active.len() < MAX_WANTS_IN_FLIGHT {
            let Some(cid) = self.pending.pop_front() else {
                break;
            };
            self.pending_set.remove(cid.hash());
            actions.extend(self.activate(cid, now));
        }
        actions
    }

    /// Sends want-blocks for wants with a HAVE and no block request, to the
    /// first such peer with a free request slot; oldest wants first.
    fn fill_block_slots(&mut self, now: Instant) -> Vec<ClientAction<P>> {
        let mut actions = Vec::new();
        for w in self.active.values_mut() {
            if w.block_from.is_some() {
                continue;
            }
            let free = w
                .haves
                .iter()
                .find(|p| {
                    self.block_requests.get(*p).copied().unwrap_or(0) < MAX_BLOCK_REQUESTS_PER_PEER
                })
                .cloned();
            if let Some(p) = free {
                w.haves.remove(&p);
                w.asked.insert(p.clone());
                *self.block_requests.entry(p.clone()).or_default() += 1;
                actions.push(ClientAction::WantBlock {
                    peer: p.clone(),
                    cid: w.cid,
                });
                w.block_from = Some((p, now));
            }
        }
        actions
    }

    fn remove_active(&mut self, mh: &Multihash<64>) -> Option<Want<P>> {
        let seq = self.by_hash.remove(mh)?;
        let w = self.active.remove(&seq)?;
        if let Some((p, _)) = &w.block_from {
            release(&mut self.block_requests, p);
        }
        Some(w)
    }

    fn penalize(&mut self, peer: &P) {
        // Only connected peers are counted, so the map stays bounded.
        if self.connected.contains(peer) {
            *self.misbehaviour.entry(peer.clone()).or_default() += 1;
        }
    }

    fn remember(&mut self, mh: Multihash<64>) {
        if self.recent_set.insert(mh) {
            self.recent.push_back(mh);
            if self.recent.len() > RECENTLY_RECEIVED {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
    }
}

fn release<P: Eq + Hash>(requests: &mut HashMap<P, usize>, peer: &P) {
    if let Some(n) = requests.get_mut(peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            requests.remove(peer);
        }
    }
}

/// Cancels for everyone `w` was sent to, except `except` (the peer that sent
/// the block already dropped our want when it sent it).
fn cancels<P: Clone + Ord>(w: &Want<P>, except: Option<&P>) -> Vec<ClientAction<P>> {
    let mut to = w.asked.clone();
    if let Some((p, _)) = &w.block_from {
        to.insert(p.clone());
    }
    to.into_iter()
        .filter(|p| Some(p) != except)
        .map(|peer| ClientAction::Cancel { peer, cid: w.cid })
        .collect()
}

/// Groups actions into one message per peer, in first-seen order. Wants ask
/// for DONT_HAVE so a peer without the block answers instead of staying
/// silent; priorities are all 1 (boxo's default), so Kubo serves them in the
/// order sent.
pub fn messages_for<P: Clone + Eq>(actions: Vec<ClientAction<P>>) -> Vec<(P, Message)> {
    let mut out: Vec<(P, Message)> = Vec::new();
    for a in actions {
        let (peer, entry) = match a {
            ClientAction::WantHave { peer, cid } => (peer, WantEntry::want(cid, WantType::Have)),
            ClientAction::WantBlock { peer, cid } => (peer, WantEntry::want(cid, WantType::Block)),
            ClientAction::Cancel { peer, cid } => (peer, WantEntry::cancel(cid)),
        };
        match out.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, m)) => m.wantlist.push(entry),
            None => out.push((
                peer,
                Message {
                    wantlist: vec![entry],
                    ..Default::default()
                },
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitswap::message::BlockPresence;
    use crate::block::RAW;
    use bytes::Bytes;
    use cid::Version;
    use std::time::Duration;
    use ClientAction::*;

    fn blk(n: u32) -> Block {
        Block::new(Version::V1, RAW, n.to_be_bytes().to_vec())
    }
    fn cid(n: u32) -> Cid {
        blk(n).cid
    }

    fn setup(peers: &[u8]) -> (WantList<u8>, Instant) {
        let mut w = WantList::new();
        for p in peers {
            assert!(w.on_peer_connected(p).is_empty());
        }
        (w, Instant::now())
    }

    #[test]
    fn want_broadcasts_want_have() {
        let (mut w, t) = setup(&[1, 2]);
        assert_eq!(
            w.want(cid(1), t).unwrap(),
            vec![
                WantHave {
                    peer: 1,
                    cid: cid(1)
                },
                WantHave {
                    peer: 2,
                    cid: cid(1)
                }
            ]
        );
        assert!(w.want(cid(1), t).unwrap().is_empty(), "again: no-op");
        // A peer connecting later is sent the wantlist.
        assert_eq!(
            w.on_peer_connected(&3),
            vec![WantHave {
                peer: 3,
                cid: cid(1)
            }]
        );
    }

    #[test]
    fn have_then_block_then_cancels() {
        let (mut w, t) = setup(&[1, 2, 3]);
        let _ = w.want(cid(1), t).unwrap();
        // First HAVE gets the want-block; a second HAVE is a backup.
        assert_eq!(
            w.on_presence(&2, &cid(1), PresenceType::Have, t),
            vec![WantBlock {
                peer: 2,
                cid: cid(1)
            }]
        );
        assert!(w.on_presence(&3, &cid(1), PresenceType::Have, t).is_empty());
        match w.on_block(&2, blk(1), t) {
            Received::Accepted { block, actions } => {
                assert_eq!(block, blk(1));
                // Cancels to everyone asked but the sender.
                assert_eq!(
                    actions,
                    vec![
                        Cancel {
                            peer: 1,
                            cid: cid(1)
                        },
                        Cancel {
                            peer: 3,
                            cid: cid(1)
                        }
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.in_flight(), 0);
        // The same block again: crossed our cancel, harmless.
        assert!(matches!(w.on_block(&3, blk(1), t), Received::Duplicate));
        assert_eq!(w.misbehaviour(&3), 0);
    }

    #[test]
    fn dont_have_and_timeout_move_to_the_next_peer() {
        let (mut w, t) = setup(&[1, 2, 3]);
        let _ = w.want(cid(1), t).unwrap();
        let _ = w.on_presence(&1, &cid(1), PresenceType::Have, t);
        let _ = w.on_presence(&2, &cid(1), PresenceType::Have, t);
        let _ = w.on_presence(&3, &cid(1), PresenceType::Have, t);
        // Peer 1 was asked for the block and says DONT_HAVE: peer 2 next.
        assert_eq!(
            w.on_presence(&1, &cid(1), PresenceType::DontHave, t),
            vec![WantBlock {
                peer: 2,
                cid: cid(1)
            }]
        );
        // Peer 2 is silent: after the timeout, peer 3.
        assert!(w.on_tick(t + BLOCK_REQUEST_TIMEOUT / 2).is_empty());
        assert_eq!(w.next_deadline(), Some(t + BLOCK_REQUEST_TIMEOUT));
        assert_eq!(
            w.on_tick(t + BLOCK_REQUEST_TIMEOUT),
            vec![WantBlock {
                peer: 3,
                cid: cid(1)
            }]
        );
        // A late block from timed-out peer 2 is still welcome.
        assert!(matches!(
            w.on_block(&2, blk(1), t + BLOCK_REQUEST_TIMEOUT),
            Received::Accepted { .. }
        ));
    }

    #[test]
    fn nobody_has_it_then_rebroadcast() {
        let (mut w, t) = setup(&[1, 2]);
        let _ = w.want(cid(1), t).unwrap();
        assert!(w
            .on_presence(&1, &cid(1), PresenceType::DontHave, t)
            .is_empty());
        assert!(w
            .on_presence(&2, &cid(1), PresenceType::DontHave, t)
            .is_empty());
        assert_eq!(w.in_flight(), 1, "the want stays");
        assert!(w.on_tick(t + Duration::from_secs(1)).is_empty());
        let again = w.on_tick(t + REBROADCAST_INTERVAL);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|a| matches!(a, WantHave { .. })));
    }

    #[test]
    fn a_peer_that_says_nothing_is_asked_again_sooner_each_time_less() {
        let (mut w, t) = setup(&[1, 2]);
        let _ = w.want(cid(1), t).unwrap();
        // Peer 2 answers; peer 1's want was lost.
        assert!(w
            .on_presence(&2, &cid(1), PresenceType::DontHave, t)
            .is_empty());
        assert_eq!(w.next_deadline(), Some(t + ANSWER_TIMEOUT));
        assert!(w.on_tick(t + ANSWER_TIMEOUT / 2).is_empty());
        let again = w.on_tick(t + ANSWER_TIMEOUT);
        assert!(
            matches!(again.as_slice(), [WantHave { peer: 1, .. }]),
            "only the silent peer: {again:?}"
        );
        // Then after twice as long.
        let t2 = t + ANSWER_TIMEOUT;
        assert!(w.on_tick(t2 + ANSWER_TIMEOUT).is_empty());
        assert_eq!(w.on_tick(t2 + ANSWER_TIMEOUT * 2).len(), 1);
        // Once it answers, only the minute's rebroadcast is left.
        let _ = w.on_presence(&1, &cid(1), PresenceType::DontHave, t2);
        let t3 = t2 + ANSWER_TIMEOUT * 2;
        assert_eq!(w.next_deadline(), Some(t3 + REBROADCAST_INTERVAL));
    }

    #[test]
    fn unwanted_and_corrupt_blocks_are_rejected_and_counted() {
        let (mut w, t) = setup(&[1]);
        assert!(matches!(
            w.on_block(&1, blk(9), t),
            Received::Rejected(Rejection::Unwanted { .. })
        ));
        let _ = w.want(cid(1), t).unwrap();
        let _ = w.on_presence(&1, &cid(1), PresenceType::Have, t);
        // Bytes that do not match the CID they are sent for: on the wire a
        // block is its CID prefix and bytes, so it decodes as another block.
        let forged = Message {
            blocks: vec![Block {
                cid: cid(1),
                data: Bytes::from_static(b"not block 1"),
            }],
            ..Default::default()
        };
        let wire = crate::bitswap::encode_frame(&forged);
        let frames = crate::bitswap::FrameDecoder::new().push(&wire).unwrap();
        let decoded = Message::decode(frames[0].clone()).unwrap();
        assert_ne!(decoded.blocks[0].cid, cid(1));
        let (got, _, rejected) = w.on_message(&1, decoded, t);
        assert!(got.is_empty());
        assert!(matches!(rejected[..], [Rejection::Unwanted { .. }]));
        assert_eq!(w.misbehaviour(&1), 2);
        assert!(w.is_wanted(&cid(1)), "still wanted after a bad copy");
        assert!(matches!(
            w.on_block(&1, blk(1), t),
            Received::Accepted { .. }
        ));
    }

    #[test]
    fn block_is_yielded_under_our_cid() {
        // We ask with CIDv1 dag-pb; a 1.0.0 peer's block decodes as CIDv0.
        let data = b"dag-pb bytes".to_vec();
        let v0 = Block::new(Version::V0, crate::block::DAG_PB, data);
        let v1 = Cid::new_v1(crate::block::DAG_PB, *v0.cid.hash());
        let (mut w, t) = setup(&[1]);
        let _ = w.want(v1, t).unwrap();
        match w.on_block(&1, v0, t) {
            Received::Accepted { block, .. } => assert_eq!(block.cid, v1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn in_flight_and_pending_are_bounded() {
        let (mut w, t) = setup(&[1]);
        let mut sent = 0;
        for n in 0..(MAX_WANTS_IN_FLIGHT + MAX_PENDING_WANTS) as u32 {
            sent += w.want(cid(n), t).unwrap().len();
        }
        assert_eq!(sent, MAX_WANTS_IN_FLIGHT, "only active wants go out");
        assert_eq!(w.in_flight(), MAX_WANTS_IN_FLIGHT);
        assert_eq!(w.pending(), MAX_PENDING_WANTS);
        let over = cid(u32::MAX);
        assert_eq!(w.want(over, t), Err(WantListError::Full { cid: over }));
        // A finished want lets the next pending one go out.
        match w.on_block(&1, blk(0), t) {
            Received::Accepted { actions, .. } => assert_eq!(
                actions,
                vec![WantHave {
                    peer: 1,
                    cid: cid(MAX_WANTS_IN_FLIGHT as u32)
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn block_requests_per_peer_are_bounded() {
        let (mut w, t) = setup(&[1]);
        let n = MAX_BLOCK_REQUESTS_PER_PEER as u32 + 3;
        let mut blocks = 0;
        for i in 0..n {
            let _ = w.want(cid(i), t).unwrap();
            blocks += w.on_presence(&1, &cid(i), PresenceType::Have, t).len();
        }
        assert_eq!(blocks, MAX_BLOCK_REQUESTS_PER_PEER);
        // One block in: a slot frees, the next HAVE'd want is requested.
        match w.on_block(&1, blk(0), t) {
            Received::Accepted { actions, .. } => assert_eq!(
                actions,
                vec![WantBlock {
                    peer: 1,
                    cid: cid(MAX_BLOCK_REQUESTS_PER_PEER as u32)
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disconnect_moves_the_block_request() {
        let (mut w, t) = setup(&[1, 2]);
        let _ = w.want(cid(1), t).unwrap();
        let _ = w.on_presence(&1, &cid(1), PresenceType::Have, t);
        let _ = w.on_presence(&2, &cid(1), PresenceType::Have, t);
        assert_eq!(
            w.on_peer_disconnected(&1, t),
            vec![WantBlock {
                peer: 2,
                cid: cid(1)
            }]
        );
        // Presences from a peer that is gone are ignored.
        assert!(w.on_presence(&1, &cid(1), PresenceType::Have, t).is_empty());
    }

    #[test]
    fn identity_cids_are_refused() {
        let (mut w, t) = setup(&[1]);
        let id = Cid::new_v1(RAW, Multihash::wrap(IDENTITY, b"x").unwrap());
        assert!(matches!(
            w.want(id, t),
            Err(WantListError::IdentityCid { .. })
        ));
    }

    #[test]
    fn cancel_by_caller() {
        let (mut w, t) = setup(&[1, 2]);
        let _ = w.want(cid(1), t).unwrap();
        let _ = w.on_presence(&1, &cid(1), PresenceType::Have, t);
        let c = w.cancel(&cid(1), t);
        assert_eq!(c.len(), 2);
        assert!(!w.is_wanted(&cid(1)));
        assert!(matches!(
            w.on_block(&1, blk(1), t),
            Received::Rejected(Rejection::Unwanted { .. })
        ));
    }

    #[test]
    fn message_round_trip_through_both_sides() {
        // Client wants -> server ledger -> server message -> client.
        let (mut w, t) = setup(&[7]);
        let acts = w.want(cid(1), t).unwrap();
        let msgs = messages_for(acts);
        assert_eq!(msgs.len(), 1);
        let (peer, m) = &msgs[0];
        assert_eq!(*peer, 7);
        assert!(m.wantlist[0].send_dont_have);
        let wire = crate::bitswap::encode_frame(m);
        let frames = crate::bitswap::FrameDecoder::new().push(&wire).unwrap();
        let m = Message::decode(frames[0].clone()).unwrap();
        let mut l = crate::bitswap::Ledger::new();
        let out = l.on_message(&0u8, &m, |c| (*c == cid(1)).then_some(4));
        // 4-byte block: answered with the block itself.
        assert!(matches!(
            out[..],
            [crate::bitswap::Action::SendBlock { .. }]
        ));
        let reply = Message {
            blocks: vec![blk(1)],
            presences: vec![BlockPresence {
                cid: cid(2),
                kind: PresenceType::DontHave,
            }],
            ..Default::default()
        };
        let wire = crate::bitswap::encode_frame(&reply);
        let frames = crate::bitswap::FrameDecoder::new().push(&wire).unwrap();
        let (blocks, actions, rejected) =
            w.on_message(&7, Message::decode(frames[0].clone()).unwrap(), t);
        assert_eq!(blocks, vec![blk(1)]);
        assert!(actions.is_empty() && rejected.is_empty());
    }
}
