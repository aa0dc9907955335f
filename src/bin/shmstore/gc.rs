//! `shmstore gc [--dry-run]`: removes the stores that no live process has open.
//!
//! A store is removed when its attach table lists no live process but this one. Names that do
//! not open (foreign, corrupt header, half-made, another user's) are reported and kept:
//! `shmstore destroy NAME` removes one by hand. A process that opens a store between the
//! look and the removal keeps a working handle; the name is gone for everyone else.

use serde_json::json;
use shmstore::{Error, Store};

use crate::{Format, Outcome, format as fmt, ls::kind, others};

#[derive(clap::Args)]
pub struct Args {
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Only stores whose name starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
}

/// What gc did with one name.
enum Verdict {
    Removed { capacity: u64, objects: u64 },
    Kept { pids: Vec<u32> },
    Skipped { kind: &'static str, error: Error },
}

fn judge(name: &str, dry_run: bool) -> Option<Verdict> {
    let stats = match Store::open(name).and_then(|s| s.stats()) {
        Ok(stats) => stats,
        Err(Error::NotFound(_)) => return None, // gone since it was listed
        Err(error) => {
            return Some(Verdict::Skipped {
                kind: kind(&error),
                error,
            });
        }
    };
    let pids = others(&stats.processes);
    if !pids.is_empty() {
        return Some(Verdict::Kept { pids });
    }
    if !dry_run {
        match Store::destroy(name) {
            Ok(()) => {}
            Err(Error::NotFound(_)) => return None,
            Err(error) => {
                return Some(Verdict::Skipped {
                    kind: kind(&error),
                    error,
                });
            }
        }
    }
    Some(Verdict::Removed {
        capacity: stats.capacity,
        objects: stats.objects,
    })
}

pub fn run(args: Args, format: Format) -> Outcome {
    let names = shmstore::list()?
        .into_iter()
        .filter(|n| n.starts_with(&args.prefix));
    let verdicts: Vec<(String, Verdict)> = names
        .filter_map(|n| judge(&n, args.dry_run).map(|v| (n, v)))
        .collect();
    match format {
        Format::Json => {
            let (mut removed, mut kept, mut skipped) = (vec![], vec![], vec![]);
            for (name, v) in &verdicts {
                match v {
                    Verdict::Removed { capacity, objects } => removed
                        .push(json!({ "name": name, "capacity": capacity, "objects": objects })),
                    Verdict::Kept { pids } => kept.push(json!({ "name": name, "pids": pids })),
                    Verdict::Skipped { kind, error } => skipped
                        .push(json!({ "name": name, "problem": kind, "error": error.to_string() })),
                }
            }
            fmt::json(
                &json!({ "dry_run": args.dry_run, "removed": removed, "kept": kept, "skipped": skipped }),
                true,
            )?;
        }
        Format::Text => {
            let removed = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            for (name, v) in &verdicts {
                // A name that is no store's may hold anything a file name can.
                let name = fmt::shown(name);
                fmt::line(match v {
                    Verdict::Removed { capacity, objects } => {
                        format!(
                            "{removed} {name} ({}, capacity {}): no process has it open",
                            fmt::count(*objects, "object"),
                            fmt::bytes(*capacity)
                        )
                    }
                    Verdict::Kept { pids } => format!("kept {name}: open by {}", fmt::pids(pids)),
                    Verdict::Skipped { error, .. } => format!("skipped {name}: {error}"),
                })?;
            }
            if verdicts.is_empty() {
                fmt::line("no stores")?;
            }
        }
    }
    Ok(())
}
