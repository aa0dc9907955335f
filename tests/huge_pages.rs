//! The index and inline records on huge pages: the creator asks for them, and every process
//! (the creator and the processes that open the store) maps them whole, so that a random
//! record access costs no page-table walk. Checked in each process's own `/proc/self/smaps`.

mod common;

use common::{
    ChildProc, TempStore, child_store, huge_pages_are_2_mib, kernel_collapses, mapping_of, opts,
    segment_path,
};
use shmstore::Store;
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(60);
const HUGE_KIB: u64 = 2048;
const OBJECTS: usize = 2_000;

/// A store whose header, index and records fill four huge pages (40,000 objects: 53,336
/// slots, 427 KB of index and 6.8 MB of 128-byte records, 7.3 MB in all: the arena starts
/// at 8 MiB), with some objects in it.
fn store_with_records() -> TempStore {
    let s = TempStore::new(
        "huge",
        opts(64 << 20).max_objects(40_000).inline_values(120),
    );
    fill(&s, OBJECTS, small_value);
    s
}

/// Checks this process's mapping of store `name`: aligned to a huge page, and at least
/// `expect_kib` KiB of it mapped by huge-page entries. Returns how many were.
fn check_mapping(who: &str, name: &str, expect_kib: u64) -> u64 {
    let (start, kib) = mapping_of(name);
    assert_eq!(
        start % (HUGE_KIB as usize * 1024),
        0,
        "{who}: mapping at {start:#x} is not aligned"
    );
    assert!(
        kib >= expect_kib,
        "{who}: only {kib} KiB of the store mapped by huge pages, expected {expect_kib}"
    );
    kib
}

/// Puts `value(i)` under `key-{i}` for `i` in `0..n`.
fn fill(s: &Store, n: usize, value: fn(usize) -> Vec<u8>) {
    for i in 0..n {
        s.put_bytes(&format!("key-{i}"), &value(i)).unwrap();
    }
}

/// Objects `key-0`... `key-{n-1}` hold `value(i)`.
fn read_back(s: &Store, n: usize, value: fn(usize) -> Vec<u8>) {
    for i in 0..n {
        assert_eq!(
            s.get_bytes(&format!("key-{i}")).unwrap().unwrap(),
            value(i),
            "key-{i}"
        );
    }
}

fn small_value(i: usize) -> Vec<u8> {
    vec![i as u8; 64]
}

/// Runs child test `test_fn` (role `role`) on store `name`, telling it that the creator
/// maps `creator_kib` KiB of the store on huge pages; it must succeed and say it checked.
fn run_opener(test_fn: &str, role: &str, name: &str, creator_kib: u64) {
    let env = [("SHMSTORE_TEST_HUGE_KIB", creator_kib.to_string())];
    let mut kid = ChildProc::spawn(test_fn, role, name, &env, true);
    kid.expect_success(WATCHDOG);
    let out = kid.output();
    assert!(
        out.contains("opener checked"),
        "the child did not run its checks:\n{out}"
    );
}

/// In an opener child: its mapping of the store holds on huge pages as much as the
/// creator's did (passed in `SHMSTORE_TEST_HUGE_KIB`), up to `up_to_kib` KiB.
fn opener_checks(up_to_kib: u64) {
    let name = common::child_env(common::STORE_VAR);
    let creator: u64 = common::child_env("SHMSTORE_TEST_HUGE_KIB").parse().unwrap();
    check_mapping("opener", &name, creator.min(up_to_kib));
    println!("opener checked");
}

/// How many KiB of store `name` its creator (this process) maps by huge pages, checked: the
/// creator collapses the first `whole_kib` KiB (everything before the arena) and maps them,
/// wherever the kernel lets it; asked again here, the kernel says whether it would have.
fn creator_got(name: &str, whole_kib: u64) -> u64 {
    let (_, got) = mapping_of(name);
    assert!(
        got >= whole_kib || !kernel_collapses(name, 0, whole_kib),
        "the kernel puts the store on huge pages when asked, but its creator did not ({got} KiB)"
    );
    check_mapping("creator", name, got)
}

#[test]
fn creator_and_opener_map_the_index_and_records_on_huge_pages() {
    if !huge_pages_are_2_mib() {
        return;
    }
    let s = store_with_records();
    let creator = creator_got(&s.name, 4 * HUGE_KIB);
    run_opener("huge_opener_child", "huge-opener", &s.name, creator);
    // Nothing was lost or changed by the move to huge pages.
    read_back(&s, OBJECTS, small_value);
    s.check().unwrap();
}

