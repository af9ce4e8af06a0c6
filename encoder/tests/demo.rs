//! `fjord-encoder demo`: everything starts, the status line reports the relays receiving the
//! channel, and Ctrl-C stops every process it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_and_stops_cleanly_on_ctrl_c() {
    let exe = env!("CARGO_BIN_EXE_fjord-encoder");
    let node = std::path::Path::new(exe).with_file_name("fjord-node");
    assert!(
        node.exists(),
        "{} is built with the workspace (cargo test --workspace, make test)",
        node.display()
    );
    let player = tempfile::tempdir().unwrap();
    std::fs::write(player.path().join("index.html"), "<!doctype html>").unwrap();
    let mut demo = Command::new(exe)
        .args(["demo", "--size", "320x180", "--page", "127.0.0.1:0"])
        .args([
            "--gateway",
            "127.0.0.1:0",
            "--play",
            "127.0.0.1:0",
            "--player",
        ])
        .arg(player.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut channel_id = None;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no healthy status line in 60 s: {seen:?}"));
        if let Some(rest) = line.strip_prefix("Fjord demo: channel ") {
            channel_id = Some(rest.trim().to_owned());
        }
        let healthy = line.contains("viewers: 3 nodes") && line.contains("continuity: 100.00%");
        seen.push(line);
        if healthy {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("browser:") && l.contains("/?channel="))
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("desktop player:") && l.contains("/live.mp4"))
    );
    let channel_id = channel_id.expect("the demo names its channel");
    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = demo.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "the demo exits cleanly: {code}");
    // None of its relay processes is left.
    let left = Command::new("pgrep")
        .args(["-f", &channel_id])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
