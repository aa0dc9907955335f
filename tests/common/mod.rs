//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use shmstore::{Options, Store};

/// A store with a unique name, destroyed when dropped (also when the test panics).
pub struct TempStore {
    pub name: String,
    pub store: Store,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The file behind store `name` (/dev/shm/shmstore.NAME).
pub fn segment_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/dev/shm/shmstore.{name}"))
}

/// What `/proc/self/smaps` says of this process's mapping of store `name`: where it starts
/// and how many KiB of it are mapped by huge-page entries.
pub fn mapping_of(name: &str) -> (usize, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let file = segment_path(name).display().to_string();
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        if !line.ends_with(&file) {
            continue;
        }
        let start = usize::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
        for field in lines.by_ref() {
            if let Some(v) = field.strip_prefix("ShmemPmdMapped:") {
                let kib = v.trim().trim_end_matches("kB").trim().parse().unwrap();
                return (start, kib);
            }
        }
        panic!("no ShmemPmdMapped line for {file} in /proc/self/smaps");
    }
    panic!("{file} is not mapped in this process");
}

/// Whether the kernel, asked now, puts `kib` KiB of this process's mapping of store `name`
/// from `from_kib` KiB on on huge pages (`MADV_COLLAPSE`): the yardstick for what the store
/// could have got. It refuses where huge pages are denied or disabled for this process, on
/// kernels before 6.1, when no huge page is free, and on a range with a hole.
pub fn kernel_collapses(name: &str, from_kib: u64, kib: u64) -> bool {
    let (start, _) = mapping_of(name);
    let at = start + from_kib as usize * 1024;
    // SAFETY (test): the range lies in this process's mapping of the store (callers stay
    // inside the segment); the advice keeps every byte as it is.
    let rc = unsafe { libc::madvise(at as *mut libc::c_void, kib as usize * 1024, 25) };
    if rc != 0 {
        let why = std::io::Error::last_os_error();
        eprintln!("this kernel does not put the store on huge pages ({why}): alignment only");
    }
    rc == 0
}

/// Whether shared memory can have huge pages here, of the 2 MiB these tests count in (stores
/// are laid out without them otherwise).
pub fn huge_pages_are_2_mib() -> bool {
    let size = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    let usable = size.is_ok_and(|s| s.trim() == "2097152") && shared_memory_has_huge_pages();
    if !usable {
        eprintln!("no 2 MiB huge pages for shared memory here: not tested");
    }
    usable
}

/// Whether the library lays stores out for huge pages here: the kernel has transparent huge
/// pages for shared memory (the sysfs files exist, shmem's setting is not `deny`) and
/// `MADV_COLLAPSE` (Linux 6.1).
pub fn shared_memory_has_huge_pages() -> bool {
    let dir = "/sys/kernel/mm/transparent_hugepage";
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
    let collapse = matches!((number(), number()), (Some(a), Some(b)) if (a, b) >= (6, 1));
    collapse
        && std::fs::read_to_string(format!("{dir}/hpage_pmd_size")).is_ok()
        && std::fs::read_to_string(format!("{dir}/shmem_enabled"))
            .is_ok_and(|s| !s.contains("[deny]"))
}

/// A name no other test (or test process) uses.
pub fn unique_name(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-{tag}-{}-{n}-{nanos}", std::process::id())
}

impl TempStore {
    pub fn new(tag: &str, options: Options) -> TempStore {
        let name = unique_name(tag);
        let store = Store::create(&name, options).expect("create a test store");
        TempStore { name, store }
    }
}

impl std::ops::Deref for TempStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.name);
    }
}

/// Removes a name when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// Options for tests: no memory threshold (the machine's memory must not decide a test).
pub fn opts(capacity: u64) -> Options {
    Options::default().capacity(capacity).min_free_mem_pct(0.0)
}

// ---- Real child processes (tests/cross_process.rs, tests/crash.rs) ---------------------------

/// Environment variable naming the role a re-run test binary plays (absent in a normal run).
pub const ROLE_VAR: &str = "SHMSTORE_TEST_ROLE";
/// Environment variable naming the store a child process works on.
pub const STORE_VAR: &str = "SHMSTORE_TEST_STORE";

