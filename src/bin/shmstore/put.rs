//! `shmstore put NAME KEY`: stores the bytes read from stdin under KEY.

use std::io::Read;

use serde_json::json;

use shmstore::{Put, Refusal};

use crate::{Fail, Format, Outcome, format as fmt, open};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
    /// The object's key.
    key: String,
}

pub fn run(args: Args, format: Format) -> Outcome {
    let store = open(&args.name)?;
    // No more than the store could ever hold, and one byte to tell that there was more:
    // an endless or huge stdin is an error, not a process that grows until it is killed.
    let capacity = store.options().capacity;
    let mut value = Vec::new();
    std::io::stdin()
        .take(capacity.saturating_add(1))
        .read_to_end(&mut value)
        .map_err(|e| Fail::Msg(format!("could not read stdin: {e}")))?;
    if value.len() as u64 > capacity {
        return Err(Fail::Msg(format!(
            "the value on stdin is larger than the store's capacity ({capacity} bytes) and can never fit; nothing was stored; create the store with a larger --capacity"
        )));
    }
    if let Put::Refused(why) = store.try_put_bytes(&args.key, &value)? {
        // JSON readers get the outcome on stdout too; the reason goes to stderr as for
        // every failure, with exit status 1.
        if format == Format::Json {
            let mut said = outcome(&args, value.len(), false);
            said["refused"] = why.as_str().into();
            fmt::json(&said, true)?;
        }
        return Err(Fail::Msg(refused(why, &store.stats()?)));
    }
    match format {
        Format::Json => fmt::json(&outcome(&args, value.len(), true), true)?,
        Format::Text => fmt::line(format!(
            "stored {} under {:?} in {:?}",
            fmt::bytes(value.len() as u64),
            args.key,
            args.name
        ))?,
    }
    Ok(())
}

fn outcome(args: &Args, size: usize, stored: bool) -> serde_json::Value {
    json!({ "name": args.name, "key": args.key, "size": size, "stored": stored })
}

fn refused(why: Refusal, s: &shmstore::Stats) -> String {
    let free = fmt::percent(s.min_free_mem_pct);
    match why {
        Refusal::MemoryLow if s.put_policy == "strict" => format!(
            "the store refused the object: less than {free} of memory is available, and its policy is strict; free memory, or create the store with a lower --min-free"
        ),
        Refusal::MemoryLow => format!(
            "the store refused the object: less than {free} of memory is available even after evicting; free memory, or create the store with a lower --min-free"
        ),
        Refusal::StoreFull => "the store refused the object: it is full and its policy is strict; remove objects (`shmstore rm`), or create the store larger or with --policy rotate".into(),
        Refusal::IndexFull => format!(
            "the store refused the object: it holds {} objects, its most, and its policy is strict; remove objects (`shmstore rm`), or create the store with a larger --max-objects",
            s.max_objects
        ),
        Refusal::ShmFull => "the store refused the object: /dev/shm has no room for the store to grow; free space there (`df -h /dev/shm`, `shmstore gc`), or create a smaller store".into(),
        other => format!("the store refused the object: {other}"),
    }
}
