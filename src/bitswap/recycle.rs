//! Frame buffers that come back when the last block cut from them is dropped.
//!
//! Why: a fetched block lives in the frame it arrived in (decoding slices the
//! frame, it does not copy), and a 256 KiB frame is above glibc's mmap
//! threshold, which the daemon pins at 128 KiB to keep its RSS small. So every
//! frame used to be a fresh mapping: the kernel zeroed and faulted in 64 pages
//! as the bytes arrived, and unmapped them again once the store writer had
//! written the block out; perf put that at ~20% of a fetching daemon's CPU.
//! Here a finished frame is wrapped with [`bytes::Bytes::from_owner`], whose
//! owner hands the allocation back to the pool on drop, and the next frame of
//! a similar size is read into it. Pages already faulted in stay faulted in.
//!
//! Bounds: the pool keeps at most [`POOL_MAX_BYTES`], and [`FramePool::trim`]
//! (called by the behaviour every few seconds while the pool is non-empty)
//! frees whatever was not reused since the last trim, so an idle daemon
//! returns to its idle RSS. Memory taken from the pool is memory already held,
//! so a decoder may take it on the strength of a length prefix; fresh memory
//! is still only reserved as bytes arrive (see `FrameDecoder`).

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Most bytes of idle buffers the pool keeps: 16 of Kubo's 256 KiB-block
/// frames, which is more than are ever in flight between the decoder and the
/// store writer at once, and small next to the serving RSS budget.
pub const POOL_MAX_BYTES: usize = 4 << 20;

/// Smaller buffers are not worth recycling: they come from malloc's heap,
/// which reuses them without a page fault anyway.
pub const POOL_MIN_BUFFER: usize = 64 << 10;

#[derive(Debug, Default)]
struct Inner {
    free: Vec<Vec<u8>>,
    held: usize,
    /// Something was taken since the last trim.
    used: bool,
}

/// A shared pool of frame buffers; clones share it.
#[derive(Debug, Clone, Default)]
pub struct FramePool {
    inner: Arc<Mutex<Inner>>,
}

impl FramePool {
    pub fn new() -> Self {
        Self::default()
    }

    /// The smallest idle buffer with room for `len` bytes, emptied; `None`
    /// when none fits or `len` is below [`POOL_MIN_BUFFER`] (the caller then
    /// grows a fresh one as bytes arrive).
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len < POOL_MIN_BUFFER {
            return None;
        }
        let mut inner = self.lock();
        let i = (0..inner.free.len())
            .filter(|&i| inner.free[i].capacity() >= len)
            .min_by_key(|&i| inner.free[i].capacity())?;
        let buf = inner.free.swap_remove(i);
        inner.held -= buf.capacity();
        inner.used = true;
        Some(buf)
    }

    /// `buf` as `Bytes`; when large enough, its allocation returns to this
    /// pool once every `Bytes` sliced from it is dropped.
    pub fn freeze(&self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < POOL_MIN_BUFFER {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Recycled {
            buf,
            pool: Arc::downgrade(&self.inner),
        })
    }

    /// Frees the idle buffers unless one was taken since the previous trim;
    /// true while the pool still holds any (so the caller trims again later).
    pub fn trim(&self) -> bool {
        let mut inner = self.lock();
        if !inner.used {
            inner.free = Vec::new();
            inner.held = 0;
        }
        inner.used = false;
        !inner.free.is_empty()
    }

    /// Bytes of idle buffers held.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing here panics while holding the lock; a poisoned pool is
        // still a consistent list of buffers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The owner behind a recycled frame's `Bytes`.
struct Recycled {
    buf: Vec<u8>,
    pool: Weak<Mutex<Inner>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut inner = pool.lock().unwrap_or_else(|e| e.into_inner());
        if inner.held + buf.capacity() <= POOL_MAX_BYTES {
            buf.clear();
            inner.held += buf.capacity();
            inner.free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pool: &FramePool, len: usize, fill: u8) -> Bytes {
        let mut buf = pool.take(len).unwrap_or_else(|| Vec::with_capacity(len));
        buf.resize(len, fill);
        pool.freeze(buf)
    }

    #[test]
    fn a_buffer_returns_when_its_last_slice_drops() {
        let pool = FramePool::new();
        let f = frame(&pool, 256 << 10, 7);
        let ptr = f.as_ptr();
        let block = f.slice(100..200);
        drop(f);
        assert_eq!(pool.held(), 0, "a slice still holds the frame");
        assert_eq!(&block[..], &[7u8; 100][..]);
        drop(block);
        assert_eq!(pool.held(), 256 << 10);
        let again = pool.take(200 << 10).expect("reused");
        assert_eq!(again.as_ptr(), ptr, "the same allocation");
        assert!(again.is_empty(), "handed out empty");
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn small_buffers_and_a_full_pool_are_freed_not_kept() {
        let pool = FramePool::new();
        drop(frame(&pool, POOL_MIN_BUFFER - 1, 0));
        assert_eq!(pool.held(), 0);
        let frames: Vec<_> = (0..=POOL_MAX_BYTES / (1 << 20))
            .map(|_| frame(&pool, 1 << 20, 0))
            .collect();
        drop(frames);
        assert_eq!(pool.held(), POOL_MAX_BYTES, "capped, the extra one freed");
    }

    #[test]
    fn take_picks_the_smallest_fit_and_never_a_short_buffer() {
        let pool = FramePool::new();
        let (a, b) = (frame(&pool, 1 << 20, 0), frame(&pool, 300 << 10, 0));
        drop((a, b));
        assert!(pool.take(2 << 20).is_none(), "nothing large enough");
        assert!(pool.take(256 << 10).unwrap().capacity() < 1 << 20);
        assert!(pool.take(256 << 10).unwrap().capacity() >= 1 << 20);
        assert!(pool.take(POOL_MIN_BUFFER).is_none(), "empty");
        drop(frame(&pool, 256 << 10, 0));
        assert!(
            pool.take(POOL_MIN_BUFFER - 1).is_none(),
            "too small to bother"
        );
    }

    #[test]
    fn trim_frees_only_what_sat_unused_for_a_whole_period() {
        let pool = FramePool::new();
        drop(frame(&pool, 256 << 10, 0));
        // The second frame takes the first one's buffer: a use.
        drop(frame(&pool, 256 << 10, 0));
        assert!(pool.trim(), "used since the last trim: kept");
        assert_eq!(pool.held(), 256 << 10);
        assert!(!pool.trim(), "idle for a whole period: freed");
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn a_frame_outliving_its_pool_just_frees() {
        let pool = FramePool::new();
        let f = frame(&pool, 256 << 10, 1);
        drop(pool);
        assert_eq!(f.len(), 256 << 10);
        drop(f);
    }
}
