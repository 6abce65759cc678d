// hamfast::grouped_conv2d_explain: which path each pass of a call takes and why, as text. The schema
// is defined here with the CPU implementation; the CUDA backend registers its own implementation.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <sstream>
#include <string>

#include "../grouped_conv.h"
#include "cpu_dispatch.h"

namespace hamfast {
namespace {

// Python's name of a dtype ("float32", not ATen's "Float").
const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

std::string grouped_conv2d_explain_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& offsets,
                                       int64_t stride, int64_t padding) {
  TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.is_cpu(),
              "hamfast.grouped_conv2d_explain: offsets must be a CPU int64 [G + 1] tensor, got ", offsets.scalar_type(),
              " ", offsets.sizes(), " on ", offsets.device());
  const ConvGeometry geo = make_geometry(x.sizes(), weight.sizes(), stride, padding);
  TORCH_CHECK(offsets.size(0) == geo.groups + 1, "hamfast.grouped_conv2d_explain: offsets must be [G + 1] = [",
              geo.groups + 1, "], got ", offsets.sizes());
  const auto stats = cpu::group_stats(offsets);
  const int64_t threads = at::get_num_threads();
  std::ostringstream text;
  text << "hamfast.grouped_conv2d on cpu, " << dtype_name(x.scalar_type()) << ": B=" << geo.batch << ", G=" << geo.groups << " ("
       << stats.nonempty << " non-empty, largest " << stats.largest << " samples), Cin=" << geo.in_channels
       << " -> Cout=" << geo.out_channels << ", " << geo.kernel_h << "x" << geo.kernel_w << ", stride " << stride
       << ", padding " << padding << ", " << geo.height << "x" << geo.width << " -> " << geo.out_height << "x"
       << geo.out_width << ", " << threads << " threads\n";
  for (cpu::Pass pass : {cpu::Pass::Forward, cpu::Pass::GradInput, cpu::Pass::GradWeight}) {
    if (has_zero_extent(geo)) {
      text << cpu::pass_name(pass) << ": none (a zero-sized batch or channel dimension: no kernel runs)\n";
      continue;
    }
    bool measure_first = false;
    const auto choice = cpu::decide(pass, geo, stats, threads, x.scalar_type(), &measure_first);
    text << cpu::pass_name(pass) << ": " << cpu::path_name(choice.path) << " (" << choice.reason << ")\n";
  }
  return text.str();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hamfast, m) {
  m.def("grouped_conv2d_explain(Tensor x, Tensor weight, Tensor offsets, int stride, int padding) -> str");
}

TORCH_LIBRARY_IMPL(hamfast, CPU, m) {
  m.impl("grouped_conv2d_explain", &grouped_conv2d_explain_cpu);
}

}  // namespace hamfast
