//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use shmstore::{Options, Store};

/// A store with a unique name, destroyed when dropped (also when the test panics).
pub struct TempStore {
    pub name: String,
    pub store: Store,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test process) uses.
pub fn unique_name(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("test-{tag}-{}-{n}-{nanos}", std::process::id())
}

impl TempStore {
    pub fn new(tag: &str, options: Options) -> TempStore {
        let name = unique_name(tag);
        let store = Store::create(&name, options).expect("create a test store");
        TempStore { name, store }
    }
}

impl std::ops::Deref for TempStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.name);
    }
}

/// Removes a name when dropped.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// Options for tests: no memory threshold (the machine's memory must not decide a test).
pub fn opts(capacity: u64) -> Options {
    Options::default().capacity(capacity).min_free_mem_pct(0.0)
}
