//! Property tests of the node state machine: whatever its peers send and however time moves,
//! it never sends an expired chunk, never exceeds a neighbour's window, never sends a chunk to
//! a neighbour that said it has it (Have, HaveMap, Cancel, or receiving it from us) unless that
//! neighbour asked for it since, and stays within fixed memory bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fjord_core::neighbours::{MAX_IN_FLIGHT, MAX_REQUESTS, MAX_SLOTS};
use fjord_core::proto::{Control, Hello, PROTOCOL_VERSION, Role};
use fjord_core::store::WINDOW;
use fjord_core::wire::{
    ChannelKey, Chunk, ChunkFlags, ChunkId, ChunkMeta, Manifest, ManifestContent, Track, TrackKind,
};
use fjord_core::{Config, Input, Node, Output, PeerId, Policy, Time};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const T0: u64 = 1_800_000_000_000_000;
const CHUNK_US: u64 = 250_000;
const LATENCY_US: u64 = 2_000_000;
/// Chunks published, one per CHUNK_US from T0; actions name them relative to the newest.
const CHUNKS: u64 = 1200;
/// How far back from the newest published chunk actions reach.
const REACH: u64 = 24;
const PEERS: u64 = 6;

struct Fixture {
    manifest: Manifest,
    chunks: Vec<Chunk>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = ChannelKey::from_seed(&[9; 32]);
        let manifest = key
            .sign_manifest(&ManifestContent {
                epoch: 1,
                name: "props".into(),
                issued_at_us: T0,
                chunk_duration_us: CHUNK_US as u32,
                group_duration_us: 1_000_000,
                target_latency_us: LATENCY_US as u32,
                tracks: vec![Track {
                    id: 1,
                    kind: TrackKind::Video,
                    codec: "avc1.64001f".into(),
                    timescale: 90_000,
                    bitrate: 800_000,
                    init_segment: Bytes::from_static(b"init"),
                }],
            })
            .unwrap();
        let chunks = (0..CHUNKS)
            .map(|seq| {
                let meta = ChunkMeta {
                    epoch: 1,
                    track: 1,
                    sequence: seq,
                    flags: ChunkFlags::empty(),
                    timestamp: seq * 22_500,
                    duration: 22_500,
                    published_at_us: T0 + seq * CHUNK_US,
                };
                key.sign_chunk(&meta, &vec![0u8; 8_000]).unwrap()
            })
            .collect();
        Fixture { manifest, chunks }
    })
}

#[derive(Clone, Debug)]
enum Action {
    Up(u64),
    Down(u64),
    Hello(u64, u64),
    Have(u64, u64),
    HaveMap(u64, u64, u64),
    Request(u64, u64),
    Urgent(u64, u64),
    Cancel(u64, u64),
    Ack(u64, u64),
    Incoming(u64, u64),
    Chunk(Option<u64>, u64),
    Goodbye(u64),
    Candidates(Vec<u64>),
    Subscribe(u64, u8),
    Refuse(u64, u8),
    Status(u64, u16, u8),
    Advance(u64),
}

fn action() -> impl Strategy<Value = Action> {
    let p = 0..PEERS;
    let s = 0..REACH;
    prop_oneof![
        2 => p.clone().prop_map(Action::Up),
        1 => p.clone().prop_map(Action::Down),
        2 => (p.clone(), 0u64..8_000_000).prop_map(|(p, u)| Action::Hello(p, u)),
        4 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Have(p, s)),
        1 => (p.clone(), s.clone(), any::<u64>()).prop_map(|(p, b, m)| Action::HaveMap(p, b, m)),
        3 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Request(p, s)),
        1 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Urgent(p, s)),
        2 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Cancel(p, s)),
        3 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Ack(p, s)),
        2 => (p.clone(), s.clone()).prop_map(|(p, s)| Action::Incoming(p, s)),
        4 => (prop::option::of(p.clone()), s.clone()).prop_map(|(p, s)| Action::Chunk(p, s)),
        1 => p.clone().prop_map(Action::Goodbye),
        1 => prop::collection::vec(p.clone(), 0..8).prop_map(Action::Candidates),
        2 => (p.clone(), any::<u8>()).prop_map(|(p, m)| Action::Subscribe(p, m)),
        1 => (p.clone(), any::<u8>()).prop_map(|(p, m)| Action::Refuse(p, m)),
        2 => (p, any::<u16>(), any::<u8>()).prop_map(|(p, l, s)| Action::Status(p, l, s)),
        4 => (0u64..200_000).prop_map(Action::Advance),
    ]
}

/// What the test knows of each peer's connection, to judge the node's outputs.
#[derive(Default)]
struct PeerView {
    connected: bool,
    /// Chunks the peer said it has (Have, HaveMap, Cancel) on this connection.
    has: BTreeSet<u64>,
    /// Chunks sent and neither acknowledged nor aborted.
    in_flight: BTreeSet<u64>,
}

struct Harness {
    node: Node,
    now: Time,
    peers: BTreeMap<u64, PeerView>,
    /// Chunks the node sent, so a test can tell the invariants were exercised.
    sent: usize,
}

impl Harness {
    fn new(policy: Policy, role: Role) -> Self {
        let mut config = match role {
            Role::Origin => Config::origin(4_000_000),
            _ => Config::viewer(2_000_000),
        };
        config.policy = policy;
        let now = Time::from_micros(T0);
        let mut h = Self {
            node: Node::new(config, 42, now),
            now,
            peers: BTreeMap::new(),
            sent: 0,
        };
        h.feed(Input::Manifest {
            from: None,
            manifest: fixture().manifest.clone(),
        });
        h
    }

    /// The newest chunk published by now: announcements beyond it would be of chunks that
    /// cannot exist yet.
    fn published(&self) -> u64 {
        ((self.now.as_micros() - T0) / CHUNK_US).min(CHUNKS - 1)
    }

    fn id(seq: u64) -> ChunkId {
        ChunkId {
            epoch: 1,
            track: 1,
            sequence: seq,
        }
    }

    fn control(&mut self, p: u64, msg: Control) {
        if !self.peers.get(&p).is_some_and(|v| v.connected) {
            return;
        }
        let view = self.peers.get_mut(&p).unwrap();
        match msg {
            Control::Have(id) | Control::Cancel(id) => {
                view.has.insert(id.sequence);
            }
            Control::HaveMap { base, bits, .. } => {
                for i in 0..64 {
                    if bits & (1 << i) != 0 {
                        view.has.insert(base + i);
                    }
                }
            }
            Control::Ack(id) => {
                view.in_flight.remove(&id.sequence);
            }
            // A request revokes the peer's earlier claims about that chunk, unless the chunk is
            // already on its way to it.
            Control::Request(id) | Control::Urgent(id)
                if !view.in_flight.contains(&id.sequence) =>
            {
                view.has.remove(&id.sequence);
            }
            _ => {}
        }
        self.feed(Input::Control {
            peer: PeerId(p),
            msg,
        });
    }

