//! Scenario files: what a simulation run models, in TOML.
//!
//! Scenario files live in `simulations/scenarios/` and are shared with the emulator where the
//! two overlap. Every field has a default, so a file states only what it changes; unknown
//! fields are an error (a typo must not silently fall back to a default).

use std::path::Path;

use serde::Deserialize;

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name used in reports.
    pub name: String,
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Viewers present at once (the origin not counted).
    pub peers: usize,
    /// Simulated seconds of streaming.
    pub duration_s: f64,
    /// Seconds at the start excluded from the metrics (the initial joins).
    pub warmup_s: f64,
    /// The initial viewers join uniformly over this many seconds.
    pub join_window_s: f64,
    /// The stream.
    pub stream: Stream,
    /// The origin's upload cap, in multiples of the stream rate.
    pub origin_upload: f64,
    /// Viewer upload and download classes.
    #[serde(rename = "class")]
    pub classes: Vec<PeerClass>,
    /// Delay and loss.
    pub network: Network,
    /// Departures and arrivals during the run.
    pub churn: Churn,
    /// A mass departure at one instant (issue 7's churn test).
    pub kill: Kill,
    /// Settings of the nodes.
    pub node: NodeSettings,
    /// Policies to run side by side on the same scenario and seed.
    pub policies: Vec<String>,
}

/// The stream being broadcast.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    /// Bit rate of all tracks together, kbit/s.
    pub rate_kbps: u32,
    /// Chunk duration, ms.
    pub chunk_ms: u32,
    /// Group duration, ms.
    pub group_ms: u32,
    /// Target latency (publication to deadline), ms.
    pub target_latency_ms: u32,
    /// Video frames per second. Only the emulator's encoder uses it (the simulator's chunks
    /// have no frames); there a chunk must hold a whole number of frames (50 ms chunks need
    /// 20, 40 or 60 frames per second).
    pub fps: u32,
    /// Of `rate_kbps`, the audio's share, kbit/s: 0 for a single track (video only). Above 0
    /// the simulator publishes a second track, one audio chunk beside each video chunk, as the
    /// node carries the encoder's audio; each chunk costs its own announcements, requests and
    /// acknowledgements. The emulator's encoder always makes audio, at this rate (96 kbit/s
    /// when 0).
    pub audio_kbps: u32,
}

/// A class of viewers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerClass {
    /// Share of viewers in this class (shares are normalised).
    pub share: f64,
    /// Upload, in multiples of the stream rate.
    pub upload: f64,
    /// Download, in multiples of the stream rate.
    pub download: f64,
}

/// Deals viewers their classes in the scenario's exact shares, in random order: among any
/// `peers` viewers dealt in a row (the first `peers`, then each later deck of newcomers), a
/// class with share `s` gets `s * peers` of them, rounded by largest remainder. Drawing each
/// viewer's class independently instead made small runs another scenario: 30 viewers of the
/// `emu30` classes (a quarter each at 3x and 1.5x, half at 0.75x) drew 4 / 4 / 22, a mean
/// upload of 1.15x the stream where the scenario says 1.5x.
#[derive(Debug)]
pub struct ClassDeck {
    counts: Vec<usize>,
    deck: Vec<usize>,
}

impl ClassDeck {
    /// A deck for `classes` dealt `peers` at a time.
    pub fn new(classes: &[PeerClass], peers: usize) -> Self {
        let peers = peers.max(1);
        let total: f64 = classes.iter().map(|c| c.share).sum();
        let exact: Vec<f64> = classes
            .iter()
            .map(|c| c.share / total * peers as f64)
            .collect();
        let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
        let mut order: Vec<usize> = (0..classes.len()).collect();
        // Largest remainder first; ties to the earlier class, so the deal is reproducible.
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        let short = peers - counts.iter().sum::<usize>();
        for &i in order.iter().take(short) {
            counts[i] += 1;
        }
        Self {
            counts,
            deck: Vec::new(),
        }
    }

    /// The next viewer's class index.
    pub fn deal(&mut self, rng: &mut fjord_core::rng::Rng) -> usize {
        if self.deck.is_empty() {
            for (class, &n) in self.counts.iter().enumerate() {
                self.deck.extend(std::iter::repeat_n(class, n));
            }
            // Fisher-Yates; the deck is popped from the end.
            for i in (1..self.deck.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.deck.swap(i, j);
            }
        }
        self.deck.pop().expect("a deck of at least one viewer")
    }
}

