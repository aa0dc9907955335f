//! Memory pressure: a 16 MiB store receives 64 MiB of objects. A rotating store keeps the most
//! recently used and rotates the rest out; a strict store refuses what does not fit. Both keep
//! their memory near the capacity, because the pages of evicted objects go back to the system.
//!
//! Run: `cargo run --release --example pressure`

use shmstore::{Options, PutPolicy, Store};

fn run(policy: PutPolicy) -> shmstore::Result<()> {
    let name = format!("pressure-{}-{policy}", std::process::id());
    let store = Store::create(
        &name,
        Options::default().capacity(16 << 20).put_policy(policy),
    )?;
    let mut refused = 0;
    for i in 0..256u32 {
        // 256 objects of 16-496 KiB, some read again (so they stay recent).
        let len = (16 + (i * 37) % 480) as usize * 1024;
        if !store.put_bytes(&format!("obj{i}"), &vec![i as u8; len])? {
            refused += 1;
        }
        if i % 4 == 0 {
            store.get_bytes("obj0")?;
        }
    }
    let s = store.stats()?;
    println!(
        "{policy:>6}: {} objects kept ({:.1} MiB of 16 MiB used), {} evicted, {} moved to make room, {refused} refused, obj0 kept: {}, memory held: {:.1} MiB",
        s.objects,
        s.used_bytes as f64 / (1 << 20) as f64,
        s.evictions,
        s.moves,
        store.has("obj0")?,
        s.memory_bytes as f64 / (1 << 20) as f64
    );
    store.check()?;
    Store::destroy(&name)
}

fn main() -> shmstore::Result<()> {
    run(PutPolicy::Rotate)?;
    run(PutPolicy::Strict)
}
