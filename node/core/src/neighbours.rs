//! The neighbour table: a bounded slab of slots, each a connected peer and what the node
//! estimates about it. A slot's index is its bit in the per-chunk masks of the store, so "which
//! neighbours lack this chunk" is one mask operation.

use std::time::Duration;

use crate::proto::Hello;
use crate::time::{Time, transmission_time};

/// Most neighbour slots a node can have: the width of the per-chunk bit masks.
pub const MAX_SLOTS: usize = 64;
/// Most unserved requests kept per neighbour; further requests are dropped (the requester
/// retries elsewhere after its timeout).
pub const MAX_REQUESTS: usize = 32;
/// Most chunks in flight to one neighbour, whatever the window in bytes says.
pub const MAX_IN_FLIGHT: usize = 8;
/// RTT assumed before the first sample.
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// An opaque peer identity chosen by the driver (the node maps libp2p peer ids to these, the
/// simulator uses indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

/// A chunk this node sent to a neighbour and that is not yet acknowledged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub(crate) track: usize,
    pub(crate) seq: u64,
    pub(crate) bytes: usize,
    /// When it was handed to the uplink.
    pub(crate) sent_at: Time,
}

/// Beyond its expected acknowledgement (transmission plus two round trips), how long an
/// unacknowledged chunk may wait before its receiver is taken for silent.
pub const ACK_GRACE: Duration = Duration::from_millis(300);

/// A chunk a neighbour asked us for and that we have not sent yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) track: usize,
    pub(crate) seq: u64,
    /// When the request arrived: how long it has waited counts against the queue-wait cap
    /// (see [`crate::scheduler`]).
    pub(crate) at: Time,
}

impl Request {
    /// Whether it asks for chunk `seq` of `track`.
    pub(crate) fn is(&self, track: usize, seq: u64) -> bool {
        self.track == track && self.seq == seq
    }
}

/// One neighbour.
#[derive(Debug)]
pub(crate) struct Neighbour {
    pub(crate) peer: PeerId,
    /// Its Hello, once received; until then it is connected but not active.
    pub(crate) hello: Option<Hello>,
    pub(crate) since: Time,
    pub(crate) srtt: Duration,
    pub(crate) in_flight: Vec<InFlight>,
    pub(crate) in_flight_bytes: usize,
    /// Chunks it asked for that we have not sent yet, in the order asked.
    pub(crate) requests: Vec<Request>,
    /// Which of `requests` it sent as [`Control::Urgent`](crate::proto::Control::Urgent):
    /// pruned to `requests` whenever one is added, so never more than [`MAX_REQUESTS`]; an
    /// entry no longer in `requests` means nothing.
    pub(crate) urgent: Vec<(usize, u64)>,
    /// Push priority: how fast it will spread what it gets (higher first).
    pub(crate) onward: f64,
    /// Kept regardless of its usefulness, so the mesh keeps some random links.
    pub(crate) protected: bool,
    /// First copies of chunks it gave us since the last maintenance.
    pub(crate) useful_from: u32,
    /// Chunks it acknowledged from us since the last maintenance.
    pub(crate) useful_to: u32,
    /// Last time it gave us a first copy or took a chunk from us.
    pub(crate) last_useful: Time,
    /// Our requests to it not yet answered.
    pub(crate) our_requests: u32,
    /// Substreams it subscribed to from us (it is our child for these).
    pub(crate) subscribed: u8,
    /// Substreams we subscribed to from it (it is our parent for these).
    pub(crate) we_subscribed: u8,
    /// Its advertised lag per substream, ms (`u16::MAX`: unknown).
    pub(crate) lags_ms: [u16; crate::proto::SUBSTREAMS],
    /// Its advertised spare subscriptions.
    pub(crate) spare: u8,
    /// When it last refused us.
    pub(crate) refused_at: Option<Time>,
    /// Whether it is known to hold or receive any chunk (it announced one, withdrew a request,
    /// or we sent it one). Until then it is a newcomer waiting for its first chunk.
    pub(crate) holds_any: bool,
    /// Announcements to it held back for company (see [`crate::node::Config::announce_hold`]),
    /// at most [`MAX_HELD`].
    pub(crate) held: Vec<crate::wire::ChunkId>,
    /// When the oldest of `held` must go.
    pub(crate) hold_until: Option<Time>,
}

/// Announcements held for one neighbour at most; one more sends them all at once.
pub const MAX_HELD: usize = 32;

impl Neighbour {
    pub(crate) fn new(peer: PeerId, now: Time, protected: bool) -> Self {
        Self {
            peer,
            hello: None,
            since: now,
            srtt: DEFAULT_RTT,
            in_flight: Vec::new(),
            in_flight_bytes: 0,
            requests: Vec::new(),
            urgent: Vec::new(),
            onward: 0.0,
            protected,
            useful_from: 0,
            useful_to: 0,
            last_useful: now,
            our_requests: 0,
            subscribed: 0,
            we_subscribed: 0,
            lags_ms: [u16::MAX; crate::proto::SUBSTREAMS],
            spare: 0,
            refused_at: None,
            holds_any: false,
            held: Vec::new(),
            hold_until: None,
        }
    }