/// The role this process was started in by [`ChildProc::spawn`]; `None` in a normal test run,
/// where a child's test function must return at once.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The store a child process started in `role` works on, opened by name; `None` in a normal
/// test run (or in another role), where the child's test function returns at once.
pub fn child_store(role: &str) -> Option<Store> {
    if child_role().as_deref() != Some(role) {
        return None;
    }
    Some(Store::open(&child_env(STORE_VAR)).expect("open the store by name"))
}

/// An environment variable a child process needs; panics (the child fails) if it is missing.
pub fn child_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("child process started without {var}"))
}

/// The current test binary re-run as a child process that runs one test function in a role.
/// Dropping it kills (SIGKILL) and reaps the child, so a failing test never leaves it running.
pub struct ChildProc {
    child: std::process::Child,
    label: String,
    output: Vec<std::thread::JoinHandle<String>>,
}

impl ChildProc {
    /// Starts `current_exe --exact test_fn --nocapture --test-threads=1` with the role and the
    /// store name (and `env`) in its environment. With `capture`, its stdout and stderr are
    /// collected for [`ChildProc::output`]; without, stdout is discarded and stderr inherited.
    pub fn spawn(
        test_fn: &str,
        role: &str,
        store: &str,
        env: &[(&str, String)],
        capture: bool,
    ) -> ChildProc {
        ChildProc::spawn_via(&[], test_fn, role, store, env, capture)
    }

    /// [`ChildProc::spawn`] through a wrapper command (`wrapper[0]` run with the rest of
    /// `wrapper`, then the test binary and its arguments), such as `unshare`.
    pub fn spawn_via(
        wrapper: &[&str],
        test_fn: &str,
        role: &str,
        store: &str,
        env: &[(&str, String)],
        capture: bool,
    ) -> ChildProc {
        use std::process::Stdio;
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = std::process::Command::new(program);
                cmd.args(args).arg(exe);
                cmd
            }
            None => std::process::Command::new(exe),
        };
        cmd.args(["--exact", test_fn, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(STORE_VAR, store);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        if capture {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        }
        let mut child = cmd
            .spawn()
            .expect("spawn the test binary as a child process");
        let label = format!("child {role} (pid {})", child.id());
        let mut output = Vec::new();
        // Drained by threads so a chatty child never blocks on a full pipe.
        fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        }
        if let Some(out) = child.stdout.take() {
            output.push(drain(out));
        }
        if let Some(err) = child.stderr.take() {
            output.push(drain(err));
        }
        ChildProc {
            child,
            label,
            output,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait on a child process")
    }

    /// Waits for the child to exit; a watchdog kills it and fails the test once `deadline`
    /// has passed (a generous bound against a hang, never an assertion on speed).
    pub fn wait_deadline(&mut self, deadline: std::time::Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let output = self.output();
                panic!(
                    "watchdog: {} still running after {deadline:?}; killed it\n{output}",
                    self.label
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Waits (with the watchdog) and fails the test, showing the child's output, unless the
    /// child exited with status 0.
    pub fn expect_success(&mut self, deadline: std::time::Duration) {
        let status = self.wait_deadline(deadline);
        if !status.success() {
            let output = self.output();
            panic!("{} failed: {status}\n{output}", self.label);
        }
    }

    /// Sends SIGKILL and reaps the child; returns its status.
    pub fn kill_and_wait(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill(); // fails only if it was reaped already
        self.child.wait().expect("reap a killed child")
    }

    /// Everything the child wrote to stdout and stderr (with `capture`), once it has exited.
    pub fn output(&mut self) -> String {
        self.output
            .drain(..)
            .map(|h| h.join().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls until `path` exists (the child's "ready" signal). Fails the test, after killing
    /// the child, if the child exits first or `deadline` passes.
    pub fn wait_for_file(&mut self, path: &std::path::Path, deadline: std::time::Duration) {
        let start = std::time::Instant::now();
        while !path.exists() {
            if let Some(status) = self.try_wait() {
                let output = self.output();
                panic!(
                    "{} exited ({status}) before creating {}\n{output}",
                    self.label,
                    path.display()
                );
            }
            if start.elapsed() > deadline {
                self.kill_and_wait();
                panic!(
                    "watchdog: {} did not create {} within {deadline:?}",
                    self.label,
                    path.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh directory under the system's temp dir, removed (with its contents) when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("shmstore-{}", unique_name(tag)));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// splitmix64: small, fast, and the same in every process (parent and child replay it).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
