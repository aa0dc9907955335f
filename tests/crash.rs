//! Crash recovery across real processes (design brief, "what must hold" item 3): writers are
//! killed with SIGKILL at random moments, often while they hold the store's lock in the
//! middle of a put or a remove. After every kill the survivor checks that the store is
//! consistent, that no value is torn, that every acknowledged operation is still there, and
//! that at most each writer's one interrupted operation is lost or half-visible.
//!
//! Each round starts two writers (re-runs of this test binary in the role "crash"), each on
//! its own half of a 200-key space. A writer draws its operations from a seeded generator that
//! the parent replays, so the parent knows exactly which operation each writer was in when it
//! died. After each operation returns, the writer appends an acknowledgement line to its own
//! log file. The parent builds its model of the store from those logs.
//!
//! Two scenarios: a strict store far larger than the data (nothing is ever refused), and a
//! strict store about the size of the data, where puts move other objects to make room
//! (relocation and sliding compaction) or are refused, so kills also land mid-move.

mod common;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ChildProc, Rng, TempDir, TempStore, child_env, child_store, opts};
use shmstore::{Options, PutPolicy, Store};

const WRITERS: u32 = 2;
const KEYS_PER_WRITER: u32 = 100;
/// A writer killed at a random delay in this range (milliseconds) after it is ready.
const KILL_AFTER_MS: (u64, u64) = (2, 50);
/// How long a kill aimed at the lock waits for the writer to hold it before killing anyway.
const AIM_FOR: Duration = Duration::from_millis(20);
/// Generous bound on a writer's start-up (a watchdog, not a speed limit).
const WATCHDOG: Duration = Duration::from_secs(60);
/// A writer that is never killed (its parent died) stops by itself after this long.
const ORPHAN_LIMIT: Duration = Duration::from_secs(30);

// ---- deterministic operations ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Put a value of `size` payload bytes, stamped `stamp`.
    Put {
        key: u32,
        stamp: u64,
        size: usize,
    },
    Remove {
        key: u32,
    },
    Get {
        key: u32,
    },
}

impl Op {
    fn key(self) -> u32 {
        match self {
            Op::Put { key, .. } | Op::Remove { key } | Op::Get { key } => key,
        }
    }
}

/// The operations writer `writer` does in round `round`, in order. Keys are global numbers
/// (the writer's half of the key space); stamps are unique per (round, writer, index).
fn operations(seed: u64, round: u32, writer: u32) -> impl Iterator<Item = Op> {
    let mut rng = Rng(seed ^ (round as u64) << 40 ^ (writer as u64) << 32 ^ 0x5EED);
    (0u64..).map(move |i| {
        let key = writer * KEYS_PER_WRITER + rng.below(KEYS_PER_WRITER as u64) as u32;
        match rng.below(100) {
            0..60 => {
                // Mostly up to 4 KiB (blocks split and merge), sometimes tiny.
                let size = if rng.below(8) == 0 {
                    rng.below(40)
                } else {
                    rng.below(4097)
                } as usize;
                Op::Put {
                    key,
                    stamp: (round as u64) << 40 | (writer as u64) << 32 | i,
                    size,
                }
            }
            60..85 => Op::Remove { key },
            _ => Op::Get { key },
        }
    })
}

fn key_name(key: u32) -> String {
    format!("key-{key:03}")
}

// ---- self-checking values -------------------------------------------------------------------------

/// FNV-1a over 8-byte words (the tail zero-padded): cheap enough that a writer spends much of
/// its time inside the store's lock, where the kills that matter land.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0100_0000_01b3);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    (h ^ u64::from_le_bytes(tail) ^ bytes.len() as u64).wrapping_mul(0x0100_0000_01b3)
}

/// Appends the payload of a value stamped `stamp`: 8-byte words that differ from word to word
/// and from stamp to stamp, so a value mixed from two writes never matches its stamp.
fn push_payload(v: &mut Vec<u8>, stamp: u64, size: usize) {
    let word = stamp.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let end = v.len() + size;
    let mut c = 1u64;
    while v.len() + 8 <= end {
        v.extend_from_slice(&word.wrapping_mul(c).to_le_bytes());
        c += 1;
    }
    let rest = end - v.len();
    v.extend_from_slice(&word.wrapping_mul(c).to_le_bytes()[..rest]);
}

