//! Getting what pushes did not bring: requests to holders.
//!
//! # Fjord
//! A node reserves a chunk at the first spreader that announces it (see [`crate::scheduler`]).
//! A chunk heard of but neither arriving nor reserved a patience later
//! ([`Config::repair_patience_chunks`], at most [`Config::repair_patience_max`]), or whose
//! reservation was refused or timed out, is requested from a holder drawn in inverse proportion
//! to its upload among those expected to deliver before the deadline (see below). A chunk is
//! never requested twice from the same neighbour, and hopeless chunks (deadline passed) are left
//! alone. The origin is never asked: it serves no requests, so asking it only costs a round trip
//! before its refusal.
//!
//! Why the slow holders are asked most: the fast ones are spreaders, which every spreader
//! around them reserves at, so their uplinks are full and a request joins the back of their
//! newest-first queue; a slow holder is reserved at by nobody and serves a request almost at
//! once, if slowly. Simulator, `emu30` at 80% of its links: uplink use of the 2.4x / 1.2x /
//! 0.6x classes 96.5 / 69.2 / 48.8% with the draw in proportion to upload (until session 18),
//! 91.7 / 69.6 / 63.7% with it in inverse proportion. Continuity, 60 s runs, seeds 1-7 at
//! N = 1,000 (10,000: 40 s, seeds 1-2), and `emu30`'s p95 delay (seeds 7 and 1):
//!
//! | draw weight (upload to the power) | 1 (before) | 0 | -0.5 | -1 (now) | -2 |
//! |---|---|---|---|---|---|
//! | `ri12` N = 1,000, mean of seeds 1-3 | 98.95% | 99.02% | 99.20% | 99.15% | 99.15% |
//! | `ri12` N = 1,000, seeds 1-7 | 98.948% | - | - | 99.219% (every seed up) | - |
//! | `ri12-churn` N = 1,000, seeds 1-7 | 97.019% | - | - | 97.459% (every seed up) | - |
//! | `ri12` N = 10,000 | 95.81 / 94.50% | 95.44 / 94.26% | 95.95 / 93.18% | 95.86 / 94.16% | - |
//! | `ri12-churn` N = 10,000 | 86.28 / 83.40% | - | - | 86.57 / 88.22% | - |
//! | `emu30` p95, 200 ms chunks | 1534 / 1521 ms | 1440 / 1445 | 1414 / 1420 | 1425 / 1483 | 1457 / 1450 |
//! | `emu30` p95, 80 ms chunks | 1029 / 1012 ms | 967 / 957 | 966 / 936 | 946 / 968 | 980 / 974 |
//!
//! (Continuity on `emu30` is 100% in each, but one run at -2 with 99.994%.) The emulator
//! (real nodes, `fjord-sim emulate simulations/scenarios/emu30.toml`), three runs of each
//! interleaved: p95 1755 / 1765 / 1705 ms before, 1665 / 1675 / 1675 ms now, continuity
//! 99.99 / 99.99 / 99.96% and 99.98 / 99.94 / 99.95%. Before that, the
//! draw was in proportion to upload, so that every holder's upload was used in proportion to
//! what it offers, and always asking the fastest had left slower uploads idle.
//!
//! A holder counts as able to deliver when its round trip plus a copy's time at its upload
//! (times one more than our requests already waiting there), doubled, ends before the deadline.
//! Tried in session 18 and reverted: once instead of twice, so that slow, idle holders stay in
//! the draw nearer the deadline. Simulator, 60 s, seeds 1-7 at N = 1,000: 99.219% -> 99.535%
//! (every seed up; 1.5 times: 99.459%, half: 98.955%), with churn 97.459% -> 97.686%; the
//! 120 s sweeps at N = 100 / 1,000 / 10,000: 99.954 / 99.162 / 95.777% -> 99.917 / 99.533 /
//! 96.611%, with churn 99.906 / 97.666 / 86.333% -> 99.706 / 97.856 / 87.083%. But the p99
//! delay at N = 100 went from 2717 to 2880 ms, behind mesh pull's 2823 and dp/lu's 2853 in the
//! same run (issue 4 wants it ahead of every baseline), and N = 100 lost continuity.
//!
//! Patience is a share of the chunk duration, 0.75 of it but at most 150 ms: 150 ms at the
//! reference scenario's 250 ms chunks (where it was tuned as a fixed 150 ms) and at `emu30`'s
//! 200 ms, 60 ms at 80 ms chunks. The holders that announce a chunk during the wait come a
//! chunk transmission apart, so a fixed wait costs short chunks several hops' worth of delay
//! at the nodes that do not reserve, half of `emu30`'s. Simulator, `emu30` at 80% of its
//! links, seeds 1-4, p95 delay with a fixed 150 ms against 0.6 chunk durations: 50 ms chunks
//! 871-878 -> 784-802 ms, 60 ms 897-935 -> 823-869 ms, 80 ms 989-1034 -> 922-951 ms, 100 ms
//! 1100-1127 -> 1042-1058 ms, 200 ms 1590-1617 -> 1536-1642 ms, continuity 100% throughout.
//! (A fixed 20 ms did as well on `emu30` at 80 ms chunks, 900-925 ms, but cost `ri12` at
//! N = 1,000 0.1-0.4 points over three seeds, 98.85% against 99.02% on average.) The cap
//! came from the emulator: at 200 ms chunks 0.6 (120 ms) left the survivors of `emu30`'s
//! 30% kill below 99% for the chunks published 3-4 s after it (98.6, 98.6 and 98.1% in three
//! runs; back at 99% to stay after 4 s), where 150 ms gave 99.5 and 99.0% (0 s, two runs;
//! session 11's run 0 s too). With the audio track, the simulator puts 0.75 against 0.6 at
//! +10-20 ms of p95 at 80 ms chunks.
//!
//! A node that holds nothing yet asks at once, without patience (it reserved nothing that
//! patience would wait for), and only for chunks up to a target latency behind the newest it
//! heard of: before its first chunk it knows no deadlines, and asked for the whole window
//! (about 50 chunks per track at the origin's have-map), most of which holders then refused.
//! Holders serve a newcomer's first request before their queue (see [`crate::scheduler`]).
//! Simulator, `ri12-churn` at N = 1,000 over five seeds: start-up p50 / p95 from about 580 /
//! 1,100 ms to 445 / 660 ms.
//!
//! After `URGENT_AFTER` (four) holders were asked for a chunk (each refused it or let the
//! reservation time out), the next asks go out as [`Control::Urgent`], which holders serve
//! ahead of their newest-first queue within a budget (see [`crate::scheduler`]). The
//! simulator's miss audit showed why: nearly every chunk a node missed had been asked of 7
//! to 15 holders, each refusing it because newer chunks came first, until the deadline.
//! Measured (simulator, 60 s, with holders' budget at 20% of their upload): `ri12` N = 100
//! over 5 seeds 99.55% -> 99.93%, N = 1,000 over 4 seeds 97.47% -> 98.46%; `ri12-churn`
//! N = 1,000 over 4 seeds 94.46% -> 94.79%, N = 10,000 84.20% -> 84.03% (one seed). Urgent
//! after 3 holders (at a 25% budget) gained as much at N = 100 but less at N = 1,000
//! (98.0%), after 5 or 6 less at N = 100 (99.82%, 99.76%); urgency by slack alone (a request
//! with under four chunk durations to spare) gave 99.99% at N = 100 but 88-93% at N = 1,000,
//! where most requests are that late and serving them by deadline slowed every chunk's
//! spread.
//!
//! Tried and not kept (session 12): weighing the draw of a holder by the share of the node's
//! recent requests it served (a moving average over about ten, 1 to start, floor 0.05), so
//! saturated fast holders are asked less and idle slow ones more. Simulator, 60 s, seeds 1-3:
//! `ri12` N = 1,000 99.02% -> 99.24% (every seed up), but N = 10,000 (seed 1) 93.44% ->
//! 93.31% and `ri12-churn` N = 1,000 96.22% -> 96.13%; at scale the misses come from chunks
//! that spread late, not from repairs sent to the wrong holder.
//!
//! # Fjord trees
//! Each chunk is expected from the parent of its substream (see [`crate::tree`]) by the
//! parent's advertised lag plus the hop plus one chunk duration of slack, and in any case two
//! chunk durations before its deadline. A chunk missing at that time (its parent is slow, gone,
//! or refused us) is requested from the neighbour most likely to have it: the lowest advertised
//! lag for its substream, among those able to deliver before the deadline. That neighbour
//! serves it, or refuses with `Cancel` at once when it neither holds nor receives it (or later,
//! when it can no longer deliver in time); the node then asks the next one. A chunk is never requested twice from the same neighbour. The
//! chunks that exist are known without announcements: sequence numbers are consecutive, so
//! everything up to the newest verified chunk exists.
//!
//! # Mesh pull (CoolStreaming baseline)
//! Every pull interval (two chunk durations), the node sends its buffer map to every neighbour
//! and requests each missing chunk, rarest first, from the holder with the most upload per
//! request already assigned to it.
//!
//! [`Config::repair_patience_chunks`]: crate::node::Config::repair_patience_chunks
//! [`Config::repair_patience_max`]: crate::node::Config::repair_patience_max

