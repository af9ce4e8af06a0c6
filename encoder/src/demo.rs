//! `fjord-encoder demo`: the whole system on this machine in one command. The test pattern is
//! encoded and published by the origin in this process; three relay nodes run as `fjord-node`
//! processes beside this program, one serving desktop players (`--play`) and one acting as
//! the browsers' gateway. A live status line shows who watches, how much of the stream peers
//! carry, and the latency; Ctrl-C stops everything.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fjord_core::wire::ChannelKey;
use fjord_encoder::cadence::Cadence;
use fjord_encoder::ingest::{self, Control};
use fjord_encoder::pipeline::{OutputConfig, Pipeline};
use fjord_encoder::publish::Origin;
use fjord_node::Status;

/// Options of the demo.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Relay nodes to start.
    #[arg(long, default_value_t = 3)]
    relays: usize,
    /// Picture size.
    #[arg(long, default_value = "1280x720", value_parser = crate::parse_size)]
    size: (u32, u32),
    /// HTTP address of the gateway node: the page to open is served here.
    #[arg(long, default_value = "127.0.0.1:8090")]
    page: std::net::SocketAddr,
    /// UDP address of the WebTransport gateway.
    #[arg(long, default_value = "127.0.0.1:4433")]
    gateway: std::net::SocketAddr,
    /// HTTP address of the node that serves desktop players.
    #[arg(long, default_value = "127.0.0.1:8091")]
    play: std::net::SocketAddr,
    /// The built browser player.
    #[arg(long, default_value = "player-web/dist")]
    player: PathBuf,
}

struct Relay {
    child: Child,
    http: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // SIGINT: the node says goodbye to its peers.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(
    bin: &PathBuf,
    channel: &str,
    bootstrap: &str,
    extra: &[String],
) -> Result<(Relay, Vec<String>)> {
    let mut child = Command::new(bin)
        .args(["watch", channel, "--bootstrap", bootstrap, "--no-mdns"])
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--status-interval",
            "0",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut printed: Vec<String> = Vec::new();
    let wants = |printed: &[String], prefix: &str, flag: &str| -> bool {
        !extra.iter().any(|e| e == flag) || printed.iter().any(|l| l.starts_with(prefix))
    };
    for line in lines.by_ref().map_while(Result::ok) {
        printed.push(line);
        if wants(&printed, "status: ", "--http")
            && wants(&printed, "play: ", "--play")
            && wants(&printed, "page: ", "--gateway")
        {
            break;
        }
    }
    let http = printed
        .iter()
        .find_map(|l| l.strip_prefix("status: "))
        .map(|u| u.trim_end_matches("/status").to_owned());
    std::thread::spawn(move || for _ in lines {});
    let http = http.context("the relay did not start (see its messages above)")?;
    Ok((Relay { child, http }, printed))
}

