//! Loopback fan-out benchmark: an origin in this process pushes a synthetic signed stream to
//! N `fjord-node watch` processes that keep it as their only neighbour, and reports
//! - CPU seconds per delivered Gbit (this process and the viewers together, from /proc),
//! - per-hop latency (publication to arrival at a viewer) p50 and p99,
//! - the viewers' resident memory.
//!
//! With `--raw`, the same topology and rate over plain libp2p streams on QUIC (no Fjord: no
//! scheduler, framing, acknowledgements or signature checks): the baseline, measured the same
//! way in the same run of the machine.
//!
//! ```sh
//! cargo build --release -p fjord-node --bins --examples
//! target/release/examples/fanout --rate 5M --viewers 8 --secs 20
//! target/release/examples/fanout --rate 40M --viewers 8 --secs 20 --raw
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use fjord_node::core::wire::ChannelKey;
use fjord_node::synthetic::{SyntheticConfig, SyntheticOrigin};
use fjord_node::{NodeConfig, Status, units};

/// Loopback fan-out benchmark of the Fjord node.
#[derive(Parser)]
struct Args {
    /// Stream rate (bit/s; k, M, G suffixes).
    #[arg(long, default_value = "5M", value_parser = units::parse_rate)]
    rate: u64,
    /// Viewer processes (the fan-out).
    #[arg(long, default_value_t = 8)]
    viewers: usize,
    /// Seconds measured, after a warm-up of 5 s.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// The origin's upload cap: high by default, so that per-hop latency is the node's and
    /// the transport's, not the pacing of eight copies.
    #[arg(long, default_value = "1G", value_parser = units::parse_rate)]
    origin_upload: u64,
    /// Chunk duration in milliseconds.
    #[arg(long, default_value_t = 200)]
    chunk_ms: u64,
    /// Measure plain libp2p streams instead of Fjord nodes (the baseline).
    #[arg(long)]
    raw: bool,
    /// Internal: run as a raw receiver.
    #[arg(long, hide = true)]
    raw_receiver: bool,
}

const RAW_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/fanout-raw/1");

/// A raw receiver: listens, prints its address, reads every stream to the end, and prints the
/// byte count when asked on stdin.
async fn raw_receiver() -> Result<()> {
    use futures::{AsyncReadExt, StreamExt};
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let mesh = fjord_node::mesh::MeshConfig {
        mdns: false,
        ..Default::default()
    };
    let mut swarm = fjord_node::mesh::build(keypair, &mesh)?;
    swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            swarm.select_next_some().await
        {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let mut incoming = swarm
        .behaviour()
        .streams
        .new_control()
        .accept(RAW_PROTOCOL)?;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    println!("raw: {}", addr.with(libp2p::multiaddr::Protocol::P2p(peer)));
    let r = received.clone();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    r.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let r = received.clone();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines() {
            println!("bytes: {}", r.load(std::sync::atomic::Ordering::Relaxed));
        }
    });
    loop {
        swarm.select_next_some().await;
    }
}

