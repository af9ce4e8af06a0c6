//! Signed media chunks: one CMAF fragment of one track, with what relays and players need to
//! schedule, order and measure it.

use std::sync::Arc;

use bytes::Bytes;

use super::codec::{Reader, Writer, verify_signed};
use super::limits::{MAX_CHUNK_LEN, MAX_CHUNK_PAYLOAD};
use super::{
    ChannelId, ChannelKey, DecodeError, EncodeError, FieldError, MessageKind, SIGNATURE_LEN,
    VerifyError,
};

/// Length of the fixed chunk header that precedes the payload.
pub const CHUNK_HEADER_LEN: usize = 78;
const PAYLOAD_OFFSET: usize = CHUNK_HEADER_LEN;

/// A chunk's flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChunkFlags(u8);

impl ChunkFlags {
    /// The chunk is the first of a group: players may join here.
    pub const GROUP_START: Self = Self(0b01);
    /// The chunk decodes without any earlier chunk (it starts with a key frame).
    pub const INDEPENDENT: Self = Self(0b10);
    const ALL: u8 = 0b11;

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Accepts a flags byte if it sets only defined bits.
    pub fn from_bits(bits: u8) -> Result<Self, FieldError> {
        if bits & !Self::ALL != 0 {
            return Err(FieldError::UnknownFlags(bits));
        }
        Ok(Self(bits))
    }

    /// The flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ChunkFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Identifies a chunk within its channel. Orders by epoch, then track, then sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId {
    /// The encoder run that produced it.
    pub epoch: u64,
    /// The track.
    pub track: u8,
    /// Position in the track, counting from 0 at the start of the epoch.
    pub sequence: u64,
}

/// Everything a chunk says about itself besides its channel and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkMeta {
    /// The encoder run that produced it; a restarted encoder starts a new, larger epoch.
    pub epoch: u64,
    /// The track, as listed in the manifest.
    pub track: u8,
    /// Position in the track within the epoch.
    pub sequence: u64,
    /// Group start and independence flags.
    pub flags: ChunkFlags,
    /// Media time stamp of the first sample, in the track's timescale.
    pub timestamp: u64,
    /// Media duration, in the track's timescale.
    pub duration: u32,
    /// Wall-clock time of publication, in microseconds since the Unix epoch. Every hop and
    /// player measures its latency against this.
    pub published_at_us: u64,
}

impl ChunkMeta {
    /// The chunk's identity.
    pub fn id(&self) -> ChunkId {
        ChunkId {
            epoch: self.epoch,
            track: self.track,
            sequence: self.sequence,
        }
    }
}

/// A chunk decoded from untrusted bytes but not yet checked against its channel's key.
#[derive(Clone, Debug)]
pub struct UnverifiedChunk {
    channel: [u8; 32],
    meta: ChunkMeta,
    bytes: Bytes,
}

/// A chunk whose signature verified under its channel's key: the only kind that is stored,
/// forwarded or played.
///
/// One pointer wide: a node keeps chunks in every store slot and passes them through its
/// queues, and the channel's key alone (a decompressed curve point) is 192 bytes, so inline a
/// chunk was 264 bytes that every move copied. Clones share one verified chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk(Arc<ChunkParts>);

// A chunk stays one pointer wide (see above).
const _: () = assert!(std::mem::size_of::<Chunk>() == std::mem::size_of::<usize>());

/// What a [`Chunk`] shares between its clones.
#[derive(Debug, PartialEq, Eq)]
struct ChunkParts {
    channel: ChannelId,
    meta: ChunkMeta,
    bytes: Bytes,
}

/// What the fixed header at the front of an encoded chunk says, decoded before the rest has
/// arrived: a receiver learns what is coming (and how long it is) from the first
/// [`CHUNK_HEADER_LEN`] bytes. Unauthenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The raw channel field.
    pub channel: [u8; 32],
    /// The chunk's metadata as claimed.
    pub meta: ChunkMeta,
    /// Length of the whole encoded chunk (header, payload and signature), within the limits.
    pub encoded_len: usize,
}

