//! Scribbled segments (design brief, "what must hold" item 4; issue 3, "Bad bytes never mean
//! undefined behaviour"): bytes of a live segment are overwritten behind the library's back,
//! as a buggy or hostile process of the same user could, and then a child process (this test
//! binary re-run in the role "scribble") opens the store and runs a fixed mix of operations.
//! Errors are fine; a signal, an abort, a panic or a hang of the child is a failure.
//!
//! - `scribbled_segments_give_errors_not_crashes`: a bounded proptest. Each case fills a store,
//!   overwrites 1 to 64 places of its header, its index (with its inline records, in the
//!   stores of odd seeds, which keep them), its arena or all three (random bytes,
//!   0x00, 0xff, and above all small integers that look like valid sizes, offsets, states and
//!   links, taken from the store's own layout), then runs the child.
//! - `det_*`: hand-picked scribbles known to be dangerous. Each runs the same operations in a
//!   child, and then, on a fresh copy of the same scribble, checks what the library promises:
//!   `check()` reports `Error::Corrupt`, `repair()` makes `check()` pass again, and what the
//!   repair keeps (every object when only derived data was hit; an emptied store, counted in
//!   `resets`, when the chain of blocks itself is broken).
//! - `replay_scribbles`: replays one case from `SHMSTORE_SCRIBBLE_REPLAY` (printed by a failing
//!   case); a no-op otherwise.
//! - `survey_scribbles`: with `SHMSTORE_SCRIBBLE_SURVEY=N`, runs N random cases without stopping
//!   at the first failure and prints each distinct failure once (every bug at once, rather than
//!   one per run); a no-op otherwise.
//!
//! The fuzz target `fuzz/fuzz_targets/scribble.rs` does the same in-process (fuzz/README.md).
//!
//! The byte layout is the one in docs/design.md (header at 0, index at 40960, arena at
//! `arena_off`; block header fields at +0..+48). The crate does not export its layout, so the
//! offsets are written out here: a change to the layout must be made here too (`fill` checks
//! the store first, and `Layout::read` walks the chain of blocks with these offsets).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{ChildProc, Rng, STORE_VAR, TempStore, child_env, child_role, segment_path};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use shmstore::{Error, Options, Store};

/// The child's test function and role.
const CHILD_FN: &str = "scribble_child";
const ROLE: &str = "scribble";
/// Environment of the child: the fill's seed, and (deterministic cases) what to expect.
const SEED_VAR: &str = "SHMSTORE_SCRIBBLE_SEED";
const EXPECT_VAR: &str = "SHMSTORE_SCRIBBLE_EXPECT";
/// A replay request for `replay_scribbles`.
const REPLAY_VAR: &str = "SHMSTORE_SCRIBBLE_REPLAY";
/// A number of cases for `survey_scribbles`.
const SURVEY_VAR: &str = "SHMSTORE_SCRIBBLE_SURVEY";

/// Generous bound on one child (a watchdog against hangs, not a speed limit). A healthy child
/// takes milliseconds; one whose lock was scribbled "held" gives up after a few timeouts.
const WATCHDOG: Duration = Duration::from_secs(60);
const LOCK_TIMEOUT: Duration = Duration::from_millis(200);
const CAPACITY: u64 = 256 << 10;
/// The child stops trying once this many operations timed out on the lock.
const MAX_TIMEOUTS: u32 = 3;

fn options() -> Options {
    Options::default()
        .capacity(CAPACITY)
        .min_free_mem_pct(0.0)
        .lock_timeout(LOCK_TIMEOUT)
}

// ---- the segment's bytes (docs/design.md) -------------------------------------------------------

/// Header field offsets.
mod hdr {
    pub const MAGIC: u64 = 0;
    pub const READY: u64 = 12;
    pub const INDEX_SLOTS: u64 = 32;
    /// Bytes of each inline record (0: none); the records follow the index.
    pub const RECORD_LEN: u64 = 208;
    pub const ARENA_OFF: u64 = 40;
    pub const ARENA_LEN: u64 = 48;
    pub const TOTAL_LEN: u64 = 16;
    pub const SEED: u64 = 56;
    pub const LOCK_TIMEOUT_NS: u64 = 88;
    pub const MUTEX: u64 = 128;
    /// Bytes of the header's mutex field (design.md: 64; glibc's mutex uses the first 40).
    pub const MUTEX_LEN: u64 = 64;
    pub const TOP: u64 = 256;
    pub const COMMITTED: u64 = 264;
    pub const LRU_HEAD: u64 = 272;
    pub const LRU_TAIL: u64 = 276;
    pub const LAST_UNITS: u64 = 280;
    pub const CLOCK: u64 = 288;
    pub const SEQ: u64 = 296;
    pub const INDEX_LIVE: u64 = 304;
    pub const INDEX_TOMBSTONES: u64 = 312;
    pub const OBJECTS: u64 = 320;
    pub const SLIDE_STATE: u64 = 344;
    pub const SLIDE_SRC: u64 = 352;
    pub const SLIDE_DST: u64 = 360;
    pub const SLIDE_LEN: u64 = 368;
    pub const SLIDE_DONE: u64 = 376;
    pub const FREE_BITMAP: u64 = 384;
    pub const FREE_HEADS: u64 = 408;
    pub const ATTACH: u64 = 1344;
    /// Bytes of an attach slot (a cache line: pid, start).
    pub const ATTACH_SLOT: u64 = 64;
    /// The read lanes (`[[ReadLane; 8]; 64]`, 64 bytes each: hits, misses, reading, ...).
    pub const LANES: u64 = 5504;
    /// End of the header's fields (the rest of the ten header pages is unused).
    pub const END: u64 = 38272;
    pub const INDEX: u64 = 40960;
}

/// Block header field offsets, relative to the block.
mod blk {
    pub const SIZE: u64 = 0;
    pub const STATE: u64 = 4;
    pub const PREV_SIZE: u64 = 8;
    pub const KEY_LEN: u64 = 12;
    pub const VAL_LEN: u64 = 16;
    pub const SEQ: u64 = 24;
    pub const STAMP: u64 = 32;
    pub const PREV: u64 = 40;
    pub const NEXT: u64 = 44;
    pub const KEY: u64 = 48;
}

const UNIT: u64 = 16;
const NIL: u32 = u32::MAX;
const FREE: u32 = 0x4652_4545;
const WRITING: u32 = 0x5752_4954;
const LIVE: u32 = 0x4C49_5645;
const SLIDING: u32 = 0x534C_4944;

/// Header fields worth aiming at: (offset, width, name).
const HEADER_FIELDS: &[(u64, usize, &str)] = &[
    (16, 8, "total_len"),
    (24, 8, "index_off"),
    (32, 8, "index_slots"),
    (40, 8, "arena_off"),
    (48, 8, "arena_len"),
    (56, 8, "seed[0]"),
    (64, 8, "seed[1]"),
    (72, 8, "capacity"),
    (80, 8, "min_free_bits"),
    (88, 8, "lock_timeout_ns"),
    (96, 4, "put_policy"),
    (100, 4, "mode"),
    (104, 4, "creator_pid"),
    (112, 8, "created_ns"),
    (128, 4, "mutex.__lock"),
    (132, 4, "mutex.__count"),
    (136, 4, "mutex.__owner"),
    (140, 4, "mutex.__nusers"),
    (144, 4, "mutex.__kind"),
    (192, 4, "lock_owner"),
    (196, 4, "recovering"),
    (hdr::RECORD_LEN, 8, "record_len"),
    (200, 8, "lock_since_ns"),
    (256, 8, "top"),
    (264, 8, "committed"),
    (272, 4, "lru_head"),
    (276, 4, "lru_tail"),
    (280, 4, "last_units"),
    (288, 8, "clock"),
    (296, 8, "seq"),
    (304, 8, "index_live"),
    (312, 8, "index_tombstones"),
    (320, 8, "objects"),
    (328, 8, "used_bytes"),
    (336, 8, "value_bytes"),
    (344, 4, "slide.state"),
    (352, 8, "slide.src"),
    (360, 8, "slide.dst"),
    (368, 8, "slide.len"),
    (376, 8, "slide.done"),
    (384, 8, "free_bitmap[0]"),
    (392, 8, "free_bitmap[1]"),
    (400, 8, "free_bitmap[2]"),
    (120, 8, "seqlock"),
    (1232, 8, "recoveries"),
    (1240, 8, "resets"),
    (1344, 4, "attach[0].pid"),
    (1352, 8, "attach[0].start"),
    (1408, 4, "attach[1].pid"),
    (5440, 8, "unattached.hits"),
    (5456, 8, "unattached.reading"),
    (hdr::LANES, 8, "lanes[0][0].hits"),
    (hdr::LANES + 16, 8, "lanes[0][0].reading"),
    (hdr::LANES + 10 * 64 + 16, 8, "lanes[1][2].reading"),
];

/// Block header fields worth aiming at: (offset, width, name); width 0 is a byte string (key
/// or value bytes).
const BLOCK_FIELDS: &[(u64, usize, &str)] = &[
    (0, 4, "size"),
    (4, 4, "state"),
    (8, 4, "prev_size"),
    (12, 4, "key_len"),
    (16, 8, "val_len"),
    (24, 8, "seq"),
    (32, 8, "stamp"),
    (40, 4, "prev"),
    (44, 4, "next"),
    (48, 0, "key"),
    (u64::MAX, 0, "value"),
];

fn u32_at(b: &[u8], off: u64) -> u32 {
    let o = off as usize;
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()))
}

