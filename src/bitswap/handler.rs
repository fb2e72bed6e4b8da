//! The per-connection half of the bitswap shell: reads every inbound bitswap
//! stream until EOF and writes the behaviour's messages on one outbound
//! stream. It decides nothing; the ledger and wantlist live in the behaviour.
//!
//! Inbound: Kubo sometimes keeps one long-lived stream and sometimes opens a
//! fresh stream per message (boxo's server sends each response on a new
//! one), so any number of inbound streams are read side by side, up to
//! [`MAX_INBOUND_STREAMS_PER_CONNECTION`] (then the oldest is dropped). A
//! stream that breaks framing ([`FrameError`]) is dropped alone; a frame that
//! is not a valid message ([`MessageError`]) is skipped and the stream read on.
//!
//! Outbound: one stream, opened on demand, negotiated newest protocol first
//! and reused for every message (as boxo's message queue does); a 1.0.0 peer
//! gets the 1.0.0 encoding ([`FrameParts`]). Every message handed in is answered with
//! [`HandlerEvent::Sent`] or [`HandlerEvent::SendFailed`], which is how the
//! behaviour bounds what it queues per peer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::task::{Context, Poll};

use futures::future::{self, BoxFuture};
use futures::{AsyncRead, AsyncWriteExt, FutureExt};
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol,
};

use super::message::{FrameDecoder, FrameError, FrameParts, Message};
use super::recycle::FramePool;
use super::{MAX_INBOUND_STREAMS_PER_CONNECTION, MAX_OUTBOUND_MESSAGES_PER_PEER, SEND_TIMEOUT};

/// [`super::PROTOCOLS`] as libp2p protocol names, newest first: the order we
/// offer them when we open a stream.
const PROTOCOLS: [StreamProtocol; 4] = [
    StreamProtocol::new(super::PROTOCOLS[0]),
    StreamProtocol::new(super::PROTOCOLS[1]),
    StreamProtocol::new(super::PROTOCOLS[2]),
    StreamProtocol::new(super::PROTOCOLS[3]),
];

/// Bytes read from a stream per `poll_read`: large enough that a 256 KiB
/// block takes a handful of reads, small enough to share one buffer.
const READ_CHUNK: usize = 64 << 10;

/// Reads per inbound stream per `poll` before the next stream's turn, so one
/// fast stream cannot starve the others or the outbound side.
const READS_PER_TURN: usize = 4;

/// Messages decoded but not yet handed to the behaviour; inbound reading
/// pauses while this many wait (backpressure onto the peer's streams).
const MAX_DECODED_WAITING: usize = 64;

/// The protocol upgrade: any bitswap version, reporting which one won.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrade;

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = [StreamProtocol; 4];

    fn protocol_info(&self) -> Self::InfoIter {
        PROTOCOLS
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        future::ready(Ok((stream, info)))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        future::ready(Ok((stream, info)))
    }
}

/// Whether `protocol` is 1.0.0 or the unversioned id: blocks go as bare
/// bytes and presences are unknown there.
fn is_legacy(protocol: &StreamProtocol) -> bool {
    protocol.as_ref() == super::PROTOCOLS[2] || protocol.as_ref() == super::PROTOCOLS[3]
}

/// Behaviour -> handler.
#[derive(Debug)]
pub enum Command {
    /// Write this message to the peer.
    Send(Message),
}

/// Handler -> behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// A decoded message from the peer (any inbound stream).
    Message(Message),
    /// One [`Command::Send`] was written.
    Sent,
    /// One [`Command::Send`] was not written (stream failed, timed out, the
    /// peer lacks bitswap, or the queue was over its cap).
    SendFailed,
    /// The peer speaks no bitswap version; reported once per connection.
    Unsupported,
}

/// One inbound stream being read.
struct Inbound {
    stream: Stream,
    decoder: FrameDecoder,
}

enum Outbound {
    /// No stream; one is requested when a message waits.
    None,
    /// Requested, being negotiated.
    Opening,
    /// Open and idle; `legacy` says which encoding the peer needs.
    Idle { stream: Stream, legacy: bool },
    /// Writing one message; gives the stream back when done.
    Writing {
        write: BoxFuture<'static, io::Result<Stream>>,
        legacy: bool,
    },
}

/// The bitswap [`ConnectionHandler`]; see the module docs.
pub struct Handler {
    inbound: VecDeque<Inbound>,
    outbound: Outbound,
    queue: VecDeque<Message>,
    events: VecDeque<HandlerEvent>,
    /// The peer refused every bitswap protocol on this connection.
    unsupported: bool,
    max_inbound: usize,
    max_queue: usize,
    /// One read buffer shared by every inbound stream (they are read in turn).
    buf: Vec<u8>,
    /// Where inbound frames' buffers come from and go back to.
    pool: FramePool,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("inbound_streams", &self.inbound.len())
            .field("queued", &self.queue.len())
            .field("unsupported", &self.unsupported)
            .finish_non_exhaustive()
    }
}

