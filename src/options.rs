//! Options for creating a store.

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::layout::{Geometry, MAX_ARENA, MAX_RECORD, PAGE, RECORD_HEADER, record_len_for};

/// Longest lock timeout a store accepts (an opener trusts the one in the segment, so a
/// scribbled one must not mean waiting forever).
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Shortest: a lock held for the few microseconds of another process's operation (or of
/// a descheduled holder's time slice) must not time out.
pub const MIN_LOCK_TIMEOUT: Duration = Duration::from_millis(1);

/// Whether a store may have this lock timeout.
pub(crate) fn lock_timeout_ok(timeout: Duration) -> bool {
    (MIN_LOCK_TIMEOUT..=MAX_LOCK_TIMEOUT).contains(&timeout)
}

/// What a put does when the store (or the machine) is short of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutPolicy {
    /// Evict least-recently-used objects until the new one fits.
    #[default]
    Rotate,
    /// Evict nothing; the put returns `Ok(false)`.
    Strict,
}

impl PutPolicy {
    pub(crate) fn to_raw(self) -> u32 {
        match self {
            PutPolicy::Rotate => 1,
            PutPolicy::Strict => 2,
        }
    }

    pub(crate) fn from_raw(raw: u32) -> Option<PutPolicy> {
        match raw {
            1 => Some(PutPolicy::Rotate),
            2 => Some(PutPolicy::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PutPolicy::Rotate => "rotate",
            PutPolicy::Strict => "strict",
        }
    }
}

impl FromStr for PutPolicy {
    type Err = Error;
    /// `"rotate"` or `"strict"`, as in the original's `put_policy`.
    fn from_str(s: &str) -> Result<PutPolicy> {
        match s {
            "rotate" => Ok(PutPolicy::Rotate),
            "strict" => Ok(PutPolicy::Strict),
            _ => Err(Error::InvalidOption {
                option: "put_policy",
                why: format!("{s:?}; use \"rotate\" or \"strict\""),
            }),
        }
    }
}

impl std::fmt::Display for PutPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to create a store. `Copy`: pass the same options to several calls. Build it with the
/// methods (`Options::default().capacity(..)`); read it through the fields (for instance from
/// [`Store::options`](crate::Store::options)).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Bytes of objects the store may hold (rounded up to whole pages).
    pub capacity: u64,
    /// Fraction of memory that must stay available.
    pub min_free_mem_pct: f64,
    pub put_policy: PutPolicy,
    pub lock_timeout: Duration,
    /// Objects the index holds at least (`None`: the default for the capacity).
    pub max_objects: Option<u64>,
    /// Permission bits of the segment (0600, or 0660 with group access): read and write
    /// bits only, the owner's both.
    pub mode: u32,
    /// Objects whose key and value take at most this many bytes are also copied beside
    /// their index entry (0: none). See [`inline_values`](Options::inline_values).
    pub inline_values: u32,
    /// Whether the arena is committed in huge pages. See [`huge_arena`](Options::huge_arena).
    pub huge_arena: bool,
}

impl Default for Options {
    /// 256 MiB, 20% of memory kept free, rotate, 30 s lock timeout, mode 0600.
    fn default() -> Options {
        Options {
            capacity: 256 << 20,
            min_free_mem_pct: 0.2,
            put_policy: PutPolicy::Rotate,
            lock_timeout: Duration::from_secs(30),
            max_objects: None,
            mode: 0o600,
            inline_values: 0,
            huge_arena: false,
        }
    }
}

impl Options {
    /// Bytes of objects (with their keys and 48-byte block headers) the store may hold.
    /// Memory is committed as the store fills, not up front.
    pub fn capacity(mut self, bytes: u64) -> Options {
        self.capacity = bytes;
        self
    }

    /// Fraction (0..=1) of the machine's (or the container's) memory that must stay
    /// available; below it, puts rotate or are refused. 0 turns the check off.
    pub fn min_free_mem_pct(mut self, fraction: f64) -> Options {
        self.min_free_mem_pct = fraction;
        self
    }

    pub fn put_policy(mut self, policy: PutPolicy) -> Options {
        self.put_policy = policy;
        self
    }

    /// How long an operation waits for the store's lock before `Error::Timeout` (1 ms to
    /// 1 h).
    pub fn lock_timeout(mut self, timeout: Duration) -> Options {
        self.lock_timeout = timeout;
        self
    }

