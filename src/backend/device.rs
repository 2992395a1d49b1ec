//! The backend chosen at run time (`--device cpu|cuda[:N]`): one enum over
//! the backends built in, so every command, the server and the engine run
//! on any of them without being generic over it.

use std::sync::Arc;

use super::cpu::{CpuAct, CpuBackend, CpuKv, CpuWeight};
#[cfg(feature = "cuda")]
use super::cuda::{CudaAct, CudaBackend, CudaKv, CudaVector, CudaWeight};
use super::{
    Activation, AttnParams, AttnSeq, Backend, KvWrite, Logits, Readout, Result, Rope, StepLayout,
};
use crate::gguf::{GgufFile, Tensor};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda or cuda:N)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

pub enum AnyBackend {
    Cpu(CpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(Box<CudaBackend>),
}

impl AnyBackend {
    /// Open `device`; a CUDA device in a build without the `cuda` feature, or
    /// on a machine without a driver or GPU, is a one-line error.
    pub fn open(device: Device) -> std::result::Result<Self, String> {
        match device {
            Device::Cpu => Ok(AnyBackend::Cpu(CpuBackend)),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => CudaBackend::new(n)
                .map(|b| AnyBackend::Cuda(Box::new(b)))
                .map_err(|e| e.to_string()),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(
                "this tandem was built without CUDA support (build with --features cuda)".into(),
            ),
        }
    }
}

impl AnyBackend {
    /// Another backend on this one's device, for a draft model (CUDA: on the
    /// same GPU context, stream and memory pool; see `CudaBackend::beside`).
    pub fn beside(&self) -> std::result::Result<Self, String> {
        match self {
            AnyBackend::Cpu(_) => Ok(AnyBackend::Cpu(CpuBackend)),
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(b) => b
                .beside()
                .map(|b| AnyBackend::Cuda(Box::new(b)))
                .map_err(|e| e.to_string()),
        }
    }

    /// The device's measured memory bandwidth in GB/s (a GPU's copy rate);
    /// None for the CPU, whose roofline `tandem bench --roofline` measures once.
    pub fn device_bandwidth(&self) -> Option<f64> {
        match self {
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(b) => b.gpu().copy_bandwidth().ok(),
            _ => None,
        }
    }

    /// Per-kernel device time when the backend profiles (TANDEM_CUDA_PROFILE=1).
    pub fn profile_report(&self) -> Vec<(String, usize, f64)> {
        match self {
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(b) => b.gpu().profile_report(),
            _ => Vec::new(),
        }
    }
}

pub enum AnyAct {
    Cpu(CpuAct),
    #[cfg(feature = "cuda")]
    Cuda(CudaAct),
}

pub enum AnyWeight {
    Cpu(CpuWeight),
    #[cfg(feature = "cuda")]
    Cuda(CudaWeight),
}

pub enum AnyVector {
    Cpu(Vec<f32>),
    #[cfg(feature = "cuda")]
    Cuda(CudaVector),
}

pub enum AnyKv {
    Cpu(CpuKv),
    #[cfg(feature = "cuda")]
    Cuda(CudaKv),
}

/// The inner value of the variant `$v` of an `Any*` enum (a backend's own
/// values never mix with another's).
macro_rules! inner {
    ($e:expr, $v:path) => {
        match $e {
            $v(inner) => inner,
            #[allow(unreachable_patterns)]
            _ => unreachable!("a value of another backend"),
        }
    };
}

/// Run `$body` with `$b` bound to the concrete backend and `$V` naming the
/// matching variant of every `Any*` enum.
macro_rules! dispatch {
    ($self:expr, |$b:ident, $V:ident| $body:expr) => {
        match $self {
            AnyBackend::Cpu($b) => {
                #[allow(unused_imports)]
                use Cpu as $V;
                $body
            }
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda($b) => {
                #[allow(unused_imports)]
                use Cuda as $V;
                $body
            }
        }
    };
}

// The variant names, importable per backend by `dispatch!`.
#[allow(non_snake_case)]
mod variants {
    pub mod Cpu {
        pub use super::super::AnyAct::Cpu as Act;
        pub use super::super::AnyKv::Cpu as Kv;
        pub use super::super::AnyVector::Cpu as Vector;
        pub use super::super::AnyWeight::Cpu as Weight;
    }
    #[cfg(feature = "cuda")]
    pub mod Cuda {
        pub use super::super::AnyAct::Cuda as Act;
        pub use super::super::AnyKv::Cuda as Kv;
        pub use super::super::AnyVector::Cuda as Vector;
        pub use super::super::AnyWeight::Cuda as Weight;
    }
}
use variants::Cpu;
#[cfg(feature = "cuda")]
use variants::Cuda;

impl Backend for AnyBackend {
    type Act = AnyAct;
    type Weight = AnyWeight;
    type Vector = AnyVector;
    type KvCache = AnyKv;

