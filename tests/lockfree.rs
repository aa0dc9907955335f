//! Lock-free reads across real processes: readers in two processes get and check values while
//! writers in three others replace, remove and evict them (so blocks move, merge and give their
//! pages back), and one writer is killed with SIGKILL midway. A reader must only ever see a
//! whole value that some writer stored under that key: never a torn one, never another key's.
//! The writer that dies is armed (feature `fault-injection`) to SIGKILL itself at a fault
//! point, so it dies in the middle of a change, holding the lock, with the seqlock word odd.
//!
//! Children re-run this test binary (see tests/common/mod.rs, [`ChildProc`]).

mod common;

use std::time::{Duration, Instant};

use common::{ChildProc, Rng, TempStore, child_env, child_store, opts};
use shmstore::PutPolicy;

const WATCHDOG: Duration = Duration::from_secs(60);
/// How long the children work.
const RUN_FOR: Duration = Duration::from_millis(2000);
/// The fault point at which the dying writer kills itself (a few hundred operations in).
const DIE_AT: u64 = 3000;
/// Few keys, so that freed blocks are reused at once, under readers still copying them.
const KEYS: u64 = 24;

fn key(i: u64) -> String {
    format!("lf-{i}")
}

/// The word a value of `key` written by `writer` in generation `generation` repeats.
fn word(key: &str, writer: u64, generation: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ writer.rotate_left(48) ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A self-checking value: writer, generation, then `words` copies of [`word`]. Sizes run
/// from 16 bytes to 160 KiB, so that some values are read under the lock (over 64 KiB).
fn value(key: &str, writer: u64, generation: u64, words: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + words * 8);
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&generation.to_le_bytes());
    let w = word(key, writer, generation).to_le_bytes();
    for _ in 0..words {
        v.extend_from_slice(&w);
    }
    v
}

/// Panics unless `v` is a whole value written for `key`.
fn verify(key: &str, v: &[u8]) {
    assert!(
        v.len() >= 16 && v.len().is_multiple_of(8),
        "{key}: a value of {} bytes",
        v.len()
    );
    let writer = u64::from_le_bytes(v[0..8].try_into().unwrap());
    let generation = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let w = word(key, writer, generation).to_le_bytes();
    for (i, chunk) in v[16..].chunks(8).enumerate() {
        assert_eq!(
            chunk,
            w,
            "{key}: word {i} of {} is torn or belongs to another value (writer {writer}, generation {generation})",
            v.len() / 8 - 2
        );
    }
}

fn random_words(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0 => 8 * 1024 + rng.below(12 * 1024) as usize, // 64-160 KiB: read under the lock
        1..=10 => 512 + rng.below(3 * 1024) as usize,  // 4-28 KiB
        _ => rng.below(512) as usize,                  // up to 4 KiB
    }
}

/// Child role "writer": puts (80%) and removes (20%) random keys until the time is up.
#[test]
fn lockfree_writer_child() {
    let Some(store) = child_store("writer") else {
        return;
    };
    let me: u64 = child_env("LF_WRITER").parse().unwrap();
    let dies = std::env::var("LF_DIE").is_ok();
    if dies {
        shmstore::fault::arm(DIE_AT);
    }
    let mut rng = Rng(0x5eed ^ me);
    let start = Instant::now();
    let mut generation = 0u64;
    // The dying writer goes on until its fault point kills it (a watchdog bounds it).
    let run_for = if dies { WATCHDOG } else { RUN_FOR };
    while start.elapsed() < run_for {
        let k = key(rng.below(KEYS));
        if rng.below(5) == 0 {
            store.remove(&k).unwrap();
        } else {
            generation += 1;
            let v = value(&k, me, generation, random_words(&mut rng));
            store.put_bytes(&k, &v).unwrap();
        }
    }
}

/// Child role "reader": gets and checks random keys until the time is up; prints its counts.
#[test]
fn lockfree_reader_child() {
    let Some(store) = child_store("reader") else {
        return;
    };
    let me: u64 = child_env("LF_READER").parse().unwrap();
    let mut rng = Rng(0xfeed ^ me);
    let start = Instant::now();
    let (mut gets, mut found) = (0u64, 0u64);
    while start.elapsed() < RUN_FOR {
        let k = key(rng.below(KEYS));
        gets += 1;
        if let Some(v) = store.get_bytes(&k).unwrap() {
            verify(&k, &v);
            found += 1;
        }
        // `has` agrees with itself at least: it must not fail or panic mid-change.
        store.has(&k).unwrap();
    }
    println!("reader {me}: {gets} gets, {found} found");
}

#[test]
fn readers_see_only_whole_values_while_writers_churn_and_die() {
    churn(opts(2 << 20));
}

/// The same on a store that copies values of up to 1,016 bytes beside the index (about a
/// tenth of the puts), which readers then read from the copies.
#[test]
fn readers_of_inline_copies_see_only_whole_values_while_writers_churn_and_die() {
    churn(opts(2 << 20).inline_values(1016));
}

/// Two readers, two writers and a writer that dies mid-change, on a store created with
/// `options` (small enough that writers evict, compact and give pages back all the time).
fn churn(options: shmstore::Options) {
    let s = TempStore::new("lockfree", options.put_policy(PutPolicy::Rotate));
    for i in 0..KEYS {
        let k = key(i);
        s.put_bytes(&k, &value(&k, 99, 0, 64)).unwrap();
    }
    let recoveries = s.stats().unwrap().recoveries;
    let spawn = |role: &str, env: &[(&str, String)]| {
        ChildProc::spawn(&format!("lockfree_{role}_child"), role, &s.name, env, true)
    };
    let mut readers: Vec<ChildProc> = (0..2)
        .map(|i| spawn("reader", &[("LF_READER", i.to_string())]))
        .collect();
    let mut survivors: Vec<ChildProc> = (0..2)
        .map(|i| spawn("writer", &[("LF_WRITER", i.to_string())]))
        .collect();
    // One writer dies in the middle of a change: readers must carry on (falling back to the
    // lock, which recovers) and still see only whole values.
    let mut victim = spawn(
        "writer",
        &[("LF_WRITER", "2".into()), ("LF_DIE", "1".into())],
    );
    let status = victim.wait_deadline(WATCHDOG);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the dying writer did not die at its fault point: {status}"
    );

    for w in &mut survivors {
        w.expect_success(WATCHDOG);
    }
    let mut gets = 0u64;
    for r in &mut readers {
        r.expect_success(WATCHDOG);
        let out = r.output();
        // libtest prints "test <name> ... " before the child's own line.
        let counts = out
            .split("reader ")
            .nth(1)
            .unwrap_or_else(|| panic!("a reader printed no counts: {out}"));
        gets += counts.split(' ').nth(1).unwrap().parse::<u64>().unwrap();
    }
    assert!(gets > 1000, "the readers only managed {gets} gets");

    s.check().unwrap();
    for i in 0..KEYS {
        let k = key(i);
        if let Some(v) = s.get_bytes(&k).unwrap() {
            verify(&k, &v);
        }
    }
    let stats = s.stats().unwrap();
    assert!(
        stats.recoveries > recoveries,
        "nobody recovered after the writer died holding the lock"
    );
    // Every get was counted, by the process that made it, whichever way it went.
    assert!(stats.hits + stats.misses >= gets, "{stats:?}");
    // Most reads took no lock (values over 64 KiB and conflicts took it).
    assert!(
        stats.locked_reads < (stats.hits + stats.misses) / 2,
        "{} of {} reads took the lock",
        stats.locked_reads,
        stats.hits + stats.misses
    );
}
