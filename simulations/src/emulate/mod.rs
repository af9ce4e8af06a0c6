//! The emulator: the real binaries over an emulated WAN, to check what the simulator predicts.
//!
//! It starts the origin (`fjord-encoder` on its test pattern) and N `fjord-node` processes,
//! each in a network namespace of its own, joined by a user-space [`router`] that gives every
//! host the upload and download of its class, every pair the one-way delay of the scenario's
//! network model (plus jitter), and loses packets at the scenario's rate. Hosts, classes and
//! delays are drawn exactly as the simulator draws them for the same scenario and seed, so the
//! two can be compared run against run; the simulator's prediction is computed beside.
//!
//! Measurement: every process writes its JSON status to a file each second. Continuity counts,
//! per node, the chunks published between the end of the warm-up and the last moment whose
//! deadline passed before the end, from the node's own record of what it got on time
//! (first and highest sequences and the recent misses); delays pool the nodes' 10 ms
//! histograms; origin egress is the origin's upload over the window; start-up runs from a
//! process's start to its first chunk. Optionally a share of the nodes is killed at once
//! (SIGKILL) and the survivors' continuity is followed second by second.
//!
//! Everything runs as root, uses only namespaces and devices named `fjemu*`, and removes them
//! on exit, on Ctrl-C and (at the next start) after a crash. One run at a time
//! ([`netns::RunLock`]): a run starts by removing every `fjemu*` namespace, so a second one
//! would tear down the first one's network.

pub mod cpu;
pub mod netns;
pub mod router;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use fjord_core::rng::Rng;
use fjord_node::Status;

use crate::network::Network;
use crate::scenario::Scenario;

/// What to run besides the scenario.
#[derive(Clone, Debug)]
pub struct EmulateOptions {
    /// Folder of the `fjord-node` and `fjord-encoder` binaries.
    pub bin_dir: PathBuf,
    /// Kill this share of the nodes at once at [`EmulateOptions::kill_at_s`].
    pub kill_share: f64,
    /// When to kill, seconds after the start.
    pub kill_at_s: Option<f64>,
    /// Kill the first nodes to have joined instead of the same share of each upload class.
    pub kill_oldest: bool,
    /// Picture size of the origin's test pattern.
    pub size: String,
    /// Also run the simulator on the same scenario.
    pub predict: bool,
    /// Share of its link each node may use for chunks ([`DEFAULT_UPLOAD_SHARE`]).
    pub upload_share: f64,
    /// Print progress.
    pub verbose: bool,
}

/// What a run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EmuReport {
    /// Scenario name.
    pub scenario: String,
    /// Viewer nodes.
    pub nodes: usize,
    /// Continuity over all nodes alive through the window.
    pub continuity: f64,
    /// The worst node's continuity.
    pub worst_node: f64,
    /// Pooled chunk delay from the origin, p50/p95/p99 ms.
    pub delay_ms: [f64; 3],
    /// Origin upload over the window as a multiple of the stream rate.
    pub origin_egress: f64,
    /// Start-up (process start to first chunk), p50/p95/max ms.
    pub startup_ms: [f64; 3],
    /// Join (the node's own start, once its process is up and listening, when it dials the
    /// mesh, to its first chunk), p50/p95/max ms. The difference from `startup_ms` is process
    /// start-up, which here shares two cores with every other node and the router.
    pub join_ms: [f64; 3],
    /// After the mass kill: the survivors' continuity per second (chunks published in that
    /// second), from the kill on.
    pub after_kill: Vec<f64>,
    /// Seconds after the kill until the survivors' continuity stays at 99% or more.
    pub recovery_s: Option<f64>,
    /// Router counters: forwarded, lost, dropped at a full queue.
    pub packets: [u64; 3],
    /// How long packets waited for the router itself (see [`router::LatenessStats`]): mean ms,
    /// share of packets that waited more than 5 ms, largest ms.
    pub router_late: [f64; 3],
    /// The machine's CPU over the run: the busy share and the share stolen by the host
    /// (see [`cpu`]); `None` without `/proc/stat`.
    pub cpu: Option<(f64, f64)>,
    /// The simulator's prediction: continuity, delay p50/p95/p99 ms, origin egress.
    pub predicted: Option<(f64, [f64; 3], f64)>,
    /// The simulator's prediction of `after_kill` (it kills the same nodes).
    pub predicted_after_kill: Vec<f64>,
    /// The simulator's prediction of `recovery_s`.
    pub predicted_recovery_s: Option<f64>,
    /// Uplinks after the warm-up by upload class (the origin first, then the fastest class),
    /// as the router measured them: what the per-host lines of `--verbose` say, pooled, so
    /// that a report shows which class's links are full or queue.
    pub uplinks: Vec<ClassUplink>,
}

