//! The CPU backend: f32 activations in plain vectors, weights read in place
//! from the memory-mapped file, work spread over our own
//! thread pool ([`pool`]). Kernels live
//! in [`matmul`], [`attention`] and [`ops`]; each op is tested against an
//! f64 reference in `tests`.

mod arena;
mod attention;
mod matmul;
mod ops;
pub mod pool;
#[cfg(test)]
mod tests;
pub mod variant;

use std::sync::Arc;

use super::{Activation, AttnParams, AttnSeq, Backend, BackendError, Result, Rope};
use crate::gguf::{GgufFile, Tensor};
use crate::quant::grouped::GROUP_ROWS;
use crate::quant::{dequantize_row, group_rows, has_grouped_kernel, GgmlType};

#[derive(Debug, Clone)]
pub struct CpuAct {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl CpuAct {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A weight matrix left in the mapped file, or with its rows grouped eight
/// at a time for the single-token kernels.
pub struct CpuWeight {
    file: Arc<GgufFile>,
    start: usize,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The first [`Self::grouped_rows`] rows in `quant::grouped`'s layout,
    /// which the products read instead of the file (whose pages for them
    /// are released). The file still serves single rows.
    groups: Option<arena::Piece>,
}

/// `TANDEM_GROUPED=0` leaves every weight in the file's layout (for
/// side-by-side measurements; the results are the same bits).
fn grouping_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TANDEM_GROUPED").map_or(true, |v| v != "0"))
}

impl CpuWeight {
    /// How many rows (from the first) [`Self::groups`] holds.
    pub fn grouped_rows(&self) -> usize {
        match &self.groups {
            Some(g) => g.bytes().len() / self.row_bytes(),
            None => 0,
        }
    }

    /// The grouped rows ([`Self::grouped_rows`] of them).
    pub fn groups(&self) -> Option<&[u8]> {
        self.groups.as_ref().map(arena::Piece::bytes)
    }

    /// The first `n_rows` rows (a multiple of [`GROUP_ROWS`]) grouped, in
    /// memory of their own ([`arena`]: huge pages, which the file's mapping
    /// cannot have). The file's pages are released a few MiB at a time as
    /// their rows are copied, so that a large tensor is never resident twice.
    fn grouped(&self, n_rows: usize) -> std::io::Result<arena::Piece> {
        let rb = self.row_bytes();
        let mut piece = arena::alloc(n_rows * rb)?;
        let groups = piece.bytes_mut();
        let per_piece = ((4 << 20) / (GROUP_ROWS * rb)).max(1) * GROUP_ROWS;
        for r0 in (0..n_rows).step_by(per_piece) {
            let n = per_piece.min(n_rows - r0);
            let (from, to) = (r0 * rb, (r0 + n) * rb);
            group_rows(self.ty, &self.bytes()[from..to], n, &mut groups[from..to]);
            self.file.release(self.start + from, to - from);
        }
        Ok(piece)
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    pub fn bytes(&self) -> &[u8] {
        let len = self.row_bytes() * self.rows;
        &self.file.mapped()[self.start..self.start + len]
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes()[r * rb..(r + 1) * rb]
    }
}

pub struct CpuKv {
    kv_dim: usize,
    n_slots: usize,
    /// Per layer: keys then values, each [n_slots, kv_dim].
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Act = CpuAct;
    type Weight = CpuWeight;
    type Vector = Vec<f32>;
    type KvCache = CpuKv;

    fn name(&self) -> String {
        format!("cpu ({} threads)", pool::global().threads())
    }

    fn ready(&self) -> Result<()> {
        arena::release_unused_tail();
        Ok(())
    }

    fn load_weight(&self, t: &Tensor<'_>, file: &Arc<GgufFile>) -> Result<CpuWeight> {
        let mut w = self.load_table(t, file)?;
        let grouped = w.rows / GROUP_ROWS * GROUP_ROWS;
        if grouping_enabled() && has_grouped_kernel(w.ty) && grouped > 0 {
            // Without memory for the copy the weight stays as it is.
            if let Ok(groups) = w.grouped(grouped) {
                w.groups = Some(groups);
            }
        }
        Ok(w)
    }

    fn load_table(&self, t: &Tensor<'_>, file: &Arc<GgufFile>) -> Result<CpuWeight> {
        let info = t.info;
        if info.dims.len() > 2 {
            return Err(BackendError::BadWeight {
                name: info.name.clone(),
                problem: format!("expected a matrix, got dims {:?}", info.dims),
            });
        }
        if info.ty.is_quantized() && !info.row_len().is_multiple_of(crate::quant::act::ACT_BLOCK) {
            return Err(BackendError::BadWeight {
                name: info.name.clone(),
                problem: format!("row length {} is not a multiple of 32", info.row_len()),
            });
        }
        Ok(CpuWeight {
            file: file.clone(),
            start: (file.header.data_offset + info.offset) as usize,
            ty: info.ty,
            rows: info.n_rows(),
            cols: info.row_len(),
            groups: None,
        })
    }

