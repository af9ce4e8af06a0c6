//! Helpers of the node's integration tests: an origin in the test process that publishes a
//! synthetic signed stream, real `fjord-node` viewer processes on loopback, and their status.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_node::core::proto::Role;
use fjord_node::core::wire::{
    ChannelKey, ChunkFlags, ChunkMeta, ManifestContent, Track, TrackKind,
};
use fjord_node::{NodeConfig, NodeHandle, Status};

pub const CHUNK_US: u64 = 200_000;
pub const VIDEO_BPS: u32 = 1_500_000;
pub const AUDIO_BPS: u32 = 128_000;
pub const TARGET_LATENCY_US: u32 = 3_000_000;

pub fn loopback() -> libp2p::Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

/// An origin node in this process, publishing a stream of random payloads at the nominal
/// rates, 5 chunks a group, in real time.
pub struct Origin {
    pub node: NodeHandle,
    pub key: ChannelKey,
    pub epoch: u64,
    /// The last sequence published (per track, both alike), or u64::MAX before the first.
    pub last: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(seed: u8) -> Self {
        let key = ChannelKey::from_seed(&[seed; 32]);
        let stream = u64::from(VIDEO_BPS + AUDIO_BPS);
        let mut config = NodeConfig::viewer(key.channel_id(), 4 * stream);
        config.role = Role::Origin;
        config.listen = vec![loopback()];
        config.mesh.mdns = false;
        config.mesh.relay_server = true;
        let node = fjord_node::start(config).await.unwrap();
        let epoch = fjord_node::driver::now().as_micros();
        let content = ManifestContent {
            epoch,
            name: "test".into(),
            issued_at_us: epoch,
            chunk_duration_us: CHUNK_US as u32,
            group_duration_us: 5 * CHUNK_US as u32,
            target_latency_us: TARGET_LATENCY_US,
            tracks: vec![
                Track {
                    id: 0,
                    kind: TrackKind::Video,
                    codec: "avc1.42c01e".into(),
                    timescale: 90_000,
                    bitrate: VIDEO_BPS,
                    init_segment: Bytes::from_static(b"init-v"),
                },
                Track {
                    id: 1,
                    kind: TrackKind::Audio,
                    codec: "mp4a.40.2".into(),
                    timescale: 48_000,
                    bitrate: AUDIO_BPS,
                    init_segment: Bytes::from_static(b"init-a"),
                },
            ],
        };
        node.publish_manifest(key.sign_manifest(&content).unwrap())
            .await
            .unwrap();
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let task = {
            let node = node.clone();
            let key = ChannelKey::from_seed(&[seed; 32]);
            let last = last.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_micros(CHUNK_US));
                let mut seq = 0u64;
                let mut noise = 0x9e37_79b9_7f4a_7c15u64;
                loop {
                    tick.tick().await;
                    let now = fjord_node::driver::now().as_micros();
                    for (track, bps) in [(0u8, VIDEO_BPS), (1, AUDIO_BPS)] {
                        let len = (u64::from(bps) * CHUNK_US / 8_000_000) as usize;
                        let payload: Vec<u8> = (0..len)
                            .map(|_| {
                                noise ^= noise << 13;
                                noise ^= noise >> 7;
                                noise ^= noise << 17;
                                noise as u8
                            })
                            .collect();
                        let flags = if seq.is_multiple_of(5) {
                            ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT
                        } else {
                            ChunkFlags::INDEPENDENT
                        };
                        let meta = ChunkMeta {
                            epoch,
                            track,
                            sequence: seq,
                            flags,
                            timestamp: seq * 18_000,
                            duration: 18_000,
                            published_at_us: now,
                        };
                        let chunk = key.sign_chunk(&meta, &payload).unwrap();
                        if node.publish_chunk(chunk).await.is_err() {
                            return;
                        }
                    }
                    last.store(seq, Ordering::SeqCst);
                    seq += 1;
                }
            })
        };
        Self {
            node,
            key,
            epoch,
            last,
            task,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.node.listen_addrs()[0].to_string()
    }

    pub fn channel(&self) -> String {
        self.key.channel_id().to_string()
    }

    pub fn last_sequence(&self) -> Option<u64> {
        let v = self.last.load(Ordering::SeqCst);
        (v != u64::MAX).then_some(v)
    }

    /// Stops publishing (the node stays up).
    pub fn stop_publishing(&self) {
        self.task.abort();
    }
}

/// A `fjord-node watch` process.
pub struct Viewer {
    pub child: Child,
    pub http: String,
    pub peer_id: String,
    pub listen: String,
}

impl Viewer {
    pub fn start(channel: &str, bootstrap: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord-node"))
            .args(["watch", channel, "--bootstrap", bootstrap])
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns"])
            .args(["--http", "127.0.0.1:0", "--status-interval", "0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the fjord-node binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut http = None;
        let mut peer_id = None;
        let mut listen = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("listening: ") {
                listen.get_or_insert(a.to_owned());
            }
            if let Some(p) = line.strip_prefix("peer id: ") {
                peer_id = Some(p.to_owned());
            }
            if let Some(url) = line.strip_prefix("status: ") {
                http = Some(url.trim_end_matches("/status").to_owned());
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            http: http.expect("the node prints its status URL"),
            peer_id: peer_id.expect("the node prints its peer id"),
            listen: listen.expect("the node prints its address"),
        }
    }

    pub fn status(&self) -> Option<Status> {
        self.status_since(0)
    }

    /// With delay percentiles over the chunks published since `us`.
    pub fn status_since(&self, us: u64) -> Option<Status> {
        let body = http_get(&format!("{}/status?since={us}", self.http))?;
        serde_json::from_str(&body).ok()
    }

    /// SIGKILL: no goodbye, the peers notice by themselves.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET on loopback; the body, if the status is 200.
pub fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Waits until `check` holds, polling, or panics after `timeout` with `what`.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On-time chunks and the chunks a node should have had in a window of the stream: between
/// two status snapshots, against the origin's sequences.
pub fn window_continuity(
    before: &Status,
    after: &Status,
    from_seq: u64,
    to_seq: u64,
) -> (u64, u64) {
    let on_time = after.counters.chunks_on_time - before.counters.chunks_on_time;
    // Two tracks, every sequence of the window on each.
    let expected = 2 * (to_seq - from_seq + 1);
    (on_time, expected)
}

pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}
