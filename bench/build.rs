//! Records which commit of shmstore the harness was built from (with `-dirty` when the work
//! tree had changes), so that a results file says what it measured. `unknown` outside git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    // A commit, a checkout or a change to any source file may change the answer.
    for path in ["../.git/HEAD", "../.git/index", "../src", "src"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{c}{}", if dirty { "-dirty" } else { "" })
        }
        _ => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=SHMSTORE_BENCH_COMMIT={commit}");
}