/// One upload class's uplinks after the warm-up, pooled over its hosts alive at the end.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassUplink {
    /// Whether this is the origin's uplink.
    pub origin: bool,
    /// The class's link rate, bit/s.
    pub up_bps: u64,
    /// Hosts pooled.
    pub hosts: usize,
    /// Share of the links' capacity sent: every packet, so QUIC's headers, acknowledgements
    /// and resends count beside chunks and control messages.
    pub link_share: f64,
    /// Mean wait of a packet in the uplinks' queues, ms.
    pub queue_wait_ms: f64,
    /// Share of the links' capacity taken by small packets (control messages and
    /// acknowledgements, at most `router::SMALL_PACKET` bytes).
    pub small_share: f64,
}

/// Pools per-host uplink counters (`(is origin, link bit/s, counters since the warm-up)`,
/// over `secs`) by class: the origin first, then by link rate, fastest first.
fn pool_uplinks(hosts: &[(bool, u64, UplinkSnapshot)], secs: f64) -> Vec<ClassUplink> {
    let mut keys: Vec<(bool, u64)> = hosts.iter().map(|&(o, b, _)| (o, b)).collect();
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.dedup();
    let secs = secs.max(1e-3);
    keys.into_iter()
        .map(|(origin, up_bps)| {
            let members: Vec<&UplinkSnapshot> = hosts
                .iter()
                .filter(|&&(o, b, _)| (o, b) == (origin, up_bps))
                .map(|(_, _, s)| s)
                .collect();
            let sum = |f: fn(&UplinkSnapshot) -> u64| members.iter().map(|s| f(s)).sum::<u64>();
            let capacity_bits = up_bps as f64 * secs * members.len() as f64;
            ClassUplink {
                origin,
                up_bps,
                hosts: members.len(),
                link_share: sum(|s| s.bytes) as f64 * 8.0 / capacity_bits,
                queue_wait_ms: sum(|s| s.wait_us) as f64
                    / sum(|s| s.packets).max(1) as f64
                    / 1000.0,
                small_share: sum(|s| s.small_bytes) as f64 * 8.0 / capacity_bits,
            }
        })
        .collect()
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A process in a namespace.
struct Proc {
    host: usize,
    child: Child,
    status_file: PathBuf,
    started_us: u64,
    last: Option<Status>,
    alive: bool,
}

impl Proc {
    fn spawn(
        host: usize,
        ns: &str,
        bin: &Path,
        args: &[String],
        status_file: PathBuf,
        log: &Path,
    ) -> Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} in {ns}", bin.display()))?;
        Ok(Self {
            host,
            child,
            status_file,
            started_us: wall_us(),
            last: None,
            alive: true,
        })
    }

    fn read(&mut self) -> Option<&Status> {
        if let Ok(bytes) = std::fs::read(&self.status_file)
            && let Ok(s) = serde_json::from_slice::<Status>(&bytes)
        {
            self.last = Some(s);
        }
        self.last.as_ref()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.alive = false;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive {
            self.kill();
        }
    }
}

/// Chunks of sequences `[from, to]` (every track) that a node did not get on time; a track it
/// never received is missed whole.
fn misses(status: &Status, from: u64, to: u64, tracks: usize) -> u64 {
    let seen = status.counters.tracks.len();
    let missed: u64 = status
        .counters
        .tracks
        .iter()
        .map(|t| t.missed(from, to))
        .sum();
    missed + (tracks.saturating_sub(seen) as u64) * (to - from + 1)
}

