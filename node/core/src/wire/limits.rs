//! Size limits of the wire format.
//!
//! Decoders reject anything larger before allocating, and encoders refuse to produce it, so a
//! peer can never make another allocate more than these bounds. Transports size their frame
//! limits from [`MAX_CHUNK_LEN`] and [`MAX_MANIFEST_LEN`].

use super::{SIGNATURE_LEN, chunk::CHUNK_HEADER_LEN};

/// Largest chunk payload: 4 MiB, a 250 ms chunk at over 100 Mbit/s.
pub const MAX_CHUNK_PAYLOAD: usize = 4 * 1024 * 1024;
/// Largest encoded chunk.
pub const MAX_CHUNK_LEN: usize = CHUNK_HEADER_LEN + MAX_CHUNK_PAYLOAD + SIGNATURE_LEN;
/// Longest channel name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;
/// Longest codec string ("avc1.64001f", "mp4a.40.2", ...).
pub const MAX_CODEC_LEN: usize = 64;
/// Most tracks in one channel.
pub const MAX_TRACKS: usize = 8;
/// Largest init segment (ftyp + moov). Real ones are about a kilobyte.
pub const MAX_INIT_SEGMENT: usize = 64 * 1024;

/// Fixed part of a manifest: preamble, channel, epoch, issued-at, name length, three durations,
/// track count, signature.
pub(crate) const MANIFEST_FIXED_LEN: usize = 4 + 32 + 8 + 8 + 2 + 4 + 4 + 4 + 1 + SIGNATURE_LEN;
/// Fixed part of one track entry: id, kind, codec length, timescale, bit rate, init length.
pub(crate) const TRACK_FIXED_LEN: usize = 1 + 1 + 1 + 4 + 4 + 4;
/// Largest encoded manifest.
pub const MAX_MANIFEST_LEN: usize = MANIFEST_FIXED_LEN
    + MAX_NAME_LEN
    + MAX_TRACKS * (TRACK_FIXED_LEN + MAX_CODEC_LEN + MAX_INIT_SEGMENT);
