//! One node's chunk-exchange state machine.
//!
//! # Call order
//! ```text
//! let mut node = Node::new(config, seed, now);
//! loop {
//!     node.handle(now, input);              // or node.handle_timeout(now) when the timer fires
//!     while let Some(out) = node.poll_output() { carry it out }
//!     sleep until node.poll_timeout() or the next input
//! }
//! ```
//! The node never reads a clock, opens a socket or spawns anything: the tokio driver in
//! `fjord-node` and the simulator in `fjord-sim` feed it inputs with the current time and carry
//! out its outputs. All randomness comes from the seed; iteration orders are fixed; so a run is
//! reproducible.
//!
//! # What it does
//! - Keeps a bounded set of neighbours ([`Config::max_neighbours`]), greets each with
//!   [`Control::Hello`] and the manifest, and replaces the departed and the useless at each
//!   maintenance tick, keeping a share of randomly chosen links whatever their score.
//! - Stores verified chunks in a window around the live edge ([`crate::store`]). Under
//!   [`Policy::Fjord`] and the push baselines it announces each to the neighbours not known to
//!   hold it, as soon as its first byte arrives (each announcement waits up to
//!   [`Config::announce_hold`] for other messages to the same neighbour, so that they share a
//!   packet); under [`Policy::FjordTrees`] it subscribes to a
//!   parent per substream instead ([`crate::tree`]).
//! - Uses its upload one chunk at a time, paced at [`Config::upload_bps`], choosing each next
//!   transfer with the [`Policy`] (see [`crate::scheduler`]), within a per-neighbour window of
//!   acknowledged transfers so nothing piles up in a transport buffer.
//! - Requests missing chunks from holders when they are overdue ([`crate::repair`]).

use std::collections::VecDeque;
use std::time::Duration;

use crate::neighbours::{InFlight, Neighbour, Neighbours, PeerId, Request, bits};
use crate::proto::{Control, GoodbyeReason, Hello, PROTOCOL_VERSION, Role, SUBSTREAMS};
use crate::rng::Rng;
use crate::store::TrackStore;
use crate::time::{Time, transmission_time};
use crate::wire::{Chunk, ChunkId, ChunkMeta, Manifest};

/// How a node chooses what to send. [`Policy::Fjord`] is ours; the others are the published
/// baselines it is measured against, run on the same machinery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Announce, reserve at the first spreader, admit requests by deadline and serve them
    /// newest first to the best uploaders; only the origin pushes. See [`crate::scheduler`].
    Fjord,
    /// Experimental: one parent per substream pushes every chunk of it. See [`crate::tree`].
    FjordTrees,
    /// Random peer / latest useful chunk (Bonald et al., SIGMETRICS 2008): pushes only.
    RandomPeerLatestUseful,
    /// Most deprived peer / latest useful chunk (same paper): pushes only.
    DeprivedPeerLatestUseful,
    /// Mesh pull in the style of CoolStreaming/DONet: periodic buffer maps, rarest-first
    /// requests, no pushes.
    MeshPull,
}

impl Policy {
    /// Whether this is one of Fjord's own policies (deadline-aware, with refusals), as opposed
    /// to a baseline.
    pub fn is_fjord(self) -> bool {
        matches!(self, Policy::Fjord | Policy::FjordTrees)
    }
}

/// A node's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Origin, seed or viewer.
    pub role: Role,
    /// Upload the node may use, bit/s. Sends are paced to it.
    pub upload_bps: u64,
    /// Neighbours the node keeps (at most [`crate::neighbours::MAX_SLOTS`] minus slack).
    pub max_neighbours: usize,
    /// Below this many neighbours the node asks for candidates.
    pub min_neighbours: usize,
    /// Scheduling policy.
    pub policy: Policy,
    /// How long after first hearing of a chunk (from a neighbour that is not a spreader, so not
    /// reserved at once) the node waits for it to start arriving before requesting it, in
    /// chunk durations: a chunk spreads a hop per chunk transmission, so the wait that lets it
    /// reach more holders scales with the chunk (see [`crate::repair`]). At most
    /// [`Config::repair_patience_max`].
    pub repair_patience_chunks: f64,
    /// The longest repair patience, whatever the chunk duration.
    pub repair_patience_max: Duration,
    /// The origin's pushes are only for chunks younger than this, since publication.
    pub push_horizon: Duration,
    /// Interval of neighbour maintenance (and of Fjord trees' parent choice).
    pub maintenance_interval: Duration,
    /// A neighbour that neither gave nor took a chunk for this long is replaced.
    pub idle_timeout: Duration,
    /// Share of neighbour slots kept whatever their usefulness (robustness of the mesh).
    pub protected_share: f64,
    /// Whether aborting the transfer on the uplink frees the uplink at once. True where a
    /// transfer stops part-way (the simulator's links); the node's driver hands whole chunks
    /// to QUIC, which sends them anyway, so there the uplink stays busy for the chunk's full
    /// transmission time, or the node would offer its link more than it can carry.
    pub abort_frees_uplink: bool,
    /// Largest share of the uplink's time that goes to [`Control::Urgent`] requests ahead of
    /// the newest-first order (see `crate::scheduler`); 0 serves them like any request.
    pub urgent_share: f64,
    /// What each control message costs the uplink beyond its encoding: the transport's
    /// length prefix and its share of a packet's IP, UDP and QUIC headers. Control messages
    /// share the uplink with chunks, so the node charges them to its uplink time, and sends
    /// chunks that much later; `None` charges nothing, as before session 16.
    pub control_overhead: Option<usize>,
    /// Longest an announcement ([`Control::Have`]) waits for other control messages to the
    /// same neighbour, so that they leave in one packet: any other message to it sends the
    /// held ones first. Zero sends each at once. See [`ANNOUNCE_HOLD`].
    pub announce_hold: Duration,
    /// Share of the stream rate from which a node counts as a spreader: it reserves an
    /// announced chunk at once, at the first spreader that announces it, and its neighbours
    /// reserve at it (see `crate::scheduler`). Below it a node waits its patience and then
    /// asks a holder drawn by upload. See [`SPREADER_SHARE`].
    pub spreader_share: f64,
}

