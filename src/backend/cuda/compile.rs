//! Kernel binaries: our CUDA C compiled by NVRTC straight to machine code
//! for the device's architecture (no driver JIT at load), and kept in
//! `$TANDEM_HOME/kernels` keyed by a hash of the source, options, NVRTC
//! version and architecture, so only the first start on a machine compiles.

use std::ffi::{c_char, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result as nvrtc, sys};
use sha2::{Digest, Sha256};

use super::gpu::GpuError;

/// Where a kernel image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Compiled,
}

fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe {
        let _ = sys::nvrtcVersion(&mut major, &mut minor);
    }
    (major, minor)
}

/// The cubin of `src` for compute capability major.minor with `options`.
pub fn cubin(
    src: &str,
    major: i32,
    minor: i32,
    options: &[String],
) -> Result<(Vec<u8>, Origin), GpuError> {
    let arch = format!("--gpu-architecture=sm_{major}{minor}");
    let (vmaj, vmin) = std::panic::catch_unwind(nvrtc_version).map_err(|_| {
        GpuError::Unavailable("the NVRTC library (libnvrtc.so) was not found".into())
    })?;
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {vmaj}.{vmin}").as_bytes());
    for o in options {
        h.update(o.as_bytes());
    }
    let key: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::catalog::tandem_home().join("kernels");
    let path: PathBuf = dir.join(format!("{key}-sm_{major}{minor}.cubin"));
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok((bytes, Origin::Cache));
        }
    }
    let bytes = compile(src, &arch, options)?;
    // Best effort: a read-only home only costs the next start a compile.
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!("{key}.tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok((bytes, Origin::Compiled))
}

/// Compile without the cache (measurements).
#[cfg(test)]
pub fn compile_uncached(src: &str, arch: &str, options: &[String]) -> Result<Vec<u8>, GpuError> {
    compile(src, arch, options)
}

fn compile(src: &str, arch: &str, options: &[String]) -> Result<Vec<u8>, GpuError> {
    let c_src = CString::new(src).map_err(|e| GpuError::Compile(e.to_string()))?;
    let prog =
        nvrtc::create_program(&c_src, None).map_err(|e| GpuError::Compile(format!("{e:?}")))?;
    let mut opts: Vec<String> = options.to_vec();
    opts.push(arch.to_string());
    // SAFETY: prog is live until destroyed at the end; buffers are sized
    // from NVRTC's own size queries.
    unsafe {
        let compiled = nvrtc::compile_program(prog, &opts);
        if compiled.is_err() {
            let log = nvrtc::get_program_log(prog).unwrap_or_default();
            let log: Vec<u8> = log
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            let _ = nvrtc::destroy_program(prog);
            return Err(GpuError::Compile(
                String::from_utf8_lossy(&log).into_owned(),
            ));
        }
        let mut size = 0usize;
        let r = sys::nvrtcGetCUBINSize(prog, &mut size).result();
        let mut buf = vec![0u8; size];
        let r = r.and_then(|_| sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char).result());
        let _ = nvrtc::destroy_program(prog);
        r.map_err(|e| GpuError::Compile(format!("{e:?}")))?;
        Ok(buf)
    }
}
