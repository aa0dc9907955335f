//! Workload sizes: the ones WORKLOADS.md gives, and tiny ones for the smoke run CI does.

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    /// W1: distinct keys, and the value length.
    pub w1_keys: usize,
    pub w1_len: usize,
    /// W1's keys for the Python original: each of its calls is a round trip to a manager
    /// process, so its rates do not depend on the number of keys, and 100,000 would take
    /// minutes per run.
    pub w1_python_keys: usize,
    /// W2: keys and value length.
    pub w2_keys: usize,
    pub w2_len: usize,
    /// W3 and W6: keys, value length, and how long each worker runs.
    pub mix_keys: usize,
    pub mix_len: usize,
    pub mix_secs: f64,
    /// W4: store capacity, value lengths (uniform in min..=max), gets, keys, Zipf exponent.
    pub w4_capacity: u64,
    pub w4_min_len: usize,
    pub w4_max_len: usize,
    pub w4_gets: usize,
    pub w4_keys: usize,
    pub w4_theta: f64,
    /// W5: objects, their length, and how long each phase reads.
    pub w5_keys: usize,
    pub w5_len: usize,
    pub w5_secs: f64,
    /// W6: worker processes.
    pub w6_procs: usize,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        w1_keys: 100_000,
        w1_len: 64,
        w1_python_keys: 2_000,
        w2_keys: 200,
        w2_len: 1 << 20,
        mix_keys: 10_000,
        mix_len: 64,
        mix_secs: 2.0,
        w4_capacity: 64 << 20,
        w4_min_len: 1 << 10,
        w4_max_len: 64 << 10,
        w4_gets: 200_000,
        w4_keys: 20_000,
        w4_theta: 0.99,
        w5_keys: 10_000,
        w5_len: 4 << 10,
        w5_secs: 2.0,
        w6_procs: 8,
    };

    /// Every workload, every system, in a few seconds: it checks that the harness still
    /// builds and runs, and its figures mean little.
    pub const SMOKE: Sizes = Sizes {
        w1_keys: 2_000,
        w1_len: 64,
        w1_python_keys: 100,
        w2_keys: 8,
        w2_len: 256 << 10,
        mix_keys: 1_000,
        mix_len: 64,
        mix_secs: 0.1,
        w4_capacity: 4 << 20,
        w4_min_len: 1 << 10,
        w4_max_len: 64 << 10,
        w4_gets: 5_000,
        w4_keys: 2_000,
        w4_theta: 0.99,
        w5_keys: 1_000,
        w5_len: 4 << 10,
        w5_secs: 0.1,
        w6_procs: 8,
    };
}
