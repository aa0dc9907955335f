//! Decoding with bounds that bincode lacks: how deep a value nests and how many parts it
//! has. A recursive type (`enum Tree { Leaf, Node(Box<Tree>) }`) asked of a few hundred
//! kilobytes of unsuitable bytes would otherwise recurse once per byte until the stack
//! overflows (an abort, not an error), and a `Vec` of zero-sized elements claiming 2^62 of
//! them would loop for years while taking no memory and reading no bytes.
//!
//! [`Bounded<T>`], a seed, deserializes `T` through [`Limits`], a `Deserializer` that hands the
//! type's visitors wrapped accessors. Entering a sequence, map, enum, option or newtype costs
//! one level of depth, and is refused when the thread's stack is within a margin of its end
//! (a level's stack grows with the type: a struct of 48 strings takes kilobytes). Every
//! element or entry whose number the input says (a `Vec`'s, a map's, not a tuple's or a
//! struct's fields) costs one step of a budget shared by the whole value: the work per
//! element is fixed by the type, so that bounds the whole decode. Everything else is passed
//! through unchanged.
//!
//! Every method is `#[inline(always)]`: a typed get of a 64-byte `Vec<u8>` passes 64 elements
//! through these layers, and left to the compiler they cost ~100 ns per get (measured,
//! docs/performance.md, session 12); inlined, nothing measurable.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// How deep a stored value may nest (a sequence in an option in a newtype is three
/// levels), whatever the stack (serde_json's parser stops at 128); a list kept as a
/// recursive type (one level per node) can have 255 nodes.
pub const MAX_DEPTH: u32 = 256;

/// The stack a decode leaves unused: a quarter of the thread's stack, at most 256 KiB (the
/// frames between two levels of one type, and the unwinding of an error, fit in it).
const STACK_MARGIN: usize = 256 << 10;

/// Decodes a `T` within [`MAX_DEPTH`] levels, the thread's stack and `steps` elements and
/// entries in all.
pub struct Bounded<T> {
    steps: u64,
    ty: PhantomData<T>,
}

impl<T> Bounded<T> {
    pub fn new(steps: u64) -> Bounded<T> {
        Bounded {
            steps,
            ty: PhantomData,
        }
    }
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Bounded<T> {
    type Value = T;

    #[inline(always)]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let budget = Budget {
            steps: Cell::new(self.steps),
            floor: stack_floor(),
        };
        T::deserialize(Limits {
            de: d,
            depth: MAX_DEPTH,
            budget: &budget,
            free: false,
        })
    }
}

/// What a whole value may use: steps, and the stack down to `floor` (an address).
struct Budget {
    steps: Cell<u64>,
    floor: usize,
}

thread_local! {
    /// This thread's [`stack_floor`], once known (`usize::MAX`: not yet).
    static FLOOR: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The lowest stack address a decode on this thread may reach: [`STACK_MARGIN`] (or a
/// quarter of a smaller stack) above the stack's end; 0 (no check) where the C library
/// cannot say where the stack ends.
fn stack_floor() -> usize {
    FLOOR
        .try_with(|known| {
            if known.get() == usize::MAX {
                let floor = crate::os::thread_stack().map_or(0, |(low, size)| {
                    low.saturating_add((size / 4).min(STACK_MARGIN))
                });
                known.set(floor);
            }
            known.get()
        })
        .unwrap_or(0)
}

/// An address in the caller's frame: how far down the stack the decode has come.
#[inline(always)]
fn stack_here() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// A `Deserializer` (or an accessor, or a visitor) with `depth` levels left and the
/// value's budget.
struct Limits<'a, X> {
    de: X,
    depth: u32,
    budget: &'a Budget,
    /// For a visitor: the sequence it gets has a length fixed by the type (a tuple's, a
    /// struct's fields), so its elements cost nothing. For an accessor: its elements are
    /// free, or were paid for up front from its length (bincode's size hints are exact), so
    /// `next_*` costs nothing more.
    free: bool,
}

impl<'a, X> Limits<'a, X> {
    #[inline(always)]
    fn wrap<Y>(&self, inner: Y) -> Limits<'a, Y> {
        Limits {
            de: inner,
            depth: self.depth,
            budget: self.budget,
            free: false,
        }
    }

    /// The same, for a visitor of a sequence whose length the type fixes.
    #[inline(always)]
    fn wrap_fixed<Y>(&self, inner: Y) -> Limits<'a, Y> {
        Limits {
            free: true,
            ..self.wrap(inner)
        }
    }

    /// `n` steps of the budget.
    #[inline(always)]
    fn pay<E: de::Error>(&self, n: u64) -> Result<(), E> {
        match self.budget.steps.get().checked_sub(n) {
            Some(left) => {
                self.budget.steps.set(left);
                Ok(())
            }
            None => Err(too_many()),
        }
    }

    /// One level down.
    #[inline(always)]
    fn deeper<Y, E: de::Error>(&self, inner: Y) -> Result<Limits<'a, Y>, E> {
        let Some(depth) = self.depth.checked_sub(1) else {
            return Err(too_deep());
        };
        if stack_here() < self.budget.floor {
            return Err(too_deep_for_stack());
        }
        Ok(Limits {
            depth,
            ..self.wrap(inner)
        })
    }
}

