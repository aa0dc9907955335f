//! The bytes of a store's segment: header, index, inline records and arena.
//!
//! ```text
//! offset 0             40960              records_off          arena_off (page aligned)  total_len
//! | header (ten pages) | index: u64 slots | records (optional) | arena: blocks ... | wilderness |
//! ```
//! The records, one of `record_len` bytes per index slot, exist only in a store created with
//! `Options::inline_values` (`record_len` 0 otherwise: the arena follows the index).
//! Everything is `#[repr(C)]`, made of atomics (several processes read and write it) and
//! addressed by offsets: each process maps the segment at its own address. The header's
//! fields are listed in `docs/design.md` with their offsets; the `const` assertions at the
//! bottom of this file keep the two in step.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Corruption, corrupt};

/// First 8 bytes of every segment. Like PNG's signature, it mixes a non-ASCII byte with CR LF,
/// ^Z and LF, so neither a text file nor a copy mangled by line-ending conversion passes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"\x89SHMS\r\n\x1a");
/// Bumped on every change to the bytes described here.
pub const LAYOUT_VERSION: u32 = 9;
/// Written to `Header::ready` last, once everything else is in place.
pub const READY: u32 = 0x5245_4459;

pub const PAGE: u64 = 4096;
pub const HEADER_SIZE: u64 = 10 * PAGE;
/// Blocks start and end on multiples of this many bytes; block offsets count in these units.
pub const UNIT: u64 = 16;
/// "No block" in a link.
pub const NIL: u32 = u32::MAX;
/// Bytes of a block header.
pub const BLOCK_HEADER: u64 = std::mem::size_of::<Block>() as u64;
/// The smallest block, in units: a header and 16 bytes.
pub const MIN_BLOCK_UNITS: u32 = (BLOCK_HEADER / UNIT) as u32 + 1;
/// Largest arena: block offsets are `u32` units, and `NIL` must stay out of reach.
pub const MAX_ARENA: u64 = (u32::MAX as u64 - 2) * UNIT;
/// Number of segregated free lists.
pub const BINS: usize = 192;
/// Entries of the attach table (open handles by process).
pub const ATTACH_SLOTS: usize = 64;
/// Read lanes of each attach slot: the threads of its process spread over this many cache
/// lines of counters, so that readers in one process do not all write one line.
pub const LANES: usize = 8;
/// Index slots in one 64-byte cache line; the table has a whole number of lines.
pub const SLOTS_PER_LINE: u64 = 8;
/// Largest inline record (`Options::inline_values` + the record's 8-byte header): beyond a
/// few cache lines a copy beside the index saves little over the block itself.
pub const MAX_RECORD: u64 = 1024;
/// Bytes before an inline record's key: the [`record_word`] word.
pub const RECORD_HEADER: u64 = 8;
/// Flag of a record word that describes a copy (0: the slot's object is not copied).
pub const RECORD_COPY: u64 = 1 << 63;

/// The word at the start of an inline record: [`RECORD_COPY`], then the key's and the value's
/// lengths (each under 2^31, as records are at most [`MAX_RECORD`] bytes).
pub fn record_word(key_len: u64, val_len: u64) -> u64 {
    RECORD_COPY | key_len << 32 | val_len
}

/// The key's and the value's lengths a record word gives (`None`: no copy).
pub fn record_lens(word: u64) -> Option<(u64, u64)> {
    (word & RECORD_COPY != 0).then_some(((word >> 32) & 0x7FFF_FFFF, word & 0xFFFF_FFFF))
}

/// Record bytes per slot for inline copies of objects of up to `inline_values` bytes (key
/// and value), in whole cache lines; 0 for none.
pub fn record_len_for(inline_values: u64) -> u64 {
    if inline_values == 0 {
        0
    } else {
        round_up(inline_values + RECORD_HEADER, 64)
    }
}

/// Block states. The state word is each mutation's commit point (see docs/design.md).
pub const FREE: u32 = 0x4652_4545; // "FREE"
pub const WRITING: u32 = 0x5752_4954; // "WRIT"
pub const LIVE: u32 = 0x4C49_5645; // "LIVE"

