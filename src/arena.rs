//! The arena allocator: blocks chained by their sizes from offset 0 to `top`, segregated
//! free lists, merging of free neighbours, and a wilderness above `top` that is committed
//! (`fallocate`) as the store grows.
//!
//! Crash safety (see docs/design.md): the chain of sizes is the truth, and every change to it
//! is one 4- or 8-byte store made after the bytes it exposes were written:
//! - split: the remainder's header is written inside the block, then the block's size shrinks;
//! - merge: the left block's size grows over its right neighbour;
//! - growth: the new block's header is written above `top`, then `top` moves up;
//! - shrink: a free last block is dropped by moving `top` down.
//!
//! Free lists, `prev_size` and the bitmap are derived data that recovery rebuilds.

use std::sync::atomic::Ordering::{Relaxed, Release};

use crate::error::{Corruption, corrupt};
use crate::layout::{BLOCK_HEADER, Block, FREE, MIN_BLOCK_UNITS, NIL, PAGE, UNIT, WRITING};
use crate::lock::Locked;
use crate::mapping::Mapping;
use crate::os;

/// The free list for blocks of `units`: exact lists below 64 units, then four lists per
/// power of two.
pub fn bin_of(units: u32) -> usize {
    if units < 64 {
        return units as usize;
    }
    let e = 31 - units.leading_zeros(); // 6..=31
    let sub = (units >> (e - 2)) & 3;
    64 + (e as usize - 6) * 4 + sub as usize
}

fn set_bit(m: &Mapping, bin: usize, on: bool) {
    let word = &m.header().free_bitmap[bin / 64];
    let bit = 1u64 << (bin % 64);
    if on {
        word.fetch_or(bit, Relaxed);
    } else {
        word.fetch_and(!bit, Relaxed);
    }
}

/// Empties every free list (recovery rebuilds them).
pub fn clear_free_lists(m: &Mapping) {
    let h = m.header();
    for w in h.free_bitmap.iter() {
        w.store(0, Relaxed);
    }
    for head in h.free_heads.iter() {
        head.store(NIL, Relaxed);
    }
}

/// Puts a free block on the head of its list.
pub fn push_free(m: &Mapping, unit: u32) -> Result<(), Corruption> {
    let b = m.block(unit)?;
    let bin = bin_of(b.size.load(Relaxed));
    let head = &m.header().free_heads[bin];
    let old = head.load(Relaxed);
    b.prev.store(NIL, Relaxed);
    b.next.store(old, Relaxed);
    if old != NIL {
        m.block(old)?.prev.store(unit, Relaxed);
    }
    head.store(unit, Relaxed);
    fault!();
    set_bit(m, bin, true);
    Ok(())
}

/// Takes a free block off its list.
pub fn unlink_free(m: &Mapping, unit: u32) -> Result<(), Corruption> {
    let b = m.block(unit)?;
    let bin = bin_of(b.size.load(Relaxed));
    let (prev, next) = (b.prev.load(Relaxed), b.next.load(Relaxed));
    if prev == NIL {
        let head = &m.header().free_heads[bin];
        if head.load(Relaxed) != unit {
            return Err(corrupt!(
                "free block {unit} has no predecessor but does not head its list"
            ));
        }
        head.store(next, Relaxed);
        fault!();
        if next == NIL {
            set_bit(m, bin, false);
        }
    } else {
        m.block(prev)?.next.store(next, Relaxed);
        fault!();
    }
    if next != NIL {
        m.block(next)?.prev.store(prev, Relaxed);
    }
    Ok(())
}

fn top_units(m: &Mapping) -> u64 {
    m.header().top.load(Relaxed) / UNIT
}

/// The block physically after `unit`, if it is below `top`.
fn next_phys(m: &Mapping, unit: u32, b: &Block) -> Option<u32> {
    let n = unit as u64 + b.size.load(Relaxed) as u64;
    (n < top_units(m)).then_some(n as u32)
}

