// Attention over the paged f16 KV cache, split over the keys (flash-decoding):
// block (head, row, split) scores up to SPLIT keys, one thread per key, and
// writes its partial softmax (max m, sum l, unnormalised output); the last
// split of a (row, head) to finish merges them (decode), or a second kernel
// does. Keys are found through the row's sequence slot list; masking is
// causal plus the sliding window. The number of splits is a
// launch parameter that may exceed what a row needs (a captured graph sizes
// it for a context bucket): splits past a row's position do nothing.

// Keys per split: step.rs's ATTN_SPLIT, passed by programs.rs (at most the
// block's 128 threads: one thread scores one key). 128 rather than 64: one
// split, and no merge, for every row of a context up to 128. It changes the
// order of the sums for longer ones: SmolLM2 on a 200-token prompt went from
// 0.071 to 0.165 relative L2 against the CPU, greedy tokens and argmax the same.
#ifndef SPLIT
#define SPLIT 128
#endif
// TANDEM_CUDA_NVRTC_OPTS=-DATTN_UNROLL=1 to compare.
#ifndef ATTN_UNROLL
#define ATTN_UNROLL 8
#endif
#ifndef ATTN_K_UNROLL
#define ATTN_K_UNROLL 8
#endif
// -DATTN_PREFETCH=0: no L2 prefetch of the keys' rows before the wait;
// -DATTN_FAST=0: the any-width split body for every head width.
#ifndef ATTN_PREFETCH
#define ATTN_PREFETCH 1
#endif
#ifndef ATTN_FAST
#define ATTN_FAST 1
#endif
#define NEG_INF (-3.402823466e38f)

struct SplitSmem {
    float qs[256];
    float p[SPLIT];
    u32 sidx[SPLIT];
    float scratch[4], scratch_sum[4];
    float red[4][256];
};

