//! The server side of bitswap: what each peer wants from us, and in what
//! order we serve them. Pure state: the caller says what a message asked for
//! and whether the store has each block (`have`), and gets back [`Action`]s
//! to execute; it reads the blocks itself.
//!
//! The rules are boxo v0.11.0's decision engine
//! (`bitswap/server/internal/decision/engine.go`, `peer_ledger.go`):
//! - want-block for a block we have: send it. want-have: send HAVE, or the
//!   block itself when it is at most [`MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK`]
//!   bytes (`sendAsBlock`).
//! - a block we lack: DONT_HAVE if the entry asked for one (want-have and
//!   want-block alike), else nothing. Either way the want is *kept*: boxo only
//!   drops a want once a block (`MessageSent` -> `CancelWantWithType(Block)`)
//!   or, for a want-have, a HAVE was sent, so when the block lands
//!   ([`Ledger::on_block_added`], boxo `NotifyNewBlocks`) the waiting peers get
//!   it (or a HAVE), and never a DONT_HAVE.
//! - a want is removed once served with the block; a want-have once answered
//!   with HAVE; cancel removes the want and any queued answer.
//! - `full` replaces the peer's wantlist; otherwise entries update it.
//! - duplicate entries in one message merge as boxo's `addEntry` does:
//!   want-block beats want-have, cancel and sendDontHave stick once set.
//! - at most [`MAX_WANTS_PER_PEER`] wants per peer; further new wants are
//!   ignored and counted (boxo truncates them the same way).
//!
//! Where we differ: we drop wants served "as decided" rather than after the
//! send completes (a sans-I/O core has no send receipts; a peer whose send
//! failed is disconnected and re-sends its wantlist on reconnect); wants for
//! identity CIDs are ignored and counted where boxo kills the connection; a
//! `full` wantlist also drops answers still queued for wants it no longer has.
//!
//! Fairness: a deficit round robin over peers, see [`Ledger::next_batch`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;

use cid::Cid;
use multihash::Multihash;

use super::message::{Message, WantEntry, WantType};
use super::{
    MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK, MAX_TRACKED_PEERS, MAX_WANTS_PER_PEER,
    SCHEDULER_QUANTUM_BYTES,
};
use crate::block::IDENTITY;

/// Something the server should send. The CID is the one the peer asked
/// with, so a block goes out under the peer's CID version and codec (read
/// the store by multihash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Read `cid` (`size` bytes) from the store and send it to `peer`.
    SendBlock {
        peer: P,
        cid: Cid,
        size: usize,
    },
    SendHave {
        peer: P,
        cid: Cid,
    },
    SendDontHave {
        peer: P,
        cid: Cid,
    },
}

impl<P> Action<P> {
    pub fn peer(&self) -> &P {
        match self {
            Action::SendBlock { peer, .. }
            | Action::SendHave { peer, .. }
            | Action::SendDontHave { peer, .. } => peer,
        }
    }

    pub fn cid(&self) -> &Cid {
        match self {
            Action::SendBlock { cid, .. }
            | Action::SendHave { cid, .. }
            | Action::SendDontHave { cid, .. } => cid,
        }
    }

    /// Bytes this action adds to an outgoing message, roughly: the block, or
    /// a presence (the CID plus a few bytes of protobuf).
    fn cost(&self) -> usize {
        match self {
            Action::SendBlock { size, .. } => *size,
            Action::SendHave { cid, .. } | Action::SendDontHave { cid, .. } => {
                cid.encoded_len() + 4
            }
        }
    }
}

/// What the ledger ignored, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// New wants past [`MAX_WANTS_PER_PEER`].
    pub wants_over_cap: u64,
    /// Wants and cancels for identity CIDs (the peer can decode those itself).
    pub identity_wants: u64,
    /// Messages from peers beyond [`MAX_TRACKED_PEERS`].
    pub untracked_messages: u64,
    /// Answers not queued because the peer's queue was full.
    pub dropped_tasks: u64,
}