/// How many blocks to look at in the first list before going to a larger one.
const FIRST_FIT_SCAN: usize = 16;

/// A stretch of free space: a free block, or the wilderness above `top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Block(u32),
    Wilderness,
}

/// Allocates a block of exactly `units` (the caller writes it and makes it live).
/// `Ok(None)` means no room: nothing free is large enough and the wilderness is too small
/// (or /dev/shm is full).
pub fn alloc(m: &Mapping, units: u32) -> Result<Option<u32>, Corruption> {
    alloc_avoiding(m, units, None)
}

/// [`alloc`], but never from the region `avoid`.
pub fn alloc_avoiding(
    m: &Mapping,
    units: u32,
    avoid: Option<Region>,
) -> Result<Option<u32>, Corruption> {
    let skip = |unit| avoid == Some(Region::Block(unit));
    let bin = bin_of(units);
    // First fit in the list that may hold blocks just large enough.
    let mut cur = m.header().free_heads[bin].load(Relaxed);
    for _ in 0..FIRST_FIT_SCAN {
        if cur == NIL {
            break;
        }
        let b = m.block(cur)?;
        if b.size.load(Relaxed) >= units && !skip(cur) {
            return take(m, cur, units);
        }
        cur = b.next.load(Relaxed);
    }
    // Any block of a larger list fits; the smallest such list first.
    let mut from = bin;
    while let Some(b) = first_bin_above(m, from) {
        let mut unit = m.header().free_heads[b].load(Relaxed);
        if skip(unit) {
            unit = m.block(unit)?.next.load(Relaxed);
        }
        if unit != NIL {
            return take(m, unit, units);
        }
        from = b;
    }
    if avoid == Some(Region::Wilderness) {
        return Ok(None);
    }
    grow(m, units)
}

/// The first non-empty list above `bin`.
fn first_bin_above(m: &Mapping, bin: usize) -> Option<usize> {
    let start = bin + 1;
    let words = m.header().free_bitmap.iter().enumerate().skip(start / 64);
    for (w, word) in words {
        let mut bits = word.load(Relaxed);
        if w == start / 64 {
            bits &= u64::MAX.checked_shl((start % 64) as u32).unwrap_or(0);
        }
        if bits != 0 {
            return Some(w * 64 + bits.trailing_zeros() as usize);
        }
    }
    None
}

/// Allocates `units` from a region known to be large enough.
pub fn alloc_in(m: &Mapping, region: Region, units: u32) -> Result<Option<u32>, Corruption> {
    match region {
        Region::Block(unit) => take(m, unit, units),
        Region::Wilderness => grow(m, units),
    }
}

/// The largest free block (not the wilderness) and its size in units, from the largest
/// non-empty free list (a bounded walk of it).
pub fn largest_free_block(m: &Mapping) -> Result<Option<(u32, u32)>, Corruption> {
    let h = m.header();
    let top_bin = (0..h.free_bitmap.len()).rev().find_map(|w| {
        let bits = h.free_bitmap[w].load(Relaxed);
        (bits != 0).then(|| w * 64 + 63 - bits.leading_zeros() as usize)
    });
    let Some(bin) = top_bin else { return Ok(None) };
    let mut best: Option<(u32, u32)> = None;
    let mut cur = h.free_heads[bin].load(Relaxed);
    for _ in 0..256 {
        if cur == NIL {
            break;
        }
        let b = m.block(cur)?;
        let size = b.size.load(Relaxed);
        if best.is_none_or(|(_, s)| size > s) {
            best = Some((cur, size));
        }
        cur = b.next.load(Relaxed);
    }
    Ok(best)
}

/// Units left in the wilderness above `top`.
pub fn wilderness_units(m: &Mapping) -> u32 {
    (m.geo()
        .arena_len
        .saturating_sub(m.header().top.load(Relaxed))
        / UNIT)
        .min(u32::MAX as u64) as u32
}