    /// How many objects the index holds before rotation (default: one per KiB of capacity,
    /// at least 1024). Raise it for stores of many small objects. The index (about 11 bytes
    /// per object, rounded up to whole 2 MiB huge pages from about 94,000 objects: at most
    /// twice that) is reserved in memory when the store is created.
    pub fn max_objects(mut self, n: u64) -> Options {
        self.max_objects = Some(n);
        self
    }

    /// Keep a copy of every object whose key and value together take at most `bytes` bytes
    /// (up to 1016) in an inline record of its index slot: records form an array after the
    /// index, one per slot, so a get can fetch the slot and its record at once, both
    /// addresses following from the key's hash, and never reads the object's block: one
    /// wait for memory instead of two in a row. For stores of many small objects read at
    /// random, much larger than the CPU's caches (W1: gets 10-30% faster, puts 10-30%
    /// slower, which also write the copy; see docs/performance.md).
    ///
    /// Costs a record of `bytes + 8` bytes, rounded up to a multiple of 64, per index slot
    /// (about 4/3 of `max_objects` slots), reserved when the store is created: the rounding
    /// also raises the limit (`inline_values(100)` copies objects of up to 120 bytes, and
    /// [`Store::options`](crate::Store::options) says 120). With the default `max_objects`
    /// (one per KiB of capacity) records of 768 bytes and more take as much memory as the
    /// capacity itself. 0 (the default) keeps no copies.
    pub fn inline_values(mut self, bytes: u32) -> Options {
        self.inline_values = bytes;
        self
    }

    /// Commit the arena (where objects live) in 2 MiB huge pages as it fills, so that a
    /// read of an object at a random place takes no page-table walk (one TLB entry covers
    /// 512 small pages). For stores read at random across more memory than the CPU's TLB
    /// reaches (its 1,500-3,000 entries cover 6-12 MiB of small pages): W5's readers of
    /// 4 KiB objects in a 40 MiB arena made 1-27% more gets/s over ten measurements, W2's
    /// gets of 1 MiB objects 10-14% more (see docs/performance.md); W1's 128-byte objects
    /// gained nothing.
    ///
    /// The cost is in filling: each 2 MiB of fresh arena is a huge page the kernel zeroes
    /// when the store first reaches it (with the store's lock held). On a machine whose
    /// free huge pages are backed by the hypervisor only once touched again (VMs that
    /// report free memory to their host, as the one these figures come from does), that
    /// took 7-10 ms per 2 MiB, against 0.7 ms for 2 MiB of small pages: puts into an empty
    /// store were 2.7 (W1) to 3.5 (W2) times as slow. With a huge page at hand it took 0.2
    /// ms. Pages freed and reused keep the huge pages; those given back to the system
    /// (large objects removed beyond the warm reserve) split them for good: nothing
    /// collapses them again, and `Stats` does not say how much of the arena is still on
    /// huge pages (`/proc/PID/smaps`, `ShmemPmdMapped`, does). Recorded in the store: every
    /// process that fills it follows it. Only arenas of 64 MiB or more (they commit in
    /// steps of at least 2 MiB), on a kernel with transparent huge pages for shared memory
    /// (not `deny`) and `MADV_COLLAPSE` (Linux 6.1 or later), use it; elsewhere the store
    /// is made without it and [`Store::options`](crate::Store::options) says so. Where the
    /// kernel refuses a huge page (none free, huge pages disabled for the process, /dev/shm
    /// too full for a whole one) that piece of the arena takes small pages, as without the
    /// option, and the handle asks again a second later. Off by default.
    pub fn huge_arena(mut self, yes: bool) -> Options {
        self.huge_arena = yes;
        self
    }

    /// Let the owner's group read and write the store too (mode 0660 instead of 0600). Any
    /// process of that group can then read every object and, by scribbling on the segment,
    /// make the store report corruption; use it only for a group you trust.
    pub fn group_access(mut self, yes: bool) -> Options {
        self.mode = if yes { 0o660 } else { 0o600 };
        self
    }

