//! Every operating-system call the crate makes, behind small wrappers.
//!
//! Nothing else in the crate calls `libc` directly. Wrappers return `io::Result` and leave
//! naming the store to the caller.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Creates a new shared-memory object; fails with `AlreadyExists` if the name is taken.
/// The mode is applied exactly (the umask does not narrow or widen it).
pub fn shm_create(path: &CStr, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string; the flags and mode are plain integers.
    let fd = check(unsafe {
        libc::shm_open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is open; fchmod takes a plain mode.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    Ok(fd)
}

/// Opens an existing shared-memory object for reading and writing.
pub fn shm_open(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::shm_open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) })?;
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name; mappings and descriptors already open stay valid.
pub fn shm_unlink(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::shm_unlink(path.as_ptr()) }).map(|_| ())
}

/// Sets the object's size (sparse: no memory is committed).
pub fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is open; `len` is a plain integer.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(|_| ())
}

/// What `fstat` says of an open object.
pub struct FileInfo {
    pub size: u64,
    /// When its data or its metadata last changed (the later of mtime and ctime), as
    /// nanoseconds since the Unix epoch.
    pub changed_ns: u64,
    /// Permission bits.
    pub mode: u32,
}

pub fn fstat(fd: &OwnedFd) -> io::Result<FileInfo> {
    // SAFETY: an all-zero `stat` is a valid value of that plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    // Saturating: the owner may set any time on the file (`touch -d`).
    let ns = |s: libc::time_t, n: i64| {
        (s.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(n.clamp(0, 999_999_999) as u64)
    };
    Ok(FileInfo {
        size: st.st_size as u64,
        changed_ns: ns(st.st_mtime, st.st_mtime_nsec).max(ns(st.st_ctime, st.st_ctime_nsec)),
        mode: st.st_mode & 0o7777,
    })
}

/// Takes the exclusive `flock` of `fd`'s open file description (a creator holds it until
/// its segment is ready), waiting while an opener holds the shared one for a look.
pub fn flock_exclusive(fd: &OwnedFd) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is open; the operation is a plain integer.
        match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done.map(|_| ()),
        }
    }
}

/// Takes the exclusive `flock` of `fd`'s open file description if no other holds a `flock`
/// of the file: `Ok(false)` if one does.
pub fn flock_try_exclusive(fd: &OwnedFd) -> io::Result<bool> {
    loop {
        // SAFETY: `fd` is open; the operation is a plain integer.
        match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Sets the file's mode bits (exactly: no umask applies).
pub fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is open; the mode is a plain integer.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(|_| ())
}

/// Releases `fd`'s `flock`.
pub fn flock_release(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: `fd` is open; the operation is a plain integer.
    check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) }).map(|_| ())
}

/// Whether another open file description holds the file's exclusive `flock` (a creator at
/// work); `true` too when it cannot be told (the file system refuses `flock`).
pub fn flock_held_elsewhere(fd: &OwnedFd) -> bool {
    // SAFETY: `fd` is open; the operation is a plain integer.
    match check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) }) {
        Ok(_) => {
            let _ = flock_release(fd);
            false
        }
        Err(_) => true,
    }
}

/// An open file description lock (`F_OFD_*`) on the single byte `byte` of the file (beyond
/// its end, so it guards no data; where `off_t` has 32 bits, the offset wraps to a byte that
/// may be inside the file, which an advisory lock does not mind): `F_WRLCK` to take,
/// `F_UNLCK` to release.
fn ofd_lock(kind: libc::c_int, byte: u64) -> libc::flock {
    // SAFETY: `flock` is plain integers, for which all zeros is valid (`l_pid` must be 0).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = byte as libc::off_t;
    l.l_len = 1;
    l
}

