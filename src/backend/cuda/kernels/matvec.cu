// Decode-time products: out[t][r] = W[r] · x[t] (+ bias[r]) for T ≤ 16 input
// rows, one warp per output row, weights unpacked in registers (never
// dequantized to memory). Quantized weights meet the input quantized to
// int8 blocks of 32 (`quantize_q8`: xq int8, xd = (scale, scale·Σq)) through
// dp4a; F16 weights meet the f32 input directly.
//
// Device layouts (`weights.rs` repacks the file's blocks into these at load,
// the same bytes in planes so every lane's load is 16 bytes and aligned):
//   Q4_K: planes qs[nblk][128] | head[nblk][16] (d, dmin, scales).
//   Q6_K: planes ql[nblk][128] | qh[nblk][64] | scales[nblk][16] | d[nblk] (f16).
//   Q5_0: planes qs[nblk][16] | qh[nblk] (u32) | d[nblk] (f16).
//   Q8_0: planes qs[nblk][32] | d[nblk] (f16).
//   Q4_0: planes qs[nblk][16] | d[nblk] (f16); Q4_1 adds | m[nblk] (f16).
//   F16:  row-major halves.
// nblk = rows · blocks per row, blocks in row-major order.

// A lane's share of the dot products of weight row `row` with T inputs,
// added to acc[T]. Each weight format is a struct: LANES lanes share one of
// its blocks, `load` fetches a lane's raw share of block b (weights and
// scales, 16-byte loads that bypass L1, which keeps the input there), and
// `dot` multiplies it with the inputs (`Raw::fold` ORs one word of each of
// its loads, to tie on); `prefetch` asks L2 for the first bytes of a
// row (its quant plane) before the kernel waits for its input (PDL_WAIT),
// unless the row is short enough to be loaded whole before that wait
// (`one_step`). `dot_rows` issues the loads of U blocks before the first
// use, so each lane has U · 16+ bytes of weights in flight instead of one
// load, then its dependent scale and input loads, per step (kernel notes
// #54). Blocks are still summed in ascending order:
// the same bits as one block per step.
// The activations' pointers carry no __restrict__: with it they are read
// through the non-coherent path (ld.global.nc), and a kernel whose weight
// loads were issued before PDL_WAIT then read stale activations written by
// the kernel before it (greedy tokens changed from run to run; kernel notes
// #78). Plain loads cost nothing measurable.
#define DOT_ARGS const u8* __restrict__ w, int row, int rows, int cols, const i8* xq, \
    const float2* xd, const float* xf, float* acc

// Blocks in flight per lane, per format, in the plain products (mv) and the
// gated ones (mvg). Measured on 7B shapes (kernel notes #54): two for the
// 32-weight formats and F16 (+8–12% decode), one for the k-quants, whose
// registers would otherwise cost occupancy, and for the qkv/o/down grids of
// ~900 blocks a second wave. TANDEM_CUDA_NVRTC_OPTS="-DMV_U_Q4K=2" and so on
// to compare.
#ifndef MV_U_Q4K
#define MV_U_Q4K 1
#endif
#ifndef MVG_U_Q4K
#define MVG_U_Q4K 1
#endif
#ifndef MV_U_Q6K
#define MV_U_Q6K 1
#endif
#ifndef MVG_U_Q6K
#define MVG_U_Q6K 1
#endif
#ifndef MV_U_Q5_0
#define MV_U_Q5_0 1
#endif
#ifndef MVG_U_Q5_0
#define MVG_U_Q5_0 1
#endif
#ifndef MV_U_Q32
#define MV_U_Q32 2
#endif
#ifndef MVG_U_Q32
#define MVG_U_Q32 2
#endif
// Q8_0's lanes hold half a block each (16 bytes): 4 and 2 (kernel notes #75).
#ifndef MV_U_Q8_0
#define MV_U_Q8_0 4
#endif
#ifndef MVG_U_Q8_0
#define MVG_U_Q8_0 2
#endif
#ifndef MV_U_F16
#define MV_U_F16 2
#endif
#ifndef MVG_U_F16
#define MVG_U_F16 2
#endif

// Weights are read once per step: L1::no_allocate leaves L1 to the input,
// which every row of the block reads again. `volatile` (since kernel notes
// #75) also keeps them in program order with PDL_WAIT, itself volatile: the
// one-step path (dot_rows) relies on its loads staying before the wait.
__device__ __forceinline__ int4 ld_stream(const void* p) {
    int4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ u32 ld_stream_u32(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ u16 ld_stream_u16(const void* p) {
    u16 v;
    asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
    return v;
}

// An asynchronous 16-byte copy from global to shared memory through L2
// only (cp.async.cg, LDGSTS): the value travels while the product's loop
// runs and holds no register meanwhile, and it is coherent with what the
// kernels before wrote once past the wait. cp_async_wait: this thread's
// copies have landed.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"((u32)__cvta_generic_to_shared(smem)), "l"(gmem)
                 : "memory");
}
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// `x` made to depend on `y` without changing it: x | (y & 0). The zero is
// the top bit of the device's nanosecond clock (set from the year 2262),
// which no compiler can fold: zeros from a row count or an aligned pointer's
// low bit were folded by ptxas where it could prove them. Tying the first
// word a block's arithmetic uses to its other loads makes the compiler issue
// all of a block's loads before waiting on any: left alone, it issued a
// scale's load only after the quants had arrived and were unpacked, two
// trips to memory per block (kernel notes #68).
__device__ __forceinline__ u32 opaque_zero() {
    u32 z;
    asm("{\n\t.reg .u32 t;\n\tmov.u32 t, %%globaltimer_hi;\n\tshr.u32 %0, t, 31;\n\t}" : "=r"(z));
    return z;
}
__device__ __forceinline__ u32 tie(u32 x, u32 y) {
    return x | (y & opaque_zero());
}

