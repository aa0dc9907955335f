//! A forked worker pool sharing decoded objects: each "image" is decoded once, by whichever
//! worker needs it first; the others get it from the store. The children inherit the parent's
//! handle across `fork()`.
//!
//! Run: `cargo run --release --example pool`

use serde::{Deserialize, Serialize};
use shmstore::{Options, Store};

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Decoded {
    id: u32,
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

/// Stands in for an expensive decode.
fn decode(id: u32) -> Decoded {
    let (width, height) = (64, 48);
    let pixels = (0..width * height).map(|i| (i ^ id) as u8).collect();
    Decoded {
        id,
        width,
        height,
        pixels,
    }
}

/// Gets image `id` from the store, decoding and sharing it on a miss; returns whether it
/// had to decode.
fn load(store: &Store, id: u32) -> shmstore::Result<bool> {
    let key = format!("image/{id}");
    if let Some(img) = store.get::<Decoded>(&key)? {
        assert_eq!(img, decode(id));
        return Ok(false);
    }
    store.put(&key, &decode(id))?;
    Ok(true)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("pool-{}", std::process::id());
    let store = Store::create(&name, Options::default().capacity(32 << 20))?;
    const WORKERS: u32 = 4;
    const IMAGES: u32 = 300;
    let mut pids = Vec::new();
    for w in 0..WORKERS {
        // SAFETY: the child uses only the store and stdout, then _exits without running the
        // parent's destructors.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut decoded = 0;
            // Every worker walks all images, starting at a different place.
            for i in 0..IMAGES {
                let id = (i + w * IMAGES / WORKERS) % IMAGES;
                match load(&store, id) {
                    Ok(true) => decoded += 1,
                    Ok(false) => {}
                    Err(e) => {
                        eprintln!("worker {w}: {e}");
                        // SAFETY: ends the forked child at once.
                        unsafe { libc::_exit(1) };
                    }
                }
            }
            println!(
                "worker {w} (pid {}): decoded {decoded} of {IMAGES} images, shared the rest",
                std::process::id()
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(0) };
        }
        pids.push(pid);
    }
    let mut failed = false;
    for pid in pids {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        failed |= !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    let s = store.stats()?;
    println!(
        "{} images decoded in all for {} loads ({} puts, {} hits); {} objects in the store",
        s.puts,
        WORKERS * IMAGES,
        s.puts,
        s.hits,
        s.objects
    );
    Store::destroy(&name)?;
    if failed {
        return Err("a worker failed".into());
    }
    Ok(())
}
