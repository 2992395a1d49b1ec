//! The byte-level GGUF parser. Every read goes through [`Cursor`], which checks
//! bounds first; counts are checked against the bytes that remain before any
//! allocation is sized by them.

use std::collections::HashSet;

use super::{GgufError, GgufHeader, MetaValue, Result, TensorInfo};
use crate::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: u32 = 8;
const DEFAULT_ALIGNMENT: u64 = 32;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8(what.to_string()))
    }
}

/// Smallest encoded size of one value of metadata type `ty`, used to reject an
/// array count that could not fit in the rest of the file before allocating.
fn min_value_size(ty: u32) -> u64 {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        _ => 8,
    }
}

fn read_value(c: &mut Cursor, ty: u32, key: &str, depth: u32) -> Result<MetaValue> {
    Ok(match ty {
        0 => MetaValue::U8(c.array::<1>(key)?[0]),
        1 => MetaValue::I8(c.array::<1>(key)?[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(c.array(key)?)),
        3 => MetaValue::I16(i16::from_le_bytes(c.array(key)?)),
        4 => MetaValue::U32(c.u32(key)?),
        5 => MetaValue::I32(i32::from_le_bytes(c.array(key)?)),
        6 => MetaValue::F32(f32::from_le_bytes(c.array(key)?)),
        7 => {
            let b = c.array::<1>(key)?[0];
            if b > 1 {
                return Err(GgufError::BadTensor {
                    name: key.into(),
                    problem: format!("bool value {b} is neither 0 nor 1"),
                });
            }
            MetaValue::Bool(b == 1)
        }
        8 => MetaValue::String(c.string(key)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::AbsurdCount {
                    what: format!("array nesting depth of {key:?}"),
                    count: depth as u64 + 1,
                    limit: MAX_ARRAY_DEPTH as u64,
                });
            }
            let elem_ty = c.u32(key)?;
            if elem_ty > 12 {
                return Err(GgufError::UnknownValueType {
                    key: key.into(),
                    ty: elem_ty,
                });
            }
            let count = c.u64(key)?;
            let limit = c.remaining() / min_value_size(elem_ty);
            if count > limit {
                return Err(GgufError::AbsurdCount {
                    what: format!("array {key:?} element"),
                    count,
                    limit,
                });
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(c, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(c.u64(key)?),
        11 => MetaValue::I64(i64::from_le_bytes(c.array(key)?)),
        12 => MetaValue::F64(f64::from_le_bytes(c.array(key)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.into(),
                ty,
            })
        }
    })
}

/// Parse and validate a whole GGUF image (header, metadata, tensor directory,
/// and that every tensor's bytes lie inside `buf`).
pub fn parse(buf: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array("magic")?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor count")?;
    if n_tensors > MAX_TENSORS {
        return Err(GgufError::AbsurdCount {
            what: "tensor".into(),
            count: n_tensors,
            limit: MAX_TENSORS,
        });
    }
    let n_kv = c.u64("metadata count")?;
    if n_kv > MAX_KV {
        return Err(GgufError::AbsurdCount {
            what: "metadata key".into(),
            count: n_kv,
            limit: MAX_KV,
        });
    }

    let mut metadata = Vec::new();
    let mut seen = HashSet::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32(&key)?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v.as_i64().unwrap_or(0) as u64;
            if a == 0 || !a.is_power_of_two() || a > 65536 {
                return Err(GgufError::BadAlignment(a));
            }
            a
        }
    };

    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor {
                name,
                problem: format!("{n_dims} dimensions (must be 1..={MAX_DIMS})"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty_id = c.u32(&name)?;
        let offset = c.u64(&name)?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            ty: ty_id,
        })?;
        let n_bytes = tensor_bytes(&name, &dims, ty)?;
        if offset % alignment != 0 {
            return Err(GgufError::BadTensor {
                name,
                problem: format!("data offset {offset} is not a multiple of alignment {alignment}"),
            });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|e| e > data_len) {
            return Err(GgufError::BadTensor {
                name: t.name.clone(),
                problem: format!(
                    "data [{}, +{}) runs past the end of the file (data section is {} bytes)",
                    t.offset, t.n_bytes, data_len
                ),
            });
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn tensor_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
    let bad = |problem: String| GgufError::BadTensor {
        name: name.into(),
        problem,
    };
    if dims.contains(&0) {
        return Err(bad(format!("zero-sized dimension in {dims:?}")));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n < (1u64 << 40))
        .ok_or_else(|| bad(format!("absurd dimensions {dims:?}")))?;
    let bs = ty.block_size() as u64;
    if !dims[0].is_multiple_of(bs) {
        return Err(bad(format!(
            "row length {} is not a multiple of the {:?} block size {bs}",
            dims[0], ty
        )));
    }
    Ok(n / bs * ty.block_bytes() as u64)
}
