//! The bitswap wire format: typed [`Message`] <-> protobuf bytes, and the
//! framing around it.
//!
//! Framing is what go-libp2p's msgio and boxo's `message.go` `write` use: an
//! unsigned varint length, then that many bytes of protobuf, one message per
//! frame. [`FrameDecoder`] splits a byte stream fed in arbitrary pieces into
//! frames, rejecting a length over [`MAX_MESSAGE_SIZE`] as soon as its varint
//! says so, before buffering anything. [`Message::decode`] counts wantlist
//! entries, blocks and presences in a cheap pre-scan and rejects a frame over
//! the per-message caps *before* prost materialises them.
//!
//! Blocks arrive either as 1.1.0+ `payload` (CID prefix + data: the CID is
//! recomputed by hashing, so a received block always matches its CID) or as
//! 1.0.0 bare `blocks` (CIDv0, dag-pb, sha2-256 assumed, as boxo's
//! `blocks.NewBlock` does). Only sha2-256 with a 32-byte digest is accepted.
//!
//! Assumes: block data is referenced, not copied, out of the frame (`Bytes`).

use bytes::{Buf, Bytes};
use cid::{Cid, Version};
use prost::Message as _;

use super::recycle::FramePool;
use super::{
    MAX_BLOCKS_PER_MESSAGE, MAX_CID_BYTES, MAX_ENTRIES_PER_MESSAGE, MAX_MESSAGE_SIZE,
    MAX_PRESENCES_PER_MESSAGE,
};
use crate::block::{Block, DAG_PB, SHA2_256};
use crate::unixfs::pb::{get_varint, put_varint, varint_len};

/// The prost types generated from `proto/bitswap.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/bitswap.message.v1.pb.rs"));
}

/// Why a frame could not be split off a stream. The stream is out of sync
/// afterwards: reset it, as boxo does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bitswap frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    #[error("bitswap frame length is not a valid varint (over 10 bytes)")]
    BadVarint,
    #[error("bitswap stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { expected: usize, got: usize },
    #[error("bitswap stream ended inside a frame's length prefix")]
    TruncatedLength,
}

/// Why a frame is not a bitswap message we accept. The stream itself is
/// still in sync: the frame had a valid length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("bitswap message of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("bitswap message is not valid protobuf: {reason}")]
    Malformed { reason: String },
    #[error("bitswap message has {count} {what}, over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("bitswap {field} has no CID")]
    MissingCid { field: &'static str },
    #[error("bitswap {field} is not a CID: {reason}")]
    BadCid { field: &'static str, reason: String },
    #[error("bitswap {field} CID is {len} bytes, over the {max}-byte limit")]
    CidTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("bitswap block prefix is malformed: {reason}")]
    BadPrefix { reason: &'static str },
    #[error("bitswap block uses hash function 0x{code:x}; only sha2-256 (0x12) is supported")]
    UnsupportedHash { code: u64 },
    #[error("bitswap block prefix asks for a {len}-byte sha2-256 digest; only 32 is supported")]
    BadDigestLength { len: u64 },
    #[error("bitswap block prefix has CID version {version}; only 0 and 1 exist")]
    UnsupportedCidVersion { version: u64 },
    #[error("bitswap block prefix is CIDv0 with codec 0x{codec:x}; CIDv0 is always dag-pb")]
    V0NotDagPb { codec: u64 },
    #[error("bitswap wantlist entry has unknown want type {0}")]
    UnknownWantType(i32),
    #[error("bitswap block presence has unknown type {0}")]
    UnknownPresenceType(i32),
}

/// What a wantlist entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum WantType {
    /// Send the block (the default, and all 1.0.0/1.1.0 peers know).
    #[default]
    Block,
    /// Tell me whether you have it (1.2.0).
    Have,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    pub cid: Cid,
    pub priority: i32,
    /// Revokes an earlier want for `cid`; the other fields are then unused.
    pub cancel: bool,
    pub want_type: WantType,
    /// Answer DONT_HAVE rather than staying silent when we lack the block.
    pub send_dont_have: bool,
}

impl WantEntry {
    /// A want-block or want-have with priority 1, asking for DONT_HAVE.
    pub fn want(cid: Cid, want_type: WantType) -> Self {
        WantEntry {
            cid,
            priority: 1,
            cancel: false,
            want_type,
            send_dont_have: true,
        }
    }

    /// A cancel, written as boxo's `Cancel` writes it (priority 0, Block).
    pub fn cancel(cid: Cid) -> Self {
        WantEntry {
            cid,
            priority: 0,
            cancel: true,
            want_type: WantType::Block,
            send_dont_have: false,
        }
    }
}

/// HAVE or DONT_HAVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceType {
    Have,
    DontHave,
}

/// A HAVE or DONT_HAVE for one CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPresence {
    pub cid: Cid,
    pub kind: PresenceType,
}

/// One bitswap message, typed. Entries keep their wire order; merging
/// duplicates is the ledger's job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub wantlist: Vec<WantEntry>,
    /// `wantlist` replaces everything the sender wanted before.
    pub full: bool,
    pub blocks: Vec<Block>,
    pub presences: Vec<BlockPresence>,
    /// Bytes the sender still has queued for us (informational).
    pub pending_bytes: i32,
}

