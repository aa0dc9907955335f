//! `shmstore destroy NAME`: removes a store's name (also a foreign or corrupt segment's).

use serde_json::json;
use shmstore::Store;

use crate::{Format, Outcome, format as fmt, others};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
}

pub fn run(args: Args, format: Format) -> Outcome {
    // Who still has it open (they keep working until they close it); unknown if it does
    // not open (a foreign or half-made segment), which does not stop the removal.
    let open_by = Store::open(&args.name)
        .ok()
        .and_then(|s| s.stats().ok())
        .map(|s| others(&s.processes));
    Store::destroy(&args.name)?;
    let open_by = open_by.unwrap_or_default();
    match format {
        Format::Json => fmt::json(
            &json!({ "name": args.name, "destroyed": true, "pids": open_by }),
            true,
        )?,
        Format::Text => {
            fmt::line(format!("destroyed store {:?}", args.name))?;
            if !open_by.is_empty() {
                let (keep, they) = match open_by.len() {
                    1 => ("keeps", "it closes"),
                    _ => ("keep", "they close"),
                };
                fmt::line(format!(
                    "note: still open by {}, which {keep} using it until {they} it",
                    fmt::pids(&open_by)
                ))?;
            }
        }
    }
    Ok(())
}
