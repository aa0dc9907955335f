//! The public store: a named shared-memory object store.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Bincode, Codec};
use crate::error::{Corruption, Error, Result, corrupt};
use crate::index::{self, Found};
use crate::layout::{FLAG_HUGE_ARENA, Geometry, LIVE, NIL, UNIT, block_units, data_off};
use crate::lock::{self, Acquired, LockError, Locked};
use crate::mapping::Mapping;
use crate::memory::MemorySampler;
use crate::optimistic::{self, Outcome};
use crate::options::{Options, PutPolicy};
use crate::os::NoRoom;
use crate::recovery;
use crate::refusal::{Put, Refusal};
use crate::segment;
use crate::stats::Stats;
use crate::{arena, attach, compact, lru};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// A handle on a named store. Cheap to clone; `Send + Sync`; keeps working in a forked child.
/// Dropping a handle never removes the store: only [`Store::destroy`] does.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    m: Mapping,
    options: Options,
    memory: MemorySampler,
    /// The attach-table slot of this handle's process, and the fork generation it was taken
    /// in (a forked child registers itself again on its first operation).
    attach_slot: AtomicUsize,
    attach_gen: AtomicU64,
    /// The owner word the slot was claimed with (pid and pid namespace), so that checking
    /// the slot is still this process's costs one comparison.
    attach_owner: AtomicU64,
    /// Nonzero while a thread of this process registers: the process's pid as the kernel
    /// gives it (so that a value left by a thread of a parent, copied by any kind of fork,
    /// is never taken for this process's). Threads that find registration due at once let
    /// one of them register and use its slot, instead of each claiming one.
    registering: AtomicU64,
    /// When (monotonic ns) this handle last found the attach table full, so that it tries
    /// again now and then ([`REGISTER_RETRY_NS`]) rather than never or on every operation.
    full_at: AtomicU64,
    /// The fork generation and the pid (as the kernel gives it: a child of a raw fork keeps
    /// the generation) with which the mapping's descriptor got an open file description of
    /// that process's own (at open; a forked child shares its parent's until it registers),
    /// through which its attach slot's lock is taken.
    own_fd_gen: AtomicU64,
    own_fd_pid: AtomicU32,
}

/// How often a handle that found the attach table full tries to register again: it reads
/// under the lock meanwhile, and `gc` and `processes` do not see it.
const REGISTER_RETRY_NS: u64 = 1_000_000_000;

const NO_SLOT: usize = usize::MAX;

impl Inner {
    /// The calling thread's line of read counters in this process's attach slot.
    fn counters(&self) -> attach::Lane<'_> {
        let slot = self.attach_slot.load(Relaxed);
        attach::lane(&self.m, (slot != NO_SLOT).then_some(slot))
    }

    /// This process's attach slot if its registration is current (`Some(None)`: the table
    /// was full); `None` if it must register (again): in a forked child (the handle names
    /// the parent's slot), or after the slot was taken from it (pruned as dead).
    fn current_slot(&self) -> Option<Option<usize>> {
        // The generation first: `register` stores it after the slot and owner word, so a
        // current generation comes with them.
        if self.attach_gen.load(Acquire) != crate::os::fork_generation() {
            return None;
        }
        let slot = self.attach_slot.load(Acquire);
        if slot == NO_SLOT {
            let since = crate::os::monotonic_ns().saturating_sub(self.full_at.load(Relaxed));
            return (since < REGISTER_RETRY_NS).then_some(None);
        }
        // The whole owner word: a slot lost and taken by a process of another namespace
        // with the same pid number is not this process's.
        let me = self.attach_owner.load(Relaxed);
        self.m
            .header()
            .attach
            .get(slot)
            .is_some_and(|s| s.owner.load(Relaxed) == me)
            .then_some(Some(slot))
    }

    /// The mapping's descriptor if its open file description is this process's alone, as
    /// the attach slot's lock must be (a lock on a description a forked child shares would
    /// outlive this process); in a forked child, first given a description of its own.
    /// `None` if it cannot be (no `/proc`): the slot is then judged by its pid alone.
    fn lock_fd(&self, generation: u64) -> Option<&std::os::fd::OwnedFd> {
        if !self.fd_is_own(generation) {
            crate::os::own_description(self.m.fd()).ok()?;
            self.own_fd_gen.store(generation, Release);
            self.own_fd_pid.store(std::process::id(), Release);
        }
        Some(self.m.fd())
    }

    /// Whether the mapping's open file description is this process's own (see `own_fd_gen`).
    fn fd_is_own(&self, generation: u64) -> bool {
        self.own_fd_gen.load(Acquire) == generation
            && self.own_fd_pid.load(Acquire) == std::process::id()
    }

    /// Claims a slot of the attach table for this process (`NO_SLOT` if it is full).
    fn register(&self) -> usize {
        let generation = crate::os::fork_generation();
        let me = attach::my_owner();
        let lock = self.lock_fd(generation);
        // The lock of a slot this process held and lost (pruned, or scribbled over): let go
        // of it, or the slot could not be claimed again while this process lives.
        let old = self.attach_slot.load(Relaxed);
        if let (true, false, Some(fd)) = (
            self.attach_gen.load(Relaxed) == generation,
            old == NO_SLOT,
            lock,
        ) {
            let _ = crate::os::ofd_unlock(fd, attach::lock_byte(old));
        }
        let slot = attach::register(&self.m, me, lock).unwrap_or(NO_SLOT);
        if slot == NO_SLOT {
            self.full_at.store(crate::os::monotonic_ns(), Relaxed);
        }
        self.attach_slot.store(slot, Release);
        self.attach_owner.store(me, Release);
        self.attach_gen.store(generation, Release);
        slot
    }
}

/// Clears `Inner::registering` when the registering thread is done (also if it unwinds, so
/// that the other threads do not wait for good).
struct Registering<'a>(&'a AtomicU64);

impl Drop for Registering<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let slot = self.attach_slot.load(Relaxed);
        if slot != NO_SLOT {
            // Clears the slot only if this process owns it (not in a forked child), and
            // lets go of its lock if the description is this process's.
            let own = self.fd_is_own(crate::os::fork_generation());
            attach::deregister(&self.m, slot, own.then(|| self.m.fd()));
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.inner.name)
            .field("options", &self.inner.options)
            .finish()
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey { len: key.len() });
    }
    Ok(())
}

/// The geometry a store of `options` gets, and whether its arena can be committed in huge
/// pages: the flag is recorded only where it can apply, so that the store does not report
/// what it cannot do (an arena under 64 MiB, no huge pages for shared memory).
fn planned(options: &Options) -> Result<(Geometry, bool)> {
    let geo = options.geometry()?;
    let huge_arena = options.huge_arena && arena::huge_step_for(geo.arena_len).is_some();
    Ok((geo, huge_arena))
}

