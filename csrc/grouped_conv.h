// Shared declarations of the hamfast grouped-convolution op: its geometry and the argument checks
// every backend runs before touching memory.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace hamfast {

// Sizes of one grouped convolution. x: [batch, in_channels, height, width];
// weight: [groups, out_channels, in_channels, kernel_h, kernel_w]; out: [batch, out_channels, out_height, out_width].
struct ConvGeometry {
  int64_t batch, in_channels, height, width;
  int64_t groups, out_channels, kernel_h, kernel_w;
  int64_t stride, padding, out_height, out_width;

  // Reduction length of one output element: in_channels * kernel_h * kernel_w.
  int64_t depth() const { return in_channels * kernel_h * kernel_w; }
};

// Validates ranks, sizes (non-negative), channel counts, stride, padding and that the kernel fits the padded
// input; every size computed from them is checked for int64 overflow.
ConvGeometry make_geometry(at::IntArrayRef input_size, at::IntArrayRef weight_size, int64_t stride, int64_t padding);

// The group plan: order int64 [batch] (sample indices sorted by group), offsets int64 [groups + 1].
// Checks shapes, dtypes and devices; on CPU also the contents: offsets rise from 0 to batch and order is a
// permutation of 0..batch-1. CUDA plans are not read here (that would sync per layer): see docs/ops.md.
void check_plan(const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo, const at::Tensor& like);

// Full checks of each op's arguments; each returns the geometry.
ConvGeometry check_forward_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding);
ConvGeometry check_backward_input_args(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& order,
                                       const at::Tensor& offsets, at::IntArrayRef input_size, int64_t stride,
                                       int64_t padding);
ConvGeometry check_backward_weight_args(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& order,
                                        const at::Tensor& offsets, at::IntArrayRef weight_size, int64_t stride,
                                        int64_t padding);
// grouped_conv2d_backward_bias: grad_out a floating [B, Cout, Ho, Wo], the plan for B samples in
// `groups` groups. The geometry holds batch, groups, out_channels, out_height and out_width only.
ConvGeometry check_backward_bias_args(const at::Tensor& grad_out, const at::Tensor& order, const at::Tensor& offsets,
                                      int64_t groups);

// int64 [batch]: the group of every sample in the caller's order, computed with tensor ops on the
// plan's device (no host sync): plan position p lies in group #{g : offsets[g + 1] <= p}.
// Out-of-range plan entries are clamped, as the kernels tolerate them.
at::Tensor plan_sample_groups(const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo);

// Calls with a zero-sized batch or channel dimension run no kernel (every backend, before its
// dispatcher): the results are the empty reductions. Forward: [B, Cout, Ho, Wo] = bias[group[b]]
// when Cin = 0 (zeros without bias), empty otherwise; grad-input: zeros of input_size (empty
// unless Cout = 0); grad-weight: zeros of weight_size (empty unless B = 0).
bool has_zero_extent(const ConvGeometry& geo);
at::Tensor zero_extent_forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, const at::Tensor& order,
                               const at::Tensor& offsets, const ConvGeometry& geo);
at::Tensor zero_extent_backward_input(const at::Tensor& grad_out, at::IntArrayRef input_size);
at::Tensor zero_extent_backward_weight(const at::Tensor& x, at::IntArrayRef weight_size);

// Debug counter of activation copies to NHWC made by the CUDA backend (x in forward, dy and x in
// backward): tests read it through torch.ops.hamfast.nhwc_copies() to check one copy per tensor
// per layer. The CPU backend makes none.
void count_nhwc_copy();
int64_t nhwc_copies();
// Debug counter of weight copies to the kernels' KRSC layout (none for weights generated in it, as
// HAM's are): torch.ops.hamfast.weight_copies(). The CPU backend makes none either.
void count_weight_copy();
int64_t weight_copies();

// The three backward passes in one call (grouped_conv2d_backward): output_mask = (grad_x,
// grad_weight, grad_bias); a result not asked for is undefined (None in Python). x is needed only
// for grad_weight and weight only for grad_x.
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

}  // namespace hamfast
