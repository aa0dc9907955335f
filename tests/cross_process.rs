//! The store across real processes: opened by name from re-run test binaries, used through a
//! handle inherited across `fork()`, a lock held by another process (timeout), and a lock
//! holder killed with SIGKILL (recovery).
//!
//! Child processes re-run this test binary with `--exact <child test>`; the role and the store
//! name travel in environment variables ([`common::ROLE_VAR`], [`common::STORE_VAR`]). In a
//! normal run the child tests find no role and pass at once.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{ChildProc, TempDir, TempStore, child_env, child_store, opts, segment_path};
use shmstore::{Error, PutPolicy, Store};

/// Generous bound on any wait for a child (a watchdog against hangs, not a speed limit).
const WATCHDOG: Duration = Duration::from_secs(60);

// ---- 1. Several processes open one store by name ----------------------------------------------

const BY_NAME_CHILDREN: usize = 3;
const BY_NAME_KEYS: usize = 300;

fn by_name_key(child: usize, j: usize) -> String {
    format!("c{child}-k{j}")
}

/// A value that names its key and its writer, of a length that varies with `j`.
fn by_name_value(child: usize, j: usize) -> String {
    format!(
        "{}|child={child}|j={j}|{}",
        by_name_key(child, j),
        "x".repeat((j * 37) % 700)
    )
}

