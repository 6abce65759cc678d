// CUDA-event timing and context of the run-time autotuner (autotune_cuda.h).
#include "autotune_cuda.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/util/Exception.h>

#include <limits>

namespace hamfast {
namespace cuda {

Context tune_context() {
  auto& ctx = at::globalContext();
  if (ctx.deterministicAlgorithms()) return {true, "torch.use_deterministic_algorithms is on"};
  if (ctx.deterministicCuDNN()) return {true, "torch.backends.cudnn.deterministic is on"};
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None)
    return {true, "CUDA graph capture: nothing is timed while capturing"};
  return {false, ""};
}

namespace {

double time_ms(const std::function<void(const Decision&)>& run, const Decision& candidate) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  try {
    start.record(stream);
    run(candidate);
    stop.record(stream);
    stop.synchronize();
  } catch (const c10::Error&) {  // out of memory, a launch the grid limits refuse: this one cannot run
    return std::numeric_limits<double>::infinity();
  }
  return start.elapsed_time(stop);
}

}  // namespace

Decision pick(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device,
              const std::function<void(const Decision&)>& run) {
  bool measure_first = false;
  const Decision d = decide(pass, precision, shape, device, tune_context(), &measure_first);
  if (!measure_first) return d;
  return tune(pass, precision, shape, device, [&](const Decision& c) { return time_ms(run, c); });
}

CudnnBenchmarkGuard::CudnnBenchmarkGuard(bool on) : on_(on), saved_(at::globalContext().benchmarkCuDNN()) {
  if (on_) at::globalContext().setBenchmarkCuDNN(true);
}

CudnnBenchmarkGuard::~CudnnBenchmarkGuard() {
  if (on_) at::globalContext().setBenchmarkCuDNN(saved_);
}

}  // namespace cuda
}  // namespace hamfast
