//! The peer protocol: the frames two nodes exchange over one long-lived stream.
//!
//! A frame is one kind byte and a body. Media travels as [`Frame::Chunk`] and [`Frame::Manifest`]
//! carrying the signed wire encoding untouched; everything else is a small fixed-size
//! [`Control`] message. The transport delimits frames (a length prefix, bounded by
//! [`MAX_FRAME_LEN`]); this module never sees a partial frame.
//!
//! Decoding returns a typed [`FrameError`] and never panics. Media frames decode to the
//! `Unverified*` types: the driver verifies them before the core ever sees them.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::wire::{
    self, ChunkId, DecodeError, UnverifiedChunk, UnverifiedManifest, limits::MAX_CHUNK_LEN,
    limits::MAX_MANIFEST_LEN,
};

/// Version of this protocol, exchanged in [`Hello`].
pub const PROTOCOL_VERSION: u8 = 1;
/// Substreams a track is split into: chunk `seq` belongs to substream `seq % SUBSTREAMS`.
pub const SUBSTREAMS: usize = 8;
/// Largest frame: a maximal chunk and its kind byte.
pub const MAX_FRAME_LEN: usize = 1 + if MAX_CHUNK_LEN > MAX_MANIFEST_LEN {
    MAX_CHUNK_LEN
} else {
    MAX_MANIFEST_LEN
};

/// What a node says about itself when a connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u8,
    /// The sender's role.
    pub role: Role,
    /// Upload bandwidth the sender offers to the mesh, in bit/s.
    pub upload_bps: u64,
}

/// What a node is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Role {
    /// A viewer's node.
    Viewer = 1,
    /// A broadcaster's seed node: more upload, more neighbours.
    Seed = 2,
    /// The origin, embedded in the encoder.
    Origin = 3,
}

/// Why a connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GoodbyeReason {
    /// The sender has all the neighbours it wants.
    Full = 1,
    /// The sender found the neighbour not useful enough and replaces it.
    Replaced = 2,
    /// The sender is leaving.
    Leaving = 3,
    /// The sender received something invalid from the neighbour.
    Misbehaved = 4,
}

/// A small protocol message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// First message on a connection, each way.
    Hello(Hello),
    /// The sender holds (or has started to receive) this chunk.
    Have(ChunkId),
    /// The sender holds the chunks `base + i` of a track for every bit `i` set in `bits`.
    HaveMap {
        /// Epoch of the chunks.
        epoch: u64,
        /// Track of the chunks.
        track: u8,
        /// Sequence number of bit 0.
        base: u64,
        /// Bit `i` set: the sender holds sequence `base + i`.
        bits: u64,
    },
    /// Please send this chunk (repair).
    Request(ChunkId),
    /// Please send this chunk ahead of others: a [`Control::Request`] from a node that other
    /// holders already refused, so the chunk is about to be missed (see `crate::repair`).
    Urgent(ChunkId),
    /// Do not send this chunk, or stop sending it: the sender has it already or no longer
    /// needs it.
    Cancel(ChunkId),
    /// This chunk arrived completely.
    Ack(ChunkId),
    /// The connection is being closed, and why.
    Goodbye(GoodbyeReason),
    /// Push me every chunk of the substreams whose bits are set (replaces the previous set;
    /// zero unsubscribes).
    Subscribe {
        /// Bit `k`: substream `k`.
        substreams: u8,
    },
    /// I will not push these substreams to you (full, or replaced by a better child).
    Refuse {
        /// Bit `k`: substream `k`.
        substreams: u8,
    },
    /// How far behind the live edge the sender receives each substream, and how many more
    /// substream subscriptions it can take.
    Status {
        /// Per substream, the sender's lag behind publication in ms (`u16::MAX`: unknown).
        lags_ms: [u16; SUBSTREAMS],
        /// Further substream subscriptions it accepts.
        spare: u8,
    },
}

