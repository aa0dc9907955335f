//! W2: one process; 200 keys; 1 MiB values: put (insert into an empty store), get (random
//! order), put over the existing keys (random order). Figures in GB/s of value bytes, and
//! the minor page faults this process took per MiB put over existing keys (a warm store
//! should reuse its pages: 256 faults per MiB means every 4 KiB page was fresh).

use super::{Ctx, begin, rate};
use crate::keys::{keys, value};
use crate::peers::limits;
use crate::report::Unit::{GbPerSec, PerMiB};
use crate::rng::Rng;
use crate::systems::{Opened, System};

const PUT: &str = "W2 put (insert)";
const GET: &str = "W2 get";
const OVER: &str = "W2 put over existing";
const OVER_FAULTS: &str = "W2 put over existing, page faults";

pub fn run(ctx: &mut Ctx) {
    let (n, len) = (ctx.sizes.w2_keys, ctx.sizes.w2_len);
    let names = keys(0, n);
    let (first, second) = (value(len, 1), value(len, 2));
    let order = Rng::new(ctx.seed).permutation(n);
    let gbps = |ops_per_sec: f64| ops_per_sec * len as f64 / 1e9;
    // Twice the objects: a put over an existing key needs the new block before the old goes.
    let capacity = (n as u64 * (len as u64 + 4096) * 2).max(16 << 20);
    // Inline copies are for small objects: 1 MiB values would only be read from blocks.
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|&s| s != System::ShmInline)
        .collect();
    for s in ctx.systems(&systems) {
        begin(&format!("W2 {}", s.label()));
        let mut opened = Opened::new(s, "w2", capacity, n, ctx.redis);
        ctx.note_huge_arena("W2", s, &opened);
        let mut ok = true;
        let (put, get, over, faults) = opened.with_kv(|kv| {
            let put = rate(n, |i| ok &= kv.put(&names[i], &first));
            let get = rate(n, |i| {
                ok &= kv.get(&names[order[i]]).is_some_and(|v| v.len() == len)
            });
            let faults = minor_faults();
            let over = rate(n, |i| ok &= kv.put(&names[order[i]], &second));
            let faults = minor_faults() - faults;
            (put, get, over, faults)
        });
        ctx.check(ok, || {
            format!("W2 {}: a put was refused or a get missed", s.label())
        });
        ctx.report.add(PUT, GbPerSec, s.label(), gbps(put));
        ctx.report.add(GET, GbPerSec, s.label(), gbps(get));
        ctx.report.add(OVER, GbPerSec, s.label(), gbps(over));
        if s != System::Redis {
            // Redis faults in its own process, where this one cannot count.
            let mib = (n * len) as f64 / (1 << 20) as f64;
            ctx.report
                .add(OVER_FAULTS, PerMiB, s.label(), faults as f64 / mib);
        }
    }
    let figures = [
        ("put", PUT, GbPerSec),
        ("get", GET, GbPerSec),
        ("over", OVER, GbPerSec),
    ];
    ctx.python("w2", (n, len, 0.0), &[], &figures, len as f64 / 1e9);
    if ctx.selection.limits {
        begin("W2 limits");
        let reps = n.max(64);
        let label = format!("limit: memcpy {} KiB, warm", len >> 10);
        let warm = gbps(limits::memcpy_warm(len, reps));
        ctx.report.add(GET, GbPerSec, &label, warm);
        ctx.report.add(OVER, GbPerSec, &label, warm);
        let fresh = gbps(limits::memcpy_fresh(len, reps));
        ctx.report.add(
            PUT,
            GbPerSec,
            &format!("limit: memcpy {} KiB, fresh pages", len >> 10),
            fresh,
        );
    }
}

/// Minor page faults of this process so far (`minflt` in /proc/self/stat).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // field 3, minflt field 10.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
