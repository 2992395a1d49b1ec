//! Decoding one step ahead of the host. After a replayed decode step of one
//! sequence whose readout puts the best candidate first (greedy decoding,
//! `bench`), the next step is launched at once: its token is that best
//! candidate, copied on the device into the step buffer, and its position
//! and KV slot follow the current ones. When the host then asks for exactly
//! that step, it is already running: the one after it is launched before
//! its result is read, so the device does not wait for the host between
//! steps (20–28 µs a token: the download, the host's own work, the upload
//! and the graph launch; kernel notes #69).
//!
//! When the host asks for anything else (another token, a stop, a prompt),
//! the step launched ahead goes unused, and costs one step of device time.
//! It wrote only its output buffer and the KV slot of a position the host
//! has not confirmed; that slot is in the same KV block as the step before
//! it, a block the sequence owns, and the real step at that position writes
//! it again. Steps are only launched ahead after steps that each continued
//! the one before with its best candidate: a host that changes course
//! (speculative rounds, a second request) loses at most one step each time,
//! and one that may sample other tokens (a readout of more than one
//! candidate) is only tried after a long streak of best candidates.

use cudarc::driver::{result, sys};

use super::{context_bucket, GraphKey, OutShape, StepState};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::{Logits, Readout, StepLayout};
use crate::kv::DEFAULT_BLOCK_SIZE;

/// Floats of each pinned result slot: a one-row top-k readout with k up to
/// [`crate::backend::logits::MAX_TOP_K`] (2k + 1 values).
const SLOT_FLOATS: usize = 1024;

/// Steps that continued the one before with its best candidate, after
/// which the next is launched ahead: a one-candidate readout leaves the host
/// no other choice; with more candidates the host may be sampling, and a
/// refused step costs a whole step where a taken one saves a few percent of
/// one, so only a long run of best candidates (rare when sampling) is taken
/// as greedy decoding (with log-probabilities). Starting at 2 and doubling
/// on each refusal still cost sampled 7B decoding ~0.7% over 256 tokens.
const STREAK: u32 = 2;
const STREAK_SEVERAL: u32 = 64;

pub(super) struct Lookahead {
    /// TANDEM_CUDA_AHEAD (A/B).
    enabled: bool,
    /// The engine's permission: off in a process that speculates, except
    /// while its governor has turned speculation off
    /// ([`crate::backend::Backend::allow_lookahead`]).
    allowed: bool,
    /// Steps in a row that continued the one before with its best candidate.
    streak: u32,
    /// (KV cache, position) of the last one-row step with a best-first
    /// readout, to tell whether the next continues it.
    last: Option<(u64, u32)>,
    /// The best candidate of the last result the host read: the token the
    /// step launched after it was fed, and the one a continuing step has.
    fed: u32,
    /// Slots in the staged slot list.
    n_slots: usize,
    flight: Option<Flight>,
    /// Two page-locked result slots and their events: the current step's
    /// and the one launched ahead of it.
    host: [*mut f32; 2],
    events: [sys::CUevent; 2],
    next: usize,
}

/// A step launched ahead of the host. Its layout is the staged one.
struct Flight {
    key: GraphKey,
    position: u32,
    shape: OutShape,
    slot: usize,
}

impl Lookahead {
    /// TANDEM_CUDA_AHEAD=0 turns it off (A/B).
    pub fn new() -> Self {
        Self {
            enabled: std::env::var("TANDEM_CUDA_AHEAD").map_or(true, |v| v != "0"),
            allowed: true,
            streak: 0,
            last: None,
            fed: 0,
            n_slots: 0,
            flight: None,
            host: [std::ptr::null_mut(); 2],
            events: [std::ptr::null_mut(); 2],
            next: 0,
        }
    }

    /// Note a replayed step; returns whether the next is launched ahead of it.
    fn continues(&mut self, step: &StepLayout<'_>, kv: u64, shape: OutShape) -> bool {
        let k = match step.readout {
            Readout::Top(k) => *k,
            _ => 0,
        };
        let one_row = step.tokens.len() == 1
            && step.seqs.len() == 1
            && step.logit_rows == [0]
            && k > 0
            && shape.len() <= SLOT_FLOATS;
        if !self.enabled || !self.allowed || !one_row {
            self.start_over();
            return false;
        }
        let pos = step.positions[0];
        self.streak = match self.last {
            Some((k, p)) if k == kv && p + 1 == pos && step.tokens[0] == self.fed => {
                self.streak + 1
            }
            _ => 0,
        };
        self.last = Some((kv, pos));
        self.streak >= if k == 1 { STREAK } else { STREAK_SEVERAL }
    }

