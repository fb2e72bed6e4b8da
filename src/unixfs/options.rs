//! What `ipfs add` lets a user choose, as one plain value.
//!
//! Defaults are Kubo's: CIDv0, 256 KiB fixed-size chunks, balanced layout with
//! at most 174 links per node, dag-pb leaves, directories sharded into a HAMT
//! once their links' estimated size reaches 256 KiB. `--cid-version 1` turns
//! on raw leaves unless `--raw-leaves=false` is given, as Kubo does.

use cid::Version;

/// Kubo's default chunk size (`size-262144`).
pub const DEFAULT_CHUNK_SIZE: usize = 262_144;
/// boxo's `chunk.ChunkSizeLimit`: larger chunks would make blocks that
/// bitswap peers refuse.
pub const MAX_CHUNK_SIZE: usize = 1024 * 1024;
/// boxo's `helpers.DefaultLinksPerBlock`: 8 KiB of links at ~47 bytes each.
pub const DEFAULT_MAX_LINKS: usize = 174;
/// Links per level repeated in the trickle layout (boxo's `depthRepeat`).
pub const TRICKLE_DEPTH_REPEAT: usize = 4;
/// Kubo's `Internal.UnixFSShardingSizeThreshold` default (boxo v0.11
/// `HAMTShardingSize`): a directory whose estimated size is `>=` this many
/// bytes becomes a HAMT.
pub const DEFAULT_SHARD_THRESHOLD: usize = 256 * 1024;
/// Fanout of HAMT shards Kubo writes.
pub const HAMT_FANOUT: usize = 256;

/// How a file's chunks are arranged into a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Balanced,
    Trickle,
}

/// How a file is split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunker {
    /// Fixed-size chunks of this many bytes.
    Size(usize),
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::Size(DEFAULT_CHUNK_SIZE)
    }
}

/// Errors in import options.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("chunker '{0}' is not supported: use size-N (e.g. size-262144), 1 <= N <= 1048576")]
    UnknownChunker(String),
    #[error("chunk size {0} is out of range: use 1 <= N <= 1048576")]
    ChunkSize(usize),
    #[error("hash function '{0}' is not supported: only sha2-256 is")]
    UnsupportedHash(String),
    #[error("CID version {0} does not exist: use 0 or 1")]
    CidVersion(u64),
}

impl std::str::FromStr for Chunker {
    type Err = OptionsError;

    /// Parses Kubo's chunker syntax: `size-N` or `default`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "default" {
            return Ok(Chunker::default());
        }
        let n = s
            .strip_prefix("size-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| OptionsError::UnknownChunker(s.to_string()))?;
        if n == 0 || n > MAX_CHUNK_SIZE {
            return Err(OptionsError::ChunkSize(n));
        }
        Ok(Chunker::Size(n))
    }
}

impl std::fmt::Display for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunker::Size(n) => write!(f, "size-{n}"),
        }
    }
}

/// Checks a `--hash` value: only sha2-256 is produced.
pub fn check_hash(name: &str) -> Result<(), OptionsError> {
    if name == "sha2-256" {
        Ok(())
    } else {
        Err(OptionsError::UnsupportedHash(name.to_string()))
    }
}

/// Everything that decides the CIDs of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    pub cid_version: Version,
    /// Leaves as raw blocks (codec 0x55) instead of UnixFS dag-pb nodes.
    pub raw_leaves: bool,
    pub chunker: Chunker,
    pub layout: Layout,
    pub max_links: usize,
    /// Directory size (sum of link name + CID lengths) at which it is sharded.
    pub shard_threshold: usize,
    /// Include files whose names start with a dot (`--hidden`).
    pub hidden: bool,
    /// Wrap the added paths in a directory (`-w`).
    pub wrap: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            cid_version: Version::V0,
            raw_leaves: false,
            chunker: Chunker::default(),
            layout: Layout::Balanced,
            max_links: DEFAULT_MAX_LINKS,
            shard_threshold: DEFAULT_SHARD_THRESHOLD,
            hidden: false,
            wrap: false,
        }
    }
}

impl ImportOptions {
    /// Options as Kubo derives them from `--cid-version` and `--raw-leaves`:
    /// CIDv1 implies raw leaves unless raw leaves were explicitly refused.
    pub fn with_cid_version(
        mut self,
        version: u64,
        raw_leaves: Option<bool>,
    ) -> Result<Self, OptionsError> {
        self.cid_version = match version {
            0 => Version::V0,
            1 => Version::V1,
            v => return Err(OptionsError::CidVersion(v)),
        };
        self.raw_leaves = raw_leaves.unwrap_or(self.cid_version == Version::V1);
        Ok(self)
    }

    pub fn chunk_size(&self) -> usize {
        match self.chunker {
            Chunker::Size(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_syntax() {
        assert_eq!("size-1".parse::<Chunker>(), Ok(Chunker::Size(1)));
        assert_eq!("default".parse::<Chunker>(), Ok(Chunker::Size(262_144)));
        assert_eq!(
            "size-1048577".parse::<Chunker>(),
            Err(OptionsError::ChunkSize(1_048_577))
        );
        assert!(matches!(
            "rabin".parse::<Chunker>(),
            Err(OptionsError::UnknownChunker(_))
        ));
        assert!("size-0".parse::<Chunker>().is_err());
        assert!("size-x".parse::<Chunker>().is_err());
    }

    #[test]
    fn cid_v1_implies_raw_leaves() {
        let o = ImportOptions::default().with_cid_version(1, None).unwrap();
        assert!(o.raw_leaves);
        let o = ImportOptions::default()
            .with_cid_version(1, Some(false))
            .unwrap();
        assert!(!o.raw_leaves);
        let o = ImportOptions::default().with_cid_version(0, None).unwrap();
        assert!(!o.raw_leaves);
        assert!(ImportOptions::default().with_cid_version(2, None).is_err());
        assert!(check_hash("blake3").is_err());
    }
}
