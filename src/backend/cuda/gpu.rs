//! The device: context, one stream, the kernels compiled from our CUDA C at
//! start-up with NVRTC (programs.rs) and launched, cuBLAS, and a caching
//! pool of device memory for activations. Everything CUDA is loaded at run time (cudarc's dynamic
//! loading), so a build without a GPU or driver runs and reports one clear
//! error when `--device cuda` is asked for.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{result, sys, CudaContext, CudaModule, CudaStream};

use super::programs::{compile_all, late_programs, nvrtc_options, programs, Image, Program};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("CUDA is not available: {0}")]
    Unavailable(String),
    #[error("CUDA device {ordinal} does not exist ({count} found)")]
    NoSuchDevice { ordinal: usize, count: i32 },
    #[error("compiling the CUDA kernels failed: {0}")]
    Compile(String),
    #[error("CUDA call failed: {0}")]
    Driver(String),
}

pub type GpuResult<T> = std::result::Result<T, GpuError>;

fn drv(e: impl std::fmt::Debug) -> GpuError {
    GpuError::Driver(format!("{e:?}"))
}

/// A raw function handle; the module that owns it lives as long as [`Gpu`].
#[derive(Clone, Copy)]
struct Func(sys::CUfunction);
// SAFETY: CUfunction handles are plain driver handles, valid from any thread
// once the module is loaded; the module outlives them inside `Gpu`.
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    kernels: std::sync::RwLock<Kernels>,
    pub blas: CudaBlas,
    pool: Arc<Pool>,
    pub name: String,
    /// Seconds the start-up kernels took to compile (or read from the
    /// on-disk cache) and load, and whether they came from the cache; set
    /// when the background compile is joined (`ready`).
    startup: std::sync::OnceLock<(f64, bool)>,
    /// TANDEM_CUDA_PROFILE=1: device time per kernel, from events around
    /// every launch (graphs are off then).
    profile: Option<Mutex<Profile>>,
    /// Page-locked staging for downloads (twice the speed of pageable copies).
    pinned: Mutex<Pinned>,
    /// Programmatic dependent launch (sm_90+, TANDEM_CUDA_PDL=0 turns it
    /// off): a kernel may be scheduled while the one before it finishes; it
    /// prefetches its weights, then waits (`griddepcontrol.wait`) before
    /// touching anything the earlier kernel writes.
    pdl: bool,
}

struct Pinned {
    ptr: *mut f32,
    len: usize,
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // A process that ends while the background compile is inside NVRTC
        // crashes in NVRTC's teardown (a short `generate` on a machine with
        // no kernel cache: a segmentation fault after its output). Waiting
        // also leaves those kernels cached for the next start.
        if let Ok(mut k) = self.kernels.write() {
            if let Some(early) = k.early.take() {
                if let Ok(e) = early.join() {
                    let _ = e.late.join();
                }
            }
            if let Some(late) = k.late.take() {
                let _ = late.join();
            }
        }
        if let Ok(p) = self.pinned.lock() {
            if !p.ptr.is_null() {
                // SAFETY: allocated by malloc_host, freed once.
                unsafe {
                    let _ = result::free_host(p.ptr as *mut c_void);
                }
            }
        }
    }
}

#[derive(Default)]
struct Profile {
    pending: Vec<(String, sys::CUevent, sys::CUevent)>,
    totals: HashMap<String, (usize, f64)>,
}

// SAFETY: the context and stream are driver handles usable from any thread
// after `bind`; all launches go through one stream in program order.
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

