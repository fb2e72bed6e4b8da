//! QUIC as rust-libp2p provides it, with one difference: an inbound stream whose opener has
//! already stopped reading still gets negotiated and read.
//!
//! go-libp2p peers send one-shot messages this way (boxo's bitswap server sends every response
//! so): open a stream, write the multistream header, the protocol and the message at once, then
//! `Close()`, which on QUIC is FIN plus STOP_SENDING. By the time our multistream-select listener
//! writes its protocol confirmation, STOP_SENDING has arrived, the write fails with "sending
//! stopped by peer", and libp2p drops the stream with the message unread: over QUIC we never
//! saw Kubo's blocks or HAVEs, so a fetch from Kubo stalled until it timed out. Over yamux the
//! same confirmation is silently discarded, which is what this module does for QUIC.
//!
//! Only inbound streams, and only the peer's STOP_SENDING (which quinn reports as
//! `ConnectionReset`), are treated so: the peer opened the stream and said it reads nothing
//! more, so what we would write there is what it declined, and the bytes it sent are still
//! ours to read. Outbound streams keep every error: a bitswap sender must learn that the stream
//! carrying its messages died.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::transport::Transport;
use libp2p::identity::Keypair;
use libp2p::PeerId;

/// The QUIC v1 transport with [`Muxer`] around each connection.
pub(super) fn transport(
    key: &Keypair,
) -> impl Transport<
    Output = (PeerId, Muxer<libp2p::quic::Connection>),
    Error = libp2p::quic::Error,
    Dial: Send,
    ListenerUpgrade: Send,
> + Send
       + Unpin
       + 'static {
    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        .map(|(peer, conn), _| (peer, Muxer(conn)))
}

/// A connection whose inbound streams come wrapped in [`Substream::inbound`].
#[derive(Debug)]
pub(super) struct Muxer<M>(M);

impl<M> StreamMuxer for Muxer<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = Substream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0)
            .poll_inbound(cx)
            .map_ok(Substream::inbound)
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.0)
            .poll_outbound(cx)
            .map_ok(Substream::outbound)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// A stream; an inbound one swallows the peer's STOP_SENDING (see the module docs).
#[derive(Debug)]
pub(super) struct Substream<S> {
    inner: S,
    inbound: bool,
    /// The peer stopped reading: writes are accepted and dropped from now on.
    stopped: bool,
}

impl<S> Substream<S> {
    fn inbound(inner: S) -> Self {
        Substream {
            inner,
            inbound: true,
            stopped: false,
        }
    }

    fn outbound(inner: S) -> Self {
        Substream {
            inner,
            inbound: false,
            stopped: false,
        }
    }

    /// Runs one write-side call on the inner stream, unless the peer has stopped reading a
    /// stream it opened: then the call is skipped, or its STOP_SENDING error (quinn's
    /// `ConnectionReset`) remembered, and `done` returned as if it succeeded.
    fn write_side<T>(
        &mut self,
        done: T,
        call: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        if self.stopped {
            return Poll::Ready(Ok(done));
        }
        match call(Pin::new(&mut self.inner)) {
            Poll::Ready(Err(e)) if self.inbound && e.kind() == io::ErrorKind::ConnectionReset => {
                tracing::trace!(
                    "peer stopped reading a stream it opened; our writes there are dropped"
                );
                self.stopped = true;
                Poll::Ready(Ok(done))
            }
            r => r,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Substream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Substream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_side(buf.len(), |s| s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_side((), |s| s.poll_flush(cx))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_side((), |s| s.poll_close(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use futures::{AsyncReadExt, AsyncWriteExt};

    /// A stream whose peer has stopped reading, as quinn reports it: every write fails with
    /// `ConnectionReset`, while the bytes the peer sent before are still there to read.
    struct Stopped {
        unread: Cursor<Vec<u8>>,
        kind: io::ErrorKind,
    }

    impl AsyncRead for Stopped {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.unread).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stopped {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::Error::new(self.kind, "sending stopped by peer")))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(self.kind, "sending stopped by peer")))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(self.kind, "sending stopped by peer")))
        }
    }

    fn stopped(kind: io::ErrorKind) -> Stopped {
        Stopped {
            unread: Cursor::new(b"the peer's message".to_vec()),
            kind,
        }
    }

    #[tokio::test]
    async fn inbound_stream_stopped_by_its_opener_still_reads() {
        let mut s = Substream::inbound(stopped(io::ErrorKind::ConnectionReset));
        s.write_all(b"/ipfs/bitswap/1.2.0\n").await.unwrap();
        s.flush().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"the peer's message");
        s.close().await.unwrap();
    }

    #[tokio::test]
    async fn outbound_streams_and_other_errors_keep_failing() {
        let mut out = Substream::outbound(stopped(io::ErrorKind::ConnectionReset));
        let e = out.write_all(b"wants").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        // A lost connection is not a peer declining to read.
        let mut lost = Substream::inbound(stopped(io::ErrorKind::NotConnected));
        let e = lost.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
        assert!(!lost.stopped);
    }
}
