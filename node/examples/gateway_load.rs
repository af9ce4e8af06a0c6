//! Gateway benchmark: CPU per browser session at a given stream rate. An origin in this
//! process publishes a synthetic signed stream to a `fjord-node watch --gateway` process;
//! WebTransport sessions opened from here (each reading every chunk the gateway sends, as a
//! browser does) load it. The gateway process's CPU is measured without sessions and with
//! them; the difference per session is the figure.
//!
//! ```sh
//! cargo build --release -p fjord-node --bins --examples
//! target/release/examples/gateway_load --rate 2.5M --sessions 10 --secs 15
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use fjord_node::core::wire::ChannelKey;
use fjord_node::gateway::GatewayInfo;
use fjord_node::synthetic::{SyntheticConfig, SyntheticOrigin};
use fjord_node::{NodeConfig, units};

/// Gateway load benchmark.
#[derive(Parser)]
struct Args {
    /// Stream rate (bit/s; k, M suffixes).
    #[arg(long, default_value = "2.5M", value_parser = units::parse_rate)]
    rate: u64,
    /// Browser sessions to open.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Seconds measured in each phase (without and with sessions).
    #[arg(long, default_value_t = 15)]
    secs: u64,
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / 100.0)
}

fn http_get(host: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(host)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .context("HTTP body")?
        .1
        .to_owned())
}

async fn session(info: &GatewayInfo, bytes: Arc<AtomicU64>) -> Result<()> {
    let hash: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&info.sha256[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()?;
    let client =
        web_transport_quinn::ClientBuilder::new().with_server_certificate_hashes(vec![hash])?;
    let url: url::Url = format!("https://127.0.0.1:{}/fjord", info.port).parse()?;
    let session = client.connect(url).await?;
    tokio::spawn(async move {
        while let Ok(mut stream) = session.accept_uni().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                if let Ok(b) = stream.read_to_end(8 << 20).await {
                    bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exe = std::env::current_exe()?;
    let node_bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("fjord-node"))
        .context("locate fjord-node")?;
    if !node_bin.exists() {
        bail!(
            "{} not found: cargo build --release -p fjord-node --bins --examples",
            node_bin.display()
        );
    }
    let key = ChannelKey::from_seed(&[43; 32]);
    let mut config = NodeConfig::viewer(key.channel_id(), 100_000_000);
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
    config.mesh.mdns = false;
    let origin = SyntheticOrigin::start(key, config, SyntheticConfig::at(args.rate)).await?;
    let channel = origin.key.channel_id().to_string();
    let mut child = Command::new(&node_bin)
        .args([
            "watch",
            &channel,
            "--bootstrap",
            &origin.node.listen_addrs()[0].to_string(),
        ])
        .args([
            "--static",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--gateway",
            "127.0.0.1:0",
            "--status-interval",
            "0",
            "--gateway-sessions",
        ])
        .arg((args.sessions + 1).to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let status = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("status: http://").map(str::to_owned))
        .context("the gateway node's status URL")?;
    std::thread::spawn(move || for _ in lines {});
    let host = status.trim_end_matches("/status").to_owned();
    let info: GatewayInfo = serde_json::from_str(&http_get(&host, "/gateway.json")?)?;
    // Let the node join and fill its history.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = child.id();
    let measure = |secs: u64| async move {
        let c0 = cpu_seconds(pid)?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        Ok::<_, anyhow::Error>((cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64())
    };
    let idle = measure(args.secs).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    for _ in 0..args.sessions {
        session(&info, bytes.clone()).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b0 = bytes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let loaded = measure(args.secs).await?;
    let rate = (bytes.load(Ordering::Relaxed) - b0) as f64 * 8.0 / t0.elapsed().as_secs_f64();
    println!(
        "gateway at {:.1} Mbit/s: {:.3} of a core without sessions, {:.3} with {} sessions \
         receiving {:.2} Mbit/s each",
        args.rate as f64 / 1e6,
        idle,
        loaded,
        args.sessions,
        rate / args.sessions as f64 / 1e6
    );
    println!(
        "per session: {:.4} of a core ({:.1} ms of CPU per second)",
        (loaded - idle) / args.sessions as f64,
        (loaded - idle) / args.sessions as f64 * 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
