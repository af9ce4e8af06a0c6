//! Golden vectors of the wire format, shared with the browser player's decoder.
//!
//! The file `player-web/src/wire-vectors.json` is generated here and checked by both sides: this
//! test fails when the encoding changes without the file being regenerated (run with
//! `FJORD_BLESS=1`), and the player's tests decode and verify every vector. Ed25519 signatures
//! are deterministic, so the file is stable.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use fjord_core::wire::{
    ChannelKey, ChunkFlags, ChunkMeta, ManifestContent, Track, TrackKind, UnverifiedChunk,
    UnverifiedManifest,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Vector {
    name: &'static str,
    kind: &'static str,
    bytes: Vec<u8>,
    /// "ok", "decode" (must fail to decode) or "verify" (decodes, must fail to verify).
    expect: &'static str,
    /// Extra JSON members describing the decoded fields, for "ok" vectors.
    fields: String,
}

fn vectors() -> (String, Vec<Vector>) {
    let key = ChannelKey::from_seed(&[0x42; 32]);
    let other = ChannelKey::from_seed(&[0x24; 32]);
    let meta = ChunkMeta {
        epoch: 1_800_000_000_000,
        track: 1,
        sequence: 9_007_199_254_740_993, // above 2^53: the player must keep u64 exact
        flags: ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT,
        timestamp: 123_456_789_012,
        duration: 22_500,
        published_at_us: 1_800_000_000_123_456,
    };
    let chunk = key.sign_chunk(&meta, b"moof-and-mdat-payload").unwrap();
    let content = ManifestContent {
        epoch: 1_800_000_000_000,
        name: "Fjord één".into(),
        issued_at_us: 1_800_000_000_000_001,
        chunk_duration_us: 250_000,
        group_duration_us: 1_000_000,
        target_latency_us: 1_200_000,
        tracks: vec![
            Track {
                id: 1,
                kind: TrackKind::Video,
                codec: "avc1.64001f".into(),
                timescale: 90_000,
                bitrate: 2_500_000,
                init_segment: Bytes::from_static(b"video-init"),
            },
            Track {
                id: 2,
                kind: TrackKind::Audio,
                codec: "mp4a.40.2".into(),
                timescale: 48_000,
                bitrate: 128_000,
                init_segment: Bytes::from_static(b"audio-init"),
            },
        ],
    };
    let manifest = key.sign_manifest(&content).unwrap();

    let chunk_fields = format!(
        r#""epoch": "{}", "track": {}, "sequence": "{}", "flags": {}, "timestamp": "{}", "duration": {}, "publishedAtUs": "{}", "payloadHex": "{}""#,
        meta.epoch,
        meta.track,
        meta.sequence,
        meta.flags.bits(),
        meta.timestamp,
        meta.duration,
        meta.published_at_us,
        hex(b"moof-and-mdat-payload")
    );
    let mut tracks = String::new();
    for (i, t) in content.tracks.iter().enumerate() {
        let _ = write!(
            tracks,
            r#"{}{{"id": {}, "kind": "{}", "codec": "{}", "timescale": {}, "bitrate": {}, "initHex": "{}"}}"#,
            if i > 0 { ", " } else { "" },
            t.id,
            match t.kind {
                TrackKind::Video => "video",
                TrackKind::Audio => "audio",
            },
            t.codec,
            t.timescale,
            t.bitrate,
            hex(&t.init_segment)
        );
    }
    let manifest_fields = format!(
        r#""epoch": "{}", "name": "{}", "issuedAtUs": "{}", "chunkDurationUs": {}, "groupDurationUs": {}, "targetLatencyUs": {}, "tracks": [{}]"#,
        content.epoch,
        content.name,
        content.issued_at_us,
        content.chunk_duration_us,
        content.group_duration_us,
        content.target_latency_us,
        tracks
    );

    let good = chunk.encoded().to_vec();
    let mut tampered = good.clone();
    tampered[80] ^= 0x01;
    let mut bad_sig = good.clone();
    *bad_sig.last_mut().unwrap() ^= 0x80;
    let mut bad_flags = good.clone();
    bad_flags[53] = 0x04;
    let mut bad_version = good.clone();
    bad_version[2] = 2;
    let mut trailing = good.clone();
    trailing.push(0);
    let mut tampered_manifest = manifest.encoded().to_vec();
    let at = tampered_manifest.len() - 70;
    tampered_manifest[at] ^= 0x10;
    let foreign = other.sign_chunk(&meta, b"moof-and-mdat-payload").unwrap();

    let v = |name, kind, bytes: Vec<u8>, expect, fields: &str| Vector {
        name,
        kind,
        bytes,
        expect,
        fields: fields.to_owned(),
    };
    let list = vec![
        v("chunk", "chunk", good.clone(), "ok", &chunk_fields),
        v(
            "manifest",
            "manifest",
            manifest.encoded().to_vec(),
            "ok",
            &manifest_fields,
        ),
        v(
            "chunk with a payload byte changed",
            "chunk",
            tampered,
            "verify",
            "",
        ),
        v(
            "chunk with a signature bit changed",
            "chunk",
            bad_sig,
            "verify",
            "",
        ),
        v(
            "chunk of another channel",
            "chunk",
            foreign.encoded().to_vec(),
            "verify",
            "",
        ),
        v(
            "manifest with an init byte changed",
            "manifest",
            tampered_manifest,
            "verify",
            "",
        ),
        v("chunk with unknown flags", "chunk", bad_flags, "decode", ""),
        v("chunk of version 2", "chunk", bad_version, "decode", ""),
        v(
            "chunk with a trailing byte",
            "chunk",
            trailing,
            "decode",
            "",
        ),
        v(
            "truncated chunk",
            "chunk",
            good[..good.len() - 1].to_vec(),
            "decode",
            "",
        ),
        v(
            "manifest bytes offered as a chunk",
            "chunk",
            manifest.encoded().to_vec(),
            "decode",
            "",
        ),
    ];
    (key.channel_id().to_string(), list)
}

