"""llama.cpp's tokenization of hard strings and of the wikitext-2 test corpus.

Writes `tests/data/tokenize_llama_cpp.json`, which `tests/tokenize_refs.rs`
checks tandem against: for each catalog model, the ids of each string in
`HARD` (no BOS, special tokens parsed), and for each chunk of the corpus
(`../shared/refs/corpus/wikitext-2-raw-test.txt` cut at every `CHUNK_LINES`
lines) its token count and the FNV-1a 64 hash of its ids as little-endian
u32s, so that a mismatch names the chunk without storing 300k ids.

Usage: python scripts/llama_cpp_tokenize.py [MODELS_DIR]
Setup: python -m venv V && CMAKE_ARGS="-DGGML_NATIVE=ON" V/bin/pip install llama-cpp-python
"""
import json
import os
import struct
import sys

from llama_cpp import Llama

STEMS = [
    "smollm2-135m-instruct-q4_1",
    "gemma3-270m-q4_k_m",
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
]
CHUNK_LINES = 400

HARD = [
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "\n\n\nnewlines\r\n\r\nCRLF\n",
    "\t\ttabs\tand  two  spaces",
    "1234567890 12 345 6789.01 1,000,000",
    "don't I'LL we've THEY'RE she'd it's O'Neil",
    "émoji 🧑‍💻 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 skin 👋🏿",
    "中文测试，日本語のテキスト、한국어 텍스트",
    "Привет, мир! Ελληνικά. עברית. العربية ٣٤٥",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_start|>a<|endoftext|>b<|im_start",
    "<start_of_turn>user\nhello<end_of_turn>\n<bos><eos>",
    "x = [i**2 for i in range(10)]  # squares\n\tif x:\n\t\treturn {'a': 1}",
    "http://example.com/path?q=1&r=2#frag <a href=\"x\">y</a>",
    " " * 100 + "end",
    "a" * 1000,
    "!!!???... ---- ==== **** ````",
    "non\u00a0breaking\u2009thin\u3000ideographic space",
    "ℕ ∑ ∫ ≤ ≥ ∀x∈ℝ: x² ≥ 0",
    "control \x01\x02\x7f bytes",
    "e\u0301 combining, ﬁ ligature, Ⅻ roman, ３ fullwidth, ① circled",
    "CamelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case",
    "$HOME ~/path/to/file.rs:42:7 C:\\Windows\\System32",
    "Zero\u200bwidth\u200djoiner\ufeffBOM",
]


def fnv64(ids):
    h = 0xCBF29CE484222325
    for b in struct.pack(f"<{len(ids)}I", *ids):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/tandem/models")
    here = os.path.dirname(os.path.abspath(__file__))
    corpus_path = os.path.join(here, "../../shared/refs/corpus/wikitext-2-raw-test.txt")
    lines = open(corpus_path, encoding="utf-8").read().split("\n")
    chunks = ["\n".join(lines[i:i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES)]
    out = {"chunk_lines": CHUNK_LINES, "models": {}}
    for stem in STEMS:
        llm = Llama(model_path=os.path.join(models, stem + ".gguf"), vocab_only=True, verbose=False)

        def tok(text):
            return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

        out["models"][stem] = {
            "hard": [{"text": t, "ids": tok(t)} for t in HARD],
            "corpus": [{"tokens": len(ids), "fnv64": fnv64(ids)} for ids in map(tok, chunks)],
        }
        print(stem, sum(c["tokens"] for c in out["models"][stem]["corpus"]), "corpus tokens")
    dest = os.path.join(here, "../tests/data/tokenize_llama_cpp.json")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
