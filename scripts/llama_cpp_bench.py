"""llama.cpp on this machine, measured the way `tandem bench` measures us.

Runs llama.cpp through the `llama-cpp-python` package (built from source by
pip, so it uses this CPU's features): a warm-up, then R repetitions of
prompt processing (P tokens in one batch) and generation (N single-token
steps after a short prompt, or after D tokens with -d, as `tandem bench -d`),
printing mean ± sd tok/s as JSON lines.

Usage: python scripts/llama_cpp_bench.py MODEL.gguf [-p 128] [-n 64] [-r 5] [-t 2] [-d 0]
Setup: python -m venv V && CMAKE_ARGS="-DGGML_NATIVE=ON" V/bin/pip install llama-cpp-python
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("-p", type=int, default=128)
ap.add_argument("-n", type=int, default=64)
ap.add_argument("-r", type=int, default=5)
ap.add_argument("-t", type=int, default=2)
ap.add_argument("-d", type=int, default=0, help="tokens in the cache before generating")
a = ap.parse_args()

llm = Llama(model_path=a.model, n_threads=a.t, n_threads_batch=a.t, n_ctx=max(a.p, a.d + 8) + a.n + 16,
            n_batch=max(a.p, 32), n_ubatch=max(a.p, 32), verbose=False)
vocab = llm.n_vocab()
prompt = [(i * 7919 + 13) % (vocab - 1000) + 500 for i in range(max(a.p, a.d + 9))]


def pp():
    llm.reset()
    llm._ctx.kv_cache_clear()
    t0 = time.perf_counter()
    llm.eval(prompt[:a.p])
    return a.p / (time.perf_counter() - t0)


def tg():
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(prompt[:max(8, a.d)])
    tok = prompt[max(8, a.d)]
    t0 = time.perf_counter()
    for _ in range(a.n):
        llm.eval([tok])
    return a.n / (time.perf_counter() - t0)


tg_name = f"tg{a.n}" + (f" @ d{a.d}" if a.d else "")
for name, fn in [(f"pp{a.p}", pp), (tg_name, tg)]:
    fn()
    runs = [fn() for _ in range(a.r)]
    print(json.dumps({"engine": "llama.cpp (llama-cpp-python)", "test": name,
                      "mean": statistics.mean(runs), "sd": statistics.stdev(runs) if len(runs) > 1 else 0.0,
                      "runs": runs}))