/// Fills the header of a new segment (not published yet) with `options`.
fn init_header(m: &Mapping, name: &str, options: &Options, huge_arena: bool) -> Result<()> {
    let h = m.header();
    let seed = random_seed();
    h.seed[0].store(seed[0], Relaxed);
    h.seed[1].store(seed[1], Relaxed);
    h.capacity.store(options.capacity, Relaxed);
    h.min_free_bits
        .store(options.min_free_mem_pct.to_bits(), Relaxed);
    h.lock_timeout_ns.store(
        options.lock_timeout.as_nanos().min(u64::MAX as u128) as u64,
        Relaxed,
    );
    h.put_policy.store(options.put_policy.to_raw(), Relaxed);
    h.mode.store(options.mode, Relaxed);
    h.flags
        .store(if huge_arena { FLAG_HUGE_ARENA } else { 0 }, Relaxed);
    h.creator_pid.store(crate::os::pid(), Relaxed);
    h.created_ns.store(crate::os::realtime_ns(), Relaxed);
    h.lru_head.store(NIL, Relaxed);
    h.lru_tail.store(NIL, Relaxed);
    for head in h.free_heads.iter() {
        head.store(NIL, Relaxed);
    }
    // SAFETY: the segment is not published yet (`ready` is unset), so no other process uses
    // the mutex's bytes; they lie inside the header.
    unsafe { crate::os::mutex_init(h.mutex.get()) }.map_err(|source| Error::Os {
        op: "pthread_mutex_init",
        name: name.to_owned(),
        source,
    })
}

fn random_seed() -> [u64; 2] {
    use std::hash::{BuildHasher, Hasher};
    // RandomState draws from the OS's random source once per process and varies per instance.
    let mut out = [0u64; 2];
    for (i, word) in out.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::os::monotonic_ns() ^ i as u64);
        h.write_u32(crate::os::pid());
        *word = h.finish();
    }
    out
}

impl Store {
    /// Creates a store; `Error::AlreadyExists` if the name is taken.
    pub fn create(name: &str, options: Options) -> Result<Store> {
        let (geo, huge_arena) = planned(&options)?;
        let m = segment::create(name, geo, options.mode, |m| {
            init_header(m, name, &options, huge_arena)
        })?;
        Store::made(name, m)
    }

    /// Creates a store in place of a segment whose creator died before it was ready; `None`
    /// if it turns out not to be one (see `segment::take_over`).
    fn take_over(name: &str, options: Options) -> Result<Option<Store>> {
        let (geo, huge_arena) = planned(&options)?;
        segment::take_over(name, geo, options.mode, |m| {
            init_header(m, name, &options, huge_arena)
        })?
        .map(|m| Store::made(name, m))
        .transpose()
    }

    /// Opens an existing store by name, from any process of a user allowed to (mode 0600:
    /// the creator's user). Waits up to 3 s for a store that is still being created, and on
    /// for as long as its creator is seen at work (up to 30 s: creating a very large index
    /// can take longer); not at all for one whose creator is gone and that was left
    /// unfinished for 3 s.
    pub fn open(name: &str) -> Result<Store> {
        Store::made(name, segment::open(name)?)
    }

