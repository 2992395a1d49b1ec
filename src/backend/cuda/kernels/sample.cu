// What sampling needs of a logits row, computed where the logits are: the k
// largest logits (logit descending, ties to the lower id: the host's
// order) and ln Σ exp of the row. A row goes through stages: each block
// sorts a chunk of TOPK_CHUNK candidates in shared memory and keeps its best
// k, until one block holds them all. 152k logits with k = 40: 75 blocks,
// then 2, then 1.

// TOPK_CHUNK and TOPK_THREADS come from readout.rs (CHUNK, THREADS), passed
// by programs.rs as SPLIT is.

// A candidate as one u64 whose unsigned order is the ranking: the logit's
// bits mapped to an unsigned key ordered as Rust's f32::total_cmp, above the
// complemented id (a lower id ranks higher on equal logits). 0 is a padding
// that ranks below every real candidate.
__device__ __forceinline__ u64 cand_pack(float v, u32 id) {
    u32 b = __float_as_uint(v);
    u32 key = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)key << 32) | (u64)(~id);
}

__device__ __forceinline__ float cand_value(u64 c) {
    u32 key = (u32)(c >> 32);
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ __forceinline__ u32 cand_id(u64 c) { return ~(u32)c; }

// Candidate `gi` of a row of n (ids null: a row of logits, ids the
// indices), or the padding past its end.
__device__ __forceinline__ u64 cand_at(const float* __restrict__ v, const u32* __restrict__ ids, int n,
                                       int gi) {
    return gi < n ? cand_pack(v[gi], ids ? ids[gi] : (u32)gi) : 0ull;
}

struct MaxU64 {
    __device__ __forceinline__ u64 operator()(u64 a, u64 b) const { return b > a ? b : a; }
};

// The largest of the block's candidates; `scratch` holds 32.
__device__ __forceinline__ u64 block_max_u64(u64 c, u64* scratch) {
    return block_reduce(c, scratch, 0ull, MaxU64());
}

// The noise of token id under key: −ln(−ln u), u a 23-bit uniform strictly
// inside (0, 1) from a splitmix64 hash of (key, id); the bits of
// backend/logits.rs's gumbel_noise.
__device__ __forceinline__ float gumbel_noise(u64 key, u32 id) {
    u64 h = key ^ ((u64)id * 0x9E3779B97F4A7C15ull);
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
    float u = ((float)(h >> 41) + 0.5f) * (1.0f / 8388608.0f);
    return -logf(-logf(u));
}

// A candidate for the draw: its perturbed logit (product and sum rounded
// apart, as the host does: no fused multiply-add) packed with its id.
__device__ __forceinline__ u64 draw_pack(float v, u32 id, u64 key, float inv_temp) {
    return cand_pack(__fadd_rn(__fmul_rn(v, inv_temp), gumbel_noise(key, id)), id);
}

__device__ void top_sort(u64* s, const float* __restrict__ v, const u32* __restrict__ ids, int n,
                         int base, int t);
__device__ void draw_stage(const float* __restrict__ v, int n, int base, int t, const u32* __restrict__ dk,
                           u64* __restrict__ parts_out, const u64* __restrict__ parts_in, int n_parts,
                           const float* __restrict__ logits, float* __restrict__ drawn, u64* scratch);

// One stage over `n` candidates per row (row r's start at r·in_stride):
// block (b, r) sorts candidates [b·CHUNK, (b+1)·CHUNK) (for k = 1 only finds
// their best) and writes its best k at r·out_stride + b·k. `in_ids` null means the candidates are a row of
// logits and their ids their indices. The first stage of a multi-stage row
// leaves each block's (max, Σ exp(x − max)) in `parts_out`; the last stage
// (one block per row) combines the first stage's `n_parts` partials from
// `parts_in` (or, null, its own chunk: a row of at most one chunk) into
// `lse_out`. Launched with TOPK_THREADS threads.
extern "C" __global__ void top_k_stage(const float* __restrict__ in_vals,
                                       const u32* __restrict__ in_ids, int n, int in_stride, int k,
                                       float* __restrict__ out_vals, u32* __restrict__ out_ids,
                                       int out_stride, float2* __restrict__ parts_out,
                                       const float2* __restrict__ parts_in, int n_parts,
                                       float* __restrict__ lse_out, const u32* __restrict__ draw_keys,
                                       u64* __restrict__ draw_parts_out,
                                       const u64* __restrict__ draw_parts_in,
                                       const float* __restrict__ row_logits, int logit_stride,
                                       float* __restrict__ drawn_out) {
    TL_SCOPE();
    PDL_WAIT();
    __shared__ u64 s[TOPK_CHUNK];
    __shared__ float scratch[32];
    __shared__ u64 best_scratch[32];
    const int row = blockIdx.y, t = threadIdx.x;
    const float* v = in_vals + (size_t)row * in_stride;
    const u32* ids = in_ids ? in_ids + (size_t)row * in_stride : 0;
    const int base = blockIdx.x * TOPK_CHUNK;
    u64 best = 0ull;
    if (k == 1) {
        // Greedy: only the best candidate, a block-wide max of the packed
        // keys (a sort of the chunk measured 16 µs a launch).
        for (int i = t; i < TOPK_CHUNK; i += TOPK_THREADS) {
            u64 c = cand_at(v, ids, n, base + i);
            best = c > best ? c : best;
        }
        best = block_max_u64(best, best_scratch);
        if (t == 0) {
            size_t o = (size_t)row * out_stride + blockIdx.x;
            out_vals[o] = cand_value(best);
            out_ids[o] = cand_id(best);
        }
    } else {
        top_sort(s, v, ids, n, base, t);
        if (t < k) {
            size_t o = (size_t)row * out_stride + (size_t)blockIdx.x * k + t;
            out_vals[o] = cand_value(s[t]);
            out_ids[o] = cand_id(s[t]);
        }
        best = s[0];
    }
    if (draw_keys) draw_stage(v, n, base, t, draw_keys + 3 * row, draw_parts_out, draw_parts_in, n_parts,
                              row_logits + (size_t)row * logit_stride, drawn_out + 2 * row, best_scratch);
    if (!parts_out && !lse_out) return;
    if (parts_in) {
        // Last stage: combine the first stage's partial sums.
        const float2* p = parts_in + (size_t)row * n_parts;
        float2 mine = t < n_parts ? p[t] : make_float2(-3.402823466e38f, 0.0f);
        float m = block_max(mine.x, scratch);
        float e = mine.y > 0.0f ? mine.y * expf(mine.x - m) : 0.0f;
        float total = block_sum(e, scratch);
        if (t == 0) lse_out[row] = m + logf(total);
        return;
    }
    // Σ exp(x − max) over this block's chunk of logits.
    float m = cand_value(best);
    float e = 0.0f;
    for (int i = t; i < TOPK_CHUNK; i += TOPK_THREADS) {
        int gi = base + i;
        if (gi < n) e += expf(v[gi] - m);
    }
    float total = block_sum(e, scratch);
    if (t == 0) {
        if (parts_out) parts_out[(size_t)row * gridDim.x + blockIdx.x] = make_float2(m, total);
        else lse_out[row] = m + logf(total);
    }
}

// The chunk of candidates at `base` sorted into s, best first: bitonic, each
// thread ordering pair (i, i + stride) of a step in the direction of its run
// of `size`.
__device__ void top_sort(u64* s, const float* __restrict__ v, const u32* __restrict__ ids, int n,
                         int base, int t) {
    for (int i = t; i < TOPK_CHUNK; i += TOPK_THREADS) s[i] = cand_at(v, ids, n, base + i);
    for (int size = 2; size <= TOPK_CHUNK; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            int i = 2 * t - (t & (stride - 1));
            u64 a = s[i], b = s[i + stride];
            bool desc = (i & size) == 0;
            if ((a < b) == desc) {
                s[i] = b;
                s[i + stride] = a;
            }
        }
    }
    __syncthreads();
}

