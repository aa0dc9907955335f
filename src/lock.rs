//! The store's lock: a robust, process-shared, error-checking pthread mutex in the header.
//!
//! | `lock_for` result | meaning                                      | what the caller does          |
//! |-------------------|----------------------------------------------|-------------------------------|
//! | `Ok(Clean)`       | taken; the previous holder unlocked normally | its work                      |
//! | `Ok(OwnerDied)`   | taken; the previous holder died holding it   | recover, then its work        |
//! | `Err(Timeout)`    | not taken within the timeout                 | report `Error::Timeout`       |
//! | `Err(Reentrant)`  | this thread holds it already                 | report `Error::Reentrant`     |
//!
//! The fast path is one `trylock`; when it fails, a few more with a short exponential
//! back-off (a few microseconds in all), then `pthread_mutex_clocklock(CLOCK_MONOTONIC)`
//! waits in the kernel, immune to wall-clock jumps, in slices of 100 ms between which it
//! releases a lock whose word names a thread that is gone ([`release_orphan`]); the fine clock is read only then (each
//! acquisition stamps `lock_since_ns` from the coarse one). A [`Locked`]
//! guard proves the lock is held; it is the only way to borrow arena bytes, and dropping it
//! unlocks. A holder that changes anything first calls [`Locked::begin_write`], which makes
//! the header's seqlock word odd; the guard makes it even again (and new) before unlocking,
//! so that lock-free readers (`optimistic.rs`) know to retry. A guard never unlocks a mutex left inconsistent: that would make the mutex
//! unrecoverable (`ENOTRECOVERABLE`) for every process.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU64, fence};
use std::time::{Duration, Instant};

use crate::attach;
use crate::error::Corruption;
use crate::mapping::Mapping;
use crate::os;

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Clean,
    /// The previous holder died holding the lock: the structures may be mid-change.
    OwnerDied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    Timeout,
    Reentrant,
    /// The mutex's bytes were overwritten so that locking it could abort the process.
    Damaged,
    /// Any other pthread error code (a scribbled mutex, for instance).
    Os(i32),
}

/// Proof that this thread holds the store lock.
pub struct Locked<'a> {
    m: &'a Mapping,
    inconsistent: Cell<bool>,
    /// Whether this holder made the seqlock word odd.
    writing: Cell<bool>,
    /// Whether the store must be repaired before readers may trust it again.
    poisoned: Cell<bool>,
    /// Whether the holder's section ran to its end ([`Locked::finish`]). A writing guard
    /// dropped before it did was cut short by a panic inside the section: its change may be
    /// half done. (Not `thread::panicking()`: a `Drop` that uses the store while the thread
    /// unwinds from an unrelated panic finishes its section, and a panic inside a section
    /// of such a `Drop` unwinds past this guard before it aborts, or is caught.)
    finished: Cell<bool>,
}

/// Trylock attempts between the first and the wait in the kernel.
const SPIN_ROUNDS: u32 = 12;

/// Takes the lock of the store mapped by `m`, waiting at most `timeout`.
pub fn lock_for(m: &Mapping, timeout: Duration) -> Result<(Locked<'_>, Acquired), LockError> {
    let mutex = m.header().mutex.get();
    // SAFETY: the mutex lies in the live mapping (its bytes are only read here).
    if !unsafe { os::mutex_kind_ok(mutex) } {
        return Err(LockError::Damaged);
    }
    // SAFETY: the mutex was initialised by the creator before the store was marked ready,
    // and the mapping outlives this call.
    let mut rc = unsafe { os::mutex_trylock(mutex) };
    // Critical sections last well under a microsecond: spin a little (exponential back-off,
    // a few microseconds in all) before sleeping in the kernel, which costs far more than
    // that to wake from. glibc does not spin for robust mutexes itself.
    let mut round = 0;
    while rc == libc::EBUSY && round < SPIN_ROUNDS {
        for _ in 0..(1u32 << round.min(5)) {
            std::hint::spin_loop();
        }
        // SAFETY: as above.
        rc = unsafe { os::mutex_trylock(mutex) };
        round += 1;
    }
    if rc == libc::EBUSY {
        rc = wait(m, timeout);
    }
    let acquired = match rc {
        0 => Acquired::Clean,
        libc::EOWNERDEAD => Acquired::OwnerDied,
        libc::ETIMEDOUT => return Err(LockError::Timeout),
        libc::EDEADLK => return Err(LockError::Reentrant),
        other => return Err(LockError::Os(other)),
    };
    let h = m.header();
    h.lock_owner.store(os::pid(), Relaxed);
    // Coarse: a clock read on every acquisition must be cheap, and `Stats::lock_held_ns`
    // is read for holders stuck for far longer than its resolution.
    h.lock_since_ns.store(os::coarse_monotonic_ns(), Relaxed);
    if acquired == Acquired::OwnerDied {
        // Recorded before anything else, so that a recovery interrupted by a panic is still
        // done by the next holder.
        h.recovering.store(1, Relaxed);
    }
    let guard = Locked {
        m,
        inconsistent: Cell::new(acquired == Acquired::OwnerDied),
        writing: Cell::new(false),
        poisoned: Cell::new(false),
        finished: Cell::new(false),
    };
    Ok((guard, acquired))
}

