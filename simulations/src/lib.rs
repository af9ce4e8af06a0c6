//! Fjord simulations.
//!
//! This crate will hold the discrete-event simulator that drives many instances of
//! [`fjord_core`] on virtual time, and the emulator that runs real nodes over an emulated WAN.
//! Neither exists yet: see the open issues.

pub use fjord_core as core;
