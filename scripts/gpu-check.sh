#!/usr/bin/env bash
# The GPU check of the device-generic path, run on a machine with an NVIDIA GPU beside a CUDA
# build of tgc (scripts/build-cuda.sh --bench, then copy target/cuda/release/{tgc,
# tgc-bench-explain}, this script and docs/bench/pytorch_reference.py there):
#
#   scripts/gpu-check.sh TGC_BIN [DATA_DIR] [OUT_DIR]
#
# For ResNet-18 and ViT-B/16 (random weights: no hub needed; ResNet-18's with BatchNorm shifts,
# see resnet_weights below) it extracts the features of
# every slice of DATA_DIR (default: generated phantoms) with --device cpu and --device cuda,
# trains a probe on the CPU features, explains the test slices with Grad-CAM, Guided Backprop,
# Integrated Gradients, GradientSHAP (and Chefer for the ViT) on both devices, and prints the
# largest relative difference of each (pass: ≤ 1e-4) and the share of values beyond 1e-4.
# Expect IG and GradientSHAP of ResNet-18 at ~1e-3 on some slices whatever the two sides: their
# scaled and noisy inputs put max-pool windows and ReLUs at rounding-level ties, and which side
# wins moves a few patches (tgc's CPU kernels against Captum on the same real slices and
# weights: 5e-4 to 1.3e-3; docs/BACKBONES.md). Then, when tgc-bench-explain sits beside
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
d = np.abs(a - b) / scale
rel, beyond = float(d.max()), float((d > 1e-4).mean())
print(f"{rel:.2e} {'ok' if rel <= 1e-4 else 'FAIL'}  ({beyond:.3%} of values beyond 1e-4)  {sys.argv[3]} of {sys.argv[2]}")
PY
}

# ResNet-18 weights whose BatchNorm shifts are not zero (as a trained network's are, and as
# docs/bench's parity scripts draw them). `random:<seed>` is torchvision's initialisation, whose
# zero shifts leave the background of a slice at pre-activations of rounding size: which side of
# zero each lands on depends on the order of a sum, so guided and path maps of such weights
# differ between any two implementations (PyTorch's included; docs/BACKBONES.md, denormals).
resnet_weights() {
  python3 - "$1" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(1)
t = {}
def conv(name, cout, cin, k):
    t[name + ".weight"] = rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k))
def bn(name, c):
    t[name + ".weight"] = rng.uniform(0.5, 1.5, c)
    t[name + ".bias"] = rng.normal(0, 0.1, c)
    t[name + ".running_mean"] = rng.normal(0, 0.1, c)
    t[name + ".running_var"] = rng.uniform(0.5, 1.5, c)
conv("conv1", 64, 3, 7); bn("bn1", 64)
cin = 64
for i, cout in enumerate([64, 128, 256, 512]):
    for j in range(2):
        p, inp = f"layer{i + 1}.{j}", (cin if j == 0 else cout)
        conv(p + ".conv1", cout, inp, 3); bn(p + ".bn1", cout)
        conv(p + ".conv2", cout, cout, 3); bn(p + ".bn2", cout)
        if j == 0 and i > 0:
            conv(p + ".downsample.0", cout, inp, 1); bn(p + ".downsample.1", cout)
    cin = cout
header, blobs, offset = {}, [], 0
for name, v in sorted(t.items()):
    b = np.ascontiguousarray(v, dtype="<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
    blobs.append(b)
    offset += len(b)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
}
resnet_weights "$out/resnet18-bn-shifts.safetensors"

for b in ${TGC_CHECK_BACKBONES:-resnet18 vit}; do
  weights=random:1
  [ "$b" = resnet18 ] && weights="$out/resnet18-bn-shifts.safetensors"
  # `ref` on the CPU, `dev` on the device checked.
  for side in ref dev; do
    run_on "$side" extract --backbone "$b" --weights "$weights" --data "$data" --out "$out/$b-$side.safetensors" --no-cache
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
