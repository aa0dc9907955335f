//! The index: an open-addressing hash table of `u64` slots, linear probing, sized for the
//! store's `max_objects` (not a power of two: see [`home`]).
//!
//! A slot is `EMPTY`, `TOMBSTONE`, or `referenced << 63 | tag << 39 | lines << 32 |
//! (unit + 1)`: the CLOCK bit (read since it was last placed at the LRU head), the top 24
//! bits of the key's hash, the block's size in 64-byte lines up to 127 (how much of it a
//! lock-free reader asks the memory for at once, see [`prefetch_len`]) and the block's
//! offset in units. The bit lives here, not in the block, because
//! lock-free readers set it (`optimistic.rs`): a compare-and-swap from the exact entry they
//! read can only ever mark that entry, while a store into a block they no longer own could
//! land in another object's bytes. The hash is SipHash-1-3 keyed by the store's random
//! seed, so it is the same in every process and hostile keys cannot force long probe chains.
//! Every probe loop stops after visiting each slot once, so a scribbled table cannot make it
//! run forever.
//!
//! In a store created with `Options::inline_values`, each slot also has an inline record
//! (`layout.rs`): a copy of the key and value of the object its entry points at, when they
//! fit, so that a lock-free get can read the value from beside the entry instead of from the
//! block. The block stays the truth; a record is derived data, written under the lock before
//! its slot's entry is stored and rebuilt with the index.

use std::hash::Hasher;
use std::sync::atomic::Ordering::Relaxed;

use siphasher::sip::SipHasher13;

use crate::error::{Corruption, corrupt};
use crate::layout::{BLOCK_HEADER, LIVE, RECORD_HEADER, UNIT, data_off, record_lens, record_word};
use crate::lock::Locked;
use crate::mapping::Mapping;

pub const EMPTY: u64 = 0;
pub const TOMBSTONE: u64 = u64::MAX;

/// The key's hash under the store's seed.
pub fn hash(m: &Mapping, key: &[u8]) -> u64 {
    hash_with(seed(m), key)
}

fn seed(m: &Mapping) -> [u64; 2] {
    let h = m.header();
    [h.seed[0].load(Relaxed), h.seed[1].load(Relaxed)]
}

fn hash_with(seed: [u64; 2], key: &[u8]) -> u64 {
    let mut s = SipHasher13::new_with_keys(seed[0], seed[1]);
    s.write(key);
    s.finish()
}

/// A key hashed before the lock is taken, its home slot's cache line already on its way (so
/// that the index miss, a DRAM access in a large store, overlaps with taking the lock).
#[derive(Debug, Clone, Copy)]
pub struct Early {
    hash: u64,
    seed: [u64; 2],
}

impl Early {
    /// For a put, which writes the record of the slot it fills: the home slot's records are
    /// fetched too.
    pub fn new(m: &Mapping, key: &[u8]) -> Early {
        let early = Early::hashed(m, key);
        prefetch_home(m, early.hash);
        early
    }

    /// For a remove, which reads the slot and the block and writes no record: the slot only.
    pub fn without_records(m: &Mapping, key: &[u8]) -> Early {
        let early = Early::hashed(m, key);
        m.prefetch_slot(home(m, early.hash));
        early
    }

    fn hashed(m: &Mapping, key: &[u8]) -> Early {
        let seed = seed(m);
        Early {
            hash: hash_with(seed, key),
            seed,
        }
    }

    /// The hash to probe with under the lock: the early one, unless the seed changed in
    /// between. Only create writes the seed, so that takes a scribbled segment; the lock's
    /// recovery may then have rebuilt the index under the new seed, and every hash under
    /// the lock must agree with the header, as [`hash`] does.
    pub fn under(self, l: &Locked, key: &[u8]) -> u64 {
        if seed(l) == self.seed {
            self.hash
        } else {
            hash(l, key)
        }
    }
}