fn percentile_of_hist(hist: &[u64], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let target = (total as f64 * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in hist.iter().enumerate() {
        acc += c;
        if acc >= target {
            return i as f64 * 10.0 + 5.0;
        }
    }
    (hist.len() * 10) as f64
}

/// The median, the 95th percentile and the largest of `v` (NaN when it is empty).
fn p50_p95_max(mut v: Vec<f64>) -> [f64; 3] {
    [0.5, 0.95, 1.0].map(|q| quantile(&mut v, q))
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Runs the scenario on real processes; `dir` is the scenario file's folder.
pub fn run(sc: &Scenario, dir: &Path, opts: &EmulateOptions) -> Result<EmuReport> {
    // The encoder rounds a chunk to whole frames, and the report's deadlines and delays are
    // reckoned from the scenario's chunk duration: the two must agree.
    let frames_ms = u64::from(sc.stream.chunk_ms) * u64::from(sc.stream.fps);
    if frames_ms % 1000 != 0 {
        bail!(
            "a {} ms chunk is not a whole number of frames at {} fps: change chunk_ms or fps",
            sc.stream.chunk_ms,
            sc.stream.fps
        );
    }
    if !netns::is_root() {
        bail!("the emulator creates network namespaces and TUN devices: run it as root");
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: the emulator needs TUN devices");
    }
    let node_bin = opts.bin_dir.join("fjord-node");
    let enc_bin = opts.bin_dir.join("fjord-encoder");
    for b in [&node_bin, &enc_bin] {
        if !b.exists() {
            bail!(
                "{} not found (build the workspace, or give --bin-dir)",
                b.display()
            );
        }
    }
    let _lock = netns::RunLock::acquire()?;
    let removed = netns::remove_all()?;
    if removed > 0 {
        eprintln!("emulate: removed {removed} namespaces left by an earlier run");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_inner(sc, dir, opts, &node_bin, &enc_bin));
    // Processes die with their handles (inside run_inner); the namespaces go here, whatever
    // happened.
    let _ = netns::remove_all();
    result
}

async fn run_inner(
    sc: &Scenario,
    dir: &Path,
    opts: &EmulateOptions,
    node_bin: &Path,
    enc_bin: &Path,
) -> Result<EmuReport> {
    let n = sc.peers;
    let rate = u64::from(sc.stream.rate_kbps) * 1000;
    // Hosts as the simulator draws them: the origin, then each viewer's class and place.
    let net = Network::new(&sc.network, dir)?;
    let mut place_rng = Rng::new(sc.seed ^ 0x5eed);
    let mut places = vec![net.place(&sc.network, 0, &mut place_rng)];
    let mut links = vec![router::HostLink {
        addr: router::address(0),
        up_bps: (sc.origin_upload * rate as f64) as u64,
        down_bps: 1_000_000_000,
    }];
    let mut deck = crate::scenario::ClassDeck::new(&sc.classes, n);
    let mut sessions = Vec::new();
    let mut class_of = Vec::with_capacity(n);
    for i in 0..n {
        class_of.push(deck.deal(&mut place_rng));
        let class = &sc.classes[class_of[i]];
        places.push(net.place(&sc.network, i + 1, &mut place_rng));
        sessions.push(sc.churn.enabled.then(|| {
            crate::engine::weibull(
                &mut place_rng,
                sc.churn.weibull_shape,
                sc.churn.mean_session_s,
            )
        }));
        links.push(router::HostLink {
            addr: router::address(i + 1),
            up_bps: (class.upload * rate as f64) as u64,
            down_bps: (class.download * rate as f64) as u64,
        });
    }
    let delay: Vec<Vec<Duration>> = places
        .iter()
        .map(|a| places.iter().map(|b| net.one_way(a, b)).collect())
        .collect();
    let router = router::start(
        links.clone(),
        delay,
        Duration::from_secs_f64(sc.network.jitter_ms / 1000.0),
        sc.network.loss,
        sc.seed,
    )?;
    if !router.realtime {
        eprintln!(
            "emulate: the router could not get real-time priority: its timing will suffer when the nodes load the machine"
        );
    }
    let stats = router.stats.clone();
    for (i, dev) in router.devices.iter().enumerate() {
        let ns = netns::create(i)?;
        netns::attach(dev, &ns, links[i].addr)?;
    }
    let work = tempfile_dir()?;
    let key = fjord_core::wire::ChannelKey::from_seed(&random_seed());
    let key_file = work.join("channel.key");
    std::fs::write(&key_file, key.to_key_file())?;
    set_private(&key_file)?;
    let channel = key.channel_id().to_string();
    let stream = &sc.stream;
    // The encoder always makes audio: the scenario's share of the stream rate, as the
    // simulator models it, or 96 kbit/s when the scenario has none (the simulator then
    // models the whole rate as video).
    let audio = match u64::from(stream.audio_kbps) {
        0 => 96_000,
        kbps => kbps * 1000,
    };
    let listen = |i: usize| format!("/ip4/{}/udp/9000/quic-v1", links[i].addr);
    let mut origin = Proc::spawn(
        0,
        &netns::name(0),
        enc_bin,
        &[
            "run".into(),
            "--key".into(),
            key_file.display().to_string(),
            "--size".into(),
            opts.size.clone(),
            "--preset".into(),
            "ultrafast".into(),
            // The test pattern compresses far below any bit rate; filler keeps the stream at
            // its nominal rate, as the simulator assumes.
            "--cbr".into(),
            "--video-bitrate".into(),
            (rate.saturating_sub(audio)).to_string(),
            "--audio-bitrate".into(),
            audio.to_string(),
            "--fps".into(),
            stream.fps.to_string(),
            "--chunk-ms".into(),
            stream.chunk_ms.to_string(),
            "--group-ms".into(),
            stream.group_ms.to_string(),
            "--target-latency-ms".into(),
            stream.target_latency_ms.to_string(),
            "--listen".into(),
            listen(0),
            "--no-mdns".into(),
            "--upload".into(),
            paced(links[0].up_bps, opts.upload_share).to_string(),
            "--status-file".into(),
            work.join("origin.json").display().to_string(),
        ],
        work.join("origin.json"),
        &work.join("origin.log"),
    )?;
    let stdout = origin.child.stdout.take().context("origin stdout")?;
    let boot = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let found = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("origin: ").map(str::to_owned));
        std::thread::spawn(move || for _ in lines {});
        found
    })
    .await?
    .context("the origin did not start (see its log)")?;
    let started = Instant::now();
    let cpu_start = cpu::CpuTimes::now();
    let t0_us = wall_us();
    let warmup_end_us = t0_us + (sc.warmup_s * 1e6) as u64;
    let mut nodes: Vec<Option<Proc>> = (0..n).map(|_| None).collect();
    let mut next_join = 0usize;
    let kill_at = opts.kill_at_s.map(|s| started + Duration::from_secs_f64(s));
    let mut killed = false;
    let mut kill_us = None;
    let end = started + Duration::from_secs_f64(sc.duration_s);
    // The origin's highest sequence at the edges of the window.
    let mut origin_marks: Vec<(u64, u64, u64)> = Vec::new(); // (wall µs, highest seq, bytes up)
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_print = Instant::now();
    // Every uplink's counters when the warm-up ended, and when.
    let mut warm: Option<(Instant, Vec<UplinkSnapshot>)> = None;
    let interrupted = {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        flag
    };
    while Instant::now() < end {
        tick.tick().await;
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("interrupted");
        }
        let elapsed = started.elapsed().as_secs_f64();
        if warm.is_none() && wall_us() >= warmup_end_us {
            warm = Some((
                Instant::now(),
                stats.host_uplink.iter().map(UplinkSnapshot::of).collect(),
            ));
        }
        while next_join < n && elapsed >= sc.join_window_s * next_join as f64 / n as f64 {
            let i = next_join;
            let host = i + 1;
            let status = work.join(format!("node{host}.json"));
            let args: Vec<String> = vec![
                "watch".into(),
                channel.clone(),
                "--bootstrap".into(),
                boot.clone(),
                "--listen".into(),
                listen(host),
                "--no-mdns".into(),
                "--upload".into(),
                paced(links[host].up_bps, opts.upload_share).to_string(),
                "--neighbours".into(),
                sc.node.max_neighbours.to_string(),
                "--http".into(),
                "127.0.0.1:8090".into(),
                "--status-interval".into(),
                "0".into(),
                // Many nodes share two cores here: one thread each costs least.
                "--threads".into(),
                "1".into(),
                "--status-file".into(),
                status.display().to_string(),
                "--status-since".into(),
                warmup_end_us.to_string(),
            ];
            let mut p = Proc::spawn(
                host,
                &netns::name(host),
                node_bin,
                &args,
                status,
                &work.join(format!("node{host}.log")),
            )?;
            if let Some(out) = p.child.stdout.take() {
                std::thread::spawn(move || std::io::copy(&mut { out }, &mut std::io::sink()));
            }
            nodes[i] = Some(p);
            next_join += 1;
        }
        if let Some(at) = kill_at
            && !killed
            && Instant::now() >= at
        {
            killed = true;
            kill_us = Some(wall_us());
            let victims = crate::scenario::kill_victims(
                &class_of,
                opts.kill_share,
                opts.kill_oldest,
                sc.seed,
            );
            for &i in &victims {
                if let Some(p) = nodes.get_mut(i).and_then(Option::as_mut) {
                    p.read();
                    p.kill();
                }
            }
            let mut by_class = vec![0usize; sc.classes.len()];
            for &i in &victims {
                by_class[class_of[i]] += 1;
            }
            eprintln!(
                "emulate: killed {} of {n} nodes at {:.1} s (per upload class: {by_class:?})",
                victims.len(),
                started.elapsed().as_secs_f64()
            );
        }
        for p in nodes.iter_mut().flatten().filter(|p| p.alive) {
            p.read();
        }
        if let Some(o) = origin.read()
            && let Some(h) = o.counters.tracks.iter().map(|t| t.highest).min()
        {
            origin_marks.push((wall_us(), h, o.counters.bytes_up));
        }
        if opts.verbose && last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let live: Vec<&Status> = nodes
                .iter()
                .flatten()
                .filter(|p| p.alive)
                .filter_map(|p| p.last.as_ref())
                .collect();
            let mut c: Vec<f64> = live.iter().filter_map(|s| s.counters.continuity).collect();
            eprintln!(
                "emulate: {:>5.1} s  {} nodes running, median continuity {:.2}%, router: {} forwarded, {} lost, {} dropped",
                started.elapsed().as_secs_f64(),
                live.len(),
                quantile(&mut c, 0.5) * 100.0,
                stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                stats.lost.load(std::sync::atomic::Ordering::Relaxed),
                stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }
    if opts.verbose {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(1.0);
        for (i, ((up, down), link)) in stats.host_drops.iter().zip(&stats.host_uplink).enumerate() {
            let (u, d) = (load(up), load(down));
            let all = UplinkSnapshot::of(link);
            let bps = links[i].up_bps as f64;
            let mut line = format!(
                "emulate: host {i} ({:.2} Mbit/s up): sent {:.0}% of its link on average, {} packets; uplink queue wait mean {:.1} ms, max {:.0} ms; {u} packets dropped at its uplink, {d} at its downlink",
                bps / 1e6,
                all.bytes as f64 * 8.0 / secs / bps * 100.0,
                all.packets,
                all.wait_us as f64 / all.packets.max(1) as f64 / 1000.0,
                load(&link.max_wait_us) as f64 / 1000.0,
            );
            if let Some((at, before)) = &warm {
                let w = all.since(&before[i]);
                let secs = at.elapsed().as_secs_f64().max(1.0);
                line += &format!(
                    "; after the warm-up {:.0}% of its link, {:.0} packets/s, queue wait mean {:.1} ms, small packets (<= {} B: control, acknowledgements) {:.0}/s taking {:.0}% of the link",
                    w.bytes as f64 * 8.0 / secs / bps * 100.0,
                    w.packets as f64 / secs,
                    w.wait_us as f64 / w.packets.max(1) as f64 / 1000.0,
                    router::SMALL_PACKET,
                    w.small_packets as f64 / secs,
                    w.small_bytes as f64 * 8.0 / secs / bps * 100.0,
                );
            }
            eprintln!("{line}");
        }
    }
    let uplinks = match &warm {
        Some((at, before)) => {
            let dead: Vec<usize> = nodes
                .iter()
                .flatten()
                .filter(|p| !p.alive)
                .map(|p| p.host)
                .collect();
            let hosts: Vec<(bool, u64, UplinkSnapshot)> = stats
                .host_uplink
                .iter()
                .enumerate()
                .filter(|(i, _)| !dead.contains(i))
                .map(|(i, link)| {
                    let w = UplinkSnapshot::of(link).since(&before[i]);
                    (i == 0, links[i].up_bps, w)
                })
                .collect();
            pool_uplinks(&hosts, at.elapsed().as_secs_f64())
        }
        None => Vec::new(),
    };
    let cpu = cpu_start
        .zip(cpu::CpuTimes::now())
        .and_then(|(a, b)| a.shares_until(&b));
    // Final reads: one more second, so every status file is current.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for p in nodes.iter_mut().flatten().filter(|p| p.alive) {
        p.read();
    }
    let latency_us = u64::from(stream.target_latency_ms) * 1000;
    let end_us = wall_us();
    // The window: chunks published after the warm-up whose deadline passed before the end.
    let seq_at = |us: u64| -> Option<(u64, u64)> {
        origin_marks
            .iter()
            .find(|(t, _, _)| *t >= us)
            .map(|(_, s, b)| (*s, *b))
    };
    let (from_seq, up0) =
        seq_at(warmup_end_us).context("the origin published nothing after the warm-up")?;
    let window_end_us = end_us.saturating_sub(latency_us + 1_500_000);
    let (to_seq, up1) = origin_marks
        .iter()
        .rev()
        .find(|(t, _, _)| *t <= window_end_us)
        .map(|(_, s, b)| (*s, *b))
        .context("the run is too short for its warm-up and latency")?;
    if to_seq <= from_seq {
        bail!("the run is too short: no chunk between the warm-up and the last deadline");
    }
    let tracks = 2;
    let mut per_node = Vec::new();
    let mut hist = vec![0u64; 501];
    let mut startups = Vec::new();
    let mut joins = Vec::new();
    let (mut missed, mut expected) = (0u64, 0u64);
    for p in nodes.iter().flatten() {
        let Some(s) = &p.last else { continue };
        if let Some(first) = s.counters.first_chunk_us {
            let ms = first.saturating_sub(p.started_us) as f64 / 1000.0;
            if opts.verbose {
                eprintln!(
                    "emulate: node {} ({:.2} Mbit/s up): first chunk {ms:.0} ms after its start (wall clock {} µs)",
                    p.host,
                    links[p.host].up_bps as f64 / 1e6,
                    p.started_us
                );
            }
            startups.push(ms);
            if s.counters.started_us > 0 {
                joins.push(first.saturating_sub(s.counters.started_us) as f64 / 1000.0);
            }
        }
        if !p.alive {
            continue;
        }
        let m = misses(s, from_seq, to_seq, tracks);
        let e = tracks as u64 * (to_seq - from_seq + 1);
        missed += m;
        expected += e;
        per_node.push(1.0 - m as f64 / e as f64);
        if opts.verbose && m > 0 {
            eprintln!(
                "emulate: node {} ({:.2} Mbit/s up, {} neighbours at the end): {:.2}% ({m} of {e} chunks missed), delay p50 {:?} ms",
                p.host,
                links[p.host].up_bps as f64 / 1e6,
                s.counters.neighbours,
                100.0 - 100.0 * m as f64 / e as f64,
                s.counters.delay_ms_p50.map(|d| d.round()),
            );
        }
        for (i, c) in s.counters.delay_hist_10ms.iter().enumerate() {
            hist[i.min(500)] += u64::from(*c);
        }
    }
    let window_s = (window_end_us.saturating_sub(warmup_end_us)) as f64 / 1e6;
    let origin_egress = (up1.saturating_sub(up0)) as f64 * 8.0 / window_s.max(1e-3) / rate as f64;
    // After the kill: survivors' continuity per second of publication.
    let mut after_kill = Vec::new();
    let mut recovery_s = None;
    if let Some(k) = kill_us {
        let chunk_us = u64::from(stream.chunk_ms) * 1000;
        let per_s = (1_000_000 / chunk_us).max(1);
        let (kseq, _) = seq_at(k).unwrap_or((from_seq, 0));
        let mut s0 = kseq;
        while s0 + per_s <= to_seq {
            let (mut m, mut e) = (0, 0);
            for p in nodes.iter().flatten().filter(|p| p.alive) {
                if let Some(s) = &p.last {
                    m += misses(s, s0, s0 + per_s - 1, tracks);
                    e += tracks as u64 * per_s;
                }
            }
            after_kill.push(1.0 - m as f64 / e.max(1) as f64);
            s0 += per_s;
        }
        recovery_s = crate::report::recovery_s(&after_kill);
    }
    let predicted = if opts.predict {
        // The simulator's links carry chunks alone, so its peers get what the nodes were told
        // they may use for chunks: the same share of each link.
        let mut same = sc.clone();
        same.origin_upload *= opts.upload_share;
        for c in &mut same.classes {
            c.upload *= opts.upload_share;
        }
        let s = crate::run(&same, fjord_core::Policy::Fjord, dir, &mut |_| {})?;
        Some(s)
    } else {
        None
    };
    let predicted_after_kill = predicted
        .as_ref()
        .map(|s| s.after_kill.clone())
        .unwrap_or_default();
    let predicted_recovery_s = predicted.as_ref().and_then(|s| s.recovery_s());
    let predicted = predicted.map(|s| {
        (
            s.continuity,
            [s.delay_ms[0], s.delay_ms[1], s.delay_ms[2]],
            s.origin_egress,
        )
    });
    let report = EmuReport {
        scenario: sc.name.clone(),
        nodes: n,
        continuity: 1.0 - missed as f64 / expected.max(1) as f64,
        worst_node: per_node.iter().copied().fold(1.0, f64::min),
        delay_ms: [
            percentile_of_hist(&hist, 0.5),
            percentile_of_hist(&hist, 0.95),
            percentile_of_hist(&hist, 0.99),
        ],
        origin_egress,
        startup_ms: p50_p95_max(startups),
        join_ms: p50_p95_max(joins),
        after_kill,
        recovery_s,
        packets: [
            stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
            stats.lost.load(std::sync::atomic::Ordering::Relaxed),
            stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        ],
        router_late: stats.late.summary(),
        cpu,
        predicted,
        predicted_after_kill,
        predicted_recovery_s,
        uplinks,
    };
    drop(nodes);
    drop(origin);
    if std::env::var_os("FJEMU_KEEP").is_some() {
        eprintln!("emulate: status files and logs kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(report)
}

/// One uplink's counters at an instant, to take differences.
#[derive(Clone, Copy, Debug)]
struct UplinkSnapshot {
    packets: u64,
    bytes: u64,
    wait_us: u64,
    small_packets: u64,
    small_bytes: u64,
}

impl UplinkSnapshot {
    fn of(u: &router::UplinkStats) -> Self {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Self {
            packets: load(&u.packets),
            bytes: load(&u.bytes),
            wait_us: load(&u.wait_us),
            small_packets: load(&u.small_packets),
            small_bytes: load(&u.small_bytes),
        }
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            packets: self.packets - earlier.packets,
            bytes: self.bytes - earlier.bytes,
            wait_us: self.wait_us - earlier.wait_us,
            small_packets: self.small_packets - earlier.small_packets,
            small_bytes: self.small_bytes - earlier.small_bytes,
        }
    }
}

