//! IPFS Cluster: a client of its REST API (ipfs-cluster v1.1.6), so that a camera node can ask a
//! cluster to pin what it captured, watch the replicas appear, and free its own copy after.
//!
//! - [`ClusterConfig`] (`[cluster]`): where the API is, auth, replication, timeout, TLS.
//! - [`ClusterClient`]: `pin`, `status`, `unpin`, `peers`, `id`, `health`, and `add_car`, the
//!   fallback that uploads a CAR over HTTP when the cluster's IPFS daemons cannot fetch from us.
//! - [`Error`]: says which call failed on which cluster, and [`Error::is_transient`] whether
//!   trying again later can help; retry those with [`Backoff`].
//!
//! Pinning through the swarm: the cluster answers a pin once it is in its shared state; its IPFS
//! daemons then fetch the DAG over bitswap. They dial the pin's `origins` (ours) but only try; a
//! node behind NAT should itself dial the addresses in [`GlobalPinInfo::ipfs_addresses`] (or
//! [`IdInfo::ipfs_addresses`] from [`ClusterClient::peers`]) and keep those connections until
//! [`GlobalPinInfo::pinned_count`] reaches the replication it needs.
//!
//! Decoding ([`types`], the NDJSON reader, error classification, query building) is pure and
//! tested without a network; `http` is the only part that does I/O.

mod client;
mod config;
mod error;
mod http;
mod ndjson;
mod query;
mod resolve;
mod retry;
pub mod types;

pub use client::{CarSource, ClusterClient, ADD_MIN_BYTES_PER_SEC, MAX_BODY_BYTES};
pub use config::{validate_replication, ClusterConfig, ConfigError, Endpoint, MAX_TIMEOUT_SECS};
pub use error::{Error, ErrorKind, Refusal};
pub use query::PinOptions;
pub use retry::{entropy, Backoff};
pub use types::{AddedOutput, GlobalPinInfo, IdInfo, IpfsId, Pin, PinInfo, TrackerStatus};
