//! What to send next, each time the uplink frees: the scheduling policies.
//!
//! # Fjord's policy, and why
//! Upload is the scarce resource, and a chunk's value is entirely in arriving before its
//! deadline (publication + target latency). Each time the uplink frees, the node sends one whole
//! chunk to one neighbour, chosen in this order:
//!
//! 1. **Diffusion: fresh chunks to spreaders.** The newest chunk younger than
//!    [`Config::diffusion_age`] that a *spreader* (a neighbour whose upload is at least the
//!    stream rate, so it can pass on at least as much as it takes) lacks, to the spreader with
//!    the highest onward value (its upload, capped, times a fixed per-link random factor).
//!    Newest first because every chunk's spread is exponential in time: starting the newest
//!    early shortens its whole dissemination, while older chunks already have many holders
//!    working on them (the "latest useful" rule that makes rp/lu rate- and delay-optimal).
//!    High-upload receivers first because they re-send fastest: the "snowball" order that
//!    beats log2 N when uploads differ. Spreaders come before requests because they form the
//!    backbone everyone else is served from: a first version served requests first, and under
//!    load the best uploaders spent their whole uplink repairing old chunks while fresh ones
//!    stalled at the first hop, which made more chunks overdue and more requests (measured:
//!    20% continuity at N = 100).
//! 2. **Requests, earliest deadline first.** A request means a neighbour found the chunk
//!    overdue (see [`crate::repair`]); serving it cannot duplicate. A request that can no
//!    longer be served in time is answered with `Cancel`, so the requester turns to another
//!    holder at once.
//! 3. **Everything else, latest useful first**: pushes to any neighbour, low-upload ones
//!    included, of chunks younger than [`Config::push_horizon`].
//!
//! The origin orders differently: its capped upload is the only way new chunks enter the mesh,
//! so it pushes (highest onward value first) and serves requests only when no neighbour lacks a
//! fresh chunk.
//!
//! Never sent: a chunk the neighbour is known to hold (it announced it, it is receiving it from
//! someone, it asked us to stop, or we sent it); a chunk that cannot arrive before its deadline
//! (now + transmission + one-way delay); anything while the neighbour's window of unacknowledged
//! chunks is full. Pushes are limited to chunks younger than [`Config::push_horizon`]: older
//! chunks have holders all around, so a push would likely collide with another; they move by
//! request instead. A transfer that became useless (the receiver got the chunk elsewhere) is
//! aborted.
//!
//! # Baselines
//! The same node runs the published baselines for comparison, as their papers define them:
//! random peer / latest useful chunk, most deprived peer / latest useful chunk (only expired
//! chunks are skipped: no deadline estimate, no requests, no duplicate cancellation), and
//! CoolStreaming-style mesh pull (no pushes; see [`crate::repair`]).
//!
//! [`Config::push_horizon`]: crate::node::Config::push_horizon
//! [`Config::diffusion_age`]: crate::node::Config::diffusion_age

use std::time::Duration;

use crate::neighbours::bits;
use crate::node::{Node, Policy};
use crate::proto::{Control, Role};
use crate::time::{Time, transmission_time};

impl Node {
    /// The next transfer: (neighbour slot, track, seq), or `None` to stay idle.
    pub(crate) fn pick(&mut self, now: Time) -> Option<(usize, usize, u64)> {
        self.manifest.as_ref()?;
        // The origin's upload is the one injection point of every chunk: it pushes fresh chunks
        // first and serves requests only with what is left.
        if self.config.role == Role::Origin {
            if let Some(p) = self.pick_push(now, false, self.config.push_horizon) {
                return Some(p);
            }
            return self.pick_request(now);
        }
        if let Some(p) = self.pick_request(now) {
            return Some(p);
        }
        match self.config.policy {
            // Reservations first; an uplink that would idle pushes instead.
            Policy::Fjord => self.pick_push(now, false, self.config.push_horizon),
            Policy::RandomPeerLatestUseful => self.pick_latest_useful(now, false),
            Policy::DeprivedPeerLatestUseful => self.pick_latest_useful(now, true),
            Policy::MeshPull => None,
        }
    }

    /// Whether `bytes` sent now to neighbour `slot` arrive by `deadline`.
    fn arrives_in_time(&self, now: Time, slot: usize, bytes: usize, deadline: Time) -> bool {
        let Some(n) = self.neighbours.get(slot) else {
            return false;
        };
        now + transmission_time(bytes, self.config.upload_bps) + n.one_way() <= deadline
    }

