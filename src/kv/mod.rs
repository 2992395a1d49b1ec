//! The paged KV cache's bookkeeping: a pool of fixed-size blocks and, per
//! sequence, a block table. The backend owns the memory the blocks index
//! (`Backend::KvCache`); this module only decides which block holds which
//! positions. A sequence's blocks go back to the pool when its [`SeqBlocks`]
//! is dropped or truncated, so a cancelled request cannot leak cache.
//!
//! Prefix caching: a full block is named by a chained hash of its tokens
//! (and of everything before it). Blocks are reference-counted so sequences
//! with the same prefix share them; a block whose last user leaves keeps its
//! name in a least-recently-freed list and is only evicted when the pool
//! needs room, so a later request with the same prefix finds it.

mod pool;

pub use pool::{BlockPool, PoolStats};

use std::sync::Arc;

/// Tokens per KV block.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error("KV cache is full: {needed} more blocks needed, {free} free of {total}")]
    OutOfBlocks {
        needed: usize,
        free: usize,
        total: usize,
    },
}

/// Chained hash of one block's tokens after the block named `prev`.
pub fn block_hash(prev: u64, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: stable within a process, which is all a
    // cache in memory needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// One sequence's block table and the number of positions it holds.
#[derive(Debug)]
pub struct SeqBlocks {
    pool: Arc<BlockPool>,
    blocks: Vec<u32>,
    len: usize,
    /// Names of the leading full blocks registered (or found) in the cache.
    hashes: Vec<u64>,
}

impl SeqBlocks {
    pub fn new(pool: Arc<BlockPool>) -> Self {
        Self {
            pool,
            blocks: Vec::new(),
            len: 0,
            hashes: Vec::new(),
        }
    }

    /// A sequence that starts with every cached full block of `tokens`'
    /// prefix. At least one token is left uncached, so the caller always has
    /// a position to compute logits from. Returns the sequence; its `len()`
    /// is the number of positions reused.
    pub fn with_prefix(pool: Arc<BlockPool>, tokens: &[u32]) -> Self {
        let bs = pool.block_size();
        let mut s = Self::new(pool);
        let reusable = tokens.len().saturating_sub(1) / bs;
        let mut prev = 0u64;
        for b in 0..reusable {
            let h = block_hash(prev, &tokens[b * bs..(b + 1) * bs]);
            match s.pool.acquire_cached(h) {
                Some(block) => {
                    s.blocks.push(block);
                    s.hashes.push(h);
                    prev = h;
                }
                None => break,
            }
        }
        s.len = s.blocks.len() * bs;
        s
    }

    /// Positions currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn block_table(&self) -> &[u32] {
        &self.blocks
    }

    /// Make room for positions up to `new_len` (exclusive) and count them as held.
    pub fn grow_to(&mut self, new_len: usize) -> Result<(), KvError> {
        let bs = self.pool.block_size();
        let need = new_len.div_ceil(bs).saturating_sub(self.blocks.len());
        if need > 0 {
            let got = self.pool.take(need)?;
            self.blocks.extend(got);
        }
        self.len = self.len.max(new_len);
        Ok(())
    }

    /// Name the full blocks among the first `computed` positions of
    /// `tokens` so later sequences can reuse them.
    pub fn register_full_blocks(&mut self, tokens: &[u32], computed: usize) {
        let bs = self.pool.block_size();
        let full = computed.min(tokens.len()) / bs;
        while self.hashes.len() < full {
            let b = self.hashes.len();
            let prev = self.hashes.last().copied().unwrap_or(0);
            let h = block_hash(prev, &tokens[b * bs..(b + 1) * bs]);
            self.pool.register(self.blocks[b], h);
            self.hashes.push(h);
        }
    }

    /// Forget positions from `new_len` on; whole blocks past it go back to the
    /// pool at once (speculative rollback, a chat turn rewritten). A block
    /// cut into is no longer full, so it loses its cache name.
    pub fn truncate(&mut self, new_len: usize) {
        if new_len >= self.len {
            return;
        }
        let bs = self.pool.block_size();
        self.len = new_len;
        let keep = new_len.div_ceil(bs);
        let freed: Vec<u32> = self.blocks.drain(keep..).collect();
        self.pool.release(freed);
        let named = new_len / bs;
        if self.hashes.len() > named {
            for &b in &self.blocks[named..] {
                self.pool.unregister(b);
            }
            self.hashes.truncate(named);
        }
    }

    /// Flat slot index (block * block_size + offset) of position `pos`.
    pub fn slot(&self, pos: usize) -> u32 {
        let bs = self.pool.block_size();
        self.blocks[pos / bs] * bs as u32 + (pos % bs) as u32
    }
}

impl Drop for SeqBlocks {
    fn drop(&mut self) {
        self.pool.release(self.blocks.drain(..));
    }
}

#[cfg(test)]
mod tests;