/// The largest free region (a free block or the wilderness) and its size in units.
pub fn largest_free(m: &Mapping) -> Result<(Region, u32), Corruption> {
    let wild = wilderness_units(m);
    Ok(match largest_free_block(m)? {
        Some((unit, size)) if size > wild => (Region::Block(unit), size),
        _ => (Region::Wilderness, wild),
    })
}

/// The live blocks on either side of a free region (a free region's neighbours are live:
/// free neighbours are always merged).
pub fn neighbours(m: &Mapping, region: Region) -> Result<[Option<u32>; 2], Corruption> {
    let h = m.header();
    match region {
        Region::Wilderness => {
            let top = top_units(m);
            let last = h.last_units.load(Relaxed) as u64;
            Ok([(top > 0 && last <= top).then(|| (top - last) as u32), None])
        }
        Region::Block(unit) => {
            let b = m.block(unit)?;
            let ps = b.prev_size.load(Relaxed);
            let left = (ps != 0).then(|| unit.checked_sub(ps)).flatten();
            Ok([next_phys(m, unit, b), left])
        }
    }
}

/// Takes free block `unit` off its list and splits off what `units` does not need. `Ok(None)`
/// if the block has holes and /dev/shm cannot back the part that will be written.
fn take(m: &Mapping, unit: u32, units: u32) -> Result<Option<u32>, Corruption> {
    let b = m.block(unit)?;
    let size = b.size.load(Relaxed);
    if b.state.load(Relaxed) != FREE || size < units {
        return Err(corrupt!(
            "free list holds block {unit} that is not free or too small"
        ));
    }
    let rest = size - units;
    let split = rest >= MIN_BLOCK_UNITS;
    let holes = has_holes(b);
    if holes {
        // Back what will be written, the remainder's header included, before writing it.
        // Not split: the whole block (its tail too), since it will count as fully backed
        // once freed again.
        let end = if split {
            (unit as u64 + units as u64) * UNIT + BLOCK_HEADER
        } else {
            (unit as u64 + size as u64) * UNIT
        };
        let start = unit as u64 * UNIT;
        if os::fallocate(m.fd(), m.geo().arena_off + start, end - start).is_err() {
            return Ok(None);
        }
    }
    unlink_free(m, unit)?;
    b.state.store(WRITING, Relaxed);
    if split {
        fault!();
        let r_unit = unit
            .checked_add(units)
            .ok_or_else(|| corrupt!("block {unit} splits past the arena"))?;
        let r = m.block(r_unit)?;
        r.size.store(rest, Relaxed);
        r.state.store(FREE, Relaxed);
        r.prev_size.store(units, Relaxed);
        r.key_len.store(if holes { HOLES } else { 0 }, Relaxed);
        fault!();
        if let Some(n) = next_phys(m, unit, b) {
            m.block(n)?.prev_size.store(rest, Relaxed);
        }
        b.size.store(units, Release); // commit point of the split
        fault!();
        push_free(m, r_unit)?;
    }
    Ok(Some(unit))
}

/// A free block's `key_len` says whether pages inside it may have been given back to the
/// system (then they must be reserved again before anything is written there).
pub const HOLES: u32 = u32::MAX;

fn has_holes(b: &Block) -> bool {
    b.key_len.load(Relaxed) != 0
}

/// Objects at least this large give their pages back to the system when freed.
pub const PUNCH_MIN: u64 = 64 << 10;

/// Free bytes in blocks up to which freed pages are kept rather than given back: 1/64 of
/// the arena, between 1 and 64 MiB.
pub fn warm_reserve(m: &Mapping) -> u64 {
    (m.geo().arena_len / 64).clamp(1 << 20, 64 << 20)
}

