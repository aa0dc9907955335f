//! The one place that turns offsets inside the segment into references.
//!
//! Every offset and length that comes from the segment's bytes is checked here against the
//! geometry before it is used, so a scribbled segment yields a [`Corruption`], never an access
//! outside the mapping.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::error::{Corruption, corrupt};
use crate::layout::{BLOCK_HEADER, Block, Geometry, HEADER_SIZE, Header, NIL, RECORD_HEADER, UNIT};
use crate::os::{Map, huge_page};

pub struct Mapping {
    map: Map,
    fd: OwnedFd,
    geo: Geometry,
    /// When (`os::monotonic_ns`) this mapping may next ask the kernel to put a piece of the
    /// arena on a huge page: 0 at first, a second after a refusal (a refusal can cost a
    /// compaction attempt, and the next commit comes a few MiB later), never (`u64::MAX`)
    /// when the mapping is not aligned to huge pages.
    huge_arena_after: AtomicU64,
}

impl Mapping {
    /// Wraps a mapping of a whole segment whose geometry has been checked.
    pub fn new(map: Map, fd: OwnedFd, geo: Geometry) -> Mapping {
        assert!(map.len() as u64 >= geo.total_len && geo.total_len >= HEADER_SIZE);
        Mapping {
            map,
            fd,
            geo,
            huge_arena_after: AtomicU64::new(0),
        }
    }

