//! Holds a store's lock for a while, as a slow `get_with` caller would: for watching what
//! the others see meanwhile (`shmstore stat` reports the holder; puts wait, then time out;
//! lock-free gets go on). Used by `docs/cli-transcript.sh`.
//!
//! `cargo run --release --example hold_lock -- NAME KEY SECONDS`

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, name, key, secs] = args.as_slice() else {
        return Err("usage: hold_lock NAME KEY SECONDS".into());
    };
    let secs: f64 = secs.parse()?;
    let store = shmstore::Store::open(name)?;
    let found = store.get_with(key, |bytes| {
        println!(
            "holding the lock of {name:?} ({} bytes under {key:?}) for {secs} s",
            bytes.len()
        );
        std::thread::sleep(Duration::from_secs_f64(secs));
    })?;
    if found.is_none() {
        return Err(format!("no key {key:?} in {name:?}").into());
    }
    Ok(())
}
