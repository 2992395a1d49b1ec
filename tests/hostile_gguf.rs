//! Corrupt and hostile GGUF files, made here, must each give an error that
//! names the problem — never a panic, an out-of-bounds read or a huge
//! allocation.

use std::path::PathBuf;

use tandem::backend::cpu::CpuBackend;
use tandem::gguf::{GgufFile, GgufWriter, MetaValue};
use tandem::model::LoadedModel;
use tandem::quant::GgmlType;

fn write(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

/// Open must fail, without panicking, with a message containing `want`.
fn expect_err(bytes: &[u8], want: &str) {
    let (_d, p) = write("bad.gguf", bytes);
    let r = std::panic::catch_unwind(|| GgufFile::open(&p).map(|_| ()));
    let err = r
        .expect("the parser panicked")
        .expect_err("a corrupt file was accepted");
    let msg = err.to_string();
    assert!(msg.contains(want), "error {msg:?} should mention {want:?}");
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn kv_header(b: &mut Vec<u8>, key: &str, ty: u32) {
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
}

fn tensor_info(b: &mut Vec<u8>, name: &str, dims: &[u64], ty: u32, offset: u64) {
    b.extend_from_slice(&(name.len() as u64).to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
}

fn valid() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("llama".into()));
    w.meta(
        "a.list",
        MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(2)]),
    );
    w.tensor("t", &[32, 2], GgmlType::F32, vec![0u8; 256]);
    w
}

#[test]
fn a_valid_file_opens() {
    let (_d, p) = write("ok.gguf", &valid().to_bytes());
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensor("t").unwrap().to_f32().len(), 64);
}

#[test]
fn empty_file() {
    expect_err(b"", "truncated");
}

#[test]
fn wrong_magic() {
    let mut b = valid().to_bytes();
    b[..4].copy_from_slice(b"GGML");
    expect_err(&b, "magic");
}

#[test]
fn unsupported_versions() {
    expect_err(&header(1, 0, 0), "version 1");
    expect_err(&header(4, 0, 0), "version 4");
}

#[test]
fn truncated_inside_the_header_and_metadata() {
    let b = valid().to_bytes();
    expect_err(&b[..10], "truncated");
    expect_err(&b[..40], "truncated");
}

#[test]
fn absurd_tensor_and_key_counts() {
    expect_err(&header(3, u64::MAX, 0), "tensor count");
    expect_err(&header(3, 0, 1 << 40), "metadata key count");
}

#[test]
fn string_length_past_the_end() {
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
    expect_err(&b, "truncated");
}

#[test]
fn array_count_larger_than_the_file() {
    let mut b = header(3, 0, 1);
    kv_header(&mut b, "big", 9);
    b.extend_from_slice(&4u32.to_le_bytes()); // u32 elements
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    expect_err(&b, "array \"big\" element count");
}

#[test]
fn arrays_nested_too_deep() {
    let mut b = header(3, 0, 1);
    kv_header(&mut b, "deep", 9);
    for _ in 0..20 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 64]);
    expect_err(&b, "nesting depth");
}

#[test]
fn unknown_metadata_type() {
    let mut b = header(3, 0, 1);
    kv_header(&mut b, "weird", 99);
    b.extend_from_slice(&[0u8; 16]);
    expect_err(&b, "unknown metadata value type 99");
}

#[test]
fn duplicate_metadata_key() {
    let mut w = valid();
    w.meta("general.architecture", MetaValue::String("qwen2".into()));
    expect_err(&w.to_bytes(), "duplicate metadata key");
}

#[test]
fn duplicate_tensor_name() {
    let mut w = valid();
    w.tensor("t", &[32], GgmlType::F32, vec![0u8; 128]);
    expect_err(&w.to_bytes(), "duplicate tensor name");
}

#[test]
fn unknown_tensor_type() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "t", &[32], 77, 0);
    b.resize(b.len() + 512, 0);
    expect_err(&b, "unknown tensor type id 77");
}

#[test]
fn bad_dimension_counts_and_sizes() {
    for (dims, want) in [
        (vec![], "0 dimensions"),
        (vec![1, 1, 1, 1, 1], "5 dimensions"),
        (vec![32, 0], "zero-sized"),
        (vec![1 << 32, 1 << 32, 1 << 32], "absurd dimensions"),
        (vec![33], "not a multiple"),
    ] {
        let mut b = header(3, 1, 0);
        tensor_info(&mut b, "t", &dims, 8, 0); // Q8_0
        b.resize(b.len() + 1024, 0);
        expect_err(&b, want);
    }
}

#[test]
fn tensor_data_past_the_end_or_misaligned() {
    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "t", &[32, 1000], 0, 0);
    b.resize(b.len() + 256, 0);
    expect_err(&b, "runs past the end");

    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "t", &[32], 0, u64::MAX - 8);
    b.resize(b.len() + 256, 0);
    expect_err(&b, "alignment");

    let mut b = header(3, 1, 0);
    tensor_info(&mut b, "t", &[32], 0, 7);
    b.resize(b.len() + 256, 0);
    expect_err(&b, "not a multiple of alignment");
}

