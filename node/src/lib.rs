//! Fjord relay node.
//!
//! The node drives the sans-IO [`fjord_core`] with real I/O:
//! - [`mesh`]: the libp2p swarm (QUIC, identify, Kademlia, mDNS, ping, AutoNAT, relay, DCUtR,
//!   connection limits, a block list) and Fjord's stream protocols;
//! - [`framing`]: frames on Fjord's long-lived streams;
//! - [`gateway`]: the WebTransport gateway for browsers;
//! - [`link`]: the tasks that write and read one neighbour's streams;
//! - [`config_file`]: TOML configuration files for the command-line programs;
//! - [`driver`]: the tokio task that owns the core and the swarm ([`driver::start`] gives a
//!   [`NodeHandle`]);
//! - [`metrics`]: Prometheus metrics and the JSON status;
//! - [`report`]: audience reports to the origin and seeds, and their aggregate;
//! - [`play`]: one continuous fragmented MP4 over HTTP for desktop players (`--play`);
//! - [`http`]: the node's HTTP endpoints (metrics, status, playback);
//! - [`identity`]: the node's persistent libp2p key;
//! - [`inspect`]: decodes and verifies stored messages for an operator;
//! - [`synthetic`]: a synthetic signed channel for benchmarks and tests;
//! - [`trace`]: an opt-in event trace for diagnosis (`FJORD_TRACE_DIR`);
//! - [`units`]: parsing of bit rates typed by operators.

pub mod config_file;
pub mod driver;
pub mod framing;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inspect;
pub mod link;
pub mod mesh;
pub mod metrics;
pub mod play;
pub mod report;
pub mod synthetic;
pub mod trace;
pub mod units;

pub use driver::{NodeConfig, NodeHandle, StartError, Status, start};
pub use fjord_core as core;
