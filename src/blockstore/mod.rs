//! Block storage: the traits the rest of the crate uses to put and get blocks.
//!
//! The importer only ever sees a [`BlockSink`] (put half), the exporter only a
//! [`BlockSource`] (get half); `--only-hash` is a sink that keeps nothing.

use bytes::Bytes;
use cid::Cid;

use crate::block::{Block, BlockError};

/// Errors of block storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("block {0} is not in the local store")]
    NotFound(Cid),
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
