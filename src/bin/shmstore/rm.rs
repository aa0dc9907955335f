//! `shmstore rm NAME KEY`: removes one object.

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
    if !open(&args.name)?.remove(&args.key)? {
        return Err(Fail::Msg(format!(
            "no key {:?} in store {:?}; nothing was removed",
            args.key, args.name
        )));
    }
    match format {
        Format::Json => fmt::json(
            &json!({ "name": args.name, "key": args.key, "removed": true }),
            true,
        )?,
        Format::Text => fmt::line(format!("removed {:?} from {:?}", args.key, args.name))?,
    }
    Ok(())
}
