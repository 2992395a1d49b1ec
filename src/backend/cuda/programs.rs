//! The kernels we compile: which CUDA C sources, grouped in which NVRTC
//! programs (start-up, and the larger row counts on a background thread),
//! with which options, compiled on parallel threads (compile.rs does one
//! program and its cache).

use super::gpu::{GpuError, GpuResult};

const COMMON: &str = include_str!("kernels/common.cuh");
const OPS: [&str; 3] = [
    include_str!("kernels/ops.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/sample.cu"),
];
const MATVEC: &str = include_str!("kernels/matvec.cu");

/// A program's source and the kernels it defines.
pub(super) type Program = (String, Vec<String>);
/// A compiled program, or why it failed.
pub(super) type Image = GpuResult<(Vec<u8>, super::compile::Origin)>;

/// Row counts of the decode products compiled at start-up, four to a
/// program: one program per count spreads better over cores in theory, but
/// measured slower on the H100 host (58 programs 1.30–1.74 s against 15 in
/// 0.44–0.51 s; docs/kernel-notes.md #42). The larger ones (batched decode,
/// up to `MAX_DECODE_ROWS`) compile on a background thread and are waited for
/// at their first launch, keeping start-up short.
const START_ROWS: [std::ops::RangeInclusive<usize>; 2] = [1..=4, 5..=8];
const LATE_ROWS: [std::ops::RangeInclusive<usize>; 2] = [9..=12, 13..=16];

/// The programs compiled at start-up, in parallel: element-wise ops and
/// attention, then per weight type and group of row counts its decode
/// products (the type's dequantization with the first group).
pub(super) fn programs() -> Vec<Program> {
    let base = format!("{COMMON}{}", OPS.concat());
    let names = kernel_names(&base);
    let mut out = vec![(base, names)];
    out.extend(product_programs(&START_ROWS));
    out
}

/// The decode products for more rows, compiled after start-up.
pub(super) fn late_programs() -> Vec<Program> {
    product_programs(&LATE_ROWS)
}

fn product_programs(groups: &[std::ops::RangeInclusive<usize>]) -> Vec<Program> {
    let mut out = Vec::new();
    for ty in super::weights::DevType::ALL {
        let stem = ty.stem();
        for ts in groups.iter().cloned() {
            let mut src = format!("{COMMON}{MATVEC}");
            let mut names = Vec::new();
            if *ts.start() == 1 {
                src.push_str(&format!("DEQ_KERNELS({stem})\n"));
                names.push(format!("dequant_{stem}"));
                names.push(format!("embed_{stem}"));
            }
            for t in ts {
                src.push_str(&format!("MV_KERNELS({stem}, {t})\n"));
                names.push(format!("mv_{stem}_t{t}"));
                names.push(format!("mvg_{stem}_t{t}"));
                // A folded norm (linear_add_norm): the products that read
                // it, and for one row the residual product that writes it
                // (more rows: the plain product and `fold_norm_rows`).
                let folds = ty.wants_q8_input();
                if folds {
                    src.push_str(&format!("MVN_KERNELS({stem}, {t})\n"));
                    names.extend(["mvn", "mvgn"].map(|k| format!("{k}_{stem}_t{t}")));
                }
                if folds && t == 1 {
                    src.push_str(&format!("MVR_KERNEL({stem}, 1)\n"));
                    names.push(format!("mvr_{stem}_t1"));
                }
                for (a, b) in super::products::MIXED_QKV {
                    if a == ty {
                        let b = b.stem();
                        src.push_str(&format!("MV2_KERNEL({stem}, {b}, {t})\n"));
                        names.push(format!("mv_{stem}_{b}_t{t}"));
                        if folds {
                            src.push_str(&format!("MV2N_KERNEL({stem}, {b}, {t})\n"));
                            names.push(format!("mvn_{stem}_{b}_t{t}"));
                        }
                    }
                }
            }
            out.push((src, names));
        }
    }
    out
}

/// The NVRTC options every program is compiled with (the sizes the host
/// and the kernels share among them), then TANDEM_CUDA_NVRTC_OPTS
/// (experiments, e.g. -DMV_U_Q4K=2).
pub(super) fn nvrtc_options() -> Vec<String> {
    let extra = std::env::var("TANDEM_CUDA_NVRTC_OPTS").unwrap_or_default();
    [
        "-default-device".to_string(),
        "--std=c++17".to_string(),
        format!("-DSPLIT={}", super::step::ATTN_SPLIT),
        format!("-DTOPK_CHUNK={}", super::readout::CHUNK),
        format!("-DTOPK_THREADS={}", super::readout::THREADS),
    ]
    .into_iter()
    .chain(super::timeline::path().map(|_| "-DTIMELINE=1".to_string()))
    .chain(extra.split_whitespace().map(String::from))
    .collect()
}