// One split's partial softmax over keys k0..k1 (their slots already in
// sm.sidx), written to pr: acc[hd], m, l. 128 threads: scores one thread per key;
// values one warp per key (lanes across the head's dims in f16 pairs), the
// four warps' sums added at the end.
// HD = 64 or 128: the width known when compiling, so each thread's K row and
// its warp's V values are loaded into registers at once, right after the
// wait, with q: one trip to L2 for the split instead of one per batch of
// keys (kernel notes #62). HD = 0: any width up to 256, loads in unrolled
// batches. Both sum in the same order: the same bits.
// With `direct` non-null the split is the row's only one: the normalised
// output goes straight to `direct` (and its int8 form to xq/xd at `gi`),
// with no partial to merge.
template <int HD>
__device__ void split_body(const float* __restrict__ qr, const u16* __restrict__ kc,
                           const u16* __restrict__ vc, float* __restrict__ pr,
                           int kvh, int hd, int kv_dim, float scale, int k0, int k1, SplitSmem& sm,
                           float* __restrict__ direct, size_t gi, i8* __restrict__ xq, float2* __restrict__ xd) {
    constexpr int KV = HD > 0 ? HD / 8 : 1, VC = HD > 0 ? HD / 64 : 1, VK = SPLIT / 4;
    int tid = threadIdx.x, lane = tid % WARP, warp = tid / WARP;
    int nk = k1 - k0;
    int4 kreg[KV];
    u32 vreg[VK][VC];
    if constexpr (HD > 0) {
        if (tid < nk) {
            const int4* kr = (const int4*)(kc + (size_t)sm.sidx[tid] * kv_dim + kvh * HD);
#pragma unroll
            for (int i = 0; i < KV; i++) kreg[i] = kr[i];
        }
#pragma unroll
        for (int i = 0; i < VK; i++) {
            int j = warp + 4 * i;
            if (j < nk) {
                const u32* vr = (const u32*)(vc + (size_t)sm.sidx[j] * kv_dim + kvh * HD);
#pragma unroll
                for (int c = 0; c < VC; c++) vreg[i][c] = vr[lane + WARP * c];
            }
        }
    }
    for (int i = tid; i < hd; i += blockDim.x) sm.qs[i] = qr[i] * scale;
    __syncthreads();
    float s = NEG_INF;
    if (tid < nk) {
        s = 0.0f;
        if constexpr (HD > 0) {
#pragma unroll
            for (int i = 0; i < KV; i++) {
                const u32* kp = (const u32*)&kreg[i];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s += sm.qs[8 * i + 2 * j] * h2f(kp[j] & 0xffff) + sm.qs[8 * i + 2 * j + 1] * h2f(kp[j] >> 16);
                }
            }
        } else {
            const u16* kr = kc + (size_t)sm.sidx[tid] * kv_dim + kvh * hd;
#pragma unroll ATTN_K_UNROLL
            for (int i = 0; i < hd; i += 8) {
                int4 kv = *(const int4*)(kr + i);
                const u32* kp = (const u32*)&kv;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s += sm.qs[i + 2 * j] * h2f(kp[j] & 0xffff) + sm.qs[i + 2 * j + 1] * h2f(kp[j] >> 16);
                }
            }
        }
    }
    float m = block_reduce_w<4>(s, sm.scratch, MaxF());
    float e = tid < nk ? __expf(s - m) : 0.0f;
    if (tid < SPLIT) sm.p[tid] = e;
    float l = block_reduce_w<4>(e, sm.scratch_sum, AddF());  // syncs: p is visible below
    float2 acc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) acc[i] = make_float2(0.0f, 0.0f);
    if constexpr (HD > 0) {
#pragma unroll
        for (int i = 0; i < VK; i++) {
            int j = warp + 4 * i;
            if (j < nk) {
                float pj = sm.p[j];
#pragma unroll
                for (int c = 0; c < VC; c++) {
                    acc[c].x += pj * h2f(vreg[i][c] & 0xffff);
                    acc[c].y += pj * h2f(vreg[i][c] >> 16);
                }
            }
        }
    } else {
    // Unrolled so that several keys' value loads are in flight at once:
    // one at a time, a 64-key split was 16 dependent round trips (~10 µs).
#pragma unroll ATTN_UNROLL
    for (int j = warp; j < nk; j += 4) {
        const u32* vr = (const u32*)(vc + (size_t)sm.sidx[j] * kv_dim + kvh * hd);
        float pj = sm.p[j];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int d = 2 * lane + 64 * i;
            if (d < hd) {
                u32 v2 = vr[d / 2];
                acc[i].x += pj * h2f(v2 & 0xffff);
                acc[i].y += pj * h2f(v2 >> 16);
            }
        }
    }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int d = 2 * lane + 64 * i;
        if (d < hd) {
            sm.red[warp][d] = acc[i].x;
            sm.red[warp][d + 1] = acc[i].y;
        }
    }
    __syncthreads();
    if (direct) {
        // l ≥ 1 (the largest score contributes e^0). A division, as the CPU
        // and the merge do: a reciprocal-multiply rounds some outputs the
        // other way, enough to flip an 8-bit activation of the next product
        // and double SmolLM2's logit distance to the CPU (0.076 → 0.134).
        for (int d = tid; d < hd; d += blockDim.x) {
            float v = (sm.red[0][d] + sm.red[1][d] + sm.red[2][d] + sm.red[3][d]) / l;
            direct[d] = v;
            if (xq) warp_quantize(v, gi + d, xq, xd);
        }
        return;
    }
    for (int d = tid; d < hd; d += blockDim.x) pr[d] = sm.red[0][d] + sm.red[1][d] + sm.red[2][d] + sm.red[3][d];
    if (tid == 0) { pr[hd] = m; pr[hd + 1] = l; }
}

__device__ void merge_splits(const volatile float* pr, float* __restrict__ out, int row, int h,
                             int n_heads, int hd, int used, i8* __restrict__ xq, float2* __restrict__ xd);

