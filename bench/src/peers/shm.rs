//! shmstore itself, through the bytes API and through the typed (serde + bincode) API.

use std::sync::atomic::{AtomicU32, Ordering};

use shmstore::{Options, Stats, Store};

use crate::kv::Kv;

/// A store with a name no other run uses, destroyed when this guard drops (also on panic).
/// Worker processes open it by name; dropping their handles does not destroy it.
pub struct TempStore {
    pub store: Store,
}

impl TempStore {
    /// `capacity` bytes and an index for `objects` objects with a quarter to spare (the
    /// default index, one slot per KiB of capacity, is too small for 64-byte values), the
    /// memory threshold off (so that the machine's memory figure plays no part), rotate policy.
    pub fn new(tag: &str, capacity: u64, objects: usize) -> TempStore {
        TempStore::with_options(tag, TempStore::options(capacity, objects))
    }

    /// The options [`new`](TempStore::new) creates a store with.
    pub fn options(capacity: u64, objects: usize) -> Options {
        Options::default()
            .capacity(capacity)
            .max_objects(objects as u64 * 5 / 4 + 64)
            .min_free_mem_pct(0.0)
    }

    pub fn with_options(tag: &str, options: Options) -> TempStore {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bench-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let store =
            Store::create(&name, options).unwrap_or_else(|e| panic!("creating store {name}: {e}"));
        TempStore { store }
    }

    pub fn name(&self) -> &str {
        self.store.name()
    }

    pub fn stats(&self) -> Stats {
        self.store.stats().expect("stats")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        if let Err(e) = Store::destroy(self.store.name()) {
            eprintln!(
                "warning: could not destroy store {}: {e}",
                self.store.name()
            );
        }
    }
}

/// The largest object (key and value) the "shmstore inline" rows copy beside the index: W1's
/// 10-byte keys with 64-byte values fit, in 128-byte records.
pub const INLINE_VALUES: u32 = 120;

/// The bytes API: `put_bytes`, `get_bytes`.
pub struct ShmBytes(pub Store);

impl Kv for ShmBytes {
    fn put(&mut self, key: &str, value: &[u8]) -> bool {
        self.0.put_bytes(key, value).expect("put_bytes")
    }
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.get_bytes(key).expect("get_bytes")
    }
    fn has(&mut self, key: &str) -> bool {
        self.0.has(key).expect("has")
    }
    fn remove(&mut self, key: &str) -> bool {
        self.0.remove(key).expect("remove")
    }
}

/// The typed API with the value as a user would hand it over: `put(key, &[u8])` and
/// `get::<Vec<u8>>` (serde sees a sequence of `u8`, so bincode walks it byte by byte).
pub struct ShmTyped(pub Store);

impl Kv for ShmTyped {
    fn put(&mut self, key: &str, value: &[u8]) -> bool {
        self.0.put(key, value).expect("put")
    }
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.get::<Vec<u8>>(key).expect("get")
    }
    fn has(&mut self, key: &str) -> bool {
        self.0.has(key).expect("has")
    }
    fn remove(&mut self, key: &str) -> bool {
        self.0.remove(key).expect("remove")
    }
}