// `first`: this call makes the kernel's first reads of what earlier
// kernels wrote, so it waits for them (PDL_WAIT). Where a warp covers a
// whole row in one step (the small models' rows), the wait comes after the
// step's weight loads: weights are written by no kernel, so they travel
// while the kernel before finishes, and after the wait only the input's
// trip is left (0.5B +2%, 1.5B +2%; on 7B's longer rows it cost 2.8%).
#ifndef PRELOAD
#define PRELOAD 1
#endif
#ifndef PREFETCH_ONE_STEP
#define PREFETCH_ONE_STEP 0
#endif
// Blocks of a row one lane loads per step: more input rows bring more work
// per weight byte and more registers, so fewer blocks in flight.
template <int T, int UK>
__device__ __forceinline__ constexpr int step_blocks() { return T >= 4 ? 1 : T >= 2 ? (UK + 1) / 2 : UK; }
// Formats whose products have the one-step path at all: not F16, whose
// rows (8 weights a lane per block) fit one step only below 512 columns,
// and where the path's mere presence changed the loop's code (7B F16
// 197.5 → 190.1 tok/s).
struct F16;
template <class K> struct Preloads { static constexpr bool value = PRELOAD; };
template <> struct Preloads<F16> { static constexpr bool value = false; };
// Whether a warp covers a row of `cols` in one step of U blocks a lane, its
// weights then loaded before the wait.
template <class K, int U>
__device__ __forceinline__ bool one_step(int cols) {
    return Preloads<K>::value && cols / K::COLS <= WARP / K::LANES * U;
}
// The L2 prefetch of a row's first bytes, unless the row is loaded whole
// before the wait anyway: there the prefetch only doubled the requests
// (0.5B 1,910 → 1,972 without it; -DPREFETCH_ONE_STEP=1 to compare).
template <class K, int U>
__device__ __forceinline__ void prefetch_row(const u8* w, int row, int rows, int cols) {
    if (PREFETCH_ONE_STEP || !one_step<K, U>(cols)) K::prefetch(w, row, rows, cols);
}
// One step of dot_rows, in two halves so that a wait can come between
// them: a lane's U blocks from b0 loaded, then multiplied with the input.
template <class K, int U>
__device__ __forceinline__ void load_step(typename K::Raw* r, const u8* __restrict__ w, int row, int rows, int nb,
                                          int b0, int lane) {
    constexpr int PER = WARP / K::LANES;
#pragma unroll
    for (int u = 0; u < U; u++)
        if (b0 + u * PER < nb) r[u] = K::load(w, row, rows, nb, b0 + u * PER, lane);
}
template <class K, int T, int U>
__device__ __forceinline__ void dot_step(const typename K::Raw* r, int nb, int b0, int lane, int cols, const i8* xq,
                                         const float2* xd, const float* xf, float* acc) {
    constexpr int PER = WARP / K::LANES;
#pragma unroll
    for (int u = 0; u < U; u++)
        if (b0 + u * PER < nb) K::template dot<T>(r[u], b0 + u * PER, lane, cols, xq, xd, xf, acc);
}
// `after_wait()` runs right after the wait (with `first`): what the caller
// reads of the kernels before, issued as early as it can be.
struct NoHook {
    __device__ void operator()() const {}
};
template <class K, int T, int UK, class Hook = NoHook>
__device__ __forceinline__ void dot_rows(DOT_ARGS, bool first = false, Hook after_wait = {}) {
    constexpr int PER = WARP / K::LANES, U = step_blocks<T, UK>();
    int lane = threadIdx.x % WARP, nb = cols / K::COLS;
    if (first && one_step<K, U>(cols)) {
        // One step covers the row: a path of its own, so the loop below
        // compiles as it did without it (7B −1.5% when the two shared one).
        int b0 = lane / K::LANES;
        typename K::Raw r[U];
        load_step<K, U>(r, w, row, rows, nb, b0, lane);
        PDL_WAIT();
        after_wait();
        dot_step<K, T, U>(r, nb, b0, lane, cols, xq, xd, xf, acc);
        return;
    }
    if (first) {
        PDL_WAIT();
        after_wait();
    }
    for (int b0 = lane / K::LANES; b0 < nb; b0 += PER * U) {
        typename K::Raw r[U];
        load_step<K, U>(r, w, row, rows, nb, b0, lane);
        dot_step<K, T, U>(r, nb, b0, lane, cols, xq, xd, xf, acc);
    }
}

// The gated products' two rows of one index (gate and up) block by block:
// both blocks' loads issued before either is used, so a row pair costs one
// trip to memory per block index instead of two (kernel notes #70). Each
// lane still visits its blocks in ascending order: the same sums as
// dot_rows. Only where it pays (a format's PAIR), and for one input row:
// the registers of two blocks' weights cost blocks per SM (Q8_0 −6%).
template <class K, int T>
__device__ __forceinline__ void pair_dots(const typename K::Raw& rg, const typename K::Raw& ru, int b, int lane,
                                          int cols, const i8* xq, const float2* xd, const float* xf, float* g,
                                          float* u) {
    // The input's address depends on a word of every load of both blocks
    // (`fold`): no product, nor part of one (the compiler may reorder
    // integer sums), starts before both have arrived.
    const i8* x = xq + tie(0, rg.fold() | ru.fold());
    K::template dot<T>(rg, b, lane, cols, x, xd, xf, g);
    K::template dot<T>(ru, b, lane, cols, x, xd, xf, u);
}
template <class K, int T>
__device__ __forceinline__ void dot_rows_pair(const u8* __restrict__ wg, const u8* __restrict__ wu, int row,
        int rows, int cols, const i8* xq, const float2* xd,
        const float* xf, float* g, float* u, bool first = false) {
    constexpr int PER = WARP / K::LANES;
    int lane = threadIdx.x % WARP, nb = cols / K::COLS;
    if (first && one_step<K, 1>(cols)) {  // one step covers the row, as in dot_rows
        int b = lane / K::LANES;
        typename K::Raw rg, ru;
        if (b < nb) {
            rg = K::load(wg, row, rows, nb, b, lane);
            ru = K::load(wu, row, rows, nb, b, lane);
        }
        PDL_WAIT();
        if (b < nb) pair_dots<K, T>(rg, ru, b, lane, cols, xq, xd, xf, g, u);
        return;
    }
    if (first) PDL_WAIT();
    for (int b = lane / K::LANES; b < nb; b += PER) {
        typename K::Raw rg = K::load(wg, row, rows, nb, b, lane), ru = K::load(wu, row, rows, nb, b, lane);
        pair_dots<K, T>(rg, ru, b, lane, cols, xq, xd, xf, g, u);
    }
}

