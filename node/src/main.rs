//! `fjord-node`: the Fjord relay node's command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, CommandFactory, Parser, Subcommand};
use fjord_node::core::proto::Role;
use fjord_node::core::wire::ChannelId;
use fjord_node::gateway::GatewayConfig;
use fjord_node::http::HttpOptions;
use fjord_node::mesh::MeshConfig;
use fjord_node::{NodeConfig, identity, inspect, units};
use libp2p::Multiaddr;
use tracing::info;

/// Fjord relay node: relays a signed live channel to and from peers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Read options from this TOML file (keys are the long option names; `channel` for the
    /// channel id). The command line and environment variables override it.
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
    /// Join a channel as a viewer: receive it from the mesh and relay it onwards.
    Watch(NodeArgs),
    /// Run a broadcaster's seed node: a viewer with more neighbours and upload, that also
    /// offers a relay to nodes behind NAT.
    Seed(NodeArgs),
    /// Decode stored manifests or chunks, print what they say and check their signatures.
    Inspect {
        /// Files holding one encoded manifest or chunk each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The channel the files must belong to. Without it, each file is checked against the
        /// channel it names.
        #[arg(long)]
        channel: Option<ChannelId>,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// The channel id (52 characters, printed by `fjord-encoder keygen`).
    channel: ChannelId,
    /// A peer to start from, `/ip4/HOST/udp/PORT/quic-v1/p2p/PEER_ID` (repeatable). The
    /// origin and seed nodes print theirs when they start.
    #[arg(short, long, env = "FJORD_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<Multiaddr>,
    /// Address to listen on (repeatable).
    #[arg(
        short,
        long,
        env = "FJORD_LISTEN",
        default_value = "/ip4/0.0.0.0/udp/0/quic-v1"
    )]
    listen: Vec<Multiaddr>,
    /// An address others reach this node at (a public IP or a forwarded port).
    #[arg(long, env = "FJORD_EXTERNAL")]
    external: Vec<Multiaddr>,
    /// Upload this node offers to the mesh (bit/s; k, M, G suffixes). The scheduler paces
    /// chunks and control messages to it; QUIC's headers and acknowledgements come on top:
    /// about 90% of a dedicated uplink.
    #[arg(short, long, env = "FJORD_UPLOAD", value_parser = units::parse_rate)]
    upload: Option<u64>,
    /// Neighbours to keep (default: 20 for viewers, 40 for seeds).
    #[arg(long, env = "FJORD_NEIGHBOURS")]
    neighbours: Option<usize>,
    /// Serve the channel to a local player at http://<http>/live.mp4 (VLC, mpv, ffplay).
    #[arg(long)]
    play: bool,
    /// Address of the HTTP endpoints: /metrics, /status and, with --play, /live.mp4.
    #[arg(long, env = "FJORD_HTTP", default_value = "127.0.0.1:8090")]
    http: SocketAddr,
    /// Serve browsers over WebTransport on this UDP address (the page is served on --http).
    #[arg(long, env = "FJORD_GATEWAY")]
    gateway: Option<SocketAddr>,
    /// Browser sessions the gateway takes at most; more are refused.
    #[arg(long, default_value_t = 100)]
    gateway_sessions: usize,
    /// The gateway's certificate chain (PEM) instead of a self-signed one (with --gateway-key).
    #[arg(long, requires = "gateway_key")]
    gateway_cert: Option<PathBuf>,
    /// The gateway certificate's private key (PEM).
    #[arg(long, requires = "gateway_cert")]
    gateway_key: Option<PathBuf>,
    /// Another name (host name or IP) the self-signed gateway certificate is for.
    #[arg(long)]
    gateway_name: Vec<String>,
    /// The folder of the built browser player (default: player-web/dist).
    #[arg(long, env = "FJORD_PLAYER")]
    player: Option<PathBuf>,
    /// Test aid: corrupt every n-th chunk the gateway sends, to show players reject it.
    #[arg(long, hide = true)]
    test_tamper_every: Option<u64>,
    /// Include this node's addresses in its audience reports (by default the broadcaster
    /// learns only aggregate figures).
    #[arg(long)]
    report_addresses: bool,
    /// Keep the node's identity (its peer id) in this file, created if missing.
    #[arg(long, env = "FJORD_IDENTITY")]
    identity: Option<PathBuf>,
    /// Do not look for peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Link only to the --bootstrap peers (and to peers that dial this node): no DHT lookups,
    /// not announced in the DHT, no mDNS. For private relay chains.
    #[arg(long = "static", requires = "bootstrap")]
    fixed: bool,
    /// Seconds between status lines (0: none).
    #[arg(long, default_value_t = 5)]
    status_interval: u64,
    /// Write the JSON status to this file every second (atomically: written beside, then
    /// renamed), for tools that cannot reach the HTTP endpoint.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Worker threads of the node (default: one per core). One is plenty for a viewer; many
    /// nodes on one machine (the emulator) run best with one each.
    #[arg(long)]
    threads: Option<usize>,
    /// Delay percentiles in the status file cover chunks published from this time on (µs
    /// since the Unix epoch).
    #[arg(long, default_value_t = 0, requires = "status_file")]
    status_since: u64,
}

