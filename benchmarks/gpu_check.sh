#!/usr/bin/env bash
# One prepared GPU check (< 8 min on one GPU), never needed by `make test`. Run it whenever a GPU is at hand and
# commit benchmarks/results/gpu.md:
#     bash benchmarks/gpu_check.sh            # from the repository root; PYTHON=... to pick the interpreter
#     DRY_RUN=1 bash benchmarks/gpu_check.sh  # on a CPU: each florence_lib command validates its config
#                                             # (--dry-run), the rest is listed, not run; writes _gpu_dry_run.md
# Sections (each timed, each with its own log in $LOGS): CUDA facts; pretraining smoke on CUDA in bf16 with the
# torch engine, with DeepSpeed ZeRO-2 (NCCL, one rank) and with the gradient cache; images/s of unicl_tiny, _small
# and _base at 224 px against open_clip's matched CLIP, with peak memory; each adapter's smoke step on CUDA in bf16
# (detection, METER VQA, Video CoSwin).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DRY_RUN=${DRY_RUN:-}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}
OUT=benchmarks/results/gpu.md
[ -n "$DRY_RUN" ] && OUT=benchmarks/results/_gpu_dry_run.md  # scratch (the collector skips `_` files)
LOGS=${LOGS:-$(mktemp -d -t gpu_check.XXXX)}
RUNS=$LOGS/runs
mkdir -p benchmarks/results "$RUNS"
START=$SECONDS

{
  echo "# GPU check ($(hostname), $(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Logs: $LOGS. Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  [ -n "$DRY_RUN" ] && echo && echo "DRY RUN: each florence_lib command resolved and validated its config (--dry-run); nothing ran on a GPU."
  echo
  echo "| section | result | seconds |"
  echo "|---|---|---|"
} > "$OUT"

# section NAME TIMEOUT_S COMMAND...: run it with a time limit, log it, add a table row; a failure is recorded
# (and makes the script exit non-zero at the end) without skipping the sections after it.
FAILED=0
section() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS log="$LOGS/${name// /_}.log" status=ok
  echo "== $name (limit ${limit}s)"
  if [ -n "$DRY_RUN" ] && [ "$1" != smoke ] && [ "$1" != flc ]; then
    echo "   would run: $*"
    echo "| $name | not run (dry run) | 0 |" >> "$OUT"
    return
  fi
  # through bash -c: timeout runs programs, and smoke/flc are this script's (exported) functions
  if ! timeout "$limit" bash -c '"$@"' _ "$@" > "$log" 2>&1; then
    status="FAILED (see $log)"
    FAILED=1
    tail -20 "$log"
  fi
  echo "| $name | $status | $((SECONDS - t0)) |" >> "$OUT"
}

flc() {  # a florence_lib command (under DRY_RUN: its config resolved and validated, nothing run)
  "$PYTHON" -m florence_lib "$@" ${DRY_RUN:+--dry-run}
}

smoke() {  # smoke pretraining on CUDA in bf16; extra --set overrides select the engine
  local run=$1
  shift
  flc pretrain --profile smoke --run-dir "$RUNS/$run" --set device=cuda precision=bf16 resume=false "$@"
}
export -f flc smoke
export PYTHON DRY_RUN RUNS

section "cuda facts" 60 "$PYTHON" -c "
import torch
assert torch.cuda.is_available(), 'no CUDA device visible'
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), 'bf16:', torch.cuda.is_bf16_supported())"
section "pretrain smoke, torch engine, bf16" 120 smoke torch
section "pretrain smoke, DeepSpeed ZeRO-2 NCCL 1 rank, bf16" 180 smoke zero2 distributed.engine=deepspeed \
  distributed.zero_stage=2
section "pretrain smoke, gradient cache, bf16" 120 smoke gradcache distributed.grad_cache_chunk=4
section "images/s at 224 px vs open_clip (bf16)" 240 "$PYTHON" benchmarks/bench_pretrain.py --device cuda \
  --precision bf16 --presets unicl_tiny unicl_small unicl_base --image-size 224 --batch-size 64 --steps 10 \
  --threads 0 --name gpu_throughput

# Each adapter's smoke step on CUDA in bf16 (a fresh UniCL tower where no checkpoint is given).
section "detection smoke (Dynamic Head), bf16" 120 flc detect train --profile smoke --run-dir "$RUNS/detect" \
  --set device=cuda precision=bf16
section "VQA smoke (METER), bf16" 120 flc vl vqa --profile smoke --run-dir "$RUNS/vqa" --set device=cuda precision=bf16
section "video smoke (Video CoSwin), bf16" 120 flc video train --profile smoke --run-dir "$RUNS/video" \
  --set device=cuda train.precision=bf16

{
  echo
  for log in "$LOGS"/cuda_facts.log; do echo "CUDA: $(tail -1 "$log" 2>/dev/null)"; done
  echo
  for run in torch zero2 gradcache; do
    if [ -f "$RUNS/$run/results.json" ]; then
      echo "- smoke \`$run\`: $("$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); print(', '.join(f'{k}={v:.4g}' for k,v in r.items() if isinstance(v,float)))" "$RUNS/$run/results.json")"
    fi
  done
  echo
  [ -z "$DRY_RUN" ] && [ -f benchmarks/results/gpu_throughput.md ] && sed 's/^#/###/' benchmarks/results/gpu_throughput.md
  echo
  echo "Total: $((SECONDS - START)) s."
} >> "$OUT"
cat "$OUT"
exit $FAILED
