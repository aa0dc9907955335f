//! An exact LRU cache of a byte capacity, simulated: the yardstick for W4's hit ratio.
//!
//! Keys are `0..n`; the recency list is doubly linked through two index arrays, so every
//! operation is O(1) and the simulation runs the same stream as the stores in milliseconds.

const NIL: u32 = u32::MAX;

pub struct LruSim {
    capacity: u64,
    used: u64,
    /// Bytes object `k` takes when present, 0 when absent.
    size: Vec<u64>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// Most recent.
    head: u32,
    /// Least recent: evicted first.
    tail: u32,
}

impl LruSim {
    pub fn new(keys: usize, capacity: u64) -> LruSim {
        LruSim {
            capacity,
            used: 0,
            size: vec![0; keys],
            prev: vec![NIL; keys],
            next: vec![NIL; keys],
            head: NIL,
            tail: NIL,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    fn unlink(&mut self, k: u32) {
        let (p, n) = (self.prev[k as usize], self.next[k as usize]);
        if p == NIL {
            self.head = n
        } else {
            self.next[p as usize] = n
        }
        if n == NIL {
            self.tail = p
        } else {
            self.prev[n as usize] = p
        }
    }

    fn push_front(&mut self, k: u32) {
        self.prev[k as usize] = NIL;
        self.next[k as usize] = self.head;
        if self.head == NIL {
            self.tail = k
        } else {
            self.prev[self.head as usize] = k
        }
        self.head = k;
    }

    /// A get of `k`: true on a hit (which makes `k` the most recent).
    pub fn get(&mut self, k: usize) -> bool {
        if self.size[k] == 0 {
            return false;
        }
        self.unlink(k as u32);
        self.push_front(k as u32);
        true
    }

    /// A put of absent key `k` taking `bytes`: evicts from the tail until it fits. False
    /// (nothing stored) if it is larger than the whole capacity.
    pub fn put(&mut self, k: usize, bytes: u64) -> bool {
        debug_assert_eq!(self.size[k], 0, "put of a present key");
        if bytes == 0 || bytes > self.capacity {
            return false;
        }
        while self.used + bytes > self.capacity {
            let victim = self.tail;
            self.unlink(victim);
            self.used -= self.size[victim as usize];
            self.size[victim as usize] = 0;
        }
        self.size[k] = bytes;
        self.used += bytes;
        self.push_front(k as u32);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recent_first() {
        let mut c = LruSim::new(4, 30);
        assert!(c.put(0, 10) && c.put(1, 10) && c.put(2, 10));
        assert!(c.get(0)); // order now 0, 2, 1
        assert!(c.put(3, 10)); // evicts 1
        assert!(!c.get(1));
        assert!(c.get(0) && c.get(2) && c.get(3));
        assert_eq!(c.used(), 30);
        assert!(!c.put(1, 31));
    }
}