// Block (head, row, split). With `counters` non-null (decode), the last split
// of (row, head) to finish merges them all into `out` (and its int8 form),
// then resets its counter for the next launch; otherwise attn_merge runs next.
extern "C" __global__ void __launch_bounds__(128) attn_split(
    const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
    float* __restrict__ part, const u32* __restrict__ row_slots, const u32* __restrict__ positions,
    const u32* __restrict__ slots, int n_heads, int n_kv_heads,
    int hd, int kv_dim, float scale, int window, int n_splits, u32* __restrict__ counters,
    float* __restrict__ out, i8* __restrict__ xq, float2* __restrict__ xd) {
    TL_SCOPE();
    PDL_TRIGGER_EARLY();
    __shared__ SplitSmem sm;
    __shared__ bool last;
    int h = blockIdx.x, row = blockIdx.y, sp = blockIdx.z, tid = threadIdx.x;
    // The step's layout (positions, slot lists) is uploaded by the host
    // before the pass, so its reads run before the wait, while the kernel
    // before is finishing: the row's position and where its slot list
    // starts (both at once), then its keys' slots.
    int pos = positions[row];
    u32 first_slot = row_slots[row];
    if (sp * SPLIT > pos) return;  // past the row: not counted, never merged
    int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    int k0 = max(lo, sp * SPLIT), k1 = min(pos + 1, (sp + 1) * SPLIT);
    int kvh = h / (n_heads / n_kv_heads);
    if (tid < k1 - k0) {
        u32 sl = slots[first_slot + k0 + tid];
        sm.sidx[tid] = sl;
        // The key's K and V rows asked of L2 meanwhile: the loads after the
        // wait then find L2 rather than DRAM, where a step's weights have
        // pushed the older keys. (L2 is where writes land, so a row the
        // kernel before is writing is never read stale.)
        const u8* kr = (const u8*)(kc + (size_t)sl * kv_dim + kvh * hd);
        const u8* vr = (const u8*)(vc + (size_t)sl * kv_dim + kvh * hd);
        for (int o = 0; ATTN_PREFETCH && o < 2 * hd; o += 128) {
            asm volatile("prefetch.global.L2 [%0];" :: "l"(kr + o));
            asm volatile("prefetch.global.L2 [%0];" :: "l"(vr + o));
        }
    }
    __syncthreads();  // every key's slot, for the value loads right after the wait
    PDL_WAIT();
    int used = min(n_splits, pos / SPLIT + 1);
    float* base = part + ((size_t)row * n_heads + h) * n_splits * (hd + 2);
    float* pr = base + sp * (hd + 2);
    size_t gi = ((size_t)row * n_heads + h) * hd;
    // Decoding a row that needs one split: no partial, no merge (four fewer
    // trips through memory; every token of a short context).
    bool direct = counters && used == 1;
    if (k0 >= k1) {  // wholly before the window
        if (tid == 0) { pr[hd] = NEG_INF; pr[hd + 1] = 0.0f; }
    } else {
        const float* qr = q + gi;
        float* dst = direct ? out + gi : nullptr;
        if (ATTN_FAST && hd == 64)
            split_body<64>(qr, kc, vc, pr, kvh, hd, kv_dim, scale, k0, k1, sm, dst, gi, xq, xd);
        else if (ATTN_FAST && hd == 128)
            split_body<128>(qr, kc, vc, pr, kvh, hd, kv_dim, scale, k0, k1, sm, dst, gi, xq, xd);
        else
            split_body<0>(qr, kc, vc, pr, kvh, hd, kv_dim, scale, k0, k1, sm, dst, gi, xq, xd);
    }
    if (!counters || direct) return;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        u32* c = counters + (size_t)row * n_heads + h;
        last = atomicAdd(c, 1u) == (u32)used - 1;
        if (last) *c = 0;
    }
    __syncthreads();
    if (last) {
        __threadfence();
        merge_splits(base, out, row, h, n_heads, hd, used, xq, xd);
    }
}