/// `stamp (8) | key length (2) | key | payload length (4) | payload | checksum of all before (8)`.
fn encode(key: u32, stamp: u64, size: usize) -> Vec<u8> {
    let key = key_name(key);
    let mut v = Vec::with_capacity(22 + key.len() + size);
    v.extend_from_slice(&stamp.to_le_bytes());
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&(size as u32).to_le_bytes());
    push_payload(&mut v, stamp, size);
    let sum = checksum(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a value read under `key` from end to end; returns its stamp and payload size.
fn decode(key: u32, v: &[u8]) -> Result<(u64, usize), String> {
    let name = key_name(key);
    let torn = |why: &str| {
        Err(format!(
            "value under {name} ({} bytes) is torn: {why}",
            v.len()
        ))
    };
    if v.len() < 22 + name.len() {
        return torn("too short");
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return torn("bad checksum");
    }
    let stamp = u64::from_le_bytes(body[0..8].try_into().unwrap());
    let key_len = u16::from_le_bytes(body[8..10].try_into().unwrap()) as usize;
    if key_len != name.len() || &body[10..10 + key_len] != name.as_bytes() {
        return torn("it names another key");
    }
    let size = u32::from_le_bytes(body[10 + key_len..14 + key_len].try_into().unwrap()) as usize;
    let mut want = body[..14 + key_len].to_vec();
    push_payload(&mut want, stamp, size);
    if want != body {
        return torn("payload does not match its stamp");
    }
    Ok((stamp, size))
}

// ---- the writer (child process) -------------------------------------------------------------------

/// Child role "crash": opens the store by name, writes "ready" to its log, then performs its
/// operations until killed, appending one acknowledgement line per operation once it has
/// returned: `p INDEX KEY STAMP SIZE STORED`, `r INDEX KEY FOUND`, `g INDEX KEY STAMP|-`.
#[test]
fn crash_child() {
    let Some(store) = child_store("crash") else {
        return;
    };
    let seed: u64 = child_env("SHMSTORE_TEST_SEED").parse().unwrap();
    let round: u32 = child_env("SHMSTORE_TEST_ROUND").parse().unwrap();
    let writer: u32 = child_env("SHMSTORE_TEST_WRITER").parse().unwrap();
    // Unbuffered: each line is one write(2), done before the next operation starts.
    let mut log = OpenOptions::new()
        .append(true)
        .open(child_env("SHMSTORE_TEST_LOG"))
        .expect("open the log");
    log.write_all(b"ready\n").unwrap();
    let start = Instant::now();
    for (i, op) in operations(seed, round, writer).enumerate() {
        let line = match op {
            Op::Put { key, stamp, size } => {
                let stored = store
                    .put_bytes(&key_name(key), &encode(key, stamp, size))
                    .unwrap();
                format!("p {i} {key} {stamp} {size} {}\n", stored as u8)
            }
            Op::Remove { key } => {
                let found = store.remove(&key_name(key)).unwrap();
                format!("r {i} {key} {}\n", found as u8)
            }
            Op::Get { key } => match store.get_bytes(&key_name(key)).unwrap() {
                Some(v) => format!("g {i} {key} {}\n", decode(key, &v).unwrap().0),
                None => format!("g {i} {key} -\n"),
            },
        };
        log.write_all(line.as_bytes()).unwrap();
        if i.is_multiple_of(256) && start.elapsed() > ORPHAN_LIMIT {
            return;
        }
    }
}

// ---- the parent ------------------------------------------------------------------------------------

/// What the parent knows of one key: the stamp and payload size of its value.
type Model = HashMap<u32, (u64, usize)>;

/// Reads a writer's log, checks each acknowledgement against the operation the generator says
/// came at that index, applies it to `model`, and returns how many operations were acknowledged
/// and how many of them were refused puts (allowed only with `may_refuse`). A trailing line
/// without its newline was cut by the kill: that operation counts as not acknowledged (it may
/// or may not have happened).
fn apply_log(
    path: &Path,
    ops: &mut impl Iterator<Item = Op>,
    model: &mut Model,
    may_refuse: bool,
    what: &str,
) -> (usize, usize) {
    let text = std::fs::read_to_string(path).expect("read a writer's log");
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut lines = complete.lines();
    assert_eq!(
        lines.next(),
        Some("ready"),
        "{what}: log does not start with ready"
    );
    let (mut acked, mut refused) = (0, 0);
    for (i, line) in lines.enumerate() {
        let op = ops.next().unwrap();
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            f[1].parse::<usize>().unwrap(),
            i,
            "{what}: log line {line:?} out of sequence"
        );
        assert_eq!(
            f[2].parse::<u32>().unwrap(),
            op.key(),
            "{what}: log line {line:?} is not {op:?}"
        );
        match (f[0], op) {
            ("p", Op::Put { key, stamp, size }) => {
                let logged = (f[3].parse::<u64>().unwrap(), f[4].parse::<usize>().unwrap());
                assert_eq!(logged, (stamp, size), "{what}: log line {line:?}");
                if f[5] == "1" {
                    model.insert(key, (stamp, size));
                } else {
                    // A refused put leaves the key as it was.
                    assert!(may_refuse, "{what}: op {i}: a put was refused");
                    refused += 1;
                }
            }
            ("r", Op::Remove { key }) => {
                let found = f[3] == "1";
                assert_eq!(
                    found,
                    model.contains_key(&key),
                    "{what}: op {i} remove(key {key}) returned {found}"
                );
                model.remove(&key);
            }
            ("g", Op::Get { key }) => {
                let seen = (f[3] != "-").then(|| f[3].parse::<u64>().unwrap());
                assert_eq!(
                    seen,
                    model.get(&key).map(|v| v.0),
                    "{what}: op {i} get(key {key}) read this"
                );
            }
            _ => panic!("{what}: log line {line:?} is not {op:?}"),
        }
        acked += 1;
    }
    (acked, refused)
}

