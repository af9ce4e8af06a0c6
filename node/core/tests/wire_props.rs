//! Property tests of the signed wire format: round trips, tamper evidence, robustness against
//! arbitrary bytes.

use bytes::Bytes;
use fjord_core::wire::{
    ChannelKey, ChunkFlags, ChunkMeta, ManifestContent, Track, TrackKind, UnverifiedChunk,
    UnverifiedManifest, limits,
};
use proptest::prelude::*;

fn key() -> ChannelKey {
    ChannelKey::from_seed(&[0x5a; 32])
}

fn arb_meta() -> impl Strategy<Value = ChunkMeta> {
    (
        any::<u64>(),
        any::<u8>(),
        any::<u64>(),
        0u8..4,
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(epoch, track, sequence, flags, timestamp, duration, published_at_us)| ChunkMeta {
                epoch,
                track,
                sequence,
                flags: ChunkFlags::from_bits(flags).unwrap(),
                timestamp,
                duration,
                published_at_us,
            },
        )
}

fn arb_track(id: u8) -> impl Strategy<Value = Track> {
    (
        prop_oneof![Just(TrackKind::Video), Just(TrackKind::Audio)],
        "[!-~]{1,64}",
        1u32..,
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 1..512),
    )
        .prop_map(move |(kind, codec, timescale, bitrate, init)| Track {
            id,
            kind,
            codec,
            timescale,
            bitrate,
            init_segment: Bytes::from(init),
        })
}

fn arb_manifest() -> impl Strategy<Value = ManifestContent> {
    (
        any::<u64>(),
        ".{0,40}".prop_filter("name within limit", |s: &String| {
            s.len() <= limits::MAX_NAME_LEN
        }),
        any::<u64>(),
        1u32..5_000_000,
        1u32..=4,
        1u32..,
        prop::collection::btree_set(any::<u8>(), 1..=limits::MAX_TRACKS),
    )
        .prop_flat_map(|(epoch, name, issued, chunk, groups, latency, ids)| {
            let tracks: Vec<_> = ids.into_iter().map(arb_track).collect();
            tracks.prop_map(move |tracks| ManifestContent {
                epoch,
                name: name.clone(),
                issued_at_us: issued,
                chunk_duration_us: chunk,
                group_duration_us: chunk.saturating_mul(groups),
                target_latency_us: latency,
                tracks,
            })
        })
}

/// True when the bytes fail to decode or, decoded, fail to verify for the key's channel.
fn chunk_rejected(bytes: Vec<u8>) -> bool {
    match UnverifiedChunk::decode(Bytes::from(bytes)) {
        Err(_) => true,
        Ok(u) => u.verify(&key().channel_id()).is_err(),
    }
}

