//! A device-side timeline of decode steps, for finding where a step's time
//! goes when no system profiler is at hand (the lent GPUs have `ncu` only,
//! which times kernels one at a time and so hides what programmatic
//! dependent launch overlaps). With `TANDEM_CUDA_TIMELINE=FILE` the kernels
//! are compiled with `-DTIMELINE=1`: every warp of the decode kernels
//! records its launch (`%gridid`), block, SM, and the global timer at entry,
//! after its wait for the kernel before, and at exit (common.cuh, TL_SCOPE).
//! Each replayed decode step clears the records first and writes a summary
//! to FILE after (the last step's remains): one line per launch, in launch
//! order, with its program (named by the program's first kernel), grid and
//! warps, and quantiles over its warps of entry, end of the wait and exit,
//! in ns from the step's first entry. Run it with TANDEM_CUDA_AHEAD=0, so
//! that no step launched ahead mixes into the records.

use std::io::Write;

use cudarc::driver::{result, DevicePtr};

use super::gpu::Gpu;

/// Record counters, one per SM (TL_SMS in common.cuh), each owning an equal
/// share of the records.
const SMS: usize = 256;

/// The file named by TANDEM_CUDA_TIMELINE, if set (read once: every
/// replayed decode step asks).
pub(super) fn path() -> Option<&'static str> {
    static PATH: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("TANDEM_CUDA_TIMELINE")
            .ok()
            .filter(|p| !p.is_empty())
    })
    .as_deref()
}

/// Addresses of a module's record count and records, if it was compiled
/// with the timeline.
fn globals(
    gpu: &Gpu,
    module: &std::sync::Arc<cudarc::driver::CudaModule>,
) -> Option<(u64, u64, usize)> {
    let n = module.get_global("tl_n", &gpu.stream).ok()?;
    let rec = module.get_global("tl_rec", &gpu.stream).ok()?;
    let (np, _g1) = n.device_ptr(&gpu.stream);
    let (rp, _g2) = rec.device_ptr(&gpu.stream);
    Some((np, rp, rec.len() / 32))
}

/// Forget the records so far (before a step is launched).
pub(super) fn reset(gpu: &Gpu) {
    for (_, m) in gpu.modules() {
        if let Some((n, _, _)) = globals(gpu, &m) {
            gpu.zero(n, 4 * SMS);
        }
    }
}

/// Write the records since `reset` to the timeline file.
pub(super) fn dump(gpu: &Gpu, path: &str) {
    gpu.sync();
    let mut rows: Vec<(String, [u64; 4])> = Vec::new();
    for (name, m) in gpu.modules() {
        let Some((n_ptr, rec_ptr, cap)) = globals(gpu, &m) else {
            continue;
        };
        let mut counts = [0u32; SMS];
        // SAFETY: tl_n holds SMS counters, tl_rec `cap` records of four
        // words; the stream is synchronized.
        unsafe { result::memcpy_dtoh_sync(&mut counts, n_ptr) }.expect("timeline count");
        let mut rec = vec![0u64; 4 * cap];
        unsafe { result::memcpy_dtoh_sync(&mut rec, rec_ptr) }.expect("timeline records");
        let share = cap / SMS;
        for (sm, &n) in counts.iter().enumerate() {
            let start = sm * share;
            let recs = &rec[4 * start..4 * (start + (n as usize).min(share))];
            rows.extend(
                recs.chunks(4)
                    .map(|r| (name.clone(), [r[0], r[1], r[2], r[3]])),
            );
        }
    }
    let t_first = rows.iter().map(|(_, r)| r[2]).min().unwrap_or(0);
    rows.sort_by_key(|(_, r)| (r[0], r[2]));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {path}: {e}")),
    );
    let _ = writeln!(
        out,
        "# program grid warps | entry min p50 max | waited min p50 max | exit min p50 p90 max (ns from the step's first entry)"
    );
    let mut launches: Vec<&[(String, [u64; 4])]> = rows.chunk_by(|a, b| a.1[0] == b.1[0]).collect();
    launches.sort_by_key(|l| l.iter().map(|(_, r)| r[2]).min());
    for l in launches {
        let q = |mut v: Vec<u64>, ps: &[f64]| -> String {
            if v.is_empty() {
                return ps.iter().map(|_| "-").collect::<Vec<_>>().join(" ");
            }
            v.sort_unstable();
            ps.iter()
                .map(|p| v[((v.len() - 1) as f64 * p).round() as usize].to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let entry: Vec<u64> = l.iter().map(|(_, r)| r[2] - t_first).collect();
        let waited: Vec<u64> = l
            .iter()
            .filter(|(_, r)| r[3] >> 32 != 0xffff_ffff)
            .map(|(_, r)| r[2] - t_first + (r[3] >> 32))
            .collect();
        let exit: Vec<u64> = l
            .iter()
            .map(|(_, r)| r[2] - t_first + (r[3] & 0xffff_ffff))
            .collect();
        let _ = writeln!(
            out,
            "{} {} {} | {} | {} | {}",
            l[0].0,
            l[0].1[1] >> 40,
            l.len(),
            q(entry, &[0.0, 0.5, 1.0]),
            q(waited, &[0.0, 0.5, 1.0]),
            q(exit, &[0.0, 0.5, 0.9, 1.0])
        );
    }
}
