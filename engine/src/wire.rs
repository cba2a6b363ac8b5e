//! How one field type is written to and read from the log: [`Wire`], implemented once per
//! type, so the event table in [`crate::event`] names only fields and the compiler picks
//! each field's encoding by its type.
//!
//! Encodings are those of [`crate::codec`]: integers as varints (signed ones zig-zag),
//! strings and byte strings as a length then the bytes, options as a 0/1 byte then the
//! value, ids as their integer. Reading never panics: a short or malformed input is a
//! [`DecodeError`].

use crate::codec::{Dec, DecodeError, Enc};
use crate::types::{HoldId, Line, Lsn, SkuId, StoreId, Timestamp};

/// A type with one encoding in the log.
pub(crate) trait Wire: Sized {
    /// Appends the value's encoding.
    fn put(&self, e: &mut Enc<'_>);
    /// Reads a value written by [`Wire::put`].
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError>;
}

/// `Wire` for types encoded as one integer through a newtype or a primitive.
macro_rules! wire_via {
    ($($ty:ty => $put:ident, $take:ident, $wrap:expr, $unwrap:expr;)*) => {
        $(impl Wire for $ty {
            fn put(&self, e: &mut Enc<'_>) {
                #[allow(clippy::redundant_closure_call)]
                e.$put(($unwrap)(self));
            }
            fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
                #[allow(clippy::redundant_closure_call)]
                Ok(($wrap)(d.$take()?))
            }
        })*
    };
}

wire_via! {
    u8 => u8, u8, |v| v, |v: &u8| *v;
    u32 => u32, u32, |v| v, |v: &u32| *v;
    u64 => u64, u64, |v| v, |v: &u64| *v;
    i64 => i64, i64, |v| v, |v: &i64| *v;
    bool => bool, bool, |v| v, |v: &bool| *v;
    StoreId => u32, u32, StoreId, |v: &StoreId| v.0;
    SkuId => u32, u32, SkuId, |v: &SkuId| v.0;
    HoldId => u64, u64, HoldId, |v: &HoldId| v.0;
    Lsn => u64, u64, Lsn, |v: &Lsn| v.0;
    Timestamp => i64, i64, Timestamp, |v: &Timestamp| v.0;
}

impl Wire for String {
    fn put(&self, e: &mut Enc<'_>) {
        e.str(self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        d.string()
    }
}

/// A byte string (a kept reply's encoded response).
impl Wire for Vec<u8> {
    fn put(&self, e: &mut Enc<'_>) {
        e.bytes(self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        Ok(d.bytes()?.to_vec())
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, e: &mut Enc<'_>) {
        match self {
            None => e.u8(0),
            Some(v) => {
                e.u8(1);
                v.put(e);
            }
        }
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let at = d.pos();
        match d.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::take(d)?)),
            tag => Err(DecodeError::Tag {
                what: "option",
                tag,
                at,
            }),
        }
    }
}

impl<T: Wire> Wire for Box<T> {
    fn put(&self, e: &mut Enc<'_>) {
        (**self).put(e);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        T::take(d).map(Box::new)
    }
}

/// Writes a sequence: its length, then each item.
fn put_seq<T: Wire>(e: &mut Enc<'_>, items: &[T]) {
    e.seq_len(items.len());
    for item in items {
        item.put(e);
    }
}

/// Reads a sequence written by [`put_seq`].
fn take_seq<T: Wire>(d: &mut Dec<'_>) -> Result<Vec<T>, DecodeError> {
    let n = d.seq_len()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(T::take(d)?);
    }
    Ok(v)
}

/// `Wire` for `Vec<T>` of item types that have one, as [`put_seq`] writes them. (Not a
/// blanket impl: `Vec<u8>` is a byte string.)
macro_rules! wire_seq {
    ($($item:ty),* $(,)?) => {
        $(impl Wire for Vec<$item> {
            fn put(&self, e: &mut Enc<'_>) {
                put_seq(e, self);
            }
            fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
                take_seq(d)
            }
        })*
    };
}

wire_seq!(HoldId);

/// `Wire` for a field-less enum written as one byte per variant; an unknown byte is
/// [`DecodeError::Tag`] naming `what`.
macro_rules! wire_enum {
    ($ty:ty, $what:literal { $($variant:ident = $byte:literal),+ $(,)? }) => {
        impl crate::wire::Wire for $ty {
            fn put(&self, e: &mut crate::codec::Enc<'_>) {
                e.u8(match self {
                    $(<$ty>::$variant => $byte,)+
                });
            }
            fn take(d: &mut crate::codec::Dec<'_>) -> Result<Self, crate::codec::DecodeError> {
                let at = d.pos();
                match d.u8()? {
                    $($byte => Ok(<$ty>::$variant),)+
                    tag => Err(crate::codec::DecodeError::Tag { what: $what, tag, at }),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A hold's or an order's stock lines: a count, then each line's SKU id and units.
pub(crate) fn encode_lines(e: &mut Enc<'_>, lines: &[Line]) {
    e.seq_len(lines.len());
    for l in lines {
        e.u32(l.sku.0);
        e.u32(l.qty);
    }
}

/// Reads what [`encode_lines`] wrote.
pub(crate) fn decode_lines(d: &mut Dec<'_>) -> Result<Vec<Line>, DecodeError> {
    let n = d.seq_len()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Line {
            sku: SkuId(d.u32()?),
            qty: d.u32()?,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(v: T) {
        let mut buf = Vec::new();
        v.put(&mut Enc::new(&mut buf));
        let mut d = Dec::new(&buf);
        assert_eq!(T::take(&mut d).unwrap(), v);
        d.finish().unwrap();
    }

    #[test]
    fn options_and_sequences_round_trip() {
        round_trip(Some(Timestamp::from_ms(-5)));
        round_trip(None::<String>);
        round_trip(Some("x".to_owned()));
        round_trip(vec![HoldId(1), HoldId(u64::MAX)]);
        round_trip(vec![0u8, 255]);
        round_trip(Box::new(Lsn(7)));
    }

    #[test]
    fn a_bad_option_tag_is_an_error() {
        let mut d = Dec::new(&[2, 0]);
        assert!(matches!(
            <Option<u32> as Wire>::take(&mut d),
            Err(DecodeError::Tag { what: "option", .. })
        ));
    }
}