/// Delay and loss between hosts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Mean one-way delay between two random hosts, ms (synthetic geographic model).
    pub mean_one_way_ms: f64,
    /// Access delay of each host, drawn uniformly from this range, ms.
    pub access_ms: [f64; 2],
    /// A latency matrix file (CSV of one-way delays in ms, one row per host) to use instead of
    /// the synthetic model; hosts are mapped onto its rows in turn.
    pub matrix: Option<String>,
    /// Probability that a packet is lost (1200-byte packets; QUIC recovers a loss in one RTT).
    pub loss: f64,
    /// Emulator only: random extra one-way delay of each packet, uniform in 0..jitter_ms (in
    /// order per path). The simulator's model has none.
    pub jitter_ms: f64,
}

/// Departures and arrivals.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Churn {
    /// Whether viewers leave and new ones arrive.
    pub enabled: bool,
    /// Weibull shape of session lengths (Stutzbach and Rejaie: 0.34-0.59).
    pub weibull_shape: f64,
    /// Mean session length, s.
    pub mean_session_s: f64,
    /// Share of departures that are crashes, noticed by neighbours only after
    /// `crash_detect_s`; the rest close their connections.
    pub crash_share: f64,
    /// How long neighbours take to notice a crash, s.
    pub crash_detect_s: f64,
}

/// A share of the viewers crashing at once, as the emulator's `--kill-at` does with SIGKILL:
/// none is replaced, and their neighbours notice only after `detect_s`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kill {
    /// When, seconds after the start; no kill without it.
    pub at_s: Option<f64>,
    /// Share of the initial viewers killed, the same share of each upload class.
    pub share: f64,
    /// Kill the first viewers to have joined instead of a random draw.
    pub oldest: bool,
    /// How long neighbours take to notice, s: the node's QUIC idle timeout.
    pub detect_s: f64,
}

impl Default for Kill {
    fn default() -> Self {
        Self {
            at_s: None,
            share: 0.3,
            oldest: false,
            detect_s: 2.0,
        }
    }
}

/// The viewers a kill takes: [`kill_set`]'s draw, or with `oldest` the first `share` of
/// `class_of` (the first to have joined) whatever their class. Ascending.
pub fn kill_victims(class_of: &[usize], share: f64, oldest: bool, seed: u64) -> Vec<usize> {
    if oldest {
        let n = ((class_of.len() as f64) * share).round() as usize;
        (0..n.min(class_of.len())).collect()
    } else {
        kill_set(class_of, share, seed)
    }
}

/// The viewers (indices into `class_of`, each viewer's upload class; ascending) that a kill of
/// `share` takes: the same share of each class, rounded, drawn from `seed`, so that the
/// survivors keep the scenario's mix of uploads and the run measures recovery, not a smaller
/// network. The emulator and the simulator draw the same victims for the same scenario.
pub fn kill_set(class_of: &[usize], share: f64, seed: u64) -> Vec<usize> {
    let mut rng = fjord_core::rng::Rng::new(seed ^ 0x0c1a_55e5);
    let classes = class_of.iter().copied().max().map_or(0, |c| c + 1);
    let mut victims = Vec::new();
    for c in 0..classes {
        let mut members: Vec<usize> = (0..class_of.len()).filter(|&i| class_of[i] == c).collect();
        let k = (((members.len() as f64) * share).round() as usize).min(members.len());
        // A partial Fisher-Yates shuffle: the first k after it are a uniform draw.
        for j in 0..k {
            let pick = j + rng.below((members.len() - j) as u64) as usize;
            members.swap(j, pick);
        }
        victims.extend_from_slice(&members[..k]);
    }
    victims.sort_unstable();
    victims
}

