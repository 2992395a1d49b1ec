//! `--device cuda` from the outside. Without a GPU (CI) it must fail with
//! one line saying why; with one, the GPU's logits and greedy tokens on
//! SmolLM2 must match the CPU's (`tandem check-device`; skipped, with the
//! reason printed, where there is no GPU; `scripts/gpu-check.sh` runs the same
//! on the GPU machine).

mod common;

use std::process::Command;

fn tandem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running tandem")
}

/// Why the GPU cannot be used, if that is how the command failed.
fn unavailable(out: &std::process::Output) -> Option<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    (!out.status.success()
        && (err.contains("CUDA is not available") || err.contains("without CUDA support")))
    .then(|| err.trim().to_string())
}

#[test]
fn cuda_device_runs_or_fails_with_one_line() {
    let model = common::model_path("smollm2-135m");
    let out = tandem(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "--device",
        "cuda",
        "-p",
        "Hello",
        "-n",
        "2",
        "--temp",
        "0",
    ]);
    if out.status.success() {
        eprintln!("a GPU is present: generate ran on it");
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line of error, got:\n{err}");
    assert!(unavailable(&out).is_some(), "unexpected error: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn gpu_logits_and_greedy_tokens_match_the_cpu_on_smollm2() {
    let model = common::model_path("smollm2-135m");
    let out = tandem(&[
        "check-device",
        "-m",
        model.to_str().unwrap(),
        "--device",
        "cuda",
        "-n",
        "32",
        "--tol",
        "0.15",
        "--same-tokens",
        "-p",
        "Name the capital city of France.",
    ]);
    if let Some(reason) = unavailable(&out) {
        eprintln!("skipping the GPU comparison: {reason}");
        return;
    }
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
