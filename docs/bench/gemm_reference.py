"""PyTorch's `a @ b` on the shapes of `cargo bench -p tgc-kernels --bench gemm` (not part of the
project; the bench runs it when TGC_BENCH_PYTHON names a Python with torch):

    python docs/bench/gemm_reference.py THREADS REPS m,k,n,a_t,b_t ...

prints one line per shape, `m,k,n,a_t,b_t GFLOP/s` (best of REPS after one untimed call),
operands row-major and read transposed where a_t / b_t is 1, as the bench's.
"""
import sys, time, torch

threads, reps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
for spec in sys.argv[3:]:
    m, k, n, at, bt = (int(v) for v in spec.split(','))
    a = torch.randn(k, m).t() if at else torch.randn(m, k)
    b = torch.randn(n, k).t() if bt else torch.randn(k, n)
    out = torch.empty(m, n)
    torch.matmul(a, b, out=out)
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    print(spec, 2 * m * k * n / best / 1e9, flush=True)
