//! `shmstore-bench`: the workloads of WORKLOADS.md against shmstore and its peers, one table.
//!
//! `cargo run --release -p shmstore-bench -- all` runs everything (median of 3 runs);
//! `-- all --smoke` is the few-second check CI runs. See `docs/performance.md`.

mod cli;
mod cpu;
mod fleet;
mod histogram;
mod keys;
mod kv;
mod peers;
mod report;
mod rng;
mod sizes;
mod systems;
mod workloads;
mod zipf;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::peers::python as python_peer;
use crate::peers::redis::{self as redis_peer, RedisServer};
use crate::report::{Report, Unit};
use crate::sizes::Sizes;
use crate::systems::System;
use crate::workloads::Ctx;

/// Set by build.rs.
const COMMIT: &str = env!("SHMSTORE_BENCH_COMMIT");

#[derive(Serialize)]
struct Output<'a> {
    command: Vec<String>,
    /// The shmstore commit the harness was built from (`-dirty`: with uncommitted changes).
    commit: &'static str,
    unix_time: u64,
    machine: Machine,
    runs: usize,
    smoke: bool,
    seed: u64,
    sizes: Sizes,
    redis_version: Option<String>,
    /// `mtbase`'s version, when the Python original was measured.
    mtbase_version: Option<String>,
    figures: &'a [report::Figure],
    notes: &'a [String],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    /// 1-minute load average when the run started and when it ended (it counts the
    /// harness's own workers, and tasks waiting for I/O: see `others_cpu`).
    load_at_start: f64,
    load_at_end: f64,
    /// The share of one CPU that others (other processes, kernel threads, the hypervisor's
    /// other guests as steal time) used during the run (`cpu.rs`): what skews the figures,
    /// the multi-process ones most.
    others_cpu: f64,
}

fn load_average() -> f64 {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn machine(load_at_start: f64, others_cpu: f64) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        load_at_start,
        load_at_end: load_average(),
        others_cpu,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(fleet::WORKER_ARG) {
        fleet::worker_main(argv.get(2).expect("worker spec"));
        return;
    }
    let args = match cli::parse(argv.iter().skip(1).cloned()) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{}", cli::USAGE);
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let started = Instant::now();
    let load_at_start = load_average();
    let cpu_at_start = cpu::sample();
    let mut report = Report::default();
    if cfg!(debug_assertions) {
        report.note("built without optimisations: use --release for figures that mean anything");
    }
    let redis = if args.selection.has(System::Redis) {
        match redis_peer::unavailable() {
            None => Some(RedisServer::start()),
            Some(why) => {
                eprintln!("skipping Redis: {why}");
                report.note(format!("Redis skipped: {why}"));
                None
            }
        }
    } else {
        None
    };
    let python = if args.selection.python {
        match python_peer::find() {
            Ok(p) => Some(p),
            Err(why) => {
                eprintln!("skipping the Python original: {why}");
                report.note(format!(
                    "Python original (mt.base.object_store) skipped: {why}"
                ));
                None
            }
        }
    } else {
        None
    };
    let sizes = if args.smoke {
        Sizes::SMOKE
    } else {
        Sizes::FULL
    };
    let mut ctx = Ctx {
        sizes,
        selection: args.selection.clone(),
        redis: redis.as_ref(),
        python: python.as_ref(),
        report,
        seed: args.seed,
        run: 0,
    };
    for id in &args.workloads {
        for run in 0..args.runs {
            eprintln!("{id} run {}/{}", run + 1, args.runs);
            ctx.seed = rng::mix(args.seed ^ ((run as u64) << 32));
            ctx.run = run;
            ctx.report.run = run;
            workloads::run(id, &mut ctx);
        }
    }
    let mut report = ctx.report;
    report.finish();
    own_w3_share(&mut report, &sizes);
    // The server stopped and reaped first, so that its CPU time counts as the harness's own.
    let redis_version = redis.as_ref().map(|r| r.version.clone());
    drop(redis);
    let others_cpu = cpu::others_share(cpu_at_start, cpu::sample());
    if others_cpu > 0.1 {
        report.note(format!(
            "others (processes, kernel threads, other guests' steal) used {:.0}% of a CPU during the run: figures are noisy",
            others_cpu * 100.0
        ));
    }
    let table = report.table();
    println!("shmstore at {COMMIT}\n{table}");
    for n in &report.notes {
        println!("note: {n}");
    }
    let out = Output {
        command: argv,
        commit: COMMIT,
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: machine(load_at_start, others_cpu),
        runs: args.runs,
        smoke: args.smoke,
        seed: args.seed,
        sizes,
        redis_version,
        mtbase_version: python.as_ref().map(|p| p.version.clone()),
        figures: &report.figures,
        notes: &report.notes,
    };
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let json = serde_json::to_string_pretty(&out).expect("results as JSON");
    std::fs::write(&args.json, json)
        .unwrap_or_else(|e| panic!("writing {}: {e}", args.json.display()));
    println!(
        "results written to {} ({:.0} s)",
        args.json.display(),
        started.elapsed().as_secs_f64()
    );
    // The smoke run is CI's check that every workload still works on every system: a
    // wrong answer (a miss in a filled store, a refused put, a figure not reported) fails it.
    let warnings = report
        .notes
        .iter()
        .filter(|n| n.starts_with("warning:"))
        .count();
    if args.smoke && warnings > 0 {
        eprintln!("smoke run: {warnings} warning(s) above: the harness or a system misbehaves");
        std::process::exit(1);
    }
}

/// W6's total as a share of the same system's W3 total (medians), when both ran.
fn own_w3_share(report: &mut Report, sizes: &Sizes) {
    let w3 = &workloads::w3::figures("W3", 2).0;
    let w6 = workloads::w3::figures("W6", sizes.w6_procs).0;
    let Some(fig) = report.figures.iter().find(|f| f.figure == w6) else {
        return;
    };
    let shares: Vec<(String, f64)> = fig
        .rows
        .iter()
        .filter_map(|r| Some((r.system.clone(), r.median / report.median(w3, &r.system)?)))
        .collect();
    for (system, share) in shares {
        report.add(
            "W6 total / own W3 total",
            Unit::Percent,
            &system,
            100.0 * share,
        );
    }
    report.finish();
}
