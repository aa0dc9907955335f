//! `shmstore repair NAME`: rebuilds a store's index, LRU list and free lists from its arena.

use serde_json::json;

use crate::{Format, Outcome, format as fmt, open};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
}

pub fn run(args: Args, format: Format) -> Outcome {
    let store = open(&args.name)?;
    let before = store.stats()?;
    store.repair()?;
    let report = store.check()?;
    let after = store.stats()?;
    let emptied = after.resets > before.resets;
    match format {
        Format::Json => fmt::json(
            &json!({
                "name": args.name,
                "objects_before": before.objects,
                "objects": report.objects,
                "emptied": emptied,
            }),
            true,
        )?,
        Format::Text if emptied => fmt::line(format!(
            "store {:?} was broken beyond repair and has been emptied",
            args.name
        ))?,
        Format::Text => fmt::line(format!(
            "store {:?} rebuilt from its arena: {} (counted {} before); it passes the check",
            args.name,
            fmt::count(report.objects, "object"),
            before.objects
        ))?,
    }
    Ok(())
}
