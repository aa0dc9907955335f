//! Deterministic crash test: a fixed scenario is run once per fault point, and the process is
//! killed (SIGKILL, lock held) at that point; so every step of every mutating path the
//! scenario takes is interrupted at least once. After each kill a second process may be
//! killed again during the recovery itself. The survivor then checks that the store passes
//! `check()` and holds exactly the state before or after the interrupted operation.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use common::{ChildProc, Cleanup, TempDir, child_env, child_role, unique_name};
use shmstore::{Options, PutPolicy, Store};

#[derive(Debug, Clone)]
enum Op {
    Put(String, usize),
    Remove(String),
    Get(String),
}

/// The scenario: fills with mixed sizes (some large enough to give pages back when freed),
/// replaces, removes, reads, puts that need compaction, churn that rebuilds the index.
fn scenario() -> Vec<Op> {
    let put = |k: &str, n| Op::Put(k.to_owned(), n);
    let rm = |k: &str| Op::Remove(k.to_owned());
    let mut ops = vec![
        put("a", 100),
        put("b", 3000),
        put("c", 90_000),
        put("d", 500),
        put("e", 70_000),
        put("f", 20),
        put("g", 9000),
        put("h", 150_000),
        put("b", 6000),
        put("c", 40),
        put("g", 9000),
        rm("a"),
        rm("d"),
        rm("f"),
        Op::Get("e".into()),
        Op::Get("zz".into()),
        put("i", 200_000),
        rm("e"),
        put("j", 120_000),
        put("k", 60),
        // A small object replaced by another small one: on a store with inline records, the
        // record's copy is rewritten while its word still says it holds one.
        put("k", 80),
    ];
    for j in 0..14 {
        ops.push(put(&format!("t{j}"), 30 + j));
        ops.push(rm(&format!("t{j}")));
    }
    ops.extend([
        rm("h"),
        put("h", 100_000),
        rm("zz"),
        put("c", 65_000),
        Op::Get("c".into()),
        // Over half the store (a rotating store evicts the rest to make room), an object
        // beside it, then a replacement that does not fit beside the value it replaces: a
        // rotating store frees that value and writes its successor in its room, keeping the
        // object beside it. Then one that does not fit in that room either: the object
        // beside it is evicted and, the value being replaced being the last one left, it is
        // freed before its successor is written. A strict store refuses what does not fit.
        put("big", 300_000),
        put("s", 100_000),
        put("big", 290_000),
        put("big", 420_000),
        // Then an object after it, and a replacement that fits in the old value's block
        // (not reaching the free end of the arena): carved from that block, split.
        put("t", 60_000),
        put("big", 415_000),
        // Then "t" replaced by a value that fits in its room (it and the free end of the
        // arena) but not beside it: the free remainder before it stays apart until the new
        // block is carved.
        put("t", 50_000),
    ]);
    ops
}

/// Capacity 512 KiB: the scenario fills it, so some puts need compaction and some are refused.
fn options() -> Options {
    Options::default()
        .capacity(512 << 10)
        .max_objects(16)
        .min_free_mem_pct(0.0)
        .put_policy(PutPolicy::Strict)
        .lock_timeout(Duration::from_secs(20))
}

/// The value the scenario's `step`-th operation puts under `key`: self-describing.
fn value(key: &str, step: usize, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = format!("{key}@{step}:").into_bytes();
    v.extend((0..len).map(|i| (i as u8).wrapping_mul(7) ^ step as u8));
    v
}

type State = BTreeMap<String, Vec<u8>>;

/// The states after each operation, given whether each put was stored.
fn states(ops: &[Op], stored: &[bool]) -> Vec<State> {
    let mut out = vec![State::new()];
    for (i, op) in ops.iter().enumerate() {
        let mut s = out[i].clone();
        match op {
            Op::Put(k, n) if stored[i] => {
                s.insert(k.clone(), value(k, i, *n));
            }
            Op::Remove(k) => {
                s.remove(k);
            }
            _ => {}
        }
        out.push(s);
    }
    out
}

/// A state in a line of the child's log: each key with its value's length and a checksum.
type Digest = BTreeMap<String, (usize, u64)>;

