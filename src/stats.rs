//! What a store reports about itself.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::mapping::Mapping;
use crate::options::Options;
use crate::recovery::Checked;

/// Counters and sizes of a store, shared by every process that uses it.
///
/// Read without the lock, one figure after another: each is exact whenever no operation is
/// under way, and a close snapshot when one is. While an object is being replaced,
/// `used_bytes` and `value_bytes` may count the new block as well as the old one for a
/// moment, never less than is stored, and `objects` does not move (unless the object being
/// replaced has to go first to make room for its new value, in a store too full for both).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Objects stored.
    pub objects: u64,
    /// Bytes of the arena taken by objects (block headers, keys and values).
    pub used_bytes: u64,
    /// Bytes of the values alone.
    pub value_bytes: u64,
    /// Bytes the arena may hold.
    pub capacity: u64,
    /// Bytes of the arena reserved (`fallocate`) from its start so far.
    pub committed_bytes: u64,
    /// Bytes of memory the whole segment holds right now (header, index and arena pages);
    /// falls when large objects are removed or evicted.
    pub memory_bytes: u64,
    /// Objects the index accepts before rotation.
    pub max_objects: u64,
    /// Largest object (key and value) copied into an inline record beside the index; 0 for
    /// a store without records (see `Options::inline_values`).
    pub inline_values: u64,
    /// Whether the store commits its arena in huge pages (`Options::huge_arena`).
    pub huge_arena: bool,
    pub hits: u64,
    pub misses: u64,
    /// Gets and `has` calls that took the lock instead of reading without it: a value over
    /// 64 KiB, a writer busy for longer than a few retries, or a recovery due. A high share
    /// of `hits + misses` means readers are queueing behind writers.
    pub locked_reads: u64,
    /// Puts that stored their object.
    pub puts: u64,
    /// Puts the policy refused.
    pub refused_puts: u64,
    pub removes: u64,
    /// Objects rotated out to make room.
    pub evictions: u64,
    /// Objects moved inside the arena to make room (instead of evicting).
    pub moves: u64,
    /// Operations that gave up waiting for the lock.
    pub lock_timeouts: u64,
    /// Times a process repaired the store after a lock holder died (or after corruption).
    pub recoveries: u64,
    /// Times the store was found beyond repair and emptied.
    pub resets: u64,
    /// Pid holding the lock right now (0: free).
    pub lock_owner: u32,
    /// For how long the current holder has held the lock, in nanoseconds (0: free), to the
    /// resolution of the kernel's coarse clock (one scheduler tick, 1-10 ms).
    pub lock_held_ns: u64,
    /// Pids of the live processes that have the store open, one entry per open handle.
    pub processes: Vec<u32>,
    /// Pid of the creator.
    pub creator_pid: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// `rotate` or `strict`.
    pub put_policy: &'static str,
    pub min_free_mem_pct: f64,
    /// Permission bits of the segment.
    pub mode: u32,
}

impl Stats {
    pub(crate) fn read(m: &Mapping, options: &Options) -> Stats {
        let h = m.header();
        let lock_owner = h.lock_owner.load(Relaxed);
        let reads = crate::attach::read_totals(m);
        Stats {
            objects: h.objects.load(Relaxed),
            used_bytes: h.used_bytes.load(Relaxed),
            value_bytes: h.value_bytes.load(Relaxed),
            capacity: m.geo().arena_len,
            committed_bytes: h.committed.load(Relaxed),
            memory_bytes: crate::os::allocated_bytes(m.fd()).unwrap_or(0),
            max_objects: m.geo().max_live(),
            inline_values: m.geo().inline_values(),
            huge_arena: h.huge_arena(),
            hits: reads.hits,
            misses: reads.misses,
            locked_reads: reads.locked_reads,
            puts: h.puts.load(Relaxed),
            refused_puts: h.refused_puts.load(Relaxed),
            removes: h.removes.load(Relaxed),
            evictions: h.evictions.load(Relaxed),
            moves: h.moves.load(Relaxed),
            lock_timeouts: h.lock_timeouts.load(Relaxed),
            recoveries: h.recoveries.load(Relaxed),
            resets: h.resets.load(Relaxed),
            lock_owner,
            lock_held_ns: if lock_owner == 0 {
                0
            } else {
                crate::os::coarse_monotonic_ns().saturating_sub(h.lock_since_ns.load(Relaxed))
            },
            processes: crate::attach::live(m),
            creator_pid: h.creator_pid.load(Relaxed),
            created_ns: h.created_ns.load(Relaxed),
            put_policy: options.put_policy.as_str(),
            min_free_mem_pct: options.min_free_mem_pct,
            mode: h.mode.load(Relaxed),
        }
    }

    /// Hits over all gets (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let gets = self.hits as f64 + self.misses as f64;
        if gets == 0.0 {
            0.0
        } else {
            self.hits as f64 / gets
        }
    }
}

/// What [`Store::check`](crate::Store::check) found in a store that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    pub objects: u64,
    pub free_blocks: u64,
    pub free_bytes: u64,
    /// The largest free block: with `free_bytes`, a measure of fragmentation.
    pub largest_free: u64,
    /// Never-used space above the last block (not counted in `free_bytes`).
    pub wilderness_bytes: u64,
}

impl From<Checked> for CheckReport {
    fn from(c: Checked) -> CheckReport {
        CheckReport {
            objects: c.objects,
            free_blocks: c.free_blocks,
            free_bytes: c.free_bytes,
            largest_free: c.largest_free,
            wilderness_bytes: 0,
        }
    }
}
