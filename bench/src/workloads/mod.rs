//! The workloads of WORKLOADS.md, one per file. Each run of a workload sets every selected
//! system up fresh, measures it, and adds one value per figure to the report.

mod lru_sim;
pub mod w1;
pub mod w2;
pub mod w3;
pub mod w4;
pub mod w5;
pub mod w6;

use std::time::Instant;

use crate::peers::python::Python;
use crate::peers::redis::RedisServer;
use crate::report::{Report, Unit};
use crate::sizes::Sizes;
use crate::systems::{Opened, Selection, System};

/// Workers time one operation in this many (two clock reads each), for the p99 figures.
pub const SAMPLE_EVERY: u64 = 16;

pub const ALL: [&str; 6] = ["w1", "w2", "w3", "w4", "w5", "w6"];

pub struct Ctx<'a> {
    pub sizes: Sizes,
    pub selection: Selection,
    pub redis: Option<&'a RedisServer>,
    /// The interpreter that runs the Python original, when it can import it.
    pub python: Option<&'a Python>,
    pub report: Report,
    /// Seed of the current run: every system sees the same keys in the same order.
    pub seed: u64,
    /// The current run (0 first): where the order of the systems starts.
    pub run: usize,
}

impl Ctx<'_> {
    /// The selected systems among those `workload` supports (Redis only with a server), in
    /// an order that turns by one each run, so that no system is always measured first (on
    /// a machine still busy with the previous workload) or right after the same neighbour
    /// (whose freed pages it may reuse).
    pub fn systems(&self, supported: &[System]) -> Vec<System> {
        let mut systems: Vec<System> = supported
            .iter()
            .copied()
            .filter(|s| self.selection.has(*s) && (*s != System::Redis || self.redis.is_some()))
            .collect();
        if !systems.is_empty() {
            let turn = self.run % systems.len();
            systems.rotate_left(turn);
        }
        systems
    }

    /// Runs `workload` once on the Python original, if it was selected and can be imported,
    /// with `--keys`, `--len`, `--secs` and `--seed` from `keys`, `len`, this run and
    /// `extra`; adds one row per `(name in the script's output, figure, unit)`, each value
    /// multiplied by `scale` (1 but for W2's GB/s).
    pub fn python(
        &mut self,
        workload: &str,
        (keys, len, secs): (usize, usize, f64),
        extra: &[(&str, String)],
        figures: &[(&str, &str, Unit)],
        scale: f64,
    ) {
        let Some(py) = self.python else { return };
        let label = crate::peers::python::LABEL;
        begin(&format!("{} {label}", workload.to_uppercase()));
        let mut args = vec![
            ("--keys", keys.to_string()),
            ("--len", len.to_string()),
            ("--secs", secs.to_string()),
            ("--seed", self.seed.to_string()),
        ];
        args.extend(extra.iter().cloned());
        match py.run(workload, &args) {
            Ok(rates) => {
                for (name, figure, unit) in figures {
                    match rates.get(*name) {
                        Some(r) => self.report.add(figure, *unit, label, r * scale),
                        None => self.check(false, || {
                            format!("the Python {workload} run did not report {name}")
                        }),
                    }
                }
            }
            Err(e) => self.check(false, || e),
        }
    }

    /// Notes under the table when the `shmstore huge arena` row's store of `workload` could
    /// not have its arena on huge pages (a store under 64 MiB, as in the smoke run, or a
    /// kernel without them): that row is then a plain store.
    pub fn note_huge_arena(&mut self, workload: &str, s: System, opened: &Opened) {
        if let (System::ShmHuge, Opened::Shm(t, _)) = (s, opened)
            && !t.store.options().huge_arena
        {
            self.report.note(format!(
                "{workload}: huge_arena does not apply to this store (under 64 MiB, or no huge \
                 pages for shared memory here): its 'shmstore huge arena' row is a plain store"
            ));
        }
    }

    /// Records an anomaly (it appears under the table) instead of aborting the whole run.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("warning: {what}");
            self.report.note(format!("warning: {what}"));
        }
    }
}

/// Runs workload `id` once.
pub fn run(id: &str, ctx: &mut Ctx) {
    match id {
        "w1" => w1::run(ctx),
        "w2" => w2::run(ctx),
        "w3" => w3::run(ctx),
        "w4" => w4::run(ctx),
        "w5" => w5::run(ctx),
        "w6" => w6::run(ctx),
        _ => unreachable!("workload ids are checked when parsing"),
    }
}

/// Operations per second of `f(0) .. f(n - 1)`.
pub fn rate(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Says which system is measured next, once the machine's pool of free pages is warm (see
/// [`warm_free_pages`]), so that every system starts alike.
pub fn begin(what: &str) {
    warm_free_pages();
    eprintln!("  {what}");
}

/// Bytes of /dev/shm written and freed before each system is measured.
const WARM_BYTES: usize = 32 << 20;

/// Writes and frees [`WARM_BYTES`] of /dev/shm. On a VM that hands idle free memory back to
/// its host (free page reporting, a balloon, DAMON), the first touch of a page the host
/// took back costs a hypervisor fault: on session 11's guest, fresh tmpfs pages took ~6 us
/// each after 12 s idle against ~1.8 us when the guest had freed them just before, which
/// made a W1 put 2-3x slower in whichever system filled fresh memory first after an idle
/// spell or another system's exit. Best effort: a /dev/shm without the room is left alone.
fn warm_free_pages() {
    use std::io::Write;
    let path = format!("/dev/shm/shmstore-bench-warm-{}", std::process::id());
    if let Ok(mut f) = std::fs::File::create(&path) {
        let chunk = vec![1u8; 1 << 20];
        for _ in 0..WARM_BYTES / chunk.len() {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}
