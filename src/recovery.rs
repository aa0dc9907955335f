//! Rebuilding a store from its arena, and checking every invariant.
//!
//! The arena's chain of block sizes and each block's state word are the truth; the index, the
//! LRU list, the free lists, `prev_size`, `last_units` and the counts are derived from them.
//! [`rebuild`] recomputes all derived data from one scan, which repairs a store whose lock
//! holder died at any instruction (docs/design.md explains why). [`validate`] checks that the
//! derived data agree with the scan.

use std::sync::atomic::Ordering::Relaxed;

use crate::MAX_KEY_LEN;
use crate::arena;
use crate::error::{Corruption, corrupt};
use crate::index;
use crate::layout::{BINS, BLOCK_HEADER, FREE, LIVE, MIN_BLOCK_UNITS, NIL, UNIT};
use crate::lock::Locked;
use crate::lru;
use crate::mapping::Mapping;

/// What a rebuild found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub live: u64,
    /// Older copies of a key whose replacement was interrupted after the new copy was live.
    pub superseded: u64,
    /// Live blocks that made no sense (bad lengths, a key that is not UTF-8) and were dropped.
    pub dropped: u64,
}

/// One block of the chain.
struct Scanned {
    unit: u32,
    size: u32,
    state: u32,
}

/// Walks the chain from 0 to `top`, checking each size.
fn scan(m: &Mapping) -> Result<Vec<Scanned>, Corruption> {
    let h = m.header();
    let top = h.top.load(Relaxed);
    if !top.is_multiple_of(UNIT) || top > m.geo().arena_len {
        return Err(corrupt!(
            "arena top {top} is not a unit boundary inside the arena"
        ));
    }
    let top_units = top / UNIT;
    let mut out = Vec::new();
    let mut unit = 0u64;
    while unit < top_units {
        let b = m.block(unit as u32)?;
        let size = b.size.load(Relaxed);
        if size < MIN_BLOCK_UNITS || unit + size as u64 > top_units {
            return Err(corrupt!(
                "block {unit} has size {size}, which does not fit the arena"
            ));
        }
        out.push(Scanned {
            unit: unit as u32,
            size,
            state: b.state.load(Relaxed),
        });
        unit += size as u64;
    }
    Ok(out)
}

/// The key of a live block if its lengths make sense.
fn live_key<'l>(l: &'l Locked, s: &Scanned) -> Result<Option<&'l [u8]>, Corruption> {
    let b = l.block(s.unit)?;
    let key_len = b.key_len.load(Relaxed) as u64;
    let val_len = b.val_len.load(Relaxed);
    let fits = BLOCK_HEADER
        .checked_add(key_len)
        .and_then(|x| x.checked_add(val_len));
    if key_len == 0 || key_len > MAX_KEY_LEN as u64 || fits.is_none_or(|n| n > s.size as u64 * UNIT)
    {
        return Ok(None);
    }
    let key = l.bytes(crate::layout::data_off(s.unit), key_len as usize)?;
    Ok(std::str::from_utf8(key).is_ok().then_some(key))
}