/// The slot a probe for `hash` starts at: the hash's low 33 bits (the tag is its top 24)
/// scaled to the table's size by a multiply and a shift, as the table is not a power of two.
pub fn home(m: &Mapping, hash: u64) -> u64 {
    ((u128::from(hash << 31) * u128::from(m.geo().index_slots)) >> 64) as u64
}

/// Starts loading the cache line of `hash`'s home slot, where its probe will begin: called
/// before a lock-free read's seqlock checks so that the index miss, a DRAM access in a large
/// store, overlaps with them instead of following them (see also [`Early`]).
pub fn prefetch_home(m: &Mapping, hash: u64) {
    let i = home(m, hash);
    m.prefetch_slot(i);
    if m.geo().record_len > 0 {
        // The home slot's record, where most keys are, and the next one's: their misses then
        // overlap with the slot's instead of following it. The second record made no
        // difference to W1's gets but took W1's puts on a store with records from ~27% to
        // ~11% slower than without them (3 x 9 interleaved rounds): a new key often lands
        // in the slot after its home.
        m.prefetch_record(i, PREFETCH_RECORD);
        m.prefetch_record(after(m, i), PREFETCH_RECORD);
    }
}

/// Bytes of a record [`prefetch_home`] asks for: its word, a short key and value.
const PREFETCH_RECORD: u64 = 128;

/// The slot after `i` in probe order (the table wraps around).
pub fn after(m: &Mapping, i: u64) -> u64 {
    if i + 1 >= m.geo().index_slots {
        0
    } else {
        i + 1
    }
}

/// The CLOCK bit of an entry.
pub const REFERENCED: u64 = 1 << 63;

/// Where an entry's tag (the hash's top 24 bits) and size start.
const TAG_SHIFT: u32 = 39;
const LINES_SHIFT: u32 = 32;
const LINES_MASK: u64 = 0x7f;

/// An entry's tag for `hash`: its top 24 bits (below the CLOCK bit, above the size).
fn tag(hash: u64) -> u64 {
    hash >> (64 - (63 - TAG_SHIFT))
}

/// The entry for the object of `hash` in block `unit`, whose size it reads (a block it
/// cannot read gets size 0: a hint, never trusted).
fn pack(m: &Mapping, hash: u64, unit: u32) -> u64 {
    let lines = m.block(unit).map_or(0, |b| lines_of(b.size.load(Relaxed)));
    tag(hash) << TAG_SHIFT | lines << LINES_SHIFT | (unit as u64 + 1)
}

/// The size an entry records for a block of `units`: in 64-byte lines, rounded up, at most
/// 127 (8,128 bytes).
pub fn lines_of(units: u32) -> u64 {
    (u64::from(units) * UNIT).div_ceil(64).min(LINES_MASK)
}

/// The size (in 64-byte lines) an entry records.
pub fn lines_in(slot: u64) -> u64 {
    (slot >> LINES_SHIFT) & LINES_MASK
}

/// Bytes of an entry's block a lock-free reader that copies the value asks for as soon as it
/// has read the entry: the header, key and value of a block of up to 8,128 bytes, the start
/// of a larger one. Their misses then overlap with one another instead of the value's
/// waiting for the header's (W5's 4 KiB gets: -19%).
pub fn prefetch_len(slot: u64) -> u64 {
    lines_in(slot) * 64
}

pub fn unit_of(slot: u64) -> u32 {
    (slot as u32).wrapping_sub(1)
}

pub fn tag_matches(slot: u64, hash: u64) -> bool {
    (slot & !REFERENCED) >> TAG_SHIFT == tag(hash)
}

/// Sets the CLOCK bit of the entry in slot `i` if it still holds `seen` (as read by a
/// look-up): writes nothing when the bit is set already, and never changes another entry.
pub fn mark_referenced(m: &Mapping, i: u64, seen: u64) {
    if seen & REFERENCED == 0 && seen != EMPTY {
        let _ = m
            .slot(i)
            .compare_exchange(seen, seen | REFERENCED, Relaxed, Relaxed);
    }
}

