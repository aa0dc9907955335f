//! `shmstore keys NAME [--prefix P]`: the keys of a store, sorted, one per line (control
//! characters escaped, so that a key holding a newline stays one line; `--format json` gives
//! them exactly).

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
                fmt::line(shown(k))?;
            }
        }
    }
    Ok(())
}

/// A key as a line of text: control characters (a newline, an escape sequence that would
/// drive the terminal) escaped as Rust writes them, everything else as it is.
fn shown(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(super::shown("img/0001"), "img/0001");
        assert_eq!(super::shown("a\nb"), "a\\nb");
        assert_eq!(super::shown("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(super::shown("été \\ \"q\""), "été \\ \"q\"");
    }
}
