//! Fuzz target `scribble`: bytes of a live store's segment are overwritten with the fuzzer's
//! input, then a fresh handle runs a fixed mix of operations in-process. Errors are fine; a
//! panic, an abort, a crash or a hang (libFuzzer's `-timeout`) is a finding: the library must
//! turn every bad byte into an error (design brief, "what must hold" item 4).
//!
//! Input: a list of scribbles, each `[region, off_lo, off_hi, len, bytes...]`:
//! - `region % 4`: 0 the header (past magic, version and ready: those only make `open` fail or
//!   wait), 1 the index (and its inline records, if the store has them), 2 the arena's used
//!   part (below `top`), 3 anywhere past byte 16;
//! - `off` (u16, little-endian) is scaled into the region;
//! - `len % 16 + 1` bytes follow (fewer if the input ends).
//!
//! The store keeps inline records (`inline_values(120)`) when the input's first byte has its
//! top bit set.
//!
//! Each run creates its own store (a unique name, a fixed hash seed), fills it the same way,
//! applies the scribbles, runs the operations and destroys the store. A finding aborts the process, which
//! leaves that run's segment in /dev/shm (`rm /dev/shm/shmstore.fuzz-*`).

#![no_main]

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use shmstore::{Error, Options, Store};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    weights: Vec<f32>,
    extra: Option<(u32, String)>,
}

/// Removes the store's name when dropped.
struct Destroy(String);

impl Drop for Destroy {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// splitmix64: the same fill on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn size(&mut self) -> usize {
        match self.next() % 10 {
            0 => 2000 + (self.next() % 6000) as usize,
            1..=3 => 200 + (self.next() % 1800) as usize,
            _ => 1 + (self.next() % 200) as usize,
        }
    }
}

fn key(i: u32) -> String {
    match i % 4 {
        0 => format!("text-{i}"),
        1 => format!("nums-{i}"),
        2 => format!("rec-{i}"),
        _ => format!("raw-{i}"),
    }
}

const KEYS: u32 = 32;

/// A few dozen objects of mixed kinds and sizes; some removed (free blocks between live ones).
fn fill(store: &Store) {
    let mut rng = Rng(7);
    for i in 0..KEYS {
        let k = key(i);
        let n = rng.size();
        let _ = match i % 4 {
            0 => store.put(&k, &"x".repeat(n)),
            1 => store.put(&k, &(0..n as u64 / 8 + 1).collect::<Vec<u64>>()),
            2 => store.put(
                &k,
                &Record {
                    id: rng.next(),
                    name: "r".repeat(n.min(100)),
                    tags: vec!["a".into(), "b".into()],
                    weights: vec![0.5; n / 16],
                    extra: (i % 3 == 0).then(|| (i, "extra".into())),
                },
            ),
            _ => store.put_bytes(&k, &vec![(i * 37) as u8; n]),
        };
        if i % 5 == 4 {
            let _ = store.remove(&key(i - 2));
        }
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// Each store hashes its keys with a random seed (header offset 56). Fixing it while the store
/// is still empty makes the index's layout, and so every run, repeatable.
fn fix_hash_seed(name: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmstore.{name}"))
        .expect("open the segment file");
    f.seek(SeekFrom::Start(56)).unwrap();
    f.write_all(&[0x5A; 16]).unwrap();
}

/// Writes the input's scribbles into the segment file.
fn scribble(name: &str, mut data: &[u8]) {
    let path = format!("/dev/shm/shmstore.{name}");
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let total = bytes.len() as u64;
    let arena_off = u64_at(&bytes, 40).min(total);
    let top = u64_at(&bytes, 256).min(total - arena_off);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the segment file");
    while data.len() >= 4 {
        let (region, off, len) = (data[0], u16::from_le_bytes([data[1], data[2]]), data[3]);
        let len = (len as usize % 16 + 1).min(data.len() - 4);
        let value = &data[4..4 + len];
        data = &data[4 + len..];
        let (start, end) = match region % 4 {
            // Header fields end at 38272 (layouts 7 to 9); the index starts at 40960, its
            // records (if any) follow it, and the arena follows them (on the next huge page
            // in a large store).
            0 => (16, 38272),
            1 => (40960, arena_off.max(40961)),
            2 => (arena_off, arena_off + top.max(64)),
            _ => (16, total),
        };
        let at = start + (end - start) * off as u64 / 65536;
        let value = &value[..value.len().min(total.saturating_sub(at) as usize)];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(value).unwrap();
    }
}

/// The fixed mix of operations; every result is ignored but for lock timeouts (after three,
/// the lock is scribbled "held" and every further operation would only wait).
fn exercise(store: &Store) {
    let mut timeouts = 0;
    let mut go = |r: Result<(), Error>| {
        if matches!(r, Err(Error::Timeout { .. })) {
            timeouts += 1;
        }
        timeouts < 3
    };
    macro_rules! op {
        ($e:expr) => {
            if !go($e.map(|_| ())) {
                return;
            }
        };
    }
    op!(store.count());
    op!(store.keys());
    op!(store.stats());
    op!(store.check());
    let _ = store.processes();
    for i in (0..KEYS).chain([1000]) {
        let k = key(i);
        op!(store.has(&k));
        op!(store.get_bytes(&k));
        op!(store.get_with(&k, |b| b.len()));
        op!(store.get::<String>(&k));
        op!(store.get::<Vec<u64>>(&k));
        op!(store.get::<Record>(&k));
        op!(store.get::<HashMap<String, Vec<u8>>>(&k));
        op!(store.get_or::<u64>(&k, 7));
    }
    for (i, n) in [1usize, 100, 3000, 20_000, 70_000].into_iter().enumerate() {
        op!(store.put_bytes(&format!("new-{i}"), &vec![i as u8; n]));
    }
    for i in (0..KEYS).step_by(3) {
        op!(store.put(&key(i), &vec![i; 50 + i as usize * 40]));
    }
    for i in (1..KEYS).step_by(4) {
        op!(store.remove(&key(i)));
    }
    op!(store.keys());
    op!(store.check());
    op!(store.repair());
    op!(store.check());
    op!(store.keys());
    for i in 0..KEYS {
        op!(store.get_bytes(&key(i)));
    }
    op!(store.put("after", &"repair"));
    op!(store.remove("new-1"));
    op!(store.check());
}

fuzz_target!(|data: &[u8]| {
    let name = format!(
        "fuzz-scribble-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let options = Options::default()
        .capacity(256 << 10)
        .min_free_mem_pct(0.0)
        .lock_timeout(Duration::from_millis(10))
        .inline_values(if data.first().is_some_and(|b| b & 0x80 != 0) {
            120
        } else {
            0
        });
    let _ = Store::destroy(&name);
    let store = Store::create(&name, options).expect("create the store");
    let _destroy = Destroy(name.clone());
    fix_hash_seed(&name);
    fill(&store);
    drop(store);
    scribble(&name, data);
    // A fresh handle reads the scribbled header (geometry, options) as any opener would.
    if let Ok(store) = Store::open(&name) {
        exercise(&store);
    }
});