/// One frame as it travels between peers.
#[derive(Clone, Debug)]
pub enum Frame {
    /// A control message.
    Control(Control),
    /// A signed manifest, not yet verified.
    Manifest(UnverifiedManifest),
    /// A signed chunk, not yet verified.
    Chunk(UnverifiedChunk),
}

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// An empty frame.
    #[error("empty frame")]
    Empty,
    /// A kind byte this version does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The frame is longer than any valid one.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// The body has the wrong length for its kind.
    #[error("frame of kind {kind:#04x} has a body of {len} bytes, expected {expected}")]
    BadLength {
        /// The kind byte.
        kind: u8,
        /// The body length.
        len: usize,
        /// The length this kind requires.
        expected: usize,
    },
    /// A field holds a value this version does not define.
    #[error("invalid {0}")]
    BadValue(&'static str),
    /// The media payload did not decode.
    #[error("media: {0}")]
    Media(#[from] DecodeError),
}

mod kind {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const HAVE: u8 = 0x02;
    pub(super) const HAVE_MAP: u8 = 0x03;
    pub(super) const REQUEST: u8 = 0x04;
    pub(super) const CANCEL: u8 = 0x05;
    pub(super) const ACK: u8 = 0x06;
    pub(super) const GOODBYE: u8 = 0x07;
    pub(super) const SUBSCRIBE: u8 = 0x08;
    pub(super) const REFUSE: u8 = 0x09;
    pub(super) const STATUS: u8 = 0x0a;
    pub(super) const URGENT: u8 = 0x0b;
    pub(super) const MANIFEST: u8 = 0x10;
    pub(super) const CHUNK: u8 = 0x11;
}

const CHUNK_ID_LEN: usize = 8 + 1 + 8;
const HELLO_LEN: usize = 1 + 1 + 8;
const HAVE_MAP_LEN: usize = 8 + 1 + 8 + 8;

impl Control {
    /// Encoded length, kind byte included: what the message costs on the wire.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Control::Hello(_) => HELLO_LEN,
            Control::Have(_)
            | Control::Request(_)
            | Control::Urgent(_)
            | Control::Cancel(_)
            | Control::Ack(_) => CHUNK_ID_LEN,
            Control::HaveMap { .. } => HAVE_MAP_LEN,
            Control::Goodbye(_) | Control::Subscribe { .. } | Control::Refuse { .. } => 1,
            Control::Status { .. } => 2 * SUBSTREAMS + 1,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let id = |out: &mut BytesMut, k: u8, id: &ChunkId| {
            out.extend_from_slice(&[k]);
            out.extend_from_slice(&id.epoch.to_be_bytes());
            out.extend_from_slice(&[id.track]);
            out.extend_from_slice(&id.sequence.to_be_bytes());
        };
        match self {
            Control::Hello(h) => {
                out.extend_from_slice(&[kind::HELLO, h.version, h.role as u8]);
                out.extend_from_slice(&h.upload_bps.to_be_bytes());
            }
            Control::Have(c) => id(out, kind::HAVE, c),
            Control::Request(c) => id(out, kind::REQUEST, c),
            Control::Urgent(c) => id(out, kind::URGENT, c),
            Control::Cancel(c) => id(out, kind::CANCEL, c),
            Control::Ack(c) => id(out, kind::ACK, c),
            Control::HaveMap {
                epoch,
                track,
                base,
                bits,
            } => {
                out.extend_from_slice(&[kind::HAVE_MAP]);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&[*track]);
                out.extend_from_slice(&base.to_be_bytes());
                out.extend_from_slice(&bits.to_be_bytes());
            }
            Control::Goodbye(r) => out.extend_from_slice(&[kind::GOODBYE, *r as u8]),
            Control::Subscribe { substreams } => {
                out.extend_from_slice(&[kind::SUBSCRIBE, *substreams]);
            }
            Control::Refuse { substreams } => out.extend_from_slice(&[kind::REFUSE, *substreams]),
            Control::Status { lags_ms, spare } => {
                out.extend_from_slice(&[kind::STATUS]);
                for l in lags_ms {
                    out.extend_from_slice(&l.to_be_bytes());
                }
                out.extend_from_slice(&[*spare]);
            }
        }
    }
}