/// Room for a `pthread_mutex_t` (40 bytes with glibc on x86_64 and aarch64).
#[repr(C, align(64))]
pub struct MutexCell(pub UnsafeCell<[u8; 64]>);

impl MutexCell {
    pub fn get(&self) -> *mut libc::pthread_mutex_t {
        self.0.get().cast()
    }
}

/// One process that has the store open (one open handle): a cache line of its own, read by
/// every operation of the process (is the slot still its own?) and written only when it
/// registers or leaves, so its readers' counters live elsewhere ([`ReadLane`]).
#[repr(C, align(64))]
pub struct AttachSlot {
    /// `pid_ns << 32 | pid`, 0 when free: claimed and freed by one compare-and-swap, so the
    /// pid never appears without the pid namespace it belongs to (see `attach.rs`).
    pub owner: AtomicU64,
    /// The process's start time (clock ticks since boot), so a reused pid is not mistaken.
    pub start: AtomicU64,
    /// A token, never used twice, while the owner holds the open file description lock on
    /// byte [`ATTACH_LOCK_BASE`] + slot of the segment file, by which any process, of any pid
    /// namespace, can tell whether the owner still lives; 0 when it does not (then only its
    /// pid tells) and in a free slot.
    pub liveness: AtomicU64,
    pub _reserved: [AtomicU64; 5],
}

/// Byte of the segment file (far beyond its end) whose lock, plus the slot number, the owner
/// of an attach slot holds (`attach.rs`).
pub const ATTACH_LOCK_BASE: u64 = 1 << 62;

impl AttachSlot {
    /// The owner's pid (0: free).
    pub fn pid(&self) -> u32 {
        self.owner.load(std::sync::atomic::Ordering::Acquire) as u32
    }
}

/// One line of read counters, written by the threads of one process that use it.
#[repr(C, align(64))]
pub struct ReadLane {
    /// Gets that found / did not find their key. Shards of the store's totals: they stay
    /// when the slot is freed and are summed over every lane.
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Lock-free reads under way (`optimistic.rs`): while any lane of a live process
    /// counts one, no page of the arena is given back to the system. In `unattached`, set
    /// for good by the first process that found the attach table full, to its pid
    /// namespace (`u64::MAX`: two, or unknown; see `attach::one_namespace`).
    pub reading: AtomicU64,
    /// Gets and `has` calls that had to take the lock after all (a value over the lock-free
    /// limit, a busy writer, a recovery due). A shard, like `hits`.
    pub locked_reads: AtomicU64,
    pub _reserved: [AtomicU64; 4],
}

/// `Header::flags` bit: the arena is committed in huge pages where the kernel agrees
/// (`Options::huge_arena`).
pub const FLAG_HUGE_ARENA: u64 = 1;