impl Config {
    /// Sensible settings for a viewer's node offering `upload_bps`.
    pub fn viewer(upload_bps: u64) -> Self {
        Self {
            role: Role::Viewer,
            upload_bps,
            // Measured on the reference scenario (N = 300, resource index 1.2): 20 neighbours
            // give 88% continuity where 12 give 84%.
            max_neighbours: 20,
            min_neighbours: 14,
            policy: Policy::Fjord,
            // 0.75 chunk durations, capped: 150 ms at the reference scenario's 250 ms chunks,
            // where it was tuned, and at emu30's 200 ms (see `crate::repair`).
            repair_patience_chunks: 0.75,
            repair_patience_max: Duration::from_millis(150),
            push_horizon: Duration::from_secs(3),
            maintenance_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(20),
            protected_share: 0.25,
            abort_frees_uplink: true,
            urgent_share: 0.2,
            control_overhead: Some(CONTROL_OVERHEAD),
            announce_hold: ANNOUNCE_HOLD,
            spreader_share: SPREADER_SHARE,
        }
    }

    /// Settings for the origin: it serves as many neighbours as it has, highest upload first.
    pub fn origin(upload_bps: u64) -> Self {
        Self {
            role: Role::Origin,
            max_neighbours: 24,
            min_neighbours: 0,
            protected_share: 0.0,
            ..Self::viewer(upload_bps)
        }
    }
}

/// Default [`Config::control_overhead`], bytes: the 4-byte length prefix, and 40 bytes of the
/// 60 or so of IP, UDP and QUIC headers of a packet, which carries 1.5 control messages on
/// average. Measured on the emulator's `emu30` at 80 ms chunks (session 16): a viewer on a
/// 1.12 Mbit/s uplink sent 331 control messages a second in about 218 packets, while its
/// chunks took only 495 kbit/s of the 900 it offered, and its uplink queue still waited
/// 100-140 ms on average over the run: the control traffic on top of the paced chunks
/// overfilled the link (after the warm-up, with this charge, 13-18 ms).
pub const CONTROL_OVERHEAD: usize = 44;

/// Default [`Config::announce_hold`]. Each announcement in a packet of its own cost a slow
/// uplink more than its chunks could spare (emulator, `emu30`: 20 ms sent about 5% more
/// packets from a slow host than 40 ms, whose uplink queue then waited longer; at 80 ms
/// chunks, 10 ms gave 85.0 and 89.6% continuity against 96.4 and 95.6% with 40 ms, the two
/// cores 90-94% busy). Until session 17 the node's link held announcements and the core did
/// not know, so the simulator sent them at once and predicted each hop up to 40 ms early.
pub const ANNOUNCE_HOLD: Duration = Duration::from_millis(40);

/// Default [`Config::spreader_share`]. At 1 (until session 17) `ri12`'s 0.85x class, a third
/// of the peers, neither reserved nor was reserved at, and its uplinks were 69% busy while
/// the faster classes' were 96-99% busy with 300-380 ms queues (simulator, N = 1,000). At
/// 0.8, over 60 s: `ri12` N = 1,000, seeds 1-3, 98.94 / 98.94 / 98.72% -> 98.95 / 98.94 /
/// 98.97%; N = 10,000 (40 s), seeds 1-2, 95.28 / 93.25% -> 95.81 / 94.50%; `ri12-churn`
/// N = 1,000, seeds 1-3, 96.67 / 96.05 / 95.54% -> 97.11 / 96.22 / 96.89%. Duplicates rise
/// from about 1.6% to 1.9-2.6%. 0.7 gave the same figures as 0.8 (no class lies between).
pub const SPREADER_SHARE: f64 = 0.8;

/// Slots accepted beyond `max_neighbours` until the next maintenance trims the worst.
const INCOMING_SLACK: usize = 4;
/// How long a connection attempt may take before the node forgets it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that happened, for the node.
#[derive(Clone, Debug)]
pub enum Input {
    /// A connection to `peer` opened, in either direction. `rtt` is the handshake's RTT, if
    /// the transport measured one.
    PeerUp {
        /// The peer.
        peer: PeerId,
        /// Whether this node dialled.
        outbound: bool,
        /// Handshake round-trip time.
        rtt: Option<Duration>,
    },
    /// A connection attempt this node asked for failed.
    ConnectFailed(PeerId),
    /// The connection to `peer` closed.
    PeerDown(PeerId),
    /// A round-trip time sample (ping).
    Rtt {
        /// The peer.
        peer: PeerId,
        /// The sample.
        rtt: Duration,
    },
    /// A control message arrived.
    Control {
        /// From whom.
        peer: PeerId,
        /// The message.
        msg: Control,
    },
    /// The header of a chunk from `peer` arrived; `len` encoded bytes follow. Unverified: used
    /// only to announce early and to refuse duplicates.
    ChunkIncoming {
        /// From whom.
        peer: PeerId,
        /// What the header says.
        meta: ChunkMeta,
        /// Encoded length of the whole chunk.
        len: usize,
    },
    /// A complete chunk, verified by the caller. `from` is `None` for a chunk published
    /// locally (the origin).
    Chunk {
        /// From whom.
        from: Option<PeerId>,
        /// The chunk.
        chunk: Chunk,
    },
    /// A manifest, verified by the caller.
    Manifest {
        /// From whom (`None`: local).
        from: Option<PeerId>,
        /// The manifest.
        manifest: Manifest,
    },
    /// Peers that could become neighbours (from discovery).
    Candidates(Vec<PeerId>),
}

/// Something for the caller to do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a control message.
    Control {
        /// To whom.
        peer: PeerId,
        /// The message.
        msg: Control,
    },
    /// Send a chunk.
    Chunk {
        /// To whom.
        peer: PeerId,
        /// The chunk.
        chunk: Chunk,
    },
    /// Send the manifest.
    Manifest {
        /// To whom.
        peer: PeerId,
        /// The manifest.
        manifest: Manifest,
    },
    /// Stop sending this chunk to `peer`: it became useless.
    Abort {
        /// To whom it was going.
        peer: PeerId,
        /// Which chunk.
        id: ChunkId,
    },
    /// Open a connection to `peer`.
    Connect(PeerId),
    /// Close the connection to `peer`.
    Disconnect(PeerId),
    /// A chunk is newly complete here: hand it to local playback.
    Deliver(Chunk),
    /// The node wants about this many more candidate peers.
    WantPeers(usize),
}

