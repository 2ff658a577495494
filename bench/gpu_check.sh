#!/usr/bin/env bash
# GPU telemetry check: a short LoRA and a short full fine-tune of the embedded model on one GPU with
# `auto` telemetry, then a summary of what each figure showed. A few minutes on any recent GPU.
#   usage: bench/gpu_check.sh OUT_DIR        (PYTHON=... to choose the interpreter; default .venv's)
# DEVICE=cpu STEPS=4 PRETRAIN_STEPS=2 runs the same path on a CPU (the test suite's smoke test).
# OUT_DIR receives {lora,full}_{metrics,telemetry}.json, {lora,full}_telemetry.csv and summary.txt.
set -euo pipefail
out=${1:?usage: bench/gpu_check.sh OUT_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp -r "$repo/config" "$work/config"
cat > "$work/config/gpu_check.yaml" <<YAML
device: ${DEVICE:-cuda}
base_model:
  embedded: {pretrain_steps: ${PRETRAIN_STEPS:-100}}
training:
  max_steps: ${STEPS:-120}
  logging_steps: 2
  save_steps: 60
telemetry: {backend: auto, interval_s: 0.5}
YAML

cd "$work"
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} "$python" -m snakemake -s "$repo/Snakefile" --cores all \
    results/runs/lora/metrics.json results/runs/full/metrics.json --configfile config/gpu_check.yaml

for run in lora full; do
    cp "results/runs/$run/metrics.json" "$out/${run}_metrics.json"
    cp "results/runs/$run/telemetry.json" "$out/${run}_telemetry.json"
    cp "results/runs/$run/telemetry.csv" "$out/${run}_telemetry.csv"
done
cp results/logs/train/lora.log "$out/lora_train.log"

"$python" - "$out" <<'PY' | tee "$out/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
for run in ("lora", "full"):
    metrics = json.loads((out / f"{run}_metrics.json").read_text())
    summary = json.loads((out / f"{run}_telemetry.json").read_text())
    print(f"== {run}: backend {summary.get('backend')} (asked {summary.get('backend_requested')}), "
          f"devices {summary.get('device_names')}, driver {summary.get('driver_version')}")
    for name, figure in (metrics.get("memory") or {}).items():
        print(f"   {name:24s} {figure['value']:>10} {figure.get('unit', '')}  <- {figure['source']}")
    for device, entry in (summary.get("devices") or {}).items():
        figures = entry.get("figures", {})
        for column in ("vram_used_mb", "torch_allocated_mb", "power_w", "util_pct", "temp_c"):
            if column in figures:
                print(f"   {device} {column:18s} peak {figures[column].get('peak')} "
                      f"mean {figures[column].get('mean')} {figures[column].get('unit', '')}")
    print(f"   energy {summary.get('energy_j')} J ({summary.get('energy_method')}); "
          f"{summary.get('sample_count')} samples, achieved interval {summary.get('achieved_interval_s')} s; "
          f"train {metrics['train_runtime_s']:.1f} s, {metrics['train_tokens_per_s']:.0f} tokens/s")
PY
