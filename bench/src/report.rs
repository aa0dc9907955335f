//! The results: figures by system over runs, printed as one table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// The label every ratio is taken against.
pub const BASE: &str = "shmstore";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "ops/s")]
    OpsPerSec,
    #[serde(rename = "GB/s")]
    GbPerSec,
    #[serde(rename = "ns")]
    Nanos,
    #[serde(rename = "%")]
    Percent,
    #[serde(rename = "x")]
    Times,
    #[serde(rename = "/MiB")]
    PerMiB,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::GbPerSec => "GB/s",
            Unit::Nanos => "ns",
            Unit::Percent => "%",
            Unit::Times => "x",
            Unit::PerMiB => "/MiB",
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::OpsPerSec if v >= 1e6 => format!("{:.2} M", v / 1e6),
            Unit::OpsPerSec if v >= 1e3 => format!("{:.1} k", v / 1e3),
            Unit::OpsPerSec => format!("{v:.0}"),
            Unit::GbPerSec => format!("{v:.2}"),
            Unit::Nanos if v >= 1e6 => format!("{:.2} M", v / 1e6),
            Unit::Nanos if v >= 1e4 => format!("{:.1} k", v / 1e3),
            Unit::Nanos => format!("{v:.0}"),
            Unit::Percent => format!("{v:.1}"),
            Unit::Times => format!("{v:.2}"),
            Unit::PerMiB => format!("{v:.1}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    /// One value per run, in run order.
    pub values: Vec<f64>,
    /// The run each value was measured in (a system may miss a run).
    pub runs: Vec<usize>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// This system's value / shmstore's, taken within each run in which both were measured
    /// (the systems of a run share its keys and a stretch of minutes of the machine's
    /// state): the median, least and greatest of those ratios.
    pub ratio_to_shmstore: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub figure: String,
    pub unit: Unit,
    pub rows: Vec<Row>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Systems or figures left out, and why; anomalies seen during the runs.
    pub notes: Vec<String>,
    /// The run that [`Report::add`] records values for.
    #[serde(skip)]
    pub run: usize,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Report {
    /// Records one run's `value` of `figure` for `system`. Figures and systems keep the order
    /// in which they were first added.
    pub fn add(&mut self, figure: &str, unit: Unit, system: &str, value: f64) {
        let fig = match self.figures.iter().position(|f| f.figure == figure) {
            Some(i) => &mut self.figures[i],
            None => {
                self.figures.push(Figure {
                    figure: figure.to_owned(),
                    unit,
                    rows: Vec::new(),
                });
                self.figures.last_mut().expect("just pushed")
            }
        };
        assert_eq!(fig.unit, unit, "figure {figure} reported in two units");
        match fig.rows.iter_mut().find(|r| r.system == system) {
            Some(r) => {
                r.values.push(value);
                r.runs.push(self.run);
            }
            None => fig.rows.push(Row {
                system: system.to_owned(),
                values: vec![value],
                runs: vec![self.run],
                median: 0.0,
                min: 0.0,
                max: 0.0,
                ratio_to_shmstore: None,
                ratio_min: None,
                ratio_max: None,
            }),
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Fills in medians, extremes and ratios.
    pub fn finish(&mut self) {
        for fig in &mut self.figures {
            for r in &mut fig.rows {
                r.median = median(&r.values);
                r.min = r.values.iter().copied().fold(f64::INFINITY, f64::min);
                r.max = r.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            }
            let Some(base) = fig.rows.iter().find(|r| r.system == BASE).cloned() else {
                continue;
            };
            for r in &mut fig.rows {
                let ratios: Vec<f64> = r
                    .runs
                    .iter()
                    .zip(&r.values)
                    .filter_map(|(run, v)| {
                        let at = base.runs.iter().position(|b| b == run)?;
                        let b = base.values[at];
                        (b > 0.0).then(|| v / b)
                    })
                    .collect();
                if !ratios.is_empty() {
                    r.ratio_to_shmstore = Some(median(&ratios));
                    r.ratio_min = ratios.iter().copied().reduce(f64::min);
                    r.ratio_max = ratios.iter().copied().reduce(f64::max);
                }
            }
        }
    }

    /// The median of `figure` for `system`, once finished.
    pub fn median(&self, figure: &str, system: &str) -> Option<f64> {
        let fig = self.figures.iter().find(|f| f.figure == figure)?;
        fig.rows
            .iter()
            .find(|r| r.system == system)
            .map(|r| r.median)
    }

    pub fn table(&self) -> String {
        let fw = self
            .figures
            .iter()
            .map(|f| f.figure.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let sw = self
            .figures
            .iter()
            .flat_map(|f| &f.rows)
            .map(|r| r.system.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<fw$}  {:<sw$}  {:>9}  {:>9}  {:>9}  {:<5}  {:>8}  {:>11}  {:<13}",
            "figure",
            "system",
            "median",
            "min",
            "max",
            "unit",
            "per op",
            "vs shmstore",
            "(per run)"
        );
        let _ = writeln!(out, "{}", "-".repeat(fw + sw + 90));
        for fig in &self.figures {
            for r in &fig.rows {
                let per_op = match fig.unit {
                    Unit::OpsPerSec if r.median > 0.0 => format_ns(1e9 / r.median),
                    _ => String::new(),
                };
                let ratio = r.ratio_to_shmstore.map(format_ratio).unwrap_or_default();
                let range = match (r.ratio_min, r.ratio_max, r.system == BASE) {
                    (Some(lo), Some(hi), false) if r.values.len() > 1 => {
                        format!("{}-{}", format_ratio(lo), format_ratio(hi))
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:<fw$}  {:<sw$}  {:>9}  {:>9}  {:>9}  {:<5}  {:>8}  {:>11}  {:<13}",
                    fig.figure,
                    r.system,
                    fig.unit.format(r.median),
                    fig.unit.format(r.min),
                    fig.unit.format(r.max),
                    fig.unit.label(),
                    per_op,
                    ratio,
                    range
                );
            }
        }
        out
    }
}

/// A ratio to shmstore's median: two decimals, or `1/N` below 0.01 (where two decimals would
/// print 0.00x for the Python original's rows).
fn format_ratio(x: f64) -> String {
    if x > 0.0 && x < 0.01 {
        format!("1/{:.0}", 1.0 / x)
    } else {
        format!("{x:.2}x")
    }
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_extremes_and_ratios() {
        let mut r = Report::default();
        for (run, s, v) in [
            (0, BASE, 10.0),
            (1, BASE, 30.0),
            (2, BASE, 20.0),
            (2, "other", 5.0),
        ] {
            r.run = run;
            r.add("W1 get", Unit::OpsPerSec, s, v);
        }
        r.finish();
        let f = &r.figures[0];
        assert_eq!(
            (f.rows[0].median, f.rows[0].min, f.rows[0].max),
            (20.0, 10.0, 30.0)
        );
        assert_eq!(f.rows[1].ratio_to_shmstore, Some(0.25));
        assert!(r.table().contains("W1 get"));
    }

    #[test]
    fn ratios_are_taken_within_each_run_then_their_median() {
        // Both systems slow in run 1: the ratio within each run is 2, though the medians of
        // the values (20 and 30) are 1.5 apart. A run shmstore missed is not paired.
        let mut r = Report::default();
        for (run, base, other) in [(0, 10.0, 20.0), (1, 40.0, 80.0), (2, 20.0, 40.0)] {
            r.run = run;
            r.add("W1 get", Unit::OpsPerSec, BASE, base);
            r.add("W1 get", Unit::OpsPerSec, "other", other);
        }
        r.run = 3;
        r.add("W1 get", Unit::OpsPerSec, "other", 1000.0);
        r.finish();
        let other = &r.figures[0].rows[1];
        assert_eq!(other.median, 60.0);
        assert_eq!(other.ratio_to_shmstore, Some(2.0));
        assert_eq!((other.ratio_min, other.ratio_max), (Some(2.0), Some(2.0)));
        assert!(r.table().contains("2.00x-2.00x"), "{}", r.table());
    }

    #[test]
    fn small_ratios_are_printed_as_fractions() {
        assert_eq!(format_ratio(0.25), "0.25x");
        assert_eq!(format_ratio(0.01), "0.01x");
        assert_eq!(format_ratio(0.0004), "1/2500");
        assert_eq!(format_ratio(3.0), "3.00x");
    }
}
