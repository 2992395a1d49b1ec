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

fn computed(pool: &Arc<BlockPool>, tokens: &[u32]) -> SeqBlocks {
    let mut s = SeqBlocks::with_prefix(pool.clone(), tokens);
    s.grow_to(tokens.len()).unwrap();
    s.register_full_blocks(tokens, tokens.len());
    s
}

#[test]
fn a_shared_prefix_reuses_full_blocks_and_leaves_one_token_to_compute() {
    let pool = BlockPool::with_caching(16, 4, true);
    let a_tokens: Vec<u32> = (0..10).collect();
    let a = computed(&pool, &a_tokens);
    // Same first 8 tokens (two full blocks), different tail.
    let mut b_tokens: Vec<u32> = (0..8).collect();
    b_tokens.extend([100, 101, 102]);
    let b = SeqBlocks::with_prefix(pool.clone(), &b_tokens);
    assert_eq!(b.len(), 8);
    assert_eq!(b.block_table(), &a.block_table()[..2]);
    // An identical prompt of exactly two blocks reuses only one: the last
    // token must be computed for its logits.
    let c = SeqBlocks::with_prefix(pool.clone(), &a_tokens[..8]);
    assert_eq!(c.len(), 4);
    // Different first block: nothing reused.
    let d = SeqBlocks::with_prefix(pool.clone(), &[9, 9, 9, 9, 9]);
    assert_eq!(d.len(), 0);
}

#[test]
fn freed_named_blocks_survive_until_evicted_least_recent_first() {
    let pool = BlockPool::with_caching(4, 4, true);
    let t1: Vec<u32> = (0..9).collect(); // 2 full blocks + 1
    drop(computed(&pool, &t1));
    assert_eq!(
        pool.stats(),
        PoolStats {
            total: 4,
            free: 4,
            cached: 2
        }
    );
    let again = SeqBlocks::with_prefix(pool.clone(), &t1);
    assert_eq!(again.len(), 8, "reused after its first user left");
    drop(again);
    // A different sequence needing all 4 blocks evicts the cached ones.
    let mut big = SeqBlocks::new(pool.clone());
    big.grow_to(16).unwrap();
    drop(big);
    assert_eq!(
        SeqBlocks::with_prefix(pool.clone(), &t1).len(),
        0,
        "evicted"
    );
}

#[test]
fn without_caching_nothing_is_reused() {
    let pool = BlockPool::new(8, 4);
    let t: Vec<u32> = (0..9).collect();
    drop(computed(&pool, &t));
    assert_eq!(SeqBlocks::with_prefix(pool.clone(), &t).len(), 0);
}

#[test]
fn shared_blocks_return_only_when_the_last_user_leaves() {
    let pool = BlockPool::with_caching(8, 4, true);
    let t: Vec<u32> = (0..9).collect();
    let a = computed(&pool, &t);
    let b = SeqBlocks::with_prefix(pool.clone(), &t);
    assert_eq!(pool.n_free(), 5);
    drop(a);
    assert_eq!(
        pool.n_free(),
        6,
        "a's private third block returns; the shared two stay with b"
    );
    drop(b);
    assert_eq!(pool.n_free(), 8);
}

#[test]
fn truncating_into_a_named_block_unnames_it() {
    let pool = BlockPool::with_caching(8, 4, true);
    let t: Vec<u32> = (0..9).collect();
    let mut a = computed(&pool, &t);
    a.truncate(6);
    drop(a);
    assert_eq!(
        SeqBlocks::with_prefix(pool.clone(), &t).len(),
        4,
        "only the first block is still named"
    );
}
