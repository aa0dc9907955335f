//! LMDB through `heed`: no sync, write map, the environment in a directory under /dev/shm
//! that is removed afterwards. One transaction per operation, as a cache's user would do it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};

use crate::kv::Kv;

/// The map is sparse on tmpfs: only pages written take memory.
pub const MAP_SIZE: usize = 8 << 30;

/// A fresh directory under /dev/shm, removed (with the environment's files) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "/dev/shm/shmstore-bench-lmdb-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

pub struct Lmdb<'e> {
    env: &'e Env,
    db: Database<'e, Str, Bytes>,
}

/// Opens (creating if needed) the environment in `dir` and runs `f` on it. Each process
/// opens the environment itself: LMDB forbids using one across `fork`.
pub fn with_env<R>(dir: &Path, f: impl FnOnce(&mut dyn Kv) -> R) -> R {
    let mut options = EnvOpenOptions::new();
    options.map_size(MAP_SIZE).max_readers(64);
    // SAFETY: NO_SYNC only gives up durability after a crash, which a cache on tmpfs does
    // not have anyway; WRITE_MAP makes stray writes through the map possible, and we make
    // none (heed only writes through LMDB's calls).
    unsafe { options.flags(EnvFlags::NO_SYNC | EnvFlags::WRITE_MAP) };
    // SAFETY: the directory is ours alone (a fresh name under /dev/shm); nothing but LMDB
    // modifies its files while the environment is open, and no transaction outlives `f`.
    let env = unsafe { options.open(dir) }
        .unwrap_or_else(|e| panic!("opening LMDB in {}: {e}", dir.display()));
    let wtxn = env.write_txn().expect("LMDB write transaction");
    let db = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database::<Str, Bytes>(wtxn, None)
                .map(CommitOrAbort::<_, ()>::Commit)
        })
        .expect("LMDB unnamed database")
        .unwrap_commit();
    let mut kv = Lmdb { env: &env, db };
    f(&mut kv)
}

impl Kv for Lmdb<'_> {
    fn put(&mut self, key: &str, value: &[u8]) -> bool {
        let mut txn = self.env.write_txn().expect("LMDB write transaction");
        self.db.put(&mut txn, key, value).expect("LMDB put");
        txn.commit().expect("LMDB commit");
        true
    }
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        let txn = self.env.read_txn().expect("LMDB read transaction");
        self.db
            .get(&txn, key)
            .expect("LMDB get")
            .map(<[u8]>::to_vec)
    }
    fn has(&mut self, key: &str) -> bool {
        let txn = self.env.read_txn().expect("LMDB read transaction");
        self.db.get(&txn, key).expect("LMDB get").is_some()
    }
    fn remove(&mut self, key: &str) -> bool {
        let mut txn = self.env.write_txn().expect("LMDB write transaction");
        let removed = self.db.delete(&mut txn, key).expect("LMDB delete");
        txn.commit().expect("LMDB commit");
        removed
    }
}
