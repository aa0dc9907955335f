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
                fmt::line(shown(k))?;
            }
        }
    }
    Ok(())
}

/// A key as a line of text: a backslash, control characters (a newline, an escape sequence
/// that would drive the terminal) and the invisible characters that reorder or break a line
/// (bidi controls, line and paragraph separators) escaped as Rust writes them, everything
/// else as it is. Unambiguous: a shown backslash always starts an escape.
fn shown(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\\' => "\\\\".to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}' => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_and_invisible_characters_and_backslashes_are_escaped() {
        assert_eq!(super::shown("img/0001"), "img/0001");
        assert_eq!(super::shown("a\nb"), "a\\nb");
        assert_eq!(super::shown("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(super::shown("été \"q\""), "été \"q\"");
        // A literal backslash-n and a newline stay apart.
        assert_eq!(super::shown("a\\nb"), "a\\\\nb");
        assert_eq!(super::shown("abc\u{202e}def"), "abc\\u{202e}def");
    }
}
