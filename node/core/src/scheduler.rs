//! What to send next, each time the uplink frees: the scheduling policies.
//!
//! Upload is the scarce resource, and a chunk's value is entirely in arriving before its
//! deadline (publication + target latency). Each time the uplink frees, a node sends one whole
//! chunk to one neighbour: one at a time at full rate, so the first receiver can pass it on
//! soonest, which is what makes dissemination fast. Whatever the policy, never sent: a chunk
//! the neighbour is known to hold (it said so, asked us to stop, or we sent it); under Fjord a
//! chunk that cannot arrive before its deadline (now + transmission + one-way delay), and under
//! the baselines an expired one; anything while the neighbour's window of unacknowledged chunks
//! is full. A transfer that became useless (the receiver got the chunk elsewhere) is aborted.
//!
//! # Fjord (the default): announce, reserve, serve
//! Every node announces a chunk to its neighbours when its first byte arrives (held up to
//! [`Config::announce_hold`] for company, see [`crate::node::ANNOUNCE_HOLD`]). A node that hears
//! of a chunk from a *spreader* (a neighbour whose upload is at least
//! [`Config::spreader_share`], 0.8, of the stream rate) reserves
//! it there at once (see [`crate::repair`]): the request's round trip hides behind that
//! neighbour's own reception, so the chunk comes as soon as the neighbour has it. A viewer
//! sends only what was requested:
//!
//! - **Admission**: a request is taken unless it could not arrive before its chunk's deadline
//!   even served after everything already queued; then it is refused with `Cancel` at once, so
//!   the requester asks another holder while there is time (see [`crate::repair`]).
//! - **Newcomers first**: a neighbour that holds nothing yet (it announced no chunk, withdrew
//!   no request, and we sent it none) has its newest request served before all others, and
//!   admitted behind only one chunk for each other such newcomer; its other requests queue
//!   like everyone's. It costs one chunk per join, and a newcomer no longer waits for its
//!   first chunk behind a busy holder's queue, where it ranks last among the requesters of the
//!   newest chunk when its upload is low.
//! - **Urgent requests first, within a budget**: a request sent as `Urgent` (its requester
//!   was refused by several holders already, see [`crate::repair`]) is admitted behind the
//!   other urgent ones only and served before the rest of the queue, earliest deadline first,
//!   while a budget of [`Config::urgent_share`] of the uplink's time lasts; past it, urgent
//!   requests queue like everyone's. Newest-first service starves the last copies of an older
//!   chunk, and its requester then went from holder to holder until the deadline. The budget
//!   keeps the rescue of old chunks from slowing the spread of fresh ones where most chunks
//!   are late, and bounds what neighbours marking every request urgent can take. Simulator,
//!   60 s, `ri12` at N = 1,000 over 4 seeds: 97.47% without urgent requests; 97.36%, 98.17%,
//!   98.46%, 98.79% and 98.70% with budgets of 5, 10, 20, 40 and 100% (no limit);
//!   `ri12-churn` at N = 10,000, seed 1: 84.20% without, 84.61%, 84.03% and 81.42% with 10,
//!   20 and 40%. The default is 20%. At N = 100,000 (`ri12`, one seed, 60 s) urgent
//!   service costs instead: 80.03% without, 78.32% at 20%, where most chunks are late at most
//!   holders and every rescue of an old one slows a fresh one's spread.
//!   Requests for a chunk that no neighbour but the origin is known to hold count as urgent
//!   too once it is a quarter of the target latency old: it has no other source, so its
//!   requesters cannot be refused on to one, and behind newer chunks it waited until its
//!   deadline. Emulator, `emu30` at 80 ms chunks, three runs each: 98.72/98.85/98.49% before,
//!   99.25/99.35/98.63% after; simulator `ri12` at N = 1,000, seeds 1-3, about the same
//!   (99.19/99.13/99.05% against 99.21/99.11/99.01%; with churn 97.27/95.96/97.13% against
//!   97.21/95.67/97.06%).
//! - **Order**: the newest chunk first and, among its requesters, the highest onward value
//!   (advertised upload) first. Newest first because a chunk's spread is exponential in time, so
//!   starting the newest early shortens its whole dissemination (the "latest useful" rule behind
//!   rp/lu); high-upload receivers first because they pass it on fastest (the "snowball" order,
//!   which beats log2 N when uploads differ). A queued request that can no longer be served in
//!   time is dropped with `Cancel`: each time the uplink frees, the queue is projected in that
//!   order, and a request that would now arrive late (newer chunks' requests came after it)
//!   is refused then, while its requester can still ask elsewhere. So is one that would wait
//!   more than two chunk durations and still have more than two to spare when served: its
//!   requester has time to find an idle holder, and would otherwise ask a second holder while
//!   this one is still queued (its hedge, see [`crate::repair`]), so that one of the two copies
//!   is a duplicate. (Unless no other neighbour is known to hold the chunk: then there is no
//!   elsewhere, and a lone copy refused to all its requesters was lost to the whole mesh.)
//!   Simulator (before its downlink fix of the same session), 60 s, 3 seeds
//!   (10,000 peers: 2): duplicates from 17% to 4.7%
//!   of stream bytes on `emu30` at 80% of its links, continuity from 99.51% to 99.92% there,
//!   98.86% to 99.13% / 96.36% to 96.36% / 91.66% to 91.13% on `ri12` at N = 100 / 1,000 /
//!   10,000, and 98.00% to 98.08% / 92.55% to 92.64% with churn at 100 / 1,000. (Without the
//!   slack condition: 99.89%, 99.30%, 96.51%, 90.20%; a cap of 1 chunk duration lost 0.3 points
//!   on `emu30`, of 3 kept half the duplicates; applying the cap at admission lost 1-2 points.
//!   Session 11, with the origin's draw below, 60 s: a cap of 1 chunk duration cut duplicates
//!   from about 2% to 0.4% and `emu30`'s p95 delay by 80 ms, and gave `ri12` 99.98% / 99.08%
//!   against 99.95% / 99.05% at N = 100 / 1,000 over 4 seeds, but `ri12-churn` 94.86% against
//!   96.27% at N = 1,000 and 78.48% against 85.95% at N = 10,000 (why churn turns it into a
//!   loss was not looked into).)
//!   The wait counts from the request's arrival (since session 23; before, from each time the
//!   uplink freed, over the queue as it then stood), so a reservation's includes the time the
//!   holder was still receiving the chunk. Served newest first, an older chunk's
//!   request is overtaken by every newer chunk's request that comes after it, so the queue
//!   never looked long and the request waited until its deadline was near: traced on the
//!   emulator, fast holders held a slow node's request for a fresh chunk 0.8-1.4 s each and
//!   then refused it, four holders in turn, and the chunk was missed. Emulator, `emu30` with
//!   a 30% kill, three interleaved pairs: p95 1435 / 1445 / 1515 -> 1345 / 1325 / 1345 ms,
//!   continuity 99.88-99.98% -> 99.97-99.99%. Simulator, 60 s: `emu30` at 90% of its links,
//!   seeds 7 / 1 / 2, duplicates 5.7% -> 2.0-2.4%, p95 1247 / 1240 / 1234 -> 1229 / 1225 /
//!   1206 ms; `ri12` N = 1,000, seeds 1-3, 99.29 / 99.13 / 99.03% -> 99.32 / 99.16 / 99.19%;
//!   `ri12-churn` N = 1,000, seeds 1-6, 97.28% -> 97.36% on average. But `ri12-churn` at
//!   N = 10,000 (40 s, seeds 1-12) 87.30% -> 86.45% on average (-0.85 points, standard
//!   error 0.69, from +1.5 to -6.8 by seed; why was not looked into), while at N = 100,000
//!   (`ri12`, 60 s, seed 1) it gains: 77.52% -> 80.41%. Letting only requests with more than
//!   half (a quarter) of the target latency to spare be refused so kept 86.82% (85.27%) over
//!   seeds 1-4 against 86.90%, but lost the emulator's gain (1425 / 1445 / 1415 ms); serving
//!   such a request as an urgent one instead of refusing it made `emu30`'s p95 worse in the
//!   simulator (1255-1308 ms, 8% duplicates).
//!
//! The origin pushes (its capped upload is the only way new chunks enter the mesh): the newest
//! chunk to a neighbour drawn in proportion to the eighth power of its onward value, so in
//! effect to one of its fastest neighbours at random, and it serves no requests.
//! A newcomer among its neighbours (greeted, holding nothing yet) gets the next push first,
//! within a budget of a quarter of the origin's upload (a second's worth banked): the origin
//! is every newcomer's first link where it is the bootstrap peer, and otherwise the newcomer
//! waits for viewer neighbours and then for their queues. Emulator, `emu30`: start-up
//! p50 / p95 / max from 575-912 / 1093-1609 / 1631-2039 ms (3 runs) to 398-439 / 672-1154 /
//! 861-1257 ms (4 runs). What is left of the p95 is the last joiners: a traced one found the
//! origin full (`Goodbye(Full)` 480 ms after its start) and waited for the DHT to name
//! viewers, its first chunk coming after 1.4 s against 0.6-0.75 s for the others. Such a
//! newcomer now asks for candidates at once and the node's driver offers it the DHT routing
//! table the bootstrap peer's first answer filled. The emulator's start-up p95 did not
//! clearly move (622-1179 ms over 8 runs, against 683-1680 ms over 8 runs of the code
//! before): with 30 nodes it is the second slowest, and the slowest are the last to join the
//! flash crowd, however they found their neighbours. Simulator (before its downlink fix),
//! `ri12-churn`, N = 1,000: continuity 92.64% -> 92.58%, start-up p50 / p95 449 / 682 ->
//! 445 / 655 ms (3 seeds): the origin's neighbours turn over little.
//! The draw leans that hard on upload because a fresh chunk's first copies decide how fast
//! it spreads: the simulator's per-hop output on `emu30` showed the second hop's copies
//! taking 203 ms to transfer on average, a quarter of the origin's copies having gone to
//! 0.75x peers, which need 267 ms to pass on a 200 ms chunk. Simulator, 60 s, seeds 1-4
//! (N = 10,000 and 100,000: seed 1), weight in proportion to the onward
//! value to the power 1 / 3 / 8 / 20:
//!
//! | | 1 | 3 | 8 | 20 |
//! |---|---|---|---|---|
//! | `ri12` N = 100 | 99.93% | - | 99.95% | - |
//! | `ri12` N = 1,000 | 98.46% | 98.88% | 99.05% | 98.90% |
//! | `ri12` N = 10,000 | 92.55% | - | 93.44% | - |
//! | `ri12-churn` N = 1,000 | 94.79% | 96.03% | 96.27% | 95.99% |
//! | `ri12-churn` N = 10,000 | 84.03% | - | 85.95% | - |
//! | `ri12` N = 100,000 | 78.32% | - | 77.41% | - |
//!
//! At N = 100,000 (one seed) it costs 0.9 points instead; not investigated.
//! (In session 5, before urgent requests and the newcomer rules, the cube and drawing among
//! spreaders only had moved continuity by -0.4 to +1.2 points over three seeds: within the
//! noise then.) Copies of one chunk still go to different fast neighbours: the origin never
//! sends a chunk twice to the same neighbour, and a viewer that got it announces it.
//! A copy counts as delivered only while its acknowledgement may still come (its transmission,
//! two round trips and 300 ms): a neighbour past that is silent, gets no pushes and does not
//! count as holding what it was sent. After a mass crash the origin otherwise sent a fresh
//! chunk's few copies to peers dead but not yet known to be (that takes the link's idle
//! timeout), and such a chunk was lost to the whole mesh (emulator, `emu30` with 30% killed:
//! 20 of 21 survivors missed one; with the rule, 0-2 s to be back at 99% in two runs).
//!
//! Measured history on the reference scenario (resource index 1.2), kept in git: serving
//! requests before fresh pushes let repairs of old chunks starve diffusion (20% continuity at
//! N = 100); pushing fresh chunks to the best-ranked neighbours lost a third of all upload to
//! duplicates (several senders pick the same receiver before its announcement arrives, and at
//! 100 ms RTT a fast sender finishes the chunk before a cancel can reach it: 84-90%);
//! reservations brought duplicates to 4% but left a third of the upload idle (89%); idle-time
//! pushes used it (89-96%) at the price of duplicates again (30-38%). Then, on 60 s runs at
//! N = 100 / 1,000: with viewers' idle pushes off (a third of all transfers were pushes aborted
//! as duplicates) 99.3% / 77%; serving strictly newest first instead of putting requests with
//! under a chunk duration of slack first (under load most requests became urgent and were
//! served oldest first, which slowed every chunk's spread) 99.5% / 82%; admission by deadline
//! instead of a cap of about three chunk durations of queued requests 99.2% / 93.5%; a shorter
//! wait before asking a second holder 99.4% / 94.5%. The debug output of `fjord-sim`
//! (`FJORD_SIM_DEBUG=1`) shows per hop count the mean delay, wait at the sender and transfer
//! time, and per upload class the uplink use and continuity, which is how these were found.
//!
//! # Fjord trees (experimental): one parent per substream
//! See [`crate::tree`]: each node subscribes to one parent per substream, which pushes it every
//! chunk of that substream as soon as it has it, so each chunk has one sender per receiver and
//! needs no announcement. Order: urgent requests, then pushes to children (newest chunk, highest
//! onward value first), then other requests. It cuts duplicates to about 2% and the messages per
//! chunk by four, but its trees form slowly and leave low-upload nodes' capacity idle, so at
//! N = 1,000 it delivers less than the default; it is kept to be developed, not used by default.
//!
//! # Baselines
//! The same node runs the published baselines for comparison, as their papers define them:
//! random peer / latest useful chunk, most deprived peer / latest useful chunk (pushes with
//! per-chunk announcements; only expired chunks are skipped: no deadline estimate, no requests,
//! no duplicate cancellation), and CoolStreaming-style mesh pull (no pushes; see
//! [`crate::repair`]).
//!
//! [`Config::urgent_share`]: crate::node::Config::urgent_share
//! [`Config::announce_hold`]: crate::node::Config::announce_hold
//! [`Config::spreader_share`]: crate::node::Config::spreader_share

