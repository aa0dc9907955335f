//! Inline records (`Options::inline_values`) under scribbles: records are derived data, so
//! whatever is written over them, no operation may panic or fail with anything but a clear
//! error, `check` must fail exactly when what a used slot's record holds was changed, and
//! `repair` must give back every object exactly (the blocks, the truth, were not touched). A scribbled `record_len` in the
//! header must keep the store from opening.
//!
//! Offsets are the ones docs/design.md gives (geometry words at 16..56, `record_len` at 208,
//! the index at 40960 and the records right after it); the crate does not export its layout.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{Rng, TempStore, opts, segment_path};
use shmstore::{Error, Store};

const INDEX_SLOTS: u64 = 32;
const RECORD_LEN: u64 = 208;
const INDEX: u64 = 40960;
const INLINE: u32 = 120;
const KEYS: usize = 300;

fn read_u64(name: &str, off: u64) -> u64 {
    let f = std::fs::File::open(segment_path(name)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_le_bytes(b)
}

fn write_at(name: &str, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(segment_path(name))
        .unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// Values of 0 to 200 bytes: a little over half fit a 128-byte record beside their key.
fn value(i: usize) -> Vec<u8> {
    (0..(i * 7) % 201).map(|j| (i * 31 + j) as u8).collect()
}

fn filled() -> TempStore {
    let s = TempStore::new("records", opts(4 << 20).inline_values(INLINE));
    for i in 0..KEYS {
        assert!(s.store.put_bytes(&format!("k{i}"), &value(i)).unwrap());
    }
    s
}

/// Every operation on every key gives an answer or a corruption error: never a panic, an
/// allocation of garbage lengths or another error.
fn exercise(store: &Store) {
    for i in 0..KEYS {
        let key = format!("k{i}");
        // Lock-free reads answer from the records: a scribbled copy can give a wrong value
        // or a miss (no checksum covers values, in records as in blocks); one they cannot
        // read sends them to the lock, where the record is compared with its block and a
        // mismatch reported (and the store rebuilt by the next operation).
        let answers = [
            store.get_bytes(&key).map(|_| ()),
            store.has(&key).map(|_| ()),
            store.get_with(&key, <[u8]>::to_vec).map(|_| ()),
        ];
        for a in answers {
            match a {
                Ok(()) | Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("{key}: {e}"),
            }
        }
    }
}

#[test]
fn scribbled_records_are_found_by_check_and_rebuilt_by_repair() {
    let mut rng = Rng(0x5c41_bb1e);
    for case in 0..40 {
        let s = filled();
        let name = &s.name;
        assert_eq!(read_u64(name, RECORD_LEN), 128);
        let slots = read_u64(name, INDEX_SLOTS);
        let records = INDEX + slots * 8;
        // Aim at used slots' records most of the time (their words and their bytes), at any
        // record otherwise.
        let used: Vec<u64> = (0..slots)
            .filter(|i| {
                let s = read_u64(name, INDEX + i * 8);
                s != 0 && s != u64::MAX
            })
            .collect();
        let before = std::fs::read(segment_path(name)).unwrap();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(16) {
            let slot = if rng.below(4) > 0 {
                used[rng.below(used.len() as u64) as usize]
            } else {
                rng.below(slots)
            };
            let off = records + slot * 128 + rng.below(128);
            let bytes: Vec<u8> = match rng.below(3) {
                // A word of plausible or impossible lengths.
                0 => {
                    let word = (1u64 << 63) | rng.below(1 << 12) << 32 | rng.below(1 << 12);
                    write_at(name, records + slot * 128, &word.to_le_bytes());
                    what.push(format!("record {slot} word {word:#x}"));
                    continue;
                }
                1 => vec![rng.next() as u8],
                _ => (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect(),
            };
            write_at(name, off, &bytes);
            what.push(format!(
                "{} bytes at record {slot} + {}",
                bytes.len(),
                off % 128
            ));
        }
        // `check` finds exactly the scribbles that changed what a used slot's record holds:
        // its word, or the copy's bytes the word covers.
        let after = std::fs::read(segment_path(name)).unwrap();
        let changed = used.iter().any(|&slot| {
            let at = (records + slot * 128) as usize;
            let word = u64::from_le_bytes(before[at..at + 8].try_into().unwrap());
            let covered = if word >> 63 == 1 {
                8 + ((word >> 32) & 0x7FFF_FFFF) as usize + (word & 0xFFFF_FFFF) as usize
            } else {
                8
            };
            before[at..at + covered] != after[at..at + covered]
        });
        match s.store.check() {
            Ok(_) => assert!(
                !changed,
                "case {case} ({what:?}): check missed a changed record"
            ),
            Err(Error::Corrupt { .. }) => {
                assert!(
                    changed,
                    "case {case} ({what:?}): check blamed an unchanged store"
                )
            }
            Err(e) => panic!("case {case}: {e}"),
        }
        exercise(&s.store);
        s.store.repair().unwrap();
        s.store
            .check()
            .unwrap_or_else(|e| panic!("case {case} ({what:?}): after repair: {e}"));
        for i in 0..KEYS {
            assert_eq!(
                s.store.get_bytes(&format!("k{i}")).unwrap(),
                Some(value(i)),
                "case {case} ({what:?}): k{i} after repair"
            );
        }
        assert_eq!(s.store.stats().unwrap().resets, 0, "case {case}");
    }
}

#[test]
fn a_record_word_with_impossible_lengths_is_reported_and_rebuilt() {
    let s = filled();
    let slots = read_u64(&s.name, INDEX_SLOTS);
    let records = INDEX + slots * 8;
    // Every used slot's record claims 4 KiB of value: lock-free reads give up on it, the
    // locked path finds the record does not match its block, and the store is rebuilt.
    for i in 0..slots {
        let e = read_u64(&s.name, INDEX + i * 8);
        if e != 0 && e != u64::MAX {
            let word = (1u64 << 63) | 2u64 << 32 | 4096;
            write_at(&s.name, records + i * 128, &word.to_le_bytes());
        }
    }
    assert!(matches!(s.store.check(), Err(Error::Corrupt { .. })));
    let err = s.store.get_bytes("k1").unwrap_err().to_string();
    assert!(err.contains("inline record"), "{err}");
    // The next operation rebuilds the store first: every object is back, and gets read
    // copies again (mostly without the lock).
    let before = s.store.stats().unwrap();
    for i in 0..KEYS {
        assert_eq!(s.store.get_bytes(&format!("k{i}")).unwrap(), Some(value(i)));
    }
    let after = s.store.stats().unwrap();
    assert_eq!(after.recoveries, before.recoveries + 1);
    assert!(after.locked_reads - before.locked_reads < KEYS as u64 / 10);
    s.store.check().unwrap();
}

#[test]
fn a_scribbled_record_len_keeps_the_store_from_opening() {
    let s = filled();
    for bad in [0u64, 64, 192, 100, 1 << 40] {
        write_at(&s.name, RECORD_LEN, &bad.to_le_bytes());
        match Store::open(&s.name) {
            Err(Error::BadHeader { why, .. }) => assert!(why.contains("geometry"), "{bad}: {why}"),
            other => panic!("record_len {bad}: {:?}", other.map(|_| ())),
        }
    }
    write_at(&s.name, RECORD_LEN, &128u64.to_le_bytes());
    let again = Store::open(&s.name).unwrap();
    assert_eq!(again.get_bytes("k5").unwrap(), Some(value(5)));
    again.check().unwrap();
}

#[test]
fn a_scribbled_value_length_near_the_top_of_u64_is_an_error_not_an_overflow() {
    let s = TempStore::new("records-overflow", opts(1 << 20).inline_values(56));
    s.store.put_bytes("ab", b"x").unwrap();
    // The only block is the first of the arena; its `val_len` is at +16.
    let arena_off = read_u64(&s.name, 40);
    for bad in [u64::MAX - 2, u64::MAX - 49, u64::MAX] {
        write_at(&s.name, arena_off + 16, &bad.to_le_bytes());
        for r in [
            s.store.get_with("ab", <[u8]>::to_vec).map(|_| ()),
            s.store.get_bytes("ab").map(|_| ()),
            s.store.has("ab").map(|_| ()),
            s.store.check().map(|_| ()),
        ] {
            match r {
                Ok(()) | Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("val_len {bad:#x}: {e}"),
            }
        }
        write_at(&s.name, arena_off + 16, &1u64.to_le_bytes());
        s.store.repair().unwrap();
        s.store.check().unwrap();
    }
}
