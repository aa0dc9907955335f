//! The store's API and its semantics, in one process.

mod common;

use std::time::Duration;

use common::{Cleanup, TempStore, opts, segment_path, unique_name};
use shmstore::{Error, Options, Put, PutPolicy, Refusal, Store};

#[test]
fn put_get_has_remove_count_keys() {
    let s = TempStore::new("basic", opts(1 << 20));
    assert_eq!(s.count().unwrap(), 0);
    assert!(s.put("a", &vec![1u32, 2, 3]).unwrap());
    assert!(s.put("b", "text").unwrap());
    assert_eq!(s.get::<Vec<u32>>("a").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(s.get::<String>("b").unwrap().as_deref(), Some("text"));
    assert_eq!(s.get::<u32>("missing").unwrap(), None);
    assert_eq!(s.get_or("missing", 7u32).unwrap(), 7);
    assert!(s.has("a").unwrap());
    assert!(!s.has("missing").unwrap());
    assert_eq!(s.count().unwrap(), 2);
    let mut keys = s.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    assert!(s.remove("a").unwrap());
    assert!(!s.remove("a").unwrap());
    assert!(!s.has("a").unwrap());
    assert_eq!(s.count().unwrap(), 1);
    s.check().unwrap();
}

#[test]
fn put_replaces() {
    let s = TempStore::new("replace", opts(1 << 20));
    s.put("k", &1u64).unwrap();
    s.put("k", &"now a much longer string value".to_string())
        .unwrap();
    assert_eq!(
        s.get::<String>("k").unwrap().unwrap(),
        "now a much longer string value"
    );
    assert_eq!(s.count().unwrap(), 1);
    s.check().unwrap();
}

#[test]
fn bytes_api_and_get_with() {
    let s = TempStore::new("bytes", opts(1 << 20));
    let data: Vec<u8> = (0..=255).collect();
    assert!(s.put_bytes("raw", &data).unwrap());
    assert_eq!(s.get_bytes("raw").unwrap().unwrap(), data);
    assert_eq!(s.get_with("raw", |b| b.len()).unwrap(), Some(256));
    assert_eq!(s.get_with("nope", |b| b.len()).unwrap(), None);
    assert!(s.put_bytes("empty", b"").unwrap());
    assert_eq!(s.get_bytes("empty").unwrap().unwrap(), b"");
}

#[test]
fn get_with_closure_that_reenters_gets_an_error_not_a_deadlock() {
    let s = TempStore::new("reenter", opts(1 << 20));
    s.put_bytes("k", b"v").unwrap();
    let inner = s.get_with("k", |_| s.remove("k")).unwrap().unwrap();
    assert!(matches!(inner, Err(Error::Reentrant)), "{inner:?}");
    // A read that takes no lock works inside the closure (the closure holds the lock, so no
    // writer can be busy).
    let inner = s.get_with("k", |_| s.has("k")).unwrap().unwrap();
    assert!(matches!(inner, Ok(true)), "{inner:?}");
    // The lock was released normally afterwards: a put takes it.
    assert!(s.put_bytes("k", b"w").unwrap());
    assert_eq!(s.get_bytes("k").unwrap().unwrap(), b"w");
}

#[test]
fn panicking_get_with_closure_releases_the_lock() {
    let s = TempStore::new("panic", opts(1 << 20));
    s.put_bytes("k", b"v").unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.get_with("k", |_| panic!("boom"))
    }));
    assert!(r.is_err());
    assert!(s.has("k").unwrap());
    s.check().unwrap();
}

#[test]
fn wrong_type_is_a_decode_error() {
    let s = TempStore::new("decode", opts(1 << 20));
    s.put("k", &123456789u64).unwrap();
    assert!(matches!(s.get::<String>("k"), Err(Error::Decode { .. })));
}

