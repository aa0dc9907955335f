//! Store operations through the public API: put and get of 64 B and 1 MiB values, bytes and
//! typed. `cargo bench --bench ops`.

mod common;

use std::hint::black_box;

use common::{TempStore, config, shuffled};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, &str); 2] = [(64, "64B"), (1 << 20, "1MiB")];

/// put_bytes over an existing key (the replace path: allocate, copy, link, free the old).
fn put_bytes(c: &mut Criterion) {
    let mut g = c.benchmark_group("put_bytes");
    for (len, name) in SIZES {
        let t = TempStore::new("put", 64 << 20, 1);
        let v = vec![1u8; len];
        t.0.put_bytes("key-000000", &v).expect("put");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                t.0.put_bytes(black_box("key-000000"), black_box(&v))
                    .expect("put")
            })
        });
    }
    g.finish();
}

/// get_bytes (lock-free up to 64 KiB: copy out into a new Vec, validated by the seqlock;
/// over 64 KiB under the lock) and get_with (under the lock, no copy).
fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    for (len, name) in SIZES {
        let t = TempStore::new("get", 64 << 20, 1);
        t.0.put_bytes("key-000000", &vec![1u8; len]).expect("put");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("get_bytes/{name}"), |b| {
            b.iter(|| t.0.get_bytes(black_box("key-000000")).expect("get"))
        });
        g.bench_function(format!("get_with_len/{name}"), |b| {
            b.iter(|| {
                t.0.get_with(black_box("key-000000"), |v| v.len())
                    .expect("get")
            })
        });
    }
    // As W1 does it: random keys of a store of 100,000, without and with inline copies
    // (`Options::inline_values`: the value is read from a record fetched with the slot).
    let n = 100_000;
    let order = shuffled(n);
    g.throughput(Throughput::Bytes(64));
    for (inline, name) in [(0, ""), (120, "_inline")] {
        let (t, keys) = TempStore::filled("get-many", n, 64, inline);
        let mut i = 0;
        g.bench_function(format!("get_bytes/64B_random_key_of_100k{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                t.0.get_bytes(&keys[order[i]]).expect("get")
            })
        });
    }
    g.finish();
}

/// The typed API on a 64-byte `Vec<u8>`: what serde + bincode add to the bytes path.
fn typed(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed");
    let t = TempStore::new("typed", 16 << 20, 1);
    let v = vec![1u8; 64];
    t.0.put("key-000000", &v).expect("put");
    g.bench_function("put/64B", |b| {
        b.iter(|| {
            t.0.put(black_box("key-000000"), black_box(&v))
                .expect("put")
        })
    });
    g.bench_function("get/64B", |b| {
        b.iter(|| t.0.get::<Vec<u8>>(black_box("key-000000")).expect("get"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = put_bytes, get, typed
}
criterion_main!(benches);
