//! `shmstore check NAME`: checks every invariant; exit status 0 if the store passed.

use serde_json::json;

use crate::{Fail, Format, Outcome, format as fmt, open};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
}

pub fn run(args: Args, format: Format) -> Outcome {
    let store = open(&args.name)?;
    let r = match store.check() {
        Ok(r) => r,
        Err(e) => {
            if format == Format::Json {
                fmt::json(
                    &json!({ "name": args.name, "ok": false, "error": e.to_string() }),
                    true,
                )?;
            }
            return Err(Fail::from(e));
        }
    };
    let frag = fmt::fragmentation(r.free_bytes, r.largest_free);
    match format {
        Format::Json => fmt::json(
            &json!({
                "name": args.name,
                "ok": true,
                "objects": r.objects,
                "free_blocks": r.free_blocks,
                "free_bytes": r.free_bytes,
                "largest_free": r.largest_free,
                "wilderness_bytes": r.wilderness_bytes,
                "fragmentation": frag,
            }),
            true,
        )?,
        Format::Text => fmt::line(format!(
            "store {:?} passed the check: {}, {} ({}, largest {}), fragmentation {}, never used {}",
            args.name,
            fmt::count(r.objects, "object"),
            fmt::count(r.free_blocks, "free block"),
            fmt::bytes(r.free_bytes),
            fmt::bytes(r.largest_free),
            fmt::percent(frag),
            fmt::bytes(r.wilderness_bytes)
        ))?,
    }
    Ok(())
}
