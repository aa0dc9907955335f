//! W5: readers. A parent fills 10,000 objects of 4 KiB; then 1 reader process, and then 2,
//! read random keys for a fixed time each. Total gets/s for 1 and 2 readers, and their ratio.

use super::{Ctx, begin};
use crate::fleet::{self, Fleet, Job, Task};
use crate::report::Unit::{OpsPerSec, Times};
use crate::systems::{Opened, System};

/// W3's systems, and shmstore with its arena on huge pages (`Options::huge_arena`): W5's
/// readers touch 4 KiB objects all over a 40 MiB arena, a page-table walk each on small
/// pages.
const SYSTEMS: [System; 5] = [
    System::Shm,
    System::ShmHuge,
    System::Map,
    System::Lmdb,
    System::Redis,
];

const ONE: &str = "W5 gets, 1 reader";
const TWO: &str = "W5 gets, 2 readers";
const SCALE: &str = "W5 2 readers / 1 reader";

pub fn run(ctx: &mut Ctx) {
    let (n, len, secs) = (ctx.sizes.w5_keys, ctx.sizes.w5_len, ctx.sizes.w5_secs);
    for s in ctx.systems(&SYSTEMS) {
        begin(&format!("W5 {}", s.label_workers()));
        let mut opened = Opened::new(
            s,
            "w5",
            (n as u64 * (len as u64 + 128) * 2).max(16 << 20),
            n,
            ctx.redis,
        );
        ctx.note_huge_arena("W5", s, &opened);
        opened.with_kv(|kv| super::w3::fill(kv, n, len));
        let task = Task {
            job: Job::Read { keys: n },
            secs,
            seed: ctx.seed,
        };
        readers(ctx, s.label_workers(), &opened.fleet(), task);
        // shmstore again with the readers as threads of this process sharing one handle:
        // its threads count in read lanes of their own (WORKLOADS.md asks for processes;
        // threads are how many users will read).
        if let (System::Shm, Opened::Shm(t, false)) = (s, &opened) {
            begin("W5 shmstore, threads");
            readers(ctx, THREADS, &Fleet::StoreThreads(t.store.clone()), task);
        }
    }
    let figures = [
        ("one", ONE, OpsPerSec),
        ("two", TWO, OpsPerSec),
        ("scale", SCALE, Times),
    ];
    ctx.python("w5", (n, len, secs), &[], &figures, 1.0);
}

/// One reader, then two, of `fleet`'s system: their gets/s and the ratio, under `label`.
fn readers(ctx: &mut Ctx, label: &str, fleet: &Fleet, task: Task) {
    let one = fleet::run(fleet, 1, task);
    let two = fleet::run(fleet, 2, task);
    let misses = one.misses + two.misses;
    ctx.check(misses == 0, || {
        format!("W5 {label}: {misses} gets missed in a filled store")
    });
    ctx.report.add(ONE, OpsPerSec, label, one.ops_per_sec);
    ctx.report.add(TWO, OpsPerSec, label, two.ops_per_sec);
    ctx.report
        .add(SCALE, Times, label, two.ops_per_sec / one.ops_per_sec);
}

/// The label of shmstore's readers as threads of one process.
const THREADS: &str = "shmstore, threads";
