//! How much CPU time others took while the harness ran: other processes, kernel threads and
//! (as steal time) the hypervisor's other guests. The load average cannot tell: it counts
//! the harness's own workers, and tasks waiting for I/O that use no CPU (this guest idles at
//! a load of ~1 from those). Counted as others although done for the harness: interrupt
//! and softirq time (Redis's loopback TCP, ~7% of the busy time here) and kernel threads
//! working for it (page zeroing, huge-page collapse); so a figure of a few percent is the
//! harness's own noise floor.

use std::time::Instant;

/// The kernel's clock tick for `/proc/stat` and `/proc/PID/stat` times (`USER_HZ`: 100 on
/// every Linux architecture the harness runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU times at one moment, in ticks.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// All CPUs' busy time (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// This process's and its reaped children's (workers; the Redis server, stopped before
    /// the last sample) user and system time.
    own: u64,
    at: Instant,
}

pub fn sample() -> Sample {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Sample {
        busy: busy_ticks(&read("/proc/stat")).unwrap_or(0),
        own: own_ticks(&read("/proc/self/stat")).unwrap_or(0),
        at: Instant::now(),
    }
}

/// The share of one CPU that others used between `a` and `b` (0.5: half a CPU).
pub fn others_share(a: Sample, b: Sample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let busy = b.busy.saturating_sub(a.busy);
    let own = b.own.saturating_sub(a.own);
    if secs <= 0.0 {
        return 0.0;
    }
    busy.saturating_sub(own) as f64 / TICKS_PER_SEC / secs
}

/// Busy ticks of all CPUs from `/proc/stat`'s first line (`cpu user nice system idle iowait
/// irq softirq steal ...`).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// `utime + stime + cutime + cstime` from a `/proc/PID/stat` line (fields 14-17; the
/// command name, field 2, is in parentheses and may hold spaces).
fn own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first, so fields 14-17 are 11..=14 here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..=14).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 5 20 9000 700 3 2 10 0 0\ncpu0 50 2 10 4500 350 1 1 5 0 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 20 + 3 + 2 + 10));
        assert_eq!(busy_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn own_time_counts_reaped_children_and_survives_odd_names() {
        let stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
        // utime 11, stime 12, cutime 13, cstime 14.
        assert_eq!(own_ticks(stat), Some(11 + 12 + 13 + 14));
        assert_eq!(own_ticks("garbage"), None);
    }

    #[test]
    fn the_share_is_of_one_cpu_per_second() {
        let a = Sample {
            busy: 1000,
            own: 400,
            at: Instant::now(),
        };
        let b = Sample {
            busy: 1300,
            own: 600,
            at: a.at + std::time::Duration::from_secs(2),
        };
        // 300 busy ticks, 200 of them ours: 100 ticks = 1 s of CPU over 2 s.
        assert!((others_share(a, b) - 0.5).abs() < 1e-9);
    }
}
