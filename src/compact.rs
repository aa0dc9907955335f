//! Making a contiguous free region by moving live blocks, instead of evicting them.
//!
//! When a put finds enough free bytes in total but no free region large enough:
//! 1. *Relocation*: the largest free region is grown by moving its live neighbours into other
//!    free blocks. A relocation is crash-safe like a replacing put: the copy is written and
//!    made live first (same sequence number and access stamp as the original: either may win a
//!    recovery, their contents are equal), then the index and LRU list point at it, then the
//!    original is freed.
//! 2. *Sliding*: when no neighbour fits anywhere else, the largest free block is bubbled
//!    towards the top of the arena by sliding each live block after it down over it, until it
//!    meets other free space and is large enough. A slide's copy overwrites its own source, so
//!    it is journaled in the header and copied in chunks no larger than the distance moved;
//!    a chunk's source is never overwritten before the chunk is copied, so recovery finishes an
//!    interrupted slide from the last chunk recorded (docs/design.md).
//!
//! Both loops make progress at every step and are bounded in moves and bytes.

use std::sync::atomic::Ordering::{Relaxed, Release};

use crate::arena::{self, Region};
use crate::error::{Corruption, corrupt};
use crate::index;
use crate::layout::{BLOCK_HEADER, FREE, LIVE, SLIDING, UNIT, block_units, data_off};
use crate::lock::Locked;
use crate::lru;

/// Moves at most this many blocks for one allocation.
const MAX_MOVES: usize = 256;

/// Tries to make a free region of at least `units`; returns it.
pub fn make_room(l: &Locked, units: u32) -> Result<Option<Region>, Corruption> {
    if let Some(region) = by_relocation(l, units)? {
        return Ok(Some(region));
    }
    by_sliding(l, units)
}