impl Gpu {
    /// Open device `ordinal` and compile the kernels.
    pub fn open(ordinal: usize) -> GpuResult<Arc<Gpu>> {
        // Probe the libraries first: cudarc panics when one is missing.
        // SAFETY: these only try to open the shared libraries.
        let missing = unsafe {
            [
                (
                    cudarc::driver::sys::is_culib_present(),
                    "the CUDA driver (libcuda.so)",
                ),
                (
                    cudarc::nvrtc::sys::is_culib_present(),
                    "NVRTC (libnvrtc.so)",
                ),
                (
                    cudarc::cublas::sys::is_culib_present(),
                    "cuBLAS (libcublas.so)",
                ),
            ]
        };
        if let Some((_, lib)) = missing.iter().find(|(present, _)| !present) {
            return Err(GpuError::Unavailable(format!("{lib} was not found")));
        }
        let count =
            CudaContext::device_count().map_err(|e| GpuError::Unavailable(format!("{e:?}")))?;
        if ordinal as i32 >= count {
            return Err(GpuError::NoSuchDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| GpuError::Unavailable(format!("{e:?}")))?;
        // Buffers here are raw pointers used on one stream; cudarc's per-slice
        // event tracking would add events to every launch (and to graphs).
        // SAFETY: no CudaSlice is shared between streams in this backend.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv)?;
        let (major, minor) = ctx.compute_capability().map_err(drv)?;
        let name = ctx.name().map_err(drv)?;
        // The kernels compile on a background thread while the caller loads
        // the weights (NVRTC's libraries alone take seconds to read on a
        // machine's first start); `ready` or the first launch waits for
        // them. The larger row counts compile after them, on a thread of
        // their own.
        let start = std::time::Instant::now();
        let early = std::thread::spawn(move || {
            let options = nvrtc_options();
            let programs = programs();
            let images = compile_all(&programs, major, minor, &options);
            let nvrtc_secs = start.elapsed().as_secs_f64();
            let late = std::thread::spawn(move || {
                let programs = late_programs();
                let images = compile_all(&programs, major, minor, &options);
                (programs, images)
            });
            Early {
                programs,
                images,
                nvrtc_secs,
                late,
            }
        });
        let blas = CudaBlas::new(stream.clone()).map_err(drv)?;
        Ok(Arc::new(Gpu {
            pool: Arc::new(Pool::default()),
            ctx,
            stream,
            kernels: std::sync::RwLock::new(Kernels {
                modules: Vec::new(),
                funcs: HashMap::new(),
                early: Some(early),
                late: None,
            }),
            blas,
            name: format!("{name} (sm_{major}{minor})"),
            startup: std::sync::OnceLock::new(),
            pinned: Mutex::new(Pinned {
                ptr: std::ptr::null_mut(),
                len: 0,
            }),
            pdl: major >= 9 && std::env::var("TANDEM_CUDA_PDL").map_or(true, |v| v != "0"),
            profile: std::env::var("TANDEM_CUDA_PROFILE")
                .is_ok_and(|v| v == "1")
                .then(|| Mutex::new(Profile::default())),
        }))
    }

    pub fn bind(&self) {
        self.ctx.bind_to_thread().expect("binding the CUDA context");
    }

    pub fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// Wait for the start-up kernels' compile and load them (once): the
    /// seconds the compile and load took (not the wait) and whether the
    /// kernels came from the cache.
    pub fn ready(&self) -> GpuResult<(f64, bool)> {
        if let Some(r) = self.startup.get() {
            return Ok(*r);
        }
        let mut k = self.kernels.write().expect("kernels lock");
        self.load_early(&mut k)?;
        // Unset after a load that failed (its error was returned then).
        self.startup
            .get()
            .copied()
            .ok_or_else(|| GpuError::Unavailable("the kernels failed to load".into()))
    }

    /// [`Gpu::ready`], then the background programs too (the kernels for
    /// several rows): a first batch waited 7 s for them on a fresh H100
    /// machine, whose kernel cache was empty.
    pub fn ready_all(&self) -> GpuResult<()> {
        self.ready()?;
        let mut k = self.kernels.write().expect("kernels lock");
        self.load_late(&mut k)
    }

    fn load_late(&self, k: &mut Kernels) -> GpuResult<()> {
        if let Some(late) = k.late.take() {
            let (programs, images) = late.join().expect("kernel compile thread");
            let Kernels { modules, funcs, .. } = k;
            load_programs(&self.ctx, &programs, images, false, modules, funcs)?;
        }
        Ok(())
    }

    fn load_early(&self, k: &mut Kernels) -> GpuResult<()> {
        let Some(early) = k.early.take() else {
            return Ok(());
        };
        let Early {
            programs,
            images,
            nvrtc_secs,
            late,
        } = early.join().expect("kernel compile thread");
        k.late = Some(late);
        let info = std::env::var("TANDEM_CUDA_KERNEL_INFO").is_ok_and(|v| v == "1");
        let t = std::time::Instant::now();
        let Kernels { modules, funcs, .. } = k;
        let all_cached = load_programs(&self.ctx, &programs, images, info, modules, funcs)?;
        if info {
            eprintln!(
                "{} programs {} in {nvrtc_secs:.2} s, modules loaded {:.2} s",
                programs.len(),
                if all_cached {
                    "from the cache"
                } else {
                    "compiled"
                },
                t.elapsed().as_secs_f64()
            );
        }
        // The compile's own time, not the wait: the weights load meanwhile.
        let _ = self
            .startup
            .set((nvrtc_secs + t.elapsed().as_secs_f64(), all_cached));
        Ok(())
    }

    /// The kernel `name`, waiting for the background programs if it is one
    /// of theirs.
    fn function(&self, name: &str) -> Func {
        if let Some(f) = self.kernels.read().expect("kernels lock").funcs.get(name) {
            return *f;
        }
        let mut k = self.kernels.write().expect("kernels lock");
        self.load_early(&mut k).unwrap_or_else(|e| panic!("{e}"));
        if let Some(f) = k.funcs.get(name) {
            return *f;
        }
        self.load_late(&mut k).unwrap_or_else(|e| panic!("{e}"));
        *k.funcs
            .get(name)
            .unwrap_or_else(|| panic!("no CUDA kernel named {name}"))
    }

    /// Launch kernel `name` on the stream.
    pub fn launch(&self, name: &str, grid: (u32, u32, u32), block: u32, args: &KArgs) {
        // An empty grid (no rows: a prompt chunk that wants no logits) is
        // nothing to do, and the driver would call it an invalid argument.
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return;
        }
        let f = &self.function(name);
        let mut ptrs: Vec<*mut c_void> = args
            .starts
            .iter()
            .map(|&i| &args.words[i] as *const u64 as *mut c_void)
            .collect();
        let events = self.profile.as_ref().map(|_| {
            let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
            let (a, b) = (
                result::event::create(flags).expect("event"),
                result::event::create(flags).expect("event"),
            );
            // SAFETY: fresh events recorded on our stream.
            unsafe { result::event::record(a, self.cu_stream()).expect("event record") };
            (a, b)
        });
        // SAFETY: the argument list matches the kernel's signature (each value
        // in its own 8-byte slot, little-endian, so 4-byte parameters read the
        // low half); pointers are live device allocations.
        unsafe {
            if self.pdl && events.is_none() {
                self.launch_dependent(f.0, grid, block, &mut ptrs)
            } else {
                result::launch_kernel(f.0, grid, (block, 1, 1), 0, self.cu_stream(), &mut ptrs)
            }
            .unwrap_or_else(|e| panic!("launching {name}: {e:?}"));
        }
        if let (Some(p), Some((a, b))) = (&self.profile, events) {
            // SAFETY: as above.
            unsafe { result::event::record(b, self.cu_stream()).expect("event record") };
            p.lock()
                .expect("profile lock")
                .pending
                .push((name.to_string(), a, b));
        }
    }