    fn step(&mut self, a: Action) {
        let newest = self.published();
        // Actions name chunks by distance from the newest published one.
        let back = |k: u64| newest.saturating_sub(k);
        match a {
            Action::Up(p) => {
                let view = self.peers.entry(p).or_default();
                if !view.connected {
                    *view = PeerView {
                        connected: true,
                        ..PeerView::default()
                    };
                    self.feed(Input::PeerUp {
                        peer: PeerId(p),
                        outbound: false,
                        rtt: Some(Duration::from_millis(40)),
                    });
                }
            }
            Action::Down(p) => {
                if let Some(v) = self.peers.get_mut(&p) {
                    v.connected = false;
                }
                self.feed(Input::PeerDown(PeerId(p)));
            }
            Action::Hello(p, upload_bps) => self.control(
                p,
                Control::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Viewer,
                    upload_bps,
                }),
            ),
            Action::Have(p, s) => self.control(p, Control::Have(Self::id(back(s)))),
            Action::HaveMap(p, base, bits) => {
                let base = back(base);
                let span = newest - base + 1;
                let bits = if span >= 64 {
                    bits
                } else {
                    bits & ((1 << span) - 1)
                };
                self.control(
                    p,
                    Control::HaveMap {
                        epoch: 1,
                        track: 1,
                        base,
                        bits,
                    },
                )
            }
            Action::Request(p, s) => self.control(p, Control::Request(Self::id(back(s)))),
            Action::Urgent(p, s) => self.control(p, Control::Urgent(Self::id(back(s)))),
            Action::Cancel(p, s) => self.control(p, Control::Cancel(Self::id(back(s)))),
            Action::Ack(p, s) => self.control(p, Control::Ack(Self::id(back(s)))),
            Action::Goodbye(p) => {
                self.control(
                    p,
                    Control::Goodbye(fjord_core::proto::GoodbyeReason::Leaving),
                );
            }
            Action::Incoming(p, s) => {
                let s = back(s);
                if self.peers.get(&p).is_some_and(|v| v.connected) {
                    let c = &fixture().chunks[s as usize];
                    self.feed(Input::ChunkIncoming {
                        peer: PeerId(p),
                        meta: *c.meta(),
                        len: c.len(),
                    });
                }
            }
            Action::Chunk(from, s) => {
                let s = back(s);
                let from = from.filter(|p| self.peers.get(p).is_some_and(|v| v.connected));
                self.feed(Input::Chunk {
                    from: from.map(PeerId),
                    chunk: fixture().chunks[s as usize].clone(),
                });
            }
            Action::Subscribe(p, substreams) => self.control(p, Control::Subscribe { substreams }),
            Action::Refuse(p, substreams) => self.control(p, Control::Refuse { substreams }),
            Action::Status(p, lag, spare) => self.control(
                p,
                Control::Status {
                    lags_ms: [lag; fjord_core::proto::SUBSTREAMS],
                    spare,
                },
            ),
            Action::Candidates(ps) => {
                self.feed(Input::Candidates(ps.into_iter().map(PeerId).collect()))
            }
            Action::Advance(us) => {
                self.now = self.now + Duration::from_micros(us);
                if self.node.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.node.handle_timeout(self.now);
                    self.drain();
                }
            }
        }
        let f = self.node.footprint();
        assert!(f.neighbours <= MAX_SLOTS);
        assert!(
            f.neighbours <= self.node.config().max_neighbours + 4,
            "{f:?}"
        );
        assert!(
            f.pending_connects <= self.node.config().max_neighbours,
            "{f:?}"
        );
        assert!(f.requests <= f.neighbours * MAX_REQUESTS, "{f:?}");
        assert!(f.in_flight <= f.neighbours * MAX_IN_FLIGHT, "{f:?}");
        assert!(f.chunks as u64 <= WINDOW, "{f:?}");
        assert_eq!(f.outputs, 0);
    }

    fn feed(&mut self, input: Input) {
        self.node.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Chunk { peer, chunk } => {
                    let seq = chunk.meta().sequence;
                    let deadline = chunk.meta().published_at_us + LATENCY_US;
                    assert!(
                        self.now.as_micros() < deadline,
                        "sent chunk {seq} at {:?}, after its deadline {deadline}",
                        self.now
                    );
                    let view = self.peers.get_mut(&peer.0).expect("sent to a known peer");
                    assert!(view.connected, "sent chunk {seq} to a disconnected peer");
                    assert!(
                        !view.has.contains(&seq),
                        "sent chunk {seq} to peer {} that said it has it",
                        peer.0
                    );
                    assert!(
                        view.in_flight.insert(seq),
                        "sent chunk {seq} twice to one peer"
                    );
                    assert!(
                        view.in_flight.len() <= MAX_IN_FLIGHT,
                        "window exceeded: {} chunks in flight",
                        view.in_flight.len()
                    );
                    // Sending is a promise the peer will have it: never again to this peer.
                    view.has.insert(seq);
                    self.sent += 1;
                }
                Output::Abort { peer, id } => {
                    if let Some(v) = self.peers.get_mut(&peer.0) {
                        v.in_flight.remove(&id.sequence);
                    }
                }
                Output::Disconnect(peer) => {
                    if let Some(v) = self.peers.get_mut(&peer.0) {
                        v.connected = false;
                    }
                }
                _ => {}
            }
        }
    }
}

fn run(policy: Policy, role: Role, actions: Vec<Action>) -> usize {
    let mut h = Harness::new(policy, role);
    for a in actions {
        h.step(a);
    }
    h.sent
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn fjord_viewer_keeps_its_promises(actions in prop::collection::vec(action(), 1..300)) {
        run(Policy::Fjord, Role::Viewer, actions);
    }

    #[test]
    fn fjord_origin_keeps_its_promises(actions in prop::collection::vec(action(), 1..300)) {
        run(Policy::Fjord, Role::Origin, actions);
    }

    #[test]
    fn other_policies_keep_the_same_promises(
        actions in prop::collection::vec(action(), 1..200),
        which in 0..4usize,
        origin in any::<bool>(),
    ) {
        let policy = [
            Policy::FjordTrees,
            Policy::RandomPeerLatestUseful,
            Policy::DeprivedPeerLatestUseful,
            Policy::MeshPull,
        ][which];
        run(policy, if origin { Role::Origin } else { Role::Viewer }, actions);
    }
}

/// A long adversarial run stays within the same bounds: memory does not grow with time.
#[test]
fn long_random_run_stays_bounded() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let actions = prop::collection::vec(action(), 20_000)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    for (policy, role) in [
        (Policy::Fjord, Role::Viewer),
        (Policy::Fjord, Role::Origin),
        (Policy::FjordTrees, Role::Viewer),
        (Policy::FjordTrees, Role::Origin),
        (Policy::RandomPeerLatestUseful, Role::Viewer),
        (Policy::MeshPull, Role::Viewer),
    ] {
        let sent = run(policy, role, actions.clone());
        // The invariants above were checked on real traffic, not on an idle node.
        assert!(sent > 100, "{policy:?} as {role:?} sent only {sent} chunks");
    }
}

/// A Fjord viewer uploading `upload` bit/s that has the manifest at `now`, and no neighbours.
fn fjord_viewer(upload: u64, now: Time) -> Node {
    let mut config = Config::viewer(upload);
    config.policy = Policy::Fjord;
    fjord_node(config, now)
}

/// A node with `config` created at `now`, holding the manifest.
fn fjord_node(config: Config, now: Time) -> Node {
    fjord_node_seeded(config, 1, now)
}

/// [`fjord_node`] with its random generator seeded by `seed`.
fn fjord_node_seeded(config: Config, seed: u64, now: Time) -> Node {
    let mut node = Node::new(config, seed, now);
    node.handle(
        now,
        Input::Manifest {
            from: None,
            manifest: fixture().manifest.clone(),
        },
    );
    node
}

/// [`fjord_viewer`] with `PEERS` greeted neighbours (1 Mbit/s viewers, 40 ms RTT).
fn fjord_viewer_with_peers(upload: u64, now: Time) -> Node {
    greet_peers(fjord_viewer(upload, now), now)
}

/// `node` with `PEERS` greeted neighbours (1 Mbit/s viewers, 40 ms RTT) at `now`.
fn greet_peers(mut node: Node, now: Time) -> Node {
    for p in 0..PEERS {
        node.handle(
            now,
            Input::PeerUp {
                peer: PeerId(p),
                outbound: false,
                rtt: Some(Duration::from_millis(40)),
            },
        );
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg: Control::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Viewer,
                    upload_bps: 1_000_000,
                }),
            },
        );
    }
    node
}

