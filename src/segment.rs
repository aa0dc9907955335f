//! Named segments: store names, create, open (waiting for a half-made store), destroy, list.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{Geometry, HEADER_SIZE, LAYOUT_VERSION, MAGIC, READY};
use crate::mapping::Mapping;
use crate::os;

/// Every store's segment is `/dev/shm/shmstore.NAME`.
pub const PREFIX: &str = "shmstore.";
/// Longest store name: the OS allows 255 bytes for the whole file name.
pub const MAX_NAME_LEN: usize = 255 - PREFIX.len();
/// How long an opener waits for a store that is being created.
pub const OPEN_WAIT: Duration = Duration::from_secs(3);
/// How long it waits at most while it sees the creator at work (holding the segment's
/// `flock`): creating a store with a very large index (tens of GiB of capacity, or many
/// inline records) reserves and collapses it for longer than [`OPEN_WAIT`].
pub const CREATOR_WAIT: Duration = Duration::from_secs(30);

/// The failed calls whose error advice depends on the call (`error::os_advice`), and the
/// name given for an error about no one store.
pub(crate) const OP_CREATE: &str = "shm_open (creating)";
pub(crate) const OP_UNLINK: &str = "shm_unlink";
pub(crate) const OP_LIST: &str = "reading /dev/shm";
pub(crate) const ALL_STORES: &str = "*";

/// The file behind store `name`, for messages (the name is not checked).
pub(crate) fn file_path(name: &str) -> String {
    format!("{}/{PREFIX}{name}", os::SHM_DIR)
}

/// Checks a store name and returns the path to give `shm_open`.
pub fn shm_path(name: &str) -> Result<CString> {
    let bad = |why| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(CString::new(format!("/{PREFIX}{name}")).expect("no NUL: control characters were refused"))
}

fn os_err(op: &'static str, name: &str, source: io::Error) -> Error {
    Error::Os {
        op,
        name: name.to_owned(),
        source,
    }
}

/// Creates the segment, lets `init` fill the header, then publishes it by writing `ready`.
/// On any failure the name is removed again.
pub fn create(
    name: &str,
    geo: Geometry,
    mode: u32,
    init: impl FnOnce(&Mapping) -> Result<()>,
) -> Result<Mapping> {
    let path = shm_path(name)?;
    let fd = os::shm_create(&path, mode).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::AlreadyExists(name.to_owned()),
        _ => os_err(OP_CREATE, name, e),
    })?;
    // Held until the segment is ready: an opener that finds it free on a segment that is
    // not ready knows its creator is gone (or has not taken it yet: a moment). Without it
    // (a file system refusing flock), openers only wait.
    let _ = os::flock_exclusive(&fd);
    // A segment that has a size already was taken over ([`take_over`]) while this process
    // stood still between creating the name and taking the lock: it is another's store now.
    if os::fstat(&fd).is_ok_and(|info| info.size != 0) {
        let _ = os::flock_release(&fd);
        return Err(Error::AlreadyExists(name.to_owned()));
    }
    let made = make(&fd, name, geo, init);
    if made.is_err() {
        // The name first, while the lock still says a creator is at work: released first,
        // the segment could be taken over ([`take_over`]) and its new store's name removed.
        let _ = os::shm_unlink(&path);
        // Released for every copy of the descriptor (a child forked meanwhile keeps one).
        let _ = os::flock_release(&fd);
    }
    made
}

