// The CPU cost rule: which formulation (cpu_dispatch.h) runs each pass of a call.
#include "cpu_dispatch.h"

#include "../autotune.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <sstream>

namespace hamfast {
namespace cpu {

namespace {

// The cost rule: the groups=B fold runs when the groups hold few samples on average, the per-group
// loop otherwise. Measured on the 2-core x86-64 VM this project is developed on (AVX-512, torch 2.13
// CPU, oneDNN, 2 threads; shared with other jobs, load average 5-11 during the runs) with
// CBRTiny's narrow widths (4->16->32->32->64, 5x5, layer inputs 128/61/28/11 px, outputs
// 124/57/24/7 px), B = 16 spread over G = 15, 4 and 2 groups, median ms per pass, layer and path
// (table in benchmarks/README.md, "CPU paths"):
//  - forward and grad-input: the fold was 1.5-7x faster than the loop at 1, 4 and 8 samples per
//    group where the output has >= 24x24 px (every loop convolution pays a parallel region and the
//    machine's scheduling delays); at 7x7 px it won only with ~1 sample per group (G = 15) and was
//    1.6-2.5x slower with 4 or 8 (tiny per-sample GEMMs);
//  - grad-weight: the fold won at 1 and 4 samples per group (tie at layer 1 with 4) and lost at 8
//    (1.9x slower at layer 1: per-sample weight gradients of 124x124 px reductions).
// A single non-empty group is one dense convolution: the loop.
constexpr double kFoldMaxSamplesPerGroup = 8.0;            // forward, grad-input; output >= kFoldMinOutputPixels
constexpr double kFoldMaxSamplesPerGroupSmallOutput = 2.0;  // forward, grad-input; smaller outputs
constexpr double kFoldMaxSamplesPerGroupGradWeight = 4.0;
constexpr int64_t kFoldMinOutputPixels = 256;
// Below this many multiply-adds per call, a parallel region costs more than it saves (loop paths).
constexpr int64_t kMinParallelMacs = int64_t(1) << 22;

bool forced_path(Path* path) {
  const char* value = std::getenv("HAMFAST_CPU_PATH");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0) return false;
  for (Path p : {Path::Loop, Path::LoopParallel, Path::Fold}) {
    if (std::strcmp(value, path_name(p)) == 0) {
      *path = p;
      return true;
    }
  }
  TORCH_CHECK(false, "hamfast: HAMFAST_CPU_PATH must be auto, loop, loop_parallel or fold, got '", value, "'");
}

}  // namespace

const char* pass_name(Pass pass) {
  switch (pass) {
    case Pass::Forward:
      return "forward";
    case Pass::GradInput:
      return "grad-input";
    case Pass::GradWeight:
      return "grad-weight";
  }
  return "?";
}

const char* path_name(Path path) {
  switch (path) {
    case Path::Loop:
      return "loop";
    case Path::LoopParallel:
      return "loop_parallel";
    case Path::Fold:
      return "fold";
  }
  return "?";
}

std::string record_label(Pass pass, Path path) {
  std::string name = pass_name(pass);
  for (char& c : name) c = c == '-' ? '_' : c;
  return std::string("hamfast::cpu_") + name + "_" + path_name(path);
}

GroupStats group_stats(const at::Tensor& offsets) {
  TORCH_CHECK(offsets.is_cpu() && offsets.scalar_type() == at::kLong, "hamfast: group_stats needs CPU int64 offsets");
  const auto off = offsets.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  GroupStats stats;
  for (int64_t g = 0; g + 1 < off.numel(); ++g) {
    const int64_t count = o[g + 1] - o[g];
    stats.nonempty += count > 0;
    stats.largest = std::max(stats.largest, count);
  }
  return stats;
}

Choice choose(Pass pass, const ConvGeometry& geo, const GroupStats& groups, int64_t threads) {
  Path forced;
  if (forced_path(&forced)) return {forced, std::string("forced by HAMFAST_CPU_PATH=") + path_name(forced)};
  std::ostringstream why;
  why << std::setprecision(3);
  // Mean samples per non-empty group: the batch of each convolution the loop would run.
  const double per_group = groups.nonempty > 0 ? double(geo.batch) / double(groups.nonempty) : 0.0;
  const bool small_output = geo.out_height * geo.out_width < kFoldMinOutputPixels;
  const double fold_limit = pass == Pass::GradWeight ? kFoldMaxSamplesPerGroupGradWeight
                            : small_output          ? kFoldMaxSamplesPerGroupSmallOutput
                                                    : kFoldMaxSamplesPerGroup;
  if (groups.nonempty > 1 && per_group <= fold_limit) {
    why << groups.nonempty << " non-empty groups of " << per_group << " samples on average <= " << fold_limit
        << (pass == Pass::GradWeight ? "" : small_output ? " (output < 256 px)" : " (output >= 256 px)")
        << ": one groups=B convolution beats " << groups.nonempty << " small ones";
    return {Path::Fold, why.str()};
  }
  if (groups.nonempty <= 1) {
    why << "one non-empty group: a single dense convolution";
  } else {
    why << groups.nonempty << " non-empty groups of " << per_group << " samples on average > " << fold_limit
        << (pass == Pass::GradWeight ? "" : small_output ? " (output < 256 px)" : " (output >= 256 px)")
        << ": per-group convolutions are big enough";
  }
  const int64_t macs = geo.batch * geo.out_channels * geo.out_height * geo.out_width * geo.depth();
  if (groups.nonempty > 1 && threads > 1 && macs >= kMinParallelMacs) {
    why << "; " << threads << " threads and " << macs << " multiply-adds >= " << kMinParallelMacs
        << ": groups side by side";
    return {Path::LoopParallel, why.str()};
  }
  return {Path::Loop, why.str()};
}

std::string tune_key(Pass pass, const ConvGeometry& geo, at::ScalarType dtype, int64_t threads) {
  std::ostringstream key;
  key << "cpu " << pass_name(pass) << " " << c10::toString(dtype) << " B<=" << autotune::batch_bucket(geo.batch)
      << " G" << geo.groups << " " << geo.in_channels << "->" << geo.out_channels << " k" << geo.kernel_h << "x"
      << geo.kernel_w << " s" << geo.stride << " p" << geo.padding << " " << geo.height << "x" << geo.width << " t"
      << threads;
  return key.str();
}

Choice decide(Pass pass, const ConvGeometry& geo, const GroupStats& groups, int64_t threads, at::ScalarType dtype,
              bool* measure_first) {
  *measure_first = false;
  Path forced;
  Choice rule = choose(pass, geo, groups, threads);
  if (forced_path(&forced) || autotune::mode() == autotune::Mode::kOff) return rule;
  if (const autotune::Result* kept = autotune::find(tune_key(pass, geo, dtype, threads))) {
    return {static_cast<Path>(kept->winner), "autotuned for this signature: " + autotune::summary(*kept)};
  }
  *measure_first = true;
  rule.reason = "not measured yet: the first call times loop, loop_parallel and fold and keeps the fastest; "
                "the cost rule says: " + rule.reason;
  return rule;
}

}  // namespace cpu
}  // namespace hamfast
