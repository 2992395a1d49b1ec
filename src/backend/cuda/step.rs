//! One forward pass on the device: its layout (tokens, positions, KV slots,
//! attention slot lists, logit rows) uploaded once into a fixed buffer, and
//! CUDA graphs. A decode layout seen before is recorded as a graph on its
//! next occurrence and replayed from then on: `begin_forward` launches the
//! graph and returns the logits, and the model runs none of its ops. Everything a
//! graph reads that changes between steps lives in the fixed buffer (kernels
//! read context lengths from it), so one graph serves every step of a
//! context-length bucket.

mod ahead;
mod clock;

use std::collections::HashMap;

use cudarc::driver::{sys, CudaGraph};

use super::gpu::{DevBuf, Gpu};
use super::MAX_DECODE_ROWS;
use crate::backend::{AttnSeq, Logits, Readout, StepLayout};

/// Keys per attention split (kernels/attention.cu's SPLIT).
pub const ATTN_SPLIT: usize = 128;

/// The context a graph's attention is launched for, for rows up to
/// position `max_pos`: a power of two, at least four splits.
fn context_bucket(max_pos: usize) -> usize {
    (max_pos + 1).next_power_of_two().max(4 * ATTN_SPLIT)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphKey {
    kv: u64,
    rows_per_seq: Vec<usize>,
    logit_rows: Vec<usize>,
    /// Context bucket (a power of two): attention is launched for this many keys.
    bucket: usize,
    /// The readout's kind and k (its keys live in the step buffer).
    readout: (u8, usize),
}

/// What a pass leaves for the host: full logit rows, or per row k
/// candidates' values, then their ids (as f32 bits), then one log-sum-exp
/// per row, then, with `drawn`, per row the drawn id (bits) and its logit
/// ([`super::CudaBackend::top_k`]'s layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutShape {
    Full { rows: usize, cols: usize },
    Top { rows: usize, k: usize, drawn: bool },
}

impl OutShape {
    /// Floats in the layout.
    pub fn len(self) -> usize {
        match self {
            OutShape::Full { rows, cols } => rows * cols,
            OutShape::Top { rows, k, drawn } => rows * (2 * k + 1 + 2 * drawn as usize),
        }
    }

    /// The output at device address `src`, copied to the host and unpacked.
    pub fn download(self, gpu: &Gpu, src: u64) -> Logits {
        let mut data = vec![0f32; self.len()];
        gpu.download(src, &mut data);
        self.unpack(data)
    }

    fn unpack(self, data: Vec<f32>) -> Logits {
        match self {
            OutShape::Full { cols, .. } => Logits::Full { vocab: cols, data },
            OutShape::Top { rows, k, drawn } => {
                let (values, rest) = data.split_at(rows * k);
                let (ids, rest) = rest.split_at(rows * k);
                let (lse, draws) = rest.split_at(rows);
                Logits::Top {
                    k,
                    values: values.to_vec(),
                    ids: ids.iter().map(|f| f.to_bits()).collect(),
                    lse: lse.to_vec(),
                    drawn: match drawn {
                        true => draws.chunks(2).map(|d| (d[0].to_bits(), d[1])).collect(),
                        false => Vec::new(),
                    },
                }
            }
        }
    }
}

pub enum Mode {
    Eager,
    Capture(GraphKey),
}

/// Device pointers of the attention metadata, and the splits of the keys
/// decode attention is launched with.
#[derive(Clone, Copy)]
pub struct AttnMeta {
    /// Per row: where its sequence's slot list starts in `slots`.
    pub row_slots: u64,
    pub positions: u64,
    pub slots: u64,
    pub n_splits: usize,
}

struct Graph {
    exec: CudaGraph,
    /// Where the recorded pass leaves its output, and its layout.
    out: u64,
    shape: OutShape,
}

/// Host identity of the current step's slices, to recognise them when ops
/// receive them.
struct Current {
    tokens: (usize, usize),
    positions: (usize, usize),
    write_slots: (usize, usize),
    logit_rows: (usize, usize),
    /// Whether the step's draw keys are in the buffer.
    draws: bool,
    seqs: Vec<SeqId>,
    n_splits: usize,
}