fn main() -> Result<()> {
    let args =
        fjord_node::config_file::with_config_file(&Cli::command(), std::env::args_os().collect())?;
    let cli = Cli::parse_from(args);
    init_logging(cli.log_json);
    match cli.command {
        Command::Inspect { files, channel } => {
            let mut failures = 0;
            for file in &files {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                match inspect::describe(Bytes::from(bytes), channel.as_ref()) {
                    Ok(text) => print!("{}:\n{text}", file.display()),
                    Err(e) => {
                        failures += 1;
                        eprintln!("{}: {e}", file.display());
                    }
                }
            }
            if failures > 0 {
                bail!("{failures} of {} files failed the check", files.len());
            }
            Ok(())
        }
        Command::Watch(args) => run(args, Role::Viewer),
        Command::Seed(args) => run(args, Role::Seed),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn run(args: NodeArgs, role: Role) -> Result<()> {
    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, role))
}

async fn serve(args: NodeArgs, role: Role) -> Result<()> {
    let keypair = match &args.identity {
        Some(path) => identity::load_or_create(path)
            .with_context(|| format!("cannot use the identity file {}", path.display()))?,
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let upload = args.upload.unwrap_or(match role {
        Role::Seed => 20_000_000,
        _ => 5_000_000,
    });
    let mut config = NodeConfig::viewer(args.channel, upload);
    config.role = role;
    config.keypair = keypair;
    config.listen = args.listen;
    config.external = args.external;
    config.bootstrap = args.bootstrap;
    config.max_neighbours = args.neighbours;
    config.discovery = !args.fixed;
    config.report_addresses = args.report_addresses;
    config.mesh = MeshConfig {
        mdns: !args.no_mdns && !args.fixed,
        relay_server: role == Role::Seed,
        ..MeshConfig::default()
    };
    if config.bootstrap.is_empty() && args.no_mdns {
        bail!("no way to find peers: give --bootstrap, or allow mDNS on the LAN");
    }
    let node = fjord_node::start(config)
        .await
        .context("cannot start the node")?;
    println!("peer id: {}", node.peer_id());
    for a in node.listen_addrs() {
        println!("listening: {a}");
    }
    let history =
        (args.play || args.gateway.is_some()).then(|| fjord_node::play::keep_history(&node));
    let gateway = match args.gateway {
        Some(addr) => {
            let mut g = GatewayConfig::new(addr);
            g.max_sessions = args.gateway_sessions;
            g.tamper_every = args.test_tamper_every;
            if let (Some(c), Some(k)) = (&args.gateway_cert, &args.gateway_key) {
                g.pem = Some((c.clone(), k.clone()));
            }
            if !addr.ip().is_unspecified() {
                g.names.push(addr.ip().to_string());
            }
            g.names.extend(args.gateway_name.iter().cloned());
            let history = history.clone().expect("kept with a gateway");
            Some(
                fjord_node::gateway::start(node.clone(), history, g)
                    .await
                    .context("cannot start the gateway")?,
            )
        }
        None => None,
    };
    let player = match (&gateway, &args.player) {
        (Some(_), Some(dir)) => Some(dir.clone()),
        (Some(_), None) => {
            let dir = PathBuf::from("player-web/dist");
            if dir.join("index.html").exists() {
                Some(dir)
            } else {
                tracing::warn!(
                    "no built player in player-web/dist (run `npm run build` in player-web, or give --player DIR); \
                     the gateway serves browsers but not the page"
                );
                None
            }
        }
        _ => None,
    };
    let options = HttpOptions {
        play: history.clone().filter(|_| args.play),
        gateway: gateway.clone(),
        player: player.clone(),
    };
    let http = fjord_node::http::serve(node.clone(), args.http, options)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", args.http))?;
    println!("metrics: http://{http}/metrics");
    println!("status: http://{http}/status");
    if node.audience().is_some() {
        println!("audience: http://{http}/stats");
    }
    if args.play {
        println!("play: http://{http}/live.mp4   (vlc, mpv or ffplay this URL)");
    }
    if let Some(g) = &gateway {
        println!("gateway: {} (WebTransport)", g.local_addr());
        if player.is_some() {
            println!("page: http://{http}/?channel={}", args.channel);
        }
    }
    if let Some(path) = args.status_file.clone() {
        fjord_node::driver::write_status_file(node.clone(), path, args.status_since);
    }
    let status = {
        let node = node.clone();
        let every = args.status_interval;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            let mut last = node.status().counters;
            loop {
                tick.tick().await;
                let s = node.status().counters;
                let rate = |now: u64, then: u64| (now - then) as f64 * 8.0 / every as f64 / 1e3;
                info!(
                    "neighbours {}  continuity {}  delay p50 {} ms p99 {} ms  down {:.0} kbit/s  up {:.0} kbit/s  rejected {}",
                    s.neighbours,
                    s.continuity
                        .map_or("-".into(), |c| format!("{:.2}%", c * 100.0)),
                    s.delay_ms_p50.map_or("-".into(), |d| format!("{d:.0}")),
                    s.delay_ms_p99.map_or("-".into(), |d| format!("{d:.0}")),
                    rate(s.bytes_down, last.bytes_down),
                    rate(s.bytes_up, last.bytes_up),
                    s.chunks_rejected,
                );
                last = s;
            }
        })
    };
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    info!("stopping");
    status.abort();
    node.shutdown().await;
    Ok(())
}
