//! The one interface every system is driven through.
//!
//! Each call is one operation as a user of that system would make it: a get copies the
//! value out into a fresh `Vec` (shmstore's `get_bytes`, a read transaction and a copy in
//! LMDB, a `GET` round trip in Redis, a clone from the `HashMap`). Workloads call through
//! `&mut dyn Kv`: one indirect call per operation, the same for every system.
//! Failures (I/O, a dead server) panic: a benchmark that silently skips errors measures
//! nothing.

pub trait Kv {
    /// Stores or replaces; false if the system refused it.
    fn put(&mut self, key: &str, value: &[u8]) -> bool;
    /// The value, copied out.
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn has(&mut self, key: &str) -> bool;
    /// False if the key was not there.
    fn remove(&mut self, key: &str) -> bool;
}
