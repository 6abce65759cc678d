// The dispatcher: the tuned table first, a heuristic otherwise.
#include "dispatch.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dispatch_table.h"

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

Decision heuristic(PassKind pass, Precision precision, const ConvShape& s, const DeviceInfo& d) {
  Decision out{Path::kSimt, {false, TileShape::k64x64, 1}, ""};
  const bool mma_ok = d.sm_major >= 8;
  if (!tensor_core_precision(precision)) {
    out.why = "heuristic: float64 and float32 with TF32 disabled run the exact SIMT kernel";
  } else if (!mma_ok) {
    if (precision == Precision::kTF32) {
      out.why = "heuristic: sm_" + std::to_string(d.sm_major * 10 + d.sm_minor) +
                " has no mma.sync tf32 (needs sm_80), so the exact SIMT kernel";
    } else {
      out.path = Path::kCudnnGroupsB;
      out.why = "heuristic: 16-bit mma.sync m16n8k16 needs sm_80 and there is no 16-bit SIMT kernel, so cuDNN";
    }
    return out;
  } else {
    const GemmSize g = gemm_size(pass, s);
    const int64_t sms = std::max(1, d.sm_count);
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
      const int bm = out.kernel.tile == TileShape::k64x64 ? 64 : 128;
      const int bn = out.kernel.tile == TileShape::k128x128 ? 128 : 64;
      const int64_t tiles = int64_t(s.groups) * ceil_div(g.m, bm) * ceil_div(g.n, bn);
      // Split the (sample, pixel) reduction until about two tiles per SM, keeping >= 512 rows per
      // slice (per group, assuming equal groups: the host does not know the sizes) and the
      // workspace bounded.
      const int64_t rows_per_group = std::max<int64_t>(1, g.k / std::max(1, s.groups));
      int64_t split = std::max<int64_t>(1, ceil_div(2 * sms, tiles));
      split = std::min<int64_t>({split, 32, std::max<int64_t>(1, rows_per_group / 512)});
      const int64_t slice_bytes = int64_t(s.groups) * g.m * g.n * 4;
      split = std::max<int64_t>(1, std::min<int64_t>(split, kMaxWorkspaceBytes / std::max<int64_t>(1, slice_bytes)));
      out.kernel.split_k = int(split);
      out.why = "heuristic: " + std::to_string(tiles) + " output tiles for " + std::to_string(sms) + " SMs, split-K " +
                std::to_string(split);
    }
  }
  return out;
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
    case Path::kCudnnGroupsB: return "cuDNN, one convolution with groups=B (weights gathered per sample)";
    default: return "cuDNN, one convolution per group (offsets read on the host: one sync)";
  }
}

// HAMFAST_DISPATCH_OVERRIDE forces one path for every pass, for scripts/tune_dispatch.py:
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
  for (const DispatchEntry& e : kTunedEntries) {
    if (e.cin < 0) continue;  // the sentinel that keeps the array non-empty
    if (e.pass != pass || e.precision != precision || e.cin != s.in_channels || e.cout != s.out_channels ||
        e.sm_major != d.sm_major || s.height > e.height_max || s.batch > e.batch_max)
      continue;
    if ((e.path == Path::kTensorCore && (d.sm_major < 8 || !tensor_core_precision(precision))) ||
        (e.path == Path::kSimt && (precision == Precision::kBFloat16 || precision == Precision::kFloat16)))
      continue;  // an entry the running build cannot honour
    Decision out{e.path, {e.path == Path::kTensorCore, e.tile, std::max(1, e.split_k)}, ""};
    out.why = std::string("tuned table entry (Cin ") + std::to_string(e.cin) + ", Cout " + std::to_string(e.cout) +
              ", H <= " + std::to_string(e.height_max) + ", B <= " + std::to_string(e.batch_max) + ") measured on " +
              e.device;
    return out;
  }
  Decision out = heuristic(pass, precision, s, d);
  out.why += " (no tuned table entry for this shape and device)";
  return out;
}

}  // namespace cuda
}  // namespace hamfast
