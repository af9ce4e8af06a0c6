//! Audience statistics for the broadcaster, without spying on viewers.
//!
//! Every node sends a small [`Report`] of aggregate figures (continuity, delay, bytes, its
//! neighbour count, whether it is reachable from outside; its addresses only if the operator
//! opted in) every [`REPORT_INTERVAL`] to its bootstrap peers, on a stream of its own
//! protocol. Reports are signed with the node's libp2p key, so a seed can pass them on to the
//! origin and the origin can still tell who sent them. Receivers (the origin and seeds) check
//! the signature, keep at most one report per node per [`MIN_INTERVAL`], bound how many nodes
//! they track, and aggregate them in an [`Audience`]: viewers over time, the share of bytes
//! that peers rather than the origin served, latency and continuity distributions, NAT
//! reachability.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

/// How often a node reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Reports of one node closer together than this are dropped.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// A node whose last report is older than this no longer counts as watching.
pub const EXPIRY: Duration = Duration::from_secs(35);
/// Nodes tracked at most.
pub const MAX_REPORTERS: usize = 50_000;
/// Largest encoded report accepted.
pub const MAX_REPORT_LEN: usize = 4096;
/// Samples of the audience over time (at [`REPORT_INTERVAL`], an hour).
const HISTORY: usize = 360;

/// What a node tells the broadcaster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The reporting node (text form of its peer id).
    pub peer: String,
    /// `viewer` or `seed`.
    pub role: String,
    /// When the report was made, µs since the Unix epoch.
    pub at_us: u64,
    /// On time / expected chunks since the node joined.
    pub continuity: Option<f64>,
    /// Median delay from publication, recent chunks, ms.
    pub delay_ms_p50: Option<f64>,
    /// 95th percentile of the same.
    pub delay_ms_p95: Option<f64>,
    /// Bytes sent to peers since the node started.
    pub bytes_up: u64,
    /// Bytes received since the node started.
    pub bytes_down: u64,
    /// Current neighbours.
    pub neighbours: u64,
    /// Whether the node is reachable from outside: `public`, `private` or `unknown`.
    pub reachability: String,
    /// Browser sessions the node serves as a gateway.
    pub browsers: u64,
    /// The node's listen addresses, only if its operator opted in.
    pub addresses: Option<Vec<String>>,
}

/// Why a report is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// Too long, or cut short.
    #[error("malformed report frame")]
    Frame,
    /// The key does not decode.
    #[error("bad public key")]
    Key,
    /// The signature does not verify, or the key is not the reporter's.
    #[error("the signature does not match the reporting node")]
    Signature,
    /// The body is not a report.
    #[error("report body: {0}")]
    Body(String),
}

/// A report with its author's public key and signature, as it travels (and is forwarded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReport {
    body: Vec<u8>,
    key: Vec<u8>,
    signature: Vec<u8>,
}

impl SignedReport {
    /// Signs `report` with the node's key.
    pub fn sign(report: &Report, keypair: &Keypair) -> Self {
        let body = serde_json::to_vec(report).expect("a report serialises");
        let signature = keypair.sign(&body).expect("ed25519 signing does not fail");
        Self {
            body,
            key: keypair.public().encode_protobuf(),
            signature,
        }
    }

    /// The frame: body, key and signature, each behind a 2-byte length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(6 + self.body.len() + self.key.len() + self.signature.len());
        for part in [&self.body, &self.key, &self.signature] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Decodes a frame (untrusted).
    pub fn decode(frame: &[u8]) -> Result<Self, ReportError> {
        if frame.len() > MAX_REPORT_LEN {
            return Err(ReportError::Frame);
        }
        let mut parts = Vec::with_capacity(3);
        let mut at = 0;
        for _ in 0..3 {
            let len = frame
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                .ok_or(ReportError::Frame)?;
            let part = frame.get(at + 2..at + 2 + len).ok_or(ReportError::Frame)?;
            parts.push(part.to_vec());
            at += 2 + len;
        }
        if at != frame.len() {
            return Err(ReportError::Frame);
        }
        let signature = parts.pop().expect("three parts");
        let key = parts.pop().expect("three parts");
        let body = parts.pop().expect("three parts");
        Ok(Self {
            body,
            key,
            signature,
        })
    }

    /// Checks the signature and that the report names the key's owner; returns the report.
    pub fn verify(&self) -> Result<(PeerId, Report), ReportError> {
        let key = PublicKey::try_decode_protobuf(&self.key).map_err(|_| ReportError::Key)?;
        if !key.verify(&self.body, &self.signature) {
            return Err(ReportError::Signature);
        }
        let report: Report =
            serde_json::from_slice(&self.body).map_err(|e| ReportError::Body(e.to_string()))?;
        let peer = key.to_peer_id();
        if report.peer != peer.to_string() {
            return Err(ReportError::Signature);
        }
        Ok((peer, report))
    }
}

