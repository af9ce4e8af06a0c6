//! The delay lower bound of a scenario.
//!
//! A chunk of S bits leaves the origin at time 0. Relax every constraint but two: a peer can
//! forward a chunk only once it holds all of it (store and forward), and a peer sends at most
//! at its upload rate. Give this one chunk the whole upload of every holder, send to the
//! highest-upload peers first (they multiply it fastest), and charge each hop only the
//! smallest one-way delay of the network model. Each holder then sends copies back to back,
//! each taking S/u; every completed copy creates a new holder that starts at once. The time at
//! which the k-th peer is reached in this schedule is the bound for the k-th fastest delivery.
//!
//! With every upload equal to the stream rate this is Liu's bound of about log2(N) + 1
//! chunk-times (ACM MM 2007); with heterogeneous uploads it is his snowball schedule. It is
//! optimistic for streaming, where each chunk competes with the next ones for the same upload,
//! so real schemes cannot reach it; the ratio to it says how much room is left.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Arrival times (µs after publication) at the peers, fastest first, under the relaxation.
/// `uploads_bps` are the viewers' uploads; `origin_bps` the origin's.
pub fn snowball_arrivals(
    chunk_bits: f64,
    origin_bps: f64,
    uploads_bps: &[f64],
    hop: Duration,
) -> Vec<f64> {
    let mut order: Vec<f64> = uploads_bps.to_vec();
    order.sort_by(|a, b| b.total_cmp(a));
    let hop_us = hop.as_secs_f64() * 1e6;
    // (time its next copy completes, holder's upload) for every holder able to send.
    let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Reverse<(u64, u64)>>, from_us: f64, bps: f64| {
        if bps > 0.0 {
            let done = from_us + chunk_bits / bps * 1e6 + hop_us;
            heap.push(Reverse((done.ceil() as u64, bps as u64)));
        }
    };
    push(&mut heap, 0.0, origin_bps);
    let mut arrivals = Vec::with_capacity(order.len());
    for &u in &order {
        let Some(Reverse((done, bps))) = heap.pop() else {
            break;
        };
        arrivals.push(done as f64);
        // The sender goes on with its next copy (it started it when this one left its uplink,
        // i.e. hop_us before `done`); the receiver starts sending at once.
        push(&mut heap, done as f64 - hop_us, bps as f64);
        push(&mut heap, done as f64, u);
    }
    arrivals
}

/// The bound for the `q`-quantile of delivery delays (0 < q <= 1), from sorted arrivals.
pub fn quantile(arrivals: &[f64], q: f64) -> Duration {
    if arrivals.is_empty() {
        return Duration::ZERO;
    }
    let k = ((q * arrivals.len() as f64).ceil() as usize).clamp(1, arrivals.len());
    Duration::from_micros(arrivals[k - 1] as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Homogeneous uploads equal to the stream rate: log2(N) + 1 chunk-times (no hop delay).
    #[test]
    fn homogeneous_bound_is_liu_s() {
        let chunk_bits = 1_000_000.0;
        let rate = 1_000_000.0; // one chunk per second
        for n in [1usize, 7, 100, 1000, 4096] {
            let arrivals = snowball_arrivals(chunk_bits, rate, &vec![rate; n], Duration::ZERO);
            let last = quantile(&arrivals, 1.0).as_secs_f64();
            let expected = ((n + 1) as f64).log2().ceil();
            assert!(
                (last - expected).abs() < 1e-3,
                "n={n}: {last} vs {expected}"
            );
        }
    }

    #[test]
    fn higher_uploads_first_beat_log2() {
        let bits = 1_000_000.0;
        let uploads: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 4e6 } else { 0.8e6 })
            .collect();
        let hetero = snowball_arrivals(bits, 4e6, &uploads, Duration::ZERO);
        let homo = snowball_arrivals(bits, 4e6, &vec![1.12e6; 1000], Duration::ZERO);
        assert!(quantile(&hetero, 0.99) < quantile(&homo, 0.99));
    }
}
