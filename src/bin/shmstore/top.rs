//! `shmstore top NAME`: a live view, one line per interval (ops/s from counter deltas, hit
//! ratio, memory), until Ctrl-C or `--iterations` lines.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use shmstore::Stats;

use crate::{Format, Outcome, format as fmt, open, others};

#[derive(clap::Args)]
pub struct Args {
    /// The store's name.
    name: String,
    /// Stop after this many lines (default: run until Ctrl-C).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    /// Seconds between lines.
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not an interval; give seconds over 0 and up to 3600, e.g. 1 or 0.5"
        )),
    }
}

const HEADER: &str = "    TIME    GETS/S   HIT%    PUTS/S    RM/S  EVICT/S  MOVES/S  REFUSED/S   OBJECTS        USED   COMMITTED      MEMORY  PROCS";

/// One interval's figures.
struct Row {
    gets: f64,
    hit_ratio: Option<f64>,
    puts: f64,
    removes: f64,
    evictions: f64,
    moves: f64,
    refused: f64,
}

fn row(a: &Stats, b: &Stats, secs: f64) -> Row {
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
    let (hits, misses) = (
        b.hits.saturating_sub(a.hits),
        b.misses.saturating_sub(a.misses),
    );
    Row {
        // Wrapping: counters come from the segment, which may have been scribbled on.
        gets: rate(a.hits.wrapping_add(a.misses), b.hits.wrapping_add(b.misses)),
        hit_ratio: fmt::hit_ratio(hits, misses),
        puts: rate(a.puts, b.puts),
        removes: rate(a.removes, b.removes),
        evictions: rate(a.evictions, b.evictions),
        moves: rate(a.moves, b.moves),
        refused: rate(a.refused_puts, b.refused_puts),
    }
}

fn clock() -> String {
    let ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    fmt::time_ns(ns)[11..19].to_string()
}

fn text(r: &Row, s: &Stats) -> String {
    let hit = r
        .hit_ratio
        .map_or("-".to_string(), |h| format!("{:.1}", h * 100.0));
    format!(
        "{} {:>9.0} {:>6} {:>9.0} {:>7.0} {:>8.0} {:>8.0} {:>10.0} {:>9} {:>11} {:>11} {:>11} {:>6}",
        clock(),
        r.gets,
        hit,
        r.puts,
        r.removes,
        r.evictions,
        r.moves,
        r.refused,
        s.objects,
        fmt::bytes(s.used_bytes),
        fmt::bytes(s.committed_bytes),
        fmt::bytes(s.memory_bytes),
        others(&s.processes).len()
    )
}

fn to_json(name: &str, r: &Row, s: &Stats) -> Value {
    json!({
        "name": name,
        "gets_per_s": r.gets,
        "hit_ratio": r.hit_ratio,
        "puts_per_s": r.puts,
        "removes_per_s": r.removes,
        "evictions_per_s": r.evictions,
        "moves_per_s": r.moves,
        "refused_puts_per_s": r.refused,
        "objects": s.objects,
        "used_bytes": s.used_bytes,
        "committed_bytes": s.committed_bytes,
        "memory_bytes": s.memory_bytes,
        "capacity": s.capacity,
        "processes": others(&s.processes).len(),
    })
}

pub fn run(args: Args, format: Format) -> Outcome {
    let store = open(&args.name)?;
    let mut prev = store.stats()?;
    let mut since = Instant::now();
    if format == Format::Text {
        fmt::line(format!(
            "{} (capacity {}), every {} s; Ctrl-C to stop",
            args.name,
            fmt::bytes(prev.capacity),
            args.interval
        ))?;
        fmt::line(HEADER)?;
    }
    let mut done = 0u64;
    while args.iterations.is_none_or(|n| done < n) {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let (now, at) = (store.stats()?, Instant::now());
        let r = row(&prev, &now, (at - since).as_secs_f64());
        match format {
            Format::Json => fmt::json(&to_json(&args.name, &r, &now), false)?,
            Format::Text => fmt::line(text(&r, &now))?,
        }
        (prev, since, done) = (now, at, done + 1);
    }
    Ok(())
}
