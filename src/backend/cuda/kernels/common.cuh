// Types and helpers shared by every kernel. No CUDA headers: NVRTC compiles
// this without an include path (../shared/CUDA.md), so f16 conversion and
// the integer dot product are written as inline PTX / intrinsics here.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define WARP 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}

// Reductions with `op` (a functor) over a warp, and over a block of up to
// 1024 threads: `scratch` holds 32 values, `identity` stands in for the
// lanes past the block's warps (one call may follow another on the same
// scratch: each syncs first).
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* scratch, T identity, Op op) {
    v = warp_reduce(v, op);
    int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    __syncthreads();
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    int nw = (blockDim.x + WARP - 1) / WARP;
    return warp_reduce(lane < nw ? scratch[lane] : identity, op);
}

// The same for a block of exactly NW warps (a power of two) whose scratch
// (NW values) no reduction just before shares: one barrier instead of two,
// and the warps' partials combined from shared memory in the order the
// shuffle tree above combines them (lane i with lane i + o, o = NW/2 … 1),
// so the same bits, without its five shuffles.
template <int NW, typename T, typename Op>
__device__ __forceinline__ T block_reduce_w(T v, T* scratch, Op op) {
    v = warp_reduce(v, op);
    if (threadIdx.x % WARP == 0) scratch[threadIdx.x / WARP] = v;
    __syncthreads();
    T w[NW];
#pragma unroll
    for (int i = 0; i < NW; i++) w[i] = scratch[i];
#pragma unroll
    for (int o = NW / 2; o > 0; o /= 2)
#pragma unroll
        for (int i = 0; i < o; i++) w[i] = op(w[i], w[i + o]);
    return w[0];
}

struct AddF {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxF {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, AddF()); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxF()); }