impl Default for Handler {
    fn default() -> Self {
        Handler::new(
            MAX_INBOUND_STREAMS_PER_CONNECTION,
            MAX_OUTBOUND_MESSAGES_PER_PEER,
        )
    }
}

impl Handler {
    /// A handler keeping at most `max_inbound` inbound streams and
    /// `max_queue` unwritten messages.
    pub fn new(max_inbound: usize, max_queue: usize) -> Self {
        Handler {
            inbound: VecDeque::new(),
            outbound: Outbound::None,
            queue: VecDeque::new(),
            events: VecDeque::new(),
            unsupported: false,
            max_inbound: max_inbound.max(1),
            max_queue: max_queue.max(1),
            buf: Vec::new(),
            pool: FramePool::new(),
        }
    }

    /// Reads inbound frames into buffers recycled through `pool` (shared with
    /// the other connections' handlers).
    pub fn with_pool(mut self, pool: FramePool) -> Self {
        self.pool = pool;
        self
    }

    /// Reads every inbound stream in turn, decoding frames into events.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        if self.inbound.is_empty() {
            return;
        }
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        let mut i = 0;
        while i < self.inbound.len() {
            if self.events.len() >= MAX_DECODED_WAITING {
                // Not polled, so not woken: `poll` comes back here once the
                // events are taken, which is what backpressure needs.
                return;
            }
            let keep = read_some(&mut self.inbound[i], &mut self.buf, &mut self.events, cx);
            if keep {
                i += 1;
            } else {
                self.inbound.remove(i);
            }
        }
    }

    /// Advances the outbound stream; returns a substream request if needed.
    fn poll_outbound(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Option<ConnectionHandlerEvent<Upgrade, (), HandlerEvent>> {
        loop {
            match std::mem::replace(&mut self.outbound, Outbound::None) {
                Outbound::None => {
                    if self.queue.is_empty() || self.unsupported {
                        return None;
                    }
                    self.outbound = Outbound::Opening;
                    return Some(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(Upgrade, ()),
                    });
                }
                Outbound::Opening => {
                    self.outbound = Outbound::Opening;
                    return None;
                }
                Outbound::Idle { stream, legacy } => {
                    let Some(msg) = self.queue.pop_front() else {
                        self.outbound = Outbound::Idle { stream, legacy };
                        return None;
                    };
                    let frame = FrameParts::new(&msg, legacy);
                    self.outbound = Outbound::Writing {
                        write: write_frame(stream, frame).boxed(),
                        legacy,
                    };
                }
                Outbound::Writing { mut write, legacy } => match write.poll_unpin(cx) {
                    Poll::Pending => {
                        self.outbound = Outbound::Writing { write, legacy };
                        return None;
                    }
                    Poll::Ready(Ok(stream)) => {
                        self.events.push_back(HandlerEvent::Sent);
                        self.outbound = Outbound::Idle { stream, legacy };
                    }
                    Poll::Ready(Err(e)) => {
                        // The message is lost with the stream; the next one
                        // opens a new stream.
                        tracing::debug!(error = %e, "bitswap send failed");
                        self.events.push_back(HandlerEvent::SendFailed);
                    }
                },
            }
        }
    }

    fn on_dial_upgrade_error(&mut self, error: StreamUpgradeError<Infallible>) {
        self.outbound = Outbound::None;
        match error {
            StreamUpgradeError::NegotiationFailed => {
                if !self.unsupported {
                    self.unsupported = true;
                    self.events.push_back(HandlerEvent::Unsupported);
                }
                for _ in self.queue.drain(..) {
                    self.events.push_back(HandlerEvent::SendFailed);
                }
            }
            StreamUpgradeError::Timeout | StreamUpgradeError::Io(_) => {
                // Drop the head message rather than retry it forever; the
                // rest go out on the next stream.
                tracing::debug!(?error, "opening a bitswap stream failed");
                if self.queue.pop_front().is_some() {
                    self.events.push_back(HandlerEvent::SendFailed);
                }
            }
            StreamUpgradeError::Apply(never) => match never {},
        }
    }
}

