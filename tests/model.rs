//! Model-based test: random operations against a HashMap + CLOCK-LRU model (a get marks an
//! object referenced; eviction gives a referenced object at the tail a second chance at the
//! head), with every invariant checked after every step. The model replays exactly as many
//! evictions as the store made, so the store's order must match it key for key.

mod common;

use std::collections::{HashMap, HashSet};

use common::{TempStore, opts};
use proptest::prelude::*;
use shmstore::PutPolicy;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize),
    PutTyped(u8, u16),
    Get(u8),
    Has(u8),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly small values, some large enough to force splits, merges, moves and evictions.
    ops_sized(prop_oneof![4 => 0usize..200, 2 => 200usize..3000, 1 => 3000usize..12000])
}

/// Values large enough that freeing them gives pages back to the system.
fn big_op() -> impl Strategy<Value = Op> {
    ops_sized(prop_oneof![1 => 0usize..2000, 2 => 60_000usize..300_000])
}

fn ops_sized(size: impl Strategy<Value = usize> + Clone + 'static) -> impl Strategy<Value = Op> {
    let key = 0u8..24;
    prop_oneof![
        4 => (key.clone(), size).prop_map(|(k, n)| Op::Put(k, n)),
        1 => (key.clone(), any::<u16>()).prop_map(|(k, v)| Op::PutTyped(k, v)),
        3 => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::Has),
        2 => key.prop_map(Op::Remove),
    ]
}

/// The model: values, placement order (most recent first) and the referenced marks.
#[derive(Default)]
struct Model {
    values: HashMap<String, Vec<u8>>,
    order: Vec<String>,
    referenced: HashSet<String>,
}

impl Model {
    fn get_hit(&mut self, key: &str) {
        self.referenced.insert(key.to_owned());
    }
    /// The next object to evict, skipping `skip`: referenced ones at the tail move to the
    /// head first.
    fn victim(&mut self, skip: &str) -> Option<String> {
        loop {
            let mut i = self.order.len().checked_sub(1)?;
            if self.order[i] == skip {
                i = i.checked_sub(1)?;
            }
            let cand = self.order[i].clone();
            if !self.referenced.remove(&cand) {
                return Some(cand);
            }
            self.order.remove(i);
            self.order.insert(0, cand);
        }
    }
    /// A put that the store made after evicting `evictions` objects.
    fn put(&mut self, key: &str, value: Vec<u8>, evictions: usize) {
        for _ in 0..evictions {
            let v = self
                .victim(key)
                .expect("the model has as many objects to evict");
            self.remove(&v);
        }
        self.remove(key);
        self.values.insert(key.to_owned(), value);
        self.order.insert(0, key.to_owned());
    }
    fn remove(&mut self, key: &str) -> bool {
        self.order.retain(|k| k != key);
        self.referenced.remove(key);
        self.values.remove(key).is_some()
    }
    /// Objects the store had to evict to put `key`, given its count afterwards.
    fn evictions(&self, key: &str, count_after: usize) -> usize {
        let before = self.values.len() + usize::from(!self.values.contains_key(key));
        before - count_after
    }
}

fn value_for(key: u8, n: usize, step: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31) ^ key ^ step as u8)
        .collect()
}

fn encoded(v: u16) -> Vec<u8> {
    let mut out = Vec::new();
    <shmstore::Bincode as shmstore::Codec>::encode(&v, &mut out).unwrap();
    out
}

/// Runs `ops` on a store of `capacity` bytes that copies objects of up to `inline` bytes
/// beside the index (0: none), checking it against the model after each.
fn run(policy: PutPolicy, capacity: u64, inline: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let options = opts(capacity).put_policy(policy).inline_values(inline);
    let s = TempStore::new("model", options);
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(k, n) => {
                let key = format!("k{k}");
                let value = value_for(k, n, step);
                let stored = s.put_bytes(&key, &value).unwrap();
                if policy == PutPolicy::Rotate {
                    prop_assert!(stored, "rotate refused a value that fits an empty store");
                }
                if stored {
                    let n = m.evictions(&key, s.count().unwrap());
                    m.put(&key, value, n);
                }
            }
            Op::PutTyped(k, v) => {
                let key = format!("k{k}");
                if s.put(&key, &v).unwrap() {
                    let n = m.evictions(&key, s.count().unwrap());
                    m.put(&key, encoded(v), n);
                } else {
                    prop_assert_eq!(policy, PutPolicy::Strict);
                }
            }
            Op::Get(k) => {
                let key = format!("k{k}");
                let got = s.get_bytes(&key).unwrap();
                prop_assert_eq!(got.as_ref(), m.values.get(&key), "get {}", key);
                if got.is_some() {
                    m.get_hit(&key);
                }
            }
            Op::Has(k) => {
                let key = format!("k{k}");
                prop_assert_eq!(s.has(&key).unwrap(), m.values.contains_key(&key));
            }
            Op::Remove(k) => {
                let key = format!("k{k}");
                prop_assert_eq!(s.remove(&key).unwrap(), m.remove(&key));
            }
        }
        // The store evicted exactly what the model's CLOCK order says, and keeps its order.
        let keys = s.keys().unwrap();
        prop_assert_eq!(
            &keys[..],
            &m.order[..],
            "store order is not the model's order"
        );
        prop_assert_eq!(s.count().unwrap(), m.values.len());
        if policy == PutPolicy::Strict {
            prop_assert_eq!(s.stats().unwrap().evictions, 0, "strict store evicted");
        }
        if let Err(e) = s.check() {
            return Err(TestCaseError::fail(format!("step {step}: {e}")));
        }
    }
    for (key, value) in &m.values {
        let got = s.get_bytes(key).unwrap();
        prop_assert_eq!(got.as_ref(), Some(value));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rotate_store_behaves_like_an_lru_map(ops in proptest::collection::vec(op(), 1..160)) {
        run(PutPolicy::Rotate, 32 << 10, 0, ops)?;
    }

    /// Inline copies of objects up to 120 bytes (about a third of the puts fit): gets and
    /// `has` are answered from the copies, and `check` compares every copy with its block.
    #[test]
    fn store_with_inline_copies_behaves_like_an_lru_map(ops in proptest::collection::vec(op(), 1..160)) {
        run(PutPolicy::Rotate, 32 << 10, 120, ops)?;
    }

    #[test]
    fn large_objects_with_pages_given_back(ops in proptest::collection::vec(big_op(), 1..60)) {
        run(PutPolicy::Rotate, 1 << 20, 0, ops)?;
    }

    #[test]
    fn strict_store_behaves_like_a_map_that_refuses(ops in proptest::collection::vec(op(), 1..160)) {
        run(PutPolicy::Strict, 32 << 10, 0, ops)?;
    }
}