    /// Folds an RTT sample into the smoothed estimate (RFC 6298 weights).
    pub(crate) fn rtt_sample(&mut self, rtt: Duration, first: bool) {
        self.srtt = if first {
            rtt
        } else {
            (self.srtt * 7 + rtt) / 8
        };
    }

    /// Whether it still waits for its first chunk (see `holds_any`): its newest request is
    /// served first, so that joining does not wait behind a busy holder's queue.
    pub(crate) fn starving(&self) -> bool {
        !self.holds_any
    }

    /// Estimated one-way delay to it.
    pub(crate) fn one_way(&self) -> Duration {
        self.srtt / 2
    }

    /// Whether another chunk of `bytes` may be sent now: the application-level window is about
    /// one bandwidth-delay product of our upload on this path, and never less than one chunk.
    pub(crate) fn window_allows(&self, bytes: usize, upload_bps: u64) -> bool {
        if self.in_flight.is_empty() {
            return true;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return false;
        }
        let bdp = (upload_bps as f64 / 8.0 * self.srtt.as_secs_f64()) as usize;
        self.in_flight_bytes + bytes <= bdp.max(bytes)
    }

    /// Whether it has left a chunk unacknowledged well past the time an acknowledgement takes
    /// (sent at our `upload_bps`, then two round trips and [`ACK_GRACE`]): crashed, most
    /// likely, though its link is not yet known to be down (that takes the transport's idle
    /// timeout, seconds). Copies sent to it are not counted as delivered meanwhile.
    pub(crate) fn silent(&self, now: Time, upload_bps: u64) -> bool {
        self.in_flight.iter().any(|f| {
            let due = f.sent_at
                + transmission_time(f.bytes, upload_bps.max(1))
                + self.srtt * 2
                + ACK_GRACE;
            now > due
        })
    }

    /// Whether it asked for chunk `seq` of `track` and we have not sent it yet.
    pub(crate) fn has_request(&self, track: usize, seq: u64) -> bool {
        self.requests.iter().any(|r| r.is(track, seq))
    }

    /// Forgets its request for chunk `seq` of `track`, if any.
    pub(crate) fn drop_request(&mut self, track: usize, seq: u64) {
        self.requests.retain(|r| !r.is(track, seq));
    }

    /// Removes an in-flight entry, if present.
    pub(crate) fn land(&mut self, track: usize, seq: u64) -> Option<InFlight> {
        let i = self
            .in_flight
            .iter()
            .position(|f| f.track == track && f.seq == seq)?;
        let f = self.in_flight.swap_remove(i);
        self.in_flight_bytes -= f.bytes;
        Some(f)
    }

    /// The upload it advertised, 0 until its Hello.
    pub(crate) fn upload_bps(&self) -> u64 {
        self.hello.map_or(0, |h| h.upload_bps)
    }
}

/// The slab of neighbour slots.
#[derive(Debug, Default)]
pub(crate) struct Neighbours {
    slots: Vec<Option<Neighbour>>,
    /// The peer in each slot, beside the slots: finding a peer's slot is done for every
    /// message, and scanning these few bytes instead of whole neighbours was most of the
    /// time of handling one in the simulator.
    peers: Vec<Option<PeerId>>,
    /// Bit per slot: occupied and its Hello received.
    active: u64,
}

impl Neighbours {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn slot_of(&self, peer: PeerId) -> Option<usize> {
        self.peers.iter().position(|p| *p == Some(peer))
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Neighbour> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Neighbour> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Occupies a free slot; `None` when all [`MAX_SLOTS`] are taken.
    pub(crate) fn insert(&mut self, n: Neighbour) -> Option<usize> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(None);
                self.peers.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        self.peers[slot] = Some(n.peer);
        self.slots[slot] = Some(n);
        Some(slot)
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Neighbour> {
        self.active &= !(1u64 << slot);
        if let Some(p) = self.peers.get_mut(slot) {
            *p = None;
        }
        self.slots.get_mut(slot).and_then(Option::take)
    }

    pub(crate) fn set_active(&mut self, slot: usize) {
        self.active |= 1u64 << slot;
    }

    /// Bit mask of slots that are connected and said Hello.
    pub(crate) fn active(&self) -> u64 {
        self.active
    }

    /// Occupied slots with their index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Neighbour)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|n| (i, n)))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Neighbour)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|n| (i, n)))
    }
}

/// Iterates over the set bits of a mask, lowest first.
pub(crate) fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}
