//! The GGUF reader: parses the header, metadata and tensor directory of a file mapped in
//! memory, validating everything, and hands out tensors as zero-copy byte slices.

use super::array::{Array, Strings};
use super::{FileAccess, Value, ValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use crate::quant::GgmlType;
use std::collections::HashMap;
use std::path::Path;

/// One entry of the tensor directory, validated against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (fastest), `dims[1]` the number of rows, ...
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
    pub n_elements: u64,
}

impl TensorInfo {
    /// Row length (ne0).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    /// Number of rows (product of dims[1..]).
    pub fn n_rows(&self) -> usize {
        (self.n_elements / self.dims[0]) as usize
    }

    /// Shape in HF / PyTorch order (slowest first), e.g. `[out_features, in_features]`.
    pub fn shape_rows_first(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Tensor data stays in the mapping; [`GgufFile::tensor_data`] is a view.
pub struct GgufFile {
    bytes: Bytes,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and private to this process. If another process
        // truncates or rewrites the file while it is mapped, reads may fault (SIGBUS) or see
        // new bytes; the runtime documents that model files must not change while loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(Bytes::Mapped(map)).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Reads `path` into memory and parses it: the file may then change or go while the
    /// model runs (a mapping would fault, SIGBUS, on a truncated file), at the cost of its
    /// size in memory.
    pub fn read(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(Bytes::Owned(bytes)).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Opens `path` as `access` says: mapped ([`GgufFile::open`]) or read ([`GgufFile::read`]).
    pub fn load(path: impl AsRef<Path>, access: FileAccess) -> Result<GgufFile> {
        match access {
            FileAccess::Map => Self::open(path),
            FileAccess::Read => Self::read(path),
        }
    }

    /// Parses a GGUF held in memory (tests, fuzzing, embedded models).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<GgufFile> {
        let header = parse_header(bytes.as_slice())?;
        Ok(GgufFile {
            bytes,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata_index: index_of(&header.metadata, |kv| &kv.0),
            metadata: header.metadata,
            tensor_index: index_of(&header.tensors, |t| &t.name),
            tensors: header.tensors,
        })
    }

    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }

    /// End of the last tensor's data (the file may go on with alignment padding).
    pub fn data_end(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.offset + t.n_bytes)
            .max()
            .unwrap_or(self.data_offset)
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensor directory in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (zero copy).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // In bounds: parse_header checked offset + n_bytes <= file size for every tensor,
        // and `info` came from this file's directory (checked by the index lookup below).
        debug_assert!(self.tensor(&info.name).is_some_and(|t| t == info));
        let start = info.offset as usize;
        &self.bytes.as_slice()[start..start + info.n_bytes as usize]
    }

    /// The raw bytes of the whole file.
    /// Tells the system that bytes `offset .. offset + len` of a mapped file will not be read
    /// again soon (their pages leave this process's memory; reading them faults them back in
    /// from the file). Nothing for a file held in memory.
    pub(crate) fn forget_pages(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: the mapping is a read-only shared file mapping: DONTNEED drops pages that
            // are re-read from the file on the next access, so no byte read later changes.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
        let _ = (offset, len);
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

fn index_of<T>(items: &[T], key: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, t)| (key(t).clone(), i))
        .collect()
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian cursor. Every read names what it reads and where.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Format(format!(
                "truncated: {what} at offset {} needs {n} bytes, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_item_bytes` long: bounded by the bytes left, so
    /// that no allocation or loop is ever sized by an unchecked number from the file.
    fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let limit = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > limit {
            return Err(Error::Format(format!(
                "{what} at offset {at} is {n}, but only {} bytes follow (at most {limit} items fit)",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        self.str(what).map(str::to_owned)
    }

    /// A string borrowed from the file (no allocation: arrays read millions of them).
    fn str(&mut self, what: &str) -> Result<&'a str> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(Error::Format(format!(
                "length of {what} at offset {at} is {len}, but only {} bytes follow",
                self.remaining()
            )));
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes)
            .map_err(|e| Error::Format(format!("{what} at offset {at} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: ValueType, what: &str) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(Error::Format(format!(
                            "{what} at offset {at}: bool byte is {b}, not 0 or 1"
                        )))
                    }
                }
            }
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                let element = self.value_type(&format!("element type of {what}"))?;
                let n = self.count(element.min_encoded_size(), &format!("item count of {what}"))?;
                Value::Array(match element {
                    ValueType::Array => {
                        return Err(Error::Format(format!(
                            "{what} at offset {}: arrays of arrays are not supported",
                            self.pos
                        )))
                    }
                    ValueType::String => {
                        let mut strings = Strings::default();
                        for _ in 0..n {
                            strings.push(self.str(what)?);
                        }
                        Array::String(strings)
                    }
                    fixed => {
                        let bytes = self.take(n * fixed.min_encoded_size(), what)?;
                        Array::from_le_bytes(fixed, bytes, what)?
                    }
                })
            }
        })
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(what)?;
        ValueType::from_id(id)
            .ok_or_else(|| Error::Format(format!("{what} at offset {at}: unknown value type {id}")))
    }
}

