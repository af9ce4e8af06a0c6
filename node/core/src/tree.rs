//! Fjord's delivery trees: one parent per substream, chosen by the child, admitted by the
//! parent.
//!
//! A track is split into [`SUBSTREAMS`] substreams (chunk `seq` belongs to `seq % SUBSTREAMS`).
//! Each node subscribes to one parent per substream, and a parent pushes every chunk of that
//! substream to its subscribers the moment it has it. Each chunk thus reaches each node from
//! exactly one sender: no announcements are needed to avoid duplicates, and no request round
//! trip delays it.
//!
//! # Choosing parents (child side, each maintenance tick)
//! Each node measures its *lag* per substream: how long after publication its chunks arrive
//! (an exponential average), and advertises it with its spare capacity in [`Control::Status`].
//! For each substream a child keeps its parent unless a neighbour with lower lag promises
//! delivery at least [`SWITCH_GAIN`] sooner, where a neighbour's promise is its lag plus the
//! one-way delay plus one chunk's transmission at its upload, plus a small penalty per
//! substream it already serves us (spreading substreams over parents, so losing one parent
//! loses one substream) and one for advertising no spare capacity. Only neighbours *upstream*
//! of us qualify (lower lag, by a margin), which keeps the trees free of loops. The lag counts
//! starvation too (see `Node::effective_lag_us`): measured on arrivals alone, a node that lost
//! its parent near the root found nobody upstream and stayed parentless, and without the
//! upstream rule nodes formed loops that fed each other nothing while their lags stayed low.
//!
//! # Admitting children (parent side)
//! A parent takes subscriptions up to `Node::child_capacity` substreams' worth of its upload.
//! When full, it evicts the substreams
//! of children with a lower onward value (advertised upload) in favour of a higher one, and
//! refuses otherwise ([`Control::Refuse`]). So the best uploaders end up close to the origin,
//! where each copy they receive is multiplied most: the snowball structure, built
//! incrementally.

use std::time::Duration;

use crate::neighbours::bits;
use crate::node::Node;
use crate::proto::{Control, Role, SUBSTREAMS};
use crate::time::{Time, transmission_time};

/// A new parent must promise delivery at least this much sooner than the current one.
pub const SWITCH_GAIN: Duration = Duration::from_millis(50);
/// Added to a candidate's promise per substream it already serves us.
const SPREAD_PENALTY: Duration = Duration::from_millis(30);
/// A parent must be at least this much earlier than us.
const UPSTREAM_MARGIN: Duration = Duration::from_millis(20);
/// Added to the promise of a neighbour that advertised no spare capacity.
const FULL_PENALTY: Duration = Duration::from_millis(200);
/// A neighbour that refused us is not asked again for this long.
const REFUSAL_MEMORY: Duration = Duration::from_secs(2);
/// Weight of a new sample in the lag average.
const LAG_WEIGHT: f64 = 0.1;
/// Interval of status messages.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The substream of a chunk.
pub(crate) fn substream(seq: u64) -> usize {
    (seq % SUBSTREAMS as u64) as usize
}

impl Node {
    /// Substream subscriptions this node can serve: its upload in substream rates, rounded
    /// down. (Keeping 10% back for repairs was tried: with rounding it left the reference
    /// scenario, resource index 1.2, with about one subscription slot per substream a peer
    /// needs, and trees could not form.)
    pub(crate) fn child_capacity(&self) -> usize {
        let stream = self.stream_bps();
        if stream == 0 {
            return 0;
        }
        let share = 1.0;
        let per_substream = stream as f64 / SUBSTREAMS as f64;
        (share * self.config.upload_bps as f64 / per_substream).floor() as usize
    }

    /// Substream subscriptions currently served.
    pub(crate) fn child_load(&self) -> usize {
        self.neighbours
            .iter()
            .map(|(_, n)| n.subscribed.count_ones() as usize)
            .sum()
    }

    /// Rebuilds the per-substream masks of children.
    pub(crate) fn recompute_children(&mut self) {
        let mut children = [0u64; SUBSTREAMS];
        for (slot, n) in self.neighbours.iter() {
            for k in bits(u64::from(n.subscribed)) {
                children[k] |= 1 << slot;
            }
        }
        self.children = children;
    }

