//! Bitswap's pure protocol core: the wire codec, the server's ledger and the
//! client's wantlist. No I/O, no libp2p, no tokio, no clock reads: events go
//! in, actions come out, and the caller passes the time in, so every rule can
//! be unit tested and fuzzed alone. The libp2p behaviour/handler that drive
//! these live elsewhere and only execute the actions.
//!
//! - [`message`]: `Message` <-> protobuf bytes, the varint framing go-libp2p
//!   and boxo use, an incremental [`FrameDecoder`], and [`split_into_messages`].
//! - [`ledger`]: the server side, what each peer wants from us and a
//!   fair (deficit round robin) scheduler of what to send them.
//! - [`wantlist`]: the client side, what we want and from whom.
//! - [`recycle`]: frame buffers reused once their blocks are dropped.
//! - [`behaviour`] and [`handler`]: the libp2p I/O shell that drives the
//!   three above (the only part that touches streams, tokio or the store).
//!
//! Peers are any `P: Clone + Eq + Hash + Ord + Debug` so libp2p's `PeerId`
//! plugs in and tests can use small integers.
//!
//! The reference behaviour is boxo v0.11.0 (Kubo v0.22), as for the rest of
//! the crate; every limit is one of the named consts below.

pub mod behaviour;
pub mod handler;
pub mod ledger;
pub mod message;
pub mod recycle;
pub mod wantlist;

pub use behaviour::{Behaviour, Config, Event, GetError, QueryId, Stats};
pub use handler::Handler;

pub use ledger::{Action, Ledger, LedgerStats};
pub use message::{
    encode_frame, encode_frame_v1_0_0, split_into_messages, BlockPresence, FrameDecoder,
    FrameError, FrameParts, Message, MessageError, PresenceType, WantEntry, WantType,
};
pub use recycle::FramePool;
pub use wantlist::{messages_for, ClientAction, Received, Rejection, WantList, WantListError};

/// Protocol ids, newest first (boxo v0.11.0 `bitswap/network/internal/default.go`).
/// 1.2.0 adds HAVE/DONT_HAVE; 1.1.0 sends blocks with their CID prefix;
/// 1.0.0 and the unversioned id send bare block bytes, CIDv0 assumed, and
/// boxo's `msgToStream` (`network/ipfs_impl.go`) writes them with
/// [`encode_frame_v1_0_0`].
pub const PROTOCOLS: [&str; 4] = [
    "/ipfs/bitswap/1.2.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.0.0",
    "/ipfs/bitswap",
];

// ---- wire limits (message.rs) ----

/// Largest message we accept: go-libp2p's `network.MessageSizeMax` (4 MiB),
/// which boxo's reader (`msgio.NewVarintReaderSize`) enforces on every frame.
/// A frame of exactly this many bytes is accepted, as msgio does.
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;

/// Size we aim for when packing outgoing blocks and presences: boxo's client
/// message queue (`messagequeue.go` `maxMessageSize`) stays under 2 MiB, so
/// we do too, leaving room below [`MAX_MESSAGE_SIZE`] for the varint and any
/// wantlist the caller adds. A single block larger than this still goes out,
/// alone (blocks are at most 2 MiB in our store).
pub const TARGET_MESSAGE_SIZE: usize = 2 << 20;

/// Most wantlist entries we decode from one message. A wantlist entry can be
/// 2 bytes on the wire but ~80 in memory, so without a count cap a 4 MiB frame
/// could cost ~160 MiB once decoded; entries are counted *before* decoding.
/// Kubo never sends more than its peers keep (1024 per peer), so 8192 leaves
/// room for merged full wantlists and still bounds memory.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 8192;

/// Most block presences (HAVE/DONT_HAVE) we decode from one message; same
/// reasoning as [`MAX_ENTRIES_PER_MESSAGE`].
pub const MAX_PRESENCES_PER_MESSAGE: usize = 8192;

/// Most blocks (1.0.0 `blocks` plus 1.1.0 `payload`) we decode from one
/// message: each costs a SHA-256 over its data, so an empty-block flood must
/// stay bounded.
pub const MAX_BLOCKS_PER_MESSAGE: usize = 4096;

/// Longest CID we accept: boxo's `defaults.MaximumAllowedCid`
/// (4 max-length varints plus a 128-byte hash).
pub const MAX_CID_BYTES: usize = 4 * 10 + 128;

// ---- server limits (ledger.rs) ----

/// Most wants we keep per peer: boxo's `MaxQueuedWantlistEntiresPerPeer`
/// (1024, also beetswap's cap). Wants past it are ignored and counted, as
/// boxo truncates them.
pub const MAX_WANTS_PER_PEER: usize = 1024;