use std::time::Duration;

use crate::neighbours::{Request, bits};
use crate::node::{Node, Policy};
use crate::proto::{Control, Role};
use crate::time::{Time, transmission_time};
use crate::tree::substream;

/// Chunk durations a request may wait in a holder's queue while it would still have as much
/// slack left when served: beyond that it is refused at once (see the module documentation).
const MAX_QUEUE_WAIT_CHUNKS: u64 = 2;

/// A request for a chunk only we hold (among our neighbours, the origin aside) goes as an
/// urgent one once the chunk is older than the target latency divided by this.
const SOLE_AGE_DIVISOR: u64 = 4;

/// The power of a neighbour's onward value that weighs the origin's draw of where a fresh
/// chunk goes: in effect, to one of its fastest neighbours (see the module documentation).
const ORIGIN_PUSH_EXPONENT: i32 = 8;

/// The largest share of the origin's upload that goes to newcomers' first chunks.
const NEWCOMER_SHARE: f64 = 0.25;

/// A servable request in the projection of a Fjord holder's queue.
#[derive(Debug)]
pub(crate) struct Projected {
    key: (u8, u64, i64),
    slot: usize,
    track: usize,
    seq: u64,
    bytes: usize,
    /// When its transmission must end to arrive by the deadline.
    due: Time,
    /// When the request reached us.
    asked_at: Time,
    /// Whether the neighbour's window lets it be sent now.
    open: bool,
}

