//! The `tandem` binary, driven as a person would (SmolLM2: the smallest model
//! that proves each point).

use std::io::Write;
use std::process::{Command, Stdio};

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

fn run_ok(args: &[&str]) -> String {
    let out = tandem().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tandem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn generate_json_has_the_documented_fields_and_is_reproducible() {
    let args = [
        "generate",
        "-m",
        "smollm2-135m",
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0.9",
        "--seed",
        "42",
        "--json",
    ];
    let a: serde_json::Value = serde_json::from_str(&run_ok(&args)).unwrap();
    for key in ["prompt_tokens", "tokens", "text", "logprobs", "timings"] {
        assert!(a.get(key).is_some(), "missing {key}: {a}");
    }
    assert_eq!(
        a["prompt_tokens"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(a["tokens"].as_array().unwrap().len(), 8);
    let lp = &a["logprobs"][0];
    assert_eq!(lp["top"].as_array().unwrap().len(), 5);
    assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
    let b: serde_json::Value = serde_json::from_str(&run_ok(&args)).unwrap();
    assert_eq!(a["tokens"], b["tokens"], "same seed, same tokens");
}

#[test]
fn generate_streams_text_and_honours_stop_strings() {
    let out = run_ok(&[
        "generate",
        "-m",
        "smollm2-135m",
        "-p",
        "The capital of France is",
        "-n",
        "40",
        "--temp",
        "0",
        "--stop",
        "United",
    ]);
    assert!(out.starts_with(" Paris."), "{out:?}");
    assert!(!out.contains("United"), "{out:?}");
}

#[test]
fn tokenize_json_and_no_bos() {
    let ids: Vec<u32> = serde_json::from_str(&run_ok(&[
        "tokenize",
        "-m",
        "smollm2-135m",
        "--json",
        "Hello world",
    ]))
    .unwrap();
    assert_eq!(ids, [19556, 905]);
    let text = run_ok(&["tokenize", "-m", "smollm2-135m", "--no-bos", "Hello world"]);
    assert!(
        text.contains("19556") && text.contains("\" world\""),
        "{text}"
    );
}

#[test]
fn chat_answers_each_turn_from_stdin() {
    let mut child = tandem()
        .args(["chat", "-m", "smollm2-135m", "--temp", "0", "-n", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        // Phrased so that SmolLM2-135M's answer is not a near-tie (asked "What
        // is the capital of France?", its first token is within 0.02 of a
        // French digression, and kernel rounding decides).
        .write_all(b"Name the capital city of France.\nName the capital city of Italy.\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("> ").count(),
        3,
        "two turns then the closing prompt: {text:?}"
    );
    assert!(text.contains("Paris"), "{text:?}");
    assert!(text.contains("Rome"), "{text:?}");
}

#[test]
fn perplexity_runs_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/refs/corpus/wikitext-2-raw-test.txt");
    let text = std::fs::read_to_string(corpus).unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, &text[..20_000]).unwrap();
    let out = run_ok(&[
        "perplexity",
        "-m",
        "smollm2-135m",
        "-f",
        small.to_str().unwrap(),
        "-c",
        "128",
        "--chunks",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["chunks"], 2);
    assert_eq!(v["scored_tokens"], 2 * 63);
    let ppl = v["ppl"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 200.0, "{ppl}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    for (args, want) in [
        (
            vec!["generate", "-m", "/nonexistent.gguf", "-p", "x"],
            "neither a file nor a catalog name",
        ),
        (
            vec!["generate", "-m", "smollm2-135m", "-p", "x", "--top-p", "0"],
            "top_p",
        ),
        (
            vec![
                "generate",
                "-m",
                "smollm2-135m",
                "-p",
                "one two three four five six",
                "-c",
                "4",
            ],
            "context holds 4",
        ),
        (vec!["fetch", "no-such-model"], "unknown model"),
    ] {
        let out = tandem().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bench_takes_its_bandwidth_share_against_reads_next_to_each_run() {
    let out = run_ok(&[
        "bench",
        "-m",
        "smollm2-135m",
        "-p",
        "8",
        "-n",
        "8",
        "-r",
        "3",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let read = r["read_gb_s"].as_array().expect("paired reads");
    let tg = r["tg"]["tok_s"].as_array().unwrap();
    assert_eq!((read.len(), tg.len()), (3, 3));
    // The share is the mean of each run's own: tg GB/s over the read next to it.
    let bytes = r["bytes_per_token"].as_f64().unwrap();
    let mean: f64 = tg
        .iter()
        .zip(read)
        .map(|(t, bw)| bytes * t.as_f64().unwrap() / 1e9 / bw.as_f64().unwrap())
        .sum::<f64>()
        / 3.0;
    let share = r["roofline_share"].as_f64().unwrap();
    assert!((share - mean).abs() < 1e-9, "{share} vs {mean}");
    assert!(read.iter().all(|bw| bw.as_f64().unwrap() > 0.1));
}
