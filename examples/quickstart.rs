//! The README's quickstart, runnable: `cargo run --example quickstart`.

use std::time::Duration;

use shmstore::{Options, Put, PutPolicy, Store};

fn main() -> shmstore::Result<()> {
    let name = format!("quickstart-{}", std::process::id());
    let opts = Options::default()
        .capacity(256 << 20) // bytes the store may hold
        .min_free_mem_pct(0.2) // fraction of memory that must stay available
        .put_policy(PutPolicy::Rotate) // or PutPolicy::Strict
        .lock_timeout(Duration::from_secs(30));
    let store = Store::create(&name, opts)?; // error if the name exists
    let other = Store::open(&name)?; // any process of the same user
    let same = Store::open_or_create(&name, opts)?;

    assert!(store.put("a", &vec![1u32, 2, 3])?); // false if the policy refused it
    match store.try_put("b", &7u8)? {
        Put::Stored => println!("b stored"),
        Put::Refused(why) => println!("b not stored: {why}"), // which limit refused it
    }
    let v: Option<Vec<u32>> = other.get("a")?;
    let n: u32 = other.get_or("missing", 7)?;
    println!("a = {v:?}, missing = {n}");
    println!(
        "has a: {}, count: {}, keys: {:?}",
        other.has("a")?,
        other.count()?,
        other.keys()?
    );

    store.put_bytes("raw", b"\x00\x01\x02")?; // no serde on this path
    println!("raw = {:?}", same.get_bytes("raw")?);
    println!(
        "raw is {:?} bytes long (read in place)",
        store.get_with("raw", |b| b.len())?
    );
    println!("removed a: {}", other.remove("a")?);

    let stats = store.stats()?;
    println!(
        "{} objects, {} puts, {} hits, {} misses",
        stats.objects, stats.puts, stats.hits, stats.misses
    );
    println!("stores on this machine: {:?}", shmstore::list()?);
    Store::destroy(&name)?; // removes the name; open handles keep working
    println!("valid after destroy: {}", shmstore::valid(&name));
    Ok(())
}
