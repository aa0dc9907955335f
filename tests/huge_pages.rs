//! The index and inline records on huge pages: the creator asks for them, and every process
//! (the creator and the processes that open the store) maps them whole, so that a random
//! record access costs no page-table walk. Checked in each process's own `/proc/self/smaps`.

mod common;

use common::{ChildProc, TempStore, child_store, opts};
use std::time::Duration;

const WATCHDOG: Duration = Duration::from_secs(60);
const HUGE_KIB: u64 = 2048;
const OBJECTS: usize = 2_000;

/// What `/proc/self/smaps` says of this process's mapping of store `name`: where it starts
/// and how many KiB of it are mapped by huge-page entries.
fn mapping_of(name: &str) -> (usize, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let file = format!("/dev/shm/shmstore.{name}");
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

/// Whether this kernel can put a shared-memory file on 2 MiB pages on request: Linux 6.1 or
/// later (`MADV_COLLAPSE`), 2 MiB huge pages, and shared-memory huge pages not denied.
fn kernel_allows_huge_pages() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let release = read("/proc/sys/kernel/osrelease");
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    let pmd = read("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    let shmem = read("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    (major, minor) >= (6, 1) && pmd.trim() == "2097152" && !shmem.contains("[deny]")
}

/// A store whose index and records span three whole huge pages (40,000 objects: 53,336
/// slots, 427 KB of index and 6.8 MB of 128-byte records), with some objects in it.
fn store_with_records() -> TempStore {
    let s = TempStore::new(
        "huge",
        opts(64 << 20).max_objects(40_000).inline_values(120),
    );
    for i in 0..OBJECTS {
        s.put_bytes(&format!("key-{i}"), &[i as u8; 64]).unwrap();
    }
    s
}

fn check_mapping(who: &str, name: &str, expect_kib: u64) {
    let (start, kib) = mapping_of(name);
    assert_eq!(
        start % (HUGE_KIB as usize * 1024),
        0,
        "{who}: mapping at {start:#x} is not aligned"
    );
    if kernel_allows_huge_pages() {
        assert!(
            kib >= expect_kib,
            "{who}: only {kib} KiB of the store mapped by huge pages, expected {expect_kib}"
        );
    } else {
        eprintln!("this kernel cannot put /dev/shm files on huge pages on request: alignment only");
    }
}

#[test]
fn creator_and_opener_map_the_index_and_records_on_huge_pages() {
    let s = store_with_records();
    // The creator collapses the three whole huge pages before the arena and maps them.
    check_mapping("creator", &s.name, 3 * HUGE_KIB);
    let mut kid = ChildProc::spawn("huge_opener_child", "huge-opener", &s.name, &[], true);
    kid.expect_success(WATCHDOG);
    let out = kid.output();
    assert!(
        out.contains("opener checked"),
        "the child did not run its checks:\n{out}"
    );
    // Nothing was lost or changed by the move to huge pages.
    for i in 0..OBJECTS {
        assert_eq!(
            s.get_bytes(&format!("key-{i}")).unwrap().unwrap(),
            [i as u8; 64]
        );
    }
    s.check().unwrap();
}

/// Child: opens the store by name, reads every object (touching records all over the
/// table), and checks that its own mapping holds them on huge pages.
#[test]
fn huge_opener_child() {
    let Some(s) = child_store("huge-opener") else {
        return;
    };
    for i in 0..OBJECTS {
        assert_eq!(
            s.get_bytes(&format!("key-{i}")).unwrap().unwrap(),
            [i as u8; 64]
        );
    }
    let name = common::child_env(common::STORE_VAR);
    // 2,000 objects over 53,336 slots touch records on each of the three huge pages.
    check_mapping("opener", &name, 3 * HUGE_KIB);
    println!("opener checked");
}
