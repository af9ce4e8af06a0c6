//! `fjord-sim`: runs scenarios and writes their reports.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fjord_sim::scenario::Scenario;
use fjord_sim::{policy_by_name, report};
use indicatif::{ProgressBar, ProgressStyle};

/// Fjord's discrete-event simulator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario under each of its policies (or those given) and print the summary.
    Run {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Policies to run instead of the scenario's list (fjord, rp-lu, dp-lu, mesh-pull).
        #[arg(long, value_delimiter = ',')]
        policies: Option<Vec<String>>,
        /// Override the number of viewers.
        #[arg(long)]
        peers: Option<usize>,
        /// Override the simulated duration, s.
        #[arg(long)]
        duration: Option<f64>,
        /// Override the seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            policies,
            peers,
            duration,
            seed,
        } => {
            let mut sc = Scenario::load(&scenario)?;
            if let Some(p) = peers {
                sc.peers = p;
            }
            if let Some(d) = duration {
                sc.duration_s = d;
            }
            if let Some(s) = seed {
                sc.seed = s;
            }
            if let Some(p) = policies {
                sc.policies = p;
            }
            sc.validate()?;
            let dir = scenario.parent().map(PathBuf::from).unwrap_or_default();
            print!("{}", report::table_header());
            for name in &sc.policies {
                let policy = policy_by_name(name)?;
                let bar = ProgressBar::new(sc.duration_s as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>10} [{bar:40}] {pos}/{len} simulated s, {elapsed} elapsed, eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(name.clone());
                let summary =
                    fjord_sim::run(&sc, policy, &dir, &mut |s| bar.set_position(s as u64))
                        .with_context(|| format!("running {name}"))?;
                bar.finish_and_clear();
                print!("{}", report::table_row(&summary));
            }
            Ok(())
        }
    }
}
