//! Fjord encoder: turns a live broadcast into signed CMAF chunks.
//!
//! The data path: a source ([`ingest`]: the built-in [`pattern`], a file, or a live SRT, RTMP
//! or UDP listener) delivers decoded frames to the [`pipeline`], which encodes them
//! ([`encode`]: H.264 + AAC), muxes each track to CMAF ([`cmaf`]), cuts chunks on the
//! [`cadence`], signs them with the channel key ([`keyfile`]) and hands them to a
//! [`publish::Publisher`].

pub mod cadence;
pub mod cmaf;
pub mod encode;
pub mod font;
pub mod ingest;
pub mod keyfile;
pub mod pattern;
pub mod pipeline;
pub mod publish;
