// emulation.h: lets g++ -std=c++20 compile unchanged CUDA C kernels for the CPU (tests only).
//
// Model: the blocks of a grid run one after another; the threads of one block run concurrently,
// one OS thread per CUDA thread. A function-local `static` is then exactly block-shared memory,
// so `__shared__` becomes `static`. Warps are groups of 32 consecutive threads (threadIdx.x) and
// blockDim.x must be a multiple of 32; shuffles assume that all 32 lanes take part.
// Limits: 1-D grids and blocks only; no dynamic (`extern __shared__`) shared memory.
#pragma once
#include <atomic>
#include <barrier>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define SG_EMULATED 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

// NVRTC defines none of these (checked with CUDA 13 NVRTC); code that the GPU would reject must
// fail here too. Device code writes infinity as __int_as_float(0x7f800000).
#undef INFINITY
#undef NAN
#undef HUGE_VAL
#undef HUGE_VALF

struct sg_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local sg_dim3 threadIdx, blockIdx;  // set by each emulated thread
inline sg_dim3 blockDim, gridDim;                   // set per launch
constexpr int warpSize = 32;

// Math as in device code: the C names unqualified, fast intrinsics as the plain functions.
using std::isfinite; using std::isinf; using std::isnan; using std::signbit;
using std::max; using std::min;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }
template <typename T> inline T __ldg(const T* p) { return *p; }

