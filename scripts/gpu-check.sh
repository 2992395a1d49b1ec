#!/usr/bin/env bash
# GPU correctness check, run on the GPU machine with a tandem built with
# `--features cuda` (see README.md, "NVIDIA GPUs").
#
#   TANDEM=path/to/tandem TOKENIZER=qwen-tok.gguf [SMOLLM2=smollm2.gguf] [GEMMA3=gemma.gguf] scripts/gpu-check.sh
#
# 1. A random model in Qwen2.5-0.5B's shape and Q4_K_M mixture (Q4_K, Q5_0,
#    Q6_K, Q8_0 weights): GPU logits against the CPU's, prefill and decode,
#    relative L2 error per logits row within the tolerance below; again with
#    the norms folded into the residual products (forced at this width).
# 2. The same shape in Q8_0, Q4_0, Q4_1 (SmolLM2's formats) and F16, and the
#    1.5B shape in F16 (head dim 128).
# 3. SmolLM2-135M (Q4_1) when given: logits within tolerance and free-running
#    greedy tokens identical to the CPU's.
# 4. Serving: concurrent greedy requests against one at a time.
# 5. Decode steps launched ahead of the host: `generate` (greedy, past a
#    16-position KV block and a graph's context bucket; with n-gram
#    speculation; seeded top-k sampling, which mostly refuses the step
#    launched ahead) gives the same tokens and log-probabilities as with
#    TANDEM_CUDA_AHEAD=0.
# Every check-device run also compares ops no model reaches on the device
# (RoPE alone, the KV store read back through decode attention at head
# widths 64 and 128) on random data: relative L2 within 2e-3.
set -euo pipefail
TANDEM=${TANDEM:-./tandem}
TOKENIZER=${TOKENIZER:?TOKENIZER=a GGUF with the Qwen2.5 tokenizer (tandem synth --tokenizer-only)}
WORK=${WORK:-/tmp/tandem-gpu-check}
mkdir -p "$WORK"
status=0
LONG=$(for i in $(seq 12); do printf 'The capital of France is Paris, and the capital of Italy is Rome. '; done)
# Relative L2 tolerance per weight type. With f16 weights the two backends
# differ only in rounding (f16 KV cache on the GPU): measured ~1e-3. With
# quantized weights both quantize activations to 8 bits, but differently
# rounded values propagate through 24 random (chaotic) layers: measured
# 3-4.5e-2 while the argmax still agrees.
tol() { case $1 in f16) echo 0.005 ;; *) echo 0.06 ;; esac; }
for ty in q4_k_m q8_0 q4_0 q4_1 f16; do
  m="$WORK/qwen05-$ty.gguf"
  [ -f "$m" ] || "$TANDEM" synth --like qwen2.5-0.5b --type "$ty" --tokenizer "$TOKENIZER" -o "$m"
  echo "== qwen2.5-0.5b shape, $ty"
  # A prompt past 64 tokens: prefill takes the GEMM attention path and decode
  # attention runs several splits.
  "$TANDEM" check-device -m "$m" --device cuda -n 24 --tol "$(tol "$ty")" -p "$LONG" || status=1
done
# The norms folded into the residual products (linear_add_norm) apply from
# width 2048; forced here onto the 0.5B shape so that the check covers them.
echo "== qwen2.5-0.5b shape, q4_k_m, norms folded"
TANDEM_CUDA_FOLD_MIN_WIDTH=512 "$TANDEM" check-device -m "$WORK/qwen05-q4_k_m.gguf" --device cuda -n 24 \
  --tol "$(tol q4_k_m)" -p "$LONG" || status=1
# Head dim 128 with six query heads per KV head (the 7B family's attention
# geometry is the same kind): F16 weights, so the tolerance is tight.
m="$WORK/qwen15-f16.gguf"
[ -f "$m" ] || "$TANDEM" synth --like qwen2.5-1.5b --type f16 --tokenizer "$TOKENIZER" -o "$m"
echo "== qwen2.5-1.5b shape, f16"
"$TANDEM" check-device -m "$m" --device cuda -n 16 --tol 0.005 -p "$LONG" || status=1
if [ -n "${SMOLLM2:-}" ]; then
  echo "== SmolLM2-135M Q4_1"
  # Q4_1 runs natively with 8-bit activations rounded as the CPU rounds them;
  # the backends still differ in the f16 KV cache and float order, which the
  # logits' tail shows (rel. L2 measured 0.09), while greedy tokens must agree.
  "$TANDEM" check-device -m "$SMOLLM2" --device cuda -n 32 --tol 0.15 --same-tokens \
    -p "Name the capital city of France." || status=1
fi
if [ -n "${GEMMA3:-}" ]; then
  # Gemma 3: GELU, QK-norm on head dim 256, post-norms, sliding-window layers
  # (the 600-token prompt passes the 512-token window and a prompt chunk that
  # wants no logits).
  echo "== Gemma3-270M Q4_K_M"
  LONGER=$(for i in $(seq 40); do printf 'The capital of France is Paris, and the capital of Italy is Rome. '; done)
  "$TANDEM" check-device -m "$GEMMA3" --device cuda -n 32 --tol 0.15 --same-tokens -p "The capital of France is" || status=1
  "$TANDEM" check-device -m "$GEMMA3" --device cuda -n 16 --tol 0.15 --same-tokens -p "$LONGER" || status=1
fi
# 4. Serving: concurrent greedy requests (steps of at most 16 rows, so only
#    decode kernels) give the same text as the same requests one at a time.
m="$WORK/qwen05-q4_k_m.gguf"
echo "== serving: batched steps against one request at a time"
"$TANDEM" serve -m "$m" --device cuda --port 8117 --step-tokens 16 > "$WORK/serve.log" 2>&1 &
server=$!
for _ in $(seq 120); do curl -sf localhost:8117/health > /dev/null && break; sleep 0.5; done
python3 "$(dirname "$0")/serve_batch_check.py" 8117 6 || { status=1; tail -3 "$WORK/serve.log"; }
kill $server; wait $server 2> /dev/null || true
echo "== decode steps launched ahead against none"
for args in "--temp 0 -n 600" "--temp 0 -n 200 --spec ngram" "--temp 0.8 --seed 3 -n 200"; do
  # shellcheck disable=SC2086
  TANDEM_CUDA_AHEAD=0 "$TANDEM" generate -m "$m" --device cuda --json -p "$LONG" $args > "$WORK/ahead0.json"
  # shellcheck disable=SC2086
  "$TANDEM" generate -m "$m" --device cuda --json -p "$LONG" $args > "$WORK/ahead1.json"
  python3 - "$WORK/ahead0.json" "$WORK/ahead1.json" "$args" << 'PY' || status=1
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
same = a["tokens"] == b["tokens"] and a["logprobs"] == b["logprobs"]
print(f"{sys.argv[3]}: {len(b['tokens'])} tokens, {'equal' if same else 'DIFFERENT'}")
sys.exit(0 if same and len(b["tokens"]) > 0 else 1)
PY
done
exit $status
