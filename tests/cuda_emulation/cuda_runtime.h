// Just enough of the CUDA runtime to run hamfast's kernels on the host. Each thread of a block is
// a fiber (ucontext) with its own stack; __syncthreads and the per-warp barrier of the emulated
// mma (emulated_device.h) switch to a scheduler that resumes the others and releases a barrier
// once every thread it concerns has arrived (a barrier that can never complete aborts the run:
// that is a divergent __syncthreads). Blocks run one after another, so one buffer stands for a
// block's dynamic shared memory. Fibers instead of OS threads: the emulated mma needs a warp
// barrier per instruction, and 256 OS threads per block made the test several times slower.
// For checking index logic without a GPU only; tests/test_cuda_kernels_emulated.py compiles it.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline dim3 threadIdx, blockIdx, gridDim, blockDim;  // threadIdx: set on every switch to a fiber
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

struct EmuFiber {
  ucontext_t ctx;
  std::vector<char> stack;
  int waiting = 0;  // 0: runnable, 1: at __syncthreads, 2: at its warp's barrier
  bool done = false;
  unsigned mma_parity = 0;
};
inline std::vector<EmuFiber> g_fibers;
inline unsigned g_current = 0;
inline ucontext_t g_scheduler;
inline std::function<void()> g_kernel_body;
inline std::vector<unsigned char> g_dynamic_smem;
inline long g_launch_count = 0;  // kernel launches so far (a test can count a pass's kernels)

inline void emu_wait(int kind) {
  g_fibers[g_current].waiting = kind;
  swapcontext(&g_fibers[g_current].ctx, &g_scheduler);
}
inline void __syncthreads() { emu_wait(1); }
inline void emu_warp_sync() { emu_wait(2); }
inline unsigned& emu_mma_parity() { return g_fibers[g_current].mma_parity; }
inline unsigned char* emu_dynamic_smem() { return g_dynamic_smem.data(); }

inline void emu_fiber_entry() {
  g_kernel_body();
  g_fibers[g_current].done = true;
  swapcontext(&g_fibers[g_current].ctx, &g_scheduler);
}

// Runs every block of the grid in turn. Shared memory starts each block as 0xFF bytes (NaN for
// floating types), so reading a slot nothing wrote shows up in the results.
template <class F>
void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, F f) {
  const unsigned threads = block.x * block.y * block.z, warps = (threads + 31) / 32;
  ++g_launch_count;
  gridDim = grid;
  blockDim = block;
  g_kernel_body = f;
  g_fibers.assign(threads, EmuFiber{});
  for (auto& fb : g_fibers) fb.stack.resize(256 * 1024);
  g_dynamic_smem.assign(smem_bytes + 16, 0xFF);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        std::fill(g_dynamic_smem.begin(), g_dynamic_smem.end(), 0xFF);
        for (auto& fb : g_fibers) {
          getcontext(&fb.ctx);
          fb.ctx.uc_stack.ss_sp = fb.stack.data();
          fb.ctx.uc_stack.ss_size = fb.stack.size();
          fb.ctx.uc_link = nullptr;
          makecontext(&fb.ctx, emu_fiber_entry, 0);
          fb.waiting = 0;
          fb.done = false;
        }
        for (;;) {
          bool ran = false;
          for (unsigned t = 0; t < threads; ++t) {
            if (g_fibers[t].done || g_fibers[t].waiting) continue;
            g_current = t;
            threadIdx = dim3(t);
            swapcontext(&g_scheduler, &g_fibers[t].ctx);
            ran = true;
          }
          unsigned live = 0, at_block = 0;
          for (auto& fb : g_fibers) live += !fb.done, at_block += fb.waiting == 1;
          if (live == 0) break;
          bool released = false;
          if (at_block == live) {
            for (auto& fb : g_fibers) fb.waiting = 0;
            released = true;
          }
          for (unsigned w = 0; w < warps; ++w) {
            unsigned n = 0;
            for (unsigned l = w * 32; l < std::min(threads, w * 32 + 32); ++l) n += g_fibers[l].waiting == 2;
            if (n == 32) {
              for (unsigned l = w * 32; l < w * 32 + 32; ++l) g_fibers[l].waiting = 0;
              released = true;
            }
          }
          if (!ran && !released) {
            std::fprintf(stderr, "emulation: block (%u, %u, %u) deadlocked at a barrier\n", x, y, z);
            std::abort();
          }
        }
      }
}