/// Counters of what the node did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunks stored (first copies).
    pub chunks_received: u64,
    /// Complete copies of chunks already held.
    pub duplicates: u64,
    /// Encoded bytes of those duplicates.
    pub duplicate_bytes: u64,
    /// First copies that arrived after their deadline.
    pub late: u64,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Encoded bytes of chunks sent (aborted ones included, in full).
    pub chunk_bytes_sent: u64,
    /// Transfers aborted because they became useless.
    pub aborted: u64,
    /// Control messages sent.
    pub control_sent: u64,
    /// Bytes of control messages sent.
    pub control_bytes_sent: u64,
    /// Requests sent for overdue chunks.
    pub requests_sent: u64,
    /// Requests served.
    pub requests_served: u64,
}

impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, o: &Stats) {
        self.chunks_received += o.chunks_received;
        self.duplicates += o.duplicates;
        self.duplicate_bytes += o.duplicate_bytes;
        self.late += o.late;
        self.chunks_sent += o.chunks_sent;
        self.chunk_bytes_sent += o.chunk_bytes_sent;
        self.aborted += o.aborted;
        self.control_sent += o.control_sent;
        self.control_bytes_sent += o.control_bytes_sent;
        self.requests_sent += o.requests_sent;
        self.requests_served += o.requests_served;
    }
}

/// Sizes of a node's state, from [`Node::footprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Connected neighbours.
    pub neighbours: usize,
    /// Connection attempts under way.
    pub pending_connects: usize,
    /// Unserved requests, over all neighbours.
    pub requests: usize,
    /// Chunks sent and not yet acknowledged, over all neighbours.
    pub in_flight: usize,
    /// Chunks held.
    pub chunks: usize,
    /// Outputs not yet polled.
    pub outputs: usize,
}

/// One node's state machine. See the module documentation for the call order.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) tracks: Vec<TrackStore>,
    pub(crate) neighbours: Neighbours,
    /// Neighbour slots in push order (best onward value first).
    pub(crate) push_order: Vec<usize>,
    /// Our parent (neighbour slot) per substream.
    pub(crate) parents: [Option<usize>; SUBSTREAMS],
    /// Our lag behind publication per substream, µs (exponential average).
    pub(crate) lag_us: [Option<f64>; SUBSTREAMS],
    /// Bit per neighbour slot whose upload is at least [`Config::spreader_share`] of the stream
    /// rate (the origin excluded).
    pub(crate) spreaders: u64,
    /// Bit per neighbour slot that may have requests queued here: a superset (set when one is
    /// queued, cleared when the scheduler finds the slot's list empty), so that the scheduler,
    /// which runs each time the uplink frees, reads only those neighbours' entries.
    pub(crate) requesters: u64,
    /// Bit per neighbour slot that is the origin, which serves no requests.
    pub(crate) origins: u64,
    /// The scheduler's projection of the request queue, kept to reuse its allocation.
    pub(crate) projection: Vec<crate::scheduler::Projected>,
    /// The origin's uplink time banked for newcomers' first chunks, and when it was last
    /// topped up (see [`crate::scheduler`]).
    pub(crate) newcomer_credit: (Duration, Time),
    /// Seconds of uplink time banked for urgent requests, and when it was last updated (it
    /// goes below zero by the chunk that spent it; see `crate::scheduler`).
    pub(crate) urgent_credit: (f64, Time),
    /// Per substream, the newest chunk held and its publication time.
    pub(crate) newest: [Option<(u64, Time)>; SUBSTREAMS],
    /// Per substream, the neighbour slots subscribed to it from us.
    pub(crate) children: [u64; SUBSTREAMS],
    pub(crate) next_status: Time,
    pending_connects: Vec<(PeerId, Time)>,
    /// When the chunk being sent leaves the uplink, later by the control messages sent
    /// meanwhile, which share the link.
    pub(crate) uplink_free_at: Time,
    /// When the control messages sent while no chunk was on the uplink have left it: the
    /// next chunk starts after them.
    control_free_at: Time,
    /// The time of the input being handled, so that sending a control message can charge
    /// the uplink.
    clock: Time,
    /// The transfer occupying the uplink: (neighbour slot, track, seq).
    pub(crate) current: Option<(usize, usize, u64)>,
    /// Whether to wake when the uplink frees.
    wake_for_uplink: bool,
    next_maintenance: Time,
    pub(crate) next_repair: Option<Time>,
    /// The earliest time a neighbour's held announcements must go.
    next_flush: Option<Time>,
    outputs: VecDeque<Output>,
    pub(crate) stats: Stats,
}

impl Node {
    /// A node with no neighbours and no manifest yet.
    pub fn new(config: Config, seed: u64, now: Time) -> Self {
        Self {
            config,
            rng: Rng::new(seed),
            manifest: None,
            tracks: Vec::new(),
            neighbours: Neighbours::new(),
            push_order: Vec::new(),
            parents: [None; SUBSTREAMS],
            lag_us: [None; SUBSTREAMS],
            children: [0; SUBSTREAMS],
            newest: [None; SUBSTREAMS],
            spreaders: 0,
            requesters: 0,
            origins: 0,
            projection: Vec::new(),
            newcomer_credit: (Duration::ZERO, now),
            urgent_credit: (0.0, now),
            next_status: now,
            pending_connects: Vec::new(),
            uplink_free_at: now,
            control_free_at: now,
            clock: now,
            current: None,
            wake_for_uplink: false,
            next_maintenance: now,
            next_repair: None,
            next_flush: None,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// What the node did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The node's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The manifest in force, once received.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Peers currently connected (greeted or not).
    pub fn neighbours(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.neighbours.iter().map(|(_, n)| n.peer)
    }

    /// Whether the node holds this chunk.
    pub fn has_chunk(&self, id: ChunkId) -> bool {
        self.locate(&id)
            .and_then(|(t, s)| self.tracks[t].get(s))
            .is_some_and(|s| s.chunk.is_some())
    }

    /// How much the node holds: every figure is bounded whatever the input (see the property
    /// tests), which this makes checkable from outside.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            neighbours: self.neighbours.len(),
            pending_connects: self.pending_connects.len(),
            requests: self.neighbours.iter().map(|(_, n)| n.requests.len()).sum(),
            in_flight: self.neighbours.iter().map(|(_, n)| n.in_flight.len()).sum(),
            chunks: self
                .tracks
                .iter()
                .map(|t| {
                    t.live_seqs()
                        .filter(|&s| t.get(s).is_some_and(|s| s.chunk.is_some()))
                        .count()
                })
                .sum(),
            outputs: self.outputs.len(),
        }
    }