/// Node settings that scenarios may change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// Neighbours per viewer.
    pub max_neighbours: usize,
    /// Below this a viewer looks for more.
    pub min_neighbours: usize,
    /// Neighbours of the origin.
    pub origin_neighbours: usize,
    /// Wait before requesting an announced chunk, in chunk durations.
    pub repair_patience_chunks: f64,
    /// The longest such wait, ms.
    pub repair_patience_max_ms: u64,
    /// Pushes only for chunks younger than this, ms.
    pub push_horizon_ms: u64,
    /// Share of a viewer's uplink time that urgent requests may take ahead of newer chunks
    /// (0 turns urgent service off; see `fjord-core`'s scheduler).
    pub urgent_share: f64,
    /// Whether control messages take uplink time, in the nodes' scheduling and on the
    /// simulated links (`fjord-core`'s `Config::control_overhead`).
    pub charge_control: bool,
    /// Bytes each control message costs beyond its encoding (packet headers' share).
    pub control_overhead_bytes: usize,
    /// Longest an announcement waits for company to the same neighbour, ms
    /// (`fjord-core`'s `Config::announce_hold`; 0 sends each at once, as before session 17).
    pub announce_hold_ms: u64,
    /// Share of the stream rate from which a node is a spreader (`fjord-core`'s
    /// `Config::spreader_share`; 1 for the behaviour before session 17).
    pub spreader_share: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            seed: 1,
            peers: 100,
            duration_s: 120.0,
            warmup_s: 30.0,
            join_window_s: 20.0,
            stream: Stream::default(),
            origin_upload: 4.0,
            classes: vec![PeerClass {
                share: 1.0,
                upload: 1.2,
                download: 10.0,
            }],
            network: Network::default(),
            churn: Churn::default(),
            kill: Kill::default(),
            node: NodeSettings::default(),
            policies: vec!["fjord".into()],
        }
    }
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            rate_kbps: 2500,
            chunk_ms: 250,
            group_ms: 1000,
            target_latency_ms: 3000,
            fps: 30,
            audio_kbps: 0,
        }
    }
}