/// Gives pages inside free block `unit` (never its header's) back to the system, once the
/// block has at least [`PUNCH_MIN`] bytes of whole pages and more than the
/// [`warm_reserve`] is free. The first time, all of them; after
/// that (the block is marked `HOLES`), only the pages that the freeing of `freed` (a byte
/// range) made whole, so that freeing small objects next to a large hole costs no system
/// call unless a page comes free. Nothing is given back while a lock-free read is in flight
/// (`optimistic::quiet`): the pages stay, unmarked. The block is marked first, so a stop in between leaves a
/// marked block whose pages are still there, which is harmless.
fn punch_free_block(l: &Locked, unit: u32, b: &Block, had_holes: bool, freed: (u64, u64)) {
    let m: &Mapping = l;
    // Keep a little free memory warm: a put that replaces an object reuses the pages the
    // last replacement freed instead of faulting in fresh ones.
    let h = m.header();
    let free_in_blocks = h
        .top
        .load(Relaxed)
        .saturating_sub(h.used_bytes.load(Relaxed));
    if free_in_blocks <= warm_reserve(m) {
        return;
    }
    let interior_start = (unit as u64 * UNIT + BLOCK_HEADER).div_ceil(PAGE) * PAGE;
    let interior_end = (unit as u64 + b.size.load(Relaxed) as u64) * UNIT / PAGE * PAGE;
    if interior_end < interior_start + PUNCH_MIN {
        return;
    }
    let (start, end) = if had_holes {
        // The pages the freed range touches, as far as they lie inside the interior.
        let start = (freed.0 / PAGE * PAGE).max(interior_start);
        let end = freed
            .1
            .div_ceil(PAGE)
            .saturating_mul(PAGE)
            .min(interior_end);
        (start, end)
    } else {
        (interior_start, interior_end)
    };
    // A lock-free read in flight may be about to touch these pages: keep them this time.
    if end <= start || !crate::optimistic::quiet(l) {
        return;
    }
    b.key_len.store(HOLES, Relaxed);
    fault!();
    // A failure only means the pages stay: nothing to report.
    let _ = os::punch_hole(m.fd(), m.geo().arena_off + start, end - start);
}

/// Gives back the pages above `top` plus the [`warm_reserve`] once there are at least
/// [`PUNCH_MIN`] bytes of them (the reserve keeps a put/remove cycle at the top from reserving
/// and punching the same pages again and again). `committed` is lowered first, so a stop in
/// between leaves pages that are backed but counted as not, which is harmless. Nothing is
/// given back while a lock-free read is in flight (`optimistic::quiet`).
/// `backed_to` is how far pages may be allocated (the `committed` before it was lowered for
/// holes).
fn shrink_committed(l: &Locked, backed_to: u64) {
    let m: &Mapping = l;
    let h = m.header();
    let arena = m.geo().arena_len;
    let keep = (h.top.load(Relaxed) + warm_reserve(m))
        .div_ceil(PAGE)
        .saturating_mul(PAGE)
        .min(arena);
    if backed_to >= keep + PUNCH_MIN && backed_to <= arena && crate::optimistic::quiet(l) {
        if h.committed.load(Relaxed) > keep {
            h.committed.store(keep, Relaxed);
        }
        fault!();
        let _ = os::punch_hole(m.fd(), m.geo().arena_off + keep, backed_to - keep);
    }
}

/// Carves a block out of the wilderness above `top`, committing memory for it first.
fn grow(m: &Mapping, units: u32) -> Result<Option<u32>, Corruption> {
    let h = m.header();
    let top = h.top.load(Relaxed);
    if top > m.geo().arena_len {
        return Err(corrupt!("arena top {top} is past the arena"));
    }
    let end = top + units as u64 * UNIT;
    if end > m.geo().arena_len {
        return Ok(None);
    }
    if !commit(m, end)? {
        return Ok(None);
    }
    let unit = (top / UNIT) as u32;
    let b = m.block(unit)?;
    b.size.store(units, Relaxed);
    b.state.store(WRITING, Relaxed);
    b.prev_size.store(h.last_units.load(Relaxed), Relaxed);
    fault!();
    h.top.store(end, Release); // commit point of the growth
    fault!();
    h.last_units.store(units, Relaxed);
    Ok(Some(unit))
}