use std::time::Duration;

use crate::neighbours::bits;
use crate::node::{Node, Policy};
use crate::proto::Control;
use crate::time::{Time, transmission_time};
use crate::tree::substream;

/// Shortest wait before looking again for holders of a chunk nobody around announced yet.
const MIN_RETRY: Duration = Duration::from_millis(5);
/// Slack added to a request's expected delivery before trying another holder.
const REQUEST_SLACK: Duration = Duration::from_millis(50);
/// Holders asked for a chunk before the next ask goes out as [`Control::Urgent`]: by then
/// the chunk has been refused (or timed out) that often and is about to be missed.
pub(crate) const URGENT_AFTER: u32 = 4;

/// A holder is drawn as if it uploaded at least the stream rate divided by this.
const SLOWEST_HOLDER_DIVISOR: u64 = 8;

impl Node {
    /// Requests overdue chunks and sets the next time to look again.
    pub(crate) fn repair(&mut self, now: Time) {
        match self.config.policy {
            Policy::Fjord => self.repair_overdue(now),
            Policy::FjordTrees => self.repair_trees(now),
            Policy::MeshPull => self.pull(now),
            Policy::RandomPeerLatestUseful | Policy::DeprivedPeerLatestUseful => {
                self.next_repair = None;
            }
        }
    }