/// Clears the CLOCK bit of an entry (its second chance was used).
pub fn clear_referenced(m: &Mapping, found: Found) {
    m.slot(found.slot).fetch_and(!REFERENCED, Relaxed);
}

/// A key found in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub slot: u64,
    pub unit: u32,
    /// The slot's value when it was found.
    pub entry: u64,
}

impl Found {
    fn at(slot: u64, entry: u64) -> Found {
        Found {
            slot,
            unit: unit_of(entry),
            entry,
        }
    }

    /// Whether the entry was read since it was last placed at the LRU head (when found).
    pub fn referenced(&self) -> bool {
        self.entry & REFERENCED != 0
    }
}

/// The entries a probe from `hash` meets whose tag matches it, with their slots, up to the
/// first empty slot. Each slot is visited at most once, so a scribbled table cannot make a
/// probe run forever. Used by the locked look-ups and by lock-free readers alike.
pub fn candidates(m: &Mapping, hash: u64) -> Candidates<'_> {
    Candidates {
        m,
        hash,
        next: home(m, hash),
        left: m.geo().index_slots,
    }
}

/// The iterator [`candidates`] returns: a plain loop over the probe sequence (the adapter
/// chain it replaces cost several times the instructions of the probe itself).
pub struct Candidates<'a> {
    m: &'a Mapping,
    hash: u64,
    /// The next slot to look at.
    next: u64,
    /// Slots not visited yet.
    left: u64,
}

impl Iterator for Candidates<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        while self.left > 0 {
            let i = self.next;
            self.next = after(self.m, i);
            self.left -= 1;
            let s = self.m.slot(i).load(Relaxed);
            if s == EMPTY {
                self.left = 0;
            } else if s != TOMBSTONE && tag_matches(s, self.hash) {
                return Some((i, s));
            }
        }
        None
    }
}

/// Whether the block at `unit` is live and holds `key`.
pub fn block_has_key(l: &Locked, unit: u32, key: &[u8]) -> Result<bool, Corruption> {
    let b = l.block(unit)?;
    if b.state.load(Relaxed) != LIVE {
        return Err(corrupt!("index points at block {unit}, which is not live"));
    }
    if b.key_len.load(Relaxed) as usize != key.len() {
        return Ok(false);
    }
    Ok(l.bytes(data_off(unit), key.len())? == key)
}

/// Finds `key`, whose hash is `hash`.
pub fn find(l: &Locked, key: &[u8], hash: u64) -> Result<Option<Found>, Corruption> {
    for (slot, s) in candidates(l, hash) {
        if block_has_key(l, unit_of(s), key)? {
            return Ok(Some(Found::at(slot, s)));
        }
    }
    Ok(None)
}

/// Finds the entry that points at block `unit`, by hash alone: for a block whose bytes are
/// being moved and cannot be read.
pub fn find_unit(m: &Mapping, hash: u64, unit: u32) -> Option<Found> {
    candidates(m, hash)
        .find(|&(_, s)| unit_of(s) == unit)
        .map(|(slot, s)| Found::at(slot, s))
}

/// Adds an entry for a key known to be absent. Fails only if the table has no free slot,
/// which the store prevents by keeping live entries under `max_live`.
pub fn insert(m: &Locked, hash: u64, unit: u32) -> Result<(), Corruption> {
    insert_marked(m, hash, unit, false)
}