#[test]
fn stats_count_hits_misses_puts() {
    let s = TempStore::new("stats", opts(1 << 20));
    s.put("a", &1u8).unwrap();
    s.get::<u8>("a").unwrap();
    s.get::<u8>("b").unwrap();
    s.remove("a").unwrap();
    let st = s.stats().unwrap();
    assert_eq!(
        (st.puts, st.hits, st.misses, st.removes, st.objects),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(st.capacity, 1 << 20);
    assert_eq!(st.hit_ratio(), 0.5);
}

#[test]
fn rotate_evicts_least_recently_used() {
    // Room for a handful of 64 KiB objects.
    let s = TempStore::new("rotate", opts(256 << 10));
    let v = vec![7u8; 60 << 10];
    for i in 0..4 {
        assert!(s.put_bytes(&format!("k{i}"), &v).unwrap());
    }
    // k0 is used again, so k1 is now the least recent.
    assert!(s.get_bytes("k0").unwrap().is_some());
    assert!(s.put_bytes("k4", &v).unwrap());
    assert!(s.has("k0").unwrap(), "recently read object was evicted");
    assert!(!s.has("k1").unwrap(), "least recently used object was kept");
    assert!(s.stats().unwrap().evictions >= 1);
    s.check().unwrap();
}

#[test]
fn strict_refuses_and_keeps_the_old_object() {
    let s = TempStore::new("strict", opts(256 << 10).put_policy(PutPolicy::Strict));
    let v = vec![1u8; 60 << 10];
    let mut stored = 0;
    while s.put_bytes(&format!("k{stored}"), &v).unwrap() {
        stored += 1;
    }
    assert!(stored >= 3);
    assert_eq!(s.count().unwrap(), stored);
    // Replacing k0 with a larger value does not fit: refused, and k0 is unchanged.
    assert!(!s.put_bytes("k0", &vec![2u8; 120 << 10]).unwrap());
    assert_eq!(
        s.try_put_bytes("k0", &vec![2u8; 120 << 10]).unwrap(),
        Put::Refused(Refusal::StoreFull)
    );
    assert_eq!(
        s.try_put("k0", &vec![2u8; 120 << 10]).unwrap(),
        Put::Refused(Refusal::StoreFull),
        "the typed put says why as well"
    );
    assert_eq!(s.get_bytes("k0").unwrap().unwrap(), v);
    assert_eq!(s.stats().unwrap().evictions, 0);
    assert!(s.stats().unwrap().refused_puts >= 4);
    s.check().unwrap();
}

#[test]
fn rotate_replaces_the_only_object_with_a_larger_one() {
    let s = TempStore::new("rotate-only", opts(128 << 10));
    s.put_bytes("k", &vec![1u8; 70 << 10]).unwrap();
    assert!(s.put_bytes("k", &vec![2u8; 100 << 10]).unwrap());
    assert_eq!(s.get_bytes("k").unwrap().unwrap(), vec![2u8; 100 << 10]);
    s.check().unwrap();
}

/// A rotating store full of small objects and one large value, which is replaced by a value
/// that fits in its room but not beside it: the old value's room is reused, and no other
/// object is evicted (they all were, the old value going last, before). With the large value
/// last in the arena (its room reaching the unused end) and between small objects (its room
/// a block of its own), by a value of the same size, a smaller one and a slightly larger one.
#[test]
fn rotate_replacing_a_large_value_in_a_full_store_keeps_the_other_objects() {
    for (before, new_len) in [
        (100, 40_000),
        (100, 30_000),
        (100, 40_100),
        (50, 40_000),
        (50, 39_000),
    ] {
        let s = TempStore::new("rotate-big", opts(64 << 10));
        let small = |i: usize| format!("s{i}");
        for i in 0..before {
            assert!(s.put_bytes(&small(i), &[i as u8; 100]).unwrap());
        }
        assert!(s.put_bytes("big", &vec![1u8; 40_000]).unwrap());
        for i in before..100 {
            assert!(s.put_bytes(&small(i), &[i as u8; 100]).unwrap());
        }
        let st = s.stats().unwrap();
        assert_eq!((st.objects, st.evictions), (101, 0));
        // Full: the new value does not fit beside the old one.
        assert!(st.capacity - st.used_bytes < 40_000, "{st:?}");

        assert!(s.put_bytes("big", &vec![2u8; new_len]).unwrap());
        let st = s.stats().unwrap();
        assert_eq!(
            (st.objects, st.evictions),
            (101, 0),
            "placed {before} small objects first, replaced by {new_len} bytes"
        );
        assert_eq!(s.get_bytes("big").unwrap().unwrap(), vec![2u8; new_len]);
        for i in 0..100 {
            assert_eq!(s.get_bytes(&small(i)).unwrap().unwrap(), [i as u8; 100]);
        }
        s.check().unwrap();
    }
}

/// A value too large for the old one's room makes room by eviction first, least recently
/// used first: here the small objects placed right after the old value, so that its room
/// grows until the new value fits in it, and the more recent small objects stay.
#[test]
fn rotate_replacing_with_a_value_too_large_for_the_old_room_evicts_others_first() {
    let s = TempStore::new("rotate-bigger", opts(64 << 10));
    assert!(s.put_bytes("big", &vec![1u8; 30_000]).unwrap());
    for i in 0..100 {
        assert!(s.put_bytes(&format!("s{i}"), &[i as u8; 100]).unwrap());
    }
    // 45,000 bytes fit neither beside the old value (64 KiB in all) nor in its room (its
    // 30,000 bytes, followed by live small objects).
    assert!(s.put_bytes("big", &vec![2u8; 45_000]).unwrap());
    let st = s.stats().unwrap();
    assert!(st.evictions > 0 && st.objects > 1, "{st:?}");
    assert!(!s.has("s0").unwrap(), "the least recently used goes first");
    assert!(s.has("s99").unwrap());
    assert_eq!(s.get_bytes("big").unwrap().unwrap(), vec![2u8; 45_000]);
    s.check().unwrap();
}

#[test]
fn memory_threshold_refuses_in_strict_and_rotates_in_rotate() {
    // A threshold of 100% can never be met.
    let strict = TempStore::new(
        "mem-strict",
        opts(1 << 20)
            .min_free_mem_pct(1.0)
            .put_policy(PutPolicy::Strict),
    );
    assert!(!strict.put_bytes("k", b"v").unwrap());
    assert_eq!(
        strict.try_put_bytes("k", b"v").unwrap(),
        Put::Refused(Refusal::MemoryLow)
    );
    let rotate = TempStore::new("mem-rotate", opts(1 << 20).min_free_mem_pct(1.0));
    assert!(!rotate.put_bytes("k", b"v").unwrap());
    assert_eq!(
        rotate.try_put_bytes("k", b"v").unwrap(),
        Put::Refused(Refusal::MemoryLow)
    );
    assert_eq!(rotate.count().unwrap(), 0);
}

#[test]
fn a_fragmenting_churn_still_fits_fourteen_64k_objects_in_1mib() {
    let s = TempStore::new("frag", opts(1 << 20));
    // Mixed sizes, many rounds of replace and remove.
    let mut rng = common::Rng(12345u64);
    for round in 0..2000 {
        let x = rng.next();
        let size = (x % 40_000) as usize + 1;
        let key = format!("c{}", x % 50);
        if round % 3 == 0 {
            s.remove(&key).unwrap();
        } else {
            s.put_bytes(&key, &vec![round as u8; size]).unwrap();
        }
    }
    s.check().unwrap();
    for k in s.keys().unwrap() {
        s.remove(&k).unwrap();
    }
    let empty = s.check().unwrap();
    assert_eq!(
        (empty.objects, empty.free_blocks),
        (0, 0),
        "an empty store merged back into one free region"
    );
    let evictions = s.stats().unwrap().evictions;
    for i in 0..14 {
        assert!(
            s.put_bytes(&format!("big{i}"), &vec![i as u8; 64 << 10])
                .unwrap()
        );
    }
    assert_eq!(s.count().unwrap(), 14);
    assert_eq!(s.stats().unwrap().evictions, evictions);
    s.check().unwrap();
}

#[test]
fn index_full_rotates_in_rotate_and_refuses_in_strict() {
    let s = TempStore::new("index-full", opts(1 << 20).max_objects(48));
    let max = s.stats().unwrap().max_objects as usize;
    for i in 0..max + 10 {
        assert!(s.put(&format!("k{i}"), &i).unwrap());
    }
    assert_eq!(s.count().unwrap(), max);
    assert!(s.has(&format!("k{}", max + 9)).unwrap());
    assert!(!s.has("k0").unwrap());
    let t = TempStore::new(
        "index-full-strict",
        opts(1 << 20).max_objects(48).put_policy(PutPolicy::Strict),
    );
    for i in 0..max {
        assert!(t.put(&format!("k{i}"), &i).unwrap());
    }
    assert!(!t.put("one-more", &0).unwrap());
    assert_eq!(
        t.try_put("one-more", &0).unwrap(),
        Put::Refused(Refusal::IndexFull)
    );
    // Replacing an existing key needs no new slot.
    assert_eq!(t.try_put("k0", &99).unwrap(), Put::Stored);
    t.check().unwrap();
}

#[test]
fn tombstone_churn_keeps_the_index_usable() {
    let s = TempStore::new("tomb", opts(1 << 20).max_objects(100));
    for i in 0..20_000u32 {
        s.put(&format!("k{i}"), &i).unwrap();
        s.remove(&format!("k{i}")).unwrap();
    }
    assert_eq!(s.count().unwrap(), 0);
    s.put("last", &1u8).unwrap();
    assert!(s.has("last").unwrap());
    s.check().unwrap();
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let s = TempStore::new("bad", opts(64 << 10));
    s.put("keep", &1u32).unwrap();
    let before = s.stats().unwrap();
    assert!(matches!(s.put("", &1), Err(Error::InvalidKey { len: 0 })));
    let long = "k".repeat(shmstore::MAX_KEY_LEN + 1);
    assert!(matches!(s.put(&long, &1), Err(Error::InvalidKey { .. })));
    assert!(matches!(s.get::<u32>(&long), Err(Error::InvalidKey { .. })));
    assert!(matches!(
        s.put_bytes("big", &vec![0u8; 65 << 10]),
        Err(Error::ValueTooLarge { .. })
    ));
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    assert!(matches!(
        s.put("keep", &Unserializable),
        Err(Error::Encode(_))
    ));
    assert_eq!(s.get::<u32>("keep").unwrap(), Some(1));
    let after = s.stats().unwrap();
    assert_eq!(
        (before.objects, before.puts, before.used_bytes),
        (after.objects, after.puts, after.used_bytes)
    );
    s.check().unwrap();
}

#[test]
fn bad_names_and_options_are_errors() {
    for name in ["", "a/b", "tab\there"] {
        assert!(
            matches!(
                Store::create(name, opts(1 << 20)),
                Err(Error::InvalidName { .. })
            ),
            "{name:?}"
        );
    }
    let long = "n".repeat(shmstore::MAX_NAME_LEN + 1);
    assert!(matches!(Store::open(&long), Err(Error::InvalidName { .. })));
    let name = unique_name("badopt");
    let _c = Cleanup(name.clone());
    let with_mode = |mode| {
        let mut o = opts(1 << 20);
        o.mode = mode;
        o
    };
    for o in [
        opts(0),
        opts(1 << 20).min_free_mem_pct(1.5),
        opts(1 << 20).min_free_mem_pct(-1.0),
        with_mode(0o777),
        with_mode(0o4600),
        with_mode(0o400),
        with_mode(0),
        with_mode(u32::MAX),
    ] {
        assert!(
            matches!(Store::create(&name, o), Err(Error::InvalidOption { .. })),
            "{o:?}"
        );
    }
    let said = Store::create(&name, with_mode(0o777))
        .unwrap_err()
        .to_string();
    assert!(
        said.contains("0o777 is not a segment's mode") && !said.contains("  "),
        "{said}"
    );
    // Read and write bits, the owner's both: wider access is the user's to ask for.
    for mode in [0o600, 0o640, 0o666] {
        let s = Store::create(&name, with_mode(mode)).unwrap();
        assert_eq!(s.options().mode, mode);
        Store::destroy(&name).unwrap();
    }
    assert!(
        !shmstore::valid(&name),
        "a refused create left a segment behind"
    );
}

#[test]
fn create_open_destroy_lifecycle() {
    let name = unique_name("life");
    let _c = Cleanup(name.clone());
    assert!(matches!(Store::open(&name), Err(Error::NotFound(_))));
    assert!(!shmstore::valid(&name));
    let a = Store::create(&name, opts(1 << 20)).unwrap();
    assert!(matches!(
        Store::create(&name, opts(1 << 20)),
        Err(Error::AlreadyExists(_))
    ));
    assert!(shmstore::valid(&name));
    assert!(shmstore::list().unwrap().contains(&name));
    let b = Store::open(&name).unwrap();
    let c = Store::open_or_create(&name, opts(2 << 20)).unwrap();
    assert_eq!(
        c.stats().unwrap().capacity,
        1 << 20,
        "open_or_create keeps the existing options"
    );
    a.put("x", &5u8).unwrap();
    assert_eq!(b.get::<u8>("x").unwrap(), Some(5));
    drop(a);
    assert!(
        shmstore::valid(&name),
        "dropping a handle removed the store"
    );
    Store::destroy(&name).unwrap();
    assert!(!shmstore::valid(&name));
    assert!(!shmstore::list().unwrap().contains(&name));
    // Handles still open keep working.
    b.put("y", &6u8).unwrap();
    assert_eq!(c.get::<u8>("y").unwrap(), Some(6));
    assert!(matches!(Store::destroy(&name), Err(Error::NotFound(_))));
}

#[test]
fn a_directory_in_a_stores_place_is_named_escaped_in_the_advice() {
    // A name may hold characters that reorder a terminal's line (not control characters,
    // which names refuse): the advice that names the file shows them escaped.
    let name = unique_name("dir\u{202e}txt");
    let path = segment_path(&name);
    std::fs::create_dir(&path).unwrap();
    let _d = common::TempDir { path }; // removed when dropped
    let said = Store::open(&name).unwrap_err().to_string();
    assert!(said.contains("is a directory, not a store"), "{said}");
    assert!(
        !said.contains('\u{202e}') && said.contains("\\u{202e}"),
        "{said:?}"
    );
}

#[test]
fn foreign_segments_are_refused() {
    let name = unique_name("foreign");
    let path = segment_path(&name);
    let _c = Cleanup(name.clone());
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    assert!(matches!(Store::open(&name), Err(Error::Foreign { .. })));
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(Store::open(&name), Err(Error::Foreign { .. })));
    assert!(!shmstore::valid(&name));
}