    fn repair_trees(&mut self, now: Time) {
        let (chunk_us, latency_us) = self.timing();
        let chunk = Duration::from_micros(chunk_us);
        let latency = Duration::from_micros(latency_us);
        let mut next: Option<Time> = None;
        let mut wake = |t: Time| next = Some(next.map_or(t, |n: Time| n.min(t)));
        for t in 0..self.tracks.len() {
            let Some((lo, hi)) = self.tracks[t].range() else {
                continue;
            };
            let edge = hi - crate::store::AHEAD;
            let size = self.expected_size(t);
            for seq in lo..=edge {
                let Some(deadline) = self.tracks[t].deadline(seq, chunk_us, latency_us) else {
                    continue;
                };
                if now >= deadline {
                    continue;
                }
                let k = substream(seq);
                // When its tree should have brought it: the parent's lag plus the hop, plus one
                // chunk duration of slack; and never later than leaves time for a repair.
                let published = deadline - latency;
                let expected = match self.parents[k].and_then(|p| self.neighbours.get(p)) {
                    Some(p) if p.lags_ms[k] != u16::MAX => {
                        published
                            + Duration::from_millis(u64::from(p.lags_ms[k]))
                            + p.one_way()
                            + transmission_time(size, p.upload_bps().max(1))
                            + chunk
                    }
                    _ => published + chunk,
                };
                let due = expected.min(deadline - chunk * 2);
                let Some(s) = self.tracks[t].slot_mut(seq) else {
                    continue;
                };
                if s.chunk.is_some() {
                    continue;
                }
                if let Some(until) = s.awaited(now) {
                    wake(until);
                    continue;
                }
                if now < due {
                    wake(due);
                    continue;
                }
                let asked = s.asked;
                let Some(j) = self.repair_source(k, asked, size, deadline, now) else {
                    wake(now + chunk / 2);
                    continue;
                };
                if let Some(until) = self.reserve(now, j, t, seq) {
                    wake(until);
                }
            }
        }
        self.next_repair = next;
    }

    /// Whom to ask for a missing chunk of substream `k`: among neighbours not asked yet, the
    /// one most likely to have it soonest (lowest advertised lag for `k`, then the fastest
    /// delivery), among those able to deliver before `deadline`. The origin is never asked.
    fn repair_source(
        &self,
        k: usize,
        asked: u64,
        size: usize,
        deadline: Time,
        now: Time,
    ) -> Option<usize> {
        bits(self.neighbours.active() & !asked)
            .filter_map(|j| {
                let n = self.neighbours.get(j)?;
                if n.hello
                    .is_some_and(|h| h.role == crate::proto::Role::Origin)
                {
                    return None;
                }
                let delivery = n.srtt + transmission_time(size, n.upload_bps().max(1));
                (now + delivery <= deadline).then_some((n.lags_ms[k], delivery, j))
            })
            .min()
            .map(|(_, _, j)| j)
    }

