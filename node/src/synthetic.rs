//! A synthetic channel: signed chunks of the sizes a real stream has, published in real time
//! by an origin node. For benchmarks and tests of the mesh, where the media inside does not
//! matter and an encoder would only add noise to the measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fjord_core::proto::Role;
use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta, ManifestContent, Track, TrackKind};

use crate::{NodeConfig, NodeHandle, StartError};

/// The shape of a synthetic stream.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Video bit rate, bit/s.
    pub video_bps: u32,
    /// Audio bit rate, bit/s.
    pub audio_bps: u32,
    /// Chunk duration.
    pub chunk: Duration,
    /// Chunks per group.
    pub chunks_per_group: u64,
    /// Target latency the manifest announces.
    pub target_latency: Duration,
}

impl SyntheticConfig {
    /// A stream of `bps` in all (5% of it audio), 200 ms chunks, 1 s groups, 3 s latency.
    pub fn at(bps: u64) -> Self {
        let audio = (bps / 20).clamp(8_000, 256_000) as u32;
        Self {
            video_bps: (bps as u32).saturating_sub(audio).max(8_000),
            audio_bps: audio,
            chunk: Duration::from_millis(200),
            chunks_per_group: 5,
            target_latency: Duration::from_secs(3),
        }
    }

    /// The total nominal rate.
    pub fn stream_bps(&self) -> u64 {
        u64::from(self.video_bps) + u64::from(self.audio_bps)
    }
}

/// An origin node publishing a synthetic stream until dropped.
#[derive(Debug)]
pub struct SyntheticOrigin {
    /// The origin node.
    pub node: NodeHandle,
    /// The channel's key.
    pub key: ChannelKey,
    /// The epoch of the stream.
    pub epoch: u64,
    last: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SyntheticOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SyntheticOrigin {
    /// Starts an origin with `node` settings (its role is set to origin) publishing `stream`
    /// signed with `key`.
    pub async fn start(
        key: ChannelKey,
        mut node: NodeConfig,
        stream: SyntheticConfig,
    ) -> Result<Self, StartError> {
        node.role = Role::Origin;
        node.channel = key.channel_id();
        let handle = crate::start(node).await?;
        let epoch = crate::driver::now().as_micros();
        let chunk_us = stream.chunk.as_micros() as u64;
        let content = ManifestContent {
            epoch,
            name: "synthetic".into(),
            issued_at_us: epoch,
            chunk_duration_us: chunk_us as u32,
            group_duration_us: (chunk_us * stream.chunks_per_group) as u32,
            target_latency_us: stream.target_latency.as_micros() as u32,
            tracks: vec![
                Track {
                    id: 0,
                    kind: TrackKind::Video,
                    codec: "avc1.42c01e".into(),
                    timescale: 90_000,
                    bitrate: stream.video_bps,
                    init_segment: Bytes::from_static(b"synthetic video"),
                },
                Track {
                    id: 1,
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".into(),
                    timescale: 48_000,
                    bitrate: stream.audio_bps,
                    init_segment: Bytes::from_static(b"synthetic audio"),
                },
            ],
        };
        let manifest = key
            .sign_manifest(&content)
            .expect("a synthetic manifest is within the limits");
        let _ = handle.publish_manifest(manifest).await;
        // Pseudo-random payloads made once: incompressible like media, and the benchmark
        // measures the node, not a generator.
        let mut noise = 0x9e37_79b9_7f4a_7c15u64;
        let payloads: Vec<Vec<u8>> = [stream.video_bps, stream.audio_bps]
            .iter()
            .map(|bps| {
                (0..(u64::from(*bps) * chunk_us / 8_000_000) as usize)
                    .map(|_| {
                        noise ^= noise << 13;
                        noise ^= noise >> 7;
                        noise ^= noise << 17;
                        noise as u8
                    })
                    .collect()
            })
            .collect();
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let signer = ChannelKey::from_key_file(&key.to_key_file())
            .expect("a key file written by this key reads back");
        let task = {
            let node = handle.clone();
            let last = last.clone();
            let per_group = stream.chunks_per_group.max(1);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_micros(chunk_us));
                for seq in 0u64.. {
                    tick.tick().await;
                    let now = crate::driver::now().as_micros();
                    for (track, payload) in payloads.iter().enumerate() {
                        let flags = if seq.is_multiple_of(per_group) {
                            ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT
                        } else {
                            ChunkFlags::INDEPENDENT
                        };
                        let meta = ChunkMeta {
                            epoch,
                            track: track as u8,
                            sequence: seq,
                            flags,
                            timestamp: seq * chunk_us * 9 / 100,
                            duration: (chunk_us * 9 / 100) as u32,
                            published_at_us: now,
                        };
                        let chunk = signer
                            .sign_chunk(&meta, payload)
                            .expect("synthetic chunks are within the limits");
                        if node.publish_chunk(chunk).await.is_err() {
                            return;
                        }
                    }
                    last.store(seq, Ordering::SeqCst);
                }
            })
        };
        Ok(Self {
            node: handle,
            key,
            epoch,
            last,
            task,
        })
    }

    /// The last sequence published (both tracks alike).
    pub fn last_sequence(&self) -> Option<u64> {
        let v = self.last.load(Ordering::SeqCst);
        (v != u64::MAX).then_some(v)
    }

    /// Stops publishing; the node stays up.
    pub fn stop_publishing(&self) {
        self.task.abort();
    }
}