    /// A handle on a segment that is ready, with the options its header records: what the
    /// store really holds (whole pages of arena, a few more objects than asked to a whole
    /// cache line of index, `huge_arena` only where it applies, the file's mode), the same
    /// from every handle.
    fn made(name: &str, m: Mapping) -> Result<Store> {
        let h = m.header();
        let bad_header = |why: &str| Error::BadHeader {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        let options = Options {
            capacity: m.geo().arena_len,
            min_free_mem_pct: f64::from_bits(h.min_free_bits.load(Relaxed)),
            put_policy: PutPolicy::from_raw(h.put_policy.load(Relaxed))
                .ok_or_else(|| bad_header("unknown put policy"))?,
            lock_timeout: Duration::from_nanos(h.lock_timeout_ns.load(Relaxed)),
            max_objects: Some(m.geo().max_live()),
            mode: h.mode.load(Relaxed),
            inline_values: m.geo().inline_values() as u32,
            huge_arena: h.huge_arena(),
        };
        if !(0.0..=1.0).contains(&options.min_free_mem_pct)
            || !crate::options::lock_timeout_ok(options.lock_timeout)
        {
            return Err(bad_header("options in the header are out of range"));
        }
        Ok(Store::from_mapping(name, m, options))
    }

    /// Opens the store, creating it with `options` if it does not exist. The options of an
    /// existing store are kept. A segment whose creator died before finishing it (which
    /// `open` reports as [`Error::NotReady`]) is made into a new store with `options`, in
    /// place: processes that start up and open their store this way need no one to destroy
    /// the remains of a creator killed at the wrong moment.
    pub fn open_or_create(name: &str, options: Options) -> Result<Store> {
        for _ in 0..10 {
            match Store::create(name, options) {
                Err(Error::AlreadyExists(_)) => {}
                other => return other,
            }
            match Store::open(name) {
                Err(Error::NotFound(_)) => continue, // destroyed in between: create again
                Err(Error::NotReady { .. }) => {
                    if let Some(s) = Store::take_over(name, options)? {
                        return Ok(s);
                    }
                    // Taken over by another process (its lock held while it works: the
                    // next open waits for it), finished after all, or gone.
                }
                other => return other,
            }
        }
        Store::open(name)
    }

    /// Removes the store's name. Handles already open keep working; new opens fail.
    pub fn destroy(name: &str) -> Result<()> {
        segment::destroy(name)
    }

    fn from_mapping(name: &str, m: Mapping, options: Options) -> Store {
        let inner = Inner {
            name: name.to_owned(),
            m,
            options,
            memory: MemorySampler::default(),
            attach_slot: AtomicUsize::new(NO_SLOT),
            attach_gen: AtomicU64::new(0),
            attach_owner: AtomicU64::new(0),
            registering: AtomicU64::new(0),
            full_at: AtomicU64::new(0),
            own_fd_gen: AtomicU64::new(crate::os::fork_generation()),
            own_fd_pid: AtomicU32::new(std::process::id()),
        };
        let _ = inner.register();
        Store {
            inner: Arc::new(inner),
        }
    }

    /// Pids of the live processes that have this store open, one entry per open handle
    /// (this process included). Entries of processes that died are pruned.
    pub fn processes(&self) -> Vec<u32> {
        let _ = self.ensure_registered();
        attach::live(&self.inner.m)
    }

    /// Registers this process in the attach table again if its handle's slot is not its
    /// own: in a forked child (the handle names the parent's slot), or after the slot was
    /// taken from it (pruned as dead: its reads in flight would not be seen there). Returns
    /// the slot (`None`: the table is full).
    fn ensure_registered(&self) -> Option<usize> {
        let inner = &*self.inner;
        loop {
            if let Some(slot) = inner.current_slot() {
                return slot;
            }
            // Not the cached pid: a child made by a raw fork (no `pthread_atfork` handlers)
            // still caches its parent's.
            let ours = u64::from(std::process::id());
            let now = inner.registering.load(Acquire);
            if now == ours {
                // Another thread of this process is registering it: use its slot.
                std::thread::yield_now();
                continue;
            }
            if inner
                .registering
                .compare_exchange(now, ours, Acquire, Relaxed)
                .is_ok()
            {
                let _done = Registering(&inner.registering);
                return match inner.current_slot() {
                    Some(slot) => slot,
                    None => Some(inner.register()).filter(|&s| s != NO_SLOT),
                };
            }
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The options the store was created with, `max_objects` as the index really holds
    /// (the same from every handle).
    pub fn options(&self) -> Options {
        self.inner.options
    }

    /// Takes the lock, recovering first if a previous holder died, and runs `f` under it.
    /// A corruption found by `f` flags the store for a rebuild by the next lock holder.
    fn locked<T>(&self, f: impl FnOnce(&Locked) -> Result<T, Corruption>) -> Result<T> {
        self.locked_flagging(true, f)
    }

    /// [`locked`](Store::locked); `flag` says whether a corruption found by `f` flags the
    /// store for a rebuild (not for `check`, which only looks).
    fn locked_flagging<T>(
        &self,
        flag: bool,
        f: impl FnOnce(&Locked) -> Result<T, Corruption>,
    ) -> Result<T> {
        let _ = self.ensure_registered();
        let inner = &*self.inner;
        let h = inner.m.header();
        let l = match lock::lock_for(&inner.m, inner.options.lock_timeout) {
            Ok((l, acquired)) => {
                if acquired == Acquired::OwnerDied || h.recovering.load(Relaxed) != 0 {
                    self.recover(&l);
                }
                l
            }
            Err(LockError::Timeout) => {
                h.lock_timeouts.fetch_add(1, Relaxed);
                return Err(Error::Timeout {
                    name: inner.name.clone(),
                    waited: inner.options.lock_timeout,
                });
            }
            Err(LockError::Reentrant) => return Err(Error::Reentrant),
            Err(LockError::Damaged) => {
                return Err(Error::BadHeader {
                    name: inner.name.clone(),
                    why: "its lock's bytes were overwritten (the mutex kind is wrong), so it cannot be locked safely".into(),
                });
            }
            Err(LockError::Os(code)) => {
                return Err(Error::Os {
                    op: "pthread_mutex_lock",
                    name: inner.name.clone(),
                    source: std::io::Error::from_raw_os_error(code),
                });
            }
        };
        let done = f(&l);
        l.finish();
        done.map_err(|c| {
            if flag {
                l.poison();
            }
            c.named(&inner.name)
        })
    }

    /// Rebuilds the derived structures after a lock holder died (or a corruption was seen).
    fn recover(&self, l: &Locked) {
        l.begin_write();
        let h = l.header();
        if recovery::rebuild(l).is_err() {
            recovery::reset(l);
        }
        l.add_held(&h.recoveries, 1);
        h.recovering.store(0, Relaxed);
        l.mark_consistent();
    }

    // ---- put -------------------------------------------------------------------------------

    /// Stores `value` (serialized with bincode) under `key`, replacing any object there.
    /// `Ok(false)` when it was refused; a refused put leaves an existing object as it
    /// was. A put is refused when less than `min_free_mem_pct` of memory is available (under
    /// `Rotate`, even after evicting), when /dev/shm has no room for the store to grow (under
    /// `Rotate`, even after evicting), and under `Strict` when the store is full: its arena,
    /// or its index (`max_objects`). A replacement needs room for the new value beside the
    /// old one until it is written (the old one is never lost to a put that fails), so a
    /// full `Strict` store refuses even a same-size replacement: remove the key first.
    /// [`try_put`](Store::try_put) says which limit it was; `stats().refused_puts` counts
    /// refusals.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<bool> {
        self.put_as::<Bincode, T>(key, value)
    }

    /// [`put`](Store::put), saying which limit refused the object if one did.
    pub fn try_put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Put> {
        self.try_put_as::<Bincode, T>(key, value)
    }

    /// [`try_put`](Store::try_put) with another [`Codec`].
    pub fn try_put_as<C: Codec, T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Put> {
        check_key(key)?;
        let mut buf = Vec::new();
        C::encode(value, &mut buf).map_err(Error::Encode)?;
        self.try_put_bytes(key, &buf)
    }

    /// [`put`](Store::put) with another [`Codec`].
    pub fn put_as<C: Codec, T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<bool> {
        self.try_put_as::<C, T>(key, value).map(Put::stored)
    }

    /// Stores raw bytes under `key`; no serialization.
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<bool> {
        self.try_put_bytes(key, value).map(Put::stored)
    }

    /// [`put_bytes`](Store::put_bytes), saying which limit refused the object if one did.
    pub fn try_put_bytes(&self, key: &str, value: &[u8]) -> Result<Put> {
        check_key(key)?;
        let units = block_units(key.len(), value.len());
        let capacity = self.inner.m.geo().arena_len;
        if units * UNIT > capacity {
            return Err(Error::ValueTooLarge {
                key_len: key.len(),
                value_len: value.len(),
                needed: units * UNIT,
                capacity,
            });
        }
        let short = self
            .inner
            .memory
            .shortfall(self.inner.options.min_free_mem_pct, units * UNIT);
        let strict = self.inner.options.put_policy == PutPolicy::Strict;
        let early = index::Early::new(&self.inner.m, key.as_bytes());
        let (put, freed) = self.locked(|l| {
            let h = l.header();
            let hash = early.under(l, key.as_bytes());
            let mut old = index::find(l, key.as_bytes(), hash)?;
            let mut freed = 0u64;
            // A refusal after /dev/shm (or the memory cgroup) refused memory is for that,
            // whatever limit came next.
            let no_room = NoRoom::now();
            let refuse = |freed, why| {
                l.add_held(&h.refused_puts, 1);
                let now = NoRoom::now();
                let why = if now.shm != no_room.shm {
                    Refusal::ShmFull
                } else if now.memory != no_room.memory {
                    Refusal::MemoryLow
                } else {
                    why
                };
                Ok((Put::Refused(why), freed))
            };
            // The refusals that need no change come before the write begins: lock-free
            // readers need not retry for them.
            let index_full = old.is_none() && h.index_live.load(Relaxed) >= l.geo().max_live();
            if strict && short > 0 {
                return refuse(0, Refusal::MemoryLow);
            }
            if strict && index_full {
                return refuse(0, Refusal::IndexFull);
            }
            l.begin_write();
            // Memory short on the machine: make room by eviction, or refuse.
            if short > 0 {
                while freed < short {
                    match lru::victim(l, old.map(|f| f.unit))? {
                        Some(v) => freed += self.evict(l, v)?,
                        None => return refuse(freed, Refusal::MemoryLow),
                    }
                }
            }
            // Room in the index.
            while old.is_none() && h.index_live.load(Relaxed) >= l.geo().max_live() {
                match lru::victim(l, None)? {
                    Some(v) if !strict => freed += self.evict(l, v)?,
                    _ => return refuse(freed, Refusal::IndexFull),
                }
            }
            // Room in the arena.
            // Each round evicts an object, so there are at most as many rounds as objects.
            let mut rounds = 0..=l.geo().max_live() + 1;
            let unit = loop {
                if rounds.next().is_none() {
                    return Err(corrupt!("eviction does not make progress"));
                }
                if let Some(unit) = arena::alloc(l, units as u32)? {
                    break unit;
                }
                // Enough free bytes, but scattered: move objects rather than evict them.
                let free = l.geo().arena_len.saturating_sub(h.used_bytes.load(Relaxed));
                if free >= units * UNIT {
                    let region = compact::make_room(l, units as u32)?;
                    // Moving may have moved the object being replaced, whether or not it made
                    // enough room.
                    old = index::find(l, key.as_bytes(), hash)?;
                    if let Some(region) = region
                        && let Some(unit) = arena::alloc_in(l, region, units as u32)?
                    {
                        break unit;
                    }
                }
                if strict {
                    return refuse(freed, Refusal::StoreFull);
                }
                // Rather than evict others, free the object being replaced when its room
                // takes the new block (so, at the latest, when it is the last object left).
                if let Some(f) = old
                    && let Some((unit, bytes)) = reuse_replaced(l, f, units)?
                {
                    freed += bytes;
                    old = None;
                    break unit;
                }
                match lru::victim(l, old.map(|f| f.unit))? {
                    Some(v) => freed += self.evict(l, v)?,
                    // Nothing left to evict (but the object being replaced, whose room was
                    // then the whole arena) and still no room, for an object no larger than
                    // the arena: /dev/shm refused the memory.
                    None => return refuse(freed, Refusal::ShmFull),
                }
            };
            write_block(l, unit, key.as_bytes(), value)?;
            // Counted before a replaced block is retired, so that `stats` read meanwhile
            // (without the lock) never counts less than is stored. The block may be a little
            // larger than asked for (a remainder too small to split).
            l.add_held(
                &h.used_bytes,
                l.block(unit)?.size.load(Relaxed) as u64 * UNIT,
            );
            l.add_held(&h.value_bytes, value.len() as u64);
            match old {
                // A replacement leaves the count as it is: `stats` read meanwhile (without
                // the lock) sees the same number of objects throughout (unless the old
                // object had to go first, to make room: then it is counted out and in).
                Some(f) => {
                    index::repoint(l, f, hash, unit);
                    fault!();
                    freed += retire(l, f.unit)?;
                }
                None => {
                    index::insert(l, hash, unit)?;
                    l.add_held(&h.objects, 1);
                }
            }
            lru::push_front(l, unit)?;
            fault!();
            l.add_held(&h.puts, 1);
            if index::crowded(l) {
                rebuild_index(l)?;
            }
            Ok((Put::Stored, freed))
        })?;
        // The memory estimate counted this put's bytes before it was made: take them back
        // if it stored nothing, and credit what it freed.
        let unstored = if put.stored() { 0 } else { units * UNIT };
        self.inner.memory.freed(freed + unstored);
        Ok(put)
    }

    /// Evicts the entry `found` (as `lru::victim` chose it); returns the bytes freed.
    fn evict(&self, l: &Locked, found: Found) -> Result<u64, Corruption> {
        let bytes = unlink_entry(l, found)?;
        l.add_held(&l.header().evictions, 1);
        Ok(bytes)
    }

    // ---- get -------------------------------------------------------------------------------

    /// The object under `key`, deserialized, or `None`. Refreshes its recency.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get_as::<Bincode, T>(key)
    }

    /// [`get`](Store::get) with another [`Codec`].
    pub fn get_as<C: Codec, T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_bytes(key)? {
            None => Ok(None),
            Some(bytes) => C::decode(&bytes).map(Some).map_err(|why| Error::Decode {
                key: key.to_owned(),
                why,
            }),
        }
    }

