#!/usr/bin/env python3
"""Batched serving against one request at a time, on a running `tandem serve`.

    scripts/serve_batch_check.py PORT [N]

Sends N greedy completions (different prompts and lengths) one after another,
then all at once, and exits non-zero unless every text is the same both ways.
Run the server with `--step-tokens 16`: then every step takes the decode
kernels, whose rows do not depend on the other rows of a step, so batching
may change the speed but not one token. (Steps past 16 rows take the prefill
GEMM, whose sums depend on the batch; there, greedy outputs of a random-weight
model do differ between runs.)
"""
import json
import sys
import threading
import urllib.request


def complete(port: int, i: int) -> str:
    body = json.dumps({"prompt": f"Hi {i}" + " there" * i, "max_tokens": 48, "temperature": 0}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)["choices"][0]["text"]


def main() -> int:
    port = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    alone = [complete(port, i) for i in range(n)]
    together: dict[int, str] = {}

    def ask(i: int) -> None:
        together[i] = complete(port, i)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = [alone[i] == together.get(i) for i in range(n)]
    print(f"{sum(same)}/{n} concurrent greedy completions equal to the same requests one at a time")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
