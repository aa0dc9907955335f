//! Which systems a run measures, and how each is set up fresh for one workload run.

use crate::fleet::{Fleet, Target};
use crate::kv::Kv;
use crate::peers::hashmap::MutexMap;
use crate::peers::lmdb::{self, TempDir};
use crate::peers::redis::{RedisKv, RedisServer};
use crate::peers::shm::{INLINE_VALUES, ShmBytes, ShmTyped, TempStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// shmstore's bytes API: the base of every ratio.
    Shm,
    /// shmstore's typed API (serde + bincode).
    ShmTyped,
    /// shmstore's bytes API on a store that keeps inline copies of small objects
    /// (`Options::inline_values`).
    ShmInline,
    /// shmstore's bytes API on a store whose arena is committed in huge pages
    /// (`Options::huge_arena`).
    ShmHuge,
    /// `HashMap` behind a `Mutex`, in-process (threads where a workload has several workers).
    Map,
    Lmdb,
    Redis,
}

impl System {
    pub const ALL: [System; 7] = [
        System::Shm,
        System::ShmTyped,
        System::ShmInline,
        System::ShmHuge,
        System::Map,
        System::Lmdb,
        System::Redis,
    ];

    pub fn label(self) -> &'static str {
        match self {
            System::Shm => crate::report::BASE,
            System::ShmTyped => "shmstore typed",
            System::ShmInline => "shmstore inline",
            System::ShmHuge => "shmstore huge arena",
            System::Map => "HashMap+Mutex",
            System::Lmdb => "LMDB (heed)",
            System::Redis => "Redis",
        }
    }

    /// The label in workloads whose workers are threads rather than processes.
    pub fn label_workers(self) -> &'static str {
        match self {
            System::Map => "HashMap+Mutex, threads",
            s => s.label(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            System::Shm => "shmstore",
            System::ShmTyped => "typed",
            System::ShmInline => "inline",
            System::ShmHuge => "huge",
            System::Map => "hashmap",
            System::Lmdb => "lmdb",
            System::Redis => "redis",
        }
    }
}

/// What `--systems` selected (all by default). Beside the systems measured through [`Kv`],
/// two kinds of rows measured their own way: `limits`, the machine-limit rows, and
/// `python`, the Python original (`peers::python`, which runs in its own interpreter).
#[derive(Debug, Clone)]
pub struct Selection {
    pub systems: Vec<System>,
    pub limits: bool,
    pub python: bool,
}

impl Selection {
    pub fn all() -> Selection {
        Selection {
            systems: System::ALL.to_vec(),
            limits: true,
            python: true,
        }
    }

    /// A comma-separated list of `shmstore`, `typed`, `inline`, `huge`, `hashmap`, `lmdb`, `redis`, `python`,
    /// `limits`.
    pub fn parse(list: &str) -> Result<Selection, String> {
        let mut sel = Selection {
            systems: Vec::new(),
            limits: false,
            python: false,
        };
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "limits" {
                sel.limits = true;
            } else if word == "python" {
                sel.python = true;
            } else if let Some(s) = System::ALL.iter().find(|s| s.name() == word) {
                sel.systems.push(*s);
            } else {
                return Err(format!(
                    "unknown system {word:?}; use shmstore, typed, inline, huge, hashmap, lmdb, redis, python, limits"
                ));
            }
        }
        sel.systems
            .sort_by_key(|s| System::ALL.iter().position(|a| a == s));
        sel.systems.dedup();
        Ok(sel)
    }

    pub fn has(&self, s: System) -> bool {
        self.systems.contains(&s)
    }
}

/// One system, set up fresh for one run of a workload: an empty store, map, environment or
/// flushed Redis. Dropping it removes what it made.
pub enum Opened<'r> {
    Shm(TempStore, bool),
    Map(MutexMap),
    Lmdb(TempDir),
    Redis(RedisKv, &'r RedisServer),
}

impl<'r> Opened<'r> {
    /// `capacity` (bytes) and `objects` (the most the workload keeps) size shmstore; `redis`
    /// must be running if `s` is Redis.
    pub fn new(
        s: System,
        tag: &str,
        capacity: u64,
        objects: usize,
        redis: Option<&'r RedisServer>,
    ) -> Opened<'r> {
        match s {
            System::Shm | System::ShmTyped => Opened::Shm(
                TempStore::new(tag, capacity, objects),
                s == System::ShmTyped,
            ),
            System::ShmInline => {
                let options = TempStore::options(capacity, objects).inline_values(INLINE_VALUES);
                Opened::Shm(TempStore::with_options(tag, options), false)
            }
            System::ShmHuge => {
                let options = TempStore::options(capacity, objects).huge_arena(true);
                Opened::Shm(TempStore::with_options(tag, options), false)
            }
            System::Map => Opened::Map(MutexMap::default()),
            System::Lmdb => Opened::Lmdb(TempDir::new()),
            System::Redis => {
                let server = redis.expect("Redis selected without a server");
                let mut kv = server.client();
                kv.flushall();
                Opened::Redis(kv, server)
            }
        }
    }

    /// Runs `f` on a client of this system in this process.
    pub fn with_kv<R>(&mut self, f: impl FnOnce(&mut dyn Kv) -> R) -> R {
        match self {
            Opened::Shm(t, false) => f(&mut ShmBytes(t.store.clone())),
            Opened::Shm(t, true) => f(&mut ShmTyped(t.store.clone())),
            Opened::Map(m) => f(m),
            Opened::Lmdb(dir) => lmdb::with_env(dir.path(), f),
            Opened::Redis(kv, _) => f(kv),
        }
    }

    /// How worker processes (or, for the in-process map, threads) reach this system.
    pub fn fleet(&self) -> Fleet {
        match self {
            Opened::Shm(t, typed) => {
                assert!(!typed, "workers use the bytes API");
                Fleet::Processes(Target::Shm {
                    name: t.name().to_owned(),
                })
            }
            Opened::Map(m) => Fleet::Threads(m.clone()),
            Opened::Lmdb(dir) => Fleet::Processes(Target::Lmdb {
                dir: dir.path().to_owned(),
            }),
            Opened::Redis(_, server) => Fleet::Processes(Target::Redis {
                port: server.port(),
            }),
        }
    }
}