    /// A one-line description of the node's state, for debugging.
    pub fn debug_summary(&self) -> String {
        let active = self.neighbours.active().count_ones();
        let heads: Vec<Option<(u64, u64)>> = self.tracks.iter().map(|t| t.range()).collect();
        let inflight: usize = self.neighbours.iter().map(|(_, n)| n.in_flight.len()).sum();
        let reqs: usize = self.neighbours.iter().map(|(_, n)| n.requests.len()).sum();
        let lags: Vec<u64> = self
            .lag_us
            .iter()
            .map(|l| l.map_or(0, |l| (l / 1000.0) as u64))
            .collect();
        format!(
            "active {active} ranges {heads:?} in_flight {inflight} requests {reqs} parents {:?} lags {lags:?} children {}/{}",
            self.parents,
            self.child_load(),
            self.child_capacity()
        )
    }

    /// Diagnostics (the simulator's miss audit): what this node knows of chunk `seq` (of the
    /// first track that describes it; the simulator has one) at `now`, as a short label:
    /// `held`; `no slot` (never announced to it, or fallen out of the window); `never heard`;
    /// `arriving` (a copy under way and still expected); `requested (asked K holders)` (the
    /// last request still pending); `holders not asked yet (asked K)` (waiting for its patience
    /// or its next repair pass); `all holders asked (asked K)` (every neighbour known to hold it
    /// was asked, and none is sending it).
    pub fn debug_chunk_state(&self, now: Time, seq: u64) -> String {
        let Some(s) = self.tracks.iter().find_map(|t| t.get(seq)) else {
            return "no slot".into();
        };
        let asked = s.asked.count_ones();
        let unasked = s.known & self.neighbours.active() & !s.asked & !self.origins;
        if s.chunk.is_some() {
            "held".into()
        } else if s.heard_at.is_none() {
            "never heard".into()
        } else if s.incoming.is_some_and(|(_, until)| now < until) {
            "arriving".into()
        } else if s.requested.is_some_and(|(_, until)| now < until) {
            format!("requested (asked {asked} holders)")
        } else if unasked != 0 {
            format!("holders not asked yet (asked {asked})")
        } else {
            format!("all holders asked (asked {asked})")
        }
    }

