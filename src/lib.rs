//! wanda-ipfs: a native IPFS peer for WANDA camera nodes.
//!
//! Modules in data-flow order: bytes are imported into UnixFS blocks
//! ([`unixfs`]), named by [`block`], kept in the [`blockstore`], moved as CAR
//! files by [`car`], and driven from the command line by [`cli`].

pub mod api;
pub mod bitswap;
pub mod block;
pub mod blockstore;
pub mod capture;
pub mod car;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod repo;
pub mod session;
pub mod unixfs;

/// Protobuf messages compiled from `proto/` by build.rs.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod dag_pb {
        include!(concat!(env!("OUT_DIR"), "/dag_pb.rs"));
    }
    pub mod unixfs {
        include!(concat!(env!("OUT_DIR"), "/unixfs.rs"));
    }
}
pub mod node;
pub mod pipeline;
