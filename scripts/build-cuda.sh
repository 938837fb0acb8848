#!/usr/bin/env bash
# Builds a CUDA-enabled `tgc` (`--device cuda[:N]`) on a machine with or without a GPU, from
# registry packages only: NVIDIA's CUDA 13.0 toolkit wheels (nvcc, NVVM, headers, runtime,
# cuBLAS, cuRAND, NVRTC) from PyPI into a virtual environment, a link stub for the driver
# library (libcuda ships with the GPU driver, not with any package), and
# `cargo build --release -p tgc-cli --features cuda`.
#
#   scripts/build-cuda.sh            # → target/cuda/release/tgc
#   scripts/build-cuda.sh --bench    # also → target/cuda/release/tgc-bench-explain, the
#                                    # `explain` bench (TGC_BENCH_DEVICE=cuda, docs/BACKBONES.md)
#
# Environment: CUDA_COMPUTE_CAP (default 80: PTX that any GPU from the A100 on JIT-compiles;
# 90 emits sm_90a for H100/H200 only), TGC_CUDA_VENV (default target/cuda-toolkit),
# CARGO_TARGET_DIR (default target/cuda, so the CPU build in target/ is left alone).
#
# The target machine must provide an NVIDIA driver for CUDA ≥ 13.0 (libcuda.so.1) and the
# CUDA 13 libraries the binary links (printed at the end: libcublas.so.13 with its
# libcublasLt.so.13, libcurand.so.10, libcudart.so.13) on its library path: a CUDA 13 toolkit,
# or the runtime wheels below. The binary (~85 MB stripped, PTX included) gzips to ~23 MB.
set -euo pipefail
bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    *) echo "build-cuda: unknown argument $arg (--bench)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${TGC_CUDA_VENV:-$root/target/cuda-toolkit}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}

# Pinned to CUDA 13.0: cudarc reads the version from `nvcc --version`, and PTX from a newer
# nvcc than the target's driver fails to load (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
# What the binary needs at run time besides the driver.
runtime_wheels=(nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "${wheels[@]}"

cu=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$cu/bin/nvcc" ] || { echo "build-cuda: no nvcc under $cu/bin after installing the wheels" >&2; exit 1; }
# The nvcc wheel lacks NVVM's cicc; the nvvm wheel brings it beside.
[ -d "$cu/nvvm/bin" ] || { echo "build-cuda: no NVVM (cicc) under $cu/nvvm" >&2; exit 1; }

# A CUDA_HOME that cudarc's build script searches: lib/ with the unversioned names the linker
# wants, lib/stubs/libcuda.so with every driver entry point cudarc declares.
home="$venv/cuda-home"
mkdir -p "$home/lib/stubs"
for lib in cublas cublasLt curand nvrtc cudart; do
  real=$(find "$cu/lib" "$(dirname "$cu")" -name "lib$lib.so.*" -not -name '*alt*' 2>/dev/null | sort | head -n1)
  [ -n "$real" ] || { echo "build-cuda: lib$lib.so.* not found in the wheels" >&2; exit 1; }
  ln -sf "$real" "$home/lib/lib$lib.so"
done
cargo fetch --manifest-path "$root/Cargo.toml" --quiet
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort | tail -n1)
grep -ho '^ *fn cu[A-Za-z0-9_]*(' "$cudarc/src/driver/sys/mod.rs" | sed 's/^ *fn \(.*\)(/\1/' | sort -u \
  | awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$home/lib/stubs/libcuda.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib/stubs/libcuda.so" "$home/lib/stubs/libcuda.c"

export PATH="$cu/bin:$PATH" CUDA_HOME="$home" CUDA_PATH="$home"
export NVCC_PREPEND_FLAGS="-I$cu/include ${NVCC_PREPEND_FLAGS:-}"
nvcc --version | tail -n2
cargo build --release --manifest-path "$root/Cargo.toml" -p tgc-cli --features cuda

if [ "$bench" = 1 ]; then
  exe=$(cargo bench --no-run --manifest-path "$root/Cargo.toml" -p tgc-backbones --features cuda --bench explain 2>&1 \
    | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\/explain-[0-9a-f]*\)).*/\1/p' | tail -n1)
  [ -n "$exe" ] || { echo "build-cuda: the bench did not build" >&2; exit 1; }
  case "$exe" in /*) ;; *) exe="$root/$exe" ;; esac
  cp "$exe" "$CARGO_TARGET_DIR/release/tgc-bench-explain"
  echo "bench: $CARGO_TARGET_DIR/release/tgc-bench-explain (TGC_BENCH_DEVICE=cuda, TGC_BENCH_PYTHON, TGC_BENCH_SCRIPT)"
fi

bin="$CARGO_TARGET_DIR/release/tgc"
echo
echo "built $bin (CUDA 13.0, compute capability $CUDA_COMPUTE_CAP)"
echo "it loads at run time: libcuda.so.1 (the GPU driver, CUDA >= 13.0) and, on the library path:"
readelf -d "$bin" | sed -n 's/.*NEEDED.*\[\(lib\(cu\|nvrtc\)[^]]*\)\]/  \1/p'
echo "(a machine without them can take the wheels: pip install ${runtime_wheels[*]}, then"
echo " LD_LIBRARY_PATH=\$(python -c 'import nvidia,os;print(os.path.join(nvidia.__path__[0],\"cu13\",\"lib\"))'))"