#[test]
fn a_get_of_a_recursive_or_zero_sized_type_from_unsuitable_bytes_is_a_decode_error() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }
    let s = TempStore::new("decode-bounds", opts(1 << 20));
    s.put_bytes("ones", &vec![1u8; 100_000]).unwrap();
    s.put("huge-len", &(1u64 << 62)).unwrap();
    assert!(matches!(s.get::<Tree>("ones"), Err(Error::Decode { .. })));
    assert!(matches!(
        s.get::<Vec<()>>("huge-len"),
        Err(Error::Decode { .. })
    ));
    assert_eq!(s.get_bytes("ones").unwrap().map(|v| v.len()), Some(100_000));
    assert_eq!(s.get::<u64>("huge-len").unwrap(), Some(1 << 62));
}

#[test]
fn writes_from_a_drop_during_an_unrelated_panic_commit_without_a_recovery() {
    let s = TempStore::new("unwind", opts(1 << 20));
    for i in 0..100u32 {
        s.put(&format!("k{i}"), &i).unwrap();
    }
    struct Tidy<'a>(&'a Store);
    impl Drop for Tidy<'_> {
        fn drop(&mut self) {
            // Runs while the thread unwinds: every store call here is a whole one.
            self.0.remove("k5").unwrap();
            self.0.put("tidied", &true).unwrap();
        }
    }
    let before = s.stats().unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _tidy = Tidy(&s);
        panic!("unrelated to the store");
    }));
    assert!(unwound.is_err());
    s.put("next", &1u8).unwrap();
    let after = s.stats().unwrap();
    assert_eq!(
        after.recoveries, before.recoveries,
        "a write that finished was taken for a half-done one"
    );
    assert!(!s.has("k5").unwrap());
    assert_eq!(s.get::<bool>("tidied").unwrap(), Some(true));
    assert_eq!(s.count().unwrap(), 101);
    s.check().unwrap();
}