/// Makes a new store in place of a segment whose creator died before it was ready (`open`
/// said [`Error::NotReady`]), on the same file, so that no other process's store can be
/// removed by mistake (a name, unlike an open file, can change hands between a look and an
/// unlink). `None` if the segment turns out not to be abandoned: another process took it
/// over first (it holds the lock while it works), it is ready after all, or it is gone.
pub fn take_over(
    name: &str,
    geo: Geometry,
    mode: u32,
    init: impl FnOnce(&Mapping) -> Result<()>,
) -> Result<Option<Mapping>> {
    let path = shm_path(name)?;
    let fd = match os::shm_open(&path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(os_err("shm_open", name, e)),
    };
    if !os::flock_try_exclusive(&fd).map_err(|e| os_err("flock", name, e))? {
        return Ok(None);
    }
    // Still unfinished, and nobody else's store, now that the lock is this process's: no
    // process ever had it open (a creator registers once it is ready) and no object was
    // ever put (a store in use whose `ready` word was overwritten is not wiped).
    // Its size, if so.
    let abandoned = (|| {
        let size = os::fstat(&fd).ok()?.size;
        if size < HEADER_SIZE {
            return (size == 0).then_some(size);
        }
        let map = os::Map::new(&fd, HEADER_SIZE as usize).ok()?;
        let h = Mapping::header_of(&map)?;
        let magic = h.magic.load(Relaxed);
        ((magic == 0 || magic == MAGIC)
            && h.ready.load(Acquire) != READY
            && h.puts.load(Relaxed) == 0
            && h.attach.iter().all(|s| s.owner.load(Relaxed) == 0))
        .then_some(size)
    })();
    let Some(size) = abandoned else {
        let _ = os::flock_release(&fd);
        return Ok(None);
    };
    // Zeros throughout, so that nothing of the unfinished store is read as the new one's:
    // by punching holes, not by truncating, since an opener may be reading the header
    // through a mapping of the old size (a page past the end would be a SIGBUS); `make`
    // then sets the new size, never below a header.
    let zeroed = match size {
        0 => Ok(()),
        _ => os::punch_hole(&fd, 0, size),
    };
    let made = zeroed
        .map_err(|e| os_err("fallocate (punching the unfinished store)", name, e))
        .and_then(|()| make(&fd, name, geo, init));
    match &made {
        // The mode asked for; a dead creator of another user's keeps theirs (only the
        // owner may change it), and the header then says what the file has.
        Ok(m) => {
            if os::fchmod(&fd, mode).is_err()
                && let Ok(info) = os::fstat(&fd)
            {
                m.header().mode.store(info.mode, Relaxed);
            }
        }
        Err(_) => {
            let _ = os::flock_release(&fd);
        }
    }
    made.map(Some)
}

/// Sizes and fills a segment whose `flock` this process holds (and whose size is 0), lets
/// `init` fill the header, publishes it by writing `ready` and lets go of the lock.
fn make(
    fd: &OwnedFd,
    name: &str,
    geo: Geometry,
    init: impl FnOnce(&Mapping) -> Result<()>,
) -> Result<Mapping> {
    os::ftruncate(fd, geo.total_len).map_err(|e| os_err("ftruncate", name, e))?;
    // Header and index are written at random places from the start: back them now, so
    // that a full /dev/shm is an error here and never a SIGBUS later.
    os::fallocate(fd, 0, geo.arena_off)
        .map_err(|e| os_err("fallocate (reserving header, index and records)", name, e))?;
    let map = os::Map::new(fd, geo.total_len as usize).map_err(|e| os_err("mmap", name, e))?;
    let fd2 = fd.try_clone().map_err(|e| os_err("dup", name, e))?;
    let m = Mapping::new(map, fd2, geo);
    let h = m.header();
    h.magic.store(MAGIC, Relaxed);
    h.version.store(LAYOUT_VERSION, Relaxed);
    h.total_len.store(geo.total_len, Relaxed);
    h.index_off.store(geo.index_off, Relaxed);
    h.index_slots.store(geo.index_slots, Relaxed);
    h.record_len.store(geo.record_len, Relaxed);
    h.arena_off.store(geo.arena_off, Relaxed);
    h.arena_len.store(geo.arena_len, Relaxed);
    h.geometry_check.store(geo.check_value(), Relaxed);
    init(&m)?;
    h.ready.store(READY, Release);
    let _ = os::flock_release(fd);
    // Map header, index and inline records into this process's page tables, as the
    // arena's steps are (`Mapping::populate`): the creator's first puts land on random
    // index pages (and record pages: 5,000 of them for W1's records), each a page fault
    // otherwise. After `ready`, so that processes opening the store meanwhile do not
    // wait for it; a hint, ignored where the kernel lacks it.
    m.populate_fixed();
    Ok(m)
}