impl ChunkHeader {
    /// Decodes the header from the first [`CHUNK_HEADER_LEN`] bytes of an encoded chunk (more
    /// bytes are ignored). Checks the preamble, the flags and the payload limit.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes.get(..CHUNK_HEADER_LEN).unwrap_or(bytes));
        r.expect(MessageKind::Chunk, MAX_CHUNK_LEN)?;
        let channel = r.array("channel")?;
        let epoch = r.u64("epoch")?;
        let track = r.u8("track")?;
        let sequence = r.u64("sequence")?;
        let flags = ChunkFlags::from_bits(r.u8("flags")?)?;
        let timestamp = r.u64("timestamp")?;
        let duration = r.u32("duration")?;
        let published_at_us = r.u64("published_at")?;
        let payload_len = r.u32("payload length")? as usize;
        debug_assert_eq!(r.position(), PAYLOAD_OFFSET);
        if payload_len > MAX_CHUNK_PAYLOAD {
            return Err(FieldError::TooLong {
                field: "payload",
                len: payload_len,
                max: MAX_CHUNK_PAYLOAD,
            }
            .into());
        }
        Ok(Self {
            channel,
            meta: ChunkMeta {
                epoch,
                track,
                sequence,
                flags,
                timestamp,
                duration,
                published_at_us,
            },
            encoded_len: CHUNK_HEADER_LEN + payload_len + SIGNATURE_LEN,
        })
    }
}

impl UnverifiedChunk {
    /// Decodes an encoded chunk. Checks structure and limits, not the signature. Never panics
    /// and never allocates: the result shares `bytes`.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CHUNK_LEN {
            // Checked first so that an oversized message is refused as such, whatever its
            // header claims.
            let mut r = Reader::new(&bytes);
            r.expect(MessageKind::Chunk, MAX_CHUNK_LEN)?;
        }
        let header = ChunkHeader::decode(&bytes)?;
        let mut r = Reader::new(&bytes);
        r.take(CHUNK_HEADER_LEN, "header")?;
        r.take(
            header.encoded_len - CHUNK_HEADER_LEN - SIGNATURE_LEN,
            "payload",
        )?;
        r.take(SIGNATURE_LEN, "signature")?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(Self {
            channel: header.channel,
            meta: header.meta,
            bytes,
        })
    }

    /// The raw channel field: whom the chunk claims to come from.
    pub fn channel_bytes(&self) -> &[u8; 32] {
        &self.channel
    }

    /// The chunk's metadata, unauthenticated until verified.
    pub fn meta(&self) -> &ChunkMeta {
        &self.meta
    }

    /// The bytes as received.
    pub fn encoded(&self) -> &Bytes {
        &self.bytes
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a decoded chunk has at least a header and a signature.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Checks that the chunk belongs to `channel` and that its signature verifies.
    pub fn verify(self, channel: &ChannelId) -> Result<Chunk, VerifyError> {
        verify_signed(&self.bytes, &self.channel, channel)?;
        Ok(Chunk(Arc::new(ChunkParts {
            channel: *channel,
            meta: self.meta,
            bytes: self.bytes,
        })))
    }
}

impl Chunk {
    /// The channel the chunk belongs to.
    pub fn channel(&self) -> &ChannelId {
        &self.0.channel
    }

    /// The chunk's authenticated metadata.
    pub fn meta(&self) -> &ChunkMeta {
        &self.0.meta
    }

    /// The chunk's identity.
    pub fn id(&self) -> ChunkId {
        self.0.meta.id()
    }

    /// The CMAF fragment (moof + mdat), sharing the encoded buffer.
    pub fn payload(&self) -> Bytes {
        self.0
            .bytes
            .slice(PAYLOAD_OFFSET..self.0.bytes.len() - SIGNATURE_LEN)
    }

    /// The signed encoding, exactly as received or produced: what relays forward.
    pub fn encoded(&self) -> &Bytes {
        &self.0.bytes
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    /// Always false: a chunk has at least a header and a signature.
    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }
}

