#!/usr/bin/env bash
# Side-by-side kernel timings: `examples/kernels` binaries run alternately,
# the fastest of all rounds kept per (binary, kernel line). On a shared host,
# single runs vary by ±30%; alternating and taking the minimum, with the
# matrix in L2 (KERNELS_KIB=256), held unchanged code to ±3%.
#
#   cp target/release/examples/kernels /tmp/kernels.base   # before a change
#   cp target/release/examples/kernels /tmp/kernels.new    # after it
#   KERNELS_KIB=256 scripts/kernels_ab.sh 3 '^(Q4_K|Q5_0) row' base new
set -euo pipefail
rounds=$1 pattern=$2
shift 2
bins=("$@")
dir=$(mktemp -d)
for _ in $(seq "$rounds"); do
    for b in "${bins[@]}"; do
        "/tmp/kernels.$b" | grep -E "$pattern" >>"$dir/$b.txt" || true
    done
done
for b in "${bins[@]}"; do
    # "Q4_K row x1:   58.1 ns/row, ..." -> kernel, binary, fastest ns/row
    awk -v b="$b" '{k=$1" "$2" "$3; if (!(k in m) || $4 < m[k]) m[k] = $4}
        END {for (k in m) printf "%-18s %-6s %8.1f\n", k, b, m[k]}' "$dir/$b.txt"
done | sort -s -k1,3
rm -r "$dir"