fn parse_header(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(Error::Format(format!(
            "not a GGUF file: magic is {magic:02x?}, want \"GGUF\""
        )));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(Error::Format(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        )));
    }
    // Each tensor entry takes at least 8 (name len) + 4 + 8 + 4 + 8 bytes; each kv 8 + 4 + 1.
    let n_tensors = c.count(32, "tensor count")?;
    let n_kv = c.count(13, "metadata count")?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    let mut seen = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let what = format!("metadata '{key}'");
        let ty = c.value_type(&format!("type of {what}"))?;
        let value = c.value(ty, &what)?;
        if seen.insert(key.clone(), i).is_some() {
            return Err(Error::Format(format!("metadata key '{key}' appears twice")));
        }
        metadata.push((key, value));
    }

    let alignment = match seen.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(Error::Format(format!(
                "general.alignment must be a u32 power of two, is {v:?}"
            )))
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let info = parse_tensor_info(&mut c, i)?;
        if names.insert(info.name.clone(), i).is_some() {
            return Err(Error::Format(format!(
                "tensor '{}' appears twice",
                info.name
            )));
        }
        tensors.push(info);
    }

    let data_offset = align_up(c.pos as u64, alignment);
    let file_size = buf.len() as u64;
    if n_tensors > 0 && data_offset > file_size {
        return Err(Error::Format(format!(
            "data section would start at {data_offset}, past the end of the {file_size}-byte file"
        )));
    }
    for t in &mut tensors {
        let relative = t.offset;
        if relative % alignment != 0 {
            return Err(Error::Format(format!(
                "tensor '{}': offset {relative} is not a multiple of the alignment {alignment}",
                t.name
            )));
        }
        let end = data_offset
            .checked_add(relative)
            .and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_size => t.offset = data_offset + relative,
            _ => {
                return Err(Error::Format(format!(
                    "tensor '{}': data at offset {relative} + {} bytes runs past the end of the \
                     file (data section starts at {data_offset}, file is {file_size} bytes)",
                    t.name, t.n_bytes
                )))
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(Error::Format(format!(
                "tensors '{}' and '{}' overlap (bytes {}..{} and {}..)",
                pair[0].name,
                pair[1].name,
                pair[0].offset,
                pair[0].offset + pair[0].n_bytes,
                pair[1].offset
            )));
        }
    }
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

fn parse_tensor_info(c: &mut Cursor, i: usize) -> Result<TensorInfo> {
    let name = c.string(&format!("name of tensor #{i}"))?;
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Format(format!(
            "tensor #{i}: name of {} bytes is longer than ggml's limit of {MAX_NAME_LEN}",
            name.len()
        )));
    }
    let what = format!("tensor '{name}'");
    let n_dims = c.u32(&format!("dimension count of {what}"))? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(Error::Format(format!(
            "{what}: {n_dims} dimensions (1..={MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims);
    for d in 0..n_dims {
        let ne = c.u64(&format!("dimension {d} of {what}"))?;
        if ne == 0 || ne > i64::MAX as u64 {
            return Err(Error::Format(format!("{what}: dimension {d} is {ne}")));
        }
        dims.push(ne);
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).filter(|n| *n <= i64::MAX as u64)
        })
        .ok_or_else(|| Error::Format(format!("{what}: dimensions {dims:?} overflow")))?;
    let type_at = c.pos;
    let type_id = c.u32(&format!("type of {what}"))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        Error::Format(format!(
            "{what}: unknown ggml type id {type_id} at offset {type_at}"
        ))
    })?;
    let block = ggml_type.block_size() as u64;
    if dims[0] % block != 0 {
        return Err(Error::Format(format!(
            "{what}: row length {} is not a multiple of {ggml_type}'s block size {block}",
            dims[0]
        )));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(ggml_type.type_size() as u64)
        .ok_or_else(|| Error::Format(format!("{what}: byte size overflows")))?;
    let offset = c.u64(&format!("offset of {what}"))?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
        n_elements,
    })
}

pub(crate) fn align_up(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment) * alignment
}

/// Small enough for Miri (`scripts/miri.sh`); the hostile-file corpus is in
/// `tests/malformed.rs` and `tests/gguf_reader.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufWriter, TensorDecl};
    use crate::quant::GgmlType;

    #[test]
    fn a_written_file_reads_back_and_every_cut_is_an_error() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("liger".into()),
            ),
            ("test.array".into(), Value::u32_array(&[1, 2, 3])),
        ];
        let decls = vec![
            TensorDecl {
                name: "a".into(),
                dims: vec![32, 2],
                ggml_type: GgmlType::Q8_0,
            },
            TensorDecl {
                name: "b".into(),
                dims: vec![3],
                ggml_type: GgmlType::F32,
            },
        ];
        let a = crate::quant::quantize(GgmlType::Q8_0, &[0.5; 64]).unwrap();
        let b: Vec<u8> = [1f32, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut w = GgufWriter::new(Vec::new(), &meta, decls).unwrap();
        w.write_tensor("a", &a).unwrap();
        w.write_tensor("b", &b).unwrap();
        let bytes = w.finish().unwrap();

        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(
            file.get("test.array")
                .and_then(Value::as_array)
                .map(Array::len),
            Some(3)
        );
        assert_eq!(file.tensor_data(file.tensor("a").unwrap()), &a[..]);
        assert_eq!(file.tensor_data(file.tensor("b").unwrap()), &b[..]);
        for len in (0..file.data_end() as usize).step_by(5) {
            assert!(
                GgufFile::from_bytes(bytes[..len].to_vec()).is_err(),
                "cut at {len}"
            );
        }
    }
}
