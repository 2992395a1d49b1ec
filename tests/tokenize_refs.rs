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

/// Hard strings and the whole wikitext-2 test corpus tokenize as llama.cpp
/// does (`tests/data/tokenize_llama_cpp.json`, written by
/// `scripts/llama_cpp_tokenize.py`): the corpus by chunk, as a token count
/// and a hash of the ids.
fn check_more(name: &str, stem: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tokenize_llama_cpp.json"
    );
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let r = &data["models"][stem];
    let gguf = GgufFile::open(common::model_path(name)).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let mut wrong = Vec::new();
    for e in r["hard"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        if ids != common::ids(&e["ids"]) {
            wrong.push(format!(
                "{text:?}: {ids:?}, llama.cpp {:?}",
                common::ids(&e["ids"])
            ));
        }
    }
    let corpus =
        std::fs::read_to_string(common::refs_dir().join("corpus/wikitext-2-raw-test.txt")).unwrap();
    let lines: Vec<&str> = corpus.split('\n').collect();
    let per = data["chunk_lines"].as_u64().unwrap() as usize;
    let chunks = r["corpus"].as_array().unwrap();
    assert_eq!(chunks.len(), lines.len().div_ceil(per));
    for (i, (want, lines)) in chunks.iter().zip(lines.chunks(per)).enumerate() {
        let ids = tok.encode(&lines.join("\n"), false).unwrap();
        let got = (ids.len() as u64, format!("{:016x}", fnv64(&ids)));
        if got.0 != want["tokens"].as_u64().unwrap() || got.1 != want["fnv64"].as_str().unwrap() {
            wrong.push(format!(
                "corpus chunk {i} (lines {}..): {} tokens, llama.cpp {}",
                i * per,
                got.0,
                want["tokens"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
}

fn fnv64(ids: &[u32]) -> u64 {
    ids.iter()
        .flat_map(|i| i.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[test]
fn smollm2_hard_strings_and_corpus_match_llama_cpp() {
    check_more("smollm2-135m", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_hard_strings_and_corpus_match_llama_cpp() {
    check_more("gemma3-270m", "gemma3-270m-q4_k_m");
}

#[test]
fn qwen_hard_strings_and_corpus_match_llama_cpp() {
    check_more("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct");
    check_more("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct");
}

/// The models' own chat templates render as their authors intended.
#[test]
fn real_chat_templates_render() {
    use tandem::tokenizer::ChatMessage;
    let gguf = GgufFile::open(common::model_path("qwen2.5-coder-0.5b")).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert!(tok.chat_template.fallback_note().is_none());
    let out = tok
        .chat_template
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&out, true).unwrap();
    assert_eq!(ids[0], 151644, "<|im_start|> is one special token");

    let gguf = GgufFile::open(common::model_path("smollm2-135m")).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let out = tok
        .chat_template
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert!(
        out.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{out}"
    );
    assert!(
        out.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{out}"
    );

    let gguf = GgufFile::open(common::model_path("gemma3-270m")).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert!(tok.chat_template.fallback_note().is_some());
    let out = tok
        .chat_template
        .render(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(
        tok.encode(&out, true).unwrap()[..2],
        [2, 105],
        "<bos><start_of_turn>, BOS not doubled"
    );
}

/// Streaming detokenization emits whole characters only: emoji and CJK
/// split across byte-level tokens are held back until complete.
#[test]
fn streaming_never_splits_a_character() {
    let text = "Héllo wörld! 你好，世界 🌍🚀 naïve café — “quotes” ✓ 🤖👍🏽 𓀀𐌰𓂀";
    for name in ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"] {
        let gguf = GgufFile::open(common::model_path(name)).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap();
        let ids = tok.encode(text, false).unwrap();
        let split_tokens = ids
            .iter()
            .filter(|&&i| std::str::from_utf8(tok.piece(i)).is_err())
            .count();
        assert!(
            split_tokens > 0,
            "{name}: the test text should contain tokens that are partial characters"
        );
        let mut stream = tok.stream();
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(id);
            assert!(
                !piece.contains('\u{FFFD}'),
                "{name}: emitted a broken character after token {id}"
            );
            out.push_str(&piece);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, text, "{name}");
    }
}
