//! Helpers of the node's integration tests: an origin in the test process that publishes a
//! synthetic signed stream, real `fjord-node` viewer processes on loopback, and their status.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_node::core::wire::ChannelKey;
use fjord_node::synthetic::{SyntheticConfig, SyntheticOrigin};
use fjord_node::{NodeConfig, NodeHandle, Status};

pub const CHUNK_US: u64 = 200_000;
pub const VIDEO_BPS: u32 = 1_500_000;
pub const AUDIO_BPS: u32 = 128_000;
pub const TARGET_LATENCY_US: u32 = 3_000_000;

pub fn loopback() -> libp2p::Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

/// An origin node in this process, publishing a synthetic stream (video and audio at the
/// nominal rates, 5 chunks a group) in real time.
pub struct Origin {
    inner: SyntheticOrigin,
    pub node: NodeHandle,
    pub key: ChannelKey,
    pub epoch: u64,
}

impl Origin {
    pub async fn start(seed: u8) -> Self {
        let key = ChannelKey::from_seed(&[seed; 32]);
        let stream = SyntheticConfig {
            video_bps: VIDEO_BPS,
            audio_bps: AUDIO_BPS,
            chunk: Duration::from_micros(CHUNK_US),
            chunks_per_group: 5,
            target_latency: Duration::from_micros(u64::from(TARGET_LATENCY_US)),
        };
        let mut config = NodeConfig::viewer(key.channel_id(), 4 * stream.stream_bps());
        config.listen = vec![loopback()];
        config.mesh.mdns = false;
        config.mesh.relay_server = true;
        let inner = SyntheticOrigin::start(ChannelKey::from_seed(&[seed; 32]), config, stream)
            .await
            .unwrap();
        Self {
            node: inner.node.clone(),
            epoch: inner.epoch,
            inner,
            key,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.node.listen_addrs()[0].to_string()
    }

    pub fn channel(&self) -> String {
        self.key.channel_id().to_string()
    }

    pub fn last_sequence(&self) -> Option<u64> {
        self.inner.last_sequence()
    }

    /// Stops publishing (the node stays up).
    pub fn stop_publishing(&self) {
        self.inner.stop_publishing();
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
        Self::start_as("watch", channel, bootstrap, extra)
    }

    /// `fjord-node <command>`: `watch` or `seed`.
    pub fn start_as(command: &str, channel: &str, bootstrap: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord-node"))
            .args([command, channel, "--bootstrap", bootstrap])
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

pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// Dials `addr` with a test's own swarm, drives the swarm on a task of its own, and returns
/// once the connection stands, with a receiver that fires when the last connection closes.
///
/// Streams must be opened only after this: libp2p-stream 0.5.0-alpha dials again for a
/// stream asked for before its behaviour has seen the connection, and when that dial's
/// condition fails (we are connected by then) the stream waits forever.
pub async fn connect(
    mut swarm: libp2p::Swarm<fjord_node::mesh::Behaviour>,
    addr: libp2p::Multiaddr,
) -> tokio::sync::mpsc::Receiver<()> {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    swarm.dial(addr).unwrap();
    let (closed_tx, closed_rx) = tokio::sync::mpsc::channel(1);
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => {
                    // Never block the task that drives the swarm on a reader that is not there.
                    let _ = closed_tx.try_send(());
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), connected_rx)
        .await
        .expect("connected within 10 s")
        .unwrap();
    closed_rx
}
