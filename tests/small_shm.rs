//! A /dev/shm smaller than the store (Docker's default is 64 MiB): filling the store gives
//! refused puts or rotation, never SIGBUS; removal gives the space back.
//!
//! The child runs in a private mount namespace (`unshare -m`, root only) with a 9 MiB tmpfs
//! on /dev/shm; where that is not possible the test says so and passes without running.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ROLE_VAR, child_role, huge_pages_are_2_mib, kernel_collapses, mapping_of};
use shmstore::{Options, Put, PutPolicy, Refusal, Store};

/// Not a whole number of 2 MiB huge pages: the `huge_arena` pass meets a huge page that
/// does not fit in full (the kernel refuses to collapse it) as well as a first page that
/// does not.
const TMPFS_MIB: u64 = 9;

fn free_shm_bytes() -> u64 {
    // SAFETY: an all-zero statvfs is a valid value of that plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let path = c"/dev/shm";
    // SAFETY: `path` is NUL-terminated and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs /dev/shm");
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Runs inside the namespace; any SIGBUS kills it, which the parent sees. Twice: with small
/// pages, and with the arena committed in huge pages, where the kernel fills a huge page
/// from one reserved small page (and must refuse when the rest does not fit).
#[test]
fn small_shm_child() {
    if child_role().is_none() {
        return;
    }
    for huge_arena in [false, true] {
        eprintln!("huge_arena: {huge_arena}");
        fill_refuse_and_rotate(Options::default().huge_arena(huge_arena));
    }
}

fn fill_refuse_and_rotate(opts: Options) {
    let free0 = free_shm_bytes();
    assert!(
        free0 <= TMPFS_MIB << 20,
        "not in the small tmpfs: {free0} bytes free"
    );
    let value = vec![0x5au8; 256 << 10];

    // Strict: a 64 MiB store on a 9 MiB /dev/shm fills up and then refuses.
    let opts = opts
        .capacity(64 << 20)
        .max_objects(4096)
        .min_free_mem_pct(0.0);
    let strict = Store::create("strict", opts.put_policy(PutPolicy::Strict)).unwrap();
    let mut stored = 0;
    for i in 0..100 {
        match strict.try_put_bytes(&format!("k{i}"), &value).unwrap() {
            Put::Stored => stored += 1,
            // The arena has room (64 MiB): /dev/shm is what is full, and the refusal says so.
            refused => assert_eq!(refused, Put::Refused(Refusal::ShmFull), "put {i}"),
        }
    }
    assert!(
        stored > 4 && stored < 40,
        "{stored} objects of 256 KiB stored on a 9 MiB tmpfs"
    );
    assert!(strict.stats().unwrap().refused_puts > 0);
    strict.check().unwrap();
    if opts.huge_arena && huge_pages_are_2_mib() {
        // The arena (from a few KiB on) was committed in huge pages up to the full tmpfs:
        // the one of file offsets 2-4 MiB at least, unless the kernel would not do it.
        let (_, kib) = mapping_of("strict");
        assert!(
            kib >= 2048 || !kernel_collapses("strict", 2048, 2048),
            "the kernel collapses the arena's huge pages, but the store did not ({kib} KiB)"
        );
    }
    for i in 0..stored {
        assert_eq!(
            strict.get_bytes(&format!("k{i}")).unwrap().as_deref(),
            Some(&value[..])
        );
    }
    // Removing gives the space back to the file system.
    let full = free_shm_bytes();
    for i in 0..stored {
        assert!(strict.remove(&format!("k{i}")).unwrap());
    }
    let emptied = free_shm_bytes();
    assert!(
        emptied >= full + (stored as u64 - 2) * (256 << 10),
        "free space {full} -> {emptied}"
    );
    Store::destroy("strict").unwrap();
    drop(strict);

    // Rotate: the full file system is "no room", so older objects are rotated out.
    let rotate = Store::create("rotate", opts.put_policy(PutPolicy::Rotate)).unwrap();
    for i in 0..200 {
        assert!(
            rotate.put_bytes(&format!("k{i}"), &value).unwrap(),
            "rotate refused put {i}"
        );
    }
    let st = rotate.stats().unwrap();
    assert!(st.evictions > 100, "{st:?}");
    assert!(rotate.get_bytes("k199").unwrap().is_some());
    rotate.check().unwrap();
    Store::destroy("rotate").unwrap();
    drop(rotate);

    // Pages given back inside free blocks that later merge into the wilderness must be
    // reserved again before the wilderness is written (this was a SIGBUS).
    let holes = Store::create("holes", opts.put_policy(PutPolicy::Strict)).unwrap();
    holes.put_bytes("a", &vec![1u8; 3 << 20]).unwrap();
    holes.put_bytes("a2", &vec![2u8; 3 << 20]).unwrap();
    holes.put_bytes("b", &[3u8; 1024]).unwrap();
    for k in ["a", "a2", "b"] {
        assert!(holes.remove(k).unwrap());
    }
    let filler = fill_dev_shm();
    for i in 0..4 {
        // Refused or stored, never a SIGBUS.
        let _ = holes
            .put_bytes(&format!("c{i}"), &vec![4u8; 900 << 10])
            .unwrap();
    }
    holes.check().unwrap();
    drop(filler);

    // A refused replacement leaves the old object, even in rotate mode with nothing else to
    // evict and /dev/shm full.
    let keep = Store::create("keep", opts.put_policy(PutPolicy::Rotate)).unwrap();
    let old = vec![5u8; 3 << 20];
    assert!(keep.put_bytes("k", &old).unwrap());
    let filler = fill_dev_shm();
    match keep.try_put_bytes("k", &vec![6u8; 5 << 20]) {
        Ok(Put::Stored) => {}
        Ok(refused) => {
            assert_eq!(refused, Put::Refused(Refusal::ShmFull));
            assert_eq!(keep.get_bytes("k").unwrap().as_deref(), Some(&old[..]));
        }
        Err(e) => panic!("{e}"),
    }
    keep.check().unwrap();
    drop(filler);
    Store::destroy("holes").unwrap();
    Store::destroy("keep").unwrap();
    drop((holes, keep));

    // A replacement that fits in the old value's room takes it, on a full /dev/shm too,
    // and evicts nothing (beside the old value, it would need pages /dev/shm does not have).
    let reuse = Store::create("reuse", opts.put_policy(PutPolicy::Rotate)).unwrap();
    assert!(reuse.put_bytes("k", &vec![5u8; 3 << 20]).unwrap());
    assert!(reuse.put_bytes("other", &vec![7u8; 1 << 20]).unwrap());
    let filler = fill_dev_shm();
    for (round, len) in [(6u8, 3 << 20), (8, (3 << 20) - 5000)] {
        replaced_in_place(&reuse, &vec![round; len], ("other", &vec![7u8; 1 << 20]));
    }
    drop(filler);
    Store::destroy("reuse").unwrap();
    drop(reuse);

    // The same with a free block before the old value whose pages were given back: the new
    // value goes where the old one was, not from the start of that free block (which would
    // need pages /dev/shm does not have).
    let after_hole = Store::create("after-hole", opts.put_policy(PutPolicy::Rotate)).unwrap();
    assert!(after_hole.put_bytes("p", &vec![1u8; 2 << 20]).unwrap());
    assert!(after_hole.put_bytes("k", &vec![5u8; 3 << 20]).unwrap());
    assert!(after_hole.put_bytes("x", &vec![7u8; 64 << 10]).unwrap());
    let before_remove = free_shm_bytes();
    assert!(after_hole.remove("p").unwrap());
    assert!(
        free_shm_bytes() > before_remove + (1 << 20),
        "removing p gave its pages back"
    );
    let filler = fill_dev_shm();
    replaced_in_place(
        &after_hole,
        &vec![6u8; 3 << 20],
        ("x", &vec![7u8; 64 << 10]),
    );
    drop(filler);
    Store::destroy("after-hole").unwrap();
    drop(after_hole);

    // A value that ends just short of a page, stored when /dev/shm had room for it and no
    // more, and replaced by as much: the room reaches the free end of the arena, and the
    // replacement reserves exactly the pages it writes (not a header's worth past them,
    // which lie on a page /dev/shm cannot give).
    let exact = Store::create("exact", opts.put_policy(PutPolicy::Rotate)).unwrap();
    let filler = fill_dev_shm_leaving(3 << 20);
    let len = (3 << 20) - 65;
    assert_eq!(
        exact.try_put_bytes("k", &vec![5u8; len]).unwrap(),
        Put::Stored
    );
    assert_eq!(
        exact.try_put_bytes("k", &vec![6u8; len]).unwrap(),
        Put::Stored
    );
    assert_eq!(exact.get_bytes("k").unwrap().unwrap(), vec![6u8; len]);
    exact.check().unwrap();
    drop(filler);
    Store::destroy("exact").unwrap();
}

/// Replaces "k" by `value` and checks that it went in the old value's room: stored, with
/// `kept` (another key and its value) still there and nothing evicted.
fn replaced_in_place(s: &Store, value: &[u8], kept: (&str, &[u8])) {
    assert_eq!(s.try_put_bytes("k", value).unwrap(), Put::Stored);
    assert_eq!(s.get_bytes("k").unwrap().unwrap(), value);
    assert_eq!(s.get_bytes(kept.0).unwrap().unwrap(), kept.1);
    assert_eq!(s.stats().unwrap().evictions, 0);
    s.check().unwrap();
}

/// Fills the (small) /dev/shm but for `bytes` (a whole number of pages), with a file
/// removed when the guard drops.
fn fill_dev_shm_leaving(bytes: u64) -> Filler {
    use std::io::Write;
    let path = "/dev/shm/filler";
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while free_shm_bytes() > bytes && f.write_all(&chunk).is_ok() {}
    if bytes > 0 {
        assert_eq!(free_shm_bytes(), bytes, "not filled to what was to be left");
    }
    Filler(path)
}

/// Fills the (small) /dev/shm with a file, removed when the guard drops.
fn fill_dev_shm() -> Filler {
    fill_dev_shm_leaving(0)
}

struct Filler(&'static str);

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

#[test]
fn a_full_dev_shm_refuses_or_rotates_never_sigbus() {
    if child_role().is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size={TMPFS_MIB}m tmpfs /dev/shm && exec \"$0\" --exact small_shm_child --nocapture --test-threads=1"
    );
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        eprintln!("skipped: cannot make a private mount namespace here (needs root and `unshare`)");
        return;
    }
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(&exe)
        .env(ROLE_VAR, "small-shm")
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the small-/dev/shm child hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_ne!(
        status.signal(),
        Some(libc::SIGBUS),
        "SIGBUS on a full /dev/shm"
    );
    assert!(status.success(), "small-/dev/shm child failed: {status}");
}
