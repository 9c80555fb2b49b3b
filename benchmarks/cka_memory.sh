#!/usr/bin/env bash
# Peak memory of `seelike cka` on ViT-B/16 at 224 px reading every sub-layer vs block outputs only
# (issue: memory independent of the number of captured layers). Usage, from the repository root:
#   bash benchmarks/cka_memory.sh [SEELIKE_SRC]    # SEELIKE_SRC: another checkout's src/ to measure "before"
# Prints one line per run: layers, peak RSS (GiB), wall seconds. Run with nothing else on the machine.
set -euo pipefail
src=${1:-src}
python=${PYTHON:-.venv/bin/python}
for layers in blocks all; do
  out=$(mktemp -d)
  /usr/bin/time -f "%M %e" -o "$out/time" env PYTHONPATH="$src" OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$python" -m seelike cka \
    timm:vit_base_patch16_224 --data synthetic:n=512,size=224,channels=3 --n 512 --batch-size 128 --layers "$layers" \
    --out "$out/cka" > "$out/log" 2>&1 || { cat "$out/log"; exit 1; }
  read -r kib seconds < "$out/time"
  printf "src=%s layers=%-6s peak_rss_gib=%.2f wall_s=%s\n" "$src" "$layers" "$(echo "$kib / 1048576" | bc -l)" "$seconds"
  rm -rf "$out"
done
