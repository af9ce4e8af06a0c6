//! Fjord's sans-IO core.
//!
//! Everything here is plain data and plain state machines: no sockets, no async runtime, no
//! clock reads. Time is passed in by the caller and randomness comes from seeded generators, so
//! the tokio driver in `fjord-node` and the discrete-event simulator in `fjord-sim` run exactly
//! the same code and a simulation is reproducible from its seed.
//!
//! Modules:
//! - [`wire`]: the signed channel manifest and chunk formats, their compact binary encoding with
//!   explicit size limits, and the channel identity (an Ed25519 key pair).
//! - [`proto`]: the frames peers exchange (control messages and media).
//! - [`node`]: one node's chunk-exchange state machine ([`Node`]), with its store
//!   ([`store`]), neighbour table, delivery trees ([`tree`]), scheduler ([`scheduler`]), repair
//!   ([`repair`]) and neighbour maintenance ([`maintenance`]).
//!
//! Peer input is untrusted throughout: decoders return typed errors, never panic and never
//! allocate past the limits in [`wire::limits`]. Verifying a signature is a separate, explicit
//! step that turns an `Unverified*` value into the verified type the rest of the system accepts;
//! the [`Node`] only ever takes verified chunks and manifests.

pub mod maintenance;
pub mod neighbours;
pub mod node;
pub mod proto;
pub mod repair;
pub mod rng;
pub mod scheduler;
pub mod store;
pub mod time;
pub mod tree;
pub mod wire;

pub use neighbours::PeerId;
pub use node::{Config, Footprint, Input, Node, Output, Policy, Stats};
pub use time::Time;
