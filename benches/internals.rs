//! The store's internals (lock, index probe, allocator, LRU promotion), isolated through
//! public operations chosen so that one part dominates. `cargo bench --bench internals`.

mod common;

use std::hint::black_box;
use std::sync::Mutex;

use common::{TempStore, config, shuffled};
use criterion::{Criterion, criterion_group, criterion_main};

/// The lock: `count` is a lock + unlock around one load (`has`, for comparison, takes no
/// lock: a hash, one probe of an empty slot and two loads of the seqlock word); a
/// `std::sync::Mutex` lock + unlock is the reference for the lock alone.
fn lock(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock");
    let t = TempStore::new("lock", 1 << 20, 1);
    g.bench_function("count_on_empty_store", |b| {
        b.iter(|| black_box(&t.0).count().expect("count"))
    });
    g.bench_function("has_on_empty_store_lock_free", |b| {
        b.iter(|| t.0.has(black_box("key-000000")).expect("has"))
    });
    let m = Mutex::new(0u64);
    g.bench_function("std_mutex_lock_unlock_reference", |b| {
        b.iter(|| *black_box(&m).lock().expect("mutex") += 1)
    });
    g.finish();
}

/// The index: `has` (lock-free, no recency change, no copy) of a present or absent key,
/// walking the keys in a random order, in a small table (in cache) and a large one (cache
/// misses).
fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    for n in [1_000, 100_000] {
        let (t, keys) = TempStore::filled("index", n, 64, 0);
        let absent: Vec<String> = (n..2 * n).map(|i| format!("key-{i:06}")).collect();
        let order = shuffled(n);
        let mut i = 0;
        g.bench_function(format!("has_hit/{n}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                t.0.has(&keys[order[i]]).expect("has")
            })
        });
        g.bench_function(format!("has_miss/{n}_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                t.0.has(&absent[order[i]]).expect("has")
            })
        });
    }
    g.finish();
}

/// The allocator: put + remove of one key, one size, in a store that holds 10,000 other
/// objects (so the free lists are not trivially empty); and cycling through mixed sizes.
fn allocator(c: &mut Criterion) {
    let mut g = c.benchmark_group("allocator");
    let (t, _) = TempStore::filled("alloc", 10_000, 64, 0);
    for (len, name) in [(64, "64B"), (4096, "4KiB"), (1 << 20, "1MiB")] {
        let v = vec![3u8; len];
        g.bench_function(format!("put_remove/{name}"), |b| {
            b.iter(|| {
                t.0.put_bytes("churn", &v).expect("put");
                t.0.remove("churn").expect("remove")
            })
        });
    }
    let values: Vec<Vec<u8>> = [64, 1000, 4096, 30_000, 200]
        .iter()
        .map(|&l| vec![4u8; l])
        .collect();
    let mut i = 0;
    g.bench_function("put_remove/mixed_64B_to_30KB", |b| {
        b.iter(|| {
            i = (i + 1) % values.len();
            t.0.put_bytes("churn", &values[i]).expect("put");
            t.0.remove("churn").expect("remove")
        })
    });
    g.finish();
}

/// LRU promotion under the lock: `get_with` (no copy) of one hot key against a key that
/// rotates through 100,000 in a random order. Promotion is CLOCK: the first get of an entry
/// sets its bit with a compare-and-swap, later ones only load it; no list move.
fn lru(c: &mut Criterion) {
    let mut g = c.benchmark_group("lru");
    let n = 100_000;
    let (t, keys) = TempStore::filled("lru", n, 64, 0);
    g.bench_function("get_hot_key", |b| {
        b.iter(|| t.0.get_with(&keys[0], |v| v.len()).expect("get"))
    });
    let order = shuffled(n);
    let mut i = 0;
    g.bench_function("get_rotating_100k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            t.0.get_with(&keys[order[i]], |v| v.len()).expect("get")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = lock, index, allocator, lru
}
criterion_main!(benches);