/// One unserved want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    cid: Cid,
    priority: i32,
    want_type: WantType,
    send_dont_have: bool,
}

/// What every peer wants from us. `P` is the peer id.
#[derive(Debug)]
pub struct Ledger<P> {
    /// Unserved wants per tracked peer, keyed by multihash as the store is.
    /// A peer is tracked from its first message until it disconnects.
    peers: BTreeMap<P, HashMap<Multihash<64>, Want>>,
    /// Inverse index: who waits for a multihash (for `on_block_added`).
    waiting: HashMap<Multihash<64>, Vec<P>>,
    queue: Scheduler<P>,
    stats: LedgerStats,
}

impl<P: Clone + Eq + Hash + Ord + Debug> Default for Ledger<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone + Eq + Hash + Ord + Debug> Ledger<P> {
    pub fn new() -> Self {
        Ledger {
            peers: BTreeMap::new(),
            waiting: HashMap::new(),
            queue: Scheduler::default(),
            stats: LedgerStats::default(),
        }
    }

    pub fn stats(&self) -> LedgerStats {
        self.stats
    }

    /// Peers tracked now.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Unserved wants of `peer`: (cid, want type), in no particular order.
    pub fn wants_of(&self, peer: &P) -> Vec<(Cid, WantType)> {
        self.peers
            .get(peer)
            .map(|w| w.values().map(|w| (w.cid, w.want_type)).collect())
            .unwrap_or_default()
    }

    /// Applies `msg`'s wantlist from `peer`. `have` says whether the store
    /// holds a CID and how big it is. The actions are decided, not queued:
    /// pass them to [`Ledger::schedule`] for fair sending, or execute them.
    #[must_use = "the actions must be executed or scheduled"]
    pub fn on_message(
        &mut self,
        peer: &P,
        msg: &Message,
        have: impl Fn(&Cid) -> Option<usize>,
    ) -> Vec<Action<P>> {
        if msg.wantlist.is_empty() && !msg.full {
            return Vec::new();
        }
        if !self.peers.contains_key(peer) {
            if self.peers.len() >= MAX_TRACKED_PEERS {
                self.stats.untracked_messages += 1;
                return Vec::new();
            }
            self.peers.insert(peer.clone(), HashMap::new());
        }
        if msg.full {
            self.clear_wants(peer);
            self.queue.remove_peer(peer);
        }
        let mut actions = Vec::new();
        for e in merge_entries(&msg.wantlist) {
            let mh = *e.cid.hash();
            if mh.code() == IDENTITY {
                self.stats.identity_wants += 1;
                continue;
            }
            if e.cancel {
                self.remove_want(peer, &mh);
                self.queue.cancel(peer, &mh);
                continue;
            }
            let want = Want {
                cid: e.cid,
                priority: e.priority,
                want_type: e.want_type,
                send_dont_have: e.send_dont_have,
            };
            match have(&e.cid) {
                Some(size) => {
                    // Served now: a want that was waiting is done.
                    self.remove_want(peer, &mh);
                    actions.push(answer(peer, &want, size));
                }
                None => {
                    if !self.insert_want(peer, mh, want) {
                        self.stats.wants_over_cap += 1;
                        continue;
                    }
                    if want.send_dont_have {
                        actions.push(Action::SendDontHave {
                            peer: peer.clone(),
                            cid: e.cid,
                        });
                    }
                }
            }
        }
        actions
    }

    /// A block landed in the store: answer every peer waiting for it.
    #[must_use = "the actions must be executed or scheduled"]
    pub fn on_block_added(&mut self, cid: &Cid, size: usize) -> Vec<Action<P>> {
        let mh = *cid.hash();
        let Some(mut peers) = self.waiting.remove(&mh) else {
            return Vec::new();
        };
        peers.sort();
        let mut actions = Vec::with_capacity(peers.len());
        for p in peers {
            let Some(wants) = self.peers.get_mut(&p) else {
                continue;
            };
            if let Some(want) = wants.remove(&mh) {
                actions.push(answer(&p, &want, size));
            }
        }
        actions
    }