/// Makes sure the arena's first `end` bytes are backed by memory. `Ok(false)` if /dev/shm is
/// full.
pub fn commit(m: &Mapping, end: u64) -> Result<bool, Corruption> {
    commit_with(m, end, huge_steps(m))
}

/// [`commit`] for a recovery, which reserves the whole arena below `top` again, pages that
/// hold data among them: always in small pages (a collapse would copy every huge page's
/// worth of them, under the lock).
pub fn recommit(m: &Mapping, end: u64) -> Result<bool, Corruption> {
    commit_with(m, end, None)
}

/// [`commit`], with huge pages of `huge` bytes where they lie wholly inside a step.
fn commit_with(m: &Mapping, end: u64, huge: Option<u64>) -> Result<bool, Corruption> {
    let h = m.header();
    let committed = h.committed.load(Relaxed);
    if end <= committed {
        return Ok(true);
    }
    let arena = m.geo().arena_len;
    if committed > arena || end > arena {
        return Err(corrupt!("committed bytes {committed} are past the arena"));
    }
    let step = step_for(arena);
    let mut want = end.max(committed + step).div_ceil(PAGE) * PAGE;
    if let Some(huge) = huge {
        // End the step on a huge page of the file, so that steps cover whole ones.
        let off = m.geo().arena_off;
        want = (off + want).div_ceil(huge) * huge - off;
    }
    let want = want.min(arena);
    let mut reached = reserve(m, committed, want, huge);
    let need = end.div_ceil(PAGE) * PAGE;
    if reached < end && (need < want || huge.is_some()) {
        // Refused: try again with just what is needed now, in small pages (not the very
        // call that was just refused).
        reached = reserve(m, reached, need, None);
    }
    if reached >= end {
        // The store is filling: the pages just reserved will be written soon, by this
        // process first. Mapping them in one call costs less than a fault on each (W1 puts
        // -12%, 1 MiB puts into fresh pages +10%). At most one step: a recovery re-commits
        // everything below `top` at once, pages that hold data and that this process may
        // never touch.
        m.populate(committed, (reached - committed).min(step));
    }
    // What was reserved counts, refused or not, so that it is given back as the rest is.
    h.committed.store(reached, Relaxed);
    Ok(reached >= end)
}

/// How much memory a filling arena of `arena_len` bytes commits at a time: 1/32 of it, at
/// most 4 MiB, so that a filling store makes few system calls but a large empty one holds
/// little memory.
fn step_for(arena_len: u64) -> u64 {
    (arena_len / 32).clamp(PAGE, 4 << 20)
}

/// The huge page size an arena of `arena_len` bytes can be committed in
/// (`Options::huge_arena`): the kernel's, where shared memory can have huge pages and the
/// arena's steps are at least one (an arena of 64 MiB or more; a smaller one keeps its
/// steps of small pages: a huge page would be too much of its memory).
pub fn huge_step_for(arena_len: u64) -> Option<u64> {
    let huge = os::huge_page_for_layout()? as u64;
    (step_for(arena_len) >= huge).then_some(huge)
}

/// The huge page size to commit this arena in, if its store was made with
/// `Options::huge_arena` (see [`huge_step_for`]).
fn huge_steps(m: &Mapping) -> Option<u64> {
    if !m.header().huge_arena() {
        return None;
    }
    huge_step_for(m.geo().arena_len)
}

/// Reserves arena bytes `[from, to)` (page-aligned): the huge pages (of `huge` bytes) of the
/// file that lie wholly inside as huge pages where the kernel agrees
/// (`Mapping::reserve_huge`), the rest, and everything when `huge` is `None`, with
/// `fallocate`. Returns how far it got: `to`, or where /dev/shm or the memory cgroup refused
/// (everything below that is reserved; tmpfs undoes the part of a refused `fallocate` it
/// had done, and at most the first small page of a huge page lies beyond).
fn reserve(m: &Mapping, from: u64, to: u64, huge: Option<u64>) -> u64 {
    let off = m.geo().arena_off;
    let Some(huge) = huge else {
        return if os::fallocate(m.fd(), off + from, to - from).is_ok() {
            to
        } else {
            from
        };
    };
    let mut at = from;
    while at < to {
        // The end of the huge page of the file that `at` lies in, as an arena offset.
        let page_end = ((off + at) / huge + 1) * huge - off;
        if (off + at).is_multiple_of(huge) && page_end <= to {
            match m.reserve_huge(at, huge) {
                Ok(true) => {
                    at = page_end;
                    continue;
                }
                Ok(false) => {}
                Err(_) => return at,
            }
        }
        let next = page_end.min(to);
        if os::fallocate(m.fd(), off + at, next - at).is_err() {
            return at;
        }
        at = next;
    }
    to
}