fn manifest_rejected(bytes: Vec<u8>) -> bool {
    match UnverifiedManifest::decode(Bytes::from(bytes)) {
        Err(_) => true,
        Ok(u) => u.verify(&key().channel_id()).is_err(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chunk_round_trips(meta in arb_meta(), payload in prop::collection::vec(any::<u8>(), 0..4096)) {
        let chunk = key().sign_chunk(&meta, &payload).unwrap();
        let decoded = UnverifiedChunk::decode(chunk.encoded().clone()).unwrap();
        prop_assert_eq!(decoded.meta(), &meta);
        let verified = decoded.verify(&key().channel_id()).unwrap();
        prop_assert_eq!(verified.meta(), &meta);
        prop_assert_eq!(&verified.payload()[..], &payload[..]);
        prop_assert_eq!(verified, chunk);
    }

    #[test]
    fn manifest_round_trips(content in arb_manifest()) {
        let manifest = key().sign_manifest(&content).unwrap();
        let decoded = UnverifiedManifest::decode(manifest.encoded().clone()).unwrap();
        prop_assert_eq!(decoded.content(), &content);
        let verified = decoded.verify(&key().channel_id()).unwrap();
        prop_assert_eq!(verified, manifest);
    }

    /// Any single byte changed anywhere in a chunk, to any other value, is caught.
    #[test]
    fn any_changed_chunk_byte_is_caught(
        meta in arb_meta(),
        payload in prop::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = key().sign_chunk(&meta, &payload).unwrap().encoded().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(chunk_rejected(bytes), "byte {} ^ {:#x} went through", i, mask);
    }

    #[test]
    fn any_changed_manifest_byte_is_caught(
        content in arb_manifest(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = key().sign_manifest(&content).unwrap().encoded().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(manifest_rejected(bytes), "byte {} ^ {:#x} went through", i, mask);
    }

    /// Arbitrary bytes never panic the decoders, whatever they claim.
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..1024), kind in 0u8..4) {
        // Give most inputs a valid preamble so the fuzzing reaches past the magic.
        if bytes.len() >= 4 && kind > 0 {
            bytes[..4].copy_from_slice(&[b'F', b'J', 1, kind]);
        }
        let _ = UnverifiedChunk::decode(Bytes::from(bytes.clone()));
        let _ = UnverifiedManifest::decode(Bytes::from(bytes));
    }
}

/// Exhaustive over positions: every byte of a chunk, flipped bit by bit, is caught.
#[test]
fn every_chunk_byte_and_bit_is_covered() {
    let meta = ChunkMeta {
        epoch: 9,
        track: 1,
        sequence: 1234,
        flags: ChunkFlags::GROUP_START,
        timestamp: 48_000,
        duration: 12_000,
        published_at_us: 1_800_000_000_000_000,
    };
    let bytes = key()
        .sign_chunk(&meta, b"moof....mdat....")
        .unwrap()
        .encoded()
        .to_vec();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(chunk_rejected(b), "byte {i} bit {bit} went through");
        }
    }
}

#[test]
fn every_manifest_byte_and_bit_is_covered() {
    let content = ManifestContent {
        epoch: 2,
        name: "Fjord één".into(),
        issued_at_us: 1_800_000_000_000_000,
        chunk_duration_us: 250_000,
        group_duration_us: 1_000_000,
        target_latency_us: 1_000_000,
        tracks: vec![
            Track {
                id: 0,
                kind: TrackKind::Video,
                codec: "avc1.64001f".into(),
                timescale: 90_000,
                bitrate: 2_500_000,
                init_segment: Bytes::from_static(b"ftyp....moov...."),
            },
            Track {
                id: 1,
                kind: TrackKind::Audio,
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                bitrate: 128_000,
                init_segment: Bytes::from_static(b"ftypmoov"),
            },
        ],
    };
    let bytes = key().sign_manifest(&content).unwrap().encoded().to_vec();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(manifest_rejected(b), "byte {i} bit {bit} went through");
        }
    }
}

/// Every strict prefix and every extension of a valid message fails to decode.
#[test]
fn truncation_and_extension_are_caught() {
    let chunk = key()
        .sign_chunk(
            &ChunkMeta {
                epoch: 1,
                track: 0,
                sequence: 0,
                flags: ChunkFlags::empty(),
                timestamp: 0,
                duration: 1,
                published_at_us: 0,
            },
            b"abc",
        )
        .unwrap();
    let bytes = chunk.encoded().to_vec();
    for len in 0..bytes.len() {
        assert!(UnverifiedChunk::decode(Bytes::copy_from_slice(&bytes[..len])).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(UnverifiedChunk::decode(Bytes::from(longer)).is_err());
}

/// A chunk from another channel is refused even though its own signature is valid.
#[test]
fn chunk_of_another_channel_is_refused() {
    let other = ChannelKey::from_seed(&[0x11; 32]);
    let meta = ChunkMeta {
        epoch: 1,
        track: 0,
        sequence: 0,
        flags: ChunkFlags::empty(),
        timestamp: 0,
        duration: 1,
        published_at_us: 0,
    };
    let chunk = other.sign_chunk(&meta, b"x").unwrap();
    let decoded = UnverifiedChunk::decode(chunk.encoded().clone()).unwrap();
    assert!(decoded.verify(&key().channel_id()).is_err());
}
