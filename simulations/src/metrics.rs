//! What a run measures, and the summary it reports.
//!
//! Counters are kept per chunk sequence; with several tracks, each (peer, sequence) pair stands
//! for one chunk of every track, and each of them counts.
//!
//! Only (peer, chunk) pairs in the measurement window count: chunks published after the
//! warm-up and at least [`JOIN_ALLOWANCE`] after the peer joined, whose deadline falls before
//! the peer left and before the end of the run.
//!
//! - Continuity: the share of those pairs where the chunk arrived before its deadline
//!   (CoolStreaming's continuity index).
//! - Delay: arrival minus publication over every such pair that arrived, from a 1 ms histogram.
//! - Start-up: join to first chunk, over peers that joined after the warm-up.
//! - Origin egress: bytes the origin sent during the window over the stream's bytes in it.
//! - Duplicate and control bytes: summed over all peers, as a share of the stream bytes all
//!   eligible peers should have received.

use std::time::Duration;

/// Time a joining peer gets to find neighbours before its chunks count.
pub const JOIN_ALLOWANCE: Duration = Duration::from_secs(1);
/// Delays are histogrammed up to this many ms; longer ones go to the last bucket.
const MAX_DELAY_MS: usize = 60_000;

/// Counters filled during a run.
#[derive(Debug)]
pub struct Metrics {
    delay_hist: Vec<u64>,
    /// Per chunk sequence: eligible (peer, chunk) pairs (as a difference array) and on-time
    /// arrivals, over all tracks.
    eligible_diff: Vec<i64>,
    on_time: Vec<u64>,
    /// Join-to-first-chunk times of peers that joined after the warm-up, µs.
    pub startup_us: Vec<u64>,
    /// Per peer continuity (on time / eligible), for peers with at least one eligible chunk.
    pub peer_continuity: Vec<f64>,
    /// Bytes the origin sent in the window.
    pub origin_bytes: u64,
    /// Bytes of chunk copies a peer already had (complete duplicates) plus bytes of transfers
    /// aborted midway.
    pub duplicate_bytes: u64,
    /// Bytes of control messages.
    pub control_bytes: u64,
    /// Bytes of all chunk transfers, completed or aborted.
    pub transfer_bytes: u64,
    /// Bytes of one chunk (the mean over the tracks).
    pub chunk_bytes: u64,
    /// Tracks: chunks per sequence.
    pub tracks: u64,
}

impl Metrics {
    /// Empty counters for a run of `chunks` sequences of `tracks` chunks of `chunk_bytes`
    /// each.
    pub fn new(chunks: usize, tracks: u64, chunk_bytes: u64) -> Self {
        Self {
            delay_hist: vec![0; MAX_DELAY_MS + 1],
            eligible_diff: vec![0; chunks + 1],
            on_time: vec![0; chunks],
            startup_us: Vec::new(),
            peer_continuity: Vec::new(),
            origin_bytes: 0,
            duplicate_bytes: 0,
            control_bytes: 0,
            transfer_bytes: 0,
            chunk_bytes,
            tracks: tracks.max(1),
        }
    }

    /// A peer is eligible for sequences `lo..=hi` (on every track).
    pub fn add_eligible(&mut self, lo: u64, hi: u64) {
        if lo > hi || lo as usize >= self.on_time.len() {
            return;
        }
        let hi = (hi as usize).min(self.on_time.len() - 1);
        self.eligible_diff[lo as usize] += self.tracks as i64;
        self.eligible_diff[hi + 1] -= self.tracks as i64;
    }

    /// A peer is no longer eligible for sequences `lo..=hi` (it was killed).
    pub fn retract_eligible(&mut self, lo: u64, hi: u64) {
        if lo > hi || lo as usize >= self.on_time.len() {
            return;
        }
        let hi = (hi as usize).min(self.on_time.len() - 1);
        self.eligible_diff[lo as usize] -= self.tracks as i64;
        self.eligible_diff[hi + 1] += self.tracks as i64;
    }

    /// An on-time arrival of `seq` no longer counts (its peer is no longer eligible for it).
    pub fn retract_on_time(&mut self, seq: u64) {
        if let Some(c) = self.on_time.get_mut(seq as usize) {
            *c = c.saturating_sub(1);
        }
    }

    /// An eligible chunk arrived `delay` after publication; `on_time` if before its deadline.
    pub fn delivered(&mut self, seq: u64, delay: Duration, on_time: bool) {
        let ms = (delay.as_millis() as usize).min(MAX_DELAY_MS);
        self.delay_hist[ms] += 1;
        if on_time && let Some(c) = self.on_time.get_mut(seq as usize) {
            *c += 1;
        }
    }

    /// Eligible (peer, chunk) pairs per sequence.
    pub fn eligible_per_chunk(&self) -> Vec<u64> {
        let mut acc = 0i64;
        self.eligible_diff[..self.on_time.len()]
            .iter()
            .map(|d| {
                acc += d;
                acc.max(0) as u64
            })
            .collect()
    }

    /// On-time arrivals per chunk.
    pub fn on_time_per_chunk(&self) -> &[u64] {
        &self.on_time
    }

    /// The `q`-quantile of delays, ms (bucket upper edge), or `None` without samples.
    pub fn delay_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.delay_hist.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (ms, &c) in self.delay_hist.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(ms as f64 + 1.0);
            }
        }
        None
    }

    /// The largest delay observed, ms.
    pub fn delay_max_ms(&self) -> Option<f64> {
        self.delay_hist
            .iter()
            .rposition(|&c| c > 0)
            .map(|ms| ms as f64 + 1.0)
    }

    /// The delay distribution as (ms, cumulative share) points.
    pub fn delay_cdf(&self) -> Vec<(f64, f64)> {
        let total: u64 = self.delay_hist.iter().sum();
        let last = self.delay_hist.iter().rposition(|&c| c > 0).unwrap_or(0);
        let mut seen = 0;
        (0..=last)
            .map(|ms| {
                seen += self.delay_hist[ms];
                (ms as f64 + 1.0, seen as f64 / total.max(1) as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_eligibility() {
        let mut m = Metrics::new(10, 1, 1000);
        for ms in 1..=100u64 {
            m.delivered(0, Duration::from_millis(ms), true);
        }
        assert_eq!(m.delay_quantile_ms(0.5), Some(51.0));
        assert_eq!(m.delay_quantile_ms(0.99), Some(100.0));
        assert_eq!(m.delay_max_ms(), Some(101.0));
        m.add_eligible(2, 4);
        m.add_eligible(3, 20);
        assert_eq!(m.eligible_per_chunk(), vec![0, 0, 1, 2, 2, 1, 1, 1, 1, 1]);
        // Two tracks: each peer's sequence is two chunks.
        let mut m = Metrics::new(4, 2, 1000);
        m.add_eligible(1, 2);
        m.retract_eligible(2, 2);
        assert_eq!(m.eligible_per_chunk(), vec![0, 2, 0, 0]);
    }
}