fn u64_at(b: &[u8], off: u64) -> u64 {
    let o = off as usize;
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// One block of the arena's chain, as read from the file.
#[derive(Debug, Clone, Copy)]
struct Blk {
    unit: u32,
    size: u32,
    state: u32,
    key_len: u32,
    val_len: u64,
}

/// What the parent reads of a healthy segment before scribbling on it.
#[derive(Debug, Clone)]
struct Layout {
    total_len: u64,
    index_slots: u64,
    /// Bytes of each inline record (0: the store keeps none).
    record_len: u64,
    arena_off: u64,
    arena_len: u64,
    top: u64,
    blocks: Vec<Blk>,
    /// Index slots that hold an entry.
    used_slots: Vec<u64>,
    /// Free lists that are not empty.
    free_bins: Vec<u64>,
    /// The whole file.
    bytes: Vec<u8>,
}

impl Layout {
    fn read(name: &str) -> Layout {
        let bytes = std::fs::read(segment_path(name)).expect("read the segment file");
        let index_slots = u64_at(&bytes, hdr::INDEX_SLOTS);
        let record_len = u64_at(&bytes, hdr::RECORD_LEN);
        let arena_off = u64_at(&bytes, hdr::ARENA_OFF);
        let arena_len = u64_at(&bytes, hdr::ARENA_LEN);
        let top = u64_at(&bytes, hdr::TOP);
        let mut blocks = Vec::new();
        let mut unit = 0u64;
        while unit * UNIT < top {
            let at = arena_off + unit * UNIT;
            let size = u32_at(&bytes, at + blk::SIZE);
            blocks.push(Blk {
                unit: unit as u32,
                size,
                state: u32_at(&bytes, at + blk::STATE),
                key_len: u32_at(&bytes, at + blk::KEY_LEN),
                val_len: u64_at(&bytes, at + blk::VAL_LEN),
            });
            if size == 0 {
                break;
            }
            unit += size as u64;
        }
        let used_slots = (0..index_slots)
            .filter(|i| {
                let s = u64_at(&bytes, hdr::INDEX + i * 8);
                s != 0 && s != u64::MAX
            })
            .collect();
        let free_bins = (0..192u64)
            .filter(|b| u32_at(&bytes, hdr::FREE_HEADS + b * 4) != NIL)
            .collect();
        Layout {
            total_len: bytes.len() as u64,
            index_slots,
            record_len,
            arena_off,
            arena_len,
            top,
            blocks,
            used_slots,
            free_bins,
            bytes,
        }
    }

    /// A used index slot (any slot if none is used).
    fn pick_slot(&self, pick: u16) -> u64 {
        match self.used_slots.len() {
            0 => pick as u64 % self.index_slots.max(1),
            n => self.used_slots[pick as usize % n],
        }
    }

    /// File offset of block `unit`.
    fn block_off(&self, unit: u32) -> u64 {
        self.arena_off + unit as u64 * UNIT
    }

    fn live(&self) -> Vec<Blk> {
        self.blocks
            .iter()
            .copied()
            .filter(|b| b.state == LIVE)
            .collect()
    }

    fn free(&self) -> Vec<Blk> {
        self.blocks
            .iter()
            .copied()
            .filter(|b| b.state == FREE)
            .collect()
    }

    /// The key stored in live block `b`.
    fn key_of(&self, b: &Blk) -> String {
        let at = (self.block_off(b.unit) + blk::KEY) as usize;
        String::from_utf8_lossy(&self.bytes[at..at + b.key_len as usize]).into_owned()
    }

    /// The index slot (file offset) whose entry points at block `unit`.
    fn slot_of(&self, unit: u32) -> u64 {
        self.used_slots
            .iter()
            .map(|i| hdr::INDEX + i * 8)
            .find(|&off| u32_at(&self.bytes, off) == unit + 1)
            .unwrap_or_else(|| panic!("no index slot points at block {unit}"))
    }
}

/// An overwrite of `bytes` at file offset `off`, with what it aims at.
#[derive(Debug, Clone)]
struct Applied {
    off: u64,
    bytes: Vec<u8>,
    what: String,
}

fn applied(off: u64, bytes: Vec<u8>, what: impl Into<String>) -> Applied {
    Applied {
        off,
        bytes,
        what: what.into(),
    }
}

fn put_u32(off: u64, v: u32, what: &str) -> Applied {
    applied(off, v.to_le_bytes().to_vec(), what)
}

fn put_u64(off: u64, v: u64, what: &str) -> Applied {
    applied(off, v.to_le_bytes().to_vec(), what)
}

/// Writes the scribbles into the segment file (a regular file on tmpfs: the store's mapping
/// sees the same pages).
fn apply(name: &str, scribbles: &[Applied]) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path(name))
        .expect("open the segment file");
    for s in scribbles {
        f.seek(SeekFrom::Start(s.off)).unwrap();
        f.write_all(&s.bytes).unwrap();
    }
    f.flush().unwrap();
}

/// The scribbles as text to read and, when there are not too many, to paste into
/// `SHMSTORE_SCRIBBLE_REPLAY`.
fn describe(seed: u64, scribbles: &[Applied]) -> String {
    const SHOWN: usize = 80;
    let mut replay = format!("seed={seed}");
    let mut lines = String::new();
    for (i, s) in scribbles.iter().enumerate() {
        let hex: String = s.bytes.iter().map(|b| format!("{b:02x}")).collect();
        replay.push_str(&format!(";{}:{hex}", s.off));
        if i < SHOWN {
            let hex = if hex.len() > 48 {
                format!("{}..", &hex[..46])
            } else {
                hex
            };
            lines.push_str(&format!("  at {:>6}: {hex:<48} {}\n", s.off, s.what));
        }
    }
    if scribbles.len() > SHOWN {
        lines.push_str(&format!("  ... and {} more\n", scribbles.len() - SHOWN));
        return lines;
    }
    format!("{lines}replay: {REPLAY_VAR}='{replay}' cargo test --test scribble replay_scribbles")
}

// ---- the objects a store is filled with ---------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    weights: Vec<f32>,
    extra: Option<(u32, String)>,
    kind: Kind,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    Plain,
    Scaled(u32),
    Named { x: i64, label: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Text(String),
    Nums(Vec<u64>),
    Rec(Record),
    Raw(Vec<u8>),
}

