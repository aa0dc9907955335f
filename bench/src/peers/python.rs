//! The Python original, `mt.base.object_store` (package `mtbase`): a dictionary served by a
//! `multiprocessing` manager process. It cannot be driven call by call from Rust without
//! timing a second round trip of our own, so `bench/python/mt_object_store.py` runs W1-W3,
//! W5 and W6 in the interpreter and prints operations per second as one JSON object.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The Python original's rows in the table.
pub const LABEL: &str = "mt.base.object_store";

/// The environment variable naming the interpreter (`python3` on the PATH otherwise).
pub const PYTHON_VAR: &str = "SHMSTORE_BENCH_PYTHON";

/// An interpreter that can import `mt.base.object_store`.
pub struct Python {
    interpreter: String,
    /// `mtbase`'s version, as its package metadata gives it.
    pub version: String,
}

/// The interpreter to use, or why the Python original cannot be measured.
pub fn find() -> Result<Python, String> {
    let interpreter = std::env::var(PYTHON_VAR).unwrap_or_else(|_| "python3".to_owned());
    let probe = Command::new(&interpreter)
        .args([
            "-c",
            "import importlib.metadata as m, mt.base.object_store; print(m.version('mtbase'))",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {interpreter} ({e}); set {PYTHON_VAR} to a Python 3"))?;
    if !probe.status.success() {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        let why = stderr.lines().last().unwrap_or("no message");
        return Err(format!(
            "{interpreter} cannot import mt.base.object_store ({why}); install it with \
             `pip install mtbase` (or set {PYTHON_VAR} to an interpreter that has it)"
        ));
    }
    Ok(Python {
        interpreter,
        version: String::from_utf8_lossy(&probe.stdout).trim().to_owned(),
    })
}

/// Where the workload script is: beside this crate's sources.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/mt_object_store.py")
}

impl Python {
    /// Runs `workload` (`w1`, `w2`, `w3`, `w5`, `w6`) once with `args` (`--keys`, `--len`,
    /// ...): the rates it printed, by name, or what went wrong.
    pub fn run(&self, workload: &str, args: &[(&str, String)]) -> Result<Rates, String> {
        run_script(&self.interpreter, &[], workload, args, DEADLINE)
    }
}

/// Operations per second, by the script's names for them ("put", "get", ...).
pub type Rates = BTreeMap<String, f64>;

/// Longest a run of the script may take (W1 on 2,000 keys or W3 on 10,000 take seconds).
pub const DEADLINE: Duration = Duration::from_secs(600);

/// Runs the script in `interpreter` with `env` added to the environment, in a process group
/// of its own that is killed (the manager process and any worker with it) if the run takes
/// over `deadline`.
pub fn run_script(
    interpreter: &str,
    env: &[(&str, &Path)],
    workload: &str,
    args: &[(&str, String)],
    deadline: Duration,
) -> Result<Rates, String> {
    let mut cmd = Command::new(interpreter);
    cmd.arg(script()).arg(workload);
    for (flag, value) in args {
        cmd.arg(flag).arg(value);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {interpreter}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                // The leader is not reaped yet, so the group's id is still its own: this
                // signals the script's processes (its manager, its workers) and no other.
                kill_group(child.id());
                let _ = child.wait();
                break Err(format!("took over {deadline:?}: killed"));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("could not be waited for ({e})"));
            }
        }
    };
    let (stdout, stderr) = (collected(stdout), collected(stderr));
    let status =
        status.map_err(|why| format!("the Python {workload} run {why}; {}", stderr.trim()))?;
    if !status.success() {
        return Err(format!(
            "the Python {workload} run failed ({status}): {}",
            stderr.trim()
        ));
    }
    let rates: Rates = serde_json::from_str(&stdout).map_err(|e| {
        format!(
            "the Python {workload} run printed no JSON object of rates ({e}): {}",
            stdout.trim()
        )
    })?;
    match rates.iter().find(|(_, r)| !(r.is_finite() && **r > 0.0)) {
        Some((name, r)) => Err(format!("the Python {workload} run gave {name} = {r}")),
        None => Ok(rates),
    }
}

/// A thread reading `pipe` to its end, and sending what it read.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// What a [`drain`] thread read. The pipe closes once the script and everything it started
/// have exited; a process that left the script's group could keep it open, so this waits
/// briefly and leaves that thread behind rather than wait for good.
fn collected(reader: Receiver<String>) -> String {
    reader
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default()
}

/// SIGKILL to the process group `pgid` (a script run's: its leader's pid).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory
    // of this process. The caller has not reaped the group's leader (the script, spawned
    // with `process_group(0)`), so the id cannot have been reused.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    //! The script against a stand-in for `mt.base.object_store` (a dictionary served by a
    //! `multiprocessing` manager, with the original's functions and answers), so that CI
    //! checks the script's logic without installing `mtbase` and its dependencies. The
    //! figures it gives mean nothing; that the script runs, checks every answer and prints
    //! positive rates for every figure is what is tested.

    use super::*;

    const STAND_IN: &str = r#"
import multiprocessing, os, time
_manager = None
_creator = os.getpid()
def create(min_free_mem_pct=0.2, put_policy="rotate"):
    global _manager
    if _manager is None:
        _manager = multiprocessing.Manager()
    return _manager.dict()
def put(store, key, value):
    store[key] = value
    return True
def get(store, key, default_value=None):
    return store.get(key, default_value)
def has(store, key):
    return key in store
def remove(store, key):
    return store.pop(key, None) is not None
