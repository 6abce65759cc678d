// Just enough of the CUDA runtime to run hamfast's kernels on the host. Each block's threads are
// real threads meeting at a std::barrier in __syncthreads (and, per warp, at the barrier of the
// emulated mma, see emulated_device.h); blocks run one after another, so one buffer stands for a
// block's dynamic shared memory and `static` for __shared__. For checking index logic without a
// GPU only; tests/test_cuda_kernels_emulated.py compiles it.
#pragma once
#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 gridDim, blockDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
typedef int cudaError_t;
const cudaError_t cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef void* cudaStream_t;
inline cudaError_t cudaGetLastError() { return 0; }
template <class F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return 0; }
using std::max;
using std::min;

inline std::barrier<>* g_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
inline std::vector<unsigned char> g_dynamic_smem;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline void emu_warp_sync() { g_warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
inline unsigned char* emu_dynamic_smem() { return g_dynamic_smem.data(); }

// Runs every block of the grid in turn, `threads` host threads each. Shared memory starts as 0xFF
// bytes (NaN for floating types), so reading a slot nothing wrote shows up in the results.
template <class F>
void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, F f) {
  const unsigned threads = block.x * block.y * block.z;
  gridDim = grid;
  blockDim = block;
  g_dynamic_smem.assign(smem_bytes + 16, 0xFF);
  g_warp_barriers.clear();
  for (unsigned w = 0; w < (threads + 31) / 32; ++w) g_warp_barriers.emplace_back(new std::barrier<>(32));
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        std::fill(g_dynamic_smem.begin(), g_dynamic_smem.end(), 0xFF);
        std::barrier<> bar(threads);
        g_block_barrier = &bar;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < threads; ++t)
          ts.emplace_back([&, t] {
            threadIdx = dim3(t);
            blockIdx = dim3(x, y, z);
            f();
          });
        for (auto& th : ts) th.join();
      }
}
