//! `fjord-sim`: runs scenarios and writes their reports.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fjord_sim::policy_by_name;
use fjord_sim::report::{self, RunSummary};
use fjord_sim::scenario::Scenario;
use indicatif::{ProgressBar, ProgressStyle};

/// Fjord's discrete-event simulator: runs the node's own scheduling core for many peers on
/// virtual time, beside the published baselines, and reports continuity, delay against the
/// lower bound, start-up, origin egress and overheads.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Read options from this TOML file (keys are the long option names of the subcommand).
    #[arg(long, global = true, env = "FJORD_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "FJORD_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Overrides {
    /// Policies to run instead of the scenario's list (fjord, fjord-trees, rp-lu, dp-lu,
    /// mesh-pull).
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// Override the simulated duration, s.
    #[arg(long)]
    duration: Option<f64>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the stream's target latency (each chunk's deadline after its publication), ms.
    #[arg(long)]
    target_latency: Option<u32>,
    /// Kill a share of the initial viewers at once, this many seconds after the start (as
    /// `emulate --kill-at` does); their neighbours notice after the node's idle timeout.
    #[arg(long)]
    kill_at: Option<f64>,
    /// Share of the viewers that --kill-at kills.
    #[arg(long, requires = "kill_at")]
    kill_share: Option<f64>,
    /// Kill the first viewers to have joined instead of a random draw.
    #[arg(long, requires = "kill_at")]
    kill_oldest: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario under each of its policies, print the summary table and (with --out)
    /// write CSV files and SVG plots.
    Run {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Override the number of viewers.
        #[arg(long)]
        peers: Option<usize>,
        #[command(flatten)]
        overrides: Overrides,
        /// Folder for summary.md/.csv, delay_cdf.csv/.svg, continuity.csv/.svg.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario on the real binaries: the origin and N `fjord-node` processes, each in a
    /// network namespace, over a user-space router that emulates the scenario's WAN (rates,
    /// delays, jitter, loss). Prints the emulator's report beside the simulator's prediction.
    /// Needs root.
    Emulate {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Override the number of viewers.
        #[arg(long)]
        peers: Option<usize>,
        /// Override the run's duration, s.
        #[arg(long)]
        duration: Option<f64>,
        /// Kill this share of the nodes at once (SIGKILL) at --kill-at.
        #[arg(long, default_value_t = 0.3, requires = "kill_at")]
        kill_share: f64,
        /// When to kill, seconds after the start.
        #[arg(long)]
        kill_at: Option<f64>,
        /// Kill the first nodes to have joined, whatever their class, instead of the same share
        /// of each upload class drawn at random.
        #[arg(long, requires = "kill_at")]
        kill_oldest: bool,
        /// Picture size of the origin's test pattern.
        #[arg(long, default_value = "640x360")]
        size: String,
        /// Folder of fjord-node and fjord-encoder (default: beside this program).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Skip the simulator's prediction.
        #[arg(long)]
        no_predict: bool,
        /// Share of its link each node is told it may use (`--upload`), for chunks and
        /// Fjord's control messages; the rest is headroom for QUIC's headers and
        /// acknowledgements.
        #[arg(long, default_value_t = fjord_sim::emulate::DEFAULT_UPLOAD_SHARE)]
        upload_share: f64,
        /// Write report.md and report.json here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fail (exit 1) unless continuity reaches this share.
        #[arg(long)]
        min_continuity: Option<f64>,
    },
    /// Run a scenario for several N, every policy each, and write the results table
    /// (results.md, results.csv), the origin-egress and p99-delay plots against N, and each
    /// run's own files in a folder per N.
    Sweep {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// Numbers of viewers.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
        peers: Vec<usize>,
        #[command(flatten)]
        overrides: Overrides,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

fn load(path: &Path, peers: Option<usize>, o: &Overrides) -> Result<Scenario> {
    let mut sc = Scenario::load(path)?;
    if let Some(p) = peers {
        sc.peers = p;
    }
    if let Some(d) = o.duration {
        sc.duration_s = d;
    }
    if let Some(s) = o.seed {
        sc.seed = s;
    }
    if let Some(l) = o.target_latency {
        sc.stream.target_latency_ms = l;
    }
    if let Some(p) = &o.policies {
        sc.policies = p.clone();
    }
    if o.kill_at.is_some() {
        sc.kill.at_s = o.kill_at;
        sc.kill.oldest = o.kill_oldest;
    }
    if let Some(k) = o.kill_share {
        sc.kill.share = k;
    }
    sc.validate()?;
    Ok(sc)
}

/// Runs every policy of `sc`, printing a table row as each finishes.
fn run_all(sc: &Scenario, dir: &Path) -> Result<Vec<RunSummary>> {
    let mut out = Vec::new();
    for name in &sc.policies {
        let policy = policy_by_name(name)?;
        let bar = ProgressBar::new(sc.duration_s as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>24} [{bar:30}] {pos}/{len} simulated s, {elapsed} elapsed, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{name}, N = {}", sc.peers));
        let summary = fjord_sim::run(sc, policy, dir, &mut |s| bar.set_position(s as u64))
            .with_context(|| format!("running {name} with N = {}", sc.peers))?;
        bar.finish_and_clear();
        print!("{}", report::table_row(&summary));
        if let Some(line) = report::after_kill_line(&summary) {
            println!("{line}");
        }
        out.push(summary);
    }
    Ok(out)
}

/// Re-executes this program with glibc's allocator asking for transparent huge pages, unless
/// `GLIBC_TUNABLES` is set already (by an earlier pass through here, or by the caller, whose
/// choice stands).
///
/// A large run keeps gigabytes of node state (3.5 GB at N = 100,000) and each event touches a
/// node at random, so with 4 KiB pages nearly every access also misses the TLB. glibc reads
/// its tunables only at start-up, and a kernel in the transparent-huge-page `madvise` mode
/// (this project's machine is) gives huge pages only to memory that asks for them, hence the
/// second start. The output does not change: nothing in a run depends on addresses. (Under
/// `valgrind` or another tool that follows no `exec`, set `GLIBC_TUNABLES=` to stay in the
/// first process.)
fn with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // Only returns if the program could not be started again.
        let mut args = std::env::args_os();
        let err = std::process::Command::new(exe)
            .arg0(args.next().unwrap_or_default())
            .args(args)
            .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
            .exec();
        tracing::warn!("could not restart with huge pages ({err}); running without them");
    }
}

