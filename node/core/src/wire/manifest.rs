//! The signed channel manifest: what a player needs before the first chunk (tracks, codecs,
//! init segments) and what the scheduler needs to set deadlines (chunk duration, target
//! latency).

use std::sync::Arc;

use bytes::Bytes;

use super::codec::{Reader, Writer, verify_signed};
use super::limits::{
    MANIFEST_FIXED_LEN, MAX_CODEC_LEN, MAX_INIT_SEGMENT, MAX_MANIFEST_LEN, MAX_NAME_LEN,
    MAX_TRACKS, TRACK_FIXED_LEN,
};
use super::{
    ChannelId, ChannelKey, DecodeError, EncodeError, FieldError, MessageKind, SIGNATURE_LEN,
    VerifyError,
};

/// What a track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TrackKind {
    /// Video frames.
    Video = 1,
    /// Audio samples.
    Audio = 2,
}

impl TrackKind {
    fn from_byte(b: u8) -> Result<Self, FieldError> {
        match b {
            1 => Ok(Self::Video),
            2 => Ok(Self::Audio),
            other => Err(FieldError::UnknownTrackKind(other)),
        }
    }
}

/// One media track of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// The id chunks of this track carry.
    pub id: u8,
    /// Video or audio.
    pub kind: TrackKind,
    /// Codec string as browsers spell it (`avc1.64001f`, `mp4a.40.2`), for MSE and WebCodecs.
    pub codec: String,
    /// Units per second of the chunks' time stamps and durations.
    pub timescale: u32,
    /// Nominal bit rate in bit/s: what the scheduler budgets for the track.
    pub bitrate: u32,
    /// The CMAF header (ftyp + moov) that must precede the track's first chunk in a decoder.
    pub init_segment: Bytes,
}

/// The content of a manifest, before signing or after decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestContent {
    /// The encoder run; chunks of other epochs do not belong to this manifest.
    pub epoch: u64,
    /// Human-readable channel name.
    pub name: String,
    /// When the manifest was signed, in microseconds since the Unix epoch: a newer manifest of
    /// the same epoch replaces an older one.
    pub issued_at_us: u64,
    /// Nominal chunk duration, in microseconds.
    pub chunk_duration_us: u32,
    /// Group (key-frame interval) duration, in microseconds.
    pub group_duration_us: u32,
    /// Target latency from publication to playout, in microseconds: a chunk's deadline is its
    /// publication time plus this.
    pub target_latency_us: u32,
    /// The tracks, at most [`MAX_TRACKS`], with distinct ids.
    pub tracks: Vec<Track>,
}

impl ManifestContent {
    /// Checks every rule of the format that a value can break. Both the encoder and the decoder
    /// apply it, so a decoded manifest obeys exactly what an encoded one does.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(FieldError::TooLong {
                field: "name",
                len: self.name.len(),
                max: MAX_NAME_LEN,
            });
        }
        for (value, field) in [
            (self.chunk_duration_us, "chunk duration"),
            (self.group_duration_us, "group duration"),
            (self.target_latency_us, "target latency"),
        ] {
            if value == 0 {
                return Err(FieldError::Empty(field));
            }
        }
        if self.group_duration_us < self.chunk_duration_us {
            return Err(FieldError::GroupShorterThanChunk);
        }
        if self.tracks.is_empty() {
            return Err(FieldError::NoTracks);
        }
        if self.tracks.len() > MAX_TRACKS {
            return Err(FieldError::TooManyTracks(self.tracks.len()));
        }
        for (i, track) in self.tracks.iter().enumerate() {
            if self.tracks[..i].iter().any(|t| t.id == track.id) {
                return Err(FieldError::DuplicateTrack(track.id));
            }
            validate_track(track)?;
        }
        Ok(())
    }

    /// The track with this id.
    pub fn track(&self, id: u8) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    fn encoded_len(&self) -> usize {
        MANIFEST_FIXED_LEN
            + self.name.len()
            + self
                .tracks
                .iter()
                .map(|t| TRACK_FIXED_LEN + t.codec.len() + t.init_segment.len())
                .sum::<usize>()
    }
}

