#!/usr/bin/env bash
# The GPU check of the device-generic path, run on a machine with an NVIDIA GPU beside a CUDA
# build of tgc (scripts/build-cuda.sh --bench, then copy target/cuda/release/{tgc,
# tgc-bench-explain}, this script and docs/bench/pytorch_reference.py there):
#
#   scripts/gpu-check.sh TGC_BIN [DATA_DIR] [OUT_DIR]
#
# For ResNet-18 and ViT-B/16 (random:1 weights: no hub needed) it extracts the features of
# every slice of DATA_DIR (default: generated phantoms) with --device cpu and --device cuda,
# trains a probe on the CPU features, explains the test slices with Grad-CAM, Guided Backprop,
# Integrated Gradients, GradientSHAP (and Chefer for the ViT) on both devices, and prints the
# largest relative difference of each (pass: ≤ 1e-4). Then, when tgc-bench-explain sits beside
# TGC_BIN, the benchmark on the GPU and on the CPU, PyTorch/Captum beside it when `python` has
# torch, torchvision, captum and transformers. Needs python3 with numpy for the comparison.
#
# TGC_CHECK_DEVICE (default cuda) is the device compared with the CPU's kernels; `cpu-generic`
# compares the device-generic ops on the CPU (TGC_OPS=generic): the same path a GPU runs, end
# to end, on a machine without one.
set -euo pipefail
second=${TGC_CHECK_DEVICE:-cuda}
# Runs tgc on the side `ref` (the CPU's kernels) or `dev` (the device checked).
run_on() {
  local side=$1
  shift
  if [ "$side" = ref ]; then
    TGC_OPS= "$tgc" "$@" --device cpu
  elif [ "$second" = cpu-generic ]; then
    TGC_OPS=generic "$tgc" "$@" --device cpu
  else
    "$tgc" "$@" --device "$second"
  fi
}
tgc=$(realpath "${1:?usage: gpu-check.sh TGC_BIN [DATA_DIR] [OUT_DIR]}")
here=$(cd "$(dirname "$0")" && pwd)
out=${3:-$(mktemp -d)}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# The CUDA 13 libraries the build links to: the system's, else those of pip's nvidia wheels.
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
paths = set()
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for f in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so.*"), recursive=True):
        paths.add(os.path.dirname(f))
print(":".join(sorted(paths)))
PY
)
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
data=${2:-}
if [ -z "$data" ]; then
  data="$out/phantoms"
  "$tgc" data synth --out "$data" --patients 12 --size 224 --seed 1
fi

compare() { # compare.py A B TENSOR: max |a − b| / max |b|
  python3 - "$@" <<'PY'
import json, struct, sys
import numpy as np
def load(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start, end = header[name]["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype=np.float32)
a, b = load(sys.argv[1], sys.argv[3]), load(sys.argv[2], sys.argv[3])
scale = float(np.abs(a).max()) or 1.0
rel = float(np.abs(a - b).max()) / scale
print(f"{rel:.2e} {'ok' if rel <= 1e-4 else 'FAIL'}  {sys.argv[3]} of {sys.argv[2]}")
PY
}

for b in resnet18 vit; do
  # `ref` on the CPU, `dev` on the device checked.
  for side in ref dev; do
    run_on "$side" extract --backbone "$b" --weights random:1 --data "$data" --out "$out/$b-$side.safetensors" --no-cache
  done
  compare "$out/$b-ref.safetensors" "$out/$b-dev.safetensors" features
  "$tgc" train --features "$out/$b-ref.safetensors" --out "$out/runs-$b" --iterations 1 --epochs 3
  run=$(dirname "$(find "$out/runs-$b" -name model.safetensors | sort | head -n1)")
  methods=gradcam,guided-backprop,integrated-gradients,gradient-shap
  [ "$b" = vit ] && methods="$methods,chefer"
  for side in ref dev; do
    run_on "$side" explain --run "$run" --data "$data" --split test --samples-per-class 1 --method "$methods" \
      --out "$out/explain-$b-$side"
  done
  for f in "$out/explain-$b-ref"/*.safetensors; do
    compare "$f" "$out/explain-$b-dev/$(basename "$f")" attribution
  done
done

bench="$(dirname "$tgc")/tgc-bench-explain"
if [ -x "$bench" ]; then
  export TGC_BENCH_SCRIPT="$here/pytorch_reference.py"
  [ -f "$TGC_BENCH_SCRIPT" ] || TGC_BENCH_SCRIPT="$here/../docs/bench/pytorch_reference.py"
  python3 -c 'import torch, torchvision, captum, transformers' 2>/dev/null && export TGC_BENCH_PYTHON=python3
  for dev in cuda cpu; do
    echo "== bench on $dev"
    TGC_BENCH_DEVICE=$dev TGC_BENCH_ITERS=3 TGC_BENCH_ONLY=grad-cam,guided-backprop,gradient-shap,integrated-gradients,chefer "$bench"
  done
fi