/// Compile every program on its own thread (NVRTC is thread-safe).
pub(super) fn compile_all(
    programs: &[Program],
    major: i32,
    minor: i32,
    options: &[String],
) -> Vec<Image> {
    std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .iter()
            .map(|(src, _)| s.spawn(|| super::compile::cubin(src, major, minor, options)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(GpuError::Compile("NVRTC thread panicked".into())))
            })
            .collect()
    })
}

/// Names of the `extern "C" __global__` functions in the source.
fn kernel_names(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in src.split("extern \"C\" __global__ void").skip(1) {
        let head = part.trim_start();
        let head = match head.strip_prefix("__launch_bounds__(") {
            Some(rest) => rest.split_once(')').map_or(rest, |(_, r)| r),
            None => head,
        }
        .trim_start();
        if let Some(end) = head.find('(') {
            let name = head[..end].trim();
            if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel of every program, start-up and background.
    fn all_kernel_names() -> Vec<String> {
        programs()
            .into_iter()
            .chain(late_programs())
            .flat_map(|(_, n)| n)
            .collect()
    }

    #[test]
    fn every_kernel_instantiation_is_found() {
        let names = all_kernel_names();
        for n in [
            "mv_q4_k_t1",
            "mv_f16_t8",
            "mvg_q5_0_t3",
            "mv_q4_1_t5",
            "mvg_q4_k_t16",
            "mv_q4_k_q6_k_t1",
            "mv_q5_0_q8_0_t16",
            "dequant_q6_k",
            "embed_q8_0",
            "attn_split",
            "rms_norm",
            "rms_norm_q8",
            "rope_store",
            "top_k_stage",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }

    /// Every kernel the backend launches by a fixed name is compiled (a
    /// host method once launched kernels that no program defined any more).
    #[test]
    fn every_kernel_launched_by_name_is_defined() {
        let names = all_kernel_names();
        // Every source file of the backend, so a new one is read too.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/backend/cuda");
        let sources: Vec<String> = std::fs::read_dir(dir)
            .expect("the backend's sources")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| std::fs::read_to_string(p).expect("a source file"))
            .collect();
        let mut seen = 0;
        for src in &sources {
            for call in [".launch", ".elementwise"] {
                for (at, _) in src.match_indices(call) {
                    let rest = src[at + call.len()..].strip_prefix('(').unwrap_or("");
                    if let Some(lit) = rest.trim_start().strip_prefix('"') {
                        let name = &lit[..lit.find('"').expect("closing quote")];
                        assert!(
                            names.iter().any(|n| n == name),
                            "{name} is launched but not defined"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen >= 15, "found only {seen} launches by name");
    }

    #[test]
    fn each_program_names_only_kernels_its_source_defines() {
        for (src, names) in programs().into_iter().chain(late_programs()) {
            for n in names {
                let generated =
                    n.starts_with("mv") || n.starts_with("dequant_") || n.starts_with("embed_");
                assert!(generated || src.contains(&format!(" {n}(")), "{n}");
            }
        }
    }

    /// Start-up compile time without a GPU: NVRTC compiles for sm_90 on the
    /// build machine (`pip download nvidia-cuda-nvrtc==13.0.*`, unzip, point
    /// `LD_LIBRARY_PATH` at `nvidia/cu13/lib`), per program and in parallel
    /// as `Gpu::new` does (`NVRTC_SERIAL=1`: one at a time, for each
    /// program's own cost). `cargo test --release --features cuda
    /// nvrtc_times -- --ignored --nocapture`
    #[test]
    #[ignore = "needs libnvrtc; a measurement, not a check"]
    fn nvrtc_times() {
        let options = nvrtc_options();
        let programs = programs();
        // NVRTC_DUMP=DIR writes each cubin there, named after its first
        // kernel, for `cuobjdump -res-usage` and `nvdisasm` on this machine.
        let dump = std::env::var("NVRTC_DUMP").ok();
        let time = |(src, names): &Program| {
            let t = std::time::Instant::now();
            let bin =
                super::super::compile::compile_uncached(src, "--gpu-architecture=sm_90", &options)
                    .expect("compiles");
            if let Some(dir) = &dump {
                std::fs::write(format!("{dir}/{}.cubin", names[0]), bin).expect("dump");
            }
            t.elapsed().as_secs_f64()
        };
        let t0 = std::time::Instant::now();
        let times: Vec<f64> = if std::env::var("NVRTC_SERIAL").is_ok() {
            programs.iter().map(time).collect()
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = programs.iter().map(|p| s.spawn(|| time(p))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        let wall = t0.elapsed().as_secs_f64();
        for ((_, names), t) in programs.iter().zip(&times) {
            eprintln!("{t:6.2} s  {}", names.join(" "));
        }
        eprintln!(
            "{} programs: {wall:.2} s wall, {:.2} s summed",
            programs.len(),
            times.iter().sum::<f64>()
        );
    }
}
