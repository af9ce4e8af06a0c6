//! The discrete-event engine: many [`Node`]s of `fjord-core` on one virtual clock, joined by
//! the [`Network`] model.
//!
//! Each event hands one input to one node, then carries out that node's outputs: a control
//! message or manifest arrives one one-way delay later; a chunk occupies the sender's uplink
//! (first in, first out, at its upload rate) and its bytes' share of the receiver's downlink
//! (which carries the bytes of all transfers to it in turn, at its rate), arrives first as a
//! header (`ChunkIncoming`) and then whole; loss adds a retransmission round trip. Timers are
//! events too: after every input the node's `poll_timeout` is (re)scheduled, stale timers being
//! skipped by generation. Chunks are signed once, by the real channel key, and shared by all
//! nodes (`Bytes` is reference-counted); the engine never verifies them again, as a real node's
//! driver would, because it made them.
//!
//! Tracks: one video track, and with `stream.audio_kbps` an audio track beside it, one audio
//! chunk published with each video chunk. The engine numbers chunks across tracks by *slot*
//! (`seq * tracks + track index`): events, transfers and the chunk table use that index, while
//! the metrics count per sequence, each sequence standing for one chunk of every track.
//!
//! Determinism: one seeded generator drives the engine, each node has its own seed derived
//! from it, and events at the same instant run in scheduling order.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use fjord_core::proto::Control;
use fjord_core::rng::Rng;
use fjord_core::time::transmission_time;
use fjord_core::wire::{
    ChannelKey, Chunk, ChunkFlags, ChunkMeta, Manifest, ManifestContent, Track, TrackKind,
};
use fjord_core::{Config, Input, Node, Output, PeerId, Policy, Time};

use crate::metrics::{JOIN_ALLOWANCE, Metrics};
use crate::network::{Network, Place};
use crate::queue::Queue;
use crate::scenario::Scenario;

/// Virtual time of the first publication: an arbitrary wall-clock instant (2026-01-01), so
/// publication times look like the real ones.
const EPOCH_US: u64 = 1_767_225_600_000_000;
const ORIGIN: u32 = 0;
/// Debug only: transfers per host kept to split a copy's wait at its sender.
const RECENT_TRANSFERS: usize = 32;
/// Delay before a departed viewer is replaced, when churn keeps the population steady.
const REPLACE_DELAY: Duration = Duration::from_millis(500);

/// Chunk indices (`seq` in events and transfers) are slots: `seq * tracks + track index`.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// Publication of sequence `seq` on every track.
    Publish(u32),
    /// `FJORD_SIM_DEBUG` only: chunk `seq`'s deadline; why each eligible host missed it.
    Audit(u32),
    Join(u32),
    Leave(u32),
    /// The scenario's mass kill.
    Kill,
    Timer {
        host: u32,
        generation: u32,
    },
    Control {
        to: u32,
        from: u32,
        msg: Control,
    },
    Manifest {
        to: u32,
        from: u32,
    },
    Incoming {
        to: u32,
        from: u32,
        seq: u32,
        transfer: u64,
    },
    Complete {
        to: u32,
        from: u32,
        seq: u32,
        transfer: u64,
    },
    Connected {
        from: u32,
        to: u32,
    },
    PeerDown {
        to: u32,
        from: u32,
    },
}

/// Debug only: sums over the first copies that went through the same number of hops.
#[derive(Clone, Copy, Debug, Default)]
struct HopStats {
    copies: u64,
    /// Seconds from publication to arrival.
    delay: f64,
    /// Seconds from the sender's own arrival to the copy's start on its uplink.
    wait: f64,
    /// Of `wait`, seconds the sender's uplink spent on older chunks.
    behind_older: f64,
    /// Seconds from the start on the uplink to arrival.
    transfer: f64,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    id: u64,
    to: u32,
    seq: u32,
    start: Time,
    end: Time,
    bytes: u32,
}

struct Host {
    node: Option<Node>,
    place: Place,
    /// Index of its upload class (`usize::MAX` for the origin).
    class: usize,
    upload_bps: u64,
    download_bps: u64,
    uplink_free: Time,
    downlink_free: Time,
    timer: Option<Time>,
    generation: u32,
    joined: Time,
    /// Session length drawn for churn, applied at the join.
    session: Option<Duration>,
    /// When the peer leaves, once joined with a session length.
    leaves: Option<Time>,
    sending: Vec<Transfer>,
    /// Debug only: the latest transfers on the uplink, (start, end, chunk slot), so a copy's
    /// wait at its sender can be split by what the uplink was busy with.
    recent: std::collections::VecDeque<(Time, Time, u32)>,
    first_delivery: bool,
    eligible: (u64, u64),
    on_time: u64,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunOutput {
    /// The counters.
    pub metrics: Metrics,
    /// Uploads of the viewers (bit/s), for the lower bound.
    pub uploads_bps: Vec<f64>,
    /// Events processed.
    pub events: u64,
    /// Chunks published.
    pub chunks: u64,
    /// Smallest one-way delay of the network model.
    pub min_one_way: Duration,
    /// The nodes' own counters, summed over the viewers alive at the end.
    pub node_stats: fjord_core::Stats,
}

/// Progress reports: called with simulated seconds done.
pub type Progress<'a> = &'a mut dyn FnMut(f64);

/// One simulation run of `scenario` under `policy`.
pub struct Engine<'s> {
    sc: &'s Scenario,
    policy: Policy,
    net: Network,
    rng: Rng,
    deck: crate::scenario::ClassDeck,
    queue: Queue<Event>,
    now: Time,
    hosts: Vec<Host>,
    live: Vec<u32>,
    live_pos: Vec<usize>,
    key: ChannelKey,
    manifest: Manifest,
    /// Published chunks by slot, the old ones dropped.
    chunks: Vec<Option<Chunk>>,
    /// Tracks: 1 (video) or 2 (video and audio).
    tracks: u64,
    /// Payload bytes of a chunk, per track.
    track_bytes: Vec<u64>,
    chunk_us: u64,
    latency_us: u64,
    total_chunks: u64,
    next_transfer: u64,
    warmup: Time,
    end: Time,
    metrics: Metrics,
    events: u64,
    debug: bool,
    hops: Vec<Vec<u8>>,
    got_at: Vec<Vec<Time>>,
    hop_stats: std::collections::BTreeMap<u8, HopStats>,
    /// Debug only: the delays of eligible chunks per upload class (bps).
    class_delays: std::collections::BTreeMap<u64, Metrics>,
    /// Debug only, with more than one track: the same per (upload class, track id).
    track_delays: std::collections::BTreeMap<(u64, u8), Metrics>,
    /// `FJORD_SIM_DEBUG` only: hosts that missed a chunk, by what they knew of it then.
    miss_reasons: std::collections::BTreeMap<String, u64>,
    /// `FJORD_SIM_TRACE=<host>`: that host's control messages and chunks, on standard error.
    trace: Option<u32>,
}