/// The error of a value with more parts than its size allows; out of the way of the hot
/// path (every element of a sequence passes through [`Limits::pay`]).
#[cold]
#[inline(never)]
fn too_many<E: de::Error>() -> E {
    E::custom("it has more elements than its size allows (16 per byte): not a value of that type")
}

/// The error of a value that nests deeper than [`MAX_DEPTH`].
#[cold]
#[inline(never)]
fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!(
        "it nests deeper than {MAX_DEPTH} levels: not a value of that type, or one too deep \
         for get (store it as bytes, or flatten it)"
    ))
}

/// The error of a value that nests deeper than this thread's stack allows.
#[cold]
#[inline(never)]
fn too_deep_for_stack<E: de::Error>() -> E {
    E::custom(
        "it nests deeper than this thread's stack allows: not a value of that type, or one too \
         deep for get on this thread (get it on a thread with a larger stack, or store it \
         flattened)",
    )
}

/// `deserialize_*` methods that only take a visitor.
macro_rules! forward_visit {
    ($($method:ident)*) => {$(
        #[inline(always)]
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            let v = self.wrap(v);
            self.de.$method(v)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limits<'_, D> {
    type Error = D::Error;

    forward_visit! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    #[inline(always)]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap(v);
        self.de.deserialize_unit_struct(name, v)
    }

    #[inline(always)]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap(v);
        self.de.deserialize_newtype_struct(name, v)
    }

    #[inline(always)]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Self::Error> {
        let v = self.wrap_fixed(v);
        self.de.deserialize_tuple(len, v)
    }

    #[inline(always)]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap_fixed(v);
        self.de.deserialize_tuple_struct(name, len, v)
    }

    #[inline(always)]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap_fixed(v);
        self.de.deserialize_struct(name, fields, v)
    }

    #[inline(always)]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap(v);
        self.de.deserialize_enum(name, variants, v)
    }

    #[inline(always)]
    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// `visit_*` methods of values that hold nothing further.
macro_rules! forward_leaf {
    ($($method:ident($ty:ty))*) => {$(
        #[inline(always)]
        fn $method<E: de::Error>(self, x: $ty) -> Result<Self::Value, E> {
            self.de.$method(x)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limits<'_, V> {
    type Value = V::Value;

    #[inline(always)]
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.de.expecting(f)
    }

    forward_leaf! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    #[inline(always)]
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.de.visit_none()
    }

    #[inline(always)]
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.de.visit_unit()
    }

    #[inline(always)]
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.deeper(d)?;
        self.de.visit_some(d)
    }

    #[inline(always)]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.deeper(d)?;
        self.de.visit_newtype_struct(d)
    }

    #[inline(always)]
    fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let mut a = self.deeper(a)?;
        // A tuple's or a struct's fields are free; a sequence of known length is paid for
        // once instead of per element (64 times for a 64-byte `Vec<u8>`).
        if self.free {
            a.free = true;
        } else if let Some(n) = a.de.size_hint() {
            a.pay(n as u64)?;
            a.free = true;
        }
        self.de.visit_seq(a)
    }

    #[inline(always)]
    fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let mut a = self.deeper(a)?;
        if let Some(n) = a.de.size_hint() {
            a.pay(n as u64)?;
            a.free = true;
        }
        self.de.visit_map(a)
    }

    #[inline(always)]
    fn visit_enum<A: de::EnumAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let a = self.deeper(a)?;
        self.de.visit_enum(a)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limits<'_, S> {
    type Value = S::Value;

    #[inline(always)]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let d = self.wrap(d);
        self.de.deserialize(d)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Limits<'_, A> {
    type Error = A::Error;

    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        if !self.free {
            self.pay(1)?;
        }
        let seed = self.wrap(seed);
        self.de.next_element_seed(seed)
    }

    #[inline(always)]
    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Limits<'_, A> {
    type Error = A::Error;

    #[inline(always)]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        if !self.free {
            self.pay(1)?;
        }
        let seed = self.wrap(seed);
        self.de.next_key_seed(seed)
    }

    #[inline(always)]
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let seed = self.wrap(seed);
        self.de.next_value_seed(seed)
    }

    #[inline(always)]
    fn size_hint(&self) -> Option<usize> {
        self.de.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Limits<'a, A> {
    type Error = A::Error;
    type Variant = Limits<'a, A::Variant>;

    #[inline(always)]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Self::Error> {
        let seed = self.wrap(seed);
        // The limits without the accessor, which `variant_seed` consumes.
        let limits = self.wrap(());
        let (value, variant) = self.de.variant_seed(seed)?;
        Ok((value, limits.wrap(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Limits<'_, A> {
    type Error = A::Error;

    #[inline(always)]
    fn unit_variant(self) -> Result<(), Self::Error> {
        self.de.unit_variant()
    }

    #[inline(always)]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        let seed = self.wrap(seed);
        self.de.newtype_variant_seed(seed)
    }

    #[inline(always)]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, Self::Error> {
        let v = self.wrap_fixed(v);
        self.de.tuple_variant(len, v)
    }

    #[inline(always)]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.wrap_fixed(v);
        self.de.struct_variant(fields, v)
    }
}