fn digest(s: &State) -> Digest {
    s.iter()
        .map(|(k, v)| {
            let sum = v.iter().fold(0u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            (k.clone(), (v.len(), sum))
        })
        .collect()
}

fn digest_line(d: &Digest) -> String {
    d.iter()
        .map(|(k, (len, sum))| format!("{k}={len}:{sum}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_digest(line: &str) -> Digest {
    line.split(',')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (k, rest) = e.split_once('=').unwrap();
            let (len, sum) = rest.split_once(':').unwrap();
            (k.to_owned(), (len.parse().unwrap(), sum.parse().unwrap()))
        })
        .collect()
}

fn contents(store: &Store) -> State {
    let mut s = State::new();
    for k in store.keys().unwrap() {
        s.insert(k.clone(), store.get_bytes(&k).unwrap().unwrap());
    }
    s
}

/// The child: runs the scenario, armed to die at fault point `SHMSTORE_FAULT_AT` (0: never),
/// appending `index stored` to the log after each operation returns.
#[test]
fn fault_child() {
    let Some(role) = child_role() else { return };
    let store = Store::open(&child_env(common::STORE_VAR)).unwrap();
    let at: u64 = child_env("SHMSTORE_FAULT_AT").parse().unwrap();
    if role == "recover" {
        shmstore::fault::arm(at);
        store.count().unwrap();
        shmstore::fault::arm(0);
        return;
    }
    let mut log = std::fs::File::create(child_env("SHMSTORE_FAULT_LOG")).unwrap();
    // The dry run (0) counts the fault points without dying at any.
    shmstore::fault::arm(if at == 0 { u64::MAX } else { at });
    for (i, op) in scenario().iter().enumerate() {
        let stored = match op {
            Op::Put(k, n) => store.put_bytes(k, &value(k, i, *n)).unwrap(),
            Op::Remove(k) => store.remove(k).unwrap(),
            Op::Get(k) => store.get_bytes(k).unwrap().is_some(),
        };
        // The state after it (read with `keys` and gets, which every run makes alike).
        let state = digest_line(&digest(&contents(&store)));
        log.write_all(format!("{i} {} {state}\n", stored as u8).as_bytes())
            .unwrap();
    }
    let hits = shmstore::fault::hits();
    shmstore::fault::arm(0);
    log.write_all(format!("hits {hits}\n").as_bytes()).unwrap();
}

struct Run {
    /// Per completed operation, whether it stored (or removed, or found) something.
    done: Vec<bool>,
    /// Per completed operation, the store's state after it.
    after: Vec<Digest>,
    /// Fault points passed, when the scenario ran to its end.
    hits: Option<u64>,
    killed: bool,
}

fn run_child(name: &str, dir: &TempDir, at: u64) -> Run {
    let log = dir.join(&format!("log-{at}"));
    let env = [
        ("SHMSTORE_FAULT_AT", at.to_string()),
        ("SHMSTORE_FAULT_LOG", log.display().to_string()),
    ];
    let mut child = ChildProc::spawn("fault_child", "scenario", name, &env, false);
    let status = child.wait_deadline(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut run = Run {
        done: Vec::new(),
        after: Vec::new(),
        hits: None,
        killed: false,
    };
    for line in text.lines() {
        let mut fields = line.splitn(3, ' ');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("hits"), Some(n), _) => run.hits = Some(n.parse().unwrap()),
            (Some(_), Some(stored), state) => {
                run.done.push(stored == "1");
                run.after.push(parse_digest(state.unwrap_or("")));
            }
            _ => {}
        }
    }
    use std::os::unix::process::ExitStatusExt;
    run.killed = status.signal() == Some(9);
    assert!(
        run.killed || status.success(),
        "scenario child at fault point {at} failed: {status}"
    );
    run
}

/// Whether a rotating store killed during an operation on `op_key`, which takes it from
/// `before` to `after`, may hold `got`: every object as it was before or after the
/// operation, and every object the operation left alone still there (the ones it evicted
/// may be gone or not; its own key's old value may be gone: design.md's one exception).
fn rotating_store_could_leave(op_key: &str, before: &Digest, after: &Digest, got: &Digest) -> bool {
    got.iter()
        .all(|(key, d)| before.get(key) == Some(d) || after.get(key) == Some(d))
        && before
            .iter()
            .filter(|(key, d)| *key != op_key && after.get(*key) == Some(*d))
            .all(|(key, _)| got.contains_key(key))
}

#[test]
fn the_rotating_store_check_accepts_partial_evictions_and_nothing_else() {
    let d = |entries: &[(&str, usize)]| -> Digest {
        entries
            .iter()
            .map(|(k, n)| (k.to_string(), (*n, *n as u64)))
            .collect()
    };
    // A put of "k" that evicts "a" and "b" to make room; "c" is left alone.
    let before = d(&[("a", 1), ("b", 2), ("c", 3), ("k", 4)]);
    let after = d(&[("c", 3), ("k", 5)]);
    let could = |got: &Digest| rotating_store_could_leave("k", &before, &after, got);
    assert!(could(&before) && could(&after));
    assert!(
        could(&d(&[("b", 2), ("c", 3), ("k", 4)])),
        "one eviction of two done"
    );
    assert!(
        could(&d(&[("c", 3)])),
        "the replaced value gone (the exception)"
    );
    assert!(
        !could(&d(&[("a", 1), ("b", 2), ("k", 5)])),
        "an object left alone is gone"
    );
    assert!(
        !could(&d(&[("c", 3), ("k", 6)])),
        "a value that is neither old nor new"
    );
    assert!(
        !could(&d(&[("c", 3), ("k", 5), ("z", 1)])),
        "an object from nowhere"
    );
}

