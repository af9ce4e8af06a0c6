//! Summaries of runs: numbers, tables, CSV files and SVG plots.

use std::fmt::Write as _;
use std::time::Duration;

use fjord_core::Policy;

use crate::bound;
use crate::engine::RunOutput;
use crate::metrics::Metrics;
use crate::scenario::Scenario;

/// The figures of one run.
#[derive(Debug)]
pub struct RunSummary {
    /// Scenario name.
    pub scenario: String,
    /// Policy run.
    pub policy: Policy,
    /// Viewers.
    pub peers: usize,
    /// Share of eligible (peer, chunk) pairs on time.
    pub continuity: f64,
    /// Lowest per-peer continuity, and the 1st percentile.
    pub worst_peer: f64,
    /// 1st percentile of per-peer continuity.
    pub p1_peer: f64,
    /// Delay percentiles, ms: p50, p95, p99, max.
    pub delay_ms: [f64; 4],
    /// Lower bound of p50, p99 and max delay, ms.
    pub bound_ms: [f64; 3],
    /// Start-up p50 and p95, ms (peers that joined after the warm-up).
    pub startup_ms: Option<[f64; 2]>,
    /// Origin egress over the stream rate.
    pub origin_egress: f64,
    /// Duplicate (and aborted) bytes over the stream bytes eligible peers needed.
    pub duplicate_share: f64,
    /// Control bytes over the same.
    pub control_share: f64,
    /// Maximum sustainable rate over the stream rate: min(u_s, (u_s + sum u_i) / n) / r.
    pub r_max: f64,
    /// Stream rate achieved on time (continuity x r) over r_max.
    pub achieved_vs_max: f64,
    /// Resource index of the scenario.
    pub resource_index: f64,
    /// Events processed and wall-clock time.
    pub events: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// The delay distribution.
    pub cdf: Vec<(f64, f64)>,
    /// Continuity per chunk: (seconds since start, continuity).
    pub continuity_over_time: Vec<(f64, f64)>,
    /// After the scenario's kill: the survivors' continuity per second of publication, from
    /// the kill on, as the emulator reports it (empty without a kill).
    pub after_kill: Vec<f64>,
}

impl RunSummary {
    /// Computes the figures of a finished run.
    pub fn new(sc: &Scenario, policy: Policy, out: RunOutput, wall: Duration) -> Self {
        let m: &Metrics = &out.metrics;
        let eligible = m.eligible_per_chunk();
        let on_time = m.on_time_per_chunk();
        let total_eligible: u64 = eligible.iter().sum();
        let total_on_time: u64 = on_time.iter().sum();
        let continuity = total_on_time as f64 / total_eligible.max(1) as f64;
        let chunk_s = f64::from(sc.stream.chunk_ms) / 1000.0;
        let continuity_over_time = eligible
            .iter()
            .zip(on_time)
            .enumerate()
            .filter(|(_, (e, _))| **e > 0)
            .map(|(i, (e, o))| (i as f64 * chunk_s, *o as f64 / *e as f64))
            .collect();
        let mut peers = m.peer_continuity.clone();
        peers.sort_by(f64::total_cmp);
        let worst_peer = peers.first().copied().unwrap_or(0.0);
        let p1_peer = peers
            .get((peers.len() as f64 * 0.01) as usize)
            .copied()
            .unwrap_or(0.0);
        let q = |x| m.delay_quantile_ms(x).unwrap_or(f64::NAN);
        let r = f64::from(sc.stream.rate_kbps) * 1000.0;
        let chunk_bits = m.chunk_bytes as f64 * 8.0;
        let arrivals = bound::snowball_arrivals(
            chunk_bits,
            sc.origin_upload * r,
            &out.uploads_bps,
            out.min_one_way,
        );
        let b = |x| bound::quantile(&arrivals, x).as_secs_f64() * 1000.0;
        let mut startup: Vec<u64> = m.startup_us.clone();
        startup.sort_unstable();
        let pick =
            |v: &[u64], x: f64| v[((v.len() as f64 * x) as usize).min(v.len() - 1)] as f64 / 1000.0;
        let startup_ms = (!startup.is_empty()).then(|| [pick(&startup, 0.5), pick(&startup, 0.95)]);
        let measured_s = sc.duration_s - sc.warmup_s;
        let stream_bytes = r / 8.0 * measured_s;
        let needed_bytes = total_eligible as f64 * m.chunk_bytes as f64;
        let n = sc.peers as f64;
        let sum_u: f64 = out.uploads_bps.iter().sum();
        let r_max = (sc.origin_upload * r).min((sc.origin_upload * r + sum_u) / n) / r;
        Self {
            scenario: sc.name.clone(),
            policy,
            peers: sc.peers,
            continuity,
            worst_peer,
            p1_peer,
            delay_ms: [
                q(0.5),
                q(0.95),
                q(0.99),
                m.delay_max_ms().unwrap_or(f64::NAN),
            ],
            bound_ms: [b(0.5), b(0.99), b(1.0)],
            startup_ms,
            origin_egress: m.origin_bytes as f64 / stream_bytes,
            duplicate_share: m.duplicate_bytes as f64 / needed_bytes.max(1.0),
            control_share: m.control_bytes as f64 / needed_bytes.max(1.0),
            r_max,
            achieved_vs_max: continuity / r_max.max(f64::MIN_POSITIVE),
            resource_index: sc.resource_index(),
            events: out.events,
            wall,
            cdf: m.delay_cdf(),
            after_kill: after_kill(sc, &eligible, on_time),
            continuity_over_time,
        }
    }

