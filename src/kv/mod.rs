//! The paged KV cache's bookkeeping: a pool of fixed-size blocks and, per
//! sequence, a block table. The backend owns the memory the blocks index
//! (`Backend::KvCache`); this module only decides which block holds which
//! positions. A sequence's blocks go back to the pool when its [`SeqBlocks`]
//! is dropped or truncated, so a cancelled request cannot leak cache.

use std::sync::{Arc, Mutex};

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

/// Hands out and takes back block ids. Nothing else.
#[derive(Debug)]
pub struct BlockPool {
    free: Mutex<Vec<u32>>,
    n_blocks: usize,
    block_size: usize,
}

impl BlockPool {
    pub fn new(n_blocks: usize, block_size: usize) -> Arc<Self> {
        // Reverse so that low ids are handed out first (easier to read in tests).
        let free = (0..n_blocks as u32).rev().collect();
        Arc::new(Self {
            free: Mutex::new(free),
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
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        // A panic while holding this lock cannot leave the free list half
        // updated (every critical section is a single push/pop loop), so a
        // poisoned lock is still safe to use.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, n: usize) -> Result<Vec<u32>, KvError> {
        let mut free = self.lock();
        if free.len() < n {
            return Err(KvError::OutOfBlocks {
                needed: n,
                free: free.len(),
                total: self.n_blocks,
            });
        }
        let at = free.len() - n;
        Ok(free.split_off(at).into_iter().rev().collect())
    }

    fn give_back(&self, blocks: impl IntoIterator<Item = u32>) {
        self.lock().extend(blocks);
    }
}

/// One sequence's block table and the number of positions it holds.
#[derive(Debug)]
pub struct SeqBlocks {
    pool: Arc<BlockPool>,
    blocks: Vec<u32>,
    len: usize,
}

impl SeqBlocks {
    pub fn new(pool: Arc<BlockPool>) -> Self {
        Self {
            pool,
            blocks: Vec::new(),
            len: 0,
        }
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
        let bs = self.pool.block_size;
        let need = new_len.div_ceil(bs).saturating_sub(self.blocks.len());
        if need > 0 {
            let got = self.pool.take(need)?;
            self.blocks.extend(got);
        }
        self.len = self.len.max(new_len);
        Ok(())
    }

    /// Forget positions from `new_len` on; whole blocks past it go back to the
    /// pool at once (speculative rollback, a chat turn rewritten).
    pub fn truncate(&mut self, new_len: usize) {
        if new_len >= self.len {
            return;
        }
        self.len = new_len;
        let keep = new_len.div_ceil(self.pool.block_size);
        let freed: Vec<u32> = self.blocks.drain(keep..).collect();
        self.pool.give_back(freed);
    }

    /// Flat slot index (block * block_size + offset) of position `pos`.
    pub fn slot(&self, pos: usize) -> u32 {
        let bs = self.pool.block_size;
        self.blocks[pos / bs] * bs as u32 + (pos % bs) as u32
    }
}

impl Drop for SeqBlocks {
    fn drop(&mut self) {
        self.pool.give_back(self.blocks.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_and_returned_on_drop() {
        let pool = BlockPool::new(4, 16);
        {
            let mut a = SeqBlocks::new(pool.clone());
            a.grow_to(17).unwrap();
            assert_eq!(a.block_table(), &[0, 1]);
            assert_eq!(pool.n_free(), 2);
            assert_eq!(a.slot(16), 16);
            assert_eq!(a.slot(3), 3);
        }
        assert_eq!(pool.n_free(), 4);
    }

    #[test]
    fn running_out_is_an_error_not_a_panic() {
        let pool = BlockPool::new(2, 4);
        let mut a = SeqBlocks::new(pool.clone());
        let err = a.grow_to(9).unwrap_err();
        assert_eq!(
            err,
            KvError::OutOfBlocks {
                needed: 3,
                free: 2,
                total: 2
            }
        );
        assert_eq!(a.len(), 0);
        assert_eq!(pool.n_free(), 2);
    }

    #[test]
    fn truncate_frees_whole_blocks_only() {
        let pool = BlockPool::new(8, 4);
        let mut a = SeqBlocks::new(pool.clone());
        a.grow_to(10).unwrap(); // 3 blocks
        a.truncate(5); // keeps 2 blocks
        assert_eq!(a.len(), 5);
        assert_eq!(a.block_table().len(), 2);
        assert_eq!(pool.n_free(), 6);
        a.truncate(0);
        assert_eq!(pool.n_free(), 8);
        a.grow_to(4).unwrap();
        assert_eq!(a.block_table().len(), 1);
    }

    #[test]
    fn slots_follow_the_block_table() {
        let pool = BlockPool::new(4, 4);
        let mut a = SeqBlocks::new(pool.clone());
        let mut b = SeqBlocks::new(pool.clone());
        a.grow_to(1).unwrap(); // block 0
        b.grow_to(1).unwrap(); // block 1
        a.grow_to(5).unwrap(); // block 2
        assert_eq!(a.block_table(), &[0, 2]);
        assert_eq!(a.slot(4), 8);
        assert_eq!(b.slot(0), 4);
    }
}