/// Opens an existing segment, waiting up to [`OPEN_WAIT`] for its creator to finish it, up
/// to [`CREATOR_WAIT`] while the creator is seen at work.
pub fn open(name: &str) -> Result<Mapping> {
    let path = shm_path(name)?;
    let fd = os::shm_open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(name.to_owned()),
        _ => os_err("shm_open", name, e),
    })?;
    let start = Instant::now();
    let mut wait = Wait::default();
    loop {
        let info = os::fstat(&fd).map_err(|e| os_err("fstat", name, e))?;
        if info.size >= HEADER_SIZE {
            let len = usize::try_from(info.size).map_err(|_| Error::Foreign {
                name: name.to_owned(),
                why: format!("its size {} cannot be mapped", info.size),
            })?;
            let map = os::Map::new(&fd, len).map_err(|e| os_err("mmap", name, e))?;
            let h = Mapping::header_of(&map).expect("mapped at least a header");
            let magic = h.magic.load(Relaxed);
            if magic != 0 && magic != MAGIC {
                return Err(Error::Foreign {
                    name: name.to_owned(),
                    why: "its first bytes are not shmstore's magic".into(),
                });
            }
            if magic == MAGIC && h.ready.load(Acquire) == READY {
                let version = h.version.load(Relaxed);
                if version != LAYOUT_VERSION {
                    return Err(Error::Incompatible {
                        name: name.to_owned(),
                        found: version,
                        expected: LAYOUT_VERSION,
                    });
                }
                let geo = match Geometry::from_header(h, info.size) {
                    Ok(geo) => geo,
                    // Taken over ([`take_over`]) and finished at another size since the
                    // size was read: look again.
                    Err(_) if os::fstat(&fd).is_ok_and(|now| now.size != info.size) => continue,
                    Err(c) => return Err(c.in_header(name)),
                };
                let fd2 = fd.try_clone().map_err(|e| os_err("dup", name, e))?;
                return Ok(Mapping::new(map, fd2, geo));
            }
        } else if info.size > 0 {
            // Too short for this layout's header: a store of an older layout (whose header
            // was smaller), one of this layout cut short, or not a store at all.
            // (A half-made store of this layout is never short: its size is set first.)
            let mut start = [0u8; 12];
            let n = os::read_start(&fd, &mut start).map_err(|e| os_err("read", name, e))?;
            let [magic @ .., v0, v1, v2, v3] = start;
            if n == start.len() && u64::from_le_bytes(magic) == MAGIC {
                let found = u32::from_le_bytes([v0, v1, v2, v3]);
                if found == LAYOUT_VERSION {
                    return Err(Error::BadHeader {
                        name: name.to_owned(),
                        why: format!(
                            "the segment was cut short to {} bytes, less than a header",
                            info.size
                        ),
                    });
                }
                return Err(Error::Incompatible {
                    name: name.to_owned(),
                    found,
                    expected: LAYOUT_VERSION,
                });
            }
            return Err(Error::Foreign {
                name: name.to_owned(),
                why: format!("it is only {} bytes long", info.size),
            });
        }
        // Not ready yet: wait, or give up (see `Wait::look`).
        let unchanged = Duration::from_nanos(os::realtime_ns().saturating_sub(info.changed_ns));
        match wait.look(start.elapsed(), unchanged, || {
            !os::flock_held_elsewhere(&fd)
        }) {
            Look::Again(pause) => std::thread::sleep(pause),
            Look::Now => {}
            Look::NotReady(waited) => {
                return Err(Error::NotReady {
                    name: name.to_owned(),
                    waited,
                });
            }
            Look::StillCreating(waited) => {
                return Err(Error::StillCreating {
                    name: name.to_owned(),
                    waited,
                });
            }
        }
    }
}

/// What an opener does after a look that found the segment not ready.
#[derive(Debug, PartialEq)]
enum Look {
    /// Sleep this long, then look again.
    Again(Duration),
    /// Look again at once: the lock was just seen free, which must be seen once more.
    Now,
    /// Give up: the creator is gone (`NotReady`, with how long it waited or how long the
    /// segment has been left as it is), or still at work after `CREATOR_WAIT`.
    NotReady(Duration),
    StillCreating(Duration),
}

/// An opener's wait for a segment that is not ready. A creator holds the segment's flock
/// from just after creating the name until it sets `ready`, however long its reservation
/// takes: a segment whose lock is free and that has not changed for `OPEN_WAIT` lost its
/// creator, and waiting would not help (`ls`, `gc` and `valid` would wait for every such
/// segment). (The age also covers the moment before a creator takes the lock.) Past
/// `OPEN_WAIT`, an opener waits on only while the lock shows the creator at work, up to
/// `CREATOR_WAIT`. The lock must be seen free *before* a look finds `ready` unset (a
/// creator sets it before it lets go): the verdict needs two looks in a row that saw it
/// free.
#[derive(Default)]
struct Wait {
    /// The last look saw the lock free.
    unheld_before: bool,
}

