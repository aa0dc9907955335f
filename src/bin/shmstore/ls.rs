//! `shmstore ls`: every store on this machine, one line each.

use serde_json::{Value, json};
use shmstore::{Error, Store};

use crate::{Format, Outcome, format as fmt, others};

#[derive(clap::Args)]
pub struct Args {
    /// Only stores whose name starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
}

/// What `ls` learned about one name.
enum Entry {
    Store {
        name: String,
        stats: shmstore::Stats,
        open_by: Vec<u32>,
    },
    Broken {
        name: String,
        kind: &'static str,
        error: Error,
    },
}

/// A short, stable word for an error that keeps a store from opening (for JSON and `gc`).
pub fn kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound(_) => "not_found",
        Error::Foreign { .. } => "foreign",
        Error::Incompatible { .. } => "incompatible",
        Error::NotReady { .. } => "not_ready",
        Error::StillCreating { .. } => "creating",
        Error::Corrupt { .. } | Error::BadHeader { .. } => "corrupt",
        Error::Timeout { .. } => "timeout",
        _ => "error",
    }
}

fn look(name: String) -> Option<Entry> {
    let opened = Store::open(&name).and_then(|s| s.stats());
    match opened {
        Ok(stats) => Some(Entry::Store {
            open_by: others(&stats.processes),
            name,
            stats,
        }),
        Err(Error::NotFound(_)) => None, // destroyed since it was listed
        Err(error) => Some(Entry::Broken {
            name,
            kind: kind(&error),
            error,
        }),
    }
}

pub fn run(args: Args, format: Format) -> Outcome {
    let names = shmstore::list()?
        .into_iter()
        .filter(|n| n.starts_with(&args.prefix));
    let entries: Vec<Entry> = names.filter_map(look).collect();
    match format {
        Format::Json => fmt::json(&Value::Array(entries.iter().map(to_json).collect()), true)?,
        Format::Text => text(&entries)?,
    }
    Ok(())
}

fn to_json(e: &Entry) -> Value {
    match e {
        Entry::Store {
            name,
            stats: s,
            open_by,
        } => json!({
            "name": name,
            "capacity": s.capacity,
            "used_bytes": s.used_bytes,
            "objects": s.objects,
            "creator_pid": s.creator_pid,
            "created_ns": s.created_ns,
            "created": fmt::time_ns(s.created_ns),
            "mode": fmt::mode(s.mode),
            "processes": open_by.len(),
            "pids": open_by,
        }),
        Entry::Broken { name, kind, error } => {
            json!({ "name": name, "problem": kind, "error": error.to_string() })
        }
    }
}

fn text(entries: &[Entry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return fmt::line("no stores");
    }
    let header = [
        "NAME", "CAPACITY", "USED", "OBJECTS", "CREATOR", "CREATED", "MODE", "PROCS",
    ];
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for e in entries {
        match e {
            Entry::Store {
                name,
                stats: s,
                open_by,
            } => rows.push(vec![
                fmt::shown(name),
                fmt::bytes(s.capacity),
                fmt::bytes(s.used_bytes),
                s.objects.to_string(),
                s.creator_pid.to_string(),
                fmt::time_ns(s.created_ns),
                fmt::mode(s.mode),
                open_by.len().to_string(),
            ]),
            Entry::Broken { name, error, .. } => {
                problems.push(format!("{}: {error}", fmt::shown(name)))
            }
        }
    }
    if !rows.is_empty() {
        fmt::table(&header, &rows)?;
    }
    if !problems.is_empty() {
        fmt::line(format!("{} name(s) that cannot be opened:", problems.len()))?;
        for p in problems {
            fmt::line(format!("  {p}"))?;
        }
    }
    Ok(())
}
