//! The node's HTTP endpoints (axum), on one local listener:
//! - `/metrics`: Prometheus text format;
//! - `/status`: the JSON [`crate::Status`] (`?since=<µs>`: delay percentiles over chunks
//!   published since then);
//! - `/live.mp4` (with `--play`): the channel as one continuous fragmented MP4, starting at the
//!   newest group, for VLC, mpv, ffplay (see [`crate::play`]);
//! - on the origin and seeds: `/stats` (the audience page) and `/stats.json` (see
//!   [`crate::report`]);
//! - with a gateway: `/gateway.json` (its port and certificate hash, see [`crate::gateway`]),
//!   and the built browser player from a folder: `/?channel=<id>` plays the channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tracing::{debug, info};

use std::path::{Component, Path, PathBuf};

use crate::NodeHandle;
use crate::gateway::Gateway;
use crate::play::{History, PlaySession};

/// Bytes queued per playback client before it counts as stalled and is dropped.
const CLIENT_QUEUE: usize = 256;
/// How long a new playback client waits for the channel's manifest.
const MANIFEST_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct App {
    node: NodeHandle,
    history: Option<Arc<History>>,
    gateway: Option<Gateway>,
    player: Option<PathBuf>,
}

/// What the HTTP listener serves besides metrics and status.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// `/live.mp4` for desktop players, from this history of the node's chunks.
    pub play: Option<Arc<History>>,
    /// The gateway whose port and certificate hash `/gateway.json` tells.
    pub gateway: Option<Gateway>,
    /// The folder of the built browser player, served at `/`.
    pub player: Option<PathBuf>,
}

/// Serves the endpoints on `addr` until the process ends; returns the bound address.
pub async fn serve(
    node: NodeHandle,
    addr: SocketAddr,
    options: HttpOptions,
) -> std::io::Result<SocketAddr> {
    let play = options.play.is_some();
    let app = App {
        node,
        history: options.play,
        gateway: options.gateway,
        player: options.player,
    };
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status));
    if play {
        router = router.route("/live.mp4", get(live));
    }
    if app.gateway.is_some() {
        router = router.route("/gateway.json", get(gateway_info));
    }
    if app.node.audience().is_some() {
        router = router
            .route("/stats", get(stats_page))
            .route("/stats.json", get(stats_json));
    }
    if app.player.is_some() {
        router = router
            .route("/", get(player_file))
            .route("/{*path}", get(player_file));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let router = router.with_state(app);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

/// The audience page of an origin or seed: charts drawn from `/stats.json`.
async fn stats_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("stats.html"),
    )
}

async fn stats_json(State(app): State<App>) -> Response {
    match app.node.audience() {
        Some(a) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(a)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn gateway_info(State(app): State<App>) -> Response {
    match &app.gateway {
        Some(g) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(g.info())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A file of the built player; `/` is its `index.html`. Only plain relative paths inside the
/// folder are served.
async fn player_file(
    State(app): State<App>,
    path: Option<axum::extract::Path<String>>,
) -> Response {
    let Some(root) = &app.player else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rel = path.map_or_else(|| "index.html".to_owned(), |p| p.0);
    let rel = Path::new(&rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = root.join(rel);
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.node.metrics().render(),
    )
}

/// `/status?since=<µs since the Unix epoch>` limits the delay percentiles to chunks
/// published since then.
#[derive(serde::Deserialize)]
struct StatusQuery {
    since: Option<u64>,
}

async fn status(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<StatusQuery>,
) -> impl IntoResponse {
    axum::Json(app.node.status_since(q.since.unwrap_or(0)))
}

async fn live(State(app): State<App>) -> Response {
    let Some(history) = app.history.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut manifests = app.node.manifest();
    let manifest =
        match tokio::time::timeout(MANIFEST_WAIT, manifests.wait_for(Option::is_some)).await {
            Ok(Ok(m)) => m.clone().expect("waited for Some"),
            _ => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the channel has not started here yet; try again shortly\n",
                )
                    .into_response();
            }
        };
    let (mut session, init) = match PlaySession::new(&manifest) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot play this channel: {e}\n"),
            )
                .into_response();
        }
    };
    // Subscribe before taking the history, so nothing falls between the two.
    let mut rx = app.node.deliveries();
    let held = history.snapshot();
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CLIENT_QUEUE);
    let epoch = manifest.content().epoch;
    tokio::spawn(async move {
        info!("playback client connected");
        let now = || crate::driver::now().as_micros();
        let mut first = vec![init];
        first.extend(session.start(&held, now()));
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        loop {
            let chunk = match rx.recv().await {
                Ok(c) => c,
                Err(RecvError::Lagged(n)) => {
                    debug!(skipped = n, "playback client fell behind");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if chunk.meta().epoch > epoch {
                // A new encoder run needs a new init segment: end this stream; players
                // reopen the URL.
                info!("new epoch; ending the playback stream");
                return;
            }
            for b in session.offer(chunk, now()) {
                // A client that does not keep up is dropped rather than buffered without end.
                if tx.try_send(Ok(b)).is_err() {
                    info!("playback client stalled or left");
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
