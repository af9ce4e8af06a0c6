//! Audience statistics: viewers report to the origin, directly or through a seed that passes
//! their signed reports on; the origin aggregates them; a forged report is refused.

mod common;

use std::time::Duration;

use common::{Origin, Viewer, wait_until};
use fjord_node::mesh::{self, MeshConfig, Protocols};
use fjord_node::report::{Report, SignedReport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_sees_every_viewer_and_refuses_forged_reports() {
    let origin = Origin::start(41).await;
    let channel = origin.channel();
    let boot = origin.bootstrap();
    let direct = [
        Viewer::start(&channel, &boot, &[]),
        Viewer::start(&channel, &boot, &[]),
    ];
    let seed = Viewer::start_as("seed", &channel, &boot, &[]);
    let behind_seed = Viewer::start(&channel, &seed.listen, &["--static"]);
    let expected = direct.len() + 2;
    wait_until(
        Duration::from_secs(60),
        "every node in the origin's audience",
        || {
            origin
                .node
                .audience()
                .is_some_and(|a| a.current.viewers as usize == expected)
        },
    )
    .await;
    let stats = origin.node.audience().unwrap();
    assert!(stats.reachability.values().sum::<u64>() as usize == expected);
    assert!(stats.addresses.is_empty(), "no addresses unless opted in");
    assert!(stats.continuity_histogram.iter().sum::<u64>() as usize == expected);
    let text = origin.node.metrics().render();
    assert!(
        text.contains(&format!("fjord_audience_viewers {expected}")),
        "{text}"
    );

    // A report signed by one key that claims to come from another node.
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let swarm = mesh::build(
        keypair.clone(),
        &MeshConfig {
            mdns: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut control = swarm.behaviour().streams.new_control();
    let addr: libp2p::Multiaddr = boot.parse().unwrap();
    let origin_peer = mesh::peer_of(&addr).unwrap();
    let _closed = common::connect(swarm, addr).await;
    let impostor = libp2p::identity::Keypair::generate_ed25519();
    let forged = Report {
        peer: behind_seed.peer_id.clone(),
        role: "viewer".into(),
        at_us: 0,
        continuity: Some(0.1),
        delay_ms_p50: None,
        delay_ms_p95: None,
        bytes_up: 0,
        bytes_down: 0,
        neighbours: 0,
        reachability: "public".into(),
        browsers: 0,
        addresses: None,
    };
    let refused_before = origin.node.audience().unwrap().refused;
    let open = control.open_stream(origin_peer, Protocols::for_channel(&channel).report);
    let mut s = tokio::time::timeout(Duration::from_secs(10), open)
        .await
        .expect("a report stream within 10 s")
        .unwrap();
    futures::AsyncWriteExt::write_all(&mut s, &SignedReport::sign(&forged, &impostor).encode())
        .await
        .unwrap();
    futures::AsyncWriteExt::close(&mut s).await.unwrap();
    wait_until(Duration::from_secs(10), "the forged report refused", || {
        origin.node.audience().unwrap().refused > refused_before
    })
    .await;
    let stats = origin.node.audience().unwrap();
    assert!(
        stats.continuity_histogram[0] == 0,
        "the forged continuity of 10% was not counted: {stats:?}"
    );
}