    /// The next output to carry out, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called at the latest.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t = self.next_maintenance;
        if self.wake_for_uplink {
            t = t.min(self.uplink_free_at);
        }
        if let Some(r) = self.next_repair {
            t = t.min(r);
        }
        if let Some(f) = self.next_flush {
            t = t.min(f);
        }
        Some(t)
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.clock = now;
        match input {
            Input::PeerUp {
                peer,
                outbound: _,
                rtt,
            } => self.on_peer_up(now, peer, rtt),
            Input::ConnectFailed(peer) => self.pending_connects.retain(|(p, _)| *p != peer),
            Input::PeerDown(peer) => {
                if let Some(slot) = self.neighbours.slot_of(peer) {
                    self.drop_neighbour(now, slot);
                }
            }
            Input::Rtt { peer, rtt } => {
                if let Some(n) = self
                    .neighbours
                    .slot_of(peer)
                    .and_then(|s| self.neighbours.get_mut(s))
                {
                    n.rtt_sample(rtt, false);
                }
            }
            Input::Control { peer, msg } => {
                if let Some(slot) = self.neighbours.slot_of(peer) {
                    self.on_control(now, slot, msg);
                }
            }
            Input::ChunkIncoming { peer, meta, len } => {
                if let Some(slot) = self.neighbours.slot_of(peer) {
                    self.on_incoming(now, slot, &meta, len);
                }
            }
            Input::Chunk { from, chunk } => {
                // A chunk from a peer that is gone by now is still useful: stored as local.
                let slot = from.and_then(|peer| self.neighbours.slot_of(peer));
                self.on_chunk(now, slot, chunk);
            }
            Input::Manifest { from, manifest } => self.on_manifest(now, from, manifest),
            Input::Candidates(peers) => self.on_candidates(now, peers),
        }
        self.try_send(now);
    }

    /// Lets time pass: pacing, repair, maintenance.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        if now >= self.next_maintenance {
            self.maintain(now);
            self.next_maintenance = now + self.config.maintenance_interval;
        }
        if self.next_repair.is_some_and(|t| now >= t) {
            self.repair(now);
        }
        if self.next_flush.is_some_and(|t| now >= t) {
            self.flush_held(now);
        }
        self.try_send(now);
    }

    pub(crate) fn emit(&mut self, out: Output) {
        if let Output::Control { msg, .. } = &out {
            self.stats.control_sent += 1;
            self.stats.control_bytes_sent += msg.encoded_len() as u64;
            if let Some(overhead) = self.config.control_overhead {
                let t = transmission_time(msg.encoded_len() + overhead, self.config.upload_bps);
                if self.clock < self.uplink_free_at {
                    // Interleaved with the chunk on the uplink, which leaves that much later.
                    self.uplink_free_at = self.uplink_free_at + t;
                } else {
                    self.control_free_at = self.control_free_at.max(self.clock) + t;
                }
            }
        }
        self.outputs.push_back(out);
    }

    pub(crate) fn send_control(&mut self, slot: usize, msg: Control) {
        let hold = self.config.announce_hold;
        let clock = self.clock;
        let Some(n) = self.neighbours.get_mut(slot) else {
            return;
        };
        if let Control::Have(id) = msg
            && !hold.is_zero()
            && n.held.len() < crate::neighbours::MAX_HELD
        {
            n.held.push(id);
            if n.hold_until.is_none() {
                let due = clock + hold;
                n.hold_until = Some(due);
                self.next_flush = Some(self.next_flush.map_or(due, |f| f.min(due)));
            }
            return;
        }
        // Whatever else goes to this neighbour takes the held announcements along, ahead of
        // it, as the transport would put them in the same packet.
        self.release_held(slot);
        let peer = self.neighbours.get(slot).map(|n| n.peer);
        if let Some(peer) = peer {
            self.emit(Output::Control { peer, msg });
        }
    }

    /// Sends the announcements held for `slot`.
    fn release_held(&mut self, slot: usize) {
        let Some(n) = self.neighbours.get_mut(slot) else {
            return;
        };
        if n.held.is_empty() {
            return;
        }
        n.hold_until = None;
        let peer = n.peer;
        let held = std::mem::take(&mut n.held);
        for id in &held {
            // It may have announced the chunk to us meanwhile: then it needs no word of ours.
            let known = self
                .locate(id)
                .and_then(|(t, seq)| self.tracks.get(t)?.get(seq))
                .is_some_and(|s| s.known & (1 << slot) != 0);
            if !known {
                self.emit(Output::Control {
                    peer,
                    msg: Control::Have(*id),
                });
            }
        }
        // Give the allocation back, so holding costs nothing per announcement.
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.held = held;
            n.held.clear();
        }
    }

    /// Sends the held announcements that are due, and sets when the next ones are.
    fn flush_held(&mut self, now: Time) {
        let due = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.hold_until.is_some_and(|t| t <= now))
            .fold(0u64, |m, (slot, _)| m | 1 << slot);
        for slot in bits(due) {
            self.release_held(slot);
        }
        self.next_flush = self
            .neighbours
            .iter()
            .filter_map(|(_, n)| n.hold_until)
            .min();
    }

    /// Maps a chunk id to (track index, seq) if it belongs to the current epoch and a track.
    pub(crate) fn locate(&self, id: &ChunkId) -> Option<(usize, u64)> {
        let m = self.manifest.as_ref()?.content();
        if id.epoch != m.epoch {
            return None;
        }
        let t = m.tracks.iter().position(|t| t.id == id.track)?;
        Some((t, id.sequence))
    }

    pub(crate) fn chunk_id(&self, track: usize, seq: u64) -> ChunkId {
        let m = self
            .manifest
            .as_ref()
            .expect("tracks exist only with a manifest")
            .content();
        ChunkId {
            epoch: m.epoch,
            track: m.tracks[track].id,
            sequence: seq,
        }
    }

    /// (chunk duration, target latency) in microseconds.
    pub(crate) fn timing(&self) -> (u64, u64) {
        self.manifest.as_ref().map_or((1, 1), |m| {
            let c = m.content();
            (
                u64::from(c.chunk_duration_us),
                u64::from(c.target_latency_us),
            )
        })
    }

    /// How long a node that does not reserve waits after hearing of a chunk before asking a
    /// holder for it ([`Config::repair_patience_chunks`] chunk durations, at most
    /// [`Config::repair_patience_max`]).
    pub(crate) fn repair_patience(&self) -> Duration {
        let (chunk_us, _) = self.timing();
        Duration::from_micros((chunk_us as f64 * self.config.repair_patience_chunks) as u64)
            .min(self.config.repair_patience_max)
    }

    /// Expected encoded size of a chunk of `track`, from its nominal bit rate.
    pub(crate) fn expected_size(&self, track: usize) -> usize {
        self.manifest.as_ref().map_or(64 * 1024, |m| {
            let c = m.content();
            let bits = u128::from(c.tracks[track].bitrate) * u128::from(c.chunk_duration_us);
            (bits / 8_000_000) as usize + crate::wire::CHUNK_HEADER_LEN + 64
        })
    }

    fn on_peer_up(&mut self, now: Time, peer: PeerId, rtt: Option<Duration>) {
        self.pending_connects.retain(|(p, _)| *p != peer);
        if self.neighbours.slot_of(peer).is_some() {
            return;
        }
        if self.neighbours.len() >= self.config.max_neighbours + INCOMING_SLACK {
            self.emit(Output::Control {
                peer,
                msg: Control::Goodbye(GoodbyeReason::Full),
            });
            self.emit(Output::Disconnect(peer));
            return;
        }
        let protected = self.rng.chance(self.config.protected_share);
        let mut n = Neighbour::new(peer, now, protected);
        if let Some(rtt) = rtt {
            n.rtt_sample(rtt, true);
        }
        let Some(slot) = self.neighbours.insert(n) else {
            self.emit(Output::Disconnect(peer));
            return;
        };
        self.send_control(
            slot,
            Control::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: self.config.role,
                upload_bps: self.config.upload_bps,
            }),
        );
        if let Some(manifest) = self.manifest.clone() {
            self.emit(Output::Manifest { peer, manifest });
        }
    }

    fn on_control(&mut self, now: Time, slot: usize, msg: Control) {
        match msg {
            Control::Hello(hello) => self.on_hello(now, slot, hello),
            Control::Have(id) => {
                if let Some((t, seq)) = self.locate(&id) {
                    self.learn_holder(now, slot, t, seq);
                }
            }
            Control::HaveMap {
                epoch,
                track,
                base,
                bits: map,
            } => {
                let id = ChunkId {
                    epoch,
                    track,
                    sequence: base,
                };
                if let Some((t, _)) = self.locate(&id) {
                    // Newest first: the newest is the one a newcomer wants first, and tells it
                    // which of the others may still be live.
                    for i in (0..64u64).rev().filter(|i| map >> i & 1 == 1) {
                        self.learn_holder(now, slot, t, base.saturating_add(i));
                    }
                }
            }
            Control::Request(id) | Control::Urgent(id) => {
                let urgent = matches!(msg, Control::Urgent(_));
                // A request for a chunk already on its way to the peer is moot.
                let on_its_way = self.locate(&id).is_some_and(|(t, seq)| {
                    self.neighbours
                        .get(slot)
                        .is_some_and(|n| n.in_flight.iter().any(|f| f.track == t && f.seq == seq))
                });
                if on_its_way {
                    return;
                }
                // An explicit request revokes what the peer said before: a Have sent when a
                // transfer started is void if that transfer failed.
                if let Some((t, seq)) = self.locate(&id)
                    && let Some(s) = self.tracks[t].get_mut(seq)
                {
                    s.known &= !(1 << slot);
                    s.cancelled &= !(1 << slot);
                }
                // Under Fjord trees a request is a repair: refuse at once what we cannot serve soon
                // (full, or neither holding the chunk nor receiving it), so the requester asks
                // the next neighbour while there is still time.
                if self.config.policy == Policy::Fjord
                    && self
                        .locate(&id)
                        .is_some_and(|(t, seq)| self.refuses_request(now, slot, t, seq, urgent))
                {
                    self.send_control(slot, Control::Cancel(id));
                    return;
                }
                if self.config.policy == Policy::FjordTrees {
                    let coming = self.locate(&id).is_some_and(|(t, seq)| {
                        self.tracks[t]
                            .get(seq)
                            .is_some_and(|s| s.chunk.is_some() || s.incoming.is_some())
                    });
                    if !coming || self.refuses_trees_request() {
                        self.send_control(slot, Control::Cancel(id));
                        return;
                    }
                }
                if let Some((t, seq)) = self.locate(&id)
                    && let Some(n) = self.neighbours.get_mut(slot)
                    && n.requests.len() < crate::neighbours::MAX_REQUESTS
                    && !n.has_request(t, seq)
                {
                    // Forget marks of requests since served or withdrawn, and this chunk's
                    // earlier mark: a plain request for it now is not urgent.
                    let requests = &n.requests;
                    n.urgent
                        .retain(|r| *r != (t, seq) && requests.iter().any(|q| q.is(r.0, r.1)));
                    n.requests.push(Request {
                        track: t,
                        seq,
                        at: now,
                    });
                    self.requesters |= 1 << slot;
                    if urgent {
                        n.urgent.push((t, seq));
                    }
                }
            }
            Control::Cancel(id) => {
                if let Some((t, seq)) = self.locate(&id) {
                    let (chunk_us, _) = self.timing();
                    if let Some(s) = self.tracks[t].announced_mut(seq, now, chunk_us) {
                        // Never send it to them now, whether they have it or refuse it.
                        s.cancelled |= 1 << slot;
                        s.known |= 1 << slot;
                        // A refused request: ask another holder now.
                        if s.requested.is_some_and(|(j, _)| j as usize == slot) {
                            s.requested = None;
                            self.next_repair = Some(now);
                        }
                    }
                    if let Some(n) = self.neighbours.get_mut(slot) {
                        n.our_requests = n.our_requests.saturating_sub(1);
                    }
                    if let Some(n) = self.neighbours.get_mut(slot) {
                        // Withdrawing its own request: it got the chunk elsewhere, so it is
                        // no newcomer (it may announce nothing to us, who hold it).
                        if n.has_request(t, seq) {
                            n.holds_any = true;
                        }
                        n.drop_request(t, seq);
                    }
                    self.abort_if_current(now, slot, t, seq);
                }
            }
            Control::Ack(id) => {
                if let Some((t, seq)) = self.locate(&id)
                    && let Some(n) = self.neighbours.get_mut(slot)
                    && n.land(t, seq).is_some()
                {
                    n.useful_to += 1;
                    n.last_useful = now;
                }
            }
            Control::Subscribe { substreams } => self.on_subscribe(slot, substreams),
            Control::Refuse { substreams } => self.on_refuse(now, slot, substreams),
            Control::Status { lags_ms, spare } => {
                self.on_status(slot, lags_ms, spare);
                if self.config.policy == Policy::FjordTrees
                    && self.parents.iter().any(Option::is_none)
                {
                    self.choose_parents(now);
                }
            }
            Control::Goodbye(reason) => {
                let peer = self.neighbours.get(slot).map(|n| n.peer);
                self.drop_neighbour(now, slot);
                if let Some(peer) = peer {
                    self.emit(Output::Disconnect(peer));
                }
                // A newcomer asks for candidates now rather than at the next maintenance:
                // refused by its bootstrap peer (full), it otherwise waited up to a
                // maintenance interval before dialling anyone else.
                if reason == GoodbyeReason::Full
                    && self.holds_nothing()
                    && self.neighbours.len() < self.config.min_neighbours
                {
                    self.want_peers();
                }
            }
        }
    }

    fn on_hello(&mut self, now: Time, slot: usize, hello: Hello) {
        let Some(n) = self.neighbours.get_mut(slot) else {
            return;
        };
        if n.hello.is_some() {
            return;
        }
        n.hello = Some(hello);
        // A fixed random factor per link keeps equal-upload neighbours from being served in
        // the same order by every node.
        let jitter = 0.75 + 0.5 * self.rng.unit();
        let stream = self.stream_bps().max(1) as f64;
        let n = self.neighbours.get_mut(slot).expect("checked above");
        n.onward = (hello.upload_bps as f64 / stream).min(8.0) * jitter;
        self.neighbours.set_active(slot);
        self.reorder_push();
        // Tell the newcomer what we hold, one map per track, and (Fjord) how early we are.
        for t in 0..self.tracks.len() {
            if let Some(msg) = self.have_map(t) {
                self.send_control(slot, msg);
            }
        }
        if self.config.policy == Policy::FjordTrees {
            let status = self.status(now);
            self.send_control(slot, status);
        }
    }

    /// The upload from which a node is a spreader ([`Config::spreader_share`] of the stream).
    pub(crate) fn spreader_bps(&self) -> u64 {
        (self.stream_bps() as f64 * self.config.spreader_share) as u64
    }

    /// The stream's total nominal bit rate.
    pub(crate) fn stream_bps(&self) -> u64 {
        self.manifest.as_ref().map_or(0, |m| {
            m.content()
                .tracks
                .iter()
                .map(|t| u64::from(t.bitrate))
                .sum()
        })
    }

    pub(crate) fn have_map(&self, track: usize) -> Option<Control> {
        let store = &self.tracks[track];
        let (lo, hi) = store.range()?;
        let base = lo;
        let mut map = 0u64;
        for seq in lo..=hi.min(lo + 63) {
            if store.get(seq).is_some_and(|s| s.chunk.is_some()) {
                map |= 1 << (seq - base);
            }
        }
        let id = self.chunk_id(track, base);
        (map != 0).then_some(Control::HaveMap {
            epoch: id.epoch,
            track: id.track,
            base,
            bits: map,
        })
    }

    pub(crate) fn reorder_push(&mut self) {
        let mut order: Vec<(usize, f64)> = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.hello.is_some())
            .map(|(i, n)| (i, n.onward))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.push_order = order.into_iter().map(|(i, _)| i).collect();
        let stream = self.stream_bps();
        let slots = |keep: &dyn Fn(&Hello) -> bool| {
            self.neighbours
                .iter()
                .filter(|(_, n)| n.hello.as_ref().is_some_and(keep))
                .fold(0u64, |m, (i, _)| m | 1 << i)
        };
        self.origins = slots(&|h| h.role == Role::Origin);
        // Not the origin: it serves no requests, so a reservation there only earns a refusal.
        let spreads = self.spreader_bps();
        self.spreaders =
            slots(&|h| h.role != Role::Origin && stream > 0 && h.upload_bps >= spreads);
    }

    /// Asks discovery for enough candidates to fill every free neighbour slot.
    pub(crate) fn want_peers(&mut self) {
        let free = self
            .config
            .max_neighbours
            .saturating_sub(self.neighbours.len());
        self.emit(Output::WantPeers(free));
    }

    /// Whether this node holds nothing yet (no track has a verified chunk): it knows no
    /// deadlines, and has reserved nothing.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.tracks.iter().all(|t| t.range().is_none())
    }

    /// Whether chunk `seq` of `track` may still arrive before its deadline, estimated from the
    /// newest chunk heard of while no deadline is known.
    pub(crate) fn may_be_live(&self, now: Time, track: usize, seq: u64) -> bool {
        let (chunk_us, latency_us) = self.timing();
        if self.holds_nothing() {
            let live_back = latency_us.div_ceil(chunk_us.max(1));
            return seq >= self.tracks[track].oldest_live_unanchored(live_back);
        }
        self.tracks[track]
            .deadline(seq, chunk_us, latency_us)
            .is_none_or(|d| now < d)
    }

    /// A neighbour holds (or receives) chunk `seq` of `track`.
    fn learn_holder(&mut self, now: Time, slot: usize, track: usize, seq: u64) {
        let (chunk_us, _) = self.timing();
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.holds_any = true;
        }
        let Some(s) = self.tracks[track].announced_mut(seq, now, chunk_us) else {
            return;
        };
        s.known |= 1 << slot;
        let news = s.chunk.is_none() && s.heard_at.is_none();
        let free = s.chunk.is_none() && s.incoming.is_none() && s.requested.is_none();
        self.tracks[track].mark_heard(seq, now);
        if self.config.policy == Policy::Fjord {
            // Only a node that passes chunks on needs them fast: one with less upload than a
            // spreader's waits its patience and then asks a holder drawn by upload, leaving the
            // spreaders' upload to the spreaders (measured at N = 100 / 1,000: 99.6% / 95.0%
            // continuity against 99.4% / 94.5% when every node reserved at once).
            let passes_on = self.config.upload_bps >= self.spreader_bps();
            // Nothing is reserved that can no longer be live. (Without this, a new neighbour's
            // have-map drew a newcomer's reservation for each of its 50 chunks per track,
            // which it then refused.)
            if free
                && passes_on
                && self.spreaders & (1 << slot) != 0
                && self.may_be_live(now, track, seq)
            {
                // The first spreader to announce the chunk is near the front of its spread:
                // reserve it there at once, so it comes as soon as that neighbour has it.
                self.reserve(now, slot, track, seq);
            } else if news {
                let due = now + self.repair_patience();
                self.next_repair = Some(self.next_repair.map_or(due, |r| r.min(due)));
            }
        }
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.drop_request(track, seq);
        }
        self.abort_if_current(now, slot, track, seq);
    }

    /// Tells the neighbours not known to hold chunk `seq` of `track` that we have it, once: when
    /// it starts arriving, or when it completes. (Announcing at reservation time was tried: it
    /// drew requests to nodes that could not serve them yet and aborted pushes under way.)
    pub(crate) fn announce(&mut self, track: usize, seq: u64) {
        let active = self.neighbours.active();
        let Some(s) = self.tracks[track].get_mut(seq) else {
            return;
        };
        if s.announced {
            return;
        }
        s.announced = true;
        let lacking = active & !s.known;
        let id = self.chunk_id(track, seq);
        for j in bits(lacking) {
            self.send_control(j, Control::Have(id));
        }
    }

    /// Aborts the transfer on the uplink if it is this chunk to this neighbour.
    fn abort_if_current(&mut self, now: Time, slot: usize, track: usize, seq: u64) {
        if self.current == Some((slot, track, seq)) && now < self.uplink_free_at {
            self.current = None;
            if self.config.abort_frees_uplink {
                self.uplink_free_at = now;
            }
            self.stats.aborted += 1;
            let id = self.chunk_id(track, seq);
            if let Some(n) = self.neighbours.get_mut(slot) {
                n.land(track, seq);
                let peer = n.peer;
                self.emit(Output::Abort { peer, id });
            }
        }
    }

    fn on_incoming(&mut self, now: Time, slot: usize, meta: &ChunkMeta, len: usize) {
        let Some((t, seq)) = self.locate(&meta.id()) else {
            return;
        };
        // Fjord trees need no per-chunk announcements: each chunk has one sender per receiver
        // (its substream parent). Mesh pull exchanges buffer maps instead.
        let announce = !matches!(self.config.policy, Policy::FjordTrees | Policy::MeshPull);
        let upload = self.neighbours.get(slot).map_or(0, Neighbour::upload_bps);
        let srtt = self
            .neighbours
            .get(slot)
            .map_or(crate::neighbours::DEFAULT_RTT, |n| n.srtt);
        let cancel_dups = self.config.policy.is_fjord();
        let (chunk_us, _) = self.timing();
        let Some(s) = self.tracks[t].announced_mut(seq, now, chunk_us) else {
            return;
        };
        s.known |= 1 << slot;
        if s.chunk.is_some() || s.incoming.is_some_and(|(from, _)| from as usize != slot) {
            if cancel_dups {
                self.send_control(slot, Control::Cancel(meta.id()));
            }
            return;
        }
        // A copy is coming: a reservation elsewhere for it is no longer needed.
        if let Some((j, _)) = s.requested.take()
            && j as usize != slot
        {
            self.send_control(j as usize, Control::Cancel(meta.id()));
        }
        let Some(s) = self.tracks[t].get_mut(seq) else {
            return;
        };
        let expected =
            now + transmission_time(len, upload.max(1)) * 2 + srtt + Duration::from_millis(100);
        s.incoming = Some((slot as u8, expected));
        self.tracks[t].mark_heard(seq, now);
        if announce {
            self.announce(t, seq);
        }
    }

    fn on_chunk(&mut self, now: Time, from: Option<usize>, chunk: Chunk) {
        let id = chunk.id();
        // No manifest yet, or another epoch (a newer one needs its manifest first).
        let Some((t, seq)) = self.locate(&id) else {
            return;
        };
        if let Some(j) = from {
            self.send_control(j, Control::Ack(id));
        }
        let (_, latency) = self.timing();
        let deadline = Time::from_micros(chunk.meta().published_at_us.saturating_add(latency));
        let len = chunk.len();
        let already = self.tracks[t].get(seq).is_some_and(|s| s.chunk.is_some());
        if already {
            self.stats.duplicates += 1;
            self.stats.duplicate_bytes += len as u64;
            if let (Some(j), Some(s)) = (from, self.tracks[t].get_mut(seq)) {
                s.known |= 1 << j;
            }
            return;
        }
        if !self.tracks[t].insert(chunk.clone(), deadline) {
            return;
        }
        self.stats.chunks_received += 1;
        if now > deadline {
            self.stats.late += 1;
        }
        if from.is_some() {
            let published = Time::from_micros(chunk.meta().published_at_us);
            self.record_lag(now, seq, now.saturating_since(published));
        }
        if let Some(j) = from
            && let Some(n) = self.neighbours.get_mut(j)
        {
            n.useful_from += 1;
            n.last_useful = now;
            if n.our_requests > 0 {
                n.our_requests -= 1;
            }
        }
        // The origin does not announce: its neighbours get its chunks pushed, and it serves no
        // requests.
        let announce = !matches!(self.config.policy, Policy::FjordTrees | Policy::MeshPull)
            && self.config.role != Role::Origin;
        let s = self.tracks[t].get_mut(seq).expect("just inserted");
        if let Some(j) = from {
            s.known |= 1 << j;
        }
        if announce {
            self.announce(t, seq);
        }
        self.emit(Output::Deliver(chunk));
    }

    fn on_manifest(&mut self, _now: Time, _from: Option<PeerId>, manifest: Manifest) {
        let newer = match &self.manifest {
            None => true,
            Some(old) => {
                let (o, n) = (old.content(), manifest.content());
                (n.epoch, n.issued_at_us) > (o.epoch, o.issued_at_us)
            }
        };
        if !newer {
            return;
        }
        let reset = self.manifest.as_ref().is_none_or(|old| {
            let (o, n) = (old.content(), manifest.content());
            o.epoch != n.epoch
                || o.tracks
                    .iter()
                    .map(|t| t.id)
                    .ne(n.tracks.iter().map(|t| t.id))
        });
        if reset {
            self.tracks = (0..manifest.content().tracks.len())
                .map(|_| TrackStore::new())
                .collect();
            for (_, n) in self.neighbours.iter_mut() {
                n.in_flight.clear();
                n.in_flight_bytes = 0;
                n.requests.clear();
            }
            self.current = None;
        }
        self.manifest = Some(manifest.clone());
        let peers: Vec<PeerId> = self.neighbours.iter().map(|(_, n)| n.peer).collect();
        for peer in peers {
            self.emit(Output::Manifest {
                peer,
                manifest: manifest.clone(),
            });
        }
    }

    fn on_candidates(&mut self, now: Time, peers: Vec<PeerId>) {
        self.pending_connects
            .retain(|(_, at)| now.saturating_since(*at) < CONNECT_TIMEOUT);
        for peer in peers {
            let open = self.neighbours.len() + self.pending_connects.len();
            if open >= self.config.max_neighbours {
                break;
            }
            if self.neighbours.slot_of(peer).is_some()
                || self.pending_connects.iter().any(|(p, _)| *p == peer)
            {
                continue;
            }
            self.pending_connects.push((peer, now));
            self.emit(Output::Connect(peer));
        }
    }

    pub(crate) fn drop_neighbour(&mut self, now: Time, slot: usize) {
        if self.neighbours.remove(slot).is_none() {
            return;
        }
        let bit = !(1u64 << slot);
        for store in &mut self.tracks {
            for s in store.slots_mut() {
                s.known &= bit;
                s.cancelled &= bit;
                s.asked &= bit;
                if s.incoming.is_some_and(|(j, _)| j as usize == slot) {
                    s.incoming = None;
                }
                if s.requested.is_some_and(|(j, _)| j as usize == slot) {
                    s.requested = None;
                    self.next_repair = Some(now);
                }
            }
        }
        if self.current.is_some_and(|(j, _, _)| j == slot) {
            self.current = None;
            self.uplink_free_at = self.uplink_free_at.min(now);
        }
        self.reorder_push();
        self.recompute_children();
        if self.parents.contains(&Some(slot)) {
            for p in &mut self.parents {
                if *p == Some(slot) {
                    *p = None;
                }
            }
            self.choose_parents(now);
            self.next_repair = Some(now);
        }
    }

    /// Sends the next chunk if the uplink is free and the policy finds one worth sending.
    pub(crate) fn try_send(&mut self, now: Time) {
        if now < self.uplink_free_at {
            self.wake_for_uplink = true;
            return;
        }
        self.current = None;
        let Some((slot, track, seq)) = self.pick(now) else {
            self.wake_for_uplink = false;
            return;
        };
        let chunk = self.tracks[track]
            .get(seq)
            .and_then(|s| s.chunk.clone())
            .expect("the scheduler picks held chunks only");
        let bytes = chunk.len();
        if let Some(s) = self.tracks[track].get_mut(seq) {
            s.known |= 1 << slot;
        }
        let n = self
            .neighbours
            .get_mut(slot)
            .expect("the scheduler picks live neighbours");
        n.drop_request(track, seq);
        n.holds_any = true;
        n.in_flight.push(InFlight {
            track,
            seq,
            bytes,
            sent_at: now,
        });
        n.in_flight_bytes += bytes;
        let peer = n.peer;
        self.stats.chunks_sent += 1;
        self.stats.chunk_bytes_sent += bytes as u64;
        self.uplink_free_at =
            now.max(self.control_free_at) + transmission_time(bytes, self.config.upload_bps);
        self.current = Some((slot, track, seq));
        self.wake_for_uplink = true;
        self.emit(Output::Chunk { peer, chunk });
    }
}
