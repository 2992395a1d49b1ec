#!/usr/bin/env bash
# GPU benchmarks on synthetic Qwen2.5-shape models, run on the GPU machine:
#   TANDEM=path/to/tandem TOKENIZER=qwen-tok.gguf scripts/gpu-bench.sh [SHAPE:TYPE ...]
# e.g. qwen2.5-0.5b:q4_k_m qwen2.5-7b:q4_k_m. PROFILE=1 adds a per-kernel table.
set -uo pipefail
TANDEM=${TANDEM:-./tandem}
TOKENIZER=${TOKENIZER:?TOKENIZER=a GGUF with the Qwen2.5 tokenizer}
WORK=${WORK:-/tmp/tandem-gpu-bench}
P=${P:-512} N=${N:-128} R=${R:-5}
mkdir -p "$WORK"
for spec in "${@:-qwen2.5-0.5b:q4_k_m}"; do
  shape=${spec%%:*} ty=${spec##*:}
  m="$WORK/$shape-$ty.gguf"
  [ -f "$m" ] || { /usr/bin/time -f "synth $shape $ty: %es" "$TANDEM" synth --like "$shape" --type "$ty" --tokenizer "$TOKENIZER" -o "$m" >/dev/null || exit 1; }
  echo "== $shape $ty"
  "$TANDEM" bench -m "$m" --device cuda -p "$P" -n "$N" -r "$R"
  if [ "${PROFILE:-0}" = 1 ]; then
    TANDEM_CUDA_PROFILE=1 "$TANDEM" bench -m "$m" --device cuda -p "$P" -n "$N" -r 1 | sed -n '/| kernel/,$p'
  fi
done