    /// The object under `key`, or `default`.
    pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// The raw bytes under `key`, copied out. Takes no lock unless the value is over 64 KiB
    /// or a writer is busy (see docs/design.md, "Lock-free reads").
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        match self.read_unlocked(key, true) {
            Outcome::Hit(value) => Ok(value),
            Outcome::Miss => Ok(None),
            Outcome::Lock => self.get_with(key, <[u8]>::to_vec),
        }
    }

    /// A lock-free look-up, counted in this thread's lane of hits and misses when it answers.
    fn read_unlocked(&self, key: &str, copy: bool) -> Outcome {
        let slot = self.ensure_registered();
        let m = &self.inner.m;
        let line = attach::lane(m, slot);
        let out = match slot {
            // Without an attach slot a process cannot announce reads in flight: it locks.
            None => Outcome::Lock,
            Some(_) => optimistic::read(
                m,
                line.reading,
                key.as_bytes(),
                index::hash(m, key.as_bytes()),
                copy,
            ),
        };
        let counter = match out {
            Outcome::Hit(_) if copy => line.hits,
            Outcome::Miss if copy => line.misses,
            Outcome::Lock => line.locked_reads,
            _ => return out,
        };
        counter.fetch_add(1, Relaxed);
        out
    }

    /// Runs `f` on the bytes under `key` while holding the store's lock: no copy. Keep `f`
    /// short (other processes wait) and do not use the store inside it: whatever needs the
    /// lock there returns `Error::Reentrant` (a lock-free `get` or `has` may succeed).
    pub fn get_with<R>(&self, key: &str, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        check_key(key)?;
        self.locked(|l| {
            // Taken under the lock: `locked` registered this process first.
            let line = self.inner.counters();
            let hash = index::hash(l, key.as_bytes());
            let Some(found) = index::find(l, key.as_bytes(), hash)? else {
                line.misses.fetch_add(1, Relaxed);
                return Ok(None);
            };
            index::check_record(l, found.slot, found.unit)?;
            let b = l.block(found.unit)?;
            // Promotion is lazy (CLOCK-style): mark the entry referenced and let eviction
            // give it a second chance; no list move, no neighbours touched.
            index::mark_referenced(l, found.slot, found.entry);
            fault!();
            line.hits.fetch_add(1, Relaxed);
            let off = data_off(found.unit) + key.len() as u64;
            let len =
                usize::try_from(b.val_len.load(Relaxed)).map_err(|_| corrupt!("value length"))?;
            Ok(Some(f(l.bytes(off, len)?)))
        })
    }

    // ---- the rest of the original API ------------------------------------------------------

    /// Whether `key` is there. Does not refresh recency. Takes no lock unless a writer is busy.
    pub fn has(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        match self.read_unlocked(key, false) {
            Outcome::Hit(_) => return Ok(true),
            Outcome::Miss => return Ok(false),
            Outcome::Lock => {}
        }
        self.locked(|l| {
            let found = index::find(l, key.as_bytes(), index::hash(l, key.as_bytes()))?;
            if let Some(f) = found {
                index::check_record(l, f.slot, f.unit)?;
            }
            Ok(found.is_some())
        })
    }

    /// Removes `key`; `Ok(false)` if it was not there.
    pub fn remove(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let early = index::Early::without_records(&self.inner.m, key.as_bytes());
        let freed = self.locked(|l| {
            l.begin_write();
            let hash = early.under(l, key.as_bytes());
            let Some(found) = index::find(l, key.as_bytes(), hash)? else {
                return Ok(None);
            };
            let freed = unlink_entry(l, found)?;
            l.add_held(&l.header().removes, 1);
            Ok(Some(freed))
        })?;
        if let Some(bytes) = freed {
            self.inner.memory.freed(bytes);
        }
        Ok(freed.is_some())
    }

    /// Number of objects.
    pub fn count(&self) -> Result<usize> {
        self.locked(|l| Ok(l.header().objects.load(Relaxed) as usize))
    }

    /// All keys, in no promised order.
    pub fn keys(&self) -> Result<Vec<String>> {
        self.locked(|l| {
            let mut keys = Vec::with_capacity(live_estimate(l));
            lru::walk(l, l.header().objects.load(Relaxed), |unit| {
                let key = std::str::from_utf8(l.key(unit)?)
                    .map_err(|_| corrupt!("key of block {unit} is not UTF-8"))?;
                keys.push(key.to_owned());
                Ok(())
            })?;
            Ok(keys)
        })
    }

    /// Counters and sizes. Read without the lock: each figure is exact, together they are a
    /// close snapshot.
    pub fn stats(&self) -> Result<Stats> {
        Ok(Stats::read(&self.inner.m, &self.inner.options))
    }

    /// Checks every invariant of the store under its lock; `Error::Corrupt` says what is wrong.
    /// Only looks: a store found corrupt is left as it is (the next operation that meets the
    /// corruption, or [`repair`](Store::repair), rebuilds it). Like every operation that takes
    /// the lock, it first carries out a rebuild already due (a holder died, or an operation
    /// found a corruption), and checks the result.
    pub fn check(&self) -> Result<crate::stats::CheckReport> {
        self.locked_flagging(false, |l| {
            let mut report: crate::stats::CheckReport = recovery::validate(l)?.into();
            report.wilderness_bytes = arena::wilderness_units(l) as u64 * UNIT;
            Ok(report)
        })
    }

    /// Rebuilds the index, LRU list and free lists from the arena, as after a crash (emptying
    /// the store only if its arena is broken beyond repair; counted in `resets`).
    pub fn repair(&self) -> Result<()> {
        self.locked(|l| {
            self.recover(l);
            Ok(())
        })
    }
}

