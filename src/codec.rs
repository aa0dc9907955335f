//! How typed values become bytes. The store only moves bytes; a [`Codec`] turns values into
//! bytes (outside the lock) and back. [`Bincode`] is the default; another codec is a new type
//! implementing the trait, used through `Store::put_as` / `Store::get_as`.

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
/// 1 KiB) in allocations, and as many elements of sequences and maps (at least 2^20), and
/// may nest at most 256 levels deep and no deeper than the thread's stack allows (a quarter
/// of it, up to 256 KiB, is left unused), so a few hostile bytes claiming a 1 TiB string,
/// or read as a deeply recursive type, are an error, not an abort or a hang. (A value
/// nested deeper can be put but not got.)
pub struct Bincode;

macro_rules! decode_limited {
    ($bytes:expr, $($limit:literal),+) => {{
        let claim = ($bytes.len() as u64).saturating_mul(16);
        // The same allowance in elements (a `Vec<()>` takes no memory), and a bound on
        // nesting: see `bounded`.
        let seed = || Bounded::new(claim.max(1 << 20));
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
        Bincode::encode(&tree(crate::bounded::MAX_DEPTH as usize), &mut out).unwrap();
        assert!(
            Bincode::decode::<Tree>(&out).is_err(),
            "one level more than allowed"
        );
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

    /// A node whose decoding takes kilobytes of stack per level (its visitor holds the
    /// arrays by value, more so in a debug build).
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[allow(clippy::large_enum_variant)]
    enum Fat {
        Leaf,
        Node(Box<Fat>, [u64; 32], [u64; 32], [u64; 32], [u64; 32]),
    }

    #[test]
    fn a_type_with_large_levels_stops_at_the_threads_stack_not_past_it() {
        // On a 1 MiB thread, 256 levels of this type would need several MiB: the decode
        // stops at the stack's margin with an error instead of overflowing it.
        let ones = vec![1u8; 100_000];
        let got = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || Bincode::decode::<Fat>(&ones).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        let why = got.unwrap_err();
        assert!(
            why.contains("nests deeper than this thread's stack allows"),
            "{why}"
        );
        // A few levels of it decode on the same stack.
        let mut out = Vec::new();
        let small = (0..4).fold(Fat::Leaf, |t, _| {
            Fat::Node(Box::new(t), [7; 32], [0; 32], [1; 32], [2; 32])
        });
        Bincode::encode(&small, &mut out).unwrap();
        let back = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || Bincode::decode::<Fat>(&out).map(|t| t == small))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(back, Ok(true));
    }

    #[test]
    fn fields_fixed_by_the_type_cost_no_steps() {
        // 60,000 one-byte elements, each a tuple with 16 more fields that take no bytes:
        // what the input claims is 60,000 elements, whatever each is made of.
        let v: Vec<(u8, [(); 16])> = (0..60_000).map(|i| (i as u8, [(); 16])).collect();
        let mut out = Vec::new();
        Bincode::encode(&v, &mut out).unwrap();
        assert_eq!(Bincode::decode::<Vec<(u8, [(); 16])>>(&out).unwrap(), v);
    }

    #[test]
    fn zero_sized_elements_claimed_by_the_quintillion_are_an_error_not_a_hang() {
        let mut out = Vec::new();
        Bincode::encode(&(1u64 << 62), &mut out).unwrap();
        let why = Bincode::decode::<Vec<()>>(&out).unwrap_err();
        assert!(why.contains("more elements than its size allows"), "{why}");
        // 2^20 of them, the least allowance, still decode; one more does not.
        let mut out = Vec::new();
        Bincode::encode(&vec![(); 1 << 20], &mut out).unwrap();
        assert_eq!(Bincode::decode::<Vec<()>>(&out).unwrap().len(), 1 << 20);
        let mut out = Vec::new();
        Bincode::encode(&vec![(); (1 << 20) + 1], &mut out).unwrap();
        assert!(Bincode::decode::<Vec<()>>(&out).is_err());
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
