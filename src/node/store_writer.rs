//! Writes fetched blocks to the blockstore in group commits, off the swarm's thread.
//!
//! One durable write per block (`put_block`) costs a file fdatasync and a directory fsync each,
//! a journal commit per 256 KiB: a few tens of MB/s. Blocks arrive from bitswap faster than that,
//! so the writer takes everything queued (up to [`GROUP_BYTES`]) and makes it durable with one
//! [`crate::blockstore::BlockWriter::flush`], whose fsyncs run together. A block is reported
//! stored, and so announced to peers, only after that flush.
//!
//! The swarm's loop must never wait on the disk, so it queues with `try_send`. What is queued is
//! bounded upstream: a fetch's requester is answered only once its block is stored, so each
//! requester has at most its window of blocks in the queue ([`super::fetch::FETCH_WINDOW`]);
//! [`QUEUE_BLOCKS`] is the hard stop behind that.

use cid::Cid;
use tokio::sync::mpsc;

use crate::block::Block;
use crate::blockstore::{BlockSink, FsBlockstore};

/// Most bytes one group commit takes.
pub(crate) const GROUP_BYTES: usize = 16 << 20;
/// Blocks queued for the writer at most (a few group commits' worth of 256 KiB blocks).
pub(crate) const QUEUE_BLOCKS: usize = 256;
/// Group outcomes waiting for the loop to read them.
const DONE_QUEUE: usize = 16;

/// The outcome of one group commit.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) cids: Vec<Cid>,
    /// Why the group was not stored; its blocks are not in the store.
    pub(crate) error: Option<String>,
}

/// The sending side; dropping it ends the writer thread once the queue is drained.
pub(crate) struct StoreWriter {
    tx: mpsc::Sender<Block>,
}

impl StoreWriter {
    /// Starts the writer thread; each group's outcome comes out of the returned receiver.
    pub(crate) fn spawn(
        store: FsBlockstore,
    ) -> std::io::Result<(StoreWriter, mpsc::Receiver<Stored>)> {
        let (tx, mut rx) = mpsc::channel::<Block>(QUEUE_BLOCKS);
        let (done, done_rx) = mpsc::channel(DONE_QUEUE);
        std::thread::Builder::new()
            .name("wanda-store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut bytes = first.data.len();
                    let mut group = vec![first];
                    while bytes < GROUP_BYTES {
                        match rx.try_recv() {
                            Ok(b) => {
                                bytes += b.data.len();
                                group.push(b);
                            }
                            Err(_) => break,
                        }
                    }
                    let error = write_group(&store, &group).err();
                    let cids = group.into_iter().map(|b| b.cid).collect();
                    if done.blocking_send(Stored { cids, error }).is_err() {
                        break;
                    }
                }
            })?;
        Ok((StoreWriter { tx }, done_rx))
    }

    /// Queues a verified block; false if the queue is full or the writer has stopped.
    pub(crate) fn store(&self, block: Block) -> bool {
        self.tx.try_send(block).is_ok()
    }
}

fn write_group(store: &FsBlockstore, group: &[Block]) -> Result<(), String> {
    let mut w = store.writer().keep_cached();
    for b in group {
        w.put(b).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::BlockSource;

    #[test]
    fn stores_groups_and_reports_each_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlockstore::open(dir.path()).unwrap();
        let (w, mut done_rx) = StoreWriter::spawn(store.clone()).unwrap();
        let blocks: Vec<Block> = (0..50u32)
            .map(|i| Block::new(cid::Version::V1, 0x55, i.to_le_bytes().repeat(1000)))
            .collect();
        for b in &blocks {
            assert!(w.store(b.clone()));
        }
        drop(w);
        let mut seen = Vec::new();
        while let Some(s) = done_rx.blocking_recv() {
            assert!(s.error.is_none(), "{:?}", s.error);
            seen.extend(s.cids);
        }
        assert_eq!(seen.len(), blocks.len());
        for b in &blocks {
            assert_eq!(store.get(&b.cid).unwrap(), b.data);
        }
    }
}
