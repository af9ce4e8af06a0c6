//! What a node measures: Prometheus metrics (the `prometheus-client` crate) and a JSON status
//! for people and test harnesses.
//!
//! Counters that the core keeps ([`fjord_core::Stats`]) are copied here after every step of
//! the driver; byte counters are bumped by the stream tasks themselves. Continuity is counted
//! per track over the range of sequences a node received, from the oldest to the newest: a
//! chunk counts as expected once chunks on both sides of it have arrived, and as on time if it
//! arrived before its deadline.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Delays kept for percentiles in the status.
const RECENT_DELAYS: usize = 4096;
/// Buckets of 10 ms in the status's delay histogram (the last is open): 0 to 5 s.
const DELAY_HIST_BUCKETS: usize = 501;
/// Sequences kept per track that did not arrive on time (the most recent).
const RECENT_MISSING: usize = 256;

/// A node's metrics.
pub struct Metrics {
    registry: Registry,
    /// First copies of chunks received from peers.
    pub chunks_received: Counter,
    /// Chunks sent to peers.
    pub chunks_sent: Counter,
    /// First copies that arrived after their deadline.
    pub chunks_late: Counter,
    /// Copies of chunks already held.
    pub chunks_duplicate: Counter,
    /// Manifests and chunks that failed decoding or verification (the sender is banned).
    pub chunks_rejected: Counter,
    /// Bytes received on Fjord streams.
    pub bytes_down: Counter,
    /// Bytes sent on Fjord streams.
    pub bytes_up: Counter,
    /// Neighbours the core has.
    pub neighbours: Gauge,
    /// Chunks expected (see the module documentation).
    pub chunks_expected: Counter,
    /// Chunks received before their deadline.
    pub chunks_on_time: Counter,
    /// Continuity in parts per million (on time / expected).
    pub continuity_ppm: Gauge,
    /// Delay from publication to arrival, seconds.
    pub chunk_delay: Histogram,
    /// Peers currently kept out.
    pub banned: Gauge,
    /// Browser sessions this node serves as a gateway.
    pub browsers: Gauge,
    /// Origin and seeds: nodes that reported recently.
    pub audience_viewers: Gauge,
    /// Origin and seeds: browsers those nodes serve.
    pub audience_browsers: Gauge,
    /// Origin: share of viewers' bytes that peers served, parts per million.
    pub audience_peer_share_ppm: Gauge,
    /// Origin and seeds: median of the viewers' median chunk delays, ms.
    pub audience_delay_ms: Gauge,
    state: Mutex<State>,
    core_seen: Mutex<fjord_core::Stats>,
    started_us: AtomicU64,
    first_chunk_us: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Recent deliveries: (publication time µs, delay ms).
    delays_ms: VecDeque<(u64, f64)>,
    /// Per (epoch, track): first and highest sequence received, and the recent sequences in
    /// between that did not arrive on time.
    tracks: Vec<TrackState>,
}

struct TrackState {
    key: (u64, u8),
    first: u64,
    highest: u64,
    missing: std::collections::BTreeSet<u64>,
}

