//! W4: rotation. A store of 64 MiB; each key's value has its own size, uniform in 1-64 KiB;
//! 200,000 gets on a Zipf(0.99) stream over 20,000 keys, a miss followed by a put of that
//! key. Hit ratio, ops/s (gets of the stream per second, the puts after misses included),
//! and the bytes in use over the capacity at the end.
//!
//! The yardstick is an exact LRU simulation of the same stream with the same capacity (the
//! store's arena), charging each object what a shmstore block needs at least: a 48-byte block
//! header, the key and the value. Redis (allkeys-lru, `maxmemory` set to the same capacity)
//! counts its own overheads against `maxmemory`, so its fill is `used_memory / maxmemory`.

use std::time::Instant;

use super::lru_sim::LruSim;
use super::{Ctx, begin};
use crate::keys::{keys, value};
use crate::report::Unit::{OpsPerSec, Percent};
use crate::rng::{Rng, mix};
use crate::systems::{Opened, System};
use crate::zipf::Zipf;

const HITS: &str = "W4 hit ratio";
const RATE: &str = "W4 gets (miss: +put)";
const FILL: &str = "W4 bytes used / capacity";
/// Bytes of a shmstore block header (see `Options::capacity`).
const BLOCK_HEADER: u64 = 48;

pub fn run(ctx: &mut Ctx) {
    let z = ctx.sizes;
    let names = keys(0, z.w4_keys);
    let span = (z.w4_max_len - z.w4_min_len + 1) as u64;
    let sizes: Vec<usize> = (0..z.w4_keys)
        .map(|k| z.w4_min_len + (mix(ctx.seed ^ k as u64) % span) as usize)
        .collect();
    let zipf = Zipf::new(z.w4_keys, z.w4_theta);
    let mut rng = Rng::new(ctx.seed);
    // Rank r is key rank_to_key[r], so that popularity has nothing to do with key order.
    let rank_to_key = rng.permutation(z.w4_keys);
    let stream: Vec<usize> = (0..z.w4_gets)
        .map(|_| rank_to_key[zipf.sample(&mut rng)])
        .collect();
    let buf = value(z.w4_max_len, 5);
    let mut capacity = z.w4_capacity;

    for s in ctx.systems(&[System::Shm, System::Redis]) {
        begin(&format!("W4 {}", s.label()));
        let mut opened = Opened::new(s, "w4", z.w4_capacity, z.w4_keys, ctx.redis);
        if let Opened::Redis(kv, _) = &mut opened {
            kv.set_maxmemory(z.w4_capacity);
        }
        let mut hits = 0usize;
        let mut refused = 0usize;
        let t = Instant::now();
        opened.with_kv(|kv| {
            for &k in &stream {
                if kv.get(&names[k]).is_some() {
                    hits += 1;
                } else if !kv.put(&names[k], &buf[..sizes[k]]) {
                    refused += 1;
                }
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let fill = match &mut opened {
            Opened::Shm(store, _) => {
                let st = store.stats();
                capacity = st.capacity;
                st.used_bytes as f64 / st.capacity as f64
            }
            Opened::Redis(kv, _) => {
                let used = kv.used_memory() as f64;
                kv.set_maxmemory(0);
                used / z.w4_capacity as f64
            }
            _ => unreachable!("W4 runs shmstore and Redis"),
        };
        ctx.check(refused == 0, || {
            format!("W4 {}: {refused} puts refused", s.label())
        });
        ctx.report.add(
            HITS,
            Percent,
            s.label(),
            100.0 * hits as f64 / stream.len() as f64,
        );
        ctx.report
            .add(RATE, OpsPerSec, s.label(), stream.len() as f64 / secs);
        ctx.report.add(FILL, Percent, s.label(), 100.0 * fill);
    }

    let mut sim = LruSim::new(z.w4_keys, capacity);
    let mut hits = 0usize;
    for &k in &stream {
        if sim.get(k) {
            hits += 1;
        } else {
            sim.put(k, BLOCK_HEADER + names[k].len() as u64 + sizes[k] as u64);
        }
    }
    let label = "exact LRU (simulated)";
    ctx.report.add(
        HITS,
        Percent,
        label,
        100.0 * hits as f64 / stream.len() as f64,
    );
    ctx.report.add(
        FILL,
        Percent,
        label,
        100.0 * sim.used() as f64 / capacity as f64,
    );
}
