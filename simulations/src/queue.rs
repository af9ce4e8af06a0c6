//! The event queue, ordered by time, then by insertion order, so events at the same instant run
//! in the order they were scheduled and a run is deterministic.
//!
//! A timing wheel in front of heaps: almost every event is scheduled a few milliseconds to a few
//! seconds ahead (a message's one-way delay, a transfer, a timer), so it goes into the wheel's
//! bucket of `BUCKET_US` by its time, in O(1). Only the current bucket is a heap; the
//! bucket after it is heapified when the current one runs out, and the rare event beyond the
//! wheel's horizon waits in an overflow heap. The order is exactly that of one heap over all
//! events (a test compares the two), but pops touch a small heap that stays in cache: with
//! one big heap of every pending event, its pops were a fifth of a large run's time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fjord_core::Time;

/// The width of one bucket of the wheel, µs.
const BUCKET_US: u64 = 100;
/// Buckets in the wheel: with [`BUCKET_US`], a horizon of 0.82 s (longer timers wait in the overflow heap).
const BUCKETS: usize = 1 << 13;

/// A heap entry: small and fixed-size, so sifting moves 24 bytes rather than a whole event
/// (the events live in a slab beside the heap; with them inline, moving them was a third of a
/// simulation's time).
struct Entry {
    at: Time,
    seq: u64,
    slot: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Pending events, earliest first.
pub struct Queue<E> {
    /// Events of the current bucket, `[base, base + BUCKET_US)` µs, and any scheduled before it.
    current: BinaryHeap<Entry>,
    /// Later events within the horizon, by bucket (time / BUCKET_US modulo BUCKETS), unordered.
    wheel: Vec<Vec<Entry>>,
    /// Entries held in `wheel`.
    in_wheel: usize,
    /// Events at or beyond `base + BUCKETS * BUCKET_US`.
    overflow: BinaryHeap<Entry>,
    /// Start of the current bucket, µs.
    base: u64,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<E> Queue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            current: BinaryHeap::new(),
            wheel: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            overflow: BinaryHeap::new(),
            base: 0,
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }

    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Time, event: E) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(event);
                i
            }
            None => {
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        let entry = Entry {
            at,
            seq: self.next_seq,
            slot,
        };
        self.next_seq += 1;
        self.place(entry);
    }

    fn place(&mut self, entry: Entry) {
        let us = entry.at.as_micros();
        if us < self.base + BUCKET_US {
            self.current.push(entry);
        } else if us < self.base + BUCKETS as u64 * BUCKET_US {
            self.wheel[((us / BUCKET_US) % BUCKETS as u64) as usize].push(entry);
            self.in_wheel += 1;
        } else {
            self.overflow.push(entry);
        }
    }

    /// The earliest event (the first scheduled among equals).
    pub fn pop(&mut self) -> Option<(Time, E)> {
        while self.current.is_empty() {
            if !self.advance() {
                return None;
            }
        }
        let e = self.current.pop().expect("not empty");
        self.free.push(e.slot);
        let event = self.slab[e.slot as usize]
            .take()
            .expect("a queued slot holds its event");
        Some((e.at, event))
    }

    /// Moves on to the next bucket that holds anything; false when nothing is pending.
    fn advance(&mut self) -> bool {
        if self.in_wheel == 0 {
            // Jump straight to the overflow's earliest bucket.
            let Some(first) = self.overflow.peek() else {
                return false;
            };
            self.base = first.at.as_micros() / BUCKET_US * BUCKET_US;
        } else {
            self.base += BUCKET_US;
        }
        let i = ((self.base / BUCKET_US) % BUCKETS as u64) as usize;
        let bucket = std::mem::take(&mut self.wheel[i]);
        self.in_wheel -= bucket.len();
        // Keep the bucket's allocation for its next round: hand it the emptied heap's.
        self.wheel[i] = std::mem::take(&mut self.current).into_vec();
        self.current = BinaryHeap::from(bucket);
        // Overflow entries whose time came within the horizon: the new bucket's go to the
        // heap, the others to their buckets.
        let horizon = self.base + BUCKETS as u64 * BUCKET_US;
        while self
            .overflow
            .peek()
            .is_some_and(|e| e.at.as_micros() < horizon)
        {
            let e = self.overflow.pop().expect("peeked");
            self.place(e);
        }
        true
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.current.len() + self.in_wheel + self.overflow.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_insertion_order() {
        let mut q = Queue::new();
        q.push(Time::from_micros(5), "b");
        q.push(Time::from_micros(1), "a");
        q.push(Time::from_micros(5), "c");
        assert_eq!(q.pop().unwrap().1, "a");
        assert_eq!(q.pop().unwrap().1, "b");
        assert_eq!(q.pop().unwrap().1, "c");
        assert!(q.is_empty());
    }

    /// The wheel pops exactly what one heap over all events would, for times near and far
    /// (beyond the horizon), equal times, and pushes while popping, as the engine does.
    #[test]
    fn pops_in_the_order_of_one_heap() {
        let mut rng = fjord_core::rng::Rng::new(3);
        let mut q = Queue::new();
        let mut reference = BinaryHeap::new();
        let mut seq = 0u64;
        let mut now = 0u64;
        let push = |q: &mut Queue<u64>, r: &mut BinaryHeap<Entry>, at: u64, seq: &mut u64| {
            q.push(Time::from_micros(at), *seq);
            r.push(Entry {
                at: Time::from_micros(at),
                seq: *seq,
                slot: 0,
            });
            *seq += 1;
        };
        for _ in 0..1000 {
            let at = rng.below(20_000_000);
            push(&mut q, &mut reference, at, &mut seq);
        }
        let mut popped = 0;
        while let Some((at, id)) = q.pop() {
            let want = reference.pop().expect("as many");
            assert_eq!((at, id), (want.at, want.seq));
            assert!(at.as_micros() >= now);
            now = at.as_micros();
            popped += 1;
            // Most pushes land a little ahead, some at the same instant, a few far away.
            if popped < 20_000 {
                for _ in 0..rng.below(3) {
                    let ahead = match rng.below(10) {
                        0 => 0,
                        1 => rng.below(30_000_000),
                        _ => rng.below(500_000),
                    };
                    push(&mut q, &mut reference, now + ahead, &mut seq);
                }
            }
        }
        assert!(reference.is_empty());
        assert!(popped > 20_000, "{popped}");
        assert!(q.is_empty());
    }
}