def count(store):
    return len(store)
"#;

    /// How the stand-in misbehaves, if it does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fault {
        None,
        /// `has` says no to every key.
        WrongAnswers,
        /// `put` raises in any process but the one that created the store (W3's workers),
        /// as the original's does when its lock times out.
        WorkersRaise,
        /// `create` starts its manager process, writes the manager's pid to the file
        /// `$STAND_IN_PID_FILE`, then never returns.
        Stuck,
    }

    /// A directory holding the stand-in package, removed on drop.
    struct StandIn(PathBuf);

    impl StandIn {
        fn new(fault: Fault) -> StandIn {
            let dir = std::env::temp_dir().join(format!(
                "shmstore-bench-py-{}-{fault:?}",
                std::process::id()
            ));
            let base = dir.join("mt/base");
            std::fs::create_dir_all(&base).unwrap();
            std::fs::write(dir.join("mt/__init__.py"), "").unwrap();
            std::fs::write(base.join("__init__.py"), "").unwrap();
            let module = match fault {
                Fault::None => STAND_IN.to_owned(),
                Fault::WrongAnswers => STAND_IN.replace("return key in store", "return False"),
                Fault::WorkersRaise => STAND_IN.replace(
                    "    store[key] = value\n",
                    "    if os.getpid() != _creator:\n        raise TimeoutError('lock')\n    store[key] = value\n",
                ),
                Fault::Stuck => STAND_IN.replace(
                    "    return _manager.dict()\n",
                    "    with open(os.environ['STAND_IN_PID_FILE'], 'w') as f:\n        \
                     f.write(str(_manager._process.pid))\n    time.sleep(3600)\n",
                ),
            };
            assert!(
                fault == Fault::None || module != STAND_IN,
                "{fault:?} changed nothing"
            );
            std::fs::write(base.join("object_store.py"), module).unwrap();
            StandIn(dir)
        }

        /// Where the `Stuck` stand-in writes its manager's pid.
        fn pid_file(&self) -> PathBuf {
            self.0.join("manager.pid")
        }

        fn run(&self, py: &str, workload: &str, deadline: Duration) -> Result<Rates, String> {
            let pid_file = self.pid_file();
            let env = [
                ("PYTHONPATH", self.0.as_path()),
                ("STAND_IN_PID_FILE", pid_file.as_path()),
            ];
            run_script(py, &env, workload, &args(50, 64), deadline)
        }
    }

    /// What the script says when run on a stand-in with `fault` (`None` where there is no
    /// python3 to run it).
    fn failure(fault: Fault, workload: &str, deadline: Duration) -> Option<(String, StandIn)> {
        let py = python3()?;
        let stand_in = StandIn::new(fault);
        let err = stand_in.run(&py, workload, deadline).unwrap_err();
        Some((err, stand_in))
    }

    impl Drop for StandIn {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn python3() -> Option<String> {
        let ok = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("python3 is not installed: the Python workload script is not tested");
        }
        ok.then(|| "python3".to_owned())
    }

    fn args(keys: usize, len: usize) -> Vec<(&'static str, String)> {
        vec![
            ("--keys", keys.to_string()),
            ("--len", len.to_string()),
            ("--secs", "0.2".to_owned()),
            ("--seed", "3".to_owned()),
        ]
    }

    #[test]
    fn the_script_runs_every_workload_and_reports_each_figure() {
        let Some(py) = python3() else { return };
        let stand_in = StandIn::new(Fault::None);
        for (workload, names) in [
            ("w1", &["get", "has", "miss", "put", "remove"][..]),
            ("w2", &["get", "over", "put"][..]),
            ("w3", &["total"][..]),
            ("w5", &["one", "scale", "two"][..]),
            ("w6", &["total"][..]),
        ] {
            let rates = stand_in
                .run(&py, workload, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{workload}: {e}"));
            assert_eq!(rates.keys().collect::<Vec<_>>(), names, "{workload}");
        }
    }

    #[test]
    fn the_script_fails_when_the_store_answers_wrongly() {
        let Some((err, _)) = failure(Fault::WrongAnswers, "w1", Duration::from_secs(60)) else {
            return;
        };
        assert!(err.contains("wrong answer"), "{err}");
    }

    #[test]
    fn a_failing_w3_worker_fails_the_run_instead_of_hanging_it() {
        let Some((err, _)) = failure(Fault::WorkersRaise, "w3", Duration::from_secs(60)) else {
            return;
        };
        assert!(
            err.contains("a W3 worker failed") && err.contains("TimeoutError"),
            "{err}"
        );
    }

    #[test]
    fn a_run_past_its_deadline_is_killed_with_its_processes() {
        // Returning at all shows the script was killed: the stand-in sleeps for an hour.
        let Some((err, stand_in)) = failure(Fault::Stuck, "w1", Duration::from_secs(3)) else {
            return;
        };
        assert!(err.contains("took over"), "{err}");
        // So was the manager process it had started (killed, or a zombie nobody reaps).
        let pid = std::fs::read_to_string(stand_in.pid_file()).expect("the stand-in wrote its pid");
        let stat = format!("/proc/{}/stat", pid.trim());
        let gone = || {
            std::fs::read_to_string(&stat).map_or(true, |s| {
                s.rsplit(") ").next().is_some_and(|f| f.starts_with('Z'))
            })
        };
        let mut waited = 0;
        while !gone() && waited < 100 {
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        assert!(gone(), "the manager {} outlived the kill", pid.trim());
    }
}
