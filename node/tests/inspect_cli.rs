//! `fjord-node inspect` on files, as an operator runs it.

use std::process::Command;

use fjord_core::wire::{ChannelKey, ChunkFlags, ChunkMeta};

#[test]
fn inspect_accepts_authentic_files_and_fails_on_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let key = ChannelKey::from_seed(&[8; 32]);
    let meta = ChunkMeta {
        epoch: 1,
        track: 0,
        sequence: 3,
        flags: ChunkFlags::empty(),
        timestamp: 0,
        duration: 1,
        published_at_us: 0,
    };
    let bytes = key
        .sign_chunk(&meta, b"payload")
        .unwrap()
        .encoded()
        .to_vec();
    let good = dir.path().join("good.chunk");
    std::fs::write(&good, &bytes).unwrap();
    let mut tampered = bytes.clone();
    tampered[80] ^= 1;
    let bad = dir.path().join("bad.chunk");
    std::fs::write(&bad, &tampered).unwrap();

    let channel = key.channel_id().to_string();
    let run = |files: &[&std::path::Path]| {
        Command::new(env!("CARGO_BIN_EXE_fjord-node"))
            .args(["inspect", "--channel", &channel])
            .args(files)
            .output()
            .unwrap()
    };

    let ok = run(&[&good]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("sequence 3"));

    let mixed = run(&[&good, &bad]);
    assert!(!mixed.status.success());
    let err = String::from_utf8_lossy(&mixed.stderr);
    assert!(err.contains("signature does not verify"), "{err}");
    assert!(err.contains("1 of 2 files failed"), "{err}");
}
