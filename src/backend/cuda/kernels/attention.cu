// Attention over the paged f16 KV cache, split over the keys (flash-decoding):
// block (head, row, split) scores up to SPLIT keys, one thread per key, and
// writes its partial softmax (max m, sum l, unnormalised output); a second
// kernel merges the splits. Keys are found through the row's sequence slot
// list; masking is causal plus the sliding window. The number of splits is a
// launch parameter that may exceed what a row needs (a captured graph sizes
// it for a context bucket): splits past a row's position do nothing.

#define SPLIT 64
#define NEG_INF (-3.402823466e38f)

extern "C" __global__ void __launch_bounds__(128) attn_split(
    const float* __restrict__ q, const u16* __restrict__ kc, const u16* __restrict__ vc,
    float* __restrict__ part, const u32* __restrict__ row_seq, const u32* __restrict__ positions,
    const u32* __restrict__ seq_off, const u32* __restrict__ slots, int n_heads, int n_kv_heads,
    int hd, int kv_dim, float scale, int window, int n_splits) {
    __shared__ float qs[256];
    __shared__ float p[SPLIT];
    int h = blockIdx.x, row = blockIdx.y, sp = blockIdx.z, tid = threadIdx.x;
    int pos = positions[row];
    int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    int k0 = max(lo, sp * SPLIT), k1 = min(pos + 1, (sp + 1) * SPLIT);
    if (sp * SPLIT > pos) return;  // past the row: the merge never reads it
    float* pr = part + (((size_t)row * n_heads + h) * n_splits + sp) * (hd + 2);
    if (k0 >= k1) {  // wholly before the window
        if (tid == 0) { pr[hd] = NEG_INF; pr[hd + 1] = 0.0f; }
        return;
    }
    const u32* sl = slots + seq_off[row_seq[row]];
    int kvh = h / (n_heads / n_kv_heads);
    const float* qr = q + ((size_t)row * n_heads + h) * hd;
    for (int i = tid; i < hd; i += blockDim.x) qs[i] = qr[i] * scale;
    __syncthreads();
    int nk = k1 - k0;
    if (tid < nk) {
        const u16* kr = kc + (size_t)sl[k0 + tid] * kv_dim + kvh * hd;
        float s = 0.0f;
        for (int i = 0; i < hd; i += 8) {
            int4 kv = *(const int4*)(kr + i);
            const u32* kp = (const u32*)&kv;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s += qs[i + 2 * j] * h2f(kp[j] & 0xffff) + qs[i + 2 * j + 1] * h2f(kp[j] >> 16);
            }
        }
        p[tid] = s;
    }
    __syncthreads();
    float m = NEG_INF;
    for (int j = 0; j < nk; j++) m = fmaxf(m, p[j]);
    __syncthreads();
    if (tid < nk) p[tid] = __expf(p[tid] - m);
    __syncthreads();
    float l = 0.0f;
    for (int j = 0; j < nk; j++) l += p[j];
    for (int d = tid; d < hd; d += blockDim.x) {
        const u16* vb = vc + kvh * hd + d;
        float a = 0.0f;
#pragma unroll 8
        for (int j = 0; j < nk; j++) a += p[j] * h2f(vb[(size_t)sl[k0 + j] * kv_dim]);
        pr[d] = a;
    }
    if (tid == 0) { pr[hd] = m; pr[hd + 1] = l; }
}

// With xq non-null (hd a multiple of 32, blockDim == hd) the output is also
// written quantized for the output projection.
extern "C" __global__ void attn_merge(const float* __restrict__ part, float* __restrict__ out,
                                      const u32* __restrict__ positions, int n_heads, int hd,
                                      int n_splits, i8* __restrict__ xq, float2* __restrict__ xd) {
    int h = blockIdx.x, row = blockIdx.y;
    int used = min(n_splits, (int)positions[row] / SPLIT + 1);
    const float* pr = part + ((size_t)row * n_heads + h) * n_splits * (hd + 2);
    float mx = NEG_INF;
    for (int s = 0; s < used; s++) {
        const float* ps = pr + s * (hd + 2);
        if (ps[hd + 1] > 0.0f) mx = fmaxf(mx, ps[hd]);
    }
    float den = 0.0f;
    for (int s = 0; s < used; s++) {
        const float* ps = pr + s * (hd + 2);
        if (ps[hd + 1] > 0.0f) den += ps[hd + 1] * __expf(ps[hd] - mx);
    }
    float* o = out + ((size_t)row * n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0.0f;
        for (int s = 0; s < used; s++) {
            const float* ps = pr + s * (hd + 2);
            if (ps[hd + 1] > 0.0f) num += ps[d] * __expf(ps[hd] - mx);
        }
        o[d] = num / den;
        if (xq) warp_quantize(num / den, ((size_t)row * n_heads + h) * hd + d, xq, xd);
    }
}
