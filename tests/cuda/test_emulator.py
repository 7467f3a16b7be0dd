"""The CPU emulator of CUDA C (emulation.h + EmulatedDriver), tested with hand-written kernels.

The same kernel source is compiled for a real GPU with NVRTC where cuda-python is installed
(no GPU needed), which shows that these kernels are real CUDA and not emulator dialect.
"""

from __future__ import annotations

import ctypes
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pytest
from emulated_driver import EmulatedDriver, gxx_available

pytestmark = pytest.mark.skipif(not gxx_available(),
                                reason="the CUDA emulator needs g++ with -std=c++20 (<barrier>)")

KERNELS = r"""
template <typename T> __device__ __forceinline__ T sg_maximum(T a, T b) { return a > b ? a : b; }

extern "C" __global__ void axpy(const float* __restrict__ x, float* __restrict__ y, float a,
                                long long N, long long start, long long stop) {
  for (long long n = start + (long long)blockIdx.x * blockDim.x + threadIdx.x; n < stop;
       n += (long long)gridDim.x * blockDim.x)
    y[n] = a * x[n] + y[n];
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block: shuffles within each warp, then the warp totals through shared memory.
template <typename T> __device__ T block_sum(T v) {
  __shared__ T slots[32];
  const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
  v = warp_sum(v);
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  T total = 0;
  if (warp == 0) total = warp_sum(lane < (int)(blockDim.x / warpSize) ? slots[lane] : T(0));
  __syncthreads();  // before the slots are written again
  return total;
}

extern "C" __global__ void __launch_bounds__(128) block_sums(
    const double* __restrict__ x, double* __restrict__ partial, double* __restrict__ maxima,
    long long N) {
  double acc = 0, big = -__longlong_as_double(0x7ff0000000000000LL);  // -inf
  for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < N;
       n += (long long)gridDim.x * blockDim.x) {
    acc += x[n];
    big = sg_maximum(big, x[n]);
  }
  const double total = block_sum(acc);
  const double second = block_sum(2.0 * acc);  // the shared slots are reused safely
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = total;
    partial[2 * blockIdx.x + 1] = second;
  }
  maxima[(long long)blockIdx.x * blockDim.x + threadIdx.x] = big;
}

extern "C" __global__ void shuffles(int* __restrict__ down, int* __restrict__ xor_sum,
                                    int* __restrict__ bcast, int* __restrict__ up) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int v = (int)(t * 3 + 1);
  down[t] = __shfl_down_sync(0xffffffffu, v, 5);  // lanes 27..31 keep their own value
  int s = v;
  for (int mask = 1; mask < 32; mask <<= 1) s += __shfl_xor_sync(0xffffffffu, s, mask);
  xor_sum[t] = s;
  bcast[t] = __shfl_sync(0xffffffffu, v, 7);
  up[t] = __shfl_up_sync(0xffffffffu, v, 2);
}

extern "C" __global__ void atomics(const float* __restrict__ x, float* __restrict__ total,
                                   int* __restrict__ counter, int* __restrict__ tickets,
                                   int* __restrict__ biggest, long long N) {
  for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < N;
       n += (long long)gridDim.x * blockDim.x) {
    atomicAdd(total, x[n]);
    tickets[n] = atomicAdd(counter, 1);
    atomicMax(biggest, (int)(n * 7 % 1000));
  }
}

extern "C" __global__ void wide_args(double* __restrict__ y, double a, long long k, int m,
                                     long long N) {
  for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < N;
       n += (long long)gridDim.x * blockDim.x)
    y[n] = a * (double)n + (double)(k + n * m);
}

extern "C" __global__ void math_names(const float* __restrict__ x, float* __restrict__ y,
                                      double* __restrict__ z, long long N) {
  for (long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x; n < N;
       n += (long long)gridDim.x * blockDim.x) {
    const float v = x[n];
    y[5 * n + 0] = expf(v) + log1pf(fabsf(v)) + expm1f(v) + tanhf(v) + erff(v) + sqrtf(fabsf(v));
    y[5 * n + 1] = __expf(v) + __logf(fabsf(v) + 1.0f) + __fdividef(v, 3.0f) + __frcp_rn(2.0f)
                   + __powf(fabsf(v), 1.5f) + __sinf(v) + __cosf(v);
    y[5 * n + 2] = fmaxf(v, 0.0f) + fminf(v, 0.0f) + powf(fabsf(v), 0.5f) + sinf(v) + cosf(v);
    y[5 * n + 3] = (isnan(v) ? 1.0f : 0.0f) + (isinf(v / 0.0f) ? 2.0f : 0.0f);
    y[5 * n + 4] = __int_as_float(v > 0.0f ? 0x7f800000 : 0x7fc00000);  // inf : nan
    z[n] = exp((double)v) + log1p(fabs((double)v)) + tanh((double)v) + erf((double)v);
  }
}
"""