    /// Seconds after the kill until the continuity stays at 99% or more.
    pub fn recovery_s(&self) -> Option<f64> {
        recovery_s(&self.after_kill)
    }

    /// p99 delay over its lower bound.
    pub fn p99_ratio(&self) -> f64 {
        self.delay_ms[2] / self.bound_ms[1]
    }
}

/// The survivors' continuity per second of publication from the scenario's kill on.
fn after_kill(sc: &Scenario, eligible: &[u64], on_time: &[u64]) -> Vec<f64> {
    let Some(at) = sc.kill.at_s else {
        return Vec::new();
    };
    let chunk_us = u64::from(sc.stream.chunk_ms.max(1)) * 1000;
    let per_s = (1_000_000 / chunk_us).max(1) as usize;
    let first = ((at * 1e6) as u64).div_ceil(chunk_us) as usize;
    let last = eligible.iter().rposition(|&e| e > 0).map_or(0, |i| i + 1);
    let mut out = Vec::new();
    let mut s0 = first;
    while s0 + per_s <= last {
        let e: u64 = eligible[s0..s0 + per_s].iter().sum();
        let o: u64 = on_time[s0..s0 + per_s].iter().sum();
        out.push(o as f64 / e.max(1) as f64);
        s0 += per_s;
    }
    out
}

/// Seconds from the kill until the per-second continuity `after_kill` stays at 99% or more
/// (`None` if it never does, or there is none).
pub fn recovery_s(after_kill: &[f64]) -> Option<f64> {
    (0..after_kill.len())
        .find(|&i| after_kill[i..].iter().all(|c| *c >= 0.99))
        .map(|i| i as f64)
}