impl Wait {
    /// After a look that found the segment not ready, `waited` into the wait, the segment
    /// unchanged for `unchanged`; `lock_free` probes the creator's lock (only when needed:
    /// a new segment's creator may not have taken it yet).
    fn look(
        &mut self,
        waited: Duration,
        unchanged: Duration,
        lock_free: impl FnOnce() -> bool,
    ) -> Look {
        let old = unchanged >= OPEN_WAIT;
        let unheld = (old || waited >= OPEN_WAIT) && lock_free();
        if unheld && self.unheld_before {
            // An abandoned segment: for how long it has been left as it is.
            return Look::NotReady(if old { waited.max(unchanged) } else { waited });
        }
        if waited >= CREATOR_WAIT && !unheld {
            return Look::StillCreating(waited);
        }
        self.unheld_before = unheld;
        if unheld {
            Look::Now
        } else if waited >= OPEN_WAIT {
            // Past the usual wait, a look every 20 ms: each maps the segment again.
            Look::Again(Duration::from_millis(20))
        } else {
            Look::Again(Duration::from_millis(2))
        }
    }
}

/// Removes the name. Handles already open keep working until they are dropped.
pub fn destroy(name: &str) -> Result<()> {
    let path = shm_path(name)?;
    os::shm_unlink(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(name.to_owned()),
        _ => os_err(OP_UNLINK, name, e),
    })
}

/// Names of all segments that carry the store prefix, sorted.
pub fn list() -> Result<Vec<String>> {
    let mut names: Vec<String> = os::shm_dir_names()
        .map_err(|e| os_err(OP_LIST, ALL_STORES, e))?
        .into_iter()
        .filter_map(|n| n.strip_prefix(PREFIX).map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_new_segment_is_waited_for_without_probing_its_lock() {
        let mut w = Wait::default();
        let probe = || panic!("the lock of a new segment is probed");
        assert_eq!(w.look(S, S, probe), Look::Again(Duration::from_millis(2)));
    }

    #[test]
    fn an_abandoned_segment_is_reported_after_two_free_looks() {
        let mut w = Wait::default();
        assert_eq!(w.look(Duration::ZERO, 10 * S, || true), Look::Now);
        assert_eq!(
            w.look(Duration::ZERO, 10 * S, || true),
            Look::NotReady(10 * S),
            "how long it has been left, not how long this call waited"
        );
        // A creator that finished between the two looks was seen ready by the second
        // (`open` returns before asking); one that took the lock in between is waited for.
        let mut w = Wait::default();
        assert_eq!(w.look(Duration::ZERO, 10 * S, || true), Look::Now);
        assert!(matches!(
            w.look(Duration::ZERO, 10 * S, || false),
            Look::Again(_)
        ));
    }

    #[test]
    fn a_creator_at_work_is_waited_for_until_creator_wait() {
        let mut w = Wait::default();
        assert_eq!(
            w.look(4 * S, S, || false),
            Look::Again(Duration::from_millis(20))
        );
        assert_eq!(
            w.look(29 * S, 40 * S, || false),
            Look::Again(Duration::from_millis(20))
        );
        assert_eq!(
            w.look(CREATOR_WAIT, 40 * S, || false),
            Look::StillCreating(CREATOR_WAIT)
        );
        // Its lock seen free past OPEN_WAIT, twice in a row: it died.
        let mut w = Wait::default();
        assert_eq!(w.look(4 * S, S, || true), Look::Now);
        assert_eq!(w.look(4 * S, S, || true), Look::NotReady(4 * S));
        // Once free, then held again (another opener's probe, or a creator that had not
        // taken it yet): waited for.
        let mut w = Wait::default();
        assert_eq!(w.look(4 * S, S, || true), Look::Now);
        assert!(matches!(w.look(4 * S, S, || false), Look::Again(_)));
        assert!(matches!(w.look(5 * S, S, || true), Look::Now));
    }

    #[test]
    fn names_are_checked() {
        assert!(shm_path("frames").is_ok());
        assert!(matches!(shm_path(""), Err(Error::InvalidName { .. })));
        assert!(matches!(shm_path("a/b"), Err(Error::InvalidName { .. })));
        assert!(matches!(shm_path("a\0b"), Err(Error::InvalidName { .. })));
        assert!(matches!(
            shm_path(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(Error::InvalidName { .. })
        ));
        assert!(shm_path(&"x".repeat(MAX_NAME_LEN)).is_ok());
    }
}
