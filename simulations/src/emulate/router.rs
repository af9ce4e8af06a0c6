//! The emulated WAN: a user-space router that owns one TUN device per host (each moved into
//! the host's namespace) and forwards IPv4 packets between them.
//!
//! A packet from host `a` to host `b` leaves `a`'s uplink when the packets before it have
//! (serialisation at `a`'s upload rate, a drop-tail queue of [`QUEUE_LIMIT`]), crosses the
//! one-way delay of the pair plus a random jitter (in order per pair, as on one path), may be
//! lost, then enters `b`'s downlink (serialisation at `b`'s download rate, the same queue
//! limit) and is written to `b`'s TUN device. This machine's kernel has no `netem`, so this is
//! how delay, jitter, loss and rates reach real processes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use fjord_core::rng::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest a packet may wait in a link queue before it is dropped: the buffer of a home
/// router's uplink, commonly several hundred ms to seconds of data.
pub const QUEUE_LIMIT: Duration = Duration::from_millis(1000);

/// One host's access link.
#[derive(Clone, Debug)]
pub struct HostLink {
    /// Its address.
    pub addr: Ipv4Addr,
    /// Upload, bit/s.
    pub up_bps: u64,
    /// Download, bit/s.
    pub down_bps: u64,
}

/// What the router counted.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Packets forwarded.
    pub forwarded: AtomicU64,
    /// Packets lost on purpose.
    pub lost: AtomicU64,
    /// Packets dropped at a full queue.
    pub dropped: AtomicU64,
    /// Packets to no host of the emulation.
    pub stray: AtomicU64,
    /// Per host: packets dropped at its uplink and at its downlink queue.
    pub host_drops: Vec<(AtomicU64, AtomicU64)>,
    /// Per host: what its uplink carried and how long packets queued there.
    pub host_uplink: Vec<UplinkStats>,
    /// How late the router itself handled packets, beside the delays it emulates.
    pub late: LatenessStats,
}

/// How long packets waited for the router itself (its task waiting for a core, or the timer's
/// 1 ms granularity): from being read off the source's device to being shaped, plus from their
/// scheduled delivery to being written. A packet's delay beyond the scenario's is at most
/// this: shaping starts from the read, so a wait before it only delays the packet where it
/// pushes it past its schedule. Time in the kernel's queue before the read is not seen. It
/// tells whether a gap to the simulator can be the machine's.
#[derive(Debug, Default)]
pub struct LatenessStats {
    /// Packets counted (those written to their destination).
    pub packets: AtomicU64,
    /// Their total wait, µs (see the type).
    pub total_us: AtomicU64,
    /// Packets more than [`LATE_PACKET`] late.
    pub over: AtomicU64,
    /// The largest lateness, µs.
    pub max_us: AtomicU64,
}

/// Lateness from which [`LatenessStats::over`] counts a packet.
pub const LATE_PACKET: Duration = Duration::from_millis(5);

/// One host's uplink counters. A queue that stays long delays the host's acknowledgements and
/// control messages behind its own chunks.
#[derive(Debug, Default)]
pub struct UplinkStats {
    /// Packets that entered it (dropped ones not counted).
    pub packets: AtomicU64,
    /// Their IP bytes.
    pub bytes: AtomicU64,
    /// Their total wait in its queue, µs.
    pub wait_us: AtomicU64,
    /// The longest wait, µs.
    pub max_wait_us: AtomicU64,
    /// Packets of at most [`SMALL_PACKET`] bytes: control messages and acknowledgements.
    pub small_packets: AtomicU64,
    /// Their IP bytes.
    pub small_bytes: AtomicU64,
}

/// Largest IP packet counted as small: no chunk data packet is that short (QUIC fills them to
/// the path's MTU but for a chunk's tail), while control batches and acknowledgements are.
pub const SMALL_PACKET: usize = 300;