/// [`insert`], with the CLOCK bit given.
fn insert_marked(m: &Locked, hash: u64, unit: u32, referenced: bool) -> Result<(), Corruption> {
    let h = m.header();
    let slots = m.geo().index_slots;
    let mut i = home(m, hash);
    for _ in 0..slots {
        let slot = m.slot(i);
        let s = slot.load(Relaxed);
        if s == EMPTY || s == TOMBSTONE {
            let bit = if referenced { REFERENCED } else { 0 };
            fill_record(m, i, unit);
            slot.store(pack(m, hash, unit) | bit, Relaxed);
            fault!();
            m.add_held(&h.index_live, 1);
            if s == TOMBSTONE {
                m.sub_held(&h.index_tombstones, 1);
            }
            return Ok(());
        }
        i = after(m, i);
    }
    Err(corrupt!("the index has no free slot"))
}

/// Points an existing entry at another block holding a new object (a replacement: the CLOCK
/// bit starts clear).
pub fn repoint(m: &Locked, found: Found, hash: u64, unit: u32) {
    fill_record(m, found.slot, unit);
    m.slot(found.slot).store(pack(m, hash, unit), Relaxed);
}

/// Writes slot `i`'s inline record for the object in block `unit` (in a store with records):
/// a copy of its key and value if they fit, else a word saying there is none. Called before
/// the slot's entry is stored; the block must be complete. A block that is not a sane live
/// block gets no copy (the lock-free read then goes to the block, and the locked path
/// reports it).
fn fill_record(l: &Locked, i: u64, unit: u32) {
    if l.geo().record_len == 0 {
        return;
    }
    let copy = copyable(l, unit).and_then(|(k, v)| {
        let bytes = l.bytes(data_off(unit), (k + v) as usize).ok()?;
        l.write_record(i, 0, bytes).ok()?;
        Some(record_word(k, v))
    });
    fault!();
    l.record_word(i).store(copy.unwrap_or(0), Relaxed);
}

/// The key's and value's lengths of block `unit` if a record of this store copies it: the
/// block is live, its key and value lie inside it, and they fit a record.
fn copyable(l: &Locked, unit: u32) -> Option<(u64, u64)> {
    let b = l.block(unit).ok()?;
    let (k, v) = (b.key_len.load(Relaxed) as u64, b.val_len.load(Relaxed));
    // Lengths come from the segment: checked arithmetic only.
    let kv = k.checked_add(v)?;
    let fits = kv <= l.geo().record_len.saturating_sub(RECORD_HEADER);
    let inside = BLOCK_HEADER.checked_add(kv)? <= u64::from(b.size.load(Relaxed)) * UNIT;
    (b.state.load(Relaxed) == LIVE && fits && inside).then_some((k, v))
}

/// An error unless slot `i`'s record is what [`fill_record`] would write for block `unit` (a
/// store without records: never). [`validate`] checks every record with it, and the locked
/// look-ups check the one they found before they answer: lock-free reads answer from
/// records, so a scribbled one is reported there (which has the store rebuilt) rather than
/// trusted; they come to the lock when a record's lengths are impossible.
pub fn check_record(l: &Locked, i: u64, unit: u32) -> Result<(), Corruption> {
    if record_agrees(l, i, unit)? {
        Ok(())
    } else {
        Err(corrupt!(
            "inline record {i} is not a copy of block {unit}'s key and value"
        ))
    }
}

/// Whether slot `i`'s record is what [`fill_record`] would write for block `unit`.
fn record_agrees(l: &Locked, i: u64, unit: u32) -> Result<bool, Corruption> {
    if l.geo().record_len == 0 {
        return Ok(true);
    }
    let word = l.record_word(i).load(Relaxed);
    let Some((k, v)) = copyable(l, unit) else {
        return Ok(word == 0);
    };
    if record_lens(word) != Some((k, v)) {
        return Ok(false);
    }
    l.record_equals_racy(i, 0, l.bytes(data_off(unit), (k + v) as usize)?)
}

/// Points an existing entry at the block its object was moved to, keeping its CLOCK bit
/// (also one a lock-free reader sets meanwhile: compare-and-swap, not load then store).
pub fn move_entry(m: &Mapping, found: Found, hash: u64, unit: u32) {
    let slot = m.slot(found.slot);
    let entry = pack(m, hash, unit);
    let _ = slot.fetch_update(Relaxed, Relaxed, |cur| Some(entry | (cur & REFERENCED)));
}

