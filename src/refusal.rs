//! What a put did, and why a refused one was refused.

/// The outcome of [`Store::try_put`](crate::Store::try_put) and
/// [`Store::try_put_bytes`](crate::Store::try_put_bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a refused put stored nothing"]
pub enum Put {
    /// The object is stored (replacing any object under its key).
    Stored,
    /// Nothing was stored, and an object already under the key is as it was (objects may
    /// have been evicted first under [`PutPolicy::Rotate`](crate::PutPolicy::Rotate)).
    Refused(Refusal),
}

impl Put {
    /// Whether the object was stored.
    pub fn stored(self) -> bool {
        self == Put::Stored
    }
}

/// Which limit refused a put. `#[non_exhaustive]`: match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Less than `min_free_mem_pct` of the machine's (or container's) memory is available:
    /// under `Strict` at once, under `Rotate` even after evicting every object it could; or
    /// the container's memory cgroup refused to charge the store's growth. Free memory, or
    /// lower the threshold (0 turns it off).
    MemoryLow,
    /// `Strict`: the arena has no room for the object (a replacement needs room for the new
    /// value beside the old one). Remove objects, or use a larger store or `Rotate`.
    StoreFull,
    /// `Strict`: the index holds `max_objects` objects already. Remove objects, or create
    /// the store with a larger `max_objects`.
    IndexFull,
    /// The file system under /dev/shm has no room for the store to grow into (Docker gives
    /// containers 64 MiB by default); under `Rotate`, even after evicting every other
    /// object. Free space there (`df -h /dev/shm`; `shmstore gc`), or create a smaller store.
    ShmFull,
}

impl Refusal {
    /// A short stable name (`memory_low`, `store_full`, `index_full`, `shm_full`), for logs
    /// and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MemoryLow => "memory_low",
            Refusal::StoreFull => "store_full",
            Refusal::IndexFull => "index_full",
            Refusal::ShmFull => "shm_full",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::MemoryLow => "less memory is available than the store's min_free_mem_pct",
            Refusal::StoreFull => "the store is full and its policy is strict",
            Refusal::IndexFull => "the store holds max_objects objects and its policy is strict",
            Refusal::ShmFull => "/dev/shm has no room for the store to grow",
        })
    }
}