    fn name(&self) -> String {
        dispatch!(self, |b, V| b.name())
    }

    fn ready(&self) -> Result<()> {
        dispatch!(self, |b, V| b.ready())
    }

    fn ready_all(&self) -> Result<()> {
        dispatch!(self, |b, V| b.ready_all())
    }

    fn load_weight(&self, t: &Tensor<'_>, file: &Arc<GgufFile>) -> Result<AnyWeight> {
        dispatch!(self, |b, V| b.load_weight(t, file).map(V::Weight))
    }

    fn load_table(&self, t: &Tensor<'_>, file: &Arc<GgufFile>) -> Result<AnyWeight> {
        dispatch!(self, |b, V| b.load_table(t, file).map(V::Weight))
    }

    fn load_vector(&self, t: &Tensor<'_>) -> Result<AnyVector> {
        dispatch!(self, |b, V| b.load_vector(t).map(V::Vector))
    }

    fn weight_shape(&self, w: &AnyWeight) -> (usize, usize) {
        dispatch!(self, |b, V| b.weight_shape(inner!(w, V::Weight)))
    }

    fn alloc_kv(&self, n_layers: usize, n_slots: usize, kv_dim: usize) -> AnyKv {
        dispatch!(self, |b, V| V::Kv(b.alloc_kv(n_layers, n_slots, kv_dim)))
    }

    fn act(&self, rows: usize, cols: usize) -> AnyAct {
        dispatch!(self, |b, V| V::Act(b.act(rows, cols)))
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: Vec<f32>) -> AnyAct {
        dispatch!(self, |b, V| V::Act(b.act_from_host(rows, cols, data)))
    }

    fn to_host(&self, x: &AnyAct) -> Vec<f32> {
        dispatch!(self, |b, V| b.to_host(inner!(x, V::Act)))
    }

    fn read_logits(&self, x: &AnyAct, vocab: usize, readout: &Readout) -> Logits {
        dispatch!(self, |b, V| b.read_logits(
            inner!(x, V::Act),
            vocab,
            readout
        ))
    }

    fn embed(&self, table: &AnyWeight, ids: &[u32], scale: f32, out: &mut AnyAct) {
        dispatch!(self, |b, V| b.embed(
            inner!(table, V::Weight),
            ids,
            scale,
            inner!(out, V::Act)
        ))
    }

    fn rms_norm(&self, x: &AnyAct, w: &AnyVector, eps: f32, out: &mut AnyAct) {
        dispatch!(self, |b, V| b.rms_norm(
            inner!(x, V::Act),
            inner!(w, V::Vector),
            eps,
            inner!(out, V::Act)
        ))
    }

    fn linear(&self, x: &AnyAct, w: &AnyWeight, bias: Option<&AnyVector>, out: &mut AnyAct) {
        dispatch!(self, |b, V| b.linear(
            inner!(x, V::Act),
            inner!(w, V::Weight),
            bias.map(|v| inner!(v, V::Vector)),
            inner!(out, V::Act)
        ))
    }

    fn linear_many(
        &self,
        x: &AnyAct,
        ws: &[(&AnyWeight, Option<&AnyVector>)],
        outs: &mut [&mut AnyAct],
    ) {
        dispatch!(self, |b, V| {
            let ws: Vec<_> = ws
                .iter()
                .map(|(w, v)| (inner!(*w, V::Weight), v.map(|v| inner!(v, V::Vector))))
                .collect();
            let mut outs: Vec<_> = outs.iter_mut().map(|o| inner!(&mut **o, V::Act)).collect();
            b.linear_many(inner!(x, V::Act), &ws, &mut outs)
        })
    }

    fn rope(&self, x: &mut AnyAct, head_dim: usize, positions: &[u32], rope: &Rope) {
        dispatch!(self, |b, V| b.rope(
            inner!(x, V::Act),
            head_dim,
            positions,
            rope
        ))
    }

