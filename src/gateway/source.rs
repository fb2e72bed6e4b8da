//! Block sources for the gateway: the node's store and bitswap, every fetch bounded by
//! `[gateway] timeout_secs`, and a wrapper that keeps what a path walk read (the blocks a CAR
//! must carry to prove the path).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;

use crate::blockstore::{self, BlockSource};
use crate::node::Node;

/// Reads through the node (store, else bitswap), each block within `per_block` and all of them
/// before `deadline`. Its `get` blocks the thread: use it from `spawn_blocking` only.
#[derive(Clone)]
pub(crate) struct GatewaySource {
    node: Node,
    rt: tokio::runtime::Handle,
    per_block: Duration,
    deadline: Option<Instant>,
    /// The first block that did not come in time, for the 504's message.
    missed: Arc<Mutex<Option<Cid>>>,
}

impl GatewaySource {
    /// Must be called inside the node's runtime.
    pub(crate) fn new(node: Node, per_block: Duration, deadline: Option<Instant>) -> Self {
        GatewaySource {
            node,
            rt: tokio::runtime::Handle::current(),
            per_block,
            deadline,
            missed: Arc::default(),
        }
    }

    /// The block that timed out, if one did.
    pub(crate) fn missed(&self) -> Option<Cid> {
        *self.missed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockSource for GatewaySource {
    fn get(&self, cid: &Cid) -> Result<Bytes, blockstore::Error> {
        // Already on a blocking thread: read the store here rather than through the node, which
        // would hop to another blocking thread and back for every block of a stream.
        match self.node.store().get(cid) {
            Err(blockstore::Error::NotFound(_)) => {}
            stored => return stored,
        }
        let mut limit = self.per_block;
        if let Some(d) = self.deadline {
            limit = limit.min(d.saturating_duration_since(Instant::now()));
        }
        // `timeout` polls the fetch once before looking at the clock, so a stored block is
        // read even when the deadline has passed.
        match self
            .rt
            .block_on(tokio::time::timeout(limit, self.node.block(*cid)))
        {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(blockstore::Error::Unavailable {
                cid: Box::new(*cid),
                reason: e.to_string(),
            }),
            Err(_) => {
                self.missed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(*cid);
                Err(blockstore::Error::Unavailable {
                    cid: Box::new(*cid),
                    reason: format!(
                        "neither stored here nor sent by a connected peer within {} s",
                        limit.as_secs_f64().ceil()
                    ),
                })
            }
        }
    }
}

/// A source that keeps every block read through it, in order.
pub(crate) struct Recording<'a, S: BlockSource + ?Sized> {
    inner: &'a S,
    pub(crate) blocks: RefCell<Vec<(Cid, Bytes)>>,
}

impl<'a, S: BlockSource + ?Sized> Recording<'a, S> {
    pub(crate) fn new(inner: &'a S) -> Self {
        Recording {
            inner,
            blocks: RefCell::new(Vec::new()),
        }
    }
}

impl<S: BlockSource + ?Sized> BlockSource for Recording<'_, S> {
    fn get(&self, cid: &Cid) -> Result<Bytes, blockstore::Error> {
        let b = self.inner.get(cid)?;
        self.blocks.borrow_mut().push((*cid, b.clone()));
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::MemBlockstore;
    use crate::unixfs::hamt::DirEntry;
    use crate::unixfs::{dir, file, ImportOptions};

    #[test]
    fn recording_keeps_the_path_walk() {
        let mut store = MemBlockstore::new();
        let opts = ImportOptions::default();
        let f = file::import_bytes(&opts, b"hi\n", &mut store).unwrap();
        let entry = |name: &str, cid, tsize| DirEntry {
            name: name.into(),
            cid,
            tsize,
        };
        let sub =
            dir::build_directory(&opts, vec![entry("f", f.cid, f.tsize)], &mut store).unwrap();
        let top = dir::build_directory(&opts, vec![entry("sub", sub.cid, sub.tsize)], &mut store)
            .unwrap();
        let rec = Recording::new(&store);
        let got = crate::unixfs::export::resolve(&rec, &top.cid, "sub/f").unwrap();
        assert_eq!(got, f.cid);
        let read: Vec<Cid> = rec.blocks.borrow().iter().map(|(c, _)| *c).collect();
        assert_eq!(read, [top.cid, sub.cid]);
    }
}