    /// Checks the options and works out the segment's geometry.
    pub(crate) fn geometry(&self) -> Result<Geometry> {
        let bad = |option, why: String| Err(Error::InvalidOption { option, why });
        if self.capacity == 0 {
            return bad(
                "capacity",
                "it is 0; give the store some bytes (e.g. 64 MiB)".into(),
            );
        }
        // The arena is whole pages: the largest capacity is the last page boundary under
        // MAX_ARENA (which is not one).
        let largest_arena = MAX_ARENA / PAGE * PAGE;
        if self.capacity.div_ceil(PAGE).saturating_mul(PAGE) > largest_arena {
            return bad(
                "capacity",
                format!(
                    "{} bytes is more than the largest store, {largest_arena} bytes (4 KiB \
                     under 64 GiB)",
                    self.capacity
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_free_mem_pct) {
            return bad(
                "min_free_mem_pct",
                format!(
                    "{} is outside 0..=1; it is a fraction, e.g. 0.2",
                    self.min_free_mem_pct
                ),
            );
        }
        if self.mode & !0o666 != 0 || self.mode & 0o600 != 0o600 {
            return bad(
                "mode",
                format!(
                    "{:#o} is not a segment's mode: only read and write bits (within 0o666), \
                     the owner's both; use 0o600, or group_access(true) for 0o660",
                    self.mode
                ),
            );
        }
        if !lock_timeout_ok(self.lock_timeout) {
            return bad(
                "lock_timeout",
                format!("{:?} is outside 1 ms..=1 h", self.lock_timeout),
            );
        }
        let max_objects = self.max_objects.unwrap_or((self.capacity / 1024).max(1024));
        if max_objects == 0 || max_objects > u32::MAX as u64 {
            return bad(
                "max_objects",
                format!("{max_objects} is outside 1..={}", u32::MAX),
            );
        }
        let largest = MAX_RECORD - RECORD_HEADER;
        if u64::from(self.inline_values) > largest {
            return bad(
                "inline_values",
                format!(
                    "{} bytes is more than the largest inline copy, {largest} bytes; larger \
                     objects are read from their blocks anyway",
                    self.inline_values
                ),
            );
        }
        let record_len = record_len_for(u64::from(self.inline_values));
        let huge_page = crate::os::huge_page_for_layout().unwrap_or(PAGE as usize) as u64;
        // Every part was checked above; this only guards the arithmetic.
        Geometry::new(self.capacity, max_objects, record_len, huge_page).ok_or_else(|| {
            Error::InvalidOption {
                option: "capacity",
                why: "the segment's size does not fit a 64-bit offset".into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_options_are_errors() {
        let d = Options::default();
        assert!(d.geometry().is_ok());
        assert!(d.lock_timeout(MIN_LOCK_TIMEOUT).geometry().is_ok());
        assert!(d.lock_timeout(MAX_LOCK_TIMEOUT).geometry().is_ok());
        for bad in [
            d.capacity(0),
            d.min_free_mem_pct(-0.1),
            d.min_free_mem_pct(1.5),
            d.min_free_mem_pct(f64::NAN),
            d.lock_timeout(Duration::ZERO),
            d.lock_timeout(Duration::from_nanos(1)),
            d.lock_timeout(MIN_LOCK_TIMEOUT - Duration::from_nanos(1)),
            d.lock_timeout(MAX_LOCK_TIMEOUT + Duration::from_nanos(1)),
            d.capacity(MAX_ARENA + 1),
            d.capacity(MAX_ARENA),
            d.max_objects(0),
            d.inline_values(1017),
        ] {
            assert!(
                matches!(bad.geometry(), Err(Error::InvalidOption { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_largest_capacity_is_the_last_whole_page_under_max_arena() {
        let largest = MAX_ARENA / PAGE * PAGE;
        let d = Options::default().max_objects(1024);
        assert_eq!(d.capacity(largest).geometry().unwrap().arena_len, largest);
        match d.capacity(largest + 1).geometry() {
            Err(Error::InvalidOption { option, why }) => {
                assert_eq!(option, "capacity");
                assert!(why.contains("largest store"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_parses_like_the_original() {
        assert_eq!("rotate".parse::<PutPolicy>().unwrap(), PutPolicy::Rotate);
        assert_eq!("strict".parse::<PutPolicy>().unwrap(), PutPolicy::Strict);
        assert!("lru".parse::<PutPolicy>().is_err());
    }
}