    /// A launch allowed to overlap the previous kernel's end (PDL).
    ///
    /// # Safety
    /// As for `result::launch_kernel`: `params` match the kernel's signature.
    unsafe fn launch_dependent(
        &self,
        f: sys::CUfunction,
        grid: (u32, u32, u32),
        block: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), cudarc::driver::DriverError> {
        // SAFETY: an all-zero attribute is a valid value of the C union.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: 0,
            hStream: self.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: the caller's contract; `cfg` and `attr` outlive the call.
        unsafe {
            sys::cuLaunchKernelEx(&cfg, f, params.as_mut_ptr(), std::ptr::null_mut()).result()
        }
    }

    pub fn profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// Device time per kernel so far, slowest first: (name, launches, ms).
    pub fn profile_report(&self) -> Vec<(String, usize, f64)> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.sync();
        let mut p = p.lock().expect("profile lock");
        for (name, a, b) in std::mem::take(&mut p.pending) {
            // SAFETY: both events were recorded and the stream is synchronized.
            let ms = unsafe { result::event::elapsed(a, b) }.unwrap_or(0.0) as f64;
            unsafe {
                let _ = result::event::destroy(a);
                let _ = result::event::destroy(b);
            }
            let e = p.totals.entry(name).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        let mut rows: Vec<_> = p
            .totals
            .iter()
            .map(|(n, (c, ms))| (n.clone(), *c, *ms))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }

    /// Device memory for activations, returned to the pool when dropped.
    pub fn alloc(&self, bytes: usize) -> DevBuf {
        self.pool.take(bytes.max(1))
    }

    /// Device memory owned by its holder (weights, KV cache).
    pub fn alloc_owned(&self, bytes: usize) -> GpuResult<OwnedBuf> {
        self.bind();
        // SAFETY: plain device allocation; freed in OwnedBuf's Drop.
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(drv)?;
        Ok(OwnedBuf { ptr, bytes })
    }

    pub fn upload<T: Copy>(&self, dst: u64, src: &[T]) {
        if src.is_empty() {
            return;
        }
        // SAFETY: dst holds at least size_of_val(src) bytes. The copy is
        // asynchronous from pageable memory: the driver stages it before
        // returning, so `src` may be dropped afterwards.
        unsafe {
            result::memcpy_htod_async(dst, src, self.cu_stream()).expect("host-to-device copy");
        }
    }

    pub fn download(&self, src: u64, dst: &mut [f32]) {
        if dst.is_empty() {
            return;
        }
        let mut p = self.pinned.lock().expect("pinned buffer lock");
        if p.len < dst.len() {
            // SAFETY: the old buffer is not in use (downloads are synchronous
            // under this lock); the new one is page-locked host memory.
            unsafe {
                if !p.ptr.is_null() {
                    let _ = result::free_host(p.ptr as *mut c_void);
                }
                let len = dst.len().next_power_of_two();
                p.ptr =
                    result::malloc_host(len * 4, 0).expect("pinned host allocation") as *mut f32;
                p.len = len;
            }
        }
        // SAFETY: the pinned buffer holds dst.len() floats; the stream is
        // synchronized before it is read.
        unsafe {
            let staging = std::slice::from_raw_parts_mut(p.ptr, dst.len());
            result::memcpy_dtoh_async(staging, src, self.cu_stream()).expect("device-to-host copy");
            self.sync();
            dst.copy_from_slice(staging);
        }
    }

