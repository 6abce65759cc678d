// CPU kernels of the grouped convolution, built from ATen convolutions (oneDNN for float32 and
// bfloat16). Each pass runs one of three formulations (per-group loop, the same loop with groups
// side by side, or the groups=B fold), chosen per call by cpu::decide (cpu_dispatch.cpp): measured
// on the first call per shape signature (autotune.h), or the cost rule.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#include <array>
#include <chrono>
#include <vector>

#include "../autotune.h"

#include "../grouped_conv.h"
#include "cpu_dispatch.h"

namespace hamfast {
namespace {

using cpu::Pass;
using cpu::Path;

struct GroupSegment {
  int64_t group;
  at::Tensor index;  // int64 [n_g], the group's sample indices
};

std::vector<GroupSegment> nonempty_groups(const at::Tensor& order, const at::Tensor& offsets) {
  auto off = offsets.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  std::vector<GroupSegment> segments;
  for (int64_t g = 0; g + 1 < off.numel(); ++g) {
    if (o[g + 1] > o[g]) segments.push_back({g, order.slice(0, o[g], o[g + 1])});
  }
  return segments;
}

// Rows `index` of `t` (dim 0), and their write-back. Advanced indexing copies whole rows; index_select
// took 48 ms for CBRTiny's layer-4 weights where at::index took 3 ms (profiled on the 2-core VM).
at::Tensor gather_rows(const at::Tensor& t, const at::Tensor& index) {
  c10::List<std::optional<at::Tensor>> indices;
  indices.push_back(index);
  return at::index(t, indices);
}

void scatter_rows(at::Tensor& out, const at::Tensor& index, const at::Tensor& rows) {
  c10::List<std::optional<at::Tensor>> indices;
  indices.push_back(index);
  out.index_put_(indices, rows);
}

// int64 [B]: the group of every sample, in the caller's order (the inverse of the plan's sort).
at::Tensor sample_groups(const at::Tensor& order, const at::Tensor& offsets) {
  const auto off = offsets.contiguous();
  const auto ord = order.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  const int64_t* sorted = ord.data_ptr<int64_t>();
  auto group = at::empty({ord.numel()}, ord.options());
  int64_t* g_out = group.data_ptr<int64_t>();
  for (int64_t g = 0; g + 1 < off.numel(); ++g) {
    for (int64_t i = o[g]; i < o[g + 1]; ++i) g_out[sorted[i]] = g;
  }
  return group;
}

// Runs fn(segment) for every non-empty group: one after another (Path::Loop, each convolution
// multi-threaded) or side by side (Path::LoopParallel, each single-threaded: for the small
// per-group batches of a mixed batch this keeps every core busy where one multi-threaded
// convolution per group leaves cores idle in its serial parts).
template <typename Fn>
void for_each_group(const at::Tensor& order, const at::Tensor& offsets, Path path, const Fn& fn) {
  const auto segments = nonempty_groups(order, offsets);
  const int64_t count = static_cast<int64_t>(segments.size());
  if (path == Path::LoopParallel && count > 1) {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(segments[i]);
    });
  } else {
    for (const auto& segment : segments) fn(segment);
  }
}

// Runs `pass` with the path cpu::decide gives; the first call with a new signature (autotune on)
// first times every path through run(path) and keeps the fastest (autotune.h). The candidates run
// outside the pass's profiler label, which names only the path that produces the result.
template <typename Run>
at::Tensor run_pass(Pass pass, const ConvGeometry& geo, const at::Tensor& offsets, at::ScalarType dtype, const Run& run) {
  const int64_t threads = at::get_num_threads();
  bool measure_first = false;
  cpu::Choice choice = cpu::decide(pass, geo, cpu::group_stats(offsets), threads, dtype, &measure_first);
  if (measure_first) {
    constexpr int kReps = 3;
    const auto& kept = autotune::tune(cpu::tune_key(pass, geo, dtype, threads),
                                      {cpu::path_name(Path::Loop), cpu::path_name(Path::LoopParallel),
                                       cpu::path_name(Path::Fold)},
                                      kReps, [&](int candidate) {
                                        const auto started = std::chrono::steady_clock::now();
                                        run(static_cast<Path>(candidate));
                                        return std::chrono::duration<double, std::milli>(
                                                   std::chrono::steady_clock::now() - started)
                                            .count();
                                      });
    choice.path = static_cast<Path>(kept.winner);
  }
  RECORD_FUNCTION(cpu::record_label(pass, choice.path), std::vector<c10::IValue>());
  return run(choice.path);
}