fn main() -> Result<()> {
    use clap::CommandFactory;
    let args =
        fjord_node::config_file::with_config_file(&Cli::command(), std::env::args_os().collect())?;
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Emulate {
            scenario,
            peers,
            duration,
            kill_share,
            kill_at,
            kill_oldest,
            size,
            bin_dir,
            no_predict,
            upload_share,
            out,
            min_continuity,
        } => {
            anyhow::ensure!(
                upload_share > 0.0 && upload_share <= 1.0,
                "--upload-share must be in (0, 1], not {upload_share}"
            );
            let mut sc = Scenario::load(&scenario)?;
            if let Some(p) = peers {
                sc.peers = p;
            }
            if let Some(d) = duration {
                sc.duration_s = d;
            }
            // The prediction models the same kill.
            if kill_at.is_some() {
                sc.kill.at_s = kill_at;
                sc.kill.share = kill_share;
                sc.kill.oldest = kill_oldest;
            }
            sc.validate()?;
            let dir = scenario.parent().map(PathBuf::from).unwrap_or_default();
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .map(PathBuf::from)
                    .context("locate the binaries")?,
            };
            let opts = fjord_sim::emulate::EmulateOptions {
                bin_dir,
                kill_share,
                kill_at_s: kill_at,
                kill_oldest,
                size,
                predict: !no_predict,
                upload_share,
                verbose: true,
            };
            eprintln!(
                "emulate: {} with {} nodes for {} s (warm-up {} s); Ctrl-C stops and cleans up",
                sc.name, sc.peers, sc.duration_s, sc.warmup_s
            );
            let report = fjord_sim::emulate::run(&sc, &dir, &opts)?;
            let table = fjord_sim::emulate::table(&report);
            print!("{table}");
            if let Some(out) = out {
                std::fs::create_dir_all(&out)?;
                std::fs::write(out.join("report.md"), &table)?;
                std::fs::write(
                    out.join("report.json"),
                    serde_json::to_string_pretty(&report)?,
                )?;
                eprintln!("wrote {}", out.display());
            }
            if let Some(min) = min_continuity
                && report.continuity < min
            {
                anyhow::bail!(
                    "continuity {:.2}% is below the required {:.2}%",
                    report.continuity * 100.0,
                    min * 100.0
                );
            }
        }
        Command::Run {
            scenario,
            peers,
            overrides,
            out,
        } => {
            with_huge_pages();
            let sc = load(&scenario, peers, &overrides)?;
            let dir = scenario.parent().map(PathBuf::from).unwrap_or_default();
            print!("{}", report::table_header());
            let runs = run_all(&sc, &dir)?;
            if let Some(out) = out {
                report::write_run(&out, &runs)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
        }
        Command::Sweep {
            scenario,
            peers,
            overrides,
            out,
        } => {
            with_huge_pages();
            let dir = scenario.parent().map(PathBuf::from).unwrap_or_default();
            print!("{}", report::table_header());
            let mut all = Vec::new();
            for n in peers {
                let sc = load(&scenario, Some(n), &overrides)?;
                let runs = run_all(&sc, &dir)?;
                let sub = out.join(format!("n{n}"));
                report::write_run(&sub, &runs)
                    .with_context(|| format!("cannot write {}", sub.display()))?;
                all.extend(runs);
                // Rewrite the table after every N, so a long sweep leaves its results so far.
                report::write_sweep(&out, &all)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}
