// Element-wise and per-row ops, and the activation quantizer the decode
// products read.

// x [n_blocks·32] → int8 blocks with (scale, scale·Σq); one warp per block.
extern "C" __global__ void quantize_q8(const float* __restrict__ x, i8* __restrict__ xq,
                                       float2* __restrict__ xd, int n_blocks) {
    TL_SCOPE();
    PDL_TRIGGER_EARLY();
    PDL_WAIT();
    int blk = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;
    if (blk >= n_blocks) return;
    int lane = threadIdx.x % WARP;
    warp_quantize(x[(size_t)blk * 32 + lane], (size_t)blk * 32 + lane, xq, xd);
}

extern "C" __global__ void f32_to_f16(const float* __restrict__ x, u16* __restrict__ out, size_t n) {
    PDL_WAIT();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2h(x[i]);
}

// One block per row of n elements (prompt rows, and per-head norms).
extern "C" __global__ void rms_norm(const float* __restrict__ x, const float* __restrict__ w,
                                    float* __restrict__ out, int n, float eps) {
    PDL_WAIT();
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float* o = out + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        o[i] = xr[i] * inv * w[i];
    }
}

// A folded norm's output for passes of several rows (the one-row pass folds
// it into `mvr`'s epilogue): per 32-value group of each row of the new
// residual x, the int8 blocks of x ⊙ g and Σx², computed as mvr_body
// computes them, so that a row's bits do not depend on the pass's row count
// (speculation's k-row passes against one-row steps). grid (n / 32, rows).
extern "C" __global__ void __launch_bounds__(32) fold_norm_rows(const float* __restrict__ x,
        const float* __restrict__ g, int n, i8* __restrict__ oq, float2* __restrict__ od, float* __restrict__ parts) {
    TL_SCOPE();
    PDL_WAIT();
    int lane = threadIdx.x;
    size_t gi = (size_t)blockIdx.y * n + blockIdx.x * 32 + lane;
    float v = x[gi];
    warp_quantize(v * g[blockIdx.x * 32 + lane], gi, oq, od);
    float ss = warp_sum(v * v);
    if (lane == 0) parts[(size_t)blockIdx.y * (n / 32) + blockIdx.x] = ss;
}

// rms_norm for decode rows with the int8 form (n a multiple of 32): grid
// (n / 256 rounded up, rows), 256 threads. Every block sums the squares of
// its whole row (14 KB of L2 for a 3584-wide row) and writes its own 256
// outputs, one warp per int8 block. One block per row (rms_norm) took ~8 µs:
// one SM reading the row twice and quantizing 112 blocks in turn.
extern "C" __global__ void __launch_bounds__(256) rms_norm_q8(const float* __restrict__ x,
        const float* __restrict__ w, float* __restrict__ out, int n, float eps, i8* __restrict__ xq,
        float2* __restrict__ xd) {
    TL_SCOPE();
    PDL_TRIGGER_EARLY();
    __shared__ float scratch[8];
    int row = blockIdx.y, i = blockIdx.x * 256 + threadIdx.x;
    float wi = i < n ? w[i] : 0.0f;  // weights: before the wait
    PDL_WAIT();
    const float* xr = x + (size_t)row * n;
    const float4* x4 = (const float4*)xr;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < n / 4; j += 256) {
        float4 v = x4[j];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = block_reduce_w<8>(ss, scratch, AddF());
    float inv = rsqrtf(ss / n + eps);
    // n % 32 == 0: a warp is wholly inside the row or wholly past it.
    if (i < n) {
        float v = xr[i] * inv * wi;
        out[(size_t)row * n + i] = v;
        warp_quantize(v, (size_t)row * n + i, xq, xd);
    }
}

// RoPE on a row of q and of k, then k and v into the f16 cache at the row's
// slot: rope(q), rope(k) and kv_store in one launch. Block (row, head): heads
// of q first, then the KV heads (rotated, stored with their v). Threads take
// the head's pairs.
extern "C" __global__ void rope_store(float* __restrict__ q, float* __restrict__ k,
                                      const float* __restrict__ v, const u32* __restrict__ positions,
                                      const u32* __restrict__ slots, u16* __restrict__ kc,
                                      u16* __restrict__ vc, int q_cols, int kv_dim, int head_dim,
                                      int dims, float step, float freq_scale, int halves) {
    int half = dims / 2, nqh = q_cols / head_dim;
    int row = blockIdx.x, hh = blockIdx.y;
    bool is_k = hh >= nqh;
    int h = is_k ? hh - nqh : hh;
    float* head = (is_k ? k + (size_t)row * kv_dim : q + (size_t)row * q_cols) + h * head_dim;
    // Positions and slots are uploaded by the host before the pass: the
    // angles are computed before waiting for the product that writes q and
    // k (a thread's first pair; blockDim usually covers every pair).
    float pos = (float)positions[row];
    size_t dst = (size_t)slots[row] * kv_dim + h * head_dim;
    float s0 = 0.0f, c0 = 1.0f;
    if (threadIdx.x < half) rope_angle(pos, threadIdx.x, step, freq_scale, s0, c0);
    PDL_WAIT();
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s = s0, c = c0;
        if (i != threadIdx.x) rope_angle(pos, i, step, freq_scale, s, c);
        int a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
        float x0 = head[a], x1 = head[b];
        float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        head[a] = y0;
        head[b] = y1;
        if (is_k) {
            kc[dst + a] = f2h(y0);
            kc[dst + b] = f2h(y1);
        }
    }
    if (is_k) {
        for (int d = dims + threadIdx.x; d < head_dim; d += blockDim.x) kc[dst + d] = f2h(head[d]);
        const float* vr = v + (size_t)row * kv_dim + h * head_dim;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) vc[dst + d] = f2h(vr[d]);
    }
}

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608f;
    return 0.5f * x * (1.0f + tanhf(k * x * (1.0f + 0.044715f * x * x)));
}

// gate = act(gate) * up; act 0 = SiLU, 1 = GELU (tanh).
extern "C" __global__ void gated_act(float* __restrict__ g, const float* __restrict__ u, size_t n, int act) {
    PDL_WAIT();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = g[i];
    float a = act == 0 ? x / (1.0f + __expf(-x)) : gelu_tanh(x);
    g[i] = a * u[i];
}

extern "C" __global__ void add(float* __restrict__ x, const float* __restrict__ y, size_t n) {
    PDL_WAIT();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// out[r] = x[rows[r]]; one block per output row.
extern "C" __global__ void gather_rows(const float* __restrict__ x, const u32* __restrict__ rows,
                                       float* __restrict__ out, int cols) {
    PDL_WAIT();
    const float* src = x + (size_t)rows[blockIdx.x] * cols;
    float* dst = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// out[r][c] += bias[c] for a [rows, cols] matrix.
extern "C" __global__ void add_bias(float* __restrict__ out, const float* __restrict__ bias, int cols, size_t n) {
    PDL_WAIT();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += bias[i % cols];
}