    /// Forgets everything about `peer`, including queued answers.
    pub fn on_peer_disconnected(&mut self, peer: &P) {
        self.clear_wants(peer);
        self.peers.remove(peer);
        self.queue.remove_peer(peer);
    }

    /// Queues actions for [`Ledger::next_batch`], merging per peer and CID
    /// (a block replaces a queued HAVE/DONT_HAVE, as boxo's task merger does).
    pub fn schedule(&mut self, actions: impl IntoIterator<Item = Action<P>>) {
        for a in actions {
            if !self.queue.push(a) {
                self.stats.dropped_tasks += 1;
            }
        }
    }

    /// Actions queued, over all peers.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes about `max_bytes` of queued work, fairly across peers, grouped
    /// by peer. The first action is always taken, so one block larger than
    /// `max_bytes` still goes out.
    ///
    /// Fairness is a deficit round robin: peers with work take turns; each
    /// turn adds [`SCHEDULER_QUANTUM_BYTES`] to the peer's allowance and it
    /// sends queued answers (in arrival order) while they fit in it. A peer
    /// asking for 10 000 blocks and a peer asking for one therefore alternate
    /// per quantum, and share bytes equally however their block sizes differ.
    /// boxo's peer task queue instead serves the peer with the least work in
    /// flight, which needs send-completion callbacks a sans-I/O core does not
    /// have. Within a peer the order is arrival, not `priority`: boxo's
    /// client numbers priorities in request order, so the two agree for Kubo.
    pub fn next_batch(&mut self, max_bytes: usize) -> Vec<(P, Vec<Action<P>>)> {
        self.queue.next_batch(max_bytes)
    }

    fn insert_want(&mut self, peer: &P, mh: Multihash<64>, want: Want) -> bool {
        let Some(wants) = self.peers.get_mut(peer) else {
            return false;
        };
        if let Some(w) = wants.get_mut(&mh) {
            *w = want;
            return true;
        }
        if wants.len() >= MAX_WANTS_PER_PEER {
            return false;
        }
        wants.insert(mh, want);
        self.waiting.entry(mh).or_default().push(peer.clone());
        true
    }

    fn remove_want(&mut self, peer: &P, mh: &Multihash<64>) {
        let Some(wants) = self.peers.get_mut(peer) else {
            return;
        };
        if wants.remove(mh).is_some() {
            self.unindex(peer, mh);
        }
    }

    fn clear_wants(&mut self, peer: &P) {
        let Some(wants) = self.peers.get_mut(peer) else {
            return;
        };
        let hashes: Vec<Multihash<64>> = wants.drain().map(|(mh, _)| mh).collect();
        for mh in hashes {
            self.unindex(peer, &mh);
        }
    }

    fn unindex(&mut self, peer: &P, mh: &Multihash<64>) {
        if let Some(ps) = self.waiting.get_mut(mh) {
            ps.retain(|p| p != peer);
            if ps.is_empty() {
                self.waiting.remove(mh);
            }
        }
    }
}

/// How to answer a want for a block we have (boxo `sendAsBlock`).
fn answer<P: Clone>(peer: &P, want: &Want, size: usize) -> Action<P> {
    if want.want_type == WantType::Block || size <= MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK {
        Action::SendBlock {
            peer: peer.clone(),
            cid: want.cid,
            size,
        }
    } else {
        Action::SendHave {
            peer: peer.clone(),
            cid: want.cid,
        }
    }
}

