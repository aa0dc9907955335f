//! End-to-end tests of the `shmstore` command: each runs the built binary.
//!
//! Every store name is unique (pid and a counter) and is removed by a guard when the test
//! ends, also when it fails. Only `gc --prefix` is used, so that stores of other tests
//! running at the same time are never touched.

mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use shmstore::Store;

const BIN: &str = env!("CARGO_BIN_EXE_shmstore");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses; removed from /dev/shm when dropped.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        Name(format!(
            "cli-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A store made with `shmstore create` (so this process holds no handle on it).
    fn store(tag: &str, capacity: &str, extra: &[&str]) -> Name {
        let n = Name::new(tag);
        let mut args = vec![
            "create",
            n.as_str(),
            "--capacity",
            capacity,
            "--min-free",
            "0",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        n
    }

    fn as_str(&self) -> &str {
        &self.0
    }

    fn path(&self) -> std::path::PathBuf {
        common::segment_path(&self.0)
    }

    fn exists(&self) -> bool {
        self.path().exists()
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if Store::destroy(&self.0).is_err() {
            let _ = std::fs::remove_file(self.path());
        }
    }
}

/// A child process, killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shmstore");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "shmstore {}: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    ok_in(args, b"")
}

fn ok_in(args: &[&str], stdin: &[u8]) -> String {
    let out = run(args, stdin);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command with `--format json` that must succeed; its output parsed.
fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    serde_json::from_str(&ok(&all))
        .unwrap_or_else(|e| panic!("shmstore {all:?} printed no JSON: {e}"))
}

/// Runs a command that must fail with `code`; its stderr.
fn fails(args: &[&str], code: i32) -> String {
    let out = run(args, b"");
    assert_eq!(out.status.code(), Some(code), "{}", describe(args, &out));
    String::from_utf8(out.stderr).unwrap()
}

/// Writes junk over everything after the header (ten pages): the header still opens, the
/// rest is broken.
fn scribble(n: &Name) {
    let mut bytes = std::fs::read(n.path()).unwrap();
    bytes[10 * 4096..].fill(0xab);
    std::fs::write(n.path(), bytes).unwrap();
}

/// Waits (with a watchdog, not a time limit on the test) until `pid` has the store open.
fn wait_until_open_by(n: &Name, pid: u32) {
    let start = Instant::now();
    loop {
        let s = json(&["stat", n.as_str()]);
        if s["pids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_u64() == Some(pid as u64))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "watchdog: pid {pid} never opened {}",
            n.0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has exited but not been reaped (its /proc/PID/stat read as bytes: the
/// command name in it need not be UTF-8).
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.iter()
        .rposition(|&b| b == b')')
        .and_then(|i| stat[i + 1..].iter().find(|b| !b.is_ascii_whitespace()))
        == Some(&b'Z')
}

/// A `shmstore top` process: a long-lived user of the store.
fn user(n: &Name) -> Kid {
    user_as(n, std::path::Path::new(BIN))
}

/// [`user`] run through `exe` (a link to the binary: the process then has its name).
fn user_as(n: &Name, exe: &std::path::Path) -> Kid {
    let child = Command::new(exe)
        .args(["top", n.as_str(), "--iterations", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kid = Kid(child);
    wait_until_open_by(n, kid.0.id());
    kid
}

#[test]
fn create_text_and_json() {
    let n = Name::new("create");
    let out = ok(&["create", n.as_str(), "--capacity", "64MiB"]);
    assert!(
        out.contains("created store") && out.contains("64 MiB") && out.contains("rotate"),
        "{out}"
    );
    assert!(out.contains("0600") && !out.contains("inline"), "{out}");
    assert!(fails(&["create", n.as_str(), "--capacity", "1MiB"], 1).contains("already exists"));
    let i = Name::new("create-inline");
    let err = fails(
        &[
            "create",
            i.as_str(),
            "--capacity",
            "1MiB",
            "--inline-values",
            "2000",
        ],
        1,
    );
    assert!(
        err.contains("inline_values") && err.contains("1016"),
        "{err}"
    );
    let out = ok(&[
        "create",
        i.as_str(),
        "--capacity",
        "1MiB",
        "--inline-values",
        "56",
    ]);
    assert!(out.contains("copied inline up to 56 bytes"), "{out}");

    // --huge-arena where it applies (64 MiB and more, where the kernel has huge pages for
    // shared memory), and not on a small store.
    let h = Name::new("create-huge");
    let out = ok(&["create", h.as_str(), "--capacity", "64MiB", "--huge-arena"]);
    let applies = common::huge_pages_are_2_mib();
    assert_eq!(
        out.contains("capacity 64 MiB (huge-page arena)"),
        applies,
        "{out}"
    );
    assert_eq!(json(&["stat", h.as_str()])["huge_arena"], applies);
    assert_eq!(
        ok(&["stat", h.as_str()]).contains("(huge-page arena)"),
        applies
    );
    let small = Name::new("create-huge-small");
    let v = json(&[
        "create",
        small.as_str(),
        "--capacity",
        "1MiB",
        "--huge-arena",
    ]);
    assert_eq!(
        v["huge_arena"], false,
        "a 1 MiB arena commits in small pages"
    );
    let small_text = Name::new("create-huge-text");
    let out = ok(&[
        "create",
        small_text.as_str(),
        "--capacity",
        "63MiB",
        "--huge-arena",
    ]);
    assert!(out.contains("--huge-arena ignored"), "{out}");

    let m = Name::new("create-json");
    let v = json(&[
        "create",
        m.as_str(),
        "--capacity",
        "512KiB",
        "--policy",
        "strict",
        "--min-free",
        "0.5",
        "--inline-values",
        "100",
        "--group",
    ]);
    assert_eq!(v["name"], m.as_str());
    assert_eq!(v["inline_values"], 120, "records are whole cache lines");
    assert_eq!(v["capacity"], 512 << 10);
    assert_eq!(v["put_policy"], "strict");
    assert_eq!(v["min_free_mem_pct"], 0.5);
    assert_eq!(v["mode"], "0660");
    assert_eq!(v["huge_arena"], false);
    let s = json(&["stat", m.as_str()]);
    assert_eq!(s["put_policy"], "strict");
    assert_eq!(s["capacity"], 512 << 10);
}

#[test]
fn bad_size_policy_and_options_are_refused() {
    let n = Name::new("bad");
    for bad in ["12parsecs", "GiB", "-5", "1e6", ""] {
        let err = fails(&["create", n.as_str(), &format!("--capacity={bad}")], 2);
        assert!(
            err.contains("is not a size") && err.contains("64MiB"),
            "{err}"
        );
    }
    let err = fails(
        &[
            "create",
            n.as_str(),
            "--capacity",
            "1MiB",
            "--policy",
            "lru",
        ],
        2,
    );
    assert!(err.contains("rotate") && err.contains("strict"), "{err}");
    // Out of range, above or below (a negative fraction is the store's error too, not a
    // command line that does not parse).
    for bad in ["2", "-0.1"] {
        let args = [
            "create",
            n.as_str(),
            "--capacity",
            "1MiB",
            "--min-free",
            bad,
        ];
        let err = fails(&args, 1);
        assert!(
            err.contains("min_free_mem_pct") && err.contains("0..=1"),
            "{bad}: {err}"
        );
    }
    let err = fails(&["create", n.as_str(), "--capacity", "0"], 1);
    assert!(err.contains("capacity"), "{err}");
    // Not a number of seconds (exit 2, the command line), or out of the store's range (1).
    for (bad, code, says) in [
        ("-1", 2, "seconds"),
        ("soon", 2, "seconds"),
        ("NaN", 2, "seconds"),
        ("7200", 1, "1 h"),
    ] {
        let args = [
            "create",
            n.as_str(),
            "--capacity",
            "1MiB",
            "--lock-timeout",
            bad,
        ];
        let err = fails(&args, code);
        assert!(err.contains(says), "{bad}: {err}");
    }
    assert!(!n.exists(), "a refused create left {}", n.path().display());
    // Plain byte counts and decimal units work.
    let v = json(&["create", n.as_str(), "--capacity", "1000000"]);
    assert!(v["capacity"].as_u64().unwrap() >= 1_000_000);
    assert_eq!(v["lock_timeout_s"].as_f64(), Some(30.0));
    let m = Name::new("timeout");
    let v = json(&[
        "create",
        m.as_str(),
        "--capacity",
        "1MiB",
        "--lock-timeout",
        "0.25",
    ]);
    assert_eq!(v["lock_timeout_s"].as_f64(), Some(0.25));
    let store = Store::open(m.as_str()).unwrap();
    assert_eq!(
        store.options().lock_timeout,
        std::time::Duration::from_millis(250)
    );
}

#[test]
fn put_get_keys_rm() {
    let n = Name::store("data", "1MiB", &[]);
    let name = n.as_str();
    let blob = [0u8, 1, 2, 0xfe, 0xff, b'\n'];
    let out = ok_in(&["put", name, "img/1"], &blob);
    assert!(out.contains("stored 6 B"), "{out}");
    ok_in(&["put", name, "img/2"], b"second");
    let v: Value =
        serde_json::from_str(&ok_in(&["put", name, "txt", "--format", "json"], b"hello")).unwrap();
    assert_eq!(
        (v["stored"].as_bool(), v["size"].as_u64()),
        (Some(true), Some(5))
    );

    // Raw bytes, hex, JSON.
    let raw = run(&["get", name, "img/1"], b"");
    assert!(raw.status.success());
    assert_eq!(raw.stdout, blob);
    assert_eq!(ok(&["get", name, "img/1", "--hex"]), "000102feff0a\n");
    let v = json(&["get", name, "txt"]);
    assert_eq!(
        (v["size"].as_u64(), v["hex"].as_str(), v["text"].as_str()),
        (Some(5), Some("68656c6c6f"), Some("hello"))
    );
    assert!(
        json(&["get", name, "img/1"])["text"].is_null(),
        "not UTF-8: no text"
    );
    // Replacing keeps one object.
    ok_in(&["put", name, "txt"], b"hello again");
    assert_eq!(ok(&["get", name, "txt"]), "hello again");

    assert_eq!(ok(&["keys", name]), "img/1\nimg/2\ntxt\n");
    assert_eq!(ok(&["keys", name, "--prefix", "img/"]), "img/1\nimg/2\n");
    assert_eq!(
        json(&["keys", name, "--prefix", "t"]),
        serde_json::json!(["txt"])
    );

    assert!(ok(&["rm", name, "img/1"]).contains("removed"));
    assert_eq!(json(&["rm", name, "img/2"])["removed"], true);
    assert!(fails(&["rm", name, "img/2"], 1).contains("no key \"img/2\""));
    assert!(fails(&["get", name, "img/1"], 1).contains("no key \"img/1\""));
    assert_eq!(json(&["keys", name]), serde_json::json!(["txt"]));
    // An empty value is a value.
    ok_in(&["put", name, "empty"], b"");
    assert_eq!(ok(&["get", name, "empty"]), "");
    // A key with a newline stays one line of text (escaped); JSON has it exactly.
    ok_in(&["put", name, "two\nlines"], b"x");
    assert_eq!(ok(&["keys", name, "--prefix", "two"]), "two\\nlines\n");
    assert_eq!(
        json(&["keys", name, "--prefix", "two"]),
        serde_json::json!(["two\nlines"])
    );
}

#[test]
fn put_stops_reading_an_endless_stdin_at_the_capacity() {
    let n = Name::store("endless", "1MiB", &[]);
    let name = n.as_str();
    ok_in(&["put", name, "kept"], b"before");
    let args = ["put", name, "zeros"];
    // /dev/zero never ends: reading it all would grow until the process is killed.
    let out = Command::new(BIN)
        .args(args)
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .expect("run shmstore");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("larger than the store's capacity") && err.contains("nothing was stored"),
        "{err}"
    );
    assert_eq!(ok(&["keys", name]), "kept\n");
    assert_eq!(ok(&["get", name, "kept"]), "before");
}

#[test]
fn stat_text_and_json() {
    let n = Name::store("stat", "1MiB", &[]);
    let name = n.as_str();
    // No get yet: no ratio (as in `top`), not 0%.
    assert!(json(&["stat", name])["hit_ratio"].is_null());
    let text = ok(&["stat", name]);
    let row = text.lines().find(|l| l.starts_with("hit ratio")).unwrap();
    assert!(row.trim_end().ends_with('-'), "{row}");
    ok_in(&["put", name, "a"], b"0123456789");
    ok_in(&["put", name, "b"], b"xyz");
    ok(&["get", name, "a"]);
    fails(&["get", name, "missing"], 1);
    ok(&["rm", name, "b"]);

    let s = json(&["stat", name]);
    assert_eq!(s["name"], name);
    assert_eq!(s["objects"], 1);
    assert_eq!(s["value_bytes"], 10);
    assert_eq!(
        (s["hits"].as_u64(), s["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["hit_ratio"], 0.5);
    assert_eq!(
        (s["puts"].as_u64(), s["removes"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (s["evictions"].as_u64(), s["refused_puts"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        (s["lock_timeouts"].as_u64(), s["recoveries"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["capacity"], 1 << 20);
    assert_eq!(s["lock"]["state"], "free");
    assert_eq!(s["check"]["state"], "ok");
    assert_eq!(s["processes"], 0, "the CLI's own handle is not counted");
    assert_eq!(s["mode"], "0600");
    assert_eq!(s["put_policy"], "rotate");
    assert!(s["free_bytes"].as_u64().is_some());
    let frag = s["fragmentation"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&frag));
    assert!(s["creator_pid"].as_u64().unwrap() > 0);

    let text = ok(&["stat", name]);
    for want in [
        "capacity",
        "1 MiB",
        "hit ratio",
        "50.0%",
        "evictions",
        "refused puts",
        "lock timeouts",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    for want in [
        "recoveries",
        "fragmentation",
        "lock             free",
        "check            ok",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn stat_shows_evictions_and_refusals() {
    let rotate = Name::store("rotate", "4KiB", &[]);
    let strict = Name::store("strict", "4KiB", &["--policy", "strict"]);
    let kib = vec![7u8; 1000];
    for key in ["a", "b", "c", "d", "e"] {
        ok_in(&["put", rotate.as_str(), key], &kib);
    }
    let s = json(&["stat", rotate.as_str()]);
    assert!(s["evictions"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["refused_puts"], 0);

    let mut refused = 0;
    for key in ["a", "b", "c", "d", "e"] {
        let out = run(&["put", strict.as_str(), key], &kib);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("refused") && err.contains("strict"), "{err}");
            refused += 1;
        }
    }
    assert!(refused >= 1);
    // With --format json, a refused put says so on stdout as well (and still fails).
    let out = run(&["put", strict.as_str(), "f", "--format", "json"], &kib);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&["put"], &out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["stored"], false, "{said}");
    assert_eq!(said["refused"], "store_full", "{said}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    refused += 1;
    let s = json(&["stat", strict.as_str()]);
    assert_eq!(s["refused_puts"], refused);
    assert_eq!(s["evictions"], 0);
}

#[test]
fn ls_text_and_json() {
    let tag = format!(
        "cli-ls-{}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let a = Name(format!("{tag}a"));
    let b = Name(format!("{tag}b"));
    ok(&["create", a.as_str(), "--capacity", "2MiB"]);
    ok(&["create", b.as_str(), "--capacity", "1GiB", "--group"]);
    ok_in(&["put", a.as_str(), "k"], b"value");
    let junk = Name(format!("{tag}junk"));
    std::fs::write(junk.path(), b"not a store, just some bytes").unwrap();

    let v = json(&["ls", "--prefix", &tag]);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 3, "{v}");
    let find = |name: &str| {
        list.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {v}"))
    };
    let ea = find(a.as_str());
    assert_eq!(
        (ea["capacity"].as_u64(), ea["objects"].as_u64()),
        (Some(2 << 20), Some(1))
    );
    assert!(ea["used_bytes"].as_u64().unwrap() > 5);
    assert_eq!(ea["mode"], "0600");
    assert_eq!(ea["processes"], 0);
    assert!(ea["creator_pid"].as_u64().unwrap() > 0);
    assert!(ea["created_ns"].as_u64().unwrap() > 0);
    let eb = find(b.as_str());
    assert_eq!(
        (eb["capacity"].as_u64(), eb["mode"].as_str()),
        (Some(1 << 30), Some("0660"))
    );
    assert_eq!(find(junk.as_str())["problem"], "foreign");

    let text = ok(&["ls", "--prefix", &tag]);
    assert!(text.starts_with("NAME"), "{text}");
    let row = text.lines().find(|l| l.starts_with(b.as_str())).unwrap();
    assert!(row.contains("1 GiB") && row.contains("0660"), "{row}");
    assert!(text.contains("is not a shmstore store"), "{text}");

    // A file whose name would drive the terminal and split the line is shown escaped, in
    // `ls` and `gc`; JSON has it exactly.
    let odd = Name(format!("{tag}\u{1b}[31mred\nline2"));
    std::fs::write(odd.path(), b"junk").unwrap();
    let escaped = format!("{tag}\\u{{1b}}[31mred\\nline2");
    for args in [
        &["ls", "--prefix", &tag][..],
        &["gc", "--dry-run", "--prefix", &tag],
    ] {
        let text = ok(args);
        assert!(!text.contains('\u{1b}'), "{args:?}: {text:?}");
        let line = text.lines().find(|l| l.contains("red")).unwrap();
        assert!(line.contains(&escaped), "{args:?}: {line:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("line2")),
            "{args:?}: {text:?}"
        );
    }
    let v = json(&["ls", "--prefix", &tag]);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == odd.as_str()),
        "{v}"
    );
    drop(odd);

    // A live user is counted.
    let _kid = user(&a);
    let v = json(&["ls", "--prefix", a.as_str()]);
    assert_eq!(v[0]["processes"], 1, "{v}");
    assert_eq!(
        ok(&["ls", "--prefix", &format!("{tag}none")]),
        "no stores\n"
    );
}

#[test]
fn check_passes_and_fails() {
    let n = Name::store("check", "64KiB", &[]);
    for key in ["a", "b", "c"] {
        ok_in(&["put", n.as_str(), key], b"some value");
    }
    ok(&["rm", n.as_str(), "b"]);
    let out = ok(&["check", n.as_str()]);
    assert!(out.contains("passed") && out.contains("2 objects"), "{out}");
    let v = json(&["check", n.as_str()]);
    assert_eq!(
        (v["ok"].as_bool(), v["objects"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(v["free_bytes"].as_u64().is_some() && v["fragmentation"].as_f64().is_some());

    // Scribbled on: exit status 1, and the message says "corrupt".
    scribble(&n);
    let err = fails(&["check", n.as_str()], 1);
    assert!(err.contains("is corrupt"), "{err}");
    // The check only looks: a second one fails the same way.
    let again = fails(&["check", n.as_str()], 1);
    assert_eq!(err, again);
    // repair rebuilds from the arena; then the check passes again.
    let out = ok(&["repair", n.as_str()]);
    assert!(
        out.contains("passes the check") || out.contains("emptied"),
        "{out}"
    );
    ok(&["check", n.as_str()]);

    let m = Name::store("check-json", "64KiB", &[]);
    ok_in(&["put", m.as_str(), "a"], b"some value");
    scribble(&m);
    let out = run(&["check", m.as_str(), "--format", "json"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&["check"], &out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("corrupt"), "{v}");

    let c = Name::store("stat-corrupt", "64KiB", &[]);
    ok_in(&["put", c.as_str(), "a"], b"some value");
    scribble(&c);
    let out = run(&["stat", c.as_str()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is corrupt"));
}

#[test]
fn repair_says_when_the_store_was_emptied_before_it_ran() {
    let n = Name::store("emptied", "64KiB", &[]);
    for key in ["a", "b", "c"] {
        ok_in(&["put", n.as_str(), key], b"some value");
    }
    // Junk over index and arena: the chain of blocks is broken beyond repair.
    scribble(&n);
    let err = fails(&["keys", n.as_str()], 1);
    assert!(err.contains("is corrupt"), "{err}");
    // The failed command flagged the store, and the next lock holder (that command's own
    // handle, as it detached) rebuilt it: emptied already.
    let v = json(&["stat", n.as_str()]);
    assert_eq!(
        (v["objects"].as_u64(), v["resets"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let out = ok(&["repair", n.as_str()]);
    assert!(
        out.contains("0 objects (counted 0 before)")
            && out.contains("note: it has been emptied 1 time since it was created")
            && !out.contains("  "),
        "{out}"
    );
    let v = json(&["repair", n.as_str()]);
    assert_eq!(
        (v["emptied"].as_bool(), v["resets"].as_u64()),
        (Some(false), Some(1)),
        "{v}"
    );
    // A store never emptied gets no note.
    let m = Name::store("never-emptied", "64KiB", &[]);
    ok_in(&["put", m.as_str(), "a"], b"x");
    let out = ok(&["repair", m.as_str()]);
    assert!(out.contains("1 object") && !out.contains("note:"), "{out}");
}

#[test]
fn top_text_and_json() {
    let n = Name::store("top", "1MiB", &[]);
    let text = ok(&["top", n.as_str(), "--iterations", "2", "--interval", "0.2"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].contains("GETS/S") && lines[1].contains("HIT%") && lines[1].contains("MEMORY"),
        "{text}"
    );

    // With traffic from this process, the rates are not all zero.
    let store = Store::open(n.as_str()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store.put_bytes("k", &i.to_le_bytes()).unwrap();
                store.get_bytes("k").unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let out = ok(&[
        "top",
        n.as_str(),
        "--iterations",
        "3",
        "--interval",
        "0.3",
        "--format",
        "json",
    ]);
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for r in &rows {
        assert_eq!(r["name"], n.as_str());
        assert_eq!(r["capacity"], 1 << 20);
        assert_eq!(r["processes"], 1, "this test process has it open: {r}");
        assert!(
            r["memory_bytes"].as_u64().unwrap() >= 9 * 4096,
            "the header at least: {r}"
        );
        assert_eq!(r["moves_per_s"], 0.0, "{r}");
    }
    assert!(
        rows.iter().any(|r| r["puts_per_s"].as_f64().unwrap() > 0.0),
        "{out}"
    );
    assert!(rows.iter().any(|r| r["hit_ratio"] == 1.0), "{out}");
    assert!(rows.iter().all(|r| r["objects"] == 1), "{out}");
    drop(store);
    assert!(fails(&["top", n.as_str(), "--interval", "0"], 2).contains("interval"));
}

#[test]
fn destroy_text_and_json() {
    let n = Name::store("destroy", "1MiB", &[]);
    assert!(ok(&["destroy", n.as_str()]).contains("destroyed"));
    assert!(!n.exists());
    assert!(fails(&["destroy", n.as_str()], 1).contains("no store named"));
    let m = Name::store("destroy-json", "1MiB", &[]);
    let v = json(&["destroy", m.as_str()]);
    assert_eq!(v["destroyed"], true);
    assert!(!m.exists());
    // A foreign segment can be removed too.
    let j = Name::new("destroy-junk");
    std::fs::write(j.path(), b"junk").unwrap();
    let err = fails(&["create", j.as_str(), "--capacity", "1MiB"], 1);
    assert!(
        err.contains("already exists") && err.contains("why it does not open as a store"),
        "{err}"
    );
    ok(&["destroy", j.as_str()]);
    assert!(!j.exists());
}

#[test]
fn missing_foreign_and_bad_names_say_so() {
    let missing = Name::new("missing");
    let m = missing.as_str();
    let commands: [&[&str]; 8] = [
        &["stat", m],
        &["keys", m],
        &["get", m, "k"],
        &["put", m, "k"],
        &["rm", m, "k"],
        &["check", m],
        &["top", m, "--iterations", "1"],
        &["destroy", m],
    ];
    for args in commands {
        let err = fails(args, 1);
        assert!(
            err.contains(&format!("no store named \"{m}\"")) && err.contains("create it"),
            "{args:?}: {err}"
        );
    }
    assert!(!missing.exists(), "put must not create a store");
    // With --format json, the error is a JSON object too.
    let err = fails(&["stat", m, "--format", "json"], 1);
    let said: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(
        said["error"].as_str().unwrap().contains("no store named"),
        "{said}"
    );
    // And so is a command line that does not parse (exit status 2), either way of writing
    // the option.
    for args in [
        &["stat", m, "--format", "json", "--bogus"][..],
        &["--format=json", "put", m],
        &["create", m, "--capacity", "lots", "--format", "json"],
    ] {
        let err = fails(args, 2);
        let said: Value =
            serde_json::from_str(&err).unwrap_or_else(|e| panic!("{args:?}: {e}: {err}"));
        let msg = said["error"].as_str().unwrap();
        assert!(
            !msg.is_empty() && !msg.starts_with("error:"),
            "{args:?}: {said}"
        );
    }
    for args in [
        &["stat", m, "--bogus"][..],
        &["--format", "json", "--format", "text", "stat", m, "--bogus"],
        &["put", m, "--", "--format", "json"],
    ] {
        let err = fails(args, 2);
        assert!(err.starts_with("error:"), "{args:?}: text, not JSON: {err}");
    }

    // A segment with our prefix but someone else's bytes.
    let junk = Name::new("foreign");
    std::fs::write(junk.path(), [0x42u8; 8192]).unwrap();
    for args in [
        &["stat", junk.as_str()][..],
        &["keys", junk.as_str()],
        &["check", junk.as_str()],
    ] {
        let err = fails(args, 1);
        assert!(
            err.contains("is not a shmstore store") && err.contains("shmstore destroy"),
            "{err}"
        );
    }
    let err = fails(&["stat", "no/slash"], 1);
    assert!(err.contains("invalid store name"), "{err}");
    assert!(fails(&["stat"], 2).contains("NAME"));
}

#[test]
fn gc_removes_a_store_whose_only_user_was_killed() {
    let n = Name::store("gc-killed", "1MiB", &[]);
    let prefix = n.as_str();
    // A user whose process name is not UTF-8 (and holds ") Z ("): told alive, then dead,
    // all the same.
    let dir = common::TempDir::new("gc-killed");
    let exe = dir.path.join(std::ffi::OsStr::from_bytes(b"\xff) Z (shm"));
    std::os::unix::fs::symlink(BIN, &exe).unwrap();
    let mut kid = user_as(&n, &exe);
    let pid = kid.0.id();

    let v = json(&["gc", "--prefix", prefix]);
    assert_eq!(v["kept"][0]["name"], prefix, "{v}");
    assert_eq!(v["kept"][0]["pids"], serde_json::json!([pid]));
    assert!(n.exists());

    // Killed, and not reaped yet: a zombie still has a /proc entry but is no user.
    kid.0.kill().unwrap();
    let start = Instant::now();
    while !is_zombie(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "watchdog: {pid} never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let v = json(&["gc", "--dry-run", "--prefix", prefix]);
    assert_eq!(
        (v["dry_run"].as_bool(), v["removed"][0]["name"].as_str()),
        (Some(true), Some(prefix)),
        "{v}"
    );
    assert!(n.exists(), "--dry-run removed the store");
    kid.0.wait().unwrap();
    let text = ok(&["gc", "--prefix", prefix]);
    assert!(text.contains(&format!("removed {prefix}")), "{text}");
    assert!(!n.exists());
}

#[test]
fn gc_keeps_stores_in_use_and_reports_foreign_ones() {
    let tag = format!(
        "cli-gc-{}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let idle = Name(format!("{tag}idle"));
    let busy = Name(format!("{tag}busy"));
    let junk = Name(format!("{tag}junk"));
    ok(&["create", idle.as_str(), "--capacity", "1MiB"]);
    ok(&["create", busy.as_str(), "--capacity", "1MiB"]);
    std::fs::write(junk.path(), b"junk").unwrap();
    let _kid = user(&busy);

    let text = ok(&["gc", "--dry-run", "--prefix", &tag]);
    assert!(
        text.contains(&format!("would remove {}", idle.as_str())),
        "{text}"
    );
    assert!(text.contains(&format!("kept {}", busy.as_str())), "{text}");
    assert!(
        text.contains(&format!("skipped {}", junk.as_str())),
        "{text}"
    );
    assert!(idle.exists());

    let v = json(&["gc", "--prefix", &tag]);
    assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["removed"][0]["name"], idle.as_str());
    assert_eq!(v["kept"][0]["name"], busy.as_str());
    assert_eq!(
        (
            v["skipped"][0]["name"].as_str(),
            v["skipped"][0]["problem"].as_str()
        ),
        (Some(junk.as_str()), Some("foreign"))
    );
    assert!(!idle.exists());
    assert!(busy.exists() && junk.exists());
}

#[test]
fn stat_shows_who_holds_the_lock() {
    let n = Name::store("lock", "1MiB", &[]);
    ok_in(&["put", n.as_str(), "k"], b"v");
    let store = Store::open(n.as_str()).unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        // get_with holds the store's lock while its closure runs.
        store
            .get_with("k", |_| {
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
    });
    locked_rx.recv().unwrap();
    // Held for more than a second: stat reports it and does not wait to run the check.
    std::thread::sleep(Duration::from_millis(1200));
    let s = json(&["stat", n.as_str()]);
    let text = ok(&["stat", n.as_str()]);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(s["lock"]["state"], "held", "{s}");
    assert_eq!(s["lock"]["pid"], std::process::id());
    assert!(s["lock"]["held_ns"].as_u64().unwrap() >= 1_000_000_000);
    assert_eq!(s["check"]["state"], "skipped");
    assert!(s["fragmentation"].is_null());
    let pid = std::process::id();
    assert!(text.contains(&format!("held by pid {pid} for")), "{text}");
    assert_eq!(s["lock"]["holder_gone"], false);
    assert_eq!(json(&["stat", n.as_str()])["lock"]["state"], "free");

    // A holder killed while it holds the lock: stat says so and runs the check, which
    // recovers the store.
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two descriptors for pipe to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [rx, tx] = fds;
    let name = n.as_str().to_owned();
    // SAFETY: the child only opens the store, takes its lock, writes one byte to the pipe
    // and sleeps until killed; it never returns into the test harness.
    let kid = unsafe { libc::fork() };
    assert!(kid >= 0);
    if kid == 0 {
        let store = Store::open(&name).unwrap();
        let _ = store.get_with("k", |_| {
            // SAFETY: writes one byte from a live buffer to the pipe.
            unsafe { libc::write(tx, b"x".as_ptr().cast(), 1) };
            std::thread::sleep(Duration::from_secs(60));
        });
        // SAFETY: ends the child without unwinding into the harness.
        unsafe { libc::_exit(1) };
    }
    let mut byte = [0u8; 1];
    // SAFETY: reads one byte from the pipe into a live buffer.
    assert_eq!(unsafe { libc::read(rx, byte.as_mut_ptr().cast(), 1) }, 1);
    std::thread::sleep(Duration::from_millis(1200));
    // SAFETY: `kid` is this test's unreaped child.
    unsafe {
        libc::kill(kid, libc::SIGKILL);
        libc::waitpid(kid, std::ptr::null_mut(), 0);
        libc::close(rx);
        libc::close(tx);
    }
    let s = json(&["stat", n.as_str()]);
    assert_eq!(s["lock"]["pid"], kid, "{s}");
    assert_eq!(s["lock"]["holder_gone"], true, "{s}");
    assert_eq!(s["check"]["state"], "ok", "{s}");
    assert_eq!(s["recoveries"], 1, "{s}");
    assert_eq!(json(&["stat", n.as_str()])["lock"]["state"], "free");
}
