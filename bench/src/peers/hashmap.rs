//! The in-process upper bound: `std::collections::HashMap` behind a `std::sync::Mutex`.
//! Shared between threads (not processes) in the multi-worker workloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::kv::Kv;

#[derive(Clone, Default)]
pub struct MutexMap(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl MutexMap {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.0
            .lock()
            .expect("a benchmark thread panicked holding the map")
    }
}

impl Kv for MutexMap {
    fn put(&mut self, key: &str, value: &[u8]) -> bool {
        let value = value.to_vec(); // the copy in, outside the lock as shmstore encodes outside
        let mut map = self.map();
        match map.get_mut(key) {
            Some(old) => *old = value,
            None => {
                map.insert(key.to_owned(), value);
            }
        }
        true
    }
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.map().get(key).cloned()
    }
    fn has(&mut self, key: &str) -> bool {
        self.map().contains_key(key)
    }
    fn remove(&mut self, key: &str) -> bool {
        self.map().remove(key).is_some()
    }
}
