//! What a browser session is sent, and in which order, as a pure state machine.
//!
//! A browser is a leaf of the mesh: it only receives. The session starts at the newest group
//! start the node holds (and the same sequence on the other tracks), then takes every chunk
//! as it arrives here. Each chunk still obeys the mesh's deadline rule: what can no longer be
//! played in time (publication + the channel's target latency) is not sent. The queue of
//! chunks waiting for the browser's connection is bounded: a session that falls further
//! behind than [`SessionQueue::new`]'s limit drops everything queued and resumes at the next
//! group start, which is the only place a player can resume decoding video.
//!
//! Call order: [`SessionQueue::start`] once with what the node holds, then
//! [`SessionQueue::offer`] for every new chunk and [`SessionQueue::pop`] whenever the
//! connection can take the next one.

use std::collections::VecDeque;

use fjord_core::wire::{Chunk, ChunkFlags};

/// The chunks of one browser session, waiting to be sent.
#[derive(Debug)]
pub struct SessionQueue {
    epoch: u64,
    video_track: u8,
    target_latency_us: u64,
    limit: usize,
    queue: VecDeque<Chunk>,
    /// Waiting for a video group start (at the beginning, or after falling behind).
    waiting: bool,
    /// The sequence from which chunks are taken (the group start).
    from: Option<u64>,
    skips: u64,
}

impl SessionQueue {
    /// A queue for chunks of `epoch`, whose video track is `video_track`, holding at most
    /// `limit` chunks.
    pub fn new(epoch: u64, video_track: u8, target_latency_us: u64, limit: usize) -> Self {
        Self {
            epoch,
            video_track,
            target_latency_us,
            limit: limit.max(1),
            queue: VecDeque::new(),
            waiting: true,
            from: None,
            skips: 0,
        }
    }

    /// Starts from what the node holds: the newest video group start and everything after
    /// it (both tracks), oldest first.
    pub fn start(&mut self, held: &[Chunk], now_us: u64) {
        let start = held
            .iter()
            .filter(|c| {
                let m = c.meta();
                m.epoch == self.epoch
                    && m.track == self.video_track
                    && m.flags.contains(ChunkFlags::GROUP_START)
            })
            .map(|c| c.meta().sequence)
            .max();
        let Some(start) = start else { return };
        self.waiting = false;
        self.from = Some(start);
        let mut from: Vec<&Chunk> = held
            .iter()
            .filter(|c| c.meta().epoch == self.epoch && c.meta().sequence >= start)
            .collect();
        from.sort_by_key(|c| (c.meta().sequence, c.meta().track));
        for c in from {
            self.offer(c.clone(), now_us);
        }
    }

    /// A chunk newly available here.
    pub fn offer(&mut self, chunk: Chunk, now_us: u64) {
        let m = *chunk.meta();
        if m.epoch != self.epoch {
            return;
        }
        if m.published_at_us.saturating_add(self.target_latency_us) <= now_us {
            // Too late to be played: the same rule as between nodes.
            return;
        }
        if self.waiting {
            if m.track != self.video_track || !m.flags.contains(ChunkFlags::GROUP_START) {
                return;
            }
            self.waiting = false;
            self.from = Some(m.sequence);
        }
        if self.from.is_some_and(|f| m.sequence < f) {
            return;
        }
        if self.queue.len() >= self.limit {
            // Behind by more than the limit: start again at the next group.
            self.queue.clear();
            self.waiting = true;
            self.from = None;
            self.skips += 1;
            return self.offer(chunk, now_us);
        }
        self.queue.push_back(chunk);
    }

    /// The next chunk to send, skipping those whose deadline passed while they waited.
    pub fn pop(&mut self, now_us: u64) -> Option<Chunk> {
        while let Some(c) = self.queue.pop_front() {
            if c.meta()
                .published_at_us
                .saturating_add(self.target_latency_us)
                > now_us
            {
                return Some(c);
            }
        }
        None
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Times the session fell behind and skipped to a group start.
    pub fn skips(&self) -> u64 {
        self.skips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjord_core::wire::{ChannelKey, ChunkMeta};

    fn chunk(track: u8, seq: u64, published: u64) -> Chunk {
        let key = ChannelKey::from_seed(&[1; 32]);
        let flags = if seq.is_multiple_of(5) {
            ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT
        } else {
            ChunkFlags::empty()
        };
        key.sign_chunk(
            &ChunkMeta {
                epoch: 1,
                track,
                sequence: seq,
                flags,
                timestamp: seq,
                duration: 1,
                published_at_us: published,
            },
            b"x",
        )
        .unwrap()
    }

    fn drain(q: &mut SessionQueue, now: u64) -> Vec<(u8, u64)> {
        std::iter::from_fn(|| q.pop(now))
            .map(|c| (c.meta().track, c.meta().sequence))
            .collect()
    }

    #[test]
    fn starts_at_the_newest_group_start_held() {
        let mut q = SessionQueue::new(1, 0, 3_000_000, 100);
        let held: Vec<Chunk> = (0..8)
            .flat_map(|s| [chunk(0, s, 1_000_000 + s), chunk(1, s, 1_000_000 + s)])
            .collect();
        q.start(&held, 1_000_010);
        assert_eq!(
            drain(&mut q, 1_000_010),
            vec![(0, 5), (1, 5), (0, 6), (1, 6), (0, 7), (1, 7)]
        );
        q.offer(chunk(1, 8, 1_000_020), 1_000_020);
        q.offer(chunk(0, 4, 1_000_020), 1_000_020);
        assert_eq!(
            drain(&mut q, 1_000_020),
            vec![(1, 8)],
            "older than the start: not sent"
        );
    }

    #[test]
    fn without_a_group_start_it_waits_for_one() {
        let mut q = SessionQueue::new(1, 0, 3_000_000, 100);
        q.start(&[chunk(0, 3, 0), chunk(1, 3, 0)], 0);
        q.offer(chunk(1, 4, 0), 0);
        assert!(q.is_empty());
        q.offer(chunk(0, 5, 0), 0);
        q.offer(chunk(1, 5, 0), 0);
        assert_eq!(drain(&mut q, 0), vec![(0, 5), (1, 5)]);
    }

    #[test]
    fn late_chunks_are_not_sent_and_a_session_behind_skips_to_the_next_group() {
        let mut q = SessionQueue::new(1, 0, 1_000, 4);
        q.offer(chunk(0, 0, 0), 500);
        q.offer(chunk(0, 1, 0), 1_500); // already past its deadline: dropped
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(2_000), None, "expired while queued");
        for s in 5..9 {
            q.offer(chunk(0, s, 10_000), 10_000);
        }
        assert_eq!(q.len(), 4);
        // A fifth chunk overflows: everything queued goes, and the session waits for 10.
        q.offer(chunk(0, 9, 10_000), 10_000);
        assert!(q.is_empty());
        assert_eq!(q.skips(), 1);
        q.offer(chunk(0, 10, 10_000), 10_000);
        assert_eq!(drain(&mut q, 10_000), vec![(0, 10)]);
    }
}
