//! The block pool: hands out block ids, counts their users, and keeps freed
//! blocks that hold a named (cached) prefix in least-recently-freed order
//! until their space is needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::KvError;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    /// Blocks with no user (including cached ones, which are reclaimable).
    pub free: usize,
    /// Free blocks that still hold a named prefix.
    pub cached: usize,
}

#[derive(Debug)]
struct Inner {
    refs: Vec<u32>,
    /// Free blocks by the time they were freed: first = evicted first.
    free: BTreeMap<u64, u32>,
    /// When each free block was freed (its key in `free`).
    freed_at: Vec<u64>,
    clock: u64,
    name: Vec<Option<u64>>,
    by_name: HashMap<u64, u32>,
    caching: bool,
}

#[derive(Debug)]
pub struct BlockPool {
    inner: Mutex<Inner>,
    n_blocks: usize,
    block_size: usize,
}

impl BlockPool {
    pub fn new(n_blocks: usize, block_size: usize) -> Arc<Self> {
        Self::with_caching(n_blocks, block_size, false)
    }

    /// A pool that keeps named blocks for reuse when `caching`.
    pub fn with_caching(n_blocks: usize, block_size: usize, caching: bool) -> Arc<Self> {
        let free = (0..n_blocks as u32).map(|b| (b as u64, b)).collect();
        Arc::new(Self {
            inner: Mutex::new(Inner {
                refs: vec![0; n_blocks],
                free,
                freed_at: (0..n_blocks as u64).collect(),
                clock: n_blocks as u64,
                name: vec![None; n_blocks],
                by_name: HashMap::new(),
                caching,
            }),
            n_blocks,
            block_size,
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    pub fn n_free(&self) -> usize {
        self.lock().free.len()
    }

    pub fn stats(&self) -> PoolStats {
        let g = self.lock();
        PoolStats {
            total: self.n_blocks,
            free: g.free.len(),
            cached: g
                .free
                .values()
                .filter(|&&b| g.name[b as usize].is_some())
                .count(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before it can
        // panic, so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn take(&self, n: usize) -> Result<Vec<u32>, KvError> {
        let mut g = self.lock();
        if g.free.len() < n {
            return Err(KvError::OutOfBlocks {
                needed: n,
                free: g.free.len(),
                total: self.n_blocks,
            });
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, b) = g.free.pop_first().expect("counted above");
            if let Some(h) = g.name[b as usize].take() {
                g.by_name.remove(&h); // evicted
            }
            g.refs[b as usize] = 1;
            out.push(b);
        }
        Ok(out)
    }

    pub(super) fn release(&self, blocks: impl IntoIterator<Item = u32>) {
        let mut g = self.lock();
        for b in blocks {
            let r = &mut g.refs[b as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                if !g.caching {
                    if let Some(h) = g.name[b as usize].take() {
                        g.by_name.remove(&h);
                    }
                }
                g.clock += 1;
                let t = g.clock;
                g.freed_at[b as usize] = t;
                g.free.insert(t, b);
            }
        }
    }

    /// The block named `h`, with one more user, if the cache has it.
    pub(super) fn acquire_cached(&self, h: u64) -> Option<u32> {
        let mut g = self.lock();
        if !g.caching {
            return None;
        }
        let b = *g.by_name.get(&h)?;
        if g.refs[b as usize] == 0 {
            let t = g.freed_at[b as usize];
            g.free.remove(&t);
        }
        g.refs[b as usize] += 1;
        Some(b)
    }

    pub(super) fn register(&self, block: u32, h: u64) {
        let mut g = self.lock();
        if !g.caching || g.name[block as usize].is_some() {
            return;
        }
        // Another block may already hold this prefix (two requests computed
        // it at once); the first name wins, this block stays anonymous.
        if let std::collections::hash_map::Entry::Vacant(e) = g.by_name.entry(h) {
            e.insert(block);
            g.name[block as usize] = Some(h);
        }
    }

    pub(super) fn unregister(&self, block: u32) {
        let mut g = self.lock();
        if let Some(h) = g.name[block as usize].take() {
            g.by_name.remove(&h);
        }
    }
}
