//! `shmstore create NAME --capacity SIZE [--policy rotate|strict] [--min-free F]
//! [--lock-timeout SECS] [--max-objects N] [--inline-values BYTES] [--huge-arena] [--group]`.

use serde_json::json;
use shmstore::{Options, PutPolicy, Store};

use crate::{Format, Outcome, format as fmt};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
    /// Bytes of objects the store may hold: 1000000, 512KiB, 64MiB, 1GiB (KB, MB, GB are
    /// powers of 1000). Memory is committed as the store fills.
    #[arg(long, value_parser = fmt::parse_size)]
    capacity: u64,
    /// What a put does when memory is short: evict least-recently-used objects (rotate) or
    /// refuse (strict).
    #[arg(long, default_value = "rotate", value_parser = parse_policy)]
    policy: PutPolicy,
    /// Fraction (0..=1) of the machine's memory that must stay available; 0 turns it off.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    min_free: f64,
    /// Seconds (0.001 to 3600) an operation of any process waits for the store's lock before
    /// it fails with a timeout; kept in the store, the same for every process.
    #[arg(long, default_value = "30", value_parser = parse_seconds, allow_negative_numbers = true)]
    lock_timeout: std::time::Duration,
    /// Objects the index holds at least before rotation (default: one per KiB of capacity,
    /// at least 1024; the index rounds up to a whole cache line of slots).
    #[arg(long)]
    max_objects: Option<u64>,
    /// Keep a copy of each object whose key and value take at most this many bytes (up to
    /// 1016) in an inline record of its index slot: faster random gets of small objects, for
    /// BYTES + 8 (rounded up to 64, which also raises the limit) bytes of memory per index
    /// slot. 0: no copies.
    #[arg(long, default_value_t = 0)]
    inline_values: u32,
    /// Commit the arena in 2 MiB huge pages as the store fills: faster random reads across a
    /// large arena, slower filling of fresh memory (on VMs that give free memory back to
    /// their host, 7-10 ms per 2 MiB). Arenas of 64 MiB or more, where the kernel has huge
    /// pages for shared memory (ignored otherwise).
    #[arg(long)]
    huge_arena: bool,
    /// Let the owner's group read and write the store too (mode 0660 instead of 0600).
    #[arg(long)]
    group: bool,
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 30, or 0.5)"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a number of seconds from 0.001 to 3600"))
}

fn parse_policy(s: &str) -> Result<PutPolicy, String> {
    s.parse().map_err(|e: shmstore::Error| e.to_string())
}

pub fn run(args: Args, format: Format) -> Outcome {
    let mut options = Options::default()
        .capacity(args.capacity)
        .put_policy(args.policy)
        .min_free_mem_pct(args.min_free)
        .lock_timeout(args.lock_timeout)
        .group_access(args.group)
        .inline_values(args.inline_values)
        .huge_arena(args.huge_arena);
    if let Some(n) = args.max_objects {
        options = options.max_objects(n);
    }
    let store = Store::create(&args.name, options)?;
    let s = store.stats()?;
    match format {
        Format::Json => fmt::json(
            &json!({
                "name": args.name,
                "capacity": s.capacity,
                "max_objects": s.max_objects,
                "inline_values": s.inline_values,
                "huge_arena": s.huge_arena,
                "put_policy": s.put_policy,
                "min_free_mem_pct": s.min_free_mem_pct,
                "lock_timeout_s": store.options().lock_timeout.as_secs_f64(),
                "mode": fmt::mode(s.mode),
            }),
            true,
        )?,
        Format::Text => fmt::line(format!(
            "created store {:?}: capacity {}{}, up to {} objects{}, policy {}, min free memory {}, mode {}",
            args.name,
            fmt::capacity(&s),
            if args.huge_arena && !s.huge_arena {
                " (--huge-arena ignored: it needs a capacity of 64 MiB or more, and Linux 6.1 \
                 or later with huge pages for shared memory)"
            } else {
                ""
            },
            s.max_objects,
            match s.inline_values {
                0 => String::new(),
                n => format!(" (copied inline up to {n} bytes)"),
            },
            s.put_policy,
            fmt::percent(s.min_free_mem_pct),
            fmt::mode(s.mode)
        ))?,
    }
    Ok(())
}