impl Node {
    /// The next transfer: (neighbour slot, track, seq), or `None` to stay idle.
    pub(crate) fn pick(&mut self, now: Time) -> Option<(usize, usize, u64)> {
        self.manifest.as_ref()?;
        let origin = self.config.role == Role::Origin;
        match self.config.policy {
            Policy::Fjord if origin => self
                .pick_push(now)
                .or_else(|| self.pick_request(now, false)),
            Policy::Fjord => self.pick_request(now, false),
            Policy::FjordTrees => self
                .pick_request(now, true)
                .or_else(|| self.pick_child_push(now))
                .or_else(|| self.pick_request(now, false)),
            Policy::RandomPeerLatestUseful => self.pick_latest_useful(now, false),
            Policy::DeprivedPeerLatestUseful => self.pick_latest_useful(now, true),
            Policy::MeshPull => self.pick_request(now, false),
        }
    }

    /// Whether a neighbour other than the origin (which serves no requests, so is no source
    /// to send a requester to) is known to hold the chunk of slot `s`.
    fn held_elsewhere(&self, s: &crate::store::Slot) -> bool {
        s.known & !self.origins != 0
    }

    /// Whether `bytes` sent now to neighbour `slot` arrive by `deadline`.
    fn arrives_in_time(&self, now: Time, slot: usize, bytes: usize, deadline: Time) -> bool {
        let Some(n) = self.neighbours.get(slot) else {
            return false;
        };
        now + transmission_time(bytes, self.config.upload_bps) + n.one_way() <= deadline
    }