    pub(super) fn allow(&mut self, allowed: bool) {
        self.allowed = allowed;
        if !allowed {
            self.start_over();
        }
    }

    /// Forget the streak: the next step continues nothing.
    fn start_over(&mut self) {
        self.streak = 0;
        self.last = None;
    }

    /// Remember the best candidate of a result the host reads.
    fn note_best(&mut self, logits: &Logits) {
        if let Logits::Top { ids, .. } = logits {
            self.fed = ids[0];
        }
    }

    fn ensure_host(&mut self) {
        for i in 0..2 {
            if self.host[i].is_null() {
                // SAFETY: page-locked host memory, freed in Drop.
                self.host[i] = unsafe { result::malloc_host(SLOT_FLOATS * 4, 0) }
                    .expect("pinned host allocation") as *mut f32;
                self.events[i] = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                    .expect("CUDA event");
            }
        }
    }
}

impl Drop for Lookahead {
    fn drop(&mut self) {
        for i in 0..2 {
            if !self.host[i].is_null() {
                // SAFETY: allocated in ensure_host, freed once; the backend's
                // Drop synchronized the stream, so no copy into it is pending.
                unsafe {
                    let _ = result::event::destroy(self.events[i]);
                    let _ = result::free_host(self.host[i] as *mut std::ffi::c_void);
                }
            }
        }
    }
}

impl StepState {
    /// The result of `step` if it is the step launched ahead (the next one
    /// is then launched before it is read). Anything else discards that step.
    pub(super) fn ahead_result(
        &mut self,
        gpu: &Gpu,
        step: &StepLayout<'_>,
        kv: u64,
    ) -> Option<Logits> {
        let f = self.ahead.flight.take()?;
        if !self.is_flight(&f, step, kv) {
            // Let it finish before the step buffer or a graph it uses can be
            // replaced.
            let t = std::time::Instant::now();
            gpu.sync();
            tracing::trace!(
                be = self.trace_id,
                kv,
                wait_ms = t.elapsed().as_secs_f64() * 1e3,
                "step launched ahead discarded"
            );
            self.ahead.start_over();
            return None;
        }
        self.ahead.last = Some((kv, f.position));
        self.launch_ahead(gpu, &f.key);
        Some(self.collect(f.slot, f.shape))
    }

    /// Whether `step` is the staged one the flight runs.
    fn is_flight(&self, f: &Flight, step: &StepLayout<'_>, kv: u64) -> bool {
        let off = self.caps().offsets();
        let st = &self.staging;
        let slots = &st[off[5]..off[5] + self.ahead.n_slots];
        kv == f.key.kv
            && step.readout.shape() == f.key.readout
            && step.tokens == [self.ahead.fed]
            && step.positions == [f.position]
            && step.write_slots == [st[off[2]]]
            && step.logit_rows == [0]
            && step.seqs.len() == 1
            && step.seqs[0].rows == (0..1)
            && step.seqs[0].slots == slots
    }

    /// After replaying `key` for `step` (launched, output at `out`): its
    /// result, with the next step launched ahead where that pays.
    pub(super) fn replayed_result(
        &mut self,
        gpu: &Gpu,
        step: &StepLayout<'_>,
        key: &GraphKey,
        n_slots: usize,
    ) -> Logits {
        let (out, shape) = {
            let g = &self.graphs[key];
            (g.out, g.shape)
        };
        if !self.ahead.continues(step, key.kv, shape) {
            let logits = shape.download(gpu, out);
            self.ahead.note_best(&logits);
            return logits;
        }
        self.ahead.n_slots = n_slots;
        let slot = self.download_async(gpu, out, shape);
        self.launch_ahead(gpu, key);
        self.collect(slot, shape)
    }

    /// Stage the step after the staged one and launch it, if its KV slot is
    /// in the same block and its context in the same graph bucket.
    fn launch_ahead(&mut self, gpu: &Gpu, key: &GraphKey) {
        let caps = self.caps();
        let off = caps.offsets();
        let n = self.ahead.n_slots;
        let pos = self.staging[off[1]] + 1;
        let slot = self.staging[off[2]] + 1;
        if (slot as usize).is_multiple_of(DEFAULT_BLOCK_SIZE)
            || n + 1 > caps.slots
            || context_bucket(pos as usize) != key.bucket
        {
            return;
        }
        let Some(g) = self.graphs.get(key) else {
            return;
        };
        let (out, shape) = (g.out, g.shape);
        let k = key.readout.1;
        let st = &mut self.staging;
        st.truncate(off[5] + n);
        st.push(slot);
        st[off[1]] = pos;
        st[off[2]] = slot;
        let base = self.ptr(0);
        gpu.upload(base, &self.staging);
        // SAFETY: both addresses are device memory of this context: the
        // best candidate's id (first of the row's k ids) into the token slot.
        unsafe {
            result::memcpy_dtod_async(base, out + 4 * k as u64, 4, gpu.cu_stream())
                .expect("device-to-device copy");
        }
        self.graphs[key]
            .exec
            .launch()
            .expect("launching CUDA graph");
        self.ahead.n_slots = n + 1;
        let slot_index = self.download_async(gpu, out, shape);
        self.ahead.flight = Some(Flight {
            key: key.clone(),
            position: pos,
            shape,
            slot: slot_index,
        });
    }