fn render(channel: &str, list: &[Vector]) -> String {
    let mut out = format!("{{\n  \"channel\": \"{channel}\",\n  \"vectors\": [\n");
    for (i, v) in list.iter().enumerate() {
        let fields = if v.fields.is_empty() {
            String::new()
        } else {
            format!(", \"fields\": {{{}}}", v.fields)
        };
        let _ = writeln!(
            out,
            "    {{\"name\": \"{}\", \"kind\": \"{}\", \"expect\": \"{}\", \"hex\": \"{}\"{}}}{}",
            v.name,
            v.kind,
            v.expect,
            hex(&v.bytes),
            fields,
            if i + 1 < list.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// The Rust side agrees with every vector's expectation.
#[test]
fn vectors_behave_as_labelled() {
    let (channel, list) = vectors();
    let channel = channel.parse().unwrap();
    for v in &list {
        let bytes = Bytes::from(v.bytes.clone());
        let outcome = match v.kind {
            "chunk" => match UnverifiedChunk::decode(bytes) {
                Err(_) => "decode",
                Ok(u) => u.verify(&channel).map_or("verify", |_| "ok"),
            },
            _ => match UnverifiedManifest::decode(bytes) {
                Err(_) => "decode",
                Ok(u) => u.verify(&channel).map_or("verify", |_| "ok"),
            },
        };
        assert_eq!(outcome, v.expect, "{}", v.name);
    }
}

/// The committed file is what this code produces.
#[test]
fn committed_vectors_are_current() {
    let (channel, list) = vectors();
    let text = render(&channel, &list);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../player-web/src/wire-vectors.json");
    if std::env::var_os("FJORD_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is out of date: run FJORD_BLESS=1 cargo test -p fjord-core --test vectors",
        path.display()
    );
}