// The draw's share of a stage (`dk`: the row's key, low and high words, and
// 1/T as bits). The first stage, over logits, leaves each block's best
// perturbed candidate in parts_out, or with no parts (a one-block row)
// writes the drawn token; the last stage, with parts_in, takes the best of
// the first stage's blocks. Middle stages have nothing to do.
__device__ void draw_stage(const float* __restrict__ v, int n, int base, int t, const u32* __restrict__ dk,
                           u64* __restrict__ parts_out, const u64* __restrict__ parts_in, int n_parts,
                           const float* __restrict__ logits, float* __restrict__ drawn, u64* scratch) {
    u64 key = (u64)dk[0] | ((u64)dk[1] << 32);
    float inv_temp = __uint_as_float(dk[2]);
    u64 best = 0ull;
    if (parts_in) {
        const u64* p = parts_in + (size_t)blockIdx.y * n_parts;
        for (int i = t; i < n_parts; i += TOPK_THREADS) best = p[i] > best ? p[i] : best;
    } else if (logits == v) {
        for (int i = t; i < TOPK_CHUNK; i += TOPK_THREADS) {
            int gi = base + i;
            u64 c = gi < n ? draw_pack(v[gi], (u32)gi, key, inv_temp) : 0ull;
            best = c > best ? c : best;
        }
    } else {
        return;
    }
    best = block_max_u64(best, scratch);
    if (t != 0) return;
    if (parts_out && !parts_in) {
        parts_out[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = best;
    } else {
        u32 id = cand_id(best);
        drawn[0] = __uint_as_float(id);
        drawn[1] = logits[id];
    }
}
