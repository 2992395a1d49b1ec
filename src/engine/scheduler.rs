//! Which sequences run this step, and how many of their tokens.
//!
//! Every step: sequences already running get their pending tokens first
//! (a decode is one token; a prompt being read in chunks continues), oldest
//! first, so a long prompt never starves the decodes; then waiting sequences
//! are admitted in arrival order while the step's token budget and
//! `max_seqs` allow (chunked prefill). KV blocks are taken as positions are
//! scheduled; when the pool is empty the youngest running sequence is
//! preempted: its blocks go back and it waits, to be recomputed later.
//! A sequence (re)admitted starts from every cached block of its prefix
//! when the pool caches prefixes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::kv::{BlockPool, SeqBlocks};

#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Sequences running at once.
    pub max_seqs: usize,
    /// Tokens per forward pass (all sequences together).
    pub step_tokens: usize,
}

/// A sequence's tokens (prompt plus generated so far).
pub trait HasTokens {
    fn tokens(&self) -> &[u32];
    fn n_tokens(&self) -> usize {
        self.tokens().len()
    }
    /// Guesses this sequence would like scored after its pending token
    /// (speculative decoding); granted only when the step has room.
    fn drafts_wanted(&self) -> usize {
        0
    }
}

pub struct Entry<T> {
    pub id: u64,
    pub seq: T,
    /// Leading tokens whose K/V are in the cache.
    pub n_computed: usize,
    pub kv: Option<SeqBlocks>,
    /// Positions found in the prefix cache when first admitted.
    pub cached_at_admission: Option<usize>,
}

impl<T: HasTokens> Entry<T> {
    /// Known tokens whose K/V are not computed yet.
    pub fn pending(&self) -> usize {
        self.seq.n_tokens() - self.n_computed
    }

    /// Decoding: only the last chosen token waits to be read.
    pub fn is_decoding(&self) -> bool {
        self.pending() == 1
    }
}

/// One sequence's share of a step: tokens `start..start + len`, of which
/// the last `drafts` are guesses that follow the sequence's known tokens
/// (room for them is reserved in the KV cache; the engine supplies them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub id: u64,
    pub start: usize,
    pub len: usize,
    pub drafts: usize,
}

pub struct Scheduler<T> {
    cfg: SchedulerConfig,
    pool: Arc<BlockPool>,
    pub waiting: VecDeque<Entry<T>>,
    pub running: Vec<Entry<T>>,
    next_id: u64,
    pub preemptions: u64,
}

impl<T: HasTokens> Scheduler<T> {
    pub fn new(cfg: SchedulerConfig, pool: Arc<BlockPool>) -> Self {
        Self {
            cfg,
            pool,
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_id: 0,
            preemptions: 0,
        }
    }

    pub fn pool(&self) -> &Arc<BlockPool> {
        &self.pool
    }

    pub fn add(&mut self, seq: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Entry {
            id,
            seq,
            n_computed: 0,
            kv: None,
            cached_at_admission: None,
        });
        id
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Entry<T>> {
        self.running.iter_mut().find(|e| e.id == id)
    }