#[test]
fn every_fault_point_of_the_scenario_recovers() {
    every_fault_point_recovers(options());
}

/// The same on a rotating store: puts evict instead of being refused, so an interrupted
/// put may have evicted some of the objects it was making room with (a cache may drop
/// those at any time) and, in the one documented case, its own key's old value; nothing
/// else may change and no value may be torn.
#[test]
fn every_fault_point_recovers_on_a_rotating_store() {
    every_fault_point_recovers(options().put_policy(PutPolicy::Rotate));
}

/// The same with inline copies of the small objects: a process killed while it writes a copy
/// (or between a copy and its entry) leaves nothing a reader takes for an object.
#[test]
fn every_fault_point_recovers_with_inline_copies() {
    every_fault_point_recovers(options().inline_values(120));
}

/// Both: a rotating store with inline copies, where a replacement that frees the old object
/// first also drops its copy.
#[test]
fn every_fault_point_recovers_on_a_rotating_store_with_inline_copies() {
    every_fault_point_recovers(options().put_policy(PutPolicy::Rotate).inline_values(120));
}

/// Runs the scenario once without faults, then once per fault point, killed there, on stores
/// created with `options`; each recovery must give the state before or after the operation.
fn every_fault_point_recovers(options: Options) {
    if child_role().is_some() {
        return;
    }
    let dir = TempDir::new("faults");
    let ops = scenario();

    // A run without faults: the results of each operation, and how many fault points there are.
    let name = unique_name("faults-dry");
    let _c = Cleanup(name.clone());
    Store::create(&name, options).unwrap();
    let dry = run_child(&name, &dir, 0);
    let total = dry.hits.expect("the dry run finishes");
    assert_eq!(dry.done.len(), ops.len());
    assert!(
        dry.done.iter().any(|s| !s),
        "the scenario should include a refused put"
    );
    let rotate = options.put_policy == PutPolicy::Rotate;
    let expected = states(&ops, &dry.done);
    let dry_stats = Store::open(&name).unwrap().stats().unwrap();
    assert_eq!(dry_stats.recoveries, 0);
    assert!(
        dry_stats.moves > 0,
        "the scenario should move objects to make room"
    );
    if rotate {
        assert!(dry_stats.evictions > 0, "the scenario should evict");
        // Its last puts replace a value that cannot stay beside its successor: in the room
        // the old value leaves at the end of the arena (the object before it stays), in a
        // store it is the last one left in, and in the old value's block (the object after
        // it stays).
        let at = |key: &str, len: usize| {
            ops.iter()
                .position(|op| matches!(op, Op::Put(k, n) if k == key && *n == len))
                .unwrap()
        };
        let keys = |i: usize| dry.after[i].keys().cloned().collect::<Vec<_>>();
        for (key, len, beside) in [
            ("big", 290_000, "s"),
            ("big", 415_000, "t"),
            ("t", 50_000, "big"),
        ] {
            let i = at(key, len);
            assert!(dry.done[i] && dry.after[i - 1].contains_key(beside));
            assert_eq!(
                keys(i),
                keys(i - 1),
                "the replacement of {key} by {len} bytes should reuse the old value's room, not evict"
            );
        }
        let last_one = at("big", 420_000);
        assert!(dry.done[last_one]);
        assert_eq!(
            keys(last_one),
            ["big"],
            "this replacement should leave only its own object"
        );
    } else {
        // The model and the store agree on every state of the run.
        for (k, after) in dry.after.iter().enumerate() {
            assert_eq!(after, &digest(&expected[k + 1]), "after operation {k}");
        }
    }
    // The states each operation goes between, as the run without faults saw them.
    let before_after = |k: usize| {
        let before = k
            .checked_sub(1)
            .map_or_else(Digest::new, |j| dry.after[j].clone());
        (before, dry.after[k].clone())
    };
    drop(_c);

    let mut kills = 0;
    let mut recovery_kills = 0;
    for at in 1..=total {
        let name = unique_name("faults");
        let _c = Cleanup(name.clone());
        Store::create(&name, options).unwrap();
        let run = run_child(&name, &dir, at);
        if !run.killed {
            // Fault points vary a little from run to run (the index's hash seed is random);
            // a run that finishes must have reached the final state.
            assert_eq!(
                digest(&contents(&Store::open(&name).unwrap())),
                dry.after[ops.len() - 1]
            );
            continue;
        }
        kills += 1;
        let k = run.done.len();
        assert!(k < ops.len(), "killed at {at} after the scenario ended");
        assert_eq!(
            run.done[..],
            dry.done[..k],
            "a completed operation gave another result than in the dry run"
        );
        // Kill the next process during its recovery too, at a point that varies with `at`.
        let env = [("SHMSTORE_FAULT_AT", (1 + at % 7).to_string())];
        let mut rec = ChildProc::spawn("fault_child", "recover", &name, &env, false);
        let status = rec.wait_deadline(Duration::from_secs(60));
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            recovery_kills += 1;
        } else {
            assert!(status.success(), "recovery child failed: {status}");
        }

        let store = Store::open(&name).unwrap();
        if let Err(e) = store.check() {
            panic!("fault point {at} (during operation {k}: {:?}): {e}", ops[k]);
        }
        let got = digest(&contents(&store));
        let (before, after) = before_after(k);
        let ok = if rotate {
            let op_key = match &ops[k] {
                Op::Put(key, _) | Op::Remove(key) | Op::Get(key) => key,
            };
            rotating_store_could_leave(op_key, &before, &after, &got)
        } else {
            got == before || got == after
        };
        assert!(
            ok,
            "fault point {at}, during operation {k} ({:?}): the store is not a state the operation could leave; keys {:?}; {:?}",
            ops[k],
            got.keys().collect::<Vec<_>>(),
            store.stats().unwrap()
        );
        assert_eq!(
            store.stats().unwrap().resets,
            0,
            "fault point {at}: the store was reset"
        );
        // And it keeps working: the rest of the scenario's kind of operations succeed.
        assert!(store.put_bytes("after", b"crash").unwrap() || store.count().unwrap() > 0);
        store.check().unwrap();
    }
    eprintln!(
        "{total} fault points, {kills} kills in the scenario, {recovery_kills} more during recovery"
    );
    assert!(
        kills as u64 >= total * 9 / 10,
        "only {kills} of {total} fault points were reached"
    );
    assert!(recovery_kills > 0, "no kill landed inside a recovery");
}