/// Writes key and value into a freshly allocated block and makes it live (the commit point
/// of a put).
fn write_block(l: &Locked, unit: u32, key: &[u8], value: &[u8]) -> Result<(), Corruption> {
    let h = l.header();
    let b = l.block(unit)?;
    b.key_len.store(key.len() as u32, Relaxed);
    b.val_len.store(value.len() as u64, Relaxed);
    b.seq.store(l.add_held(&h.seq, 1), Relaxed);
    fault!();
    b.stamp.store(l.add_held(&h.clock, 1), Relaxed);
    let off = data_off(unit);
    l.write(off, key)?;
    fault!();
    l.write(off + key.len() as u64, value)?;
    fault!();
    b.state.store(LIVE, Release);
    fault!();
    Ok(())
}

/// Removes an entry: marks its block free (the commit point), then drops it from the index,
/// the LRU list and the counts. Returns the bytes freed.
fn unlink_entry(l: &Locked, found: Found) -> Result<u64, Corruption> {
    forget(l, found);
    retire(l, found.unit)
}

/// Drops an entry from the index and the object count (its block is the caller's).
fn forget(l: &Locked, found: Found) {
    index::remove(l, found);
    fault!();
    l.sub_held(&l.header().objects, 1);
}

/// Frees a block that has left the index.
fn retire(l: &Locked, unit: u32) -> Result<u64, Corruption> {
    let size = leave(l, unit)?;
    arena::free(l, unit)?;
    fault!();
    Ok(size)
}

/// Marks a block that has left the index free (the commit point) and takes it off the LRU
/// list and the byte counts; the allocator's part is the caller's. Returns its bytes.
fn leave(l: &Locked, unit: u32) -> Result<u64, Corruption> {
    let h = l.header();
    let b = l.block(unit)?;
    let size = b.size.load(Relaxed) as u64 * UNIT;
    let val = b.val_len.load(Relaxed);
    b.state.store(crate::layout::FREE, Release);
    fault!();
    lru::unlink(l, unit)?;
    fault!();
    // Counted free before the allocator sees it: it decides from `used_bytes` whether to
    // give pages back. (`objects` is the caller's: a replacement does not change it.)
    l.sub_held(&h.used_bytes, size);
    l.sub_held(&h.value_bytes, val);
    Ok(size)
}

/// A rotate-mode replacement whose new value does not fit beside the object it replaces:
/// when freeing that object makes room for the new block (its block with the free space
/// after it, or before it if need be; see `arena::room_for`), free it and carve the new
/// block there, rather than evict other objects so as to keep both until the new value is
/// written. A stop in between leaves the key without a value, as if the put had evicted it
/// (docs/design.md, "Recovery"). The pages the new block will be written to are reserved
/// before the old object is touched, and none of its pages is given back, so a full
/// /dev/shm leaves it as it was (`Ok(None)`, as when there is no such room). Returns the
/// new block and the bytes freed.
fn reuse_replaced(l: &Locked, old: Found, units: u64) -> Result<Option<(u32, u64)>, Corruption> {
    let units = units as u32;
    let Some(room) = arena::room_for(l, old.unit, units)? else {
        return Ok(None);
    };
    let at = l.geo().arena_off + room.start;
    if crate::os::fallocate(l.fd(), at, room.written(units)).is_err() {
        return Ok(None);
    }
    forget(l, old);
    let freed = leave(l, old.unit)?;
    let region = arena::free_for_reuse(l, old.unit, &room)?;
    fault!();
    // Its pages are reserved, so nothing known refuses it; if something did, the next lock
    // holder's rebuild would tidy the free blocks left apart (the put's error says so).
    let unit = arena::alloc_in(l, region, units)?
        .ok_or_else(|| corrupt!("the room freed for a replacement could not be allocated"))?;
    Ok(Some((unit, freed)))
}

/// The object count, bounded by what the index can hold (the header's figure may be
/// scribbled on: never allocate by it unchecked).
fn live_estimate(l: &Locked) -> usize {
    l.header().objects.load(Relaxed).min(l.geo().max_live()) as usize
}

/// Rebuilds the index from the LRU list, clearing its tombstones.
fn rebuild_index(l: &Locked) -> Result<(), Corruption> {
    let mut entries = Vec::with_capacity(live_estimate(l));
    lru::walk(l, l.header().objects.load(Relaxed), |unit| {
        let key = l.key(unit)?;
        let hash = index::hash(l, key);
        let referenced = index::find_unit(l, hash, unit).is_some_and(|f| f.referenced());
        entries.push((hash, unit, referenced));
        Ok(())
    })?;
    index::rebuild(l, entries.into_iter())
}

/// Whether a usable store exists under `name`. Like [`Store::open`], waits up to 3 s for a
/// store that is still being created (a segment of size 0, or whose header is not ready),
/// longer while its creator is seen at work (up to 30 s), and not for one whose creator is
/// gone: `false` then.
pub fn valid(name: &str) -> bool {
    Store::open(name).is_ok()
}