impl TrackState {
    fn trim(&mut self) {
        while self.missing.len() > RECENT_MISSING {
            self.missing.pop_first();
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `fjord_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fjord");
        let m = |name: &str, help: &str, registry: &mut Registry| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let chunks_received = m(
            "chunks_received",
            "First copies of chunks received from peers",
            &mut registry,
        );
        let chunks_sent = m("chunks_sent", "Chunks sent to peers", &mut registry);
        let chunks_late = m(
            "chunks_late",
            "First copies that arrived after their deadline",
            &mut registry,
        );
        let chunks_duplicate = m(
            "chunks_duplicate",
            "Copies of chunks already held",
            &mut registry,
        );
        let chunks_rejected = m(
            "chunks_rejected",
            "Frames (manifests, chunks, control) that failed decoding or verification; the sender is banned",
            &mut registry,
        );
        let bytes_down = m(
            "bytes_down",
            "Bytes received on Fjord streams",
            &mut registry,
        );
        let bytes_up = m("bytes_up", "Bytes sent on Fjord streams", &mut registry);
        let chunks_expected = m(
            "chunks_expected",
            "Chunks this node should have had since it joined",
            &mut registry,
        );
        let chunks_on_time = m(
            "chunks_on_time",
            "Chunks received before their deadline",
            &mut registry,
        );
        let neighbours = Gauge::default();
        registry.register("neighbours", "Neighbours in the mesh", neighbours.clone());
        let continuity_ppm = Gauge::default();
        registry.register(
            "continuity_ppm",
            "Share of expected chunks received on time, parts per million",
            continuity_ppm.clone(),
        );
        let banned = Gauge::default();
        registry.register("banned_peers", "Peers kept out", banned.clone());
        let gauge = |name: &str, help: &str, registry: &mut Registry| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let browsers = gauge(
            "gateway_sessions",
            "Browser sessions this node serves",
            &mut registry,
        );
        let audience_viewers = gauge(
            "audience_viewers",
            "Nodes that reported in the last 35 s (origin and seeds)",
            &mut registry,
        );
        let audience_browsers = gauge(
            "audience_browsers",
            "Browser sessions the reporting nodes serve",
            &mut registry,
        );
        let audience_peer_share_ppm = gauge(
            "audience_peer_share_ppm",
            "Share of the viewers' bytes served by peers rather than the origin, ppm",
            &mut registry,
        );
        let audience_delay_ms = gauge(
            "audience_delay_ms",
            "Median of the reporting nodes' median chunk delay, ms",
            &mut registry,
        );
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
            2.0, 3.0, 5.0,
        ];
        let chunk_delay = Histogram::new(buckets);
        registry.register(
            "chunk_delay_seconds",
            "Delay from publication at the origin to arrival here",
            chunk_delay.clone(),
        );
        Self {
            registry,
            chunks_received,
            chunks_sent,
            chunks_late,
            chunks_duplicate,
            chunks_rejected,
            bytes_down,
            bytes_up,
            neighbours,
            chunks_expected,
            chunks_on_time,
            continuity_ppm,
            chunk_delay,
            banned,
            browsers,
            audience_viewers,
            audience_browsers,
            audience_peer_share_ppm,
            audience_delay_ms,
            state: Mutex::new(State::default()),
            core_seen: Mutex::new(fjord_core::Stats::default()),
            started_us: AtomicU64::new(0),
            first_chunk_us: AtomicU64::new(0),
        }
    }

    /// Remembers when the node started (µs since the Unix epoch), for the status.
    pub fn set_started(&self, us: u64) {
        self.started_us.store(us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Copies what the core counted since the last call.
    pub fn sync_core(&self, stats: &fjord_core::Stats) {
        let mut seen = self.core_seen.lock().unwrap_or_else(|e| e.into_inner());
        let delta = |new: u64, old: u64| new.saturating_sub(old);
        self.chunks_sent
            .inc_by(delta(stats.chunks_sent, seen.chunks_sent));
        self.chunks_duplicate
            .inc_by(delta(stats.duplicates, seen.duplicates));
        *seen = stats.clone();
    }

    /// A chunk newly complete here: `delay_us` after publication, `on_time` if before its
    /// deadline. `local` chunks (published by this node) count for continuity only.
    pub fn delivered(
        &self,
        epoch: u64,
        track: u8,
        sequence: u64,
        published_us: u64,
        delay_us: u64,
        on_time: bool,
    ) {
        self.chunks_received.inc();
        if !on_time {
            self.chunks_late.inc();
        }
        let _ = self.first_chunk_us.compare_exchange(
            0,
            published_us.saturating_add(delay_us),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let delay_s = delay_us as f64 / 1e6;
        self.chunk_delay.observe(delay_s);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.delays_ms.len() == RECENT_DELAYS {
            st.delays_ms.pop_front();
        }
        st.delays_ms
            .push_back((published_us, delay_us as f64 / 1000.0));
        let key = (epoch, track);
        match st.tracks.iter_mut().find(|t| t.key == key) {
            Some(t) => {
                if sequence > t.highest {
                    self.chunks_expected.inc_by(sequence - t.highest);
                    // Bounded: only the most recent gaps are remembered.
                    let from = (t.highest + 1).max(sequence.saturating_sub(RECENT_MISSING as u64));
                    t.missing.extend(from..sequence);
                    t.highest = sequence;
                } else if sequence < t.first {
                    // An older chunk a neighbour still had: the range grows backwards.
                    self.chunks_expected.inc_by(t.first - sequence);
                    let to = t.first.min(sequence + RECENT_MISSING as u64);
                    t.missing.extend(sequence + 1..to);
                    t.first = sequence;
                } else if on_time {
                    t.missing.remove(&sequence);
                }
                if !on_time {
                    t.missing.insert(sequence);
                }
                t.trim();
            }
            None => {
                // Bounded: a track list per epoch; old epochs are dropped.
                st.tracks.retain(|t| t.key.0 >= epoch);
                if st.tracks.len() < 64 {
                    let mut missing = std::collections::BTreeSet::new();
                    if !on_time {
                        missing.insert(sequence);
                    }
                    st.tracks.push(TrackState {
                        key,
                        first: sequence,
                        highest: sequence,
                        missing,
                    });
                }
                self.chunks_expected.inc();
            }
        }
        if on_time {
            self.chunks_on_time.inc();
        }
        let expected = self.chunks_expected.get().max(1);
        let ppm = self.chunks_on_time.get().min(expected) * 1_000_000 / expected;
        self.continuity_ppm.set(ppm as i64);
    }

    /// A snapshot for the JSON status. Delay percentiles cover the recent deliveries of chunks
    /// published at or after `since_us` (all recent ones with 0): a measurement can leave out
    /// what a node fetched from before it joined.
    pub fn status(&self, since_us: u64) -> StatusCounters {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut d: Vec<f64> = st
            .delays_ms
            .iter()
            .filter(|(p, _)| *p >= since_us)
            .map(|(_, d)| *d)
            .collect();
        // Pooled over nodes, a histogram gives percentiles of the whole mesh (the emulator).
        let mut delay_hist_10ms = vec![0u32; DELAY_HIST_BUCKETS];
        for d in &d {
            let i = ((d / 10.0) as usize).min(DELAY_HIST_BUCKETS - 1);
            delay_hist_10ms[i] += 1;
        }
        d.sort_by(f64::total_cmp);
        let q = |q: f64| (!d.is_empty()).then(|| d[((d.len() - 1) as f64 * q).round() as usize]);
        let expected = self.chunks_expected.get();
        StatusCounters {
            started_us: self.started_us.load(Ordering::Relaxed),
            first_chunk_us: Some(self.first_chunk_us.load(Ordering::Relaxed)).filter(|t| *t > 0),
            delay_hist_10ms,
            chunks_received: self.chunks_received.get(),
            chunks_sent: self.chunks_sent.get(),
            chunks_late: self.chunks_late.get(),
            chunks_duplicate: self.chunks_duplicate.get(),
            chunks_rejected: self.chunks_rejected.get(),
            chunks_expected: expected,
            chunks_on_time: self.chunks_on_time.get(),
            continuity: if expected == 0 {
                None
            } else {
                Some(self.chunks_on_time.get().min(expected) as f64 / expected as f64)
            },
            bytes_up: self.bytes_up.get(),
            bytes_down: self.bytes_down.get(),
            neighbours: self.neighbours.get().max(0) as u64,
            banned: self.banned.get().max(0) as u64,
            delay_ms_p50: q(0.5),
            delay_ms_p95: q(0.95),
            delay_ms_p99: q(0.99),
            delay_ms_max: q(1.0),
            tracks: st
                .tracks
                .iter()
                .map(|t| TrackProgress {
                    epoch: t.key.0,
                    track: t.key.1,
                    first: t.first,
                    highest: t.highest,
                    missing: t.missing.iter().copied().collect(),
                })
                .collect(),
        }
    }
}

/// Where a node stands on one track.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TrackProgress {
    /// The epoch.
    pub epoch: u64,
    /// The track id.
    pub track: u8,
    /// First sequence received.
    pub first: u64,
    /// Highest sequence received.
    pub highest: u64,
    /// The most recent sequences between `first` and `highest` not received on time (late,
    /// or not yet arrived).
    pub missing: Vec<u64>,
}

impl TrackProgress {
    /// How many of the sequences `from..=to` this node did not get on time, as far as its
    /// record tells: those outside the range it received, and those it lists as missing (the
    /// list keeps the most recent 256).
    pub fn missed(&self, from: u64, to: u64) -> u64 {
        if to < from {
            return 0;
        }
        let before = self.first.saturating_sub(from).min(to - from + 1);
        let after = to.saturating_sub(self.highest.max(from.saturating_sub(1)));
        let inside = self
            .missing
            .iter()
            .filter(|s| (from..=to).contains(*s))
            .count() as u64;
        before + after + inside
    }
}

/// Counters and delay percentiles, as served in the JSON status.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StatusCounters {
    /// When the node started, µs since the Unix epoch.
    pub started_us: u64,
    /// When its first chunk arrived, µs since the Unix epoch.
    pub first_chunk_us: Option<u64>,
    /// The delays of the recent deliveries (the same as the percentiles) in 10 ms buckets,
    /// the last one open: to pool the delays of many nodes.
    pub delay_hist_10ms: Vec<u32>,
    /// First copies of chunks received.
    pub chunks_received: u64,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// First copies received late.
    pub chunks_late: u64,
    /// Duplicate copies received.
    pub chunks_duplicate: u64,
    /// Invalid manifests and chunks received.
    pub chunks_rejected: u64,
    /// Chunks expected since joining.
    pub chunks_expected: u64,
    /// Chunks received on time.
    pub chunks_on_time: u64,
    /// On time / expected, once anything is expected.
    pub continuity: Option<f64>,
    /// Bytes sent on Fjord streams.
    pub bytes_up: u64,
    /// Bytes received on Fjord streams.
    pub bytes_down: u64,
    /// Current neighbours.
    pub neighbours: u64,
    /// Peers kept out.
    pub banned: u64,
    /// Delay from publication, recent chunks, ms.
    pub delay_ms_p50: Option<f64>,
    /// 95th percentile.
    pub delay_ms_p95: Option<f64>,
    /// 99th percentile.
    pub delay_ms_p99: Option<f64>,
    /// Largest.
    pub delay_ms_max: Option<f64>,
    /// Progress per track.
    pub tracks: Vec<TrackProgress>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_counts_gaps_as_expected_and_renders() {
        let m = Metrics::new();
        m.delivered(1, 0, 10, 0, 100_000, true);
        m.delivered(1, 0, 11, 0, 100_000, true);
        m.delivered(1, 0, 13, 0, 100_000, true); // 12 missing so far
        let s = m.status(0);
        assert_eq!((s.chunks_expected, s.chunks_on_time), (4, 3));
        m.delivered(1, 0, 12, 5, 4_000_000, false); // arrives late
        let s = m.status(0);
        assert_eq!(
            (s.chunks_expected, s.chunks_on_time, s.chunks_late),
            (4, 3, 1)
        );
        assert_eq!(s.continuity, Some(0.75));
        assert_eq!(s.delay_ms_p50, Some(100.0));
        assert_eq!(s.tracks[0].first, 10);
        assert_eq!(s.tracks[0].missing, vec![12]);
        assert_eq!(s.delay_ms_max, Some(4000.0));
        assert_eq!(
            m.status(5).delay_ms_p50,
            Some(4000.0),
            "only chunks published since 5"
        );
        let text = m.render();
        assert!(text.contains("fjord_chunks_on_time_total 3"), "{text}");
        assert!(text.contains("fjord_chunk_delay_seconds_bucket"), "{text}");
    }
}

#[cfg(test)]
mod dashboard {
    /// Every metric the Grafana dashboard in the repo queries exists.
    #[test]
    fn the_grafana_dashboard_queries_real_metrics() {
        let dashboard = include_str!("../../deploy/grafana/fjord-dashboard.json");
        let text = super::Metrics::new().render();
        let mut checked = 0;
        for (i, _) in dashboard.match_indices("fjord_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.lines().any(|l| l.starts_with(&name)),
                "the dashboard queries {name}, which the node does not export"
            );
            checked += 1;
        }
        assert!(checked >= 10, "the dashboard names its metrics");
    }
}