/// Removes an entry.
pub fn remove(m: &Locked, found: Found) {
    let h = m.header();
    let next = m.slot(after(m, found.slot)).load(Relaxed);
    if next == EMPTY {
        // Nothing probes past an empty slot, so this one can become empty too.
        m.slot(found.slot).store(EMPTY, Relaxed);
    } else {
        m.slot(found.slot).store(TOMBSTONE, Relaxed);
        fault!();
        m.add_held(&h.index_tombstones, 1);
    }
    m.sub_held(&h.index_live, 1);
}

/// Empties the table.
pub fn clear(m: &Mapping) {
    for i in 0..m.geo().index_slots {
        m.slot(i).store(EMPTY, Relaxed);
    }
    m.header().index_live.store(0, Relaxed);
    m.header().index_tombstones.store(0, Relaxed);
}

/// Whether tombstones have piled up enough that the table should be rebuilt.
pub fn crowded(m: &Mapping) -> bool {
    let h = m.header();
    let used = h
        .index_live
        .load(Relaxed)
        .saturating_add(h.index_tombstones.load(Relaxed));
    used >= m.geo().index_slots / 8 * 7
}

/// Re-inserts every live entry, given as (hash, unit, referenced), into an empty table.
pub fn rebuild(
    m: &Locked,
    entries: impl Iterator<Item = (u64, u32, bool)>,
) -> Result<(), Corruption> {
    clear(m);
    for (hash, unit, referenced) in entries {
        insert_marked(m, hash, unit, referenced)?;
    }
    Ok(())
}

/// Checks the table: every non-empty slot points at a live block of the arena's chain (as
/// `in_chain` says) whose key hashes to the tag, its inline record (if the store keeps
/// records) copies that block, and the counts agree. Returns the number of
/// live entries.
pub fn validate(l: &Locked, in_chain: impl Fn(u32) -> bool) -> Result<u64, Corruption> {
    let h = l.header();
    let (mut live, mut tomb) = (0u64, 0u64);
    for i in 0..l.geo().index_slots {
        let s = l.slot(i).load(Relaxed);
        match s {
            EMPTY => {}
            TOMBSTONE => tomb += 1,
            _ => {
                let unit = unit_of(s);
                if !in_chain(unit) {
                    return Err(corrupt!(
                        "index slot {i} points at {unit}, which is not a live block of the arena"
                    ));
                }
                let b = l.block(unit)?;
                if b.state.load(Relaxed) != LIVE {
                    return Err(corrupt!(
                        "index slot {i} points at block {unit}, which is not live"
                    ));
                }
                let key = l.key(unit)?;
                let hash = self::hash(l, key);
                if !tag_matches(s, hash) {
                    return Err(corrupt!(
                        "index slot {i}: tag does not match the key's hash"
                    ));
                }
                if lines_in(s) != lines_of(b.size.load(Relaxed)) {
                    return Err(corrupt!(
                        "index slot {i}: size {} lines does not match block {unit}'s",
                        lines_in(s)
                    ));
                }
                match find(l, key, hash)? {
                    Some(f) if f.slot == i => {}
                    _ => {
                        return Err(corrupt!(
                            "index slot {i}: its key is not found by a probe from its hash"
                        ));
                    }
                }
                check_record(l, i, unit)?;
                live += 1;
            }
        }
    }
    if live != h.index_live.load(Relaxed) || tomb != h.index_tombstones.load(Relaxed) {
        return Err(corrupt!(
            "index counts {} live / {} tombstones, but holds {live} / {tomb}",
            h.index_live.load(Relaxed),
            h.index_tombstones.load(Relaxed)
        ));
    }
    Ok(live)
}