    /// Remove a sequence (finished or cancelled) wherever it is; its blocks
    /// return to the pool.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        if let Some(i) = self.running.iter().position(|e| e.id == id) {
            return Some(self.running.remove(i).seq);
        }
        let i = self.waiting.iter().position(|e| e.id == id)?;
        self.waiting.remove(i).map(|e| e.seq)
    }

    /// Blocks a sequence of `n` tokens needs.
    fn blocks_for(&self, n: usize) -> usize {
        n.div_ceil(self.pool.block_size())
    }

    /// Whether a sequence of `n` tokens could ever fit in the cache.
    pub fn fits(&self, n: usize) -> bool {
        self.blocks_for(n) <= self.pool.n_blocks()
    }

    pub fn schedule(&mut self) -> Vec<Work> {
        let mut budget = self.cfg.step_tokens;
        let mut plan: Vec<Work> = Vec::new();
        // Oldest first: ids grow with arrival.
        self.running.sort_by_key(|e| e.id);
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let e = &self.running[i];
            let need = e.pending();
            if need == 0 {
                i += 1;
                continue;
            }
            let take = need.min(budget);
            let target = e.n_computed + take;
            // Guesses ride along with a decode when the budget and free
            // blocks allow; they never preempt anyone.
            let wanted = if e.is_decoding() {
                e.seq.drafts_wanted()
            } else {
                0
            };
            let kv = self.running[i]
                .kv
                .get_or_insert_with(|| SeqBlocks::new(self.pool.clone()));
            let drafts = if wanted > 0 && budget > wanted && kv.grow_to(target + wanted).is_ok() {
                wanted
            } else {
                0
            };
            if drafts > 0 || kv.grow_to(target).is_ok() {
                let e = &self.running[i];
                plan.push(Work {
                    id: e.id,
                    start: e.n_computed,
                    len: take + drafts,
                    drafts,
                });
                budget -= take + drafts;
                i += 1;
                continue;
            }
            // Out of blocks: preempt the youngest (possibly this one) and retry.
            let victim = self.running.len() - 1;
            let vid = self.running[victim].id;
            if let Some(p) = plan.iter().position(|w| w.id == vid) {
                budget += plan.remove(p).len;
            }
            self.preempt(victim);
        }
        while budget > 0 && self.running.len() < self.cfg.max_seqs {
            let Some(front) = self.waiting.front_mut() else {
                break;
            };
            let kv = SeqBlocks::with_prefix(self.pool.clone(), front.seq.tokens());
            let cached = kv.len();
            let take = (front.seq.n_tokens() - cached).min(budget);
            let kv = front.kv.insert(kv);
            if kv.grow_to(cached + take).is_err() {
                front.kv = None;
                break;
            }
            let mut e = self.waiting.pop_front().expect("front exists");
            e.n_computed = cached;
            e.cached_at_admission.get_or_insert(cached);
            plan.push(Work {
                id: e.id,
                start: cached,
                len: take,
                drafts: 0,
            });
            budget -= take;
            self.running.push(e);
        }
        plan
    }

    fn preempt(&mut self, idx: usize) {
        let mut e = self.running.remove(idx);
        e.kv = None;
        e.n_computed = 0;
        self.preemptions += 1;
        self.waiting.push_front(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(Vec<u32>);
    impl HasTokens for S {
        fn tokens(&self) -> &[u32] {
            &self.0
        }
    }

    /// A sequence of n distinct tokens.
    fn seq(n: usize) -> S {
        S((0..n as u32).collect())
    }

    fn sched(blocks: usize, max_seqs: usize, step: usize) -> Scheduler<S> {
        Scheduler::new(
            SchedulerConfig {
                max_seqs,
                step_tokens: step,
            },
            BlockPool::new(blocks, 4),
        )
    }

    /// Pretend the step ran: computed positions advance, one token is added
    /// to sequences that reached their end.
    fn run(s: &mut Scheduler<S>, plan: &[Work]) {
        for w in plan {
            let e = s.get_mut(w.id).unwrap();
            e.n_computed += w.len;
            if e.n_computed == e.seq.0.len() {
                e.seq.0.push(7);
            }
        }
    }

    #[test]
    fn long_prompts_are_chunked_and_decodes_go_first() {
        let mut s = sched(100, 8, 8);
        let a = s.add(seq(3));
        let plan = s.schedule();
        assert_eq!(
            plan,
            [Work {
                id: a,
                start: 0,
                len: 3,
                drafts: 0
            }]
        );
        run(&mut s, &plan);
        let b = s.add(seq(20)); // a long prompt
        let plan = s.schedule();
        assert_eq!(
            plan,
            [
                Work {
                    id: a,
                    start: 3,
                    len: 1,
                    drafts: 0
                },
                Work {
                    id: b,
                    start: 0,
                    len: 7,
                    drafts: 0
                }
            ]
        );
        run(&mut s, &plan);
        let plan = s.schedule();
        assert_eq!(
            plan,
            [
                Work {
                    id: a,
                    start: 4,
                    len: 1,
                    drafts: 0
                },
                Work {
                    id: b,
                    start: 7,
                    len: 7,
                    drafts: 0
                }
            ]
        );
    }

    #[test]
    fn max_seqs_limits_admission() {
        let mut s = sched(100, 2, 64);
        for _ in 0..3 {
            s.add(seq(2));
        }
        let plan = s.schedule();
        assert_eq!(plan.len(), 2);
        assert_eq!(s.waiting.len(), 1);
        let id = plan[0].id;
        s.remove(id);
        assert_eq!(
            s.schedule().len(),
            2,
            "the waiting one joins as soon as a slot frees"
        );
    }

    #[test]
    fn out_of_blocks_preempts_the_youngest_and_everyone_finishes() {
        // 4 blocks of 4 tokens; two sequences that each grow to 12 tokens.
        let mut s = sched(4, 4, 64);
        let a = s.add(seq(6));
        let b = s.add(seq(6));
        let mut done = Vec::new();
        for _ in 0..200 {
            let plan = s.schedule();
            run(&mut s, &plan);
            for id in [a, b] {
                if s.running.iter().any(|e| e.id == id && e.seq.0.len() >= 12) {
                    s.remove(id);
                    done.push(id);
                }
            }
            if s.is_idle() {
                break;
            }
        }
        assert_eq!(
            done,
            [a, b],
            "the older one finishes first; the preempted one is recomputed"
        );
        assert!(s.preemptions >= 1);
        assert_eq!(s.pool().n_free(), 4, "all blocks returned");
    }

    #[test]
    fn admission_starts_from_the_cached_prefix() {
        let pool = BlockPool::with_caching(32, 4, true);
        let mut s = Scheduler::new(
            SchedulerConfig {
                max_seqs: 4,
                step_tokens: 64,
            },
            pool,
        );
        let a = s.add(seq(10));
        let plan = s.schedule();
        run(&mut s, &plan);
        let e = s.get_mut(a).unwrap();
        let tokens = e.seq.0.clone();
        e.kv.as_mut().unwrap().register_full_blocks(&tokens, 10);
        let b = s.add(seq(10));
        let plan = s.schedule();
        let w = plan.iter().find(|w| w.id == b).unwrap();
        assert_eq!(
            (w.start, w.len),
            (8, 2),
            "two cached blocks, two tokens to compute"
        );
        assert_eq!(s.get_mut(b).unwrap().cached_at_admission, Some(8));
    }

    #[test]
    fn removing_frees_blocks() {
        let mut s = sched(10, 4, 64);
        let a = s.add(seq(9));
        s.schedule();
        assert_eq!(s.pool().n_free(), 7);
        s.remove(a);
        assert_eq!(s.pool().n_free(), 10);
    }

    /// A sequence that wants `k` guesses scored with its next decode.
    struct Guessing(Vec<u32>, usize);
    impl HasTokens for Guessing {
        fn tokens(&self) -> &[u32] {
            &self.0
        }
        fn drafts_wanted(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn guesses_ride_with_decodes_only_where_there_is_room() {
        let mut s: Scheduler<Guessing> = Scheduler::new(
            SchedulerConfig {
                max_seqs: 4,
                step_tokens: 6,
            },
            BlockPool::new(3, 4),
        );
        let a = s.add(Guessing((0..3).collect(), 4));
        // A prompt is never speculated on.
        assert_eq!(s.schedule()[0].drafts, 0);
        s.get_mut(a).unwrap().n_computed = 3;
        s.get_mut(a).unwrap().seq.0.push(7);
        // A decode: the pending token plus four guesses (positions 3..8).
        let plan = s.schedule();
        assert_eq!(
            plan,
            [Work {
                id: a,
                start: 3,
                len: 5,
                drafts: 4
            }]
        );
        assert_eq!(s.get_mut(a).unwrap().kv.as_ref().unwrap().len(), 8);
        // Too little budget left for the guesses: the decode alone.
        s.get_mut(a).unwrap().seq.1 = 6;
        assert_eq!(s.schedule()[0].drafts, 0);
        // Too few free blocks: no guesses, and nobody is preempted for them.
        s.get_mut(a).unwrap().seq.1 = 0;
        s.get_mut(a).unwrap().kv.as_mut().unwrap().truncate(3);
        s.add(Guessing((0..8).collect(), 0));
        s.schedule();
        assert_eq!(s.pool().n_free(), 0);
        s.get_mut(a).unwrap().seq.1 = 4;
        let plan = s.schedule();
        assert_eq!(plan.iter().map(|w| w.drafts).sum::<usize>(), 0);
        assert_eq!(s.preemptions, 0);
    }
}
