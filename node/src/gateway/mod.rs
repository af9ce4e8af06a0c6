//! The WebTransport gateway: any node can serve the channel to browsers, which cannot join a
//! libp2p QUIC mesh themselves.
//!
//! Browsers connect to `https://<gateway>/fjord` with the certificate hash the node's HTTP
//! endpoint serves (`/gateway.json`, see [`crate::http`]). Each session is a leaf of the
//! mesh: the gateway sends the signed manifest, then signed chunks, each on its own
//! unidirectional stream (so a late chunk never holds up the next one), untouched: the page
//! verifies every signature itself. What a session gets is decided by [`SessionQueue`]: start
//! at the newest group, the deadline rule of the mesh, a bounded queue, and a skip to the next
//! group when the browser falls behind. Sessions beyond [`GatewayConfig::max_sessions`] are
//! refused with HTTP 503, which the player reports.

pub mod cert;
pub mod queue;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fjord_core::wire::{Chunk, Manifest, TrackKind};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

pub use cert::Certificate;
pub use queue::SessionQueue;

use crate::NodeHandle;
use crate::play::History;

/// Chunk streams a session may have open at once.
const STREAMS_IN_FLIGHT: usize = 8;

/// How to run the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// UDP address for WebTransport.
    pub addr: SocketAddr,
    /// A certificate chain and key (PEM) to use instead of a self-signed one.
    pub pem: Option<(PathBuf, PathBuf)>,
    /// Names (host names, IP addresses) the self-signed certificate is for.
    pub names: Vec<String>,
    /// Browser sessions at most.
    pub max_sessions: usize,
    /// Chunks queued per session at most before it skips to the next group.
    pub queue_limit: usize,
    /// Test aid: corrupt one byte of every n-th chunk sent, to show that players reject it.
    pub tamper_every: Option<u64>,
}

impl GatewayConfig {
    /// A gateway on `addr` with a self-signed certificate for loopback names.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            pem: None,
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_sessions: 100,
            queue_limit: 64,
            tamper_every: None,
        }
    }
}

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No usable certificate.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// The UDP address cannot be used.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a player needs to connect, as served at `/gateway.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GatewayInfo {
    /// The UDP port of the WebTransport endpoint (on the same host as the page).
    pub port: u16,
    /// SHA-256 of the current certificate, lowercase hex.
    pub sha256: String,
    /// When it expires, µs since the Unix epoch (`None`: a certificate from files).
    pub not_after_us: Option<u64>,
    /// Sessions now.
    pub sessions: usize,
    /// Sessions at most.
    pub max_sessions: usize,
}

/// A running gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    info: watch::Receiver<GatewayInfo>,
    sessions: Arc<AtomicUsize>,
    /// Chunks sent to browsers.
    pub chunks_sent: Arc<AtomicU64>,
    addr: SocketAddr,
}