/// How often a process waiting for the lock looks whether the lock word names a thread that
/// is gone ([`release_orphan`]), and it looks once more when the wait times out. A holder
/// keeps the lock well under a microsecond, or a few milliseconds when descheduled; a wait
/// this long is rare, and the look costs a read of one /proc file.
const ORPHAN_CHECK: Duration = Duration::from_millis(100);

/// Waits for the lock for at most `timeout`, in slices of [`ORPHAN_CHECK`], releasing an
/// orphaned lock after each slice that times out (the last one too), and trying the lock
/// once more at the end. Returns the pthread error code, as `mutex_lock_for` does.
fn wait(m: &Mapping, timeout: Duration) -> i32 {
    let mutex = m.header().mutex.get();
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        // SAFETY: the mutex was initialised by the creator before the store was marked
        // ready, and the mapping outlives this call.
        let rc = unsafe { os::mutex_lock_for(mutex, left.min(ORPHAN_CHECK)) };
        if rc != libc::ETIMEDOUT {
            return rc;
        }
        let released = release_orphan(m);
        if released || left <= ORPHAN_CHECK {
            // SAFETY: as above. After a release (this waiter's or another's) the word says
            // the owner died: this gets EOWNERDEAD, unless another waiter was quicker.
            let rc = unsafe { os::mutex_trylock(mutex) };
            if rc != libc::EBUSY {
                return rc;
            }
        }
        if left <= ORPHAN_CHECK {
            return libc::ETIMEDOUT;
        }
    }
}

/// A claim this thread found held by another: in which store (its header's address in
/// this process), which claim word, and when it was first seen so.
#[derive(Clone, Copy)]
struct SeenClaim {
    store: usize,
    claim: u64,
    since: Instant,
}

thread_local! {
    /// The `orphan_claim` this thread last found held by another. Still held, unchanged, a
    /// wait slice or more later, it is stuck (a claim lasts microseconds): a scribble, or a
    /// claimer that cannot be judged. Forgotten when the claim is found free or won.
    static CLAIM_SEEN: Cell<Option<SeenClaim>> = const { Cell::new(None) };
}

/// How long a releaser may take from its last look at the word and the thread to the swap;
/// a look that took longer (descheduled) is made again, a few times at most.
const CLAIM_FRESH: Duration = Duration::from_millis(5);

/// A lock word can name a thread that no longer exists without saying that its owner died:
/// a scribbled word, or an owner whose robust list the kernel could not walk when it exited.
/// Nobody would ever unlock it, and every operation would wait its full timeout until the
/// store is destroyed. When the thread it names is gone, and that can be told from here
/// ([`attach::one_namespace`]), this does what the kernel does when a robust mutex's owner
/// dies: the next locker gets `EOWNERDEAD` and rebuilds the store, as after any holder's
/// death. (A thread's robust list is walked when it exits, before its id is released: the
/// word of a holder that died the usual way says so by the time its id is gone.) A word
/// with waiters but no thread id at all (which glibc never writes, nor takes) is released
/// the same way, without judging anything.
///
/// One releaser at a time, by the header's `orphan_claim`, a thread's claim. It is taken from
/// 0; from a claimer thread that is gone; from this thread's own id (this thread is not
/// releasing, so the claim is a dead claimer's whose id it reuses); or from a claim this
/// thread saw held, unchanged, in this store at least a wait slice ago ([`SeenClaim`]).
/// Under the claim it looks at the word and the thread again and swaps right after a fresh
/// look ([`CLAIM_FRESH`]): the word it swaps is then, short of a reused thread id within
/// microseconds, the orphan's, not that of a new holder whose thread reuses the id.
/// Returns whether it released the word.
fn release_orphan(m: &Mapping) -> bool {
    let h = m.header();
    let mutex = h.mutex.get();
    // SAFETY: as in `wait`.
    let Some(word) = (unsafe { os::mutex_word(mutex) }) else {
        return false;
    };
    let tid = os::mutex_word_owner(word);
    if word == 0 || os::mutex_word_owner_died(word) {
        return false;
    }
    let gone = || tid == 0 || os::process_state(tid) == os::ProcessState::Gone;
    if (tid != 0 && !attach::one_namespace(m)) || !gone() {
        return false;
    }
    let me = attach::my_thread_owner();
    let store = std::ptr::from_ref(h) as usize;
    // The claim this thread last saw held in this store, and since when.
    let seen = CLAIM_SEEN.get().filter(|seen| seen.store == store);
    let stuck =
        |other: u64| seen.is_some_and(|s| s.claim == other && s.since.elapsed() >= ORPHAN_CHECK);
    let claimed = match h.orphan_claim.load(Acquire) {
        0 => h.orphan_claim.compare_exchange(0, me, AcqRel, Relaxed),
        other if (other == me && me >> 32 != 0) || attach::owner_gone(other) || stuck(other) => {
            h.orphan_claim.compare_exchange(other, me, AcqRel, Relaxed)
        }
        other => Err(other),
    };
    match claimed {
        Err(other) if other != 0 => {
            if seen.is_none_or(|s| s.claim != other) {
                CLAIM_SEEN.set(Some(SeenClaim {
                    store,
                    claim: other,
                    since: Instant::now(),
                }));
            }
            return false;
        }
        Err(_) => return false,
        Ok(_) => CLAIM_SEEN.set(None),
    }
    let mut released = false;
    for _ in 0..3 {
        let at = Instant::now();
        // Under the claim, look again: the word must still be the one read, naming a thread
        // that is still gone.
        // SAFETY: as in `wait`.
        let still = unsafe { os::mutex_word(mutex) } == Some(word) && gone();
        if !still {
            break;
        }
        if at.elapsed() < CLAIM_FRESH {
            // SAFETY: as in `wait`; the word names a gone thread (or none), and only this
            // claim holder may move it off that thread's id meanwhile.
            released = unsafe { os::mutex_release_orphan(mutex, word) };
            break;
        }
    }
    let _ = h.orphan_claim.compare_exchange(me, 0, AcqRel, Relaxed);
    released
}

