//! The attach table: which processes have a store open.
//!
//! Each handle registers its process (pid and start time, so a reused pid is not mistaken
//! for it) in a free slot of the header's table, and clears the slot when dropped. A process
//! killed before it could clear its slot leaves a dead entry, which [`live`] prunes. A handle
//! inherited by a forked child registers the child on its first operation there.
//! Registration takes no lock: a slot is claimed with a compare-and-swap on its owner word
//! (pid and pid namespace).
//!
//! Each slot has [`LANES`] read lanes in the header's `lanes`: cache lines of read counters
//! (`hits`, `misses`, `locked_reads`, reads in flight). Each thread uses one lane
//! ([`lane`]), so that threads of one process reading at once do not all write one line,
//! and none writes the slot's own line, which every operation reads; a process that found
//! the table full uses the shared `unattached` line (it reads under the lock: it has
//! nowhere to announce a read in flight).

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::layout::{ATTACH_LOCK_BASE, AttachSlot, Header, LANES, ReadLane};
use crate::mapping::Mapping;
use crate::os;

/// The owner word of a slot held by `pid` of pid namespace `ns` (0: unknown).
pub fn owner(pid: u32, ns: Option<u32>) -> u64 {
    u64::from(ns.unwrap_or(0)) << 32 | u64::from(pid)
}

/// This process's owner word (its cached pid).
pub fn my_owner() -> u64 {
    owner(os::pid(), os::pid_namespace().id)
}

/// Claims a slot for this process, whose owner word is `me` ([`my_owner`]); `None` when
/// the table is full even after pruning. With `lock` (a descriptor of the segment whose open
/// file description is this process's alone), the slot's byte is locked on it first
/// ([`ATTACH_LOCK_BASE`] + slot), so that any process can tell this one's death from the
/// lock's release; without, or if the lock cannot be taken, only the pid tells.
pub fn register(m: &Mapping, me: u64, lock: Option<&OwnedFd>) -> Option<usize> {
    let start = os::process_start_time(me as u32).unwrap_or(0);
    let claim = |i: usize, locked: bool| -> bool {
        let slot = &m.header().attach[i];
        if slot.owner.compare_exchange(0, me, AcqRel, Relaxed).is_err() {
            return false;
        }
        slot.start.store(start, Release);
        slot.liveness
            .store(if locked { new_token(me, start) } else { 0 }, Release);
        // A process that died mid-read left its counts; this one has no read in flight
        // yet. (`hits` and `misses` stay: they are shards of the totals.)
        for l in &m.header().lanes[i] {
            l.reading.store(0, Relaxed);
        }
        true
    };
    for round in 0..2 {
        // Free slots whose byte another description holds: one being claimed, or one whose
        // last owner's description lives on in a forked child that never used the store.
        let mut held_elsewhere = Vec::new();
        for (i, slot) in m.header().attach.iter().enumerate() {
            if slot.owner.load(Relaxed) != 0 {
                continue;
            }
            // The lock before the owner word: whoever sees this process's word in the slot
            // also finds the lock held.
            let locked = match lock.map(|fd| os::ofd_try_lock(fd, lock_byte(i))) {
                Some(Ok(false)) => {
                    held_elsewhere.push(i);
                    continue;
                }
                Some(Ok(true)) => true,
                Some(Err(_)) | None => false,
            };
            if claim(i, locked) {
                return Some(i);
            }
            if let (true, Some(fd)) = (locked, lock) {
                let _ = os::ofd_unlock(fd, lock_byte(i));
            }
        }
        // Once pruning has not freed a slot with a free byte: rather than no slot, one
        // without a token (judged by its pid alone); a claimer that wins it from the
        // process locking it makes that one move on.
        if round == 1
            && let Some(i) = held_elsewhere.into_iter().find(|&i| claim(i, false))
        {
            return Some(i);
        }
        if round == 0 {
            prune(m);
        }
    }
    // For good: from now on a process of this pid namespace may use the store unlisted
    // (see `one_namespace`); of two namespaces (or an unknown one), `u64::MAX`.
    let mark = os::pid_namespace().id.map_or(u64::MAX, u64::from);
    let word = &m.header().unattached.reading;
    let _ = word.compare_exchange(0, mark, AcqRel, Acquire);
    if word.load(Acquire) != mark {
        word.store(u64::MAX, Release);
    }
    // Before this process can take the lock (whose acquisition is acquire-only).
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    None
}