fn status(http: &str) -> Option<Status> {
    let rest = http.strip_prefix("http://")?;
    let mut s = TcpStream::connect(rest).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

/// Runs the demo until Ctrl-C.
pub(crate) fn run(args: DemoArgs) -> Result<()> {
    ffmpeg_next::init().context("cannot initialise FFmpeg")?;
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
    let node_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("fjord-node"))
        .context("locate fjord-node")?;
    if !node_bin.exists() {
        bail!(
            "{} not found: build both binaries (make demo does)",
            node_bin.display()
        );
    }
    if !args.player.join("index.html").exists() {
        bail!(
            "no built player in {} (run `make player`, or give --player DIR)",
            args.player.display()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("no randomness for the channel key")?;
    let key = ChannelKey::from_seed(&seed);
    let channel = key.channel_id();
    let cadence = Cadence::new(30, Duration::from_millis(200), Duration::from_millis(1000))?;
    let config = OutputConfig {
        name: "Fjord demo".into(),
        width: args.size.0,
        height: args.size.1,
        video_bitrate: 2_500_000,
        preset: "veryfast".into(),
        cadence,
        audio_bitrate: 128_000,
        target_latency_us: 3_000_000,
        cbr: false,
    };
    let mut node = fjord_node::NodeConfig::viewer(channel, 4 * 2_628_000);
    node.role = fjord_core::proto::Role::Origin;
    node.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    node.mesh.mdns = false;
    let (origin, origin_http) = Origin::start(node, Some("127.0.0.1:0".parse()?))?;
    let origin_http = format!("http://{}", origin_http.context("origin HTTP")?);
    let boot = origin.node().listen_addrs()[0].to_string();
    let channel_text = channel.to_string();
    let mut relays = Vec::new();
    let mut shown = Vec::new();
    for i in 0..args.relays.max(1) {
        let mut extra = vec!["--http".to_owned()];
        if i == 0 {
            extra.extend([
                args.page.to_string(),
                "--gateway".into(),
                args.gateway.to_string(),
            ]);
            extra.extend(["--player".into(), args.player.display().to_string()]);
        } else if i == 1 {
            extra.extend([args.play.to_string(), "--play".into()]);
        } else {
            extra.push("127.0.0.1:0".into());
        }
        let (relay, printed) = start_relay(&node_bin, &channel_text, &boot, &extra)?;
        shown.extend(
            printed
                .into_iter()
                .filter(|l| l.starts_with("page: ") || l.starts_with("play: ")),
        );
        relays.push(relay);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    println!();
    println!("Fjord demo: channel {channel}");
    for l in &shown {
        if let Some(page) = l.strip_prefix("page: ") {
            println!("  browser:        open {page}");
        }
        if let Some(play) = l.strip_prefix("play: ") {
            println!("  desktop player: {play}");
        }
    }
    println!("  audience:       {origin_http}/stats");
    println!("  Ctrl-C stops everything.");
    println!();
    let mut pipeline = Pipeline::new(key, &config, Box::new(origin.publisher()))
        .context("cannot start the encoder")?;
    let control = Control {
        stop: stop.clone(),
        duration: None,
        input_timeout: Duration::from_secs(10),
    };
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64, Vec<u64>)> = None;
    let origin_node = origin.node().clone();
    let mut report = |_: &Pipeline| {
        let statuses: Vec<Status> = relays.iter().filter_map(|r| status(&r.http)).collect();
        let origin_up = origin_node.status().counters.bytes_up;
        let downs: Vec<u64> = statuses.iter().map(|s| s.counters.bytes_down).collect();
        let browsers = origin_node.metrics().audience_browsers.get().max(0);
        let share = match &last {
            Some((_, up0, d0)) if d0.len() == downs.len() => {
                let down: u64 = downs
                    .iter()
                    .zip(d0)
                    .map(|(a, b)| a.saturating_sub(*b))
                    .sum();
                let up = origin_up.saturating_sub(*up0);
                (down > 0).then(|| 100.0 * (1.0 - up as f64 / down as f64).clamp(0.0, 1.0))
            }
            _ => None,
        };
        last = Some((Instant::now(), origin_up, downs));
        let mut delays: Vec<f64> = statuses
            .iter()
            .filter_map(|s| s.counters.delay_ms_p50)
            .collect();
        delays.sort_by(f64::total_cmp);
        let line = format!(
            "viewers: {} nodes, {} browsers   served by peers: {}   chunk delay p50: {}   continuity: {}",
            statuses.len(),
            browsers,
            share.map_or("-".into(), |s| format!("{s:.0}%")),
            delays
                .get(delays.len() / 2)
                .map_or("-".into(), |d| format!("{d:.0} ms")),
            statuses
                .iter()
                .filter_map(|s| s.counters.continuity)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.min(c))))
                .map_or("-".into(), |c| format!("{:.2}%", c * 100.0)),
        );
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    };
    let outcome = ingest::run_pattern(
        &mut pipeline,
        "Fjord demo",
        args.size,
        &control,
        &mut report,
    );
    println!();
    println!("stopping");
    let _ = pipeline.finish();
    drop(relays);
    origin.shutdown();
    outcome?;
    Ok(())
}