/// The baseline: the same rate in chunk-sized writes to each receiver over one stream each.
async fn raw(args: &Args) -> Result<()> {
    use futures::{AsyncWriteExt, StreamExt};
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..args.viewers {
        let mut child = Command::new(&exe)
            .arg("--raw-receiver")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr: libp2p::Multiaddr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("raw: ").map(str::to_owned))
            .context("receiver address")?
            .parse()?;
        addrs.push(addr);
        children.push((child, lines));
    }
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let mesh = fjord_node::mesh::MeshConfig {
        mdns: false,
        ..Default::default()
    };
    let mut swarm = fjord_node::mesh::build(keypair, &mesh)?;
    let mut control = swarm.behaviour().streams.new_control();
    for a in &addrs {
        swarm.dial(a.clone())?;
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let chunk = vec![7u8; (args.rate * args.chunk_ms / 8_000) as usize];
    let mut writers = Vec::new();
    for a in &addrs {
        let peer = fjord_node::mesh::peer_of(a).context("peer id")?;
        let mut stream = control.open_stream(peer, RAW_PROTOCOL).await?;
        let chunk = chunk.clone();
        let every = Duration::from_millis(args.chunk_ms);
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if stream.write_all(&chunk).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }));
    }
    let count = |children: &mut Vec<(
        Child,
        std::io::Lines<BufReader<std::process::ChildStdout>>,
    )>|
     -> Result<u64> {
        let mut total = 0;
        for (child, lines) in children.iter_mut() {
            writeln!(child.stdin.as_mut().context("stdin")?)?;
            let line = lines.next().context("receiver answer")??;
            total += line
                .strip_prefix("bytes: ")
                .context("bytes line")?
                .parse::<u64>()?;
        }
        Ok(total)
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids: Vec<String> = std::iter::once("self".to_owned())
        .chain(children.iter().map(|(c, _)| c.id().to_string()))
        .collect();
    let cpu_all = |pids: &[String]| -> Result<(f64, f64)> {
        let own = cpu_seconds(&pids[0])?;
        let mut all = own;
        for p in &pids[1..] {
            all += cpu_seconds(p)?;
        }
        Ok((own, all))
    };
    let b0 = count(&mut children)?;
    let (own0, all0) = cpu_all(&pids)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (own1, all1) = cpu_all(&pids)?;
    let b1 = count(&mut children)?;
    let elapsed = t0.elapsed().as_secs_f64();
    for w in writers {
        w.abort();
    }
    let gbit = (b1 - b0) as f64 * 8.0 / 1e9;
    println!(
        "raw libp2p streams, fan-out {} at {:.1} Mbit/s for {elapsed:.1} s: delivered {:.3} Gbit ({:.0} Mbit/s)",
        args.viewers,
        args.rate as f64 / 1e6,
        gbit,
        gbit * 1e3 / elapsed
    );
    println!(
        "CPU: {:.2} CPU-s per delivered Gbit in all ({:.2} sender, {:.2} receivers)",
        (all1 - all0) / gbit,
        (own1 - own0) / gbit,
        ((all1 - all0) - (own1 - own0)) / gbit
    );
    for (mut c, _) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = TcpStream::connect(host).ok()?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

struct Viewer {
    child: Child,
    status_url: String,
}

impl Viewer {
    fn status(&self) -> Option<Status> {
        self.status_since(0)
    }

    /// Delay percentiles over chunks published since `us`.
    fn status_since(&self, us: u64) -> Option<Status> {
        serde_json::from_str(&http_get(&format!("{}?since={us}", self.status_url))?).ok()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.raw_receiver {
        return raw_receiver().await;
    }
    if args.raw {
        return raw(&args).await;
    }
    let exe = std::env::current_exe()?;
    let node_bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("fjord-node"))
        .context("locate fjord-node")?;
    if !node_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p fjord-node --bins --examples`",
            node_bin.display()
        );
    }
    let key = ChannelKey::from_seed(&[42; 32]);
    let mut config = NodeConfig::viewer(key.channel_id(), args.origin_upload);
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    config.mesh.mdns = false;
    config.max_neighbours = Some(args.viewers);
    let mut stream = SyntheticConfig::at(args.rate);
    stream.chunk = Duration::from_millis(args.chunk_ms);
    let origin = SyntheticOrigin::start(key, config, stream).await?;
    let boot = origin.node.listen_addrs()[0].to_string();
    let channel = origin.key.channel_id().to_string();
    let mut viewers = Vec::new();
    for _ in 0..args.viewers {
        let mut child = Command::new(&node_bin)
            .args(["watch", &channel, "--bootstrap", &boot, "--no-mdns"])
            .args([
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--http",
                "127.0.0.1:0",
            ])
            .args([
                "--neighbours",
                "1",
                "--status-interval",
                "0",
                "--upload",
                "1M",
                "--static",
            ])
            .env(
                "RUST_LOG",
                std::env::var("FANOUT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let status_url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("status: ").map(str::to_owned))
            .context("viewer status URL")?;
        std::thread::spawn(move || for _ in lines {});
        viewers.push(Viewer { child, status_url });
    }
    let warmup = Instant::now() + Duration::from_secs(30);
    while !viewers
        .iter()
        .all(|v| v.status().is_some_and(|s| s.counters.chunks_received > 5))
    {
        if Instant::now() > warmup {
            bail!("viewers did not start receiving within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids: Vec<String> = std::iter::once("self".to_owned())
        .chain(viewers.iter().map(|v| v.child.id().to_string()))
        .collect();
    let cpu = |pids: &[String]| -> Result<(f64, f64)> {
        let own = cpu_seconds(&pids[0])?;
        let mut all = own;
        for p in &pids[1..] {
            all += cpu_seconds(p)?;
        }
        Ok((own, all))
    };
    let before: Vec<Status> = viewers.iter().filter_map(Viewer::status).collect();
    let (own0, all0) = cpu(&pids)?;
    let t0 = Instant::now();
    let t0_us = fjord_node::driver::now().as_micros();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (own1, all1) = cpu(&pids)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let after: Vec<Status> = viewers
        .iter()
        .filter_map(|v| v.status_since(t0_us))
        .collect();
    origin.stop_publishing();
    if before.len() != viewers.len() || after.len() != viewers.len() {
        bail!("a viewer stopped answering");
    }
    let delivered_bits: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.counters.bytes_down - b.counters.bytes_down) * 8)
        .sum();
    let gbit = delivered_bits as f64 / 1e9;
    let mut p50: Vec<f64> = after
        .iter()
        .filter_map(|s| s.counters.delay_ms_p50)
        .collect();
    let mut p99: Vec<f64> = after
        .iter()
        .filter_map(|s| s.counters.delay_ms_p99)
        .collect();
    p50.sort_by(f64::total_cmp);
    p99.sort_by(f64::total_cmp);
    let rss: Vec<u64> = viewers
        .iter()
        .map(|v| rss_kib(v.child.id()).unwrap_or(0))
        .collect();
    // Continuity over the measured window: on-time chunks against the chunks published.
    let continuity: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            let on_time = (a.counters.chunks_on_time - b.counters.chunks_on_time) as f64;
            let expected = (a.counters.chunks_expected - b.counters.chunks_expected).max(1) as f64;
            on_time / expected
        })
        .collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let mbit = (a.counters.bytes_down - b.counters.bytes_down) as f64 * 8.0 / elapsed / 1e6;
        if mbit < args.rate as f64 / 1e6 * 0.95 {
            println!(
                "viewer {i} received only {mbit:.1} Mbit/s: {} neighbours, continuity {:?}",
                a.counters.neighbours, a.counters.continuity
            );
        }
    }
    println!(
        "fan-out {} viewers at {:.1} Mbit/s for {elapsed:.1} s: delivered {:.3} Gbit ({:.0} Mbit/s)",
        args.viewers,
        args.rate as f64 / 1e6,
        gbit,
        delivered_bits as f64 / elapsed / 1e6
    );
    println!(
        "CPU: {:.2} CPU-s per delivered Gbit in all ({:.2} sender, {:.2} receivers)",
        (all1 - all0) / gbit,
        (own1 - own0) / gbit,
        ((all1 - all0) - (own1 - own0)) / gbit
    );
    println!(
        "per-hop delay (publication to arrival), median over viewers: p50 {:.1} ms, p99 {:.1} ms (worst viewer p99 {:.1} ms)",
        p50[p50.len() / 2],
        p99[p99.len() / 2],
        p99[p99.len() - 1]
    );
    println!(
        "viewer resident memory: median {} KiB, max {} KiB; continuity in the window, worst viewer {:.4}",
        {
            let mut r = rss.clone();
            r.sort_unstable();
            r[r.len() / 2]
        },
        rss.iter().max().copied().unwrap_or(0),
        continuity.iter().copied().fold(1.0, f64::min)
    );
    origin.node.shutdown().await;
    Ok(())
}