    fn repair_overdue(&mut self, now: Time) {
        let (chunk_us, latency_us) = self.timing();
        // A node that holds nothing yet asks at once, and only for chunks that may still be
        // live (a target latency's worth behind the newest it heard of): patience leaves room
        // for reservations at spreaders, which a newcomer has not made, and before its first
        // chunk it knows no deadlines, so it would otherwise ask for the whole window, which
        // holders refuse.
        let patience = if self.holds_nothing() {
            Duration::ZERO
        } else {
            self.repair_patience()
        };
        let live_back = latency_us.div_ceil(chunk_us.max(1));
        // The origin serves no requests (its upload goes to fresh chunks): asking it would
        // cost a round trip before the refusal.
        let active = self.neighbours.active() & !self.origins;
        let mut next: Option<Time> = None;
        let mut wake = |t: Time| next = Some(next.map_or(t, |n: Time| n.min(t)));
        for t in 0..self.tracks.len() {
            let size = self.expected_size(t);
            // Most of the window is behind the deadline: start at the first chunk that is not.
            // (This scan runs several times per chunk received; it was 40% of a simulation.)
            // Before the first verified chunk there is no range yet, only announcements.
            let seqs: Box<dyn Iterator<Item = u64>> = match (
                self.tracks[t].range(),
                self.tracks[t].first_open_seq(now, chunk_us, latency_us),
            ) {
                (Some((lo, hi)), Some(open)) => Box::new(open.max(lo)..=hi),
                _ => {
                    let store = &self.tracks[t];
                    let oldest = store.oldest_live_unanchored(live_back);
                    let live: Vec<u64> = store.live_seqs().filter(|&s| s >= oldest).collect();
                    Box::new(live.into_iter())
                }
            };
            for seq in seqs {
                if !self.tracks[t].maybe_wanted(seq) {
                    continue;
                }
                let Some(s) = self.tracks[t].get(seq) else {
                    continue;
                };
                if s.chunk.is_some() || s.heard_at.is_none() {
                    continue;
                }
                let deadline = self.tracks[t].deadline(seq, chunk_us, latency_us);
                let s = self.tracks[t].get_mut(seq).expect("checked above");
                if deadline.is_some_and(|d| now >= d) {
                    continue;
                }
                if let Some(until) = s.awaited(now) {
                    wake(until);
                    continue;
                }
                let due = s.heard_at.expect("filtered above") + patience;
                if now < due {
                    wake(due);
                    continue;
                }
                let holders = s.known & active & !s.asked;
                if holders == 0 {
                    // Nobody left to ask now; look again when announcements may have come.
                    // Never at `now` itself: with no patience configured that would
                    // wake the node again at the same instant, forever.
                    wake(now + (self.repair_patience() / 4).max(MIN_RETRY));
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

    /// A holder to request `size` bytes from: drawn in inverse proportion to upload among those
    /// expected to deliver before `deadline`, since the fast ones are busiest with spreaders'
    /// reservations (see the module documentation). Falls back to the fastest when none fits.
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
        // A holder advertising less than an eighth of the stream (or nothing) counts as that
        // slow, so one odd advertisement cannot take every draw.
        let floor = (self.stream_bps() / SLOWEST_HOLDER_DIVISOR).max(1);
        let neighbours = &self.neighbours;
        self.rng.draw(fits, |j| {
            neighbours
                .get(j)
                .map_or(0.0, |n| 1.0 / n.upload_bps().max(floor) as f64)
        })
    }

    /// Requests chunk `seq` of `track` from neighbour `slot` and records the reservation; returns
    /// when the node gives up on it. The wait covers the holder finishing its own copy, a queue
    /// of about one chunk duration there, and the transfer to us; after it the node also asks
    /// another holder, without withdrawing the first request: a hedge, since a duplicate costs
    /// less than a miss. (Measured on the reference scenario, N = 100 / 1,000, 60 s: a queue
    /// allowance of 1 chunk duration gave 99.4% / 94.5% continuity with 15% / 10% duplicates;
    /// 2 gave 99.2% / 93.5%; 4 gave 96.7% / 90.2%; withdrawing the first request when asking
    /// another cut duplicates but lost 1-4 points.)
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
            + Duration::from_micros(chunk_us)
            + REQUEST_SLACK;
        let until = now + wait;
        let s = self.tracks[track].get_mut(seq)?;
        s.requested = Some((slot as u8, until));
        s.asked |= 1 << slot;
        self.next_repair = Some(self.next_repair.map_or(until, |r| r.min(until)));
        self.ask(slot, track, seq);
        Some(until)
    }

    /// Whether to refuse a new request from neighbour `slot` for chunk `seq` of `track`: the
    /// origin keeps its upload for injecting new chunks; a viewer refuses a request it could not
    /// serve before the chunk's deadline even if it served it after everything already queued
    /// (so the requester asks another holder while there is time), and takes every other.
    /// Queued requests count whatever their order, which is optimistic for an old chunk under
    /// newest-first service: the scheduler's projection refuses it later if newer requests
    /// push it past its deadline. A newcomer's request (its first chunk goes first) counts only
    /// one chunk for each other newcomer waiting.
    ///
    /// Measured history (reference scenario, 60 s): a fixed cap of about three chunk durations of
    /// queued requests gave 99.5% continuity at N = 100 but 82% at N = 1,000, where a cap of
    /// 24 gave 91% but 98% at N = 100: a cap in chunks is wrong at one scale or the other, since
    /// how long a request may wait depends on its chunk's slack, not on the queue's length.
    pub(crate) fn refuses_request(
        &self,
        now: Time,
        slot: usize,
        track: usize,
        seq: u64,
        urgent: bool,
    ) -> bool {
        if self.config.role == crate::proto::Role::Origin {
            return true;
        }
        let (chunk_us, latency_us) = self.timing();
        let Some(deadline) = self.tracks[track].deadline(seq, chunk_us, latency_us) else {
            return false;
        };
        // A held chunk's own size, otherwise the manifest's bit rate's.
        let size_of = |t: usize, seq: u64| {
            self.tracks[t]
                .get(seq)
                .and_then(|s| s.chunk.as_ref())
                .map_or_else(|| self.expected_size(t), |c| c.len())
        };
        // A newcomer's first chunk goes ahead of the queue (see the scheduler), behind only
        // one chunk for each other newcomer.
        let starving = self.neighbours.get(slot).is_some_and(|n| n.starving());
        let queued: usize = if urgent && self.urgent_credit.0 > 0.0 {
            // Served before the rest (see the scheduler), behind only other urgent requests.
            self.neighbours
                .iter()
                .flat_map(|(_, n)| {
                    n.requests
                        .iter()
                        .filter(|r| n.urgent.contains(&(r.track, r.seq)))
                })
                .map(|r| size_of(r.track, r.seq))
                .sum()
        } else if starving {
            self.neighbours
                .iter()
                .filter(|(j, n)| *j != slot && n.starving() && !n.requests.is_empty())
                .map(|_| size_of(track, seq))
                .sum()
        } else {
            self.neighbours
                .iter()
                .flat_map(|(_, n)| n.requests.iter())
                .map(|r| size_of(r.track, r.seq))
                .sum()
        };
        let one_way = self
            .neighbours
            .get(slot)
            .map_or(Duration::ZERO, |n| n.one_way());
        let size = size_of(track, seq);
        // The chunk on the uplink now goes first.
        let free = now.max(self.uplink_free_at);
        let arrival =
            free + transmission_time(queued + size, self.config.upload_bps.max(1)) + one_way;
        arrival > deadline
    }

    /// Under Fjord trees, whether to refuse a repair request: a viewer takes no more requests
    /// than it can serve within about three chunk durations (beyond that the requester does
    /// better asking another neighbour).
    pub(crate) fn refuses_trees_request(&self) -> bool {
        if self.config.role == crate::proto::Role::Origin {
            return true;
        }
        let stream = self.stream_bps().max(1) as f64;
        let capacity = (3.0 * self.config.upload_bps as f64 / stream)
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
        // `asked` counts this holder too.
        let asked = self.tracks[track]
            .get(seq)
            .map_or(0, |s| s.asked.count_ones());
        let msg = if self.config.policy == Policy::Fjord && asked > URGENT_AFTER {
            Control::Urgent(id)
        } else {
            Control::Request(id)
        };
        self.send_control(slot, msg);
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
            // Live slots, not the window: before its first chunk a node knows only what its
            // neighbours' buffer maps announced.
            let seqs: Vec<u64> = self.tracks[t].live_seqs().collect();
            for seq in seqs {
                let Some(s) = self.tracks[t].get(seq) else {
                    continue;
                };
                if s.chunk.is_some() || s.requested.is_some_and(|(_, u)| now < u) {
                    continue;
                }
                // Before its first chunk a node cannot estimate deadlines: worth asking anyway.
                let deadline = self.tracks[t]
                    .deadline(seq, chunk_us, latency_us)
                    .unwrap_or(Time::from_micros(u64::MAX));
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
