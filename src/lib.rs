//! # shmstore
//!
//! A cache of objects shared by the processes of one machine through shared memory. Open a
//! store by name from any process (or inherit the handle across `fork()`), then `put`, `get`,
//! `has`, `remove`, `count` and `keys`; when the store (or the machine's memory) runs short,
//! least-recently-used objects are rotated out.
//!
//! ```
//! use shmstore::{Options, PutPolicy, Store};
//! # fn main() -> shmstore::Result<()> {
//! # let name = format!("doc-{}", std::process::id());
//! let store = Store::create(&name, Options::default().capacity(1 << 20).put_policy(PutPolicy::Rotate))?;
//! store.put("a", &vec![1u32, 2, 3])?;
//! let other = Store::open(&name)?; // in any process of the same user
//! assert_eq!(other.get::<Vec<u32>>("a")?, Some(vec![1, 2, 3]));
//! assert_eq!(other.get_or("missing", 7u32)?, 7);
//! assert!(other.remove("a")?);
//! Store::destroy(&name)?; // removes the name; open handles keep working
//! # Ok(())
//! # }
//! ```
//!
//! ## Concurrency
//! `get`, `get_bytes` and `has` take no lock: they read, then check a version word that
//! writers make odd while they change anything, and retry (or, after a few tries, lock) if it
//! moved; readers in different processes do not wait for each other. Every other operation
//! (and a get of a value over 64 KiB) takes the store's lock, a robust process-shared mutex,
//! for as long as it takes to probe, allocate, copy and link; values are serialized and
//! deserialized outside it.
//! A process that dies holding the lock does not wedge the store: the next one to lock it
//! rebuilds the index, the LRU list and the free lists from the arena (see `docs/design.md`).
//! An operation that cannot get the lock within `lock_timeout` returns [`Error::Timeout`].
//!
//! ## Safety
//! The segment is shared with other processes, which may be buggy. Every offset read from it
//! is checked against the segment's bounds; a scribbled segment gives [`Error::Corrupt`]
//! ([`Store::repair`] mends it), or [`Error::BadHeader`] where the header itself (geometry,
//! options, lock) is damaged. The bounds are those of the size read at open: a process that
//! shrinks the segment's file under the store (`ftruncate`, `truncate(1)`) makes the others'
//! next access past its new end a `SIGBUS`, as with any shared mapping (LMDB's too); the
//! store itself never resizes a file a handle has open.

#![deny(unsafe_op_in_unsafe_fn)]

/// A fault point: with feature `fault-injection`, a place where a crash test may kill the
/// process; nothing otherwise.
macro_rules! fault {
    () => {
        #[cfg(feature = "fault-injection")]
        $crate::fault::point();
    };
}

mod arena;
mod attach;
mod bounded;
mod codec;
mod compact;
mod error;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod fault;
mod index;
mod layout;
mod lock;
mod lru;
mod mapping;
mod memory;
mod optimistic;
mod options;
mod os;
mod recovery;
mod refusal;
mod segment;
mod stats;
mod store;

pub use codec::{Bincode, Codec};
pub use error::{Error, Result};
pub use options::{Options, PutPolicy};
pub use refusal::{Put, Refusal};
pub use segment::MAX_NAME_LEN;
pub use stats::{CheckReport, Stats};
pub use store::{MAX_KEY_LEN, Store, list, valid};

/// The README's code blocks, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