impl Locked<'_> {
    /// Adds `n` (wrapping) to a header word that only the lock's holder changes, and returns
    /// the new value. A load and a store rather than a locked read-modify-write: the lock
    /// (which `self` proves is held) already excludes other writers, and on x86 a locked
    /// instruction also waits for every store before it to reach the cache (a put's block
    /// lines are cache misses).
    pub fn add_held(&self, word: &AtomicU64, n: u64) -> u64 {
        let new = word.load(Relaxed).wrapping_add(n);
        word.store(new, Relaxed);
        new
    }

    /// Subtracts `n` (wrapping) from a word only the lock's holder changes; see
    /// [`add_held`](Locked::add_held).
    pub fn sub_held(&self, word: &AtomicU64, n: u64) {
        word.store(word.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Announces a change to lock-free readers: makes the seqlock word odd until the guard is
    /// dropped. Call before the first store to anything a reader looks at. `fetch_or`, not
    /// an increment: a holder that died mid-change left the word odd, and it must stay odd
    /// until the change is repaired. Sequentially consistent, because a punch of pages reads
    /// the readers' in-flight counts after it (see `optimistic::quiet`).
    pub fn begin_write(&self) {
        if !self.writing.replace(true) {
            self.m.header().seqlock.fetch_or(1, SeqCst);
            // The read-modify-write orders only what came before it: without this fence a
            // weakly ordered CPU (AArch64's ldaxr/stlxr) may show this holder's next stores
            // before the odd word, to a reader that then validates a torn copy.
            fence(Release);
        }
    }

    /// Flags the store for repair by the next holder, and leaves the seqlock word odd until
    /// then, so that lock-free readers stop trusting it meanwhile (they take the lock, which
    /// repairs it first). For a corruption found under the lock.
    /// Records that the section ran to its end (its closure returned, `Ok` or `Err`): see
    /// `finished`.
    pub fn finish(&self) {
        self.finished.set(true);
    }

    pub fn poison(&self) {
        self.begin_write();
        self.poisoned.set(true);
        self.m.header().recovering.store(1, Relaxed);
    }

    /// Marks the mutex consistent after a recovery (a no-op if it was taken cleanly).
    pub fn mark_consistent(&self) {
        if self.inconsistent.replace(false) {
            // SAFETY: this thread holds the mutex, which lock_for returned with EOWNERDEAD.
            unsafe { os::mutex_consistent(self.m.header().mutex.get()) };
        }
    }

    /// The key of the block at `unit` (its `key_len` bytes after the block header).
    pub fn key(&self, unit: u32) -> Result<&[u8], Corruption> {
        let len = self.m.block(unit)?.key_len.load(Relaxed) as usize;
        self.bytes(crate::layout::data_off(unit), len)
    }

    /// Borrows `len` arena bytes at byte offset `off`, for as long as the lock is held.
    pub fn bytes(&self, off: u64, len: usize) -> Result<&[u8], Corruption> {
        // SAFETY: `self` proves the lock is held, and the slice cannot outlive `self`.
        unsafe { self.m.slice(off, len) }
    }
}

impl Deref for Locked<'_> {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        self.m
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Reached with `inconsistent` set only if recovery panicked; `recovering` is still set
        // in the header, so the next holder recovers again. Unlocking an inconsistent robust
        // mutex would instead make it unusable for good.
        let h = self.m.header();
        if self.writing.get() {
            if !self.finished.get() || self.poisoned.get() {
                // A change may be half done (or the store is corrupt): readers keep retrying,
                // and fall back to the lock, until the next holder has repaired it.
                h.recovering.store(1, Relaxed);
            } else {
                // Odd to even: everything written under the lock is visible to a reader
                // that sees the new value.
                h.seqlock.fetch_add(1, Release);
            }
        }
        self.mark_consistent();
        h.lock_owner.store(0, Relaxed);
        // SAFETY: this thread holds the mutex (the guard exists only while it does).
        unsafe { os::mutex_unlock(self.m.header().mutex.get()) };
    }
}