/// Takes the open-file-description lock on `byte` of `fd`'s file without waiting: `Ok(true)`
/// when taken (or already held by this description), `Ok(false)` when another description
/// holds it. The kernel releases it when the last descriptor of the description is closed,
/// which is how a dead process's attach slot is told from a live one in any pid namespace.
pub fn ofd_try_lock(fd: &OwnedFd, byte: u64) -> io::Result<bool> {
    let l = ofd_lock(libc::F_WRLCK, byte);
    loop {
        // SAFETY: `fd` is open; `l` is a valid `flock` that outlives the call.
        match check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &l) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Releases this description's lock on `byte` (a no-op if it holds none).
pub fn ofd_unlock(fd: &OwnedFd, byte: u64) -> io::Result<()> {
    let l = ofd_lock(libc::F_UNLCK, byte);
    // SAFETY: `fd` is open; `l` is a valid `flock` that outlives the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &l) }).map(|_| ())
}

/// Whether a description other than `fd`'s holds a lock on `byte` (`F_OFD_GETLK`). Its
/// own locks never count, so to ask about every process, ask through a description that
/// holds none ([`reopen`]).
pub fn ofd_locked_elsewhere(fd: &OwnedFd, byte: u64) -> io::Result<bool> {
    let mut l = ofd_lock(libc::F_WRLCK, byte);
    // SAFETY: `fd` is open; the kernel writes the answer into `l`, which outlives the call.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut l) })?;
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// A new open file description of `fd`'s file (through `/proc/self/fd`, which works for
/// a file whose name was removed), read-write, close-on-exec.
pub fn reopen(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let raw = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Makes `fd` (same number) refer to a new open file description of its file, this
/// process's alone: in a forked child, whose descriptors share their descriptions (and the
/// locks those hold) with the parent.
pub fn own_description(fd: &OwnedFd) -> io::Result<()> {
    let fresh = reopen(fd)?;
    // SAFETY: both descriptors are open; `dup3` atomically makes `fd`'s number refer to
    // `fresh`'s description (the number stays owned by `fd`), and `fresh` is closed after.
    // Other threads using the number meanwhile get one description or the other, both of
    // the same file, which is all they need (fallocate, punching holes, fstat).
    check(unsafe { libc::dup3(fresh.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) }).map(|_| ())
}

/// Commits memory for `[off, off + len)` so that later writes cannot SIGBUS; `ENOSPC` when
/// the file system (for /dev/shm, its size limit) is full, `ENOMEM` when the memory cgroup
/// refuses the charge. Retried when a signal interrupts it (tmpfs gives back what the
/// interrupted call had reserved). Refusals are counted (see [`NoRoom`]).
pub fn fallocate(fd: &OwnedFd, off: u64, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is open; offsets are plain integers, checked by the kernel.
        let done = check(unsafe {
            libc::fallocate(fd.as_raw_fd(), 0, off as libc::off_t, len as libc::off_t)
        });
        match done {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                NO_ROOM.with(|n| {
                    let mut seen = n.get();
                    match e.raw_os_error() {
                        Some(libc::ENOSPC) => seen.shm += 1,
                        Some(libc::ENOMEM) => seen.memory += 1,
                        _ => {}
                    }
                    n.set(seen);
                });
                return Err(e);
            }
        }
    }
}

/// How often [`fallocate`] was refused memory in this thread so far: a put tells from a
/// change over it whether /dev/shm (or the memory cgroup) had no room for it (every call of
/// a put is made by the thread that put).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoRoom {
    /// `ENOSPC`: the file system is full.
    pub shm: u64,
    /// `ENOMEM`: the memory cgroup refused the charge.
    pub memory: u64,
}

impl NoRoom {
    /// This thread's counts now.
    pub fn now() -> NoRoom {
        NO_ROOM.with(std::cell::Cell::get)
    }
}

thread_local! {
    static NO_ROOM: std::cell::Cell<NoRoom> = const {
        std::cell::Cell::new(NoRoom { shm: 0, memory: 0 })
    };
}

/// Gives the pages of `[off, off + len)` back to the system; they read as zeros afterwards
/// and take memory again when written (so reserve them with [`fallocate`] first).
pub fn punch_hole(fd: &OwnedFd, off: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: `fd` is open; offsets are plain integers, checked by the kernel.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(|_| ())
}

/// Reads up to `buf.len()` bytes from the start of the file (fewer if it is shorter).
pub fn read_start(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is open and `buf` is a valid, writable buffer of `buf.len()` bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Bytes of memory the object holds (its allocated blocks).
pub fn allocated_bytes(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: an all-zero `stat` is a valid value of that plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_blocks as u64 * 512)
}