/// Helpers on the shared splitmix64 generator for filling stores.
impl Rng {
    /// Mostly small, some medium, a few large (bytes or elements).
    fn size(&mut self) -> usize {
        match self.below(20) {
            0 => 3000 + self.below(9000) as usize,
            1..=5 => 300 + self.below(2700) as usize,
            _ => 1 + self.below(300) as usize,
        }
    }

    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

/// The kind of object a key holds is in its first letter.
fn make_obj(rng: &mut Rng, key: &str) -> Obj {
    let n = rng.size();
    match key.as_bytes()[0] {
        b't' => Obj::Text(rng.text(n)),
        b'n' => Obj::Nums(
            (0..n / 8 + 1)
                .map(|_| rng.next() >> rng.below(64))
                .collect(),
        ),
        b'r' => Obj::Rec(Record {
            id: rng.next(),
            name: rng.text(n.min(200)),
            tags: (0..rng.below(6)).map(|i| format!("tag{i}")).collect(),
            weights: (0..n / 16).map(|i| i as f32 * 0.5).collect(),
            extra: rng
                .below(2)
                .eq(&1)
                .then(|| (rng.next() as u32, rng.text(5))),
            kind: match rng.below(3) {
                0 => Kind::Plain,
                1 => Kind::Scaled(rng.next() as u32),
                _ => Kind::Named {
                    x: rng.next() as i64,
                    label: rng.text(12),
                },
            },
        }),
        _ => Obj::Raw(match rng.below(3) {
            0 => vec![0; n],
            1 => vec![0xff; n],
            _ => (0..n).map(|_| rng.next() as u8).collect(),
        }),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put(String, Obj),
    Remove(String),
}

/// The fill of a store: puts of a few dozen objects of mixed kinds and sizes, some removed
/// (leaving free blocks between live ones) and some replaced.
fn plan(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for i in 0..36u32 {
        let prefix = ["t", "n", "r", "b"][rng.below(4) as usize];
        let key = match rng.below(12) {
            0 => format!(
                "{prefix}-{i:03}-{}",
                "long".repeat(1 + rng.below(60) as usize)
            ),
            1 => format!("{prefix}-{i:03}-ключ"),
            _ => format!("{prefix}-{i:03}"),
        };
        steps.push(Step::Put(key.clone(), make_obj(&mut rng, &key)));
        keys.push(key);
        if i % 5 == 4 {
            let victim = keys.remove(rng.below(keys.len() as u64) as usize);
            steps.push(Step::Remove(victim));
        }
    }
    for _ in 0..6 {
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        steps.push(Step::Put(key.clone(), make_obj(&mut rng, &key)));
    }
    steps
}

/// What the store holds after the fill.
fn model(steps: &[Step]) -> BTreeMap<String, Obj> {
    let mut m = BTreeMap::new();
    for s in steps {
        match s {
            Step::Put(k, v) => {
                m.insert(k.clone(), v.clone());
            }
            Step::Remove(k) => {
                m.remove(k);
            }
        }
    }
    m
}

/// Every key the fill used (removed ones too).
fn all_keys(steps: &[Step]) -> Vec<String> {
    let mut keys: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::Put(k, _) | Step::Remove(k) => k.clone(),
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn put_obj(store: &Store, key: &str, obj: &Obj) -> shmstore::Result<bool> {
    match obj {
        Obj::Text(s) => store.put(key, s),
        Obj::Nums(v) => store.put(key, v),
        Obj::Rec(r) => store.put(key, r),
        Obj::Raw(b) => store.put_bytes(key, b),
    }
}

/// Reads `key` back with the type its first letter says.
fn get_obj(store: &Store, key: &str) -> shmstore::Result<Option<Obj>> {
    Ok(match key.as_bytes()[0] {
        b't' => store.get::<String>(key)?.map(Obj::Text),
        b'n' => store.get::<Vec<u64>>(key)?.map(Obj::Nums),
        b'r' => store.get::<Record>(key)?.map(Obj::Rec),
        _ => store.get_bytes(key)?.map(Obj::Raw),
    })
}

fn fill(store: &Store, seed: u64) -> BTreeMap<String, Obj> {
    let steps = plan(seed);
    for s in &steps {
        match s {
            Step::Put(k, v) => assert!(put_obj(store, k, v).expect("fill: put"), "fill: {k}"),
            Step::Remove(k) => assert!(store.remove(k).expect("fill: remove"), "fill: {k}"),
        }
    }
    let m = model(&steps);
    assert_eq!(store.count().unwrap(), m.len(), "fill: nothing evicted");
    for (k, v) in &m {
        assert_eq!(get_obj(store, k).unwrap().as_ref(), Some(v), "fill: {k}");
    }
    store
        .check()
        .expect("a freshly filled store passes check()");
    m
}

// ---- the child: operations on a scribbled store -------------------------------------------------

/// Runs operations, printing every error but decode errors (counted); gives up once the lock is
/// clearly unobtainable
/// (a scribbled mutex that looks held): every further operation would only time out.
struct Runner<'a> {
    store: &'a Store,
    timeouts: u32,
    /// `Error::Reentrant`: the lock found held by this very thread. No operation of the
    /// child runs inside another, so only a lock the child left held (or a scribbled mutex
    /// naming its thread) gives one.
    reentrant: u32,
    errors: u32,
    decode_errors: u32,
}

impl<'a> Runner<'a> {
    fn new(store: &'a Store) -> Runner<'a> {
        Runner {
            store,
            timeouts: 0,
            reentrant: 0,
            errors: 0,
            decode_errors: 0,
        }
    }

    fn gave_up(&self) -> bool {
        self.timeouts >= MAX_TIMEOUTS
    }

    fn go<T>(
        &mut self,
        what: &str,
        op: impl FnOnce(&Store) -> shmstore::Result<T>,
    ) -> Option<shmstore::Result<T>> {
        if self.gave_up() {
            return None;
        }
        let r = op(self.store);
        match &r {
            Ok(_) => {}
            // Garbage values read as some type: expected by the dozen, not worth a line each.
            Err(Error::Decode { .. }) => self.decode_errors += 1,
            Err(e) => {
                self.errors += 1;
                match e {
                    Error::Timeout { .. } => self.timeouts += 1,
                    Error::Reentrant => self.reentrant += 1,
                    _ => {}
                }
                println!("{what}: {e}");
            }
        }
        Some(r)
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Reads every key in every way, including as types it was not stored as (decoding garbage).
fn read_everything(r: &mut Runner, keys: &[String]) {
    for k in keys {
        r.go(&format!("has {k}"), |s| s.has(k));
        r.go(&format!("get_bytes {k}"), |s| s.get_bytes(k));
        r.go(&format!("typed get {k}"), |s| get_obj(s, k));
        r.go(&format!("get_with {k}"), |s| {
            s.get_with(k, |b| (b.len(), checksum(b)))
        });
        r.go(&format!("get Record {k}"), |s| s.get::<Record>(k));
        r.go(&format!("get Vec<String> {k}"), |s| s.get::<Vec<String>>(k));
        r.go(&format!("get HashMap {k}"), |s| {
            s.get::<HashMap<String, Vec<u8>>>(k)
        });
        r.go(&format!("get tuple {k}"), |s| {
            s.get::<(u8, char, i64, String, Option<bool>)>(k)
        });
        r.go(&format!("get_or {k}"), |s| s.get_or::<u64>(k, 7));
    }
}

fn survey(r: &mut Runner) {
    r.go("count", |s| s.count());
    r.go("keys", |s| s.keys());
    r.go("stats", |s| s.stats());
    r.go("check", |s| s.check());
    if !r.gave_up() {
        let _ = r.store.processes();
    }
}

/// The fixed mix of operations. Returns the error of `check()` right after a `repair()` that
/// returned Ok, if any.
fn exercise(store: &Store, steps: &[Step]) -> Option<String> {
    let keys = all_keys(steps);
    let mut r = Runner::new(store);
    let mut rng = Rng(0x5C21_BB1E);
    survey(&mut r);
    read_everything(&mut r, &keys);
    for k in ["absent", "t-absent", "r-absent-ключ"] {
        r.go("get absent", |s| s.get_bytes(k));
        r.go("has absent", |s| s.has(k));
    }
    // Puts of new keys, small to large (the large ones need compaction or eviction).
    for (i, size) in [1usize, 40, 300, 2000, 9000, 30_000, 90_000]
        .iter()
        .enumerate()
    {
        let key = format!("b-new-{i}");
        let value: Vec<u8> = (0..*size).map(|_| rng.next() as u8).collect();
        r.go(&format!("put_bytes {key} ({size} bytes)"), |s| {
            s.put_bytes(&key, &value)
        });
    }
    let rec = match make_obj(&mut rng, "r-new") {
        Obj::Rec(rec) => rec,
        _ => unreachable!(),
    };
    r.go("put Record", |s| s.put("r-new", &rec));
    r.go("put String", |s| s.put("t-new", &"scribble".repeat(50)));
    // Replacements of existing keys, growing and shrinking.
    for (i, k) in keys.iter().enumerate().step_by(5) {
        let obj = make_obj(&mut rng, k);
        r.go(&format!("replace {k} (#{i})"), |s| put_obj(s, k, &obj));
    }
    // Removals, of present and absent keys.
    for k in keys.iter().skip(2).step_by(7) {
        r.go(&format!("remove {k}"), |s| s.remove(k));
    }
    r.go("remove absent", |s| s.remove("absent"));
    survey(&mut r);
    read_everything(&mut r, &["b-new-3".to_owned(), "r-new".to_owned()]);

    // Repair, and what it left.
    let mut unhealed = None;
    if let Some(Ok(())) = r.go("repair", |s| s.repair())
        && let Some(Err(e)) = r.go("check after repair", |s| s.check())
    {
        unhealed = Some(e.to_string());
    }
    survey(&mut r);
    read_everything(&mut r, &keys);
    for i in 0..4 {
        let key = format!("n-after-{i}");
        let v: Vec<u64> = (0..rng.size() as u64).collect();
        r.go("put after repair", |s| s.put(&key, &v));
    }
    for k in keys.iter().step_by(3) {
        r.go("remove after repair", |s| s.remove(k));
    }
    survey(&mut r);
    let note = if r.gave_up() { " (gave up)" } else { "" };
    println!(
        "{}",
        summary(r.errors, r.decode_errors, r.timeouts, r.reentrant, note)
    );
    unhealed
}

/// What a deterministic case expects of `check()` and `repair()`.
#[derive(Debug, Clone, PartialEq)]
enum Keep {
    /// Only derived data was hit: the repair keeps every object, exactly, without a reset.
    All,
    /// The repair keeps every object but this one, which it drops (a block that makes no
    /// sense); no reset.
    AllBut(String),
    /// The chain of blocks is broken: the repair empties the store, counted in `resets`.
    Reset,
    /// The store's truth says it holds nothing: empty after the repair (reset or not).
    Empty,
}

#[derive(Debug, Clone)]
struct Expect {
    /// `check()` on the scribbled store reports `Error::Corrupt` (else it passes).
    corrupt: bool,
    keep: Keep,
    /// A key whose value the scribble changed: still there, its value not compared.
    changed: Option<String>,
    /// A key whose typed get must fail with `Error::Decode` (before and after the repair).
    decode_err: Option<String>,
}

fn expect(corrupt: bool, keep: Keep) -> Expect {
    Expect {
        corrupt,
        keep,
        changed: None,
        decode_err: None,
    }
}

impl Expect {
    fn encode(&self) -> String {
        let keep = match &self.keep {
            Keep::All => "all".to_owned(),
            Keep::AllBut(k) => format!("but:{k}"),
            Keep::Reset => "reset".to_owned(),
            Keep::Empty => "empty".to_owned(),
        };
        format!(
            "{}\u{1}{keep}\u{1}{}\u{1}{}",
            self.corrupt as u8,
            self.changed.clone().unwrap_or_default(),
            self.decode_err.clone().unwrap_or_default()
        )
    }

    fn decode(s: &str) -> Expect {
        let parts: Vec<&str> = s.split('\u{1}').collect();
        let keep = match parts[1] {
            "all" => Keep::All,
            "reset" => Keep::Reset,
            "empty" => Keep::Empty,
            k => Keep::AllBut(k.strip_prefix("but:").expect("but:KEY").to_owned()),
        };
        let key = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Expect {
            corrupt: parts[0] == "1",
            keep,
            changed: key(parts[2]),
            decode_err: key(parts[3]),
        }
    }
}

/// Checks a deterministic case's promises on a freshly scribbled store, then runs the mix on
/// the repaired store, which must stay sound.
fn expect_repair(store: &Store, steps: &[Step], expect: &Expect) {
    let before = store.stats().expect("stats");
    let decode_fails = |when: &str| {
        if let Some(k) = &expect.decode_err {
            let got = get_obj(store, k);
            assert!(
                matches!(got, Err(Error::Decode { .. })),
                "{when}: typed get of {k:?} should fail to decode, got {got:?}"
            );
        }
    };
    decode_fails("before repair()");
    let checked = store.check();
    if expect.corrupt {
        assert!(
            matches!(checked, Err(Error::Corrupt { .. })),
            "check() on the scribbled store should report Error::Corrupt, got {checked:?}"
        );
    } else {
        assert!(
            checked.is_ok(),
            "check() should pass on this scribble, got {checked:?}"
        );
    }
    store.repair().expect("repair()");
    let after = store.check();
    assert!(
        after.is_ok(),
        "check() after repair() should pass, got {after:?}"
    );
    let resets = store.stats().unwrap().resets - before.resets;
    println!(
        "after repair(): {resets} resets, {:?} objects",
        store.count()
    );
    let m = model(steps);
    let keeps_all_but = |lost: Option<&str>| {
        assert_eq!(resets, 0, "repair() emptied the store but should not have");
        for (k, v) in &m {
            let got = get_obj(store, k);
            if Some(k.as_str()) == lost {
                assert!(
                    matches!(got, Ok(None)),
                    "{k:?} should have been dropped by the repair, got {got:?}"
                );
            } else if Some(k) == expect.changed.as_ref() || Some(k) == expect.decode_err.as_ref() {
                assert!(store.has(k).unwrap(), "{k:?} after repair()");
            } else {
                assert_eq!(got.unwrap().as_ref(), Some(v), "{k:?} after repair()");
            }
        }
        let want = m.len() - lost.map_or(0, |_| 1);
        assert_eq!(store.count().unwrap(), want, "objects after repair()");
    };
    match &expect.keep {
        Keep::All => keeps_all_but(None),
        Keep::AllBut(k) => keeps_all_but(Some(k)),
        Keep::Reset => {
            assert!(
                resets > 0,
                "repair() should have emptied the store (resets)"
            );
            assert_eq!(store.count().unwrap(), 0, "objects after a reset");
        }
        Keep::Empty => assert_eq!(store.count().unwrap(), 0, "objects after repair()"),
    }
    decode_fails("after repair()");
    // The repaired store works normally: the mix again, and it stays sound.
    let unhealed = exercise(store, steps);
    assert_eq!(unhealed, None, "the repaired store was corrupt again");
    let last = store.check();
    assert!(
        last.is_ok(),
        "check() after the mix on the repaired store: {last:?}"
    );
}

/// Child role "scribble": opens the scribbled store and runs the operations. Its exit status is
/// the verdict: 0, or a panic (101), an abort or a signal.
#[test]
fn scribble_child() {
    if child_role().as_deref() != Some(ROLE) {
        return;
    }
    let name = child_env(STORE_VAR);
    let seed: u64 = child_env(SEED_VAR).parse().unwrap();
    let steps = plan(seed);
    let expect = std::env::var(EXPECT_VAR).ok().map(|e| Expect::decode(&e));
    let _ = shmstore::valid(&name);
    let _ = shmstore::list();
    let store = match Store::open(&name) {
        Ok(s) => s,
        Err(e) => {
            assert!(expect.is_none(), "open: {e}");
            println!("open: {e}");
            println!("{}", summary(0, 0, 0, 0, " (open failed)"));
            return;
        }
    };
    match expect {
        None => {
            if let Some(e) = exercise(&store, &steps) {
                println!("UNHEALED: check() failed right after repair() returned Ok: {e}");
            }
        }
        Some(expect) => {
            expect_repair(&store, &steps, &expect);
            // Any error there, a lock held included, fails an assertion.
            println!("{}", summary(0, 0, 0, 0, " (expectations met)"));
        }
    }
}

/// The child's last line, which the parent reads (`lock_held_counts`).
fn summary(errors: u32, decode: u32, timeouts: u32, reentrant: u32, note: &str) -> String {
    format!(
        "child: {errors} errors, {decode} decode errors, {timeouts} lock timeouts, \
         {reentrant} reentrant{note}"
    )
}

// ---- the parent --------------------------------------------------------------------------------

/// A child that ran to the end (exit status 0).
struct ChildRun {
    output: String,
}

/// A child that did not: killed by a signal, aborted, panicked, failed an expectation, or hung.
#[derive(Debug)]
struct Failure {
    /// Everything: verdict, scribbles, the child's output.
    message: String,
    /// What went wrong, in one line, without names or numbers that vary between runs.
    signature: String,
}

/// Runs the child on the scribbled store `name`; a failure carries the scribbles and the
/// child's output.
fn run_child(
    name: &str,
    seed: u64,
    expect: Option<&Expect>,
    scribbles: &[Applied],
    watchdog: Duration,
) -> Result<ChildRun, Failure> {
    let mut env = vec![
        (SEED_VAR, seed.to_string()),
        ("RUST_BACKTRACE", "1".to_owned()),
    ];
    if let Some(e) = expect {
        env.push((EXPECT_VAR, e.encode()));
    }
    let mut child = ChildProc::spawn(CHILD_FN, ROLE, name, &env, true);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > watchdog {
            child.kill_and_wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = child.output();
    let verdict = match status {
        None => format!("HUNG: still running after {watchdog:?}; killed"),
        Some(s) if s.success() => return Ok(ChildRun { output }),
        Some(s) => match (s.signal(), s.code()) {
            (Some(sig), _) => format!("KILLED BY SIGNAL {sig} ({})", signal_name(sig)),
            (None, Some(101)) => "PANICKED (exit 101)".to_owned(),
            (None, code) => format!("FAILED with exit code {code:?}"),
        },
    };
    let signature = signature(&verdict, &output);
    let message = format!(
        "the child on a scribbled store {verdict}{}\n{signature}\nscribbles (fill seed {seed}):\n{}\n\
         ---- child output (the end) ----\n{}",
        expect.map_or(String::new(), |e| format!(" (expecting {e:?})")),
        describe(seed, scribbles),
        tail(&output, 12_000)
    );
    Err(Failure { message, signature })
}

/// The panic's location and message, or glibc's assertion, or the verdict.
fn signature(verdict: &str, output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at ")) {
        let at = lines[i].split("panicked at ").nth(1).unwrap_or("");
        let msg = lines.get(i + 1).copied().unwrap_or("");
        // Store names and numbers vary from run to run.
        let msg: String = msg
            .split(['"', '('])
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        return format!("panic at {at} {msg}");
    }
    if let Some(l) = lines.iter().find(|l| l.contains("Assertion")) {
        let l = l.split_once(": ").map_or(*l, |(_, rest)| rest);
        return format!("{verdict}: {l}");
    }
    verdict.to_owned()
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc_sig::SIGABRT => "SIGABRT: abort",
        libc_sig::SIGSEGV => "SIGSEGV: invalid memory access",
        libc_sig::SIGBUS => "SIGBUS",
        libc_sig::SIGILL => "SIGILL",
        libc_sig::SIGKILL => "SIGKILL",
        libc_sig::SIGFPE => "SIGFPE",
        _ => "other",
    }
}

/// Linux signal numbers (x86_64 and aarch64 agree on these).
mod libc_sig {
    pub const SIGILL: i32 = 4;
    pub const SIGABRT: i32 = 6;
    pub const SIGBUS: i32 = 7;
    pub const SIGFPE: i32 = 8;
    pub const SIGKILL: i32 = 9;
    pub const SIGSEGV: i32 = 11;
}

/// The last `max` bytes of `s` (a failing child's output can be long).
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// One scribbled case: a filled store, the scribbles chosen from its layout, the child.
fn scribbled_case(
    seed: u64,
    expect: Option<&Expect>,
    choose: impl FnOnce(&Layout) -> Vec<Applied>,
) -> Result<ChildRun, Failure> {
    scribbled_case_within(seed, expect, choose, WATCHDOG)
}

/// [`scribbled_case`] with another watchdog.
fn scribbled_case_within(
    seed: u64,
    expect: Option<&Expect>,
    choose: impl FnOnce(&Layout) -> Vec<Applied>,
    watchdog: Duration,
) -> Result<ChildRun, Failure> {
    let ts = filled_store(seed);
    let layout = Layout::read(&ts.name);
    let mut scribbles = choose(&layout);
    apply(&ts.name, &scribbles);
    if let Some(bound) = bound_lock_timeout(&ts.name) {
        apply(&ts.name, std::slice::from_ref(&bound));
        scribbles.push(bound);
    }
    // From here on this process does not touch the store (only drops its handle), so a
    // crash can only happen in the child.
    let run = run_child(&ts.name, seed, expect, &scribbles, watchdog)?;
    // The child is the store's only user and has one thread: with the mutex's bytes as the
    // fill left them, the lock can be found held only if the child itself left it held (a
    // guard leaked, an unlock skipped), which shows as `Reentrant` (the mutex is
    // error-checking) or, were the owner another thread, as timeouts; giving up after a few
    // of those must not hide it.
    let mutex = hdr::MUTEX..hdr::MUTEX + hdr::MUTEX_LEN;
    let touched = scribbles
        .iter()
        .any(|s| s.off < mutex.end && s.off + s.bytes.len() as u64 > mutex.start);
    let verdict = match lock_held_counts(&run.output) {
        None => "printed no summary line".to_owned(),
        Some((timeouts, reentrant)) if (timeouts > 0 || reentrant > 0) && !touched => format!(
            "found the lock held ({timeouts} timeouts, {reentrant} reentrant), yet no scribble \
             touched the mutex (a lock left held?)"
        ),
        Some(_) => return Ok(run),
    };
    Err(Failure {
        message: format!(
            "the child on a scribbled store {verdict}\nscribbles (fill seed {seed}):\n{}\n\
             ---- child output (the end) ----\n{}",
            describe(seed, &scribbles),
            tail(&run.output, 12_000)
        ),
        signature: format!("child {}", verdict.split(" (").next().unwrap_or("")),
    })
}

/// The lock timeouts and `Reentrant` errors the child counted, from its summary line.
fn lock_held_counts(output: &str) -> Option<(u32, u32)> {
    // The libtest line of the child's test may come first on the same line.
    let line = output
        .lines()
        .find_map(|l| l.split_once("child: ").map(|(_, rest)| rest))?;
    let count =
        |what: &str| -> Option<u32> { line.split(what).next()?.rsplit(' ').next()?.parse().ok() };
    Some((count(" lock timeouts")?, count(" reentrant")?))
}

/// Longest lock timeout `open` accepts from a segment (design.md, "Lock protocol": capped at
/// one hour).
const MAX_VALID_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest lock timeout a case's child runs with: it gives up after [`MAX_TIMEOUTS`] waits
/// for a lock that looks held, which must fit well inside the watchdog.
const MAX_CASE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// A scribble that brings the segment's lock timeout back to [`LOCK_TIMEOUT`] when the
/// scribbles left it valid but longer than [`MAX_CASE_LOCK_TIMEOUT`]. Up to an hour is a
/// valid timeout (open rejects more, and less than 1 ms), and a waiter honours it in full when the
/// scribbles also make the mutex look held (by a thread that is not ours, or none): the
/// child would then take up to three hours, as designed, which is not a hang but cannot be
/// waited for here. The timeouts open rejects are left for it to reject.
fn bound_lock_timeout(name: &str) -> Option<Applied> {
    let header = std::fs::read(segment_path(name)).expect("read the segment file");
    let ns = u64_at(&header, hdr::LOCK_TIMEOUT_NS);
    let valid = ns >= 1_000_000 && ns <= MAX_VALID_LOCK_TIMEOUT.as_nanos() as u64;
    (valid && ns > MAX_CASE_LOCK_TIMEOUT.as_nanos() as u64).then(|| {
        put_u64(
            hdr::LOCK_TIMEOUT_NS,
            LOCK_TIMEOUT.as_nanos() as u64,
            &format!(
                "lock_timeout_ns back to {LOCK_TIMEOUT:?} (scribbled to a valid {:.0} s)",
                ns as f64 / 1e9
            ),
        )
    })
}

/// An empty store for a case, with inline records (copies of objects of up to 120 bytes)
/// if `records`. Its hash seed (random per store) is fixed while it is empty, so that the
/// same fill lays out index and arena the same way every time: a case printed by a failure
/// replays exactly.
fn new_store(records: bool) -> TempStore {
    let inline = if records { 120 } else { 0 };
    let ts = TempStore::new("scribble", options().inline_values(inline));
    apply(
        &ts.name,
        &[applied(hdr::SEED, vec![0x5A; 16], "fixed hash seed")],
    );
    ts
}

/// The store a case with `seed` scribbles on, filled. Odd seeds make stores with inline
/// records, so that scribbles also land on records (and on the header's record_len) and
/// lock-free reads answer from them; both passes of a deterministic case get the same one.
fn filled_store(seed: u64) -> TempStore {
    let ts = new_store(seed % 2 == 1);
    fill(&ts, seed);
    ts
}

// ---- the proptest -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Header,
    Index,
    Arena,
    All,
}

/// Where a scribble lands; resolved against the store's layout.
#[derive(Debug, Clone)]
enum Target {
    /// A byte offset in the case's region, `frac / 2^32` of the way in. `wide` also reaches
    /// the header's magic, version and ready words, and the arena above `top`.
    Raw { frac: u32, wide: bool },
    /// A header field from `HEADER_FIELDS`.
    HeaderField(u16),
    /// The head of a non-empty free list.
    FreeHead(u16),
    /// A field of a block of the chain (`at` places key and value scribbles).
    Block { pick: u16, field: u8, at: u16 },
    /// Part of a used index slot: 0 the low half (unit + 1), 1 the high half (the CLOCK
    /// bit, the tag and the block's size in lines), 2 all of it.
    Slot { pick: u16, part: u8 },
    /// A byte of a used index slot's inline record (`at` below 8: its word); the slot itself
    /// in a store without records.
    Record { pick: u16, at: u16 },
}

/// What is written.
#[derive(Debug, Clone)]
enum Val {
    Bytes(Vec<u8>),
    /// `len` copies of a byte.
    Fill(u8, u8),
    /// A small integer, at the target's width.
    Small(u8),
    /// The largest integer minus `k`, at the target's width.
    Max(u8),
    Random(u64),
    /// The offset (units) of a real block (`which`: 0 any, 1 live, 2 free) plus `delta`,
    /// plus one if `plus1` (the form of an index slot's low half).
    Unit {
        pick: u16,
        which: u8,
        plus1: bool,
        delta: i8,
    },
    /// The arena's length in units, plus `delta`.
    ArenaUnits(i8),
    /// `top` in bytes, plus `delta` units.
    TopBytes(i8),
    /// A block state word (or 0).
    State(u8),
}

#[derive(Debug, Clone)]
struct Scribble {
    target: Target,
    val: Val,
}

impl Val {
    /// The integer this value stands for in `l`, if it is one.
    fn int(&self, l: &Layout, width: usize) -> Option<u64> {
        let max = if width == 8 {
            u64::MAX
        } else {
            u32::MAX as u64
        };
        Some(match *self {
            Val::Bytes(_) | Val::Fill(..) => return None,
            Val::Small(v) => v as u64,
            Val::Max(k) => max - k as u64,
            Val::Random(v) => v & max,
            Val::Unit {
                pick,
                which,
                plus1,
                delta,
            } => {
                let pool: Vec<Blk> = match which % 3 {
                    0 => l.blocks.clone(),
                    1 => l.live(),
                    _ => l.free(),
                };
                let unit = pool
                    .get(pick as usize % pool.len().max(1))
                    .map_or(0, |b| b.unit);
                (unit as i64 + delta as i64 + plus1 as i64) as u64 & max
            }
            Val::ArenaUnits(d) => ((l.arena_len / UNIT) as i64 + d as i64) as u64,
            Val::TopBytes(d) => (l.top as i64 + d as i64 * UNIT as i64) as u64,
            Val::State(s) => [FREE, LIVE, WRITING, SLIDING, 0][s as usize % 5] as u64,
        })
    }

    /// The bytes to write at a target of natural `width` (0: none).
    fn bytes(&self, l: &Layout, width: usize) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b.clone(),
            Val::Fill(b, n) => vec![*b; *n as usize],
            _ => {
                let w = match width {
                    4 | 8 => width,
                    _ if matches!(self, Val::Random(_)) => 8,
                    _ => 4,
                };
                let v = self.int(l, w).unwrap();
                v.to_le_bytes()[..w].to_vec()
            }
        }
    }
}

impl Scribble {
    fn resolve(&self, l: &Layout, region: Region) -> Applied {
        let (off, width, what) = match self.target {
            Target::Raw { frac, wide } => {
                let (start, end) = match (region, wide) {
                    (Region::Header, false) => (16, hdr::END),
                    (Region::Header, true) => (0, hdr::INDEX),
                    (Region::Index, _) => (hdr::INDEX, l.arena_off),
                    (Region::Arena, false) => (l.arena_off, l.arena_off + l.top.max(64)),
                    (Region::Arena, true) => (l.arena_off, l.total_len),
                    (Region::All, false) => (16, l.total_len),
                    (Region::All, true) => (0, l.total_len),
                };
                let mut off = start + (((end - start) as u128 * frac as u128) >> 32) as u64;
                if !matches!(self.val, Val::Bytes(_) | Val::Fill(..)) {
                    off &= !3; // integers land on field boundaries
                }
                (off, 0, format!("raw {region:?}"))
            }
            Target::HeaderField(i) => {
                let (off, w, name) = HEADER_FIELDS[i as usize % HEADER_FIELDS.len()];
                (off, w, format!("header {name}"))
            }
            Target::FreeHead(i) => {
                let bin = match l.free_bins.len() {
                    0 => i as u64 % 192,
                    n => l.free_bins[i as usize % n],
                };
                (hdr::FREE_HEADS + bin * 4, 4, format!("free_heads[{bin}]"))
            }
            Target::Block { pick, field, at } => {
                let b = l.blocks[pick as usize % l.blocks.len().max(1)];
                let (foff, w, name) = BLOCK_FIELDS[field as usize % BLOCK_FIELDS.len()];
                let base = l.block_off(b.unit);
                let off = match name {
                    "key" => base + blk::KEY + at as u64 % b.key_len.max(1) as u64,
                    "value" => base + blk::KEY + b.key_len as u64 + at as u64 % b.val_len.max(1),
                    _ => base + foff,
                };
                let state = match b.state {
                    LIVE => "live",
                    FREE => "free",
                    _ => "odd",
                };
                (off, w, format!("{state} block {} {name}", b.unit))
            }
            Target::Record { pick, at } => {
                let slot = l.pick_slot(pick);
                if l.record_len == 0 {
                    (hdr::INDEX + slot * 8, 8, format!("index slot {slot}"))
                } else {
                    let records = hdr::INDEX + l.index_slots * 8;
                    let at = at as u64 % l.record_len;
                    let (off, w) = if at < 8 { (0, 8) } else { (at, 0) };
                    let name = if at < 8 { "word" } else { "bytes" };
                    (
                        records + slot * l.record_len + off,
                        w,
                        format!("record {slot} {name} at {off}"),
                    )
                }
            }
            Target::Slot { pick, part } => {
                let slot = l.pick_slot(pick);
                let off = hdr::INDEX + slot * 8;
                match part % 3 {
                    0 => (off, 4, format!("index slot {slot} unit")),
                    1 => (off + 4, 4, format!("index slot {slot} tag")),
                    _ => (off, 8, format!("index slot {slot}")),
                }
            }
        };
        let mut bytes = self.val.bytes(l, width);
        bytes.truncate(l.total_len.saturating_sub(off) as usize);
        applied(off, bytes, format!("{what} <- {:?}", self.val))
    }
}

fn val() -> BoxedStrategy<Val> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 1..=16).prop_map(Val::Bytes),
        2 => (prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 1u8..=16)
            .prop_map(|(b, n)| Val::Fill(b, n)),
        3 => prop_oneof![0u8..=8, 0u8..=80].prop_map(Val::Small),
        1 => (0u8..=2).prop_map(Val::Max),
        1 => any::<u64>().prop_map(Val::Random),
        3 => (any::<u16>(), 0u8..3, any::<bool>(), prop_oneof![Just(0i8), -4i8..=4])
            .prop_map(|(pick, which, plus1, delta)| Val::Unit { pick, which, plus1, delta }),
        1 => (-2i8..=2).prop_map(Val::ArenaUnits),
        1 => (-2i8..=2).prop_map(Val::TopBytes),
        1 => (0u8..5).prop_map(Val::State),
    ]
    .boxed()
}