/// Shares as percentages with one decimal, separated by spaces.
pub fn percentages(v: &[f64]) -> String {
    v.iter()
        .map(|c| format!("{:.1}", c * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line on the recovery from the scenario's kill, if it had one.
pub fn after_kill_line(s: &RunSummary) -> Option<String> {
    if s.after_kill.is_empty() {
        return None;
    }
    let recovery = s
        .recovery_s()
        .map_or("never".to_string(), |r| format!("{r:.0} s"));
    Some(format!(
        "{} after the kill: back to 99% after {recovery}; continuity per second {}",
        crate::policy_name(s.policy),
        percentages(&s.after_kill)
    ))
}

/// Header of the summary table (Markdown).
pub fn table_header() -> String {
    "| scenario | N | policy | continuity | worst 1% peer | delay p50 / p95 / p99 / max (ms) | p99 bound (ms) | p99 / bound | start-up p50 / p95 (ms) | origin egress (x r) | duplicate | control | rate / r_max | wall (s) |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        .to_owned()
}

/// One row of the summary table.
pub fn table_row(s: &RunSummary) -> String {
    let mut out = String::new();
    let startup = s
        .startup_ms
        .map_or("-".to_owned(), |[a, b]| format!("{a:.0} / {b:.0}"));
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.3}% | {:.2}% | {:.0} / {:.0} / {:.0} / {:.0} | {:.0} | {:.2} | {} | {:.2} | {:.2}% | {:.2}% | {:.3} | {:.1} |",
        s.scenario,
        s.peers,
        crate::policy_name(s.policy),
        s.continuity * 100.0,
        s.p1_peer * 100.0,
        s.delay_ms[0],
        s.delay_ms[1],
        s.delay_ms[2],
        s.delay_ms[3],
        s.bound_ms[1],
        s.p99_ratio(),
        startup,
        s.origin_egress,
        s.duplicate_share * 100.0,
        s.control_share * 100.0,
        s.achieved_vs_max,
        s.wall.as_secs_f64(),
    );
    out
}

/// Writes a run's files into `dir`: `summary.md`, `summary.csv`, `delay_cdf.csv`,
/// `continuity.csv`, and the plots `delay_cdf.svg` and `continuity.svg`.
pub fn write_run(dir: &std::path::Path, runs: &[RunSummary]) -> std::io::Result<()> {
    use crate::plot::{Chart, Scale, Series, render};
    std::fs::create_dir_all(dir)?;
    let mut md = table_header();
    for r in runs {
        md.push_str(&table_row(r));
    }
    std::fs::write(dir.join("summary.md"), md)?;
    let mut csv = csv_header();
    for r in runs {
        csv.push_str(&csv_row(r));
    }
    std::fs::write(dir.join("summary.csv"), csv)?;

    let mut cdf = String::from("policy,delay_ms,share\n");
    let mut continuity = String::from("policy,time_s,continuity\n");
    let thinned: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| thin(&r.cdf, 400)).collect();
    for (r, points) in runs.iter().zip(&thinned) {
        let name = crate::policy_name(r.policy);
        for (ms, share) in points {
            let _ = writeln!(cdf, "{name},{ms},{share:.6}");
        }
        for (t, c) in &r.continuity_over_time {
            let _ = writeln!(continuity, "{name},{t:.3},{c:.6}");
        }
    }
    std::fs::write(dir.join("delay_cdf.csv"), cdf)?;
    std::fs::write(dir.join("continuity.csv"), continuity)?;

    let title = runs.first().map_or(String::new(), |r| {
        format!("{} (N = {})", r.scenario, r.peers)
    });
    let series: Vec<Series<'_>> = runs
        .iter()
        .zip(&thinned)
        .map(|(r, points)| Series {
            label: crate::policy_name(r.policy),
            points,
        })
        .collect();
    std::fs::write(
        dir.join("delay_cdf.svg"),
        render(
            &Chart {
                title: &format!("Chunk delay from publication: {title}"),
                x_label: "delay (ms)",
                y_label: "share of deliveries",
                x_scale: Scale::Linear,
                y_range: Some((0.0, 1.0)),
            },
            &series,
        ),
    )?;
    let over_time: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| smooth(&r.continuity_over_time, 8))
        .collect();
    let series: Vec<Series<'_>> = runs
        .iter()
        .zip(&over_time)
        .map(|(r, points)| Series {
            label: crate::policy_name(r.policy),
            points,
        })
        .collect();
    std::fs::write(
        dir.join("continuity.svg"),
        render(
            &Chart {
                title: &format!("Continuity over time (2 s average): {title}"),
                x_label: "publication time (s)",
                y_label: "share of peers on time",
                x_scale: Scale::Linear,
                y_range: Some((0.0, 1.0)),
            },
            &series,
        ),
    )?;
    Ok(())
}