/// Child role "by-name": opens the store by name, puts its own keys, and reads every other
/// child's keys as they appear, checking each value and that each writer's puts become
/// visible in the order they were made.
#[test]
fn by_name_child() {
    let Some(store) = child_store("by-name") else {
        return;
    };
    let me: usize = child_env("SHMSTORE_TEST_CHILD").parse().unwrap();
    let others: Vec<usize> = (0..BY_NAME_CHILDREN).filter(|&o| o != me).collect();
    let mut next = vec![0usize; BY_NAME_CHILDREN]; // per writer: first key not seen yet
    let mut probe = 1usize;
    // One pass over the other writers: read every key that has appeared since the last pass.
    let mut poll = |next: &mut Vec<usize>| {
        for &o in &others {
            while next[o] < BY_NAME_KEYS {
                // Puts of one writer are ordered: if a later key of `o` is already there, every
                // key before it must be there too. Look at the later key first.
                probe = probe.wrapping_mul(31).wrapping_add(7);
                let later = next[o] + 1 + probe % 16;
                let later_seen = later < BY_NAME_KEYS && store.has(&by_name_key(o, later)).unwrap();
                match store.get::<String>(&by_name_key(o, next[o])).unwrap() {
                    Some(v) => {
                        assert_eq!(v, by_name_value(o, next[o]), "value written by child {o}");
                        next[o] += 1;
                    }
                    None => {
                        assert!(
                            !later_seen,
                            "key {later} of child {o} is visible before its key {}",
                            next[o]
                        );
                        break;
                    }
                }
            }
        }
    };
    for j in 0..BY_NAME_KEYS {
        assert!(
            store
                .put(&by_name_key(me, j), &by_name_value(me, j))
                .unwrap(),
            "put refused"
        );
        assert_eq!(
            store.get::<String>(&by_name_key(me, j)).unwrap(),
            Some(by_name_value(me, j))
        );
        poll(&mut next);
    }
    let start = Instant::now();
    while others.iter().any(|&o| next[o] < BY_NAME_KEYS) {
        assert!(
            start.elapsed() < WATCHDOG / 2,
            "other children's keys never all appeared: {next:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
        poll(&mut next);
    }
}

#[test]
fn processes_share_a_store_by_name() {
    let s = TempStore::new("by-name", opts(4 << 20).put_policy(PutPolicy::Strict));
    let mut kids: Vec<ChildProc> = (0..BY_NAME_CHILDREN)
        .map(|i| {
            ChildProc::spawn(
                "by_name_child",
                "by-name",
                &s.name,
                &[("SHMSTORE_TEST_CHILD", i.to_string())],
                true,
            )
        })
        .collect();
    for kid in &mut kids {
        kid.expect_success(WATCHDOG);
    }
    let mut expected = BTreeSet::new();
    for child in 0..BY_NAME_CHILDREN {
        for j in 0..BY_NAME_KEYS {
            let key = by_name_key(child, j);
            assert_eq!(
                s.get::<String>(&key).unwrap(),
                Some(by_name_value(child, j)),
                "{key}"
            );
            expected.insert(key);
        }
    }
    assert_eq!(s.count().unwrap(), BY_NAME_CHILDREN * BY_NAME_KEYS);
    assert_eq!(
        s.keys().unwrap().into_iter().collect::<BTreeSet<_>>(),
        expected
    );
    let report = s.check().unwrap();
    assert_eq!(report.objects, (BY_NAME_CHILDREN * BY_NAME_KEYS) as u64);
    // The header's counters are bumped by whichever process holds the lock, with a load and a
    // store (not an atomic add): exact only if every bump is made under the lock.
    let st = s.stats().unwrap();
    let total = (BY_NAME_CHILDREN * BY_NAME_KEYS) as u64;
    let value_bytes: u64 = expected
        .iter()
        .map(|k| s.get_bytes(k).unwrap().unwrap().len() as u64)
        .sum();
    assert_eq!(
        (st.puts, st.refused_puts, st.removes, st.objects),
        (total, 0, 0, total)
    );
    assert_eq!(st.value_bytes, value_bytes);
    assert_eq!(
        st.recoveries, 0,
        "no process died, so nothing was recovered"
    );
}

// ---- 2. Forked children use the inherited handle ------------------------------------------------

const FORK_WORKERS: usize = 2;
const FORK_KEYS: usize = 300;

fn fork_key(worker: usize, j: usize) -> String {
    format!("w{worker}-{j}")
}

fn fork_value(worker: usize, j: usize) -> Vec<u64> {
    (0..(j % 50) as u64)
        .map(|i| (worker as u64) << 32 | (j as u64) << 8 | i)
        .collect()
}

/// What a forked worker does with the handle it inherited. Errors are returned, never
/// panicked, so that the child never unwinds into the test harness.
fn fork_worker(store: &Store, me: usize, parent: u32) -> Result<(), String> {
    let e = |what: &str, err: Error| format!("worker {me}: {what}: {err}");
    // The inherited handle registers this process on its first operation here.
    let procs = store.processes();
    if !procs.contains(&std::process::id()) || !procs.contains(&parent) {
        return Err(format!(
            "worker {me}: processes() is {procs:?}, without this child or the parent {parent}"
        ));
    }
    for j in 0..FORK_KEYS {
        let key = fork_key(me, j);
        if !store
            .put(&key, &fork_value(me, j))
            .map_err(|err| e("put", err))?
        {
            return Err(format!("worker {me}: put of {key} refused"));
        }
        if store.get::<Vec<u64>>(&key).map_err(|err| e("get", err))? != Some(fork_value(me, j)) {
            return Err(format!("worker {me}: {key} did not read back"));
        }
    }
    // The parent's keys, put before the fork.
    for j in 0..10 {
        let got = store
            .get::<String>(&format!("parent-{j}"))
            .map_err(|err| e("get", err))?;
        if got != Some(format!("from the parent {j}")) {
            return Err(format!("worker {me}: parent-{j} reads {got:?}"));
        }
    }
    // The other workers' keys, as they appear.
    let start = Instant::now();
    for other in (0..FORK_WORKERS).filter(|&o| o != me) {
        for j in 0..FORK_KEYS {
            loop {
                match store
                    .get::<Vec<u64>>(&fork_key(other, j))
                    .map_err(|err| e("get", err))?
                {
                    Some(v) if v == fork_value(other, j) => break,
                    Some(v) => {
                        return Err(format!("worker {me}: {} reads {v:?}", fork_key(other, j)));
                    }
                    None if start.elapsed() > WATCHDOG / 2 => {
                        return Err(format!(
                            "worker {me}: {} never appeared",
                            fork_key(other, j)
                        ));
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    }
    // A second handle, opened by name in the child and dropped there, destroys nothing.
    if me == 0 {
        let again = Store::open(store.name()).map_err(|err| e("open by name", err))?;
        if again
            .get::<Vec<u64>>(&fork_key(me, 1))
            .map_err(|err| e("get", err))?
            != Some(fork_value(me, 1))
        {
            return Err(format!(
                "worker {me}: a second handle does not see the data"
            ));
        }
        drop(again);
    }
    Ok(())
}

/// Kills and reaps forked children that have not been reaped (when the test fails early).
struct Forked(Vec<libc::pid_t>);

impl Forked {
    /// Reaps every child, in order, with a watchdog; fails the test unless each exited with
    /// status 0. `what` names them in messages.
    fn reap_all(&mut self, what: &str) {
        let start = Instant::now();
        while let Some(&pid) = self.0.first() {
            let mut status = 0;
            // SAFETY: `pid` is an unreaped child; `status` is a valid out-pointer.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert!(rc >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if rc == 0 {
                assert!(
                    start.elapsed() < WATCHDOG,
                    "watchdog: {what} {pid} still running (killed on drop)"
                );
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            self.0.remove(0);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{what} {pid} failed (wait status {status:#x}; its message is on stderr)"
            );
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: `pid` is a child of this process that has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[test]
fn forked_children_use_the_inherited_handle() {
    let s = TempStore::new("fork", opts(4 << 20).put_policy(PutPolicy::Strict));
    for j in 0..10 {
        s.put(&format!("parent-{j}"), &format!("from the parent {j}"))
            .unwrap();
    }
    // A handle each child owns outright (its only copy of this `Store`), to drop there.
    let own = Store::open(&s.name).unwrap();
    let parent = std::process::id();
    let mut forked = Forked(Vec::new());
    for me in 0..FORK_WORKERS {
        // SAFETY: the child only runs `fork_worker` (store calls, allocation, formatting: all
        // usable after fork with glibc), writes to fd 2 and `_exit`s; it never returns into the
        // test harness and runs no destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fork_worker(&s.store, me, parent)?;
                // Dropping a handle in the child (its last copy there) unmaps it there only.
                if own.get::<String>("parent-0").ok().flatten().is_none() {
                    return Err(format!("worker {me}: the owned handle does not read"));
                }
                drop(own);
                Ok(())
            }));
            let code = match result {
                Ok(Ok(())) => 0,
                Ok(Err(msg)) => {
                    let msg = format!("{msg}\n");
                    // SAFETY: writes a live buffer to stderr.
                    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: ends the forked child without unwinding or running destructors (which
            // would destroy the parent's store through the inherited `TempStore`).
            unsafe { libc::_exit(code) };
        }
        forked.0.push(pid);
    }
    let workers = forked.0.clone();
    forked.reap_all("forked worker");
    // The children have exited (and one dropped a handle of its own): the store is intact.
    assert!(
        shmstore::valid(&s.name),
        "a child's exit destroyed the store"
    );
    let reopened = Store::open(&s.name).unwrap();
    for worker in 0..FORK_WORKERS {
        for j in 0..FORK_KEYS {
            assert_eq!(
                reopened.get::<Vec<u64>>(&fork_key(worker, j)).unwrap(),
                Some(fork_value(worker, j))
            );
        }
    }
    for j in 0..10 {
        assert_eq!(
            s.get::<String>(&format!("parent-{j}")).unwrap(),
            Some(format!("from the parent {j}"))
        );
    }
    assert_eq!(
        own.get::<Vec<u64>>(&fork_key(0, 3)).unwrap(),
        Some(fork_value(0, 3))
    );
    assert_eq!(s.count().unwrap(), FORK_WORKERS * FORK_KEYS + 10);
    s.check().unwrap();
    assert_eq!(s.stats().unwrap().recoveries, 0);
    // The workers are gone from the attach table; this process has three handles open.
    let procs = s.processes();
    assert!(
        !procs.iter().any(|&p| workers.contains(&(p as libc::pid_t))),
        "exited workers are still listed: {procs:?} (workers {workers:?})"
    );
    assert_eq!(
        procs.iter().filter(|&&p| p == parent).count(),
        3,
        "{procs:?}"
    );
}

/// A child forked while other threads of the parent are in the middle of puts (and so of
/// whatever a put does outside the store's lock: encoding, the memory figure) can put with
/// the inherited handle and exit: nothing a parent's thread held at the fork is waited for
/// in the child (a lock around the memory figure once hung 2 children in 87).
#[test]
fn children_forked_while_other_threads_put_do_not_hang() {
    const CHILDREN: usize = 300;
    // A memory threshold any machine that runs the tests meets, so that puts look at memory.
    let s = TempStore::new("fork-busy", opts(16 << 20).min_free_mem_pct(0.001));
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the putting threads however the scope ends (a failed assertion included).
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let _stop = Stop(&stop);
        for t in 0..2 {
            let (store, stop) = (&s.store, &stop);
            scope.spawn(move || {
                let mut j = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store
                        .put_bytes(&format!("busy-{t}-{}", j % 500), &j.to_le_bytes())
                        .unwrap();
                    j += 1;
                }
            });
        }
        let mut forked = Forked(Vec::new());
        for c in 0..CHILDREN {
            // SAFETY: the child only makes store calls (usable after fork with glibc) and
            // `_exit`s; it never returns into the test harness and runs no destructors.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let ok = (0..300).all(|j| s.put_bytes(&format!("child-{c}-{j}"), b"v").is_ok());
                // SAFETY: ends the forked child without unwinding or running destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            forked.0.push(pid);
            std::thread::sleep(Duration::from_millis(2));
        }
        // A child that hangs is killed by the watchdog and fails the test.
        forked.reap_all("forked child");
    });
    s.check().unwrap();
}

// ---- 3 and 4. A lock held by another process ----------------------------------------------------

/// Child role "hold": takes the store's lock inside `get_with("held", ..)`, creates the marker
/// file (the lock is held from then on), and keeps the lock until the release file appears or
/// `SHMSTORE_TEST_HOLD_MS` have passed.
#[test]
fn holder_child() {
    let Some(store) = child_store("hold") else {
        return;
    };
    let marker = PathBuf::from(child_env("SHMSTORE_TEST_MARKER"));
    let release = PathBuf::from(child_env("SHMSTORE_TEST_RELEASE"));
    let hold = Duration::from_millis(child_env("SHMSTORE_TEST_HOLD_MS").parse().unwrap());
    let len = store
        .get_with("held", |bytes| {
            std::fs::write(&marker, b"locked").expect("write the marker file");
            let start = Instant::now();
            while !release.exists() && start.elapsed() < hold {
                std::thread::sleep(Duration::from_millis(5));
            }
            bytes.len()
        })
        .expect("get_with in the holder");
    assert!(len.is_some(), "the key to hold the lock on is missing");
}

/// Starts a holder child on `store` and waits until it holds the lock.
fn start_holder(store: &TempStore, dir: &TempDir, hold: Duration) -> ChildProc {
    let env = [
        (
            "SHMSTORE_TEST_MARKER",
            dir.join("locked").display().to_string(),
        ),
        (
            "SHMSTORE_TEST_RELEASE",
            dir.join("release").display().to_string(),
        ),
        ("SHMSTORE_TEST_HOLD_MS", hold.as_millis().to_string()),
    ];
    let mut kid = ChildProc::spawn("holder_child", "hold", &store.name, &env, true);
    kid.wait_for_file(&dir.join("locked"), WATCHDOG);
    assert_eq!(
        store.stats().unwrap().lock_owner,
        kid.id(),
        "the holder's pid is recorded as lock owner"
    );
    assert!(
        store.processes().contains(&kid.id()),
        "the holder is not listed among the processes that have the store open"
    );
    kid
}

#[test]
fn a_lock_held_by_another_process_times_out_after_the_lock_timeout() {
    let timeout = Duration::from_millis(300);
    let s = TempStore::new("timeout", opts(1 << 20).lock_timeout(timeout));
    let dir = TempDir::new("timeout");
    s.put("held", "the holder reads this").unwrap();
    let before = s.stats().unwrap().lock_timeouts;
    let mut kid = start_holder(&s, &dir, WATCHDOG);

    let start = Instant::now();
    let put = s.put("x", &1u32);
    let waited = start.elapsed();
    match put {
        Err(Error::Timeout {
            name,
            waited: reported,
        }) => {
            assert_eq!(name, s.name);
            assert_eq!(reported, timeout);
        }
        other => panic!("a put while another process holds the lock gave {other:?}, not Timeout"),
    }
    assert!(
        waited >= timeout,
        "the put gave up after {waited:?}, before the lock timeout {timeout:?}"
    );

    // Reads take no lock: the holder only reads, so they answer at once.
    assert_eq!(
        s.get::<String>("held").unwrap().as_deref(),
        Some("the holder reads this")
    );
    assert!(s.has("held").unwrap());
    assert_eq!(s.get::<u32>("x").unwrap(), None);

    let start = Instant::now();
    assert!(matches!(s.count(), Err(Error::Timeout { .. })));
    assert!(start.elapsed() >= timeout);

    assert_eq!(s.stats().unwrap().lock_timeouts, before + 2);
    // The premise: the holder was holding the lock all along.
    assert!(
        kid.try_wait().is_none(),
        "the holder exited early: {}",
        kid.output()
    );
    assert_eq!(s.stats().unwrap().lock_owner, kid.id());

    std::fs::write(dir.join("release"), b"").unwrap();
    kid.expect_success(WATCHDOG);
    assert_eq!(s.stats().unwrap().lock_owner, 0);
    assert_eq!(
        s.get::<u32>("x").unwrap(),
        None,
        "a put that timed out stored something"
    );
    assert!(s.put("x", &1u32).unwrap());
    assert_eq!(s.get::<u32>("x").unwrap(), Some(1));
    assert_eq!(
        s.get::<String>("held").unwrap().as_deref(),
        Some("the holder reads this")
    );
    s.check().unwrap();
    assert_eq!(s.stats().unwrap().recoveries, 0);
}

fn fill(s: &Store, n: usize) {
    for i in 0..n {
        assert!(
            s.put(
                &format!("k{i}"),
                &format!("value {i} {}", "y".repeat(i * 13 % 500))
            )
            .unwrap()
        );
    }
}

fn check_filled(s: &Store, n: usize) {
    for i in 0..n {
        let want = format!("value {i} {}", "y".repeat(i * 13 % 500));
        assert_eq!(
            s.get::<String>(&format!("k{i}")).unwrap(),
            Some(want),
            "k{i}"
        );
    }
}

#[test]
fn a_lock_holder_killed_with_sigkill_does_not_wedge_the_store() {
    // A long timeout: if the dead holder's lock were not recovered, the next operation would
    // fail with Timeout (after 10 s), not hang.
    let s = TempStore::new(
        "sigkill",
        opts(1 << 20).lock_timeout(Duration::from_secs(10)),
    );
    let dir = TempDir::new("sigkill");
    s.put("held", "the holder reads this").unwrap();
    fill(&s, 100);
    let before = s.stats().unwrap().recoveries;
    let mut kid = start_holder(&s, &dir, WATCHDOG);
    let status = kid.kill_and_wait();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the holder was killed by SIGKILL"
    );
    assert_eq!(
        s.stats().unwrap().lock_owner,
        kid.id(),
        "the dead holder still owns the lock"
    );
    assert!(
        !s.processes().contains(&kid.id()),
        "a killed process is still listed as having the store open"
    );

    // The holder died reading, not changing anything: reads go on without the lock.
    match s.get::<String>("held") {
        Ok(Some(v)) => assert_eq!(v, "the holder reads this"),
        other => panic!("the first get after the holder died gave {other:?}"),
    }
    // The next operation that takes the lock gets through and recovers.
    assert_eq!(s.count().unwrap(), 101);
    let stats = s.stats().unwrap();
    assert!(
        stats.recoveries > before,
        "no recovery was counted after the holder died"
    );
    assert_eq!(stats.lock_owner, 0);
    check_filled(&s, 100);
    assert_eq!(s.count().unwrap(), 101);
    s.check().unwrap();
    assert!(s.put("after", &7u8).unwrap());
    assert_eq!(s.get::<u8>("after").unwrap(), Some(7));
    assert_eq!(
        s.stats().unwrap().recoveries,
        stats.recoveries,
        "one recovery is enough"
    );
}

#[test]
fn a_waiter_gets_the_lock_when_the_holder_is_killed() {
    let s = TempStore::new(
        "waiter",
        opts(1 << 20).lock_timeout(Duration::from_secs(20)),
    );
    let dir = TempDir::new("waiter");
    s.put("held", "the holder reads this").unwrap();
    fill(&s, 50);
    let mut kid = start_holder(&s, &dir, WATCHDOG);

    // A thread of this process blocks on the lock...
    let waiter = {
        let store = s.store.clone();
        std::thread::spawn(move || store.put("from the waiter", &42u64))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !waiter.is_finished(),
        "the waiter got through while the lock was held"
    );
    // ...until the holder dies.
    assert_eq!(kid.kill_and_wait().signal(), Some(libc::SIGKILL));
    let start = Instant::now();
    while !waiter.is_finished() {
        assert!(
            start.elapsed() < WATCHDOG,
            "watchdog: the waiter never got the lock"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    match waiter.join().unwrap() {
        Ok(true) => {}
        other => panic!("the waiting put gave {other:?} after the holder died"),
    }
    assert!(s.stats().unwrap().recoveries >= 1);
    assert_eq!(s.get::<u64>("from the waiter").unwrap(), Some(42));
    check_filled(&s, 50);
    assert_eq!(s.count().unwrap(), 52);
    s.check().unwrap();
}

// ---- 5. Stats read while another process replaces objects -------------------------------------

const REPLACED_KEYS: usize = 8;
const REPLACED_LEN: usize = 1000;

/// Child role "replacer": replaces the same keys with values of the same size, over and
/// over, until the parent's file `stop` appears; creates `started` once it is at it.
#[test]
fn replacer_child() {
    let Some(s) = child_store("replacer") else {
        return;
    };
    let dir = PathBuf::from(child_env("SHMSTORE_TEST_DIR"));
    let mut round = 0u8;
    while !dir.join("stop").exists() {
        round = round.wrapping_add(1);
        for k in 0..REPLACED_KEYS {
            s.put_bytes(&format!("r{k}"), &[round; REPLACED_LEN])
                .unwrap();
        }
        if round == 1 {
            std::fs::write(dir.join("started"), b"").unwrap();
        }
    }
}

/// `stats` takes no lock; while another process replaces objects with values of the same
/// size, the figures it reads must never count fewer objects or bytes than are stored (a
/// replacement may count the new block before the old one is gone, never the other way).
#[test]
fn stats_during_replacements_never_count_less_than_is_stored() {
    let s = TempStore::new("replaced", opts(4 << 20).put_policy(PutPolicy::Strict));
    s.put_bytes("r0", &[0; REPLACED_LEN]).unwrap();
    let block = s.stats().unwrap().used_bytes;
    for k in 1..REPLACED_KEYS {
        s.put_bytes(&format!("r{k}"), &[0; REPLACED_LEN]).unwrap();
    }
    let (objects, values) = (REPLACED_KEYS as u64, (REPLACED_KEYS * REPLACED_LEN) as u64);
    let dir = TempDir::new("replaced");
    let env = [("SHMSTORE_TEST_DIR", dir.path.display().to_string())];
    let mut kid = ChildProc::spawn("replacer_child", "replacer", &s.name, &env, true);
    kid.wait_for_file(&dir.join("started"), WATCHDOG);
    let start = Instant::now();
    let mut reads = 0u64;
    while start.elapsed() < Duration::from_millis(500) {
        let st = s.stats().unwrap();
        reads += 1;
        assert_eq!(st.objects, objects, "read {reads}: objects");
        assert!(
            st.value_bytes == values || st.value_bytes == values + REPLACED_LEN as u64,
            "read {reads}: {} value bytes, {values} stored",
            st.value_bytes
        );
        assert!(
            st.used_bytes >= objects * block,
            "read {reads}: {} bytes used, at least {} stored",
            st.used_bytes,
            objects * block
        );
    }
    std::fs::write(dir.join("stop"), b"").unwrap();
    kid.expect_success(WATCHDOG);
    assert_eq!(s.stats().unwrap().value_bytes, values);
    s.check().unwrap();
}

// ---- 6. A lock word that names a thread which is gone ------------------------------------------

/// Overwrites the futex word of the store's mutex (the first 4 bytes of the mutex, at byte
/// 128 of the segment: glibc's `__lock`) with `tid`, as if that thread held the lock, without
/// the kernel knowing it: a scribble, or an owner whose robust list was lost.
fn forge_lock_owner(name: &str, tid: u32) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(name))
        .unwrap();
    file.write_all_at(&tid.to_le_bytes(), 128).unwrap();
}

/// Overwrites 8 bytes of the segment's header at `off` (a scribble).
fn forge_header_word(name: &str, off: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(name))
        .unwrap();
    file.write_all_at(&value.to_le_bytes(), off).unwrap();
}

/// A plain child process, killed and reaped when dropped (also when a test fails).
struct Kid(std::process::Child);

impl Kid {
    fn spawn(program: &str, args: &[&str]) -> Kid {
        Kid(std::process::Command::new(program)
            .args(args)
            .spawn()
            .unwrap())
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until child `pid` has exited and is a zombie (not reaped: its pid stays taken).
fn wait_for_zombie(pid: u32) {
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| !st.rsplit(") ").next().unwrap_or("").starts_with('Z'))
    {
        assert!(
            start.elapsed() < WATCHDOG,
            "watchdog: child {pid} never exited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A store for the orphaned-lock tests, with a lock timeout no longer than one wait slice
/// (the orphan is released all the same); `None`, with a message, where they cannot run.
fn orphan_test_store(tag: &str) -> Option<TempStore> {
    if !cfg!(all(target_env = "gnu", target_pointer_width = "64")) {
        eprintln!("the mutex's layout is known for 64-bit glibc only: not tested");
        return None;
    }
    if std::fs::read_link("/proc/self/ns/pid").is_err() {
        eprintln!("this process cannot tell its pid namespace: thread ids are not judged here");
        return None;
    }
    Some(TempStore::new(
        tag,
        opts(4 << 20).lock_timeout(Duration::from_millis(100)),
    ))
}

/// A lock word naming a thread that no longer exists is released (as the kernel releases a
/// dead owner's robust mutex) instead of making every operation wait for its full timeout
/// until the store is destroyed; one naming a live thread is left alone.
#[test]
fn a_lock_word_naming_a_thread_that_is_gone_is_released() {
    let Some(s) = orphan_test_store("orphan") else {
        return;
    };
    fill(&s, 20);
    let recoveries = s.stats().unwrap().recoveries;
    let refused = |what: &str| match s.put("blocked", &1u64) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("a put past a lock its word says {what} holds gave {other:?}"),
    };
    // A live process: its thread holds nothing, but the word says it does.
    let mut sleeper = Kid::spawn("sleep", &["60"]);
    forge_lock_owner(&s.name, sleeper.0.id());
    refused("a live process");
    // A live thread of this process that is not its main thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || {
        // SAFETY: gettid takes no arguments.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = done_rx.recv();
    });
    forge_lock_owner(&s.name, rx.recv().unwrap());
    refused("a live thread");
    drop(done_tx);
    parked.join().unwrap();
    let st = s.stats().unwrap();
    assert_eq!(
        (st.objects, st.recoveries),
        (20, recoveries),
        "a refused put changed the store"
    );
    // Once the process is gone (killed, a zombie until reaped: its id cannot be reused
    // meanwhile), the next operation releases the lock and recovers.
    forge_lock_owner(&s.name, sleeper.0.id());
    sleeper.0.kill().unwrap();
    wait_for_zombie(sleeper.0.id());
    assert!(s.put("after", &2u64).unwrap());
    assert_eq!(s.stats().unwrap().recoveries, recoveries + 1);
    sleeper.0.wait().unwrap();
    // A word naming a process that exited by itself, with the waiters bit set.
    let mut quick = Kid::spawn("true", &[]);
    wait_for_zombie(quick.0.id());
    forge_lock_owner(&s.name, quick.0.id() | 0x8000_0000);
    assert!(s.put("later", &3u64).unwrap());
    assert_eq!(s.stats().unwrap().recoveries, recoveries + 2);
    // A word with the waiters bit and no thread at all (glibc neither writes nor takes it).
    forge_lock_owner(&s.name, 0x8000_0000);
    assert!(s.put("later", &4u64).unwrap());
    assert_eq!(s.stats().unwrap().recoveries, recoveries + 3);
    // A release claim left by a thread of another pid namespace (a scribble, here): it
    // cannot be judged, so it is taken over once seen held twice, one operation apart.
    forge_header_word(&s.name, 216, 12345 << 32 | 1);
    forge_lock_owner(&s.name, quick.0.id());
    refused("a gone thread, while another thread's claim to release it is held");
    assert!(s.put("later", &5u64).unwrap());
    assert_eq!(s.stats().unwrap().recoveries, recoveries + 4);
    // A claim naming this very thread (left by a killed claimer whose id it reuses): this
    // thread is not releasing, so the claim is stale and taken at once.
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let ns = ns.to_string_lossy();
    let inode: u64 = ns
        .trim_start_matches("pid:[")
        .trim_end_matches(']')
        .parse()
        .unwrap();
    // SAFETY: gettid takes no arguments.
    let me = (inode & 0xffff_ffff) << 32 | unsafe { libc::gettid() } as u64;
    forge_header_word(&s.name, 216, me);
    forge_lock_owner(&s.name, quick.0.id());
    assert!(s.put("later", &6u64).unwrap());
    assert_eq!(s.stats().unwrap().recoveries, recoveries + 5);
    quick.0.wait().unwrap();
    check_filled(&s, 20);
    assert_eq!(s.get::<u64>("after").unwrap(), Some(2));
    assert_eq!(s.count().unwrap(), 22);
    s.check().unwrap();
}

/// A process that used the store without an attach slot (the table was full) leaves its pid
/// namespace behind for good: thread ids in the lock word are still judged when it is this
/// process's namespace, and never again once it is another's (or two, or unknown; a
/// scribble stands in for that here): the orphan then waits for its timeout.
#[test]
fn an_orphaned_lock_is_left_alone_once_a_process_of_another_namespace_used_the_store() {
    let Some(s) = orphan_test_store("unlisted") else {
        return;
    };
    fill(&s, 5);
    // One more handle than the table has room for (one slot per handle), each used once.
    let handles: Vec<Store> = (0..64).map(|_| Store::open(&s.name).unwrap()).collect();
    for h in &handles {
        assert_eq!(h.count().unwrap(), 5);
    }
    assert_eq!(s.processes().len(), 64, "the attach table was not full");
    drop(handles);
    let mut quick = Kid::spawn("true", &[]);
    wait_for_zombie(quick.0.id());
    forge_lock_owner(&s.name, quick.0.id());
    assert!(
        s.put("judged", &1u64).unwrap(),
        "an orphan was not released"
    );
    // `unattached.reading` (byte 5456) as a process of another namespace would leave it.
    forge_header_word(&s.name, 5456, u64::MAX);
    forge_lock_owner(&s.name, quick.0.id());
    match s.put("blocked", &1u64) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("an orphan was released though it could not be judged: {other:?}"),
    }
    quick.0.wait().unwrap();
    assert_eq!(s.stats().unwrap().objects, 6);
}