/// The size of two neighbours merged; an error if the sizes read cannot be real.
fn add_units(a: u32, b: u32) -> Result<u32, Corruption> {
    a.checked_add(b)
        .ok_or_else(|| corrupt!("merged block sizes {a} + {b} overflow"))
}

/// Frees block `unit` (already marked `FREE` by the caller: that store is the commit point of
/// a removal), merging it with free neighbours and giving it back to the wilderness when it is
/// the last block.
pub fn free(l: &Locked, unit: u32) -> Result<(), Corruption> {
    release(l, unit, true, true).map(|_| ())
}

/// The room a live block would leave if it were freed to be reused at once (see
/// [`room_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Its first byte (arena offset): where the block carved from it will start.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Whether it reaches the wilderness (the block is then carved by growing from `start`).
    pub wilderness: bool,
    /// Whether it takes in a free block before the freed one.
    with_prev: bool,
}

impl Room {
    /// The bytes from `start` that carving a block of `units` from this room writes, as
    /// [`take`] and [`grow`] do: the block, and the header of the remainder it splits off
    /// (the whole room when the remainder is too small to split).
    pub fn written(&self, units: u32) -> u64 {
        let block = u64::from(units) * UNIT;
        if self.wilderness {
            block
        } else if self.len - block >= u64::from(MIN_BLOCK_UNITS) * UNIT {
            block + BLOCK_HEADER
        } else {
            self.len
        }
    }
}

/// Where live block `unit` would leave room for a block of `units` if it were freed now:
/// the block merged with a free next block (and with the wilderness if it is then the last
/// block), and only if that is too small, with a free previous block too (whose pages may
/// have been given back, so that reusing it may need memory a full /dev/shm does not
/// have). `None` if even that is too small. [`free_for_reuse`] then frees the block into
/// exactly that room.
pub fn room_for(m: &Mapping, unit: u32, units: u32) -> Result<Option<Room>, Corruption> {
    let b = m.block(unit)?;
    let size = b.size.load(Relaxed);
    if size == 0 || unit as u64 + size as u64 > top_units(m) {
        return Err(corrupt!(
            "block {unit} of {size} units is not inside the arena"
        ));
    }
    let mut end = unit as u64 + size as u64;
    let mut last = next_phys(m, unit, b).is_none();
    if let Some(n) = next_phys(m, unit, b) {
        let nb = m.block(n)?;
        if nb.state.load(Relaxed) == FREE {
            end = add_units(n, nb.size.load(Relaxed))? as u64;
            if end > top_units(m) {
                return Err(corrupt!("free block {n} reaches past the arena's top"));
            }
            last = end == top_units(m);
        }
    }
    if last {
        end = end.max(m.geo().arena_len / UNIT);
    }
    let room = |start: u64, with_prev| Room {
        start: start * UNIT,
        len: (end - start) * UNIT,
        wilderness: last,
        with_prev,
    };
    let own = room(unit as u64, false);
    if own.len >= u64::from(units) * UNIT {
        return Ok(Some(own));
    }
    let ps = b.prev_size.load(Relaxed);
    if ps == 0 {
        return Ok(None);
    }
    let p = unit
        .checked_sub(ps)
        .ok_or_else(|| corrupt!("block {unit} claims a predecessor before the arena"))?;
    let pb = m.block(p)?;
    if pb.state.load(Relaxed) != FREE {
        return Ok(None);
    }
    if pb.size.load(Relaxed) != ps {
        return Err(corrupt!(
            "block {unit}'s predecessor {p} is {} units, not {ps}",
            pb.size.load(Relaxed)
        ));
    }
    let merged = room(p as u64, true);
    Ok((merged.len >= u64::from(units) * UNIT).then_some(merged))
}