#[derive(PartialEq, Eq)]
struct SeqId {
    rows: std::ops::Range<usize>,
    slots: (usize, usize),
    positions: (usize, usize),
}

fn id<T>(s: &[T]) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

fn seq_id(s: &AttnSeq<'_>) -> SeqId {
    SeqId {
        rows: s.rows.clone(),
        slots: id(s.slots),
        positions: id(s.positions),
    }
}

/// Capacities (in u32s) of the fixed step buffer's regions.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Caps {
    rows: usize,
    slots: usize,
}

impl Caps {
    fn offsets(&self) -> [usize; 7] {
        let r = self.rows;
        // tokens, positions, write_slots, row_slots, logit_rows, slots, draw
        // keys (3 words per logit row)
        [0, r, 2 * r, 3 * r, 4 * r, 5 * r, 5 * r + self.slots]
    }
    fn total(&self) -> usize {
        8 * self.rows + self.slots
    }
}

pub struct StepState {
    pub mode: Mode,
    /// Which backend's steps these are, in traces (target or draft).
    trace_id: u32,
    graphs_enabled: bool,
    graphs: HashMap<GraphKey, Graph>,
    seen: HashMap<GraphKey, u32>,
    buf: Option<(DevBuf, Caps)>,
    staging: Vec<u32>,
    current: Option<Current>,
    ahead: ahead::Lookahead,
    clock: Option<clock::StepClock>,
}

impl Drop for StepState {
    fn drop(&mut self) {
        if let Some(c) = &self.clock {
            c.report(self.trace_id);
        }
    }
}

// SAFETY: CudaGraph holds driver handles used only under the backend's lock,
// on its one stream.
unsafe impl Send for StepState {}

impl StepState {
    pub fn new(graphs_enabled: bool) -> Self {
        static IDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        Self {
            mode: Mode::Eager,
            trace_id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            graphs_enabled,
            graphs: HashMap::new(),
            seen: HashMap::new(),
            buf: None,
            staging: Vec::new(),
            current: None,
            ahead: ahead::Lookahead::new(),
            clock: clock::StepClock::from_env(),
        }
    }

    fn caps(&self) -> Caps {
        self.buf.as_ref().expect("step buffer").1
    }

    fn ptr(&self, region: usize) -> u64 {
        let (b, caps) = self.buf.as_ref().expect("step buffer");
        b.ptr + 4 * caps.offsets()[region] as u64
    }

    /// Whether decode steps may be launched ahead of the host (see
    /// [`super::CudaBackend::prepare_for_speculation`]).
    pub fn allow_lookahead(&mut self, allowed: bool) {
        self.ahead.allow(allowed);
    }

    /// Destroy the graphs recorded for these (freed) KV caches.
    pub fn forget_kv(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        self.graphs.retain(|k, _| !ids.contains(&k.kv));
        self.seen.retain(|k, _| !ids.contains(&k.kv));
    }