/// Names of the stores on this machine (every segment with shmstore's prefix; use [`valid`]
/// to see which are usable).
pub fn list() -> Result<Vec<String>> {
    segment::list()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store removed when the test ends, however it ends.
    struct Temp(Store);

    impl Temp {
        /// 64 MiB, the memory threshold off.
        fn new(tag: &str) -> Temp {
            Temp::with(tag, Options::default().capacity(64 << 20))
        }

        /// A store created with `options`, the memory threshold off.
        fn with(tag: &str, options: Options) -> Temp {
            let name = format!("test-unit-{tag}-{}", std::process::id());
            Temp(Store::create(&name, options.min_free_mem_pct(0.0)).unwrap())
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = Store::destroy(self.0.name());
        }
    }

    #[test]
    fn inline_copies_answer_gets_and_a_scribbled_copy_is_found_and_mended() {
        use crate::optimistic::{Record, from_record};
        let t = Temp::with(
            "inline",
            Options::default().capacity(1 << 20).inline_values(56),
        );
        let s = &t.0;
        assert_eq!(s.options().inline_values, 56, "one line per record");
        assert_eq!(Store::open(s.name()).unwrap().options().inline_values, 56);
        s.put_bytes("small", b"value").unwrap();
        s.put_bytes("large", &[7; 100]).unwrap();
        let m = &s.inner.m;
        let slot = |key: &str| {
            s.locked(|l| index::find(l, key.as_bytes(), index::hash(l, key.as_bytes())))
                .unwrap()
                .unwrap()
                .slot
        };
        let (small, large) = (slot("small"), slot("large"));
        // The small object is answered from its copy; a key of the same length that is not
        // the copy's is not; the large object has no copy and goes to its block.
        assert!(matches!(
            from_record(m, small, b"small", true),
            Record::Answer(Outcome::Hit(Some(ref v))) if v == b"value"
        ));
        assert!(matches!(
            from_record(m, small, b"smalL", true),
            Record::OtherKey
        ));
        assert!(matches!(
            from_record(m, large, b"large", true),
            Record::NoCopy
        ));
        assert_eq!(s.get_bytes("large").unwrap().unwrap(), [7; 100]);
        // Replacing the small object replaces its copy.
        s.put_bytes("small", b"other").unwrap();
        assert_eq!(s.get_bytes("small").unwrap().unwrap(), b"other");
        s.check().unwrap();
        // Gets read the copy, not the block: with the block's value bytes changed under the
        // lock (and the seqlock word moved on, as a writer leaves it), a lock-free get still
        // answers the copy; the locked path compares the two and reports the mismatch, and
        // the rebuild that follows copies the block again.
        s.locked(|l| {
            l.begin_write();
            let f = index::find(l, b"small", index::hash(l, b"small"))?.unwrap();
            l.write(data_off(f.unit) + 5, b"BLOCK")
        })
        .unwrap();
        assert_eq!(s.get_bytes("small").unwrap().unwrap(), b"other");
        assert!(s.has("small").unwrap());
        let err = s.get_with("small", <[u8]>::to_vec).unwrap_err().to_string();
        assert!(err.contains("inline record"), "{err}");
        assert_eq!(s.get_bytes("small").unwrap().unwrap(), b"BLOCK");
        s.check().unwrap();
        s.put_bytes("small", b"other").unwrap();
        // A scribbled copy: `check` finds it, `repair` copies the block again.
        let small = slot("small");
        s.locked(|l| l.write_record(small, 5, b"X")).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("inline record"), "{err}");
        s.repair().unwrap();
        s.check().unwrap();
        assert_eq!(s.get_bytes("small").unwrap().unwrap(), b"other");
        // A word claiming more bytes than a record holds sends the read to the lock.
        let word = m.record_word(slot("small"));
        word.store(crate::layout::record_word(5, 1 << 20), Relaxed);
        assert!(matches!(
            from_record(m, slot("small"), b"small", true),
            Record::Answer(Outcome::Lock)
        ));
    }

    #[test]
    fn an_index_entry_records_the_size_a_reader_prefetches_by() {
        let t = Temp::new("lines");
        let s = &t.0;
        for (i, len) in [0usize, 100, 4096, 8000, 20_000, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let key = format!("k{len}");
            s.put_bytes(&key, &vec![i as u8; len]).unwrap();
            // Replaced, and moved by a rebuild of the index: the entry follows its block.
            s.put_bytes(&key, &vec![i as u8 + 1; len]).unwrap();
            s.locked(|l| {
                rebuild_index(l)?;
                let f = index::find(l, key.as_bytes(), index::hash(l, key.as_bytes()))?.unwrap();
                let bytes = l.block(f.unit)?.size.load(Relaxed) as u64 * UNIT;
                // The whole block up to 127 lines, not a line more.
                let asked = index::prefetch_len(f.entry);
                assert_eq!(asked, bytes.div_ceil(64).min(127) * 64, "{len}");
                Ok(())
            })
            .unwrap();
            assert_eq!(s.get_bytes(&key).unwrap().unwrap(), vec![i as u8 + 1; len]);
        }
        s.check().unwrap();
    }

    fn memory(s: &Store) -> u64 {
        s.stats().unwrap().memory_bytes
    }

    /// Puts 16 objects of 1 MiB; returns the memory held before and after.
    fn fill(s: &Store) -> (u64, u64) {
        let empty = memory(s);
        for i in 0..16u8 {
            assert!(s.put_bytes(&format!("big{i}"), &vec![i; 1 << 20]).unwrap());
        }
        (empty, memory(s))
    }

    #[test]
    fn a_key_hashed_before_the_lock_is_hashed_again_if_the_seed_changed_meanwhile() {
        let t = Temp::new("reseed");
        let s = &t.0;
        let m = &s.inner.m;
        let early = index::Early::new(m, b"k");
        let kept = s.locked(|l| Ok(early.under(l, b"k"))).unwrap();
        assert_eq!(kept, index::hash(m, b"k"));
        // As if the segment were scribbled between the hash and the lock.
        let h = m.header();
        h.seed[0].store(h.seed[0].load(Relaxed) ^ 1, Relaxed);
        let again = s.locked(|l| Ok(early.under(l, b"k"))).unwrap();
        assert_eq!(again, index::hash(m, b"k"));
        assert_ne!(again, kept);
    }

    #[test]
    fn no_pages_are_given_back_while_a_lock_free_read_is_in_flight() {
        let t = Temp::new("inflight");
        let s = &t.0;
        let (empty, full) = fill(s);
        // As if a reader of this process were paused in the middle of a copy.
        let line = s.inner.counters();
        line.reading.fetch_add(1, Relaxed);
        for i in (0..16u8).step_by(2) {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert!(
            memory(s) >= full - (1 << 20),
            "pages went back under a read in flight: {full} -> {}",
            memory(s)
        );
        // Once the read is over, the next removals give back everything free around them.
        line.reading.fetch_sub(1, Relaxed);
        for i in (1..16u8).step_by(2) {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        let after = memory(s);
        assert!(
            after <= empty + (2 << 20),
            "all removed, memory went {full} -> {after} (empty: {empty})"
        );
        s.check().unwrap();
    }

    #[test]
    fn reader_threads_count_in_lanes_of_their_own_and_every_lane_is_summed() {
        let t = Temp::new("lanes");
        let s = &t.0;
        s.put_bytes("k", b"v").unwrap();
        let before = s.stats().unwrap().hits;
        // Eight threads: whatever lane numbers other tests' threads take meanwhile, these
        // cannot all land on one lane.
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        assert_eq!(s.get_bytes("k").unwrap().unwrap(), b"v");
                    }
                });
            }
        });
        assert_eq!(s.stats().unwrap().hits, before + 80);
        let slot = s.inner.attach_slot.load(Relaxed);
        let h = s.inner.m.header();
        let used = h.lanes[slot]
            .iter()
            .filter(|l| l.hits.load(Relaxed) > 0)
            .count();
        assert!(used >= 2, "eight threads counted in {used} lane(s)");
        // The slot's own line (read by every operation) is not among them.
        assert_eq!(h.attach[slot]._reserved[0].load(Relaxed), 0);
    }

    #[test]
    fn a_read_in_flight_in_any_lane_keeps_pages() {
        let t = Temp::new("lanefly");
        let s = &t.0;
        let (_, full) = fill(s);
        let slot = s.inner.attach_slot.load(Relaxed);
        let lane = &s.inner.m.header().lanes[slot][5];
        lane.reading.fetch_add(1, Relaxed);
        for i in 0..16u8 {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert!(
            memory(s) >= full - (1 << 20),
            "pages went back under a read in flight in lane 5"
        );
        lane.reading.fetch_sub(1, Relaxed);
    }

    #[test]
    fn a_strict_put_refused_for_a_full_index_does_not_disturb_readers() {
        let options = Options::default()
            .capacity(1 << 20)
            .max_objects(48)
            .put_policy(PutPolicy::Strict);
        let t = Temp::with("strictfull", options);
        let s = &t.0;
        let max = s.options().max_objects.unwrap();
        for i in 0..max {
            assert!(s.put_bytes(&format!("k{i}"), b"v").unwrap());
        }
        let word = &s.inner.m.header().seqlock;
        let before = word.load(Relaxed);
        assert!(!s.put_bytes("one-too-many", b"v").unwrap());
        assert_eq!(word.load(Relaxed), before, "a refused put began a write");
        // A replacement is not refused by a full index, and does write.
        assert!(s.put_bytes("k0", b"w").unwrap());
        assert_ne!(word.load(Relaxed), before);
        s.check().unwrap();
    }

    /// Lists a process that has exited, of pid namespace `ns`, in a free attach slot, with a
    /// read in flight in lane `lane`: as a reader killed mid-read leaves it. Returns the slot's
    /// index, the slot and the pid.
    /// A pid namespace id other than this process's (`None` where it cannot be told).
    fn another_namespace() -> Option<u32> {
        crate::os::pid_namespace()
            .id
            .map(|n| n.wrapping_add(1).max(1))
    }

    fn reader_gone_mid_read(
        s: &Store,
        ns: Option<u32>,
        lane: usize,
    ) -> (usize, &crate::layout::AttachSlot, u32) {
        let mut kid = std::process::Command::new("true").spawn().unwrap();
        let pid = kid.id();
        kid.wait().unwrap();
        let h = s.inner.m.header();
        let (i, slot) = h
            .attach
            .iter()
            .enumerate()
            .find(|(_, slot)| slot.pid() == 0)
            .unwrap();
        h.lanes[i][lane].reading.store(1, Relaxed);
        slot.start.store(1, Relaxed);
        slot.owner.store(attach::owner(pid, ns), Relaxed);
        (i, slot, pid)
    }

    #[test]
    fn a_reader_that_died_mid_read_does_not_hold_pages() {
        let t = Temp::new("deadreader");
        let s = &t.0;
        let (empty, full) = fill(s);
        // A process that died in the middle of a read, still listed in the attach table.
        let here = crate::os::pid_namespace().id;
        let (i, slot, _) = reader_gone_mid_read(s, here, 0);
        let h = s.inner.m.header();
        // The first removal that would give pages back finds the count, sees the process is
        // gone and prunes its slot.
        for i in 0..16u8 {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert_eq!(slot.pid(), 0, "the dead reader's slot {i}");
        let after = memory(s);
        assert!(
            after <= empty + (2 << 20),
            "all removed, memory went {full} -> {after} (empty: {empty})"
        );
        // A new owner of the slot starts with no read in flight.
        let again = Store::open(s.name()).unwrap();
        assert_eq!(again.inner.attach_slot.load(Relaxed), i);
        assert!(h.lanes[i].iter().all(|l| l.reading.load(Relaxed) == 0));
    }

    #[test]
    fn a_reader_of_another_pid_namespace_is_never_judged_dead_here() {
        let t = Temp::new("otherns");
        let s = &t.0;
        let (_, full) = fill(s);
        // A process of another pid namespace (a container sharing /dev/shm) mid-read: its
        // pid names nothing here, or another process.
        let here = crate::os::pid_namespace().id;
        let (i, slot, meaningless) = reader_gone_mid_read(s, another_namespace(), 3);
        let h = s.inner.m.header();
        for i in 0..16u8 {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert!(
            memory(s) >= full - (1 << 20),
            "pages went back under a read in flight in another namespace"
        );
        assert!(s.processes().contains(&meaningless), "pruned");
        // Nor is one whose namespace is not known.
        slot.owner.store(attach::owner(meaningless, None), Relaxed);
        assert!(
            s.processes().contains(&meaningless),
            "pruned, namespace unknown"
        );
        // Of this namespace, the dead process goes.
        slot.owner.store(attach::owner(meaningless, here), Relaxed);
        assert!(!s.processes().contains(&meaningless));
        assert_eq!(slot.pid(), 0);
        h.lanes[i][3].reading.store(0, Relaxed);
    }

    #[test]
    fn a_reader_of_another_pid_namespace_is_judged_by_its_slot_lock() {
        let t = Temp::new("otherns-lock");
        let s = &t.0;
        let (empty, full) = fill(s);
        // A process of another pid namespace mid-read, holding its slot's lock through an
        // open file description of its own (here: one this process opens for it).
        let (i, slot, pid) = reader_gone_mid_read(s, another_namespace(), 2);
        let its_fd = crate::os::reopen(s.inner.m.fd()).unwrap();
        assert!(crate::os::ofd_try_lock(&its_fd, attach::lock_byte(i)).unwrap());
        slot.liveness.store(0x5eed_0001, Relaxed);
        // Alive as long as the lock is held: its read keeps the pages.
        for i in 0..16u8 {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert!(
            memory(s) >= full - (1 << 20),
            "pages went back under a read in flight of a process whose lock is held"
        );
        assert!(
            s.processes().contains(&pid),
            "pruned while its lock is held"
        );
        // It dies: the kernel closes its descriptors, and the lock goes with them. The next
        // removal that would give pages back prunes its slot.
        drop(its_fd);
        let (_, refilled) = fill(s);
        assert!(refilled >= full - (1 << 20));
        for i in 0..16u8 {
            assert!(s.remove(&format!("big{i}")).unwrap());
        }
        assert_eq!(slot.pid(), 0, "the dead reader's slot {i}");
        assert_eq!(slot.liveness.load(Relaxed), 0);
        let after = memory(s);
        assert!(
            after <= empty + (2 << 20),
            "all removed, memory went {full} -> {after} (empty: {empty})"
        );
    }

    #[test]
    fn a_handle_holds_its_slot_lock_until_dropped_or_the_slot_is_lost() {
        let t = Temp::new("slotlock");
        let s = &t.0;
        let probe = crate::os::reopen(s.inner.m.fd()).unwrap();
        let locked = |i: usize| crate::os::ofd_locked_elsewhere(&probe, attach::lock_byte(i));
        let other = Store::open(s.name()).unwrap();
        let i = other.inner.attach_slot.load(Relaxed);
        let slot = &s.inner.m.header().attach[i];
        let token = slot.liveness.load(Relaxed);
        assert_ne!(token, 0, "registered without a token");
        assert!(locked(i).unwrap());
        // Its slot taken from it (as if pruned and claimed by a process of another pid
        // namespace): it registers again on its next operation, in another slot, with a new
        // token, and lets go of the old slot's lock.
        let stranger = attach::owner(12345, another_namespace());
        slot.liveness.store(0, Relaxed);
        slot.start.store(0, Relaxed);
        slot.owner.store(stranger, Relaxed);
        assert!(other.has("k").is_ok());
        let j = other.inner.attach_slot.load(Relaxed);
        assert_ne!(j, i);
        let again = s.inner.m.header().attach[j].liveness.load(Relaxed);
        assert!(
            again != 0 && again != token,
            "token {token:#x} then {again:#x}"
        );
        assert!(locked(j).unwrap());
        assert!(!locked(i).unwrap(), "the lost slot's lock is still held");
        slot.owner.store(0, Relaxed);
        drop(other);
        assert!(
            !locked(j).unwrap(),
            "a dropped handle keeps its slot's lock"
        );
        assert_eq!(s.inner.m.header().attach[j].liveness.load(Relaxed), 0);
    }

    #[test]
    fn a_freed_slot_keeps_no_start_time_so_a_claimer_is_judged_by_its_pid() {
        let t = Temp::new("claim");
        let s = &t.0;
        // A handle that comes and goes leaves its slot free, with no start time.
        let other = Store::open(s.name()).unwrap();
        let i = other.inner.attach_slot.load(Relaxed);
        drop(other);
        let slot = &s.inner.m.header().attach[i];
        assert_eq!(slot.owner.load(Relaxed), 0);
        assert_eq!(slot.start.load(Relaxed), 0);
        // A live process (this one) between claiming the slot and storing its start time:
        // judged by its pid alone (in its own namespace), it stays.
        let me = attach::owner(crate::os::pid(), crate::os::pid_namespace().id);
        slot.owner.store(me, Relaxed);
        let _ = s.processes();
        assert_eq!(slot.owner.load(Relaxed), me);
        slot.owner.store(0, Relaxed);
    }

    #[test]
    fn threads_that_find_their_slot_gone_at_once_register_the_process_once() {
        let t = Temp::new("reregister");
        let s = &t.0;
        let h = s.inner.m.header();
        let mine = || {
            h.attach
                .iter()
                .filter(|a| a.pid() == crate::os::pid())
                .count()
        };
        for round in 0..20 {
            // As if another process had pruned this one's slot.
            let slot = s.inner.attach_slot.load(Relaxed);
            attach::deregister(&s.inner.m, slot, Some(s.inner.m.fd()));
            assert_eq!(mine(), 0, "round {round}");
            let go = std::sync::Barrier::new(8);
            let got: Vec<Option<usize>> = std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            go.wait();
                            s.ensure_registered()
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            assert_eq!(mine(), 1, "round {round}: one process, one slot");
            let slot = s.inner.attach_slot.load(Relaxed);
            assert!(
                got.iter().all(|&g| g == Some(slot)),
                "round {round}: every thread uses the one slot {slot}: {got:?}"
            );
        }
    }

    /// `ensure_registered` on another thread, failing the test instead of hanging it.
    fn registers_within_seconds(s: &Store) -> Option<usize> {
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || tx.send(s2.ensure_registered()).unwrap());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("registration did not finish")
    }

    #[test]
    fn a_registration_flag_of_another_process_or_a_finished_thread_is_not_waited_for() {
        let t = Temp::new("regflag");
        let s = &t.0;
        for stale in [1u64, u64::from(std::process::id()) + 1] {
            attach::deregister(
                &s.inner.m,
                s.inner.attach_slot.load(Relaxed),
                Some(s.inner.m.fd()),
            );
            // As copied by a fork from a parent that was registering at that moment.
            s.inner.registering.store(stale, Relaxed);
            let slot = registers_within_seconds(s);
            assert_eq!(slot, Some(s.inner.attach_slot.load(Relaxed)));
            assert_eq!(s.inner.registering.load(Relaxed), 0);
        }
        // A thread of this process registering: others wait for it, then use its slot.
        attach::deregister(
            &s.inner.m,
            s.inner.attach_slot.load(Relaxed),
            Some(s.inner.m.fd()),
        );
        let ours = u64::from(std::process::id());
        s.inner.registering.store(ours, Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || tx.send(s2.ensure_registered()).unwrap());
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "did not wait for the registering thread"
        );
        s.inner.registering.store(0, Relaxed);
        let slot = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(slot, Some(s.inner.attach_slot.load(Relaxed)));
    }

    #[test]
    fn a_handle_that_found_the_attach_table_full_registers_once_a_slot_frees() {
        let t = Temp::new("tablefull");
        let s = &t.0;
        let h = s.inner.m.header();
        // Every free slot taken by a live process (pid 1 of this namespace, judged by its
        // pid alone).
        let init = attach::owner(1, crate::os::pid_namespace().id);
        let taken: Vec<usize> = (0..h.attach.len())
            .filter(|&i| {
                h.attach[i]
                    .owner
                    .compare_exchange(0, init, Relaxed, Relaxed)
                    .is_ok()
            })
            .collect();
        let late = Store::open(s.name()).unwrap();
        assert_eq!(late.inner.attach_slot.load(Relaxed), NO_SLOT);
        // Reads still work (under the lock), counted as locked reads.
        assert!(!late.has("nothing").unwrap());
        // A slot frees; the handle does not scan the table on every operation, but tries
        // again within a second or so.
        h.attach[taken[0]].owner.store(0, Relaxed);
        assert!(!late.has("nothing").unwrap());
        assert_eq!(late.inner.attach_slot.load(Relaxed), NO_SLOT);
        std::thread::sleep(Duration::from_nanos(REGISTER_RETRY_NS + 100_000_000));
        assert!(!late.has("nothing").unwrap());
        assert_eq!(late.inner.attach_slot.load(Relaxed), taken[0]);
        for &i in &taken[1..] {
            h.attach[i].owner.store(0, Relaxed);
        }
    }

    #[test]
    fn pages_go_back_while_another_thread_reads_all_the_time() {
        let t = Temp::new("busyreader");
        let s = &t.0;
        s.put_bytes("hot", &[7u8; 100]).unwrap();
        // A removal waits for the reads in flight (each one copy long) instead of keeping
        // the pages; reads that start meanwhile see the write and touch nothing. A reader
        // the hypervisor deschedules mid-read for longer than that wait keeps the pages
        // of that removal, by design: on a noisy machine one attempt in a few may see it,
        // three in a row would mean the wait does not work.
        // Measured against the memory before the first attempt: pages a failed attempt kept
        // are reused by the next fill and must go back then.
        let mut seen = Vec::new();
        let empty = memory(s);
        for _ in 0..3 {
            let (_, full) = fill(s);
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !stop.load(Relaxed) {
                        assert_eq!(s.get_bytes("hot").unwrap().unwrap(), [7u8; 100]);
                    }
                });
                for i in 0..16u8 {
                    assert!(s.remove(&format!("big{i}")).unwrap());
                }
                stop.store(true, Relaxed);
            });
            let after = memory(s);
            if after <= empty + (4 << 20) {
                return;
            }
            seen.push(format!("{full} -> {after} (empty: {empty})"));
        }
        panic!("all removed under a busy reader, memory went {seen:?}");
    }
}