fn target(region: Region) -> BoxedStrategy<Target> {
    let raw = (any::<u32>(), proptest::bool::weighted(0.1))
        .prop_map(|(frac, wide)| Target::Raw { frac, wide });
    let field = any::<u16>().prop_map(Target::HeaderField);
    let free_head = any::<u16>().prop_map(Target::FreeHead);
    let block = (any::<u16>(), any::<u8>(), any::<u16>())
        .prop_map(|(pick, field, at)| Target::Block { pick, field, at });
    let slot = (any::<u16>(), any::<u8>()).prop_map(|(pick, part)| Target::Slot { pick, part });
    let record = (any::<u16>(), any::<u16>()).prop_map(|(pick, at)| Target::Record { pick, at });
    match region {
        Region::Header => prop_oneof![3 => raw, 4 => field, 1 => free_head].boxed(),
        Region::Index => prop_oneof![1 => raw, 3 => slot, 2 => record].boxed(),
        Region::Arena => prop_oneof![2 => raw, 4 => block].boxed(),
        Region::All => prop_oneof![
            2 => raw,
            2 => field,
            1 => free_head,
            2 => block,
            2 => slot,
            1 => record
        ]
        .boxed(),
    }
}

fn case() -> impl Strategy<Value = (u64, Region, Vec<Scribble>)> {
    let region = prop_oneof![
        Just(Region::Header),
        Just(Region::Index),
        Just(Region::Arena),
        Just(Region::All),
    ];
    (any::<u64>(), region).prop_flat_map(|(seed, region)| {
        let s = (target(region), val())
            .prop_map(|(target, val)| Scribble { target, val })
            .boxed();
        let scribbles = prop_oneof![
            4 => proptest::collection::vec(s.clone(), 1..=3),
            3 => proptest::collection::vec(s.clone(), 4..=16),
            2 => proptest::collection::vec(s, 17..=64),
        ];
        (Just(seed), Just(region), scribbles)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Each case is a child process: shrink, but within bounds (a hang costs a watchdog).
        max_shrink_iters: 128,
        max_shrink_time: 30_000,
        // Failures are printed with their scribbles (and a replay line) instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scribbled_segments_give_errors_not_crashes((seed, region, scribbles) in case()) {
        let run = scribbled_case(seed, None, |l| {
            scribbles.iter().map(|s| s.resolve(l, region)).collect()
        });
        let run = match run {
            Ok(run) => run,
            Err(f) => return Err(TestCaseError::fail(f.message)),
        };
        // A repair that returned Ok must leave a store that passes check().
        if let Some(line) = run.output.lines().find(|l| l.starts_with("UNHEALED")) {
            return Err(TestCaseError::fail(format!("scribble case (seed {seed}, {region:?}): {line}")));
        }
    }
}

/// Replays one case: `SHMSTORE_SCRIBBLE_REPLAY='seed=N;OFF:HEX;OFF:HEX...'` (as printed by a
/// failing case): the same fill gives the same segment, so the same bytes land on the same
/// fields.
#[test]
fn replay_scribbles() {
    let Ok(spec) = std::env::var(REPLAY_VAR) else {
        return;
    };
    let mut parts = spec.split(';');
    let seed: u64 = parts
        .next()
        .and_then(|s| s.strip_prefix("seed="))
        .expect("seed=N first")
        .parse()
        .unwrap();
    let scribbles: Vec<Applied> = parts
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (off, hex) = p.split_once(':').expect("OFF:HEX");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            applied(off.parse().unwrap(), bytes, "replayed")
        })
        .collect();
    match scribbled_case(seed, None, |_| scribbles) {
        Ok(run) => println!("{}", run.output),
        Err(f) => panic!("{}", f.message),
    }
}

