//! Two unrelated processes, started separately, sharing a store by name.
//!
//! In one terminal:   `cargo run --example by_name -- writer`
//! In another:        `cargo run --example by_name -- reader`
//! The writer creates the store `by-name-demo` and puts a counter every 100 ms for 30 s; the
//! reader opens it by name and prints what it sees. Run `cargo run --example by_name -- clean`
//! (or `shmstore destroy by-name-demo`) to remove it.

use std::time::Duration;

use shmstore::{Error, Options, Store};

const NAME: &str = "by-name-demo";

fn main() {
    // The error's own words (`Display`), not its debug form.
    if let Err(e) = run() {
        eprintln!("by_name: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("writer") => {
            let store = Store::open_or_create(NAME, Options::default().capacity(1 << 20))?;
            for tick in 0u64..300 {
                store.put("tick", &tick)?;
                store.put("writer-pid", &std::process::id())?;
                std::thread::sleep(Duration::from_millis(100));
            }
            if shmstore::valid(NAME) {
                println!("writer done; the store stays until destroyed (`-- clean`)");
            } else {
                println!("writer done; the store was destroyed meanwhile");
            }
        }
        Some("reader") => {
            let store = loop {
                match Store::open(NAME) {
                    Ok(s) => break s,
                    Err(Error::NotFound(_)) => {
                        println!("no store {NAME:?} yet; start the writer");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            for _ in 0..20 {
                let tick: Option<u64> = store.get("tick")?;
                let pid: Option<u32> = store.get("writer-pid")?;
                let (Some(tick), Some(pid)) = (tick, pid) else {
                    println!("nothing written yet");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                };
                println!(
                    "tick {tick} written by pid {pid}; processes with the store open: {:?}",
                    store.processes()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Some("clean") => match Store::destroy(NAME) {
            Ok(()) => println!("destroyed {NAME:?}"),
            Err(Error::NotFound(_)) => println!("no store {NAME:?}: nothing to clean"),
            Err(e) => return Err(e.into()),
        },
        _ => {
            eprintln!("usage: by_name writer | reader | clean");
            std::process::exit(2);
        }
    }
    Ok(())
}