/// Most peers whose wantlists we track at once; messages from further peers
/// are ignored and counted until one disconnects.
pub const MAX_TRACKED_PEERS: usize = 1024;

/// boxo's `maxBlockSizeReplaceHasWithBlock`: a want-have for a block of at
/// most this many bytes is answered with the block itself, which saves a
/// round trip for the cost of a HAVE.
pub const MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK: usize = 1024;

/// Bytes a peer may take per round of the server's scheduler before the next
/// peer's turn: one default UnixFS chunk (256 KiB), so a peer asking for
/// whole files and a peer asking for one small block alternate fairly.
pub const SCHEDULER_QUANTUM_BYTES: usize = 256 << 10;

// ---- client limits (wantlist.rs) ----

/// Most blocks we fetch at once; further wants wait in a queue.
pub const MAX_WANTS_IN_FLIGHT: usize = 256;

/// Most wants waiting behind the in-flight ones; past this `want` fails.
pub const MAX_PENDING_WANTS: usize = 100_000;

/// Most want-blocks outstanding to one peer: each may make it send a block
/// (up to 2 MiB), so this bounds what one peer can have in flight to us
/// (boxo bounds the server side by bytes, `BitswapMaxOutstandingBytesPerPeer`).
pub const MAX_BLOCK_REQUESTS_PER_PEER: usize = 32;

/// How long a want-block may go unanswered before we ask the next peer that
/// said HAVE. boxo's DONT_HAVE timeout manager waits up to 5 s when it has no
/// latency measure.
pub const BLOCK_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a peer may say nothing about a want-have (1.2.0 peers answer each, asked with
/// sendDontHave) before it is asked again; the wait doubles each time. boxo's sessions re-ask
/// idle wants after about a second.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a want that nobody could serve is asked again of every
/// connected peer (boxo's client rebroadcasts its wantlist each minute).
pub const REBROADCAST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How many recently received CIDs we remember so that a block arriving
/// after our cancel is counted as a harmless duplicate, not misbehaviour.
pub const RECENTLY_RECEIVED: usize = 1024;

// ---- I/O shell limits (behaviour.rs, handler.rs) ----

/// Inbound bitswap streams one connection may hold open at once. Kubo keeps
/// one long-lived stream and its server opens a fresh one per response
/// (boxo runs 8 task workers), so 16 leaves room; past it the oldest stream
/// is dropped, never the new one, so a peer that leaks idle streams still
/// gets heard. Each stream buffers at most one frame ([`MAX_MESSAGE_SIZE`]).
pub const MAX_INBOUND_STREAMS_PER_CONNECTION: usize = 16;

/// Messages handed to one connection's handler and not yet written. The
/// behaviour stops taking a peer's work from the ledger at this many, so a
/// slow reader holds back only itself.
pub const MAX_OUTBOUND_MESSAGES_PER_PEER: usize = 4;

/// Block read jobs (`spawn_blocking`, each about [`TARGET_MESSAGE_SIZE`] of
/// blocks) running at once: bounds memory and the threads a busy server uses.
pub const MAX_CONCURRENT_READS: usize = 4;

/// Store lookups (`has` for one message's wantlist) running at once.
pub const MAX_CONCURRENT_LOOKUPS: usize = 4;

/// Wantlist messages from one peer waiting for a lookup; past this a new one
/// is folded into the peer's newest queued message (so an update is never
/// lost to a busy disk), and dropped and counted only when that merged
/// message would pass [`MAX_ENTRIES_PER_MESSAGE`] (a peer flooding
/// wantlists loses its own).
pub const MAX_QUEUED_WANTLISTS_PER_PEER: usize = 16;

/// Block size the ledger is told for stored blocks: the store answers `has`
/// without a size, and reading a block to learn it would cost a disk read
/// per want-have. One default chunk: above
/// [`MAX_BLOCK_SIZE_REPLACE_HAVE_WITH_BLOCK`], so want-haves get a HAVE.
pub const ASSUMED_BLOCK_SIZE: usize = 256 << 10;

/// CIDs recently announced by `notify_new_blocks`, remembered so a lookup
/// that started before the block landed still counts it as present.
pub const RECENTLY_ADDED: usize = 4096;

/// How long one outbound message may take to write before the stream is
/// dropped (a peer that stops reading must not hold our queue forever).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long `get` waits for a block before it fails (boxo has no limit but
/// the caller's context; ours is the caller's config).
pub const DEFAULT_GET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Most `get` queries outstanding at once (each CID may have several).
pub const MAX_QUERIES: usize = MAX_PENDING_WANTS + MAX_WANTS_IN_FLIGHT;