/// Runs `SHMSTORE_SCRIBBLE_SURVEY=N` random cases without stopping at the first failure, and
/// prints each distinct failure once (the case with the fewest scribbles), with how often it
/// came up, and how often `check()` failed right after a `repair()` that returned Ok. A tool
/// for finding every bug at once rather than one per run; a no-op otherwise.
#[test]
fn survey_scribbles() {
    use proptest::strategy::ValueTree;
    let Ok(n) = std::env::var(SURVEY_VAR) else {
        return;
    };
    let n: u32 = n.parse().expect("SHMSTORE_SCRIBBLE_SURVEY=number of cases");
    let mut runner = proptest::test_runner::TestRunner::default();
    let strategy = case();
    // signature -> (times, scribbles in the smallest example, its message)
    let mut failures: BTreeMap<String, (u32, usize, String)> = BTreeMap::new();
    let mut unhealed: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..n {
        let (seed, region, scribbles) = strategy.new_tree(&mut runner).unwrap().current();
        let run = scribbled_case(seed, None, |l| {
            scribbles.iter().map(|s| s.resolve(l, region)).collect()
        });
        match run {
            Ok(run) => {
                for line in run.output.lines().filter(|l| l.starts_with("UNHEALED")) {
                    let why = line.split("is corrupt: ").nth(1).unwrap_or(line);
                    let why: String = why
                        .split(';')
                        .next()
                        .unwrap()
                        .chars()
                        .map(|c| if c.is_ascii_digit() { '#' } else { c })
                        .collect();
                    *unhealed.entry(why).or_default() += 1;
                }
            }
            Err(f) => {
                let e = failures
                    .entry(f.signature)
                    .or_insert((0, usize::MAX, String::new()));
                e.0 += 1;
                if scribbles.len() < e.1 {
                    e.1 = scribbles.len();
                    e.2 = f.message;
                }
            }
        }
    }
    for (sig, (times, _, message)) in &failures {
        println!("==== {times} x {sig}\n{}\n", tail(message, 6000));
    }
    println!("---- summary of {n} cases ----");
    for (sig, (times, len, _)) in &failures {
        println!("{times:>4} x {sig} (smallest: {len} scribbles)");
    }
    for (why, times) in &unhealed {
        println!("{times:>4} x not healed by repair(): {why}");
    }
    assert!(failures.is_empty(), "{} distinct failures", failures.len());
}