__device__ __forceinline__ void scale_min_k4(int j, const u8* q, float& d, float& m) {
    if (j < 4) {
        d = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K in planes qs[nblk][128] | head[nblk][16] (d, dmin, 12 scale bytes).
// Four lanes per block, lane j = 2g + h owning qs[16j..16j+16) and
// qs[64+16j..+16): positions 16h..16h+15 of sub-blocks 2g, 2g+1 (low and
// high nibbles) and 2g+4, 2g+5. So the four lanes of a block read 64
// contiguous bytes per load, whole 32-byte sectors; with the file's
// 144-byte blocks every load used half of two sectors, and L2 saw twice
// the requests for the same bytes (kernel notes #75).
struct Q4K {
    static constexpr int LANES = 4, COLS = 256, U = MV_U_Q4K, UG = MVG_U_Q4K;
    static constexpr bool PAIR = true;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        size_t n = (size_t)cols / 256 * 128;
        prefetch_l2(w + row * n, n);
    }
    struct Raw {
        int4 q0, q1, h;
        __device__ u32 fold() const { return q0.x | q1.x | h.x; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
        const u8* qs = w + bi * 128 + (lane % 4) * 16;
        Raw r{ld_stream(qs), ld_stream(qs + 64), ld_stream(w + nblk * 128 + bi * 16)};
        r.q0.x = tie(r.q0.x, r.q1.x | r.h.x);
        return r;
    }
    template <int T, bool TIE = false>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        int j = lane % 4, g = j / 2, h = j % 2, nx = cols / 32;
        float d = h2f((u32)r.h.x & 0xffff), dmin = h2f((u32)r.h.x >> 16);
        // Scales and mins of sub-blocks 2g, 2g+1 (6 bits of bytes 2g, 2g+1
        // of the first and second four) and 2g+4, 2g+5 (4 bits of the
        // last four, their top 2 from the first and second four's).
        u32 A = (u32)r.h.y >> (16 * g), B = (u32)r.h.z >> (16 * g), C = (u32)r.h.w >> (16 * g);
        float s0 = A & 63, s1 = (A >> 8) & 63, m0 = B & 63, m1 = (B >> 8) & 63;
        float s4 = (C & 15) | ((A >> 2) & 48), s5 = ((C >> 8) & 15) | ((A >> 10) & 48);
        float m4 = ((C >> 4) & 15) | ((B >> 2) & 48), m5 = ((C >> 12) & 15) | ((B >> 10) & 48);
        // The high nibbles stay in place (16× their value) and meet the
        // input through an unsigned × signed dp4a; the scale / 16 undoes
        // the factor exactly (a power of two).
        s1 *= 0.0625f;
        s5 *= 0.0625f;
        const int* qa = (const int*)&r.q0;
        const int* qb = (const int*)&r.q1;
#pragma unroll
        for (int t = 0; t < T; t++) {
            const i8* xr = xq + (size_t)t * cols + b * 256 + 64 * g + 16 * h;
            int4 x0 = *(const int4*)xr, x1 = *(const int4*)(xr + 32), x4 = *(const int4*)(xr + 128),
                 x5 = *(const int4*)(xr + 160);
            // TIE: the input's scales loaded here, and the first input word
            // of each of the four dp4a chains made to depend on every load
            // of the step, weights and input. (Without it the code below is
            // as it was before TIE: the untied kernels' SASS is unchanged.)
            float2 ta[4];
            if constexpr (TIE) {
                const float2* ts = xd + (size_t)t * nx + b * 8 + 2 * g;
                ta[0] = ts[0], ta[1] = ts[1], ta[2] = ts[4], ta[3] = ts[5];
                u32 z = opaque_zero() & (r.fold() | x0.x | x1.x | x4.x | x5.x | __float_as_uint(ta[0].x)
                                         | __float_as_uint(ta[1].x) | __float_as_uint(ta[2].x)
                                         | __float_as_uint(ta[3].x));
                x0.x |= z;
                x1.x |= z;
                x4.x |= z;
                x5.x |= z;
            }
            const int* p0 = (const int*)&x0;
            const int* p1 = (const int*)&x1;
            const int* p4 = (const int*)&x4;
            const int* p5 = (const int*)&x5;
            int S0 = 0, S1 = 0, S4 = 0, S5 = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                S0 = dp4a(qa[i] & 0x0F0F0F0F, p0[i], S0);
                S1 = dp4a_us(qa[i] & 0xF0F0F0F0, p1[i], S1);
                S4 = dp4a(qb[i] & 0x0F0F0F0F, p4[i], S4);
                S5 = dp4a_us(qb[i] & 0xF0F0F0F0, p5[i], S5);
            }
            const float2* xs = xd + (size_t)t * nx + b * 8 + 2 * g;
            float2 a0 = TIE ? ta[0] : xs[0], a1 = TIE ? ta[1] : xs[1], a4 = TIE ? ta[2] : xs[4],
                   a5 = TIE ? ta[3] : xs[5];
            // Two lanes share each sub-block, and a min term covers the
            // whole sub-block's input: lane h = 0 adds those of sub-blocks
            // 2g, 2g+1, lane h = 1 those of 2g+4, 2g+5.
            float mins = h ? m4 * a4.y + m5 * a5.y : m0 * a0.y + m1 * a1.y;
            acc[t] += d * (s0 * a0.x * (float)S0 + s1 * a1.x * (float)S1 + s4 * a4.x * (float)S4
                           + s5 * a5.x * (float)S5) - dmin * mins;
        }
    }
};

// Q6_K: four lanes per block, lane (n, l16) owning ql[64n+l16..+16],
// ql[64n+32+l16..+16] and qh[32n+l16..+16]: 64 weights at y = 128n + 32k +
// l16 + i, k = 0..3, with scales 8n + l16/16 + 2k of the block's 16.
struct Q6K {
    static constexpr int LANES = 4, COLS = 256, U = MV_U_Q6K, UG = MVG_U_Q6K;
    static constexpr bool PAIR = false;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        size_t n = (size_t)cols / 256 * 128;
        prefetch_l2(w + row * n, n);
        prefetch_l2(w + (size_t)rows * n + row * n / 2, n / 2);
    }
    struct Raw {
        int4 a, b, c, s;
        u32 d;
        __device__ u32 fold() const { return a.x | b.x | c.x | s.x | d; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        int q4 = lane % 4, n = q4 / 2, l16 = (q4 % 2) * 16;
        size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
        const u8* ql = w + bi * 128 + 64 * n + l16;
        Raw r{ld_stream(ql), ld_stream(ql + 32), ld_stream(w + nblk * 128 + bi * 64 + 32 * n + l16),
              ld_stream(w + nblk * 192 + bi * 16), ld_stream_u16(w + nblk * 208 + bi * 2)};
        r.a.x = tie(r.a.x, r.b.x | r.s.x | r.d);
        return r;
    }
    template <int T, bool TIE = false>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        int q4 = lane % 4, n = q4 / 2, h = q4 % 2, l16 = h * 16, nx = cols / 32;
        float d = h2f((u16)r.d);
        u32 wlo = n ? r.s.z : r.s.x, whi = n ? r.s.w : r.s.y;
        float sk[4];
#pragma unroll
        for (int k = 0; k < 4; k++) sk[k] = d * (float)(i8)(((k < 2 ? wlo : whi) >> (8 * (h + 2 * (k % 2)))) & 0xFF);
        const int* a = (const int*)&r.a;
        const int* bb = (const int*)&r.b;
        const int* c = (const int*)&r.c;
        int v[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[0][i] = __vsub4((a[i] & 0x0F0F0F0F) | ((c[i] & 0x03030303) << 4), 0x20202020);
            v[1][i] = __vsub4((bb[i] & 0x0F0F0F0F) | (((c[i] >> 2) & 0x03030303) << 4), 0x20202020);
            v[2][i] = __vsub4(((a[i] >> 4) & 0x0F0F0F0F) | (((c[i] >> 4) & 0x03030303) << 4), 0x20202020);
            v[3][i] = __vsub4(((bb[i] >> 4) & 0x0F0F0F0F) | (((c[i] >> 6) & 0x03030303) << 4), 0x20202020);
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            const i8* xr = xq + (size_t)t * cols + b * 256 + 128 * n + l16;
            const float2* xs = xd + (size_t)t * nx + b * 8 + 4 * n;
            float sum = 0.0f;
            int4 xt[4];
            float st[4];
            if constexpr (TIE) {  // as Q4K's: all of the step's loads before the first dp4a
                u32 all = r.fold();
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    xt[k] = *(const int4*)(xr + 32 * k);
                    st[k] = xs[k].x;
                    all |= xt[k].x | __float_as_uint(st[k]);
                }
                u32 z = opaque_zero() & all;
#pragma unroll
                for (int k = 0; k < 4; k++) xt[k].x |= z;
            }
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int4 x = TIE ? xt[k] : *(const int4*)(xr + 32 * k);
                const int* xi = (const int*)&x;
                int s = 0;
#pragma unroll
                for (int i = 0; i < 4; i++) s = dp4a(v[k][i], xi[i], s);
                sum += sk[k] * (TIE ? st[k] : xs[k].x) * (float)s;
            }
            acc[t] += sum;
        }
    }
};

