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
                "resets": after.resets,
            }),
            true,
        )?,
        Format::Text if emptied => fmt::line(format!(
            "store {:?} was broken beyond repair and has been emptied",
            args.name
        ))?,
        Format::Text => {
            fmt::line(format!(
                "store {:?} rebuilt from its arena: {} (counted {} before); it passes the check",
                args.name,
                fmt::count(report.objects, "object"),
                before.objects
            ))?;
            // The operation that met a corruption flags the store, and the next one to take
            // its lock rebuilds it (the failed command's own handle, as it detaches): by now
            // an arena broken beyond repair may already have been emptied.
            if after.resets > 0 {
                fmt::line(format!(
                    "note: it has been emptied {} since it was created, by a rebuild that found \
                     its arena broken beyond repair (perhaps the automatic one after the error \
                     that led here); `resets` in `shmstore stat` counts them",
                    fmt::count(after.resets, "time")
                ))?;
            }
        }
    }
    Ok(())
}