/// [`fjord_viewer_with_peers`] holding `chunks`, its neighbours no newcomers (each announced
/// an old chunk, so none has its first chunk served first), its outputs so far drained.
/// Its control messages take no uplink time: these tests time the request queue in whole
/// chunk copies, and a refusal sent during a copy would otherwise make the copy end later
/// (at the tests' slow uplinks, a `Cancel` takes up to 12 ms).
fn fjord_holder(upload: u64, now: Time, chunks: &[Chunk]) -> Node {
    let config = Config {
        control_overhead: None,
        policy: Policy::Fjord,
        ..Config::viewer(upload)
    };
    hold(greet_peers(fjord_node(config, now), now), now, chunks)
}

/// `node` (with `PEERS` greeted neighbours) holding `chunks` at `now`, its neighbours no
/// newcomers, its outputs so far drained.
fn hold(mut node: Node, now: Time, chunks: &[Chunk]) -> Node {
    for p in 0..PEERS {
        let msg = Control::Have(Harness::id(98));
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg,
            },
        );
    }
    for chunk in chunks {
        node.handle(
            now,
            Input::Chunk {
                from: None,
                chunk: chunk.clone(),
            },
        );
    }
    while node.poll_output().is_some() {}
    node
}

/// Admission by deadline: a Fjord viewer holding a chunk with little slack left takes as many
/// requests for it as it can serve in time (the one on its uplink counts) and refuses the rest
/// with `Cancel` at once, so those requesters can ask another holder while there is time.
/// A Fjord origin of `upload` bit/s started at `start`, with every test peer connected (40 ms
/// RTT) and greeted at 10 Mbit/s; each announces chunk `holds` (so is no newcomer) except
/// `newcomer`, which uploads 100 kbit/s and holds nothing.
fn fjord_origin(upload: u64, seed: u64, start: Time, holds: u64, newcomer: Option<PeerId>) -> Node {
    let mut config = Config::origin(upload);
    config.policy = Policy::Fjord;
    let mut node = Node::new(config, seed, start);
    node.handle(
        start,
        Input::Manifest {
            from: None,
            manifest: fixture().manifest.clone(),
        },
    );
    for p in 0..PEERS {
        let peer = PeerId(p);
        node.handle(
            start,
            Input::PeerUp {
                peer,
                outbound: false,
                rtt: Some(Duration::from_millis(40)),
            },
        );
        let is_newcomer = newcomer == Some(peer);
        let upload_bps = if is_newcomer { 100_000 } else { 10_000_000 };
        let hello = Control::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Viewer,
            upload_bps,
        });
        node.handle(start, Input::Control { peer, msg: hello });
        if !is_newcomer {
            let msg = Control::Have(Harness::id(holds));
            node.handle(start, Input::Control { peer, msg });
        }
    }
    while node.poll_output().is_some() {}
    node
}

#[test]
fn requests_that_cannot_be_served_in_time_are_refused_at_once() {
    let f = fixture();
    let chunk = f.chunks[100].clone();
    let published = chunk.meta().published_at_us;
    // 2 Mbit/s: a copy (about 8.1 kB) takes about 33 ms; 40 ms RTT, so 20 ms one way.
    let upload = 2_000_000u64;
    let copy_us = (chunk.len() as u64 * 8 * 1_000_000).div_ceil(upload);
    // 150 ms of slack when the requests come: room for (150 - 20) / 33 = 3 copies.
    let slack_us = 150_000u64;
    let now = Time::from_micros(published + LATENCY_US - slack_us);
    let mut node = fjord_viewer_with_peers(upload, now);
    node.handle(now, Input::Chunk { from: None, chunk });
    while node.poll_output().is_some() {}
    let id = Harness::id(100);
    for p in 0..PEERS {
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg: Control::Request(id),
            },
        );
    }
    let (mut served, mut refused) = (BTreeSet::new(), BTreeSet::new());
    let mut t = now;
    // Let the uplink work through its queue until the deadline.
    while t.as_micros() < published + LATENCY_US {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Chunk { peer, .. } => {
                    assert!(served.insert(peer.0), "peer {} served twice", peer.0);
                }
                Output::Control {
                    peer,
                    msg: Control::Cancel(c),
                } if c == id => {
                    // Refusals come at once, not when the deadline is near.
                    assert_eq!(t, now, "peer {} refused late", peer.0);
                    refused.insert(peer.0);
                }
                _ => {}
            }
        }
        t = t + Duration::from_micros(1_000);
        node.handle_timeout(t);
    }
    let fits = ((slack_us - 20_000) / copy_us) as usize;
    assert_eq!(served.len(), fits, "served {served:?}, refused {refused:?}");
    assert_eq!(refused.len(), PEERS as usize - fits, "refused {refused:?}");
    assert!(served.is_disjoint(&refused));
}

/// A newcomer's first chunk: a busy Fjord viewer with a queue of requests from neighbours that
/// hold chunks serves the request of a neighbour that holds nothing yet next, and only its
/// first one; its later requests wait their turn like everyone's.
#[test]
fn a_newcomers_first_request_goes_ahead_of_the_queue() {
    let f = fixture();
    let chunk = f.chunks[100].clone();
    let older = f.chunks[99].clone();
    let published = chunk.meta().published_at_us;
    let now = Time::from_micros(published + 10_000);
    let mut node = fjord_viewer_with_peers(2_000_000, now);
    node.handle(
        now,
        Input::Chunk {
            from: None,
            chunk: older,
        },
    );
    node.handle(now, Input::Chunk { from: None, chunk });
    while node.poll_output().is_some() {}
    // Peers 0..4 hold an old chunk (they announced it) and all ask for the two newest; the
    // last peer, a newcomer, asks for them after everyone else.
    let newcomer = PEERS - 1;
    for p in 0..newcomer {
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg: Control::Have(Harness::id(98)),
            },
        );
    }
    for p in 0..PEERS {
        for seq in [100, 99] {
            node.handle(
                now,
                Input::Control {
                    peer: PeerId(p),
                    msg: Control::Request(Harness::id(seq)),
                },
            );
        }
    }
    let mut order = Vec::new();
    let mut t = now;
    while order.len() < 2 * PEERS as usize && t.as_micros() < published + LATENCY_US {
        let mut acks = Vec::new();
        while let Some(out) = node.poll_output() {
            if let Output::Chunk { peer, chunk, .. } = out {
                order.push((peer.0, chunk.meta().id().sequence));
                acks.push((peer, chunk.meta().id()));
            }
        }
        // Each copy lands at once: the window to that peer opens again.
        for (peer, id) in acks {
            node.handle(
                t,
                Input::Control {
                    peer,
                    msg: Control::Ack(id),
                },
            );
        }
        t = t + Duration::from_micros(1_000);
        node.handle_timeout(t);
    }
    // The first request (peer 0's, on the idle uplink) goes at once; the newcomer's newest
    // comes next, ahead of four queued requests for the same chunk.
    assert_eq!(order[0], (0, 100), "order {order:?}");
    assert_eq!(order[1], (newcomer, 100), "order {order:?}");
    // Then strictly newest first: the newcomer's older chunk waits behind everyone's newest.
    let first_99 = order.iter().position(|&(_, s)| s == 99);
    assert_eq!(first_99, Some(PEERS as usize), "order {order:?}");
    assert_eq!(order.len(), 2 * PEERS as usize, "order {order:?}");
}

