"""llama.cpp built on this machine, against the greedy references of issue [P1].

The references (`../shared/refs/greedy_<model>.json`) were made by llama.cpp
b10470's server on another host. This runs the same prompts through the
llama.cpp that `llama-cpp-python` compiles here (other CPU features, so other
kernels and summation orders), greedy, 64 tokens, and prints how many leading
tokens equal the reference and the reference's own log-probability margin
between its token and the one chosen here at the first difference. It answers:
does llama.cpp itself meet "token for token" off the reference's machine?

Usage: python scripts/llama_cpp_greedy.py [MODELS_DIR] [REFS_DIR]
Setup: python -m venv V && CMAKE_ARGS="-DGGML_NATIVE=ON" V/bin/pip install llama-cpp-python
"""
import json
import os
import sys

from llama_cpp import Llama

STEMS = ["smollm2-135m-instruct-q4_1", "gemma3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct"]
models = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/tandem/models")
refs = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../../shared/refs")

for stem in STEMS:
    ref = json.load(open(os.path.join(refs, f"greedy_{stem}.json")))
    llm = Llama(model_path=os.path.join(models, stem + ".gguf"), n_ctx=1024, n_threads=2,
                n_batch=512, verbose=False, logits_all=True)
    for r in ref["results"]:
        llm.reset()
        llm.eval([t["id"] for t in r["prompt_tokens"]])
        ours = []
        for _ in range(64):
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
            ours.append(tok)
            llm.eval([tok])
        want = r["generated_token_ids"]
        first = next((i for i, (a, b) in enumerate(zip(ours, want)) if a != b), len(want))
        margin = None
        if first < len(want):
            top = r["per_token"][first]["top5"]
            margin = next((top[0][1] - c[1] for c in top if c[0] == ours[first]), float("inf"))
        print(json.dumps({"model": stem, "prompt": r["prompt"][:32], "identical": first,
                          "of": len(want), "reference_margin_at_first_difference": margin}))