/// A shared read-write mapping of a whole object, unmapped on drop.
pub struct Map {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Map` is an address range owned by this value; moving it to or sharing it with
// another thread does not change what it points to. Access discipline is the caller's.
unsafe impl Send for Map {}
// SAFETY: as above; `Map` itself has no interior state.
unsafe impl Sync for Map {}

/// The huge page size to lay a new store out for: [`huge_page`] where the kernel has
/// `MADV_COLLAPSE` (Linux 6.1) and transparent huge pages for shared memory at all (the
/// sysfs files exist and shmem's are not `deny`: a collapse works whatever else they say),
/// `None` where a collapse can only fail, so that no store pads its index (or commits its
/// arena) for pages it cannot get. Read once per process.
pub fn huge_page_for_layout() -> Option<usize> {
    static SHMEM_OK: AtomicU64 = AtomicU64::new(UNSET);
    let size = reported_huge_page()?;
    let ok = cached(&SHMEM_OK, || {
        let collapse = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .is_ok_and(|release| release_has_collapse(&release));
        u64::from(
            collapse
                && std::fs::read_to_string(format!("{THP}/shmem_enabled"))
                    .is_ok_and(|shmem| !shmem.contains("[deny]")),
        )
    });
    (ok == 1).then_some(size)
}

/// [`cached`]'s mark of a value not computed yet.
const UNSET: u64 = u64::MAX;

/// The value in `cell`, computed by `f` (never [`UNSET`]) the first time. Not a `OnceLock`:
/// threads that come at once may each compute it (the same value), and none waits for
/// another, so a child forked while a parent's thread was computing it cannot be left
/// waiting for good.
fn cached(cell: &AtomicU64, f: impl FnOnce() -> u64) -> u64 {
    match cell.load(Relaxed) {
        UNSET => {
            let v = f();
            debug_assert_ne!(v, UNSET);
            cell.store(v, Relaxed);
            v
        }
        v => v,
    }
}

/// Whether a kernel of release `release` (`uname -r`: "6.18.44-fc", "5.15.0-91-generic")
/// has `MADV_COLLAPSE`, which came with 6.1. An unreadable release is taken as without.
fn release_has_collapse(release: &str) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 1),
        _ => false,
    }
}

/// Where the kernel reports on transparent huge pages.
const THP: &str = "/sys/kernel/mm/transparent_hugepage";

/// The huge page size the kernel reports (`hpage_pmd_size`), read once; `None` without
/// transparent huge pages, or with a figure no mapping could use.
fn reported_huge_page() -> Option<usize> {
    static SIZE: AtomicU64 = AtomicU64::new(UNSET);
    // 0 for none.
    let size = cached(&SIZE, || {
        std::fs::read_to_string(format!("{THP}/hpage_pmd_size"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n.is_power_of_two() && n > page_size() && n <= 1 << 30)
            .map_or(0, |n| n as u64)
    });
    (size != 0).then_some(size as usize)
}

/// The size of the huge pages a file's pages can be collapsed into (a PMD's reach: 2 MiB on
/// x86-64 and on arm64 with 4 KiB pages), as the kernel reports it; 2 MiB if it does not.
/// Mappings of at least this length start on a multiple of it, which is what lets the kernel
/// map a huge page of the file with one page-table entry.
pub fn huge_page() -> usize {
    reported_huge_page().unwrap_or(2 << 20)
}

/// The size of a page (`sysconf(_SC_PAGESIZE)`; 4 KiB if it does not say).
pub fn page_size() -> usize {
    static SIZE: AtomicU64 = AtomicU64::new(UNSET);
    cached(&SIZE, || {
        // SAFETY: sysconf reads a system constant; no pointers.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n)
            .ok()
            .filter(|n| n.is_power_of_two())
            .unwrap_or(4096) as u64
    }) as usize
}

impl Map {
    /// Maps `len` bytes of `fd` shared, readable and writable. A mapping of at least
    /// [`huge_page`] bytes starts on a multiple of it (the file offsets of huge pages are
    /// multiples of it too, so only then can a huge page of the file be mapped whole), unless
    /// there is no room for that: then the kernel picks the address.
    pub fn new(fd: &OwnedFd, len: usize) -> io::Result<Map> {
        let huge = huge_page();
        // The mapping covers whole pages (the last one partly past the file's end).
        let whole = len.checked_next_multiple_of(page_size());
        let at = whole
            .and_then(|w| w.checked_add(huge))
            .filter(|_| len >= huge)
            .and_then(|r| Reservation::new(r).ok())
            .and_then(|r| r.aligned(huge, whole?));
        let (addr, fixed) = match &at {
            Some(a) => (a.0, libc::MAP_FIXED),
            None => (std::ptr::null_mut(), 0),
        };
        // SAFETY: either a kernel-chosen address, or (MAP_FIXED) a range inside a reservation
        // this function made and still owns, so nothing else in the process is replaced.
        // The mapping aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                addr,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | fixed,
                fd.as_raw_fd(),
                0,
            )
        };
        let failed = (p == libc::MAP_FAILED).then(io::Error::last_os_error);
        if let (Some((addr, reservation)), Some(whole)) = (at, whole) {
            // The file now owns the middle of the reservation: give back the rest. Had the
            // mapping failed, the middle may be a hole that another thread's mmap can take at
            // any moment, so it is not unmapped: its `len` bytes of address space (no memory)
            // stay reserved, once per failed open (`segment::open` does not retry after one).
            reservation.release_around(addr.cast(), whole);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Map { ptr, len })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Maps the pages of `[off, off + len)` into this process's page tables now, writable
    /// (`MADV_POPULATE_WRITE`, Linux 5.14): one system call instead of a page fault on the
    /// first write to each page. The pages must be reserved (`fallocate`) already, or this
    /// fails (an error, never SIGBUS). A hint: callers ignore failures (older kernels say
    /// `EINVAL`).
    pub fn populate_write(&self, off: usize, len: usize) -> io::Result<()> {
        let end = off.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() || !off.is_multiple_of(4096) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: the range lies inside this mapping (checked) and starts on a page; the
        // advice only fills page tables, it changes no byte a reader could see.
        check(unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(off).cast(),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        })
        .map(|_| ())
    }

    /// Asks the kernel to back `[off, off + len)` with huge pages now (`MADV_COLLAPSE`,
    /// Linux 6.1; on tmpfs it works whatever `/dev/shm`'s `huge=` mount option says). The
    /// range must start and end on [`huge_page`] boundaries of the file. Contents are kept;
    /// other processes that map the file at an aligned address (as [`Map::new`] does) then
    /// map those pages whole on their first touch. The kernel may refuse: `shmem_enabled` set
    /// to `deny`, huge pages disabled for this process (`PR_SET_THP_DISABLE`, inherited),
    /// no free huge page (`ENOMEM`), a transient `EAGAIN` (retried twice here). A hint: on
    /// failure the pages simply stay small.
    pub fn collapse(&self, off: usize, len: usize) -> io::Result<()> {
        let huge = huge_page();
        let end = off.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() || !off.is_multiple_of(huge) || !len.is_multiple_of(huge) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut tries = 0;
        loop {
            // SAFETY: the range lies inside this mapping (checked); the advice replaces the
            // pages behind it by huge pages holding the same bytes, which no reader can tell
            // apart.
            let rc =
                unsafe { libc::madvise(self.ptr.as_ptr().add(off).cast(), len, MADV_COLLAPSE) };
            match check(rc) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 2 => tries += 1,
                done => return done.map(|_| ()),
            }
        }
    }
}

/// `MADV_COLLAPSE` from the kernel's uapi headers (the same on every architecture; the `libc`
/// crate defines it for glibc targets only).
const MADV_COLLAPSE: libc::c_int = 25;

/// An inaccessible range of address space held only to pick an aligned place in it.
struct Reservation {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Reservation {
    fn new(len: usize) -> io::Result<Reservation> {
        // SAFETY: a fresh, inaccessible, unbacked mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Reservation { ptr: p, len })
    }

    /// The first multiple of `align` inside the reservation with `len` bytes after it.
    fn aligned(self, align: usize, len: usize) -> Option<(*mut libc::c_void, Reservation)> {
        let start = (self.ptr as usize).checked_next_multiple_of(align)?;
        (start + len <= self.ptr as usize + self.len).then_some((start as *mut _, self))
    }

    /// Unmaps what lies before and after `[ptr, ptr + len)` (whole pages), which something
    /// else now owns.
    fn release_around(self, ptr: *mut u8, len: usize) {
        let (lo, hi) = (self.ptr as usize, self.ptr as usize + self.len);
        let (start, end) = (ptr as usize, ptr as usize + len);
        debug_assert!(lo <= start && end <= hi && end.is_multiple_of(page_size()));
        // SAFETY: both ranges are parts of this reservation outside `[start, end)`, so they
        // hold only the inaccessible anonymous pages made in `new`.
        unsafe {
            if start > lo {
                libc::munmap(self.ptr, start - lo);
            }
            if hi > end {
                libc::munmap(end as *mut libc::c_void, hi - end);
            }
        }
        std::mem::forget(self);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: exactly the range `new` mapped, which nothing else uses.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and no reference into the range
        // outlives `self` (borrows of the mapping are tied to it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Where `shm_open` keeps its objects.
pub const SHM_DIR: &str = "/dev/shm";

/// Lists the names in the directory that holds shared-memory objects.
pub fn shm_dir_names() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// This process's id.
/// Cached: `getpid` is a system call, and the lock records its holder on every operation.
/// A fork handler clears the cache in the child.
pub fn pid() -> u32 {
    let cached = PID.load(std::sync::atomic::Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    track_forks();
    let pid = std::process::id();
    PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    pid
}

static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The calling thread's id (`gettid`; a system call, not cached).
pub fn tid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// This process's pid namespace, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidNs {
    /// The low 32 bits of the inode of `/proc/self/ns/pid` (never 0; `None` if unreadable).
    pub id: Option<u32>,
    /// Whether `/proc` is mounted for this namespace, so that `/proc/PID` describes the
    /// process this process knows as PID: only then may it judge other processes alive.
    pub own_proc: bool,
}

/// This process's pid namespace ([`PidNs`]), asked of `/proc` once per fork generation (a
/// child may be in a new namespace: `unshare --pid`).
pub fn pid_namespace() -> PidNs {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::Ordering::{Acquire, Release};
    use std::sync::atomic::{AtomicU32, AtomicU64};
    static FOR_GENERATION: AtomicU64 = AtomicU64::new(0);
    static ID: AtomicU32 = AtomicU32::new(0);
    static OWN_PROC: AtomicU32 = AtomicU32::new(0);
    let cached = || PidNs {
        id: Some(ID.load(Acquire)).filter(|&n| n != 0),
        own_proc: OWN_PROC.load(Acquire) != 0,
    };
    let generation = fork_generation().wrapping_add(1).max(1);
    if FOR_GENERATION.load(Acquire) == generation {
        return cached();
    }
    let id = std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| (m.ino() as u32).max(1));
    ID.store(id, Release);
    OWN_PROC.store(u32::from(proc_is_own()), Release);
    FOR_GENERATION.store(generation, Release);
    cached()
}

/// Whether `/proc` belongs to this process's pid namespace: `NSpid` in `/proc/self/status`
/// lists the process's pid in each namespace from the one `/proc` was mounted for down to
/// its own, so exactly one entry means they are the same. (Kernels before 4.1 have no
/// `NSpid`: then `/proc/self` must at least name this process's pid.)
fn proc_is_own() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("NSpid:")) {
        return line.split_whitespace().count() == 2;
    }
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on CLOCK_MONOTONIC_COARSE: the same clock as [`monotonic_ns`], as of the
/// last scheduler tick (1-10 ms resolution), for about a quarter of its cost.
pub fn coarse_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---- robust process-shared mutex ----------------------------------------------------------

unsafe extern "C" {
    // glibc >= 2.30; not bound by the libc crate.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Initialises a robust, process-shared, error-checking mutex in place.
///
/// # Safety
/// `m` points to writable memory large and aligned enough for a `pthread_mutex_t` that no
/// thread is using.
pub unsafe fn mutex_init(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: an all-zero attribute object is valid storage for pthread_mutexattr_init.
    let mut attr: libc::pthread_mutexattr_t = unsafe { std::mem::zeroed() };
    let a = &mut attr as *mut libc::pthread_mutexattr_t;
    // SAFETY: `a` points to a live local; each call receives an initialised attribute object.
    let rcs = unsafe {
        [
            libc::pthread_mutexattr_init(a),
            libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
            libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
            libc::pthread_mutexattr_settype(a, libc::PTHREAD_MUTEX_ERRORCHECK),
            libc::pthread_mutex_init(m, a),
            libc::pthread_mutexattr_destroy(a),
        ]
    };
    match rcs.iter().find(|&&rc| rc != 0) {
        Some(&rc) => Err(io::Error::from_raw_os_error(rc)),
        None => Ok(()),
    }
}

/// Where glibc keeps a mutex's kind (type, robust, process-shared and protocol bits): the
/// `__kind` field of `pthread_mutex_t` on 64-bit Linux.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const KIND_OFFSET: usize = 16;

/// The kind word of a mutex made by [`mutex_init`], learnt from one made here.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn expected_kind() -> i32 {
    static KIND: AtomicU64 = AtomicU64::new(UNSET);
    cached(&KIND, || {
        // SAFETY: an all-zero pthread_mutex_t is valid storage for pthread_mutex_init.
        let mut m: libc::pthread_mutex_t = unsafe { std::mem::zeroed() };
        // SAFETY: `m` is a local no other thread sees; it is destroyed below.
        let _ = unsafe { mutex_init(&mut m) };
        // SAFETY: KIND_OFFSET + 4 lies inside pthread_mutex_t (40 bytes on these targets).
        let kind = unsafe {
            std::ptr::read_unaligned((&raw const m).cast::<u8>().add(KIND_OFFSET).cast::<i32>())
        };
        // SAFETY: `m` was initialised above and is not locked.
        unsafe { libc::pthread_mutex_destroy(&mut m) };
        u64::from(kind as u32)
    }) as u32 as i32
}

/// Whether a shared mutex still has the kind [`mutex_init`] gave it. glibc asserts (aborting
/// the process) on some kinds, such as priority-protect or priority-inheritance bits that a
/// scribble could set; such a mutex must not be handed to it.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
pub unsafe fn mutex_kind_ok(m: *mut libc::pthread_mutex_t) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        // SAFETY: the word lies inside the mutex (caller); it is 4-aligned (the mutex is
        // 64-aligned in the header) and read atomically because other processes may write it.
        let word = unsafe {
            &*m.cast::<u8>()
                .add(KIND_OFFSET)
                .cast::<std::sync::atomic::AtomicI32>()
        };
        word.load(std::sync::atomic::Ordering::Relaxed) == expected_kind()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        let _ = m;
        true
    }
}

/// The futex word of a robust mutex: glibc keeps it first (`__lock`), and the kernel's
/// robust-futex protocol (futex(2)) fixes what it holds: the owner's thread id in the low 30
/// bits, then `FUTEX_OWNER_DIED` and `FUTEX_WAITERS`. `None` where the layout is not known.
///
/// # Safety
/// `m` points to a `pthread_mutex_t` in a live mapping.
pub unsafe fn mutex_word(m: *mut libc::pthread_mutex_t) -> Option<u32> {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        // SAFETY: the word is the mutex's first 4 bytes (caller: a live mutex, 64-aligned in
        // the header), read atomically because other processes change it.
        let word = unsafe { &*m.cast::<std::sync::atomic::AtomicU32>() };
        Some(word.load(std::sync::atomic::Ordering::Acquire))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        let _ = m;
        None
    }
}

/// The owner thread id a [`mutex_word`] names.
pub fn mutex_word_owner(word: u32) -> u32 {
    word & FUTEX_TID_MASK
}

/// Whether a [`mutex_word`] says its owner died (the next locker gets `EOWNERDEAD`).
pub fn mutex_word_owner_died(word: u32) -> bool {
    word & FUTEX_OWNER_DIED != 0
}

const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_WAITERS: u32 = 0x8000_0000;

/// Does for a mutex whose word still names a thread that is gone what the kernel does when
/// a robust mutex's owner exits: replaces the word, if it still is `seen`, by
/// `FUTEX_OWNER_DIED` (keeping `FUTEX_WAITERS`), and wakes one waiter. The next locker then
/// gets `EOWNERDEAD`, as after any holder's death. Returns whether the word was replaced.
///
/// # Safety
/// As for [`mutex_word`]; the caller has made sure the thread `seen` names is gone.
pub unsafe fn mutex_release_orphan(m: *mut libc::pthread_mutex_t, seen: u32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed};
        // SAFETY: as in `mutex_word`.
        let word = unsafe { &*m.cast::<std::sync::atomic::AtomicU32>() };
        let died = (seen & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        if word.compare_exchange(seen, died, AcqRel, Relaxed).is_err() {
            return false;
        }
        // SAFETY: a shared (not private) wake on the word's address, as the mutex is
        // process-shared; the kernel only reads the address. At most one waiter is woken.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                m.cast::<u32>(),
                libc::FUTEX_WAKE,
                1,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0,
            )
        };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
    {
        let _ = (m, seen);
        false
    }
}

/// `pthread_mutex_trylock`; returns the pthread error code (0 on success).
///
/// # Safety
/// `m` points to a mutex initialised by [`mutex_init`] in a live mapping.
pub unsafe fn mutex_trylock(m: *mut libc::pthread_mutex_t) -> i32 {
    // SAFETY: the caller guarantees `m` is an initialised mutex.
    unsafe { libc::pthread_mutex_trylock(m) }
}

/// Waits for the mutex until `timeout` has passed on CLOCK_MONOTONIC; returns the pthread
/// error code (0 on success, `ETIMEDOUT`, `EOWNERDEAD`, ...).
///
/// # Safety
/// As for [`mutex_trylock`].
pub unsafe fn mutex_lock_for(m: *mut libc::pthread_mutex_t, timeout: Duration) -> i32 {
    let deadline =
        monotonic_ns().saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
    let ts = libc::timespec {
        tv_sec: (deadline / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: the caller guarantees `m`; `ts` is a normalised timespec (nsec < 1e9).
    unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &ts) }
}

/// # Safety
/// As for [`mutex_trylock`], and the calling thread holds the mutex.
pub unsafe fn mutex_unlock(m: *mut libc::pthread_mutex_t) -> i32 {
    // SAFETY: the caller guarantees `m` and ownership.
    unsafe { libc::pthread_mutex_unlock(m) }
}

/// Marks a mutex whose previous owner died as consistent again.
///
/// # Safety
/// As for [`mutex_unlock`], after the lock returned `EOWNERDEAD`.
pub unsafe fn mutex_consistent(m: *mut libc::pthread_mutex_t) -> i32 {
    // SAFETY: the caller guarantees `m` and ownership.
    unsafe { libc::pthread_mutex_consistent(m) }
}

// ---- processes ----------------------------------------------------------------------------

/// The start time of a process (clock ticks after boot, field 22 of /proc/PID/stat), which
/// tells a process from a later one that reuses its pid. `None` if it does not exist or is a
/// zombie.
/// What can be told about a process from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running, started at this many clock ticks after boot.
    Running(u64),
    /// No such process (or a zombie).
    Gone,
    /// It exists (or may), but its details cannot be read (permissions, no file descriptor
    /// left, `hidepid`): treat it as alive.
    Unknown,
}

/// Whether `pid` is alive, and since when. Only a definite answer counts as dead: a zombie,
/// or `kill(pid, 0)` saying there is no such process.
pub fn process_state(pid: u32) -> ProcessState {
    // As bytes: the command name in it may be any bytes, not UTF-8 (the fields after it are
    // ASCII).
    if let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) {
        return match parse_start_time(&String::from_utf8_lossy(&stat)) {
            Some(Some(start)) => ProcessState::Running(start),
            Some(None) => ProcessState::Gone,
            None => ProcessState::Unknown,
        };
    }
    let Ok(id) = libc::pid_t::try_from(pid) else {
        return ProcessState::Gone;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(id, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        ProcessState::Gone
    } else {
        ProcessState::Unknown
    }
}

/// The start time in a `/proc/PID/stat` line: `Some(None)` for a zombie, `None` if the line
/// cannot be parsed.
fn parse_start_time(stat: &str) -> Option<Option<u64>> {
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // A zombie (killed, not yet reaped) or dead process uses nothing any more.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return Some(None);
    }
    fields.nth(18)?.parse().ok().map(Some)
}

/// The start time of a running process (`None`: gone, a zombie, or unreadable).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&String::from_utf8_lossy(&stat)).flatten()
}

static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

fn track_forks() {
    // 0: not registered; `u64::MAX`: registered; else the pid of the process one of whose
    // threads is registering it (not a `Once`: a child forked while a parent's thread was
    // in it would wait for good; a mark of another pid was copied by such a fork).
    static STATE: AtomicU64 = AtomicU64::new(0);
    loop {
        let state = STATE.load(Acquire);
        if state == u64::MAX {
            return;
        }
        let me = u64::from(std::process::id());
        if state == me {
            std::thread::yield_now();
            continue;
        }
        if STATE.compare_exchange(state, me, AcqRel, Acquire).is_ok() {
            // SAFETY: the handler only stores to atomics, which is async-signal-safe, as a
            // handler run in the child after fork must be. (Registered twice, by a child
            // whose parent had registered it just before the fork, it counts each fork
            // twice: the generation still changes, which is all it is for.)
            unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
            STATE.store(u64::MAX, Release);
            return;
        }
    }
}

/// A number that changes in a child process after every `fork()` (through `fork` or
/// `libc::fork`, which run the handlers; a raw fork system call does not): a handle compares it
/// with the one it saw last to notice it now lives in another process, without a system call.
pub fn fork_generation() -> u64 {
    track_forks();
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The lowest address of the calling thread's stack and the stack's size, as the C library
/// knows them (for the main thread, from the stack's resource limit); `None` if it cannot
/// say. The stack grows down towards the address: a decoder compares the address of a local
/// with it to stop recursing before the guard page (`bounded.rs`).
pub fn thread_stack() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: fills `attr` for this thread; on success it is initialised and destroyed below.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
        return None;
    }
    let mut low: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised by pthread_getattr_np; the out-pointers are locals.
    let rc = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut low, &mut size) };
    // SAFETY: `attr` is initialised and destroyed once.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    (rc == 0 && !low.is_null() && size > 0).then_some((low as usize, size))
}

/// Ends this process at once with SIGKILL (for fault injection: a death the process cannot
/// catch, with whatever locks it holds).
#[cfg(feature = "fault-injection")]
pub fn kill_self() -> ! {
    // SAFETY: sends SIGKILL to this process; nothing after it runs.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    // SAFETY: not reached; _exit is the fallback should the signal be delayed.
    unsafe { libc::_exit(137) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madv_collapse_is_known_from_6_1_on() {
        for (release, has) in [
            ("6.18.44-fc-v657", true),
            ("6.1.0-18-amd64", true),
            ("7.0", true),
            ("6.0.12", false),
            ("5.15.0-91-generic", false),
            ("4.19.0", false),
            ("", false),
            ("linux", false),
            ("6", false),
        ] {
            assert_eq!(release_has_collapse(release), has, "{release:?}");
        }
    }

    #[test]
    fn only_a_process_that_is_gone_counts_as_dead() {
        let me = pid();
        assert_eq!(
            process_state(me),
            ProcessState::Running(process_start_time(me).unwrap())
        );
        let mut kid = std::process::Command::new("true").spawn().unwrap();
        let id = kid.id();
        kid.wait().unwrap();
        assert_eq!(process_state(id), ProcessState::Gone);
        assert_eq!(process_state(i32::MAX as u32 + 1), ProcessState::Gone);
    }

    /// Unlinks a test's shared-memory object when dropped, also when the test fails.
    struct Unlink(std::ffi::CString);

    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = shm_unlink(&self.0);
        }
    }

    /// A fresh shared-memory object of `len` bytes for a test, and its guard.
    fn test_object(tag: &str, len: usize) -> (OwnedFd, Unlink) {
        let path = std::ffi::CString::new(format!("/shmstore-os-test-{tag}-{}", pid())).unwrap();
        let _ = shm_unlink(&path);
        let fd = shm_create(&path, 0o600).unwrap();
        let gone = Unlink(path);
        ftruncate(&fd, len as u64).unwrap();
        (fd, gone)
    }

    #[test]
    fn large_mappings_start_on_a_huge_page_and_keep_their_bytes_when_collapsed() {
        let huge = huge_page();
        let len = 2 * huge + 4096;
        let (fd, _gone) = test_object("map", len);
        fallocate(&fd, 0, len as u64).unwrap();
        let a = Map::new(&fd, len).unwrap();
        let b = Map::new(&fd, len).unwrap();
        assert_eq!(a.ptr() as usize % huge, 0, "a large mapping is aligned");
        assert_eq!(b.ptr() as usize % huge, 0, "a large mapping is aligned");
        assert_ne!(a.ptr(), b.ptr());
        let small = Map::new(&fd, 4096).unwrap();
        // SAFETY (test): every offset written or read is inside all three mappings' lengths,
        // and no reference into them is held.
        let (write, read) = (
            |m: &Map, off: usize, v: u8| unsafe { m.ptr().add(off).write_volatile(v) },
            |m: &Map, off: usize| unsafe { m.ptr().add(off).read_volatile() },
        );
        let marks = [0, 4095, huge - 1, huge, 2 * huge - 1, len - 1];
        for (i, &off) in marks.iter().enumerate() {
            write(&a, off, i as u8 + 1);
        }
        assert_eq!(read(&small, 4095), 2, "a small mapping sees the same file");
        for bad in [
            (4096, huge),
            (0, 4096),
            (0, 2 * huge + 4096),
            (huge, 2 * huge),
        ] {
            assert_eq!(
                a.collapse(bad.0, bad.1).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?} is not whole huge pages inside the mapping"
            );
        }
        // Whether the kernel gives a huge page is its choice; the bytes must be kept either way.
        let collapsed = a.collapse(0, 2 * huge);
        for (i, &off) in marks.iter().enumerate() {
            assert_eq!(read(&b, off), i as u8 + 1, "byte {off} after {collapsed:?}");
            assert_eq!(read(&a, off), i as u8 + 1, "byte {off} after {collapsed:?}");
        }
        write(&b, huge + 7, 99);
        assert_eq!(read(&a, huge + 7), 99, "the mappings still share the file");
    }

    /// The `PROT_NONE` mappings of this process (start address of each), from /proc/self/maps.
    fn inaccessible_mappings() -> Vec<usize> {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("---p"))
            .map(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn an_aligned_mapping_of_a_file_with_a_partial_last_page_leaves_no_reservation_behind() {
        let len = huge_page() + 100;
        let (fd, _gone) = test_object("tail", len);
        // Other tests' threads map too, and the kernel may put their mappings (reservations,
        // thread stacks' guard pages) right after this one: a leaked tail shows every time,
        // a neighbour only now and then.
        let mut tails = Vec::new();
        for _ in 0..5 {
            let map = Map::new(&fd, len).unwrap();
            let start = map.ptr() as usize;
            assert_eq!(start % huge_page(), 0);
            let tail = start + len.next_multiple_of(page_size());
            if !inaccessible_mappings().contains(&tail) {
                return;
            }
            tails.push(tail);
        }
        panic!("the reservation's tail is still mapped, at {tails:x?}");
    }

    #[test]
    fn a_process_whose_name_is_not_utf8_is_judged_too() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("shmstore-os-test-name-{}", pid()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-sleep"));
        let _ = std::fs::remove_file(&exe);
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("a sleep program");
        std::os::unix::fs::symlink(sleep, &exe).unwrap();
        let spawned = std::process::Command::new(&exe).arg("30").spawn();
        let _ = std::fs::remove_dir_all(&dir);
        /// Killed and reaped when dropped, also when the test fails.
        struct Kid(std::process::Child);
        impl Drop for Kid {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut kid = Kid(spawned.unwrap());
        let id = kid.0.id();
        assert!(matches!(process_state(id), ProcessState::Running(_)));
        assert!(process_start_time(id).is_some());
        kid.0.kill().unwrap();
        // A zombie until reaped: gone already, its pid not yet reusable.
        let start = std::time::Instant::now();
        while process_state(id) != ProcessState::Gone {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "never died"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_zombie_has_no_start_time() {
        let line = "4242 (a (tricky) name) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
        assert_eq!(parse_start_time(line), Some(None));
        let line = "4242 (a (tricky) name) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
        assert_eq!(parse_start_time(line), Some(Some(19)));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