// A format whose dot ties every dp4a chain's first input word to all of
// the step's loads, weights and input (Q4_K's and Q6_K's `dot<T, true>`),
// so that all are issued before the first dp4a. Left alone, ptxas put some
// of the input's loads after it (a second trip per step) or not, depending
// on the code around the loop: the residual products' loop changed so when
// their epilogue's operands were loaded early (kernel notes #87). Only
// there: it takes registers (the Q/K/V product's 52 → 64 would cost it its
// single wave of 1,152 blocks). -DTIE_INPUT=0, -DTIE_INPUT_Q6K=0 to compare.
#ifndef TIE_INPUT
#define TIE_INPUT 1
#endif
#ifndef TIE_INPUT_Q6K
#define TIE_INPUT_Q6K 1
#endif
template <class K, bool TIE>
struct TiedDot : K {
    template <int T>
    __device__ static __forceinline__ void dot(const typename K::Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        K::template dot<T, TIE>(r, b, lane, cols, xq, xd, xf, acc);
    }
};
template <class F> struct Tied { using type = F; };
template <> struct Tied<Q4K> { using type = TiedDot<Q4K, TIE_INPUT>; };
template <> struct Tied<Q6K> { using type = TiedDot<Q6K, TIE_INPUT_Q6K>; };

// Σ w·x over one 32-weight block of the int8 input at xr: lo holds weights
// 0..15 and hi 16..31, four per int. The inner product of the 32-element
// formats (Q5_0, Q4_0, Q4_1, Q8_0).
__device__ __forceinline__ int dot_block32(const int* lo, const int* hi, const i8* xr) {
    int4 x0 = *(const int4*)xr, x1 = *(const int4*)(xr + 16);
    const int* a = (const int*)&x0;
    const int* c = (const int*)&x1;
    int s = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        s = dp4a(lo[i], a[i], s);
        s = dp4a(hi[i], c[i], s);
    }
    return s;
}

// The fifth bits of four weights (bits 0..3 of h) moved to bit 4 of each byte.
__device__ __forceinline__ int spread4(u32 h) {
    return ((h & 1) << 4) | ((h & 2) << 11) | ((h & 4) << 18) | ((h & 8) << 25);
}

// Q5_0: one lane per 32-weight block.
struct Q5_0 {
    static constexpr int LANES = 1, COLS = 32, U = MV_U_Q5_0, UG = MVG_U_Q5_0;
    static constexpr bool PAIR = false;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        size_t n = (size_t)cols / 2;
        prefetch_l2(w + row * n, n);
    }
    struct Raw {
        int4 q;
        u32 h, d;
        __device__ u32 fold() const { return q.x | h | d; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
        Raw r{ld_stream(w + bi * 16), ld_stream_u32(w + nblk * 16 + bi * 4), ld_stream_u16(w + nblk * 20 + bi * 2)};
        r.h = tie(r.h, r.d);
        return r;
    }
    template <int T>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        int nb = cols / 32;
        float d = h2f((u16)r.d);
        const int* qi = (const int*)&r.q;
        int lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            lo[i] = (qi[i] & 0x0F0F0F0F) | spread4(r.h >> (4 * i));
            hi[i] = ((qi[i] >> 4) & 0x0F0F0F0F) | spread4(r.h >> (16 + 4 * i));
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            int s = dot_block32(lo, hi, xq + (size_t)t * cols + b * 32);
            float2 xs = xd[(size_t)t * nb + b];
            acc[t] += d * (xs.x * (float)s - 16.0f * xs.y);
        }
    }
};

// Q4_0 (w = d·(q − 8)) and Q4_1 (w = d·q + m): one lane per 32-weight block
// (its 16 quant bytes: consecutive lanes read consecutive bytes).
template <bool MIN>
struct Q4Legacy {
    static constexpr int LANES = 1, COLS = 32, U = MV_U_Q32, UG = MVG_U_Q32;
    static constexpr bool PAIR = false;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        Q5_0::prefetch(w, row, rows, cols);  // the same 16-byte quant plane
    }
    struct Raw {
        int4 q;
        u32 d, m;
        __device__ u32 fold() const { return q.x | d | m; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
        const u8* dp = w + nblk * 16;
        return Raw{ld_stream(w + bi * 16), ld_stream_u16(dp + bi * 2), MIN ? ld_stream_u16(dp + (nblk + bi) * 2) : 0u};
    }
    template <int T>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        int nb = cols / 32;
        float d = h2f((u16)r.d), m = MIN ? h2f((u16)r.m) : 0.0f;
        const int* qi = (const int*)&r.q;
        int lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            lo[i] = qi[i] & 0x0F0F0F0F;
            hi[i] = (qi[i] >> 4) & 0x0F0F0F0F;
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            int s = dot_block32(lo, hi, xq + (size_t)t * cols + b * 32);
            float2 xs = xd[(size_t)t * nb + b];
            acc[t] += MIN ? d * xs.x * (float)s + m * xs.y : d * (xs.x * (float)s - 8.0f * xs.y);
        }
    }
};

// Q8_0: two lanes per 32-weight block, lane h holding weights 16h..16h+15,
// so consecutive lanes read consecutive 16 bytes (whole sectors: one lane
// per block read half of a sector per load, kernel notes #75).
struct Q8_0 {
    static constexpr int LANES = 2, COLS = 32, U = MV_U_Q8_0, UG = MVG_U_Q8_0;
    static constexpr bool PAIR = false;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        prefetch_l2(w + (size_t)row * cols, cols);
    }
    struct Raw {
        int4 q;
        u32 d;
        __device__ u32 fold() const { return q.x | d; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
        return Raw{ld_stream(w + bi * 32 + 16 * (lane % 2)), ld_stream_u16(w + nblk * 32 + bi * 2)};
    }
    template <int T>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        int nb = cols / 32;
        float d = h2f((u16)r.d);
        const int* q = (const int*)&r.q;
#pragma unroll
        for (int t = 0; t < T; t++) {
            int4 x = *(const int4*)(xq + (size_t)t * cols + b * 32 + 16 * (lane % 2));
            const int* xi = (const int*)&x;
            int s = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) s = dp4a(q[i], xi[i], s);
            acc[t] += d * xd[(size_t)t * nb + b].x * (float)s;
        }
    }
};

// F16: eight halves per lane per block, input in f32.
struct F16 {
    static constexpr int LANES = 1, COLS = 8, U = MV_U_F16, UG = MVG_U_F16;
    static constexpr bool PAIR = false;
    __device__ static __forceinline__ void prefetch(const u8* w, int row, int rows, int cols) {
        prefetch_l2(w + (size_t)row * cols * 2, (size_t)cols * 2);
    }
    struct Raw {
        int4 v;
        __device__ u32 fold() const { return v.x; }
    };
    __device__ static __forceinline__ Raw load(const u8* w, int row, int rows, int nb, int b, int lane) {
        return Raw{ld_stream(w + ((size_t)row * nb + b) * 16)};
    }
    template <int T>
    __device__ static __forceinline__ void dot(const Raw& r, int b, int lane, int cols, const i8* xq,
            const float2* xd, const float* xf, float* acc) {
        const u32* wp = (const u32*)&r.v;
        float wf[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            wf[2 * i] = h2f(wp[i] & 0xffff);
            wf[2 * i + 1] = h2f(wp[i] >> 16);
        }
#pragma unroll
        for (int t = 0; t < T; t++) {
            const float4* xr = (const float4*)(xf + (size_t)t * cols + b * 8);
            float4 x0 = xr[0], x1 = xr[1];
            acc[t] += wf[0] * x0.x + wf[1] * x0.y + wf[2] * x0.z + wf[3] * x0.w
                    + wf[4] * x1.x + wf[5] * x1.y + wf[6] * x1.z + wf[7] * x1.w;
        }
    }
};