/// The first pages of the segment.
#[repr(C)]
pub struct Header {
    // identity and geometry: written once by the creator, before `ready`
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub ready: AtomicU32,
    pub total_len: AtomicU64,
    pub index_off: AtomicU64,
    pub index_slots: AtomicU64,
    pub arena_off: AtomicU64,
    pub arena_len: AtomicU64,
    pub seed: [AtomicU64; 2],
    // options
    pub capacity: AtomicU64,
    pub min_free_bits: AtomicU64,
    pub lock_timeout_ns: AtomicU64,
    pub put_policy: AtomicU32,
    pub mode: AtomicU32,
    pub creator_pid: AtomicU32,
    /// [`Geometry::check_value`] of the geometry: a scribble on it makes the store fail to
    /// open, instead of being read with another index size than the processes that have it
    /// open already (each keeps the geometry it read at open).
    pub geometry_check: AtomicU32,
    pub created_ns: AtomicU64,
    /// The seqlock word: odd while a lock holder changes the structures, bumped to the next
    /// even number when it is done (see `optimistic.rs`). On the read-mostly line readers
    /// need anyway (with the seed).
    pub seqlock: AtomicU64,
    // the lock
    pub mutex: MutexCell,
    pub lock_owner: AtomicU32,
    /// Non-zero while a recovery is due or under way (see `recovery.rs`).
    pub recovering: AtomicU32,
    pub lock_since_ns: AtomicU64,
    /// Bytes of each inline record (0: none). Geometry, written once by the creator; here
    /// because the geometry's own line had no room left.
    pub record_len: AtomicU64,
    /// `pid_ns << 32 | tid` of the thread releasing an orphaned lock word (0: none): one
    /// releaser at a time (see `lock.rs`, `release_orphan`).
    pub orphan_claim: AtomicU64,
    /// Store-wide choices that change no structure, written once by the creator: bit 0,
    /// [`FLAG_HUGE_ARENA`]. Builds before this field wrote zero here and ignore it.
    pub flags: AtomicU64,
    pub _reserved1: [AtomicU64; 3],
    // structure, changed only under the lock
    pub top: AtomicU64,
    pub committed: AtomicU64,
    pub lru_head: AtomicU32,
    pub lru_tail: AtomicU32,
    /// Size in units of the block that ends at `top` (0 when the arena is empty). Derived.
    pub last_units: AtomicU32,
    pub _pad2: AtomicU32,
    pub clock: AtomicU64,
    pub seq: AtomicU64,
    pub index_live: AtomicU64,
    pub index_tombstones: AtomicU64,
    pub objects: AtomicU64,
    pub used_bytes: AtomicU64,
    pub value_bytes: AtomicU64,
    /// The slide journal (compact.rs): a block being moved over the free block before it.
    pub slide: SlideJournal,
    pub free_bitmap: [AtomicU64; BINS / 64],
    pub free_heads: [AtomicU32; BINS],
    // counters (atomic increments; read without the lock; hits and misses are in `attach`)
    pub _reserved3: [AtomicU64; 2],
    pub puts: AtomicU64,
    pub refused_puts: AtomicU64,
    pub removes: AtomicU64,
    pub evictions: AtomicU64,
    pub lock_timeouts: AtomicU64,
    pub recoveries: AtomicU64,
    pub resets: AtomicU64,
    /// Live blocks moved to make room (relocated or slid) instead of evicting.
    pub moves: AtomicU64,
    pub _reserved2: [AtomicU64; 6],
    // open handles, and the read counters of each
    pub attach: [AttachSlot; ATTACH_SLOTS],
    /// The hit, miss and locked-read counters of processes that found the attach table full.
    pub unattached: ReadLane,
    /// The read lanes of the process in `attach[i]`, at `lanes[i]`.
    pub lanes: [[ReadLane; LANES]; ATTACH_SLOTS],
}

impl Header {
    /// Whether the store was made with `Options::huge_arena` where it applies (`flags` bit 0).
    pub fn huge_arena(&self) -> bool {
        self.flags.load(std::sync::atomic::Ordering::Relaxed) & FLAG_HUGE_ARENA != 0
    }
}

/// An intent record for a slide, the one mutation whose copy overwrites its own source.
#[repr(C)]
pub struct SlideJournal {
    /// `SLIDING` while a slide is under way, 0 otherwise.
    pub state: AtomicU32,
    pub _pad: AtomicU32,
    /// The block being moved, in units.
    pub src: AtomicU64,
    /// Where it goes (the free block before it), in units.
    pub dst: AtomicU64,
    /// Bytes to copy: the whole block, header included.
    pub len: AtomicU64,
    /// Bytes copied so far (a multiple of the chunk size `(src - dst) * UNIT`).
    pub done: AtomicU64,
}

pub const SLIDING: u32 = 0x534C_4944; // "SLID"

