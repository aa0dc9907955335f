//! The Python original, `mt.base.object_store` (package `mtbase`): a dictionary served by a
//! `multiprocessing` manager process. It cannot be driven call by call from Rust without
//! timing a second round trip of our own, so `bench/python/mt_object_store.py` runs W1-W3
//! in the interpreter and prints operations per second as one JSON object.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
        return Err(format!(
            "{interpreter} cannot import mt.base.object_store; install it with \
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
    /// Runs `workload` (`w1`, `w2` or `w3`) once with `args` (`--keys`, `--len`, ...): the
    /// rates it printed, by name, or what went wrong.
    pub fn run(&self, workload: &str, args: &[(&str, String)]) -> Result<Rates, String> {
        run_script(&self.interpreter, &[], workload, args)
    }
}

/// Operations per second, by the script's names for them ("put", "get", ...).
pub type Rates = BTreeMap<String, f64>;

/// Runs the script in `interpreter` with `env` added to the environment.
pub fn run_script(
    interpreter: &str,
    env: &[(&str, &std::path::Path)],
    workload: &str,
    args: &[(&str, String)],
) -> Result<Rates, String> {
    let mut cmd = Command::new(interpreter);
    cmd.arg(script()).arg(workload).stdin(Stdio::null());
    for (flag, value) in args {
        cmd.arg(flag).arg(value);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {interpreter}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the Python {workload} run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let rates: Rates = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "the Python {workload} run printed no JSON object of rates ({e}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })?;
    match rates.iter().find(|(_, r)| !(r.is_finite() && **r > 0.0)) {
        Some((name, r)) => Err(format!("the Python {workload} run gave {name} = {r}")),
        None => Ok(rates),
    }
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
import multiprocessing
_manager = None
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

    /// A directory holding the stand-in package, removed on drop.
    struct StandIn(PathBuf);

    impl StandIn {
        fn new(answers_wrong: bool) -> StandIn {
            let dir = std::env::temp_dir().join(format!(
                "shmstore-bench-py-{}-{answers_wrong}",
                std::process::id()
            ));
            let base = dir.join("mt/base");
            std::fs::create_dir_all(&base).unwrap();
            std::fs::write(dir.join("mt/__init__.py"), "").unwrap();
            std::fs::write(base.join("__init__.py"), "").unwrap();
            let mut module = STAND_IN.to_owned();
            if answers_wrong {
                module = module.replace("return key in store", "return False");
            }
            std::fs::write(base.join("object_store.py"), module).unwrap();
            StandIn(dir)
        }
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
        let dir = StandIn::new(false);
        let env = [("PYTHONPATH", dir.0.as_path())];
        for (workload, names) in [
            ("w1", &["get", "has", "miss", "put", "remove"][..]),
            ("w2", &["get", "over", "put"][..]),
            ("w3", &["total"][..]),
        ] {
            let rates = run_script(&py, &env, workload, &args(50, 64))
                .unwrap_or_else(|e| panic!("{workload}: {e}"));
            assert_eq!(rates.keys().collect::<Vec<_>>(), names, "{workload}");
        }
    }

    #[test]
    fn the_script_fails_when_the_store_answers_wrongly() {
        let Some(py) = python3() else { return };
        let dir = StandIn::new(true);
        let env = [("PYTHONPATH", dir.0.as_path())];
        let err = run_script(&py, &env, "w1", &args(20, 8)).unwrap_err();
        assert!(err.contains("wrong answer"), "{err}");
    }
}