/// Merges entries naming the same CID as boxo's `message.addEntry` does,
/// keeping first-seen order: the priority follows the latest entry of the
/// same type, want-block overrides want-have, and cancel and sendDontHave,
/// once set, stay set.
fn merge_entries(entries: &[WantEntry]) -> Vec<WantEntry> {
    let mut out: Vec<WantEntry> = Vec::with_capacity(entries.len());
    let mut at: HashMap<Cid, usize> = HashMap::with_capacity(entries.len());
    for e in entries {
        match at.get(&e.cid) {
            Some(&i) => {
                let m = &mut out[i];
                if m.want_type == e.want_type {
                    m.priority = e.priority;
                }
                m.cancel |= e.cancel;
                m.send_dont_have |= e.send_dont_have;
                if e.want_type == WantType::Block {
                    m.want_type = WantType::Block;
                }
            }
            None => {
                at.insert(e.cid, out.len());
                out.push(e.clone());
            }
        }
    }
    out
}

/// One peer's queued answers, in arrival order.
#[derive(Debug)]
struct PeerQueue<P> {
    tasks: BTreeMap<u64, Action<P>>,
    by_hash: HashMap<Multihash<64>, u64>,
    /// Bytes the peer may still send this turn (deficit round robin).
    deficit: usize,
    /// Its turn was cut short by a batch's byte limit: resume it without a
    /// fresh quantum.
    mid_turn: bool,
}

impl<P> Default for PeerQueue<P> {
    fn default() -> Self {
        PeerQueue {
            tasks: BTreeMap::new(),
            by_hash: HashMap::new(),
            deficit: 0,
            mid_turn: false,
        }
    }
}

#[derive(Debug)]
struct Scheduler<P> {
    queues: HashMap<P, PeerQueue<P>>,
    /// Peers with queued work, in turn order.
    ring: VecDeque<P>,
    seq: u64,
}

impl<P> Default for Scheduler<P> {
    fn default() -> Self {
        Scheduler {
            queues: HashMap::new(),
            ring: VecDeque::new(),
            seq: 0,
        }
    }
}

impl<P: Clone + Eq + Hash + Ord + Debug> Scheduler<P> {
    fn len(&self) -> usize {
        self.queues.values().map(|q| q.tasks.len()).sum()
    }

    /// Queues `a`; false if the peer's queue is full.
    fn push(&mut self, a: Action<P>) -> bool {
        let peer = a.peer().clone();
        let mh = *a.cid().hash();
        if !self.queues.contains_key(&peer) {
            self.ring.push_back(peer.clone());
        }
        let q = self.queues.entry(peer).or_default();
        if let Some(&seq) = q.by_hash.get(&mh) {
            if let Some(old) = q.tasks.get_mut(&seq) {
                if !matches!(old, Action::SendBlock { .. }) {
                    *old = a;
                }
            }
            return true;
        }
        if q.tasks.len() >= MAX_WANTS_PER_PEER {
            return false;
        }
        self.seq += 1;
        q.tasks.insert(self.seq, a);
        q.by_hash.insert(mh, self.seq);
        true
    }

    fn cancel(&mut self, peer: &P, mh: &Multihash<64>) {
        if let Some(q) = self.queues.get_mut(peer) {
            if let Some(seq) = q.by_hash.remove(mh) {
                q.tasks.remove(&seq);
            }
            if q.tasks.is_empty() {
                self.remove_peer(peer);
            }
        }
    }

    fn remove_peer(&mut self, peer: &P) {
        if self.queues.remove(peer).is_some() {
            self.ring.retain(|p| p != peer);
        }
    }