/// Child: opens the store by name, reads every object (touching records all over the
/// table), and checks that its own mapping holds them on huge pages wherever the creator's
/// does (the part of the file before the arena, 8 MiB, when the kernel collapsed it).
#[test]
fn huge_opener_child() {
    let Some(s) = child_store("huge-opener") else {
        return;
    };
    read_back(&s, OBJECTS, small_value);
    // 2,000 objects over 53,336 slots touch records on each of the four huge pages.
    opener_checks(4 * HUGE_KIB);
}

/// A store without records whose header and index are 1.1 MB (100,000 objects; W1's are
/// 1.4 MB): the arena starts at 2 MiB, so that the index is on one huge page instead of 270
/// small ones.
/// Its creator maps that page whole; a small store (11 KiB of index) is not padded.
#[test]
fn a_default_store_of_100_000_objects_has_its_index_on_a_huge_page() {
    if !huge_pages_are_2_mib() {
        return;
    }
    let s = TempStore::new("huge-index", opts(64 << 20).max_objects(100_000));
    fill(&s, OBJECTS, small_value);
    creator_got(&s.name, HUGE_KIB);
    // The segment is the capacity's arena after what precedes it.
    assert_eq!(before_arena(&s.name), HUGE_KIB * 1024);
    read_back(&s, OBJECTS, small_value);
    s.check().unwrap();
    let small = TempStore::new("huge-small", opts(64 << 20).max_objects(1000));
    assert_eq!(
        before_arena(&small.name),
        52 << 10,
        "header and index, unpadded"
    );
}

/// Bytes of store `name`'s segment before its arena (of 64 MiB).
fn before_arena(name: &str) -> u64 {
    let len = std::fs::metadata(segment_path(name)).unwrap().len();
    len - (64 << 20)
}

/// Objects of the `huge_arena` tests: 3,000 of 4 KiB, 12.2 MiB of blocks, so that the
/// arena's first six huge pages are full.
const BIG_OBJECTS: usize = 3_000;
const ARENA_HUGE_KIB: u64 = 6 * HUGE_KIB;

fn big_value(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 4096]
}

/// Whether /dev/shm gets huge pages whatever the store asks for: mounted with `huge=`, or
/// shared memory's huge pages forced on for every mount (`shmem_enabled` = `force`).
fn dev_shm_has_huge_pages_anyway() -> bool {
    let mounted = std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(1) == Some("/dev/shm") && l.contains("huge="))
    });
    let forced = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .is_ok_and(|s| s.contains("[force]"));
    mounted || forced
}

/// A store made with `huge_arena` commits its arena as huge pages while it fills: its
/// creator and a process that opens it map the arena's full huge pages whole. The same
/// store without the option has only its index on one (the arena on small pages), and
/// the objects read back intact either way.
#[test]
fn a_huge_arena_store_fills_its_arena_with_huge_pages() {
    if !huge_pages_are_2_mib() {
        return;
    }
    // 100,000 objects: header and index on the first huge page, the arena from 2 MiB on.
    let o = opts(64 << 20).max_objects(100_000);
    let s = TempStore::new("huge-arena", o.huge_arena(true));
    assert!(s.options().huge_arena);
    assert!(Store::open(&s.name).unwrap().options().huge_arena);
    fill(&s, BIG_OBJECTS, big_value);
    let creator = creator_got(&s.name, HUGE_KIB + ARENA_HUGE_KIB);
    run_opener(
        "huge_arena_opener_child",
        "huge-arena-opener",
        &s.name,
        creator,
    );
    read_back(&s, BIG_OBJECTS, big_value);
    s.check().unwrap();
    // A rebuild re-reserves the arena below its top (in small pages: the huge ones stay as
    // they are) and loses nothing.
    s.repair().unwrap();
    read_back(&s, BIG_OBJECTS, big_value);
    s.check().unwrap();
    assert!(
        mapping_of(&s.name).1 >= creator,
        "the rebuild split the huge pages"
    );

    let plain = TempStore::new("huge-arena-off", o);
    assert!(!plain.options().huge_arena);
    fill(&plain, BIG_OBJECTS, big_value);
    let (_, plain_kib) = mapping_of(&plain.name);
    if !dev_shm_has_huge_pages_anyway() {
        assert!(
            plain_kib <= HUGE_KIB,
            "without huge_arena the arena went on huge pages too: {plain_kib} KiB"
        );
    }
    plain.check().unwrap();
}

/// Child: opens the store by name, reads every object (touching the whole filled arena),
/// and checks that its own mapping holds as much of it on huge pages as the creator's.
#[test]
fn huge_arena_opener_child() {
    let Some(s) = child_store("huge-arena-opener") else {
        return;
    };
    read_back(&s, BIG_OBJECTS, big_value);
    opener_checks(HUGE_KIB + ARENA_HUGE_KIB);
}
