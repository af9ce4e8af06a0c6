//! The `fjord-encoder` command line as an operator uses it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn encoder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fjord-encoder"))
}

#[test]
fn keygen_prints_the_id_refuses_to_overwrite_and_id_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("channel.key");

    let out = encoder()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 52, "{id}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();

    let again = encoder()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let read = encoder().arg("id").arg(&key).output().unwrap();
    assert!(read.status.success());
    assert_eq!(String::from_utf8(read.stdout).unwrap().trim(), id);
}

#[test]
fn id_of_a_missing_file_fails_clearly() {
    let out = encoder()
        .args(["id", "/nonexistent/channel.key"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the channel key"), "{err}");
}