    /// Device memory bandwidth in GB/s, counting bytes read plus written, of
    /// the best of five 512 MiB device-to-device copies: decode's roofline.
    pub fn copy_bandwidth(&self) -> GpuResult<f64> {
        self.bind();
        let bytes = 512usize << 20;
        let (a, b) = (self.alloc_owned(bytes)?, self.alloc_owned(bytes)?);
        self.zero(a.ptr, bytes);
        let mut best = 0f64;
        for _ in 0..6 {
            self.sync();
            let t = std::time::Instant::now();
            // SAFETY: two live allocations of `bytes` each.
            unsafe { result::memcpy_dtod_async(b.ptr, a.ptr, bytes, self.cu_stream()) }
                .map_err(drv)?;
            self.sync();
            best = best.max(2.0 * bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        Ok(best)
    }

    pub fn zero(&self, dst: u64, bytes: usize) {
        // SAFETY: dst holds `bytes` bytes.
        unsafe {
            result::memset_d8_async(dst, 0, bytes, self.cu_stream()).expect("memset");
        }
    }

    /// The loaded programs' modules, each named by its first kernel.
    pub(super) fn modules(&self) -> Vec<(String, Arc<CudaModule>)> {
        self.kernels.read().expect("kernels lock").modules.clone()
    }

    pub fn sync(&self) {
        self.stream.synchronize().expect("CUDA stream synchronize");
    }
}

/// Loaded kernel programs; `early` is the background compile of the
/// start-up programs (until joined), `late` that of the rest.
struct Kernels {
    /// Each loaded program's module, with its first kernel's name.
    modules: Vec<(String, Arc<CudaModule>)>,
    funcs: HashMap<String, Func>,
    early: Option<std::thread::JoinHandle<Early>>,
    late: Option<std::thread::JoinHandle<(Vec<Program>, Vec<Image>)>>,
}

/// The start-up programs compiled, and the compile of the rest begun.
struct Early {
    programs: Vec<Program>,
    images: Vec<Image>,
    nvrtc_secs: f64,
    late: std::thread::JoinHandle<(Vec<Program>, Vec<Image>)>,
}

/// Load compiled programs and record their kernels; true when every image
/// came from the cache.
fn load_programs(
    ctx: &Arc<CudaContext>,
    programs: &[Program],
    images: Vec<Image>,
    info: bool,
    modules: &mut Vec<(String, Arc<CudaModule>)>,
    funcs: &mut HashMap<String, Func>,
) -> GpuResult<bool> {
    let mut all_cached = true;
    for ((_, names), image) in programs.iter().zip(images) {
        let (image, origin) = image?;
        all_cached &= origin == super::compile::Origin::Cache;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(image))
            .map_err(drv)?;
        for name in names {
            let f = module.load_function(name).map_err(drv)?;
            if info {
                use sys::CUfunction_attribute_enum as A;
                let regs = f.get_attribute(A::CU_FUNC_ATTRIBUTE_NUM_REGS).unwrap_or(-1);
                let local = f
                    .get_attribute(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)
                    .unwrap_or(-1);
                eprintln!("kernel {name}: {regs} registers, {local} bytes local");
            }
            funcs.insert(name.clone(), Func(f.cu_function()));
        }
        modules.push((names.first().cloned().unwrap_or_default(), module));
    }
    Ok(all_cached)
}

/// Kernel arguments, each in its own 8-byte-aligned slot (a struct passed by
/// value takes several words), in one buffer: `starts` marks where each
/// argument begins.
#[derive(Default)]
pub struct KArgs {
    words: Vec<u64>,
    starts: Vec<usize>,
}

impl KArgs {
    pub fn new() -> Self {
        Self::default()
    }
    /// A struct of 8-byte-aligned words, passed by value.
    pub fn words(mut self, w: impl IntoIterator<Item = u64>) -> Self {
        self.starts.push(self.words.len());
        self.words.extend(w);
        self
    }
    pub fn ptr(self, p: u64) -> Self {
        self.words([p])
    }
    pub fn i32(self, v: usize) -> Self {
        let v = i32::try_from(v).expect("kernel size argument fits in i32");
        self.words([v as u32 as u64])
    }
    pub fn u64(self, v: usize) -> Self {
        self.words([v as u64])
    }
    pub fn f32(self, v: f32) -> Self {
        self.words([v.to_bits() as u64])
    }
}

/// Device memory freed on drop.
pub struct OwnedBuf {
    pub ptr: u64,
    pub bytes: usize,
}

impl Drop for OwnedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync, freed once.
        unsafe {
            let _ = result::free_sync(self.ptr);
        }
    }
}