/// One sample of the audience over time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// When, µs since the Unix epoch.
    pub at_us: u64,
    /// Nodes watching (reported recently).
    pub viewers: u64,
    /// Browsers watching through gateways.
    pub browsers: u64,
    /// Share of the bytes viewers received that came from peers rather than the origin.
    pub peer_share: Option<f64>,
    /// Median of the nodes' median delays, ms.
    pub delay_ms: Option<f64>,
}

/// The aggregate the origin (or a seed) serves.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AudienceStats {
    /// Now.
    pub current: Sample,
    /// The last hour, oldest first.
    pub history: Vec<Sample>,
    /// Nodes by their median delay: counts per bucket (upper bounds in ms in `delay_buckets_ms`).
    pub delay_histogram: Vec<u64>,
    /// Upper bounds of the delay buckets, ms (the last is open).
    pub delay_buckets_ms: Vec<f64>,
    /// Nodes by continuity: counts per bucket (lower bounds in `continuity_buckets`).
    pub continuity_histogram: Vec<u64>,
    /// Lower bounds of the continuity buckets.
    pub continuity_buckets: Vec<f64>,
    /// Nodes by reachability.
    pub reachability: HashMap<String, u64>,
    /// Reports refused so far (bad signature, too frequent, too many nodes).
    pub refused: u64,
    /// Addresses of the nodes that opted in to share them.
    pub addresses: HashMap<String, Vec<String>>,
}

const DELAY_BUCKETS_MS: [f64; 8] = [
    100.0,
    250.0,
    500.0,
    1000.0,
    1500.0,
    2000.0,
    3000.0,
    f64::INFINITY,
];
const CONTINUITY_BUCKETS: [f64; 6] = [0.0, 0.9, 0.95, 0.99, 0.999, 1.0];

struct Entry {
    report: Report,
    received_us: u64,
    /// Bytes received per second between this report and the one before.
    down_rate: Option<f64>,
}

/// What an origin or seed knows of its audience.
#[derive(Default)]
pub struct Audience {
    nodes: HashMap<PeerId, Entry>,
    history: VecDeque<Sample>,
    refused: u64,
    /// The origin's own upload rate, bytes per second, as last sampled.
    origin_up_rate: Option<f64>,
    last_origin_up: Option<(u64, u64)>,
}

