//! `shmstore stat NAME`: every counter of one store, its fragmentation and its lock.

use serde_json::{Value, json};
use shmstore::{CheckReport, Error, Stats};

use crate::{Fail, Format, Outcome, format as fmt, open, others};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
}

/// Above this, `stat` does not wait for the lock to run the check (it would wait up to the
/// store's lock timeout).
const STUCK_NS: u64 = 1_000_000_000;

pub fn run(args: Args, format: Format) -> Outcome {
    let store = open(&args.name)?;
    let stats = store.stats()?;
    // A holder that has died (its lock is the kernel's to hand over, with a recovery) is no
    // reason to skip the check, which then recovers the store.
    let check = if stats.lock_owner != 0 && stats.lock_held_ns > STUCK_NS && !holder_gone(&stats) {
        None
    } else {
        Some(store.check())
    };
    // The check may have repaired the store (a recovery is due after a holder died): show
    // the counters as they are now, and the lock as it was before the check took it.
    let stats = match check {
        Some(_) => {
            let mut now = store.stats()?;
            (now.lock_owner, now.lock_held_ns) = (stats.lock_owner, stats.lock_held_ns);
            now
        }
        None => stats,
    };
    let report = match &check {
        Some(Ok(r)) => Some(r),
        _ => None,
    };
    match format {
        Format::Json => fmt::json(&to_json(&args.name, &stats, report, &check), true)?,
        Format::Text => text(&args.name, &stats, report, &check)?,
    }
    match check {
        Some(Err(e)) => Err(Fail::from(e)),
        _ => Ok(()),
    }
}

/// Whether the lock's holder is gone: not among the live processes with the store open (a
/// holder registers before it locks, and dead ones are pruned from that list; a process that
/// found the attach table full is unlisted, and would be taken for gone).
fn holder_gone(s: &Stats) -> bool {
    s.lock_owner != 0 && !s.processes.contains(&s.lock_owner)
}

fn lock_text(s: &Stats) -> String {
    match s.lock_owner {
        0 => "free".into(),
        pid if holder_gone(s) => format!(
            "was held by pid {pid} for {}, which died holding it (the store was recovered)",
            fmt::duration_ns(s.lock_held_ns)
        ),
        pid => format!("held by pid {pid} for {}", fmt::duration_ns(s.lock_held_ns)),
    }
}

fn check_text(check: &Option<Result<CheckReport, Error>>) -> String {
    match check {
        None => "skipped (the lock is held; run `shmstore check` later)".into(),
        Some(Ok(_)) => "ok".into(),
        Some(Err(e)) => format!("FAILED: {e}"),
    }
}

fn text(
    name: &str,
    s: &Stats,
    r: Option<&CheckReport>,
    check: &Option<Result<CheckReport, Error>>,
) -> std::io::Result<()> {
    let pct = |part: u64| {
        fmt::percent(if s.capacity == 0 {
            0.0
        } else {
            part as f64 / s.capacity as f64
        })
    };
    let open_by = others(&s.processes);
    let mut rows = vec![
        ("store", name.to_string()),
        ("capacity", fmt::capacity(s)),
        (
            "used",
            format!("{} ({})", fmt::bytes(s.used_bytes), pct(s.used_bytes)),
        ),
        ("values", fmt::bytes(s.value_bytes)),
        (
            "committed",
            format!(
                "{} ({})",
                fmt::bytes(s.committed_bytes),
                pct(s.committed_bytes)
            ),
        ),
        ("memory held", fmt::bytes(s.memory_bytes)),
        (
            "objects",
            format!(
                "{} (index holds {}{})",
                s.objects,
                s.max_objects,
                match s.inline_values {
                    0 => String::new(),
                    n => format!("; copies inline up to {n} bytes"),
                }
            ),
        ),
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        (
            "hit ratio",
            fmt::hit_ratio(s.hits, s.misses).map_or("-".into(), fmt::percent),
        ),
        ("locked reads", s.locked_reads.to_string()),
        ("puts", s.puts.to_string()),
        ("refused puts", s.refused_puts.to_string()),
        ("removes", s.removes.to_string()),
        ("evictions", s.evictions.to_string()),
        ("moves", s.moves.to_string()),
        ("lock timeouts", s.lock_timeouts.to_string()),
        ("recoveries", s.recoveries.to_string()),
        ("resets", s.resets.to_string()),
    ];
    if let Some(r) = r {
        rows.push((
            "free blocks",
            format!(
                "{} ({}, largest {})",
                r.free_blocks,
                fmt::bytes(r.free_bytes),
                fmt::bytes(r.largest_free)
            ),
        ));
        rows.push((
            "fragmentation",
            fmt::percent(fmt::fragmentation(r.free_bytes, r.largest_free)),
        ));
        rows.push(("never used", fmt::bytes(r.wilderness_bytes)));
    }
    rows.extend([
        ("lock", lock_text(s)),
        ("check", check_text(check)),
        ("policy", s.put_policy.to_string()),
        ("min free memory", fmt::percent(s.min_free_mem_pct)),
        ("mode", fmt::mode(s.mode)),
        ("creator", format!("pid {}", s.creator_pid)),
        ("created", fmt::time_ns(s.created_ns)),
        (
            "processes",
            if open_by.is_empty() {
                "0".into()
            } else {
                format!("{} ({})", open_by.len(), fmt::pids(&open_by))
            },
        ),
    ]);
    fmt::pairs(&rows)
}

fn to_json(
    name: &str,
    s: &Stats,
    r: Option<&CheckReport>,
    check: &Option<Result<CheckReport, Error>>,
) -> Value {
    let mut v = serde_json::to_value(s).expect("Stats serializes");
    let open_by = others(&s.processes);
    let lock = match s.lock_owner {
        0 => json!({ "state": "free" }),
        pid => json!({
            "state": "held",
            "pid": pid,
            "held_ns": s.lock_held_ns,
            "holder_gone": holder_gone(s),
        }),
    };
    let check = match check {
        None => json!({ "state": "skipped" }),
        Some(Ok(_)) => json!({ "state": "ok" }),
        Some(Err(e)) => json!({ "state": "failed", "error": e.to_string() }),
    };
    let extra = json!({
        "name": name,
        "hit_ratio": fmt::hit_ratio(s.hits, s.misses),
        "mode": fmt::mode(s.mode),
        "processes": open_by.len(),
        "pids": open_by,
        "lock": lock,
        "check": check,
        "free_blocks": r.map(|r| r.free_blocks),
        "free_bytes": r.map(|r| r.free_bytes),
        "largest_free": r.map(|r| r.largest_free),
        "wilderness_bytes": r.map(|r| r.wilderness_bytes),
        "fragmentation": r.map(|r| fmt::fragmentation(r.free_bytes, r.largest_free)),
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut v, extra) {
        base.extend(extra);
    }
    v
}