namespace sg_emu {
struct Aborted {};  // thrown out of a barrier when another thread of the block failed

// Generation barrier. Threads that return from the kernel drop out (as on the hardware: no
// deadlock when some threads exit before a __syncthreads), and poison() releases every waiter
// with Aborted when a thread of the block has failed. Waiting blocks on the generation counter
// (a futex), because a block has far more threads than the machine has cores.
class Barrier {
 public:
  explicit Barrier(unsigned n) : count_(n) {}
  void wait() { wait([] {}); }
  template <typename F> void wait(F on_release) {  // on_release: run by the last to arrive
    unsigned gen;
    {
      std::lock_guard lock(m_);
      if (broken_) throw Aborted{};
      gen = gen_.load(std::memory_order_relaxed);
      if (++arrived_ == count_) {
        on_release();
        release();
        return;
      }
    }
    while (gen_.load(std::memory_order_acquire) == gen) gen_.wait(gen, std::memory_order_acquire);
    if (broken_) throw Aborted{};
  }
  void drop() { drop([] {}); }
  template <typename F> void drop(F on_release) {
    std::lock_guard lock(m_);
    if (--count_ == arrived_ && count_) {
      on_release();
      release();
    }
  }
  void poison() { std::lock_guard lock(m_); broken_ = true; release(); }
  void reset(unsigned n) { count_ = n; arrived_ = 0; broken_ = false; }  // nobody may be waiting
 private:
  void release() { arrived_ = 0; gen_.fetch_add(1, std::memory_order_release); gen_.notify_all(); }
  std::mutex m_;
  std::atomic<unsigned> gen_{0};
  unsigned count_, arrived_ = 0;
  std::atomic<bool> broken_{false};
};

struct Warp {
  Barrier bar{32};
  alignas(8) unsigned char slot[2][32][8];  // one 8-byte slot per lane, two rounds in turn
  std::atomic<unsigned> exit_round[32];     // the lane's shuffle count when it exited
};
struct Block {
  explicit Block(unsigned n) : size(n), bar(n), warps(n / 32) { reset(); }
  void reset() {
    bar.reset(size);
    for (Warp& w : warps) {
      w.bar.reset(32);
      for (auto& r : w.exit_round) r = UINT_MAX;
    }
  }
  void poison() {
    bar.poison();
    for (Warp& w : warps) w.bar.poison();
  }
  unsigned size;
  Barrier bar;
  std::vector<Warp> warps;
};
inline thread_local Warp* tls_warp = nullptr;
inline thread_local Block* tls_block = nullptr;
inline thread_local int tls_lane = 0;
inline thread_local unsigned tls_round = 0;  // shuffles done by this thread in this block

// Every lane publishes v, then reads lane src's value (src == own lane: v itself). Rounds
// alternate between two slot sets, so one barrier per shuffle suffices: a lane can only write
// round r + 2 after every lane has passed round r + 1, i.e. finished reading round r.
template <typename T> T exchange(T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a large type");
  Warp& w = *tls_warp;
  const unsigned round = tls_round++;
  std::memcpy(w.slot[round & 1][tls_lane], &v, sizeof(T));
  w.bar.wait();
  T r = v;
  if (src != tls_lane) {
    if (w.exit_round[src] <= round) throw std::logic_error("warp shuffle from an exited lane");
    std::memcpy(&r, w.slot[round & 1][src], sizeof(T));
  }
  return r;
}

// One OS thread per CUDA thread of a block; the threads run the blocks of the grid one after
// another, with a join barrier between blocks (there the block state is reset). The first
// exception of a thread poisons the block, ends the launch and is rethrown by launch().
inline void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (block == 0 || block % 32 != 0 || block > 1024)
    throw std::invalid_argument("emulated launch: block size must be a multiple of 32, <= 1024");
  static std::mutex one_launch_at_a_time;  // blockDim/gridDim and statics belong to one launch
  std::lock_guard guard(one_launch_at_a_time);
  gridDim = {grid, 1, 1};
  blockDim = {block, 1, 1};
  Block blk(block);
  Barrier join(block);
  std::exception_ptr error;
  std::mutex error_m;
  std::atomic<bool> failed{false};
  bool stop = false;  // written only at the join, where no thread runs: all see the same value
  auto fail = [&](std::exception_ptr e) {
    { std::lock_guard lock(error_m); if (!error) error = e; }
    failed = true;
    blk.poison();
  };
  auto next_block = [&] { blk.reset(); stop = failed; };
  auto thread_main = [&](unsigned t) {
    tls_block = &blk; tls_warp = &blk.warps[t / 32]; tls_lane = int(t % 32);
    for (unsigned b = 0; b < grid && !stop; ++b) {
      threadIdx = {t, 0, 0};
      blockIdx = {b, 0, 0};
      tls_round = 0;
      try { body(); } catch (Aborted&) {} catch (...) { fail(std::current_exception()); }
      tls_warp->exit_round[tls_lane] = tls_round;
      blk.bar.drop(); tls_warp->bar.drop();
      join.wait(next_block);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(block);
  try {
    for (unsigned t = 0; t < block; ++t) threads.emplace_back(thread_main, t);
  } catch (...) {  // e.g. out of threads: the started ones must not wait for the others
    fail(std::current_exception());
    for (auto t = threads.size(); t < block; ++t) join.drop(next_block);
  }
  for (auto& th : threads) th.join();
  if (error) std::rethrow_exception(error);
}

// Calls kernel k with args[i] pointing at the value of parameter i, as cuLaunchKernel does.
template <typename... P, std::size_t... I>
void invoke(void (*k)(P...), void** args, std::index_sequence<I...>) {
  k(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}
template <typename... P> void invoke(void (*k)(P...), void** args) {
  invoke(k, args, std::index_sequence_for<P...>{});
}
template <typename... P> constexpr unsigned arity(void (*)(P...)) { return sizeof...(P); }
// Parameter sizes and pointer flags of k, for the driver's argument checks; returns the count.
template <typename... P> unsigned params(void (*)(P...), unsigned* sizes, int* pointer) {
  unsigned i = 0;
  ((sizes[i] = sizeof(P), pointer[i++] = std::is_pointer_v<P>), ...);
  return i;
}
// launch() for a C caller: 0 on success, otherwise 1 and the message in err.
inline int launch_c(unsigned grid, unsigned block, const std::function<void()>& body, char* err,
                    std::size_t errlen) {
  try { launch(grid, block, body); return 0; }
  catch (const std::exception& e) { std::snprintf(err, errlen, "%s", e.what()); }
  catch (...) { std::snprintf(err, errlen, "unknown C++ exception in an emulated thread"); }
  return 1;
}

template <typename T, typename F> T atomic_update(T* p, F f) {  // compare-exchange loop
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (!a.compare_exchange_weak(old, f(old))) {}
  return old;
}
template <typename T> T atomic_add(T* p, T v) {
  return atomic_update(p, [=](T old) { return T(old + v); });
}
}  // namespace sg_emu

template <typename T> T __shfl_sync(unsigned, T v, int src, int width = warpSize) {
  return sg_emu::exchange(v, (sg_emu::tls_lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T> T __shfl_down_sync(unsigned, T v, unsigned delta, int width = warpSize) {
  const int lane = sg_emu::tls_lane;  // past the end of the segment: own value
  return sg_emu::exchange(v, (lane & (width - 1)) + int(delta) < width ? lane + int(delta) : lane);
}
template <typename T> T __shfl_up_sync(unsigned, T v, unsigned delta, int width = warpSize) {
  const int lane = sg_emu::tls_lane;
  return sg_emu::exchange(v, (lane & (width - 1)) >= int(delta) ? lane - int(delta) : lane);
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask, int width = warpSize) {
  const int lane = sg_emu::tls_lane, src = lane ^ mask;  // later segments: own value
  return sg_emu::exchange(v, src < ((lane / width) + 1) * width && src < 32 ? src : lane);
}
inline void __syncthreads() { sg_emu::tls_block->bar.wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { sg_emu::tls_warp->bar.wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Atomics return the old value, as in CUDA.
inline float atomicAdd(float* p, float v) { return sg_emu::atomic_add(p, v); }
inline double atomicAdd(double* p, double v) { return sg_emu::atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return sg_emu::atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return sg_emu::atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return sg_emu::atomic_add(p, v);
}
inline int atomicMax(int* p, int v) {
  return sg_emu::atomic_update(p, [=](int old) { return old > v ? old : v; });
}
inline int atomicMin(int* p, int v) {
  return sg_emu::atomic_update(p, [=](int old) { return old < v ? old : v; });
}
inline int atomicCAS(int* p, int cmp, int v) {
  std::atomic_ref<int>(*p).compare_exchange_strong(cmp, v);
  return cmp;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp,
                                    unsigned long long v) {
  std::atomic_ref<unsigned long long>(*p).compare_exchange_strong(cmp, v);
  return cmp;
}