    /// Upload the step; returns the logits when a recorded graph ran it.
    pub fn begin(&mut self, gpu: &Gpu, step: &StepLayout<'_>, kv: u64) -> Option<Logits> {
        if let Some(logits) = self.ahead_result(gpu, step, kv) {
            tracing::trace!(
                be = self.trace_id,
                kv,
                pos = step.positions[0],
                "step launched ahead"
            );
            self.mode = Mode::Eager;
            self.current = None;
            return Some(logits);
        }
        let n_rows = step.tokens.len();
        let n_slots: usize = step.seqs.iter().map(|s| s.slots.len()).sum();
        let need = Caps {
            rows: n_rows.max(step.logit_rows.len()),
            slots: n_slots,
        };
        let grow = match &self.buf {
            Some((_, c)) => need.rows > c.rows || need.slots > c.slots,
            None => true,
        };
        if grow {
            let old = self.buf.as_ref().map(|(_, c)| *c);
            let caps = Caps {
                rows: need
                    .rows
                    .max(old.map_or(0, |c| c.rows))
                    .next_power_of_two()
                    .max(64),
                slots: need
                    .slots
                    .max(old.map_or(0, |c| c.slots))
                    .next_power_of_two()
                    .max(4096),
            };
            // From the pool's slabs, beside the step's activations.
            let b = gpu.alloc(caps.total() * 4);
            // Recorded graphs read the old buffer.
            self.graphs.clear();
            self.seen.clear();
            self.buf = Some((b, caps));
        }
        let caps = self.caps();
        let off = caps.offsets();
        let keys = match step.readout {
            Readout::Draw(_, keys) => keys.as_slice(),
            _ => &[],
        };
        assert!(
            keys.is_empty() || keys.len() == step.logit_rows.len(),
            "a draw readout needs one key per logit row"
        );
        let used = if keys.is_empty() {
            off[5] + n_slots
        } else {
            off[6] + 3 * keys.len()
        };
        self.staging.clear();
        self.staging.resize(used, 0);
        let st = &mut self.staging;
        st[off[0]..off[0] + n_rows].copy_from_slice(step.tokens);
        st[off[1]..off[1] + n_rows].copy_from_slice(step.positions);
        st[off[2]..off[2] + step.write_slots.len()].copy_from_slice(step.write_slots);
        for (i, &r) in step.logit_rows.iter().enumerate() {
            st[off[4] + i] = r as u32;
        }
        let mut slot_at = 0;
        for s in step.seqs {
            for r in s.rows.clone() {
                st[off[3] + r] = slot_at as u32;
            }
            st[off[5] + slot_at..off[5] + slot_at + s.slots.len()].copy_from_slice(s.slots);
            slot_at += s.slots.len();
        }
        for (i, d) in keys.iter().enumerate() {
            let at = off[6] + 3 * i;
            st[at..at + 3].copy_from_slice(&d.words());
        }
        gpu.upload(self.ptr(0), &self.staging);

        let max_pos = step.positions.iter().copied().max().unwrap_or(0) as usize;
        let bucket = context_bucket(max_pos);
        let key = GraphKey {
            kv,
            rows_per_seq: step.seqs.iter().map(|s| s.rows.len()).collect(),
            logit_rows: step.logit_rows.to_vec(),
            bucket,
            readout: step.readout.shape(),
        };
        let graphable = self.graphs_enabled
            && n_rows > 0
            && n_rows <= MAX_DECODE_ROWS
            && !step.logit_rows.is_empty();
        if graphable {
            if let Some(g) = self.graphs.get(&key) {
                tracing::trace!(
                    be = self.trace_id,
                    kv,
                    rows = n_rows,
                    bucket,
                    "step replayed"
                );
                let timeline = super::timeline::path();
                if timeline.is_some() {
                    super::timeline::reset(gpu);
                }
                if let Some(c) = &mut self.clock {
                    c.start(gpu);
                }
                g.exec.launch().expect("launching CUDA graph");
                if let Some(c) = &mut self.clock {
                    c.launched(gpu);
                }
                self.mode = Mode::Eager;
                self.current = None;
                let result = self.replayed_result(gpu, step, &key, n_slots);
                if let Some(c) = &mut self.clock {
                    c.stop();
                }
                if let Some(path) = timeline {
                    super::timeline::dump(gpu, path);
                }
                return Some(result);
            }
        }
        self.mode = if !graphable {
            Mode::Eager
        } else if self.seen.get(&key).copied().unwrap_or(0) >= 1 {
            gpu.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .expect("beginning CUDA graph capture");
            Mode::Capture(key)
        } else {
            *self.seen.entry(key).or_default() += 1;
            Mode::Eager
        };
        tracing::trace!(
            be = self.trace_id,
            kv,
            rows = n_rows,
            bucket,
            capture = matches!(self.mode, Mode::Capture(_)),
            graphs = self.graphs.len(),
            "step"
        );
        let n_splits = match self.mode {
            Mode::Eager => (max_pos + 1).div_ceil(ATTN_SPLIT),
            Mode::Capture(_) => bucket / ATTN_SPLIT,
        };
        self.current = Some(Current {
            tokens: id(step.tokens),
            positions: id(step.positions),
            write_slots: id(step.write_slots),
            logit_rows: id(step.logit_rows),
            draws: !keys.is_empty(),
            seqs: step.seqs.iter().map(seq_id).collect(),
            n_splits,
        });
        None
    }