/// The report as a Markdown table, emulator beside simulator.
pub fn table(r: &EmuReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} (N = {}) | emulator | simulator |",
        r.scenario, r.nodes
    );
    let _ = writeln!(out, "|---|---|---|");
    let p = r.predicted;
    let f = |v: Option<f64>, pct: bool| {
        v.map_or("-".into(), |v| {
            if pct {
                format!("{:.2}%", v * 100.0)
            } else {
                format!("{v:.0}")
            }
        })
    };
    let _ = writeln!(
        out,
        "| continuity | {:.2}% | {} |",
        r.continuity * 100.0,
        f(p.map(|p| p.0), true)
    );
    let _ = writeln!(out, "| worst node | {:.2}% | - |", r.worst_node * 100.0);
    for (i, name) in ["p50", "p95", "p99"].iter().enumerate() {
        let _ = writeln!(
            out,
            "| chunk delay {name} (ms) | {:.0} | {} |",
            r.delay_ms[i],
            f(p.map(|p| p.1[i]), false)
        );
    }
    let _ = writeln!(
        out,
        "| origin egress (x stream) | {:.2} | {} |",
        r.origin_egress,
        p.map_or("-".into(), |p| format!("{:.2}", p.2))
    );
    let _ = writeln!(
        out,
        "| start-up from process start p50 / p95 / max (ms) | {:.0} / {:.0} / {:.0} | - |",
        r.startup_ms[0], r.startup_ms[1], r.startup_ms[2]
    );
    let _ = writeln!(
        out,
        "| join: first dial to first chunk p50 / p95 / max (ms) | {:.0} / {:.0} / {:.0} | - |",
        r.join_ms[0], r.join_ms[1], r.join_ms[2]
    );
    if !r.after_kill.is_empty() {
        let recovery = |s: Option<f64>| s.map_or("never".into(), |s| format!("{s:.0} s"));
        let per_s = |v: &[f64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                crate::report::percentages(v)
            }
        };
        let _ = writeln!(
            out,
            "| after the kill: recovered to 99% after | {} | {} |",
            recovery(r.recovery_s),
            if r.predicted_after_kill.is_empty() {
                "-".into()
            } else {
                recovery(r.predicted_recovery_s)
            }
        );
        let _ = writeln!(
            out,
            "| continuity per second after the kill | {} | {} |",
            per_s(&r.after_kill),
            per_s(&r.predicted_after_kill)
        );
    }
    let _ = writeln!(
        out,
        "| packets forwarded / lost / dropped at queues | {} / {} / {} | - |",
        r.packets[0], r.packets[1], r.packets[2]
    );
    let _ = writeln!(
        out,
        "| packets' wait for the router: mean / share over 5 ms / max (ms) | {:.2} / {:.2}% / {:.0} | - |",
        r.router_late[0],
        r.router_late[1] * 100.0,
        r.router_late[2]
    );
    for u in &r.uplinks {
        let who = if u.origin {
            "origin".to_string()
        } else {
            format!("{} x {:.2} Mbit/s", u.hosts, u.up_bps as f64 / 1e6)
        };
        let _ = writeln!(
            out,
            "| uplinks after the warm-up, {who}: link used / queue wait / small packets' share | {:.0}% / {:.1} ms / {:.0}% | - |",
            u.link_share * 100.0,
            u.queue_wait_ms,
            u.small_share * 100.0
        );
    }
    if let Some((busy, stolen)) = r.cpu {
        let _ = writeln!(
            out,
            "| machine CPU busy / stolen by the host | {:.0}% / {:.0}% | - |",
            busy * 100.0,
            stolen * 100.0
        );
    }
    out
}