@dataclass
class Kernel:
    name: str
    params: list


def kernels_of(source: str) -> list[Kernel]:
    """The `extern "C" __global__` kernels of a hand-written source and their parameters."""
    kernels = []
    pattern = r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)'
    for name, params in re.findall(pattern, source):
        pairs = []
        for param in params.split(","):
            ctype, pname = param.strip().rsplit(None, 1)
            pairs.append((ctype, pname))
        kernels.append(Kernel(name, pairs))
    return kernels


P, I64, F64, F32, I32 = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_float,
                         ctypes.c_int32)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    # the emulator alone: NVRTC's view of these kernels is its own test below
    return EmulatedDriver(cache_dir=str(tmp_path_factory.mktemp("emu-cache")),
                          check_cubins=False)


@pytest.fixture(scope="module")
def module(driver):
    return driver.load(KERNELS, kernels_of(KERNELS))


def to_device(driver, array):
    address = driver.alloc(array.nbytes)
    driver.upload(address, array)
    return address


def from_device(driver, address, shape, dtype):
    out = np.empty(shape, dtype)
    driver.download(address, out)
    return out


def test_grid_stride_elementwise(driver, module):
    N = 1000  # not a multiple of the 3 x 64 threads of the grid
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    dx, dy = to_device(driver, x), to_device(driver, y)
    start, stop = 10, 990  # a sub-range, as the runtime's chunked passes launch
    driver.launch(module, "axpy", 3, 64, [P(dx), P(dy), F32(2.5), I64(N), I64(start), I64(stop)])
    expected = y.copy()
    expected[start:stop] = np.float32(2.5) * x[start:stop] + y[start:stop]
    np.testing.assert_array_equal(from_device(driver, dy, N, np.float32), expected)