/// A slot's `liveness` token for a registration of `me` started at `start`: never 0, and
/// (a 64-bit hash of the owner, its start time, a count of this process's registrations
/// and the time) not used twice, so that a judge's compare-and-swap from a dead owner's
/// token cannot free a slot claimed again meanwhile.
fn new_token(me: u64, start: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    for word in [me, start, COUNT.fetch_add(1, Relaxed), os::monotonic_ns()] {
        h.write_u64(word);
    }
    h.finish() | 1
}

/// The byte of the segment file whose lock the owner of attach slot `i` holds.
pub fn lock_byte(i: usize) -> u64 {
    ATTACH_LOCK_BASE + i as u64
}

/// Clears the slot this process claimed, and releases its lock on `lock` (the descriptor it
/// was taken through). The pid is asked of the kernel, not the cached one: a child made by
/// a raw fork (no `pthread_atfork` handlers run) caches its parent's, and must not clear the
/// parent's slot when it drops an inherited handle (the parent's reads in flight would no
/// longer be seen).
pub fn deregister(m: &Mapping, slot: usize, lock: Option<&OwnedFd>) {
    let me = owner(std::process::id(), os::pid_namespace().id);
    if let Some(s) = m.header().attach.get(slot)
        && s.owner.load(Acquire) == me
    {
        release(s, me, s.start.load(Acquire));
    }
    // Also when the slot is no longer this process's (taken from it): a forked child that
    // never used the store may hold the description, and the lock, for long after.
    if let Some(fd) = lock {
        let _ = os::ofd_unlock(fd, lock_byte(slot));
    }
}

/// Frees a slot whose owner word and start time were read as `word` and `start`. The start
/// time goes first, so that a process that claims the slot next (its owner word in place a
/// moment before its own start time) is never judged by its predecessor's: when it was
/// read as known, only by a compare-and-swap, and if that fails the slot has changed hands
/// (or pid was reused: the same owner word with another start time) and is left alone;
/// when it was read as 0 ("judge by the pid alone", or not stored yet), unconditionally
/// (a start time stored meanwhile is the owner's being freed, or else a new owner's, which
/// is then judged by its pid alone: the safe side). The owner word is a compare-and-swap
/// too, so a slot claimed by another process in between is left alone.
fn release(s: &AttachSlot, word: u64, start: u64) {
    if start != 0 {
        if s.start.compare_exchange(start, 0, AcqRel, Relaxed).is_err() {
            return;
        }
    } else {
        s.start.store(0, Release);
    }
    // Before the owner word, so a free slot never shows an earlier owner's word; clearing a
    // later owner's by mistake only leaves it judged by its pid (the safe side).
    s.liveness.store(0, Release);
    let _ = s.owner.compare_exchange(word, 0, AcqRel, Relaxed);
}

/// Whether the process `pid`, started at `start` (0: unknown), may still be alive. Only a
/// definite "gone" (or another start time: a reused pid) is dead: pruning a live reader's
/// slot would let pages be punched under its reads.
fn alive(pid: u32, start: u64) -> bool {
    match os::process_state(pid) {
        os::ProcessState::Running(now) => start == 0 || now == start,
        os::ProcessState::Gone => false,
        os::ProcessState::Unknown => true,
    }
}

/// Clears the slots of processes that no longer exist.
fn prune(m: &Mapping) {
    let judge = Judge::new(m);
    for i in 0..m.header().attach.len() {
        judge.prune_slot(i);
    }
}

/// Clears those of the slots `which` picks whose process no longer exists (a writer that
/// found their reads in flight: a reader that died mid-read would otherwise keep pages
/// from being given back).
pub fn prune_slots(m: &Mapping, which: impl Fn(usize) -> bool) {
    let judge = Judge::new(m);
    for i in (0..m.header().attach.len()).filter(|&i| which(i)) {
        judge.prune_slot(i);
    }
}