// The format of each kernel name stem (MV_KERNELS).
typedef Q4K Fmt_q4_k;
typedef Q6K Fmt_q6_k;
typedef Q5_0 Fmt_q5_0;
typedef Q4Legacy<false> Fmt_q4_0;
typedef Q4Legacy<true> Fmt_q4_1;
typedef Q8_0 Fmt_q8_0;
typedef F16 Fmt_f16;

template <class A, class B> struct same_fmt { static constexpr bool value = false; };
template <class A> struct same_fmt<A, A> { static constexpr bool value = true; };

// Up to three matrices of one type sharing an input (Q, K, V): blocks
// [0, nb0) compute matrix 0, the next nb1 matrix 1, and so on, four rows per
// block (a warp per row). accum: add into out instead of overwriting (a
// projection straight into the residual stream).
struct Mats {
    const u8* w[3];
    const float* bias[3];
    float* out[3];
    int rows[3];
};

template <int T>
__device__ __forceinline__ bool pick_row(const Mats& m, int n_mats, int& k, int& row) {
    int blk = blockIdx.x;
    int nb0 = (m.rows[0] + 3) / 4, nb1 = (m.rows[1] + 3) / 4;
    int rows;
    if (blk < nb0) {
        k = 0;
        rows = m.rows[0];
    } else if (n_mats > 1 && blk < nb0 + nb1) {
        k = 1;
        blk -= nb0;
        rows = m.rows[1];
    } else if (n_mats > 2) {
        k = 2;
        blk -= nb0 + nb1;
        rows = m.rows[2];
    } else {
        return false;
    }
    row = blk * 4 + threadIdx.x / WARP;
    return row < rows;
}

// RoPE and the KV-cache store in the epilogue of the Q/K/V products (the
// rope_store kernel's arithmetic, so the same bits): `roles` gives 2 bits
// per matrix of the launch, 0 none, 1 q, 2 k, 3 v. Full-width rotation only
// (dims = head_dim, a multiple of 4). A block's four rows hold two rotation
// pairs: (w, w^1) for adjacent pairs; for halves the rows are permuted
// (halves_row) so that (w, w^2) are i and i + head_dim/2.
struct RopeArgs {
    const u32* positions;  // per input row
    const u32* slots;      // per input row
    u16* kc;
    u16* vc;
    float step, freq_scale;
    int head_dim, halves, roles;
};

__device__ __forceinline__ int halves_row(int row, int hd) {
    int base = row - row % 4, w = row % 4;
    return base / hd * hd + 2 * ((base % hd) / 4) + (w & 1) + (w >> 1) * (hd / 2);
}

template <int T>
__device__ __forceinline__ void rope_rows(float* acc, const float* bias, float* out, int row, int rows,
                                          const RopeArgs& rp, int role) {
    __shared__ float val[4][T];
    int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = warp_sum(acc[t]);
    float b = bias ? bias[row] : 0.0f;
    if (role == 3) {
        if (lane == 0)
            for (int t = 0; t < T; t++) {
                float y = 0.0f + acc[t] + b;
                out[(size_t)t * rows + row] = y;
                rp.vc[(size_t)rp.slots[t] * rows + row] = f2h(y);
            }
        return;
    }
    if (lane == 0)
        for (int t = 0; t < T; t++) val[w][t] = 0.0f + acc[t] + b;
    __syncthreads();
    int hd = rp.head_dim, d = row % hd, partner = rp.halves ? w ^ 2 : w ^ 1;
    bool first = rp.halves ? d < hd / 2 : d % 2 == 0;
    int i = rp.halves ? (first ? d : d - hd / 2) : d / 2;
    for (int t = lane; t < T; t += WARP) {
        float x0 = first ? val[w][t] : val[partner][t], x1 = first ? val[partner][t] : val[w][t];
        float s, c;
        rope_angle((float)rp.positions[t], i, rp.step, rp.freq_scale, s, c);
        float y = first ? x0 * c - x1 * s : x0 * s + x1 * c;
        out[(size_t)t * rows + row] = y;
        if (role == 2) rp.kc[(size_t)rp.slots[t] * rows + row] = f2h(y);
    }
}

template <int T>
__device__ __forceinline__ void store_rows(float* acc, const float* bias, float* out, int row, int rows, int accum) {
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = warp_sum(acc[t]);
    if (threadIdx.x % WARP == 0) {
        float b = bias ? bias[row] : 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++) {
            float* o = out + (size_t)t * rows + row;
            *o = (accum ? *o : 0.0f) + acc[t] + b;
        }
    }
}

__device__ __forceinline__ float act_fn(float x, int act) {
    return act == 0 ? x / (1.0f + __expf(-x)) : 0.5f * x * (1.0f + tanhf(0.7978845608f * x * (1.0f + 0.044715f * x * x)));
}

// An input whose norm was folded into the product that wrote it (mvr):
// its int8 blocks hold x ⊙ g, unnormalised, and `parts` (n per input row)
// the sums of x² over its 32-value groups. The norm's scale r = 1/rms(x)
// is common to the whole row, so it multiplies each dot product at the end
// (the int8 blocks of (x ⊙ g)·r and of x ⊙ g differ only in their scales).
// parts == nullptr: an ordinary input.
struct NormIn {
    const float* parts;
    int n;
    float eps;
};
// One input row's sums (up to 128 groups) are loaded right after the wait,
// beside the first weight loads, rather than after the loop: a trip to L2
// at every row's end made the gated product 3 µs slower on 7B (kernel
// notes #86). Returns whether it waited.
#ifndef NORM_EARLY
#define NORM_EARLY 1
#endif
struct NormEarly {
    float v[4];
};
template <int T>
__device__ __forceinline__ bool norm_early(const NormIn& nin, NormEarly& e) {
    if (T != 1 || !nin.parts || nin.n > 4 * WARP) return false;
    PDL_WAIT();
    int lane = threadIdx.x % WARP;
#pragma unroll
    for (int k = 0; k < 4; k++) e.v[k] = lane + k * WARP < nin.n ? nin.parts[lane + k * WARP] : 0.0f;
    return true;
}
// A lane sums groups lane, lane + 32, … of a row in that order, whichever
// path loads them (zeros past the row's groups leave the sum's bits as they
// are), so every row count scales by the same bits. Up to 128 groups, all
// rows' loads are issued before the first add: a loop of dependent loads
// made 5-row passes 8% slower (kernel notes #119).
template <int T>
__device__ __forceinline__ void scale_by_norm(const NormIn& nin, int cols, bool early, const NormEarly& e,
                                              float* a, float* b = nullptr) {
    if (!nin.parts) return;
    int lane = threadIdx.x % WARP;
    float ss[T];
    if (early) {
        ss[0] = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) ss[0] += e.v[k];
    } else if (nin.n <= 4 * WARP) {
        float v[T][4];
#pragma unroll
        for (int t = 0; t < T; t++)
#pragma unroll
            for (int k = 0; k < 4; k++)
                v[t][k] = lane + k * WARP < nin.n ? nin.parts[(size_t)t * nin.n + lane + k * WARP] : 0.0f;
#pragma unroll
        for (int t = 0; t < T; t++) {
            ss[t] = 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++) ss[t] += v[t][k];
        }
    } else {
#pragma unroll
        for (int t = 0; t < T; t++) {
            ss[t] = 0.0f;
            for (int i = lane; i < nin.n; i += WARP) ss[t] += nin.parts[(size_t)t * nin.n + i];
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        float r = rsqrtf(warp_sum(ss[t]) / cols + nin.eps);
        a[t] *= r;
        if (b) b[t] *= r;
    }
}

