//! Writing GGUF v3 files: metadata and tensors laid out with the file's
//! alignment. Used by tests (hostile files, small synthetic models) and by
//! tools that produce models.

use super::MetaValue;
use crate::quant::GgmlType;

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, MetaValue)>,
    /// (name, dims with dims[0] innermost, type, raw bytes)
    pub tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    pub alignment: u64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(a) => {
            let elem = a.first().map(value_type).unwrap_or(4);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self {
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn meta(&mut self, key: &str, v: MetaValue) -> &mut Self {
        self.metadata.push((key.to_string(), v));
        self
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, bytes: Vec<u8>) -> &mut Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, bytes));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let descs: Vec<TensorDesc> = self
            .tensors
            .iter()
            .map(|(name, dims, ty, bytes)| TensorDesc {
                name: name.clone(),
                dims: dims.clone(),
                ty: *ty,
                n_bytes: bytes.len() as u64,
            })
            .collect();
        let (mut out, offsets) = self.header(&descs);
        let data_start = out.len() as u64;
        for ((_, _, _, bytes), off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Write a file whose tensors are produced one at a time by `data(i)`
    /// (which must return exactly `descs[i].n_bytes` bytes), so a model larger
    /// than memory can be written. `self.tensors` is ignored.
    pub fn write_streaming(
        &self,
        out: &mut impl std::io::Write,
        descs: &[TensorDesc],
        mut data: impl FnMut(usize) -> Vec<u8>,
    ) -> std::io::Result<()> {
        let (header, offsets) = self.header(descs);
        out.write_all(&header)?;
        let mut written = 0u64;
        for (i, (d, off)) in descs.iter().zip(offsets).enumerate() {
            out.write_all(&vec![0u8; (off - written) as usize])?;
            let bytes = data(i);
            assert_eq!(bytes.len() as u64, d.n_bytes, "tensor {} size", d.name);
            out.write_all(&bytes)?;
            written = off + d.n_bytes;
        }
        Ok(())
    }

    /// Header bytes (padded to the alignment) and each tensor's offset from
    /// the start of the data section.
    fn header(&self, tensors: &[TensorDesc]) -> (Vec<u8>, Vec<u64>) {
        let a = self.alignment.max(1);
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&value_type(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.n_bytes).div_ceil(a) * a;
        }
        let data_start = (out.len() as u64).div_ceil(a) * a;
        out.resize(data_start as usize, 0);
        (out, offsets)
    }
}

/// A tensor's entry in the header: name, dims (dims[0] innermost), type and
/// size of its data.
#[derive(Debug, Clone)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub n_bytes: u64,
}