/// What a process asks to tell whether a slot's owner is gone: its pid (in its own pid
/// namespace), and the slot's lock, through an open file description of the segment that
/// holds no lock of its own (so that every holder's lock shows, this process's included).
struct Judge<'a> {
    m: &'a Mapping,
    /// Opened when first needed (a slot with a token).
    probe: std::cell::OnceCell<Option<OwnedFd>>,
}

impl Judge<'_> {
    fn new(m: &Mapping) -> Judge<'_> {
        Judge {
            m,
            probe: std::cell::OnceCell::new(),
        }
    }

    /// Whether slot `i`'s lock is free (`None`: cannot tell).
    fn lock_free(&self, i: usize) -> Option<bool> {
        let probe = self
            .probe
            .get_or_init(|| os::reopen(self.m.fd()).ok())
            .as_ref()?;
        os::ofd_locked_elsewhere(probe, lock_byte(i))
            .ok()
            .map(|held| !held)
    }

    /// Clears slot `i` if its owner is gone.
    fn prune_slot(&self, i: usize) {
        let Some(slot) = self.m.header().attach.get(i) else {
            return;
        };
        let word = slot.owner.load(Acquire);
        let start = slot.start.load(Acquire);
        let token = slot.liveness.load(Acquire);
        // The owner again: `start` and `token` are then this owner's (or 0 while it claims
        // or releases), never the next owner's.
        if word == 0 || slot.owner.load(Acquire) != word {
            return;
        }
        // By its pid in this namespace; else by its lock, which is taken before the token
        // is stored and released after it is cleared, so a token still in place with the
        // lock free is a dead owner's. The compare-and-swap from the token read is what
        // decides: a token is never used twice, so a slot freed and claimed again meanwhile
        // is left alone.
        let gone = owner_dead(word, start)
            || (token != 0
                && self.lock_free(i) == Some(true)
                && slot
                    .liveness
                    .compare_exchange(token, 0, AcqRel, Relaxed)
                    .is_ok());
        if gone {
            release(slot, word, start);
        }
    }
}

/// Whether the process or thread an owner word ([`owner`]) names, started at `start` (0:
/// unknown), is gone as far as this process can tell. Only a process of the owner's pid
/// namespace can tell (in another one the id names nothing, or another process); an owner
/// or a judge whose namespace is unknown is never judged dead.
fn owner_dead(word: u64, start: u64) -> bool {
    let (pid, ns) = (word as u32, (word >> 32) as u32);
    let judge = os::pid_namespace();
    pid != 0 && ns != 0 && judge.own_proc && judge.id == Some(ns) && !alive(pid, start)
}

/// Whether this process can tell, for every process that may use the store, whether one of
/// its threads is alive: each process in the attach table is of this process's pid namespace
/// (whose /proc this process sees), and so was every process that ever found the table full
/// (such a process uses the store unlisted; the first one writes its namespace into
/// `unattached.reading` for good, `u64::MAX` for two or an unknown one). Thread ids from the
/// lock word are judged only then (`lock.rs`): in another namespace a thread id names
/// another thread, or none.
pub fn one_namespace(m: &Mapping) -> bool {
    let judge = os::pid_namespace();
    let Some(me) = judge.id.filter(|_| judge.own_proc) else {
        return false;
    };
    let h = m.header();
    let unlisted = h.unattached.reading.load(Acquire);
    (unlisted == 0 || unlisted == u64::from(me))
        && h.attach.iter().all(|slot| match slot.owner.load(Acquire) {
            0 => true,
            word => (word >> 32) as u32 == me,
        })
}

/// The owner word ([`owner`]) of the calling thread: its thread id and pid namespace, for
/// claims that a thread holds (`lock.rs`, `orphan_claim`).
pub fn my_thread_owner() -> u64 {
    owner(os::tid(), os::pid_namespace().id)
}

/// Whether the process or thread `word` (an owner word, [`owner`]) names is gone, as far as
/// this process can tell ([`owner_dead`] without a start time; a zombie counts as gone,
/// which for a thread id is exact).
pub fn owner_gone(word: u64) -> bool {
    owner_dead(word, 0)
}

/// The live processes that have the store open (one entry per open handle), after pruning
/// the dead ones.
pub fn live(m: &Mapping) -> Vec<u32> {
    prune(m);
    let mut pids: Vec<u32> = m
        .header()
        .attach
        .iter()
        .map(|s| s.pid())
        .filter(|&p| p != 0)
        .collect();
    pids.sort_unstable();
    pids
}

