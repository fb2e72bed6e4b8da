//! Block storage: the traits the rest of the crate uses to put and get blocks,
//! an in-memory store for tests, and the on-disk [`FsBlockstore`].
//!
//! The importer only ever sees a [`BlockSink`] (put half), the exporter only a
//! [`BlockSource`] (get half); `--only-hash` is a sink that keeps nothing.
//! Blocks are keyed by multihash, so a CIDv0 and a CIDv1 of the same bytes
//! are one block.

use bytes::Bytes;
use cid::Cid;

use crate::block::{Block, BlockError};
use crate::unixfs::pb::PbError;

mod flatfs;
mod fs;
mod meta;

pub use fs::{
    BlockIter, BlockWriter, FsBlockstore, GcReport, ImportGuard, PinMode, Stat, VerifyReport,
    MAX_BLOCK_BYTES,
};
/// The version of the metadata schema, which is the repo format's version.
pub(crate) use meta::SCHEMA_VERSION;

/// Errors of block storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("block {0} is not in the local store")]
    NotFound(Cid),
    #[error("block {cid} is not stored here and could not be fetched: {reason}")]
    // Boxed to keep `Error` small, as `MissingBlock`.
    Unavailable { cid: Box<Cid>, reason: String },
    #[error(transparent)]
    Corrupt(#[from] BlockError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the disk holding {path} is full: free some space (e.g. `wanda-ipfs repo gc`) and retry"
    )]
    DiskFull { path: std::path::PathBuf },
    #[error("blockstore metadata: {0}")]
    Meta(String),
    #[error(
        "blockstore metadata database {path} ({op}): {source}; \
         if this persists, run `wanda-ipfs repo verify`"
    )]
    Db {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "the repo at {path} is in use by another wanda-ipfs process: stop it (or use it) and retry"
    )]
    Locked { path: std::path::PathBuf },
    #[error("{path} is not a blockstore this version understands: {reason}")]
    BadRepo {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "block {missing} of the DAG under {root} is not in the local store: \
         import or fetch it, then pin again"
    )]
    // Boxed to keep `Error` small: it is returned on every hot path.
    MissingBlock { root: Box<Cid>, missing: Box<Cid> },
    #[error("block {cid} is not a readable dag-pb node ({source}); run `wanda-ipfs repo verify`")]
    BadNode {
        cid: Cid,
        #[source]
        source: Box<PbError>,
    },
    #[error("block {0} is pinned: unpin it (`wanda-ipfs pin rm`) before removing it")]
    Pinned(Cid),
    #[error("block {0} belongs to an import in progress: retry when the import has finished")]
    InUse(Cid),
    #[error("{0} is not pinned")]
    NotPinned(Cid),
    #[error(
        "block {cid} is {len} bytes, over the {max}-byte limit: re-import with a smaller chunk size"
    )]
    TooLarge { cid: Cid, len: u64, max: u64 },
}

/// Where an importer writes blocks.
pub trait BlockSink {
    fn put(&mut self, block: &Block) -> Result<(), Error>;
}

/// Where an exporter reads blocks from. Implementations verify the hash.
pub trait BlockSource {
    fn get(&self, cid: &Cid) -> Result<Bytes, Error>;
}

/// A sink that keeps nothing: `add --only-hash`.
#[derive(Debug, Default)]
pub struct NullSink;

impl BlockSink for NullSink {
    fn put(&mut self, _block: &Block) -> Result<(), Error> {
        Ok(())
    }
}

impl<T: BlockSink + ?Sized> BlockSink for &mut T {
    fn put(&mut self, block: &Block) -> Result<(), Error> {
        (**self).put(block)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get(&self, cid: &Cid) -> Result<Bytes, Error> {
        (**self).get(cid)
    }
}

/// An in-memory store: the reference implementation for tests.
#[derive(Debug, Default, Clone)]
pub struct MemBlockstore {
    blocks: std::collections::BTreeMap<Vec<u8>, Bytes>,
}

impl MemBlockstore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(&cid.hash().to_bytes())
    }
}

impl BlockSink for MemBlockstore {
    fn put(&mut self, block: &Block) -> Result<(), Error> {
        self.blocks
            .insert(block.cid.hash().to_bytes(), block.data.clone());
        Ok(())
    }
}

impl BlockSource for MemBlockstore {
    fn get(&self, cid: &Cid) -> Result<Bytes, Error> {
        let data = self
            .blocks
            .get(&cid.hash().to_bytes())
            .ok_or(Error::NotFound(*cid))?;
        crate::block::verify(cid, data)?;
        Ok(data.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::{DAG_PB, RAW};
    use cid::Version;

    /// What the shared contract needs from a store under test.
    pub(crate) trait Harness {
        /// Stores `blocks` so that `get` sees them.
        fn put_all(&mut self, blocks: &[Block]);
        fn get(&self, cid: &Cid) -> Result<Bytes, Error>;
        /// Flips a byte of the stored block.
        fn corrupt(&mut self, cid: &Cid);
    }

    /// The behaviour every store shares: run on each implementation.
    pub(crate) fn contract(h: &mut dyn Harness) {
        let node = Block::new(
            Version::V0,
            DAG_PB,
            vec![0x0a, 0x04, 0x08, 0x02, 0x18, 0x00],
        );
        let leaves: Vec<Block> = (0u8..5)
            .map(|i| Block::new(Version::V1, RAW, vec![i; 100 + i as usize]))
            .collect();
        let mut all = leaves.clone();
        all.push(node.clone());
        all.push(leaves[0].clone()); // duplicates are harmless
        h.put_all(&all);
        for b in &all {
            assert_eq!(h.get(&b.cid).unwrap(), b.data);
        }
        // Keyed by multihash: other versions and codecs find the same bytes.
        let v1 = Cid::new_v1(DAG_PB, *node.cid.hash());
        let as_raw = Cid::new_v1(RAW, *node.cid.hash());
        assert_eq!(h.get(&v1).unwrap(), node.data);
        assert_eq!(h.get(&as_raw).unwrap(), node.data);
        let absent = Block::new(Version::V1, RAW, b"absent".to_vec());
        assert!(matches!(h.get(&absent.cid), Err(Error::NotFound(c)) if c == absent.cid));
        h.corrupt(&leaves[2].cid);
        assert!(matches!(h.get(&leaves[2].cid), Err(Error::Corrupt(_))));
        assert_eq!(h.get(&leaves[3].cid).unwrap(), leaves[3].data);
    }

    impl Harness for MemBlockstore {
        fn put_all(&mut self, blocks: &[Block]) {
            for b in blocks {
                self.put(b).unwrap();
            }
        }
        fn get(&self, cid: &Cid) -> Result<Bytes, Error> {
            BlockSource::get(self, cid)
        }
        fn corrupt(&mut self, cid: &Cid) {
            let data = self.blocks.get_mut(&cid.hash().to_bytes()).unwrap();
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            *data = Bytes::from(v);
        }
    }

    #[test]
    fn mem_contract_holds() {
        contract(&mut MemBlockstore::new());
    }
}