    /// Queue the copy of a result into the next pinned slot; returns the slot.
    fn download_async(&mut self, gpu: &Gpu, out: u64, shape: OutShape) -> usize {
        let a = &mut self.ahead;
        a.ensure_host();
        let i = a.next;
        a.next ^= 1;
        // SAFETY: the slot holds SLOT_FLOATS ≥ shape.len() floats (checked
        // in `continues`); it is read only after its event completes.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(a.host[i], shape.len());
            result::memcpy_dtoh_async(dst, out, gpu.cu_stream()).expect("device-to-host copy");
            result::event::record(a.events[i], gpu.cu_stream()).expect("event record");
        }
        i
    }

    /// Wait for a queued result and unpack it; remembers its best candidate.
    fn collect(&mut self, slot: usize, shape: OutShape) -> Logits {
        let a = &mut self.ahead;
        // SAFETY: the event follows the copy into this slot.
        let data = unsafe {
            result::event::synchronize(a.events[slot]).expect("event synchronize");
            std::slice::from_raw_parts(a.host[slot], shape.len()).to_vec()
        };
        let logits = shape.unpack(data);
        a.note_best(&logits);
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AttnSeq;

    fn decode_at(pos: u32, readout: &Readout, f: impl FnOnce(&StepLayout<'_>) -> bool) -> bool {
        let slots: Vec<u32> = (0..=pos).collect();
        let positions = [pos];
        let seqs = [AttnSeq {
            rows: 0..1,
            slots: &slots,
            positions: &positions,
        }];
        f(&StepLayout {
            tokens: &[7],
            positions: &positions,
            write_slots: &[pos],
            seqs: &seqs,
            logit_rows: &[0],
            readout,
        })
    }

    #[test]
    fn launches_ahead_only_after_steps_that_continue_each_other() {
        let top = Readout::Top(1);
        let shape = OutShape::Top {
            rows: 1,
            k: 1,
            drawn: false,
        };
        let mut a = Lookahead::new();
        a.enabled = true;
        // Every step's token is 7; `fed` is the best candidate the host read
        // from the step before.
        let go = |a: &mut Lookahead, pos, r: &Readout, kv, best| {
            let ahead = decode_at(pos, r, |s| a.continues(s, kv, shape));
            a.fed = best;
            ahead
        };
        assert!(!go(&mut a, 10, &top, 1, 7));
        assert!(!go(&mut a, 11, &top, 1, 7));
        assert!(go(&mut a, 12, &top, 1, 7));
        assert!(go(&mut a, 13, &top, 1, 7));
        // A gap, another cache, or a readout the host may not follow start over.
        assert!(!go(&mut a, 15, &top, 1, 7));
        assert!(!go(&mut a, 16, &top, 1, 7));
        assert!(go(&mut a, 17, &top, 1, 7));
        assert!(!go(&mut a, 18, &top, 2, 7));
        assert!(!go(&mut a, 19, &Readout::Full, 2, 7));
        assert!(!go(&mut a, 20, &top, 2, 7));
        let full = OutShape::Full {
            rows: 1,
            cols: 5000,
        };
        assert!(!decode_at(21, &top, |s| a.continues(s, 2, full)));
        // A host that took another token than the best (sampling) breaks
        // the streak; with several candidates a long streak is wanted.
        assert!(!go(&mut a, 30, &top, 3, 9));
        assert!(!go(&mut a, 31, &top, 3, 7));
        assert!(!go(&mut a, 32, &top, 3, 7));
        assert!(go(&mut a, 33, &top, 3, 7));
        let top5 = Readout::Top(5);
        let shape5 = OutShape::Top {
            rows: 1,
            k: 5,
            drawn: false,
        };
        for pos in 40..=40 + STREAK_SEVERAL {
            let ahead = decode_at(pos, &top5, |s| a.continues(s, 3, shape5));
            assert_eq!(ahead, pos - 40 >= STREAK_SEVERAL, "position {pos}");
        }
    }
}
