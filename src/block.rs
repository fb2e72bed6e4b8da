//! Content addressing: a block is bytes plus the CID that names them.
//!
//! Only sha2-256 is produced and accepted, as Kubo's `ipfs add` defaults to it;
//! `sha2` picks the CPU's SHA instructions (SHA-NI on x86-64, the ARMv8 SHA2
//! extension on arm64) at run time.

use bytes::Bytes;
use cid::{Cid, Version};
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of dag-pb nodes.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw leaves.
pub const RAW: u64 = 0x55;
/// Multicodec of sha2-256 multihashes.
pub const SHA2_256: u64 = 0x12;
/// Multicodec of the identity "hash" (inline data).
pub const IDENTITY: u64 = 0x00;

/// Errors about a block's identity.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block {cid} is corrupt: its bytes hash to {actual}")]
    HashMismatch { cid: Cid, actual: String },
    #[error(
        "CID {cid} uses hash function 0x{code:x}; only sha2-256 (0x12) and identity are supported"
    )]
    UnsupportedHash { cid: Cid, code: u64 },
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The multihash (sha2-256) of `data`.
pub fn multihash(data: &[u8]) -> Multihash<64> {
    Multihash::wrap(SHA2_256, &sha256(data)).expect("32-byte digest fits in 64")
}

/// The CID of `data` under `version` and `codec`.
///
/// CIDv0 only exists for dag-pb; asking for a raw CIDv0 gives CIDv1, as boxo does
/// for `--raw-leaves` without `--cid-version 1`.
pub fn cid_of(version: Version, codec: u64, data: &[u8]) -> Cid {
    let mh = multihash(data);
    if version == Version::V0 && codec == DAG_PB {
        Cid::new_v0(mh).expect("sha2-256 multihash is a valid CIDv0")
    } else {
        Cid::new_v1(codec, mh)
    }
}

/// Checks that `data` hashes to what `cid` names.
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), BlockError> {
    let mh = cid.hash();
    match mh.code() {
        SHA2_256 => {
            let actual = sha256(data);
            if mh.digest() == actual {
                Ok(())
            } else {
                Err(BlockError::HashMismatch {
                    cid: *cid,
                    actual: hex(&actual),
                })
            }
        }
        IDENTITY => {
            if mh.digest() == data {
                Ok(())
            } else {
                Err(BlockError::HashMismatch {
                    cid: *cid,
                    actual: "(identity mismatch)".into(),
                })
            }
        }
        code => Err(BlockError::UnsupportedHash { cid: *cid, code }),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A block: bytes plus the CID that names them.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    pub cid: Cid,
    pub data: Bytes,
}

impl Block {
    /// Hashes `data` and names it under `version`/`codec`.
    pub fn new(version: Version, codec: u64, data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Block {
            cid: cid_of(version, codec, &data),
            data,
        }
    }
}

// Never print block bytes: they can be megabytes.
impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({}, [{} bytes])", self.cid, self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dag_pb_file_is_kubos() {
        // `ipfs add` of an empty file: UnixFS {Type: File, filesize: 0}.
        let b = Block::new(
            Version::V0,
            DAG_PB,
            vec![0x0a, 0x04, 0x08, 0x02, 0x18, 0x00],
        );
        assert_eq!(
            b.cid.to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        verify(&b.cid, &b.data).unwrap();
        assert!(verify(&b.cid, b"x").is_err());
    }

    #[test]
    fn raw_v0_becomes_v1() {
        let b = Block::new(Version::V0, RAW, Vec::new());
        assert_eq!(
            b.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
    }
}