impl Default for Network {
    fn default() -> Self {
        Self {
            mean_one_way_ms: 50.0,
            access_ms: [2.0, 10.0],
            matrix: None,
            loss: 0.0,
            jitter_ms: 0.0,
        }
    }
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            enabled: false,
            weibull_shape: 0.5,
            mean_session_s: 300.0,
            crash_share: 0.2,
            crash_detect_s: 5.0,
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        let v = fjord_core::Config::viewer(1);
        let o = fjord_core::Config::origin(1);
        Self {
            max_neighbours: v.max_neighbours,
            min_neighbours: v.min_neighbours,
            origin_neighbours: o.max_neighbours,
            repair_patience_chunks: v.repair_patience_chunks,
            repair_patience_max_ms: v.repair_patience_max.as_millis() as u64,
            push_horizon_ms: v.push_horizon.as_millis() as u64,
            urgent_share: v.urgent_share,
            charge_control: v.control_overhead.is_some(),
            control_overhead_bytes: v
                .control_overhead
                .unwrap_or(fjord_core::node::CONTROL_OVERHEAD),
            announce_hold_ms: v.announce_hold.as_millis() as u64,
            spreader_share: v.spreader_share,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let s: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: shown,
            source,
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if self.peers == 0 {
            return bad("peers must be at least 1");
        }
        if self.duration_s <= self.warmup_s {
            return bad("duration_s must exceed warmup_s");
        }
        if self.classes.is_empty() || self.classes.iter().any(|c| c.share < 0.0 || c.upload < 0.0) {
            return bad("at least one class with non-negative share and upload is needed");
        }
        if self.classes.iter().any(|c| c.download < 1.0) {
            return bad("every class needs a download of at least the stream rate");
        }
        if self.stream.chunk_ms == 0 || self.stream.rate_kbps == 0 {
            return bad("the stream needs a positive rate and chunk duration");
        }
        if self.stream.audio_kbps >= self.stream.rate_kbps {
            return bad("stream.audio_kbps must be below rate_kbps (it is part of it)");
        }
        if !(1..=120).contains(&self.stream.fps) {
            return bad("fps must be from 1 to 120");
        }
        if u64::from(self.stream.target_latency_ms)
            >= (fjord_core::store::BEHIND - 1) * u64::from(self.stream.chunk_ms)
        {
            return bad("target_latency_ms must be under 47 chunk durations (the store window)");
        }
        if !(0.0..=100.0).contains(&self.node.repair_patience_chunks) {
            return bad("node.repair_patience_chunks must be in [0, 100]");
        }
        if !(0.0..=1.0).contains(&self.node.urgent_share) {
            return bad("node.urgent_share must be in [0, 1]");
        }
        if !(0.0..=100.0).contains(&self.node.spreader_share) {
            return bad("node.spreader_share must be in [0, 100]");
        }
        if !(0.0..0.5).contains(&self.network.loss) {
            return bad("loss must be in [0, 0.5)");
        }
        if let Some(at) = self.kill.at_s
            && !(at >= 0.0 && at < self.duration_s)
        {
            return bad("kill.at_s must be within the run");
        }
        if !(0.0..=1.0).contains(&self.kill.share) || self.kill.detect_s < 0.0 {
            return bad("kill.share must be in [0, 1] and kill.detect_s not negative");
        }
        if self.churn.enabled
            && (self.churn.weibull_shape <= 0.0 || self.churn.mean_session_s <= 0.0)
        {
            return bad("churn needs a positive Weibull shape and mean session");
        }
        for p in &self.policies {
            crate::policy_by_name(p).map_err(|e| ScenarioError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Mean viewer upload in multiples of the stream rate.
    pub fn mean_upload(&self) -> f64 {
        let total: f64 = self.classes.iter().map(|c| c.share).sum();
        self.classes.iter().map(|c| c.share * c.upload).sum::<f64>() / total
    }

    /// Resource index: (origin upload + all viewer upload) / (viewers x stream rate).
    pub fn resource_index(&self) -> f64 {
        (self.origin_upload + self.mean_upload() * self.peers as f64) / self.peers as f64
    }
}

#[cfg(test)]
mod tests {
    use super::{ClassDeck, PeerClass, Scenario, kill_set};
    use fjord_core::rng::Rng;

    fn class(share: f64, upload: f64) -> PeerClass {
        PeerClass {
            share,
            upload,
            download: 10.0,
        }
    }

    #[test]
    fn node_settings_out_of_range_are_refused() {
        let mut sc = Scenario::default();
        assert!(sc.validate().is_ok());
        sc.node.spreader_share = f64::NAN;
        let err = sc.validate().unwrap_err().to_string();
        assert!(err.contains("node.spreader_share"), "{err}");
        sc.node.spreader_share = 0.8;
        sc.node.urgent_share = 1.5;
        let err = sc.validate().unwrap_err().to_string();
        assert!(err.contains("node.urgent_share"), "{err}");
    }

    #[test]
    fn a_deck_deals_the_exact_shares_in_random_order() {
        let classes = [class(0.25, 3.0), class(0.25, 1.5), class(0.5, 0.75)];
        let mut deck = ClassDeck::new(&classes, 30);
        let mut rng = Rng::new(7);
        let first: Vec<usize> = (0..30).map(|_| deck.deal(&mut rng)).collect();
        let count = |k| first.iter().filter(|&&c| c == k).count();
        // 7.5 / 7.5 / 15: the tie of remainders goes to the first class.
        assert_eq!((count(0), count(1), count(2)), (8, 7, 15));
        let mean: f64 = first.iter().map(|&c| classes[c].upload).sum::<f64>() / 30.0;
        assert!((mean - 1.525).abs() < 1e-9, "mean upload {mean}");
        // Not dealt in class order.
        assert!(first.windows(2).any(|w| w[0] > w[1]));
        // The next deck (newcomers under churn) again has the exact shares.
        let second: Vec<usize> = (0..30).map(|_| deck.deal(&mut rng)).collect();
        assert_eq!(second.iter().filter(|&&c| c == 2).count(), 15);
    }

    #[test]
    fn a_kill_takes_the_same_share_of_each_class() {
        // emu30's deal: 8 fast, 7 medium, 15 slow, interleaved.
        let class_of: Vec<usize> = (0..30).map(|i| [2, 0, 2, 1][i % 4]).collect();
        let count = |c| class_of.iter().filter(|&&k| k == c).count();
        let (fast, medium, slow) = (count(0), count(1), count(2));
        let victims = kill_set(&class_of, 0.3, 7);
        let killed = |c| victims.iter().filter(|&&i| class_of[i] == c).count();
        assert_eq!(killed(0), (fast as f64 * 0.3).round() as usize);
        assert_eq!(killed(1), (medium as f64 * 0.3).round() as usize);
        assert_eq!(killed(2), (slow as f64 * 0.3).round() as usize);
        let mut unique = victims.clone();
        unique.dedup();
        assert_eq!(
            unique.len(),
            victims.len(),
            "a node killed twice: {victims:?}"
        );
        // Another seed draws other nodes of the same classes.
        assert_ne!(kill_set(&class_of, 0.3, 8), victims);
        assert_eq!(kill_set(&class_of, 0.3, 7), victims);
    }
}