/// Served newest first, an admitted request for an older chunk can be overtaken by requests
/// for newer ones that come after it. The holder then refuses it as soon as its projected
/// queue says it will be late, the next time its uplink frees, not when the deadline is near.
#[test]
fn an_overtaken_request_is_refused_as_soon_as_it_cannot_be_served() {
    let f = fixture();
    let (older, newer) = (f.chunks[99].clone(), f.chunks[100].clone());
    // 2 Mbit/s: a copy takes about 33 ms; 40 ms RTT, so 20 ms one way.
    let upload = 2_000_000u64;
    let copy = Duration::from_micros((newer.len() as u64 * 8 * 1_000_000).div_ceil(upload));
    // 120 ms left for the older chunk: it fits behind one copy, not behind four.
    let now = Time::from_micros(older.meta().published_at_us + LATENCY_US - 120_000);
    let mut node = fjord_holder(upload, now, &[older, newer]);
    let request = |node: &mut Node, p: u64, seq: u64| {
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg: Control::Request(Harness::id(seq)),
            },
        );
    };
    // Peer 5 holds both (so neither is ours alone, which would make its requests urgent).
    for seq in [99, 100] {
        let msg = Control::Have(Harness::id(seq));
        node.handle(
            now,
            Input::Control {
                peer: PeerId(5),
                msg,
            },
        );
    }
    // Peer 0 takes the uplink; peer 1's request for the older chunk is admitted behind it;
    // then three requests for the newer chunk come, each admitted (its deadline is later).
    request(&mut node, 0, 100);
    request(&mut node, 1, 99);
    for p in 2..5 {
        request(&mut node, p, 100);
    }
    let mut refused_at = None;
    let mut served_99 = false;
    let mut t = now;
    while t < now + Duration::from_millis(120) {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Control {
                    peer,
                    msg: Control::Cancel(c),
                } if c == Harness::id(99) && peer == PeerId(1) => {
                    refused_at.get_or_insert(t);
                }
                Output::Chunk { chunk, .. } if chunk.meta().id() == Harness::id(99) => {
                    served_99 = true;
                }
                _ => {}
            }
        }
        t = t + Duration::from_millis(1);
        node.handle_timeout(t);
    }
    assert!(!served_99, "the overtaken request was served late");
    let at = refused_at.expect("the overtaken request was refused");
    // At the first free uplink (after peer 0's copy), not two copies later.
    assert!(
        at <= now + copy + Duration::from_millis(2),
        "refused {:?} after the requests, a copy takes {copy:?}",
        at.saturating_since(now)
    );
}

/// A node that holds nothing yet asks at once (no patience), only for chunks that may still
/// be live (less than a target latency older than the newest it heard of), and never the
/// origin, which serves no requests.
#[test]
fn a_newcomer_asks_at_once_for_live_chunks_and_never_the_origin() {
    let f = fixture();
    // The newest chunk heard of is 100; `now` is its publication time.
    let newest = 100u64;
    let now = Time::from_micros(f.chunks[newest as usize].meta().published_at_us);
    let mut node = fjord_viewer(2_000_000, now);
    for (p, role) in [(0, Role::Origin), (1, Role::Viewer)] {
        node.handle(
            now,
            Input::PeerUp {
                peer: PeerId(p),
                outbound: true,
                rtt: Some(Duration::from_millis(40)),
            },
        );
        for msg in [
            Control::Hello(Hello {
                version: PROTOCOL_VERSION,
                role,
                upload_bps: 4_000_000,
            }),
            // Both hold the last 64 chunks, up to the newest.
            Control::HaveMap {
                epoch: 1,
                track: 1,
                base: newest - 63,
                bits: u64::MAX,
            },
        ] {
            node.handle(
                now,
                Input::Control {
                    peer: PeerId(p),
                    msg,
                },
            );
        }
    }
    // No time passes: requests must go now, not after the repair patience.
    node.handle_timeout(now);
    let mut asked = BTreeSet::new();
    while let Some(out) = node.poll_output() {
        if let Output::Control {
            peer,
            msg: Control::Request(id),
        } = out
        {
            assert_eq!(peer, PeerId(1), "asked the origin for {id:?}");
            asked.insert(id.sequence);
        }
    }
    // A target latency is 8 chunk durations: chunks 93..=100 may still be live.
    let live_back = LATENCY_US / CHUNK_US;
    let expected: BTreeSet<u64> = (newest + 1 - live_back..=newest).collect();
    assert_eq!(asked, expected);
}

/// Runs `node` from `now` for `span` in 1 ms steps, handing each output to `f` with the time.
fn run_for(node: &mut Node, now: Time, span: Duration, mut f: impl FnMut(Time, Output)) {
    let mut t = now;
    while t < now + span {
        while let Some(out) = node.poll_output() {
            f(t, out);
        }
        t = t + Duration::from_millis(1);
        node.handle_timeout(t);
    }
}

/// For an output about chunk `seq`: `Some(true)` a refusal (`Cancel`), `Some(false)` a copy.
fn refusal_or_copy(out: &Output, seq: u64) -> Option<bool> {
    match out {
        Output::Control {
            msg: Control::Cancel(c),
            ..
        } if *c == Harness::id(seq) => Some(true),
        Output::Chunk { chunk, .. } if chunk.meta().id() == Harness::id(seq) => Some(false),
        _ => None,
    }
}

/// A request that would wait more than two chunk durations in a holder's queue, and still
/// have more than two to spare when served, is refused when the uplink first frees: its
/// requester has time to ask an idle holder instead of waiting here and then asking a second
/// one anyway (a duplicate). A queue within the cap is served whole.
#[test]
fn a_long_wait_with_slack_to_spare_is_refused_at_once() {
    let f = fixture();
    let chunk = f.chunks[100].clone();
    // A copy takes 200 ms and the cap is two chunk durations, 500 ms: of requests that
    // arrive together the third waits 400 ms, a fourth would wait 600.
    let upload = chunk.len() as u64 * 8 * 5;
    let copy = Duration::from_millis(200);
    // Fresh: about 1.9 s of its 2 s target latency left.
    let now = Time::from_micros(chunk.meta().published_at_us + 100_000);
    let run = |requesters: u64| {
        let mut node = fjord_holder(upload, now, std::slice::from_ref(&chunk));
        for p in 0..requesters {
            node.handle(
                now,
                Input::Control {
                    peer: PeerId(p),
                    msg: Control::Request(Harness::id(100)),
                },
            );
        }
        let (mut served, mut refused) = (0, Vec::new());
        run_for(
            &mut node,
            now,
            Duration::from_millis(1500),
            |t, out| match refusal_or_copy(&out, 100) {
                Some(true) => refused.push(t),
                Some(false) => served += 1,
                None => {}
            },
        );
        (served, refused)
    };
    let (served, refused) = run(3);
    assert_eq!((served, refused.len()), (3, 0), "a queue within the cap");
    let (served, refused) = run(PEERS);
    assert_eq!(served, 3, "the queue within the cap is served");
    assert_eq!(refused.len() as u64, PEERS - 3, "the rest is refused");
    for at in refused {
        assert!(
            at <= now + copy + Duration::from_millis(2),
            "refused {:?} after the requests, not when the uplink first freed",
            at.saturating_since(now)
        );
    }
}