/// One line of read counters.
pub struct Lane<'a> {
    pub hits: &'a AtomicU64,
    pub misses: &'a AtomicU64,
    /// Lock-free reads in flight (`optimistic.rs`); in `unattached`, the mark of
    /// [`one_namespace`].
    pub reading: &'a AtomicU64,
    pub locked_reads: &'a AtomicU64,
}

impl<'a> From<&'a ReadLane> for Lane<'a> {
    fn from(s: &'a ReadLane) -> Lane<'a> {
        Lane {
            hits: &s.hits,
            misses: &s.misses,
            reading: &s.reading,
            locked_reads: &s.locked_reads,
        }
    }
}

/// The lane the calling thread uses in the process that owns `slot` (`None`: the table
/// was full, and every thread shares `unattached`).
pub fn lane(m: &Mapping, slot: Option<usize>) -> Lane<'_> {
    let h = m.header();
    let Some(i) = slot.filter(|&i| i < h.attach.len()) else {
        return (&h.unattached).into();
    };
    (&h.lanes[i][thread_lane() % LANES]).into()
}

/// This thread's lane number: threads take them in turn as they first read.
fn thread_lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    LANE.with(|l| {
        if l.get() == usize::MAX {
            l.set(NEXT.fetch_add(1, Relaxed) % LANES);
        }
        l.get()
    })
}

/// Whether the process in slot `i` counts a lock-free read in flight in any of its lanes.
pub fn reading(h: &Header, i: usize) -> bool {
    h.attach
        .get(i)
        .is_some_and(|s| s.pid() != 0 && h.lanes[i].iter().any(|l| l.reading.load(Acquire) != 0))
}

/// Totals of the read counters over every line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadTotals {
    pub hits: u64,
    pub misses: u64,
    pub locked_reads: u64,
}

/// Sums the read counters of every line (wrapping: scribbled counters must not panic).
pub fn read_totals(m: &Mapping) -> ReadTotals {
    let h = m.header();
    let mut t = ReadTotals::default();
    for l in std::iter::once(&h.unattached).chain(h.lanes.iter().flatten()) {
        t.hits = t.hits.wrapping_add(l.hits.load(Relaxed));
        t.misses = t.misses.wrapping_add(l.misses.load(Relaxed));
        t.locked_reads = t.locked_reads.wrapping_add(l.locked_reads.load(Relaxed));
    }
    t
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;

    use super::{AttachSlot, owner, release};

    fn slot(word: u64, start: u64) -> AttachSlot {
        AttachSlot {
            owner: AtomicU64::new(word),
            start: AtomicU64::new(start),
            liveness: AtomicU64::new(0),
            _reserved: Default::default(),
        }
    }

    #[test]
    fn a_release_frees_the_owner_it_read() {
        let w = owner(1234, Some(7));
        let s = slot(w, 99);
        release(&s, w, 99);
        assert_eq!((s.owner.load(Relaxed), s.start.load(Relaxed)), (0, 0));
    }

    #[test]
    fn a_late_release_leaves_a_slot_that_changed_hands_alone() {
        // Read as (w, 99); meanwhile freed and claimed by a process with the same owner word
        // (a reused pid) that stored its own start time, or has not stored it yet.
        let w = owner(1234, Some(7));
        for now in [100, 0] {
            let s = slot(w, now);
            release(&s, w, 99);
            assert_eq!(
                s.owner.load(Relaxed),
                w,
                "start {now}: the new owner was freed"
            );
        }
        // Claimed by someone else entirely.
        let s = slot(owner(555, Some(7)), 0);
        release(&s, w, 0);
        assert_eq!(s.owner.load(Relaxed), owner(555, Some(7)));
    }

    #[test]
    fn a_release_read_without_a_start_time_clears_one_stored_meanwhile() {
        // Read while the owner was registering (start 0); it stored its start, then died.
        let w = owner(1234, Some(7));
        let s = slot(w, 42);
        release(&s, w, 0);
        assert_eq!((s.owner.load(Relaxed), s.start.load(Relaxed)), (0, 0));
    }
}
