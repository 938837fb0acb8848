#!/bin/bash
# The explain bench on another machine's CPU, against the PyTorch/Captum installed there: for
# measuring a CPU kind the development machines lack (docs/BACKBONES.md, "Intel Xeon").
#
# Here:  cargo bench -p tgc-backbones --bench explain --no-run   (prints the binary's path)
# There, from a copy of this repository with that binary beside it:
#        docs/bench/other_cpu.sh path/to/explain [python] [out-folder]
# The python needs torch, torchvision, captum and transformers. Each configuration runs pinned
# to two CPUs on distinct cores (the development machines have 2 cores), both sides with 2
# threads: the default kernels, the AVX2 matrix products (TGC_GEMM=avx2), and every kernel of
# both sides capped at AVX2 (TGC_SIMD=avx2).
set -euo pipefail
bench=$(realpath "$1")
python=${2:-python3}
out=${3:-.}
mkdir -p "$out"
export TGC_BENCH_SCRIPT="$(cd "$(dirname "$0")" && pwd)/pytorch_reference.py"
export TGC_BENCH_PYTHON="$python" TGC_BENCH_ITERS=${TGC_BENCH_ITERS:-3} OMP_NUM_THREADS=2
grep -m1 "model name" /proc/cpuinfo || true
cpus=$(lscpu -p=CPU,CORE | grep -v '#' | awk -F, '!seen[$2]++ {print $1}' | head -2 | paste -sd,)
echo "pinned to CPUs $cpus"
methods=${TGC_BENCH_ONLY:-resnet18.grad-cam,guided,saliency,gradient-shap,integrated}
echo "== default kernels"
TGC_BENCH_ONLY=$methods taskset -c "$cpus" "$bench" | tee "$out/default.txt"
echo "== TGC_GEMM=avx2"
TGC_GEMM=avx2 TGC_BENCH_ONLY=$methods taskset -c "$cpus" "$bench" | tee "$out/gemm_avx2.txt"
echo "== TGC_SIMD=avx2 (PyTorch capped to AVX2 too)"
TGC_SIMD=avx2 TGC_BENCH_ONLY=$methods taskset -c "$cpus" "$bench" | tee "$out/simd_avx2.txt"