impl Frame {
    /// Encodes a frame. Media frames copy the signed bytes once, behind the kind byte.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Frame::Control(c) => c.encode(&mut out),
            Frame::Manifest(m) => {
                out.extend_from_slice(&[kind::MANIFEST]);
                out.extend_from_slice(m.encoded());
            }
            Frame::Chunk(c) => {
                out.extend_from_slice(&[kind::CHUNK]);
                out.extend_from_slice(c.encoded());
            }
        }
        out.freeze()
    }

    /// Encodes a verified chunk as a frame: what a node sends.
    pub fn encode_chunk(chunk: &wire::Chunk) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + chunk.len());
        out.extend_from_slice(&[kind::CHUNK]);
        out.extend_from_slice(chunk.encoded());
        out.freeze()
    }

    /// Encodes a verified manifest as a frame.
    pub fn encode_manifest(manifest: &wire::Manifest) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + manifest.encoded().len());
        out.extend_from_slice(&[kind::MANIFEST]);
        out.extend_from_slice(manifest.encoded());
        out.freeze()
    }

    /// Decodes one frame from untrusted bytes.
    pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(frame.len()));
        }
        let Some(&k) = frame.first() else {
            return Err(FrameError::Empty);
        };
        let body = frame.slice(1..);
        let need = |expected: usize| {
            if body.len() == expected {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    kind: k,
                    len: body.len(),
                    expected,
                })
            }
        };
        let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let chunk_id = || ChunkId {
            epoch: u64_at(0),
            track: body[8],
            sequence: u64_at(9),
        };
        let control = match k {
            kind::HELLO => {
                need(HELLO_LEN)?;
                let role = match body[1] {
                    1 => Role::Viewer,
                    2 => Role::Seed,
                    3 => Role::Origin,
                    _ => return Err(FrameError::BadValue("role")),
                };
                Control::Hello(Hello {
                    version: body[0],
                    role,
                    upload_bps: u64_at(2),
                })
            }
            kind::HAVE | kind::REQUEST | kind::URGENT | kind::CANCEL | kind::ACK => {
                need(CHUNK_ID_LEN)?;
                let id = chunk_id();
                match k {
                    kind::HAVE => Control::Have(id),
                    kind::REQUEST => Control::Request(id),
                    kind::URGENT => Control::Urgent(id),
                    kind::CANCEL => Control::Cancel(id),
                    _ => Control::Ack(id),
                }
            }
            kind::HAVE_MAP => {
                need(HAVE_MAP_LEN)?;
                Control::HaveMap {
                    epoch: u64_at(0),
                    track: body[8],
                    base: u64_at(9),
                    bits: u64_at(17),
                }
            }
            kind::GOODBYE => {
                need(1)?;
                Control::Goodbye(match body[0] {
                    1 => GoodbyeReason::Full,
                    2 => GoodbyeReason::Replaced,
                    3 => GoodbyeReason::Leaving,
                    4 => GoodbyeReason::Misbehaved,
                    _ => return Err(FrameError::BadValue("goodbye reason")),
                })
            }
            kind::SUBSCRIBE | kind::REFUSE => {
                need(1)?;
                let substreams = body[0];
                if SUBSTREAMS < 8 && usize::from(substreams) >> SUBSTREAMS != 0 {
                    return Err(FrameError::BadValue("substream mask"));
                }
                if k == kind::SUBSCRIBE {
                    Control::Subscribe { substreams }
                } else {
                    Control::Refuse { substreams }
                }
            }
            kind::STATUS => {
                need(2 * SUBSTREAMS + 1)?;
                let mut lags_ms = [0u16; SUBSTREAMS];
                for (i, l) in lags_ms.iter_mut().enumerate() {
                    *l = u16::from_be_bytes([body[2 * i], body[2 * i + 1]]);
                }
                Control::Status {
                    lags_ms,
                    spare: body[2 * SUBSTREAMS],
                }
            }
            kind::MANIFEST => return Ok(Frame::Manifest(UnverifiedManifest::decode(body)?)),
            kind::CHUNK => return Ok(Frame::Chunk(UnverifiedChunk::decode(body)?)),
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Frame::Control(control))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_id() -> impl Strategy<Value = ChunkId> {
        (any::<u64>(), any::<u8>(), any::<u64>()).prop_map(|(epoch, track, sequence)| ChunkId {
            epoch,
            track,
            sequence,
        })
    }

    fn arb_control() -> impl Strategy<Value = Control> {
        prop_oneof![
            (
                any::<u8>(),
                prop_oneof![Just(Role::Viewer), Just(Role::Seed), Just(Role::Origin)],
                any::<u64>()
            )
                .prop_map(|(version, role, upload_bps)| Control::Hello(Hello {
                    version,
                    role,
                    upload_bps
                })),
            arb_id().prop_map(Control::Have),
            arb_id().prop_map(Control::Request),
            arb_id().prop_map(Control::Urgent),
            arb_id().prop_map(Control::Cancel),
            arb_id().prop_map(Control::Ack),
            (any::<u64>(), any::<u8>(), any::<u64>(), any::<u64>()).prop_map(
                |(epoch, track, base, bits)| Control::HaveMap {
                    epoch,
                    track,
                    base,
                    bits
                }
            ),
            prop_oneof![
                Just(GoodbyeReason::Full),
                Just(GoodbyeReason::Replaced),
                Just(GoodbyeReason::Leaving),
                Just(GoodbyeReason::Misbehaved)
            ]
            .prop_map(Control::Goodbye),
            (0u8..16).prop_map(|substreams| Control::Subscribe { substreams }),
            (0u8..16).prop_map(|substreams| Control::Refuse { substreams }),
            (any::<[u16; SUBSTREAMS]>(), any::<u8>())
                .prop_map(|(lags_ms, spare)| Control::Status { lags_ms, spare }),
        ]
    }

    proptest! {
        #[test]
        fn control_round_trips(c in arb_control()) {
            let bytes = Frame::Control(c).encode();
            prop_assert_eq!(bytes.len(), c.encoded_len());
            match Frame::decode(bytes).unwrap() {
                Frame::Control(back) => prop_assert_eq!(back, c),
                other => prop_assert!(false, "decoded as {:?}", other),
            }
        }

        #[test]
        fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn truncated_or_extended_controls_are_refused(c in arb_control(), extra in any::<u8>()) {
            let bytes = Frame::Control(c).encode();
            for len in 0..bytes.len() {
                prop_assert!(Frame::decode(bytes.slice(..len)).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.push(extra);
            prop_assert!(Frame::decode(Bytes::from(longer)).is_err());
        }
    }

    #[test]
    fn media_frames_carry_the_signed_bytes() {
        let key = wire::ChannelKey::from_seed(&[1; 32]);
        let meta = wire::ChunkMeta {
            epoch: 1,
            track: 0,
            sequence: 5,
            flags: wire::ChunkFlags::empty(),
            timestamp: 0,
            duration: 1,
            published_at_us: 0,
        };
        let chunk = key.sign_chunk(&meta, b"data").unwrap();
        let frame = Frame::encode_chunk(&chunk);
        let Frame::Chunk(back) = Frame::decode(frame).unwrap() else {
            panic!("not a chunk frame");
        };
        assert_eq!(back.verify(&key.channel_id()).unwrap(), chunk);
        assert_eq!(
            Frame::decode(Bytes::from_static(&[0x7f])).unwrap_err(),
            FrameError::UnknownKind(0x7f)
        );
    }
}
