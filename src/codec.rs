//! How typed values become bytes. The store only moves bytes; a [`Codec`] turns values into
//! bytes (outside the lock) and back. [`Bincode`] is the default; another codec is a new type
//! implementing the trait, used through `Store::put_as` / `Store::get_as`.

use serde::Serialize;
use serde::de::DeserializeOwned;

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
/// 1 KiB) in allocations, so a few hostile bytes claiming a 1 TiB string are an error, not an
/// abort.
pub struct Bincode;

macro_rules! decode_limited {
    ($bytes:expr, $($limit:literal),+) => {{
        let claim = ($bytes.len() as u64).saturating_mul(16);
        $(
            if claim <= $limit {
                let config = bincode::config::standard().with_limit::<$limit>();
                return bincode::serde::decode_from_slice($bytes, config).map_err(decode_error).and_then(whole($bytes.len()));
            }
        )+
        let config = bincode::config::standard().with_limit::<{ 1 << 40 }>();
        bincode::serde::decode_from_slice($bytes, config).map_err(decode_error).and_then(whole($bytes.len()))
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