    fn kv_store(&self, kv: &mut AnyKv, layer: usize, k: &AnyAct, v: &AnyAct, slots: &[u32]) {
        dispatch!(self, |b, V| b.kv_store(
            inner!(kv, V::Kv),
            layer,
            inner!(k, V::Act),
            inner!(v, V::Act),
            slots
        ))
    }

    fn attention(
        &self,
        q: &AnyAct,
        kv: &AnyKv,
        layer: usize,
        seqs: &[AttnSeq<'_>],
        p: &AttnParams,
        out: &mut AnyAct,
    ) {
        dispatch!(self, |b, V| b.attention(
            inner!(q, V::Act),
            inner!(kv, V::Kv),
            layer,
            seqs,
            p,
            inner!(out, V::Act)
        ))
    }

    fn gated_act(&self, gate: &mut AnyAct, up: &AnyAct, act: Activation) {
        dispatch!(self, |b, V| b.gated_act(
            inner!(gate, V::Act),
            inner!(up, V::Act),
            act
        ))
    }

    fn add(&self, x: &mut AnyAct, y: &AnyAct) {
        dispatch!(self, |b, V| b.add(inner!(x, V::Act), inner!(y, V::Act)))
    }

    fn gather_rows(&self, x: &AnyAct, rows: &[usize], out: &mut AnyAct) {
        dispatch!(self, |b, V| b.gather_rows(
            inner!(x, V::Act),
            rows,
            inner!(out, V::Act)
        ))
    }

    fn linear_add(&self, x: &AnyAct, w: &AnyWeight, acc: &mut AnyAct) {
        dispatch!(self, |b, V| b.linear_add(
            inner!(x, V::Act),
            inner!(w, V::Weight),
            inner!(acc, V::Act)
        ))
    }

    fn linear_add_norm(
        &self,
        x: &AnyAct,
        w: &AnyWeight,
        acc: &mut AnyAct,
        g: &AnyVector,
        eps: f32,
        out: &mut AnyAct,
    ) {
        dispatch!(self, |b, V| b.linear_add_norm(
            inner!(x, V::Act),
            inner!(w, V::Weight),
            inner!(acc, V::Act),
            inner!(g, V::Vector),
            eps,
            inner!(out, V::Act)
        ))
    }

    fn gated_ffn(
        &self,
        x: &AnyAct,
        gate: &AnyWeight,
        up: &AnyWeight,
        act: Activation,
        out: &mut AnyAct,
    ) {
        dispatch!(self, |b, V| b.gated_ffn(
            inner!(x, V::Act),
            inner!(gate, V::Weight),
            inner!(up, V::Weight),
            act,
            inner!(out, V::Act)
        ))
    }

    fn rope_store(
        &self,
        q: &mut AnyAct,
        k: &mut AnyAct,
        v: &AnyAct,
        kv: &mut AnyKv,
        at: &KvWrite<'_>,
    ) {
        dispatch!(self, |b, V| b.rope_store(
            inner!(q, V::Act),
            inner!(k, V::Act),
            inner!(v, V::Act),
            inner!(kv, V::Kv),
            at
        ))
    }

    fn qkv_rope_store(
        &self,
        x: &AnyAct,
        ws: &[(&AnyWeight, Option<&AnyVector>); 3],
        [q, k, v]: [&mut AnyAct; 3],
        kv: &mut AnyKv,
        at: &KvWrite<'_>,
    ) {
        dispatch!(self, |b, V| {
            let ws = ws.map(|(w, v)| (inner!(w, V::Weight), v.map(|v| inner!(v, V::Vector))));
            b.qkv_rope_store(
                inner!(x, V::Act),
                &ws,
                [inner!(q, V::Act), inner!(k, V::Act), inner!(v, V::Act)],
                inner!(kv, V::Kv),
                at,
            )
        })
    }

    fn begin_forward(&self, step: &StepLayout<'_>, kv: &AnyKv) -> Option<Logits> {
        dispatch!(self, |b, V| b.begin_forward(step, inner!(kv, V::Kv)))
    }

    fn end_forward(&self) {
        dispatch!(self, |b, V| b.end_forward())
    }

    fn wait_idle(&self) {
        dispatch!(self, |b, V| b.wait_idle())
    }

    fn prepare_for_speculation(&self) {
        dispatch!(self, |b, V| b.prepare_for_speculation())
    }

    fn allow_lookahead(&self, allowed: bool) {
        dispatch!(self, |b, V| b.allow_lookahead(allowed))
    }
}