/// The address of host `index`: 10.77.0.1 for the origin (index 0), then on.
pub fn address(index: usize) -> Ipv4Addr {
    let n = index + 1;
    Ipv4Addr::new(10, 77, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// The name of host `index`'s TUN device.
pub fn device_name(index: usize) -> String {
    format!("{}{index}", super::netns::PREFIX)
}

struct Packet {
    src: usize,
    dst: usize,
    bytes: Vec<u8>,
    /// When it was read off the source's device.
    read: Instant,
    /// Lateness so far: how long it waited for the shaper after being read.
    late: Duration,
}

/// Scheduled work: a packet reaching the far end of the path (then it queues for the
/// downlink), or leaving the downlink (then it is written).
enum Stage {
    Arrive,
    Deliver,
}

struct Event {
    at: Instant,
    seq: u64,
    stage: Stage,
    packet: Packet,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

impl LatenessStats {
    fn record(&self, late: Duration) {
        let us = late.as_micros() as u64;
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        if late > LATE_PACKET {
            self.over.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Mean lateness in ms, the share of packets over [`LATE_PACKET`], and the largest in ms.
    pub fn summary(&self) -> [f64; 3] {
        let n = self.packets.load(Ordering::Relaxed).max(1) as f64;
        [
            self.total_us.load(Ordering::Relaxed) as f64 / n / 1000.0,
            self.over.load(Ordering::Relaxed) as f64 / n,
            self.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        ]
    }
}

fn transmission(bytes: usize, bps: u64) -> Duration {
    Duration::from_nanos((bytes as u64 * 8 * 1_000_000_000) / bps.max(1))
}

/// The router's shaping state: pure bookkeeping, driven by the forwarding task.
struct Shaper {
    links: Vec<HostLink>,
    delay: Vec<Vec<Duration>>,
    jitter: Duration,
    loss: f64,
    rng: Rng,
    up_free: Vec<Instant>,
    down_free: Vec<Instant>,
    /// Per (src, dst): when the last packet reaches the far end (keeps a path in order).
    path_last: HashMap<(usize, usize), Instant>,
}

/// The running router. Dropping it stops the forwarding and closes the TUN devices.
#[derive(Debug)]
pub struct Router {
    /// The devices' names, by host, for the caller to move into namespaces.
    pub devices: Vec<String>,
    /// The counters.
    pub stats: Arc<RouterStats>,
    /// Whether its thread runs at real-time priority (see [`start`]).
    pub realtime: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Real-time priority of the router's thread: above every node (they run at normal
/// priority), low among real-time threads.
const RT_PRIORITY: i32 = 10;

/// Puts the calling thread under `SCHED_RR` at [`RT_PRIORITY`], with `chrt` (util-linux: the
/// workspace has no unsafe code for the system call); processes it would fork go back to
/// normal scheduling. Returns whether it worked.
fn make_realtime() -> bool {
    // "<pid>/task/<tid>": the thread's id, which `chrt -p` takes.
    let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return false;
    };
    std::process::Command::new("chrt")
        .args([
            "--rr",
            "--reset-on-fork",
            "-p",
            &RT_PRIORITY.to_string(),
            &tid,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the router on a thread of its own: creates one TUN device per host (named by
/// [`device_name`]) and forwards between them until the returned [`Router`] is dropped.
/// `delay[a][b]` is the one-way delay from host `a` to host `b`.
///
/// The thread runs at real-time priority where the system allows it (the emulator runs as
/// root): the nodes share this machine's cores, and a router that waits for a core behind
/// them delays every packet by as much, a delay the scenario does not have. (`emu30` at 100 ms
/// chunks, interleaved runs: at normal priority packets were handled 5.4 and 98 ms late on
/// average, 12% and 37% of them more than 5 ms, with the machine's other load; at real-time
/// priority 0.59 ms, 0.01-0.02%.)
pub fn start(
    links: Vec<HostLink>,
    delay: Vec<Vec<Duration>>,
    jitter: Duration,
    loss: f64,
    seed: u64,
) -> Result<Router> {
    let stats = Arc::new(RouterStats {
        host_drops: (0..links.len()).map(|_| Default::default()).collect(),
        host_uplink: (0..links.len()).map(|_| Default::default()).collect(),
        ..Default::default()
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(Vec<String>, bool)>>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("fjord-router".into())
        .spawn(move || {
            let realtime = make_realtime();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let e = anyhow::Error::from(e).context("cannot build the router's runtime");
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let devices = match create_devices(links.len()) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let names = (0..links.len()).map(device_name).collect();
                let _ = ready_tx.send(Ok((names, realtime)));
                let shaper = Shaper::new(links, delay, jitter, loss, seed);
                tokio::select! {
                    () = forward(devices, shaper, thread_stats) => {}
                    _ = stopped => {}
                }
            });
        })
        .context("cannot start the router's thread")?;
    let (devices, realtime) = ready_rx
        .recv()
        .context("the router's thread ended before it started")??;
    Ok(Router {
        devices,
        stats,
        realtime,
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn create_devices(n: usize) -> Result<Vec<Arc<tun::AsyncDevice>>> {
    let mut devices = Vec::new();
    for i in 0..n {
        let name = device_name(i);
        let mut config = tun::Configuration::default();
        config.tun_name(&name).layer(tun::Layer::L3).mtu(1500);
        let dev = tun::create_as_async(&config)
            .with_context(|| format!("cannot create the TUN device {name} (/dev/net/tun)"))?;
        devices.push(Arc::new(dev));
    }
    Ok(devices)
}

/// Reads every device and forwards what it reads through `shaper`, until the devices fail.
async fn forward(devices: Vec<Arc<tun::AsyncDevice>>, mut shaper: Shaper, stats: Arc<RouterStats>) {
    let by_addr: HashMap<Ipv4Addr, usize> = shaper
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| (l.addr, i))
        .collect();
    let (tx, mut rx) = mpsc::channel::<Packet>(65_536);
    let mut readers = tokio::task::JoinSet::new();
    for (src, dev) in devices.iter().enumerate() {
        let dev = dev.clone();
        let tx = tx.clone();
        let by_addr = by_addr.clone();
        let stats = stats.clone();
        readers.spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let n = match dev.recv(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        // The host is cut off from now on: say so, or the run would only show
                        // its continuity falling.
                        eprintln!("emulate: router: reading host {src}'s device failed: {e}");
                        return;
                    }
                };
                // IPv4 only: version nibble 4, destination at bytes 16..20.
                if n < 20 || buf[0] >> 4 != 4 {
                    continue;
                }
                let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
                let Some(&dst) = by_addr.get(&dst) else {
                    stats.stray.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let packet = Packet {
                    src,
                    dst,
                    bytes: buf[..n].to_vec(),
                    read: Instant::now(),
                    late: Duration::ZERO,
                };
                if tx.try_send(packet).is_err() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    drop(tx);
    let mut heap: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let next = heap.peek().map(|Reverse(e)| e.at);
        tokio::select! {
            p = rx.recv() => {
                let Some(mut p) = p else { return };
                // Shaped from when the router read it, not from when this task got to it.
                p.late = p.read.elapsed();
                if let Some(at) = shaper.uplink(p.src, p.dst, p.bytes.len(), p.read, &stats) {
                    seq += 1;
                    heap.push(Reverse(Event { at, seq, stage: Stage::Arrive, packet: p }));
                }
            }
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            } => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    let Reverse(e) = heap.pop().expect("peeked");
                    match e.stage {
                        Stage::Arrive => {
                            if let Some(at) = shaper.downlink(e.packet.dst, e.packet.bytes.len(), e.at, &stats) {
                                seq += 1;
                                heap.push(Reverse(Event { at, seq, stage: Stage::Deliver, packet: e.packet }));
                            }
                        }
                        Stage::Deliver => {
                            let dev = &devices[e.packet.dst];
                            let late = e.packet.late + Instant::now().saturating_duration_since(e.at);
                            if dev.send(&e.packet.bytes).await.is_ok() {
                                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                                stats.late.record(late);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Shaper {
    fn new(
        links: Vec<HostLink>,
        delay: Vec<Vec<Duration>>,
        jitter: Duration,
        loss: f64,
        seed: u64,
    ) -> Self {
        let now = Instant::now();
        Self {
            up_free: vec![now; links.len()],
            down_free: vec![now; links.len()],
            links,
            delay,
            jitter,
            loss,
            rng: Rng::new(seed),
            path_last: HashMap::new(),
        }
    }

    /// When a packet entering `src`'s uplink now reaches the far end, or `None` if it is
    /// dropped (full queue) or lost.
    fn uplink(
        &mut self,
        src: usize,
        dst: usize,
        len: usize,
        now: Instant,
        stats: &RouterStats,
    ) -> Option<Instant> {
        let start = self.up_free[src].max(now);
        if start.duration_since(now) > QUEUE_LIMIT {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            stats.host_drops[src].0.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let depart = start + transmission(len, self.links[src].up_bps);
        self.up_free[src] = depart;
        let wait = start.duration_since(now).as_micros() as u64;
        let up = &stats.host_uplink[src];
        up.packets.fetch_add(1, Ordering::Relaxed);
        up.bytes.fetch_add(len as u64, Ordering::Relaxed);
        up.wait_us.fetch_add(wait, Ordering::Relaxed);
        up.max_wait_us.fetch_max(wait, Ordering::Relaxed);
        if len <= SMALL_PACKET {
            up.small_packets.fetch_add(1, Ordering::Relaxed);
            up.small_bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
        if self.loss > 0.0 && self.rng.chance(self.loss) {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let jitter = self.jitter.mul_f64(self.rng.unit());
        let arrive = depart + self.delay[src][dst] + jitter;
        let last = self.path_last.entry((src, dst)).or_insert(arrive);
        let arrive = arrive.max(*last);
        *last = arrive;
        Some(arrive)
    }

    /// When a packet reaching `dst` at `at` leaves its downlink, or `None` if dropped.
    fn downlink(
        &mut self,
        dst: usize,
        len: usize,
        at: Instant,
        stats: &RouterStats,
    ) -> Option<Instant> {
        let start = self.down_free[dst].max(at);
        if start.duration_since(at) > QUEUE_LIMIT {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            stats.host_drops[dst].1.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let done = start + transmission(len, self.links[dst].down_bps);
        self.down_free[dst] = done;
        Some(done)
    }
}
