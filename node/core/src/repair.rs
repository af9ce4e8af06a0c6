//! Getting what pushes did not bring: requests to holders.
//!
//! # Fjord
//! A chunk the node has heard of (a neighbour announced it) but that has not started arriving
//! [`Config::repair_patience`] later is overdue: the pushes went elsewhere. The node requests it
//! from the holder expected to deliver soonest (lowest one-way delay plus transmission time at
//! the holder's upload, with a penalty for requests already waiting there) and gives that holder
//! a bounded time before asking another. Hopeless chunks (deadline passed) are left alone, and a
//! chunk is never requested from the same neighbour twice. Waiting a little before requesting
//! is what keeps requests from duplicating pushes; asking the fastest holder is what keeps
//! repair inside the deadline.
//!
//! # Mesh pull (CoolStreaming baseline)
//! Every pull interval (two chunk durations), the node sends its buffer map to every neighbour and requests each missing chunk, rarest first,
//! from the holder with the most upload per request already assigned to it.
//!
//! [`Config::repair_patience`]: crate::node::Config::repair_patience

use std::time::Duration;

use crate::neighbours::bits;
use crate::node::{Node, Policy};
use crate::proto::Control;
use crate::time::{Time, transmission_time};

/// Slack added to a request's expected delivery before trying another holder.
const REQUEST_SLACK: Duration = Duration::from_millis(50);

impl Node {
    /// Requests overdue chunks and sets the next time to look again.
    pub(crate) fn repair(&mut self, now: Time) {
        match self.config.policy {
            Policy::Fjord => self.repair_overdue(now),
            Policy::MeshPull => self.pull(now),
            Policy::RandomPeerLatestUseful | Policy::DeprivedPeerLatestUseful => {
                self.next_repair = None;
            }
        }
    }

    fn repair_overdue(&mut self, now: Time) {
        let (chunk_us, latency_us) = self.timing();
        let patience = self.config.repair_patience;
        let active = self.neighbours.active();
        let mut next: Option<Time> = None;
        let mut wake = |t: Time| next = Some(next.map_or(t, |n: Time| n.min(t)));
        for t in 0..self.tracks.len() {
            let size = self.expected_size(t);
            let heard: Vec<u64> = self.tracks[t]
                .live_seqs()
                .filter(|&seq| {
                    self.tracks[t]
                        .get(seq)
                        .is_some_and(|s| s.chunk.is_none() && s.heard_at.is_some())
                })
                .collect();
            for seq in heard {
                let deadline = self.tracks[t].deadline(seq, chunk_us, latency_us);
                let s = self.tracks[t].get_mut(seq).expect("filtered above");
                if deadline.is_some_and(|d| now >= d) {
                    continue;
                }
                if let Some((_, until)) = s.incoming {
                    if now < until {
                        wake(until);
                        continue;
                    }
                    s.incoming = None;
                }
                if let Some((_, until)) = s.requested {
                    if now < until {
                        wake(until);
                        continue;
                    }
                    s.requested = None;
                }
                let due = s.heard_at.expect("filtered above") + patience;
                if now < due {
                    wake(due);
                    continue;
                }
                let holders = s.known & active & !s.asked;
                if holders == 0 {
                    // Nobody left to ask now; look again when announcements may have come.
                    wake(now + patience / 4);
                    continue;
                }
                let Some(j) = self.choose_holder(now, holders, size, deadline) else {
                    continue;
                };
                if let Some(until) = self.reserve(now, j, t, seq) {
                    wake(until);
                }
            }
        }
        self.next_repair = next;
    }

    /// A holder to request `size` bytes from: drawn in proportion to upload among those expected
    /// to deliver before `deadline`, so every holder's upload is used in proportion to what it
    /// offers (always asking the fastest would leave slower uploads idle, and at a resource
    /// index near 1 the mesh cannot spare them). Falls back to the fastest when none fits.
    fn choose_holder(
        &mut self,
        now: Time,
        holders: u64,
        size: usize,
        deadline: Option<Time>,
    ) -> Option<usize> {
        let mut fits = 0u64;
        let mut fastest: Option<(Duration, usize)> = None;
        for j in bits(holders) {
            let Some(n) = self.neighbours.get(j) else {
                continue;
            };
            let expected =
                n.srtt + transmission_time(size, n.upload_bps().max(1)) * (1 + n.our_requests);
            if fastest.is_none_or(|f| expected < f.0) {
                fastest = Some((expected, j));
            }
            if deadline.is_none_or(|d| now + expected * 2 <= d) {
                fits |= 1 << j;
            }
        }
        if fits == 0 {
            return fastest.map(|f| f.1);
        }
        let weight = |j: usize| {
            self.neighbours
                .get(j)
                .map_or(0.0, |n| n.upload_bps() as f64 + 1.0)
        };
        let total: f64 = bits(fits).map(weight).sum();
        let mut x = self.rng.unit() * total;
        let mut chosen = fits.trailing_zeros() as usize;
        for j in bits(fits) {
            chosen = j;
            x -= weight(j);
            if x < 0.0 {
                break;
            }
        }
        Some(chosen)
    }

