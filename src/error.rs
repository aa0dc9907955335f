//! The error type. Every message says what went wrong and what to do about it.

use std::time::Duration;

/// What can go wrong. `#[non_exhaustive]`: match with a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store name cannot be used.
    #[error(
        "invalid store name {name:?}: {why}; use 1 to {max} bytes (a non-ASCII character takes several), no '/', no control characters",
        max = crate::segment::MAX_NAME_LEN
    )]
    InvalidName { name: String, why: &'static str },

    /// A key is empty or longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("invalid key (length {len}): keys must be 1 to {max} bytes long", max = crate::MAX_KEY_LEN)]
    InvalidKey { len: usize },

    /// The value (with its key and block header) can never fit in this store.
    #[error(
        "value of {value_len} bytes (key {key_len} bytes) needs {needed} bytes but the store's capacity is {capacity} bytes; create the store with a larger capacity"
    )]
    ValueTooLarge {
        key_len: usize,
        value_len: usize,
        needed: u64,
        capacity: u64,
    },

    /// An option is out of its range.
    #[error("invalid option {option}: {why}")]
    InvalidOption { option: &'static str, why: String },

    /// Serializing a value failed; nothing was stored.
    #[error("could not serialize the value: {0}; nothing was stored")]
    Encode(String),

    /// Deserializing a stored value failed: a type other than the stored one was asked for,
    /// the value is corrupt, or it exceeds the decoder's bounds (see [`Bincode`](crate::Bincode)).
    /// bincode stores no type information: a type of the same shape (`i32` for a stored
    /// `u32`) decodes without an error.
    #[error(
        "could not deserialize the value under key {key:?}: {why}; read it with the type (and codec) it was stored with, or with get_bytes if it was stored as raw bytes"
    )]
    Decode { key: String, why: String },

    /// No store exists under that name.
    #[error(
        "no store named {0:?}; check the name (`shmstore ls` lists the stores), or create it (Store::create or `shmstore create`)"
    )]
    NotFound(String),

    /// `create` found the name taken.
    #[error("a store named {0:?} already exists; open it with Store::open, or destroy it first")]
    AlreadyExists(String),

    /// The segment under that name is not a shmstore store.
    #[error(
        "{name:?} is not a shmstore store ({why}); choose another name, or remove it with Store::destroy if it is stale"
    )]
    Foreign { name: String, why: String },

    /// The store was made by an incompatible version of shmstore.
    #[error(
        "store {name:?} has layout version {found}, this build reads version {expected}; use a matching shmstore version, or destroy and re-create the store"
    )]
    Incompatible {
        name: String,
        found: u32,
        expected: u32,
    },

    /// The creator did not finish making the store in time (it may have died while creating
    /// it). `waited`: how long this call waited, or, for a segment whose creator is gone, how
    /// long it has been left as it is.
    #[error(
        "store {name:?} was not ready after {waited:?} (its creator may have died while making it); destroy it and create it again (Store::open_or_create makes a new store in its place by itself)"
    )]
    NotReady { name: String, waited: Duration },

    /// Another process was still creating the store when the wait for it ran out (its
    /// creator held the segment's lock throughout: a store with a very large index).
    #[error(
        "store {name:?} was still being created by another process after {waited:?} (it holds the store's lock while it works); open it again later, or, if that process is stuck (stopped, or its lock inherited by a child that never exits), destroy the store"
    )]
    StillCreating { name: String, waited: Duration },

    /// The store's lock could not be taken within the lock timeout.
    #[error(
        "timed out after {waited:?} waiting for the lock of store {name:?}; another process holds it for too long (see `shmstore stat`), or create the store with a longer lock timeout (Options::lock_timeout, `shmstore create --lock-timeout`)"
    )]
    Timeout { name: String, waited: Duration },

    /// A closure passed to `get_with` called back into the same store.
    #[error(
        "the store was used again from inside a get_with closure, which holds its lock; copy the bytes out first"
    )]
    Reentrant,

    /// The segment's bytes break an invariant.
    #[error(
        "store {name:?} is corrupt: {why}; rebuild it from its arena with `shmstore repair` (Store::repair), or destroy and re-create it"
    )]
    Corrupt { name: String, why: String },

    /// The header's bytes are damaged (its geometry, its options or its lock): the store
    /// cannot be opened or locked, so `repair`, which needs both, cannot mend it. (Handles
    /// opened before the damage keep the geometry they read.)
    #[error(
        "store {name:?} has a damaged header: {why}; `shmstore repair` cannot mend a header: destroy and re-create the store"
    )]
    BadHeader { name: String, why: String },

    /// An operating-system call failed.
    #[error("{op} failed for store {name:?}: {source}{}", os_advice(.op, .source, .name))]
    Os {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to do about a failed system call `op`, for the errors a user can act on. (Looked
/// up when the message is written: the directory check sees /dev/shm as it is then.)
fn os_advice(op: &str, e: &std::io::Error, name: &str) -> String {
    use crate::segment::{OP_CREATE, OP_LIST, OP_UNLINK};
    if op == OP_LIST {
        // Not about one store ("*" is a valid store name: the op tells, not the name).
        return String::new();
    }
    let file = crate::segment::file_path(name);
    let creating = op == OP_CREATE;
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) if op == OP_UNLINK => {
            "; only the store's owner (or root) may remove it: /dev/shm is sticky".into()
        }
        Some(libc::EACCES | libc::EPERM) if creating => {
            "; this user may not create files in /dev/shm (`ls -ld /dev/shm`)".into()
        }
        Some(libc::EACCES | libc::EPERM) => format!(
            "; the store belongs to another user, or its mode keeps this one out (`ls -l {file:?}`; \
             Options::group_access shares a store with its owner's group)"
        ),
        Some(libc::ENOSPC) if creating => "; /dev/shm is full, of bytes or of files (`df -h \
                                           /dev/shm`, `df -i /dev/shm`): remove stores no \
                                           longer used (`shmstore gc`)"
            .into(),
        Some(libc::ENOSPC) => "; /dev/shm is full (`df -h /dev/shm`): remove stores no longer \
                               used (`shmstore gc`), or make this one smaller"
            .into(),
        Some(libc::EMFILE | libc::ENFILE) => "; too many open files: drop handles no longer \
                                              used, or raise the limit (`ulimit -n`)"
            .into(),
        Some(libc::ENOMEM) => "; the system is short of memory or of mappings \
                               (`sysctl vm.max_map_count`)"
            .into(),
        Some(libc::EISDIR | libc::EINVAL) if std::path::Path::new(&file).is_dir() => {
            format!("; {file:?} is a directory, not a store: remove it, or choose another name")
        }
        _ => String::new(),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A corruption found deep inside the segment, before the store's name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption(pub String);

impl Corruption {
    pub(crate) fn named(self, name: &str) -> Error {
        Error::Corrupt {
            name: name.to_owned(),
            why: self.0,
        }
    }

    /// The same, found in the header, which no rebuild mends ([`Error::BadHeader`]).
    pub(crate) fn in_header(self, name: &str) -> Error {
        Error::BadHeader {
            name: name.to_owned(),
            why: self.0,
        }
    }
}

/// Shorthand for returning a [`Corruption`].
macro_rules! corrupt {
    ($($arg:tt)*) => { $crate::error::Corruption(format!($($arg)*)) };
}
pub(crate) use corrupt;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{ALL_STORES, OP_CREATE, OP_LIST, OP_UNLINK};

    fn os(errno: i32, name: &str) -> String {
        os_in("shm_open", errno, name)
    }

    fn os_in(op: &'static str, errno: i32, name: &str) -> String {
        Error::Os {
            op,
            name: name.into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
        .to_string()
    }

    #[test]
    fn failed_system_calls_say_what_to_do_where_a_user_can() {
        assert!(os(libc::EACCES, "s").contains("another user"));
        assert!(os(libc::ENOSPC, "s").contains("df -h /dev/shm"));
        assert!(os(libc::EMFILE, "s").contains("ulimit -n"));
        assert!(
            os(libc::EIO, "s").ends_with("(os error 5)"),
            "no advice to give"
        );
        // The same errno means another thing from another call.
        assert!(os_in(OP_CREATE, libc::EACCES, "s").contains("ls -ld /dev/shm"));
        assert!(os_in(OP_UNLINK, libc::EPERM, "s").contains("owner (or root)"));
        assert!(os_in(OP_CREATE, libc::ENOSPC, "s").contains("df -i"));
        assert!(os_in(OP_LIST, libc::EACCES, ALL_STORES).ends_with("(os error 13)"));
        // A store named "*" (a valid name) gets its advice like any other.
        assert!(
            os(libc::EACCES, "*").contains("another user"),
            "{}",
            os(libc::EACCES, "*")
        );
        // A directory where the segment would be: shm_open says EINVAL.
        let name = format!("test-unit-dir-{}", std::process::id());
        let dir = crate::segment::file_path(&name);
        std::fs::create_dir(&dir).unwrap();
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _gone = Gone(dir.clone());
        let err = crate::Store::open(&name).unwrap_err().to_string();
        assert!(err.contains("is a directory, not a store"), "{err}");
        assert!(!os(libc::EINVAL, "no-such-dir").contains("directory"));
    }
}
