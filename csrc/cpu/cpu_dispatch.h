// How the CPU op runs each pass of a grouped convolution: the one place that decides, used by the
// kernels (grouped_conv_cpu.cpp) and by grouped_conv2d_explain (grouped_conv_explain.cpp).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "../grouped_conv.h"

namespace hamfast {
namespace cpu {

enum class Pass { Forward, GradInput, GradWeight };

// The formulations of one pass on CPU, all built from ATen convolutions (oneDNN for float32/bf16):
//   Loop:         for every non-empty group, gather its samples, one convolution with its weights,
//                 scatter back; groups one after another, each convolution multi-threaded.
//   LoopParallel: the same convolutions, groups side by side (at::parallel_for), each single-threaded.
//   Fold:         the groups=B fold: every sample's group weights gathered into [B*Cout, Cin, kh, kw],
//                 x viewed as [1, B*Cin, H, W], one convolution with groups=B (grad-weight: per-sample
//                 weight gradients, summed per group).
enum class Path { Loop, LoopParallel, Fold };

// What the groups of one call look like (read from the plan's offsets on the host).
struct GroupStats {
  int64_t nonempty = 0;  // groups with at least one sample
  int64_t largest = 0;   // samples in the largest group
};

struct Choice {
  Path path;
  std::string reason;  // one sentence: why this path, with the numbers that decided it
};

// offsets: int64 [G + 1] on the CPU.
GroupStats group_stats(const at::Tensor& offsets);

// The path of `pass` for a call with geometry `geo`, group structure `groups` and `threads` intra-op
// threads (the rule does not depend on the dtype: every path runs the same ATen convolutions). HAMFAST_CPU_PATH=loop|loop_parallel|fold forces one path for
// every pass (tests and benchmarks); "auto" or unset applies the cost rule.
Choice choose(Pass pass, const ConvGeometry& geo, const GroupStats& groups, int64_t threads);

// The path a call takes without measuring anything: forced by HAMFAST_CPU_PATH; else, with
// HAMFAST_AUTOTUNE on (the default), the winner measured for this call's signature (tune_key);
// else the cost rule (choose). *measure_first is set when autotune is on and the signature has
// not been measured yet: the op then times every path once (autotune.h) and keeps the fastest.
Choice decide(Pass pass, const ConvGeometry& geo, const GroupStats& groups, int64_t threads, at::ScalarType dtype,
              bool* measure_first);

// The autotune signature: pass, dtype, batch bucket, G, Cin, Cout, kernel, stride, padding, H, W
// and the thread count.
std::string tune_key(Pass pass, const ConvGeometry& geo, at::ScalarType dtype, int64_t threads);

const char* pass_name(Pass pass);  // "forward", "grad-input", "grad-weight"
const char* path_name(Path path);  // "loop", "loop_parallel", "fold"
// The profiler label each pass records: "hamfast::cpu_<pass>_<path>", e.g. "hamfast::cpu_forward_fold".
std::string record_label(Pass pass, Path path);

}  // namespace cpu
}  // namespace hamfast
