//! The emulator's small scenario, as the test suite runs it: the origin and 8 real nodes in
//! network namespaces over the emulated WAN (rates, 20-80 ms delays, jitter, 1% loss), for a
//! minute. Needs root, like the emulator (the test suite runs as root).

use std::process::Command;

#[test]
fn eight_real_nodes_over_an_emulated_wan_keep_continuity() {
    let sim = env!("CARGO_BIN_EXE_fjord-sim");
    let bin_dir = std::path::Path::new(sim).parent().unwrap();
    for b in ["fjord-node", "fjord-encoder"] {
        assert!(
            bin_dir.join(b).exists(),
            "{b} is built with the workspace (cargo test --workspace, make test)"
        );
    }
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/emu8.toml");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(sim)
        .args(["emulate", scenario, "--min-continuity", "0.99", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}\n{stdout}");
    assert!(
        run.status.success(),
        "the emulated run fell short: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert!(report["continuity"].as_f64().unwrap() >= 0.99);
    // Join time is measured from each node's own start, within its start-up from the spawn.
    let join = report["join_ms"].as_array().unwrap();
    let startup = report["startup_ms"].as_array().unwrap();
    for (j, s) in join.iter().zip(startup) {
        let (j, s) = (j.as_f64().unwrap(), s.as_f64().unwrap());
        assert!(j > 0.0 && j <= s, "join {j} ms against start-up {s} ms");
    }
    // The machine's CPU over the run: it shares the cores with every node.
    let cpu = report["cpu"]
        .as_array()
        .expect("CPU shares from /proc/stat");
    let (busy, stolen) = (cpu[0].as_f64().unwrap(), cpu[1].as_f64().unwrap());
    assert!(busy > 0.0 && busy <= 1.0 && (0.0..=1.0).contains(&stolen) && busy + stolen <= 1.0);
    assert!(
        report["predicted"].is_array(),
        "the simulator's prediction is beside it"
    );
    // Nothing of the run is left behind.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("fjemu-"),
        "namespaces left behind"
    );
}

/// The encoder rounds a chunk to whole frames while the report reckons deadlines from the
/// scenario's chunk duration, so the emulator refuses a scenario where they would differ
/// (250 ms at the default 30 frames per second is 7.5 frames) before it starts anything, and
/// an out-of-range frame rate is refused when the scenario is read.
#[test]
fn a_chunk_of_part_frames_is_refused_before_anything_starts() {
    let sim = env!("CARGO_BIN_EXE_fjord-sim");
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/emu8.toml"))
        .unwrap();
    let emulate = |text: String| {
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(sim)
            .args(["emulate"])
            .arg(&path)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the emulator ran a scenario it must refuse"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = emulate(base.replace("chunk_ms = 200", "chunk_ms = 250"));
    assert!(
        err.contains("not a whole number of frames at 30 fps"),
        "{err}"
    );
    let short = base
        .replace("chunk_ms = 200", "chunk_ms = 50\nfps = 50")
        .replace("target_latency_ms = 3000", "target_latency_ms = 2000");
    let err = emulate(short);
    assert!(
        err.contains("not a whole number of frames at 50 fps"),
        "{err}"
    );
    let err = emulate(base.replace("chunk_ms = 200", "chunk_ms = 200\nfps = 0"));
    assert!(err.contains("fps must be from 1 to 120"), "{err}");
}
