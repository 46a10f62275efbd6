//! GGUF v3, the ggml ecosystem's model file format, read in place from a memory mapping.
//!
//! Layout (all integers little-endian):
//! ```text
//! u32  magic          "GGUF" (0x46554747)
//! u32  version        3 (2 is read too: same layout)
//! u64  tensor_count
//! u64  metadata_kv_count
//! metadata_kv_count × { string key; u32 value_type; value }
//! tensor_count × { string name; u32 n_dims (1..=4); u64 dims[n_dims] (ne0 fastest);
//!                  u32 ggml_type; u64 offset (from the data section, aligned) }
//! padding to `general.alignment` (u32, default 32, a power of two)
//! tensor data section
//! ```
//! A string is `u64 len` + `len` bytes of UTF-8 (no NUL). A value is one of
//! [`ValueType`]; an array is `u32 element_type; u64 count; count × element`.
//! The reader checks every count, length, offset and dimension product against the bytes
//! that are really there before it uses them.

mod array;
mod reader;
mod writer;

pub use array::{Array, Strings};

/// How a model file is held while it is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// Mapped: pages are read on demand and shared with the page cache; the file must not be
    /// truncated or rewritten while loaded (a read of a page gone faults: SIGBUS).
    #[default]
    Map,
    /// Read into memory at load (`--no-mmap`): the file may change or go; costs its size.
    Read,
}
pub use reader::{GgufFile, TensorInfo};
pub use writer::{GgufWriter, TensorDecl};

use crate::error::Result;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const GGUF_VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME` (including the NUL it keeps): names are at most 63 bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Metadata value type ids (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
        .get(id as usize)
        .copied()
    }

    /// The fewest bytes one value of this type takes in a file (to bound allocations).
    pub(crate) fn min_encoded_size(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

/// A metadata value. Arrays are homogeneous: `items` all have type `element`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Packed by element type (`array.rs`).
    Array(Array),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// Any integer value that fits in u64 (negative values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v as f64),
                Value::I16(v) => Some(v as f64),
                Value::I32(v) => Some(v as f64),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A homogeneous array value; errors if an item has another type.
    pub fn array(element: ValueType, items: Vec<Value>) -> Result<Value> {
        Array::of(element, &items).map(Value::Array)
    }

    pub fn u32_array(values: &[u32]) -> Value {
        Value::Array(Array::U32(values.to_vec()))
    }

    pub fn string_array<S: AsRef<str>>(values: &[S]) -> Value {
        Value::Array(Array::String(values.iter().collect()))
    }
}

impl std::fmt::Display for Value {
    /// Short human form: arrays show their type, length and first items.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(items) => {
                write!(f, "[{:?}; {}]", items.element(), items.len())?;
                let shown: Vec<String> = items.iter().take(4).map(|v| v.to_string()).collect();
                if !shown.is_empty() {
                    write!(
                        f,
                        " {}{}",
                        shown.join(", "),
                        if items.len() > 4 { ", …" } else { "" }
                    )?;
                }
                Ok(())
            }
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}
