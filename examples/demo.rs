//! The demo: processes sharing one store.
//!
//! 1. Three separate processes (this program re-started as workers) open the store by name,
//!    each decodes "frames" once and shares them; each also reads the others' frames.
//! 2. A forked pool: two children inherit the parent's handle (no reopening) and do the same.
//!
//! At the end the parent checks every frame, prints the store's statistics and destroys it.
//!
//! Run: `cargo run --release --example demo`

use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shmstore::{Options, Store};

const FRAMES_PER_WORKER: u32 = 200;

/// What a data-loading worker would decode once and share: an image and its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Frame {
    worker: String,
    index: u32,
    label: String,
    pixels: Vec<u8>,
}

fn decode_frame(worker: &str, index: u32) -> Frame {
    // Stands in for an expensive decode: deterministic, so any reader can check it.
    let pixels = (0..4096u32)
        .map(|i| (i.wrapping_mul(index + 7) >> 3) as u8)
        .collect();
    Frame {
        worker: worker.to_owned(),
        index,
        label: format!("{worker}/{index}"),
        pixels,
    }
}

fn key(worker: &str, index: u32) -> String {
    format!("frame/{worker}/{index}")
}

/// One worker's job: put its frames, then read everything the others have put so far.
fn work(store: &Store, me: &str, others: &[String]) -> shmstore::Result<(u32, u32)> {
    for i in 0..FRAMES_PER_WORKER {
        store.put(&key(me, i), &decode_frame(me, i))?;
    }
    let (mut seen, deadline) = (0u32, Instant::now() + Duration::from_secs(10));
    let mut checked = 0u32;
    for other in others {
        for i in 0..FRAMES_PER_WORKER {
            // Wait (bounded) for the other worker's frame to appear.
            loop {
                if let Some(frame) = store.get::<Frame>(&key(other, i))? {
                    assert_eq!(frame, decode_frame(other, i), "a frame read back differs");
                    checked += 1;
                    seen += 1;
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok((seen, checked))
}

fn worker_main(name: &str, me: &str, others: Vec<String>) -> shmstore::Result<()> {
    let store = Store::open(name)?;
    let (seen, checked) = work(&store, me, &others)?;
    println!(
        "  process {me} (pid {}): put {FRAMES_PER_WORKER} frames, read {seen} of the others' ({checked} checked)",
        std::process::id()
    );
    Ok(())
}

fn main() {
    // An error in its own words (`Display`: what went wrong and what to do), not its debug form.
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 4 && args[1] == "worker" {
        worker_main(&args[2], &args[3], args[4..].to_vec())?;
        return Ok(());
    }

    let name = format!("demo-{}", std::process::id());
    let store = Store::create(&name, Options::default().capacity(64 << 20))?;
    let _cleanup = Destroy(name.clone());
    println!("created store {name:?} (64 MiB) in /dev/shm/shmstore.{name}");

    println!("1. three processes open the store by name:");
    let ids: Vec<String> = (1..=3).map(|i| format!("p{i}")).collect();
    let exe = std::env::current_exe()?;
    let children: Vec<_> = ids
        .iter()
        .map(|me| {
            let others = ids.iter().filter(|o| *o != me);
            Command::new(&exe)
                .arg("worker")
                .arg(&name)
                .arg(me)
                .args(others)
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a worker process failed: {status}").into());
        }
    }

    println!("2. a forked pool shares the parent's handle:");
    let pool: Vec<String> = vec!["f1".into(), "f2".into()];
    let mut pids = Vec::new();
    for me in &pool {
        let others: Vec<String> = pool.iter().filter(|o| *o != me).cloned().collect();
        // SAFETY: the child only uses the store and stdout, then leaves with _exit without
        // running the parent's destructors (which would destroy the store).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match work(&store, me, &others) {
                Ok((seen, checked)) => {
                    println!(
                        "  forked {me} (pid {}): put {FRAMES_PER_WORKER} frames, read {seen} of the others' ({checked} checked)",
                        std::process::id()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("  forked {me}: {e}");
                    1
                }
            };
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // SAFETY: ends the child at once, as a forked child of a multi-threaded parent must.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        pids.push(pid);
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: waits for a child this process forked; `status` is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!("a forked worker failed (status {status})").into());
        }
    }

    println!("3. the parent reads everything back:");
    let mut all = ids.clone();
    all.extend(pool);
    for w in &all {
        for i in 0..FRAMES_PER_WORKER {
            let frame: Frame = store.get(&key(w, i))?.ok_or("a frame is missing")?;
            assert_eq!(frame, decode_frame(w, i));
        }
    }
    println!(
        "  all {} frames present and intact; store still valid after the workers exited: {}",
        store.count()?,
        shmstore::valid(&name)
    );
    store.check()?;

    let s = store.stats()?;
    println!(
        "stats: {} objects, {:.1} MiB used of {:.0} MiB, {} puts, {} hits, {} misses (hit ratio {:.4}), {} evictions, {} lock timeouts, {} recoveries",
        s.objects,
        s.used_bytes as f64 / (1 << 20) as f64,
        s.capacity as f64 / (1 << 20) as f64,
        s.puts,
        s.hits,
        s.misses,
        s.hit_ratio(),
        s.evictions,
        s.lock_timeouts,
        s.recoveries
    );
    Ok(())
}

/// Destroys the demo's store on the way out, also on an error.
struct Destroy(String);

impl Drop for Destroy {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
        println!("destroyed store {:?}", self.0);
    }
}