    fn load_vector(&self, t: &Tensor<'_>) -> Result<Vec<f32>> {
        Ok(t.to_f32())
    }

    fn weight_shape(&self, w: &CpuWeight) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn alloc_kv(&self, n_layers: usize, n_slots: usize, kv_dim: usize) -> CpuKv {
        CpuKv {
            kv_dim,
            n_slots,
            k: (0..n_layers).map(|_| vec![0.0; n_slots * kv_dim]).collect(),
            v: (0..n_layers).map(|_| vec![0.0; n_slots * kv_dim]).collect(),
        }
    }

    fn act(&self, rows: usize, cols: usize) -> CpuAct {
        CpuAct {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: Vec<f32>) -> CpuAct {
        assert_eq!(data.len(), rows * cols);
        CpuAct { rows, cols, data }
    }

    fn to_host(&self, x: &CpuAct) -> Vec<f32> {
        x.data.clone()
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], scale: f32, out: &mut CpuAct) {
        reshape(out, ids.len(), table.cols);
        for (o, &id) in out.data.chunks_mut(table.cols).zip(ids) {
            dequantize_row(table.ty, table.row(id as usize), o);
            if scale != 1.0 {
                o.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    fn rms_norm(&self, x: &CpuAct, w: &Vec<f32>, eps: f32, out: &mut CpuAct) {
        reshape(out, x.rows, x.cols);
        ops::rms_norm(&x.data, w, eps, &mut out.data);
    }

    fn linear(&self, x: &CpuAct, w: &CpuWeight, bias: Option<&Vec<f32>>, out: &mut CpuAct) {
        self.linear_many(x, &[(w, bias)], &mut [out]);
    }

    fn linear_many(
        &self,
        x: &CpuAct,
        ws: &[(&CpuWeight, Option<&Vec<f32>>)],
        outs: &mut [&mut CpuAct],
    ) {
        for ((w, _), out) in ws.iter().zip(outs.iter_mut()) {
            assert_eq!(
                x.cols, w.cols,
                "linear: input width {} vs weight width {}",
                x.cols, w.cols
            );
            reshape(out, x.rows, w.rows);
        }
        let weights: Vec<&CpuWeight> = ws.iter().map(|(w, _)| *w).collect();
        let mut datas: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.data.as_mut_slice()).collect();
        matmul::matmul_many(x, &weights, &mut datas);
        for ((w, b), out) in ws.iter().zip(outs.iter_mut()) {
            if let Some(b) = b {
                for row in out.data.chunks_mut(w.rows) {
                    row.iter_mut().zip(b.iter()).for_each(|(o, b)| *o += b);
                }
            }
        }
    }

    fn rope(&self, x: &mut CpuAct, head_dim: usize, positions: &[u32], rope: &Rope) {
        ops::rope(&mut x.data, x.cols, head_dim, positions, rope);
    }

    fn kv_store(&self, kv: &mut CpuKv, layer: usize, k: &CpuAct, v: &CpuAct, slots: &[u32]) {
        let d = kv.kv_dim;
        for (r, &s) in slots.iter().enumerate() {
            let s = s as usize;
            assert!(s < kv.n_slots, "slot {s} outside the cache");
            kv.k[layer][s * d..(s + 1) * d].copy_from_slice(k.row(r));
            kv.v[layer][s * d..(s + 1) * d].copy_from_slice(v.row(r));
        }
    }

    fn attention(
        &self,
        q: &CpuAct,
        kv: &CpuKv,
        layer: usize,
        seqs: &[AttnSeq<'_>],
        p: &AttnParams,
        out: &mut CpuAct,
    ) {
        reshape(out, q.rows, p.n_heads * p.head_dim);
        attention::attention(
            q,
            &kv.k[layer],
            &kv.v[layer],
            kv.kv_dim,
            seqs,
            p,
            &mut out.data,
        );
    }

    fn gated_act(&self, gate: &mut CpuAct, up: &CpuAct, act: Activation) {
        ops::gated_act(&mut gate.data, &up.data, act);
    }

    fn add(&self, x: &mut CpuAct, y: &CpuAct) {
        assert_eq!(x.data.len(), y.data.len());
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
    }

    fn gather_rows(&self, x: &CpuAct, rows: &[usize], out: &mut CpuAct) {
        reshape(out, rows.len(), x.cols);
        for (o, &r) in out.data.chunks_mut(x.cols).zip(rows) {
            o.copy_from_slice(x.row(r));
        }
    }
}

fn reshape(a: &mut CpuAct, rows: usize, cols: usize) {
    a.rows = rows;
    a.cols = cols;
    a.data.resize(rows * cols, 0.0);
}
