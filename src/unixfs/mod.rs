//! UnixFS: turning bytes and directory trees into dag-pb/raw blocks exactly as
//! Kubo's `ipfs add` does, and reading them back.

pub mod options;
pub mod pb;
pub mod tar;
pub mod tree;

pub use options::{Chunker, ImportOptions, Layout};
pub mod chunker;
pub mod dir;
pub mod export;
pub mod file;
pub mod hamt;
pub mod murmur3;