// The plain products: matrices [0, n_a) of the launch in format FA, the
// rest in FB. Two formats in one launch serve a Q/K/V whose V has more bits
// (Q4_K_M's Q6_K or Q8_0 in some layers): one launch instead of two.
template <class FA, class FB, int T, bool NORMED = false>
__device__ __forceinline__ void mv_body(Mats m, int n_mats, int n_a, int cols, const i8* xq,
        const float2* xd, const float* xf, int accum, RopeArgs rp, NormIn nin = NormIn{nullptr, 0, 0.0f}) {
    int k, row;
    if (!pick_row<T>(m, n_mats, k, row)) return;
    int role = (rp.roles >> (2 * k)) & 3;
    if ((role == 1 || role == 2) && rp.halves) row = halves_row(row, rp.head_dim);
    float acc[T];
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    // constant indices: a dynamic index into the parameter struct would copy it to local memory
    const u8* w = k == 0 ? m.w[0] : k == 1 ? m.w[1] : m.w[2];
    const float* bias = k == 0 ? m.bias[0] : k == 1 ? m.bias[1] : m.bias[2];
    float* out = k == 0 ? m.out[0] : k == 1 ? m.out[1] : m.out[2];
    int rows = k == 0 ? m.rows[0] : k == 1 ? m.rows[1] : m.rows[2];
    NormEarly ne;
    bool waited = false;
    if constexpr (NORMED) waited = NORM_EARLY && norm_early<T>(nin, ne);
    if constexpr (same_fmt<FA, FB>::value) {
        prefetch_row<FA, step_blocks<T, FA::U>()>(w, row, rows, cols);
        dot_rows<FA, T, FA::U>(w, row, rows, cols, xq, xd, xf, acc, !waited);
    } else if (k < n_a) {
        prefetch_row<FA, step_blocks<T, FA::U>()>(w, row, rows, cols);
        dot_rows<FA, T, FA::U>(w, row, rows, cols, xq, xd, xf, acc, !waited);
    } else {
        prefetch_row<FB, step_blocks<T, FB::U>()>(w, row, rows, cols);
        dot_rows<FB, T, FB::U>(w, row, rows, cols, xq, xd, xf, acc, !waited);
    }
    PDL_TRIGGER();
    if constexpr (NORMED) scale_by_norm<T>(nin, cols, waited, ne, acc);
    if (role) rope_rows<T>(acc, bias, out, row, rows, rp, role);
    else store_rows<T>(acc, bias, out, row, rows, accum);
}

#define MV_ARGS Mats m, int n_mats, int cols, const i8* xq, const float2* xd, \
    const float* xf, int accum, RopeArgs rp

// mv_<a>_<b>_t<T>: matrices [0, n_a) in format a, the rest in b.
#define MV2_KERNEL(TA, TB, T) \
extern "C" __global__ void __launch_bounds__(128) mv_##TA##_##TB##_t##T(MV_ARGS, int n_a) { \
    TL_SCOPE(); \
    mv_body<Fmt_##TA, Fmt_##TB, T>(m, n_mats, n_a, cols, xq, xd, xf, accum, rp); \
}
#define MV2N_KERNEL(TA, TB, T) \
extern "C" __global__ void __launch_bounds__(128) mvn_##TA##_##TB##_t##T(MV_ARGS, NormIn nin, int n_a) { \
    TL_SCOPE(); \
    mv_body<Fmt_##TA, Fmt_##TB, T, true>(m, n_mats, n_a, cols, xq, xd, xf, accum, rp, nin); \
}

// Blocks per SM the one-row gated products are compiled to fit: Q4_K's
// gate/up pair would take 91 registers (5 blocks) unbounded, 64 at 8 blocks
// spills (kernel notes #75). The other row counts stay unbounded (0).
#ifndef MVG_MIN_BLOCKS
#define MVG_MIN_BLOCKS 6
#endif
// The gated products' two dot products of one row (gate and up) for T
// inputs, summed over the warp: every lane holds g and u.
template <class F, int T, bool NORMED>
__device__ __forceinline__ void mvg_dots(const u8* __restrict__ wg, const u8* __restrict__ wu, int row, int rows,
        int cols, const i8* xq, const float2* xd, const float* xf,
        float* g, float* u, const NormIn& nin) {
    constexpr int U = F::PAIR && T == 1 ? 1 : step_blocks<T, F::UG>();
    prefetch_row<F, U>(wg, row, rows, cols);
    prefetch_row<F, U>(wu, row, rows, cols);
    for (int t = 0; t < T; t++) { g[t] = 0.0f; u[t] = 0.0f; }
    NormEarly ne;
    bool waited = false;
    if constexpr (NORMED) waited = NORM_EARLY && norm_early<T>(nin, ne);
    if (F::PAIR && T == 1) {
        dot_rows_pair<F, T>(wg, wu, row, rows, cols, xq, xd, xf, g, u, !waited);
    } else {
        dot_rows<F, T, F::UG>(wg, row, rows, cols, xq, xd, xf, g, !waited);
        dot_rows<F, T, F::UG>(wu, row, rows, cols, xq, xd, xf, u);
    }
    PDL_TRIGGER();
    if constexpr (NORMED) scale_by_norm<T>(nin, cols, waited, ne, g, u);
    for (int t = 0; t < T; t++) { g[t] = warp_sum(g[t]); u[t] = warp_sum(u[t]); }
}

#define MVG_ARGS const u8* __restrict__ wg, const u8* __restrict__ wu, float* __restrict__ out, int rows, \
    int cols, const i8* xq, const float2* xd, const float* xf, int act

#define MVG_BODY(TY, T, NORMED, NIN) \
    int row = blockIdx.x * 4 + threadIdx.x / WARP; \
    if (row >= rows) return; \
    float g[T], u[T]; \
    mvg_dots<Fmt_##TY, T, NORMED>(wg, wu, row, rows, cols, xq, xd, xf, g, u, NIN); \
    if (threadIdx.x % WARP == 0) \
        for (int t = 0; t < T; t++) out[(size_t)t * rows + row] = act_fn(g[t], act) * u[t];

#define MV_KERNELS(TY, T) \
extern "C" __global__ void __launch_bounds__(128) mv_##TY##_t##T(MV_ARGS) { \
    TL_SCOPE(); \
    mv_body<Fmt_##TY, Fmt_##TY, T>(m, n_mats, n_mats, cols, xq, xd, xf, accum, rp); \
} \
extern "C" __global__ void __launch_bounds__(128, T == 1 ? MVG_MIN_BLOCKS : 0) mvg_##TY##_t##T(MVG_ARGS) { \
    TL_SCOPE(); \
    MVG_BODY(TY, T, false, (NormIn{nullptr, 0, 0.0f})) \
}

