//! Fjord relay node.
//!
//! The node drives the sans-IO [`fjord_core`] with real I/O. This crate holds the pieces around
//! the core; today that is [`inspect`], which decodes and verifies stored messages for an
//! operator.

pub mod inspect;

pub use fjord_core as core;
