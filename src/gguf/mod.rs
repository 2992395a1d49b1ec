//! GGUF files (versions 2 and 3): header, metadata, tensor directory, and the
//! memory-mapped tensor data. Parsing is defensive: every length, count and
//! offset is checked against the file before it is used, so a corrupt or hostile
//! file yields a [`GgufError`] naming the problem instead of a panic or a huge
//! allocation.

mod reader;
mod value;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use reader::parse;
pub use value::MetaValue;
pub use writer::{GgufWriter, TensorDesc};

use crate::quant::GgmlType;

/// Everything that can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic bytes are {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("file is truncated: needed {needed} bytes at offset {offset} while reading {what}, file has {len}")]
    Truncated {
        what: String,
        offset: usize,
        needed: u64,
        len: usize,
    },
    #[error("{what} count {count} is absurd (limit {limit})")]
    AbsurdCount {
        what: String,
        count: u64,
        limit: u64,
    },
    #[error("unknown metadata value type {ty} for key {key:?}")]
    UnknownValueType { key: String, ty: u32 },
    #[error("metadata key {0:?} is not valid UTF-8")]
    BadUtf8(String),
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: unknown tensor type id {ty}")]
    UnknownTensorType { name: String, ty: u32 },
    #[error("tensor {name:?}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("general.alignment {0} is not a power of two between 1 and 65536")]
    BadAlignment(u64),
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("required metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("required tensor {0:?} is missing")]
    MissingTensor(String),
}

pub type Result<T> = std::result::Result<T, GgufError>;

/// Directory entry for one tensor. `dims[0]` is the innermost (row) length,
/// as in ggml.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Length of one row (innermost dimension).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims[0]) as usize
    }
}

/// Parsed header of a GGUF file; tensor data stays in the file.
#[derive(Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

/// An open GGUF file: parsed header plus the whole file memory-mapped.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    mmap: Mmap,
    /// Ranges given to [`Self::release`], for [`Self::release_again`].
    released: std::sync::Mutex<Vec<(usize, usize)>>,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: the file is opened read-only; tandem never writes model files
        // while they are mapped. Another process truncating it is the usual mmap
        // caveat, shared with every GGUF loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = parse(&mmap)?;
        let meta_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            header,
            meta_index,
            tensor_index,
            mmap,
            released: Default::default(),
        })
    }

    /// The whole mapped file.
    pub fn mapped(&self) -> &[u8] {
        &self.mmap
    }

    /// Let the kernel drop the resident pages of `len` bytes from `offset`
    /// (a copy of them is kept elsewhere): they stop counting towards this
    /// process's memory, and a later read pages them in again from the file.
    pub fn release(&self, offset: usize, len: usize) {
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((offset, len));
        self.advise_dont_need(offset, len);
    }

    /// Release every range given to [`Self::release`] once more. A page
    /// fault in the mapping reads the pages around it too (the kernel's
    /// read-around, 128 KiB): weights copied out of the file in another
    /// order than the file's brought back ~50 KiB of their released
    /// neighbours each (6.5 MB of SmolLM2's 98 MB), so a loader calls this
    /// when it has read all it will.
    pub fn release_again(&self) {
        let ranges = std::mem::take(&mut *self.released.lock().unwrap_or_else(|e| e.into_inner()));
        for &(offset, len) in &ranges {
            self.advise_dont_need(offset, len);
        }
    }

    fn advise_dont_need(&self, offset: usize, len: usize) {
        // SAFETY: the mapping is read-only and private, so no page holds
        // anything the file does not; dropping one only costs a re-read.
        // Advice is a hint: a failure leaves the pages resident, no worse.
        let _ = unsafe {
            self.mmap
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
    }

    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index
            .get(key)
            .map(|&i| &self.header.metadata[i].1)
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|v| u64::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| wrong(key, "unsigned integer", v)),
        }
    }

    pub fn req_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)?
            .ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| wrong(key, "number", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| wrong(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(key, "string", v)),
        }
    }

    /// Let go of the large arrays of metadata (a vocabulary's tokens, types,
    /// scores and merges: for Gemma 3's 262,144 tokens 32 bytes a value,
    /// ~35 MB) once what reads them is built, and of the header's pages in
    /// the mapping (parsed, so read no more); the keys stay, holding empty
    /// arrays.
    pub fn release_metadata(&mut self, arrays_longer_than: usize) {
        for (_, v) in &mut self.header.metadata {
            if matches!(v, MetaValue::Array(a) if a.len() > arrays_longer_than) {
                *v = MetaValue::Array(Vec::new());
            }
        }
        self.release(0, self.header.data_offset as usize);
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| wrong(key, "array", v)),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The raw bytes of a tensor, borrowed from the memory map.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        let start = (self.header.data_offset + info.offset) as usize;
        // Bounds were validated at parse time.
        let data = &self.mmap[start..start + info.n_bytes as usize];
        Ok(Tensor { info, data })
    }

    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")?
            .ok_or_else(|| GgufError::MissingKey("general.architecture".into()))
    }
}

fn wrong(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.into(),
        expected,
        found: found.type_name(),
    }
}

/// A tensor's directory entry and its bytes in the mapped file.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Bytes of row `r` (rows are contiguous runs of whole blocks).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.info.ty.row_bytes(self.info.row_len());
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The whole tensor as f32 (small tensors only: norms, biases).
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.info.row_len();
        let mut out = vec![0.0; self.info.n_elements() as usize];
        for (r, chunk) in out.chunks_mut(n).enumerate() {
            crate::quant::dequantize_row(self.info.ty, self.row(r), chunk);
        }
        out
    }
}