// ---- deterministic cases ------------------------------------------------------------------------

const DET_SEED: u64 = 0x5EED_0001;

/// A hand-picked scribble: first the mix runs on it in a child (it must survive); then, when
/// `case` also says what to expect, a second child checks that on a second, identically filled
/// and scribbled store. Both on a store without inline records and on one with them (the
/// seeds differ in their last bit only: see [`filled_store`]).
fn deterministic(case: impl Fn(&Layout) -> (Vec<Applied>, Option<Expect>)) {
    for seed in [DET_SEED & !1, DET_SEED | 1] {
        if let Err(f) = scribbled_case(seed, None, |l| case(l).0) {
            panic!("seed {seed:#x}: {}", f.message);
        }
        let ts = filled_store(seed);
        let layout = Layout::read(&ts.name);
        let (scribbles, expect) = case(&layout);
        if let Some(e) = expect {
            apply(&ts.name, &scribbles);
            if let Err(f) = run_child(&ts.name, seed, Some(&e), &scribbles, WATCHDOG) {
                panic!("seed {seed:#x}: {}", f.message);
            }
        }
    }
}

/// A live block in the middle of the chain (neither the first nor the last).
fn middle_live(l: &Layout) -> Blk {
    let live = l.live();
    assert!(live.len() >= 3, "the fill leaves live blocks");
    live[live.len() / 2]
}

fn a_free_block(l: &Layout) -> Blk {
    *l.free().first().expect("the fill leaves free blocks")
}

/// The least recently used block (the LRU list's tail).
fn lru_tail(l: &Layout) -> u32 {
    u32_at(&l.bytes, hdr::LRU_TAIL)
}

/// Overwrites one field of the middle live block.
fn middle_u32(l: &Layout, field: u64, v: u32, what: &str) -> Vec<Applied> {
    vec![put_u32(l.block_off(middle_live(l).unit) + field, v, what)]
}

fn middle_u64(l: &Layout, field: u64, v: u64, what: &str) -> Vec<Applied> {
    vec![put_u64(l.block_off(middle_live(l).unit) + field, v, what)]
}

/// The repair drops the middle live block's object, and keeps every other one.
fn drops_middle(l: &Layout) -> Option<Expect> {
    Some(expect(true, Keep::AllBut(l.key_of(&middle_live(l)))))
}

fn keeps_all() -> Option<Expect> {
    Some(expect(true, Keep::All))
}

fn resets() -> Option<Expect> {
    Some(expect(true, Keep::Reset))
}

// The chain of blocks (the truth) broken: the repair can only empty the store.

#[test]
fn det_block_size_zero() {
    deterministic(|l| (middle_u32(l, blk::SIZE, 0, "block size 0"), resets()));
}

#[test]
fn det_block_size_past_the_arena() {
    deterministic(|l| {
        let units = (l.arena_len / UNIT) as u32;
        (
            middle_u32(l, blk::SIZE, units, "block size = the whole arena"),
            resets(),
        )
    });
}

#[test]
fn det_block_size_huge() {
    deterministic(|l| {
        (
            middle_u32(l, blk::SIZE, u32::MAX - 1, "block size ~4G units"),
            resets(),
        )
    });
}

