//! `shmstore put NAME KEY`: stores the bytes read from stdin under KEY.

use std::io::Read;

use serde_json::json;

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
    let mut value = Vec::new();
    std::io::stdin()
        .read_to_end(&mut value)
        .map_err(|e| Fail::Msg(format!("could not read stdin: {e}")))?;
    let stored = store.put_bytes(&args.key, &value)?;
    if !stored {
        // JSON readers get the outcome on stdout too; the reason goes to stderr as for
        // every failure, with exit status 1.
        if format == Format::Json {
            fmt::json(&outcome(&args, value.len(), false), true)?;
        }
        return Err(Fail::Msg(refused(&store.stats()?)));
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

fn refused(s: &shmstore::Stats) -> String {
    let free = fmt::percent(s.min_free_mem_pct);
    match s.put_policy {
        "strict" => format!(
            "the store refused the object: it is full, or less than {free} of memory is available, and its policy is strict; remove objects (`shmstore rm`), or create the store with --policy rotate"
        ),
        _ => format!(
            "the store refused the object: less than {free} of memory is available even after evicting; free memory, or create the store with a lower --min-free"
        ),
    }
}
