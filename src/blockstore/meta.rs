//! The block store's durable metadata, one redb file: pins, per-block
//! reference counts and the links index (a dag-pb block's children), so pin
//! walks and GC never read 256 KiB leaves to learn they have no links.
//!
//! Assumes every write goes through one redb write transaction at a time
//! (redb serialises them) and that callers hold the store's metadata lock
//! while they also delete block files, so the two never disagree for long:
//! metadata is committed first, files are deleted after, and a crash in
//! between only leaves orphan files that the next `gc` removes.

use std::path::Path;

use cid::Cid;
use redb::TableDefinition;

use super::flatfs::is_disk_full;
use super::Error;

/// Root CID bytes -> pin mode ([`MODE_DIRECT`] or [`MODE_RECURSIVE`]).
pub(crate) const PINS: TableDefinition<&[u8], u8> = TableDefinition::new("pins");
/// Multihash bytes -> number of pins whose DAG holds that block.
pub(crate) const REFS: TableDefinition<&[u8], u64> = TableDefinition::new("refs");
/// Multihash bytes of a dag-pb block -> its children's CIDs, concatenated.
pub(crate) const LINKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("links");
/// Schema facts, e.g. `"version"`.
pub(crate) const INFO: TableDefinition<&str, u64> = TableDefinition::new("info");

pub(crate) const SCHEMA_VERSION: u64 = 1;
pub(crate) const MODE_DIRECT: u8 = 1;
pub(crate) const MODE_RECURSIVE: u8 = 2;

/// redb's page cache (9/10 for reads, 1/10 for a transaction's dirty pages).
///
/// Small on purpose: it only duplicates the kernel's page cache, which the Pi can reclaim and
/// this heap cannot, and a miss costs one `pread` of a 4 KiB page, nothing next to the 256 KiB
/// block it finds. Below 1 MiB of reads it also drops the 1 MiB page of allocator state redb
/// reads once at open; an 8 MiB cache kept that page for the daemon's life.
pub(crate) const CACHE_BYTES: usize = 1 << 20;

/// Wraps any redb error with the operation and the database path, mapping a
/// full disk to [`Error::DiskFull`].
pub(crate) fn db_err<E: Into<redb::Error>>(op: &'static str, path: &Path) -> impl Fn(E) -> Error {
    let path = path.to_path_buf();
    move |e| {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Io(io) if is_disk_full(io) => Error::DiskFull { path: path.clone() },
            redb::Error::DatabaseAlreadyOpen => Error::Locked { path: path.clone() },
            _ => Error::Db {
                op,
                path: path.clone(),
                source: Box::new(e),
            },
        }
    }
}

/// The links-index value of `links`: the CIDs' binary forms back to back
/// (CIDs are self-delimiting).
pub(crate) fn encode_links(links: &[Cid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(links.len() * 36);
    for c in links {
        out.extend_from_slice(&c.to_bytes());
    }
    out
}

/// Inverse of [`encode_links`]; `None` if the value is not a CID sequence.
pub(crate) fn decode_links(mut v: &[u8]) -> Option<Vec<Cid>> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let mut r = std::io::Cursor::new(v);
        let c = Cid::read_bytes(&mut r).ok()?;
        let used = usize::try_from(r.position()).ok()?;
        v = v.get(used..)?;
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn links_roundtrip(digests in proptest::collection::vec((any::<bool>(), any::<[u8; 32]>()), 0..20)) {
            let cids: Vec<Cid> = digests
                .iter()
                .map(|(v0, d)| {
                    let mh = multihash::Multihash::<64>::wrap(0x12, d).unwrap();
                    if *v0 { Cid::new_v0(mh).unwrap() } else { Cid::new_v1(0x55, mh) }
                })
                .collect();
            prop_assert_eq!(decode_links(&encode_links(&cids)), Some(cids));
        }

        #[test]
        fn links_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_links(&bytes);
        }
    }
}
