//! The signed wire format: channel identity, manifest and chunk.
//!
//! # Life of a message
//! 1. The encoder holds a [`ChannelKey`] and signs a [`ManifestContent`] into a [`Manifest`] and
//!    each CMAF fragment into a [`Chunk`] ([`ChannelKey::sign_manifest`],
//!    [`ChannelKey::sign_chunk`]). Both carry their encoded bytes, ready to send.
//! 2. A receiver decodes untrusted bytes with [`UnverifiedManifest::decode`] or
//!    [`UnverifiedChunk::decode`]. Decoding checks structure and limits only; it returns a typed
//!    [`DecodeError`] for anything malformed and never panics.
//! 3. The receiver verifies against the channel it subscribed to ([`ChannelId`], from the
//!    command line or the page URL) with `verify`, which yields the verified type. Only verified
//!    values are stored, forwarded or played: the types make skipping the check impossible.
//!
//! Forwarding reuses the received bytes untouched ([`Chunk::encoded`]), so relays never
//! re-encode and a signature always covers exactly the bytes on the wire.
//!
//! # Encoding (version 1)
//! Every message starts with the magic `FJ`, a version byte and a kind byte, and ends with a
//! 64-byte Ed25519 signature over everything before it. Integers are big-endian and fixed-width:
//! the header is tiny next to a media payload, and fixed offsets keep the decoders (this one and
//! the browser's) short and obviously bounded. The magic, version and kind are inside the signed
//! bytes, so a signature for one kind of message can never be replayed as another.
//!
//! Chunk (`kind` 2), [`CHUNK_HEADER_LEN`] bytes of header:
//! ```text
//! offset size field
//!      0    2 magic "FJ"
//!      2    1 version (1)
//!      3    1 kind (2 = chunk)
//!      4   32 channel id (Ed25519 public key)
//!     36    8 epoch
//!     44    1 track id
//!     45    8 sequence number (per track, per epoch)
//!     53    1 flags (bit 0: starts a group, bit 1: independently decodable; others zero)
//!     54    8 media time stamp, in the track's timescale
//!     62    4 duration, in the track's timescale
//!     66    8 published at, microseconds since the Unix epoch (wall clock)
//!     74    4 payload length n
//!     78    n payload (one CMAF fragment: moof + mdat)
//!   78+n   64 signature
//! ```
//!
//! Manifest (`kind` 1):
//! ```text
//! magic "FJ", version, kind 1, channel id (32), epoch (u64), issued at (u64, µs since the Unix
//! epoch), name (u16 length + UTF-8), chunk duration (u32 µs), group duration (u32 µs),
//! target latency (u32 µs), track count (u8), then per track: id (u8), kind (u8: 1 video,
//! 2 audio), codec (u8 length + printable ASCII, as browsers spell it, e.g. "avc1.64001f"),
//! timescale (u32), nominal bit rate (u32 bit/s), init segment (u32 length + bytes); signature.
//! ```

mod chunk;
mod codec;
mod error;
mod identity;
pub mod limits;
mod manifest;

pub use chunk::{
    CHUNK_HEADER_LEN, Chunk, ChunkFlags, ChunkHeader, ChunkId, ChunkMeta, UnverifiedChunk,
};
pub use error::{DecodeError, EncodeError, FieldError, VerifyError};
pub use identity::{ChannelId, ChannelKey, KeyFileError, ParseChannelIdError};
pub use manifest::{Manifest, ManifestContent, Track, TrackKind, UnverifiedManifest};

/// The two bytes every Fjord message starts with.
pub const MAGIC: [u8; 2] = *b"FJ";
/// The encoding version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the Ed25519 signature that ends every message.
pub const SIGNATURE_LEN: usize = 64;

/// What a message is, from its fourth byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageKind {
    /// A signed channel manifest.
    Manifest = 1,
    /// A signed media chunk.
    Chunk = 2,
}

impl MessageKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Manifest),
            2 => Some(Self::Chunk),
            _ => None,
        }
    }
}

/// Reads the kind of an encoded message without decoding the rest, so that a reader of mixed
/// messages (a recorded folder, a stream) can dispatch to the right decoder.
pub fn peek_kind(bytes: &[u8]) -> Result<MessageKind, DecodeError> {
    let mut r = codec::Reader::new(bytes);
    let kind = r.preamble()?;
    MessageKind::from_byte(kind).ok_or(DecodeError::UnknownKind(kind))
}
