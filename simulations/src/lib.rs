//! Fjord simulations.
//!
//! The discrete-event simulator ([`engine`]) drives many instances of the very same
//! [`fjord_core::Node`] the relay node runs, on a virtual clock, over a modelled network
//! ([`network`]): per-peer upload and download, per-pair delay, loss, churn. Scenarios are TOML
//! files ([`scenario`]); a run measures continuity, delay, start-up, origin egress and
//! overheads ([`metrics`]) and compares the delay with the scenario's lower bound ([`bound`]).
//! The published baselines run on the same scenario and seed for comparison.
//!
//! Same scenario and seed, same output: the engine's only randomness is seeded and events at
//! one instant run in scheduling order.

pub mod bound;
pub mod emulate;
pub mod engine;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod queue;
pub mod report;
pub mod scenario;

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use fjord_core::Policy;

pub use fjord_core as core;

/// The policy a scenario names.
pub fn policy_by_name(name: &str) -> Result<Policy> {
    Ok(match name {
        "fjord" => Policy::Fjord,
        "fjord-trees" => Policy::FjordTrees,
        "rp-lu" => Policy::RandomPeerLatestUseful,
        "dp-lu" => Policy::DeprivedPeerLatestUseful,
        "mesh-pull" => Policy::MeshPull,
        other => bail!("unknown policy {other:?} (fjord, fjord-trees, rp-lu, dp-lu, mesh-pull)"),
    })
}

/// The short name of a policy, as scenarios spell it.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Fjord => "fjord",
        Policy::FjordTrees => "fjord-trees",
        Policy::RandomPeerLatestUseful => "rp-lu",
        Policy::DeprivedPeerLatestUseful => "dp-lu",
        Policy::MeshPull => "mesh-pull",
    }
}

/// Runs one policy on a scenario and summarises it. `progress` gets simulated seconds.
pub fn run(
    scenario: &scenario::Scenario,
    policy: Policy,
    dir: &Path,
    progress: engine::Progress<'_>,
) -> Result<report::RunSummary> {
    let started = Instant::now();
    let out = engine::Engine::new(scenario, policy, dir)?.run(progress)?;
    Ok(report::RunSummary::new(
        scenario,
        policy,
        out,
        started.elapsed(),
    ))
}