#[test]
fn det_free_block_size_past_top() {
    deterministic(|l| {
        let f = a_free_block(l);
        let past = (l.top / UNIT) as u32 - f.unit + 4;
        let s = put_u32(
            l.block_off(f.unit) + blk::SIZE,
            past,
            "free block size past top",
        );
        (vec![s], resets())
    });
}

#[test]
fn det_top_beyond_the_arena() {
    deterministic(|l| {
        let s = put_u64(hdr::TOP, l.arena_len + 4096, "top past the arena");
        (vec![s], resets())
    });
}

#[test]
fn det_top_huge() {
    deterministic(|_| {
        (
            vec![put_u64(hdr::TOP, u64::MAX - 15, "top ~ u64::MAX")],
            resets(),
        )
    });
}

#[test]
fn det_top_inside_the_last_block() {
    deterministic(|l| {
        let s = put_u64(hdr::TOP, l.top - UNIT, "top one unit short");
        (vec![s], resets())
    });
}

#[test]
fn det_slide_journal_garbage() {
    // A slide recorded as under way with impossible figures: recovery cannot finish it.
    deterministic(|_| {
        let s = vec![
            put_u32(hdr::SLIDE_STATE, SLIDING, "slide.state SLIDING"),
            put_u64(hdr::SLIDE_SRC, 1, "slide.src 1"),
            put_u64(hdr::SLIDE_DST, 5, "slide.dst 5 (above src)"),
            put_u64(hdr::SLIDE_LEN, u64::MAX, "slide.len huge"),
            put_u64(hdr::SLIDE_DONE, 7, "slide.done odd"),
        ];
        (s, resets())
    });
}

// Derived data hit (index, LRU list, free lists, counts): the repair keeps every object.

#[test]
fn det_lru_link_to_itself() {
    deterministic(|l| {
        let b = l.block_off(middle_live(l).unit);
        let u = middle_live(l).unit;
        let s = vec![
            put_u32(b + blk::NEXT, u, "LRU next -> itself"),
            put_u32(b + blk::PREV, u, "LRU prev -> itself"),
        ];
        (s, keeps_all())
    });
}

#[test]
fn det_lru_cycle_from_tail_to_head() {
    deterministic(|l| {
        let head = u32_at(&l.bytes, hdr::LRU_HEAD);
        let tail = lru_tail(l);
        let s = vec![
            put_u32(l.block_off(tail) + blk::NEXT, head, "LRU tail.next -> head"),
            put_u32(l.block_off(head) + blk::PREV, tail, "LRU head.prev -> tail"),
        ];
        (s, keeps_all())
    });
}

