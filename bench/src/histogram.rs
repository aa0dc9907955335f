//! A log-linear latency histogram: 16 buckets per power of two (about 6% resolution), so
//! that worker processes can send theirs back in a few hundred numbers and the parent can
//! merge them.

use serde::{Deserialize, Serialize};

const SUB: u32 = 16;
const SUB_BITS: u32 = 4;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros(); // >= SUB_BITS
    let mantissa = (ns >> (e - SUB_BITS)) & (SUB as u64 - 1);
    (SUB + (e - SUB_BITS) * SUB) as usize + mantissa as usize
}

/// The middle of bucket `b`, in ns.
fn value(b: usize) -> f64 {
    let b = b as u64;
    if b < SUB as u64 {
        return b as f64;
    }
    let e = (b - SUB as u64) / SUB as u64 + SUB_BITS as u64;
    let mantissa = (b - SUB as u64) % SUB as u64;
    let low = (SUB as u64 + mantissa) << (e - SUB_BITS as u64);
    let width = 1u64 << (e - SUB_BITS as u64);
    low as f64 + width as f64 / 2.0
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        let b = bucket(ns);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in ns, or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(b));
            }
        }
        unreachable!("rank is at most the total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for ns in [0u64, 1, 15, 16, 17, 100, 1_000, 123_456, 10_000_000_000] {
            let b = bucket(ns);
            assert!(b >= last);
            last = b;
            let v = value(b);
            assert!(
                (v - ns as f64).abs() <= ns as f64 * 0.07 + 1.0,
                "{ns} -> {v}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for ns in 1..=1000 {
            h.record(ns);
        }
        let p99 = h.quantile(0.99).unwrap();
        assert!((930.0..1060.0).contains(&p99), "{p99}");
        let mut other = Histogram::default();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
    }
}