// Merge the splits of (row, head): out = Σ_s e^(m_s−M)·acc_s / Σ_s e^(m_s−M)·l_s.
// With xq non-null (hd a multiple of 32, blockDim a multiple of 32) the
// output is also written quantized for the output projection.
__device__ void merge_splits(const volatile float* pr, float* __restrict__ out, int row, int h,
                             int n_heads, int hd, int used, i8* __restrict__ xq, float2* __restrict__ xd) {
    float mx = NEG_INF;
    for (int s = 0; s < used; s++) {
        const volatile float* ps = pr + s * (hd + 2);
        if (ps[hd + 1] > 0.0f) mx = fmaxf(mx, ps[hd]);
    }
    float den = 0.0f;
    for (int s = 0; s < used; s++) {
        const volatile float* ps = pr + s * (hd + 2);
        if (ps[hd + 1] > 0.0f) den += ps[hd + 1] * __expf(ps[hd] - mx);
    }
    float* o = out + ((size_t)row * n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0.0f;
        for (int s = 0; s < used; s++) {
            const volatile float* ps = pr + s * (hd + 2);
            if (ps[hd + 1] > 0.0f) num += ps[d] * __expf(ps[hd] - mx);
        }
        o[d] = num / den;
        if (xq) warp_quantize(num / den, ((size_t)row * n_heads + h) * hd + d, xq, xd);
    }
}

extern "C" __global__ void attn_merge(const float* __restrict__ part, float* __restrict__ out,
                                      const u32* __restrict__ positions, int n_heads, int hd,
                                      int n_splits, i8* __restrict__ xq, float2* __restrict__ xd) {
    PDL_WAIT();
    int h = blockIdx.x, row = blockIdx.y;
    int used = min(n_splits, (int)positions[row] / SPLIT + 1);
    const float* pr = part + ((size_t)row * n_heads + h) * n_splits * (hd + 2);
    merge_splits(pr, out, row, h, n_heads, hd, used, xq, xd);
}

// ---- Prefill attention through cuBLAS: K and V of a sequence gathered into
// contiguous f16 rows, S = Q·Kᵀ (scaled) per head, the causal/window mask and
// softmax here (S f32 → P f16), then O = P·V.

// Block per key position j: k/v rows of slot sl[j] → kout/vout row j.
extern "C" __global__ void gather_kv(const u16* __restrict__ kc, const u16* __restrict__ vc,
                                     const u32* __restrict__ sl, u16* __restrict__ kout,
                                     u16* __restrict__ vout, int kv_dim) {
    PDL_WAIT();
    size_t src = (size_t)sl[blockIdx.x] * kv_dim, dst = (size_t)blockIdx.x * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kout[dst + i] = kc[src + i];
        vout[dst + i] = vc[src + i];
    }
}

// Block (query i, head h) over S[h][i][0..t): keys past the query's position
// (first + i) or before its window get probability 0.
extern "C" __global__ void masked_softmax(const float* __restrict__ s, u16* __restrict__ p, int n_q, int t,
                                          int first, int window) {
    PDL_WAIT();
    __shared__ float scratch[32];
    int i = blockIdx.x, h = blockIdx.y;
    size_t off = ((size_t)h * n_q + i) * t;
    int pos = first + i;
    int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    float m = NEG_INF;
    for (int j = threadIdx.x; j < t; j += blockDim.x)
        if (j >= lo && j <= pos) m = fmaxf(m, s[off + j]);
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x)
        if (j >= lo && j <= pos) sum += __expf(s[off + j] - m);
    sum = block_sum(sum, scratch);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < t; j += blockDim.x)
        p[off + j] = f2h(j >= lo && j <= pos ? __expf(s[off + j] - m) * inv : 0.0f);
}