/// Recomputes every derived structure from the arena. Errors only when the chain of sizes
/// itself is broken, which leaves nothing to rebuild from.
pub fn rebuild(l: &Locked) -> Result<Rebuilt, Corruption> {
    let h = l.header();
    let mut report = Rebuilt::default();
    crate::compact::finish_slide(l)?;
    // Only `SLIDING` means a slide is under way; any other non-zero word is a scribble.
    h.slide.state.store(0, Relaxed);
    fault!();
    let blocks = scan(l)?;

    // Index: every sensible live block; of two with one key, the later put wins.
    index::clear(l);
    fault!();
    for s in blocks.iter().filter(|s| s.state == LIVE) {
        let b = l.block(s.unit)?;
        let Some(key) = live_key(l, s)? else {
            b.state.store(FREE, Relaxed);
            report.dropped += 1;
            continue;
        };
        let hash = index::hash(l, key);
        match index::find(l, key, hash)? {
            Some(found) => {
                let loser = if l.block(found.unit)?.seq.load(Relaxed) < b.seq.load(Relaxed) {
                    index::repoint(l, found, hash, s.unit);
                    found.unit
                } else {
                    s.unit
                };
                l.block(loser)?.state.store(FREE, Relaxed);
                report.superseded += 1;
            }
            None if h.index_live.load(Relaxed) >= l.geo().max_live() => {
                b.state.store(FREE, Relaxed);
                report.dropped += 1;
            }
            None => index::insert(l, hash, s.unit)?,
        }
    }
    let mut live: Vec<(u64, u32)> = Vec::new(); // (stamp, unit)
    for s in &blocks {
        let b = l.block(s.unit)?;
        if b.state.load(Relaxed) == LIVE {
            live.push((b.stamp.load(Relaxed), s.unit));
        }
    }

    // Free space: merge every run of non-live blocks, drop a trailing one into the wilderness.
    arena::clear_free_lists(l);
    let (mut used, mut values, mut prev_size, mut i) = (0u64, 0u64, 0u32, 0usize);
    let mut top = h.top.load(Relaxed);
    while i < blocks.len() {
        let s = &blocks[i];
        let b = l.block(s.unit)?;
        b.prev_size.store(prev_size, Relaxed);
        if b.state.load(Relaxed) == LIVE {
            used += s.size as u64 * UNIT;
            values += b.val_len.load(Relaxed);
            prev_size = s.size;
            i += 1;
            continue;
        }
        let mut size = s.size;
        let mut j = i + 1;
        while j < blocks.len() && l.block(blocks[j].unit)?.state.load(Relaxed) != LIVE {
            size += blocks[j].size;
            j += 1;
        }
        b.state.store(FREE, Relaxed);
        b.size.store(size, Relaxed);
        // Which of the merged blocks had given pages back is not known: assume any did.
        b.key_len.store(arena::HOLES, Relaxed);
        fault!();
        if j == blocks.len() {
            top = s.unit as u64 * UNIT;
            h.top.store(top, Relaxed);
        } else {
            arena::push_free(l, s.unit)?;
            prev_size = size;
        }
        i = j;
    }
    h.last_units
        .store(if top == 0 { 0 } else { prev_size }, Relaxed);
    // The wilderness may hold pages given back by free blocks that merged into it: count
    // nothing above `top` as reserved, and reserve `[0, top)` again (a no-op for pages that
    // are there; free blocks below are all marked as having holes).
    h.committed.store(0, Relaxed);
    if !arena::recommit(l, top)? {
        return Err(corrupt!("the arena's memory could not be reserved again"));
    }
    h.committed.store(
        top.div_ceil(crate::layout::PAGE) * crate::layout::PAGE,
        Relaxed,
    );

    // Recency: by last access, most recent first.
    live.sort_unstable_by_key(|&(stamp, _)| std::cmp::Reverse(stamp));
    h.lru_head.store(NIL, Relaxed);
    h.lru_tail.store(NIL, Relaxed);
    // Stamps and sequence numbers are renumbered 1..=n in that order (no two blocks share a
    // key any more), so that scribbled ones near u64::MAX cannot survive a rebuild.
    for (i, &(_, unit)) in live.iter().rev().enumerate() {
        let b = l.block(unit)?;
        b.stamp.store(i as u64 + 1, Relaxed);
        b.seq.store(i as u64 + 1, Relaxed);
        lru::push_front(l, unit)?;
        fault!();
    }
    h.clock.store(live.len() as u64, Relaxed);
    h.seq.store(live.len() as u64, Relaxed);
    h.objects.store(live.len() as u64, Relaxed);
    h.used_bytes.store(used, Relaxed);
    h.value_bytes.store(values, Relaxed);
    report.live = live.len() as u64;
    Ok(report)
}

/// Makes the store empty (when the arena is beyond repair). Counted in `resets`.
pub fn reset(m: &Locked) {
    let h = m.header();
    index::clear(m);
    arena::clear_free_lists(m);
    h.top.store(0, Relaxed);
    h.last_units.store(0, Relaxed);
    h.lru_head.store(NIL, Relaxed);
    h.lru_tail.store(NIL, Relaxed);
    h.slide.state.store(0, Relaxed);
    h.clock.store(0, Relaxed);
    h.seq.store(0, Relaxed);
    h.committed.store(0, Relaxed);
    h.objects.store(0, Relaxed);
    h.used_bytes.store(0, Relaxed);
    h.value_bytes.store(0, Relaxed);
    m.add_held(&h.resets, 1);
}

/// What [`validate`] counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    pub objects: u64,
    pub free_blocks: u64,
    pub free_bytes: u64,
    pub largest_free: u64,
}