// The products reading a folded norm's output (NormIn; T input rows). Per
// row they compute the bits the one-row kernels do: the sums of squares are
// added in the same order, and the dot products do not depend on T.
#define MVN_KERNELS(TY, T) \
extern "C" __global__ void __launch_bounds__(128) mvn_##TY##_t##T(MV_ARGS, NormIn nin) { \
    TL_SCOPE(); \
    mv_body<Fmt_##TY, Fmt_##TY, T, true>(m, n_mats, n_mats, cols, xq, xd, xf, accum, rp, nin); \
} \
extern "C" __global__ void __launch_bounds__(128, T == 1 ? MVG_MIN_BLOCKS : 0) mvgn_##TY##_t##T(MVG_ARGS, NormIn nin) { \
    TL_SCOPE(); \
    MVG_BODY(TY, T, true, nin) \
}

// -DMVR_EARLY=0: mvr's gains and old residuals read after the loop, its
// epilogue in one warp (the kernels before kernel notes #87).
#ifndef MVR_EARLY
#define MVR_EARLY 1
#endif
// A residual product with the next norm folded into its epilogue (decode,
// hidden sizes of a few thousand): x += W·y, then for each group of 32
// values of the new x the int8 blocks of x ⊙ g (oq, od) and Σx² (parts,
// rows / 32 per input row), which the next products read as a NormIn. A
// block of 32 warps owns one group, a row per warp, so the group is
// quantized from shared memory: no rms_norm launch, and no fence or
// counter between blocks (kernel notes #86).
template <class FF, int T>
__device__ __forceinline__ void mvr_body(const u8* __restrict__ w, float* x, int rows, int cols, const i8* xq,
        const float2* xd, const float* xf, const float* __restrict__ g, i8* oq, float2* od, float* parts) {
    using F = typename Tied<FF>::type;
    constexpr int U = step_blocks<T, F::U>();
    constexpr bool EARLY = MVR_EARLY && T == 1;
    __shared__ float vals[T][32];
    // The group's norm gains (weights) copied before the wait and its old
    // residual values right after it, by warp 0, rather than two trips to
    // memory in series after the loop (kernel notes #87).
    __shared__ __align__(16) float gain[32], old[32];
    int wi = threadIdx.x / WARP, lane = threadIdx.x % WARP, row = blockIdx.x * 32 + wi;
    size_t group = (size_t)blockIdx.x * 32;
    bool copier = EARLY && wi == 0 && lane < 8;
    if (copier) cp_async16(&gain[4 * lane], g + group + 4 * lane);
    float acc[T];
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    prefetch_row<F, U>(w, row, rows, cols);
    dot_rows<F, T, F::U>(w, row, rows, cols, xq, xd, xf, acc, true, [&] {
        if (copier) cp_async16(&old[4 * lane], x + group + 4 * lane);
    });
    PDL_TRIGGER();
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = warp_sum(acc[t]);
    if constexpr (EARLY) {
        if (lane == 0) vals[0][wi] = acc[0];
        if (copier) cp_async_wait();  // landed long ago; visible to all after the barrier
        __syncthreads();
        // Warp 0 quantizes while warp 1 stores the new residual and its sum
        // of squares: two shorter chains of shuffles at the kernel's end
        // (+0.3% over one warp doing both, kernel notes #87).
        if (wi > 1) return;
        float v = old[lane] + vals[0][lane];
        if (wi == 0) {
            warp_quantize(v * gain[lane], group + lane, oq, od);
        } else {
            x[group + lane] = v;
            float ss = warp_sum(v * v);
            if (lane == 0) parts[blockIdx.x] = ss;
        }
        return;
    }
    if (lane == 0)
        for (int t = 0; t < T; t++) {
            float* o = x + (size_t)t * rows + row;
            float v = *o + acc[t];
            *o = v;
            vals[t][wi] = v;
        }
    __syncthreads();
    if (wi < T) {
        float v = vals[wi][lane];
        size_t gi = (size_t)wi * rows + blockIdx.x * 32 + lane;
        warp_quantize(v * g[blockIdx.x * 32 + lane], gi, oq, od);
        float ss = warp_sum(v * v);
        if (lane == 0) parts[(size_t)wi * (rows / 32) + blockIdx.x] = ss;
    }
}
#define MVR_KERNEL(TY, T) \
extern "C" __global__ void __launch_bounds__(1024) mvr_##TY##_t##T(const u8* __restrict__ w, float* x, int rows, \
        int cols, const i8* xq, const float2* xd, const float* xf, const float* __restrict__ g, i8* oq, float2* od, \
        float* parts) { \
    TL_SCOPE(); \
    mvr_body<Fmt_##TY, T>(w, x, rows, cols, xq, xd, xf, g, oq, od, parts); \
}

// Instantiations (MV_KERNELS(type, T), MV2_KERNEL(a, b, T), DEQ_KERNELS(type))
// are generated per program by programs.rs, so the types compile in parallel.

// ---- Dequantization of 32-weight groups: for prefill (to f16, then a tensor-
// core GEMM) and for embedding lookups (to f32).

__device__ __forceinline__ void deq32_q4_k(const u8* w, int rows, int cols, int row, int g, float* o) {
    int nb = cols / 256, b = g / 8, sb = g % 8;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
    const u8* head = w + nblk * 128 + bi * 16;
    u32 dd = *(const u32*)head;
    float d = h2f(dd & 0xffff), dmin = h2f(dd >> 16), s, m;
    scale_min_k4(sb, head + 4, s, m);
    const u8* qs = w + bi * 128 + 32 * (sb / 2);
    int shift = (sb % 2) * 4;
    for (int i = 0; i < 32; i++) o[i] = d * s * (float)((qs[i] >> shift) & 0xF) - dmin * m;
}

__device__ __forceinline__ void deq32_q6_k(const u8* w, int rows, int cols, int row, int g, float* o) {
    int nb = cols / 256, b = g / 8, sb = g % 8, n = sb / 4, k = sb % 4;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
    const u8* ql = w + bi * 128 + 64 * n + (k % 2) * 32;
    const u8* qh = w + nblk * 128 + bi * 64 + 32 * n;
    const i8* sc = (const i8*)(w + nblk * 192) + bi * 16 + 8 * n + 2 * k;
    float d = h2f(((const u16*)(w + nblk * 208))[bi]);
    int shift = (k / 2) * 4;
    for (int i = 0; i < 32; i++) {
        int q = ((ql[i] >> shift) & 0xF) | (((qh[i] >> (2 * k)) & 3) << 4);
        o[i] = d * (float)sc[i / 16] * (float)(q - 32);
    }
}

__device__ __forceinline__ void deq32_q5_0(const u8* w, int rows, int cols, int row, int g, float* o) {
    int nb = cols / 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + g;
    const u8* qs = w + bi * 16;
    u32 h = ((const u32*)(w + nblk * 16))[bi];
    float d = h2f(((const u16*)(w + nblk * 20))[bi]);
    for (int i = 0; i < 32; i++) {
        int q = ((qs[i % 16] >> (i / 16 * 4)) & 0xF) | (((h >> i) & 1) << 4);
        o[i] = d * (float)(q - 16);
    }
}

