//! Reading content through the node: whole-DAG prefetch and a [`BlockSource`] for the exporter.
//!
//! `cat`/`get` of content the store lacks must not pay a network round trip per block, so
//! [`fetch_dag`] walks the DAG with up to [`FETCH_WINDOW`] blocks in flight, depth first, which
//! is the order the exporter reads leaves in; the exporter runs beside it over a [`NetSource`],
//! which finds most blocks already stored (or queued for storing) by the time it asks.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use futures::stream::{FuturesUnordered, StreamExt};

use super::{Error, Node};
use crate::block::{DAG_PB, RAW};
use crate::blockstore::{self, BlockSource};

/// Blocks requested at once by one [`fetch_dag`]: enough to keep every peer's want-block
/// budget ([`crate::bitswap::MAX_BLOCK_REQUESTS_PER_PEER`]) full with a couple of peers, well
/// under what the wantlist holds in flight ([`crate::bitswap::MAX_WANTS_IN_FLIGHT`]).
pub const FETCH_WINDOW: usize = 64;

/// What one [`fetch_dag`] went through.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Distinct blocks in the DAG.
    pub blocks: u64,
    /// The links of every dag-pb node walked (none for a leaf): what a pin of the DAG
    /// would otherwise read every node back to learn
    /// ([`crate::blockstore::FsBlockstore::pin_with_links`]).
    pub links: HashMap<Cid, Vec<Cid>>,
}

/// Makes every block of the DAG under `root` local, fetching what is missing from connected
/// peers. A block shared by two branches is fetched once. Fails on the first block nobody sent
/// in time, or one that is not a readable dag-pb node.
pub async fn fetch_dag(node: &Node, root: Cid) -> Result<FetchReport, Error> {
    let mut report = FetchReport::default();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < FETCH_WINDOW {
            let Some(cid) = stack.pop() else { break };
            if seen.insert(cid.hash().to_bytes()) {
                in_flight.push(children_of(node, cid));
            }
        }
        let Some(done) = in_flight.next().await else {
            return Ok(report);
        };
        report.blocks += 1;
        let (cid, children) = done?;
        // Reversed onto the stack, so the first child is the next fetched.
        stack.extend(children.iter().rev().copied());
        if cid.codec() == DAG_PB {
            report.links.insert(cid, children);
        }
    }
}

/// Ensures `cid` is stored and returns it with its children.
async fn children_of(node: &Node, cid: Cid) -> Result<(Cid, Vec<Cid>), Error> {
    if cid.codec() == RAW {
        // A raw block has no links: no need to read it back when it is already here.
        node.ensure(cid).await?;
        return Ok((cid, Vec::new()));
    }
    let data = node.block(cid).await?;
    let links = crate::unixfs::pb::links(&cid, &data).map_err(|e| Error::BadBlock {
        cid: cid.to_string(),
        reason: e.to_string(),
    })?;
    Ok((cid, links))
}

/// A [`BlockSource`] that reads the store and fetches what it lacks through the node. Its `get`
/// blocks the calling thread: use it from a blocking task (`spawn_blocking`), never from async
/// code.
#[derive(Clone)]
pub struct NetSource {
    node: Node,
    rt: tokio::runtime::Handle,
}

impl NetSource {
    /// Must be called inside the runtime that runs the node.
    pub fn new(node: Node) -> NetSource {
        NetSource {
            node,
            rt: tokio::runtime::Handle::current(),
        }
    }
}

impl BlockSource for NetSource {
    fn get(&self, cid: &Cid) -> Result<Bytes, blockstore::Error> {
        self.rt
            .block_on(self.node.block(*cid))
            .map_err(|e| blockstore::Error::Unavailable {
                cid: Box::new(*cid),
                reason: e.to_string(),
            })
    }
}