/// The header of every arena block, free or live. Key bytes follow it, then value bytes.
#[repr(C)]
pub struct Block {
    /// Size of the whole block in units. Sizes chain the blocks from arena offset 0 to `top`.
    pub size: AtomicU32,
    /// `FREE`, `WRITING` or `LIVE`.
    pub state: AtomicU32,
    /// Size of the physically previous block in units (0 for the first). Derived data.
    pub prev_size: AtomicU32,
    pub key_len: AtomicU32,
    pub val_len: AtomicU64,
    /// Put sequence number: of two live blocks with one key, the higher one is the newer.
    pub seq: AtomicU64,
    /// Last access (store clock), so that recovery can rebuild the LRU order.
    pub stamp: AtomicU64,
    /// LRU links for a live block, free-list links for a free one.
    pub prev: AtomicU32,
    pub next: AtomicU32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, ready) == 12);
    assert!(offset_of!(Header, mutex) == 128);
    assert!(offset_of!(Header, top) == 256);
    assert!(offset_of!(Header, attach) == 1344);
    assert!(offset_of!(Header, unattached) == 5440);
    assert!(offset_of!(Header, lanes) == 5504);
    assert!(size_of::<ReadLane>() == 64 && size_of::<AttachSlot>() == 64);
    assert!(size_of::<Header>() as u64 <= HEADER_SIZE);
    assert!(size_of::<libc::pthread_mutex_t>() <= 64);
    assert!(size_of::<Block>() == 48);
    assert!(BLOCK_HEADER.is_multiple_of(UNIT));
};

/// Where the parts of a segment lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub total_len: u64,
    pub index_off: u64,
    pub index_slots: u64,
    /// Bytes of each inline record (0: the store keeps none). Records follow the index.
    pub record_len: u64,
    pub arena_off: u64,
    pub arena_len: u64,
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// Where the index (and the records) end: after `slots` index slots from `index_off` and a
/// record of `record_len` bytes per slot, on a page boundary. The arena starts there or
/// later (see [`arena_start`]).
fn index_end(index_off: u64, slots: u64, record_len: u64) -> Option<u64> {
    let per_slot = record_len.checked_add(8)?;
    let end = slots.checked_mul(per_slot)?.checked_add(index_off)?;
    end.checked_next_multiple_of(PAGE)
}

/// Where the arena starts when the index ends at `end`, on a machine whose huge pages are
/// `huge` bytes: at the next multiple of `huge` if that at most doubles the bytes before the
/// arena, so that header, index and records lie on whole huge pages (one TLB entry each,
/// where the index alone would be hundreds of small pages, and every look-up reads a random
/// slot); at `end` otherwise (a small store pays no padding larger than itself).
fn arena_start(end: u64, huge: u64) -> Option<u64> {
    if huge <= PAGE || !huge.is_power_of_two() {
        return Some(end);
    }
    let padded = end.checked_next_multiple_of(huge)?;
    Some(if padded - end <= end { padded } else { end })
}

/// Whether `arena_off` is a start [`arena_start`] can give for an index ending at `end`,
/// whatever the creating machine's huge page size: on a page, no earlier than `end`, and at
/// most twice as far from the segment's start.
fn arena_start_ok(arena_off: u64, end: u64) -> bool {
    arena_off.is_multiple_of(PAGE) && arena_off >= end && arena_off - end <= end
}

impl Geometry {
    /// The geometry for an arena of `capacity` bytes, room for `max_objects` entries and
    /// inline records of `record_len` bytes (0, or a multiple of 64 up to [`MAX_RECORD`]),
    /// on a machine whose huge pages are `huge_page` bytes (the arena may start on one).
    pub fn new(
        capacity: u64,
        max_objects: u64,
        record_len: u64,
        huge_page: u64,
    ) -> Option<Geometry> {
        if !record_len_ok(record_len) {
            return None;
        }
        let arena_len = round_up(capacity, PAGE);
        if arena_len > MAX_ARENA {
            return None;
        }
        // Live entries stay at or under 3/4 of the slots. The table is sized for what was
        // asked, not rounded up to a power of two (up to twice the bytes, and the index is
        // read by every look-up: it should stay in cache), in whole cache lines of slots.
        let index_slots = round_up(
            max_objects.max(48).checked_mul(4)?.div_ceil(3),
            SLOTS_PER_LINE,
        );
        let index_off = HEADER_SIZE;
        let arena_off = arena_start(index_end(index_off, index_slots, record_len)?, huge_page)?;
        Some(Geometry {
            total_len: arena_off.checked_add(arena_len)?,
            index_off,
            index_slots,
            record_len,
            arena_off,
            arena_len,
        })
    }