/// A caching pool: buffers are kept by size class and handed out again, never
/// freed, so addresses recorded in a CUDA graph stay valid. Buffers up to
/// [`SLAB_PIECE_MAX`] are cut from slabs of [`SLAB_BYTES`], so that a decode
/// step's activations lie together in a few pages whatever was allocated
/// before them: a draft model's ~300 weight allocations, made between the
/// target's load and its first step, left the target's activations spread
/// among them, and the target's recorded steps ran 2% longer on the device
/// (kernel notes, twenty-third session). TANDEM_CUDA_SLAB=0: no slabs (A/B).
pub struct Pool {
    free: Mutex<HashMap<usize, Vec<u64>>>,
    slab: Mutex<Slab>,
    slabs_on: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            free: Mutex::default(),
            slab: Mutex::new(Slab { next: 0, end: 0 }),
            slabs_on: std::env::var("TANDEM_CUDA_SLAB").map_or(true, |v| v != "0"),
        }
    }
}

/// The slab being cut: free bytes from `next` to `end` (none at first).
struct Slab {
    next: u64,
    end: u64,
}

const SLAB_BYTES: usize = 32 << 20;
const SLAB_PIECE_MAX: usize = 2 << 20;
/// Pieces start on 4 KiB boundaries: against 256 B, plain 7B decode ran
/// 0.5% faster on one H100 (`bench` 512.9–513.3 tok/s against 509.9–510.6;
/// 512.2–512.7 without slabs), and its steps as fast with a draft loaded as
/// without (2,036–2,040 µs against 2,034–2,041).
const SLAB_ALIGN: usize = 4096;

/// Size classes: powers of two split in quarters (at most 25% slack).
fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(256);
    let top = usize::BITS - 1 - bytes.leading_zeros();
    let step = 1usize << top.saturating_sub(2);
    bytes.div_ceil(step) * step
}

impl Pool {
    fn take(self: &Arc<Self>, bytes: usize) -> DevBuf {
        let class = size_class(bytes);
        let reused = self
            .free
            .lock()
            .expect("pool lock")
            .get_mut(&class)
            .and_then(|v| v.pop());
        let ptr = match reused {
            Some(p) => p,
            None if self.slabs_on && class <= SLAB_PIECE_MAX => self.cut(class),
            None => device_alloc(class),
        };
        DevBuf {
            ptr,
            class,
            pool: self.clone(),
        }
    }

    /// `bytes` from the current slab, or from a new one when it is short
    /// (the rest of the old one is left unused: pieces are small).
    fn cut(&self, bytes: usize) -> u64 {
        let bytes = bytes.next_multiple_of(SLAB_ALIGN) as u64;
        let mut slab = self.slab.lock().expect("slab lock");
        if slab.end - slab.next < bytes {
            let base = device_alloc(SLAB_BYTES);
            *slab = Slab {
                next: base,
                end: base + SLAB_BYTES as u64,
            };
        }
        let ptr = slab.next;
        slab.next += bytes;
        ptr
    }
}

/// Device memory kept for the life of the process (the pool's).
fn device_alloc(bytes: usize) -> u64 {
    // SAFETY: plain device allocation, never freed.
    unsafe { result::malloc_sync(bytes) }
        .unwrap_or_else(|e| panic!("out of GPU memory allocating {bytes} bytes: {e:?}"))
}

/// Pool memory, returned on drop.
pub struct DevBuf {
    pub ptr: u64,
    class: usize,
    pool: Arc<Pool>,
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.entry(self.class).or_default().push(self.ptr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_cover_the_request_with_at_most_a_quarter_spare() {
        for bytes in [
            1,
            255,
            256,
            257,
            1000,
            4096,
            5000,
            1 << 20,
            (1 << 20) + 1,
            38_797_312,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} → {c}");
            assert!(c <= bytes.max(256) * 5 / 4 + 64, "{bytes} → {c}");
        }
    }
}