/// Frees block `unit` (marked `FREE` by the caller) into `room` (from [`room_for`], nothing
/// changed in between), keeping every page that is there (none is given back to the
/// system), for a block to be carved from it at once. When the room does not take in the
/// free block before it, the two stay apart until that carving puts a live block between
/// them (a stop in between leaves two free neighbours, which a rebuild merges). Returns the
/// region to carve from.
pub fn free_for_reuse(l: &Locked, unit: u32, room: &Room) -> Result<Region, Corruption> {
    release(l, unit, false, room.with_prev)
}

/// [`free`], giving pages back or not, merging into a free previous block or not.
fn release(l: &Locked, unit: u32, give_back: bool, merge_prev: bool) -> Result<Region, Corruption> {
    let m: &Mapping = l;
    let h = m.header();
    let mut unit = unit;
    let mut b = m.block(unit)?;
    let freed = (
        unit as u64 * UNIT,
        (unit as u64 + b.size.load(Relaxed) as u64) * UNIT,
    );
    b.state.store(FREE, Relaxed);
    fault!();
    // It was live, so all its pages are there; neighbours may bring holes.
    let mut holes = false;
    // Merge with the next block.
    if let Some(n) = next_phys(m, unit, b) {
        let nb = m.block(n)?;
        if nb.state.load(Relaxed) == FREE {
            unlink_free(m, n)?;
            holes |= has_holes(nb);
            b.size.store(
                add_units(b.size.load(Relaxed), nb.size.load(Relaxed))?,
                Release,
            );
        }
    }
    fault!();
    // Merge into the previous block.
    let ps = b.prev_size.load(Relaxed);
    if ps != 0 && merge_prev {
        let p = unit
            .checked_sub(ps)
            .ok_or_else(|| corrupt!("block {unit} claims a predecessor before the arena"))?;
        let pb = m.block(p)?;
        if pb.state.load(Relaxed) == FREE {
            if pb.size.load(Relaxed) != ps {
                return Err(corrupt!(
                    "block {unit}'s predecessor {p} is {} units, not {ps}",
                    pb.size.load(Relaxed)
                ));
            }
            unlink_free(m, p)?;
            holes |= has_holes(pb);
            pb.size.store(
                add_units(pb.size.load(Relaxed), b.size.load(Relaxed))?,
                Release,
            );
            unit = p;
            b = pb;
        }
    }
    fault!();
    b.key_len.store(if holes { HOLES } else { 0 }, Relaxed);
    match next_phys(m, unit, b) {
        Some(n) => {
            m.block(n)?.prev_size.store(b.size.load(Relaxed), Relaxed);
            if give_back {
                punch_free_block(l, unit, b, holes, freed);
            }
            push_free(m, unit)?;
            Ok(Region::Block(unit))
        }
        None => {
            // The last block: back to the wilderness. Pages inside it may have been given
            // back, and the wilderness below `committed` counts as reserved: lower
            // `committed` to the new top first (safe at any stop: it only means "reserve
            // again").
            let new_top = unit as u64 * UNIT;
            let backed_to = h.committed.load(Relaxed);
            if holes && backed_to > new_top {
                h.committed.store(new_top.div_ceil(PAGE) * PAGE, Release);
                fault!();
            }
            h.top.store(new_top, Release);
            fault!();
            let prev = b.prev_size.load(Relaxed);
            h.last_units
                .store(if unit == 0 { 0 } else { prev }, Relaxed);
            if give_back {
                shrink_committed(l, backed_to);
            }
            Ok(Region::Wilderness)
        }
    }
}
