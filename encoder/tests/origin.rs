//! The encoder publishing into the mesh through its embedded origin; a viewer node receives
//! the channel and serves it with `--play`; the Debian `ffmpeg` command, a player no one here
//! wrote, opens that URL and decodes audio and video frames.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fjord_node::NodeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_player_decodes_the_play_url() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("channel.key");
    let out = Command::new(env!("CARGO_BIN_EXE_fjord-encoder"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let channel: fjord_node::core::wire::ChannelId = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut encoder = Command::new(env!("CARGO_BIN_EXE_fjord-encoder"))
        .args(["run", "--size", "320x180", "--preset", "ultrafast"])
        .args(["--video-bitrate", "600k", "--no-mdns"])
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(encoder.stdout.take().unwrap()).lines();
    let origin = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("origin: ").map(str::to_owned))
        .expect("the encoder prints the origin's address");
    std::thread::spawn(move || for _ in lines {});

    let mut config = NodeConfig::viewer(channel, 5_000_000);
    config.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    config.bootstrap = vec![origin.parse().unwrap()];
    config.mesh.mdns = false;
    let node = fjord_node::start(config).await.unwrap();
    let options = fjord_node::http::HttpOptions {
        play: Some(fjord_node::play::keep_history(&node)),
        ..Default::default()
    };
    let http = fjord_node::http::serve(node.clone(), "127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status().counters.chunks_received < 10 {
        assert!(Instant::now() < deadline, "the viewer receives the channel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("http://{http}/live.mp4");
    let frames = 90;
    let player = tokio::task::spawn_blocking(move || {
        Command::new("ffmpeg")
            .args(["-v", "error", "-i", &url, "-frames:v", &frames.to_string()])
            .args(["-f", "framemd5", "-"])
            .output()
            .expect("the ffmpeg command (make test installs it)")
    });
    let out = tokio::time::timeout(Duration::from_secs(30), player)
        .await
        .expect("ffmpeg decodes within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let video = text.lines().filter(|l| l.starts_with("0,")).count();
    let audio = text.lines().filter(|l| l.starts_with("1,")).count();
    eprintln!(
        "ffmpeg decoded {video} video and {audio} audio frames; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ffmpeg failed");
    assert_eq!(video, frames, "video frames decoded from the play URL");
    assert!(audio > 100, "audio frames decoded too");

    node.shutdown().await;
    let _ = Command::new("kill")
        .args(["-INT", &encoder.id().to_string()])
        .status();
    let status = encoder.wait().unwrap();
    assert!(status.success(), "the encoder stops cleanly on Ctrl-C");
}