/// Reads every key through `store` and checks it against `model`, allowing each writer's
/// interrupted operation (`pending`) to have happened or not; updates `model` to what is there.
fn verify(store: &Store, model: &mut Model, pending: &[Op], what: &str) {
    store
        .check()
        .unwrap_or_else(|e| panic!("{what}: check after the kill: {e}"));
    for key in 0..WRITERS * KEYS_PER_WRITER {
        let found = store.get_bytes(&key_name(key)).unwrap();
        let found = found.map(|v| decode(key, &v).unwrap_or_else(|e| panic!("{what}: {e}")));
        let expected = model.get(&key).copied();
        if found == expected {
            continue;
        }
        // Only the interrupted operation on this key may explain a difference.
        match pending.iter().find(|op| op.key() == key) {
            Some(&Op::Put { stamp, size, .. }) if found == Some((stamp, size)) => {
                model.insert(key, (stamp, size));
            }
            Some(Op::Remove { .. }) if found.is_none() => {
                model.remove(&key);
            }
            _ => panic!(
                "{what}: key {key} holds {found:?}, the acknowledged state is {expected:?} (interrupted: {pending:?})"
            ),
        }
    }
    assert_eq!(store.count().unwrap(), model.len(), "{what}: count");
    let mut keys = store.keys().unwrap();
    keys.sort();
    let mut want: Vec<String> = model.keys().map(|&k| key_name(k)).collect();
    want.sort();
    assert_eq!(keys, want, "{what}: keys");
}

/// One crash test: the store's options and how long to go on.
struct Scenario {
    tag: &'static str,
    options: Options,
    max_rounds: u32,
    time_budget: Duration,
    /// Whether the store may be full (puts refused, blocks moved to make room).
    may_refuse: bool,
}

