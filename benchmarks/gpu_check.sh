#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA GPU.
#
#   MEDSIGHT_TEST_DATA=/path/to/datasets OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# 1. installs medsight into .venv as the README does, when there is no .venv yet;
# 2. what PyTorch sees (nvidia-smi, torch, CUDA, bf16);
# 3. the cuda-marked tests (tests/training/test_gpu.py) and the device tests;
# 4. trains the RECIPES (default: malaria and pneumonia, complete recipes) on the GPU; each run
#    evaluates itself on its held-out test split (metrics.json): accuracy, ROC-AUC, training
#    seconds and images/s, wall time; beside them the CPU figures of the latest full benchmark
#    (benchmarks/results/*-full.json, time_to_accuracy);
# 5. one epoch of malaria-lenet on the same 4,000 cells with --accelerator gpu and cpu, side by
#    side in this run: training seconds and their ratio.
# Everything lands in $OUT/gpu_check.json (logs beside it); put its figures in RESULTS.md.
# Exits non-zero when a test or a GPU training fails.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/.work/gpu_check}
DATA=${MEDSIGHT_TEST_DATA:-../shared/datasets}
RECIPES=${RECIPES:-malaria pneumonia}
mkdir -p "$OUT"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[dev,medmnist,lite0,lungs]"
fi
PY=.venv/bin/python
export MEDSIGHT_PROGRESS=json HF_HUB_OFFLINE=1

nvidia-smi -L >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >>"$OUT/nvidia-smi.txt"
"$PY" - >"$OUT/torch.json" <<'EOF'
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
    "device": torch.cuda.get_device_name() if cuda else None,
    "bf16": torch.cuda.is_bf16_supported() if cuda else None,
}))
EOF

MEDSIGHT_TEST_DATA="$DATA" "$PY" -m pytest -q -p no:cacheprovider -rs \
  tests/training/test_gpu.py tests/training/test_device.py >"$OUT/pytest.log" 2>&1
echo "$?" >"$OUT/pytest.rc"

data_of() {  # data_of RECIPE: the dataset folder it trains on
  case "$1" in pneumonia*) echo "$DATA/chest_xray" ;; covid*) echo "$DATA/covid" ;; *) echo "$DATA/malaria" ;; esac
}
train() {  # train NAME RECIPE ACCELERATOR [key=value ...]: a run in $OUT/NAME, rc and wall time
  local name=$1 recipe=$2 accelerator=$3 start
  shift 3
  start=$(date +%s%N)
  "$PY" -m medsight train --recipe "$recipe" --data "$(data_of "$recipe")" --out "$OUT/$name" \
    --overwrite --accelerator "$accelerator" "$@" >"$OUT/$name.log" 2>&1
  echo "$? $(( ($(date +%s%N) - start) / 1000000 ))" >"$OUT/$name.status"  # rc, milliseconds
}
for recipe in $RECIPES; do train "gpu-$recipe" "$recipe" gpu; done
train side-gpu malaria-lenet gpu --epochs 1 data.limit=4000
train side-cpu malaria-lenet cpu --epochs 1 data.limit=4000

"$PY" - "$OUT" "$RECIPES" <<'EOF'
import csv, json, sys
from pathlib import Path
out, recipes = Path(sys.argv[1]), sys.argv[2].split()

def run(name):
    rc, wall_ms = (out / f"{name}.status").read_text().split()
    found = {"rc": int(rc), "wall_s": round(int(wall_ms) / 1000, 1)}
    metrics = out / name / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        keep = ("accelerator", "precision", "device", "train_seconds", "epochs_run", "n")
        found |= {k: m.get(k) for k in keep}
        found |= {"test_accuracy": m.get("accuracy"), "test_roc_auc": m.get("roc_auc")}
        with open(out / name / "splits.csv", newline="") as handle:
            train_images = sum(row["split"] == "train" for row in csv.DictReader(handle))
        found["train_images_per_s"] = round(train_images * m["epochs_run"] / m["train_seconds"], 1)
    return found

def cpu_reference(recipe):
    fulls = sorted(Path("benchmarks/results").glob("*-full.json"))
    if not fulls:
        return None
    entry = json.loads(fulls[-1].read_text())
    tta = entry.get("time_to_accuracy", {}).get(recipe)
    if not tta:
        return None
    return {"source": fulls[-1].name, "machine": entry.get("machine"), "wall_s": tta["total_wall_s"],
            "test_accuracy": tta["final_bundle_accuracy"]}

side_gpu, side_cpu = run("side-gpu"), run("side-cpu")
found = {
    "torch": json.loads((out / "torch.json").read_text()),
    "nvidia_smi": (out / "nvidia-smi.txt").read_text().strip(),
    "tests_passed": (out / "pytest.rc").read_text().strip() == "0",
    "tests_tail": (out / "pytest.log").read_text().strip().splitlines()[-3:],
    "recipes": {r: {"gpu": run(f"gpu-{r}"), "cpu_reference": cpu_reference(r)} for r in recipes},
    "side_by_side": {"gpu": side_gpu, "cpu": side_cpu},
    "cpu_over_gpu_train_seconds": round(side_cpu["train_seconds"] / side_gpu["train_seconds"], 2)
    if side_gpu.get("train_seconds") and side_cpu.get("train_seconds") else None,
}
(out / "gpu_check.json").write_text(json.dumps(found, indent=2) + "\n")
print(json.dumps(found, indent=2))
ok = found["tests_passed"] and all(v["gpu"]["rc"] == 0 for v in found["recipes"].values())
sys.exit(0 if ok and side_gpu["rc"] == 0 else 1)
EOF