fn validate_track(track: &Track) -> Result<(), FieldError> {
    if track.codec.is_empty() {
        return Err(FieldError::Empty("codec"));
    }
    if track.codec.len() > MAX_CODEC_LEN {
        return Err(FieldError::TooLong {
            field: "codec",
            len: track.codec.len(),
            max: MAX_CODEC_LEN,
        });
    }
    if !track.codec.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::CodecNotPrintable);
    }
    if track.timescale == 0 {
        return Err(FieldError::Empty("timescale"));
    }
    if track.init_segment.is_empty() {
        return Err(FieldError::Empty("init segment"));
    }
    if track.init_segment.len() > MAX_INIT_SEGMENT {
        return Err(FieldError::TooLong {
            field: "init segment",
            len: track.init_segment.len(),
            max: MAX_INIT_SEGMENT,
        });
    }
    Ok(())
}

/// A manifest decoded from untrusted bytes, not yet checked against its channel's key.
#[derive(Clone, Debug)]
pub struct UnverifiedManifest {
    channel: [u8; 32],
    content: ManifestContent,
    bytes: Bytes,
}

/// A manifest whose signature verified under its channel's key.
///
/// One pointer wide, like [`crate::wire::Chunk`]: clones (one per neighbour that is sent it,
/// one per node of a simulation) share one verified manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest(Arc<ManifestParts>);

// A manifest stays one pointer wide (see above).
const _: () = assert!(std::mem::size_of::<Manifest>() == std::mem::size_of::<usize>());

/// What a [`Manifest`] shares between its clones.
#[derive(Debug, PartialEq, Eq)]
struct ManifestParts {
    channel: ChannelId,
    content: ManifestContent,
    bytes: Bytes,
}

impl UnverifiedManifest {
    /// Decodes an encoded manifest. Checks structure, limits and the rules of
    /// [`ManifestContent::validate`], not the signature. Init segments share `bytes`; the only
    /// allocations are the name, codec strings and track list, each bounded by its limit.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&bytes);
        r.expect(MessageKind::Manifest, MAX_MANIFEST_LEN)?;
        let channel = r.array("channel")?;
        let epoch = r.u64("epoch")?;
        let issued_at_us = r.u64("issued_at")?;
        let name_len = usize::from(r.u16("name length")?);
        if name_len > MAX_NAME_LEN {
            return Err(FieldError::TooLong {
                field: "name",
                len: name_len,
                max: MAX_NAME_LEN,
            }
            .into());
        }
        let name = std::str::from_utf8(r.take(name_len, "name")?)
            .map_err(|_| FieldError::NameNotUtf8)?
            .to_owned();
        let chunk_duration_us = r.u32("chunk duration")?;
        let group_duration_us = r.u32("group duration")?;
        let target_latency_us = r.u32("target latency")?;
        let track_count = usize::from(r.u8("track count")?);
        if track_count > MAX_TRACKS {
            return Err(FieldError::TooManyTracks(track_count).into());
        }
        let mut tracks = Vec::with_capacity(track_count);
        for _ in 0..track_count {
            tracks.push(decode_track(&mut r, &bytes)?);
        }
        r.take(SIGNATURE_LEN, "signature")?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        let content = ManifestContent {
            epoch,
            name,
            issued_at_us,
            chunk_duration_us,
            group_duration_us,
            target_latency_us,
            tracks,
        };
        content.validate()?;
        Ok(Self {
            channel,
            content,
            bytes,
        })
    }

    /// The raw channel field: whom the manifest claims to come from.
    pub fn channel_bytes(&self) -> &[u8; 32] {
        &self.channel
    }

    /// The content, unauthenticated until verified.
    pub fn content(&self) -> &ManifestContent {
        &self.content
    }

    /// The bytes as received.
    pub fn encoded(&self) -> &Bytes {
        &self.bytes
    }

    /// Checks that the manifest belongs to `channel` and that its signature verifies.
    pub fn verify(self, channel: &ChannelId) -> Result<Manifest, VerifyError> {
        verify_signed(&self.bytes, &self.channel, channel)?;
        Ok(Manifest(Arc::new(ManifestParts {
            channel: *channel,
            content: self.content,
            bytes: self.bytes,
        })))
    }
}

fn decode_track(r: &mut Reader<'_>, bytes: &Bytes) -> Result<Track, DecodeError> {
    let id = r.u8("track id")?;
    let kind = TrackKind::from_byte(r.u8("track kind")?)?;
    let codec_len = usize::from(r.u8("codec length")?);
    if codec_len > MAX_CODEC_LEN {
        return Err(FieldError::TooLong {
            field: "codec",
            len: codec_len,
            max: MAX_CODEC_LEN,
        }
        .into());
    }
    let codec = r.take(codec_len, "codec")?;
    if !codec.iter().all(u8::is_ascii_graphic) {
        return Err(FieldError::CodecNotPrintable.into());
    }
    let codec = String::from_utf8(codec.to_vec()).map_err(|_| FieldError::CodecNotPrintable)?;
    let timescale = r.u32("timescale")?;
    let bitrate = r.u32("bit rate")?;
    let init_len = r.u32("init segment length")? as usize;
    if init_len > MAX_INIT_SEGMENT {
        return Err(FieldError::TooLong {
            field: "init segment",
            len: init_len,
            max: MAX_INIT_SEGMENT,
        }
        .into());
    }
    let start = r.position();
    r.take(init_len, "init segment")?;
    Ok(Track {
        id,
        kind,
        codec,
        timescale,
        bitrate,
        init_segment: bytes.slice(start..start + init_len),
    })
}