    /// The pending request to serve next, if any can still arrive in time: the newest chunk
    /// first and, among its requesters, the highest onward value first. Under Fjord trees
    /// urgent ones (slack under one chunk duration) go first, by deadline, and `urgent_only`
    /// keeps to those. Mesh pull's suppliers use the same order as Fjord's (CoolStreaming
    /// leaves the supplier's order open; sharing it makes the comparison one of the requesting
    /// side). Under Fjord a newcomer's first request goes before all others, and the queue is
    /// projected in service order (see the module documentation). Requests that can no longer
    /// be served in time are dropped, and under Fjord and mesh pull refused with `Cancel` so
    /// the requester asks someone else at once. Requests for chunks not here yet wait for them.
    fn pick_request(&mut self, now: Time, urgent_only: bool) -> Option<(usize, usize, u64)> {
        // Mesh pull drops what it cannot deliver in time too: CoolStreaming requests a segment
        // only from a supplier able to deliver it before its deadline.
        let fjord = self.config.policy.is_fjord() || self.config.policy == Policy::MeshPull;
        let (chunk_us, _) = self.timing();
        let urgent_slack = Duration::from_micros(chunk_us);
        // (sort key, neighbour slot, track, seq); the smallest key is served first. The key's
        // class: 0 a newcomer's first chunk, 1 urgent, 2 the rest.
        type Candidate = ((u8, u64, i64), usize, usize, u64);
        let mut best: Option<Candidate> = None;
        let mut dead: Vec<(usize, usize, u64)> = Vec::new();
        // Fjord: every servable request, to project the queue in service order (below).
        let project = self.config.policy == Policy::Fjord;
        // Reused between picks: this runs each time the uplink frees.
        let mut queue = std::mem::take(&mut self.projection);
        queue.clear();
        let urgent_ok = project && self.urgent_budget(now);
        let sole_age = Duration::from_micros(self.timing().1 / SOLE_AGE_DIVISOR);
        // In slot order, as `Neighbours::iter`; neighbours without requests add nothing.
        let mut idle = 0u64;
        for j in crate::neighbours::bits(self.requesters) {
            let Some(n) = self.neighbours.get(j).filter(|n| !n.requests.is_empty()) else {
                idle |= 1 << j;
                continue;
            };
            for &Request {
                track: t,
                seq,
                at: asked_at,
            } in &n.requests
            {
                let Some(store) = self.tracks.get(t) else {
                    dead.push((j, t, seq));
                    continue;
                };
                let Some(s) = store.get(seq) else {
                    // Not here and not announced: wait, unless it fell out of the window.
                    if store.range().is_some_and(|(lo, _)| seq < lo) {
                        dead.push((j, t, seq));
                    }
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
                let open = n.window_allows(chunk.len(), self.config.upload_bps);
                if !open && !project {
                    continue;
                }
                // Fjord serves strictly newest first; only Fjord trees put urgent repairs first.
                let urgent = !fjord
                    || (self.config.policy == Policy::FjordTrees
                        && s.deadline.saturating_since(arrival) < urgent_slack);
                if urgent_only && !urgent {
                    continue;
                }
                let newest = u64::MAX - chunk.meta().published_at_us;
                let onward = -((n.onward * 1000.0) as i64);
                // A chunk no other neighbour (but the origin) is known to hold, and already
                // old: behind newer chunks its requests would wait until its deadline.
                let sole = project
                    && !self.held_elsewhere(s)
                    && now.saturating_since(Time::from_micros(chunk.meta().published_at_us))
                        > sole_age;
                let key = if project && n.starving() {
                    (0, newest, onward)
                } else if urgent || (urgent_ok && (sole || n.urgent.contains(&(t, seq)))) {
                    // Fjord trees' urgent repairs, and Fjord's urgent requests within budget.
                    (1, s.deadline.as_micros(), 0)
                } else {
                    (2, newest, onward)
                };
                if project {
                    queue.push(Projected {
                        key,
                        slot: j,
                        track: t,
                        seq,
                        bytes: chunk.len(),
                        due: s.deadline - n.one_way(),
                        asked_at,
                        open,
                    });
                } else if best.is_none_or(|b| key < b.0) {
                    best = Some((key, j, t, seq));
                }
            }
        }
        self.requesters &= !idle;
        if project {
            // Served newest first, an old chunk's request waits for every newer one, including
            // those that came after it was admitted. Walk the queue in service order: a request
            // that would now arrive after its deadline is refused at once rather than when the
            // deadline is upon it, so its requester still has time to ask another holder.
            // (After a mass departure the survivors' holders admitted requests that then
            // waited 2-3 s behind newer ones before being refused, too late to be repaired.)
            //
            // A newcomer's first chunk goes first: only its newest request (one track's) keeps
            // class 0, the others queue like everyone's.
            let mut first = [(u64::MAX, usize::MAX); crate::neighbours::MAX_SLOTS];
            for q in queue.iter().filter(|q| q.key.0 == 0) {
                first[q.slot] = first[q.slot].min((q.key.1, q.track));
            }
            for q in queue.iter_mut().filter(|q| q.key.0 == 0) {
                if (q.key.1, q.track) != first[q.slot] {
                    q.key.0 = 2;
                }
            }
            // Stable, so equal keys keep the neighbours' order and runs stay deterministic.
            queue.sort_by_key(|q| q.key);
            // What goes now: the first whose window is open (in time by the check above).
            // Requests waiting for a window are projected after it, in order.
            let now_at = queue.iter().position(|q| q.open);
            let wait_cap = Duration::from_micros(chunk_us * MAX_QUEUE_WAIT_CHUNKS);
            let mut free = now;
            if let Some(q) = now_at.map(|i| &queue[i]) {
                best = Some((q.key, q.slot, q.track, q.seq));
                free = now + transmission_time(q.bytes, self.config.upload_bps);
            }
            for (i, q) in queue.iter().enumerate() {
                if Some(i) == now_at {
                    continue;
                }
                let done = free + transmission_time(q.bytes, self.config.upload_bps);
                // Long wait, slack to spare: its requester does better asking elsewhere now,
                // if there is an elsewhere. The wait counts from the request's arrival: newest
                // first, each newer chunk's request overtakes it, so a queue that never looks
                // long from here could hold it until its deadline was near. A chunk no other
                // neighbour is known to hold is served, however long it waits: traced on the
                // emulator at 80 ms chunks, an audio chunk whose one copy from the origin
                // reached a busy viewer was asked of it by 17 neighbours, refused to all of
                // them, and missed by the whole mesh.
                let elsewhere = || {
                    self.tracks[q.track]
                        .get(q.seq)
                        .is_some_and(|s| self.held_elsewhere(s))
                };
                let spares = free.saturating_since(q.asked_at) > wait_cap
                    && q.due.saturating_since(done) > wait_cap
                    && elsewhere();
                if done > q.due || spares {
                    dead.push((q.slot, q.track, q.seq));
                    continue;
                }
                free = done;
            }
        }
        self.projection = queue;
        for (j, t, seq) in dead {
            if let Some(n) = self.neighbours.get_mut(j) {
                n.drop_request(t, seq);
            }
            if fjord {
                let id = self.chunk_id(t, seq);
                self.send_control(j, Control::Cancel(id));
            }
        }
        let (key, j, t, seq) = best?;
        if project && key.0 == 1 {
            let bytes = self.tracks[t]
                .get(seq)
                .and_then(|s| s.chunk.as_ref())
                .map_or(0, |c| c.len());
            self.urgent_credit.0 -= transmission_time(bytes, self.config.upload_bps).as_secs_f64();
        }
        self.stats.requests_served += 1;
        Some((j, t, seq))
    }

    /// Whether the budget for urgent requests lets one go ahead now. It accrues
    /// [`Config::urgent_share`] of the uplink's time and banks at most that share of a
    /// second; the chunk that spends it may take it below zero, so over time urgent requests
    /// take no more than that share, whatever neighbours mark urgent.
    ///
    /// [`Config::urgent_share`]: crate::node::Config::urgent_share
    fn urgent_budget(&mut self, now: Time) -> bool {
        let share = self.config.urgent_share;
        let (credit, at) = self.urgent_credit;
        let credit = (credit + now.saturating_since(at).as_secs_f64() * share).min(share);
        self.urgent_credit = (credit, now);
        share > 0.0 && credit > 0.0
    }

    /// Fjord's pushes: the newest chunk that a child subscribed to its substream lacks, to the
    /// child with the highest onward value among those it can reach in time.
    fn pick_child_push(&self, now: Time) -> Option<(usize, usize, u64)> {
        let active = self.neighbours.active();
        let mut best: Option<(u64, usize, usize, u64)> = None;
        for (t, store) in self.tracks.iter().enumerate() {
            for s in store.newest_first() {
                let Some(chunk) = &s.chunk else {
                    continue;
                };
                let published = chunk.meta().published_at_us;
                if now >= s.deadline || best.is_some_and(|b| b.0 >= published) {
                    break;
                }
                let lacking = self.children[substream(s.seq)] & active & !s.known & !s.cancelled;
                if lacking == 0 {
                    continue;
                }
                for &j in &self.push_order {
                    if lacking & (1 << j) == 0 {
                        continue;
                    }
                    let n = self.neighbours.get(j).expect("push order lists live slots");
                    if n.window_allows(chunk.len(), self.config.upload_bps)
                        && self.arrives_in_time(now, j, chunk.len(), s.deadline)
                    {
                        best = Some((published, j, t, s.seq));
                        break;
                    }
                }
                if best.is_some_and(|b| b.0 == published) {
                    break;
                }
            }
        }
        best.map(|(_, j, t, seq)| (j, t, seq))
    }

    /// Fjord's pushes: the newest useful chunk younger than [`Config::push_horizon`], to a
    /// receiver drawn with probability proportional to its onward value to the power
    /// [`ORIGIN_PUSH_EXPONENT`]: the origin's way of injecting chunks.
    ///
    /// Drawn rather than the best every time: when viewers pushed too, all senders around a
    /// receiver ranked it the same way, so "always the best" sent every fresh chunk from
    /// several senders to the same top uploader at once, and all but one copy were wasted
    /// (measured: about a quarter of all transfers aborted at N = 100). The draw also keeps
    /// the fastest neighbours' turns random, so no single one carries every chunk's first copy.
    ///
    /// [`Config::push_horizon`]: crate::node::Config::push_horizon
    fn pick_push(&mut self, now: Time) -> Option<(usize, usize, u64)> {
        let max_age = self.config.push_horizon;
        // A silent neighbour neither counts as holding what we sent it nor gets more: after a
        // mass crash the origin went on sending each fresh chunk's few copies to peers that
        // were dead but not yet known to be (the link's idle timeout is 2 s), and a chunk whose
        // every copy went so was lost to the whole mesh (the origin serves no requests).
        let upload = self.config.upload_bps;
        let silent = bits(self.neighbours.active())
            .filter(|&j| {
                self.neighbours
                    .get(j)
                    .is_some_and(|n| n.silent(now, upload))
            })
            .fold(0u64, |m, j| m | 1 << j);
        let active = self.neighbours.active() & !silent;
        if active == 0 {
            return None;
        }
        // Every fresh chunk first gets its share of the origin's upload (as many copies as the
        // upload holds stream rates), newest first; only then do extra copies go, newest first.
        // Between chunks published together (a video and an audio chunk of the same instant)
        // the smaller goes first, since it delays the other least. (Newest-first alone, with
        // that tie rule, let each small audio chunk take copies to every neighbour before the
        // video chunk of the same instant got more than one, and in the emulator most peers
        // then missed that video chunk: a single first copy at a slow peer cannot spread in
        // time. Without the tie rule the video chunk always won and audio starved.)
        //
        // Before all that, a chunk no neighbour holds yet gets its first copy. The origin is
        // the only source of a chunk nobody holds, and it announces nothing: under
        // newest-first alone, a chunk that found the uplink busy when it came (an audio chunk
        // behind a video one) ranked below the next chunk's second and third copies, then
        // below the chunk after that, and was never sent; the whole mesh missed it (traced on
        // the emulator at 80 ms chunks: an audio chunk 11 ms older than the video chunk that
        // took its turn).
        let quota = (self.config.upload_bps / self.stream_bps().max(1)).max(1) as u32;
        // (held by no neighbour, under quota, publication time, smaller), then track, seq and
        // eligible neighbours: the largest key wins.
        type Key = (bool, bool, u64, std::cmp::Reverse<usize>);
        let mut best: Option<(Key, usize, u64, u64)> = None;
        for (t, store) in self.tracks.iter().enumerate() {
            for s in store.newest_first() {
                let Some(chunk) = &s.chunk else {
                    continue;
                };
                let published = chunk.meta().published_at_us;
                if now.saturating_since(Time::from_micros(published)) > max_age || now >= s.deadline
                {
                    break;
                }
                let holders = (s.known & active).count_ones();
                let unheld = holders == 0;
                let key = (
                    unheld,
                    holders < quota,
                    published,
                    std::cmp::Reverse(chunk.len()),
                );
                if best.is_some_and(|b| b.0 >= key) {
                    // Older chunks of this track rank lower still, unless this one is held
                    // already and an older one is not.
                    if unheld {
                        break;
                    }
                    continue;
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
                    best = Some((key, t, s.seq, eligible));
                    if unheld {
                        break;
                    }
                }
            }
        }
        let ((_, _, _, std::cmp::Reverse(bytes)), t, seq, eligible) = best?;
        if let Some(j) = self.newcomer_first(now, eligible, bytes) {
            return Some((j, t, seq));
        }
        let neighbours = &self.neighbours;
        let chosen = self.rng.draw(eligible, |j| {
            neighbours
                .get(j)
                .map_or(0.0, |n| n.onward.max(0.01).powi(ORIGIN_PUSH_EXPONENT))
        })?;
        Some((chosen, t, seq))
    }

    /// The origin's push of a newcomer's first chunk: a greeted neighbour among `eligible` that
    /// holds nothing yet, if the budget for newcomers pays for sending `bytes` now. The budget
    /// accrues [`NEWCOMER_SHARE`] of the uplink's time and banks at most a second's accrual,
    /// or one chunk's transmission if that is more (else a slow origin would never pay).
    fn newcomer_first(&mut self, now: Time, eligible: u64, bytes: usize) -> Option<usize> {
        let (credit, at) = self.newcomer_credit;
        let cost = transmission_time(bytes, self.config.upload_bps);
        let bank = Duration::from_secs(1).mul_f64(NEWCOMER_SHARE).max(cost);
        let credit = (credit + now.saturating_since(at).mul_f64(NEWCOMER_SHARE)).min(bank);
        self.newcomer_credit = (credit, now);
        if cost > credit {
            return None;
        }
        let j = bits(eligible).find(|&j| {
            self.neighbours
                .get(j)
                .is_some_and(|n| n.starving() && n.hello.is_some())
        })?;
        self.newcomer_credit.0 = credit - cost;
        Some(j)
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
        let size = self.expected_size(0);
        let open: Vec<usize> = bits(useful)
            .filter(|&j| {
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
