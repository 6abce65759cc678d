// Just enough of the CUDA runtime to run hamfast's kernels on the host: each block's threads are real
// threads meeting at a std::barrier in __syncthreads, blocks run one after another (so a static
// array stands for __shared__ memory), atomicAdd takes a mutex. For checking index logic without
// a GPU only; tests/test_cuda_kernels_emulated.py compiles it.
#pragma once
#include <algorithm>
#include <barrier>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
inline thread_local dim3 threadIdx, blockIdx;
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(x)
typedef int cudaError_t;
const cudaError_t cudaSuccess = 0, cudaErrorInvalidConfiguration = 9;
typedef void* cudaStream_t;
inline cudaError_t cudaGetLastError() { return 0; }
inline std::barrier<>* g_barrier;
inline std::mutex g_mutex;
inline void __syncthreads() { g_barrier->arrive_and_wait(); }
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> l(g_mutex); T o = *p; *p += v; return o; }
using std::min; using std::max;
template <class F> void emu_launch(dim3 grid, int threads, F f) {
  for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x) {
    std::barrier<> bar(threads); g_barrier = &bar;
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) ts.emplace_back([&, t] { threadIdx = dim3(t); blockIdx = dim3(x, y, z); f(); });
    for (auto& th : ts) th.join();
  }
}