/// Reads up to [`READS_PER_TURN`] chunks from one inbound stream; false when
/// the stream is done (EOF, error or bad framing) and should be dropped.
fn read_some(
    s: &mut Inbound,
    buf: &mut [u8],
    events: &mut VecDeque<HandlerEvent>,
    cx: &mut Context<'_>,
) -> bool {
    for _ in 0..READS_PER_TURN {
        let n = match std::pin::Pin::new(&mut s.stream).poll_read(cx, buf) {
            Poll::Pending => return true,
            Poll::Ready(Ok(0)) => {
                if let Err(e) = s.decoder.finish() {
                    tracing::debug!(error = %e, "bitswap stream ended mid-frame");
                }
                return false;
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "bitswap stream read failed");
                return false;
            }
        };
        match s.decoder.push(&buf[..n]) {
            Ok(frames) => {
                for frame in frames {
                    match Message::decode(frame) {
                        Ok(m) if m.is_empty() && !m.full => {}
                        Ok(m) => events.push_back(HandlerEvent::Message(m)),
                        // The framing is intact, so only this message is lost.
                        Err(e) => tracing::debug!(error = %e, "dropping bad bitswap message"),
                    }
                }
            }
            Err(e) => {
                log_frame_error(&e);
                return false;
            }
        }
        if events.len() >= MAX_DECODED_WAITING {
            // Stop reading; `poll` returns here once the events are taken.
            cx.waker().wake_by_ref();
            return true;
        }
    }
    // More may be ready: come back after the other streams had their turn.
    cx.waker().wake_by_ref();
    true
}

fn log_frame_error(e: &FrameError) {
    tracing::debug!(error = %e, "closing a bitswap stream with bad framing");
}

/// Writes one frame and flushes, within [`SEND_TIMEOUT`].
async fn write_frame(mut stream: Stream, frame: FrameParts) -> io::Result<Stream> {
    let write = async {
        for part in frame.parts() {
            stream.write_all(part).await?;
        }
        stream.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "bitswap send timed out",
        )),
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade> {
        SubstreamProtocol::new(Upgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Open streams keep the connection by themselves; this covers the
        // gap while a message waits for its stream.
        !self.queue.is_empty() || !self.events.is_empty()
    }

    fn on_behaviour_event(&mut self, Command::Send(msg): Command) {
        if self.unsupported || self.queue.len() >= self.max_queue {
            self.events.push_back(HandlerEvent::SendFailed);
            return;
        }
        self.queue.push_back(msg);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, (), HandlerEvent>> {
        if let Some(request) = self.poll_outbound(cx) {
            return Poll::Ready(request);
        }
        self.poll_inbound(cx);
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e)),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Upgrade, Upgrade>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, _),
                ..
            }) => {
                if self.inbound.len() >= self.max_inbound {
                    // Drop the oldest: an honest peer's live stream is the
                    // new one; an old one is most likely leaked and idle.
                    tracing::debug!(max = self.max_inbound, "too many bitswap streams");
                    self.inbound.pop_front();
                }
                self.inbound.push_back(Inbound {
                    stream,
                    decoder: FrameDecoder::with_pool(self.pool.clone()),
                });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, protocol),
                ..
            }) => {
                self.outbound = Outbound::Idle {
                    stream,
                    legacy: is_legacy(&protocol),
                };
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.on_dial_upgrade_error(error)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn poll(h: &mut Handler) -> Poll<ConnectionHandlerEvent<Upgrade, (), HandlerEvent>> {
        h.poll(&mut Context::from_waker(noop_waker_ref()))
    }

    /// Past `max_queue` unwritten messages the handler refuses more, and
    /// says so, rather than buffer without bound.
    #[test]
    fn outbound_queue_is_bounded() {
        let mut h = Handler::new(1, 2);
        for _ in 0..3 {
            h.on_behaviour_event(Command::Send(Message::default()));
        }
        assert!(matches!(
            poll(&mut h),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        ));
        assert!(matches!(
            poll(&mut h),
            Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                HandlerEvent::SendFailed
            ))
        ));
        assert!(poll(&mut h).is_pending());
        assert!(
            h.connection_keep_alive(),
            "messages still wait for a stream"
        );
    }

    /// A peer without bitswap fails every queued message, is reported once,
    /// and later messages fail at once without another stream attempt.
    #[test]
    fn unsupported_peer_fails_fast() {
        let mut h = Handler::default();
        h.on_behaviour_event(Command::Send(Message::default()));
        h.on_behaviour_event(Command::Send(Message::default()));
        assert!(matches!(
            poll(&mut h),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        ));
        h.on_dial_upgrade_error(StreamUpgradeError::NegotiationFailed);
        h.on_behaviour_event(Command::Send(Message::default()));
        let mut got = Vec::new();
        while let Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(e)) = poll(&mut h) {
            got.push(format!("{e:?}"));
        }
        assert_eq!(
            got,
            ["Unsupported", "SendFailed", "SendFailed", "SendFailed"]
        );
        assert!(poll(&mut h).is_pending());
    }

    #[test]
    fn offers_newest_protocol_first_and_knows_legacy_ones() {
        let offered: Vec<_> = Upgrade.protocol_info().into_iter().collect();
        assert_eq!(offered[0].as_ref(), "/ipfs/bitswap/1.2.0");
        assert_eq!(offered.len(), super::super::PROTOCOLS.len());
        assert!(!is_legacy(&offered[0]) && !is_legacy(&offered[1]));
        assert!(is_legacy(&offered[2]) && is_legacy(&offered[3]));
    }
}
