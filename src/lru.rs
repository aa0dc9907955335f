//! The recency list: live blocks doubly linked through their `prev`/`next` fields, most
//! recently used at the head, eviction from the tail. Links are block offsets in units.

use std::sync::atomic::Ordering::Relaxed;

use crate::error::{Corruption, corrupt};
use crate::index::{self, Found};
use crate::layout::NIL;
use crate::lock::Locked;
use crate::mapping::Mapping;

/// Links a live block in at the head.
pub fn push_front(m: &Mapping, unit: u32) -> Result<(), Corruption> {
    let h = m.header();
    let b = m.block(unit)?;
    let old = h.lru_head.load(Relaxed);
    b.prev.store(NIL, Relaxed);
    b.next.store(old, Relaxed);
    fault!();
    if old == NIL {
        h.lru_tail.store(unit, Relaxed);
    } else {
        m.block(old)?.prev.store(unit, Relaxed);
    }
    h.lru_head.store(unit, Relaxed);
    Ok(())
}

/// Takes a live block out of the list.
pub fn unlink(m: &Mapping, unit: u32) -> Result<(), Corruption> {
    let h = m.header();
    let b = m.block(unit)?;
    let (prev, next) = (b.prev.load(Relaxed), b.next.load(Relaxed));
    if prev == NIL {
        if h.lru_head.load(Relaxed) != unit {
            return Err(corrupt!(
                "LRU: block {unit} has no predecessor but is not the head"
            ));
        }
        h.lru_head.store(next, Relaxed);
        fault!();
    } else {
        m.block(prev)?.next.store(next, Relaxed);
        fault!();
    }
    if next == NIL {
        if h.lru_tail.load(Relaxed) != unit {
            return Err(corrupt!(
                "LRU: block {unit} has no successor but is not the tail"
            ));
        }
        h.lru_tail.store(prev, Relaxed);
    } else {
        m.block(next)?.prev.store(prev, Relaxed);
    }
    Ok(())
}

/// Puts block `new` in the list where block `old` is, taking `old` out.
pub fn replace(m: &Mapping, old: u32, new: u32) -> Result<(), Corruption> {
    let (o, n) = (m.block(old)?, m.block(new)?);
    n.prev.store(o.prev.load(Relaxed), Relaxed);
    n.next.store(o.next.load(Relaxed), Relaxed);
    fault!();
    relink(m, new)
}

/// Points the neighbours named by block `new`'s own links (or the head and tail) at it: for a
/// block whose header, links included, was copied to a new place.
pub fn relink(m: &Mapping, new: u32) -> Result<(), Corruption> {
    let h = m.header();
    let n = m.block(new)?;
    let (prev, next) = (n.prev.load(Relaxed), n.next.load(Relaxed));
    if prev == NIL {
        h.lru_head.store(new, Relaxed);
    } else {
        m.block(prev)?.next.store(new, Relaxed);
    }
    if next == NIL {
        h.lru_tail.store(new, Relaxed);
    } else {
        m.block(next)?.prev.store(new, Relaxed);
    }
    Ok(())
}

/// Marks a block most recently used.
pub fn touch(m: &Mapping, unit: u32) -> Result<(), Corruption> {
    if m.header().lru_head.load(Relaxed) == unit {
        return Ok(());
    }
    unlink(m, unit)?;
    push_front(m, unit)
}

/// The block to evict: the least recently placed one other than `skip` that was not read
/// since it was placed; a read one met at the tail is moved to the head with a new stamp
/// instead (its second chance). This is CLOCK with the list as the clock: a get costs at
/// most one compare-and-swap on its index entry (the CLOCK bit, see `index.rs`), and
/// eviction order stays close to LRU. Returns the victim's index entry.
pub fn victim(l: &Locked, skip: Option<u32>) -> Result<Option<Found>, Corruption> {
    let h = l.header();
    // Each pass either returns or clears one bit; lock-free readers may set bits again
    // meanwhile, so after every block has had its chance the candidate goes regardless.
    let mut chances = l.geo().max_live().min(h.objects.load(Relaxed)) + 1;
    loop {
        let tail = h.lru_tail.load(Relaxed);
        if tail == NIL {
            return Ok(None);
        }
        let cand = if Some(tail) == skip {
            let prev = l.block(tail)?.prev.load(Relaxed);
            if prev == NIL {
                return Ok(None);
            }
            prev
        } else {
            tail
        };
        let key = l.key(cand)?;
        let Some(entry) = index::find_unit(l, index::hash(l, key), cand) else {
            return Err(corrupt!("live block {cand} is not in the index"));
        };
        if !entry.referenced() || chances == 0 {
            return Ok(Some(entry));
        }
        chances -= 1;
        index::clear_referenced(l, entry);
        fault!();
        // Wrapping: a scribbled clock must not panic (check() then reports the order).
        let stamp = l.add_held(&h.clock, 1);
        l.block(cand)?.stamp.store(stamp, Relaxed);
        touch(l, cand)?;
        fault!();
    }
}

/// Walks the list from the head, at most `limit` steps, checking back links.
pub fn walk(
    m: &Mapping,
    limit: u64,
    mut each: impl FnMut(u32) -> Result<(), Corruption>,
) -> Result<u64, Corruption> {
    let h = m.header();
    // No list can be longer than the index holds, whatever a scribbled count says.
    let limit = limit.min(m.geo().max_live());
    let mut prev = NIL;
    let mut cur = h.lru_head.load(Relaxed);
    let mut n = 0u64;
    while cur != NIL {
        if n >= limit {
            return Err(corrupt!(
                "LRU list is longer than the {limit} objects counted (a cycle?)"
            ));
        }
        let b = m.block(cur)?;
        if b.prev.load(Relaxed) != prev {
            return Err(corrupt!("LRU: block {cur} has a wrong back link"));
        }
        each(cur)?;
        n += 1;
        prev = cur;
        cur = b.next.load(Relaxed);
    }
    if h.lru_tail.load(Relaxed) != prev {
        return Err(corrupt!("LRU: the tail is not the last block of the list"));
    }
    Ok(n)
}
