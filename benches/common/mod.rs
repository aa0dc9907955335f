//! What the criterion benches share: a store that is destroyed when the bench is done (also
//! on panic), keys, and a short measurement so that `cargo bench` stays within minutes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use criterion::Criterion;
use shmstore::{Options, Store};

/// A store with a name of its own, destroyed on drop.
pub struct TempStore(pub Store);

impl TempStore {
    /// `capacity` bytes and an index for `objects` (with a quarter to spare); the
    /// machine's-memory threshold off, so that only the store is timed.
    pub fn new(tag: &str, capacity: u64, objects: usize) -> TempStore {
        TempStore::with_inline(tag, capacity, objects, 0)
    }

    /// [`new`](TempStore::new), with inline copies of objects of up to `inline` bytes.
    pub fn with_inline(tag: &str, capacity: u64, objects: usize, inline: u32) -> TempStore {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "criterion-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let options = Options::default()
            .capacity(capacity)
            .max_objects(objects as u64 * 5 / 4 + 64)
            .min_free_mem_pct(0.0)
            .inline_values(inline);
        TempStore(Store::create(&name, options).unwrap_or_else(|e| panic!("creating {name}: {e}")))
    }

    /// A store holding keys `0..n` with `len`-byte values, with inline copies of objects
    /// of up to `inline` bytes (0: none).
    pub fn filled(tag: &str, n: usize, len: usize, inline: u32) -> (TempStore, Vec<String>) {
        let capacity = (n as u64 * (len as u64 + 128) * 2).max(16 << 20);
        let t = TempStore::with_inline(tag, capacity, n, inline);
        let keys = keys(n);
        let v = vec![7u8; len];
        for k in &keys {
            assert!(t.0.put_bytes(k, &v).expect("put"), "filling: put refused");
        }
        let evicted = t.0.stats().expect("stats").evictions;
        assert_eq!(
            evicted, 0,
            "filling evicted objects: the store is too small for the bench"
        );
        (t, keys)
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = Store::destroy(self.0.name());
    }
}

/// `key-000000`, `key-000001`, ... as in WORKLOADS.md.
pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:06}")).collect()
}

/// 0.5 s of warm-up and 2 s of measurement in 20 samples per bench.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// A fixed pseudo-random permutation of `0..n` (SplitMix64-driven Fisher-Yates), so that a
/// walk through the keys defeats the caches the way random access does.
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    p
}
