//! W3: two processes on one store; 10,000 keys of 64-byte values (filled first); each
//! process 50% get / 50% put on uniformly random keys for a fixed time.

use super::{Ctx, begin};
use crate::fleet::{self, Job, Task};
use crate::keys::{keys, value};
use crate::kv::Kv;
use crate::peers::limits;
use crate::report::Unit::{Nanos, OpsPerSec};
use crate::systems::{Opened, System};

pub const SYSTEMS: [System; 4] = [System::Shm, System::Map, System::Lmdb, System::Redis];

/// The names of the mix's figures with `workers` workers: total ops/s, and p99 latency.
pub fn figures(id: &str, workers: usize) -> (String, String) {
    (
        format!("{id} {workers} workers, total"),
        format!("{id} {workers} workers, p99 (sampled)"),
    )
}

pub fn run(ctx: &mut Ctx) {
    mix(ctx, "W3", 2);
    python_mix(ctx, "W3", 2);
    mix_limits(ctx, "W3", 2);
}

/// The Python original's row of W3's mix with `workers` processes (W3, W6).
pub fn python_mix(ctx: &mut Ctx, id: &str, workers: usize) {
    let (n, len, secs) = (ctx.sizes.mix_keys, ctx.sizes.mix_len, ctx.sizes.mix_secs);
    let total = figures(id, workers).0;
    ctx.python(
        &id.to_lowercase(),
        (n, len, secs),
        &[("--workers", workers.to_string())],
        &[("total", &total, OpsPerSec)],
        1.0,
    );
}

/// `workers` workers (processes; threads for the in-process map) running W3's mix. Shared
/// with W6, as is [`mix_limits`].
pub fn mix(ctx: &mut Ctx, id: &str, workers: usize) {
    let (n, len, secs) = (ctx.sizes.mix_keys, ctx.sizes.mix_len, ctx.sizes.mix_secs);
    let (ops, p99) = figures(id, workers);
    for s in ctx.systems(&SYSTEMS) {
        begin(&format!("{id} {}", s.label_workers()));
        let mut opened = Opened::new(
            s,
            id,
            (n as u64 * (len as u64 + 128) * 4).max(16 << 20),
            n,
            ctx.redis,
        );
        opened.with_kv(|kv| fill(kv, n, len));
        let task = Task {
            job: Job::Mix {
                keys: n,
                value_len: len,
            },
            secs,
            seed: ctx.seed,
        };
        let t = fleet::run(&opened.fleet(), workers, task);
        ctx.check(t.misses == 0, || {
            format!(
                "{id} {}: {} gets missed in a filled store",
                s.label(),
                t.misses
            )
        });
        ctx.check(t.refused == 0, || {
            format!(
                "{id} {}: {} puts refused by a store with room for every key",
                s.label(),
                t.refused
            )
        });
        ctx.report
            .add(&ops, OpsPerSec, s.label_workers(), t.ops_per_sec);
        if let Some(p) = t.p99_ns {
            ctx.report.add(&p99, Nanos, s.label_workers(), p);
        }
    }
}

/// The machine-limit rows of W3's mix with `workers` threads (after the systems' rows).
pub fn mix_limits(ctx: &mut Ctx, id: &str, workers: usize) {
    let (n, len, secs) = (ctx.sizes.mix_keys, ctx.sizes.mix_len, ctx.sizes.mix_secs);
    let (ops, p99) = figures(id, workers);
    if ctx.selection.limits {
        begin(&format!("{id} limits"));
        let label = format!("limit: {len} B copies, one Mutex, threads");
        let (rate, p) = limits::mutex_copy_threads(workers, n, secs, ctx.seed);
        ctx.report.add(&ops, OpsPerSec, &label, rate);
        if let Some(p) = p {
            ctx.report.add(&p99, Nanos, &label, p);
        }
    }
}

/// Puts keys `0..n` with `len`-byte values.
pub fn fill(kv: &mut dyn Kv, n: usize, len: usize) {
    let v = value(len, 3);
    for k in keys(0, n).iter() {
        assert!(kv.put(k, &v), "filling: a put was refused");
    }
}
