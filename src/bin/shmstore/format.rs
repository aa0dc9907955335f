//! Shared helpers: human sizes (printing and parsing), durations, times, tables, output.

use std::io::Write;

use serde_json::Value;

/// A store's capacity as `create` and `stat` show it: `"64 MiB"`, with
/// `" (huge-page arena)"` when its arena is committed in huge pages.
pub fn capacity(s: &shmstore::Stats) -> String {
    let huge = if s.huge_arena {
        " (huge-page arena)"
    } else {
        ""
    };
    format!("{}{huge}", bytes(s.capacity))
}

/// `1536` → `"1.5 KiB"`; whole numbers lose the `.0` (`"64 MiB"`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let s = format!("{v:.1}");
    format!("{} {}", s.strip_suffix(".0").unwrap_or(&s), UNITS[unit])
}

/// Parses `64MiB`, `1GiB`, `512KiB`, `1.5 GiB`, `1000000`, `10MB` (decimal), `4K` (binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(size_help(s)),
    };
    let value: f64 = num.parse().map_err(|_| size_help(s))?;
    let total = value * factor as f64;
    if !total.is_finite() || total < 0.0 || total >= u64::MAX as f64 {
        return Err(size_help(s));
    }
    Ok(total as u64)
}

fn size_help(s: &str) -> String {
    format!(
        "{s:?} is not a size; write a number of bytes with an optional unit, e.g. 1000000, 512KiB, 64MiB, 1GiB"
    )
}

/// Nanoseconds → `"850 ns"`, `"1.2 ms"`, `"3.4 s"`, `"2 min 5 s"`.
pub fn duration_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.1} s", ns as f64 / 1e9),
        _ => format!("{} min {} s", ns / 60_000_000_000, ns / 1_000_000_000 % 60),
    }
}

/// Nanoseconds since the Unix epoch → `"2025-11-25 13:40:01 UTC"`.
pub fn time_ns(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Permission bits → `"0600"`.
pub fn mode(bits: u32) -> String {
    format!("{bits:04o}")
}

/// `[7]` → `"pid 7"`, `[7, 9]` → `"pids 7, 9"`.
pub fn pids(pids: &[u32]) -> String {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let s = if list.len() == 1 { "" } else { "s" };
    format!("pid{s} {}", list.join(", "))
}

/// `(1, "object")` → `"1 object"`, `(2, "object")` → `"2 objects"`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A fraction → `"83.3%"`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// How fragmented the free blocks are: 0 when the largest free block holds all free bytes.
pub fn fragmentation(free_bytes: u64, largest_free: u64) -> f64 {
    if free_bytes == 0 {
        0.0
    } else {
        1.0 - largest_free as f64 / free_bytes as f64
    }
}

/// Writes one line to stdout.
pub fn line(text: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Writes a JSON value to stdout: pretty, or on one line for streams (`top`).
pub fn json(value: &Value, pretty: bool) -> std::io::Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    line(text.expect("a serde_json::Value always serializes"))
}

/// Writes `label  value` pairs with the values aligned.
pub fn pairs(rows: &[(&str, String)]) -> std::io::Result<()> {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (k, v) in rows {
        writeln!(out, "{k:<width$}  {v}")?;
    }
    Ok(())
}

/// Writes a table: the first column left-aligned, the others right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("  ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

/// A key or a name as (part of) a line of text: a backslash, control characters (a newline,
/// an escape sequence that would drive the terminal) and the invisible characters that
/// reorder or break a line (bidi controls, line and paragraph separators) escaped as Rust
/// writes them, everything else as it is. Unambiguous: a shown backslash always starts an
/// escape.
pub fn shown(key: &str) -> String {
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

/// Hits over gets, or none before the first get (not 0%).
pub fn hit_ratio(hits: u64, misses: u64) -> Option<f64> {
    (hits.saturating_add(misses) > 0).then(|| hits as f64 / (hits as f64 + misses as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_and_parse() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        for bad in ["", "GiB", "12 parsecs", "-1", "1..2MiB", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(time_ns(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time_ns(1_764_077_201_000_000_000),
            "2025-11-25 13:26:41 UTC"
        );
        assert_eq!(time_ns(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(duration_ns(850), "850 ns");
        assert_eq!(duration_ns(1_200_000), "1.2 ms");
        assert_eq!(duration_ns(125_000_000_000), "2 min 5 s");
        assert_eq!(mode(0o600), "0600");
    }

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
