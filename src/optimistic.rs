//! Reads that take no lock: `get` and `has` validated by a seqlock over the whole store.
//!
//! A writer makes the header's `seqlock` word odd before its first change and even (and new)
//! after its last one (`Locked::begin_write` and the guard's drop). A reader loads the word,
//! probes the index and copies the value with plain loads, then loads the word again: if it
//! was even and has not changed, nothing was written meanwhile and the copy is exact;
//! otherwise it throws the copy away and tries again, and after a few tries takes the lock.
//!
//! A reader never acts on what it read before that check passes, and every offset it follows
//! is bounds-checked, so a torn read can only send it somewhere else inside the mapping or
//! make it give up. One hazard remains that validation after the fact cannot undo: touching
//! a page that a writer has just given back to the system (a read fault on a tmpfs hole
//! allocates the page again, and raises SIGBUS when /dev/shm is full). So each reader counts
//! itself in flight in its thread's read lane (`attach::lane`), and a writer gives pages
//! back only when no read is in flight ([`quiet`]); see docs/design.md, "Lock-free reads".
//!
//! A get refreshes recency by setting its entry's CLOCK bit in the index with a
//! compare-and-swap from the entry it validated (see `index.rs`), once per placement.
//!
//! In a store with inline records (`Options::inline_values`), a candidate entry whose record
//! holds a copy is answered from the record, beside the index, without touching the block;
//! the same seqlock check covers it.
//!
//! The reader takes the lock instead for a value over [`MAX_VALUE`] (copied under the lock,
//! at memcpy speed, rather than risk retrying a long copy), when the word stays odd (a
//! writer that died, or a repair due, leaves it so until the lock's next holder repairs the
//! store), or for anything inconsistent (the locked path reports the corruption).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::fence;

use crate::attach;
use crate::index;
use crate::layout::{BLOCK_HEADER, LIVE, RECORD_HEADER, UNIT, data_off, record_lens};
use crate::lock::Locked;
use crate::mapping::Mapping;

/// Largest value copied without the lock.
pub const MAX_VALUE: u64 = 64 << 10;

/// Bytes of a block asked for as soon as its index entry is read: for a `has`, the header
/// and key; for a get, the whole block as its entry gives its size (up to 8,128 bytes);
/// then, for a larger value, the rest up to [`PREFETCH_MOST`] once its header gives its
/// size. The misses then overlap with each other and with the key comparison instead of
/// following one another.
const PREFETCH_KEY: u64 = 256;
const PREFETCH_MOST: u64 = 8 << 10;

/// Tries before giving up and taking the lock.
const ATTEMPTS: u32 = 4;

/// What a lock-free read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key is there; its value, if it was asked for.
    Hit(Option<Vec<u8>>),
    Miss,
    /// Take the lock (to copy a large value, after writers kept the word moving, or to let
    /// the locked path see what is wrong).
    Lock,
}

/// A read in flight, counted in its thread's read lane for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn start(reading: &'a AtomicU64) -> InFlight<'a> {
        // Sequentially consistent with the seqlock load that follows and with a writer's
        // `begin_write` and `quiet`: either the writer sees this read in flight, or this read
        // sees the word odd.
        reading.fetch_add(1, SeqCst);
        InFlight(reading)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Never below zero: if this process's slot was taken from it (pruned, claimed and
        // zeroed by another process), a wrapped count would look busy for good.
        let _ = self.0.fetch_update(Release, Relaxed, |n| n.checked_sub(1));
    }
}

/// Looks `key` (hashed to `hash`) up without the lock, copying its value if `copy`, counting
/// each attempt in flight in `reading` (this thread's read lane in its process's slot).
pub fn read(m: &Mapping, reading: &AtomicU64, key: &[u8], hash: u64, copy: bool) -> Outcome {
    let h = m.header();
    index::prefetch_home(m, hash);
    for attempt in 0..ATTEMPTS {
        let in_flight = InFlight::start(reading);
        let before = h.seqlock.load(SeqCst);
        if before & 1 == 1 {
            // A change is under way (or a writer died, or a repair is due): wait a little,
            // as long as a short critical section lasts, not counted in flight (a writer
            // waiting for quiet must not wait for this).
            drop(in_flight);
            for _ in 0..(64u32 << attempt) {
                std::hint::spin_loop();
            }
            continue;
        }
        let (seen, entry) = probe(m, key, hash, copy);
        // Orders the loads of the probe before the second load of the word.
        fence(Acquire);
        if h.seqlock.load(Relaxed) == before {
            if let (Outcome::Hit(Some(_)), Some((slot, value))) = (&seen, entry) {
                // A get refreshes recency: the entry's CLOCK bit, by compare-and-swap from
                // the value just validated (nothing is written once it is set).
                index::mark_referenced(m, slot, value);
            }
            return seen;
        }
        drop(in_flight);
    }
    Outcome::Lock
}

