//! The chunk store: per track, a ring of [`WINDOW`] slots around the live edge.
//!
//! Bounded by construction: a track holds at most [`WINDOW`] slots, [`BEHIND`] at or behind the
//! live edge and [`AHEAD`] beyond it. The edge is the newest chunk known to exist: the newest
//! verified chunk, or a newer one a neighbour announced if its estimated publication time (from
//! a verified chunk and the chunk duration) is not in the future. So a node that fell behind
//! still hears of new chunks, while an announcement of a chunk that cannot exist yet moves
//! nothing. Anything further back is expired, anything further ahead ignored, so no input can
//! grow the store. Each slot also carries what the scheduler needs per chunk: which
//! neighbour slots are known to hold it (`known`, a bit per neighbour slot), where it is coming
//! from, and whether it was requested.

use crate::time::Time;
use crate::wire::Chunk;

/// Slots per track; also the width of the neighbour bit masks' partner, the have-window.
pub const WINDOW: u64 = 64;
/// Slots kept at or behind the head.
pub const BEHIND: u64 = 48;
/// Slots kept beyond the edge, for announced chunks not yet received.
pub const AHEAD: u64 = WINDOW - BEHIND;
/// Clock difference tolerated when judging whether an announced chunk can exist yet.
const PLAUSIBLE_SKEW_US: i128 = 1_000_000;

/// What the node knows about one chunk of a track.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slot {
    /// The sequence number this slot describes; meaningful only when `live`.
    pub(crate) seq: u64,
    pub(crate) live: bool,
    /// The verified chunk, once complete.
    pub(crate) chunk: Option<Chunk>,
    /// Publish time plus target latency; meaningful once the chunk is here (see
    /// [`TrackStore::deadline`] for the estimate before).
    pub(crate) deadline: Time,
    /// Neighbour slots known to hold or receive it, or that we sent it to.
    pub(crate) known: u64,
    /// Neighbour slots that asked us not to send it.
    pub(crate) cancelled: u64,
    /// When we first learned the chunk exists (a neighbour announced it).
    pub(crate) heard_at: Option<Time>,
    /// The neighbour slot a copy is arriving from, and when it should be complete.
    pub(crate) incoming: Option<(u8, Time)>,
    /// The neighbour slot we requested it from, and when we give up on that request.
    pub(crate) requested: Option<(u8, Time)>,
    /// Neighbour slots we already requested it from (not asked twice).
    pub(crate) asked: u64,
    /// Whether we announced it (once: when its first byte arrived, or when it completed).
    pub(crate) announced: bool,
}

impl Slot {
    /// If a copy is still expected (arriving, or requested) at `now`, until when; expectations
    /// that ran out are forgotten, so the chunk can be asked for again.
    pub(crate) fn awaited(&mut self, now: Time) -> Option<Time> {
        for pending in [&mut self.incoming, &mut self.requested] {
            match *pending {
                Some((_, until)) if now < until => return Some(until),
                Some(_) => *pending = None,
                None => {}
            }
        }
        None
    }

    fn reset(&mut self, seq: u64) {
        *self = Slot {
            seq,
            live: true,
            ..Slot::default()
        };
    }
}

/// The window of one track.
#[derive(Debug)]
pub(crate) struct TrackStore {
    /// The live edge: highest sequence number known to exist, once a chunk was verified.
    head: Option<u64>,
    /// A verified (sequence, publish time) pair, for estimating other chunks' deadlines.
    anchor: Option<(u64, Time)>,
    slots: Vec<Slot>,
    /// Bit `seq % WINDOW` is set for every slot that may describe a chunk heard of but not
    /// received: a superset (set when a chunk is heard of, cleared when it arrives or its slot
    /// is recycled), so that the repair scan, which runs several times per chunk received,
    /// reads only those slots instead of the whole live window.
    wanted: u64,
}

impl TrackStore {
    pub(crate) fn new() -> Self {
        Self {
            head: None,
            anchor: None,
            slots: vec![Slot::default(); WINDOW as usize],
            wanted: 0,
        }
    }

