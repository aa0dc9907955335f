//! The systems compared, one per file, each behind [`Kv`](crate::kv::Kv).

pub mod hashmap;
pub mod limits;
pub mod lmdb;
pub mod python;
pub mod redis;
pub mod shm;