/// Writes a sweep over N into `dir`: `results.md`, `results.csv` and `origin_egress.svg`,
/// `p99_delay.svg` (with the lower bound).
pub fn write_sweep(dir: &std::path::Path, runs: &[RunSummary]) -> std::io::Result<()> {
    use crate::plot::{Chart, Scale, Series, render};
    std::fs::create_dir_all(dir)?;
    let mut md = table_header();
    let mut csv = csv_header();
    for r in runs {
        md.push_str(&table_row(r));
        csv.push_str(&csv_row(r));
    }
    std::fs::write(dir.join("results.md"), md)?;
    std::fs::write(dir.join("results.csv"), csv)?;
    let mut policies: Vec<Policy> = Vec::new();
    for r in runs {
        if !policies.contains(&r.policy) {
            policies.push(r.policy);
        }
    }
    let per_policy = |f: &dyn Fn(&RunSummary) -> f64| -> Vec<Vec<(f64, f64)>> {
        policies
            .iter()
            .map(|p| {
                runs.iter()
                    .filter(|r| r.policy == *p)
                    .map(|r| (r.peers as f64, f(r)))
                    .collect()
            })
            .collect()
    };
    let egress = per_policy(&|r| r.origin_egress);
    let series: Vec<Series<'_>> = policies
        .iter()
        .zip(&egress)
        .map(|(p, points)| Series {
            label: crate::policy_name(*p),
            points,
        })
        .collect();
    let name = runs.first().map_or("", |r| r.scenario.as_str());
    std::fs::write(
        dir.join("origin_egress.svg"),
        render(
            &Chart {
                title: &format!("Origin egress against N: {name}"),
                x_label: "viewers (N)",
                y_label: "origin egress (x stream rate)",
                x_scale: Scale::Log,
                y_range: Some((0.0, 5.0)),
            },
            &series,
        ),
    )?;
    let mut p99 = per_policy(&|r| r.delay_ms[2]);
    let mut labels: Vec<&str> = policies.iter().map(|p| crate::policy_name(*p)).collect();
    let mut seen = Vec::new();
    let bound: Vec<(f64, f64)> = runs
        .iter()
        .filter(|r| {
            let new = !seen.contains(&r.peers);
            seen.push(r.peers);
            new
        })
        .map(|r| (r.peers as f64, r.bound_ms[1]))
        .collect();
    p99.push(bound);
    labels.push("lower bound");
    let series: Vec<Series<'_>> = labels
        .iter()
        .zip(&p99)
        .map(|(l, points)| Series { label: l, points })
        .collect();
    std::fs::write(
        dir.join("p99_delay.svg"),
        render(
            &Chart {
                title: &format!("p99 chunk delay against N: {name}"),
                x_label: "viewers (N)",
                y_label: "p99 delay (ms)",
                x_scale: Scale::Log,
                y_range: None,
            },
            &series,
        ),
    )?;
    Ok(())
}

fn csv_header() -> String {
    "scenario,peers,policy,continuity,p1_peer_continuity,delay_p50_ms,delay_p95_ms,delay_p99_ms,delay_max_ms,bound_p50_ms,bound_p99_ms,bound_max_ms,p99_over_bound,startup_p50_ms,startup_p95_ms,origin_egress,duplicate_share,control_share,r_max,rate_over_r_max,resource_index,events,wall_s\n".to_owned()
}

fn csv_row(s: &RunSummary) -> String {
    let (a, b) = s.startup_ms.map_or((f64::NAN, f64::NAN), |[a, b]| (a, b));
    format!(
        "{},{},{},{:.6},{:.6},{},{},{},{},{:.0},{:.0},{:.0},{:.3},{a},{b},{:.4},{:.6},{:.6},{:.4},{:.4},{:.4},{},{:.2}\n",
        s.scenario,
        s.peers,
        crate::policy_name(s.policy),
        s.continuity,
        s.p1_peer,
        s.delay_ms[0],
        s.delay_ms[1],
        s.delay_ms[2],
        s.delay_ms[3],
        s.bound_ms[0],
        s.bound_ms[1],
        s.bound_ms[2],
        s.p99_ratio(),
        s.origin_egress,
        s.duplicate_share,
        s.control_share,
        s.r_max,
        s.achieved_vs_max,
        s.resource_index,
        s.events,
        s.wall.as_secs_f64()
    )
}

/// At most `n` points of a monotone curve, evenly spread.
fn thin(points: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    if points.len() <= n {
        return points.to_vec();
    }
    let step = points.len() as f64 / n as f64;
    let mut out: Vec<(f64, f64)> = (0..n).map(|i| points[(i as f64 * step) as usize]).collect();
    out.push(*points.last().expect("non-empty"));
    out
}

/// Moving average over `w` points.
fn smooth(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    points
        .chunks(w.max(1))
        .map(|c| {
            let n = c.len() as f64;
            (c[0].0, c.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}