impl std::fmt::Debug for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audience")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Audience {
    /// Takes a verified report received at `now_us`; returns false if it was refused (too
    /// soon after the node's last one, or too many nodes tracked).
    pub fn accept(&mut self, peer: PeerId, report: Report, now_us: u64) -> bool {
        let known = self.nodes.get(&peer).map(|e| e.received_us);
        if known.is_some_and(|t| now_us.saturating_sub(t) < MIN_INTERVAL.as_micros() as u64) {
            self.refused += 1;
            return false;
        }
        if known.is_none() && self.nodes.len() >= MAX_REPORTERS {
            self.expire(now_us);
            if self.nodes.len() >= MAX_REPORTERS {
                self.refused += 1;
                return false;
            }
        }
        let down_rate = self.nodes.get(&peer).and_then(|e| {
            let dt = report.at_us.saturating_sub(e.report.at_us) as f64 / 1e6;
            (dt > 0.0 && report.bytes_down >= e.report.bytes_down)
                .then(|| (report.bytes_down - e.report.bytes_down) as f64 / dt)
        });
        self.nodes.insert(
            peer,
            Entry {
                report,
                received_us: now_us,
                down_rate,
            },
        );
        true
    }

    /// Counts a report refused before it reached [`Audience::accept`] (a bad signature).
    pub fn refuse(&mut self) {
        self.refused += 1;
    }

    fn expire(&mut self, now_us: u64) {
        let expiry = EXPIRY.as_micros() as u64;
        self.nodes
            .retain(|_, e| now_us.saturating_sub(e.received_us) <= expiry);
    }

    /// Samples the audience now (call every [`REPORT_INTERVAL`]): `origin_bytes_up` is the
    /// origin's own byte counter (zero on a seed).
    pub fn sample(&mut self, now_us: u64, origin_bytes_up: u64) -> Sample {
        self.expire(now_us);
        if let Some((t, b)) = self.last_origin_up {
            let dt = now_us.saturating_sub(t) as f64 / 1e6;
            if dt > 0.0 {
                self.origin_up_rate = Some(origin_bytes_up.saturating_sub(b) as f64 / dt);
            }
        }
        self.last_origin_up = Some((now_us, origin_bytes_up));
        let down: f64 = self.nodes.values().filter_map(|e| e.down_rate).sum();
        let peer_share = match self.origin_up_rate {
            Some(up) if down > 0.0 => Some((1.0 - up / down).clamp(0.0, 1.0)),
            _ => None,
        };
        let mut delays: Vec<f64> = self
            .nodes
            .values()
            .filter_map(|e| e.report.delay_ms_p50)
            .collect();
        delays.sort_by(f64::total_cmp);
        let sample = Sample {
            at_us: now_us,
            viewers: self.nodes.len() as u64,
            browsers: self.nodes.values().map(|e| e.report.browsers).sum(),
            peer_share,
            delay_ms: delays.get(delays.len() / 2).copied(),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(sample.clone());
        sample
    }

    /// Everything, for the stats page.
    pub fn stats(&self) -> AudienceStats {
        let mut delay_histogram = vec![0; DELAY_BUCKETS_MS.len()];
        let mut continuity_histogram = vec![0; CONTINUITY_BUCKETS.len()];
        let mut reachability: HashMap<String, u64> = HashMap::new();
        let mut addresses = HashMap::new();
        for e in self.nodes.values() {
            if let Some(d) = e.report.delay_ms_p50 {
                let i = DELAY_BUCKETS_MS.iter().position(|b| d <= *b).unwrap_or(0);
                delay_histogram[i] += 1;
            }
            if let Some(c) = e.report.continuity {
                let i = CONTINUITY_BUCKETS
                    .iter()
                    .rposition(|b| c >= *b)
                    .unwrap_or(0);
                continuity_histogram[i] += 1;
            }
            *reachability
                .entry(e.report.reachability.clone())
                .or_default() += 1;
            if let Some(a) = &e.report.addresses {
                addresses.insert(e.report.peer.clone(), a.clone());
            }
        }
        AudienceStats {
            current: self.history.back().cloned().unwrap_or(Sample {
                at_us: 0,
                viewers: self.nodes.len() as u64,
                browsers: 0,
                peer_share: None,
                delay_ms: None,
            }),
            history: self.history.iter().cloned().collect(),
            delay_histogram,
            delay_buckets_ms: DELAY_BUCKETS_MS
                .iter()
                .map(|b| if b.is_finite() { *b } else { -1.0 })
                .collect(),
            continuity_histogram,
            continuity_buckets: CONTINUITY_BUCKETS.to_vec(),
            reachability,
            refused: self.refused,
            addresses,
        }
    }

    /// Every accepted report still current, to pass on (a seed forwards them to the origin).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node reports.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(k: &Keypair, at: u64, down: u64) -> Report {
        Report {
            peer: k.public().to_peer_id().to_string(),
            role: "viewer".into(),
            at_us: at,
            continuity: Some(0.995),
            delay_ms_p50: Some(300.0),
            delay_ms_p95: Some(600.0),
            bytes_up: 0,
            bytes_down: down,
            neighbours: 8,
            reachability: "private".into(),
            browsers: 1,
            addresses: None,
        }
    }

    #[test]
    fn signed_reports_round_trip_and_forgeries_fail() {
        let k = Keypair::generate_ed25519();
        let r = report(&k, 1, 2);
        let s = SignedReport::sign(&r, &k);
        let again = SignedReport::decode(&s.encode()).unwrap();
        let (peer, got) = again.verify().unwrap();
        assert_eq!((peer, got), (k.public().to_peer_id(), r.clone()));
        // Someone else's key with this report: the name does not match.
        let other = Keypair::generate_ed25519();
        assert_eq!(
            SignedReport::sign(&r, &other).verify(),
            Err(ReportError::Signature)
        );
        // A flipped byte of the body.
        let mut frame = s.encode();
        frame[10] ^= 1;
        assert!(SignedReport::decode(&frame).unwrap().verify().is_err());
        // Truncated and oversized frames.
        assert_eq!(
            SignedReport::decode(&s.encode()[..20]),
            Err(ReportError::Frame)
        );
        assert_eq!(
            SignedReport::decode(&vec![0; MAX_REPORT_LEN + 1]),
            Err(ReportError::Frame)
        );
    }

    #[test]
    fn the_audience_is_rate_limited_expires_and_aggregates() {
        let mut a = Audience::default();
        let k = Keypair::generate_ed25519();
        let p = k.public().to_peer_id();
        assert!(a.accept(p, report(&k, 0, 0), 0));
        assert!(
            !a.accept(p, report(&k, 1_000_000, 0), 1_000_000),
            "too soon"
        );
        assert!(a.accept(p, report(&k, 10_000_000, 10_000_000), 10_000_000));
        a.sample(10_000_000, 0);
        // The origin sent 2 MB/s of the 1 MB/s... per second: 10 MB in 10 s down, 2 MB up.
        let s = a.sample(20_000_000, 20_000_000);
        assert_eq!(s.viewers, 1);
        assert_eq!(s.browsers, 1);
        assert!(s.peer_share.is_some());
        let stats = a.stats();
        assert_eq!(stats.delay_histogram.iter().sum::<u64>(), 1);
        assert_eq!(
            stats.continuity_histogram[3], 1,
            "0.995 is in [0.99, 0.999)"
        );
        assert_eq!(stats.reachability.get("private"), Some(&1));
        assert_eq!(stats.refused, 1);
        // Silent for longer than the expiry: gone.
        let s = a.sample(10_000_000 + EXPIRY.as_micros() as u64 + 1, 0);
        assert_eq!(s.viewers, 0);
    }
}
