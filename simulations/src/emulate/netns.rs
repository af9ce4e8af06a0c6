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

/// Where a running emulator writes its process id: one run at a time owns the `fjemu*`
/// namespaces, since each run starts by removing whatever an earlier one left.
const LOCK_FILE: &str = "/run/fjord-emulate.pid";

/// Proof that this process is the only emulator running; removes its lock file when dropped.
#[derive(Debug)]
pub struct RunLock(std::path::PathBuf);

impl RunLock {
    /// Takes the lock, or fails naming the run that holds it. A lock file whose process is
    /// gone (a crashed or killed run) is taken over.
    pub fn acquire() -> Result<Self> {
        Self::acquire_at(Path::new(LOCK_FILE))
    }

    fn acquire_at(path: &Path) -> Result<Self> {
        let shown = path.display();
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    writeln!(f, "{}", std::process::id())
                        .with_context(|| format!("cannot write {shown}"))?;
                    return Ok(Self(path.to_path_buf()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(path).unwrap_or_default();
                    let pid = pid.trim();
                    if holder_alive(pid) {
                        bail!(
                            "another emulator run (process {pid}) is using the namespaces: wait for it to end or stop it (its lock is {shown})"
                        );
                    }
                    // Stale: its run ended without removing it.
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create {shown}")),
            }
        }
        bail!("cannot take {shown}: another emulator run started at the same time")
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether process `pid` (as written in the lock file) is a running emulator.
fn holder_alive(pid: &str) -> bool {
    if pid.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || pid == std::process::id().to_string()
    {
        return false;
    }
    // A recycled process id belongs to another program: only fjord-sim counts.
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "fjord-sim")
}

#[cfg(test)]
mod tests {
    use super::RunLock;

    #[test]
    fn a_stale_lock_is_taken_over_and_the_lock_goes_with_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emulate.pid");
        // No process has this id (above the kernel's pid_max).
        std::fs::write(&path, "999999999\n").unwrap();
        let lock = RunLock::acquire_at(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(lock);
        assert!(!path.exists());
    }

    #[test]
    fn ids_of_other_programs_do_not_hold_the_lock() {
        // A crashed run's id may be recycled: this process (a test binary) and init (1) stand
        // for such other programs. Only a process named fjord-sim holds the lock.
        assert!(!super::holder_alive(&std::process::id().to_string()));
        assert!(!super::holder_alive("1"));
        assert!(!super::holder_alive(""));
        assert!(!super::holder_alive("../self"));
    }
}