impl Message {
    pub fn is_empty(&self) -> bool {
        self.wantlist.is_empty() && self.blocks.is_empty() && self.presences.is_empty()
    }

    /// Decodes one frame's body.
    pub fn decode(frame: Bytes) -> Result<Message, MessageError> {
        if frame.len() > MAX_MESSAGE_SIZE {
            return Err(MessageError::TooLarge {
                len: frame.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        let counts = prescan(&frame)?;
        check_count("wantlist entries", counts.entries, MAX_ENTRIES_PER_MESSAGE)?;
        check_count("blocks", counts.blocks, MAX_BLOCKS_PER_MESSAGE)?;
        check_count(
            "block presences",
            counts.presences,
            MAX_PRESENCES_PER_MESSAGE,
        )?;

        let m = pb::Message::decode(frame).map_err(|e| MessageError::Malformed {
            reason: e.to_string(),
        })?;
        let (entries, full) = match m.wantlist {
            Some(w) => (w.entries, w.full),
            None => (Vec::new(), false),
        };
        let wantlist = entries
            .into_iter()
            .map(|e| {
                Ok(WantEntry {
                    cid: read_cid("wantlist entry", &e.block)?,
                    priority: e.priority,
                    cancel: e.cancel,
                    want_type: match e.want_type {
                        0 => WantType::Block,
                        1 => WantType::Have,
                        t => return Err(MessageError::UnknownWantType(t)),
                    },
                    send_dont_have: e.send_dont_have,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut blocks = Vec::with_capacity(m.blocks.len() + m.payload.len());
        for data in m.blocks {
            // 1.0.0: bytes only, so the CID is CIDv0 (dag-pb, sha2-256).
            blocks.push(Block::new(Version::V0, DAG_PB, data));
        }
        for b in m.payload {
            let cid = cid_from_prefix(&b.prefix, &b.data)?;
            blocks.push(Block { cid, data: b.data });
        }
        let presences = m
            .block_presences
            .into_iter()
            .map(|p| {
                Ok(BlockPresence {
                    cid: read_cid("block presence", &p.cid)?,
                    kind: match p.r#type {
                        0 => PresenceType::Have,
                        1 => PresenceType::DontHave,
                        t => return Err(MessageError::UnknownPresenceType(t)),
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Message {
            wantlist,
            full,
            blocks,
            presences,
            pending_bytes: m.pending_bytes,
        })
    }

    /// The protobuf body as 1.1.0/1.2.0 peers read it.
    pub fn encode(&self) -> Vec<u8> {
        self.to_pb(false).encode_to_vec()
    }

    /// Bytes of [`Message::encode`]'s output, without building it.
    pub fn encoded_len(&self) -> usize {
        self.to_pb(false).encoded_len()
    }

    fn to_pb(&self, v1_0_0: bool) -> pb::Message {
        // Go's gogo encoder always writes the (non-nullable) wantlist, even
        // empty; doing the same keeps our bytes identical to Kubo's.
        let wantlist = pb::message::Wantlist {
            entries: self
                .wantlist
                .iter()
                .map(|e| pb::message::wantlist::Entry {
                    block: e.cid.to_bytes().into(),
                    priority: e.priority,
                    cancel: e.cancel,
                    want_type: match e.want_type {
                        WantType::Block => 0,
                        WantType::Have => 1,
                    },
                    send_dont_have: e.send_dont_have,
                })
                .collect(),
            full: self.full,
        };
        if v1_0_0 {
            // boxo `ToProtoV0`: bare block bytes, no presences, no pendingBytes.
            return pb::Message {
                wantlist: Some(wantlist),
                blocks: self.blocks.iter().map(|b| b.data.clone()).collect(),
                ..Default::default()
            };
        }
        pb::Message {
            wantlist: Some(wantlist),
            blocks: Vec::new(),
            payload: self.blocks.iter().map(payload_of).collect(),
            block_presences: self.presences.iter().map(presence_of).collect(),
            pending_bytes: self.pending_bytes,
        }
    }
}

fn payload_of(b: &Block) -> pb::message::Block {
    pb::message::Block {
        prefix: cid_prefix(&b.cid).into(),
        data: b.data.clone(),
    }
}

fn presence_of(p: &BlockPresence) -> pb::message::BlockPresence {
    pb::message::BlockPresence {
        cid: p.cid.to_bytes().into(),
        r#type: match p.kind {
            PresenceType::Have => 0,
            PresenceType::DontHave => 1,
        },
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), MessageError> {
    if count > max {
        return Err(MessageError::TooMany { what, count, max });
    }
    Ok(())
}

fn read_cid(field: &'static str, b: &[u8]) -> Result<Cid, MessageError> {
    if b.is_empty() {
        return Err(MessageError::MissingCid { field });
    }
    if b.len() > MAX_CID_BYTES {
        return Err(MessageError::CidTooLong {
            field,
            len: b.len(),
            max: MAX_CID_BYTES,
        });
    }
    Cid::try_from(b).map_err(|e| MessageError::BadCid {
        field,
        reason: e.to_string(),
    })
}

/// go-cid's `Prefix.Bytes()`: version, codec, multihash code, digest length,
/// each an unsigned varint.
pub fn cid_prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    let version = match cid.version() {
        Version::V0 => 0,
        Version::V1 => 1,
    };
    put_varint(&mut out, version);
    put_varint(&mut out, cid.codec());
    put_varint(&mut out, cid.hash().code());
    put_varint(&mut out, u64::from(cid.hash().size()));
    out
}

/// The CID a 1.1.0 payload names: its prefix applied to the hash of `data`.
fn cid_from_prefix(prefix: &[u8], data: &[u8]) -> Result<Cid, MessageError> {
    let mut buf = prefix;
    let mut next = |what: &'static str| {
        get_varint(&mut buf).map_err(|_| MessageError::BadPrefix { reason: what })
    };
    let version = next("truncated or bad CID version")?;
    let codec = next("truncated or bad codec")?;
    let code = next("truncated or bad multihash code")?;
    let len = next("truncated or bad digest length")?;
    if buf.has_remaining() {
        return Err(MessageError::BadPrefix {
            reason: "trailing bytes after the digest length",
        });
    }
    if code != SHA2_256 {
        return Err(MessageError::UnsupportedHash { code });
    }
    if len != 32 {
        return Err(MessageError::BadDigestLength { len });
    }
    let mh = crate::block::multihash(data);
    match version {
        0 if codec == DAG_PB => Cid::new_v0(mh).map_err(|e| MessageError::BadCid {
            field: "block prefix",
            reason: e.to_string(),
        }),
        0 => Err(MessageError::V0NotDagPb { codec }),
        1 => Ok(Cid::new_v1(codec, mh)),
        version => Err(MessageError::UnsupportedCidVersion { version }),
    }
}

#[derive(Debug, Default)]
struct Counts {
    entries: usize,
    blocks: usize,
    presences: usize,
}

/// Walks the protobuf structure without allocating, counting the repeated
/// fields that become heap objects. Fields are skipped by wire type, so
/// unknown fields are tolerated as protobuf requires.
fn prescan(frame: &[u8]) -> Result<Counts, MessageError> {
    let mut c = Counts::default();
    let mut buf = frame;
    while buf.has_remaining() {
        let (field, wt) = key(&mut buf)?;
        match (field, wt) {
            (1, 2) => {
                let mut w = len_delimited(&mut buf)?;
                while w.has_remaining() {
                    let (f, wt) = key(&mut w)?;
                    if (f, wt) == (1, 2) {
                        c.entries += 1;
                    }
                    skip(&mut w, wt)?;
                }
            }
            (2, 2) | (3, 2) => {
                c.blocks += 1;
                skip(&mut buf, wt)?;
            }
            (4, 2) => {
                c.presences += 1;
                skip(&mut buf, wt)?;
            }
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(c)
}

fn malformed(reason: &str) -> MessageError {
    MessageError::Malformed {
        reason: reason.to_string(),
    }
}

fn key(buf: &mut &[u8]) -> Result<(u64, u64), MessageError> {
    let k = get_varint(buf).map_err(|_| malformed("bad field key"))?;
    Ok((k >> 3, k & 7))
}

fn len_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], MessageError> {
    let n = get_varint(buf).map_err(|_| malformed("bad length"))?;
    if n > buf.len() as u64 {
        return Err(malformed("length-delimited field runs past the end"));
    }
    let (head, tail) = buf.split_at(n as usize);
    *buf = tail;
    Ok(head)
}

fn skip(buf: &mut &[u8], wire_type: u64) -> Result<(), MessageError> {
    let n = match wire_type {
        0 => {
            get_varint(buf).map_err(|_| malformed("bad varint"))?;
            return Ok(());
        }
        1 => 8,
        2 => {
            len_delimited(buf)?;
            return Ok(());
        }
        5 => 4,
        _ => return Err(malformed("unsupported wire type")),
    };
    if buf.len() < n {
        return Err(malformed("fixed-width field runs past the end"));
    }
    buf.advance(n);
    Ok(())
}

/// A length-prefixed frame of `msg` for 1.1.0/1.2.0 peers (boxo `ToNetV1`).
pub fn encode_frame(msg: &Message) -> Vec<u8> {
    FrameParts::new(msg, false).concat()
}

/// A length-prefixed frame of `msg` for 1.0.0 and unversioned peers (boxo
/// `ToNetV0`): blocks as bare bytes, which the peer names as CIDv0, so only
/// send CIDv0 blocks this way; presences are dropped.
pub fn encode_frame_v1_0_0(msg: &Message) -> Vec<u8> {
    FrameParts::new(msg, true).concat()
}

/// A frame as the byte runs to write in order: the protobuf framing in small
/// runs, each block's data shared with the block rather than copied.
///
/// Why not one buffer: a message carries up to 2 MiB of blocks, and copying
/// them into a fresh buffer per message (which the stream then copies again
/// into its own frames) cost a serving node a memmove and a page fault per
/// page sent. The bytes are exactly prost's encoding of the same message
/// (fields in tag order), so peers see the frame [`encode_frame`] gives.
#[derive(Debug, Clone)]
pub struct FrameParts(Vec<Bytes>);

impl FrameParts {
    /// The frame of `msg`; `v1_0_0` as for [`encode_frame_v1_0_0`].
    pub fn new(msg: &Message, v1_0_0: bool) -> Self {
        let m = msg.to_pb(v1_0_0);
        let mut parts = Vec::with_capacity(2 * (m.blocks.len() + m.payload.len()) + 1);
        let mut head = Vec::with_capacity(64);
        put_varint(&mut head, m.encoded_len() as u64);
        // Field 1 alone: every other field of this message is empty.
        pb::Message {
            wantlist: m.wantlist,
            ..Default::default()
        }
        .encode(&mut head)
        .expect("a Vec grows to fit any protobuf message");
        let mut data = |head: &mut Vec<u8>, data: Bytes| {
            parts.push(Bytes::from(std::mem::take(head)));
            parts.push(data);
        };
        for b in m.blocks {
            // Field 2 (repeated bytes): every element is written, even empty.
            head.push(2 << 3 | 2);
            put_varint(&mut head, b.len() as u64);
            data(&mut head, b);
        }
        for p in m.payload {
            // Field 3, a Block: prefix (1), then data (2), which proto3 omits
            // when empty.
            head.push(3 << 3 | 2);
            put_varint(&mut head, p.encoded_len() as u64);
            head.push(1 << 3 | 2);
            put_varint(&mut head, p.prefix.len() as u64);
            head.extend_from_slice(&p.prefix);
            if !p.data.is_empty() {
                head.push(2 << 3 | 2);
                put_varint(&mut head, p.data.len() as u64);
                data(&mut head, p.data);
            }
        }
        pb::Message {
            block_presences: m.block_presences,
            pending_bytes: m.pending_bytes,
            ..Default::default()
        }
        .encode(&mut head)
        .expect("a Vec grows to fit any protobuf message");
        if !head.is_empty() {
            parts.push(Bytes::from(head));
        }
        FrameParts(parts)
    }

    /// The runs, in the order they go on the wire.
    pub fn parts(&self) -> &[Bytes] {
        &self.0
    }

    /// Total bytes of the frame.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Never: a frame always holds at least its length prefix.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The whole frame in one buffer.
    pub fn concat(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.0 {
            out.extend_from_slice(p);
        }
        out
    }
}

/// Where a [`FrameDecoder`] is in the stream.
#[derive(Debug)]
enum State {
    /// Reading the varint length: value so far and bytes read.
    Len { value: u64, bytes: u32 },
    /// Reading a body of `len` bytes into `buf`.
    Body { len: usize },
}

/// Splits a byte stream, fed in pieces of any size, into frame bodies.
///
/// It buffers at most one incomplete frame (never more than its max size, and
/// fresh memory only as the bytes arrive, never on the strength of a length
/// prefix alone); complete frames in the caller's input are copied out
/// directly. With a [`FramePool`] a large frame is read into a recycled buffer
/// (memory the pool already holds) and returns to it when dropped. After an
/// error every further call returns the same error.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    state: State,
    buf: Vec<u8>,
    pool: Option<FramePool>,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Longest valid varint (Go's `binary.MaxVarintLen64`).
const MAX_VARINT_BYTES: u32 = 10;

impl FrameDecoder {
    /// A decoder enforcing [`MAX_MESSAGE_SIZE`].
    pub fn new() -> Self {
        Self::with_max(MAX_MESSAGE_SIZE)
    }

    /// A decoder enforcing `max` bytes per frame (tests, or a stricter caller).
    pub fn with_max(max: usize) -> Self {
        FrameDecoder {
            max,
            state: State::Len { value: 0, bytes: 0 },
            buf: Vec::new(),
            pool: None,
            failed: None,
        }
    }

    /// A decoder enforcing [`MAX_MESSAGE_SIZE`] that reads large frames into
    /// buffers recycled through `pool`.
    pub fn with_pool(pool: FramePool) -> Self {
        FrameDecoder {
            pool: Some(pool),
            ..Self::new()
        }
    }

    /// Bytes held for the frame in progress.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Heap reserved for the frame in progress (never over the max frame).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Consumes all of `input`, returning every frame body it completes.
    pub fn push(&mut self, mut input: &[u8]) -> Result<Vec<Bytes>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut frames = Vec::new();
        while !input.is_empty() {
            match self.state {
                State::Len { value, bytes } => {
                    let b = input[0];
                    input = &input[1..];
                    let value = value | (u64::from(b & 0x7f) << (7 * bytes));
                    let bytes = bytes + 1;
                    if value > self.max as u64 {
                        return Err(self.fail(FrameError::TooLarge {
                            len: value,
                            max: self.max,
                        }));
                    }
                    if b & 0x80 == 0 {
                        let len = value as usize;
                        if len == 0 {
                            frames.push(Bytes::new());
                            self.state = State::Len { value: 0, bytes: 0 };
                        } else if input.len() >= len {
                            // The whole frame is in the caller's input.
                            frames.push(Bytes::copy_from_slice(&input[..len]));
                            input = &input[len..];
                            self.state = State::Len { value: 0, bytes: 0 };
                        } else {
                            if let Some(buf) = self.pool.as_ref().and_then(|p| p.take(len)) {
                                self.buf = buf;
                            }
                            self.state = State::Body { len };
                        }
                    } else if bytes >= MAX_VARINT_BYTES {
                        return Err(self.fail(FrameError::BadVarint));
                    } else {
                        self.state = State::Len { value, bytes };
                    }
                }
                State::Body { len } => {
                    let take = (len - self.buf.len()).min(input.len());
                    self.grow(len, take);
                    self.buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.buf.len() == len {
                        let buf = std::mem::take(&mut self.buf);
                        frames.push(match &self.pool {
                            Some(pool) => pool.freeze(buf),
                            None => Bytes::from(buf),
                        });
                        self.state = State::Len { value: 0, bytes: 0 };
                    }
                }
            }
        }
        Ok(frames)
    }

    /// Call at end of stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.state {
            State::Len { bytes: 0, .. } => Ok(()),
            State::Len { .. } => Err(FrameError::TruncatedLength),
            State::Body { len } => Err(FrameError::Truncated {
                expected: len,
                got: self.buf.len(),
            }),
        }
    }

    /// Reserves room for `more` bytes, doubling as Vec would but never past
    /// the frame's length, so capacity stays within the frame limit.
    fn grow(&mut self, frame_len: usize, more: usize) {
        let need = self.buf.len() + more;
        if need <= self.buf.capacity() {
            return;
        }
        let target = need.max(self.buf.capacity() * 2).min(frame_len);
        self.buf.reserve_exact(target - self.buf.len());
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }
}

/// Packs blocks and presences into messages whose body stays within `limit`
/// bytes (Helia's `utils/split-message.ts` idea). Presences go first: they
/// are small and let the peer decide sooner. Items keep their order; a block
/// too large for `limit` on its own is sent alone rather than dropped.
pub fn split_into_messages(
    blocks: Vec<Block>,
    presences: Vec<BlockPresence>,
    limit: usize,
) -> Vec<Message> {
    // An empty message is the always-present empty wantlist: `0a 00`.
    let base = Message::default().encoded_len();
    let mut out = Vec::new();
    let mut cur = Message::default();
    let mut size = base;
    let flush = |cur: &mut Message, size: &mut usize, out: &mut Vec<Message>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
        *size = base;
    };
    for p in presences {
        let n = field_len(presence_of(&p).encoded_len());
        if size + n > limit {
            flush(&mut cur, &mut size, &mut out);
        }
        size += n;
        cur.presences.push(p);
    }
    for b in blocks {
        let n = field_len(payload_of(&b).encoded_len());
        if size + n > limit {
            flush(&mut cur, &mut size, &mut out);
        }
        size += n;
        cur.blocks.push(b);
    }
    flush(&mut cur, &mut size, &mut out);
    out
}

/// Bytes a length-delimited field with a one-byte key and `len`-byte body takes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::RAW;
    use proptest::prelude::*;

    fn blk(seed: &[u8]) -> Block {
        Block::new(Version::V1, RAW, seed.to_vec())
    }

    /// `echo "hello world" | ipfs add`: QmT78z..., a CIDv0 with a known hash.
    const HELLO_V0: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

    /// Bytes hand-built from proto/bitswap.proto the way boxo v0.11.0's
    /// generated `bitswap/message/pb/message.pb.go` (`MarshalToSizedBuffer`)
    /// writes them: fields in number order, proto3 zero values left out, the
    /// non-nullable wantlist always present. This is what Kubo sends for one
    /// want-have with priority 1 and sendDontHave.
    #[test]
    fn want_have_matches_gogo_bytes() {
        let cid: Cid = HELLO_V0.parse().unwrap();
        let m = Message {
            wantlist: vec![WantEntry::want(cid, WantType::Have)],
            ..Default::default()
        };
        let cid_b = cid.to_bytes();
        assert_eq!(cid_b.len(), 34);
        let mut entry = vec![0x0a, 34];
        entry.extend_from_slice(&cid_b);
        entry.extend_from_slice(&[0x10, 0x01, 0x20, 0x01, 0x28, 0x01]);
        let mut wl = vec![0x0a, entry.len() as u8];
        wl.extend_from_slice(&entry);
        let mut body = vec![0x0a, wl.len() as u8];
        body.extend_from_slice(&wl);
        assert_eq!(m.encode(), body);
        let mut framed = vec![body.len() as u8];
        framed.extend_from_slice(&body);
        assert_eq!(encode_frame(&m), framed);
        assert_eq!(Message::decode(Bytes::from(body)).unwrap(), m);
    }

    /// A 1.1.0 payload block and a DONT_HAVE, as gogo writes them; the
    /// prefix `01 55 12 20` is go-cid's `Prefix.Bytes()` for CIDv1 raw sha2-256.
    #[test]
    fn payload_and_presence_match_gogo_bytes() {
        let b = blk(b"hi");
        let m = Message {
            blocks: vec![b.clone()],
            presences: vec![BlockPresence {
                cid: b.cid,
                kind: PresenceType::DontHave,
            }],
            pending_bytes: 7,
            ..Default::default()
        };
        let mut want = vec![0x0a, 0x00]; // empty wantlist, always written
        want.extend_from_slice(&[
            0x1a, 10, 0x0a, 4, 0x01, 0x55, 0x12, 0x20, 0x12, 2, b'h', b'i',
        ]);
        let cid_b = b.cid.to_bytes();
        want.extend_from_slice(&[0x22, (cid_b.len() + 4) as u8, 0x0a, cid_b.len() as u8]);
        want.extend_from_slice(&cid_b);
        want.extend_from_slice(&[0x10, 0x01, 0x28, 0x07]);
        assert_eq!(m.encode(), want);
        assert_eq!(Message::decode(Bytes::from(want)).unwrap(), m);
    }

    /// prost's encoding of the whole message, framed: what [`FrameParts`]
    /// must reproduce byte for byte.
    fn prost_frame(m: &pb::Message) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, m.encoded_len() as u64);
        m.encode(&mut out).unwrap();
        out
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let block = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| blk(&d));
        (
            proptest::collection::vec(block, 0..5),
            proptest::collection::vec((any::<u8>(), any::<bool>()), 0..4),
            proptest::collection::vec((any::<u8>(), any::<bool>(), any::<bool>()), 0..4),
            any::<bool>(),
            any::<i32>(),
        )
            .prop_map(|(blocks, presences, wants, full, pending_bytes)| Message {
                presences: presences
                    .into_iter()
                    .map(|(s, have)| BlockPresence {
                        cid: blk(&[s]).cid,
                        kind: if have {
                            PresenceType::Have
                        } else {
                            PresenceType::DontHave
                        },
                    })
                    .collect(),
                wantlist: wants
                    .into_iter()
                    .map(|(s, have, cancel)| {
                        let cid = blk(&[s]).cid;
                        if cancel {
                            WantEntry::cancel(cid)
                        } else if have {
                            WantEntry::want(cid, WantType::Have)
                        } else {
                            WantEntry::want(cid, WantType::Block)
                        }
                    })
                    .collect(),
                blocks,
                full,
                pending_bytes,
            })
    }

    proptest! {
        #[test]
        fn frame_parts_are_prosts_bytes(m in arb_message(), legacy in any::<bool>()) {
            let parts = FrameParts::new(&m, legacy);
            prop_assert_eq!(parts.concat(), prost_frame(&m.to_pb(legacy)));
            prop_assert_eq!(parts.len(), parts.concat().len());
            // Block data is shared, never copied into the framing.
            let datas: Vec<_> = m.blocks.iter().filter(|b| !b.data.is_empty()).collect();
            for b in datas {
                prop_assert!(parts
                    .parts()
                    .iter()
                    .any(|p| p.as_ptr() == b.data.as_ptr() && p.len() == b.data.len()));
            }
        }
    }

    #[test]
    fn v1_0_0_blocks_are_cidv0() {
        let data = crate::unixfs::pb::encode_unixfs_leaf(
            crate::unixfs::pb::DataType::File,
            b"hello world\n",
        );
        let b = Block::new(Version::V0, DAG_PB, data);
        let m = Message {
            blocks: vec![b.clone()],
            presences: vec![BlockPresence {
                cid: b.cid,
                kind: PresenceType::Have,
            }],
            ..Default::default()
        };
        let f = encode_frame_v1_0_0(&m);
        let frames = FrameDecoder::new().push(&f).unwrap();
        let got = Message::decode(frames[0].clone()).unwrap();
        assert_eq!(got.blocks[0].cid.to_string(), HELLO_V0);
        assert!(got.presences.is_empty(), "1.0.0 has no presences");
    }

    #[test]
    fn rejects_bad_prefixes() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x01, 0x55, 0x13, 0x40], "UnsupportedHash"), // sha2-512
            (&[0x01, 0x55, 0x12, 0x14], "BadDigestLength"), // truncated sha2-256
            (&[0x00, 0x55, 0x12, 0x20], "V0NotDagPb"),
            (&[0x02, 0x55, 0x12, 0x20], "UnsupportedCidVersion"),
            (&[0x01, 0x55, 0x12], "BadPrefix"),
            (&[0x01, 0x55, 0x12, 0x20, 0x00], "BadPrefix"),
        ];
        for (prefix, want) in cases {
            let m = pb::Message {
                payload: vec![pb::message::Block {
                    prefix: Bytes::copy_from_slice(prefix),
                    data: Bytes::from_static(b"x"),
                }],
                ..Default::default()
            };
            let e = Message::decode(m.encode_to_vec().into()).unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{prefix:?}: {e:?}");
        }
    }

    #[test]
    fn rejects_missing_and_bad_cids_and_unknown_enums() {
        let entry = |block: &[u8], want_type| pb::Message {
            wantlist: Some(pb::message::Wantlist {
                entries: vec![pb::message::wantlist::Entry {
                    block: Bytes::copy_from_slice(block),
                    want_type,
                    ..Default::default()
                }],
                full: false,
            }),
            ..Default::default()
        };
        let good = blk(b"a").cid.to_bytes();
        let dec = |m: pb::Message| Message::decode(m.encode_to_vec().into());
        assert!(matches!(
            dec(entry(b"", 0)),
            Err(MessageError::MissingCid { .. })
        ));
        assert!(matches!(
            dec(entry(b"\x01\x02", 0)),
            Err(MessageError::BadCid { .. })
        ));
        assert!(matches!(
            dec(entry(&[1u8; MAX_CID_BYTES + 1], 0)),
            Err(MessageError::CidTooLong { .. })
        ));
        assert_eq!(
            dec(entry(&good, 7)).unwrap_err(),
            MessageError::UnknownWantType(7)
        );
        let p = pb::Message {
            block_presences: vec![pb::message::BlockPresence {
                cid: good.into(),
                r#type: 2,
            }],
            ..Default::default()
        };
        assert_eq!(dec(p).unwrap_err(), MessageError::UnknownPresenceType(2));
    }

    #[test]
    fn entry_cap_is_checked_before_decoding() {
        // MAX+1 empty entries: 2 bytes each on the wire; rejected by count,
        // not by the (would-be) missing CID of the first one.
        let mut wl = Vec::new();
        for _ in 0..=MAX_ENTRIES_PER_MESSAGE {
            wl.extend_from_slice(&[0x0a, 0x00]);
        }
        let mut body = vec![0x0a];
        put_varint(&mut body, wl.len() as u64);
        body.extend_from_slice(&wl);
        assert_eq!(
            Message::decode(body.into()).unwrap_err(),
            MessageError::TooMany {
                what: "wantlist entries",
                count: MAX_ENTRIES_PER_MESSAGE + 1,
                max: MAX_ENTRIES_PER_MESSAGE
            }
        );
        let mut body = Vec::new();
        for _ in 0..=MAX_PRESENCES_PER_MESSAGE {
            body.extend_from_slice(&[0x22, 0x00]);
        }
        assert!(matches!(
            Message::decode(body.into()),
            Err(MessageError::TooMany {
                what: "block presences",
                ..
            })
        ));
        let mut body = Vec::new();
        for _ in 0..=MAX_BLOCKS_PER_MESSAGE {
            body.extend_from_slice(&[0x12, 0x00]);
        }
        assert!(matches!(
            Message::decode(body.into()),
            Err(MessageError::TooMany { what: "blocks", .. })
        ));
    }

    /// A pooled decoder reads the next large frame into the buffer the last
    /// one's blocks came back with, and never while a block still uses it.
    #[test]
    fn pooled_decoder_reuses_a_frame_buffer_once_its_blocks_drop() {
        let pool = FramePool::new();
        let mut d = FrameDecoder::with_pool(pool.clone());
        let frame = |seed: u8| {
            encode_frame(&Message {
                blocks: vec![blk(&vec![seed; 256 << 10])],
                ..Message::default()
            })
        };
        let decode = |d: &mut FrameDecoder, wire: &[u8]| {
            // In read-sized pieces, as from a stream, so the body is buffered.
            let mut frames = Vec::new();
            for piece in wire.chunks(64 << 10) {
                frames.extend(d.push(piece).unwrap());
            }
            assert_eq!(frames.len(), 1);
            Message::decode(frames.pop().unwrap()).unwrap()
        };
        let first = decode(&mut d, &frame(1));
        assert_eq!(pool.held(), 0, "the block holds its frame");
        let block = first.blocks[0].clone();
        drop(first);
        let second = decode(&mut d, &frame(2));
        assert_eq!(pool.held(), 0, "the first frame was still in use");
        assert!(block.data.iter().all(|&b| b == 1), "and untouched");
        drop(block);
        let at = pool.held();
        assert!(at > 256 << 10, "the first frame came back: {at}");
        let third = decode(&mut d, &frame(3));
        assert_eq!(pool.held(), 0, "the third frame took it");
        assert!(third.blocks[0].data.iter().all(|&b| b == 3));
        assert!(second.blocks[0].data.iter().all(|&b| b == 2));
        assert_eq!(third.blocks[0].cid, blk(&vec![3; 256 << 10]).cid);
    }

    #[test]
    fn empty_frame_is_an_empty_message() {
        let frames = FrameDecoder::new().push(&[0x00, 0x00]).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(Message::decode(frames[0].clone()).unwrap().is_empty());
    }

    #[test]
    fn frame_limit_is_inclusive_and_checked_at_the_prefix() {
        let mut at = Vec::new();
        put_varint(&mut at, MAX_MESSAGE_SIZE as u64);
        let mut d = FrameDecoder::new();
        assert!(
            d.push(&at).unwrap().is_empty(),
            "exactly the max is allowed"
        );
        assert_eq!(d.capacity(), 0, "nothing reserved on the prefix alone");
        d.push(&[0u8; 1000]).unwrap();
        assert!(d.capacity() <= MAX_MESSAGE_SIZE);

        let mut over = Vec::new();
        put_varint(&mut over, MAX_MESSAGE_SIZE as u64 + 1);
        let mut d = FrameDecoder::new();
        assert!(matches!(d.push(&over), Err(FrameError::TooLarge { .. })));
        // Poisoned: the stream is out of sync.
        assert!(d.push(&[0]).is_err());

        // A huge prefix is rejected by its first bytes, before its end.
        let mut d = FrameDecoder::new();
        assert!(matches!(
            d.push(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge { .. })
        ));
        // Overlong zero padding never ends: rejected at 10 bytes.
        let mut d = FrameDecoder::new();
        assert_eq!(d.push(&[0x80; 10]), Err(FrameError::BadVarint));
    }

    #[test]
    fn finish_reports_truncation() {
        let mut d = FrameDecoder::new();
        d.push(&[0x05, 1, 2]).unwrap();
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated {
                expected: 5,
                got: 2
            })
        );
        let mut d = FrameDecoder::new();
        d.push(&[0x05, 1, 2, 3, 4, 5]).unwrap();
        assert_eq!(d.finish(), Ok(()));
        let mut d = FrameDecoder::new();
        d.push(&[0x85]).unwrap();
        assert_eq!(d.finish(), Err(FrameError::TruncatedLength));
    }

    #[test]
    fn split_respects_the_limit() {
        let blocks: Vec<Block> = (0..50u8).map(|i| blk(&[i; 300])).collect();
        let presences: Vec<BlockPresence> = (0..50u8)
            .map(|i| BlockPresence {
                cid: blk(&[i]).cid,
                kind: PresenceType::Have,
            })
            .collect();
        let limit = 2000;
        let msgs = split_into_messages(blocks.clone(), presences.clone(), limit);
        assert!(msgs.len() > 1);
        for m in &msgs {
            assert!(m.encoded_len() <= limit, "{} > {limit}", m.encoded_len());
        }
        let all_b: Vec<Block> = msgs.iter().flat_map(|m| m.blocks.clone()).collect();
        let all_p: Vec<BlockPresence> = msgs.iter().flat_map(|m| m.presences.clone()).collect();
        assert_eq!(all_b, blocks);
        assert_eq!(all_p, presences);
        // A block larger than the limit goes alone.
        let big = blk(&[9; 5000]);
        let msgs = split_into_messages(vec![blk(b"a"), big.clone(), blk(b"b")], vec![], limit);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1].blocks, vec![big]);
        assert!(split_into_messages(vec![], vec![], limit).is_empty());
    }

    fn any_cid() -> impl Strategy<Value = Cid> {
        (any::<[u8; 4]>(), any::<bool>()).prop_map(|(seed, v0)| {
            if v0 {
                Block::new(Version::V0, DAG_PB, seed.to_vec()).cid
            } else {
                blk(&seed).cid
            }
        })
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let entry = (
            any_cid(),
            any::<i32>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(cid, priority, cancel, have, sdh)| WantEntry {
                cid,
                priority,
                cancel,
                want_type: if have {
                    WantType::Have
                } else {
                    WantType::Block
                },
                send_dont_have: sdh,
            });
        let block =
            (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()).prop_map(|(d, v0)| {
                if v0 {
                    Block::new(Version::V0, DAG_PB, d)
                } else {
                    blk(&d)
                }
            });
        let presence = (any_cid(), any::<bool>()).prop_map(|(cid, h)| BlockPresence {
            cid,
            kind: if h {
                PresenceType::Have
            } else {
                PresenceType::DontHave
            },
        });
        (
            proptest::collection::vec(entry, 0..6),
            any::<bool>(),
            proptest::collection::vec(block, 0..4),
            proptest::collection::vec(presence, 0..6),
            any::<i32>(),
        )
            .prop_map(
                |(wantlist, full, blocks, presences, pending_bytes)| Message {
                    wantlist,
                    full,
                    blocks,
                    presences,
                    pending_bytes,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(m in any_message(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
            prop_assert_eq!(m.encoded_len(), m.encode().len());
            prop_assert_eq!(Message::decode(m.encode().into()).unwrap(), m.clone());
            // Two frames fed in arbitrary pieces come out whole.
            let mut stream = encode_frame(&m);
            stream.extend(encode_frame(&m));
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            points.sort_unstable();
            let mut d = FrameDecoder::new();
            let mut frames = Vec::new();
            let mut at = 0;
            for p in points.into_iter().chain([stream.len()]) {
                frames.extend(d.push(&stream[at..p]).unwrap());
                at = p;
            }
            prop_assert_eq!(frames.len(), 2);
            for f in frames {
                prop_assert_eq!(Message::decode(f).unwrap(), m.clone());
            }
            prop_assert_eq!(d.finish(), Ok(()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(Bytes::from(b.clone()));
            let mut d = FrameDecoder::with_max(256);
            for chunk in b.chunks(7) {
                match d.push(chunk) {
                    Ok(frames) => for f in frames {
                        prop_assert!(f.len() <= 256);
                        let _ = Message::decode(f);
                    },
                    Err(_) => break,
                }
                prop_assert!(d.capacity() <= 256);
            }
        }

        #[test]
        fn huge_prefixes_never_allocate(len in (MAX_MESSAGE_SIZE as u64)..u64::MAX, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = Vec::new();
            put_varint(&mut b, len);
            b.extend(tail);
            let mut d = FrameDecoder::new();
            let r = d.push(&b);
            prop_assert!(d.capacity() <= 64);
            if len > MAX_MESSAGE_SIZE as u64 {
                prop_assert!(
                    matches!(r, Err(FrameError::TooLarge { .. })),
                    "expected TooLarge, got {:?}",
                    r
                );
            }
        }
    }
}