impl ChannelKey {
    /// Encodes and signs one chunk of this channel.
    pub fn sign_chunk(&self, meta: &ChunkMeta, payload: &[u8]) -> Result<Chunk, EncodeError> {
        if payload.len() > MAX_CHUNK_PAYLOAD {
            return Err(FieldError::TooLong {
                field: "payload",
                len: payload.len(),
                max: MAX_CHUNK_PAYLOAD,
            }
            .into());
        }
        let channel = self.channel_id();
        let mut w = Writer::with_capacity(CHUNK_HEADER_LEN + payload.len() + SIGNATURE_LEN);
        w.preamble(MessageKind::Chunk as u8);
        w.bytes(channel.as_bytes());
        w.u64(meta.epoch);
        w.u8(meta.track);
        w.u64(meta.sequence);
        w.u8(meta.flags.bits());
        w.u64(meta.timestamp);
        w.u32(meta.duration);
        w.u64(meta.published_at_us);
        w.u32(payload.len() as u32);
        w.bytes(payload);
        let signature = self.sign(w.as_slice());
        w.bytes(&signature);
        Ok(Chunk(Arc::new(ChunkParts {
            channel,
            meta: *meta,
            bytes: Bytes::from(w.into_vec()),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ChunkMeta {
        ChunkMeta {
            epoch: 1_700_000_000_000,
            track: 1,
            sequence: 42,
            flags: ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT,
            timestamp: 90_000 * 10,
            duration: 22_500,
            published_at_us: 1_700_000_000_123_456,
        }
    }

    #[test]
    fn header_layout_is_as_documented() {
        let key = ChannelKey::from_seed(&[1; 32]);
        let chunk = key.sign_chunk(&meta(), b"moofmdat").unwrap();
        let b = chunk.encoded();
        assert_eq!(&b[0..4], b"FJ\x01\x02");
        assert_eq!(&b[4..36], key.channel_id().as_bytes());
        assert_eq!(b[44], 1);
        assert_eq!(u64::from_be_bytes(b[45..53].try_into().unwrap()), 42);
        assert_eq!(b[53], 0b11);
        assert_eq!(u32::from_be_bytes(b[74..78].try_into().unwrap()), 8);
        assert_eq!(&b[78..86], b"moofmdat");
        assert_eq!(b.len(), CHUNK_HEADER_LEN + 8 + SIGNATURE_LEN);
    }

    #[test]
    fn payload_limit_is_enforced_on_both_sides() {
        let key = ChannelKey::from_seed(&[1; 32]);
        let big = vec![0u8; MAX_CHUNK_PAYLOAD + 1];
        assert!(matches!(
            key.sign_chunk(&meta(), &big),
            Err(EncodeError::Field(FieldError::TooLong {
                field: "payload",
                ..
            }))
        ));
        // A maximal payload is accepted.
        let max = key.sign_chunk(&meta(), &big[1..]).unwrap();
        assert_eq!(max.len(), MAX_CHUNK_LEN);
        assert!(UnverifiedChunk::decode(max.encoded().clone()).is_ok());

        // A header that claims more than the limit is refused before the payload is looked at.
        let mut forged = max.encoded()[..CHUNK_HEADER_LEN].to_vec();
        forged[74..78].copy_from_slice(&((MAX_CHUNK_PAYLOAD + 1) as u32).to_be_bytes());
        assert!(matches!(
            UnverifiedChunk::decode(Bytes::from(forged)),
            Err(DecodeError::Field(FieldError::TooLong {
                field: "payload",
                ..
            }))
        ));
        // And so is a message longer than any valid chunk, whatever it claims.
        let mut long = max.encoded().to_vec();
        long.push(0);
        assert!(matches!(
            UnverifiedChunk::decode(Bytes::from(long)),
            Err(DecodeError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_flags_are_refused() {
        let key = ChannelKey::from_seed(&[1; 32]);
        let mut b = key.sign_chunk(&meta(), b"x").unwrap().encoded().to_vec();
        b[53] = 0b100;
        assert_eq!(
            UnverifiedChunk::decode(Bytes::from(b)).unwrap_err(),
            DecodeError::Field(FieldError::UnknownFlags(0b100))
        );
    }
}