impl Gateway {
    /// What a player needs to connect.
    pub fn info(&self) -> GatewayInfo {
        let mut i = self.info.borrow().clone();
        i.sessions = self.sessions.load(Ordering::Relaxed);
        i
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts the gateway for `node`, with `history` (the node's recent chunks) for new sessions
/// to start from.
pub async fn start(
    node: NodeHandle,
    history: Arc<History>,
    config: GatewayConfig,
) -> Result<Gateway, GatewayError> {
    let now = crate::driver::now().as_micros();
    let certificate = match &config.pem {
        Some((chain, key)) => Certificate::from_pem(chain, key)?,
        None => Certificate::self_signed(&config.names, now)?,
    };
    let endpoint =
        quinn::Endpoint::server(certificate.server_config()?, config.addr).map_err(|source| {
            GatewayError::Listen {
                addr: config.addr,
                source,
            }
        })?;
    let addr = endpoint
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: config.addr,
            source,
        })?;
    let (info_tx, info) = watch::channel(GatewayInfo {
        port: addr.port(),
        sha256: certificate.sha256_hex(),
        not_after_us: certificate.not_after_us,
        sessions: 0,
        max_sessions: config.max_sessions,
    });
    info!(%addr, sha256 = %certificate.sha256_hex(), "gateway listening");
    if config.pem.is_none() {
        tokio::spawn(renew(
            endpoint.clone(),
            info_tx,
            config.names.clone(),
            certificate,
        ));
    }
    let sessions = Arc::new(AtomicUsize::new(0));
    let chunks_sent = Arc::new(AtomicU64::new(0));
    let mut server = web_transport_quinn::Server::new(endpoint);
    {
        let sessions = sessions.clone();
        let chunks_sent = chunks_sent.clone();
        tokio::spawn(async move {
            while let Some(request) = server.accept().await {
                if request.connect().url.path() != "/fjord" {
                    let _ = request.reject(axum::http::StatusCode::NOT_FOUND).await;
                    continue;
                }
                if sessions.load(Ordering::Relaxed) >= config.max_sessions {
                    warn!(
                        max = config.max_sessions,
                        "gateway full; refusing a browser"
                    );
                    // Keep the connection a moment, so the 503 reaches the browser before
                    // QUIC closes.
                    let conn = request.conn().clone();
                    tokio::spawn(async move {
                        let _ = request
                            .reject(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                            .await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        conn.close(0u32.into(), b"gateway full");
                    });
                    continue;
                }
                let Ok(session) = request.ok().await else {
                    continue;
                };
                sessions.fetch_add(1, Ordering::Relaxed);
                node.metrics().browsers.inc();
                let (node, history, sessions, sent) = (
                    node.clone(),
                    history.clone(),
                    sessions.clone(),
                    chunks_sent.clone(),
                );
                let (limit, tamper) = (config.queue_limit, config.tamper_every);
                tokio::spawn(async move {
                    let remote = session.remote_address();
                    info!(%remote, "browser session opened");
                    let metrics = node.metrics().clone();
                    let reason = serve(session, node, history, limit, tamper, sent).await;
                    info!(%remote, %reason, "browser session closed");
                    sessions.fetch_sub(1, Ordering::Relaxed);
                    metrics.browsers.dec();
                });
            }
        });
    }
    Ok(Gateway {
        info,
        sessions,
        chunks_sent,
        addr,
    })
}

/// Replaces the self-signed certificate before it expires and publishes the new hash.
async fn renew(
    endpoint: quinn::Endpoint,
    info: watch::Sender<GatewayInfo>,
    names: Vec<String>,
    mut current: Certificate,
) {
    loop {
        let now = crate::driver::now().as_micros();
        let renew_at = current
            .not_after_us
            .unwrap_or(u64::MAX)
            .saturating_sub(cert::RENEW_BEFORE.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(renew_at.saturating_sub(now))).await;
        let now = crate::driver::now().as_micros();
        match Certificate::self_signed(&names, now).and_then(|c| Ok((c.server_config()?, c))) {
            Ok((config, next)) => {
                endpoint.set_server_config(Some(config));
                info.send_modify(|i| {
                    i.sha256 = next.sha256_hex();
                    i.not_after_us = next.not_after_us;
                });
                info!(sha256 = %next.sha256_hex(), "gateway certificate renewed");
                current = next;
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the gateway certificate; trying again in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// Sends one message on its own unidirectional stream.
async fn send_message(session: &web_transport_quinn::Session, bytes: Bytes) -> Result<(), String> {
    let mut stream = session.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_chunk(bytes).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())
}

fn tampered(chunk: &Chunk) -> Bytes {
    let mut bytes = chunk.encoded().to_vec();
    // A byte in the middle of the payload: the signature no longer verifies.
    let at = fjord_core::wire::CHUNK_HEADER_LEN + (bytes.len() - 64 - 78) / 2;
    bytes[at] ^= 0x5a;
    Bytes::from(bytes)
}

/// Serves one browser session until it ends; returns why it ended.
async fn serve(
    session: web_transport_quinn::Session,
    node: NodeHandle,
    history: Arc<History>,
    limit: usize,
    tamper_every: Option<u64>,
    sent: Arc<AtomicU64>,
) -> String {
    let mut manifests = node.manifest();
    let manifest: Manifest =
        match tokio::time::timeout(Duration::from_secs(15), manifests.wait_for(Option::is_some))
            .await
        {
            Ok(Ok(m)) => m.clone().expect("waited for Some"),
            _ => {
                session.close(1, b"the channel has not started here yet");
                return "no manifest".into();
            }
        };
    // Subscribe before taking the history, so nothing falls between the two.
    let mut rx = node.deliveries();
    let mut queue = new_queue(&manifest, limit);
    if let Err(e) = send_message(&session, manifest.encoded().clone()).await {
        return e;
    }
    let now = || crate::driver::now().as_micros();
    queue.start(&history.snapshot(), now());
    let streams = Arc::new(Semaphore::new(STREAMS_IN_FLIGHT));
    let mut count = 0u64;
    let mut epoch = manifest.content().epoch;
    loop {
        let ready = !queue.is_empty();
        tokio::select! {
            e = session.closed() => return e.to_string(),
            r = rx.recv() => match r {
                Ok(chunk) => {
                    if chunk.meta().epoch > epoch {
                        // A new encoder run: its manifest first, then its chunks.
                        let current = node.manifest().borrow().clone();
                        if let Some(m) = current
                            && m.content().epoch == chunk.meta().epoch
                        {
                            epoch = m.content().epoch;
                            queue = new_queue(&m, limit);
                            if let Err(e) = send_message(&session, m.encoded().clone()).await {
                                return e;
                            }
                        }
                    }
                    queue.offer(chunk, now());
                }
                Err(RecvError::Lagged(n)) => debug!(skipped = n, "gateway session lagged"),
                Err(RecvError::Closed) => return "node stopped".into(),
            },
            permit = streams.clone().acquire_owned(), if ready => {
                let Ok(permit) = permit else { return "closing".into() };
                let Some(chunk) = queue.pop(now()) else { continue };
                count += 1;
                let bytes = match tamper_every {
                    Some(n) if n > 0 && count.is_multiple_of(n) => tampered(&chunk),
                    _ => chunk.encoded().clone(),
                };
                let session = session.clone();
                let sent = sent.clone();
                tokio::spawn(async move {
                    if send_message(&session, bytes).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                });
            }
        }
    }
}

fn new_queue(manifest: &Manifest, limit: usize) -> SessionQueue {
    let c = manifest.content();
    let video = c
        .tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .or(c.tracks.first())
        .map_or(0, |t| t.id);
    SessionQueue::new(c.epoch, video, u64::from(c.target_latency_us), limit)
}
