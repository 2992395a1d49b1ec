//! Tokenization equals llama.cpp's (`../shared/refs/tokenize_<model>.json`)
//! for every catalog model, with and without BOS.

mod common;

use tandem::gguf::GgufFile;
use tandem::tokenizer::Tokenizer;

fn check(name: &str, stem: &str) {
    let gguf = GgufFile::open(common::model_path(name)).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let r = common::load_ref("tokenize", stem);
    for e in r["entries"].as_array().unwrap() {
        let prompt = e["prompt"].as_str().unwrap();
        let with_bos = tok.encode(prompt, true).unwrap();
        let no_bos = tok.encode(prompt, false).unwrap();
        assert_eq!(
            with_bos,
            common::ids(&e["ids_default"]),
            "{name}: {prompt:?} (default)"
        );
        assert_eq!(
            no_bos,
            common::ids(&e["ids_no_bos"]),
            "{name}: {prompt:?} (--no-bos)"
        );
        let skip = usize::from(tok.add_bos);
        assert_eq!(
            tok.decode(&with_bos[skip..]),
            prompt,
            "{name}: decode round trip"
        );
    }
}

#[test]
fn smollm2_tokenization_matches_llama_cpp() {
    check("smollm2-135m", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_tokenization_matches_llama_cpp() {
    check("gemma3-270m", "gemma3-270m-q4_k_m");
}

#[test]
fn qwen_0_5b_tokenization_matches_llama_cpp() {
    check("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct");
}

#[test]
fn qwen_1_5b_tokenization_matches_llama_cpp() {
    check("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct");
}