/// The cap counts the time a request has already waited, not only what the queue shows when
/// the uplink frees: newest-first service lets each newer chunk's request overtake an older
/// one, so a queue that never looks long can still hold a request until its deadline is near.
/// Here a fresh request for chunk 102 is overtaken by one request for a newer chunk each time
/// the uplink frees; it must be refused once it has waited the cap, while its requester has
/// time to ask elsewhere. (Traced on the emulator after a mass departure: fast holders held a
/// slow requester's request 0.8-1.4 s each before refusing it, four holders in turn, and the
/// chunk was missed.)
#[test]
fn a_request_overtaken_again_and_again_is_refused_once_it_waited_the_cap() {
    let f = fixture();
    let copy = Duration::from_millis(250);
    let upload = f.chunks[102].len() as u64 * 8 * 4;
    let t0 = Time::from_micros(f.chunks[102].meta().published_at_us + 10_000);
    let mut node = fjord_holder(upload, t0, std::slice::from_ref(&f.chunks[102]));
    let victim = PeerId(PEERS - 1);
    // Another neighbour holds 102 too: there is an elsewhere to send its requester to.
    node.handle(
        t0,
        Input::Control {
            peer: PeerId(PEERS - 2),
            msg: Control::Have(Harness::id(102)),
        },
    );
    let request = |node: &mut Node, at: Time, peer: u64, seq: u64| {
        node.handle(
            at,
            Input::Control {
                peer: PeerId(peer),
                msg: Control::Request(Harness::id(seq)),
            },
        );
    };
    request(&mut node, t0, 0, 102);
    let asked = t0 + Duration::from_millis(1);
    request(&mut node, asked, victim.0, 102);
    // Then, 1 ms before each time the uplink frees, one request from another neighbour for
    // the newest chunk, which is always newer than 102 (a copy takes 250 ms, and chunk 103 is
    // published 240 ms after `t0`), so it goes first whatever the neighbours' onward values;
    // the chunks arrive as they are published.
    let mut fate = None;
    let mut t = asked;
    let end = t0 + Duration::from_millis(1900);
    let mut next_chunk = 103;
    let mut k = 0u64;
    while t < end && fate.is_none() {
        t = t + Duration::from_millis(1);
        let seq = next_chunk - 1;
        if f.chunks[next_chunk as usize].meta().published_at_us <= t.as_micros() {
            node.handle(
                t,
                Input::Chunk {
                    from: None,
                    chunk: f.chunks[next_chunk as usize].clone(),
                },
            );
            next_chunk += 1;
        }
        if t.saturating_since(t0) == copy * (k as u32 + 1) - Duration::from_millis(1) {
            assert!(seq > 102, "an overtaking request for an older chunk");
            request(&mut node, t, 1 + k % (PEERS - 2), seq);
            k += 1;
        }
        node.handle_timeout(t);
        while let Some(out) = node.poll_output() {
            let to_victim = matches!(&out, Output::Control { peer, .. } if *peer == victim)
                || matches!(&out, Output::Chunk { peer, .. } if *peer == victim);
            if to_victim && let Some(refused) = refusal_or_copy(&out, 102) {
                fate = Some((refused, t));
            }
        }
    }
    let (refused, at) = fate.expect("neither served nor refused");
    assert!(refused, "served after {:?}", at.saturating_since(asked));
    let cap = Duration::from_micros(CHUNK_US * 2);
    assert!(
        at <= asked + cap + copy,
        "refused {:?} after it was asked, with the cap at {cap:?}",
        at.saturating_since(asked)
    );
}

/// The origin's next push goes to a newcomer (a greeted neighbour holding nothing yet), however
/// little it uploads, while its budget for newcomers lasts; with the budget empty (an origin
/// just started) its pushes follow their usual draw by onward value.
#[test]
fn the_origin_pushes_a_newcomer_its_first_chunk_within_a_budget() {
    let f = fixture();
    let chunk = f.chunks[100].clone();
    let published = Time::from_micros(chunk.meta().published_at_us);
    let newcomer = PeerId(PEERS - 1);
    // The peer that gets the origin's first push, for an origin started at `start`.
    let first_push = |seed: u64, start: Time| {
        let mut node = fjord_origin(4_000_000, seed, start, 98, Some(newcomer));
        node.handle(
            published,
            Input::Chunk {
                from: None,
                chunk: chunk.clone(),
            },
        );
        std::iter::from_fn(|| node.poll_output()).find_map(|o| match o {
            Output::Chunk { peer, .. } => Some(peer),
            _ => None,
        })
    };
    let seeds = 0..20u64;
    let running = published - Duration::from_secs(5);
    for seed in seeds.clone() {
        assert_eq!(first_push(seed, running), Some(newcomer), "seed {seed}");
    }
    let fresh = seeds
        .filter(|&seed| first_push(seed, published) == Some(newcomer))
        .count();
    assert!(
        fresh < 5,
        "with no budget the newcomer got {fresh} of 20 first pushes"
    );
}

/// The origin sends every chunk no neighbour holds before it sends further copies of any
/// chunk: it is the only source of such a chunk. Chunks 99, 100 and 101 come within 2 ms; 99
/// takes the uplink, then 101 (the newest) and 100 get their first copies, and only then do
/// the copies within the quota (four per chunk at four stream rates of upload) go on.
/// Newest-first alone sent 101 four times first, and under a steady stream of chunks such a
/// 100 was never sent at all.
#[test]
fn the_origin_sends_each_chunk_nobody_holds_before_more_copies() {
    let f = fixture();
    let at = |seq: u64| Time::from_micros(T0 + seq * CHUNK_US);
    let mut node = fjord_origin(3_200_000, 5, at(95), 90, None);
    let start = at(101);
    let mut pushes: Vec<u64> = Vec::new();
    let mut acks: Vec<(Time, PeerId, ChunkId)> = Vec::new();
    let mut t = start;
    while t < start + Duration::from_millis(200) {
        let step = t.saturating_since(start).as_millis() as u64;
        if step <= 2 {
            let chunk = f.chunks[99 + step as usize].clone();
            node.handle(t, Input::Chunk { from: None, chunk });
        } else {
            node.handle_timeout(t);
        }
        while let Some(out) = node.poll_output() {
            if let Output::Chunk { peer, chunk } = out {
                pushes.push(chunk.meta().sequence);
                acks.push((t + Duration::from_millis(30), peer, chunk.meta().id()));
            }
        }
        acks.retain(|&(due, peer, id)| {
            if due > t {
                return true;
            }
            let msg = Control::Ack(id);
            node.handle(t, Input::Control { peer, msg });
            false
        });
        t = t + Duration::from_millis(1);
    }
    assert!(pushes.len() >= 4, "{pushes:?}");
    assert_eq!(pushes[..3], [99, 101, 100], "{pushes:?}");
}

/// A copy the origin sent to a neighbour that never acknowledges it (crashed, but its link not
/// yet known to be down) does not count as delivered: the chunk gets another copy from the
/// origin's spare upload, to another neighbour, before its deadline. While that neighbour
/// acknowledges, the spare upload goes to newer chunks and the chunk gets no second copy.
#[test]
fn the_origin_does_not_count_copies_to_a_silent_neighbour() {
    let f = fixture();
    let chunk_bytes = f.chunks[0].len() as u64;
    // 1.25 copies per chunk duration: one copy of each chunk (the quota) and a little to spare.
    let upload = chunk_bytes * 8 * 1_000_000 / CHUNK_US * 5 / 4;
    let at = |seq: u64| Time::from_micros(T0 + seq * CHUNK_US);
    // Chunks 90.. are published in turn; returns the neighbours that got chunk 100, in order.
    let run = |silent_acks: bool| {
        let mut node = fjord_origin(upload, 3, at(85), 80, None);
        let mut got_100: Vec<PeerId> = Vec::new();
        let mut next_seq = 90;
        let mut t = at(90);
        let mut acks: Vec<(Time, PeerId, ChunkId)> = Vec::new();
        while t < at(100) + Duration::from_millis(1500) {
            if t >= at(next_seq) {
                let chunk = f.chunks[next_seq as usize].clone();
                node.handle(t, Input::Chunk { from: None, chunk });
                next_seq += 1;
            } else {
                node.handle_timeout(t);
            }
            while let Some(out) = node.poll_output() {
                if let Output::Chunk { peer, chunk } = out {
                    let id = chunk.meta().id();
                    if id == Harness::id(100) {
                        got_100.push(peer);
                    }
                    // The first receiver of chunk 100 acknowledges nothing from then on, unless
                    // this is the run where it stays alive.
                    let silent = got_100.first() == Some(&peer) && !silent_acks;
                    if !silent {
                        acks.push((t + Duration::from_millis(60), peer, id));
                    }
                }
            }
            acks.retain(|&(due, peer, id)| {
                if due <= t {
                    node.handle(
                        t,
                        Input::Control {
                            peer,
                            msg: Control::Ack(id),
                        },
                    );
                    false
                } else {
                    true
                }
            });
            t = t + Duration::from_millis(1);
        }
        got_100
    };
    let alive = run(true);
    assert_eq!(alive.len(), 1, "an acknowledged copy is enough: {alive:?}");
    let silent = run(false);
    assert!(silent.len() >= 2, "no second copy: {silent:?}");
    assert_ne!(
        silent[0], silent[1],
        "the second copy goes to another neighbour"
    );
}