#[test]
fn a_store_cut_short_or_grown_says_its_header_is_damaged_not_repairable() {
    let s = TempStore::new("cut", opts(1 << 20));
    s.put("k", &1u8).unwrap();
    let path = segment_path(s.name());
    let whole = std::fs::read(&path).unwrap();
    let bad_header = |r: shmstore::Result<Store>, what: &str, says: &str| match r {
        Err(e @ Error::BadHeader { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(says) && msg.contains("destroy and re-create"),
                "{what}: {msg}"
            );
            assert!(!msg.contains("shmstore repair` (Store::repair)"), "{msg}");
        }
        other => panic!("{what}: {:?}", other.map(|_| ())),
    };
    // Shorter than the header, magic and version intact: not another layout's store.
    std::fs::write(&path, &whole[..4096]).unwrap();
    bad_header(
        Store::open(s.name()),
        "4 KiB left",
        "cut short to 4096 bytes",
    );
    // Longer or shorter than the header says.
    std::fs::write(&path, &whole[..whole.len() - 4096]).unwrap();
    bad_header(Store::open(s.name()), "a page short", "header says");
    let mut longer = whole.clone();
    longer.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &longer).unwrap();
    bad_header(Store::open(s.name()), "a page more", "header says");
    // The whole file again: it opens, and the handle that was open works throughout.
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(
        Store::open(s.name()).unwrap().get::<u8>("k").unwrap(),
        Some(1)
    );
    assert_eq!(s.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn a_store_whose_index_size_was_overwritten_does_not_open() {
    let s = TempStore::new("geometry", opts(1 << 20));
    s.put("k", &1u8).unwrap();
    // index_slots (offset 32 in the header) one cache line smaller: the arena would still
    // start on the same page, so only the header's check value tells.
    let path = segment_path(s.name());
    let mut bytes = std::fs::read(&path).unwrap();
    let slots = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    bytes[32..40].copy_from_slice(&(slots - 8).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Store::open(s.name()) {
        Err(Error::BadHeader { why, .. }) => assert!(why.contains("geometry"), "{why}"),
        other => panic!("opened with another index size: {other:?}"),
    }
    // The handle that was open keeps the geometry it read and works on.
    assert_eq!(s.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn a_small_store_of_an_older_layout_is_incompatible_not_foreign() {
    // An older layout had a smaller header: a small store of it is shorter than today's.
    let name = unique_name("oldlayout");
    let path = segment_path(&name);
    let _c = Cleanup(name.clone());
    let mut bytes = vec![0u8; 5 * 4096];
    bytes[..8].copy_from_slice(b"\x89SHMS\r\n\x1a");
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    bytes[12..16].copy_from_slice(&0x5245_4459u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Store::open(&name) {
        Err(Error::Incompatible { found, .. }) => assert_eq!(found, 2),
        other => panic!("{other:?}"),
    }
}

/// Holds `path`'s exclusive `flock`, as a creator at work does, until dropped.
fn hold_creator_lock(path: &std::path::Path) -> std::fs::File {
    let creator = std::fs::File::options().write(true).open(path).unwrap();
    // SAFETY (test): a valid open descriptor; the operation is a plain integer.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&creator), libc::LOCK_EX) },
        0
    );
    creator
}

/// Opens store `name` in a thread; its result and how long it took from now (the clock
/// starts before the thread, so that a late start cannot shorten it).
fn open_in_thread(name: &str) -> std::thread::JoinHandle<(shmstore::Result<Store>, Duration)> {
    let name = name.to_owned();
    let t = std::time::Instant::now();
    std::thread::spawn(move || (Store::open(&name), t.elapsed()))
}

/// A segment as a creator leaves it when it dies right after sizing it: ten pages (a
/// header's length) of zeros; removed when the guard is dropped.
fn unfinished_segment(name: &str) -> Cleanup {
    std::fs::write(segment_path(name), vec![0u8; 10 * 4096]).unwrap();
    Cleanup(name.to_owned())
}

#[test]
fn an_unfinished_store_is_not_ready() {
    // A creator that died after shm_open: the segment exists but is all zeros.
    let name = unique_name("unready");
    let path = segment_path(&name);
    let _c = unfinished_segment(&name);
    // A creator at work holds the segment's flock (it may spend seconds reserving a large
    // index): an opener waits for it past the usual 3 s, however old the segment, and
    // gives up once the lock comes free with the segment still unfinished.
    let creator = hold_creator_lock(&path);
    let opener = open_in_thread(&name);
    std::thread::sleep(Duration::from_millis(4500));
    assert!(
        !opener.is_finished(),
        "gave up while the creator was at work"
    );
    // The creator touches the segment, then dies: the segment is too new for the
    // shortcut below, so it is the lock coming free that ends the wait, at once.
    creator.set_len(10 * 4096).unwrap();
    drop(creator);
    let (opened, took) = opener.join().unwrap();
    assert!(matches!(opened, Err(Error::NotReady { .. })), "{opened:?}");
    assert!(took >= Duration::from_millis(4500), "{took:?}");
    assert!(
        took < Duration::from_secs(7),
        "waited on after the lock came free: {took:?}"
    );
    // Its creator gone (the lock free) and the segment unchanged for 3 s: nobody waits for
    // it again (`ls`, `gc`, `valid`); the error says how long it has been so.
    std::thread::sleep(Duration::from_millis(3100));
    let t = std::time::Instant::now();
    match Store::open(&name) {
        Err(Error::NotReady { waited, .. }) => assert!(waited >= Duration::from_secs(3)),
        other => panic!("{other:?}"),
    }
    assert!(!shmstore::valid(&name));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "waited again for a segment unchanged for {:?}",
        t.elapsed()
    );
}

#[test]
fn an_opener_waits_for_a_creator_that_takes_longer_than_3_s() {
    // A creator reserving a very large index: the segment, complete but for `ready`, with
    // its creator's flock held for 4 s; then `ready` set and the lock let go.
    let src = TempStore::new("slow-src", opts(1 << 20));
    src.put("k", &7u8).unwrap();
    let name = unique_name("slow");
    let path = segment_path(&name);
    let _c = Cleanup(name.clone());
    let mut bytes = std::fs::read(segment_path(&src.name)).unwrap();
    let ready: [u8; 4] = bytes[12..16].try_into().unwrap();
    bytes[12..16].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let creator = hold_creator_lock(&path);
    let opener = open_in_thread(&name);
    std::thread::sleep(Duration::from_secs(4));
    std::os::unix::fs::FileExt::write_all_at(&creator, &ready, 12).unwrap();
    drop(creator);
    let (opened, took) = opener.join().unwrap();
    let s = opened.expect("opened once its creator finished");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert_eq!(s.get::<u8>("k").unwrap(), Some(7));
}

#[test]
fn open_or_create_makes_a_new_store_in_place_of_one_its_creator_abandoned() {
    // Three segments whose creators died before they were ready: one still all zeros, one
    // with most of a header (of a larger store), and one that several threads go for at once.
    let names: Vec<String> = ["abandoned-zeros", "abandoned-half", "abandoned-race"]
        .iter()
        .map(|t| unique_name(t))
        .collect();
    // And a store in use whose `ready` word was overwritten: not abandoned, never wiped.
    let in_use = TempStore::new("abandoned-not", opts(8 << 20));
    in_use.put("kept", &7u32).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(&in_use.name))
            .unwrap();
        f.write_all_at(&[0u8; 4], 12).unwrap();
    }
    let _c = [&names[0], &names[2]].map(|n| unfinished_segment(n));
    let _half = Cleanup(names[1].clone());
    let src = TempStore::new("abandoned-src", opts(8 << 20));
    let mut half = std::fs::read(segment_path(&src.name)).unwrap();
    half[12..16].fill(0); // `ready`
    half[1344..5440].fill(0); // the attach table: a creator registers once the store is ready
    std::fs::write(segment_path(&names[1]), &half).unwrap();
    // Abandoned: its lock free and the segment unchanged for 3 s.
    std::thread::sleep(Duration::from_millis(3100));
    for name in &names {
        assert!(matches!(Store::open(name), Err(Error::NotReady { .. })));
        // `create` still says the name is taken: only `open_or_create` takes over.
        assert!(matches!(
            Store::create(name, opts(1 << 20)),
            Err(Error::AlreadyExists(_))
        ));
    }
    assert!(
        matches!(
            Store::open_or_create(&in_use.name, opts(1 << 20)),
            Err(Error::NotReady { .. })
        ),
        "a store in use was taken over"
    );
    assert_eq!(in_use.get::<u32>("kept").unwrap(), Some(7));
    in_use.check().unwrap();
    for name in &names[..2] {
        let s = Store::open_or_create(name, opts(1 << 20)).unwrap();
        assert!(
            s.options().capacity < 2 << 20,
            "{name}: the new store has the options asked for, not the unfinished one's: {:?}",
            s.options()
        );
        assert_eq!(s.count().unwrap(), 0);
        s.put("k", &1u32).unwrap();
        s.check().unwrap();
        assert_eq!(Store::open(name).unwrap().get::<u32>("k").unwrap(), Some(1));
        assert!(shmstore::valid(name));
    }
    // Several at once: one takes over, the others wait for it and open its store.
    let racers: Vec<_> = (0..4u32)
        .map(|i| {
            let name = names[2].clone();
            std::thread::spawn(move || {
                let s = Store::open_or_create(&name, opts(1 << 20)).unwrap();
                s.put(&format!("from-{i}"), &i).unwrap();
                s
            })
        })
        .collect();
    let handles: Vec<Store> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    for s in &handles {
        assert_eq!(
            s.count().unwrap(),
            4,
            "the racers did not all get one store"
        );
    }
}

#[test]
fn an_opener_gives_up_on_a_creator_stuck_at_work_after_30_s() {
    // A creator that holds its lock and never finishes (stopped, or its lock inherited by a
    // child that lives on): the opener waits the whole 30 s, then says so (not NotReady:
    // the store may yet be finished).
    let name = unique_name("stuck");
    let _c = unfinished_segment(&name);
    let creator = hold_creator_lock(&segment_path(&name));
    let (opened, took) = open_in_thread(&name).join().unwrap();
    match opened {
        Err(e @ Error::StillCreating { .. }) => {
            assert!(e.to_string().contains("open it again later"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took >= Duration::from_secs(30), "{took:?}");
    drop(creator);
}

#[test]
fn segment_mode_is_0600_unless_group_access() {
    use std::os::unix::fs::PermissionsExt;
    let s = TempStore::new("mode", opts(1 << 20));
    let mode = std::fs::metadata(segment_path(&s.name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let g = TempStore::new("mode-g", opts(1 << 20).group_access(true));
    let mode = std::fs::metadata(segment_path(&g.name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn threads_share_one_handle() {
    let s = TempStore::new("threads", opts(4 << 20));
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            let s = s.store.clone();
            scope.spawn(move || {
                for i in 0..500u32 {
                    let key = format!("t{t}-{i}");
                    assert!(s.put(&key, &(t, i)).unwrap());
                    assert_eq!(s.get::<(u32, u32)>(&key).unwrap(), Some((t, i)));
                }
            });
        }
    });
    assert_eq!(s.count().unwrap(), 2000);
    s.check().unwrap();
}

#[test]
fn options_default_matches_the_original() {
    let d = Options::default();
    let s = TempStore::new("defaults", d.min_free_mem_pct(0.2).capacity(1 << 20));
    let o = s.options();
    // The index holds the default 1024 objects, to a whole cache line of slots: what a
    // handle opened by name reports too.
    assert_eq!(o.max_objects, Some(1026));
    assert_eq!(Store::open(s.name()).unwrap().options(), o);
    let mut rest = o;
    rest.max_objects = None;
    assert_eq!(rest, d.capacity(1 << 20));
}

#[test]
fn a_store_reports_the_capacity_it_has_whole_pages_of() {
    // 1,000,000 bytes is 244.1 pages: the arena has 245, and every report says so.
    let s = TempStore::new("pages", opts(1_000_000));
    assert_eq!(s.options().capacity, 245 * 4096);
    assert_eq!(s.stats().unwrap().capacity, 245 * 4096);
    assert_eq!(
        Store::open(s.name()).unwrap().options().capacity,
        245 * 4096
    );
}

#[test]
fn after_a_churn_rotation_makes_room_for_fourteen_64k_objects_in_1mib() {
    let s = TempStore::new("frag-rotate", opts(1 << 20));
    let mut rng = common::Rng(987654321u64);
    for round in 0..3000u32 {
        let x = rng.next();
        let size = (x % 30_000) as usize + 1;
        let key = format!("c{}", x % 64);
        if round % 4 == 0 {
            s.remove(&key).unwrap();
        } else {
            s.put_bytes(&key, &vec![round as u8; size]).unwrap();
        }
    }
    for i in 0..14u8 {
        assert!(s.put_bytes(&format!("big{i}"), &vec![i; 64 << 10]).unwrap());
    }
    for i in 0..14u8 {
        let got = s.get_bytes(&format!("big{i}")).unwrap();
        assert!(
            got == Some(vec![i; 64 << 10]),
            "big{i} was rotated out or changed"
        );
    }
    s.check().unwrap();
}

#[test]
fn removing_large_objects_gives_memory_back() {
    let s = TempStore::new("punch", opts(64 << 20));
    let empty = s.stats().unwrap().memory_bytes;
    for i in 0..16u8 {
        assert!(s.put_bytes(&format!("big{i}"), &vec![i; 1 << 20]).unwrap());
    }
    let full = s.stats().unwrap().memory_bytes;
    assert!(
        full >= empty + (16 << 20),
        "16 MiB stored, memory went {empty} -> {full}"
    );
    // Remove every other object: their pages go back although the arena's top stays (all
    // but a warm reserve of 1 MiB, kept for the next puts).
    for i in (0..16u8).step_by(2) {
        assert!(s.remove(&format!("big{i}")).unwrap());
    }
    let half = s.stats().unwrap().memory_bytes;
    assert!(
        half <= full - (6 << 20),
        "8 MiB removed, memory went {full} -> {half}"
    );
    // Reusing the holes works and keeps every byte.
    for i in (0..16u8).step_by(2) {
        assert!(
            s.put_bytes(&format!("big{i}"), &vec![i ^ 0x5a; 1 << 20])
                .unwrap()
        );
    }
    for i in 0..16u8 {
        let want = if i % 2 == 0 { i ^ 0x5a } else { i };
        let got = s.get_bytes(&format!("big{i}")).unwrap().unwrap();
        assert!(
            got.len() == 1 << 20 && got.iter().all(|&b| b == want),
            "big{i} changed"
        );
    }
    s.check().unwrap();
    // Removing everything gives back nearly all of it.
    for i in 0..16u8 {
        s.remove(&format!("big{i}")).unwrap();
    }
    let after = s.stats().unwrap().memory_bytes;
    assert!(
        after <= empty + (1 << 20),
        "all removed, memory went {full} -> {after} (empty: {empty})"
    );
}

#[test]
fn rotation_keeps_memory_near_the_capacity() {
    let s = TempStore::new("punch-rotate", opts(8 << 20));
    for i in 0..64u32 {
        assert!(
            s.put_bytes(&format!("k{i}"), &vec![i as u8; 700 << 10])
                .unwrap()
        );
    }
    let st = s.stats().unwrap();
    assert!(st.evictions > 40);
    assert!(
        st.memory_bytes <= (8 << 20) + (1 << 20),
        "memory {} for an 8 MiB store",
        st.memory_bytes
    );
    s.check().unwrap();
}

#[test]
fn an_opener_reads_the_creators_options() {
    let opts = opts(3 << 20)
        .put_policy(PutPolicy::Strict)
        .lock_timeout(Duration::from_millis(1500))
        .min_free_mem_pct(0.05);
    let s = TempStore::new("options", opts);
    let o = Store::open(&s.name).unwrap().options();
    assert_eq!(o.capacity, 3 << 20);
    assert_eq!(o.put_policy, PutPolicy::Strict);
    assert_eq!(o.lock_timeout, Duration::from_millis(1500));
    assert_eq!(o.min_free_mem_pct, 0.05);
    assert_eq!(o.mode, 0o600);
    assert!(o.max_objects.unwrap() >= 3 << 10);
    // A lock timeout over an hour is refused: an opener trusts the one in the segment.
    let too_long = opts.lock_timeout(Duration::from_secs(7200));
    let name = unique_name("opt-long");
    let _c = Cleanup(name.clone());
    assert!(matches!(
        Store::create(&name, too_long),
        Err(Error::InvalidOption { .. })
    ));
}

#[test]
fn removing_one_large_object_gives_its_memory_back() {
    let s = TempStore::new("punch-one", opts(64 << 20));
    s.put_bytes("a", &vec![1u8; 16 << 20]).unwrap();
    s.put_bytes("b", &[2u8; 1024]).unwrap();
    let before = s.stats().unwrap().memory_bytes;
    assert!(s.remove("a").unwrap());
    let after = s.stats().unwrap().memory_bytes;
    // All but the warm reserve (1 MiB for a 64 MiB store) goes back.
    assert!(after <= before - (14 << 20), "memory {before} -> {after}");
    s.check().unwrap();
}