fn by_relocation(l: &Locked, units: u32) -> Result<Option<Region>, Corruption> {
    for _ in 0..MAX_MOVES {
        let (region, size) = arena::largest_free(l)?;
        if size >= units {
            return Ok(Some(region));
        }
        let mut moved = false;
        for neighbour in arena::neighbours(l, region)?.into_iter().flatten() {
            if relocate(l, neighbour, region)? {
                moved = true;
                break;
            }
        }
        if !moved {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Moves live block `unit` into a free block outside `avoid`; false if none fits.
fn relocate(l: &Locked, unit: u32, avoid: Region) -> Result<bool, Corruption> {
    let h = l.header();
    let b = l.block(unit)?;
    if b.state.load(Relaxed) != LIVE {
        return Err(corrupt!(
            "block {unit} next to a free region is neither free nor live"
        ));
    }
    let key_len = b.key_len.load(Relaxed) as usize;
    let val_len = usize::try_from(b.val_len.load(Relaxed))
        .map_err(|_| corrupt!("value length of block {unit}"))?;
    let need = block_units(key_len, val_len);
    if need > b.size.load(Relaxed) as u64 {
        return Err(corrupt!("block {unit} is too small for its key and value"));
    }
    let Some(dest) = arena::alloc_avoiding(l, need as u32, Some(avoid))? else {
        return Ok(false);
    };
    fault!();
    let d = l.block(dest)?;
    d.key_len.store(key_len as u32, Relaxed);
    d.val_len.store(val_len as u64, Relaxed);
    d.seq.store(b.seq.load(Relaxed), Relaxed);
    d.stamp.store(b.stamp.load(Relaxed), Relaxed);
    l.copy_within(data_off(unit), data_off(dest), key_len + val_len)?;
    d.state.store(LIVE, Release);
    fault!();

    let key = l.key(dest)?;
    let hash = index::hash(l, key);
    match index::find(l, key, hash)? {
        Some(found) if found.unit == unit => index::move_entry(l, found, hash, dest),
        _ => return Err(corrupt!("live block {unit} is not in the index")),
    }
    fault!();
    lru::replace(l, unit, dest)?;
    fault!();
    let (old_size, new_size) = (b.size.load(Relaxed) as u64, d.size.load(Relaxed) as u64);
    b.state.store(FREE, Release);
    fault!();
    l.add_held(&h.used_bytes, new_size * UNIT);
    l.sub_held(&h.used_bytes, old_size * UNIT);
    arena::free(l, unit)?;
    l.add_held(&h.moves, 1);
    Ok(true)
}

/// Bytes a put may slide to make room: twice its own size, at least 256 KiB.
fn slide_budget(units: u32) -> u64 {
    (units as u64 * UNIT * 2).max(256 << 10)
}

/// Bubbles the largest free block up the arena until it is large enough (or the budget is
/// spent, or it reaches the wilderness).
fn by_sliding(l: &Locked, units: u32) -> Result<Option<Region>, Corruption> {
    let h = l.header();
    let Some((mut hole, _)) = arena::largest_free_block(l)? else {
        return Ok(None);
    };
    let mut moved = 0u64;
    loop {
        let size = l.block(hole)?.size.load(Relaxed);
        if size >= units {
            return Ok(Some(Region::Block(hole)));
        }
        let next = hole
            .checked_add(size)
            .ok_or_else(|| corrupt!("free block {hole} reaches past the arena"))?;
        let next_size = l.block(next)?.size.load(Relaxed) as u64;
        if moved + next_size * UNIT > slide_budget(units) {
            return Ok(None);
        }
        if !slide(l, hole, next)? {
            return Ok(None);
        }
        moved += next_size * UNIT;
        hole += next_size as u32;
        if h.top.load(Relaxed) == hole as u64 * UNIT {
            // The hole reached the top and joined the wilderness.
            let fits = arena::wilderness_units(l) >= units;
            return Ok(fits.then_some(Region::Wilderness));
        }
    }
}

/// Slides live block `live` down over free block `free`, which lies right before it; the
/// free space ends up after the block (merged with any free space there). False if the free
/// block has holes that /dev/shm cannot back again.
fn slide(l: &Locked, free: u32, live: u32) -> Result<bool, Corruption> {
    let h = l.header();
    let fb = l.block(free)?;
    let lb = l.block(live)?;
    let (f, s) = (fb.size.load(Relaxed), lb.size.load(Relaxed));
    if fb.state.load(Relaxed) != FREE
        || lb.state.load(Relaxed) != LIVE
        || free as u64 + f as u64 != live as u64
    {
        return Err(corrupt!(
            "cannot slide block {live} over block {free}: not a free block before a live one"
        ));
    }
    let before = fb.prev_size.load(Relaxed);
    let key = l.key(live)?;
    let hash = index::hash(l, key);
    let entry = index::find_unit(l, hash, live)
        .ok_or_else(|| corrupt!("live block {live} is not in the index"))?;
    if fb.key_len.load(Relaxed) != 0 {
        // The free block may have given pages back: reserve them before copying into them.
        let (start, len) = (free as u64 * UNIT, f as u64 * UNIT);
        if crate::os::fallocate(l.fd(), l.geo().arena_off + start, len).is_err() {
            return Ok(false);
        }
    }
    arena::unlink_free(l, free)?;
    let j = &h.slide;
    j.src.store(live as u64, Relaxed);
    j.dst.store(free as u64, Relaxed);
    j.len.store(s as u64 * UNIT, Relaxed);
    j.done.store(0, Relaxed);
    j.state.store(SLIDING, Release); // commit point: from here recovery finishes the slide
    fault!();
    finish_slide(l)?;
    // Derived data: the moved block's neighbours, index entry and LRU links.
    l.block(free)?.prev_size.store(before, Relaxed);
    index::move_entry(l, entry, hash, free);
    fault!();
    lru::relink(l, free)?;
    fault!();
    arena::free(l, free + s)?;
    l.add_held(&l.header().moves, 1);
    Ok(true)
}

/// Completes a journaled slide (a no-op when none is under way): copies the chunks not yet
/// copied, writes the free block that follows the moved block, and clears the journal.
/// Recovery calls it before anything reads the arena.
pub fn finish_slide(m: &crate::mapping::Mapping) -> Result<(), Corruption> {
    let j = &m.header().slide;
    if j.state.load(Relaxed) != SLIDING {
        return Ok(());
    }
    let (src, dst, len) = (
        j.src.load(Relaxed),
        j.dst.load(Relaxed),
        j.len.load(Relaxed),
    );
    let mut done = j.done.load(Relaxed);
    let chunk = src.checked_sub(dst).filter(|&d| d > 0).map(|d| d * UNIT);
    let end = src.checked_mul(UNIT).and_then(|b| b.checked_add(len));
    let Some(chunk) = chunk else {
        return Err(corrupt!(
            "slide journal: destination {dst} is not below source {src}"
        ));
    };
    let top = m.header().top.load(Relaxed);
    if end.is_none_or(|e| e > m.geo().arena_len || e > top)
        || len % UNIT != 0
        || len == 0
        || done > len
        || (!done.is_multiple_of(chunk) && done != len)
    {
        return Err(corrupt!(
            "slide journal is inconsistent: {src} -> {dst}, {done} of {len} bytes"
        ));
    }
    // Reserve the destination (in recovery the journal may come from a scribble, and a free
    // block slid over may have had holes): a full /dev/shm is then an error, not a SIGBUS.
    // (The free block's header after the moved block is included.)
    if src - dst < crate::layout::MIN_BLOCK_UNITS as u64 {
        return Err(corrupt!(
            "slide journal moves block {src} by less than a block"
        ));
    }
    let (from, to) = (dst * UNIT + done, dst * UNIT + len + BLOCK_HEADER);
    if crate::os::fallocate(m.fd(), m.geo().arena_off + from, to - from).is_err() {
        return Err(corrupt!(
            "the memory a slide copies into could not be reserved"
        ));
    }
    while done < len {
        let n = chunk.min(len - done);
        m.copy_within(src * UNIT + done, dst * UNIT + done, n as usize)?;
        done += n;
        j.done.store(done, Release);
        fault!();
    }
    let moved_units = (len / UNIT) as u32;
    let rest = m.block((dst + len / UNIT) as u32)?;
    rest.size.store((src - dst) as u32, Relaxed);
    rest.prev_size.store(moved_units, Relaxed);
    rest.key_len.store(0, Relaxed); // its pages were all reserved before the slide
    rest.state.store(FREE, Release);
    fault!();
    j.state.store(0, Release);
    fault!();
    Ok(())
}