    /// Requests chunk `seq` of `track` from neighbour `slot` and records the reservation; returns
    /// when the node gives up on it. The wait covers the holder finishing its own copy, a queue
    /// of about one chunk duration there, and the transfer to us.
    pub(crate) fn reserve(
        &mut self,
        now: Time,
        slot: usize,
        track: usize,
        seq: u64,
    ) -> Option<Time> {
        let size = self.expected_size(track);
        let (chunk_us, _) = self.timing();
        let n = self.neighbours.get(slot)?;
        let wait = n.srtt
            + transmission_time(size, n.upload_bps().max(1))
            + Duration::from_micros(chunk_us * 2)
            + REQUEST_SLACK;
        let until = now + wait;
        let s = self.tracks[track].get_mut(seq)?;
        s.requested = Some((slot as u8, until));
        s.asked |= 1 << slot;
        self.next_repair = Some(self.next_repair.map_or(until, |r| r.min(until)));
        self.ask(slot, track, seq);
        Some(until)
    }

    /// Whether to refuse a new request: the origin keeps its upload for injecting new chunks,
    /// and a viewer takes no more requests than it can serve within about one and a half chunk
    /// durations (beyond that the requester does better asking another holder).
    pub(crate) fn refuses_request(&self) -> bool {
        if self.config.role == crate::proto::Role::Origin {
            return true;
        }
        let stream = self.stream_bps().max(1) as f64;
        let capacity = (1.5 * self.config.upload_bps as f64 / stream)
            .floor()
            .max(1.0) as usize;
        let pending: usize = self.neighbours.iter().map(|(_, n)| n.requests.len()).sum();
        pending >= capacity
    }

    fn ask(&mut self, slot: usize, track: usize, seq: u64) {
        let id = self.chunk_id(track, seq);
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.our_requests += 1;
        }
        self.stats.requests_sent += 1;
        self.send_control(slot, Control::Request(id));
    }

    /// The mesh-pull baseline's periodic round: buffer maps out, rarest-first requests.
    fn pull(&mut self, now: Time) {
        let (chunk_us, latency_us) = self.timing();
        let interval = Duration::from_micros(chunk_us * 2);
        let active = self.neighbours.active();
        for t in 0..self.tracks.len() {
            if let Some(map) = self.have_map(t) {
                for j in bits(active) {
                    self.send_control(j, map);
                }
            }
        }
        let mut wanted: Vec<(u32, Time, usize, u64)> = Vec::new();
        for t in 0..self.tracks.len() {
            let Some((lo, hi)) = self.tracks[t].range() else {
                continue;
            };
            for seq in lo..=hi {
                let Some(s) = self.tracks[t].get(seq) else {
                    continue;
                };
                if s.chunk.is_some() || s.requested.is_some_and(|(_, u)| now < u) {
                    continue;
                }
                let Some(deadline) = self.tracks[t].deadline(seq, chunk_us, latency_us) else {
                    continue;
                };
                let holders = s.known & active;
                if holders == 0 || now >= deadline {
                    continue;
                }
                wanted.push((holders.count_ones(), deadline, t, seq));
            }
        }
        wanted.sort_unstable();
        let mut assigned = [0u32; crate::neighbours::MAX_SLOTS];
        for (_, _, t, seq) in wanted {
            let holders = self.tracks[t].get(seq).map_or(0, |s| s.known & active);
            let Some(j) = bits(holders).max_by(|&a, &b| {
                let score = |j: usize| {
                    self.neighbours.get(j).map_or(0.0, |n| {
                        n.upload_bps() as f64 / f64::from(1 + assigned[j] + n.our_requests)
                    })
                };
                score(a).total_cmp(&score(b)).then(b.cmp(&a))
            }) else {
                continue;
            };
            assigned[j] += 1;
            if let Some(s) = self.tracks[t].get_mut(seq) {
                s.requested = Some((j as u8, now + interval * 2));
            }
            self.ask(j, t, seq);
        }
        self.next_repair = Some(now + interval);
    }
}