/// An urgent request (its requester was refused by four holders already) goes ahead of the
/// newest-first order while the holder's budget for them lasts: with 0.4 of the uplink's
/// time banked (400 ms, about 12 copies here) all three go first; with 0.05 (50 ms) the
/// first two do (the second takes the budget below zero), the third waits its turn; with no
/// budget all three wait for the newer chunk's requests, as plain requests do.
#[test]
fn urgent_requests_go_ahead_of_newer_chunks_within_a_budget() {
    let f = fixture();
    let (older, newer) = (f.chunks[99].clone(), f.chunks[100].clone());
    let now = Time::from_micros(newer.meta().published_at_us + 10_000);
    for (share, ahead) in [(0.4, 3), (0.05, 2), (0.0, 0)] {
        let mut config = Config::viewer(2_000_000);
        config.policy = Policy::Fjord;
        config.urgent_share = share;
        // Created a second earlier: the budget is banked when the requests come.
        let node = fjord_node(config, now - Duration::from_secs(1));
        let mut node = hold(greet_peers(node, now), now, &[older.clone(), newer.clone()]);
        // Peer 0 takes the uplink; peers 1 and 2 ask for the newest chunk, peers 3 to 5 send
        // urgent requests for the older one.
        for (p, msg) in [
            (0, Control::Request(Harness::id(100))),
            (1, Control::Request(Harness::id(100))),
            (2, Control::Request(Harness::id(100))),
            (3, Control::Urgent(Harness::id(99))),
            (4, Control::Urgent(Harness::id(99))),
            (5, Control::Urgent(Harness::id(99))),
        ] {
            let peer = PeerId(p);
            node.handle(now, Input::Control { peer, msg });
        }
        let mut order = Vec::new();
        let mut t = now;
        while order.len() < PEERS as usize && t < now + Duration::from_secs(1) {
            let mut acks = Vec::new();
            while let Some(out) = node.poll_output() {
                match out {
                    Output::Chunk { peer, chunk, .. } => {
                        order.push(chunk.meta().id().sequence);
                        acks.push((peer, chunk.meta().id()));
                    }
                    Output::Control {
                        msg: Control::Cancel(c),
                        peer,
                    } => panic!("share {share}: peer {} refused {c:?}", peer.0),
                    _ => {}
                }
            }
            for (peer, id) in acks {
                let msg = Control::Ack(id);
                node.handle(t, Input::Control { peer, msg });
            }
            t = t + Duration::from_millis(1);
            node.handle_timeout(t);
        }
        let mut expected = vec![100];
        expected.extend(std::iter::repeat_n(99, ahead));
        expected.extend([100, 100]);
        expected.extend(std::iter::repeat_n(99, 3 - ahead));
        assert_eq!(order, expected, "share {share}");
    }
}

/// A requester refused by four holders sends its fifth and later asks for that chunk as
/// `Urgent`; the first four are plain requests.
#[test]
fn a_chunk_refused_by_four_holders_is_asked_for_urgently() {
    let f = fixture();
    let id = Harness::id(101);
    let now = Time::from_micros(f.chunks[101].meta().published_at_us + 10_000);
    // It holds chunk 100, so it knows deadlines; every neighbour announces chunk 101.
    let mut node = fjord_holder(2_000_000, now, &[f.chunks[100].clone()]);
    for p in 0..PEERS {
        let msg = Control::Have(id);
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg,
            },
        );
    }
    let mut asks = Vec::new();
    let mut t = now;
    while asks.len() < PEERS as usize && t < now + Duration::from_secs(1) {
        let mut refuse = Vec::new();
        while let Some(out) = node.poll_output() {
            if let Output::Control { peer, msg } = out {
                match msg {
                    Control::Request(c) if c == id => asks.push((peer.0, false)),
                    Control::Urgent(c) if c == id => asks.push((peer.0, true)),
                    _ => continue,
                }
                refuse.push(peer);
            }
        }
        for peer in refuse {
            node.handle(
                t,
                Input::Control {
                    peer,
                    msg: Control::Cancel(id),
                },
            );
        }
        t = t + Duration::from_millis(1);
        node.handle_timeout(t);
    }
    let urgent: Vec<bool> = asks.iter().map(|a| a.1).collect();
    assert_eq!(
        urgent,
        [false, false, false, false, true, true],
        "asks {asks:?}"
    );
    let holders: BTreeSet<u64> = asks.iter().map(|a| a.0).collect();
    assert_eq!(
        holders.len(),
        PEERS as usize,
        "each holder asked once: {asks:?}"
    );
}

/// A node that does not pass chunks on (upload below the stream rate) does not reserve what a
/// neighbour announces: it asks a holder only after its patience, which is a share of the
/// chunk duration (0.6 by default: 150 ms of this fixture's 250 ms chunks), so that the wait
/// which lets a chunk reach more holders first shrinks with shorter chunks.
#[test]
fn a_node_that_does_not_pass_on_asks_after_its_patience_in_chunk_durations() {
    let f = fixture();
    let id = Harness::id(101);
    let heard = Time::from_micros(f.chunks[101].meta().published_at_us + 10_000);
    // 250 ms chunks: the default 0.75 of them is 187 ms, capped at 150 ms.
    for (share, max_ms, expected_ms) in [
        (None, None, 150),
        (Some(0.2), None, 50),
        (Some(0.0), None, 0),
        (Some(0.6), Some(1000), 150),
        (None, Some(100), 100),
    ] {
        let mut config = Config::viewer(500_000);
        config.policy = Policy::Fjord;
        if let Some(s) = share {
            config.repair_patience_chunks = s;
        }
        if let Some(m) = max_ms {
            config.repair_patience_max = Duration::from_millis(m);
        }
        // It holds chunk 100, so it knows deadlines; one neighbour announces chunk 101.
        let mut node = hold(
            greet_peers(fjord_node(config, heard), heard),
            heard,
            &[f.chunks[100].clone()],
        );
        let waited = asked_after_announcement(&mut node, heard, id);
        assert_eq!(
            waited,
            Some(expected_ms),
            "patience share {share:?}, at most {max_ms:?} ms"
        );
    }
}

/// Peer 0 announces `id` to `node` at `heard`: how long after (in ms, within 400) the node
/// first requests it, stepping 1 ms.
fn asked_after_announcement(node: &mut Node, heard: Time, id: ChunkId) -> Option<u128> {
    let msg = Control::Have(id);
    node.handle(
        heard,
        Input::Control {
            peer: PeerId(0),
            msg,
        },
    );
    let mut t = heard;
    while t <= heard + Duration::from_millis(400) {
        node.handle_timeout(t);
        while let Some(out) = node.poll_output() {
            if let Output::Control {
                msg: Control::Request(c) | Control::Urgent(c),
                ..
            } = out
                && c == id
            {
                return Some(t.saturating_since(heard).as_millis());
            }
        }
        t = t + Duration::from_millis(1);
    }
    None
}