    fn next_batch(&mut self, max_bytes: usize) -> Vec<(P, Vec<Action<P>>)> {
        let mut out: Vec<(P, Vec<Action<P>>)> = Vec::new();
        let mut budget = max_bytes;
        let mut taken_any = false;
        while let Some(peer) = self.ring.pop_front() {
            let Some(q) = self.queues.get_mut(&peer) else {
                continue;
            };
            if !q.mid_turn {
                q.deficit = q.deficit.saturating_add(SCHEDULER_QUANTUM_BYTES);
            }
            q.mid_turn = false;
            let mut out_of_budget = false;
            let mut taken = Vec::new();
            while let Some(entry) = q.tasks.first_entry() {
                let cost = entry.get().cost();
                if cost > q.deficit {
                    break;
                }
                if cost > budget && taken_any {
                    out_of_budget = true;
                    break;
                }
                let a = entry.remove();
                q.by_hash.remove(a.cid().hash());
                q.deficit -= cost;
                budget = budget.saturating_sub(cost);
                taken_any = true;
                taken.push(a);
            }
            let empty = q.tasks.is_empty();
            if empty {
                // DRR: an idle peer banks no allowance.
                self.queues.remove(&peer);
            } else if out_of_budget {
                q.mid_turn = true;
                self.ring.push_front(peer.clone());
            } else {
                self.ring.push_back(peer.clone());
            }
            if !taken.is_empty() {
                match out.iter_mut().find(|(p, _)| *p == peer) {
                    Some((_, v)) => v.extend(taken),
                    None => out.push((peer, taken)),
                }
            }
            if out_of_budget || budget == 0 {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Block, RAW};
    use cid::Version;
    use proptest::prelude::*;

    fn cid(n: u32) -> Cid {
        Block::new(Version::V1, RAW, n.to_be_bytes().to_vec()).cid
    }

    fn e(n: u32, t: WantType, sdh: bool) -> WantEntry {
        WantEntry {
            send_dont_have: sdh,
            ..WantEntry::want(cid(n), t)
        }
    }

    fn msg(entries: Vec<WantEntry>) -> Message {
        Message {
            wantlist: entries,
            ..Default::default()
        }
    }

    /// The store in these tests: block n exists iff n < 100, and is n*100
    /// bytes (so block 1..=10 are "small", <= 1024).
    fn store(c: &Cid) -> Option<usize> {
        (0..100).find(|&n| cid(n) == *c).map(|n| n as usize * 100)
    }

    const BLOCK: WantType = WantType::Block;
    const HAVE: WantType = WantType::Have;

    #[test]
    fn message_in_actions_out() {
        use Action::*;
        let p = 1u8;
        // (entry, expected action, want kept in the ledger afterwards?)
        let table: Vec<(WantEntry, Option<Action<u8>>, bool, &str)> = vec![
            (
                e(50, BLOCK, false),
                Some(SendBlock {
                    peer: p,
                    cid: cid(50),
                    size: 5000,
                }),
                false,
                "want-block, have: block, want served",
            ),
            (
                e(50, HAVE, true),
                Some(SendHave {
                    peer: p,
                    cid: cid(50),
                }),
                false,
                "want-have, have big block: HAVE, want-have served",
            ),
            (
                e(10, HAVE, false),
                Some(SendBlock {
                    peer: p,
                    cid: cid(10),
                    size: 1000,
                }),
                false,
                "want-have, block <= 1024 bytes: the block itself",
            ),
            (
                e(11, HAVE, false),
                Some(SendHave {
                    peer: p,
                    cid: cid(11),
                }),
                false,
                "want-have, 1100 bytes: over the limit, HAVE",
            ),
            (
                e(500, HAVE, true),
                Some(SendDontHave {
                    peer: p,
                    cid: cid(500),
                }),
                true,
                "want-have, missing, sendDontHave: DONT_HAVE, want kept",
            ),
            (
                e(500, BLOCK, true),
                Some(SendDontHave {
                    peer: p,
                    cid: cid(500),
                }),
                true,
                "want-block, missing, sendDontHave: DONT_HAVE, want kept",
            ),
            (
                e(500, BLOCK, false),
                None,
                true,
                "want-block, missing, no sendDontHave: silence, want kept",
            ),
            (
                e(500, HAVE, false),
                None,
                true,
                "want-have, missing, no sendDontHave: silence, want kept",
            ),
        ];
        for (entry, want_action, kept, why) in table {
            let mut l = Ledger::new();
            let got = l.on_message(&p, &msg(vec![entry.clone()]), store);
            assert_eq!(got, want_action.into_iter().collect::<Vec<_>>(), "{why}");
            assert_eq!(!l.wants_of(&p).is_empty(), kept, "{why}");
        }
    }

    #[test]
    fn waiting_wants_are_served_when_the_block_lands() {
        let mut l = Ledger::new();
        let _ = l.on_message(&1u8, &msg(vec![e(500, BLOCK, true)]), store);
        let _ = l.on_message(&2u8, &msg(vec![e(500, HAVE, false)]), store);
        let _ = l.on_message(&3u8, &msg(vec![e(501, HAVE, false)]), store);
        // Big block: want-block gets it, want-have gets HAVE; no DONT_HAVE.
        let got = l.on_block_added(&cid(500), 5000);
        assert_eq!(
            got,
            vec![
                Action::SendBlock {
                    peer: 1,
                    cid: cid(500),
                    size: 5000
                },
                Action::SendHave {
                    peer: 2,
                    cid: cid(500)
                },
            ]
        );
        assert!(l.wants_of(&1).is_empty() && l.wants_of(&2).is_empty());
        assert_eq!(l.wants_of(&3).len(), 1);
        // Served once: a second landing sends nothing.
        assert!(l.on_block_added(&cid(500), 5000).is_empty());
        // Small block: even the want-have gets the block.
        let got = l.on_block_added(&cid(501), 10);
        assert!(matches!(got[..], [Action::SendBlock { peer: 3, .. }]));
    }

    #[test]
    fn block_lands_under_another_cid_version() {
        // Peer asks for the CIDv1 dag-pb of a block we store as CIDv0: same
        // multihash, so it is served, under the CID the peer asked with.
        let data = b"x".to_vec();
        let v0 = Block::new(Version::V0, crate::block::DAG_PB, data.clone()).cid;
        let v1 = Cid::new_v1(crate::block::DAG_PB, *v0.hash());
        let mut l = Ledger::new();
        let _ = l.on_message(&1u8, &msg(vec![WantEntry::want(v1, BLOCK)]), |_| None);
        let got = l.on_block_added(&v0, 1);
        assert_eq!(
            got,
            vec![Action::SendBlock {
                peer: 1,
                cid: v1,
                size: 1
            }]
        );
    }

    #[test]
    fn cancel_removes_want_and_queued_answer() {
        let mut l = Ledger::new();
        let a = l.on_message(
            &1u8,
            &msg(vec![e(50, BLOCK, false), e(500, BLOCK, false)]),
            store,
        );
        l.schedule(a);
        assert_eq!(l.queued(), 1);
        let a = l.on_message(
            &1u8,
            &msg(vec![
                WantEntry::cancel(cid(50)),
                WantEntry::cancel(cid(500)),
            ]),
            store,
        );
        assert!(a.is_empty());
        assert_eq!(l.queued(), 0, "queued block cancelled");
        assert!(l.wants_of(&1).is_empty(), "waiting want cancelled");
        assert!(l.on_block_added(&cid(500), 1).is_empty());
    }

    #[test]
    fn full_replaces_partial_updates() {
        let mut l = Ledger::new();
        let _ = l.on_message(
            &1u8,
            &msg(vec![e(500, BLOCK, false), e(501, BLOCK, false)]),
            store,
        );
        let _ = l.on_message(&1u8, &msg(vec![e(502, BLOCK, false)]), store);
        assert_eq!(l.wants_of(&1).len(), 3, "update adds");
        let full = Message {
            wantlist: vec![e(503, HAVE, false)],
            full: true,
            ..Default::default()
        };
        let _ = l.on_message(&1u8, &full, store);
        assert_eq!(l.wants_of(&1), vec![(cid(503), HAVE)], "full replaces");
        assert!(l.on_block_added(&cid(500), 1).is_empty());
        // An empty full wantlist clears everything.
        let _ = l.on_message(
            &1u8,
            &Message {
                full: true,
                ..Default::default()
            },
            store,
        );
        assert!(l.wants_of(&1).is_empty());
    }

    #[test]
    fn duplicate_entries_merge_like_boxo() {
        let m = merge_entries(&[
            e(1, HAVE, false),
            WantEntry {
                priority: 9,
                ..e(1, BLOCK, true)
            },
            e(2, BLOCK, false),
            WantEntry::cancel(cid(2)),
            e(2, HAVE, false),
        ]);
        assert_eq!(m.len(), 2);
        // want-block overrides want-have; priority of a different type kept,
        // sendDontHave sticks.
        assert_eq!(
            (m[0].want_type, m[0].priority, m[0].send_dont_have),
            (BLOCK, 1, true)
        );
        // cancel sticks even if a want follows.
        assert!(m[1].cancel);
    }

    #[test]
    fn wantlist_is_capped_per_peer() {
        // 100k distinct missing blocks in one (decoder-bypassing) message.
        let entries: Vec<WantEntry> = (1000..101_000).map(|n| e(n, BLOCK, false)).collect();
        let mut l = Ledger::new();
        let a = l.on_message(&1u8, &msg(entries), |_| None);
        assert!(a.is_empty());
        assert_eq!(l.wants_of(&1).len(), MAX_WANTS_PER_PEER);
        assert_eq!(
            l.stats().wants_over_cap,
            100_000 - MAX_WANTS_PER_PEER as u64
        );
        // Wants we can serve right away don't take a slot.
        let a = l.on_message(&1u8, &msg(vec![e(50, BLOCK, false)]), store);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn peers_tracked_are_capped() {
        let mut l = Ledger::new();
        for p in 0..MAX_TRACKED_PEERS as u32 {
            let _ = l.on_message(&p, &msg(vec![e(500, BLOCK, false)]), store);
        }
        let extra = MAX_TRACKED_PEERS as u32;
        assert!(l
            .on_message(&extra, &msg(vec![e(50, BLOCK, false)]), store)
            .is_empty());
        assert_eq!(l.stats().untracked_messages, 1);
        l.on_peer_disconnected(&0);
        assert_eq!(
            l.on_message(&extra, &msg(vec![e(50, BLOCK, false)]), store)
                .len(),
            1
        );
        // The disconnected peer's wants are gone from the index too.
        assert_eq!(l.on_block_added(&cid(500), 1).len(), MAX_TRACKED_PEERS - 1);
    }

    #[test]
    fn identity_wants_are_ignored() {
        let id = Cid::new_v1(RAW, Multihash::wrap(IDENTITY, b"hi").unwrap());
        let mut l = Ledger::new();
        let a = l.on_message(&1u8, &msg(vec![WantEntry::want(id, BLOCK)]), |_| Some(2));
        assert!(a.is_empty());
        assert_eq!(l.stats().identity_wants, 1);
    }

    fn blocks_for(peer: u8, from: u32, n: u32, size: usize) -> Vec<Action<u8>> {
        (from..from + n)
            .map(|i| Action::SendBlock {
                peer,
                cid: cid(i),
                size,
            })
            .collect()
    }

    #[test]
    fn greedy_peer_cannot_starve_others() {
        let mut l = Ledger::new();
        // Peer 1 queues 1000 blocks of 256 KiB first; peer 2 then asks for 2.
        l.schedule(blocks_for(1, 0, 1000, 256 << 10));
        l.schedule(blocks_for(2, 5000, 2, 256 << 10));
        let b = l.next_batch(1 << 20);
        let per_peer: Vec<(u8, usize)> = b.iter().map(|(p, a)| (*p, a.len())).collect();
        assert_eq!(per_peer, vec![(1, 2), (2, 2)]);
        // Next batches are all peer 1.
        let b = l.next_batch(1 << 20);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, 1);
        assert_eq!(b[0].1.len(), 4);
    }

    #[test]
    fn bytes_are_shared_fairly_across_block_sizes() {
        // Peer 1 wants 1 MiB blocks, peer 2 8 KiB ones: per round each gets one
        // quantum of bytes, so peer 2 is not held behind peer 1's big blocks.
        let mut l = Ledger::new();
        l.schedule(blocks_for(1, 0, 10, 1 << 20));
        l.schedule(blocks_for(2, 100, 1000, 8 << 10));
        let mut sent = [0usize; 3];
        // 8 MiB in all, less than either peer's demand (10 MiB, ~8 MiB).
        for _ in 0..8 {
            for (p, acts) in l.next_batch(1 << 20) {
                sent[p as usize] += acts.iter().map(|a| a.cost()).sum::<usize>();
            }
        }
        let (a, b) = (sent[1] as f64, sent[2] as f64);
        assert!(a > 0.0 && b > 0.0);
        assert!((a / b - 1.0).abs() < 0.3, "peer1 {a} vs peer2 {b}");
    }

    #[test]
    fn oversized_first_action_still_goes() {
        let mut l = Ledger::new();
        l.schedule(blocks_for(1, 0, 1, 2 << 20));
        let b = l.next_batch(1024);
        assert_eq!(b.len(), 1);
        assert_eq!(l.queued(), 0);
        assert!(l.next_batch(1024).is_empty());
    }

    #[test]
    fn queue_merges_and_is_capped() {
        let mut l = Ledger::new();
        l.schedule([Action::SendHave {
            peer: 1u8,
            cid: cid(1),
        }]);
        l.schedule([Action::SendBlock {
            peer: 1u8,
            cid: cid(1),
            size: 9,
        }]);
        l.schedule([Action::SendDontHave {
            peer: 1u8,
            cid: cid(1),
        }]);
        assert_eq!(l.queued(), 1);
        assert_eq!(
            l.next_batch(100),
            vec![(
                1,
                vec![Action::SendBlock {
                    peer: 1,
                    cid: cid(1),
                    size: 9
                }]
            )]
        );
        l.schedule(blocks_for(1, 0, MAX_WANTS_PER_PEER as u32 + 5, 1));
        assert_eq!(l.queued(), MAX_WANTS_PER_PEER);
        assert_eq!(l.stats().dropped_tasks, 5);
        l.on_peer_disconnected(&1);
        assert_eq!(l.queued(), 0);
    }

    proptest! {
        /// Whatever is scheduled comes out exactly once, and each batch is
        /// within the byte limit unless it is a single action.
        #[test]
        fn scheduler_conserves_work(
            tasks in proptest::collection::vec((0u8..5, 0u32..50, 1usize..600_000), 0..60),
            max in 1usize..2_000_000,
        ) {
            let mut l = Ledger::new();
            let mut expect = std::collections::BTreeSet::new();
            for (p, c, size) in tasks {
                if expect.insert((p, c)) {
                    l.schedule([Action::SendBlock { peer: p, cid: cid(c), size }]);
                }
            }
            let mut got = std::collections::BTreeSet::new();
            for _ in 0..10_000 {
                let b = l.next_batch(max);
                if b.is_empty() { break; }
                let n: usize = b.iter().map(|(_, a)| a.len()).sum();
                let bytes: usize = b.iter().flat_map(|(_, a)| a.iter().map(|a| a.cost())).sum();
                prop_assert!(n == 1 || bytes <= max);
                for (p, acts) in b {
                    for a in acts {
                        prop_assert_eq!(*a.peer(), p);
                        let c = (0..50).find(|&i| cid(i) == *a.cid()).unwrap();
                        prop_assert!(got.insert((p, c)));
                    }
                }
            }
            prop_assert_eq!(got, expect);
        }
    }
}