    /// Records when the chunk of `seq` was first heard of, if the store describes it. The only
    /// way `heard_at` is set, so that the `wanted` marks cover every chunk heard of.
    pub(crate) fn mark_heard(&mut self, seq: u64, now: Time) {
        if let Some(s) = self.get_mut(seq) {
            s.heard_at.get_or_insert(now);
            self.wanted |= 1 << (seq % WINDOW);
        }
    }

    /// Whether `seq` may be heard of and not received yet; false means surely not.
    pub(crate) fn maybe_wanted(&self, seq: u64) -> bool {
        self.wanted & (1 << (seq % WINDOW)) != 0
    }

    /// The range of sequence numbers the store accepts now.
    pub(crate) fn range(&self) -> Option<(u64, u64)> {
        self.head
            .map(|h| (h.saturating_sub(BEHIND - 1), h.saturating_add(AHEAD)))
    }

    fn in_range(&self, seq: u64) -> bool {
        match self.range() {
            Some((lo, hi)) => (lo..=hi).contains(&seq),
            // Before the first chunk, accept announcements near the first one we hear of.
            None => true,
        }
    }

    /// The slot of `seq` if the store describes it.
    pub(crate) fn get(&self, seq: u64) -> Option<&Slot> {
        let s = &self.slots[(seq % WINDOW) as usize];
        (s.live && s.seq == seq && self.in_range(seq)).then_some(s)
    }