    /// The step's device copy of `data` if it is one of the step's arrays.
    pub fn device_copy(&self, data: &[u32]) -> Option<u64> {
        let c = self.current.as_ref()?;
        let d = id(data);
        if d == c.tokens {
            Some(self.ptr(0))
        } else if d == c.positions {
            Some(self.ptr(1))
        } else if d == c.write_slots {
            Some(self.ptr(2))
        } else {
            None
        }
    }

    /// The device copy of the current step's draw keys, if it has them.
    pub fn draw_keys_copy(&self) -> Option<u64> {
        let c = self.current.as_ref()?;
        c.draws.then(|| self.ptr(6))
    }

    pub fn logit_rows_copy(&self, rows: &[usize]) -> Option<u64> {
        let c = self.current.as_ref()?;
        (id(rows) == c.logit_rows).then(|| self.ptr(4))
    }

    pub fn attention_meta(&self, seqs: &[AttnSeq<'_>]) -> Option<AttnMeta> {
        let c = self.current.as_ref()?;
        let same =
            c.seqs.len() == seqs.len() && c.seqs.iter().zip(seqs).all(|(a, b)| *a == seq_id(b));
        same.then(|| AttnMeta {
            row_slots: self.ptr(3),
            positions: self.ptr(1),
            slots: self.ptr(5),
            n_splits: c.n_splits,
        })
    }

    /// Called before the pass's output is read: ends a recording (and runs
    /// it); returns where the result to download lives.
    pub fn finish_step(&mut self, gpu: &Gpu, ptr: Option<u64>, shape: OutShape) -> u64 {
        match std::mem::replace(&mut self.mode, Mode::Eager) {
            Mode::Eager => ptr.expect("activation has no device memory"),
            Mode::Capture(key) => {
                let out = ptr.expect("recorded output has device memory");
                let t = std::time::Instant::now();
                let exec = gpu
                    .stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .expect("ending CUDA graph capture")
                    .expect("captured graph is not empty");
                exec.launch().expect("launching CUDA graph");
                tracing::trace!(
                    be = self.trace_id,
                    kv = key.kv,
                    instantiate_ms = t.elapsed().as_secs_f64() * 1e3,
                    "graph recorded"
                );
                self.graphs.insert(key, Graph { exec, out, shape });
                out
            }
        }
    }

    pub fn end(&mut self, gpu: &Gpu) {
        if matches!(self.mode, Mode::Capture(_)) {
            // A pass that never reached to_host: abandon the recording.
            let _ = gpu.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        }
        self.mode = Mode::Eager;
        self.current = None;
    }
}

/// Attention metadata for seqs outside a step layout (op tests), uploaded
/// into buffers held by `keep`.
pub fn upload_attention_meta(gpu: &Gpu, seqs: &[AttnSeq<'_>], keep: &mut Vec<DevBuf>) -> AttnMeta {
    let rows: usize = seqs.iter().map(|s| s.rows.end).max().unwrap_or(0);
    let mut row_slots = vec![0u32; rows];
    let mut positions = vec![0u32; rows];
    let mut slots = Vec::new();
    for s in seqs {
        for (i, r) in s.rows.clone().enumerate() {
            row_slots[r] = slots.len() as u32;
            positions[r] = s.positions[i];
        }
        slots.extend_from_slice(s.slots);
    }
    let mut up = |v: &[u32]| {
        let b = gpu.alloc(v.len().max(1) * 4);
        gpu.upload(b.ptr, v);
        let p = b.ptr;
        keep.push(b);
        p
    };
    let max_pos = positions.iter().copied().max().unwrap_or(0) as usize;
    AttnMeta {
        row_slots: up(&row_slots),
        positions: up(&positions),
        slots: up(&slots),
        n_splits: (max_pos + 1).div_ceil(ATTN_SPLIT),
    }
}
