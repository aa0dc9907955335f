//! Attach-slot liveness by open file description locks, across real processes: each process
//! with a store open holds the lock of its attach slot's byte of the segment file through a
//! description of its own, so that any process, of any pid namespace, can tell when it is
//! gone (the kernel drops the lock with the process's last descriptor).
//!
//! 1. Forked children: a child that uses its inherited handle takes a lock of its own; a
//!    parent that drops its handle lets go of its lock even while a forked child still
//!    holds the parent's description; a killed child's lock goes with it.
//! 2. A process of another pid namespace (`unshare --pid`, root only; skipped with a message
//!    elsewhere), killed: before, its slot could never be judged and stayed for as long as
//!    the store existed; now it is pruned.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ChildProc, TempDir, TempStore, child_env, child_store, opts, segment_path};
use shmstore::Store;

const WATCHDOG: Duration = Duration::from_secs(60);

/// Attach slots (the table's size, `layout::ATTACH_SLOTS`) and the first slot's byte
/// (`layout::ATTACH_LOCK_BASE`).
const SLOTS: u64 = 64;
const LOCK_BASE: u64 = 1 << 62;

/// How many attach slots' bytes of the store's segment some process holds locked, asked
/// through a description of this test's own (which holds none).
fn locked_slots(name: &str) -> usize {
    let file = std::fs::File::open(segment_path(name)).unwrap();
    (0..SLOTS)
        .filter(|i| {
            // SAFETY: plain integers; all zeros is a valid `flock`.
            let mut l: libc::flock = unsafe { std::mem::zeroed() };
            l.l_type = libc::F_WRLCK as libc::c_short;
            l.l_whence = libc::SEEK_SET as libc::c_short;
            l.l_start = (LOCK_BASE + i) as libc::off_t;
            l.l_len = 1;
            // SAFETY: `file` is open; the kernel writes its answer into `l`.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
            assert_eq!(rc, 0, "F_OFD_GETLK: {}", std::io::Error::last_os_error());
            l.l_type != libc::F_UNLCK as libc::c_short
        })
        .count()
}

/// Polls `cond` until it holds; fails the test with `what` after the watchdog.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forked children, killed and reaped when dropped (also when a test fails).
struct Forked(Vec<libc::pid_t>);

impl Forked {
    /// Forks a child that runs `f` and then waits to be killed, never returning into the
    /// test harness.
    fn child(&mut self, f: impl FnOnce()) -> libc::pid_t {
        // SAFETY: the child runs `f` (store calls and a file write: usable after fork with
        // glibc), then sleeps until it is killed or `_exit`s; it runs no destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
            if ok {
                std::thread::sleep(WATCHDOG);
            }
            // SAFETY: ends the child without unwinding into the harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        self.0.push(pid);
        pid
    }

    fn kill(&mut self, pid: libc::pid_t) {
        self.0.retain(|&p| p != pid);
        // SAFETY: `pid` is a child of this process that has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        for pid in std::mem::take(&mut self.0) {
            self.kill(pid);
        }
    }
}

/// Waits for a forked child's "ready" file; fails if the child exits first.
fn wait_ready(pid: libc::pid_t, path: &Path) {
    wait_until(&format!("child {pid} never got ready"), || {
        let mut status = 0;
        // SAFETY: `pid` is an unreaped child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(
            rc, 0,
            "child {pid} exited (status {status:#x}) before it was ready"
        );
        path.exists()
    });
}

#[test]
fn forked_children_hold_locks_of_their_own_and_a_parent_lets_go_of_its_own() {
    let s = TempStore::new("attach-lock-fork", opts(4 << 20));
    let dir = TempDir::new("attach-lock-fork");
    assert_eq!(locked_slots(&s.name), 1, "the creator's handle");
    let own = Store::open(&s.name).unwrap();
    assert_eq!(locked_slots(&s.name), 2);
    let mut kids = Forked(Vec::new());
    // A child that uses the handle it inherited: it registers, with a lock of its own.
    let ready = dir.join("user-ready");
    let user = kids.child(|| {
        assert!(!own.has("k").unwrap());
        std::fs::write(&ready, b"").unwrap();
    });
    wait_ready(user, &ready);
    assert_eq!(locked_slots(&s.name), 3, "the child that used the store");
    // A child that never uses it: it shares the parent's descriptions, and their locks.
    let idle_ready = dir.join("idle-ready");
    let idle = kids.child(|| std::fs::write(&idle_ready, b"").unwrap());
    wait_ready(idle, &idle_ready);
    assert_eq!(locked_slots(&s.name), 3);
    // The parent drops a handle: its lock goes, although the idle child still holds the
    // description it was taken through.
    drop(own);
    assert_eq!(
        locked_slots(&s.name),
        2,
        "a dropped handle's lock outlived it"
    );
    // A killed child's lock goes with it, and so does its entry.
    kids.kill(user);
    assert_eq!(locked_slots(&s.name), 1, "a killed child's lock");
    assert_eq!(s.processes(), vec![std::process::id()]);
    kids.kill(idle);
    assert_eq!(locked_slots(&s.name), 1);
}