/// Control messages share the uplink with chunks (`Config::control_overhead`): those a node
/// sends while a chunk is on its uplink make that chunk end later, and those sent while it is
/// idle delay the next chunk's start, so the next chunk leaves later by their transmission
/// time. Here the greetings and, during the first copy, the announcements of a chunk that
/// arrives then.
#[test]
fn control_messages_delay_the_next_chunk_by_their_transmission_time() {
    let f = fixture();
    let held = [f.chunks[98].clone(), f.chunks[99].clone()];
    let fresh = f.chunks[100].clone();
    let upload = 1_000_000u64;
    let now = Time::from_micros(fresh.meta().published_at_us);
    // Returns when the second chunk left, and the control messages and their bytes sent
    // until then.
    let run = |overhead: Option<usize>| -> (Duration, u64, u64) {
        let config = Config {
            control_overhead: overhead,
            policy: Policy::Fjord,
            ..Config::viewer(upload)
        };
        let mut node = hold(greet_peers(fjord_node(config, now), now), now, &held);
        for (p, seq) in [(0, 98), (1, 99)] {
            let msg = Control::Request(Harness::id(seq));
            node.handle(
                now,
                Input::Control {
                    peer: PeerId(p),
                    msg,
                },
            );
        }
        let mut chunks = 0;
        let mut t = now;
        loop {
            while let Some(out) = node.poll_output() {
                if let Output::Chunk { .. } = out {
                    chunks += 1;
                    if chunks == 2 {
                        let s = node.stats();
                        return (
                            t.saturating_since(now),
                            s.control_sent,
                            s.control_bytes_sent,
                        );
                    }
                    // The fresh chunk arrives while the first copy is on the uplink.
                    let chunk = fresh.clone();
                    node.handle(
                        t,
                        Input::Chunk {
                            from: Some(PeerId(5)),
                            chunk,
                        },
                    );
                }
            }
            assert!(t < now + Duration::from_secs(1), "no second chunk");
            t = t + Duration::from_micros(100);
            node.handle_timeout(t);
        }
    };
    let (plain, ..) = run(None);
    let overhead = fjord_core::node::CONTROL_OVERHEAD as u64;
    let (charged, messages, bytes) = run(Some(overhead as usize));
    assert!(messages > PEERS, "greetings and announcements were sent");
    let wire = bytes + messages * overhead;
    let expected = Duration::from_micros(wire * 8_000_000 / upload);
    // Within the test's 100 µs steps and a µs of rounding per message.
    let late = charged.saturating_sub(plain);
    let slack = Duration::from_micros(100 + messages);
    assert!(
        late + slack >= expected && late <= expected + slack,
        "the second chunk left {late:?} later; {messages} control messages take {expected:?}"
    );
}

/// The refusal of a long wait with slack to spare sends its requester elsewhere, so it waits
/// for an elsewhere: while no other neighbour is known to hold the chunk, its requests are
/// kept (a lone copy refused to every requester is lost to all of them). Once a copy went
/// out, its receiver is one, and the rest of a long queue is refused.
#[test]
fn a_chunk_held_nowhere_else_is_not_refused_for_slack() {
    let f = fixture();
    let (older, chunk) = (f.chunks[99].clone(), f.chunks[100].clone());
    // A copy takes 200 ms: of five requests, the last ones queue past the cap of two chunk
    // durations with more than that to spare (about 1.9 s of the 2 s target are left).
    let upload = chunk.len() as u64 * 8 * 5;
    let now = Time::from_micros(chunk.meta().published_at_us + 100_000);
    let mut node = fjord_holder(upload, now, &[older]);
    // Chunk 100 comes from the origin, which holds it but serves no requests.
    let origin = PeerId(PEERS);
    node.handle(
        now,
        Input::PeerUp {
            peer: origin,
            outbound: true,
            rtt: Some(Duration::from_millis(40)),
        },
    );
    let hello = Control::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Origin,
        upload_bps: 10_000_000,
    });
    node.handle(
        now,
        Input::Control {
            peer: origin,
            msg: hello,
        },
    );
    node.handle(
        now,
        Input::Chunk {
            from: Some(origin),
            chunk,
        },
    );
    while node.poll_output().is_some() {}
    let request = |node: &mut Node, p: u64, seq: u64| {
        let msg = Control::Request(Harness::id(seq));
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg,
            },
        );
    };
    // Another chunk takes the uplink first; then every other peer asks for chunk 100.
    request(&mut node, 0, 99);
    for p in 1..PEERS {
        request(&mut node, p, 100);
    }
    let (mut first_copy, mut refused) = (None, Vec::new());
    run_for(
        &mut node,
        now,
        Duration::from_millis(1500),
        |t, out| match refusal_or_copy(&out, 100) {
            Some(true) => refused.push(t),
            Some(false) => {
                first_copy.get_or_insert(t);
            }
            None => {}
        },
    );
    let first_copy = first_copy.expect("chunk 100 was served");
    assert!(
        !refused.is_empty(),
        "the long queue was refused once a copy was out"
    );
    for at in refused {
        assert!(
            at > first_copy,
            "refused {:?} after the requests, before the first copy ({:?})",
            at.saturating_since(now),
            first_copy.saturating_since(now)
        );
    }
}

/// Served newest first, the requests for an old chunk that no other neighbour holds wait
/// behind every newer one until its deadline, and all its requesters miss it (traced on the
/// emulator: a viewer holding an audio chunk's only copy kept 19 requests for it 2.6 s, then
/// refused them). Once such a chunk is a quarter of the target latency old, its requests go
/// ahead as urgent ones, within the urgent budget.
#[test]
fn an_old_chunk_only_we_hold_is_served_ahead_of_newer_ones() {
    let f = fixture();
    let chunks: Vec<Chunk> = (100..=104).map(|s| f.chunks[s].clone()).collect();
    let start = Time::from_micros(chunks[4].meta().published_at_us);
    let upload = 2_000_000;
    let mut node = fjord_holder(upload, start, &chunks);
    // 300 ms later (the urgent budget has accrued 60 ms): chunk 100 is 1.3 s old, past a
    // quarter of the 2 s target. Peer 5 holds the newer ones, which peers 1-4 ask for.
    let now = start + Duration::from_millis(300);
    let tell = |node: &mut Node, p: u64, msg: Control| {
        node.handle(
            now,
            Input::Control {
                peer: PeerId(p),
                msg,
            },
        );
    };
    for seq in 101..=104 {
        tell(&mut node, 5, Control::Have(Harness::id(seq)));
    }
    for (p, seq) in [(1, 104), (2, 103), (3, 102), (4, 101)] {
        tell(&mut node, p, Control::Request(Harness::id(seq)));
    }
    tell(&mut node, 0, Control::Request(Harness::id(100)));
    let mut served = Vec::new();
    let mut t = now;
    while served.len() < 5 && t < now + Duration::from_secs(1) {
        while let Some(out) = node.poll_output() {
            if let Output::Chunk { chunk, .. } = out {
                served.push(chunk.meta().sequence);
            }
        }
        t = t + Duration::from_millis(1);
        node.handle_timeout(t);
    }
    // The first request took the uplink at once; chunk 100 goes next, then newest first.
    assert_eq!(served, [104, 100, 103, 102, 101]);
}

