//! `shmstore get NAME KEY`: the raw bytes of one object (or `--hex`).

use std::io::Write;

use serde_json::json;

use crate::{Fail, Format, Outcome, format as fmt, open};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
    /// The object's key.
    key: String,
    /// Print the bytes as hexadecimal (one line) instead of raw.
    #[arg(long)]
    hex: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run(args: Args, format: Format) -> Outcome {
    let Some(bytes) = open(&args.name)?.get_bytes(&args.key)? else {
        return Err(Fail::Msg(format!(
            "no key {:?} in store {:?}; `shmstore keys {}` lists them",
            args.key, args.name, args.name
        )));
    };
    match format {
        Format::Json => fmt::json(
            &json!({
                "name": args.name,
                "key": args.key,
                "size": bytes.len(),
                "hex": hex(&bytes),
                "text": std::str::from_utf8(&bytes).ok(),
            }),
            true,
        )?,
        Format::Text if args.hex => fmt::line(hex(&bytes))?,
        Format::Text => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}
