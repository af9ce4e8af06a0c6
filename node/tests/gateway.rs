//! The gateway seen by a WebTransport client written against `web-transport-quinn`'s client:
//! the certificate hash from `/gateway.json` authenticates the gateway, the session starts
//! with the signed manifest and goes on with signed chunks from a group start, and a session
//! beyond the limit is refused.

mod common;

use std::time::Duration;

use common::{Origin, http_get, wait_until};
use fjord_node::core::wire::{ChunkFlags, UnverifiedChunk, UnverifiedManifest};
use fjord_node::gateway::{GatewayConfig, GatewayInfo};
use fjord_node::http::HttpOptions;
use fjord_node::{NodeConfig, play};

async fn client(info: &GatewayInfo) -> Result<web_transport_quinn::Session, String> {
    let hash: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&info.sha256[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hash])
        .map_err(|e| e.to_string())?;
    let url: url::Url = format!("https://127.0.0.1:{}/fjord", info.port)
        .parse()
        .unwrap();
    client.connect(url).await.map_err(|e| e.to_string())
}

async fn next_message(session: &web_transport_quinn::Session) -> Vec<u8> {
    let mut stream = tokio::time::timeout(Duration::from_secs(10), session.accept_uni())
        .await
        .expect("a message within 10 s")
        .unwrap();
    stream.read_to_end(8 << 20).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_signed_media_from_a_group_start_and_the_limit_is_enforced() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let origin = Origin::start(31).await;
    let mut config = NodeConfig::viewer(origin.key.channel_id(), 5_000_000);
    config.listen = vec![common::loopback()];
    config.bootstrap = vec![origin.bootstrap().parse().unwrap()];
    config.mesh.mdns = false;
    let node = fjord_node::start(config).await.unwrap();
    let history = play::keep_history(&node);
    let mut g = GatewayConfig::new("127.0.0.1:0".parse().unwrap());
    g.max_sessions = 1;
    let gateway = fjord_node::gateway::start(node.clone(), history, g)
        .await
        .unwrap();
    let options = HttpOptions {
        gateway: Some(gateway.clone()),
        ..Default::default()
    };
    let http = fjord_node::http::serve(node.clone(), "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the node receiving", || {
        node.status().counters.chunks_received > 20
    })
    .await;
    let info: GatewayInfo =
        serde_json::from_str(&http_get(&format!("http://{http}/gateway.json")).unwrap()).unwrap();
    assert_eq!(info.port, gateway.local_addr().port());
    assert!(
        info.not_after_us.unwrap() - fjord_node::driver::now().as_micros()
            <= 14 * 86_400 * 1_000_000
    );

    let session = client(&info).await.expect("the first browser is let in");
    let channel = origin.key.channel_id();
    let manifest = UnverifiedManifest::decode(next_message(&session).await.into())
        .unwrap()
        .verify(&channel)
        .expect("the manifest comes first and is authentic");
    let epoch = manifest.content().epoch;
    let mut chunks = Vec::new();
    for _ in 0..12 {
        let c = UnverifiedChunk::decode(next_message(&session).await.into())
            .unwrap()
            .verify(&channel)
            .expect("every chunk is authentic");
        assert_eq!(c.meta().epoch, epoch);
        chunks.push(c);
    }
    let first = chunks.iter().map(|c| c.meta().sequence).min().unwrap();
    let start = chunks
        .iter()
        .find(|c| c.meta().sequence == first && c.meta().track == 0)
        .expect("video of the first sequence");
    assert!(
        start.meta().flags.contains(ChunkFlags::GROUP_START),
        "the session starts at a group start"
    );

    // A second browser beyond the limit of one is refused.
    let second = client(&info).await;
    let refused = match second {
        Err(e) => e,
        Ok(s) => {
            // Some clients learn of the refusal only on first use.
            tokio::time::timeout(Duration::from_secs(5), s.accept_uni())
                .await
                .map(|r| r.err().map(|e| e.to_string()).unwrap_or_default())
                .unwrap_or_else(|_| "no stream".into())
        }
    };
    assert!(
        refused.contains("503"),
        "the second session is refused with 503: {refused}"
    );
    eprintln!("second session refused: {refused}");
    assert_eq!(gateway.info().sessions, 1);
    drop(session);
}