@pytest.mark.parametrize("block", [64, 128])
def test_block_sum_shuffle_and_shared(driver, module, block):
    grid, N = 3, 1234
    x = np.random.default_rng(block).standard_normal(N)
    dx, dpartial = to_device(driver, x), driver.alloc(16 * grid)
    dmax = driver.alloc(8 * grid * block)
    driver.launch(module, "block_sums", grid, block, [P(dx), P(dpartial), P(dmax), I64(N)])
    threads = grid * block
    padded = np.concatenate([x, np.zeros(-N % threads)]).reshape(-1, grid, block)
    expected = padded.sum(axis=(0, 2))
    partial = from_device(driver, dpartial, (grid, 2), np.float64)
    np.testing.assert_allclose(partial[:, 0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(partial[:, 1], 2 * expected, rtol=1e-12, atol=1e-12)
    padded = np.concatenate([x, np.full(-N % threads, -np.inf)]).reshape(-1, grid * block)
    np.testing.assert_array_equal(from_device(driver, dmax, grid * block, np.float64),
                                  padded.max(axis=0))


def test_warp_shuffles(driver, module):
    grid, block = 2, 64
    n = grid * block
    outs = [driver.alloc(4 * n) for _ in range(4)]
    driver.launch(module, "shuffles", grid, block, [P(a) for a in outs])
    down, xor_sum, bcast, up = (from_device(driver, a, (n // 32, 32), np.int32) for a in outs)
    v = (np.arange(n) * 3 + 1).reshape(-1, 32)
    lane = np.arange(32)
    np.testing.assert_array_equal(down, np.where(lane + 5 < 32, np.roll(v, -5, axis=1), v))
    np.testing.assert_array_equal(xor_sum, np.broadcast_to(v.sum(axis=1, keepdims=True), v.shape))
    np.testing.assert_array_equal(bcast, np.broadcast_to(v[:, 7:8], v.shape))
    np.testing.assert_array_equal(up, np.where(lane >= 2, np.roll(v, 2, axis=1), v))


def test_atomics(driver, module):
    N = 500
    x = np.random.default_rng(1).uniform(0, 1, N).astype(np.float32)
    dx, dtotal, dcounter, dtickets, dbig = (to_device(driver, x), driver.alloc(4), driver.alloc(4),
                                            driver.alloc(4 * N), driver.alloc(4))
    for address in (dtotal, dcounter, dbig):
        driver.memset(address, 0, 4)
    driver.launch(module, "atomics", 3, 64, [P(dx), P(dtotal), P(dcounter), P(dtickets), P(dbig),
                                             I64(N)])
    assert from_device(driver, dtotal, 1, np.float32)[0] == pytest.approx(x.sum(dtype=np.float64),
                                                                          rel=1e-5)
    assert from_device(driver, dcounter, 1, np.int32)[0] == N
    # atomicAdd returns the old value: every thread drew a different ticket
    np.testing.assert_array_equal(np.sort(from_device(driver, dtickets, N, np.int32)), np.arange(N))
    assert from_device(driver, dbig, 1, np.int32)[0] == (np.arange(N) * 7 % 1000).max()


def test_double_and_int64_arguments(driver, module):
    N, a, k, m = 300, 0.1, 2**40 + 3, -7
    dy = driver.alloc(8 * N)
    driver.launch(module, "wide_args", 3, 64, [P(dy), F64(a), I64(k), I32(m), I64(N)])
    n = np.arange(N)
    np.testing.assert_array_equal(from_device(driver, dy, N, np.float64),
                                  a * n + (k + n * m).astype(np.float64))


def test_plain_math_names(driver, module):
    x = np.array([-2.5, -0.3, 0.0, 0.7, 3.0, np.nan], np.float32)
    N = len(x)
    dx, dy, dz = to_device(driver, x), driver.alloc(20 * N), driver.alloc(8 * N)
    driver.launch(module, "math_names", 1, 64, [P(dx), P(dy), P(dz), I64(N)])
    y = from_device(driver, dy, (N, 5), np.float32)
    z = from_device(driver, dz, N, np.float64)
    erf = np.vectorize(math.erf)
    v, a = x.astype(np.float64), np.abs(x.astype(np.float64))
    np.testing.assert_allclose(y[:, 0], np.exp(v) + np.log1p(a) + np.expm1(v) + np.tanh(v) + erf(v)
                               + np.sqrt(a), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[:, 1], np.exp(v) + np.log(a + 1) + v / 3 + 0.5 + a**1.5
                               + np.sin(v) + np.cos(v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[:, 2], np.maximum(v, 0) + np.minimum(v, 0) + np.sqrt(a)
                               + np.sin(v) + np.cos(v), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y[:, 3], [2, 2, 0, 2, 2, 1])  # v / 0 is nan for v = 0, nan
    np.testing.assert_array_equal(y[:, 4], np.where(x > 0, np.inf, np.nan))
    np.testing.assert_allclose(z, np.exp(v) + np.log1p(a) + np.tanh(v) + erf(v), rtol=1e-12)


def test_compiled_once(driver, module, tmp_path):
    before = driver.compile_count
    again = driver.load(KERNELS, kernels_of(KERNELS))
    assert driver.compile_count == before and again.path == module.path
    # a second driver on the same cache directory finds the library on disk
    other = EmulatedDriver(cache_dir=driver.cache_dir, check_cubins=False)
    assert other.load(KERNELS, kernels_of(KERNELS)).path == module.path
    assert other.compile_count == 0


def test_compile_error_shows_source_and_gxx(driver):
    source = ('extern "C" __global__ void broken(float* y, long long N) {\n'
              "  y[threadIdx.x] = undeclared_name;\n"
              "  y[0] = INFINITY;  // not defined by NVRTC, nor by the emulator\n}\n")
    with pytest.raises(RuntimeError) as info:
        driver.load(source, kernels_of(source))
    message = str(info.value)
    assert "'undeclared_name' was not declared" in message  # g++'s diagnostics
    assert "'INFINITY' was not declared" in message
    assert "    2    y[threadIdx.x] = undeclared_name;" in message  # numbered source


EMULATOR_ONLY = r"""
#include <stdexcept>
extern "C" __global__ void boom(int* out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) throw std::runtime_error("boom from thread 5");
  __syncthreads();  // the other threads wait here and are released
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}
extern "C" __global__ void early_exit(int* out) {
  if (threadIdx.x >= 40) return;  // exited threads drop out of the block barrier
  __syncthreads();
  out[threadIdx.x] = 2;
}
"""


def test_launch_errors_are_python_exceptions(driver):
    mod = driver.load(EMULATOR_ONLY, kernels_of(EMULATOR_ONLY))
    out = driver.alloc(4 * 3 * 64)
    with pytest.raises(RuntimeError, match="boom from thread 5"):
        driver.launch(mod, "boom", 3, 64, [P(out)])
    driver.launch(mod, "early_exit", 1, 64, [P(out)])
    assert (from_device(driver, out, 40, np.int32) == 2).all()
    with pytest.raises(RuntimeError, match="multiple of 32"):
        driver.launch(mod, "early_exit", 1, 48, [P(out)])
    with pytest.raises(TypeError, match="does not fit"):
        driver.launch(mod, "early_exit", 1, 64, [I32(0)])
    with pytest.raises(ValueError, match="not inside a live allocation"):
        driver.launch(mod, "early_exit", 1, 64, [P(out + 4 * 3 * 64 + 4)])


def test_memory(driver):
    empty, other = driver.alloc(0), driver.alloc(0)
    assert empty != other and empty % 64 == 0
    a = driver.alloc(40)
    assert a % 64 == 0
    assert np.isnan(from_device(driver, a, 5, np.float64)).all()  # fresh memory reads as NaN
    driver.upload(a, np.arange(10, dtype=np.int32))
    b = driver.alloc(40)
    driver.copy(b, a + 8, 32)
    np.testing.assert_array_equal(from_device(driver, b, 8, np.int32), np.arange(2, 10))
    driver.memset(b, 0, 8)
    np.testing.assert_array_equal(from_device(driver, b, 3, np.int32), [0, 0, 4])
    with pytest.raises(ValueError):
        driver.upload(a, np.zeros(11, np.int32))
    for address in (empty, other, a, b):
        driver.free(address)
    with pytest.raises(ValueError):
        driver.free(a)


def test_launch_time(driver, module):
    """A block is a few milliseconds: 64 thread starts and joins."""
    out = [driver.alloc(4 * 3 * 64) for _ in range(4)]
    driver.launch(module, "shuffles", 3, 64, [P(a) for a in out])
    t0 = time.perf_counter()
    driver.launch(module, "shuffles", 3, 64, [P(a) for a in out])
    assert time.perf_counter() - t0 < 1.0


def test_same_source_compiles_with_nvrtc():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")

    def check(result):
        err, *rest = result
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
        return rest[0] if rest else None

    prog = check(nvrtc.nvrtcCreateProgram(KERNELS.encode(), b"kernels.cu", 0, [], []))
    try:
        err, = nvrtc.nvrtcCompileProgram(prog, 1, [b"--gpu-architecture=sm_80"])
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            size = check(nvrtc.nvrtcGetProgramLogSize(prog))
            log = b" " * size
            check(nvrtc.nvrtcGetProgramLog(prog, log))
            pytest.fail(f"NVRTC rejected the kernels:\n{log.decode(errors='replace')}")
        assert check(nvrtc.nvrtcGetCUBINSize(prog)) > 0
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