#[test]
fn bad_alignment_value() {
    let mut w = valid();
    w.meta("general.alignment", MetaValue::U32(3));
    expect_err(&w.to_bytes(), "alignment 3");
}

#[test]
fn random_mutations_never_panic() {
    use rand::{Rng, SeedableRng};
    let base = valid().to_bytes();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..400 {
        let mut b = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..b.len());
            b[at] = rng.random();
        }
        if i % 7 == 0 {
            let cut = rng.random_range(0..b.len());
            b.truncate(cut);
        }
        let p = dir.path().join(format!("m{i}.gguf"));
        std::fs::write(&p, &b).unwrap();
        let r = std::panic::catch_unwind(|| {
            if let Ok(f) = GgufFile::open(&p) {
                for t in &f.header.tensors {
                    let _ = f.tensor(&t.name).map(|t| t.to_f32());
                }
            }
        });
        assert!(r.is_ok(), "mutation {i} panicked");
    }
}

/// A syntactically valid file whose model content is wrong: a clear error at load.
fn tiny_llama(drop_tensor: Option<&str>, block_count: u32) -> Vec<u8> {
    let mut w = GgufWriter::new();
    let s = |v: &str| MetaValue::String(v.into());
    w.meta("general.architecture", s("llama"));
    w.meta("llama.block_count", MetaValue::U32(block_count));
    w.meta("llama.embedding_length", MetaValue::U32(32));
    w.meta("llama.feed_forward_length", MetaValue::U32(64));
    w.meta("llama.attention.head_count", MetaValue::U32(2));
    w.meta("llama.context_length", MetaValue::U32(128));
    w.meta("tokenizer.ggml.model", s("gpt2"));
    w.meta("tokenizer.ggml.pre", s("default"));
    w.meta(
        "tokenizer.ggml.tokens",
        MetaValue::Array(vec![s("a"), s("b"), s("ab")]),
    );
    w.meta("tokenizer.ggml.merges", MetaValue::Array(vec![s("a b")]));
    let mut add = |name: &str, dims: &[u64]| {
        if Some(name) != drop_tensor {
            let n: u64 = dims.iter().product();
            w.tensor(name, dims, GgmlType::F32, vec![0u8; n as usize * 4]);
        }
    };
    add("token_embd.weight", &[32, 3]);
    add("output_norm.weight", &[32]);
    for i in 0..block_count {
        for (t, dims) in [
            ("attn_norm.weight", vec![32]),
            ("attn_q.weight", vec![32, 32]),
            ("attn_k.weight", vec![32, 32]),
            ("attn_v.weight", vec![32, 32]),
            ("attn_output.weight", vec![32, 32]),
            ("ffn_norm.weight", vec![32]),
            ("ffn_gate.weight", vec![32, 64]),
            ("ffn_up.weight", vec![32, 64]),
            ("ffn_down.weight", vec![64, 32]),
        ] {
            add(&format!("blk.{i}.{t}"), &dims);
        }
    }
    w.to_bytes()
}

fn load_err(bytes: &[u8]) -> String {
    let (_d, p) = write("model.gguf", bytes);
    match LoadedModel::load(&p, CpuBackend) {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_tiny_valid_model_loads_and_runs() {
    let (_d, p) = write("model.gguf", &tiny_llama(None, 2));
    let m = LoadedModel::load(&p, CpuBackend).unwrap();
    let mut s = tandem::engine::Session::new(&m, 64);
    let (logits, _) = s.feed(&[0, 1, 2], 2).unwrap();
    assert_eq!(logits.len(), 3);
    // Out-of-vocabulary ids and over-long prompts are errors, not panics.
    assert!(s
        .feed(&[0, 99], 1)
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
    assert!(s
        .feed(&[0; 65], 64)
        .unwrap_err()
        .to_string()
        .contains("context holds 64"));
}

#[test]
fn missing_tensor_is_named() {
    let msg = load_err(&tiny_llama(Some("blk.1.ffn_up.weight"), 2));
    assert!(msg.contains("blk.1.ffn_up.weight"), "{msg}");
}

#[test]
fn absurd_hyper_parameters_are_rejected() {
    let msg = load_err(&tiny_llama(None, 0));
    assert!(msg.contains("block_count"), "{msg}");
}

#[test]
fn unknown_architecture_and_pre_tokenizer() {
    let mut b = tiny_llama(None, 1);
    let at = b.windows(5).position(|w| w == b"llama").unwrap();
    b[at..at + 5].copy_from_slice(b"mamba");
    assert!(load_err(&b).contains("unsupported"));
    let mut b = tiny_llama(None, 1);
    let at = b.windows(7).position(|w| w == b"default").unwrap();
    b[at..at + 7].copy_from_slice(b"mystery");
    let msg = load_err(&b);
    assert!(
        msg.contains("mystery") && msg.contains("refusing to guess"),
        "{msg}"
    );
}

#[test]
fn a_truncated_real_model_is_an_error() {
    let path = tandem::catalog::resolve("smollm2-135m").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    expect_err(&bytes[..bytes.len() / 2], "runs past the end");
}
