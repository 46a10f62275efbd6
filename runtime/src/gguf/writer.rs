//! A streaming GGUF writer: the header and tensor directory first (every tensor's size is
//! known from its shape and type), then each tensor's bytes in order, so a converter holds
//! one tensor in memory at a time.

use super::reader::align_up;
use super::{Value, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use crate::quant::GgmlType;
use std::io::Write;

/// A tensor to be written: `dims` in ggml order (row length first).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorDecl {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn n_bytes(&self) -> Result<u64> {
        let bad =
            || Error::InvalidArgument(format!("tensor '{}': bad dims {:?}", self.name, self.dims));
        if self.dims.is_empty() || self.dims.len() > MAX_DIMS || self.dims.contains(&0) {
            return Err(bad());
        }
        let n = self
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(bad)?;
        let block = self.ggml_type.block_size() as u64;
        if self.dims[0] % block != 0 {
            return Err(Error::InvalidArgument(format!(
                "tensor '{}': row length {} is not a multiple of {}'s block size {block}",
                self.name, self.dims[0], self.ggml_type
            )));
        }
        (n / block)
            .checked_mul(self.ggml_type.type_size() as u64)
            .ok_or_else(bad)
    }
}

pub struct GgufWriter<W: Write> {
    out: W,
    tensors: Vec<(TensorDecl, u64)>,
    next: usize,
    alignment: u64,
    /// Bytes written so far (header included).
    position: u64,
    /// Bytes of the current tensor written so far.
    part_written: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, metadata and tensor directory.
    pub fn new(out: W, metadata: &[(String, Value)], tensors: Vec<TensorDecl>) -> Result<Self> {
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if *a > 0 && a.is_power_of_two() => *a as u64,
            Some((_, v)) => {
                return Err(Error::InvalidArgument(format!(
                    "general.alignment must be a u32 power of two, is {v:?}"
                )))
            }
        };
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        let mut keys = std::collections::HashSet::new();
        for (key, value) in metadata {
            if !keys.insert(key.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "metadata key '{key}' given twice"
                )));
            }
            put_string(&mut header, key);
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut sized = Vec::with_capacity(tensors.len());
        let mut names = std::collections::HashSet::new();
        let mut offset = 0u64;
        for t in tensors {
            if t.name.len() > MAX_NAME_LEN || !names.insert(t.name.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "tensor name '{}' is too long or given twice",
                    t.name
                )));
            }
            let n_bytes = t.n_bytes()?;
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&(t.ggml_type as u32).to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + n_bytes, alignment);
            sized.push((t, n_bytes));
        }
        let mut w = GgufWriter {
            out,
            tensors: sized,
            next: 0,
            alignment,
            position: 0,
            part_written: 0,
        };
        w.write(&header)?;
        w.pad()?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("GGUF output", e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = align_up(self.position, self.alignment) - self.position;
        self.write(&vec![0u8; n as usize])
    }

    /// The next tensor to write, if any.
    pub fn next_tensor(&self) -> Option<&TensorDecl> {
        self.tensors.get(self.next).map(|(t, _)| t)
    }

    /// Writes the data of the next tensor in directory order; `name` must be that tensor's.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_tensor_part(name, data)?;
        self.end_tensor(name)
    }

    /// Appends bytes to the next tensor (`name`), so a tensor can be written in pieces;
    /// [`GgufWriter::end_tensor`] closes it.
    pub fn write_tensor_part(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let (decl, n_bytes) = self
            .tensors
            .get(self.next)
            .ok_or_else(|| Error::InvalidArgument(format!("tensor '{name}' was not declared")))?;
        if decl.name != name || self.part_written + data.len() as u64 > *n_bytes {
            return Err(Error::InvalidArgument(format!(
                "expected tensor '{}' ({} of {n_bytes} bytes written) next, got {} bytes of '{name}'",
                decl.name,
                self.part_written,
                data.len()
            )));
        }
        self.part_written += data.len() as u64;
        self.write(data)
    }

    /// Closes the tensor `name`: all its bytes must have been written.
    pub fn end_tensor(&mut self, name: &str) -> Result<()> {
        match self.tensors.get(self.next) {
            Some((decl, n_bytes)) if decl.name == name && self.part_written == *n_bytes => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{name}' ended after {} bytes, not at its declared size",
                    self.part_written
                )))
            }
        }
        self.next += 1;
        self.part_written = 0;
        self.pad()
    }

    /// Checks that every declared tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some((t, _)) = self.tensors.get(self.next) {
            return Err(Error::InvalidArgument(format!(
                "tensor '{}' was never written",
                t.name
            )));
        }
        self.out.flush().map_err(|e| Error::io("GGUF output", e))?;
        Ok(self.out)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(*v as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            out.extend_from_slice(&(items.element() as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.put_items(out);
        }
    }
}
