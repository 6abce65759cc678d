// CPU kernels of the grouped convolution: for every group present, gather its samples, run ATen's
// convolution (oneDNN for float32) with that group's weights, scatter the result back.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../grouped_conv.h"

namespace hamfast {
namespace {

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

// Below this many multiply-adds per call, a parallel region costs more than it saves.
constexpr int64_t kMinParallelMacs = int64_t(1) << 22;

// Runs fn(segment) for every non-empty group. With several groups, several threads and enough
// work the groups run side by side, each convolution single-threaded: for the small per-group
// batches of a mixed batch this keeps every core busy, where one multi-threaded convolution per
// group would leave cores idle in its serial parts.
template <typename Fn>
void for_each_group(const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo, const Fn& fn) {
  const auto segments = nonempty_groups(order, offsets);
  const int64_t count = static_cast<int64_t>(segments.size());
  const int64_t macs = geo.batch * geo.out_channels * geo.out_height * geo.out_width * geo.depth();
  if (count > 1 && at::get_num_threads() > 1 && macs >= kMinParallelMacs) {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(segments[i]);
    });
  } else {
    for (const auto& segment : segments) fn(segment);
  }
}

at::Tensor grouped_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_forward_args(x, weight, bias, order, offsets, stride, padding);
  auto out = at::empty({geo.batch, geo.out_channels, geo.out_height, geo.out_width}, x.options());
  for_each_group(order, offsets, geo, [&](const GroupSegment& s) {
    at::Tensor group_bias = bias.has_value() ? bias->select(0, s.group) : at::Tensor();
    auto y = at::conv2d(x.index_select(0, s.index), weight.select(0, s.group), group_bias, stride, padding);
    out.index_copy_(0, s.index, y);
  });
  return out;
}

at::Tensor grouped_conv2d_backward_input_cpu(const at::Tensor& grad_out, const at::Tensor& weight,
                                             const at::Tensor& order, const at::Tensor& offsets,
                                             at::IntArrayRef input_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_input_args(grad_out, weight, order, offsets, input_size, stride, padding);
  auto grad_x = at::empty(input_size, grad_out.options());
  for_each_group(order, offsets, geo, [&](const GroupSegment& s) {
    // convolution_backward reads only the sizes of `input` when asked for the input gradient alone.
    auto input_shape = at::empty({s.index.size(0), geo.in_channels, geo.height, geo.width}, grad_out.options());
    auto grads = at::convolution_backward(grad_out.index_select(0, s.index), input_shape, weight.select(0, s.group),
                                          std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1,
                                          {true, false, false});
    grad_x.index_copy_(0, s.index, std::get<0>(grads));
  });
  return grad_x;
}

at::Tensor grouped_conv2d_backward_weight_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                              const at::Tensor& order, const at::Tensor& offsets,
                                              at::IntArrayRef weight_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_weight_args(grad_out, x, order, offsets, weight_size, stride, padding);
  auto grad_weight = at::zeros(weight_size, x.options());
  for_each_group(order, offsets, geo, [&](const GroupSegment& s) {
    // Likewise only the sizes of `weight` are read for the weight gradient.
    auto weight_shape = at::empty(weight_size.slice(1), x.options());
    auto grads = at::convolution_backward(grad_out.index_select(0, s.index), x.index_select(0, s.index), weight_shape,
                                          std::nullopt, {stride, stride}, {padding, padding}, {1, 1}, false, {0, 0}, 1,
                                          {false, true, false});
    grad_weight.select(0, s.group).copy_(std::get<1>(grads));
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(hamfast, CPU, m) {
  m.impl("grouped_conv2d", &grouped_conv2d_cpu);
  m.impl("grouped_conv2d_backward_input", &grouped_conv2d_backward_input_cpu);
  m.impl("grouped_conv2d_backward_weight", &grouped_conv2d_backward_weight_cpu);
}

}  // namespace hamfast
