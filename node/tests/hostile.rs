//! A hostile peer: forged and malformed chunks sent straight to a node's streams are neither
//! stored nor forwarded, and the sender is disconnected and kept out.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Origin, Viewer, wait_until};
use fjord_node::core::proto::{Control, Frame, Hello, PROTOCOL_VERSION, Role};
use fjord_node::core::wire::{ChannelKey, ChunkFlags, ChunkMeta};
use fjord_node::framing;
use fjord_node::mesh::{self, MeshConfig, Protocols};
use futures::StreamExt;
use libp2p::Multiaddr;
use tokio::sync::mpsc;

const FORGED_SEQ: u64 = 1_000_000;

/// An attacker: a libp2p node of its own that speaks Fjord's stream protocols. Returns a
/// receiver that fires when the target closes the connection.
async fn attack(
    target: &Viewer,
    channel: &str,
    payload: impl FnOnce(&mut Vec<(bool, Bytes)>),
) -> mpsc::Receiver<()> {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let config = MeshConfig {
        mdns: false,
        ..MeshConfig::default()
    };
    let swarm = mesh::build(keypair, &config).unwrap();
    let addr: Multiaddr = target.listen.parse().unwrap();
    let peer = mesh::peer_of(&addr).unwrap();
    let mut control = swarm.behaviour().streams.new_control();
    let protocols = Protocols::for_channel(channel);
    // Take the target's streams to us (a neighbour must), and ignore what comes on them.
    for p in [protocols.control.clone(), protocols.data.clone()] {
        let mut incoming = control.accept(p).unwrap();
        tokio::spawn(async move {
            while let Some((_, mut s)) = incoming.next().await {
                tokio::spawn(async move {
                    let mut sink = futures::io::sink();
                    let _ = futures::io::copy(&mut s, &mut sink).await;
                });
            }
        });
    }
    let closed = common::connect(swarm, addr).await;
    let mut ctl = within(
        "the control stream",
        control.open_stream(peer, protocols.control.clone()),
    )
    .await
    .unwrap();
    let mut data = within("the data stream", control.open_stream(peer, protocols.data))
        .await
        .unwrap();
    let preamble = framing::Preamble { nonce: 1, echo: 0 };
    within("the control preamble", preamble.write(&mut ctl))
        .await
        .unwrap();
    within("the data preamble", preamble.write(&mut data))
        .await
        .unwrap();
    let hello = Frame::Control(Control::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Viewer,
        upload_bps: 10_000_000,
    }))
    .encode();
    within("the hello", framing::write_frame(&mut ctl, &hello))
        .await
        .unwrap();
    let mut frames = Vec::new();
    payload(&mut frames);
    for (on_data, bytes) in frames {
        let stream = if on_data { &mut data } else { &mut ctl };
        // The target may hang up half-way through: that is the point.
        let sent = tokio::time::timeout(STEP_TIMEOUT, async {
            futures::AsyncWriteExt::write_all(stream, &bytes).await?;
            futures::AsyncWriteExt::flush(stream).await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    // Keep the streams open until the target closes the connection.
    std::mem::forget((ctl, data));
    closed
}

/// How long one step of the attack may take before the test fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `step`, panicking with its name when it takes longer than [`STEP_TIMEOUT`].
async fn within<T>(step: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{step} took longer than {STEP_TIMEOUT:?}"))
}

fn framed(kind_and_body: &[u8]) -> Bytes {
    let mut out = (kind_and_body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind_and_body);
    Bytes::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_chunks_are_dropped_and_the_sender_banned() {
    let origin = Origin::start(21).await;
    let channel = origin.channel();
    let boot = origin.bootstrap();
    let target = Viewer::start(&channel, &boot, &[]);
    let other = Viewer::start(&channel, &boot, &[]);
    wait_until(Duration::from_secs(30), "both viewers receiving", || {
        [&target, &other]
            .iter()
            .all(|v| v.status().is_some_and(|s| s.counters.chunks_received > 10))
    })
    .await;
    let epoch = origin.epoch;

    // 1. A chunk that claims the channel and an existing epoch, signed by another key.
    let impostor = ChannelKey::from_seed(&[99; 32]);
    let meta = ChunkMeta {
        epoch,
        track: 0,
        sequence: FORGED_SEQ,
        flags: ChunkFlags::GROUP_START | ChunkFlags::INDEPENDENT,
        timestamp: 0,
        duration: 18_000,
        published_at_us: fjord_node::driver::now().as_micros(),
    };
    let mut forged = impostor
        .sign_chunk(&meta, &[7u8; 30_000])
        .unwrap()
        .encoded()
        .to_vec();
    forged[4..36].copy_from_slice(origin.key.channel_id().as_bytes());
    let mut closed = attack(&target, &channel, |frames| {
        let mut f = vec![0x11];
        f.extend_from_slice(&forged);
        frames.push((true, framed(&f)));
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the target disconnects the forger");

    // 2. Malformed input from a second identity: a frame of an unknown kind.
    let mut closed = attack(&target, &channel, |frames| {
        frames.push((false, framed(&[0x7f, 1, 2, 3])));
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the target disconnects the sender of garbage");

    // 3. A length prefix beyond any frame, on the data stream, from a third.
    let mut closed = attack(&target, &channel, |frames| {
        frames.push((true, Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])));
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the target disconnects the sender of a huge length");

    // The target counted and banned all three; the stream goes on; nobody holds the forgery.
    wait_until(Duration::from_secs(10), "the rejections counted", || {
        target
            .status()
            .is_some_and(|s| s.counters.chunks_rejected >= 3 && s.counters.banned >= 3)
    })
    .await;
    let before = target.status().unwrap().counters.chunks_received;
    wait_until(Duration::from_secs(10), "the stream going on", || {
        target
            .status()
            .is_some_and(|s| s.counters.chunks_received > before + 10)
    })
    .await;
    for v in [&target, &other] {
        let s = v.status().unwrap();
        for t in &s.counters.tracks {
            assert!(t.highest < FORGED_SEQ, "the forged chunk was stored: {t:?}");
        }
    }
    assert_eq!(other.status().unwrap().counters.chunks_rejected, 0);
}
