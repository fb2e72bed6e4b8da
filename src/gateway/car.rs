//! CAR responses (trustless gateway spec): the blocks that prove the path, then the DAG at its
//! end as `dag-scope` says, depth-first, each block once unless `dups=y`; identity CIDs are never
//! written (their bytes are in the CID). Written with [`crate::car::CarWriter`] as the blocks
//! arrive, so a CAR of any size streams in bounded memory (the set of CIDs seen aside).

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;
use cid::Cid;

use super::request::{CarParams, DagScope};
use super::source::Recording;
use crate::block::{DAG_PB, IDENTITY, RAW};
use crate::blockstore::BlockSource;
use crate::car::CarWriter;
use crate::unixfs::hamt;
use crate::unixfs::pb::{self, DataType, PbNode};

struct Emitter<W: Write> {
    car: CarWriter<W>,
    seen: HashSet<Cid>,
    dups: bool,
}

impl<W: Write> Emitter<W> {
    /// Writes the block unless it is an identity block or (with `dups=n`) already written;
    /// says whether the walk should go below it.
    fn emit(&mut self, cid: &Cid, data: &[u8]) -> Result<bool, String> {
        if cid.hash().code() == IDENTITY {
            return Ok(true);
        }
        if !self.seen.insert(*cid) && !self.dups {
            return Ok(false);
        }
        self.car
            .write(cid, data)
            .map_err(|e| format!("writing block {cid}: {e}"))?;
        Ok(true)
    }
}

