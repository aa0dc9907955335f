//! Keys and values as WORKLOADS.md names them: `key-000000`, `key-000001`, ...; values are
//! byte strings.

use std::ops::Index;

/// Every key has this many bytes (`key-` and six digits).
pub const KEY_LEN: usize = 10;

/// Keys `from..from + n`, formatted up front (so that formatting stays out of the timings)
/// into one contiguous string: a walk in random order over them costs a cache-friendly
/// slice, not two pointer chases per key, so the timings are the systems' and not the
/// harness's.
pub struct Keys {
    text: String,
}

impl Keys {
    pub fn len(&self) -> usize {
        self.text.len() / KEY_LEN
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| &self[i])
    }
}

impl Index<usize> for Keys {
    type Output = str;
    fn index(&self, i: usize) -> &str {
        &self.text[i * KEY_LEN..(i + 1) * KEY_LEN]
    }
}

pub fn keys(from: usize, n: usize) -> Keys {
    assert!(from + n <= 1_000_000, "keys have six digits");
    let mut text = String::with_capacity(n * KEY_LEN);
    for i in from..from + n {
        text.push_str(&format!("key-{i:06}"));
    }
    Keys { text }
}

/// A value of `len` bytes with a recognisable pattern (not all zeros, so that nothing can
/// take a shortcut on zero pages).
pub fn value(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_named_as_the_workloads_say() {
        let k = super::keys(99_999, 2);
        assert_eq!((k.len(), &k[0], &k[1]), (2, "key-099999", "key-100000"));
        assert_eq!(k.iter().collect::<Vec<_>>(), ["key-099999", "key-100000"]);
    }
}
