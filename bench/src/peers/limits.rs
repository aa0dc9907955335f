//! The machine's limits: what a copy of the value and an uncontended lock cost here, timed
//! the same way as the systems.
//!
//! The lock figure is `std::sync::Mutex` lock + unlock (one compare-and-swap and one swap on
//! a futex word). shmstore's lock is a robust process-shared pthread mutex; its fast path is
//! the same atomic pair plus the robust-list bookkeeping, and the harness reports shmstore's
//! own `count` on an empty store next to it as an upper bound (lock, one load, unlock), and
//! its `has` on an empty store (no lock: hash of a short key, one probe, two loads of the
//! seqlock word).

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::histogram::Histogram;
use crate::rng::Rng;

/// Operations per second of `f`, run `n` times.
fn rate(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// memcpy of `len` bytes between two warm buffers; copies per second. Each copy goes to one
/// of several destinations so that the compiler cannot drop repeated copies.
pub fn memcpy_warm(len: usize, n: usize) -> f64 {
    let src = crate::keys::value(len, 1);
    let mut dst = vec![vec![0u8; len]; 4];
    rate(n, |i| {
        let d = &mut dst[i & 3];
        d.copy_from_slice(black_box(&src));
        black_box(d);
    })
}

/// memcpy of `len` bytes into freshly mapped anonymous memory, page faults included (what a
/// put pays when the destination has never been touched); copies per second.
pub fn memcpy_fresh(len: usize, n: usize) -> f64 {
    let src = crate::keys::value(len, 1);
    rate(n, |_| {
        let mut map = MmapMut::map_anon(len).expect("anonymous map");
        map.copy_from_slice(black_box(&src));
        black_box(&map);
    })
}

/// An uncontended `std::sync::Mutex` lock + unlock; pairs per second.
pub fn mutex_pair(n: usize) -> f64 {
    let m = Mutex::new(0u64);
    rate(n, |_| {
        *black_box(&m).lock().expect("fresh mutex") += 1;
    })
}

/// What `threads` threads achieve copying 64-byte values in and out of a shared table under
/// one `std::sync::Mutex` for `secs` (W3's mix with no index and no allocator): total
/// operations per second and the sampled p99 latency in ns.
pub fn mutex_copy_threads(
    threads: usize,
    slots: usize,
    secs: f64,
    seed: u64,
) -> (f64, Option<f64>) {
    let table = Arc::new(Mutex::new(vec![[0u8; 64]; slots]));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let table = Arc::clone(&table);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ ((t as u64 + 1) * 0x9e37));
                let mut hist = Histogram::default();
                let mut value = [t as u8; 64];
                barrier.wait();
                let (start, limit) = (Instant::now(), Duration::from_secs_f64(secs));
                let mut ops = 0u64;
                loop {
                    for _ in 0..64 {
                        let slot = rng.below(slots as u64) as usize;
                        let put = rng.next_u64() & 1 == 0;
                        let timed = ops.is_multiple_of(crate::workloads::SAMPLE_EVERY);
                        let t0 = timed.then(Instant::now);
                        {
                            let mut table = table.lock().expect("table");
                            if put {
                                table[slot] = value;
                            } else {
                                value = table[slot];
                            }
                        }
                        if let Some(t0) = t0 {
                            hist.record(t0.elapsed().as_nanos() as u64);
                        }
                        ops += 1;
                    }
                    let elapsed = start.elapsed();
                    if elapsed >= limit {
                        black_box(value);
                        return (ops as f64 / elapsed.as_secs_f64(), hist);
                    }
                }
            })
        })
        .collect();
    let mut total = 0.0;
    let mut hist = Histogram::default();
    for h in handles {
        let (r, h) = h.join().expect("limit thread");
        total += r;
        hist.merge(&h);
    }
    (total, hist.quantile(0.99))
}
