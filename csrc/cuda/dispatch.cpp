// The dispatcher: the run-time autotuner's kept measurement, or the fixed heuristic (dispatch.h).
#include "dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../autotune.h"

namespace hamfast {
namespace cuda {
namespace {

constexpr int64_t kMaxWorkspaceBytes = int64_t(256) << 20;  // grad-weight split-K partial sums

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool tensor_core_precision(Precision p) {
  return p == Precision::kTF32 || p == Precision::kBFloat16 || p == Precision::kFloat16;
}

// GEMM sizes of a pass: rows (the grouped dimension for forward / grad-input), columns, reduction.
struct GemmSize {
  int64_t m, n, k;
};
GemmSize gemm_size(PassKind pass, const ConvShape& s) {
  const int64_t out_pixels = int64_t(s.out_height) * s.out_width, in_pixels = int64_t(s.height) * s.width;
  const int64_t taps = int64_t(s.kernel_h) * s.kernel_w;
  switch (pass) {
    case PassKind::kForward: return {s.batch * out_pixels, s.out_channels, taps * s.in_channels};
    case PassKind::kGradInput: return {s.batch * in_pixels, s.in_channels, taps * s.out_channels};
    default: return {s.out_channels, taps * s.in_channels, s.batch * out_pixels};
  }
}

// Split the (sample, pixel) reduction of grad-weight until about two tiles per SM, keeping >= 512
// rows per slice (per group, assuming equal groups: the host does not know the sizes) and the
// workspace bounded. Applies to the tensor-core and the SIMT kernel alike.
int heuristic_split(const ConvShape& s, const GemmSize& g, TileShape tile, int64_t sms) {
  const int bm = tile == TileShape::k64x64 ? 64 : 128, bn = tile == TileShape::k128x128 ? 128 : 64;
  const int64_t tiles = int64_t(s.groups) * ceil_div(g.m, bm) * ceil_div(g.n, bn);
  const int64_t rows_per_group = std::max<int64_t>(1, g.k / std::max(1, s.groups));
  int64_t split = std::max<int64_t>(1, ceil_div(2 * sms, std::max<int64_t>(1, tiles)));
  split = std::min<int64_t>({split, 32, std::max<int64_t>(1, rows_per_group / 512)});
  const int64_t slice_bytes = int64_t(s.groups) * g.m * g.n * 4;
  return int(std::max<int64_t>(1, std::min<int64_t>(split, kMaxWorkspaceBytes / std::max<int64_t>(1, slice_bytes))));
}

// The largest split-K worth timing: the workspace bound and >= 128 reduction rows per slice.
int max_split(const ConvShape& s, const GemmSize& g) {
  const int64_t rows_per_group = std::max<int64_t>(1, g.k / std::max(1, s.groups));
  const int64_t slice_bytes = std::max<int64_t>(1, int64_t(s.groups) * g.m * g.n * 4);
  return int(std::max<int64_t>(1, std::min<int64_t>({32, rows_per_group / 128, kMaxWorkspaceBytes / slice_bytes})));
}

Decision heuristic(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d) {
  Decision out{Path::kSimt, {false, TileShape::k64x64, 1}, ""};
  const bool mma_ok = d.sm_major >= 8;
  const GemmSize g = gemm_size(pass, s);
  const int64_t sms = std::max(1, d.sm_count);
  if (!tensor_core_precision(precision) || (precision == Precision::kTF32 && !mma_ok)) {
    out.why = !tensor_core_precision(precision)
                  ? "heuristic: float64 and float32 with TF32 disabled run the exact SIMT kernel"
                  : "heuristic: sm_" + std::to_string(d.sm_major * 10 + d.sm_minor) +
                        " has no mma.sync tf32 (needs sm_80), so the exact SIMT kernel";
    if (pass == PassKind::kGradWeight) {
      out.kernel.split_k = heuristic_split(s, g, TileShape::k64x64, sms);
      out.why += ", split-K " + std::to_string(out.kernel.split_k);
    }
  } else if (!mma_ok) {
    out.path = Path::kCudnnGroupsB;
    out.why = "heuristic: 16-bit mma.sync m16n8k16 needs sm_80 and there is no 16-bit SIMT kernel, so cuDNN";
  } else {
    out.path = Path::kTensorCore;
    out.kernel.tensor_core = true;
    if (pass != PassKind::kGradWeight) {
      // Wide tiles reuse each loaded element most; narrow N (few channels) wastes half a 128 tile.
      out.kernel.tile = g.n <= 64 ? TileShape::k128x64 : TileShape::k128x128;
      const int bn = g.n <= 64 ? 64 : 128;
      const int64_t tiles = (ceil_div(g.m, 128) + s.groups) * ceil_div(g.n, bn);
      if (tiles < sms) out.kernel.tile = TileShape::k64x64;  // fewer than one tile per SM: smaller tiles
      out.why = "heuristic: " + std::to_string(tiles) + " tiles of 128 rows for " + std::to_string(sms) + " SMs";
    } else {
      out.kernel.tile = g.m <= 64 ? TileShape::k64x64 : (g.n <= 64 ? TileShape::k128x64 : TileShape::k128x128);
      out.kernel.split_k = heuristic_split(s, g, out.kernel.tile, sms);
      const int bm = out.kernel.tile == TileShape::k64x64 ? 64 : 128;
      const int bn = out.kernel.tile == TileShape::k128x128 ? 128 : 64;
      const int64_t tiles = int64_t(s.groups) * ceil_div(g.m, bm) * ceil_div(g.n, bn);
      out.why = "heuristic: " + std::to_string(tiles) + " output tiles for " + std::to_string(sms) + " SMs, split-K " +
                std::to_string(out.kernel.split_k);
    }
  }
  return out;
}

const char* precision_key(Precision p) {
  switch (p) {
    case Precision::kFloat64: return "float64";
    case Precision::kFloat32: return "float32";
    case Precision::kTF32: return "tf32";
    case Precision::kBFloat16: return "bf16";
    default: return "f16";
  }
}

}  // namespace

const char* tile_name(TileShape tile) {
  switch (tile) {
    case TileShape::k128x128: return "128x128";
    case TileShape::k128x64: return "128x64";
    case TileShape::k64x64: return "64x64";
  }
  return "?";
}

const char* pass_name(PassKind pass) {
  switch (pass) {
    case PassKind::kForward: return "forward";
    case PassKind::kGradInput: return "grad-input";
    default: return "grad-weight";
  }
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFloat64: return "float64";
    case Precision::kFloat32: return "float32 (exact, TF32 disabled)";
    case Precision::kTF32: return "tf32 operands, float32 accumulation";
    case Precision::kBFloat16: return "bf16 operands, float32 accumulation";
    default: return "f16 operands, float32 accumulation";
  }
}

std::string describe(const Decision& d, Precision precision) {
  switch (d.path) {
    case Path::kTensorCore:
      return std::string("custom tensor-core kernel (mma.sync), tile ") + tile_name(d.kernel.tile) +
             (d.kernel.split_k > 1 ? ", split-K " + std::to_string(d.kernel.split_k) : std::string()) + ", " +
             precision_name(precision);
    case Path::kSimt:
      return std::string("custom SIMT kernel, tile 64x64") +
             (d.kernel.split_k > 1 ? ", split-K " + std::to_string(d.kernel.split_k) : std::string()) + ", " +
             precision_name(precision);
    case Path::kCudnnGroupsB:
      return std::string("cuDNN, one convolution with groups=B (weights gathered per sample)") +
             (d.measured ? ", cudnn.benchmark on" : "");
    default:
      return std::string("cuDNN, one convolution per group (offsets read on the host: one sync)") +
             (d.measured ? ", cudnn.benchmark on" : "");
  }
}

// HAMFAST_DISPATCH_OVERRIDE forces one path for every pass (tests, sanitizer runs, experiments):
// "tensor_core:<tile>:<split_k>", "simt:<split_k>", "cudnn_groups_b" or "cudnn_per_group".
// Returns false when unset. A path the build or device cannot run falls back to the normal choice.
bool override_from_env(Precision precision, const DeviceInfo& d, Decision& out) {
  const char* env = std::getenv("HAMFAST_DISPATCH_OVERRIDE");
  if (env == nullptr || *env == '\0') return false;
  const std::string v(env);
  const std::string why = "forced by HAMFAST_DISPATCH_OVERRIDE=" + v;
  auto split_after = [](const std::string& text) {
    const size_t pos = text.find(':');
    return pos == std::string::npos ? 1 : std::max(1, std::atoi(text.c_str() + pos + 1));
  };
  if (v == "cudnn_groups_b" || v == "cudnn_per_group") {
    out = {v == "cudnn_groups_b" ? Path::kCudnnGroupsB : Path::kCudnnPerGroup, {false, TileShape::k64x64, 1}, why};
    return true;
  }
  if (v.rfind("simt", 0) == 0 && precision != Precision::kBFloat16 && precision != Precision::kFloat16) {
    out = {Path::kSimt, {false, TileShape::k64x64, split_after(v)}, why};
    return true;
  }
  if (v.rfind("tensor_core:", 0) == 0 && tensor_core_precision(precision) && d.sm_major >= 8) {
    const std::string rest = v.substr(12);
    TileShape tile = TileShape::k128x128;
    if (rest.rfind("128x64", 0) == 0) tile = TileShape::k128x64;
    if (rest.rfind("64x64", 0) == 0) tile = TileShape::k64x64;
    out = {Path::kTensorCore, {true, tile, split_after(rest)}, why};
    return true;
  }
  return false;
}

Decision choose(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d) {
  Decision forced;
  if (override_from_env(precision, d, forced)) return forced;
  return heuristic(pass, precision, s, d);
}

std::string candidate_name(const Decision& d) {
  switch (d.path) {
    case Path::kTensorCore:
      return std::string("tensor_core:") + tile_name(d.kernel.tile) + ":" + std::to_string(d.kernel.split_k);
    case Path::kSimt: return "simt:" + std::to_string(d.kernel.split_k);
    case Path::kCudnnGroupsB: return "cudnn_groups_b";
    default: return "cudnn_per_group";
  }
}

std::vector<Decision> candidates(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d) {
  std::vector<Decision> out{choose(pass, precision, s, d)};
  auto add = [&](Path path, KernelChoice kernel) {
    Decision c{path, kernel, "candidate"};
    const std::string name = candidate_name(c);
    for (const Decision& have : out)
      if (candidate_name(have) == name) return;
    out.push_back(c);
  };
  const GemmSize g = gemm_size(pass, s);
  std::vector<int> splits{1};
  if (pass == PassKind::kGradWeight)
    for (int split = 2; split <= std::min(16, max_split(s, g)); split *= 2) splits.push_back(split);
  if (tensor_core_precision(precision) && d.sm_major >= 8) {
    for (TileShape tile : {TileShape::k128x128, TileShape::k128x64, TileShape::k64x64})
      for (int split : splits) add(Path::kTensorCore, {true, tile, split});
  } else if (precision != Precision::kBFloat16 && precision != Precision::kFloat16) {
    for (int split : splits) add(Path::kSimt, {false, TileShape::k64x64, split});
  }
  add(Path::kCudnnGroupsB, {false, TileShape::k64x64, 1});
  add(Path::kCudnnPerGroup, {false, TileShape::k64x64, 1});
  return out;
}

std::string tune_key(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d) {
  return "cuda " + d.name + " sm_" + std::to_string(d.sm_major * 10 + d.sm_minor) + " " +
         std::to_string(d.sm_count) + "SMs " + precision_key(precision) + " " + pass_name(pass) +
         " B<=" + std::to_string(autotune::batch_bucket(s.batch)) + " G" + std::to_string(s.groups) + " " +
         std::to_string(s.in_channels) + "->" + std::to_string(s.out_channels) + " k" + std::to_string(s.kernel_h) +
         "x" + std::to_string(s.kernel_w) + " s" + std::to_string(s.stride) + " p" + std::to_string(s.padding) + " " +
         std::to_string(s.height) + "x" + std::to_string(s.width);
}

namespace {

// The kept candidate of a measured result (looked up by name, so a reordered list cannot mislead).
bool kept_decision(const autotune::Result& r, const std::vector<Decision>& cands, Decision& out) {
  if (r.winner < 0) return false;
  for (const Decision& c : cands)
    if (candidate_name(c) == r.names[r.winner]) {
      out = c;
      out.measured = true;
      out.why = "autotuned for this signature: " + autotune::summary(r);
      return true;
    }
  return false;
}

}  // namespace

Decision decide(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d, const Context& context,
                bool* measure_first) {
  *measure_first = false;
  Decision fixed = choose(pass, precision, s, d);
  const char* forced = std::getenv("HAMFAST_DISPATCH_OVERRIDE");
  if (forced != nullptr && *forced != '\0') return fixed;
  if (autotune::mode() == autotune::Mode::kOff || context.fixed) {
    fixed.why = "fixed (" + (context.fixed ? context.fixed_reason : std::string("HAMFAST_AUTOTUNE=off")) +
                "), " + fixed.why;
    return fixed;
  }
  const auto cands = candidates(pass, precision, s, d);
  Decision kept;
  if (const autotune::Result* r = autotune::find(tune_key(pass, precision, s, d)))
    if (kept_decision(*r, cands, kept)) return kept;
  *measure_first = true;
  std::string names;
  for (const Decision& c : cands) names += (names.empty() ? "" : ", ") + candidate_name(c);
  fixed.why = "not measured yet: the first call times " + std::to_string(cands.size()) + " candidates (" + names +
              ") and keeps the fastest; until then " + fixed.why;
  return fixed;
}

Decision tune(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d,
              const std::function<double(const Decision&)>& time_ms) {
  constexpr int kReps = 3;  // after one warm-up round: ranking, not a benchmark
  const auto cands = candidates(pass, precision, s, d);
  std::vector<std::string> names;
  for (const Decision& c : cands) names.push_back(candidate_name(c));
  const autotune::Result& r =
      autotune::tune(tune_key(pass, precision, s, d), names, kReps, [&](int i) {
        Decision timed = cands[i];
        timed.measured = true;
        return time_ms(timed);
      });
  Decision out = cands.front();
  kept_decision(r, cands, out);
  return out;
}

BackwardLayouts plan_backward_layouts(bool grad_input, Path input_path, bool grad_weight, Path weight_path,
                                      bool dy_channels_last, bool x_channels_last) {
  const bool input_nhwc = grad_input && reads_nhwc(input_path);
  const bool weight_nhwc = grad_weight && reads_nhwc(weight_path);
  BackwardLayouts l;
  l.convert_dy = (input_nhwc || weight_nhwc) && !dy_channels_last;
  l.convert_x = weight_nhwc && !x_channels_last;
  return l;
}

int separate_backward_copies(bool grad_input, Path input_path, bool grad_weight, Path weight_path,
                             bool dy_channels_last, bool x_channels_last) {
  int copies = 0;
  if (grad_input && reads_nhwc(input_path)) copies += !dy_channels_last;
  if (grad_weight && reads_nhwc(weight_path)) copies += int(!dy_channels_last) + int(!x_channels_last);
  return copies;
}

bool saves_input_nhwc(Path forward_path, Path weight_path, bool weight_measure_first, bool x_channels_last) {
  return reads_nhwc(forward_path) && reads_nhwc(weight_path) && !weight_measure_first && !x_channels_last;
}

}  // namespace cuda
}  // namespace hamfast
