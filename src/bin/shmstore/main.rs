//! `shmstore`: inspect and manage shmstore stores from a shell.
//!
//! One file per subcommand; `format.rs` holds the shared helpers (sizes, times, tables,
//! output). Every subcommand takes `--format text|json`. Errors go to stderr with exit
//! status 1 (2 for a command line that does not parse).

mod check;
mod create;
mod destroy;
mod format;
mod gc;
mod get;
mod keys;
mod ls;
mod put;
mod repair;
mod rm;
mod stat;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use shmstore::{Error, Store};

/// Inspect and manage shmstore stores (shared-memory object stores in /dev/shm).
#[derive(Parser)]
#[command(name = "shmstore", version)]
struct Cli {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List every store: capacity, use, creator, mode, processes that have it open.
    Ls(ls::Args),
    /// Show every counter of a store, its fragmentation and who holds its lock.
    Stat(stat::Args),
    /// List the keys of a store (sorted).
    Keys(keys::Args),
    /// Write the bytes stored under a key to stdout (raw, or --hex).
    Get(get::Args),
    /// Store the bytes read from stdin under a key.
    Put(put::Args),
    /// Remove the object under a key.
    Rm(rm::Args),
    /// Create a store.
    Create(create::Args),
    /// Remove a store's name (open handles keep working until closed).
    Destroy(destroy::Args),
    /// Check every invariant of a store; exit status 0 if it passed, 1 if not.
    Check(check::Args),
    /// Rebuild a store's index, LRU list and free lists from its arena (after corruption).
    Repair(repair::Args),
    /// Live view of a store: ops/s, hit ratio, memory; one line a second until Ctrl-C.
    Top(top::Args),
    /// Remove the stores that no live process has open (--dry-run: only list them).
    Gc(gc::Args),
}

/// Why a subcommand stopped.
#[derive(Debug)]
pub enum Fail {
    /// A message for stderr; exit status 1.
    Msg(String),
    /// Stdout was closed early (piped into `head`, say): stop quietly.
    Closed,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let hint = match &e {
            Error::Foreign { name, .. }
            | Error::NotReady { name, .. }
            | Error::Incompatible { name, .. }
            | Error::BadHeader { name, .. } => {
                format!("\n  (from the shell: `shmstore destroy {name}` removes it)")
            }
            Error::StillCreating { name, .. } => format!(
                "\n  (from the shell, only if its creator is stuck: `shmstore destroy {name}` \
                 removes it)"
            ),
            // The name may be taken by something that does not open as a store (junk, a
            // half-made or damaged store); `ls` shows either (telling would mean opening it
            // here, which waits seconds for a store still being created).
            Error::AlreadyExists(name) => format!(
                "\n  (from the shell: `shmstore ls --prefix {name}` shows it, or why it does not \
                 open as a store; `shmstore destroy {name}` removes it)"
            ),
            _ => String::new(),
        };
        Fail::Msg(format!("{e}{hint}"))
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Fail::Closed,
            _ => Fail::Msg(format!("could not write the output: {e}")),
        }
    }
}

pub type Outcome = Result<(), Fail>;

/// Opens a store for a subcommand.
pub fn open(name: &str) -> Result<Store, Fail> {
    Ok(Store::open(name)?)
}

/// `pids` (from `Stats::processes`) without one entry for this process's own handle. (The
/// library lists no dead process: a killed one that its parent has not reaped yet, a
/// zombie, is pruned like any other.)
pub fn others(pids: &[u32]) -> Vec<u32> {
    let me = std::process::id();
    let mut rest = pids.to_vec();
    if let Some(i) = rest.iter().position(|&p| p == me) {
        rest.remove(i);
    }
    rest
}

/// Whether the command line asks for JSON (`--format json` or `--format=json`), read from
/// the raw arguments: for a command line that does not parse, whose `format` clap cannot
/// give.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    // The last `--format` before any `--` decides, as it does for clap.
    let mut json = false;
    let mut it = args.iter().skip(1).take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        if a == "--format" {
            json = it.next().is_some_and(|v| v == "json");
        } else if let Some(v) = a.to_str().and_then(|a| a.strip_prefix("--format=")) {
            json = v == "json";
        }
    }
    json
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // A script that asked for JSON gets a usage error as JSON too (help and version
        // are not errors: printed as usual).
        Err(e) if e.use_stderr() && wants_json(&args) => {
            let msg = e.render().to_string();
            let msg = msg.trim_end().trim_start_matches("error: ");
            eprintln!("{}", serde_json::json!({ "error": msg }));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let f = cli.format;
    let outcome = match cli.command {
        Command::Ls(a) => ls::run(a, f),
        Command::Stat(a) => stat::run(a, f),
        Command::Keys(a) => keys::run(a, f),
        Command::Get(a) => get::run(a, f),
        Command::Put(a) => put::run(a, f),
        Command::Rm(a) => rm::run(a, f),
        Command::Create(a) => create::run(a, f),
        Command::Destroy(a) => destroy::run(a, f),
        Command::Check(a) => check::run(a, f),
        Command::Repair(a) => repair::run(a, f),
        Command::Top(a) => top::run(a, f),
        Command::Gc(a) => gc::run(a, f),
    };
    match outcome {
        Ok(()) | Err(Fail::Closed) => ExitCode::SUCCESS,
        // A script that asked for JSON gets its errors as JSON too.
        Err(Fail::Msg(msg)) if f == Format::Json => {
            eprintln!("{}", serde_json::json!({ "error": msg }));
            ExitCode::FAILURE
        }
        Err(Fail::Msg(msg)) => {
            eprintln!("shmstore: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