/// Announcements wait for company (`Config::announce_hold`): a `Have` goes when the hold
/// ends, or ahead of the next other message to the same neighbour, and not at all to a
/// neighbour that announced the chunk meanwhile; with no hold it goes at once. The node's
/// transport used to hold them where the simulator could not see it.
#[test]
fn announcements_wait_for_company_up_to_the_hold() {
    let f = fixture();
    let fresh = f.chunks[100].clone();
    let id = Harness::id(100);
    let at = Time::from_micros(fresh.meta().published_at_us + 5_000);
    let ms = |n: u64| at + Duration::from_millis(n);
    // Each control message to a peer, with when it left.
    let run = |hold: Duration| -> Vec<(Time, u64, Control)> {
        let config = Config {
            announce_hold: hold,
            policy: Policy::Fjord,
            ..Config::viewer(2_000_000)
        };
        let mut node = hold_chunks(config, at);
        let mut sent = Vec::new();
        let mut drain = |node: &mut Node, t: Time| {
            while let Some(out) = node.poll_output() {
                if let Output::Control { peer, msg } = out {
                    sent.push((t, peer.0, msg));
                }
            }
        };
        node.handle(
            at,
            Input::Chunk {
                from: None,
                chunk: fresh.clone(),
            },
        );
        drain(&mut node, at);
        let mut t = at;
        while t < ms(100) {
            t = t + Duration::from_millis(1);
            if t == ms(10) {
                // Peer 1 got it elsewhere and says so.
                let msg = Control::Have(id);
                node.handle(
                    t,
                    Input::Control {
                        peer: PeerId(1),
                        msg,
                    },
                );
            }
            if t == ms(20) {
                // Peer 0 asks for a long-expired chunk, which is refused at once.
                let msg = Control::Request(Harness::id(50));
                node.handle(
                    t,
                    Input::Control {
                        peer: PeerId(0),
                        msg,
                    },
                );
            }
            node.handle_timeout(t);
            drain(&mut node, t);
        }
        sent
    };
    let haves = |sent: &[(Time, u64, Control)]| -> Vec<(Time, u64)> {
        sent.iter()
            .filter(|(_, _, m)| *m == Control::Have(id))
            .map(|(t, p, _)| (*t, *p))
            .collect()
    };

    let held = run(fjord_core::node::ANNOUNCE_HOLD);
    assert_eq!(fjord_core::node::ANNOUNCE_HOLD, Duration::from_millis(40));
    let mut expected = vec![(ms(20), 0)];
    expected.extend((2..PEERS).map(|p| (ms(40), p)));
    assert_eq!(haves(&held), expected, "{held:?}");
    // Peer 0's announcement went just ahead of the refusal that took it along.
    let to_0: Vec<&Control> = held
        .iter()
        .filter(|(_, p, _)| *p == 0)
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(
        to_0,
        [&Control::Have(id), &Control::Cancel(Harness::id(50))],
        "{held:?}"
    );

    let at_once = run(Duration::ZERO);
    let expected: Vec<(Time, u64)> = (0..PEERS).map(|p| (at, p)).collect();
    assert_eq!(haves(&at_once), expected, "{at_once:?}");
}

/// A Fjord node with `config`, `PEERS` greeted neighbours and chunk 99 at `now`, its
/// outputs drained, announcements of chunk 99 included (it got it 50 ms before).
fn hold_chunks(config: Config, now: Time) -> Node {
    let before = Time::from_micros(now.as_micros() - 50_000);
    let mut node = hold(
        greet_peers(fjord_node(config, before), before),
        before,
        &[fixture().chunks[99].clone()],
    );
    node.handle_timeout(now);
    while node.poll_output().is_some() {}
    node
}

/// Spreaders (`Config::spreader_share` of the stream rate, 0.8 by default) reserve an
/// announced chunk at once at the first spreader announcing it; others wait their patience.
/// A node or a neighbour at 0.875 of the stream (700 of 800 kbit/s) now counts, as `ri12`'s
/// 0.85x class does, which at a share of 1 neither reserved nor was reserved at.
#[test]
fn nodes_from_the_spreader_share_of_the_stream_reserve_at_once() {
    let f = fixture();
    let id = Harness::id(101);
    let heard = Time::from_micros(f.chunks[101].meta().published_at_us + 10_000);
    // (own upload, announcing neighbour's upload, spreader share) -> waited ms before asking.
    for (own, theirs, share, expected_ms) in [
        (2_000_000, 1_000_000, None, 0),
        (700_000, 1_000_000, None, 0),
        (2_000_000, 700_000, None, 0),
        (700_000, 1_000_000, Some(1.0), 150),
        (2_000_000, 700_000, Some(1.0), 150),
        (500_000, 1_000_000, None, 150),
        (2_000_000, 500_000, None, 150),
    ] {
        let mut config = Config::viewer(own);
        config.policy = Policy::Fjord;
        if let Some(s) = share {
            config.spreader_share = s;
        }
        // Peer 0 greets with `theirs`, the others at 1 Mbit/s; then it announces 101.
        let mut node = fjord_node(config, heard);
        for p in 0..PEERS {
            let peer = PeerId(p);
            let rtt = Some(Duration::from_millis(40));
            node.handle(
                heard,
                Input::PeerUp {
                    peer,
                    outbound: false,
                    rtt,
                },
            );
            let upload_bps = if p == 0 { theirs } else { 1_000_000 };
            let msg = Control::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Viewer,
                upload_bps,
            });
            node.handle(heard, Input::Control { peer, msg });
        }
        let mut node = hold(node, heard, &[f.chunks[100].clone()]);
        let waited = asked_after_announcement(&mut node, heard, id);
        assert_eq!(
            waited,
            Some(expected_ms),
            "own {own}, theirs {theirs}, share {share:?}"
        );
    }
}

/// A node that does not pass chunks on asks, after its patience, a holder drawn in inverse
/// proportion to upload: the fast holders are the spreaders, whose queues the spreaders'
/// reservations fill, and a slow holder serves at once. Here a holder at 0.75 of the stream
/// rate and one at five times it both announce a chunk; the slow one should be asked about
/// 35 times in 40 (5 in 40 if the draw followed upload).
#[test]
fn repairs_are_asked_of_slow_holders_more_than_fast_ones() {
    let f = fixture();
    let id = Harness::id(101);
    let heard = Time::from_micros(f.chunks[101].meta().published_at_us + 10_000);
    let (fast, slow) = (PeerId(0), PeerId(1));
    let mut asked_slow = 0;
    let trials = 40;
    for seed in 0..trials {
        let config = Config {
            policy: Policy::Fjord,
            ..Config::viewer(500_000)
        };
        let mut node = fjord_node_seeded(config, seed, heard);
        for (peer, upload_bps) in [(fast, 4_000_000), (slow, 600_000)] {
            node.handle(
                heard,
                Input::PeerUp {
                    peer,
                    outbound: false,
                    rtt: Some(Duration::from_millis(40)),
                },
            );
            let hello = Control::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Viewer,
                upload_bps,
            });
            node.handle(heard, Input::Control { peer, msg: hello });
        }
        // The node holds chunk 100, which both announce too (so neither is a newcomer); then
        // both announce the new one.
        node.handle(
            heard,
            Input::Chunk {
                from: None,
                chunk: f.chunks[100].clone(),
            },
        );
        for msg in [Control::Have(Harness::id(100)), Control::Have(id)] {
            for peer in [fast, slow] {
                node.handle(heard, Input::Control { peer, msg });
            }
        }
        let mut asked = None;
        let mut t = heard;
        while asked.is_none() && t <= heard + Duration::from_millis(400) {
            node.handle_timeout(t);
            while let Some(out) = node.poll_output() {
                if let Output::Control {
                    peer,
                    msg: Control::Request(c),
                } = out
                    && c == id
                {
                    asked = Some(peer);
                }
            }
            t = t + Duration::from_millis(1);
        }
        let asked = asked.unwrap_or_else(|| panic!("seed {seed}: nobody asked for the chunk"));
        assert!(
            asked == fast || asked == slow,
            "seed {seed}: asked {asked:?}, no holder"
        );
        asked_slow += u32::from(asked == slow);
    }
    assert!(
        asked_slow >= 30,
        "the slow holder was asked in {asked_slow} of {trials} draws"
    );
}
