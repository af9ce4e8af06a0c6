//! `fjord-encoder`: the broadcaster's command line.

mod demo;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use fjord_encoder::cadence::Cadence;
use fjord_encoder::ingest::{self, Control, Source};
use fjord_encoder::keyfile;
use fjord_encoder::pipeline::{OutputConfig, Pipeline, Stats, quantile};
use fjord_encoder::publish::{Origin, Publisher, Recorder, Tee};
use tracing::info;

/// Fjord encoder: turns a live broadcast into a signed channel.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Read options from this TOML file (keys are the long option names of the subcommand).
    /// The command line and environment variables override it.
    #[arg(long, global = true, env = "FJORD_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true, env = "FJORD_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new channel: write a fresh secret key and print the channel id.
    ///
    /// The file is created readable by its owner only and is never overwritten. Keep a copy:
    /// the channel id is the key's public half, so a lost key means a new channel.
    Keygen {
        /// Where to write the key.
        #[arg(short, long, default_value = "channel.key")]
        out: PathBuf,
    },
    /// Print the channel id of a key file.
    Id {
        /// The key file.
        #[arg(default_value = "channel.key")]
        key: PathBuf,
    },
    /// Encode a source into signed CMAF chunks (H.264 + AAC) and publish them.
    ///
    /// Sources: `pattern` (colour bars, burnt-in clock and frame counter, a tone), a media
    /// file (played at real time), or a URL to listen on for a live sender:
    /// `srt://0.0.0.0:9000`, `rtmp://0.0.0.0:1935/live/stream`, `udp://0.0.0.0:5000`
    /// (MPEG-TS). A live sender may drop and come back: the channel goes on.
    Run(Box<RunArgs>),
    /// Run the whole system on this machine: the test pattern, its origin, relay nodes, a
    /// browser gateway and a desktop-player URL, with a live status line. Ctrl-C stops it.
    Demo(demo::DemoArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The channel key (see `keygen`).
    #[arg(long, default_value = "channel.key")]
    key: PathBuf,
    /// `pattern`, a media file, or an srt://, rtmp:// or udp:// URL to listen on.
    #[arg(short, long, default_value = "pattern")]
    input: String,
    /// Play a file input again from the start when it ends.
    #[arg(long = "loop")]
    looped: bool,
    /// Write the manifest and every signed chunk to this folder.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Publish into the mesh: the embedded origin node listens here for peers (repeatable;
    /// for example `/ip4/0.0.0.0/udp/9000/quic-v1`). Viewers bootstrap from the address it
    /// prints.
    #[arg(long, env = "FJORD_LISTEN")]
    listen: Vec<libp2p::Multiaddr>,
    /// An address peers reach the origin at (a public IP or a forwarded port).
    #[arg(long, env = "FJORD_EXTERNAL")]
    external: Vec<libp2p::Multiaddr>,
    /// The origin's upload cap (bit/s; k, M suffixes). Default: four times the stream's rate.
    #[arg(long, value_parser = fjord_node::units::parse_rate)]
    upload: Option<u64>,
    /// Address of the origin's HTTP endpoints (/metrics, /status).
    #[arg(long, env = "FJORD_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// Do not look for peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Write the origin's JSON status to this file every second.
    #[arg(long, requires = "listen")]
    status_file: Option<PathBuf>,
    /// Channel name shown to viewers.
    #[arg(long, default_value = "Fjord test channel")]
    name: String,
    /// Output picture size, WIDTHxHEIGHT (even numbers).
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    size: (u32, u32),
    /// Output frames per second (whole numbers).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Video bit rate (bit/s; k and M suffixes).
    #[arg(long, default_value = "2500k", value_parser = parse_rate)]
    video_bitrate: u32,
    /// Audio bit rate (bit/s; k and M suffixes).
    #[arg(long, default_value = "128k", value_parser = parse_rate)]
    audio_bitrate: u32,
    /// Copy the input's H.264 video into the channel instead of re-encoding it (files and live
    /// inputs; the input must be H.264 without B-frames at --fps; groups start at its key
    /// frames, so give it a key frame every --group-ms). Audio is still encoded to AAC.
    /// --size, --video-bitrate and --preset then do not apply.
    #[arg(long)]
    video_copy: bool,
    /// Constant video bit rate: pad with filler data up to --video-bitrate (for links that
    /// want CBR, and so that benchmarks on simple pictures cost what real programmes do).
    #[arg(long)]
    cbr: bool,
    /// x264 preset: ultrafast, superfast, veryfast, faster, fast, medium, ...
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Chunk duration in milliseconds (rounded to whole frames; at least 50).
    #[arg(long, default_value_t = 200)]
    chunk_ms: u64,
    /// Group (key-frame interval) in milliseconds (rounded to whole chunks).
    #[arg(long, default_value_t = 1000)]
    group_ms: u64,
    /// Target latency from publication to playout, in milliseconds: relays drop chunks that
    /// cannot arrive within it.
    #[arg(long, default_value_t = 3000)]
    target_latency_ms: u32,
    /// Stop after this many seconds (media time for pattern and files, wall time for live).
    #[arg(long)]
    duration: Option<f64>,
    /// Drop a live sender that sends nothing for this many seconds and listen again.
    #[arg(long, default_value_t = 10.0)]
    input_timeout: f64,
}

pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or("expected WIDTHxHEIGHT, like 1280x720")?;
    let w: u32 = w.parse().map_err(|_| format!("bad width {w:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height {h:?}"))?;
    if w < 128 || h < 72 || w > 7680 || h > 4320 || w % 2 == 1 || h % 2 == 1 {
        return Err("width and height must be even, from 128x72 to 7680x4320".into());
    }
    Ok((w, h))
}

fn parse_rate(s: &str) -> Result<u32, String> {
    let bps = fjord_node::units::parse_rate(s)?;
    u32::try_from(bps)
        .ok()
        .filter(|b| *b <= 100_000_000)
        .ok_or_else(|| format!("bit rate {s} is above 100M"))
}

/// CPU time this process used so far (all threads), from /proc.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports in clock ticks of 1/100 s on every architecture Debian ships.
    Some((utime + stime) / 100.0)
}

fn ms(us: Option<u32>) -> String {
    us.map_or("-".into(), |v| format!("{:.1}", f64::from(v) / 1000.0))
}

/// The live status line: rates over the last second, latencies over the last 50 chunks.
struct Status {
    last: Instant,
    frames: u64,
    bytes: u64,
    tty: bool,
    printed: Instant,
}

impl Status {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            frames: 0,
            bytes: 0,
            tty: std::io::stderr().is_terminal(),
            printed: Instant::now(),
        }
    }

    fn update(&mut self, stats: &Stats) {
        let dt = self.last.elapsed().as_secs_f64().max(1e-3);
        let fps = (stats.frames - self.frames) as f64 / dt;
        let kbps = (stats.bytes - self.bytes) as f64 * 8.0 / dt / 1000.0;
        self.last = Instant::now();
        self.frames = stats.frames;
        self.bytes = stats.bytes;
        let recent = &stats.video_ready_us[stats.video_ready_us.len().saturating_sub(50)..];
        let line = format!(
            "{:.1} fps  {:.0} kbit/s  chunk ready p50 {} ms p99 {} ms  frames {}  dropped {}  chunks {}  input losses {}",
            fps,
            kbps,
            ms(quantile(recent, 0.5)),
            ms(quantile(recent, 0.99)),
            stats.frames,
            stats.dropped,
            stats.chunks,
            stats.interruptions,
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else if self.printed.elapsed() >= Duration::from_secs(10) {
            self.printed = Instant::now();
            info!("{line}");
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    ffmpeg_next::init().context("cannot initialise FFmpeg")?;
    ffmpeg_next::log::set_level(ffmpeg_next::log::Level::Error);
    let (key, exposed) = keyfile::load(&args.key)
        .with_context(|| format!("cannot read the channel key {}", args.key.display()))?;
    if exposed {
        eprintln!("warning: the key file is readable by other users; run chmod 600 on it");
    }
    if args.chunk_ms < 50 {
        bail!("--chunk-ms must be at least 50");
    }
    let cadence = Cadence::new(
        args.fps,
        Duration::from_millis(args.chunk_ms),
        Duration::from_millis(args.group_ms),
    )?;
    if u64::from(cadence.chunk_us()) != args.chunk_ms * 1000 {
        info!(
            chunk_us = cadence.chunk_us(),
            frames = cadence.frames_per_chunk,
            "chunk duration rounded to whole frames"
        );
    }
    let source = Source::parse(&args.input, args.looped)?;
    if args.record.is_none() && args.listen.is_empty() {
        bail!("nowhere to publish: give --listen (publish into the mesh) and/or --record DIR");
    }
    let config = OutputConfig {
        name: args.name.clone(),
        width: args.size.0,
        height: args.size.1,
        video_bitrate: args.video_bitrate,
        preset: args.preset.clone(),
        cadence,
        audio_bitrate: args.audio_bitrate,
        target_latency_us: args.target_latency_ms.saturating_mul(1000),
        cbr: args.cbr,
    };
    let channel = key.channel_id();
    let origin = if args.listen.is_empty() {
        None
    } else {
        let stream_bps = u64::from(args.video_bitrate) + u64::from(args.audio_bitrate);
        let mut node =
            fjord_node::NodeConfig::viewer(channel, args.upload.unwrap_or(4 * stream_bps));
        node.role = fjord_node::core::proto::Role::Origin;
        node.listen = args.listen.clone();
        node.external = args.external.clone();
        node.mesh.mdns = !args.no_mdns;
        node.mesh.relay_server = true;
        let (origin, http) = Origin::start(node, args.http)?;
        if let Some(path) = args.status_file.clone() {
            origin.write_status_file(path);
        }
        println!("channel: {channel}");
        for a in origin.node().listen_addrs() {
            println!("origin: {a}");
        }
        if let Some(http) = http {
            println!("status: http://{http}/status");
            println!("audience: http://{http}/stats");
        }
        Some(origin)
    };
    let publisher: Box<dyn Publisher + Send> = match (&args.record, &origin) {
        (Some(dir), Some(o)) => Box::new(Tee(Recorder::new(dir)?, o.publisher())),
        (Some(dir), None) => Box::new(Recorder::new(dir)?),
        (None, Some(o)) => Box::new(o.publisher()),
        (None, None) => unreachable!("checked above"),
    };
    if args.video_copy && source == Source::Pattern {
        bail!("--video-copy needs a file or live input: the test pattern is always encoded");
    }
    let mut pipeline = if args.video_copy {
        Pipeline::new_copy(key, &config, publisher)
    } else {
        Pipeline::new(key, &config, publisher)
    }
    .context("cannot start the encoder")?;
    info!(
        channel = %channel,
        epoch = pipeline.epoch(),
        record = ?args.record,
        "encoding {}x{} at {} fps, {} frames per chunk, {} chunks per group",
        args.size.0, args.size.1, cadence.fps, cadence.frames_per_chunk, cadence.chunks_per_group
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let control = Control {
        stop,
        duration: args.duration.map(Duration::from_secs_f64),
        input_timeout: Duration::from_secs_f64(args.input_timeout.max(0.5)),
    };
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut status = Status::new();
    let mut report = |p: &Pipeline| status.update(p.stats());
    let outcome = match source {
        Source::Pattern => {
            ingest::run_pattern(&mut pipeline, &args.name, args.size, &control, &mut report)
        }
        other => ingest::run_input(&mut pipeline, other, &control, &mut report),
    };
    let stats = pipeline.finish().context("cannot finish the last chunks")?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    if let Some(origin) = origin {
        origin.shutdown();
    }
    outcome?;
    let media_s = stats.frames as f64 / f64::from(cadence.fps);
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.3}", (b - a) / media_s.max(1e-9)),
        _ => "-".into(),
    };
    println!(
        "summary: media_s={:.2} wall_s={:.2} frames={} dropped={} chunks={} input_losses={} \
         cpu_s_per_media_s={} video_ready_ms_p50={} p99={} max={} audio_ready_ms_p50={} p99={}",
        media_s,
        started.elapsed().as_secs_f64(),
        stats.frames,
        stats.dropped,
        stats.chunks,
        stats.interruptions,
        cpu,
        ms(quantile(&stats.video_ready_us, 0.5)),
        ms(quantile(&stats.video_ready_us, 0.99)),
        ms(quantile(&stats.video_ready_us, 1.0)),
        ms(quantile(&stats.audio_ready_us, 0.5)),
        ms(quantile(&stats.audio_ready_us, 0.99)),
    );
    Ok(())
}

fn main() -> Result<()> {
    let args =
        fjord_node::config_file::with_config_file(&Cli::command(), std::env::args_os().collect())?;
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match cli.command {
        Command::Keygen { out } => {
            let key = keyfile::generate(&out).context("cannot create the channel key")?;
            eprintln!("wrote {} (keep it private and backed up)", out.display());
            println!("{}", key.channel_id());
        }
        Command::Id { key } => {
            let (key, exposed) = keyfile::load(&key).context("cannot read the channel key")?;
            if exposed {
                eprintln!("warning: the key file is readable by other users; run chmod 600 on it");
            }
            println!("{}", key.channel_id());
        }
        Command::Run(args) => run(*args)?,
        Command::Demo(args) => demo::run(args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes_parse() {
        assert_eq!(parse_rate("2500k"), Ok(2_500_000));
        assert_eq!(parse_rate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_rate("96000"), Ok(96_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1").is_err());
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert!(parse_size("1281x720").is_err());
        assert!(parse_size("720p").is_err());
    }
}
