//! The network model: where hosts are, how long a byte takes between two of them, and what
//! loss costs.
//!
//! Delay: the synthetic geographic model puts each host at a random point of a unit square
//! with a random access delay; the one-way delay between two hosts is both access delays plus
//! their distance times a constant chosen so the mean over random pairs is the scenario's
//! `mean_one_way_ms`. Or a latency matrix from a file, its rows assigned to hosts in turn.
//!
//! Loss: transfers ride QUIC, which recovers a lost packet in about one RTT. So a loss does not
//! lose a chunk; it delays it: a message of n packets (1200 bytes each) is late by one RTT with
//! probability 1 - (1 - p)^n.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fjord_core::rng::Rng;

use crate::scenario::Network as NetworkSpec;

const PACKET: usize = 1200;

/// Where a host sits in the delay model.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    x: f64,
    y: f64,
    access_us: f64,
    row: usize,
}

/// One-way delays and loss between hosts.
#[derive(Debug)]
pub struct Network {
    us_per_unit: f64,
    matrix: Option<Vec<Vec<f64>>>,
    loss: f64,
    min_one_way_us: f64,
}

impl Network {
    /// Builds the model from a scenario's network section; `dir` resolves a relative matrix
    /// path.
    pub fn new(spec: &NetworkSpec, dir: &Path) -> Result<Self> {
        let matrix = match &spec.matrix {
            None => None,
            Some(file) => Some(load_matrix(&dir.join(file))?),
        };
        let [lo, hi] = spec.access_ms;
        if lo < 0.0 || hi < lo {
            bail!("access_ms must be an increasing pair of non-negative numbers");
        }
        // Mean distance between two uniform points of the unit square.
        const MEAN_DISTANCE: f64 = 0.521_405_433;
        let access_mean = (lo + hi) / 2.0;
        let rest = spec.mean_one_way_ms - 2.0 * access_mean;
        if matrix.is_none() && rest < 0.0 {
            bail!("mean_one_way_ms must be at least twice the mean access delay");
        }
        let min_one_way_us = match &matrix {
            Some(m) => {
                m.iter()
                    .enumerate()
                    .flat_map(|(i, r)| r.iter().enumerate().filter(move |(j, _)| *j != i))
                    .map(|(_, &d)| d)
                    .fold(f64::INFINITY, f64::min)
                    * 1000.0
            }
            None => 2.0 * lo * 1000.0,
        };
        Ok(Self {
            us_per_unit: rest * 1000.0 / MEAN_DISTANCE,
            matrix,
            loss: spec.loss,
            min_one_way_us,
        })
    }

    /// Draws a place for the `index`-th host.
    pub fn place(&self, spec: &NetworkSpec, index: usize, rng: &mut Rng) -> Place {
        let [lo, hi] = spec.access_ms;
        Place {
            x: rng.unit(),
            y: rng.unit(),
            access_us: (lo + (hi - lo) * rng.unit()) * 1000.0,
            row: self.matrix.as_ref().map_or(0, |m| index % m.len()),
        }
    }

    /// One-way delay between two places.
    pub fn one_way(&self, a: &Place, b: &Place) -> Duration {
        let us = match &self.matrix {
            Some(m) => m[a.row][b.row] * 1000.0,
            None => {
                let d = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
                a.access_us + b.access_us + d * self.us_per_unit
            }
        };
        Duration::from_micros(us.max(0.0) as u64)
    }

    /// The smallest one-way delay between two distinct hosts of the model.
    pub fn min_one_way(&self) -> Duration {
        Duration::from_micros(self.min_one_way_us as u64)
    }

    /// Extra delay that loss adds to a message of `bytes` on a path with this RTT.
    pub fn loss_delay(&self, bytes: usize, rtt: Duration, rng: &mut Rng) -> Duration {
        if self.loss <= 0.0 {
            return Duration::ZERO;
        }
        let packets = bytes.div_ceil(PACKET).max(1) as i32;
        let p_any = 1.0 - (1.0 - self.loss).powi(packets);
        if rng.chance(p_any) {
            rtt
        } else {
            Duration::ZERO
        }
    }
}

fn load_matrix(path: &Path) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read latency matrix {}", path.display()))?;
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            l.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .with_context(|| format!("{}: row {}: {v:?}", path.display(), i + 1))
                })
                .collect()
        })
        .collect::<Result<_>>()?;
    let n = rows.len();
    if n < 2 || rows.iter().any(|r| r.len() != n) {
        bail!(
            "{}: the latency matrix must be square with at least 2 rows",
            path.display()
        );
    }
    if rows.iter().flatten().any(|d| !d.is_finite() || *d < 0.0) {
        bail!(
            "{}: delays must be non-negative numbers of ms",
            path.display()
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_mean_matches_the_scenario() {
        let spec = NetworkSpec::default();
        let net = Network::new(&spec, Path::new(".")).unwrap();
        let mut rng = Rng::new(3);
        let places: Vec<Place> = (0..400).map(|i| net.place(&spec, i, &mut rng)).collect();
        let mut sum = 0.0;
        let mut n = 0.0;
        for a in &places {
            for b in &places {
                sum += net.one_way(a, b).as_secs_f64() * 1000.0;
                n += 1.0;
            }
        }
        let mean = sum / n;
        assert!((mean - 50.0).abs() < 2.0, "mean one-way {mean} ms");
    }

    #[test]
    fn latency_matrix_is_used_and_checked() {
        let dir = std::env::temp_dir().join(format!("fjord-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.csv"), "# ms\n0, 10, 80\n10, 0, 30\n80, 30, 0\n").unwrap();
        let spec = NetworkSpec {
            matrix: Some("m.csv".into()),
            ..NetworkSpec::default()
        };
        let net = Network::new(&spec, &dir).unwrap();
        let mut rng = Rng::new(1);
        let p: Vec<Place> = (0..4).map(|i| net.place(&spec, i, &mut rng)).collect();
        assert_eq!(net.one_way(&p[0], &p[2]), Duration::from_millis(80));
        assert_eq!(net.one_way(&p[1], &p[2]), Duration::from_millis(30));
        // Host 3 wraps onto row 0.
        assert_eq!(net.one_way(&p[3], &p[1]), Duration::from_millis(10));
        assert_eq!(net.min_one_way(), Duration::from_millis(10));

        std::fs::write(dir.join("bad.csv"), "0, 1\n1\n").unwrap();
        let bad = NetworkSpec {
            matrix: Some("bad.csv".into()),
            ..NetworkSpec::default()
        };
        let err = Network::new(&bad, &dir).unwrap_err().to_string();
        assert!(err.contains("square"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loss_delays_about_the_expected_share() {
        let spec = NetworkSpec {
            loss: 0.01,
            ..NetworkSpec::default()
        };
        let net = Network::new(&spec, Path::new(".")).unwrap();
        let mut rng = Rng::new(5);
        let rtt = Duration::from_millis(100);
        let hit = (0..10_000)
            .filter(|_| net.loss_delay(78_000, rtt, &mut rng) > Duration::ZERO)
            .count();
        // 65 packets at 1%: 1 - 0.99^65 = 48%.
        assert!((4_500..5_100).contains(&hit), "{hit}");
    }
}