// weight [G, Cout, Cin, kh, kw] gathered per sample and flattened to the groups=B layout
// [B*Cout, Cin, kh, kw], contiguous (whatever the weight's memory: HAM's is [Cout, kh, kw, Cin] per group).
at::Tensor folded_weight(const at::Tensor& weight, const at::Tensor& group) {
  return gather_rows(weight, group).contiguous().flatten(0, 1);
}

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo, Path path) {
  if (path == Path::Fold) {
    const auto group = sample_groups(order, offsets);
    at::Tensor folded_bias = bias.has_value() ? gather_rows(*bias, group).flatten() : at::Tensor();
    auto y = at::convolution(x.reshape({1, geo.batch * geo.in_channels, geo.height, geo.width}),
                             folded_weight(weight, group), folded_bias, {geo.stride, geo.stride},
                             {geo.padding, geo.padding}, {1, 1}, false, {0, 0}, geo.batch);
    return y.view({geo.batch, geo.out_channels, geo.out_height, geo.out_width});
  }
  auto out = at::empty({geo.batch, geo.out_channels, geo.out_height, geo.out_width}, x.options());
  for_each_group(order, offsets, path, [&](const GroupSegment& s) {
    at::Tensor group_bias = bias.has_value() ? bias->select(0, s.group) : at::Tensor();
    auto y = at::conv2d(gather_rows(x, s.index), weight.select(0, s.group), group_bias, geo.stride, geo.padding);
    scatter_rows(out, s.index, y);
  });
  return out;
}

at::Tensor grouped_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_forward_args(x, weight, bias, order, offsets, stride, padding);
  if (has_zero_extent(geo)) return zero_extent_forward(x, bias, order, offsets, geo);
  return run_pass(Pass::Forward, geo, offsets, x.scalar_type(),
                  [&](Path path) { return forward_cpu(x, weight, bias, order, offsets, geo, path); });
}

at::Tensor backward_input_cpu(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& order,
                              const at::Tensor& offsets, at::IntArrayRef input_size, const ConvGeometry& geo,
                              Path path) {
  const int64_t stride = geo.stride, padding = geo.padding;
  // convolution_backward reads only the sizes of `input` when asked for the input gradient alone.
  if (path == Path::Fold) {
    const auto group = sample_groups(order, offsets);
    auto input_shape = at::empty({1, geo.batch * geo.in_channels, geo.height, geo.width}, grad_out.options());
    auto grads = at::convolution_backward(
        grad_out.reshape({1, geo.batch * geo.out_channels, geo.out_height, geo.out_width}), input_shape,
        folded_weight(weight, group), std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0},
        geo.batch, {true, false, false});
    return std::get<0>(grads).view(input_size);
  }
  auto grad_x = at::empty(input_size, grad_out.options());
  for_each_group(order, offsets, path, [&](const GroupSegment& s) {
    auto input_shape = at::empty({s.index.size(0), geo.in_channels, geo.height, geo.width}, grad_out.options());
    auto grads = at::convolution_backward(gather_rows(grad_out, s.index), input_shape, weight.select(0, s.group),
                                          std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1,
                                          {true, false, false});
    scatter_rows(grad_x, s.index, std::get<0>(grads));
  });
  return grad_x;
}

at::Tensor grouped_conv2d_backward_input_cpu(const at::Tensor& grad_out, const at::Tensor& weight,
                                             const at::Tensor& order, const at::Tensor& offsets,
                                             at::IntArrayRef input_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_input_args(grad_out, weight, order, offsets, input_size, stride, padding);
  if (has_zero_extent(geo)) return zero_extent_backward_input(grad_out, input_size);
  return run_pass(Pass::GradInput, geo, offsets, grad_out.scalar_type(), [&](Path path) {
    return backward_input_cpu(grad_out, weight, order, offsets, input_size, geo, path);
  });
}

at::Tensor backward_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& order,
                               const at::Tensor& offsets, at::IntArrayRef weight_size, const ConvGeometry& geo,
                               Path path) {
  const int64_t stride = geo.stride, padding = geo.padding;
  // Only the sizes of `weight` are read for the weight gradient.
  if (path == Path::Fold) {
    const auto group = sample_groups(order, offsets);
    // Reduced-precision inputs run in float32 here: the per-sample gradients are summed per group
    // and rounded once, as the loop's convolutions round once, rather than rounded per sample.
    const auto compute = at::isReducedFloatingType(x.scalar_type()) ? at::kFloat : x.scalar_type();
    auto weight_shape =
        at::empty({geo.batch * geo.out_channels, geo.in_channels, geo.kernel_h, geo.kernel_w}, x.options().dtype(compute));
    auto grads = at::convolution_backward(
        grad_out.to(compute).reshape({1, geo.batch * geo.out_channels, geo.out_height, geo.out_width}),
        x.to(compute).reshape({1, geo.batch * geo.in_channels, geo.height, geo.width}), weight_shape, std::nullopt,
        {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, geo.batch, {false, true, false});
    // The per-group sum as one GEMM with a one-hot [G, B] matrix: index_add_ over the batch axis
    // (a scatter_add on CPU) took 2/3 of this pass at CBRTiny's layer 2.
    auto one_hot = at::zeros({geo.groups, geo.batch}, x.options().dtype(compute));
    one_hot.scatter_(0, group.unsqueeze(0), 1.0);
    auto grad_weight = at::mm(one_hot, std::get<1>(grads).view({geo.batch, -1}));
    return grad_weight.view(weight_size).to(x.scalar_type());
  }
  auto grad_weight = at::zeros(weight_size, x.options());
  for_each_group(order, offsets, path, [&](const GroupSegment& s) {
    auto weight_shape = at::empty(weight_size.slice(1), x.options());
    auto grads = at::convolution_backward(gather_rows(grad_out, s.index), gather_rows(x, s.index), weight_shape,
                                          std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1,
                                          {false, true, false});
    grad_weight.select(0, s.group).copy_(std::get<1>(grads));
  });
  return grad_weight;
}

at::Tensor grouped_conv2d_backward_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                              const at::Tensor& order, const at::Tensor& offsets,
                                              at::IntArrayRef weight_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_weight_args(grad_out, x, order, offsets, weight_size, stride, padding);
  if (has_zero_extent(geo)) return zero_extent_backward_weight(x, weight_size);
  return run_pass(Pass::GradWeight, geo, offsets, x.scalar_type(), [&](Path path) {
    return backward_weight_cpu(grad_out, x, order, offsets, weight_size, geo, path);
  });
}

