//! `shmstore keys NAME [--prefix P]`: the keys of a store, sorted, one per line (control
//! characters and backslashes escaped, so that a key holding a newline stays one line;
//! `--format json` gives them exactly).

use serde_json::json;

use crate::{Format, Outcome, format as fmt, open};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
    /// Only keys that start with this.
    #[arg(long, default_value = "")]
    prefix: String,
}

pub fn run(args: Args, format: Format) -> Outcome {
    let mut keys = open(&args.name)?.keys()?;
    keys.retain(|k| k.starts_with(&args.prefix));
    keys.sort_unstable();
    match format {
        Format::Json => fmt::json(&json!(keys), true)?,
        Format::Text => {
            for k in &keys {
                fmt::line(fmt::shown(k))?;
            }
        }
    }
    Ok(())
}
