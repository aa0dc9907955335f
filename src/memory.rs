//! How much memory the machine (or the container) has available, sampled on a budget.
//!
//! A refresh reads /proc/meminfo and the cgroup files (tens of µs, ~100 here); a put must
//! cost well under a microsecond. So a figure is refreshed by the first put at least [`REFRESH_EVERY`]
//! after the last refresh (each put reads the coarse clock, a few ns), or once
//! [`REFRESH_BYTES`] have been put since the last one; in between, it is estimated from the
//! bytes put and freed through this handle.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use crate::os::coarse_monotonic_ns;

pub const REFRESH_EVERY: Duration = Duration::from_millis(100);
pub const REFRESH_BYTES: u64 = 64 << 20;

/// Memory figures of one handle. Atomics only, no lock: a handle keeps working in a forked
/// child, and a lock that another thread of the parent held at the fork would be held in the
/// child for good.
#[derive(Default)]
pub struct MemorySampler {
    /// Bytes put minus bytes freed through this handle since the last refresh.
    drift: AtomicU64,
    /// When (`os::coarse_monotonic_ns`) the last refresh began.
    at_ns: AtomicU64,
    /// The fork generation + 1 of the process one of whose threads is refreshing, 0 when
    /// none is (a value of another generation was copied from a parent mid-refresh: free).
    refreshing: AtomicU64,
    /// `available` and `total` of the last refresh.
    available: AtomicU64,
    total: AtomicU64,
    /// Set when this system gives no memory figures: the threshold is then not applied.
    unavailable: AtomicBool,
}

/// Available and total bytes: the smaller of the machine's and the cgroup's; `None` where
/// the system gives no figures.
fn read() -> Option<(u64, u64)> {
    let mut sys = sysinfo::System::new().ok()?;
    sys.refresh_memory();
    let (mut available, mut total) = (sys.available_memory(), sys.total_memory());
    if let Some(cg) = sys.cgroup_limits() {
        if cg.total_memory > 0 && cg.total_memory < total {
            total = cg.total_memory;
        }
        available = available.min(cg.free_memory);
    }
    Some((available, total))
}

impl MemorySampler {
    /// How many bytes must be freed before `incoming` more bytes can be stored while keeping
    /// `min_free` (a fraction) of memory available. 0 when there is room.
    pub fn shortfall(&self, min_free: f64, incoming: u64) -> u64 {
        if min_free <= 0.0 || self.unavailable.load(Relaxed) {
            return 0;
        }
        let drift = self.drift.fetch_add(incoming, Relaxed) + incoming;
        let now = coarse_monotonic_ns();
        let due = self.total.load(Relaxed) == 0
            || drift >= REFRESH_BYTES
            || now.saturating_sub(self.at_ns.load(Relaxed)) >= REFRESH_EVERY.as_nanos() as u64;
        if due {
            self.refresh_once(now);
        }
        if self.unavailable.load(Relaxed) {
            return 0;
        }
        let total = self.total.load(Relaxed);
        let available = self
            .available
            .load(Relaxed)
            .saturating_sub(self.drift.load(Relaxed));
        let want = (total as f64 * min_free) as u64;
        want.saturating_sub(available)
    }

    /// Credits bytes freed (evicted or removed) through this handle, or counted by a refresh.
    pub fn freed(&self, bytes: u64) {
        let _ = self
            .drift
            .fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(bytes)));
    }

    /// Refreshes the figures unless another thread of this process is at it (the others go
    /// on with the figure they have).
    fn refresh_once(&self, now: u64) {
        let mine = crate::os::fork_generation() + 1;
        let held = self.refreshing.load(Relaxed);
        if held == mine
            || self
                .refreshing
                .compare_exchange(held, mine, Acquire, Relaxed)
                .is_err()
        {
            return;
        }
        self.at_ns.store(now, Relaxed);
        // What was put before the figures were read is in them; what is put meanwhile stays.
        let counted = self.drift.load(Relaxed);
        match read() {
            Some((available, total)) => {
                self.available.store(available, Relaxed);
                self.total.store(total, Relaxed);
                self.freed(counted);
            }
            None => self.unavailable.store(true, Relaxed),
        }
        self.refreshing.store(0, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_threshold_means_no_shortfall() {
        assert_eq!(MemorySampler::default().shortfall(0.0, 1 << 30), 0);
    }

    #[test]
    fn full_threshold_is_always_short() {
        let s = MemorySampler::default();
        assert!(s.shortfall(1.0, 1) > 0);
        assert!(s.total.load(Relaxed) > 0);
    }

    #[test]
    fn a_figure_older_than_the_refresh_period_is_read_again_by_the_next_put() {
        let s = MemorySampler::default();
        assert_eq!(s.shortfall(0.001, 1), 0);
        // As if memory had been short at the last refresh, just now (a refresh stamped in the
        // future, so that a slow test run cannot make it stale): that figure holds.
        s.available.store(0, Relaxed);
        s.at_ns.store(u64::MAX / 2, Relaxed);
        assert!(s.shortfall(0.001, 1) > 0);
        assert!(s.shortfall(0.001, 1) > 0);
        // Once it is older than the period, the very next put reads memory again (a handle
        // making one small put now and then must not act on an old figure).
        let old = coarse_monotonic_ns() - REFRESH_EVERY.as_nanos() as u64;
        s.at_ns.store(old, Relaxed);
        assert_eq!(s.shortfall(0.001, 1), 0);
        assert!(s.at_ns.load(Relaxed) > old);
    }

    #[test]
    fn one_thread_refreshes_at_a_time_and_a_parent_s_refresh_is_not_waited_for() {
        let s = MemorySampler::default();
        assert_eq!(s.shortfall(0.001, 1), 0);
        s.available.store(0, Relaxed);
        let stale = coarse_monotonic_ns() - REFRESH_EVERY.as_nanos() as u64;
        // Another thread of this process is refreshing: this put goes on with the figure.
        s.refreshing
            .store(crate::os::fork_generation() + 1, Relaxed);
        s.at_ns.store(stale, Relaxed);
        assert!(s.shortfall(0.001, 1) > 0);
        // A mark left by a thread of a parent process (copied by a fork mid-refresh): free.
        s.refreshing
            .store(crate::os::fork_generation() + 7, Relaxed);
        assert_eq!(s.shortfall(0.001, 1), 0);
        assert_eq!(s.refreshing.load(Relaxed), 0);
    }

    #[test]
    fn a_small_threshold_on_this_machine_has_room() {
        // Any machine that runs the tests has more than 0.1% of its memory available.
        assert_eq!(MemorySampler::default().shortfall(0.001, 1), 0);
    }
}