/// One unvalidated look-up (`index::find` without the lock); with a hit, the slot and the
/// entry it held.
fn probe(m: &Mapping, key: &[u8], hash: u64, copy: bool) -> (Outcome, Option<(u64, u64)>) {
    let records = m.geo().record_len > 0;
    for (slot, s) in index::candidates(m, hash) {
        if records {
            match from_record(m, slot, key, copy) {
                Record::Answer(out) => return (out, Some((slot, s))),
                Record::OtherKey => continue,
                Record::NoCopy => {}
            }
        }
        let unit = index::unit_of(s);
        // Header, key and value in flight together, not one by one.
        let asked = if copy {
            index::prefetch_len(s).max(PREFETCH_KEY)
        } else {
            PREFETCH_KEY
        };
        m.prefetch(unit as u64 * UNIT, asked);
        if let Some(out) = candidate(m, unit, key, copy, asked) {
            return (out, Some((slot, s)));
        }
    }
    (Outcome::Miss, None)
}

/// What an inline record says.
pub(crate) enum Record {
    Answer(Outcome),
    /// The record copies another key's object.
    OtherKey,
    /// The record holds no copy: read the block.
    NoCopy,
}

/// What index slot `slot`'s inline record says about `key` (whose entry's tag matched).
pub(crate) fn from_record(m: &Mapping, slot: u64, key: &[u8], copy: bool) -> Record {
    let Some((key_len, val_len)) = record_lens(m.record_word(slot).load(Relaxed)) else {
        return Record::NoCopy;
    };
    if key_len + val_len > m.geo().record_len - RECORD_HEADER {
        // Lengths no record holds (a torn or scribbled word): let the locked path look,
        // before anything is allocated for them.
        return Record::Answer(Outcome::Lock);
    }
    if key_len != key.len() as u64 {
        return Record::OtherKey;
    }
    match m.record_equals_racy(slot, 0, key) {
        Ok(true) => {}
        Ok(false) => return Record::OtherKey,
        Err(_) => return Record::Answer(Outcome::Lock),
    }
    if !copy {
        return Record::Answer(Outcome::Hit(None));
    }
    let mut value = Vec::with_capacity(val_len as usize);
    match m.copy_record_racy(slot, key_len, val_len as usize, &mut value) {
        Ok(()) => Record::Answer(Outcome::Hit(Some(value))),
        Err(_) => Record::Answer(Outcome::Lock),
    }
}

/// What block `unit` says about `key`: `None` if it holds another key. Its first `asked`
/// bytes were prefetched.
fn candidate(m: &Mapping, unit: u32, key: &[u8], copy: bool, asked: u64) -> Option<Outcome> {
    let h = m.header();
    // Only committed pages are backed: nothing beyond them is touched, not even a header.
    let backed = h.committed.load(Relaxed);
    let start = unit as u64 * UNIT;
    if start + BLOCK_HEADER > backed {
        return Some(Outcome::Lock);
    }
    let Ok(b) = m.block(unit) else {
        return Some(Outcome::Lock);
    };
    // The state first: the size, lengths and bytes read after it belong to the block it
    // found live (or the seqlock check will fail).
    if b.state.load(Acquire) != LIVE {
        return Some(Outcome::Lock);
    }
    let end = start + b.size.load(Relaxed) as u64 * UNIT;
    if end > backed || end < start + BLOCK_HEADER {
        return Some(Outcome::Lock);
    }
    let key_len = b.key_len.load(Relaxed) as usize;
    if key_len != key.len() {
        return None;
    }
    if copy && end > start + asked {
        m.prefetch(start + asked, (end - start - asked).min(PREFETCH_MOST));
    }
    let off = data_off(unit);
    if off + key_len as u64 > end {
        return Some(Outcome::Lock);
    }
    match m.equals_racy(off, key) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(_) => return Some(Outcome::Lock),
    }
    if !copy {
        return Some(Outcome::Hit(None));
    }
    let len = b.val_len.load(Relaxed);
    let val_off = off + key_len as u64;
    if len > MAX_VALUE || val_off + len > end {
        return Some(Outcome::Lock);
    }
    let mut value = Vec::with_capacity(len as usize);
    match m.copy_out_racy(val_off, len as usize, &mut value) {
        Ok(()) => Some(Outcome::Hit(Some(value))),
        Err(_) => Some(Outcome::Lock),
    }
}

/// Whether no lock-free read is in flight, so that pages may be given back to the system.
/// Called by a lock holder that has begun a write (the seqlock word is odd): a read that
/// starts after that sees the word odd and touches nothing, so only reads already under way
/// are waited for, and those last one copy of at most [`MAX_VALUE`] bytes. It waits a little
/// (spinning, then yielding: a reader may have been descheduled), and prunes processes that
/// died mid-read; `false` if a read is still in flight after that (the pages then stay).
pub fn quiet(l: &Locked) -> bool {
    let h = l.header();
    fence(SeqCst);
    let busy = |i: usize| attach::reading(h, i);
    for round in 0..QUIET_ROUNDS {
        if !(0..h.attach.len()).any(busy) {
            return true;
        }
        if round < QUIET_ROUNDS - QUIET_YIELDS {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
    attach::prune_slots(l, busy);
    !(0..h.attach.len()).any(busy)
}

/// Rounds of waiting in [`quiet`], the last [`QUIET_YIELDS`] yielding the CPU (to a reader
/// preempted on this core), the others spinning (~1 µs each). The lock is held meanwhile,
/// so the wait stays short: a reader still busy after it keeps the pages where they are.
const QUIET_ROUNDS: u32 = 24;
const QUIET_YIELDS: u32 = 2;
