//! The machine's CPU over a run, from `/proc/stat`: how busy it was and how much the
//! hypervisor stole. Every node, the router and the encoder share this machine's cores, so a
//! run during which the host took CPU away measures the machine as much as the mesh (one run
//! with 28% stolen lost 0.3 points of continuity against runs with none).

/// Cumulative CPU time of all cores, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent running anything (user, nice, system, irq, softirq).
    pub busy: u64,
    /// Ticks the hypervisor gave to other guests while this one wanted to run.
    pub steal: u64,
    /// All ticks, idle and I/O wait included.
    pub total: u64,
}

impl CpuTimes {
    /// Reads the machine's counters now; `None` where `/proc/stat` is missing or unreadable.
    pub fn now() -> Option<Self> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Busy and stolen shares of the time between `self` and a later reading.
    pub fn shares_until(&self, later: &CpuTimes) -> Option<(f64, f64)> {
        let total = later.total.checked_sub(self.total)?;
        if total == 0 {
            return None;
        }
        let busy = later.busy.saturating_sub(self.busy) as f64 / total as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64 / total as f64;
        Some((busy, steal))
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal (later fields, guest time, are already counted in user).
pub fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if f.len() < 8 {
        return None;
    }
    let (idle, iowait, steal) = (f[3], f[4], f[7]);
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    Some(CpuTimes {
        busy,
        steal,
        total: busy + idle + iowait + steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aggregate_line_and_computes_shares() {
        let before = parse("cpu  100 0 50 800 10 5 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8\n").unwrap();
        assert_eq!(
            before,
            CpuTimes {
                busy: 160,
                steal: 30,
                total: 1000
            }
        );
        let after = parse("cpu  200 0 100 1040 10 10 10 130 0 0\n").unwrap();
        let (busy, steal) = before.shares_until(&after).unwrap();
        // 500 ticks: 160 busy (100 + 50 + 5 + 5), 100 stolen.
        assert!((busy - 0.32).abs() < 1e-9, "{busy}");
        assert!((steal - 0.2).abs() < 1e-9, "{steal}");
        assert_eq!(before.shares_until(&before), None);
    }

    #[test]
    fn rejects_what_is_not_a_cpu_line() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("cpu  1 2 3\n"), None);
        assert_eq!(parse("cpu  a b c d e f g h\n"), None);
        assert_eq!(parse("intr 1 2 3 4 5 6 7 8\n"), None);
    }
}
