//! Cost of producing and accepting chunks: encode + sign at the encoder, decode + verify at
//! every hop. Reported as chunks per second on one core.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta, UnverifiedChunk};

/// Payload sizes: a tiny chunk (the fixed cost of Ed25519), 250 ms of audio-only, 250 ms of
/// 720p30 at 2.5 Mbit/s, and 250 ms of 1080p at 8 Mbit/s.
const SIZES: [(&str, usize); 4] = [
    ("64B", 64),
    ("4KiB", 4 * 1024),
    ("78KiB", 78 * 1024),
    ("250KiB", 250 * 1024),
];

fn meta(sequence: u64) -> ChunkMeta {
    ChunkMeta {
        epoch: 1,
        track: 0,
        sequence,
        flags: ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT,
        timestamp: sequence * 22_500,
        duration: 22_500,
        published_at_us: 1_800_000_000_000_000,
    }
}

fn wire(c: &mut Criterion) {
    let key = ChannelKey::from_seed(&[7; 32]);
    let channel = key.channel_id();

    let mut group = c.benchmark_group("encode_sign");
    for (name, size) in SIZES {
        let payload = vec![0xa5u8; size];
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), &payload, |b, p| {
            b.iter(|| key.sign_chunk(black_box(&meta(1)), black_box(p)).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_verify");
    for (name, size) in SIZES {
        let encoded: Bytes = key
            .sign_chunk(&meta(1), &vec![0xa5u8; size])
            .unwrap()
            .encoded()
            .clone();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(name), &encoded, |b, e| {
            b.iter(|| {
                UnverifiedChunk::decode(black_box(e.clone()))
                    .unwrap()
                    .verify(&channel)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
