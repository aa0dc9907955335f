//! W1: one process; 100,000 distinct keys; 64-byte values: put (insert), get (hit),
//! get (miss), has, remove. Gets, has and remove go through the keys in a random order.
//! A second pass of gets times each one for the p99.

use std::time::Instant;

use super::{Ctx, begin, rate};
use crate::histogram::Histogram;
use crate::keys::{Keys, keys, value};
use crate::kv::Kv;
use crate::peers::limits;
use crate::peers::shm::{ShmBytes, TempStore};
use crate::report::Unit::{Nanos, OpsPerSec};
use crate::rng::Rng;
use crate::systems::{Opened, System};

const PUT: &str = "W1 put (insert)";
const GET: &str = "W1 get (hit)";
const GET_P99: &str = "W1 get (hit) p99";
const MISS: &str = "W1 get (miss)";
const HAS: &str = "W1 has (hit)";
const REMOVE: &str = "W1 remove";

pub fn run(ctx: &mut Ctx) {
    let n = ctx.sizes.w1_keys;
    let len = ctx.sizes.w1_len;
    let present = keys(0, n);
    let absent = keys(n, n);
    let val = value(len, 7);
    let order = Rng::new(ctx.seed).permutation(n);
    // Room for every object four times over; the index sized for them.
    let capacity = (n as u64 * (len as u64 + 128) * 4).max(16 << 20);
    for s in ctx.systems(&System::ALL) {
        begin(&format!("W1 {}", s.label()));
        let mut opened = Opened::new(s, "w1", capacity, n, ctx.redis);
        ctx.note_huge_arena("W1", s, &opened);
        // Anomalies and how often each happened.
        let mut bad: Vec<(&str, usize)> = Vec::new();
        let figures = opened.with_kv(|kv| {
            let mut check = |ok: bool, what: &'static str| {
                if !ok {
                    match bad.iter_mut().find(|(w, _)| *w == what) {
                        Some((_, count)) => *count += 1,
                        None => bad.push((what, 1)),
                    }
                }
            };
            let put = rate(n, |i| check(kv.put(&present[i], &val), "a put was refused"));
            let get = rate(n, |i| {
                check(
                    kv.get(&present[order[i]]).is_some_and(|v| v.len() == len),
                    "a get missed",
                )
            });
            let p99 = get_p99(kv, &present, &order);
            let miss = rate(n, |i| {
                check(
                    kv.get(&absent[order[i]]).is_none(),
                    "a missing key was found",
                )
            });
            let has = rate(n, |i| check(kv.has(&present[order[i]]), "has said no"));
            let remove = rate(n, |i| {
                check(kv.remove(&present[order[i]]), "a remove found nothing")
            });
            [
                (PUT, put),
                (GET, get),
                (MISS, miss),
                (HAS, has),
                (REMOVE, remove),
                (GET_P99, p99),
            ]
        });
        let evictions = match &opened {
            Opened::Shm(t, _) => format!(" (the store counts {} evictions)", t.stats().evictions),
            _ => String::new(),
        };
        for (what, count) in bad {
            ctx.check(false, || {
                format!("W1 {}: {what}, {count} of {n} times{evictions}", s.label())
            });
        }
        for (fig, v) in figures {
            let unit = if fig == GET_P99 { Nanos } else { OpsPerSec };
            ctx.report.add(fig, unit, s.label(), v);
        }
    }
    let py_keys = ctx.sizes.w1_python_keys.min(n);
    if ctx.python.is_some() {
        ctx.report.note(format!(
            "mt.base.object_store runs W1 on {py_keys} keys, not {n}: each call is a round trip \
             to its manager process whatever the number of keys"
        ));
    }
    let figures = [
        ("put", PUT, OpsPerSec),
        ("get", GET, OpsPerSec),
        ("miss", MISS, OpsPerSec),
        ("has", HAS, OpsPerSec),
        ("remove", REMOVE, OpsPerSec),
    ];
    ctx.python("w1", (py_keys, len, 0.0), &[], &figures, 1.0);
    if ctx.selection.limits {
        begin("W1 limits");
        let reps = (n * 10).max(1_000_000);
        let copy = limits::memcpy_warm(len, reps);
        ctx.report
            .add(PUT, OpsPerSec, &format!("limit: memcpy {len} B"), copy);
        ctx.report
            .add(GET, OpsPerSec, &format!("limit: memcpy {len} B"), copy);
        ctx.report.add(
            HAS,
            OpsPerSec,
            "limit: std Mutex lock+unlock",
            limits::mutex_pair(reps),
        );
        let empty = TempStore::new("w1-empty", 1 << 20, 1);
        let mut kv = ShmBytes(empty.store.clone());
        let has_empty = rate(reps, |i| {
            std::hint::black_box(kv.has(&present[i % n]));
        });
        ctx.report.add(
            HAS,
            OpsPerSec,
            "limit: shmstore has, empty store (no lock)",
            has_empty,
        );
        let count = rate(reps, |_| {
            std::hint::black_box(empty.store.count().expect("count"));
        });
        ctx.report
            .add(HAS, OpsPerSec, "limit: shmstore count (lock+unlock)", count);
    }
}

/// p99 of individually timed gets (a clock read on each side of each get).
fn get_p99(kv: &mut dyn Kv, keys: &Keys, order: &[usize]) -> f64 {
    let mut hist = Histogram::default();
    for &i in order {
        let t = Instant::now();
        std::hint::black_box(kv.get(&keys[i]));
        hist.record(t.elapsed().as_nanos() as u64);
    }
    hist.quantile(0.99).unwrap_or(0.0)
}
