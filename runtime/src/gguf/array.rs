//! Metadata arrays, stored packed as in the file: an array of n u8 items takes n bytes, one of
//! n strings their text plus one offset each — never a boxed value per item, so that memory
//! stays proportional to the file (a crafted array cannot ask for 24× its bytes). Arrays of
//! arrays are refused, as ggml's reader does.

use super::{Value, ValueType};
use crate::{Error, Result};

/// The strings of an array: item i is `text[ends[i - 1]..ends[i]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.text[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl<S: AsRef<str>> FromIterator<S> for Strings {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> Strings {
        let mut strings = Strings::default();
        for s in items {
            strings.push(s.as_ref());
        }
        strings
    }
}

/// A homogeneous metadata array, packed by element type.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Strings),
}

impl Array {
    /// An empty array of `element` items (None for arrays of arrays).
    pub fn empty(element: ValueType) -> Option<Array> {
        Some(match element {
            ValueType::U8 => Array::U8(Vec::new()),
            ValueType::I8 => Array::I8(Vec::new()),
            ValueType::U16 => Array::U16(Vec::new()),
            ValueType::I16 => Array::I16(Vec::new()),
            ValueType::U32 => Array::U32(Vec::new()),
            ValueType::I32 => Array::I32(Vec::new()),
            ValueType::U64 => Array::U64(Vec::new()),
            ValueType::I64 => Array::I64(Vec::new()),
            ValueType::F32 => Array::F32(Vec::new()),
            ValueType::F64 => Array::F64(Vec::new()),
            ValueType::Bool => Array::Bool(Vec::new()),
            ValueType::String => Array::String(Strings::default()),
            ValueType::Array => return None,
        })
    }

    /// An array of `items`, all of type `element` (an error names the first that is not).
    pub fn of(element: ValueType, items: &[Value]) -> Result<Array> {
        let mut array = Array::empty(element)
            .ok_or_else(|| Error::InvalidArgument("arrays of arrays are not supported".into()))?;
        for item in items {
            match (&mut array, item) {
                (Array::U8(v), Value::U8(x)) => v.push(*x),
                (Array::I8(v), Value::I8(x)) => v.push(*x),
                (Array::U16(v), Value::U16(x)) => v.push(*x),
                (Array::I16(v), Value::I16(x)) => v.push(*x),
                (Array::U32(v), Value::U32(x)) => v.push(*x),
                (Array::I32(v), Value::I32(x)) => v.push(*x),
                (Array::U64(v), Value::U64(x)) => v.push(*x),
                (Array::I64(v), Value::I64(x)) => v.push(*x),
                (Array::F32(v), Value::F32(x)) => v.push(*x),
                (Array::F64(v), Value::F64(x)) => v.push(*x),
                (Array::Bool(v), Value::Bool(x)) => v.push(*x),
                (Array::String(v), Value::String(x)) => v.push(x),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "array of {element:?} holds a {:?}",
                        item.value_type()
                    )))
                }
            }
        }
        Ok(array)
    }

    pub fn element(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F32(_) => ValueType::F32,
            Array::F64(_) => ValueType::F64,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i` as a value of its own (a string copied).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(s) => Value::String(s.get(i)?.to_owned()),
        })
    }

    /// The items as values of their own, one at a time.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// The items of a string array, borrowed.
    pub fn strings(&self) -> Option<&Strings> {
        match self {
            Array::String(s) => Some(s),
            _ => None,
        }
    }

    /// Appends the items as the file stores them (element type and count written by the
    /// caller).
    pub(crate) fn put_items(&self, out: &mut Vec<u8>) {
        match self {
            Array::U8(v) => out.extend_from_slice(v),
            Array::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            Array::String(s) => {
                for item in s.iter() {
                    out.extend_from_slice(&(item.len() as u64).to_le_bytes());
                    out.extend_from_slice(item.as_bytes());
                }
            }
            Array::I8(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::U16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::I16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::U64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Array::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// Reads `n` packed items of `element` from `bytes` (exactly their size for numbers and
    /// bools; strings read by `string`), naming `what` in errors.
    pub(crate) fn from_le_bytes(element: ValueType, bytes: &[u8], what: &str) -> Result<Array> {
        fn le<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks of N")))
                .collect()
        }
        Ok(match element {
            ValueType::U8 => Array::U8(bytes.to_vec()),
            ValueType::I8 => Array::I8(le(bytes, i8::from_le_bytes)),
            ValueType::U16 => Array::U16(le(bytes, u16::from_le_bytes)),
            ValueType::I16 => Array::I16(le(bytes, i16::from_le_bytes)),
            ValueType::U32 => Array::U32(le(bytes, u32::from_le_bytes)),
            ValueType::I32 => Array::I32(le(bytes, i32::from_le_bytes)),
            ValueType::U64 => Array::U64(le(bytes, u64::from_le_bytes)),
            ValueType::I64 => Array::I64(le(bytes, i64::from_le_bytes)),
            ValueType::F32 => Array::F32(le(bytes, f32::from_le_bytes)),
            ValueType::F64 => Array::F64(le(bytes, f64::from_le_bytes)),
            ValueType::Bool => {
                if let Some(i) = bytes.iter().position(|&b| b > 1) {
                    return Err(Error::Format(format!(
                        "{what}[{i}]: bool byte is {}, not 0 or 1",
                        bytes[i]
                    )));
                }
                Array::Bool(bytes.iter().map(|&b| b == 1).collect())
            }
            ValueType::String | ValueType::Array => {
                return Err(Error::Format(format!(
                    "{what}: {element:?} items are not fixed-size"
                )))
            }
        })
    }
}