__device__ __forceinline__ void deq32_q8_0(const u8* w, int rows, int cols, int row, int g, float* o) {
    int nb = cols / 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + g;
    const i8* qs = (const i8*)w + bi * 32;
    float d = h2f(((const u16*)(w + nblk * 32))[bi]);
    for (int i = 0; i < 32; i++) o[i] = d * (float)qs[i];
}

template <bool MIN>
__device__ __forceinline__ void deq32_q4_legacy(const u8* w, int rows, int cols, int row, int g, float* o) {
    int nb = cols / 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + g;
    const u8* qs = w + bi * 16;
    const u16* dp = (const u16*)(w + nblk * 16);
    float d = h2f(dp[bi]), m = MIN ? h2f(dp[nblk + bi]) : -8.0f * d;
    for (int i = 0; i < 32; i++) o[i] = d * (float)((qs[i % 16] >> (i / 16 * 4)) & 0xF) + m;
}
__device__ __forceinline__ void deq32_q4_0(const u8* w, int rows, int cols, int row, int g, float* o) {
    deq32_q4_legacy<false>(w, rows, cols, row, g, o);
}
__device__ __forceinline__ void deq32_q4_1(const u8* w, int rows, int cols, int row, int g, float* o) {
    deq32_q4_legacy<true>(w, rows, cols, row, g, o);
}

__device__ __forceinline__ void deq32_f16(const u8* w, int rows, int cols, int row, int g, float* o) {
    const u16* p = (const u16*)w + (size_t)row * cols + g * 32;
    for (int i = 0; i < 32; i++) o[i] = h2f(p[i]);
}

// Eight consecutive weights (col a multiple of 8) for the f16 tiles of the
// prefill GEMM: one thread per 16-byte store, so a warp writes 512
// contiguous bytes.
__device__ __forceinline__ void deq8_q4_k(const u8* w, int rows, int cols, int row, int col, float* o) {
    int nb = cols / 256, b = col / 256, sb = (col % 256) / 32, off = col % 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
    const u8* head = w + nblk * 128 + bi * 16;
    u32 dd = *(const u32*)head;
    float d = h2f(dd & 0xffff), dmin = h2f(dd >> 16), s, m;
    scale_min_k4(sb, head + 4, s, m);
    u64 q = *(const u64*)(w + bi * 128 + 32 * (sb / 2) + off);
    int shift = (sb % 2) * 4;
    for (int i = 0; i < 8; i++) o[i] = d * s * (float)((q >> (8 * i + shift)) & 0xF) - dmin * m;
}

__device__ __forceinline__ void deq8_q6_k(const u8* w, int rows, int cols, int row, int col, float* o) {
    int nb = cols / 256, b = col / 256, y = col % 256, n = y / 128, k = (y % 128) / 32, l = y % 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + b;
    u64 ql = *(const u64*)(w + bi * 128 + 64 * n + (k % 2) * 32 + l);
    u64 qh = *(const u64*)(w + nblk * 128 + bi * 64 + 32 * n + l);
    float sc = (float)((const i8*)(w + nblk * 192))[bi * 16 + 8 * n + l / 16 + 2 * k];
    float d = h2f(((const u16*)(w + nblk * 208))[bi]) * sc;
    int shift = (k / 2) * 4;
    for (int i = 0; i < 8; i++) {
        int qv = ((ql >> (8 * i + shift)) & 0xF) | (((qh >> (8 * i + 2 * k)) & 3) << 4);
        o[i] = d * (float)(qv - 32);
    }
}

__device__ __forceinline__ void deq8_q5_0(const u8* w, int rows, int cols, int row, int col, float* o) {
    int nb = cols / 32, g = col / 32, off = col % 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + g;
    u64 q = *(const u64*)(w + bi * 16 + off % 16);
    u32 h = ((const u32*)(w + nblk * 16))[bi] >> off;
    float d = h2f(((const u16*)(w + nblk * 20))[bi]);
    int shift = (off / 16) * 4;
    for (int i = 0; i < 8; i++) {
        int qv = ((q >> (8 * i + shift)) & 0xF) | (((h >> i) & 1) << 4);
        o[i] = d * (float)(qv - 16);
    }
}

__device__ __forceinline__ void deq8_q8_0(const u8* w, int rows, int cols, int row, int col, float* o) {
    int nb = cols / 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + col / 32;
    u64 q = *(const u64*)(w + (size_t)row * cols + col);
    float d = h2f(((const u16*)(w + nblk * 32))[bi]);
    for (int i = 0; i < 8; i++) o[i] = d * (float)(i8)((q >> (8 * i)) & 0xFF);
}

template <bool MIN>
__device__ __forceinline__ void deq8_q4_legacy(const u8* w, int rows, int cols, int row, int col, float* o) {
    int nb = cols / 32, off = col % 32;
    size_t nblk = (size_t)rows * nb, bi = (size_t)row * nb + col / 32;
    u64 q = *(const u64*)(w + bi * 16 + off % 16);
    const u16* dp = (const u16*)(w + nblk * 16);
    float d = h2f(dp[bi]), m = MIN ? h2f(dp[nblk + bi]) : -8.0f * d;
    int shift = (off / 16) * 4;
    for (int i = 0; i < 8; i++) o[i] = d * (float)((q >> (8 * i + shift)) & 0xF) + m;
}
__device__ __forceinline__ void deq8_q4_0(const u8* w, int rows, int cols, int row, int col, float* o) {
    deq8_q4_legacy<false>(w, rows, cols, row, col, o);
}
__device__ __forceinline__ void deq8_q4_1(const u8* w, int rows, int cols, int row, int col, float* o) {
    deq8_q4_legacy<true>(w, rows, cols, row, col, o);
}

__device__ __forceinline__ void deq8_f16(const u8* w, int rows, int cols, int row, int col, float* o) {
    const u16* p = (const u16*)w + (size_t)row * cols + col;
    for (int i = 0; i < 8; i++) o[i] = h2f(p[i]);
}

#define DEQ_KERNELS(NAME) \
extern "C" __global__ void dequant_##NAME(const u8* w, u16* out, int rows, int cols) { PDL_WAIT(); \
    size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x; \
    int gpr = cols / 8; \
    if (g >= (size_t)rows * gpr) return; \
    int row = g / gpr, col = (g % gpr) * 8; \
    float o[8]; \
    deq8_##NAME(w, rows, cols, row, col, o); \
    uint4 v; \
    v.x = f2h(o[0]) | ((u32)f2h(o[1]) << 16); \
    v.y = f2h(o[2]) | ((u32)f2h(o[3]) << 16); \
    v.z = f2h(o[4]) | ((u32)f2h(o[5]) << 16); \
    v.w = f2h(o[6]) | ((u32)f2h(o[7]) << 16); \
    *(uint4*)(out + (size_t)row * cols + col) = v; \
} \
extern "C" __global__ void embed_##NAME(const u8* w, const u32* ids, float* out, int rows, int cols, float scale) { PDL_WAIT(); \
    int r = blockIdx.y, gc = blockIdx.x * blockDim.x + threadIdx.x; \
    if (gc >= cols / 32) return; \
    float o[32]; \
    deq32_##NAME(w, rows, cols, ids[r], gc, o); \
    float* dst = out + (size_t)r * cols + gc * 32; \
    for (int i = 0; i < 32; i++) dst[i] = o[i] * scale; \
}

