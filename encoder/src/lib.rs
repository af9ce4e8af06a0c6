//! Fjord encoder: turns a live broadcast into signed CMAF chunks.
//!
//! Today this crate holds the channel key store ([`keyfile`]); ingest, encoding, CMAF cutting
//! and publishing join it as their issues land.

pub mod keyfile;