/// The share of its link a node is told it may use by default: the rest is the headroom a
/// real deployment needs for QUIC's packet headers and acknowledgements (the node charges
/// its own control messages to its upload since session 16, and the simulator charges them
/// to its links). Measured on `emu30` (session 19, runs interleaved): 0.8 gave p95 1665 and
/// 1685 ms, 0.9 1415 and 1405 ms at 99.96-100% continuity with the slow uplinks' queues
/// waiting 5-19 ms on average after the warm-up, 0.95 overflowed them (99.26%, p95 2035 ms)
/// and 1.0 collapsed (75.84%).
pub const DEFAULT_UPLOAD_SHARE: f64 = 0.9;

/// What a node is told its upload is.
fn paced(link_bps: u64, share: f64) -> u64 {
    (link_bps as f64 * share) as u64
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fjemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn random_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).expect("the system has randomness");
    s
}

#[cfg(test)]
mod tests {
    use super::{ClassUplink, UplinkSnapshot, pool_uplinks};

    fn snap(bytes: u64, packets: u64, wait_us: u64, small_bytes: u64) -> UplinkSnapshot {
        UplinkSnapshot {
            packets,
            bytes,
            wait_us,
            small_packets: 0,
            small_bytes,
        }
    }

    #[test]
    fn uplinks_are_pooled_by_class_origin_first_then_fastest() {
        // Over 10 s: the origin sends 6 of its 8 Mbit/s; two 1 Mbit/s hosts send 0.5 and
        // 0.7 Mbit/s, their packets waiting 10 and 30 ms each; one 4 Mbit/s host sends 2.
        let hosts = [
            (false, 1_000_000, snap(625_000, 100, 1_000_000, 125_000)),
            (true, 8_000_000, snap(7_500_000, 1000, 2_000_000, 0)),
            (false, 4_000_000, snap(2_500_000, 10, 50_000, 0)),
            (false, 1_000_000, snap(875_000, 100, 3_000_000, 0)),
        ];
        let pooled = pool_uplinks(&hosts, 10.0);
        let expect = [
            (true, 8_000_000, 1, 0.75, 2.0, 0.0),
            (false, 4_000_000, 1, 0.5, 5.0, 0.0),
            (false, 1_000_000, 2, 0.6, 20.0, 0.05),
        ];
        assert_eq!(pooled.len(), expect.len());
        for (u, &(origin, up_bps, n, share, wait, small)) in pooled.iter().zip(&expect) {
            let ClassUplink {
                origin: o,
                up_bps: b,
                hosts: h,
                link_share,
                queue_wait_ms,
                small_share,
            } = u.clone();
            assert_eq!((o, b, h), (origin, up_bps, n));
            assert!((link_share - share).abs() < 1e-9, "{u:?}");
            assert!((queue_wait_ms - wait).abs() < 1e-9, "{u:?}");
            assert!((small_share - small).abs() < 1e-9, "{u:?}");
        }
        assert!(pool_uplinks(&[], 10.0).is_empty());
    }
}