/// The child of [`a_write_cut_short_by_a_panic_inside_a_drop_during_unwinding_is_repaired`]:
/// while its thread unwinds from an unrelated panic, a `Drop` puts, and that put panics at
/// its last fault point (lock held, its change half done); the `Drop` catches it.
#[test]
fn panic_in_drop_child() {
    let Some(store) = common::child_store("panic-in-drop") else {
        return;
    };
    // The fault points of a put of a new key, counted on one.
    shmstore::fault::arm(u64::MAX);
    store.put_bytes("probe", b"p").unwrap();
    let last = shmstore::fault::hits();
    shmstore::fault::arm(0);
    struct PutOnDrop<'a>(&'a Store, u64);
    impl Drop for PutOnDrop<'_> {
        fn drop(&mut self) {
            shmstore::fault::arm_panic(self.1);
            let put = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.0.put_bytes("cut", b"short")
            }));
            shmstore::fault::arm(0);
            assert!(put.is_err(), "the armed put did not panic");
        }
    }
    let outer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _p = PutOnDrop(&store, last);
        panic!("unrelated to the store");
    }));
    assert!(outer.is_err());
    println!("cut short at fault point {last} of {last}");
}

#[test]
fn a_write_cut_short_by_a_panic_inside_a_drop_during_unwinding_is_repaired() {
    let name = unique_name("panic-in-drop");
    let _c = Cleanup(name.clone());
    let store = Store::create(
        &name,
        Options::default().capacity(1 << 20).min_free_mem_pct(0.0),
    )
    .unwrap();
    for i in 0..100u32 {
        store.put_bytes(&format!("k{i}"), &i.to_le_bytes()).unwrap();
    }
    let before = store.stats().unwrap().recoveries;
    let mut child = ChildProc::spawn("panic_in_drop_child", "panic-in-drop", &name, &[], true);
    child.expect_success(Duration::from_secs(60));
    let out = child.output();
    assert!(out.contains("cut short at fault point"), "{out}");
    // The half-done put was flagged: the next holder rebuilds, and every object whose put
    // returned is there.
    assert_eq!(
        store.count().unwrap(),
        101 + store.has("cut").unwrap() as usize
    );
    assert_eq!(store.stats().unwrap().recoveries, before + 1, "{out}");
    store.check().unwrap();
    for i in 0..100u32 {
        assert_eq!(
            store.get_bytes(&format!("k{i}")).unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
}
