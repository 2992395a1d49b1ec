//! The device KV cache (f16 K and V buffers per layer) and its reuse. A
//! session's cache is kept when the session ends and handed to the next
//! session that asks for the same shape, under the same id: decode graphs
//! hold its addresses and are keyed by that id ([`super::step`]), so the
//! next request replays them instead of running its first steps eagerly and
//! recording new ones, and no `cuMemFree` (which waits for the whole device)
//! runs between requests. A cache that is let go for good has its id
//! listed, and the graphs recorded for it are destroyed at the next step.

use std::sync::{Arc, Mutex};

use super::gpu::{Gpu, GpuResult, OwnedBuf};

/// Caches kept for reuse per backend: one serves `generate`, `bench` and a
/// draft, which run one session at a time; the server holds one cache for
/// its whole life. TANDEM_CUDA_KV_REUSE=0 keeps none (A/B).
fn keep_limit() -> usize {
    match std::env::var("TANDEM_CUDA_KV_REUSE") {
        Ok(v) if v == "0" => 0,
        _ => 1,
    }
}

pub struct CudaKv {
    pub(super) id: u64,
    pub(super) kv_dim: usize,
    pub(super) n_slots: usize,
    pub(super) k: Vec<OwnedBuf>,
    pub(super) v: Vec<OwnedBuf>,
    /// Where the buffers go when the session ends; `None` for a cache
    /// that is itself kept there.
    spares: Option<Arc<Mutex<Spares>>>,
}

impl CudaKv {
    /// Kernels write at these slots unchecked: a slot past the cache is a
    /// caller's bug, caught here.
    pub(super) fn check_slots(&self, slots: &[u32]) {
        assert!(
            slots.iter().all(|&s| (s as usize) < self.n_slots),
            "slot outside the cache"
        );
    }
}

impl Drop for CudaKv {
    fn drop(&mut self) {
        let Some(spares) = self.spares.take() else {
            return;
        };
        let kept = CudaKv {
            id: self.id,
            kv_dim: self.kv_dim,
            n_slots: self.n_slots,
            k: std::mem::take(&mut self.k),
            v: std::mem::take(&mut self.v),
            spares: None,
        };
        if let Ok(mut s) = spares.lock() {
            s.keep(kept);
        };
    }
}

/// Caches kept for reuse, and the ids of caches freed since the last step.
pub struct Spares {
    kept: Vec<CudaKv>,
    limit: usize,
    freed: Vec<u64>,
    next_id: u64,
}

impl Spares {
    pub fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            kept: Vec::new(),
            limit: keep_limit(),
            freed: Vec::new(),
            next_id: 1,
        }))
    }

    fn keep(&mut self, kept: CudaKv) {
        self.kept.push(kept);
        while self.kept.len() > self.limit {
            let old = self.kept.remove(0);
            self.freed.push(old.id);
        }
    }

    /// Ids of caches freed since the last call: their graphs can go.
    pub fn take_freed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed)
    }
}

/// A zeroed cache of `n_layers` × `n_slots` × `kv_dim`: a kept one of that
/// shape if there is one, else new device memory (the kept ones freed first
/// when that fails).
pub fn alloc(
    gpu: &Gpu,
    spares: &Arc<Mutex<Spares>>,
    n_layers: usize,
    n_slots: usize,
    kv_dim: usize,
) -> GpuResult<CudaKv> {
    let bytes = n_slots * kv_dim * 2;
    let mut s = spares.lock().expect("KV spares lock");
    let fits = |k: &CudaKv| k.k.len() == n_layers && k.n_slots == n_slots && k.kv_dim == kv_dim;
    let mut kv = match s.kept.iter().position(fits) {
        Some(i) => s.kept.remove(i),
        None => {
            let fresh = || -> GpuResult<(Vec<OwnedBuf>, Vec<OwnedBuf>)> {
                let layers = || {
                    (0..n_layers)
                        .map(|_| gpu.alloc_owned(bytes))
                        .collect::<GpuResult<Vec<_>>>()
                };
                Ok((layers()?, layers()?))
            };
            let (k, v) = match fresh() {
                Ok(kv) => kv,
                Err(_) if !s.kept.is_empty() => {
                    let ids: Vec<u64> = s.kept.drain(..).map(|k| k.id).collect();
                    s.freed.extend(ids);
                    fresh()?
                }
                Err(e) => return Err(e),
            };
            let id = s.next_id;
            s.next_id += 1;
            CudaKv {
                id,
                kv_dim,
                n_slots,
                k,
                v,
                spares: None,
            }
        }
    };
    drop(s);
    // Attention reads only the slots a sequence wrote, but a cache that
    // starts at zero keeps a stray read finite.
    for b in kv.k.iter().chain(&kv.v) {
        gpu.zero(b.ptr, bytes);
    }
    kv.spares = Some(spares.clone());
    Ok(kv)
}