    /// The slot of `seq`, mutable, if the store describes it.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let in_range = self.in_range(seq);
        let s = &mut self.slots[(seq % WINDOW) as usize];
        (s.live && s.seq == seq && in_range).then_some(s)
    }

    /// The slot of a chunk a neighbour announced: as [`TrackStore::slot_mut`], but first moves
    /// the edge forward if the chunk can exist by `now` (see the module documentation).
    pub(crate) fn announced_mut(
        &mut self,
        seq: u64,
        now: Time,
        chunk_us: u64,
    ) -> Option<&mut Slot> {
        if let (Some(h), Some((aseq, at))) = (self.head, self.anchor)
            && seq > h
        {
            let published =
                at.as_micros() as i128 + (seq as i128 - aseq as i128) * chunk_us as i128;
            if published <= now.as_micros() as i128 + PLAUSIBLE_SKEW_US {
                self.head = Some(seq);
            }
        }
        self.slot_mut(seq)
    }

    /// The slot of `seq`, created (recycling an expired one) if `seq` is within range.
    pub(crate) fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        if !self.in_range(seq) {
            return None;
        }
        if self.head.is_none() {
            // Announcements before any verified chunk: keep them within one window of each
            // other so they cannot wipe each other out.
            let newest = self.slots.iter().filter(|s| s.live).map(|s| s.seq).max();
            if newest.is_some_and(|n| seq + BEHIND <= n || seq > n + AHEAD) {
                return None;
            }
        }
        let s = &mut self.slots[(seq % WINDOW) as usize];
        if !(s.live && s.seq == seq) {
            s.reset(seq);
            self.wanted &= !(1 << (seq % WINDOW));
        }
        Some(s)
    }

    /// The deadline of `seq`: exact when the chunk is here, otherwise estimated from a verified
    /// chunk of the track assuming `chunk_duration_us` between consecutive chunks. `None` before
    /// any chunk of the track arrived.
    pub(crate) fn deadline(
        &self,
        seq: u64,
        chunk_duration_us: u64,
        latency_us: u64,
    ) -> Option<Time> {
        if let Some(s) = self.get(seq)
            && s.chunk.is_some()
        {
            return Some(s.deadline);
        }
        let (aseq, at) = self.anchor?;
        let t = at.as_micros() as i128
            + (seq as i128 - aseq as i128) * chunk_duration_us as i128
            + latency_us as i128;
        Some(Time::from_micros(t.clamp(0, u64::MAX as i128) as u64))
    }

    /// The first sequence number whose (estimated) deadline is after `now`, from the anchor;
    /// `None` before any chunk of the track arrived.
    pub(crate) fn first_open_seq(
        &self,
        now: Time,
        chunk_duration_us: u64,
        latency_us: u64,
    ) -> Option<u64> {
        let (aseq, at) = self.anchor?;
        let step = chunk_duration_us.max(1) as i128;
        // deadline(seq) = at + (seq - aseq) * step + latency > now
        let gap = now.as_micros() as i128 - at.as_micros() as i128 - latency_us as i128;
        let k = gap.div_euclid(step) + 1;
        Some((aseq as i128 + k).clamp(0, u64::MAX as i128) as u64)
    }

    /// Stores a verified chunk. Returns false if it falls outside the window (too old) or is
    /// already held. Advances the head and recycles slots that fall behind.
    pub(crate) fn insert(&mut self, chunk: Chunk, deadline: Time) -> bool {
        let seq = chunk.meta().sequence;
        if let Some(h) = self.head
            && seq + BEHIND <= h
        {
            return false;
        }
        if self.head.is_none_or(|h| seq > h) {
            self.head = Some(seq);
        }
        if self.anchor.is_none_or(|(a, _)| seq >= a) {
            self.anchor = Some((seq, Time::from_micros(chunk.meta().published_at_us)));
        }
        let Some(slot) = self.slot_mut(seq) else {
            return false;
        };
        if slot.chunk.is_some() {
            return false;
        }
        slot.chunk = Some(chunk);
        slot.deadline = deadline;
        slot.incoming = None;
        slot.requested = None;
        self.wanted &= !(1 << (seq % WINDOW));
        true
    }

    /// Sequence numbers of the live slots, in no particular order (works before the first
    /// verified chunk too, when only announcements are known).
    pub(crate) fn live_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .filter(|s| s.live && self.in_range(s.seq))
            .map(|s| s.seq)
    }

    /// The oldest sequence number that may still be live when no deadline is known yet
    /// (before the first verified chunk): the newest chunk heard of was published by now, so
    /// one a target latency (`live_back` chunks) older was due by then.
    pub(crate) fn oldest_live_unanchored(&self, live_back: u64) -> u64 {
        self.live_seqs()
            .max()
            .map_or(0, |newest| (newest + 1).saturating_sub(live_back))
    }

    /// Iterates over live slots in the window, newest first.
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = &Slot> + '_ {
        let (lo, hi) = self.range().unwrap_or((1, 0));
        (lo..=hi).rev().filter_map(move |seq| self.get(seq))
    }

    /// All slots, for bulk updates (clearing a departed neighbour's bits).
    pub(crate) fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> + '_ {
        self.slots.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::{TrackStore, WINDOW};
    use crate::time::Time;
    use crate::wire::{ChannelKey, ChunkFlags, ChunkMeta};

    fn chunk(seq: u64) -> crate::wire::Chunk {
        let meta = ChunkMeta {
            epoch: 1,
            track: 0,
            sequence: seq,
            flags: ChunkFlags::empty(),
            timestamp: seq,
            duration: 1,
            published_at_us: 1_000_000 + seq * 250_000,
        };
        ChannelKey::from_seed(&[3; 32])
            .sign_chunk(&meta, &[0u8; 16])
            .unwrap()
    }

    /// The repair scan skips every slot `maybe_wanted` rules out, so it must hold for each
    /// chunk heard of and not received, and stop holding once it is received or its slot is
    /// recycled for another chunk.
    #[test]
    fn wanted_marks_cover_every_chunk_heard_of_and_not_received() {
        let mut store = TrackStore::new();
        assert!(store.insert(chunk(10), Time::from_micros(4_000_000)));
        for seq in [11, 12] {
            assert!(store.slot_mut(seq).is_some());
            store.mark_heard(seq, Time::from_micros(1));
        }
        assert!(store.maybe_wanted(11) && store.maybe_wanted(12));
        assert!(!store.maybe_wanted(10) && !store.maybe_wanted(13));
        // Received: no longer wanted.
        assert!(store.insert(chunk(11), Time::from_micros(4_250_000)));
        assert!(!store.maybe_wanted(11));
        assert!(store.maybe_wanted(12));
        // Chunk 12's slot recycled for a chunk one window later: nothing heard of there yet.
        store.insert(chunk(12 + WINDOW - 10), Time::from_micros(9_000_000));
        let recycled = store.slot_mut(12 + WINDOW).unwrap();
        assert!(recycled.heard_at.is_none());
        assert!(!store.maybe_wanted(12 + WINDOW));
    }
}
