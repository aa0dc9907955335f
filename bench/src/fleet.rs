//! Workloads with several workers: each worker is this binary run again with the hidden
//! `__worker` subcommand (it opens the store, environment or connection by name), or, for
//! the in-process map, a thread. Workers set up and say `ready`; the parent answers
//! `go START` with one start time (wall clock, ns) for all; each runs from then for a fixed
//! time and sends back its counts and a latency histogram as one JSON line.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::kv::Kv;
use crate::peers::hashmap::MutexMap;
use crate::peers::shm::ShmBytes;
use crate::rng::{Rng, mix};

/// How far ahead of the `go` line, per worker, their common start lies.
const START_AHEAD: Duration = Duration::from_millis(5);

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// The hidden subcommand a worker process runs.
pub const WORKER_ARG: &str = "__worker";

/// Where a worker process finds the system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Target {
    Shm { name: String },
    Lmdb { dir: PathBuf },
    Redis { port: u16 },
}

pub enum Fleet {
    Processes(Target),
    Threads(MutexMap),
    /// Threads of this process sharing one shmstore handle.
    StoreThreads(shmstore::Store),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Job {
    /// W3's mix: each operation a get (1/2) or a put of `value_len` bytes (1/2) on a
    /// uniformly random key of `key-000000 .. key-{keys-1}`.
    Mix { keys: usize, value_len: usize },
    /// Gets of uniformly random keys.
    Read { keys: usize },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Task {
    pub job: Job,
    pub secs: f64,
    pub seed: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub ops: u64,
    pub secs: f64,
    /// Gets that found nothing (a filled store should have none).
    pub misses: u64,
    /// Puts the store refused (a store with room for every key should refuse none).
    pub refused: u64,
    /// Latency of every `SAMPLE_EVERY`-th operation.
    pub hist: Histogram,
}

/// The fleet's totals.
pub struct Totals {
    pub ops_per_sec: f64,
    pub misses: u64,
    pub refused: u64,
    pub p99_ns: Option<f64>,
}

fn totals(outcomes: &[Outcome]) -> Totals {
    let mut hist = Histogram::default();
    for o in outcomes {
        hist.merge(&o.hist);
    }
    Totals {
        // The workers ran over the same window (they start at one moment): total over the
        // longest of them.
        ops_per_sec: outcomes.iter().map(|o| o.ops).sum::<u64>() as f64
            / outcomes
                .iter()
                .map(|o| o.secs)
                .fold(f64::MIN_POSITIVE, f64::max),
        misses: outcomes.iter().map(|o| o.misses).sum(),
        refused: outcomes.iter().map(|o| o.refused).sum(),
        p99_ns: hist.quantile(0.99),
    }
}

/// One worker's loop: prepare, wait for `go`, run `task` for its time.
pub fn work(kv: &mut dyn Kv, task: &Task, go: impl FnOnce()) -> Outcome {
    let (keys, value) = match task.job {
        Job::Mix { keys, value_len } => (
            crate::keys::keys(0, keys),
            crate::keys::value(value_len, task.seed as u8),
        ),
        Job::Read { keys } => (crate::keys::keys(0, keys), Vec::new()),
    };
    let mixed = matches!(task.job, Job::Mix { .. });
    let mut rng = Rng::new(task.seed);
    let mut out = Outcome::default();
    go();
    let (start, limit) = (Instant::now(), Duration::from_secs_f64(task.secs));
    loop {
        // The clock is read once per 64 operations, and around every SAMPLE_EVERY-th one.
        for _ in 0..64 {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let put = mixed && rng.next_u64() & 1 == 0;
            let t0 = out
                .ops
                .is_multiple_of(crate::workloads::SAMPLE_EVERY)
                .then(Instant::now);
            if put {
                if !kv.put(key, &value) {
                    out.refused += 1;
                }
            } else if kv.get(key).is_none() {
                out.misses += 1;
            }
            if let Some(t0) = t0 {
                out.hist.record(t0.elapsed().as_nanos() as u64);
            }
            out.ops += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= limit {
            out.secs = elapsed.as_secs_f64();
            return out;
        }
    }
}

/// Runs `n` workers of `task` against the fleet's system (worker `i` draws from its own
/// seed) and adds up what they did.
pub fn run(fleet: &Fleet, n: usize, task: Task) -> Totals {
    let task_of = |i: usize| Task {
        seed: mix(task.seed ^ (i as u64 + 1)),
        ..task
    };
    let outcomes = match fleet {
        Fleet::Processes(target) => run_processes(target, (0..n).map(task_of).collect()),
        Fleet::Threads(map) => run_threads(n, task_of, || map.clone()),
        Fleet::StoreThreads(store) => run_threads(n, task_of, || ShmBytes(store.clone())),
    };
    totals(&outcomes)
}

/// `n` worker threads, each with its own `Kv` from `make`, started together.
fn run_threads<K: Kv + Send + 'static>(
    n: usize,
    task_of: impl Fn(usize) -> Task,
    make: impl Fn() -> K,
) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (mut kv, barrier, task) = (make(), Arc::clone(&barrier), task_of(i));
            std::thread::spawn(move || {
                work(&mut kv, &task, || {
                    barrier.wait();
                })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("worker thread panicked"))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Spec {
    target: Target,
    task: Task,
}

/// A worker process; killed if still running when dropped (the parent panicked).
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(spec: &Spec) -> Worker {
        let exe = std::env::current_exe().expect("path of this executable");
        let mut child = Command::new(exe)
            .arg(WORKER_ARG)
            .arg(serde_json::to_string(spec).expect("spec as JSON"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a worker process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Worker {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading a worker's output");
        assert!(
            !line.is_empty(),
            "a worker process exited early (see its message above)"
        );
        line
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_processes(target: &Target, tasks: Vec<Task>) -> Vec<Outcome> {
    let mut workers: Vec<Worker> = tasks
        .into_iter()
        .map(|task| {
            Worker::spawn(&Spec {
                target: target.clone(),
                task,
            })
        })
        .collect();
    for w in &mut workers {
        assert_eq!(
            w.line().trim(),
            "ready",
            "unexpected first line from a worker"
        );
    }
    // All start at one moment a little ahead, so that the last one told is not behind.
    let start = unix_ns() + START_AHEAD.as_nanos() as u64 * workers.len() as u64;
    for w in &mut workers {
        let mut stdin = w.stdin.take().expect("stdin still open");
        writeln!(stdin, "go {start}").expect("starting a worker");
    }
    let outcomes = workers
        .iter_mut()
        .map(|w| serde_json::from_str(&w.line()).expect("a worker's result as JSON"))
        .collect();
    for w in &mut workers {
        let status = w.child.wait().expect("waiting for a worker");
        assert!(status.success(), "a worker process failed ({status})");
    }
    outcomes
}

/// The worker process's side: `__worker SPEC`.
pub fn worker_main(spec: &str) {
    let spec: Spec = serde_json::from_str(spec).expect("worker spec");
    let go = || {
        let mut out = std::io::stdout().lock();
        out.write_all(b"ready\n")
            .and_then(|()| out.flush())
            .expect("writing to the parent");
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .expect("reading from the parent");
        let Some(start) = line
            .trim()
            .strip_prefix("go ")
            .and_then(|t| t.parse::<u64>().ok())
        else {
            // The parent went away before starting us.
            std::process::exit(1);
        };
        std::thread::sleep(Duration::from_nanos(start.saturating_sub(unix_ns())));
    };
    let outcome = match &spec.target {
        Target::Shm { name } => {
            let store =
                shmstore::Store::open(name).unwrap_or_else(|e| panic!("opening store {name}: {e}"));
            work(&mut crate::peers::shm::ShmBytes(store), &spec.task, go)
        }
        Target::Lmdb { dir } => crate::peers::lmdb::with_env(dir, |kv| work(kv, &spec.task, go)),
        Target::Redis { port } => work(
            &mut crate::peers::redis::RedisKv::connect(*port),
            &spec.task,
            go,
        ),
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("outcome as JSON")
    );
}