impl<'s> Engine<'s> {
    /// Prepares a run. `dir` resolves relative paths in the scenario.
    pub fn new(sc: &'s Scenario, policy: Policy, dir: &Path) -> Result<Self> {
        let net = Network::new(&sc.network, dir)?;
        let rng = Rng::new(sc.seed);
        let key = ChannelKey::from_seed(&[0x46; 32]);
        let chunk_us = u64::from(sc.stream.chunk_ms) * 1000;
        let latency_us = u64::from(sc.stream.target_latency_ms) * 1000;
        let manifest = key.sign_manifest(&ManifestContent {
            epoch: 1,
            name: sc.name.clone(),
            issued_at_us: EPOCH_US,
            chunk_duration_us: chunk_us as u32,
            group_duration_us: sc.stream.group_ms.max(sc.stream.chunk_ms) * 1000,
            target_latency_us: latency_us as u32,
            tracks: track_list(sc),
        })?;
        let total_chunks = (sc.duration_s * 1e6 / chunk_us as f64) as u64;
        let track_bytes: Vec<u64> = manifest
            .content()
            .tracks
            .iter()
            .map(|t| u64::from(t.bitrate) / 8 * chunk_us / 1_000_000)
            .collect();
        let tracks = track_bytes.len() as u64;
        // The metrics count per sequence: a mean chunk stands for each track's.
        let chunk_bytes = track_bytes.iter().sum::<u64>() / tracks;
        let start = Time::from_micros(EPOCH_US);
        Ok(Self {
            sc,
            policy,
            net,
            rng,
            deck: crate::scenario::ClassDeck::new(&sc.classes, sc.peers),
            queue: Queue::new(),
            now: start,
            hosts: Vec::new(),
            live: Vec::new(),
            live_pos: Vec::new(),
            key,
            manifest,
            chunks: vec![None; (total_chunks * tracks) as usize],
            tracks,
            track_bytes,
            chunk_us,
            latency_us,
            total_chunks,
            next_transfer: 0,
            warmup: start + Duration::from_secs_f64(sc.warmup_s),
            end: start + Duration::from_secs_f64(sc.duration_s),
            metrics: Metrics::new(total_chunks as usize, tracks, chunk_bytes),
            events: 0,
            debug: std::env::var_os("FJORD_SIM_DEBUG").is_some(),
            hops: Vec::new(),
            got_at: Vec::new(),
            hop_stats: Default::default(),
            class_delays: Default::default(),
            track_delays: Default::default(),
            miss_reasons: Default::default(),
            trace: std::env::var("FJORD_SIM_TRACE")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    fn stream_bps(&self) -> u64 {
        u64::from(self.sc.stream.rate_kbps) * 1000
    }

    fn config(&self, origin: bool, upload_bps: u64) -> Config {
        let n = &self.sc.node;
        let mut c = if origin {
            let mut c = Config::origin(upload_bps);
            c.max_neighbours = n.origin_neighbours;
            c
        } else {
            let mut c = Config::viewer(upload_bps);
            c.max_neighbours = n.max_neighbours;
            c.min_neighbours = n.min_neighbours;
            c
        };
        c.policy = self.policy;
        c.repair_patience_chunks = n.repair_patience_chunks;
        c.repair_patience_max = Duration::from_millis(n.repair_patience_max_ms);
        c.push_horizon = Duration::from_millis(n.push_horizon_ms);
        c.urgent_share = n.urgent_share;
        c.control_overhead = n.charge_control.then_some(n.control_overhead_bytes);
        c.announce_hold = Duration::from_millis(n.announce_hold_ms);
        c.spreader_share = n.spreader_share;
        c
    }

    /// Runs to the end and returns the measurements.
    pub fn run(mut self, progress: Progress<'_>) -> Result<RunOutput> {
        // The origin, at the centre of the map, holding the manifest.
        let origin_bps = (self.sc.origin_upload * self.stream_bps() as f64) as u64;
        let mut place_rng = Rng::new(self.sc.seed ^ 0x5eed);
        let place = self.net.place(&self.sc.network, 0, &mut place_rng);
        self.add_host(place, origin_bps, u64::MAX / 4);
        let manifest = self.manifest.clone();
        self.with_node(ORIGIN, |n, now| {
            n.handle(
                now,
                Input::Manifest {
                    from: None,
                    manifest,
                },
            )
        });
        // The initial viewers join over the join window; publication starts at once.
        for i in 0..self.sc.peers {
            let at = self.now
                + Duration::from_secs_f64(self.sc.join_window_s * i as f64 / self.sc.peers as f64);
            let id = self.new_host(&mut place_rng);
            self.queue.push(at, Event::Join(id));
        }
        self.queue.push(self.now, Event::Publish(0));
        if let Some(at) = self.sc.kill.at_s {
            self.queue
                .push(self.now + Duration::from_secs_f64(at), Event::Kill);
        }
        let mut last_report = self.now;
        while let Some((at, event)) = self.queue.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            // The debug audit's events are not the protocol's: counted, they would make a debug
            // run's events per chunk differ from a plain run's.
            if !matches!(event, Event::Audit(_)) {
                self.events += 1;
            }
            self.dispatch(event, &mut place_rng);
            if at.saturating_since(last_report) >= Duration::from_secs(1) {
                last_report = at;
                progress(
                    at.saturating_since(Time::from_micros(EPOCH_US))
                        .as_secs_f64(),
                );
            }
        }
        self.finish();
        let uploads_bps = self.hosts[1..]
            .iter()
            .take(self.sc.peers)
            .map(|h| h.upload_bps as f64)
            .collect();
        let mut node_stats = fjord_core::Stats::default();
        for h in &self.hosts[1..] {
            if let Some(n) = &h.node {
                node_stats += n.stats();
            }
        }
        // FJORD_SIM_DEBUG=1: node counters, events per chunk, parentless substreams and uplink
        // use per upload class, and the state of the first hosts, on standard error.
        if std::env::var_os("FJORD_SIM_DEBUG").is_some() {
            eprintln!("{node_stats:?}");
            eprintln!(
                "events {} = {:.1} per chunk received",
                self.events,
                self.events as f64 / node_stats.chunks_received.max(1) as f64
            );
            let mut by_class: std::collections::BTreeMap<u64, (f64, f64, usize, u64, u64)> =
                Default::default();
            for h in &self.hosts {
                if let Some(n) = &h.node {
                    let secs = self.end.saturating_since(h.joined).as_secs_f64();
                    let e = by_class.entry(h.upload_bps).or_default();
                    e.0 += n.stats().chunk_bytes_sent as f64 * 8.0;
                    e.1 += h.upload_bps as f64 * secs;
                    e.2 += 1;
                    let (lo, hi) = h.eligible;
                    if hi >= lo {
                        e.3 += h.on_time;
                        e.4 += (hi - lo + 1) * self.tracks;
                    }
                }
            }
            let mut orphans = [0usize; 9];
            for h in &self.hosts[1..] {
                if let Some(n) = &h.node {
                    let s = n.debug_summary();
                    let none = s.matches("None").count().min(8);
                    orphans[none] += 1;
                }
            }
            for (h, e) in &self.hop_stats {
                let c = e.copies as f64;
                eprintln!(
                    "hop {h}: {c} first copies, delay {:.0} ms, wait at sender {:.0} ms (behind older chunks {:.0} ms), transfer {:.0} ms",
                    1e3 * e.delay / c,
                    1e3 * e.wait / c,
                    1e3 * e.behind_older / c,
                    1e3 * e.transfer / c
                );
            }
            for (reason, count) in &self.miss_reasons {
                eprintln!("missed, at the deadline {reason}: {count}");
            }
            eprintln!("hosts by number of parentless substreams (0..8): {orphans:?}");
            for (up, (sent, cap, count, on_time, eligible)) in by_class {
                let q = |q: f64| {
                    self.class_delays
                        .get(&up)
                        .and_then(|m| m.delay_quantile_ms(q))
                        .unwrap_or(f64::NAN)
                };
                let tracks: String = self
                    .track_delays
                    .range((up, 0)..=(up, u8::MAX))
                    .map(|((_, track), m)| {
                        let q = |q: f64| m.delay_quantile_ms(q).unwrap_or(f64::NAN);
                        format!("; track {track} {:.0} / {:.0}", q(0.5), q(0.95))
                    })
                    .collect();
                eprintln!(
                    "class {up}: {count} hosts, uplink use {:.1}%, continuity {:.2}%, delay p50 / p95 {:.0} / {:.0} ms{tracks}",
                    100.0 * sent / cap,
                    100.0 * on_time as f64 / eligible.max(1) as f64,
                    q(0.5),
                    q(0.95)
                );
            }
            for h in self.hosts.iter().take(12) {
                if let Some(n) = &h.node {
                    eprintln!(
                        "up {} manifest {} neighbours {} {:?}",
                        h.upload_bps,
                        n.manifest().is_some(),
                        n.neighbours().count(),
                        n.debug_summary()
                    );
                }
            }
        }
        Ok(RunOutput {
            node_stats,
            metrics: self.metrics,
            uploads_bps,
            events: self.events,
            chunks: self.total_chunks * self.tracks,
            min_one_way: self.net.min_one_way(),
        })
    }

    /// Draws a viewer's class and place and registers it (not yet joined).
    fn new_host(&mut self, place_rng: &mut Rng) -> u32 {
        let class_index = self.deck.deal(place_rng);
        let class = &self.sc.classes[class_index];
        let r = self.stream_bps() as f64;
        let (up, down) = ((class.upload * r) as u64, (class.download * r) as u64);
        let index = self.hosts.len();
        let place = self.net.place(&self.sc.network, index, place_rng);
        let session = self.sc.churn.enabled.then(|| {
            weibull(
                place_rng,
                self.sc.churn.weibull_shape,
                self.sc.churn.mean_session_s,
            )
        });
        let id = self.add_host(place, up, down);
        self.hosts[id as usize].session = session;
        self.hosts[id as usize].class = class_index;
        id
    }

    fn add_host(&mut self, place: Place, up: u64, down: u64) -> u32 {
        self.hosts.push(Host {
            node: None,
            place,
            class: usize::MAX,
            upload_bps: up,
            download_bps: down,
            uplink_free: self.now,
            downlink_free: self.now,
            timer: None,
            generation: 0,
            joined: self.now,
            session: None,
            leaves: None,
            sending: Vec::new(),
            recent: Default::default(),
            first_delivery: false,
            eligible: (1, 0),
            on_time: 0,
        });
        self.live_pos.push(usize::MAX);
        let id = (self.hosts.len() - 1) as u32;
        if id == ORIGIN {
            let config = self.config(true, up);
            self.hosts[0].node = Some(Node::new(config, self.sc.seed, self.now));
            self.set_live(ORIGIN, true);
        }
        id
    }

    fn set_live(&mut self, id: u32, live: bool) {
        if live {
            self.live_pos[id as usize] = self.live.len();
            self.live.push(id);
        } else {
            let pos = self.live_pos[id as usize];
            if pos == usize::MAX {
                return;
            }
            let last = *self.live.last().expect("non-empty");
            self.live.swap_remove(pos);
            if last != id {
                self.live_pos[last as usize] = pos;
            }
            self.live_pos[id as usize] = usize::MAX;
        }
    }

    fn alive(&self, id: u32) -> bool {
        self.hosts[id as usize].node.is_some()
    }

    fn one_way(&self, a: u32, b: u32) -> Duration {
        self.net
            .one_way(&self.hosts[a as usize].place, &self.hosts[b as usize].place)
    }

    fn dispatch(&mut self, event: Event, place_rng: &mut Rng) {
        match event {
            Event::Publish(seq) => self.publish(seq),
            Event::Audit(seq) => self.audit(u64::from(seq)),
            Event::Join(id) => self.join(id),
            Event::Leave(id) => self.leave(id, place_rng),
            Event::Kill => self.kill(),
            Event::Timer { host, generation } => {
                let h = &mut self.hosts[host as usize];
                if h.generation != generation || h.node.is_none() {
                    return;
                }
                h.timer = None;
                self.with_node(host, |n, now| n.handle_timeout(now));
            }
            Event::Control { to, from, msg } => {
                if self.traced(from, to) {
                    let up = |h: u32| self.hosts[h as usize].upload_bps / 1000;
                    eprintln!(
                        "{:.3} s: {from} ({} kbit/s) -> {to} ({} kbit/s): {msg:?}",
                        self.secs(self.now),
                        up(from),
                        up(to)
                    );
                }
                if self.alive(to) {
                    let peer = PeerId(u64::from(from));
                    self.with_node(to, |n, now| n.handle(now, Input::Control { peer, msg }));
                }
            }
            Event::Manifest { to, from } => {
                if self.alive(to) {
                    let manifest = self.manifest.clone();
                    let from = Some(PeerId(u64::from(from)));
                    self.with_node(to, |n, now| {
                        n.handle(now, Input::Manifest { from, manifest })
                    });
                }
            }
            Event::Incoming {
                to,
                from,
                seq,
                transfer,
            } => {
                if self.alive(to) && self.transfer_live(from, transfer) {
                    let chunk = self.chunks[seq as usize].as_ref().expect("published");
                    let (meta, len) = (*chunk.meta(), chunk.len());
                    let peer = PeerId(u64::from(from));
                    self.with_node(to, |n, now| {
                        n.handle(now, Input::ChunkIncoming { peer, meta, len })
                    });
                }
            }
            Event::Complete {
                to,
                from,
                seq,
                transfer,
            } => self.complete(to, from, seq, transfer),
            Event::Connected { from, to } => {
                let peer_to = PeerId(u64::from(to));
                if !self.alive(from) {
                    return;
                }
                if !self.alive(to) {
                    self.with_node(from, |n, now| n.handle(now, Input::ConnectFailed(peer_to)));
                    return;
                }
                let rtt = Some(self.one_way(from, to) * 2);
                let peer_from = PeerId(u64::from(from));
                self.with_node(from, |n, now| {
                    n.handle(
                        now,
                        Input::PeerUp {
                            peer: peer_to,
                            outbound: true,
                            rtt,
                        },
                    )
                });
                self.with_node(to, |n, now| {
                    n.handle(
                        now,
                        Input::PeerUp {
                            peer: peer_from,
                            outbound: false,
                            rtt,
                        },
                    )
                });
            }
            Event::PeerDown { to, from } => {
                if self.alive(to) {
                    self.cancel_transfers(to, Some(from));
                    let peer = PeerId(u64::from(from));
                    self.with_node(to, |n, now| n.handle(now, Input::PeerDown(peer)));
                }
            }
        }
    }

    fn publish(&mut self, seq: u32) {
        let s = u64::from(seq);
        if self.debug {
            let deadline = self.now + Duration::from_micros(self.latency_us);
            self.queue.push(deadline, Event::Audit(seq));
        }
        let group_start =
            (s * self.chunk_us).is_multiple_of(u64::from(self.sc.stream.group_ms) * 1000);
        for t in 0..self.tracks {
            let timescale = u64::from(self.manifest.content().tracks[t as usize].timescale);
            let meta = ChunkMeta {
                epoch: 1,
                track: t as u8 + 1,
                sequence: s,
                // Audio chunks stand alone; video ones depend on their group's start.
                flags: match (group_start, t) {
                    (true, _) => ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT,
                    (false, 0) => ChunkFlags::empty(),
                    (false, _) => ChunkFlags::INDEPENDENT,
                },
                timestamp: s * self.chunk_us * timescale / 1_000_000,
                duration: (self.chunk_us * timescale / 1_000_000) as u32,
                published_at_us: self.now.as_micros(),
            };
            let payload = vec![0u8; self.track_bytes[t as usize] as usize];
            let chunk = self
                .key
                .sign_chunk(&meta, &payload)
                .expect("payload within limits");
            let slot = (s * self.tracks + t) as usize;
            self.chunks[slot] = Some(chunk.clone());
            // Nodes hold their own references; the engine keeps only what events may still
            // need.
            let behind = (fjord_core::store::WINDOW * self.tracks) as usize;
            if let Some(old) = slot.checked_sub(behind) {
                self.chunks[old] = None;
            }
            self.with_node(ORIGIN, |n, now| {
                n.handle(now, Input::Chunk { from: None, chunk })
            });
        }
        if s + 1 < self.total_chunks {
            self.queue.push(
                self.now + Duration::from_micros(self.chunk_us),
                Event::Publish(seq + 1),
            );
        }
    }

    /// The engine's index of a chunk: its slot across tracks.
    fn slot(&self, track: u8, sequence: u64) -> u32 {
        (sequence * self.tracks + u64::from(track.saturating_sub(1))) as u32
    }

    fn join(&mut self, id: u32) {
        if self.trace == Some(id) {
            eprintln!("{:.3} s: {id} joins", self.secs(self.now));
        }
        let up = self.hosts[id as usize].upload_bps;
        let config = self.config(false, up);
        let seed = self.rng.next_u64();
        let now = self.now;
        let session = self.hosts[id as usize].session.take();
        let h = &mut self.hosts[id as usize];
        h.node = Some(Node::new(config, seed, now));
        h.joined = now;
        h.uplink_free = now;
        h.downlink_free = now;
        if let Some(s) = session {
            let leave_at = now + s;
            h.leaves = Some(leave_at);
            self.queue.push(leave_at, Event::Leave(id));
        }
        // Eligible chunks: published from max(join + allowance, warm-up), deadline before the
        // peer leaves and before the end.
        let t0 = EPOCH_US;
        let from = (now + JOIN_ALLOWANCE).max(self.warmup).as_micros();
        let until = self.hosts[id as usize]
            .leaves
            .unwrap_or(self.end)
            .min(self.end)
            .as_micros();
        let lo = (from.saturating_sub(t0)).div_ceil(self.chunk_us);
        let hi = until.saturating_sub(t0 + self.latency_us) / self.chunk_us;
        let hi = hi.min(self.total_chunks.saturating_sub(1));
        self.hosts[id as usize].eligible = (lo, hi);
        if lo <= hi && until > t0 + self.latency_us {
            self.metrics.add_eligible(lo, hi);
        } else {
            self.hosts[id as usize].eligible = (1, 0);
        }
        self.set_live(id, true);
        self.with_node(id, |n, now| n.handle_timeout(now));
    }

    fn leave(&mut self, id: u32, place_rng: &mut Rng) {
        let Some(node) = self.hosts[id as usize].node.take() else {
            return;
        };
        let crash = self.rng.chance(self.sc.churn.crash_share);
        let detect = Duration::from_secs_f64(self.sc.churn.crash_detect_s);
        self.take_out(
            id,
            &node,
            |e, to| {
                if crash { detect } else { e.one_way(id, to) }
            },
        );
        // Keep the population steady: a newcomer replaces the departed.
        let newcomer = self.new_host(place_rng);
        self.queue
            .push(self.now + REPLACE_DELAY, Event::Join(newcomer));
    }

    /// The scenario's mass kill: a share of the initial viewers crash at once (the same
    /// victims as the emulator's for the same scenario), none replaced. Their neighbours notice
    /// after `detect_s`, as real nodes do at their QUIC idle timeout.
    fn kill(&mut self) {
        let k = &self.sc.kill;
        // The initial viewers are hosts 1..=peers, in the order they were dealt and joined.
        let class_of: Vec<usize> = (1..=self.sc.peers).map(|id| self.hosts[id].class).collect();
        let victims: Vec<u32> =
            crate::scenario::kill_victims(&class_of, k.share, k.oldest, self.sc.seed)
                .into_iter()
                .map(|i| i as u32 + 1)
                .collect();
        let detect = Duration::from_secs_f64(k.detect_s);
        let t0 = EPOCH_US;
        // Published by now: what a victim may already hold.
        let published_hi = self.now.as_micros().saturating_sub(t0) / self.chunk_us;
        // Deadline passed by now: what it was still eligible for.
        let due_hi = self.now.as_micros().saturating_sub(t0 + self.latency_us) / self.chunk_us;
        for id in victims {
            let Some(node) = self.hosts[id as usize].node.take() else {
                continue;
            };
            // No longer eligible for chunks whose deadline is after its death, and those of
            // them it already held are not counted as delivered either.
            let (lo, hi) = self.hosts[id as usize].eligible;
            let cut = (due_hi + 1).max(lo);
            if lo <= hi && cut <= hi {
                for seq in cut..=hi.min(published_hi) {
                    for t in 0..self.tracks {
                        let held = self
                            .chunks
                            .get((seq * self.tracks + t) as usize)
                            .and_then(|c| c.as_ref())
                            .is_some_and(|c| node.has_chunk(c.id()));
                        if held {
                            self.metrics.retract_on_time(seq);
                            let h = &mut self.hosts[id as usize];
                            h.on_time = h.on_time.saturating_sub(1);
                        }
                    }
                }
                self.metrics.retract_eligible(cut, hi);
                self.hosts[id as usize].eligible = (lo, cut - 1);
            }
            self.take_out(id, &node, |_, _| detect);
        }
    }

    /// Takes a departed host out of the run: its continuity is recorded, each neighbour `to`
    /// hears of it after `delay(to)`, and its transfers stop.
    fn take_out(&mut self, id: u32, node: &Node, delay: impl Fn(&Self, u32) -> Duration) {
        self.set_live(id, false);
        self.close_peer(id);
        for peer in node.neighbours() {
            let to = peer.0 as u32;
            let at = self.now + delay(self, to);
            self.queue.push(at, Event::PeerDown { to, from: id });
        }
        self.cancel_transfers(id, None);
    }

    /// Per-peer continuity, recorded when a peer leaves or the run ends.
    fn close_peer(&mut self, id: u32) {
        let h = &self.hosts[id as usize];
        let (lo, hi) = h.eligible;
        if lo <= hi {
            self.metrics
                .peer_continuity
                .push(h.on_time as f64 / ((hi - lo + 1) * self.tracks) as f64);
        }
    }

    fn finish(&mut self) {
        for id in 1..self.hosts.len() as u32 {
            if self.alive(id) {
                self.close_peer(id);
            }
        }
    }

    fn transfer_live(&self, from: u32, id: u64) -> bool {
        self.alive(from) && self.hosts[from as usize].sending.iter().any(|t| t.id == id)
    }

    fn complete(&mut self, to: u32, from: u32, seq: u32, transfer: u64) {
        if !self.transfer_live(from, transfer) {
            return;
        }
        let sending = &mut self.hosts[from as usize].sending;
        let i = sending.iter().position(|t| t.id == transfer).expect("live");
        let t = sending.swap_remove(i);
        self.account_transfer(from, u64::from(t.bytes));
        if !self.alive(to) {
            return;
        }
        let chunk = self.chunks[seq as usize].clone().expect("published");
        let node = self.hosts[to as usize].node.as_ref().expect("alive");
        if node.has_chunk(chunk.id()) && self.measuring() {
            self.metrics.duplicate_bytes += u64::from(t.bytes);
        }
        if self.debug && !node.has_chunk(chunk.id()) {
            let n = self.hosts.len();
            if self.hops.len() < n {
                self.hops.resize(n, Vec::new());
                self.got_at.resize(n, Vec::new());
            }
            let s = seq as usize;
            for v in [to as usize, from as usize] {
                if self.hops[v].len() <= s {
                    self.hops[v].resize(s + 1, 0);
                    self.got_at[v].resize(s + 1, Time::from_micros(0));
                }
            }
            let h = if from == ORIGIN {
                1
            } else {
                self.hops[from as usize][s] + 1
            };
            self.hops[to as usize][s] = h;
            self.got_at[to as usize][s] = self.now;
            if self.measuring() {
                let published = Time::from_micros(chunk.meta().published_at_us);
                let sender_got = if from == ORIGIN {
                    published
                } else {
                    self.got_at[from as usize][s]
                };
                // Of the wait, the time the sender's uplink spent on chunks published
                // earlier: a slot divided by the track count is the chunk's sequence, so
                // the video chunk of the same instant does not count as older.
                let tracks = self.tracks as u32;
                let behind_older: f64 = self.hosts[from as usize]
                    .recent
                    .iter()
                    .filter(|&&(_, _, slot)| slot / tracks < seq / tracks)
                    .map(|&(a, b, _)| {
                        b.min(t.start)
                            .saturating_since(a.max(sender_got))
                            .as_secs_f64()
                    })
                    .sum();
                let e = self.hop_stats.entry(h).or_default();
                e.copies += 1;
                e.delay += self.now.saturating_since(published).as_secs_f64();
                e.wait += t.start.saturating_since(sender_got).as_secs_f64();
                e.behind_older += behind_older;
                e.transfer += self.now.saturating_since(t.start).as_secs_f64();
            }
        }
        let peer = Some(PeerId(u64::from(from)));
        self.with_node(to, |n, now| {
            n.handle(now, Input::Chunk { from: peer, chunk })
        });
    }

    fn measuring(&self) -> bool {
        self.now >= self.warmup
    }

    fn account_transfer(&mut self, from: u32, bytes: u64) {
        if self.measuring() {
            self.metrics.transfer_bytes += bytes;
            if from == ORIGIN {
                self.metrics.origin_bytes += bytes;
            }
        }
    }

    /// Cancels transfers from `host` (to `to` only, or all), counting the part already sent.
    fn cancel_transfers(&mut self, host: u32, to: Option<u32>) {
        let now = self.now;
        let mut cut = Vec::new();
        self.hosts[host as usize].sending.retain(|t| {
            let hit = to.is_none_or(|to| t.to == to);
            if hit {
                cut.push(*t);
            }
            !hit
        });
        for t in cut {
            self.cut_transfer(host, &t, now);
        }
    }

    fn cut_transfer(&mut self, host: u32, t: &Transfer, now: Time) {
        let span = t.end.saturating_since(t.start).as_secs_f64();
        let done = now.saturating_since(t.start).as_secs_f64();
        let sent = if span > 0.0 {
            (f64::from(t.bytes) * (done / span).min(1.0)) as u64
        } else {
            0
        };
        self.account_transfer(host, sent);
        if self.measuring() {
            self.metrics.duplicate_bytes += sent;
        }
        let h = &mut self.hosts[host as usize];
        // The rest of the chunk leaves the queue; control messages charged after it move up.
        // (Only the last transfer is cut: the core sends one chunk at a time.)
        if now < t.end && h.uplink_free >= t.end {
            h.uplink_free = h.uplink_free - t.end.saturating_since(now.max(t.start));
        }
        if let Some(r) = h.recent.iter_mut().find(|r| (r.0, r.2) == (t.start, t.seq)) {
            r.1 = r.1.min(now.max(t.start));
        }
    }

    /// Runs `f` on a live node, then carries out its outputs and reschedules its timer.
    fn with_node(&mut self, id: u32, f: impl FnOnce(&mut Node, Time)) {
        let now = self.now;
        let Some(node) = self.hosts[id as usize].node.as_mut() else {
            return;
        };
        f(node, now);
        self.drain(id);
        self.reschedule(id);
    }

    fn reschedule(&mut self, id: u32) {
        let now = self.now;
        let h = &mut self.hosts[id as usize];
        let Some(node) = h.node.as_ref() else {
            return;
        };
        let Some(mut at) = node.poll_timeout() else {
            return;
        };
        if at <= now {
            // Never spin at one instant: the node is due now, so wake it a microsecond later.
            at = now + Duration::from_micros(1);
        }
        if h.timer.is_some_and(|t| t <= at) {
            return;
        }
        h.generation = h.generation.wrapping_add(1);
        h.timer = Some(at);
        let generation = h.generation;
        self.queue.push(
            at,
            Event::Timer {
                host: id,
                generation,
            },
        );
    }

    fn drain(&mut self, id: u32) {
        loop {
            let Some(out) = self.hosts[id as usize]
                .node
                .as_mut()
                .and_then(Node::poll_output)
            else {
                return;
            };
            self.carry_out(id, out);
        }
    }

    fn carry_out(&mut self, id: u32, out: Output) {
        let now = self.now;
        match out {
            Output::Control { peer, msg } => {
                let to = peer.0 as u32;
                let ow = self.one_way(id, to);
                let bytes = msg.encoded_len();
                let lost = self.net.loss_delay(bytes, ow * 2, &mut self.rng);
                if self.measuring() {
                    self.metrics.control_bytes += bytes as u64;
                }
                // Control messages take their share of the uplink, pushing later chunks
                // back, but leave ahead of the chunk being sent: the node's driver writes
                // them on their own stream, between the paced slices of a chunk.
                let mut sent = now;
                if self.sc.node.charge_control {
                    let h = &mut self.hosts[id as usize];
                    let t = transmission_time(
                        bytes + self.sc.node.control_overhead_bytes,
                        h.upload_bps,
                    );
                    h.uplink_free = h.uplink_free.max(now) + t;
                    sent = now + t;
                }
                self.queue
                    .push(sent + ow + lost, Event::Control { to, from: id, msg });
            }
            Output::Manifest { peer, manifest } => {
                let to = peer.0 as u32;
                let ow = self.one_way(id, to);
                if self.measuring() {
                    self.metrics.control_bytes += manifest.encoded().len() as u64;
                }
                self.queue.push(now + ow, Event::Manifest { to, from: id });
            }
            Output::Chunk { peer, chunk } => self.send_chunk(id, peer.0 as u32, &chunk),
            Output::Abort { peer, id: chunk } => {
                let to = peer.0 as u32;
                let seq = self.slot(chunk.track, chunk.sequence);
                let sending = &mut self.hosts[id as usize].sending;
                if let Some(i) = sending.iter().position(|t| t.to == to && t.seq == seq) {
                    let t = sending.swap_remove(i);
                    self.cut_transfer(id, &t, now);
                }
            }
            Output::Connect(peer) => {
                let to = peer.0 as u32;
                if self.traced(id, to) {
                    eprintln!("{:.3} s: {id} connects to {to}", self.secs(now));
                }
                let rtt = self.one_way(id, to) * 2;
                self.queue
                    .push(now + rtt, Event::Connected { from: id, to });
            }
            Output::Disconnect(peer) => {
                let to = peer.0 as u32;
                self.cancel_transfers(id, Some(to));
                let ow = self.one_way(id, to);
                self.queue.push(now + ow, Event::PeerDown { to, from: id });
            }
            Output::Deliver(chunk) => self.delivered(id, &chunk),
            Output::WantPeers(n) => {
                let peers = self.sample_peers(id, n * 2);
                if let Some(node) = self.hosts[id as usize].node.as_mut() {
                    node.handle(now, Input::Candidates(peers));
                }
            }
        }
    }

    fn sample_peers(&mut self, id: u32, n: usize) -> Vec<PeerId> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n * 2 {
            if out.len() >= n || self.live.len() < 2 {
                break;
            }
            let p = self.live[self.rng.below(self.live.len() as u64) as usize];
            let peer = PeerId(u64::from(p));
            if p != id && !out.contains(&peer) {
                out.push(peer);
            }
        }
        out
    }

    /// At chunk `seq`'s deadline: counts what each eligible host that lacks it knew of it.
    fn audit(&mut self, seq: u64) {
        for (i, h) in self.hosts.iter().enumerate().skip(1) {
            let (lo, hi) = h.eligible;
            let Some(n) = h.node.as_ref().filter(|_| (lo..=hi).contains(&seq)) else {
                continue;
            };
            let state = n.debug_chunk_state(self.now, seq);
            if state == "held" {
                continue;
            }
            if self.trace == Some(i as u32) {
                eprintln!("{:.3} s: missed chunk {seq}: {state}", self.secs(self.now));
            }
            *self.miss_reasons.entry(state).or_default() += 1;
        }
    }

    /// Whether a message between these hosts is traced (`FJORD_SIM_TRACE`).
    fn traced(&self, from: u32, to: u32) -> bool {
        self.trace.is_some_and(|t| t == from || t == to)
    }

    /// Seconds since the simulation's epoch, for traces.
    fn secs(&self, t: Time) -> f64 {
        t.as_micros().saturating_sub(EPOCH_US) as f64 / 1e6
    }

    fn send_chunk(&mut self, from: u32, to: u32, chunk: &Chunk) {
        let now = self.now;
        if self.traced(from, to) {
            let start = now.max(self.hosts[from as usize].uplink_free);
            eprintln!(
                "{:.3} s: {from} -> {to}: chunk {}, on the uplink at {:.3} s",
                self.secs(now),
                chunk.meta().sequence,
                self.secs(start)
            );
        }
        let bytes = chunk.len();
        let ow = self.one_way(from, to);
        let up = self.hosts[from as usize].upload_bps;
        let start = now.max(self.hosts[from as usize].uplink_free);
        let end = start + transmission_time(bytes, up);
        self.hosts[from as usize].uplink_free = end;
        let first_byte = start + ow;
        let down = self.hosts[to as usize].download_bps;
        // The downlink carries these bytes at its rate once it has carried earlier ones: it is
        // busy for their share of its capacity, not for the whole transfer, which a slower
        // sender stretches. (Until session 6 it stayed busy until the transfer completed, so a
        // chunk from a 0.3x sender, 833 ms long, held back every other chunk to that host.)
        let dl_start = first_byte.max(self.hosts[to as usize].downlink_free);
        let dl_done = dl_start + transmission_time(bytes, down);
        self.hosts[to as usize].downlink_free = dl_done;
        let mut done = (end + ow).max(dl_done);
        done = done + self.net.loss_delay(bytes, ow * 2, &mut self.rng);
        let transfer = self.next_transfer;
        self.next_transfer += 1;
        let seq = self.slot(chunk.meta().track, chunk.meta().sequence);
        if self.debug {
            let recent = &mut self.hosts[from as usize].recent;
            if recent.len() == RECENT_TRANSFERS {
                recent.pop_front();
            }
            recent.push_back((start, end, seq));
        }
        self.hosts[from as usize].sending.push(Transfer {
            id: transfer,
            to,
            seq,
            start,
            end,
            bytes: bytes as u32,
        });
        self.queue.push(
            first_byte,
            Event::Incoming {
                to,
                from,
                seq,
                transfer,
            },
        );
        self.queue.push(
            done,
            Event::Complete {
                to,
                from,
                seq,
                transfer,
            },
        );
    }

    fn delivered(&mut self, id: u32, chunk: &Chunk) {
        if id == ORIGIN {
            return;
        }
        let now = self.now;
        let published = Time::from_micros(chunk.meta().published_at_us);
        let delay = now.saturating_since(published);
        let seq = chunk.meta().sequence;
        let h = &mut self.hosts[id as usize];
        if !h.first_delivery {
            h.first_delivery = true;
            if h.joined >= self.warmup {
                let startup = now.saturating_since(h.joined);
                if self.debug {
                    eprintln!("start-up of host {id}: {} ms", startup.as_millis());
                }
                self.metrics.startup_us.push(startup.as_micros() as u64);
            }
        }
        let (lo, hi) = h.eligible;
        if (lo..=hi).contains(&seq) {
            let on_time = delay <= Duration::from_micros(self.latency_us);
            if on_time {
                h.on_time += 1;
            }
            self.metrics.delivered(seq, delay, on_time);
            if self.debug {
                let (up, chunks, bytes) =
                    (h.upload_bps, self.total_chunks, self.metrics.chunk_bytes);
                let tracks = self.tracks;
                self.class_delays
                    .entry(up)
                    .or_insert_with(|| Metrics::new(chunks as usize, tracks, bytes))
                    .delivered(seq, delay, on_time);
                if tracks > 1 {
                    self.track_delays
                        .entry((up, chunk.meta().track))
                        .or_insert_with(|| Metrics::new(chunks as usize, 1, bytes))
                        .delivered(seq, delay, on_time);
                }
            }
        }
    }
}

/// The manifest's tracks: video, and audio when the scenario has it, sharing the stream rate.
fn track_list(sc: &Scenario) -> Vec<Track> {
    let audio = sc.stream.audio_kbps;
    let mut tracks = vec![Track {
        id: 1,
        kind: TrackKind::Video,
        codec: "avc1.64001f".into(),
        timescale: 90_000,
        bitrate: sc.stream.rate_kbps.saturating_sub(audio) * 1000,
        init_segment: Bytes::from_static(b"init"),
    }];
    if audio > 0 {
        tracks.push(Track {
            id: 2,
            kind: TrackKind::Audio,
            codec: "mp4a.40.2".into(),
            timescale: 48_000,
            bitrate: audio * 1000,
            init_segment: Bytes::from_static(b"init"),
        });
    }
    tracks
}

/// A Weibull-distributed session length with the given shape and mean.
pub(crate) fn weibull(rng: &mut Rng, shape: f64, mean_s: f64) -> Duration {
    let scale = mean_s / gamma(1.0 + 1.0 / shape);
    let u = rng.unit().max(f64::MIN_POSITIVE);
    Duration::from_secs_f64(scale * (-u.ln()).powf(1.0 / shape))
}

/// The gamma function (Lanczos approximation), for the Weibull mean.
fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x))
    } else {
        let x = x - 1.0;
        let t = x + G + 0.5;
        let sum = C[1..]
            .iter()
            .enumerate()
            .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
        (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_core::proto::Role;

    #[test]
    fn gamma_and_weibull_mean() {
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma(3.0) - 2.0).abs() < 1e-9);
        let mut rng = Rng::new(9);
        let n = 200_000;
        let mean: f64 = (0..n)
            .map(|_| weibull(&mut rng, 0.5, 300.0).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 300.0).abs() < 15.0, "{mean}");
    }

    #[test]
    fn role_is_used() {
        // The origin's config carries the origin role.
        let sc = Scenario::default();
        let e = Engine::new(&sc, Policy::Fjord, Path::new(".")).unwrap();
        assert_eq!(e.config(true, 1).role, Role::Origin);
        assert_eq!(e.config(false, 1).role, Role::Viewer);
    }
}