/// Child role "in another namespace": opens the store by name (it registers), says so with
/// its ready file, and waits to be killed.
#[test]
fn other_namespace_child() {
    let Some(store) = child_store("in another namespace") else {
        return;
    };
    assert!(!store.has("k").unwrap());
    std::fs::write(child_env("SHMSTORE_TEST_READY"), b"").unwrap();
    std::thread::sleep(WATCHDOG);
}

#[test]
fn a_process_of_another_pid_namespace_is_pruned_once_it_is_gone() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a pid namespace here (needs root and `unshare`)");
        return;
    }
    let s = TempStore::new("attach-lock-ns", opts(4 << 20));
    let dir = TempDir::new("attach-lock-ns");
    let ready = dir.join("ready");
    // `unshare` runs the child in a new pid namespace (its pid 1 there), and kills it with
    // SIGKILL when `unshare` itself dies.
    let mut child = ChildProc::spawn_via(
        &["unshare", "--pid", "--fork", "--kill-child", "--"],
        "other_namespace_child",
        "in another namespace",
        &s.name,
        &[("SHMSTORE_TEST_READY", ready.display().to_string())],
        true,
    );
    child.wait_for_file(&ready, WATCHDOG);
    let listed = s.processes();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(locked_slots(&s.name), 2);
    child.kill_and_wait();
    // Its pid means nothing here, so only its lock can tell that it is gone.
    wait_until(
        "the dead process of another namespace is still listed",
        || s.processes() == vec![std::process::id()],
    );
    assert_eq!(locked_slots(&s.name), 1);
}

/// Kills a process that is not this one's child (an orphan, reparented) when dropped.
struct Orphan(libc::pid_t);

impl Drop for Orphan {
    fn drop(&mut self) {
        // SAFETY: sends SIGKILL to a process this test started; nothing else is touched.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_free_slot_whose_lock_outlives_its_owner_is_still_claimed() {
    let s = TempStore::new("attach-lock-stale", opts(4 << 20));
    let dir = TempDir::new("attach-lock-stale");
    let ready = dir.join("ready");
    let mut kids = Forked(Vec::new());
    // A child that registers (with a description of its own), then forks a grandchild that
    // never uses the store and outlives it, holding that description and its lock.
    let user = kids.child(|| {
        assert!(!s.has("k").unwrap());
        // SAFETY: the grandchild only sleeps and `_exit`s.
        let idle = unsafe { libc::fork() };
        assert!(idle >= 0);
        if idle == 0 {
            std::thread::sleep(WATCHDOG);
            // SAFETY: ends the grandchild without unwinding.
            unsafe { libc::_exit(0) };
        }
        std::fs::write(&ready, idle.to_string()).unwrap();
    });
    wait_ready(user, &ready);
    let idle = Orphan(std::fs::read_to_string(&ready).unwrap().parse().unwrap());
    kids.kill(user);
    // Its slot is pruned (by its pid), but its byte stays locked by the grandchild.
    assert_eq!(s.processes(), vec![std::process::id()]);
    assert_eq!(locked_slots(&s.name), 2);
    // Every slot can still be had: the stale one without a lock of its own (its owner is
    // then judged by its pid alone).
    let handles: Vec<Store> = (1..SLOTS).map(|_| Store::open(&s.name).unwrap()).collect();
    let listed = s.processes();
    assert_eq!(listed.len(), SLOTS as usize, "{} listed", listed.len());
    drop(handles);
    drop(idle);
}