#[test]
fn det_lru_head_at_a_free_block() {
    deterministic(|l| {
        let s = put_u32(
            hdr::LRU_HEAD,
            a_free_block(l).unit,
            "lru_head -> a free block",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_slot_at_a_free_block() {
    deterministic(|l| {
        let slot = l.slot_of(middle_live(l).unit);
        let f = a_free_block(l);
        let s = put_u32(slot, f.unit + 1, "index slot (tag kept) -> a free block");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_slot_inside_a_block() {
    deterministic(|l| {
        let b = middle_live(l);
        let s = put_u32(
            l.slot_of(b.unit),
            b.unit + 2,
            "index slot -> a unit inside its block",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_slot_past_the_arena() {
    deterministic(|l| {
        let last = (l.arena_len / UNIT) as u32 - 1;
        let s = put_u32(
            l.slot_of(middle_live(l).unit),
            last,
            "index slot -> two units before the arena's end",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_entry_size_wrong() {
    // Only the size bits (bits 32-38 of the entry): a reader's prefetch hint, which must
    // change no answer, and which `check` reports and the repair mends.
    deterministic(|l| {
        let slot = l.slot_of(middle_live(l).unit);
        let high = u32_at(&l.bytes, slot + 4);
        let s = put_u32(slot + 4, high ^ 0x5, "index entry's block size changed");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_entries_made_tombstones() {
    // Every entry turned into a tombstone (u64::MAX) behind the counts' back: a put then
    // reuses a tombstone the counts do not know about.
    deterministic(|l| {
        let s = l
            .used_slots
            .iter()
            .map(|i| put_u64(hdr::INDEX + i * 8, u64::MAX, "index entry -> tombstone"))
            .collect();
        (s, keeps_all())
    });
}

#[test]
fn det_index_full_of_garbage() {
    // Every empty slot made a tombstone or a bogus entry: probes must still stop.
    deterministic(|l| {
        let s = (0..l.index_slots)
            .filter(|i| !l.used_slots.contains(i))
            .map(|i| {
                let v = if i % 2 == 0 {
                    u64::MAX
                } else {
                    (i << 40) | (i % 64 + 1)
                };
                put_u64(hdr::INDEX + i * 8, v, "empty index slot -> garbage")
            })
            .collect();
        (s, keeps_all())
    });
}

#[test]
fn det_index_at_a_forged_block_inside_a_value() {
    // A raw value carries a forged live block header for another key, and that key's index
    // slot (tag kept) points at it. The forged block is not in the arena's chain: check()
    // must say so (the index holds an entry for a block the chain does not have), and the
    // repair re-indexes the real block.
    deterministic(|l| {
        let victim = middle_live(l);
        let key = l.key_of(&victim);
        let host = l
            .live()
            .into_iter()
            .find(|b| b.unit != victim.unit && b.val_len >= 64 + key.len() as u64 + 64)
            .expect("a live block with a large value");
        let value_start = l.block_off(host.unit) + blk::KEY + host.key_len as u64;
        let forged_off = (value_start - l.arena_off).div_ceil(UNIT) * UNIT + l.arena_off;
        let forged_unit = ((forged_off - l.arena_off) / UNIT) as u32;
        let mut forged = Vec::new();
        let units = (blk::KEY + key.len() as u64 + 8).div_ceil(UNIT) as u32;
        forged.extend_from_slice(&units.to_le_bytes()); // size
        forged.extend_from_slice(&LIVE.to_le_bytes()); // state
        forged.extend_from_slice(&0u32.to_le_bytes()); // prev_size
        forged.extend_from_slice(&(key.len() as u32).to_le_bytes()); // key_len
        forged.extend_from_slice(&8u64.to_le_bytes()); // val_len
        forged.extend_from_slice(&1u64.to_le_bytes()); // seq
        forged.extend_from_slice(&1u64.to_le_bytes()); // stamp
        forged.extend_from_slice(&NIL.to_le_bytes()); // prev
        forged.extend_from_slice(&NIL.to_le_bytes()); // next
        forged.extend_from_slice(key.as_bytes());
        forged.extend_from_slice(b"FORGED!!");
        let s = vec![
            applied(forged_off, forged, format!("forged live block for {key:?}")),
            put_u32(
                l.slot_of(victim.unit),
                forged_unit + 1,
                "index slot -> the forged block",
            ),
        ];
        let e = Expect {
            changed: Some(l.key_of(&host)),
            ..expect(true, Keep::All)
        };
        (s, Some(e))
    });
}

#[test]
fn det_free_head_at_a_live_block() {
    deterministic(|l| {
        let bin = *l.free_bins.first().expect("a non-empty free list");
        let s = put_u32(
            hdr::FREE_HEADS + bin * 4,
            middle_live(l).unit,
            "free list head -> a live block",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_every_free_list_at_a_live_block() {
    // Every free list (and its bitmap bit) claims a live block: a put allocates from them.
    deterministic(|l| {
        let unit = middle_live(l).unit;
        let mut s: Vec<Applied> = (0..192u64)
            .map(|bin| put_u32(hdr::FREE_HEADS + bin * 4, unit, "free head -> a live block"))
            .collect();
        for w in 0..3 {
            s.push(put_u64(
                hdr::FREE_BITMAP + w * 8,
                u64::MAX,
                "free bitmap all set",
            ));
        }
        (s, keeps_all())
    });
}

#[test]
fn det_free_list_cycle() {
    deterministic(|l| {
        let f = a_free_block(l);
        let s = vec![
            put_u32(
                l.block_off(f.unit) + blk::NEXT,
                f.unit,
                "free next -> itself",
            ),
            put_u32(
                l.block_off(f.unit) + blk::PREV,
                f.unit,
                "free prev -> itself",
            ),
        ];
        (s, keeps_all())
    });
}

#[test]
fn det_free_bitmap_without_lists() {
    deterministic(|_| {
        let s = (0..3)
            .map(|w| put_u64(hdr::FREE_BITMAP + w * 8, u64::MAX, "free bitmap all set"))
            .chain((0..192).map(|bin| put_u32(hdr::FREE_HEADS + bin * 4, NIL, "free head NIL")))
            .collect();
        (s, keeps_all())
    });
}

#[test]
fn det_prev_size_wrong() {
    deterministic(|l| (middle_u32(l, blk::PREV_SIZE, 1, "prev_size 1"), keeps_all()));
}

#[test]
fn det_last_units_wrong() {
    deterministic(|_| {
        let s = put_u32(hdr::LAST_UNITS, 0xFFFF, "last_units wrong");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_objects_max() {
    deterministic(|_| {
        let s = put_u64(hdr::OBJECTS, u64::MAX, "objects = u64::MAX");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_index_counts_max() {
    deterministic(|_| {
        let s = vec![
            put_u64(hdr::INDEX_LIVE, u64::MAX, "index_live = u64::MAX"),
            put_u64(
                hdr::INDEX_TOMBSTONES,
                u64::MAX,
                "index_tombstones = u64::MAX",
            ),
        ];
        (s, keeps_all())
    });
}

#[test]
fn det_index_tombstones_max() {
    // The next put adds live and tombstone counts: that sum must not overflow into a panic.
    deterministic(|_| {
        let s = put_u64(
            hdr::INDEX_TOMBSTONES,
            u64::MAX,
            "index_tombstones = u64::MAX",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_clock_max() {
    // The access clock at its maximum: the next get must not overflow it into a panic. (Not
    // corrupt by the invariants, so nothing more is expected.)
    deterministic(|_| {
        (
            vec![put_u64(hdr::CLOCK, u64::MAX, "clock = u64::MAX")],
            None,
        )
    });
}

#[test]
fn det_seq_max() {
    // The put sequence at its maximum: the next put must not overflow it into a panic.
    deterministic(|_| (vec![put_u64(hdr::SEQ, u64::MAX, "seq = u64::MAX")], None));
}

#[test]
fn det_block_stamp_max() {
    // The LRU tail's access stamp at the maximum: out of order; a repair takes the store's
    // clock from the stamps, and the next get must not overflow it into a panic.
    deterministic(|l| {
        let s = put_u64(
            l.block_off(lru_tail(l)) + blk::STAMP,
            u64::MAX,
            "LRU tail's stamp = u64::MAX",
        );
        (vec![s], keeps_all())
    });
}

#[test]
fn det_block_seq_max() {
    // A block's put sequence at the maximum (no invariant says otherwise): a repair takes the
    // store's sequence from the blocks, and the next put must not overflow it into a panic.
    deterministic(|l| {
        (
            middle_u64(l, blk::SEQ, u64::MAX, "seq = u64::MAX"),
            Some(expect(false, Keep::All)),
        )
    });
}

#[test]
fn det_committed_zero() {
    deterministic(|_| {
        let s = put_u64(hdr::COMMITTED, 0, "committed 0 (below top)");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_committed_past_the_arena() {
    deterministic(|_| {
        let s = put_u64(hdr::COMMITTED, u64::MAX, "committed = u64::MAX");
        (vec![s], keeps_all())
    });
}

#[test]
fn det_slide_journal_plausible() {
    // A plausible slide, as if a compaction had stopped just after journaling it: a live block
    // moves down over the free block before it. Recovery rolls it forward and keeps all.
    deterministic(|l| {
        let i = (1..l.blocks.len())
            .find(|&i| l.blocks[i - 1].state == FREE && l.blocks[i].state == LIVE)
            .expect("a free block before a live one");
        let (f, b) = (l.blocks[i - 1], l.blocks[i]);
        let s = vec![
            put_u64(hdr::SLIDE_SRC, b.unit as u64, "slide.src = a live block"),
            put_u64(
                hdr::SLIDE_DST,
                f.unit as u64,
                "slide.dst = the free block before it",
            ),
            put_u64(hdr::SLIDE_LEN, b.size as u64 * UNIT, "slide.len = its size"),
            put_u64(hdr::SLIDE_DONE, 0, "slide.done 0"),
            put_u32(hdr::SLIDE_STATE, SLIDING, "slide.state SLIDING"),
        ];
        (s, keeps_all())
    });
}

#[test]
fn det_seed_changed() {
    // A new hash seed: every index entry now sits where no probe looks.
    deterministic(|_| {
        let s = put_u64(hdr::SEED, 0x0123_4567_89AB_CDEF, "seed[0] changed");
        (vec![s], keeps_all())
    });
}

// A block that makes no sense: the repair drops that object only.

#[test]
fn det_huge_val_len() {
    deterministic(|l| {
        (
            middle_u64(l, blk::VAL_LEN, u64::MAX, "val_len = u64::MAX"),
            drops_middle(l),
        )
    });
}

#[test]
fn det_val_len_past_its_block() {
    deterministic(|l| {
        (
            middle_u64(l, blk::VAL_LEN, l.arena_len, "val_len = the arena's length"),
            drops_middle(l),
        )
    });
}

#[test]
fn det_key_len_zero() {
    deterministic(|l| (middle_u32(l, blk::KEY_LEN, 0, "key_len 0"), drops_middle(l)));
}

#[test]
fn det_key_len_huge() {
    deterministic(|l| {
        (
            middle_u32(l, blk::KEY_LEN, u32::MAX, "key_len u32::MAX"),
            drops_middle(l),
        )
    });
}

#[test]
fn det_key_not_utf8() {
    deterministic(|l| {
        let at = l.block_off(middle_live(l).unit) + blk::KEY;
        let s = applied(at, vec![0xff, 0xfe], "key bytes not UTF-8");
        (vec![s], drops_middle(l))
    });
}

#[test]
fn det_state_writing_at_rest() {
    deterministic(|l| {
        (
            middle_u32(l, blk::STATE, WRITING, "state WRITING at rest"),
            drops_middle(l),
        )
    });
}

#[test]
fn det_all_live_blocks_free() {
    // Every live block marked free: the store's truth now says it is empty.
    deterministic(|l| {
        let s = l
            .live()
            .iter()
            .map(|b| put_u32(l.block_off(b.unit) + blk::STATE, FREE, "state FREE"))
            .collect();
        (s, Some(expect(true, Keep::Empty)))
    });
}

// Values: sound segment, hostile bytes.

#[test]
fn det_bincode_length_claims_a_terabyte() {
    // A String value whose length prefix claims 2^40 bytes: a decode error, not an abort.
    deterministic(|l| {
        let b = l
            .live()
            .into_iter()
            .find(|b| l.key_of(b).starts_with("t-") && b.val_len >= 9)
            .expect("a text object");
        let at = l.block_off(b.unit) + blk::KEY + b.key_len as u64;
        let mut bomb = vec![0xFD];
        bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let s = applied(at, bomb, "String length prefix claims 1 TiB");
        let e = Expect {
            decode_err: Some(l.key_of(&b)),
            ..expect(false, Keep::All)
        };
        (vec![s], Some(e))
    });
}

// The header's lock and identity: errors (timeouts, failed opens), never a crash or a hang.

#[test]
fn det_mutex_looks_held() {
    // The mutex's lock word names a thread that does not exist: released as a dead owner's
    // (lock.rs, release_orphan) where thread ids can be judged, else every operation times out.
    deterministic(|_| {
        let s = put_u32(hdr::MUTEX, 0x3FFF_FFF0, "mutex.__lock = a bogus owner tid");
        (vec![s], None)
    });
}

#[test]
fn det_mutex_owner_died_bit() {
    // The lock word says "owner died": the next locker recovers.
    deterministic(|_| {
        let s = put_u32(hdr::MUTEX, 0x4000_0000, "mutex.__lock = FUTEX_OWNER_DIED");
        (vec![s], None)
    });
}

#[test]
fn det_mutex_kind_garbage() {
    deterministic(|_| {
        let s = put_u32(hdr::MUTEX + 16, 0x7FFF_FFFF, "mutex.__kind garbage");
        (vec![s], None)
    });
}

#[test]
fn det_mutex_kind_priority_inheritance() {
    // The mutex's kind word turned into a robust priority-inheritance mutex whose lock word
    // names a thread that does not exist (glibc's x86_64/aarch64 layout: __lock at +0,
    // __kind at +16).
    deterministic(|_| {
        let s = vec![
            put_u32(hdr::MUTEX, 0x3FFF_FFF0, "mutex.__lock = a bogus owner tid"),
            put_u32(
                hdr::MUTEX + 16,
                128 | 32 | 16 | 2,
                "mutex.__kind = pshared | PI | robust | errorcheck",
            ),
        ];
        (s, None)
    });
}

#[test]
fn det_mutex_kind_priority_protect() {
    // The mutex's kind word turned into a priority-protect mutex (its priority ceiling, in
    // the lock word's top bits, is then 0: not a valid priority).
    deterministic(|_| {
        let s = put_u32(
            hdr::MUTEX + 16,
            128 | 64,
            "mutex.__kind = pshared | priority protect",
        );
        (vec![s], None)
    });
}

#[test]
fn det_lock_timeout_huge_and_mutex_looks_held() {
    // open() takes the lock timeout from the header. Scribbled to centuries, with a lock word
    // that looks held by a thread that does not exist, the first operation would wait for
    // centuries: a hang. (A healthy child here takes well under a second; 20 s is the bound.)
    let scribbles = |_: &Layout| {
        vec![
            put_u64(hdr::LOCK_TIMEOUT_NS, u64::MAX, "lock_timeout_ns = u64::MAX"),
            put_u32(hdr::MUTEX, 0x3FFF_FFF0, "mutex.__lock = a bogus owner tid"),
        ]
    };
    let run = scribbled_case_within(DET_SEED, None, scribbles, Duration::from_secs(20));
    if let Err(f) = run {
        panic!("{}", f.message);
    }
}

#[test]
fn det_attach_table_full_of_strangers() {
    deterministic(|_| {
        let s = (0..64u64)
            .flat_map(|i| {
                [
                    put_u32(
                        hdr::ATTACH + i * hdr::ATTACH_SLOT,
                        1 + i as u32,
                        "attach pid",
                    ),
                    put_u64(
                        hdr::ATTACH + i * hdr::ATTACH_SLOT + 8,
                        12345,
                        "attach start",
                    ),
                ]
            })
            .collect();
        (s, None)
    });
}

#[test]
fn det_geometry_and_options_lie() {
    // Each of these makes open() fail with an error.
    for (off, v, what) in [
        (hdr::TOTAL_LEN, 1u64 << 40, "total_len"),
        (hdr::INDEX_SLOTS, 1 << 40, "index_slots"),
        (hdr::ARENA_OFF, 4096, "arena_off"),
        (hdr::ARENA_LEN, 1 << 20, "arena_len"),
        (hdr::LOCK_TIMEOUT_NS, 0, "lock_timeout_ns"),
        (hdr::MAGIC, 0x0A0D_5348_4D53_8900, "magic"),
    ] {
        deterministic(|_| (vec![put_u64(off, v, what)], None));
    }
}

#[test]
#[ignore = "takes 3 s: open() waits for a store that looks half-made"]
fn det_ready_cleared() {
    deterministic(|_| (vec![put_u32(hdr::READY, 0, "ready cleared")], None));
}