__device__ __forceinline__ int dp4a(int a, int b, int c) { return __dp4a(a, b, c); }
// The same with a's bytes unsigned (b's still signed).
__device__ __forceinline__ int dp4a_us(u32 a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Sum and max over a block of up to 1024 threads; `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    return block_reduce(v, scratch, 0.0f, AddF());
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    return block_reduce(v, scratch, -3.402823466e38f, MaxF());
}

// 32 consecutive values held one per lane → an int8 block, rounded as the
// CPU backend (and llama.cpp's q8_1) does: q = rint(v·127/amax), the scale
// and the scaled sum Σq stored through f16. Same integers and scales on both
// backends, so their products differ only in summation order.
// Both reductions are single warp instructions (redux.sync) on integers:
// the bits of non-negative floats order as the floats do, and every partial
// sum of 32 values in [-127, 127] is an integer a float holds exactly, so
// the results are those of the float shuffle trees, without their five
// dependent shuffles each (these quantizations end the norms, attention,
// the residual products and quantize_q8, on every layer's critical path).
__device__ __forceinline__ void warp_quantize(float v, size_t gi, i8* xq, float2* xd) {
    float amax = __uint_as_float(__reduce_max_sync(FULL_MASK, __float_as_uint(fabsf(v))));
    float d = amax / 127.0f;
    float id = amax == 0.0f ? 0.0f : 127.0f / amax;
    int q = __float2int_rn(v * id);
    xq[gi] = (i8)q;
    float sum = (float)__reduce_add_sync(FULL_MASK, q);
    if (threadIdx.x % WARP == 0) xd[gi / 32] = make_float2(h2f(f2h(d)), h2f(f2h(d * sum)));
}

// sin and cos of pair i's angle at position pos: pos·step^i, scaled.
__device__ __forceinline__ void rope_angle(float pos, int i, float step, float freq_scale, float& s, float& c) {
    float theta = pos;
    for (int j = 0; j < i; j++) theta *= step;
    sincosf(freq_scale * theta, &s, &c);
}

// Programmatic dependent launch (sm_90+): PDL_WAIT waits until the kernels
// before are done and their writes visible; before it a kernel may only
// read what no kernel writes (weights). A kernel that reads anything
// through ld.global.nc (a const __restrict__ pointer) before the wait must
// read what the kernels before wrote through plain loads after it: .nc
// reads after the wait returned stale values (kernel notes #78).
// PDL_TRIGGER lets the next kernel be scheduled; without it that happens as
// each block exits. The products trigger after their main loop, not at
// entry: blocks of the next kernel placed early, while a multi-wave kernel
// still runs, crowd onto the SMs that happen to be free and leave the
// others idle (7B decode −4%).
// Launched without the PDL attribute, or on an older GPU, both are no-ops.
// TANDEM_CUDA_TIMELINE (timeline.rs) compiles with -DTIMELINE=1: every warp
// of the kernels that open with TL_SCOPE() records its grid launch, block,
// SM and the global timer at entry, after PDL_WAIT and at exit, into its
// program's `tl_rec` (a diagnostic: nsys is not at hand on the lent GPUs).
#ifndef TIMELINE
#define TIMELINE 0
#endif
#if TIMELINE
#define TL_CAP (1 << 20)
#define TL_SMS 256
__device__ u64 tl_rec[TL_CAP * 4];
__device__ u32 tl_n[TL_SMS];
__device__ __forceinline__ u64 tl_now() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ u64& tl_waited() {
    __shared__ u64 s[32];
    return s[threadIdx.x / WARP];
}
struct TlScope {
    u64 t0;
    __device__ TlScope() : t0(tl_now()) { tl_waited() = 0; }
    __device__ ~TlScope() {
        if (threadIdx.x % WARP) return;
        u64 t2 = tl_now(), gid;
        u32 sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        // a count per SM: one shared counter serialised ~19k atomics per
        // gated product
        u32 i = atomicAdd(&tl_n[sm % TL_SMS], 1u);
        if (i >= TL_CAP / TL_SMS) return;
        i += sm % TL_SMS * (TL_CAP / TL_SMS);
        asm volatile("mov.u64 %0, %%gridid;" : "=l"(gid));
        tl_rec[4 * i] = gid;
        tl_rec[4 * i + 1] = (u64)blockIdx.x | (u64)(threadIdx.x / WARP) << 24 | (u64)sm << 32 | (u64)gridDim.x << 40;
        tl_rec[4 * i + 2] = t0;
        tl_rec[4 * i + 3] = (t2 - t0) | (tl_waited() ? tl_waited() - t0 : 0xffffffffull) << 32;
    }
};
#define TL_SCOPE() TlScope tl_scope_
#define TL_WAITED() (tl_waited() = tl_now())
#else
#define TL_SCOPE() do {} while (0)
#define TL_WAITED() ((void)0)
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_WAIT() do { asm volatile("griddepcontrol.wait;" ::: "memory"); TL_WAITED(); } while (0)
#define PDL_TRIGGER() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define PDL_WAIT() do {} while (0)
#define PDL_TRIGGER() do {} while (0)
#endif
// Small kernels between the products (norms, attention, the activation
// quantizer) trigger at entry: they fill few SMs, so the next product's
// blocks can be placed and ask L2 for their weights while these run
// (kernel notes #60). TANDEM_CUDA_NVRTC_OPTS=-DEARLY_TRIGGER=0 to compare.
#ifndef EARLY_TRIGGER
#define EARLY_TRIGGER 1
#endif
#define PDL_TRIGGER_EARLY() do { if (EARLY_TRIGGER) PDL_TRIGGER(); } while (0)

// Ask L2 for the first bytes of [p, p + n), one 128-byte line per lane per
// step, in a block of the kernel's first wave (the blocks PDL lets start
// while the kernel before is finishing): their first loads then find L2
// instead of DRAM. Later blocks, and the rest of long rows, would only add
// traffic (prefetching whole rows slowed 7B decode by 7%). Since the
// products load a row's first step before the wait (matvec.cu, dot_rows),
// 1 KiB does better than 2 (kernel notes #80: 0.5B +0.7%, 7B +1.0%).
// TANDEM_CUDA_NVRTC_OPTS=-DPREFETCH_BLOCKS=0 to compare without.
#ifndef PREFETCH_BLOCKS
#define PREFETCH_BLOCKS 1024
#endif
#ifndef PREFETCH_ROW_BYTES
#define PREFETCH_ROW_BYTES 1024
#endif
__device__ __forceinline__ void prefetch_l2(const u8* p, size_t n) {
    if (blockIdx.x >= PREFETCH_BLOCKS) return;
    n = n < PREFETCH_ROW_BYTES ? n : PREFETCH_ROW_BYTES;
    for (size_t o = (size_t)(threadIdx.x % WARP) * 128; o < n; o += WARP * 128)
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p + o));
}