/// Writes the CAR of `/ipfs/<root>/<path>` to `out`: `path_blocks` (what resolving the path
/// read, in order), then the blocks under `end` that `params.scope` names.
pub(crate) fn write_car<S: BlockSource + ?Sized, W: Write>(
    src: &S,
    root: &Cid,
    path_blocks: &[(Cid, Bytes)],
    end: &Cid,
    params: CarParams,
    out: W,
) -> Result<W, String> {
    let car = CarWriter::new(out, &[*root]).map_err(|e| format!("writing the CAR header: {e}"))?;
    let mut em = Emitter {
        car,
        seen: HashSet::new(),
        dups: params.dups,
    };
    for (cid, data) in path_blocks {
        em.emit(cid, data)?;
    }
    let load = |cid: &Cid| hamt::load(src, cid).map_err(|e| format!("reading block {cid}: {e}"));
    let end_data = load(end)?;
    match params.scope {
        DagScope::Block => {
            em.emit(end, &end_data)?;
        }
        DagScope::All => walk(src, &mut em, end, end_data)?,
        DagScope::Entity => {
            if end.codec() != DAG_PB {
                em.emit(end, &end_data)?;
            } else {
                let node = PbNode::decode(&end_data).map_err(|e| format!("{end}: {e}"))?;
                let fs = node
                    .data
                    .as_ref()
                    .map(|d| pb::decode_unixfs(d))
                    .transpose()
                    .map_err(|e| format!("{end}: {e}"))?;
                match fs.map(|f| DataType::try_from(f.r#type)) {
                    // A file's entity is all of its bytes.
                    Some(Ok(DataType::File | DataType::Raw)) => walk(src, &mut em, end, end_data)?,
                    // A sharded directory's entity is its shards (enough to list it).
                    Some(Ok(DataType::HamtShard)) => {
                        em.emit(end, &end_data)?;
                        let rec = Recording::new(src);
                        hamt::for_each_in(&rec, end, &node, &mut |_| Ok::<(), hamt::Error>(()))
                            .map_err(|e| format!("listing the shards of {end}: {e}"))?;
                        for (cid, data) in rec.blocks.into_inner() {
                            em.emit(&cid, &data)?;
                        }
                    }
                    _ => {
                        em.emit(end, &end_data)?;
                    }
                }
            }
        }
    }
    em.car
        .finish()
        .map_err(|e| format!("finishing the CAR: {e}"))
}

/// Depth-first, pre-order, links in order: the order `ipfs dag export` writes.
fn walk<S: BlockSource + ?Sized, W: Write>(
    src: &S,
    em: &mut Emitter<W>,
    start: &Cid,
    start_data: Bytes,
) -> Result<(), String> {
    let mut stack: Vec<(Cid, Option<Bytes>)> = vec![(*start, Some(start_data))];
    while let Some((cid, data)) = stack.pop() {
        let data = match data {
            Some(d) => d,
            None => hamt::load(src, &cid).map_err(|e| format!("reading block {cid}: {e}"))?,
        };
        if !em.emit(&cid, &data)? {
            continue;
        }
        if cid.codec() != RAW && cid.codec() != DAG_PB {
            return Err(format!(
                "block {cid} has codec 0x{:x}; only dag-pb and raw DAGs are walked",
                cid.codec()
            ));
        }
        let links = pb::links(&cid, &data).map_err(|e| format!("{cid}: {e}"))?;
        stack.extend(links.into_iter().rev().map(|c| (c, None)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockstore::MemBlockstore;
    use crate::car::CarReader;
    use crate::unixfs::hamt::DirEntry;
    use crate::unixfs::{dir, file, Chunker, ImportOptions};

    fn read_back(bytes: &[u8]) -> (Vec<Cid>, Vec<Cid>) {
        let mut r = CarReader::new(bytes).unwrap();
        let roots = r.roots().to_vec();
        let mut cids = Vec::new();
        while let Some(b) = r.next_block().unwrap() {
            cids.push(b.cid);
        }
        (roots, cids)
    }

    fn params(scope: DagScope, dups: bool) -> CarParams {
        CarParams { scope, dups }
    }

    #[test]
    fn scopes_and_path_blocks() {
        let mut store = MemBlockstore::new();
        let opts = ImportOptions {
            chunker: Chunker::Size(1000),
            ..ImportOptions::default()
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let f = file::import_bytes(&opts, &data, &mut store).unwrap();
        // The same file twice: with dups=n its blocks appear once.
        let entries = vec![
            DirEntry {
                name: "a".into(),
                cid: f.cid,
                tsize: f.tsize,
            },
            DirEntry {
                name: "b".into(),
                cid: f.cid,
                tsize: f.tsize,
            },
        ];
        let d = dir::build_directory(&opts, entries, &mut store).unwrap();
        let leaves = pb::links(&f.cid, &store.get(&f.cid).unwrap()).unwrap();
        assert_eq!(leaves.len(), 5);

        let car = |path: &[(Cid, Bytes)], end: &Cid, p| {
            write_car(&store, &d.cid, path, end, p, Vec::new()).unwrap()
        };
        let (roots, cids) = read_back(&car(&[], &d.cid, params(DagScope::All, false)));
        assert_eq!(roots, [d.cid]);
        let mut want = vec![d.cid, f.cid];
        want.extend(&leaves);
        assert_eq!(cids, want);

        let (_, cids) = read_back(&car(&[], &d.cid, params(DagScope::All, true)));
        assert_eq!(cids.len(), 1 + 2 * 6);

        let (_, cids) = read_back(&car(&[], &d.cid, params(DagScope::Entity, false)));
        assert_eq!(cids, [d.cid], "a directory's entity is its own block");
        let (_, cids) = read_back(&car(&[], &d.cid, params(DagScope::Block, false)));
        assert_eq!(cids, [d.cid]);

        // /ipfs/<dir>/a: the directory block proves the path, then the file.
        let path = vec![(d.cid, store.get(&d.cid).unwrap())];
        let (roots, cids) = read_back(&car(&path, &f.cid, params(DagScope::Entity, false)));
        assert_eq!(roots, [d.cid]);
        assert_eq!(cids[..2], [d.cid, f.cid]);
        assert_eq!(cids.len(), 7);
        let (_, cids) = read_back(&car(&path, &f.cid, params(DagScope::Block, false)));
        assert_eq!(cids, [d.cid, f.cid]);
    }

    #[test]
    fn identity_blocks_are_left_out() {
        let store = MemBlockstore::new();
        // bafkqaaa: the empty identity CID, the spec's probe.
        let probe: Cid = "bafkqaaa".parse().unwrap();
        for scope in [DagScope::All, DagScope::Entity, DagScope::Block] {
            let out = write_car(
                &store,
                &probe,
                &[],
                &probe,
                params(scope, false),
                Vec::new(),
            )
            .unwrap();
            let (roots, cids) = read_back(&out);
            assert_eq!(roots, [probe]);
            assert!(cids.is_empty());
        }
    }

    #[test]
    fn a_missing_block_is_an_error() {
        let mut store = MemBlockstore::new();
        let f = file::import_bytes(
            &ImportOptions {
                chunker: Chunker::Size(10),
                ..ImportOptions::default()
            },
            &[7u8; 100],
            &mut store,
        )
        .unwrap();
        let leaves = pb::links(&f.cid, &store.get(&f.cid).unwrap()).unwrap();
        struct Without<'a>(&'a MemBlockstore, Cid);
        impl BlockSource for Without<'_> {
            fn get(&self, cid: &Cid) -> Result<Bytes, crate::blockstore::Error> {
                if *cid == self.1 {
                    return Err(crate::blockstore::Error::NotFound(*cid));
                }
                self.0.get(cid)
            }
        }
        let e = write_car(
            &Without(&store, leaves[3]),
            &f.cid,
            &[],
            &f.cid,
            params(DagScope::All, false),
            Vec::new(),
        )
        .unwrap_err();
        assert!(e.contains(&leaves[3].to_string()), "{e}");
    }
}
