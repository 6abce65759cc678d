// Which implementation runs one pass of the grouped convolution on CUDA, and why. Plain C++ (no
// torch, no CUDA headers): decided from shapes, dtype and device properties only, never from the
// plan's contents, so choosing costs no device-to-host sync.
//
// With HAMFAST_AUTOTUNE on (the default), the first call per shape signature (tune_key) times every
// candidate that applies (candidates(): own kernel tiles and split-K, cuDNN groups=B, cuDNN per
// group) and the fastest is kept for the process (csrc/autotune.h); grouped_conv_cuda.cpp supplies
// the CUDA-event timer, tests/autotune/check_cuda_autotune.cpp an injected one. With autotune off
// (or torch.use_deterministic_algorithms), the fixed heuristic decides from shapes alone.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "grouped_conv_kernels.cuh"

namespace hamfast {
namespace cuda {

enum class PassKind : int { kForward = 0, kGradInput = 1, kGradWeight = 2 };
enum class Precision : int { kFloat64 = 0, kFloat32 = 1, kTF32 = 2, kBFloat16 = 3, kFloat16 = 4 };
enum class Path : int {
  kTensorCore = 0,     // grouped implicit-GEMM kernel on mma.sync
  kSimt = 1,           // the same kernel with exact FMA math
  kCudnnGroupsB = 2,   // weights gathered per sample, one cuDNN convolution with groups = B
  kCudnnPerGroup = 3,  // one cuDNN convolution per group (reads the offsets on the host: one sync)
};

// What identifies a device for the autotune key: two GPUs of one model share measurements.
struct DeviceInfo {
  int sm_major, sm_minor, sm_count;
  std::string name;
};

struct Decision {
  Path path;
  KernelChoice kernel;  // for kTensorCore / kSimt
  std::string why;
  // Chosen (or being timed) by the autotuner: the cuDNN paths then run with cudnn.benchmark on,
  // so they are measured and run as fast as the benchmark's cuDNN baselines.
  bool measured = false;
};

// The fixed choice: HAMFAST_DISPATCH_OVERRIDE when set, else the heuristic (shapes only).
Decision choose(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device);

// Every implementation of `pass` this device and precision can run, the fixed choice (choose)
// first, so that ties and failed measurements fall back to it. Grad-weight tries split-K 1, 2, 4,
// 8 and 16 per tile, within the workspace bound and >= 128 reduction rows per slice.
std::vector<Decision> candidates(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device);

// "tensor_core:128x64:1", "simt:4", "cudnn_groups_b", "cudnn_per_group" (HAMFAST_DISPATCH_OVERRIDE's syntax).
std::string candidate_name(const Decision& decision);

// The autotune signature: device (name, sm, SM count), precision, pass, batch bucket, G, Cin, Cout,
// kernel, stride, padding, H, W.
std::string tune_key(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device);

// How a call decides. fixed: HAMFAST_AUTOTUNE=off, torch.use_deterministic_algorithms, or CUDA graph
// capture (no timing there). Otherwise the kept measurement for tune_key, or, on the first call
// (*measure_first set), the fixed choice with a why saying that the call measures first.
struct Context {
  bool fixed;
  std::string fixed_reason;  // shown in explain when fixed
};
Decision decide(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device,
                const Context& context, bool* measure_first);

// Measures every candidate with time_ms (milliseconds of one run; +infinity for a candidate that
// could not run, e.g. out of memory), keeps the fastest for tune_key and returns it.
Decision tune(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device,
              const std::function<double(const Decision&)>& time_ms);

// ---- activation layouts of one backward call (grouped_conv2d_backward) ----------------------
// The own kernels (kTensorCore / kSimt) read dy and x in NHWC; the cuDNN paths take them as given
// (NCHW), so no copy is made for them. One backward call converts dy at most once for grad-input
// and grad-weight together (the bias kernel reads dy in place in either layout), and x only for
// an own-kernel grad-weight; a tensor already channels_last is never copied.
inline bool reads_nhwc(Path path) { return path == Path::kTensorCore || path == Path::kSimt; }

struct BackwardLayouts {
  bool convert_dy = false;  // one dy -> NHWC copy, shared by grad-input and grad-weight
  bool convert_x = false;   // one x -> NHWC copy, for grad-weight
  int copies() const { return int(convert_dy) + int(convert_x); }
};

// grad_input / grad_weight: whether the call computes that pass (and, if so, on which path).
BackwardLayouts plan_backward_layouts(bool grad_input, Path input_path, bool grad_weight, Path weight_path,
                                      bool dy_channels_last, bool x_channels_last);

// The copies the separate backward ops (one per pass, each converting its own operands) made for
// the same call: what plan_backward_layouts saves, for the tests and docs/ops.md.
int separate_backward_copies(bool grad_input, Path input_path, bool grad_weight, Path weight_path,
                             bool dy_channels_last, bool x_channels_last);

// Whether the forward should hand its NHWC copy of x to autograd (grouped_conv2d_saving_input), so
// that the backward's own-kernel grad-weight reads it instead of copying x again: only when both
// the forward and grad-weight read NHWC (own kernels), grad-weight's choice is settled (not about to
// be measured: a cuDNN winner would need NCHW back), and x is not channels_last already (then
// nothing is copied anyway). Per layer and step that is 2 activation copies instead of 3.
bool saves_input_nhwc(Path forward_path, Path weight_path, bool weight_measure_first, bool x_channels_last);

// Whether one backward call takes the bias gradient from grad-weight's pass over dy (the own
// kernels sum the dy tiles they stage) instead of the separate bias kernel: when both gradients are
// asked for and grad-weight runs on the own kernels (cuDNN computes no grouped bias).
inline bool fused_bias_gradient(bool grad_bias, bool grad_weight, Path weight_path) {
  return grad_bias && grad_weight && reads_nhwc(weight_path);
}

const char* pass_name(PassKind pass);
const char* precision_name(Precision precision);
// One line: path, tile / split-K and precision where they apply.
std::string describe(const Decision& decision, Precision precision);

}  // namespace cuda
}  // namespace hamfast
