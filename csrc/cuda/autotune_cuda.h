// The CUDA side of the run-time autotuner (dispatch.h decides, csrc/autotune.h keeps): the call's
// context (deterministic mode, graph capture), a CUDA-event timer over the live tensors, and the
// cudnn.benchmark setting the cuDNN candidates run with.
#pragma once

#include <ATen/ATen.h>

#include <functional>

#include "dispatch.h"

namespace hamfast {
namespace cuda {

// Fixed (no timing) under torch.use_deterministic_algorithms or cudnn.deterministic (a measured
// choice may differ between processes, and candidates round differently) and during CUDA graph
// capture (events cannot be synchronised there).
Context tune_context();

// The decision for one pass: decide(), and on the first call per signature tune() with
// `run(candidate)` timed by CUDA events on the current stream (one warm-up and 3 timed rounds; a
// candidate that raises, e.g. out of memory, counts as failed). Syncs the device only while it measures.
Decision pick(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device,
              const std::function<void(const Decision&)>& run);

// Sets cudnn.benchmark for the guard's lifetime when `on` (a measured decision), as the benchmark
// runs its cuDNN baselines; otherwise leaves the caller's setting alone.
class CudnnBenchmarkGuard {
 public:
  explicit CudnnBenchmarkGuard(bool on);
  ~CudnnBenchmarkGuard();
  CudnnBenchmarkGuard(const CudnnBenchmarkGuard&) = delete;
  CudnnBenchmarkGuard& operator=(const CudnnBenchmarkGuard&) = delete;

 private:
  bool on_, saved_;
};

}  // namespace cuda
}  // namespace hamfast
