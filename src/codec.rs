//! How typed values become bytes. The store only moves bytes; a [`Codec`] turns values into
//! bytes (outside the lock) and back. [`Bincode`] is the default; another codec is a new type
//! implementing the trait, used through `Store::put_as` / `Store::get_as`.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bounded::Bounded;

/// A serialization format for stored values.
pub trait Codec {
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String>;
    /// Decodes a whole value from `bytes`; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// bincode 2 with its standard configuration (varint integers, little endian).
///
/// Decoding is limited: a value may claim at most 16 times its encoded size (and at least
/// 1 KiB) in allocations, and as many elements (at least 2^20), and may nest at most 256
/// levels deep, so a
/// few hostile bytes claiming a 1 TiB string, or read as a deeply recursive type, are an
/// error, not an abort or a hang. (A value nested deeper can be put but not got.)
pub struct Bincode;

macro_rules! decode_limited {
    ($bytes:expr, $($limit:literal),+) => {{
        let claim = ($bytes.len() as u64).saturating_mul(16);
        // The same allowance in elements (a `Vec<()>` takes no memory), and a bound on
        // nesting: see `bounded`.
        let seed = || Bounded { steps: claim.max(1 << 20), ty: PhantomData };
        $(
            if claim <= $limit {
                let config = bincode::config::standard().with_limit::<$limit>();
                return bincode::serde::seed_decode_from_slice(seed(), $bytes, config).map_err(decode_error).and_then(whole($bytes.len()));
            }
        )+
        let config = bincode::config::standard().with_limit::<{ 1 << 40 }>();
        bincode::serde::seed_decode_from_slice(seed(), $bytes, config).map_err(decode_error).and_then(whole($bytes.len()))
    }};
}

/// What a failed decode means, in words (bincode's own text is its enum's debug form).
fn decode_error(e: bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as D;
    use bincode::serde::DecodeError as S;
    match e {
        D::UnexpectedEnd { additional } => {
            format!("its bytes end {additional} byte(s) short of a value of that type")
        }
        D::LimitExceeded => "it claims more memory than its size allows (16 times its bytes): \
                             not a value of that type"
            .into(),
        D::OtherString(why) => why,
        D::Other(why) => why.into(),
        D::Serde(S::AnyNotSupported | S::IgnoredAnyNotSupported | S::IdentifierNotSupported) => {
            "the type needs a self-describing format (serde's `deserialize_any`: untagged or \
             flattened enums, `serde_json::Value`), which bincode is not; store it with a codec \
             that is, through put_as/get_as"
                .into()
        }
        other => format!("its bytes are not a value of that type ({other:?})"),
    }
}

/// What a failed encode means, in words.
fn encode_error(e: bincode::error::EncodeError) -> String {
    use bincode::error::EncodeError as E;
    match e {
        E::OtherString(why) => why,
        E::Other(why) => why.into(),
        E::Serde(bincode::serde::EncodeError::SequenceMustHaveLength) => {
            "bincode needs the length of every sequence up front, and this one has none (an \
             iterator serialized without a length)"
                .into()
        }
        other => format!("{other:?}"),
    }
}

fn whole<T>(len: usize) -> impl FnOnce((T, usize)) -> Result<T, String> {
    move |(value, used)| {
        if used == len {
            Ok(value)
        } else {
            Err(format!("{} bytes left over after the value", len - used))
        }
    }
}

impl Codec for Bincode {
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
        bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
            .map(|_| ())
            .map_err(encode_error)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        decode_limited!(
            bytes,
            1024,
            65536,
            1048576,
            16777216,
            268435456,
            4294967296,
            68719476736
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        Bincode::encode(&vec![1u32, 2, 3], &mut out).unwrap();
        assert_eq!(Bincode::decode::<Vec<u32>>(&out).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn huge_claimed_length_is_an_error_not_an_abort() {
        // A varint length of 2^40 followed by nothing: a 1 TiB string.
        let bytes = [0xFD, 0, 0, 0, 0, 0, 1, 0, 0, b'a', b'b', b'c'];
        assert!(Bincode::decode::<String>(&bytes).is_err());
        assert!(Bincode::decode::<Vec<u64>>(&bytes).is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    fn tree(depth: usize) -> Tree {
        (0..depth).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    #[test]
    fn a_recursive_type_read_from_unsuitable_bytes_is_an_error_not_a_stack_overflow() {
        // Each byte 1 reads as one more `Node`: 100,000 levels would overflow any stack.
        let why = Bincode::decode::<Tree>(&vec![1u8; 100_000]).unwrap_err();
        assert!(why.contains("nests deeper than 256 levels"), "{why}");
        let mut out = Vec::new();
        Bincode::encode(&tree(crate::bounded::MAX_DEPTH as usize + 1), &mut out).unwrap();
        assert!(Bincode::decode::<Tree>(&out).is_err());
    }

    #[test]
    fn values_nested_up_to_the_limit_decode_on_a_spawned_threads_stack() {
        // A spawned thread has 2 MiB of stack (less than the main thread's 8): the deepest
        // value allowed must fit there, in a debug build too.
        let depth = crate::bounded::MAX_DEPTH as usize - 1;
        let mut out = Vec::new();
        Bincode::encode(&tree(depth), &mut out).unwrap();
        let back =
            std::thread::spawn(move || Bincode::decode::<Tree>(&out).map(|t| t == tree(depth)));
        assert_eq!(back.join().unwrap(), Ok(true));
        // Depth counts nesting, not length: a long flat sequence is not deep.
        let mut out = Vec::new();
        let long: Vec<Option<(u8, String)>> =
            (0..100_000).map(|i| Some((i as u8, "x".into()))).collect();
        Bincode::encode(&long, &mut out).unwrap();
        assert_eq!(
            Bincode::decode::<Vec<Option<(u8, String)>>>(&out).unwrap(),
            long
        );
    }

    #[test]
    fn zero_sized_elements_claimed_by_the_quintillion_are_an_error_not_a_hang() {
        let mut out = Vec::new();
        Bincode::encode(&(1u64 << 62), &mut out).unwrap();
        let why = Bincode::decode::<Vec<()>>(&out).unwrap_err();
        assert!(why.contains("more elements than its size allows"), "{why}");
        // A million of them, the least allowance, still decode.
        let mut out = Vec::new();
        Bincode::encode(&vec![(); 1 << 19], &mut out).unwrap();
        assert_eq!(Bincode::decode::<Vec<()>>(&out).unwrap().len(), 1 << 19);
    }

    #[test]
    fn a_failed_decode_says_why_in_words() {
        let short = Bincode::decode::<(u64, String)>(&[1, 5, b'a']).unwrap_err();
        assert_eq!(
            short,
            "its bytes end 4 byte(s) short of a value of that type"
        );
        let not_bool = Bincode::decode::<bool>(&[7]).unwrap_err();
        assert!(
            not_bool.starts_with("its bytes are not a value of that type"),
            "{not_bool}"
        );
        #[derive(serde::Deserialize, Debug)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Either {
            N(u64),
            S(String),
        }
        let any = Bincode::decode::<Either>(&[1]).unwrap_err();
        assert!(any.contains("self-describing"), "{any}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut out = Vec::new();
        Bincode::encode(&70000u32, &mut out).unwrap();
        assert!(Bincode::decode::<u8>(&out).is_err());
    }

    #[test]
    fn unserializable_value_is_an_error() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("cannot serialize Bad"))
            }
        }
        let mut out = Vec::new();
        assert_eq!(
            Bincode::encode(&Bad, &mut out).unwrap_err(),
            "cannot serialize Bad",
            "the type's own words, not bincode's enum"
        );
    }
}