impl Manifest {
    /// The channel the manifest belongs to.
    pub fn channel(&self) -> &ChannelId {
        &self.0.channel
    }

    /// The authenticated content.
    pub fn content(&self) -> &ManifestContent {
        &self.0.content
    }

    /// The signed encoding, exactly as received or produced.
    pub fn encoded(&self) -> &Bytes {
        &self.0.bytes
    }
}

impl ChannelKey {
    /// Validates, encodes and signs a manifest of this channel.
    pub fn sign_manifest(&self, content: &ManifestContent) -> Result<Manifest, EncodeError> {
        content.validate()?;
        let channel = self.channel_id();
        let mut w = Writer::with_capacity(content.encoded_len());
        w.preamble(MessageKind::Manifest as u8);
        w.bytes(channel.as_bytes());
        w.u64(content.epoch);
        w.u64(content.issued_at_us);
        // Lengths fit their fields: validate() bounded them well below each field's maximum.
        w.u16(content.name.len() as u16);
        w.bytes(content.name.as_bytes());
        w.u32(content.chunk_duration_us);
        w.u32(content.group_duration_us);
        w.u32(content.target_latency_us);
        w.u8(content.tracks.len() as u8);
        for t in &content.tracks {
            w.u8(t.id);
            w.u8(t.kind as u8);
            w.u8(t.codec.len() as u8);
            w.bytes(t.codec.as_bytes());
            w.u32(t.timescale);
            w.u32(t.bitrate);
            w.u32(t.init_segment.len() as u32);
            w.bytes(&t.init_segment);
        }
        let signature = self.sign(w.as_slice());
        w.bytes(&signature);
        debug_assert_eq!(w.as_slice().len(), content.encoded_len());
        Ok(Manifest(Arc::new(ManifestParts {
            channel,
            content: content.clone(),
            bytes: Bytes::from(w.into_vec()),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u8) -> Track {
        Track {
            id,
            kind: TrackKind::Video,
            codec: "avc1.64001f".into(),
            timescale: 90_000,
            bitrate: 2_500_000,
            init_segment: Bytes::from_static(b"ftypmoov"),
        }
    }

    fn content() -> ManifestContent {
        ManifestContent {
            epoch: 3,
            name: "Fjord test".into(),
            issued_at_us: 1_700_000_000_000_000,
            chunk_duration_us: 250_000,
            group_duration_us: 1_000_000,
            target_latency_us: 1_500_000,
            tracks: vec![track(1)],
        }
    }

    /// Encodes without validation, as a hostile peer would, to check the decoder's own limits.
    fn encode_raw(c: &ManifestContent, name_len: u16, track_count: u8) -> Vec<u8> {
        let mut w = Writer::with_capacity(0);
        w.preamble(MessageKind::Manifest as u8);
        w.bytes(&[0; 32]);
        w.u64(c.epoch);
        w.u64(c.issued_at_us);
        w.u16(name_len);
        w.bytes(c.name.as_bytes());
        w.u32(c.chunk_duration_us);
        w.u32(c.group_duration_us);
        w.u32(c.target_latency_us);
        w.u8(track_count);
        for t in &c.tracks {
            w.u8(t.id);
            w.u8(t.kind as u8);
            w.u8(t.codec.len() as u8);
            w.bytes(t.codec.as_bytes());
            w.u32(t.timescale);
            w.u32(t.bitrate);
            w.u32(t.init_segment.len() as u32);
            w.bytes(&t.init_segment);
        }
        w.bytes(&[0; SIGNATURE_LEN]);
        w.into_vec()
    }

    fn decode_err(c: &ManifestContent) -> DecodeError {
        let raw = encode_raw(c, c.name.len() as u16, c.tracks.len() as u8);
        UnverifiedManifest::decode(Bytes::from(raw)).unwrap_err()
    }

    fn encode_err(c: &ManifestContent) -> FieldError {
        let EncodeError::Field(e) = ChannelKey::from_seed(&[5; 32])
            .sign_manifest(c)
            .unwrap_err();
        e
    }

    /// Each broken rule is refused by the encoder and, with the same error, by the decoder.
    #[test]
    fn every_rule_is_enforced_on_both_sides() {
        let cases: Vec<(ManifestContent, FieldError)> = vec![
            (
                ManifestContent {
                    name: "x".repeat(MAX_NAME_LEN + 1),
                    ..content()
                },
                FieldError::TooLong {
                    field: "name",
                    len: MAX_NAME_LEN + 1,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                ManifestContent {
                    tracks: vec![],
                    ..content()
                },
                FieldError::NoTracks,
            ),
            (
                ManifestContent {
                    tracks: (0..=MAX_TRACKS as u8).map(track).collect(),
                    ..content()
                },
                FieldError::TooManyTracks(MAX_TRACKS + 1),
            ),
            (
                ManifestContent {
                    tracks: vec![track(1), track(1)],
                    ..content()
                },
                FieldError::DuplicateTrack(1),
            ),
            (
                ManifestContent {
                    chunk_duration_us: 0,
                    ..content()
                },
                FieldError::Empty("chunk duration"),
            ),
            (
                ManifestContent {
                    target_latency_us: 0,
                    ..content()
                },
                FieldError::Empty("target latency"),
            ),
            (
                ManifestContent {
                    group_duration_us: 100_000,
                    ..content()
                },
                FieldError::GroupShorterThanChunk,
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        codec: "c".repeat(MAX_CODEC_LEN + 1),
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::TooLong {
                    field: "codec",
                    len: MAX_CODEC_LEN + 1,
                    max: MAX_CODEC_LEN,
                },
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        codec: "avc1 x".into(),
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::CodecNotPrintable,
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        codec: String::new(),
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::Empty("codec"),
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        timescale: 0,
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::Empty("timescale"),
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        init_segment: Bytes::from(vec![0; MAX_INIT_SEGMENT + 1]),
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::TooLong {
                    field: "init segment",
                    len: MAX_INIT_SEGMENT + 1,
                    max: MAX_INIT_SEGMENT,
                },
            ),
            (
                ManifestContent {
                    tracks: vec![Track {
                        init_segment: Bytes::new(),
                        ..track(1)
                    }],
                    ..content()
                },
                FieldError::Empty("init segment"),
            ),
        ];
        for (c, expected) in cases {
            assert_eq!(encode_err(&c), expected, "encoding {c:?}");
            assert_eq!(
                decode_err(&c),
                DecodeError::Field(expected.clone()),
                "decoding {expected:?}"
            );
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let c = ManifestContent {
            name: "n".repeat(MAX_NAME_LEN),
            tracks: (0..MAX_TRACKS as u8)
                .map(|id| Track {
                    codec: "c".repeat(MAX_CODEC_LEN),
                    init_segment: Bytes::from(vec![id; MAX_INIT_SEGMENT]),
                    ..track(id)
                })
                .collect(),
            ..content()
        };
        let m = ChannelKey::from_seed(&[5; 32]).sign_manifest(&c).unwrap();
        assert_eq!(m.encoded().len(), MAX_MANIFEST_LEN);
        let back = UnverifiedManifest::decode(m.encoded().clone()).unwrap();
        assert_eq!(back.content(), &c);
    }

    #[test]
    fn non_utf8_name_and_unknown_kind_are_refused() {
        let mut c = content();
        c.name = "ab".into();
        let mut raw = encode_raw(&c, 2, 1);
        raw[4 + 32 + 16 + 2] = 0xff;
        assert_eq!(
            UnverifiedManifest::decode(Bytes::from(raw)).unwrap_err(),
            DecodeError::Field(FieldError::NameNotUtf8)
        );
        let mut raw = encode_raw(&content(), 10, 1);
        let kind_at = MANIFEST_FIXED_LEN - SIGNATURE_LEN + 10 + 1;
        raw[kind_at] = 9;
        assert_eq!(
            UnverifiedManifest::decode(Bytes::from(raw)).unwrap_err(),
            DecodeError::Field(FieldError::UnknownTrackKind(9))
        );
    }

    #[test]
    fn oversized_message_is_refused_before_parsing() {
        let mut raw = encode_raw(&content(), 10, 1);
        raw.resize(MAX_MANIFEST_LEN + 1, 0);
        assert!(matches!(
            UnverifiedManifest::decode(Bytes::from(raw)),
            Err(DecodeError::MessageTooLarge { .. })
        ));
    }
}