    /// Reads and checks the geometry a header claims, against the segment's real size.
    pub fn from_header(h: &Header, file_len: u64) -> Result<Geometry, Corruption> {
        use std::sync::atomic::Ordering::Relaxed;
        let g = Geometry {
            total_len: h.total_len.load(Relaxed),
            index_off: h.index_off.load(Relaxed),
            index_slots: h.index_slots.load(Relaxed),
            record_len: h.record_len.load(Relaxed),
            arena_off: h.arena_off.load(Relaxed),
            arena_len: h.arena_len.load(Relaxed),
        };
        if g.total_len != file_len {
            return Err(corrupt!(
                "header says {} bytes but the segment has {file_len}",
                g.total_len
            ));
        }
        let ok = g.index_off == HEADER_SIZE
            && g.index_slots >= 64
            && g.index_slots.is_multiple_of(SLOTS_PER_LINE)
            && record_len_ok(g.record_len)
            && index_end(g.index_off, g.index_slots, g.record_len)
                .is_some_and(|end| arena_start_ok(g.arena_off, end))
            && g.arena_len.is_multiple_of(PAGE)
            && g.arena_len <= MAX_ARENA
            && g.arena_off.checked_add(g.arena_len) == Some(g.total_len);
        if !ok {
            return Err(corrupt!("header geometry is inconsistent: {g:?}"));
        }
        if h.geometry_check.load(Relaxed) != g.check_value() {
            return Err(corrupt!(
                "the header's geometry was overwritten (its check value does not match): the \
                 index cannot be read"
            ));
        }
        Ok(g)
    }

    /// A 32-bit digest of the geometry (SipHash-1-3 under a fixed key), kept in the header:
    /// every process must read the index with the same size, so a change to the geometry
    /// after creation is corruption, found at open. (The hash seed is read from the header
    /// on every look-up, so all processes always use the same one; a scribbled seed shows
    /// as index entries whose tags do not match, which `check` finds and `repair` mends.)
    pub fn check_value(&self) -> u32 {
        use std::hash::Hasher;
        let mut s = siphasher::sip::SipHasher13::new_with_keys(MAGIC, u64::from(LAYOUT_VERSION));
        for w in [
            self.total_len,
            self.index_off,
            self.index_slots,
            self.record_len,
            self.arena_off,
            self.arena_len,
        ] {
            s.write_u64(w);
        }
        s.finish() as u32
    }

    /// Segment offset of the inline records (meaningful when `record_len` > 0): right after
    /// the index, on a cache line (the index is whole lines of slots).
    pub fn records_off(&self) -> u64 {
        self.index_off + self.index_slots * 8
    }

    /// The largest object (key and value) the records hold (0: no records): a little more
    /// than `Options::inline_values` asked for, as records are whole cache lines.
    pub fn inline_values(&self) -> u64 {
        self.record_len.saturating_sub(RECORD_HEADER)
    }

    /// Live entries the index accepts before rotation.
    pub fn max_live(&self) -> u64 {
        self.index_slots / 4 * 3
    }
}

/// Whether `record_len` is a record size a store may have.
fn record_len_ok(record_len: u64) -> bool {
    record_len == 0 || (record_len.is_multiple_of(64) && record_len <= MAX_RECORD)
}

/// Arena byte offset of the key of the block at `unit` (the value follows the key).
pub fn data_off(unit: u32) -> u64 {
    unit as u64 * UNIT + BLOCK_HEADER
}