    pub fn geo(&self) -> &Geometry {
        &self.geo
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Reads a header from a mapping whose geometry is not known yet.
    pub fn header_of(map: &Map) -> Option<&Header> {
        if (map.len() as u64) < HEADER_SIZE {
            return None;
        }
        // SAFETY: the mapping is page aligned and at least HEADER_SIZE >= size_of::<Header>()
        // bytes long; Header consists of atomics and a mutex cell, valid for any bit pattern,
        // and lives as long as `map`.
        Some(unsafe { &*map.ptr().cast::<Header>() })
    }

    pub fn header(&self) -> &Header {
        Self::header_of(&self.map).expect("mapping is at least one header long")
    }

    /// Index slot `i` (callers stay below `index_slots`; anything else is wrapped into the
    /// table, so it can never leave the index).
    pub fn slot(&self, i: u64) -> &AtomicU64 {
        let off = self.slot_off(i);
        // SAFETY: `slot_off` wraps i below index_slots, and the geometry check put
        // index_off + 8 * index_slots inside the mapping; the offset is 8-aligned (page
        // aligned base, 8-byte slots).
        unsafe { &*self.map.ptr().add(off as usize).cast::<AtomicU64>() }
    }

    /// The block header at `unit` (units of 16 bytes from the arena start).
    pub fn block(&self, unit: u32) -> Result<&Block, Corruption> {
        if unit == NIL || unit as u64 * UNIT + BLOCK_HEADER > self.geo.arena_len {
            return Err(corrupt!("block offset {unit} is outside the arena"));
        }
        let off = self.geo.arena_off + unit as u64 * UNIT;
        // SAFETY: the block header lies inside the arena (checked above), which lies inside the
        // mapping; the offset is 16-aligned; Block is atomics only, valid for any bit pattern.
        Ok(unsafe { &*self.map.ptr().add(off as usize).cast::<Block>() })
    }

    /// The word at the start of index slot `i`'s inline record (see `layout::record_word`).
    /// Only for a store with records (`record_len` > 0: panics otherwise, a bug of the
    /// caller); `i` is wrapped into the table as [`slot`](Mapping::slot) does.
    pub fn record_word(&self, i: u64) -> &AtomicU64 {
        assert!(
            self.geo.record_len > 0,
            "a record word of a store without records"
        );
        let off = self.record_off(i);
        // SAFETY: `record_off` wraps i below index_slots, and the geometry check put every
        // record (records_off + record_len * index_slots) inside the mapping; records are
        // whole cache lines from a 64-aligned offset, so the word is 8-aligned.
        unsafe { &*self.map.ptr().add(off as usize).cast::<AtomicU64>() }
    }

    /// Mapping offset of index slot `i`'s inline record, wrapped into the table.
    fn record_off(&self, i: u64) -> u64 {
        self.geo.records_off() + self.wrap(i) * self.geo.record_len
    }

    /// Slot number `i` wrapped into the table, so that no slot or record offset can leave it.
    fn wrap(&self, i: u64) -> u64 {
        let n = self.geo.index_slots;
        if i < n { i } else { i % n }
    }

    /// Mapping position of `len` bytes at `off` of index slot `i`'s record, after the
    /// record's word; an error if they would reach past the record.
    fn record_range(&self, i: u64, off: u64, len: usize) -> Result<usize, Corruption> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.geo.record_len.saturating_sub(RECORD_HEADER) => {
                Ok((self.record_off(i) + RECORD_HEADER + off) as usize)
            }
            _ => Err(corrupt!(
                "{len} bytes at offset {off} of inline record {i} reach past the record"
            )),
        }
    }

    /// Copies `data` into index slot `i`'s record at `off` (after the record's word).
    pub fn write_record(&self, i: u64, off: u64, data: &[u8]) -> Result<(), Corruption> {
        let at = self.record_range(i, off, data.len())?;
        // SAFETY: the range lies inside the record (checked), so inside the mapping; `data`
        // is a valid slice (private memory, or arena bytes a lock holder borrowed, as
        // `index::fill_record` passes), and `ptr::copy` allows the two to overlap. Only lock
        // holders write records.
        unsafe { std::ptr::copy(data.as_ptr(), self.map.ptr().add(at), data.len()) };
        Ok(())
    }

    /// Starts loading the first `len` bytes of index slot `i`'s record (a hint, as
    /// [`prefetch`](Mapping::prefetch)).
    pub fn prefetch_record(&self, i: u64, len: u64) {
        let start = self.record_off(i);
        self.prefetch_lines(start, start + len.min(self.geo.record_len));
    }

    /// [`copy_out_racy`](Mapping::copy_out_racy) for `len` bytes at `off` of index slot
    /// `i`'s record (after its word).
    pub fn copy_record_racy(
        &self,
        i: u64,
        off: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Corruption> {
        let at = self.record_range(i, off, len)?;
        // SAFETY: `record_range` checked `len` bytes from `at` inside the mapping.
        unsafe { self.copy_out_at(at, len, out) };
        Ok(())
    }

    /// [`equals_racy`](Mapping::equals_racy) for bytes at `off` of index slot `i`'s record.
    pub fn record_equals_racy(&self, i: u64, off: u64, want: &[u8]) -> Result<bool, Corruption> {
        let at = self.record_range(i, off, want.len())?;
        // SAFETY: `record_range` checked `want.len()` bytes from `at` inside the mapping.
        Ok(unsafe { self.equals_at(at, want) })
    }

    fn arena_range(&self, off: u64, len: usize) -> Result<usize, Corruption> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.geo.arena_len => Ok((self.geo.arena_off + off) as usize),
            _ => Err(corrupt!(
                "{len} bytes at arena offset {off} reach past the arena"
            )),
        }
    }

    /// Copies `data` into the arena at byte offset `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), Corruption> {
        let at = self.arena_range(off, data.len())?;
        // SAFETY: the range lies inside the mapping (checked); `data` is a Rust slice, which
        // cannot overlap the shared mapping's bytes being written under the store lock.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.ptr().add(at), data.len()) };
        Ok(())
    }

    /// Copies `len` arena bytes from byte offset `from` to byte offset `to` (the ranges may
    /// overlap).
    pub fn copy_within(&self, from: u64, to: u64, len: usize) -> Result<(), Corruption> {
        let src = self.arena_range(from, len)?;
        let dst = self.arena_range(to, len)?;
        // SAFETY: both ranges lie inside the mapping (checked); `ptr::copy` allows overlap.
        unsafe { std::ptr::copy(self.map.ptr().add(src), self.map.ptr().add(dst), len) };
        Ok(())
    }

    /// Maps the arena pages of `[off, off + len)` (page-aligned, reserved already) into
    /// this process's page tables, so that the writes that follow take no page faults.
    pub fn populate(&self, off: u64, len: u64) {
        let (Ok(at), Ok(len)) = (
            usize::try_from(self.geo.arena_off + off),
            usize::try_from(len),
        ) else {
            return;
        };
        let _ = self.map.populate_write(at, len);
    }

    /// Reserves the arena's bytes `[off, off + huge)` (a huge page of the file, of the
    /// kernel's size `huge`: `arena_off + off` is a multiple of it) as one huge page: reserves its first small page,
    /// then has the kernel collapse the range (`MADV_COLLAPSE` fills the rest with zeroes, on
    /// a huge page it takes now; on a range with no page reserved it refuses). Every process
    /// mapping the file at an aligned address then reaches the whole range through one TLB
    /// entry instead of a page-table walk per 4 KiB (`Options::huge_arena`). `Ok(false)` if
    /// the kernel would not (no huge page free, huge pages disabled for this process,
    /// /dev/shm too full for the rest of the page: the kernel refuses rather than over-fill
    /// it) or was refused less than a second ago, and always for a mapping not aligned to
    /// huge pages: the caller reserves small pages instead. An error only if the first page
    /// could not be reserved (/dev/shm or memory full).
    pub fn reserve_huge(&self, off: u64, huge: u64) -> std::io::Result<bool> {
        let now = crate::os::monotonic_ns();
        if now < self.huge_arena_after.load(Relaxed) {
            return Ok(false);
        }
        let at = self.geo.arena_off + off;
        let (Ok(at_usize), Ok(huge)) = (usize::try_from(at), usize::try_from(huge)) else {
            return Ok(false);
        };
        if !(self.map.ptr() as usize).is_multiple_of(huge) {
            // Its huge pages could never be mapped whole here: do not ask again.
            self.huge_arena_after.store(u64::MAX, Relaxed);
            return Ok(false);
        }
        crate::os::fallocate(&self.fd, at, crate::layout::PAGE)?;
        let collapsed = self.map.collapse(at_usize, huge).is_ok();
        if !collapsed {
            self.huge_arena_after.store(now + 1_000_000_000, Relaxed);
        }
        Ok(collapsed)
    }

    /// Puts everything before the arena (header, index, inline records: reserved at
    /// creation, never given back) on huge pages where it spans whole ones, then maps it
    /// into this process's page tables, so that its first writes there take no page faults.
    /// Huge pages matter for the random index and record accesses of every operation: W1's
    /// 21 MB of records are 5,000 small pages, far more than the CPU's TLB holds, and one
    /// page-table walk per record access is what they cost otherwise. Hints: errors are
    /// ignored (small pages, or faults on first touch, are the fallback).
    pub fn populate_fixed(&self) {
        if let Ok(len) = usize::try_from(self.geo.arena_off) {
            let whole = len / huge_page() * huge_page();
            if whole > 0 {
                let _ = self.map.collapse(0, whole);
            }
            let _ = self.map.populate_write(0, len);
        }
    }

    /// Asks the CPU to start loading the cache lines of arena bytes `[off, off + len)`, so
    /// that their misses overlap instead of following one another. A hint only: it reads
    /// nothing into the program and cannot fault, whatever the range holds.
    pub fn prefetch(&self, off: u64, len: u64) {
        let end = off.saturating_add(len).min(self.geo.arena_len);
        let start = off.min(end);
        self.prefetch_lines(self.geo.arena_off + start, self.geo.arena_off + end);
    }

    /// Asks the CPU to start loading index slot `i`'s cache line (wrapped into the table as
    /// [`slot`](Mapping::slot) does), so that its miss overlaps with what precedes the probe
    /// (taking the lock, the seqlock checks). A hint, as [`prefetch`](Mapping::prefetch).
    pub fn prefetch_slot(&self, i: u64) {
        self.prefetch_at(self.slot_off(i));
    }

    /// The mapping offset of index slot `i`, wrapped into the table.
    fn slot_off(&self, i: u64) -> u64 {
        self.geo.index_off + self.wrap(i) * 8
    }

    /// Prefetches the cache lines of mapping bytes `[start, end)` (`end` within the mapping).
    fn prefetch_lines(&self, start: u64, end: u64) {
        let mut at = start / 64 * 64;
        while at < end {
            self.prefetch_at(at);
            at += 64;
        }
    }

    /// The prefetch of the cache line holding byte `at` of the mapping (`at` < its length).
    fn prefetch_at(&self, at: u64) {
        debug_assert!(at < self.geo.total_len);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass an offset below the segment's length (an arena offset below
        // arena_len, a slot below index_slots, or a byte of a record, all wrapped or clamped
        // by the callers), so the address lies inside the mapping; a
        // prefetch neither reads into the program nor faults, whatever the page.
        unsafe {
            let p = self.map.ptr().add(at as usize);
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.cast_const().cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Appends `len` arena bytes at byte offset `off` to `out`, without the lock: the bytes
    /// may be changing under a writer meanwhile, and are garbage unless the caller's seqlock
    /// check passes afterwards (see `optimistic.rs` and docs/design.md, "Lock-free reads").
    /// The caller must also know that the range's pages are backed (a read of a page given
    /// back to the system would allocate it again, or raise SIGBUS on a full /dev/shm).
    pub fn copy_out_racy(&self, off: u64, len: usize, out: &mut Vec<u8>) -> Result<(), Corruption> {
        let at = self.arena_range(off, len)?;
        // SAFETY: `arena_range` checked `len` bytes from `at` inside the mapping.
        unsafe { self.copy_out_at(at, len, out) };
        Ok(())
    }

    /// Appends the `len` bytes at mapping position `at` to `out`.
    ///
    /// # Safety
    /// `at..at + len` lies inside the mapping.
    unsafe fn copy_out_at(&self, at: usize, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        // SAFETY: the source range lies inside the mapping (the caller's contract), and the
        // destination is `out`'s spare capacity (reserved above), private to this thread; no
        // reference to the shared bytes is made. A writer in another process (or thread) may
        // store to the source meanwhile: the copy may then be torn, which the caller detects
        // and discards before using a byte of it.
        unsafe {
            let dst = out.as_mut_ptr().add(out.len());
            std::ptr::copy_nonoverlapping(self.map.ptr().add(at), dst, len);
            out.set_len(out.len() + len);
        }
    }

    /// Whether the `want.len()` arena bytes at byte offset `off` equal `want`, read without
    /// the lock (the answer means something only if the caller's seqlock check passes).
    pub fn equals_racy(&self, off: u64, want: &[u8]) -> Result<bool, Corruption> {
        let at = self.arena_range(off, want.len())?;
        // SAFETY: `arena_range` checked `want.len()` bytes from `at` inside the mapping.
        Ok(unsafe { self.equals_at(at, want) })
    }

    /// Whether the `want.len()` bytes at mapping position `at` equal `want`, read as
    /// [`copy_out_at`](Mapping::copy_out_at) reads.
    ///
    /// # Safety
    /// `at..at + want.len()` lies inside the mapping.
    unsafe fn equals_at(&self, at: usize, want: &[u8]) -> bool {
        const CHUNK: usize = 64;
        let mut buf = [0u8; CHUNK];
        for (i, chunk) in want.chunks(CHUNK).enumerate() {
            let piece = &mut buf[..chunk.len()];
            // SAFETY: in bounds (the caller's contract: `want.len()` bytes from `at`); copied
            // through raw pointers into a local buffer, as in `copy_out_at`.
            unsafe {
                let src = self.map.ptr().add(at + i * CHUNK);
                std::ptr::copy_nonoverlapping(src, piece.as_mut_ptr(), chunk.len());
            }
            if piece != chunk {
                return false;
            }
        }
        true
    }

    /// Borrows `len` arena bytes at byte offset `off`.
    ///
    /// # Safety
    /// The caller holds the store lock for as long as the slice lives, so no process of the
    /// store's protocol writes these bytes meanwhile.
    pub unsafe fn slice(&self, off: u64, len: usize) -> Result<&[u8], Corruption> {
        let at = self.arena_range(off, len)?;
        // SAFETY: in bounds (checked); writers are excluded by the caller's lock.
        Ok(unsafe { std::slice::from_raw_parts(self.map.ptr().add(at), len) })
    }
}
