#!/usr/bin/env bash
# One short visit to a GPU: the evaluation, training and image-generation benchmarks at fp32 and bf16 (each against
# the matmul roofline it measures first), within 8 minutes in all, merged into one JSON.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--small] [--out gpu_check.json] [--overwrite]
#
# --device cpu --small runs every scenario on tiny shapes in well under a minute (CI runs it so, to keep it from
# rotting). Each benchmark has its own time limit; one that fails or runs out of time is recorded in the JSON
# ("rc", the tail of its output) and the others still run; the exit status is non-zero if any did not finish.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
SMALL=0
OUT=gpu_check.json
OVERWRITE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --small) SMALL=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --overwrite) OVERWRITE=1; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --device, --small, --out, --overwrite)" >&2; exit 2 ;;
  esac
done
if [[ "$DEVICE" != "cpu" && "$DEVICE" != cuda* ]]; then
  echo "gpu_check.sh: --device $DEVICE: expected cpu or cuda[:N]" >&2; exit 2
fi
if [[ -e "$OUT" && $OVERWRITE == 0 ]]; then
  echo "gpu_check.sh: $OUT exists; pass --overwrite to replace it" >&2; exit 2
fi
if [[ "$DEVICE" == cuda* ]] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: --device $DEVICE but torch sees no CUDA device (use --device cpu)" >&2; exit 2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ $SMALL == 1 ]]; then
  EVAL_ARGS=(--small --images 12 --release-images 4 --rounds 1 --batch-size 4 --no-compile --peak-sizes 128)
  TRAIN_ARGS=(--small --in-process --scenario b32-lora,demo --steps 1 --warmup 2 --rows 16 --batch 4 --peak-sizes 128)
  IMAGE_ARGS=(--n 2 --batch-size 2 --size 32 --steps 1 --peak-sizes 128)
  LIMITS=(120 180 120)
elif [[ "$DEVICE" == cuda* ]]; then
  # sized to finish in about 6 of the 8 minutes on one recent GPU (limits: 200 + 200 + 80 s at most)
  EVAL_ARGS=(--images 1024 --release-images 64 --rounds 2 --batch-size 256)
  TRAIN_ARGS=(--scenario b32-lora,demo --steps 20 --warmup 3 --batch 128 --rows 512 --compile)
  IMAGE_ARGS=(--n 32 --batch-size 8 --size 256 --steps 4)
  LIMITS=(200 200 80)
else  # a full CPU run (not time-boxed to 8 minutes: the CPU figures come from the scripts themselves)
  EVAL_ARGS=()
  TRAIN_ARGS=(--scenario b32-lora,demo --steps 6)
  IMAGE_ARGS=(--n 16 --batch-size 8)
  LIMITS=(1200 1800 600)
fi

run() {  # name limit command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - start))" > "$WORK/$name.status"
  echo "[$name] rc=$rc in $((SECONDS - start)) s"
  tail -n 25 "$WORK/$name.log"
}

START=$SECONDS
run eval "${LIMITS[0]}" python benchmarks/eval_throughput.py --device "$DEVICE" --json "$WORK/eval.json" "${EVAL_ARGS[@]}"
run train "${LIMITS[1]}" python benchmarks/train_throughput.py --device "$DEVICE" --json "$WORK/train.json" "${TRAIN_ARGS[@]}"
run image_generation "${LIMITS[2]}" python benchmarks/image_stage_batching.py --device "$DEVICE" --dtypes fp32,bf16 \
  --json "$WORK/image_generation.json" "${IMAGE_ARGS[@]}"

python - "$WORK" "$OUT" "$DEVICE" "$SMALL" "$((SECONDS - START))" <<'EOF'
import json, os, sys, tempfile
work, out, device, small, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
report = {"device": device, "small": small, "wall_seconds": seconds, "runs": {}}
for name in ("eval", "train", "image_generation"):
    rc, took = open(os.path.join(work, f"{name}.status")).read().split()
    entry = {"rc": int(rc), "seconds": int(took)}
    path = os.path.join(work, f"{name}.json")
    if int(rc) == 0 and os.path.exists(path):
        entry["result"] = json.load(open(path))
    else:
        entry["log_tail"] = open(os.path.join(work, f"{name}.log"), errors="replace").read()[-4000:]
    report["runs"][name] = entry
report["ok"] = all(r["rc"] == 0 and "result" in r for r in report["runs"].values())
folder = os.path.dirname(os.path.abspath(out))
fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
with os.fdopen(fd, "w") as handle:
    json.dump(report, handle, indent=2)
os.replace(tmp, out)
print(f"wrote {out}: ok={report['ok']} in {seconds} s")
sys.exit(0 if report["ok"] else 1)
EOF