/// Units of a block holding this key and value.
pub fn block_units(key_len: usize, val_len: usize) -> u64 {
    let bytes = BLOCK_HEADER + key_len as u64 + val_len as u64;
    (bytes.div_ceil(UNIT)).max(MIN_BLOCK_UNITS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_round_trips_through_checks() {
        let g = Geometry::new(1 << 20, 1000, 0, PAGE).unwrap();
        assert_eq!(g.arena_len, 1 << 20);
        assert_eq!(
            g.index_slots, 1336,
            "1000 * 4 / 3, in whole lines of 8 slots"
        );
        assert!(g.arena_off >= g.index_off + g.index_slots * 8);
        assert_eq!(g.total_len, g.arena_off + g.arena_len);
        assert_eq!(g.max_live(), g.index_slots / 4 * 3);
        assert!(g.max_live() >= 1000);
    }

    #[test]
    fn the_index_holds_at_least_what_was_asked_for() {
        for n in [
            1,
            47,
            48,
            49,
            1000,
            100_000,
            125_064,
            1 << 24,
            u32::MAX as u64,
        ] {
            let g = Geometry::new(1 << 20, n, 0, PAGE).unwrap();
            assert!(g.max_live() >= n.max(48), "{n}: {g:?}");
            assert!(
                g.max_live() < n.max(48) + 8,
                "{n}: no more than a line to spare"
            );
            assert!(g.index_slots.is_multiple_of(SLOTS_PER_LINE));
        }
    }

    #[test]
    fn records_lie_between_index_and_arena() {
        let g = Geometry::new(1 << 20, 1000, 128, PAGE).unwrap();
        assert_eq!(g.records_off(), g.index_off + g.index_slots * 8);
        assert!(g.records_off().is_multiple_of(64));
        assert_eq!(
            g.arena_off,
            (g.records_off() + g.index_slots * 128).next_multiple_of(PAGE)
        );
        for bad in [1, 63, 65, MAX_RECORD + 64] {
            assert!(Geometry::new(1 << 20, 1000, bad, PAGE).is_none(), "{bad}");
        }
        assert_eq!(
            (
                record_len_for(0),
                record_len_for(1),
                record_len_for(56),
                record_len_for(57)
            ),
            (0, 64, 64, 128)
        );
        assert_eq!(record_lens(record_word(10, 64)), Some((10, 64)));
        assert_eq!(record_lens(0), None);
    }

    #[test]
    fn the_arena_starts_on_a_huge_page_when_that_at_most_doubles_what_precedes_it() {
        const HUGE: u64 = 2 << 20;
        let at = |objects: u64, record_len: u64, huge: u64| {
            let g = Geometry::new(64 << 20, objects, record_len, huge).unwrap();
            let end = index_end(g.index_off, g.index_slots, g.record_len).unwrap();
            assert!(arena_start_ok(g.arena_off, end), "{g:?}");
            assert_eq!(g.total_len, g.arena_off + g.arena_len);
            (g.arena_off, end)
        };
        // 1,000 objects: 51 KiB before the arena, which a huge page would multiply by 40.
        assert_eq!(at(1000, 0, HUGE), at(1000, 0, PAGE));
        assert_eq!(at(1000, 0, HUGE).0, at(1000, 0, HUGE).1);
        // 100,000 objects: 1.1 MB of header and index, on one huge page.
        assert_eq!(at(100_000, 0, HUGE).0, HUGE);
        // 200,000: 2.2 MB, on two.
        assert_eq!(at(200_000, 0, HUGE).0, 2 * HUGE);
        // With records: 100,000 objects' records of 128 bytes and index, 18.2 MB, on 9.
        assert_eq!(at(100_000, 128, HUGE).0, 9 * HUGE);
        // Just under half a huge page before the arena: no padding.
        let (off, end) = at(((HUGE / 2 - HEADER_SIZE - PAGE) / 8) * 3 / 4, 0, HUGE);
        assert!(end < HUGE / 2 && off == end, "{off} {end}");
        // Laid out for no huge pages (what `os::huge_page_for_layout` gives where the kernel
        // has none), or with odd figures: the arena follows the index.
        for huge in [0, PAGE, 3 << 20] {
            assert_eq!(at(100_000, 0, huge).0, at(100_000, 0, huge).1);
        }
    }

    #[test]
    fn a_header_may_place_the_arena_only_where_some_machine_would() {
        let end = 300 * PAGE;
        assert!(arena_start_ok(end, end));
        assert!(arena_start_ok(2 * end, end));
        assert!(arena_start_ok(end + PAGE, end));
        assert!(!arena_start_ok(end - PAGE, end), "before the index ends");
        assert!(
            !arena_start_ok(2 * end + PAGE, end),
            "more padding than store"
        );
        assert!(!arena_start_ok(end + 1, end), "off a page");
    }

    #[test]
    fn too_large_arena_is_refused() {
        assert!(Geometry::new(MAX_ARENA + PAGE, 10, 0, PAGE).is_none());
    }

    #[test]
    fn block_units_cover_header_key_and_value() {
        assert_eq!(block_units(0, 0), MIN_BLOCK_UNITS as u64);
        assert_eq!(block_units(10, 64), (48 + 10 + 64u64).div_ceil(16));
    }

    #[test]
    fn magic_is_not_text() {
        let b = MAGIC.to_le_bytes();
        assert_eq!(b[0], 0x89);
        assert!(b.contains(&b'\r') && b.contains(&b'\n'));
    }
}

#[cfg(test)]
mod offsets {
    use super::*;
    use std::mem::offset_of;

    /// The offsets docs/design.md gives for the header.
    #[test]
    fn header_offsets_match_the_design_document() {
        let documented = [
            ("magic", offset_of!(Header, magic), 0),
            ("version", offset_of!(Header, version), 8),
            ("ready", offset_of!(Header, ready), 12),
            ("total_len", offset_of!(Header, total_len), 16),
            ("seed", offset_of!(Header, seed), 56),
            ("capacity", offset_of!(Header, capacity), 72),
            ("mutex", offset_of!(Header, mutex), 128),
            ("lock_owner", offset_of!(Header, lock_owner), 192),
            ("recovering", offset_of!(Header, recovering), 196),
            ("record_len", offset_of!(Header, record_len), 208),
            ("orphan_claim", offset_of!(Header, orphan_claim), 216),
            ("flags", offset_of!(Header, flags), 224),
            ("top", offset_of!(Header, top), 256),
            ("lru_head", offset_of!(Header, lru_head), 272),
            ("clock", offset_of!(Header, clock), 288),
            ("objects", offset_of!(Header, objects), 320),
            ("slide", offset_of!(Header, slide), 344),
            ("free_bitmap", offset_of!(Header, free_bitmap), 384),
            ("free_heads", offset_of!(Header, free_heads), 408),
            ("created_ns", offset_of!(Header, created_ns), 112),
            ("seqlock", offset_of!(Header, seqlock), 120),
            ("puts", offset_of!(Header, puts), 1192),
            ("attach", offset_of!(Header, attach), 1344),
            ("unattached", offset_of!(Header, unattached), 5440),
            ("lanes", offset_of!(Header, lanes), 5504),
        ];
        for (field, actual, doc) in documented {
            assert_eq!(actual, doc, "header field {field}");
        }
        assert_eq!(std::mem::size_of::<Header>(), 38272);
        let lane = [
            ("hits", offset_of!(ReadLane, hits), 0),
            ("misses", offset_of!(ReadLane, misses), 8),
            ("reading", offset_of!(ReadLane, reading), 16),
            ("locked_reads", offset_of!(ReadLane, locked_reads), 24),
        ];
        for (field, actual, doc) in lane {
            assert_eq!(actual, doc, "read lane field {field}");
        }
        let slot = [
            ("owner", offset_of!(AttachSlot, owner), 0),
            ("start", offset_of!(AttachSlot, start), 8),
        ];
        for (field, actual, doc) in slot {
            assert_eq!(actual, doc, "attach slot field {field}");
        }
        assert_eq!(std::mem::size_of::<AttachSlot>(), 64);
        let block = [
            ("size", offset_of!(Block, size), 0),
            ("state", offset_of!(Block, state), 4),
            ("prev_size", offset_of!(Block, prev_size), 8),
            ("key_len", offset_of!(Block, key_len), 12),
            ("val_len", offset_of!(Block, val_len), 16),
            ("seq", offset_of!(Block, seq), 24),
            ("stamp", offset_of!(Block, stamp), 32),
            ("prev", offset_of!(Block, prev), 40),
            ("next", offset_of!(Block, next), 44),
        ];
        for (field, actual, doc) in block {
            assert_eq!(actual, doc, "block field {field}");
        }
    }
}