    /// Earliest-deadline pending request that can still be served in time. Requests that can
    /// no longer be are dropped; requests for chunks not here yet wait for them.
    fn pick_request(&mut self, now: Time) -> Option<(usize, usize, u64)> {
        let fjord = self.config.policy == Policy::Fjord;
        let (chunk_us, _) = self.timing();
        let urgent_slack = Duration::from_micros(chunk_us);
        // Sort key, smallest first: urgent requests by deadline, then (Fjord) the newest chunk
        // to the neighbour with the highest onward value; the baselines serve by deadline.
        let mut best: Option<((bool, u64, i64), usize, usize, u64)> = None;
        let mut dead: Vec<(usize, usize, u64)> = Vec::new();
        for (j, n) in self.neighbours.iter() {
            for &(t, seq) in &n.requests {
                let Some(s) = self.tracks.get(t).and_then(|store| store.get(seq)) else {
                    dead.push((j, t, seq));
                    continue;
                };
                let Some(chunk) = &s.chunk else {
                    continue;
                };
                let arrival =
                    now + transmission_time(chunk.len(), self.config.upload_bps) + n.one_way();
                let in_time = if fjord {
                    arrival <= s.deadline
                } else {
                    now < s.deadline
                };
                if !in_time {
                    dead.push((j, t, seq));
                    continue;
                }
                if !n.window_allows(chunk.len(), self.config.upload_bps) {
                    continue;
                }
                let urgent = !fjord || s.deadline.saturating_since(arrival) < urgent_slack;
                let key = if urgent {
                    (false, s.deadline.as_micros(), 0)
                } else {
                    (
                        true,
                        u64::MAX - chunk.meta().published_at_us,
                        -((n.onward * 1000.0) as i64),
                    )
                };
                if best.is_none_or(|b| key < b.0) {
                    best = Some((key, j, t, seq));
                }
            }
        }
        for (j, t, seq) in dead {
            if let Some(n) = self.neighbours.get_mut(j) {
                n.requests.retain(|r| *r != (t, seq));
            }
            // Say so, so the requester asks someone else at once instead of waiting.
            if fjord {
                let id = self.chunk_id(t, seq);
                self.send_control(j, Control::Cancel(id));
            }
        }
        let (_, j, t, seq) = best?;
        self.stats.requests_served += 1;
        Some((j, t, seq))
    }

    /// Fjord's pushes: the newest useful chunk younger than `max_age`, among spreaders only if
    /// `spreaders`, to a receiver drawn with probability proportional to its onward value.
    ///
    /// Drawn rather than the best every time: all senders around a receiver rank it the same
    /// way, so "always the best" sends every fresh chunk from several senders to the same top
    /// uploader at once, and all but one copy are wasted (measured: about a quarter of all
    /// transfers aborted at N = 100). A weighted draw keeps the snowball bias and spreads the
    /// senders out.
    fn pick_push(
        &mut self,
        now: Time,
        spreaders: bool,
        max_age: Duration,
    ) -> Option<(usize, usize, u64)> {
        let active = if spreaders {
            self.neighbours.active() & self.spreaders
        } else {
            self.neighbours.active()
        };
        if active == 0 {
            return None;
        }
        let mut best: Option<(u64, usize, u64, u64)> = None;
        for (t, store) in self.tracks.iter().enumerate() {
            for s in store.newest_first() {
                let Some(chunk) = &s.chunk else {
                    continue;
                };
                let published = chunk.meta().published_at_us;
                if now.saturating_since(Time::from_micros(published)) > max_age
                    || now >= s.deadline
                    || best.is_some_and(|b| b.0 >= published)
                {
                    break;
                }
                let lacking = active & !s.known & !s.cancelled;
                let eligible = bits(lacking)
                    .filter(|&j| {
                        self.neighbours
                            .get(j)
                            .is_some_and(|n| n.window_allows(chunk.len(), self.config.upload_bps))
                            && self.arrives_in_time(now, j, chunk.len(), s.deadline)
                    })
                    .fold(0u64, |m, j| m | 1 << j);
                if eligible != 0 {
                    best = Some((published, t, s.seq, eligible));
                    break;
                }
            }
        }
        let (_, t, seq, eligible) = best?;
        let weight = |j: usize| self.neighbours.get(j).map_or(0.0, |n| n.onward.max(0.01));
        let total: f64 = bits(eligible).map(weight).sum();
        let mut x = self.rng.unit() * total;
        let mut chosen = eligible.trailing_zeros() as usize;
        for j in bits(eligible) {
            chosen = j;
            x -= weight(j);
            if x < 0.0 {
                break;
            }
        }
        Some((chosen, t, seq))
    }

    /// rp/lu and dp/lu: choose a neighbour that lacks some chunk we hold (at random, or the
    /// one lacking the most), then send it the newest chunk it lacks.
    fn pick_latest_useful(&mut self, now: Time, deprived: bool) -> Option<(usize, usize, u64)> {
        let active = self.neighbours.active();
        let mut lacking_count = [0u32; crate::neighbours::MAX_SLOTS];
        let mut useful = 0u64;
        for store in &self.tracks {
            for s in store.newest_first() {
                if s.chunk.is_none() || now >= s.deadline {
                    continue;
                }
                let lacking = active & !s.known;
                useful |= lacking;
                if deprived {
                    for j in bits(lacking) {
                        lacking_count[j] += 1;
                    }
                }
            }
        }
        let upload = self.config.upload_bps;
        let open: Vec<usize> = bits(useful)
            .filter(|&j| {
                let size = self.expected_size(0);
                self.neighbours
                    .get(j)
                    .is_some_and(|n| n.window_allows(size, upload))
            })
            .collect();
        if open.is_empty() {
            return None;
        }
        let j = if deprived {
            // Ties broken at random so equal neighbours share the upload.
            let most = open.iter().map(|&j| lacking_count[j]).max().unwrap_or(0);
            let tied: Vec<usize> = open
                .iter()
                .copied()
                .filter(|&j| lacking_count[j] == most)
                .collect();
            tied[self.rng.below(tied.len() as u64) as usize]
        } else {
            open[self.rng.below(open.len() as u64) as usize]
        };
        let mut best: Option<(u64, usize, u64)> = None;
        for (t, store) in self.tracks.iter().enumerate() {
            for s in store.newest_first() {
                let Some(chunk) = &s.chunk else {
                    continue;
                };
                if now >= s.deadline || s.known & (1 << j) != 0 {
                    continue;
                }
                let published = chunk.meta().published_at_us;
                if best.is_none_or(|b| published > b.0) {
                    best = Some((published, t, s.seq));
                }
                break;
            }
        }
        best.map(|(_, t, seq)| (j, t, seq))
    }
}