// Per-sample channel sums, then per group one GEMM with a one-hot [G, B] matrix (as the fold's
// grad-weight), in float32 for 16-bit inputs and rounded once.
at::Tensor grouped_conv2d_backward_bias_cpu(const at::Tensor& grad_out, const at::Tensor& order,
                                            const at::Tensor& offsets, int64_t groups) {
  const ConvGeometry geo = check_backward_bias_args(grad_out, order, offsets, groups);
  if (geo.batch == 0 || geo.out_channels == 0) return at::zeros({geo.groups, geo.out_channels}, grad_out.options());
  const auto compute = at::isReducedFloatingType(grad_out.scalar_type()) ? at::kFloat : grad_out.scalar_type();
  const auto per_sample = grad_out.sum({2, 3}, /*keepdim=*/false, compute);
  auto one_hot = at::zeros({geo.groups, geo.batch}, grad_out.options().dtype(compute));
  one_hot.scatter_(0, sample_groups(order, offsets).unsqueeze(0), 1.0);
  return at::mm(one_hot, per_sample).to(grad_out.scalar_type());
}

// The three passes as the separate ops compute them (the CPU kernels take the activations as given).
BackwardResult grouped_conv2d_backward_cpu(const at::Tensor& grad_out, const std::optional<at::Tensor>& x,
                                           const std::optional<at::Tensor>& weight, const at::Tensor& order,
                                           const at::Tensor& offsets, at::IntArrayRef input_size,
                                           at::IntArrayRef weight_size, int64_t stride, int64_t padding,
                                           std::array<bool, 3> output_mask) {
  TORCH_CHECK(!output_mask[0] || weight.has_value(), "hamfast.grouped_conv2d_backward: grad_x needs weight");
  TORCH_CHECK(!output_mask[1] || x.has_value(), "hamfast.grouped_conv2d_backward: grad_weight needs x");
  BackwardResult r;
  if (output_mask[0])
    std::get<0>(r) = grouped_conv2d_backward_input_cpu(grad_out, *weight, order, offsets, input_size, stride, padding);
  if (output_mask[1])
    std::get<1>(r) = grouped_conv2d_backward_weight_cpu(grad_out, *x, order, offsets, weight_size, stride, padding);
  if (output_mask[2]) std::get<2>(r) = grouped_conv2d_backward_bias_cpu(grad_out, order, offsets, weight_size[0]);
  return r;
}

// The CPU kernels take x as given, so hamfast.ops never asks for the saving forward here
// (grouped_conv2d_saves_input_nhwc is false); it still computes what the schema says, for tests.
std::tuple<at::Tensor, at::Tensor> grouped_conv2d_saving_input_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                                   const std::optional<at::Tensor>& bias,
                                                                   const at::Tensor& order, const at::Tensor& offsets,
                                                                   int64_t stride, int64_t padding) {
  auto out = grouped_conv2d_cpu(x, weight, bias, order, offsets, stride, padding);
  return {std::move(out), x.clone(at::MemoryFormat::ChannelsLast)};
}

bool grouped_conv2d_saves_input_nhwc_cpu(const at::Tensor&, const at::Tensor&, int64_t, int64_t) { return false; }

}  // namespace

TORCH_LIBRARY_IMPL(hamfast, CPU, m) {
  m.impl("grouped_conv2d_backward", &grouped_conv2d_backward_cpu);
  m.impl("grouped_conv2d", &grouped_conv2d_cpu);
  m.impl("grouped_conv2d_saving_input", &grouped_conv2d_saving_input_cpu);
  m.impl("grouped_conv2d_saves_input_nhwc", &grouped_conv2d_saves_input_nhwc_cpu);
  m.impl("grouped_conv2d_backward_input", &grouped_conv2d_backward_input_cpu);
  m.impl("grouped_conv2d_backward_weight", &grouped_conv2d_backward_weight_cpu);
  m.impl("grouped_conv2d_backward_bias", &grouped_conv2d_backward_bias_cpu);
}

}  // namespace hamfast
