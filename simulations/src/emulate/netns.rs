//! Network namespaces for the emulator's hosts, through the `ip` command of iproute2.
//!
//! Everything the emulator creates is named with [`PREFIX`], so that it can find and remove
//! what a crashed earlier run left behind, and never touches anything else.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Prefix of every namespace (and TUN device) the emulator creates.
pub const PREFIX: &str = "fjemu";

/// Runs `ip` with `args`, failing with its error output.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process runs as root (namespaces and TUN devices need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The name of host `index`'s namespace.
pub fn name(index: usize) -> String {
    format!("{PREFIX}-{index}")
}

/// Namespaces of the emulator that exist now (from this run or an earlier one).
pub fn existing() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("cannot run `ip netns list`")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
        .map(str::to_owned)
        .collect())
}

/// Kills every process in the emulator's namespaces and deletes them.
pub fn remove_all() -> Result<usize> {
    let names = existing()?;
    for n in &names {
        let out = Command::new("ip").args(["netns", "pids", n]).output();
        if let Ok(out) = out {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // A namespace whose processes just died may still be busy for a moment.
        let mut tries = 0;
        while ip(&["netns", "delete", n]).is_err() && tries < 20 {
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(names.len())
}

/// Creates host `index`'s namespace with loopback up.
pub fn create(index: usize) -> Result<String> {
    let n = name(index);
    ip(&["netns", "add", &n])?;
    ip(&["-n", &n, "link", "set", "lo", "up"])?;
    Ok(n)
}

/// Moves the TUN device `dev` into namespace `ns`, gives it `addr/16` and brings it up.
pub fn attach(dev: &str, ns: &str, addr: std::net::Ipv4Addr) -> Result<()> {
    ip(&["link", "set", dev, "netns", ns])?;
    ip(&["-n", ns, "addr", "add", &format!("{addr}/16"), "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

/// The lock file of emulator runs: one run at a time owns the `fjemu*` namespaces, since each
/// run starts by removing whatever an earlier one left. The lock is a `flock` on this file,
/// which the kernel releases when the run's process ends however it ends; the file holds the
/// holder's process id for the error message.
const LOCK_FILE: &str = "/run/fjord-emulate.pid";

/// Proof that this process is the only emulator running; the lock goes with it.
#[derive(Debug)]
pub struct RunLock {
    /// Held for its lock, never read.
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock, or fails naming the run that holds it.
    pub fn acquire() -> Result<Self> {
        Self::acquire_at(Path::new(LOCK_FILE))
    }

    fn acquire_at(path: &Path) -> Result<Self> {
        use std::io::{Read as _, Write as _};
        let shown = path.display();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {shown}"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "another emulator run (process {}) is using the namespaces: wait for it to end or stop it (its lock is {shown})",
                    pid.trim()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("cannot lock {shown}")),
        }
        // Nothing was read, so the writes start at the beginning.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {shown}"))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::RunLock;

    #[test]
    fn one_run_holds_the_lock_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emulate.pid");
        // What a crashed run leaves: a file, but no lock on it.
        std::fs::write(&path, "999999999\n").unwrap();
        let first = RunLock::acquire_at(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        let refused = RunLock::acquire_at(&path).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("process {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        RunLock::acquire_at(&path).unwrap();
    }
}