/// Rounds of two writers killed at random moments, each followed by a full verification.
fn run(sc: Scenario) {
    let seed = std::env::var("SHMSTORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let tag = sc.tag;
    eprintln!("{tag}: seed {seed} (rerun with SHMSTORE_CRASH_SEED={seed})");
    let s = TempStore::new(tag, sc.options);
    let dir = TempDir::new(tag);
    let mut rng = Rng(seed);
    let mut model = Model::new();
    let (mut kills, mut kills_holding_lock) = (0u32, 0u32);
    let (mut acked_total, mut refused_total) = (0usize, 0usize);
    let start = Instant::now();
    let mut round = 0u32;
    while round < sc.max_rounds && start.elapsed() < sc.time_budget {
        let what = format!("{tag}: round {round} (seed {seed})");
        let recoveries_before = s.stats().unwrap().recoveries;
        let mut writers: Vec<(ChildProc, std::path::PathBuf)> = (0..WRITERS)
            .map(|w| {
                let log = dir.join(&format!("r{round}-w{w}.log"));
                std::fs::write(&log, b"").unwrap();
                let env = [
                    ("SHMSTORE_TEST_SEED", seed.to_string()),
                    ("SHMSTORE_TEST_ROUND", round.to_string()),
                    ("SHMSTORE_TEST_WRITER", w.to_string()),
                    ("SHMSTORE_TEST_LOG", log.display().to_string()),
                ];
                (
                    ChildProc::spawn("crash_child", "crash", &s.name, &env, false),
                    log,
                )
            })
            .collect();
        // Wait until both are ready (the store opened), then kill each after its own delay.
        for (kid, log) in &mut writers {
            let ready = Instant::now();
            while std::fs::metadata(&*log).unwrap().len() == 0 {
                if let Some(status) = kid.try_wait() {
                    panic!("{what}: writer exited ({status}) before it was ready");
                }
                assert!(
                    ready.elapsed() < WATCHDOG,
                    "watchdog: {what}: a writer never got ready"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let now = Instant::now();
        let mut kill_at: Vec<(Duration, usize)> = (0..writers.len())
            .map(|w| {
                let ms = KILL_AFTER_MS.0 + rng.below(KILL_AFTER_MS.1 - KILL_AFTER_MS.0 + 1);
                (Duration::from_millis(ms), w)
            })
            .collect();
        kill_at.sort();
        for &(at, w) in &kill_at {
            std::thread::sleep(at.saturating_sub(now.elapsed()));
            let kid = &mut writers[w].0;
            // Half the kills aim at the lock: wait (briefly) until the writer holds it.
            if rng.below(2) == 0 {
                let aim = Instant::now();
                while s.stats().unwrap().lock_owner != kid.id() && aim.elapsed() < AIM_FOR {}
            }
            let status = kid.kill_and_wait();
            // Killed, or (only on a very slow machine) stopped by its own time limit.
            assert!(
                status.signal() == Some(libc::SIGKILL) || status.success(),
                "{what}: writer {w} failed: {status}"
            );
            kills += 1;
        }
        // A writer whose pid is still recorded as the lock owner died holding the lock.
        let owner = s.stats().unwrap().lock_owner;
        let died_holding = owner != 0 && writers.iter().any(|(kid, _)| kid.id() == owner);
        kills_holding_lock += died_holding as u32;

        // The model: every acknowledged operation, plus each writer's interrupted one.
        let mut pending = Vec::new();
        for (w, (_, log)) in writers.iter().enumerate() {
            let mut ops = operations(seed, round, w as u32);
            let what = format!("{what}, writer {w}");
            let (acked, refused) = apply_log(log, &mut ops, &mut model, sc.may_refuse, &what);
            acked_total += acked;
            refused_total += refused;
            pending.push(ops.next().unwrap());
        }
        // Survivors: this process's own handle on even rounds, a fresh one on odd rounds.
        let fresh;
        let store = if round.is_multiple_of(2) {
            &s.store
        } else {
            fresh = Store::open(&s.name).unwrap();
            &fresh
        };
        // The first operation takes the lock (recovering if a writer died holding it); a get
        // or has would not if no change was under way.
        store.count().unwrap();
        if died_holding {
            assert!(
                s.stats().unwrap().recoveries > recoveries_before,
                "{what}: no recovery after a holder died"
            );
        }
        verify(store, &mut model, &pending, &what);
        for (_, log) in &writers {
            let _ = std::fs::remove_file(log);
        }
        round += 1;
    }
    let stats = s.stats().unwrap();
    eprintln!(
        "{tag}: {round} rounds, {kills} kills, {kills_holding_lock} with the lock still held, \
         {} recoveries, {acked_total} acknowledged operations ({refused_total} refused puts), \
         {} objects at the end, {:?}",
        stats.recoveries,
        model.len(),
        start.elapsed()
    );
    assert_eq!(stats.resets, 0, "recovery never had to empty the store");
    assert_eq!(stats.evictions, 0, "a strict store never evicts");
    assert!(
        acked_total > 0,
        "the writers did no work before they were killed"
    );
}

#[test]
fn writers_killed_at_random_moments_lose_at_most_their_interrupted_operation() {
    // Strict and far larger than 200 values of 4 KiB: nothing is ever evicted or refused.
    run(Scenario {
        tag: "crash",
        options: opts(16 << 20).put_policy(PutPolicy::Strict),
        max_rounds: 120,
        time_budget: Duration::from_secs(12),
        may_refuse: false,
    });
}

#[test]
fn writers_killed_while_the_store_is_full_and_blocks_move() {
    // About the size of the data the writers keep: puts find the arena full or fragmented, so
    // they move other objects to make room (compaction) or are refused. Strict: no eviction.
    run(Scenario {
        tag: "crash-full",
        options: opts(256 << 10).put_policy(PutPolicy::Strict),
        max_rounds: 80,
        time_budget: Duration::from_secs(8),
        may_refuse: true,
    });
}
