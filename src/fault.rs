//! Fault points for crash tests (feature `fault-injection`, never in a normal build).
//!
//! Every mutating path calls [`fault!`](crate::fault!) between its steps. A test arms the
//! process with a step number N; the N-th fault point reached then kills the process with
//! SIGKILL, exactly as if the OOM killer had struck there, lock held. Running a fixed
//! scenario once per N kills every step of every path it takes at least once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

static ARMED_AT: AtomicU64 = AtomicU64::new(0);
static HITS: AtomicU64 = AtomicU64::new(0);
/// The armed point panics instead of killing ([`arm_panic`]).
static PANICS: AtomicBool = AtomicBool::new(false);

/// Counts a fault point; kills the process if it is the one armed. Unarmed, it costs one
/// relaxed load (benchmarks built with the feature are not slowed by counting).
pub fn point() {
    let at = ARMED_AT.load(Relaxed);
    if at == 0 {
        return;
    }
    let n = HITS.fetch_add(1, Relaxed) + 1;
    if n == at {
        if PANICS.load(Relaxed) {
            panic!("fault point {n}: injected panic");
        }
        crate::os::kill_self();
    }
}

/// Kills this process at the `step`-th fault point from now, and restarts the count. 0
/// disarms (and stops counting); `u64::MAX` counts without ever killing.
pub fn arm(step: u64) {
    PANICS.store(false, Relaxed);
    HITS.store(0, Relaxed);
    ARMED_AT.store(step, Relaxed);
}

/// Panics (unwinding, lock held) at the `step`-th fault point from now, instead of killing
/// the process: for the guard's handling of a section cut short by a panic. Disarm with
/// `arm(0)`. The count is process-wide: arm it only in a process of its own.
pub fn arm_panic(step: u64) {
    arm(step);
    PANICS.store(true, Relaxed);
}

/// Fault points passed since the last [`arm`].
pub fn hits() -> u64 {
    HITS.load(Relaxed)
}
