//! The event queue, ordered by time, then by insertion order, so events at the same instant run
//! in the order they were scheduled and a run is deterministic.
//!
//! A timing wheel: almost every event is scheduled a few milliseconds to a few seconds ahead (a
//! message's one-way delay, a transfer, a timer), so it goes into the wheel's bucket of
//! `BUCKET_US` by its time, in O(1). When the current bucket runs out, the next one is sorted
//! once and then popped from its end; an event scheduled into the current bucket's span after
//! that waits in a small heap beside it, and the rare event beyond the wheel's horizon in an
//! overflow heap. The order is exactly that of one heap over all events (a test compares the
//! two).
//!
//! Events are stored inline in the buckets, not in a slab beside them: a bucket is written at
//! the end and read in order, which the processor prefetches, while a slab slot was a cache
//! miss at every pop (three fifths of the pop's time, a twentieth of a run's at N = 10,000).
//! (Before the wheel, with one big heap of every pending event, its pops were a fifth of a
//! large run's time, and with the events inline in that heap, moving them a third.)

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fjord_core::Time;

/// The width of one bucket of the wheel, µs.
const BUCKET_US: u64 = 100;
/// Buckets in the wheel: with [`BUCKET_US`], a horizon of 0.82 s (longer timers wait in the overflow heap).
const BUCKETS: usize = 1 << 13;

/// An event with its time and its place in the insertion order.
struct Entry<E> {
    at: Time,
    seq: u64,
    event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (Time, u64) {
        (self.at, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// Reversed, so that a `BinaryHeap` (a max-heap) pops the earliest.
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Pending events, earliest first.
pub struct Queue<E> {
    /// The current bucket's events, `[base, base + BUCKET_US)` µs, latest first, as sorted when
    /// the bucket became current.
    sorted: Vec<Entry<E>>,
    /// Events scheduled into the current bucket's span (or before it) after it was sorted, or
    /// moved in from the overflow when the wheel jumped to it.
    late: BinaryHeap<Entry<E>>,
    /// Later events within the horizon, by bucket (time / BUCKET_US modulo BUCKETS), unordered.
    wheel: Vec<Vec<Entry<E>>>,
    /// Entries held in `wheel`.
    in_wheel: usize,
    /// Events at or beyond `base + BUCKETS * BUCKET_US`.
    overflow: BinaryHeap<Entry<E>>,
    /// Start of the current bucket, µs.
    base: u64,
    next_seq: u64,
}

impl<E> Queue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            sorted: Vec::new(),
            late: BinaryHeap::new(),
            wheel: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            overflow: BinaryHeap::new(),
            base: 0,
            next_seq: 0,
        }
    }

    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: Time, event: E) {
        let entry = Entry {
            at,
            seq: self.next_seq,
            event,
        };
        self.next_seq += 1;
        self.place(entry);
    }

    fn place(&mut self, entry: Entry<E>) {
        let us = entry.at.as_micros();
        if us < self.base + BUCKET_US {
            self.late.push(entry);
        } else if us < self.base + BUCKETS as u64 * BUCKET_US {
            self.wheel[((us / BUCKET_US) % BUCKETS as u64) as usize].push(entry);
            self.in_wheel += 1;
        } else {
            self.overflow.push(entry);
        }
    }

    /// The earliest event (the first scheduled among equals).
    pub fn pop(&mut self) -> Option<(Time, E)> {
        loop {
            let from_sorted = match (self.sorted.last(), self.late.peek()) {
                (Some(s), Some(l)) => s.key() < l.key(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => {
                    if !self.advance() {
                        return None;
                    }
                    continue;
                }
            };
            let e = if from_sorted {
                self.sorted.pop()
            } else {
                self.late.pop()
            }
            .expect("peeked");
            return Some((e.at, e.event));
        }
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
        // Keep the emptied vector's allocation for the bucket's next round.
        let bucket = std::mem::replace(&mut self.wheel[i], std::mem::take(&mut self.sorted));
        self.in_wheel -= bucket.len();
        self.sorted = bucket;
        // Overflow entries whose time came within the horizon: the new bucket's go to the
        // heap beside it, the others to their buckets.
        let horizon = self.base + BUCKETS as u64 * BUCKET_US;
        while self
            .overflow
            .peek()
            .is_some_and(|e| e.at.as_micros() < horizon)
        {
            let e = self.overflow.pop().expect("peeked");
            self.place(e);
        }
        // Latest first (keys are unique: `seq` is), so the earliest pops off the end.
        self.sorted
            .sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
        true
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.late.len() + self.in_wheel + self.overflow.len()
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
        let push = |q: &mut Queue<u64>, r: &mut BinaryHeap<Entry<()>>, at: u64, seq: &mut u64| {
            q.push(Time::from_micros(at), *seq);
            r.push(Entry {
                at: Time::from_micros(at),
                seq: *seq,
                event: (),
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
