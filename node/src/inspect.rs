//! Describes an encoded manifest or chunk for a person: what it claims, and whether it is
//! authentic for a given channel.

use std::fmt::Write as _;

use bytes::Bytes;
use fjord_core::wire::{
    ChannelId, DecodeError, MessageKind, UnverifiedChunk, UnverifiedManifest, VerifyError,
    peek_kind,
};

/// Why a message could not be described as authentic.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The bytes are not a well-formed message.
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    /// The message is well-formed but not authentic for the channel.
    #[error("not authentic: {0}")]
    Verify(#[from] VerifyError),
}

/// Decodes `bytes` and returns a multi-line description. With `channel`, also verifies the
/// signature against it and says so; without, verifies against the channel the message names,
/// which proves integrity but not who the channel is.
pub fn describe(bytes: Bytes, channel: Option<&ChannelId>) -> Result<String, InspectError> {
    let mut out = String::new();
    match peek_kind(&bytes)? {
        MessageKind::Manifest => {
            let m = UnverifiedManifest::decode(bytes)?;
            let claimed = claimed_channel(m.channel_bytes())?;
            let m = m.verify(channel.unwrap_or(&claimed))?;
            let c = m.content();
            let _ = writeln!(out, "manifest of channel {}", m.channel());
            let _ = writeln!(out, "  name: {:?}", c.name);
            let _ = writeln!(out, "  epoch: {}", c.epoch);
            let _ = writeln!(
                out,
                "  issued at: {} µs since the Unix epoch",
                c.issued_at_us
            );
            let _ = writeln!(
                out,
                "  chunk {} ms, group {} ms, target latency {} ms",
                c.chunk_duration_us / 1000,
                c.group_duration_us / 1000,
                c.target_latency_us / 1000
            );
            for t in &c.tracks {
                let _ = writeln!(
                    out,
                    "  track {}: {:?} {} timescale {} at {} kbit/s, init segment {} bytes",
                    t.id,
                    t.kind,
                    t.codec,
                    t.timescale,
                    t.bitrate / 1000,
                    t.init_segment.len()
                );
            }
        }
        MessageKind::Chunk => {
            let u = UnverifiedChunk::decode(bytes)?;
            let claimed = claimed_channel(u.channel_bytes())?;
            let chunk = u.verify(channel.unwrap_or(&claimed))?;
            let m = chunk.meta();
            let _ = writeln!(out, "chunk of channel {}", chunk.channel());
            let _ = writeln!(
                out,
                "  epoch {} track {} sequence {}",
                m.epoch, m.track, m.sequence
            );
            let _ = writeln!(out, "  flags: {:#04b}", m.flags.bits());
            let _ = writeln!(
                out,
                "  time stamp {} duration {} (track timescale)",
                m.timestamp, m.duration
            );
            let _ = writeln!(
                out,
                "  published at: {} µs since the Unix epoch",
                m.published_at_us
            );
            let _ = writeln!(out, "  payload: {} bytes", chunk.payload().len());
        }
    }
    let _ = writeln!(
        out,
        "  signature: valid{}",
        if channel.is_some() {
            " for the expected channel"
        } else {
            " for the channel it names (pass --channel to check who that is)"
        }
    );
    Ok(out)
}

fn claimed_channel(bytes: &[u8; 32]) -> Result<ChannelId, VerifyError> {
    // A channel field that is not even a key cannot carry a valid signature.
    ChannelId::from_bytes(bytes).map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta};

    fn chunk_bytes(key: &ChannelKey) -> Bytes {
        let meta = ChunkMeta {
            epoch: 1,
            track: 0,
            sequence: 7,
            flags: ChunkFlags::GROUP_START,
            timestamp: 0,
            duration: 3000,
            published_at_us: 5,
        };
        key.sign_chunk(&meta, b"payload").unwrap().encoded().clone()
    }

    #[test]
    fn describes_a_valid_chunk_and_checks_the_channel() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let text = describe(chunk_bytes(&key), Some(&key.channel_id())).unwrap();
        assert!(text.contains("sequence 7"), "{text}");
        assert!(text.contains("valid for the expected channel"), "{text}");

        let other = ChannelKey::from_seed(&[4; 32]).channel_id();
        assert!(matches!(
            describe(chunk_bytes(&key), Some(&other)),
            Err(InspectError::Verify(VerifyError::WrongChannel { .. }))
        ));
    }

    #[test]
    fn reports_tampering() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let mut b = chunk_bytes(&key).to_vec();
        let last = b.len() - 70;
        b[last] ^= 1;
        assert!(matches!(
            describe(Bytes::from(b), None),
            Err(InspectError::Verify(VerifyError::BadSignature))
        ));
    }
}