    /// A neighbour asks for these substreams.
    pub(crate) fn on_subscribe(&mut self, slot: usize, mask: u8) {
        let mask = mask & ((1 << SUBSTREAMS) - 1) as u8;
        let Some(n) = self.neighbours.get_mut(slot) else {
            return;
        };
        let old = n.subscribed;
        n.subscribed = mask;
        let onward = n.onward;
        let capacity = self.child_capacity();
        let mut load = self.child_load();
        if load > capacity {
            // Evict lower-onward children, lowest first, one substream at a time.
            let mut victims: Vec<(f64, usize)> = self
                .neighbours
                .iter()
                .filter(|(j, v)| *j != slot && v.subscribed != 0 && v.onward < onward)
                .map(|(j, v)| (v.onward, j))
                .collect();
            victims.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, j) in victims {
                if load <= capacity {
                    break;
                }
                let v = self.neighbours.get_mut(j).expect("listed above");
                let mut dropped = 0u8;
                while v.subscribed != 0 && load > capacity {
                    let bit = v.subscribed & v.subscribed.wrapping_neg();
                    v.subscribed &= !bit;
                    dropped |= bit;
                    load -= 1;
                }
                self.send_control(
                    j,
                    Control::Refuse {
                        substreams: dropped,
                    },
                );
            }
        }
        if load > capacity {
            // Still full: refuse the newly asked substreams that do not fit.
            let n = self.neighbours.get_mut(slot).expect("checked above");
            let mut refused = 0u8;
            let mut added = mask & !old;
            while added != 0 && load > capacity {
                let bit = added & added.wrapping_neg();
                added &= !bit;
                n.subscribed &= !bit;
                refused |= bit;
                load -= 1;
            }
            if refused != 0 {
                self.send_control(
                    slot,
                    Control::Refuse {
                        substreams: refused,
                    },
                );
            }
        }
        self.recompute_children();
    }

    /// A parent refused (or dropped) these substreams.
    pub(crate) fn on_refuse(&mut self, now: Time, slot: usize, mask: u8) {
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.we_subscribed &= !mask;
            n.refused_at = Some(now);
        }
        for k in 0..SUBSTREAMS {
            if mask & (1 << k) != 0 && self.parents[k] == Some(slot) {
                self.parents[k] = None;
            }
        }
        self.choose_parents(now);
    }

    /// A neighbour's status.
    pub(crate) fn on_status(&mut self, slot: usize, lags_ms: [u16; SUBSTREAMS], spare: u8) {
        if let Some(n) = self.neighbours.get_mut(slot) {
            n.lags_ms = lags_ms;
            n.spare = spare;
        }
    }

    /// Our lag for substream `k` at `now`, µs: the average delay of its chunks, but at least the
    /// age of the next chunk of it we lack. The second term is what makes a starving node's lag
    /// grow: measured only on arrivals, the lag of a node cut off from the origin (its parent
    /// gone, or a loop of nodes feeding each other nothing) would stay low forever, and nobody
    /// would ever switch away.
    pub(crate) fn effective_lag_us(&self, k: usize, now: Time) -> Option<f64> {
        if self.config.role == Role::Origin {
            return Some(0.0);
        }
        let average = self.lag_us[k]?;
        let (chunk_us, _) = self.timing();
        let overdue = self.newest[k].map_or(0.0, |(_, published)| {
            let next = published + Duration::from_micros(chunk_us * SUBSTREAMS as u64);
            now.saturating_since(next).as_micros() as f64
        });
        Some(average.max(overdue))
    }

    /// Our lag per substream, in ms, as advertised.
    fn advertised_lags(&self, now: Time) -> [u16; SUBSTREAMS] {
        let mut out = [u16::MAX; SUBSTREAMS];
        for (k, l) in out.iter_mut().enumerate() {
            if let Some(us) = self.effective_lag_us(k, now) {
                *l = (us / 1000.0).min(f64::from(u16::MAX - 1)) as u16;
            }
        }
        out
    }

    /// Our status message.
    pub(crate) fn status(&self, now: Time) -> Control {
        let spare = self.child_capacity().saturating_sub(self.child_load());
        Control::Status {
            lags_ms: self.advertised_lags(now),
            spare: spare.min(usize::from(u8::MAX)) as u8,
        }
    }

    /// Sends our status to every greeted neighbour.
    pub(crate) fn broadcast_status(&mut self, now: Time) {
        let msg = self.status(now);
        for j in bits(self.neighbours.active()) {
            self.send_control(j, msg);
        }
    }

    /// Folds the arrival of a first copy of chunk `seq`, `delay` after publication, into the
    /// lag of its substream.
    pub(crate) fn record_lag(&mut self, now: Time, seq: u64, delay: Duration) {
        let k = substream(seq);
        let published = now - delay;
        if self.newest[k].is_none_or(|(s, _)| seq > s) {
            self.newest[k] = Some((seq, published));
        }
        let sample = delay.as_micros() as f64;
        let first = self.lag_us[k].is_none();
        self.lag_us[k] = Some(match self.lag_us[k] {
            None => sample,
            Some(l) => l + LAG_WEIGHT * (sample - l),
        });
        // A node that just became able to serve a substream says so at once: the trees grow a
        // hop per round trip instead of a hop per status interval.
        if first && self.config.policy == crate::node::Policy::FjordTrees {
            self.broadcast_status(now);
        }
    }

    /// Re-chooses parents (see the module documentation) and tells the neighbours concerned.
    pub(crate) fn choose_parents(&mut self, now: Time) {
        if self.config.policy != crate::node::Policy::FjordTrees
            || self.config.role == Role::Origin
            || self.manifest.is_none()
        {
            return;
        }
        let size = self.expected_size(0);
        let active = self.neighbours.active();
        // Drop parents that are gone.
        for k in 0..SUBSTREAMS {
            if let Some(p) = self.parents[k]
                && active & (1 << p) == 0
            {
                self.parents[k] = None;
            }
        }
        // The hop and transmission part of each neighbour's promise, computed once: this runs
        // for every substream and on many status messages.
        let mut hop = [Duration::ZERO; crate::neighbours::MAX_SLOTS];
        for (j, n) in self.neighbours.iter() {
            hop[j] = n.one_way() + transmission_time(size, n.upload_bps().max(1));
        }
        let promise = |node: &Node, j: usize, k: usize| -> Option<Duration> {
            let lag = node.neighbours.get(j)?.lags_ms[k];
            (lag != u16::MAX).then(|| Duration::from_millis(u64::from(lag)) + hop[j])
        };
        let mut assigned = [0u32; crate::neighbours::MAX_SLOTS];
        for p in self.parents.iter().flatten() {
            assigned[*p] += 1;
        }
        let mut spare_used = [0u32; crate::neighbours::MAX_SLOTS];
        let spreader = self.config.upload_bps >= self.stream_bps();
        for k in 0..SUBSTREAMS {
            let mine = self
                .effective_lag_us(k, now)
                .map(|us| Duration::from_micros(us as u64));
            let current = self.parents[k].and_then(|p| promise(self, p, k).map(|d| (d, p)));
            let mut best: Option<(Duration, usize)> = None;
            for j in bits(active) {
                if Some(j) == self.parents[k] {
                    continue;
                }
                let Some(n) = self.neighbours.get(j) else {
                    continue;
                };
                if n.refused_at
                    .is_some_and(|t| now.saturating_since(t) < REFUSAL_MEMORY)
                    || n.subscribed & (1 << k) != 0
                {
                    continue;
                }
                let Some(d) = promise(self, j, k) else {
                    continue;
                };
                // Only upstream neighbours: lower lag than ours, so the trees have no loops.
                let lag = Duration::from_millis(u64::from(n.lags_ms[k]));
                if mine.is_some_and(|m| lag + UPSTREAM_MARGIN >= m) {
                    continue;
                }
                // A full neighbour takes a newcomer only by evicting a child with less upload:
                // worth trying for a node that passes chunks on (at a penalty), pointless for
                // one that does not, which goes wherever there is room.
                let full = u32::from(n.spare) <= spare_used[j];
                if full && !spreader {
                    continue;
                }
                let d = if full { d + FULL_PENALTY } else { d };
                let d = d + SPREAD_PENALTY * assigned[j];
                if best.is_none_or(|b| (d, j) < b) {
                    best = Some((d, j));
                }
            }
            // A node that passes little on only needs its chunks in time, not fast: it takes
            // the lowest-upload parent with room whose promise fits in half the target latency,
            // leaving the fast parents to the spreaders, whose speed multiplies. (Measured at
            // N = 300 / 1,000: 85% / 67% continuity with this rule, 80% / 62% without. Keeping
            // such a leaf from ever switching to a faster parent was tried too: 78% / 67%.)
            if !spreader && current.is_none() {
                let budget = Duration::from_micros(self.timing().1 / 2);
                let slowest_fit =
                    bits(active)
                        .filter(|&j| Some(j) != self.parents[k])
                        .filter_map(|j| {
                            let n = self.neighbours.get(j)?;
                            let fresh = n
                                .refused_at
                                .is_none_or(|t| now.saturating_since(t) >= REFUSAL_MEMORY);
                            let room = u32::from(n.spare) > spare_used[j];
                            let d = promise(self, j, k)?;
                            (fresh && room && n.subscribed & (1 << k) == 0 && d <= budget)
                                .then_some((n.upload_bps(), d, j))
                        })
                        .min();
                if let Some((_, d, j)) = slowest_fit {
                    best = Some((d, j));
                }
            }
            let switch = match (current, best) {
                (None, Some(_)) => true,
                (Some((c, _)), Some((b, _))) => b + SWITCH_GAIN < c,
                _ => false,
            };
            if switch {
                let (_, j) = best.expect("switch implies a candidate");
                if let Some(old) = self.parents[k] {
                    assigned[old] = assigned[old].saturating_sub(1);
                }
                self.parents[k] = Some(j);
                assigned[j] += 1;
                spare_used[j] += 1;
            }
        }
        // Tell every neighbour whose share changed.
        let mut wanted = [0u8; crate::neighbours::MAX_SLOTS];
        for (k, p) in self.parents.iter().enumerate() {
            if let Some(p) = p {
                wanted[*p] |= 1 << k;
            }
        }
        let changed: Vec<(usize, u8)> = self
            .neighbours
            .iter()
            .filter(|(j, n)| n.we_subscribed != wanted[*j])
            .map(|(j, _)| (j, wanted[j]))
            .collect();
        for (j, mask) in changed {
            if let Some(n) = self.neighbours.get_mut(j) {
                n.we_subscribed = mask;
            }
            self.send_control(j, Control::Subscribe { substreams: mask });
        }
    }
}