/// Checks every invariant of the store (docs/design.md, "Invariants").
pub fn validate(l: &Locked) -> Result<Checked, Corruption> {
    let h = l.header();
    let top = h.top.load(Relaxed);
    if h.slide.state.load(Relaxed) != 0 {
        return Err(corrupt!(
            "a slide is recorded as under way while the store is at rest"
        ));
    }
    if h.committed.load(Relaxed) < top || h.committed.load(Relaxed) > l.geo().arena_len {
        return Err(corrupt!(
            "committed bytes {} do not cover top {top}",
            h.committed.load(Relaxed)
        ));
    }
    let blocks = scan(l)?;
    // Live blocks of the chain, in offset order: the index and the LRU list may point only here.
    let chain: Vec<u32> = blocks
        .iter()
        .filter(|s| s.state == LIVE)
        .map(|s| s.unit)
        .collect();
    let in_chain = |unit: u32| chain.binary_search(&unit).is_ok();
    let mut c = Checked::default();
    let (mut used, mut values, mut prev_size, mut prev_free) = (0u64, 0u64, 0u32, false);
    for s in &blocks {
        let b = l.block(s.unit)?;
        if b.prev_size.load(Relaxed) != prev_size {
            return Err(corrupt!(
                "block {} records previous size {}, not {prev_size}",
                s.unit,
                b.prev_size.load(Relaxed)
            ));
        }
        match s.state {
            LIVE => {
                if live_key(l, s)?.is_none() {
                    return Err(corrupt!(
                        "live block {} has impossible lengths or a non-UTF-8 key",
                        s.unit
                    ));
                }
                c.objects += 1;
                used += s.size as u64 * UNIT;
                values += b.val_len.load(Relaxed);
                prev_free = false;
            }
            FREE => {
                if prev_free {
                    return Err(corrupt!("free block {} follows another free block", s.unit));
                }
                c.free_blocks += 1;
                c.free_bytes += s.size as u64 * UNIT;
                c.largest_free = c.largest_free.max(s.size as u64 * UNIT);
                prev_free = true;
            }
            other => return Err(corrupt!("block {} has state {other:#x} at rest", s.unit)),
        }
        prev_size = s.size;
    }
    if prev_free {
        return Err(corrupt!(
            "the last block is free but was not given back to the wilderness"
        ));
    }
    if h.last_units.load(Relaxed) != prev_size {
        return Err(corrupt!(
            "last block size is recorded as {}, not {prev_size}",
            h.last_units.load(Relaxed)
        ));
    }
    // Free lists hold exactly the free blocks, each in its own list.
    let mut listed = 0u64;
    for bin in 0..BINS {
        let mut prev = NIL;
        let mut cur = h.free_heads[bin].load(Relaxed);
        let bit = h.free_bitmap[bin / 64].load(Relaxed) >> (bin % 64) & 1 == 1;
        if bit != (cur != NIL) {
            return Err(corrupt!("free-list bitmap disagrees with list {bin}"));
        }
        while cur != NIL {
            listed += 1;
            if listed > c.free_blocks {
                return Err(corrupt!(
                    "free lists hold more blocks than the arena has free (a cycle?)"
                ));
            }
            let b = l.block(cur)?;
            if b.state.load(Relaxed) != FREE
                || arena::bin_of(b.size.load(Relaxed)) != bin
                || b.prev.load(Relaxed) != prev
            {
                return Err(corrupt!("free list {bin} holds block {cur} wrongly"));
            }
            prev = cur;
            cur = b.next.load(Relaxed);
        }
    }
    if listed != c.free_blocks {
        return Err(corrupt!(
            "free lists hold {listed} blocks, the arena has {} free",
            c.free_blocks
        ));
    }
    // LRU list: every live block once, most recent first.
    let mut last_stamp = u64::MAX;
    let on_list = lru::walk(l, c.objects, |unit| {
        let b = l.block(unit)?;
        if b.state.load(Relaxed) != LIVE || !in_chain(unit) {
            return Err(corrupt!(
                "LRU list holds {unit}, which is not a live block of the arena"
            ));
        }
        let stamp = b.stamp.load(Relaxed);
        if stamp > last_stamp {
            return Err(corrupt!("LRU list is out of order at block {unit}"));
        }
        last_stamp = stamp;
        Ok(())
    })?;
    if on_list != c.objects {
        return Err(corrupt!(
            "LRU list holds {on_list} blocks, the arena {} live ones",
            c.objects
        ));
    }
    let indexed = index::validate(l, in_chain)?;
    if indexed != c.objects {
        return Err(corrupt!(
            "index holds {indexed} entries, the arena {} live blocks",
            c.objects
        ));
    }
    if h.objects.load(Relaxed) != c.objects
        || h.used_bytes.load(Relaxed) != used
        || h.value_bytes.load(Relaxed) != values
    {
        return Err(corrupt!(
            "counters say {} objects / {} bytes / {} value bytes, the arena holds {} / {used} / {values}",
            h.objects.load(Relaxed),
            h.used_bytes.load(Relaxed),
            h.value_bytes.load(Relaxed),
            c.objects
        ));
    }
    Ok(c)
}
