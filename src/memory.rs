//! How much memory the machine (or the container) has available, sampled on a budget.
//!
//! A refresh reads /proc/meminfo and the cgroup files (about 14 µs); a put must cost well
//! under a microsecond. So a figure is refreshed at most every [`REFRESH_EVERY`], or once
//! [`REFRESH_BYTES`] have been put since the last one; in between, it is estimated from the
//! bytes put and freed through this handle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub const REFRESH_EVERY: Duration = Duration::from_millis(100);
pub const REFRESH_BYTES: u64 = 64 << 20;
/// Puts between two looks at the clock.
const CLOCK_EVERY: u64 = 64;

struct Sample {
    sys: sysinfo::System,
    at: Instant,
    available: u64,
    total: u64,
}

pub struct MemorySampler {
    sample: Mutex<Option<Sample>>,
    /// Bytes put minus bytes freed through this handle since the last refresh.
    drift: AtomicU64,
    calls: AtomicU64,
    /// `available` and `total` of the last sample, for the lock-free fast path.
    available: AtomicU64,
    total: AtomicU64,
    /// Set when this system gives no memory figures: the threshold is then not applied.
    unavailable: AtomicBool,
}

impl Default for MemorySampler {
    fn default() -> MemorySampler {
        MemorySampler {
            sample: Mutex::new(None),
            drift: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            available: AtomicU64::new(0),
            total: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
        }
    }
}

/// Available and total bytes: the smaller of the machine's and the cgroup's.
fn read(sys: &mut sysinfo::System) -> (u64, u64) {
    sys.refresh_memory();
    let (mut available, mut total) = (sys.available_memory(), sys.total_memory());
    if let Some(cg) = sys.cgroup_limits() {
        if cg.total_memory > 0 && cg.total_memory < total {
            total = cg.total_memory;
        }
        available = available.min(cg.free_memory);
    }
    (available, total)
}

impl MemorySampler {
    /// How many bytes must be freed before `incoming` more bytes can be stored while keeping
    /// `min_free` (a fraction) of memory available. 0 when there is room.
    pub fn shortfall(&self, min_free: f64, incoming: u64) -> u64 {
        if min_free <= 0.0 || self.unavailable.load(Relaxed) {
            return 0;
        }
        let calls = self.calls.fetch_add(1, Relaxed);
        let drift = self.drift.fetch_add(incoming, Relaxed) + incoming;
        if self.total.load(Relaxed) == 0
            || drift >= REFRESH_BYTES
            || calls.is_multiple_of(CLOCK_EVERY)
        {
            self.refresh(calls.is_multiple_of(CLOCK_EVERY) && drift < REFRESH_BYTES);
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

    /// Credits bytes freed (evicted or removed) through this handle.
    pub fn freed(&self, bytes: u64) {
        let _ = self
            .drift
            .fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(bytes)));
    }

    fn refresh(&self, only_if_stale: bool) {
        let Ok(mut guard) = self.sample.lock() else {
            return;
        };
        if only_if_stale
            && guard
                .as_ref()
                .is_some_and(|s| s.at.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        if guard.is_none() {
            let Ok(sys) = sysinfo::System::new() else {
                self.unavailable.store(true, Relaxed);
                return;
            };
            *guard = Some(Sample {
                sys,
                at: Instant::now(),
                available: 0,
                total: 0,
            });
        }
        let Some(s) = guard.as_mut() else { return };
        (s.available, s.total) = read(&mut s.sys);
        s.at = Instant::now();
        self.available.store(s.available, Relaxed);
        self.total.store(s.total, Relaxed);
        self.drift.store(0, Relaxed);
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
    fn a_small_threshold_on_this_machine_has_room() {
        // Any machine that runs the tests has more than 0.1% of its memory available.
        assert_eq!(MemorySampler::default().shortfall(0.001, 1), 0);
    }
}
