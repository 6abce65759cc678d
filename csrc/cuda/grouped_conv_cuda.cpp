// CUDA backend of the grouped convolution: argument checks, the dispatcher's decision, layout
// conversion (NHWC activations and KRSC weights, at most once per call and none for tensors already
// in those layouts), allocation and stream
// handling with ATen; the kernels themselves are in grouped_conv_kernels.cu (nvcc, no torch headers).
// Each pass runs what the dispatcher decides (dispatch.h): the candidate the run-time autotuner
// measured fastest for the call's signature (own kernels or cuDNN through ATen), or the fixed heuristic.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <sstream>

#include "../grouped_conv.h"
#include "autotune_cuda.h"
#include "dispatch.h"
#include "grouped_conv_kernels.cuh"

namespace hamfast {
namespace {

using cuda::Decision;
using cuda::Path;
using cuda::PassKind;
using cuda::Precision;

cuda::ConvShape kernel_shape(const ConvGeometry& geo) {
  constexpr int64_t kLimit = int64_t(1) << 31;
  TORCH_CHECK(geo.batch * geo.height * geo.width < kLimit && geo.batch * geo.out_height * geo.out_width < kLimit &&
                  geo.in_channels * geo.kernel_h * geo.kernel_w < kLimit &&
                  geo.out_channels * geo.kernel_h * geo.kernel_w < kLimit,
              "hamfast.grouped_conv2d: batch x pixels or channels x kernel reach 2^31, too large for the CUDA kernels");
  return {geo.batch,
          static_cast<int>(geo.in_channels),
          static_cast<int>(geo.height),
          static_cast<int>(geo.width),
          static_cast<int>(geo.groups),
          static_cast<int>(geo.out_channels),
          static_cast<int>(geo.kernel_h),
          static_cast<int>(geo.kernel_w),
          static_cast<int>(geo.stride),
          static_cast<int>(geo.padding),
          static_cast<int>(geo.out_height),
          static_cast<int>(geo.out_width)};
}

void check_launch(cudaError_t status, const char* pass) {
  TORCH_CHECK(status == cudaSuccess, "hamfast.grouped_conv2d: CUDA ", pass, " kernel failed: ",
              cudaGetErrorString(status));
}

void check_cuda_dtype(const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf,
              "hamfast.grouped_conv2d: the CUDA kernels take float32, float64, bfloat16 or float16, got ", st);
}

// float32 follows torch.backends.cudnn.allow_tf32 (PyTorch's default for convolutions: true), so
// the op keeps cuDNN's precision contract.
Precision precision_of(at::ScalarType st) {
  switch (st) {
    case at::kDouble: return Precision::kFloat64;
    case at::kBFloat16: return Precision::kBFloat16;
    case at::kHalf: return Precision::kFloat16;
    default: return at::globalContext().allowTF32CuDNN() ? Precision::kTF32 : Precision::kFloat32;
  }
}

cuda::DeviceInfo device_info(const at::Tensor& t) {
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(t.device().index());
  return {p->major, p->minor, p->multiProcessorCount, p->name};
}

// Calls f(T{}) with the kernels' element type of `st`.
template <typename F>
void with_kernel_type(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kBFloat16: f(cuda::bf16_t{}); break;
    case at::kHalf: f(cuda::f16_t{}); break;
    default: TORCH_CHECK(false, "hamfast.grouped_conv2d: unsupported dtype ", st);
  }
}

template <typename T>
const T* cptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const T*>(t.const_data_ptr()) : nullptr;
}
template <typename T>
T* mptr(at::Tensor& t) {
  return reinterpret_cast<T*>(t.mutable_data_ptr());
}

// t in channels_last (NHWC), as the own kernels read activations; a copy only when t is not already,
// counted by the debug counter (nhwc_copies) that the tests read.
at::Tensor to_nhwc(const at::Tensor& t) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  count_nhwc_copy();
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// weight [G, Cout, Cin, kh, kw] as the kernels read it: per group, memory [Cout, kh, kw, Cin] (KRSC,
// one layout for forward and grad-input), the groups krsc.stride(0) elements apart. HAM's
// hypernetwork generates its weights so (rows of its [G, P'] output), so this is a view for them; a
// dense copy otherwise, counted by the debug counter (weight_copies) that the tests read.
at::Tensor to_krsc(const at::Tensor& weight) {
  const auto krsc = weight.permute({0, 1, 3, 4, 2});
  // The kernels only read the weights: any group stride serves (0 too, for expanded weights).
  if (krsc.size(0) > 0 && krsc.select(0, 0).is_contiguous()) return krsc;
  count_weight_copy();
  return krsc.contiguous();
}

// A [G, Cout, Cin, kh, kw] tensor whose memory is [G, Cout, kh, kw, Cin]: how every CUDA path returns
// grad_weight (the own kernels write that memory row by row; the cuDNN paths write into it), one
// layout whatever the autotuner picks, the one HAM's generated weights have.
at::Tensor krsc_tensor(at::IntArrayRef weight_size, const at::TensorOptions& options, bool zeroed) {
  const std::vector<int64_t> memory{weight_size[0], weight_size[1], weight_size[3], weight_size[4], weight_size[2]};
  const auto t = zeroed ? at::zeros(memory, options) : at::empty(memory, options);
  return t.permute({0, 1, 4, 2, 3});
}

// [B, C, pixels] element strides of a 4-D tensor in NCHW or channels_last layout.
cuda::OutStrides out_strides(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(3)}; }

// ---- cuDNN formulations (the dispatcher's floor) --------------------------------------------

std::vector<int64_t> pair(int64_t v) { return {v, v}; }

at::Tensor forward_groups_b(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& g) {
  const auto group = plan_sample_groups(order, offsets, g);
  const auto w = weight.index_select(0, group).reshape({g.batch * g.out_channels, g.in_channels, g.kernel_h, g.kernel_w});
  std::optional<at::Tensor> b;
  if (bias.has_value()) b = bias->index_select(0, group).reshape({g.batch * g.out_channels});
  const auto y = at::convolution(x.contiguous().reshape({1, g.batch * g.in_channels, g.height, g.width}), w, b,
                                 pair(g.stride), pair(g.padding), pair(1), false, pair(0), g.batch);
  return y.view({g.batch, g.out_channels, g.out_height, g.out_width}).contiguous(x.suggest_memory_format());
}

std::vector<int64_t> transpose_output_padding(const ConvGeometry& g) {
  return {g.height - ((g.out_height - 1) * g.stride - 2 * g.padding + g.kernel_h),
          g.width - ((g.out_width - 1) * g.stride - 2 * g.padding + g.kernel_w)};
}

at::Tensor grad_input_groups_b(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& order,
                               const at::Tensor& offsets, const ConvGeometry& g) {
  const auto group = plan_sample_groups(order, offsets, g);
  const auto w = weight.index_select(0, group).reshape({g.batch * g.out_channels, g.in_channels, g.kernel_h, g.kernel_w});
  const auto dy = grad_out.contiguous().reshape({1, g.batch * g.out_channels, g.out_height, g.out_width});
  const auto gx = at::convolution(dy, w, std::nullopt, pair(g.stride), pair(g.padding), pair(1), true,
                                  transpose_output_padding(g), g.batch);
  return gx.view({g.batch, g.in_channels, g.height, g.width}).contiguous(grad_out.suggest_memory_format());
}

at::Tensor grad_weight_groups_b(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& order,
                                const at::Tensor& offsets, at::IntArrayRef weight_size, const ConvGeometry& g) {
  const auto group = plan_sample_groups(order, offsets, g);
  const auto w_shape = at::empty({g.batch * g.out_channels, g.in_channels, g.kernel_h, g.kernel_w}, x.options());
  const auto dy = grad_out.contiguous().reshape({1, g.batch * g.out_channels, g.out_height, g.out_width});
  const auto x1 = x.contiguous().reshape({1, g.batch * g.in_channels, g.height, g.width});
  const auto grads = at::convolution_backward(dy, x1, w_shape, std::nullopt, pair(g.stride), pair(g.padding), pair(1),
                                              false, pair(0), g.batch, {false, true, false});
  const auto per_sample = std::get<1>(grads).view({g.batch, g.out_channels, g.in_channels, g.kernel_h, g.kernel_w});
  // index_put_ with accumulate sorts the indices on CUDA: deterministic, unlike index_add_.
  return krsc_tensor(weight_size, x.options(), true).index_put_({group}, per_sample, /*accumulate=*/true);
}

// Per group: needs the group sizes on the host, so this path syncs once (and validates the plan).
std::vector<int64_t> host_offsets(const at::Tensor& offsets, const ConvGeometry& g) {
  const auto off = offsets.to(at::kCPU);
  std::vector<int64_t> o(off.data_ptr<int64_t>(), off.data_ptr<int64_t>() + g.groups + 1);
  TORCH_CHECK(o[0] == 0 && o[g.groups] == g.batch, "hamfast.grouped_conv2d: offsets must run from 0 to B=", g.batch);
  for (int64_t i = 0; i < g.groups; ++i)
    TORCH_CHECK(o[i] <= o[i + 1], "hamfast.grouped_conv2d: offsets must not decrease (group ", i, ")");
  return o;
}

at::Tensor forward_per_group(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& g) {
  const auto o = host_offsets(offsets, g);
  auto out = at::empty({g.batch, g.out_channels, g.out_height, g.out_width},
                       x.options().memory_format(x.suggest_memory_format()));
  for (int64_t i = 0; i < g.groups; ++i) {
    if (o[i + 1] == o[i]) continue;
    const auto idx = order.slice(0, o[i], o[i + 1]);
    std::optional<at::Tensor> b;
    if (bias.has_value()) b = (*bias)[i];
    out.index_copy_(0, idx, at::convolution(x.index_select(0, idx), weight[i], b, pair(g.stride), pair(g.padding),
                                            pair(1), false, pair(0), 1));
  }
  return out;
}

at::Tensor grad_input_per_group(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& order,
                                const at::Tensor& offsets, const ConvGeometry& g) {
  const auto o = host_offsets(offsets, g);
  auto gx = at::empty({g.batch, g.in_channels, g.height, g.width},
                      grad_out.options().memory_format(grad_out.suggest_memory_format()));
  for (int64_t i = 0; i < g.groups; ++i) {
    if (o[i + 1] == o[i]) continue;
    const auto idx = order.slice(0, o[i], o[i + 1]);
    gx.index_copy_(0, idx, at::convolution(grad_out.index_select(0, idx), weight[i], std::nullopt, pair(g.stride),
                                           pair(g.padding), pair(1), true, transpose_output_padding(g), 1));
  }
  return gx;
}

at::Tensor grad_weight_per_group(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& order,
                                 const at::Tensor& offsets, at::IntArrayRef weight_size, const ConvGeometry& g) {
  const auto o = host_offsets(offsets, g);
  auto gw = krsc_tensor(weight_size, x.options(), true);
  const auto w_shape = at::empty({g.out_channels, g.in_channels, g.kernel_h, g.kernel_w}, x.options());
  for (int64_t i = 0; i < g.groups; ++i) {
    if (o[i + 1] == o[i]) continue;
    const auto idx = order.slice(0, o[i], o[i + 1]);
    const auto grads = at::convolution_backward(grad_out.index_select(0, idx), x.index_select(0, idx), w_shape,
                                                std::nullopt, pair(g.stride), pair(g.padding), pair(1), false, pair(0),
                                                1, {false, true, false});
    gw[i].copy_(std::get<1>(grads));
  }
  return gw;
}

// ---- one pass with a given decision (the autotuner times candidates through these) ----------

// x_nhwc_made: where an own-kernel forward leaves the NHWC x it read (x itself when channels_last).
at::Tensor run_forward(const Decision& d, const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const at::Tensor& order, const at::Tensor& offsets,
                       const ConvGeometry& geo, const cuda::ConvShape& shape, at::Tensor* x_nhwc_made = nullptr) {
  if (d.path == Path::kCudnnGroupsB || d.path == Path::kCudnnPerGroup) {
    const cuda::CudnnBenchmarkGuard benchmark(d.measured);
    return d.path == Path::kCudnnGroupsB ? forward_groups_b(x, weight, bias, order, offsets, geo)
                                         : forward_per_group(x, weight, bias, order, offsets, geo);
  }
  auto out = at::empty({geo.batch, geo.out_channels, geo.out_height, geo.out_width},
                       x.options().memory_format(x.suggest_memory_format()));
  const auto x_nhwc = to_nhwc(x);
  if (x_nhwc_made != nullptr) *x_nhwc_made = x_nhwc;
  const auto w_krsc = to_krsc(weight);
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  const auto order_c = order.contiguous(), offsets_c = offsets.contiguous();
  with_kernel_type(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::launch_grouped_conv_forward<T>(cptr<T>(x_nhwc), cptr<T>(w_krsc), w_krsc.stride(0), cptr<T>(bias_c),
                                                      order_c.const_data_ptr<int64_t>(),
                                                      offsets_c.const_data_ptr<int64_t>(), mptr<T>(out),
                                                      out_strides(out), shape, d.kernel,
                                                      at::cuda::getCurrentCUDAStream()),
                 "forward");
  });
  return out;
}

// dy_nhwc: grad_out already in NHWC (made once per backward call), or undefined (converted here).
at::Tensor run_backward_input(const Decision& d, const at::Tensor& grad_out, const at::Tensor& weight,
                              const at::Tensor& order, const at::Tensor& offsets, at::IntArrayRef input_size,
                              const ConvGeometry& geo, const cuda::ConvShape& shape,
                              const at::Tensor& dy_nhwc_given = at::Tensor()) {
  if (d.path == Path::kCudnnGroupsB || d.path == Path::kCudnnPerGroup) {
    const cuda::CudnnBenchmarkGuard benchmark(d.measured);
    return d.path == Path::kCudnnGroupsB ? grad_input_groups_b(grad_out, weight, order, offsets, geo)
                                         : grad_input_per_group(grad_out, weight, order, offsets, geo);
  }
  auto grad_x = at::empty(input_size, grad_out.options().memory_format(grad_out.suggest_memory_format()));
  const auto dy_nhwc = dy_nhwc_given.defined() ? dy_nhwc_given : to_nhwc(grad_out);
  const auto w_krsc = to_krsc(weight);
  const auto order_c = order.contiguous(), offsets_c = offsets.contiguous();
  with_kernel_type(grad_out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::launch_grouped_conv_backward_input<T>(
                     cptr<T>(dy_nhwc), cptr<T>(w_krsc), w_krsc.stride(0), order_c.const_data_ptr<int64_t>(),
                     offsets_c.const_data_ptr<int64_t>(), mptr<T>(grad_x), out_strides(grad_x), shape, d.kernel,
                     at::cuda::getCurrentCUDAStream()),
                 "grad-input");
  });
  return grad_x;
}

// dy_nhwc / x_nhwc: already in NHWC (made once per backward call), or undefined (converted here).
// grad_bias: when given, an own-kernel pass also computes the bias gradient [G, Cout] from the dy
// tiles it stages (fused: no separate read of dy) and stores it there; a cuDNN pass leaves it undefined.
at::Tensor run_backward_weight(const Decision& d, const at::Tensor& grad_out, const at::Tensor& x,
                               const at::Tensor& order, const at::Tensor& offsets, at::IntArrayRef weight_size,
                               const ConvGeometry& geo, const cuda::ConvShape& shape,
                               const at::Tensor& dy_nhwc_given = at::Tensor(),
                               const at::Tensor& x_nhwc_given = at::Tensor(), at::Tensor* grad_bias = nullptr) {
  if (d.path == Path::kCudnnGroupsB || d.path == Path::kCudnnPerGroup) {
    const cuda::CudnnBenchmarkGuard benchmark(d.measured);
    return d.path == Path::kCudnnGroupsB ? grad_weight_groups_b(grad_out, x, order, offsets, weight_size, geo)
                                         : grad_weight_per_group(grad_out, x, order, offsets, weight_size, geo);
  }
  auto grad_weight = krsc_tensor(weight_size, x.options(), false);  // every element is written (GEMM or reduce)
  if (grad_bias != nullptr) *grad_bias = at::empty({geo.groups, geo.out_channels}, x.options());
  const auto dy_nhwc = dy_nhwc_given.defined() ? dy_nhwc_given : to_nhwc(grad_out);
  const auto x_nhwc = x_nhwc_given.defined() ? x_nhwc_given : to_nhwc(x);
  const auto order_c = order.contiguous(), offsets_c = offsets.contiguous();
  with_kernel_type(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    // Split-K 1 needs no workspace: the GEMM writes grad_weight directly.
    const size_t bytes = cuda::grouped_conv_backward_weight_workspace_bytes<T>(shape, d.kernel, grad_bias != nullptr);
    at::Tensor workspace;
    if (bytes > 0) workspace = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
    check_launch(cuda::launch_grouped_conv_backward_weight<T>(
                     cptr<T>(dy_nhwc), cptr<T>(x_nhwc), order_c.const_data_ptr<int64_t>(),
                     offsets_c.const_data_ptr<int64_t>(), mptr<T>(grad_weight),
                     grad_bias != nullptr ? mptr<T>(*grad_bias) : nullptr,
                     bytes > 0 ? workspace.mutable_data_ptr() : nullptr, shape, d.kernel,
                     at::cuda::getCurrentCUDAStream()),
                 "grad-weight");
  });
  return grad_weight;
}

// ---- the ops: the decision (measured on the first call per signature), then the pass ---------

// x_nhwc_made: as for run_forward (left undefined for a zero-sized call or a cuDNN forward).
at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding,
                        at::Tensor* x_nhwc_made = nullptr) {
  const ConvGeometry geo = check_forward_args(x, weight, bias, order, offsets, stride, padding);
  check_cuda_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  if (has_zero_extent(geo)) return zero_extent_forward(x, bias, order, offsets, geo);
  const cuda::ConvShape shape = kernel_shape(geo);
  const Decision d = cuda::pick(PassKind::kForward, precision_of(x.scalar_type()), shape, device_info(x),
                                [&](const Decision& c) { run_forward(c, x, weight, bias, order, offsets, geo, shape); });
  return run_forward(d, x, weight, bias, order, offsets, geo, shape, x_nhwc_made);
}

at::Tensor grouped_conv2d_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding) {
  return forward_cuda(x, weight, bias, order, offsets, stride, padding);
}

// The forward and the NHWC x it read, kept for the backward. Should the forward not have made one
// (a cuDNN forward, or x channels_last already: never asked for by hamfast.ops), it is copied here.
std::tuple<at::Tensor, at::Tensor> grouped_conv2d_saving_input_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                                    const std::optional<at::Tensor>& bias,
                                                                    const at::Tensor& order, const at::Tensor& offsets,
                                                                    int64_t stride, int64_t padding) {
  at::Tensor x_nhwc;
  auto out = forward_cuda(x, weight, bias, order, offsets, stride, padding, &x_nhwc);
  if (!x_nhwc.defined() || x_nhwc.is_same(x)) {
    const c10::cuda::CUDAGuard guard(x.device());
    count_nhwc_copy();
    x_nhwc = x.clone(at::MemoryFormat::ChannelsLast);
  }
  return {std::move(out), std::move(x_nhwc)};
}

// cuda::saves_input_nhwc for this call, from the decisions the forward and grad-weight would take
// now (the kept measurements or the fixed heuristic): reads shapes and the autotune cache, no sync.
bool grouped_conv2d_saves_input_nhwc_cuda(const at::Tensor& x, const at::Tensor& weight, int64_t stride,
                                          int64_t padding) {
  const ConvGeometry geo = make_geometry(x.sizes(), weight.sizes(), stride, padding);
  check_cuda_dtype(x);
  if (has_zero_extent(geo)) return false;
  const cuda::ConvShape shape = kernel_shape(geo);
  const cuda::DeviceInfo dev = device_info(x);
  const Precision precision = precision_of(x.scalar_type());
  const cuda::Context context = cuda::tune_context();
  bool forward_first = false, weight_first = false;
  const Decision forward = cuda::decide(PassKind::kForward, precision, shape, dev, context, &forward_first);
  const Decision grad_weight = cuda::decide(PassKind::kGradWeight, precision, shape, dev, context, &weight_first);
  return cuda::saves_input_nhwc(forward.path, grad_weight.path, weight_first,
                                x.is_contiguous(at::MemoryFormat::ChannelsLast));
}

at::Tensor grouped_conv2d_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& weight,
                                              const at::Tensor& order, const at::Tensor& offsets,
                                              at::IntArrayRef input_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_input_args(grad_out, weight, order, offsets, input_size, stride, padding);
  check_cuda_dtype(grad_out);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  if (has_zero_extent(geo)) return zero_extent_backward_input(grad_out, input_size);
  const cuda::ConvShape shape = kernel_shape(geo);
  const Decision d = cuda::pick(
      PassKind::kGradInput, precision_of(grad_out.scalar_type()), shape, device_info(grad_out),
      [&](const Decision& c) { run_backward_input(c, grad_out, weight, order, offsets, input_size, geo, shape); });
  return run_backward_input(d, grad_out, weight, order, offsets, input_size, geo, shape);
}

at::Tensor grouped_conv2d_backward_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                               const at::Tensor& order, const at::Tensor& offsets,
                                               at::IntArrayRef weight_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_weight_args(grad_out, x, order, offsets, weight_size, stride, padding);
  check_cuda_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  if (has_zero_extent(geo)) return krsc_tensor(weight_size, x.options(), true);
  const cuda::ConvShape shape = kernel_shape(geo);
  const Decision d = cuda::pick(
      PassKind::kGradWeight, precision_of(x.scalar_type()), shape, device_info(x),
      [&](const Decision& c) { run_backward_weight(c, grad_out, x, order, offsets, weight_size, geo, shape); });
  return run_backward_weight(d, grad_out, x, order, offsets, weight_size, geo, shape);
}

// grad_bias [G, Cout] = per group, the sum of grad_out over its samples and pixels: one
// deterministic kernel (launch_grouped_conv_backward_bias), reading grad_out in NCHW or NHWC as given.
at::Tensor grouped_conv2d_backward_bias_cuda(const at::Tensor& grad_out, const at::Tensor& order,
                                             const at::Tensor& offsets, int64_t groups) {
  const ConvGeometry geo = check_backward_bias_args(grad_out, order, offsets, groups);
  check_cuda_dtype(grad_out);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  auto grad_bias = at::empty({geo.groups, geo.out_channels}, grad_out.options());
  if (grad_bias.numel() == 0) return grad_bias;
  TORCH_CHECK(geo.batch * geo.out_height * geo.out_width < (int64_t(1) << 31),
              "hamfast.grouped_conv2d: batch x pixels reach 2^31, too large for the CUDA kernels");
  // The kernel reads [B, C, pixels] strides: NCHW and channels_last qualify, anything else is copied.
  const bool flat = grad_out.size(2) <= 1 || grad_out.size(3) <= 1 || grad_out.stride(2) == grad_out.stride(3) * grad_out.size(3);
  const auto dy = flat ? grad_out : grad_out.contiguous(grad_out.suggest_memory_format());
  const cuda::OutStrides st{dy.stride(0), dy.stride(1), dy.size(3) <= 1 ? dy.stride(2) : dy.stride(3)};
  cuda::ConvShape shape{geo.batch, 0, 0, 0, static_cast<int>(geo.groups), static_cast<int>(geo.out_channels), 1, 1, 1, 0,
                        static_cast<int>(geo.out_height), static_cast<int>(geo.out_width)};
  const auto order_c = order.contiguous(), offsets_c = offsets.contiguous();
  with_kernel_type(grad_out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    check_launch(cuda::launch_grouped_conv_backward_bias<T>(cptr<T>(dy), st, order_c.const_data_ptr<int64_t>(),
                                                            offsets_c.const_data_ptr<int64_t>(), mptr<T>(grad_bias),
                                                            shape, at::cuda::getCurrentCUDAStream()),
                 "grad-bias");
  });
  return grad_bias;
}

// grad_x, grad_weight and grad_bias in one call: both GEMM passes decide first (the autotuner
// measures on the first call per signature, as the separate ops do), then plan_backward_layouts
// says which NHWC copies to make: dy once for grad-input and grad-weight together, x once for an
// own-kernel grad-weight, none for a pass on cuDNN (which reads NCHW as before). grad_x and
// grad_weight are exactly those of the separate ops (same decision, kernel and output layout), so
// bitwise equal. grad_bias comes from an own-kernel grad-weight's pass over dy when both are asked
// for (fused_bias_gradient), else from the bias kernel: both deterministic fp32 / fp64 sums rounded
// once, in different orders, so they may differ in the last bit.
BackwardResult grouped_conv2d_backward_cuda(const at::Tensor& grad_out, const std::optional<at::Tensor>& x,
                                            const std::optional<at::Tensor>& weight, const at::Tensor& order,
                                            const at::Tensor& offsets, at::IntArrayRef input_size,
                                            at::IntArrayRef weight_size, int64_t stride, int64_t padding,
                                            std::array<bool, 3> output_mask) {
  TORCH_CHECK(!output_mask[0] || weight.has_value(), "hamfast.grouped_conv2d_backward: grad_x needs weight");
  TORCH_CHECK(!output_mask[1] || x.has_value(), "hamfast.grouped_conv2d_backward: grad_weight needs x");
  check_cuda_dtype(grad_out);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const Precision precision = precision_of(grad_out.scalar_type());
  // A pass runs on the kernels when asked for and not zero-sized; its decision comes first.
  struct Pass {
    bool run = false;
    ConvGeometry geo{};
    cuda::ConvShape shape{};
    Decision d{Path::kCudnnGroupsB, {}, "", false};
  };
  BackwardResult r;
  Pass gi, gw;
  if (output_mask[0]) {
    gi.geo = check_backward_input_args(grad_out, *weight, order, offsets, input_size, stride, padding);
    if (has_zero_extent(gi.geo)) {
      std::get<0>(r) = zero_extent_backward_input(grad_out, input_size);
    } else {
      gi.run = true;
      gi.shape = kernel_shape(gi.geo);
      gi.d = cuda::pick(PassKind::kGradInput, precision, gi.shape, device_info(grad_out), [&](const Decision& c) {
        run_backward_input(c, grad_out, *weight, order, offsets, input_size, gi.geo, gi.shape);
      });
    }
  }
  if (output_mask[1]) {
    check_cuda_dtype(*x);
    gw.geo = check_backward_weight_args(grad_out, *x, order, offsets, weight_size, stride, padding);
    if (has_zero_extent(gw.geo)) {
      std::get<1>(r) = krsc_tensor(weight_size, x->options(), true);
    } else {
      gw.run = true;
      gw.shape = kernel_shape(gw.geo);
      gw.d = cuda::pick(PassKind::kGradWeight, precision, gw.shape, device_info(*x), [&](const Decision& c) {
        run_backward_weight(c, grad_out, *x, order, offsets, weight_size, gw.geo, gw.shape);
      });
    }
  }
  const cuda::BackwardLayouts layouts = cuda::plan_backward_layouts(
      gi.run, gi.d.path, gw.run, gw.d.path, grad_out.is_contiguous(at::MemoryFormat::ChannelsLast),
      gw.run && x->is_contiguous(at::MemoryFormat::ChannelsLast));
  const at::Tensor dy_nhwc = layouts.convert_dy ? to_nhwc(grad_out) : at::Tensor();
  const at::Tensor x_nhwc = layouts.convert_x ? to_nhwc(*x) : at::Tensor();
  if (gi.run)
    std::get<0>(r) = run_backward_input(gi.d, grad_out, *weight, order, offsets, input_size, gi.geo, gi.shape, dy_nhwc);
  const bool fuse_bias = cuda::fused_bias_gradient(output_mask[2], gw.run, gw.d.path);
  at::Tensor fused_bias;
  if (gw.run)
    std::get<1>(r) = run_backward_weight(gw.d, grad_out, *x, order, offsets, weight_size, gw.geo, gw.shape, dy_nhwc,
                                         x_nhwc, fuse_bias ? &fused_bias : nullptr);
  // Else the bias kernel, which reads grad_out in place (NCHW or NHWC): no copy for it.
  if (output_mask[2])
    std::get<2>(r) = fuse_bias ? fused_bias : grouped_conv2d_backward_bias_cuda(grad_out, order, offsets, weight_size[0]);
  return r;
}

// Which path each pass of a call with these arguments takes, and why. Reads shapes, dtype and the
// device's properties only (never the offsets' contents): no sync.
std::string grouped_conv2d_explain_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& offsets,
                                        int64_t stride, int64_t padding) {
  const ConvGeometry geo = make_geometry(x.sizes(), weight.sizes(), stride, padding);
  check_cuda_dtype(x);
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == geo.groups + 1,
              "hamfast.grouped_conv2d_explain: offsets must be [G + 1] = [", geo.groups + 1, "], got ", offsets.sizes());
  const cuda::ConvShape shape = kernel_shape(geo);
  const cuda::DeviceInfo dev = device_info(x);
  const Precision precision = precision_of(x.scalar_type());
  const int elem = static_cast<int>(x.element_size());
  const cuda::Context context = cuda::tune_context();
  std::ostringstream s;
  s << "hamfast.grouped_conv2d on " << dev.name << " (sm_" << dev.sm_major << dev.sm_minor << ", " << dev.sm_count
    << " SMs): x [" << geo.batch << ", " << geo.in_channels << ", " << geo.height << ", " << geo.width << "] "
    << x.scalar_type() << ", " << geo.groups << " groups of [" << geo.out_channels << ", " << geo.in_channels << ", "
    << geo.kernel_h << ", " << geo.kernel_w << "] weights, stride " << stride << ", padding " << padding << "\n";
  Path weight_path = Path::kCudnnGroupsB;  // grad-weight's, for the grad-bias line
  for (PassKind pass : {PassKind::kForward, PassKind::kGradInput, PassKind::kGradWeight}) {
    if (has_zero_extent(geo)) {
      s << "  " << cuda::pass_name(pass) << ": none (a zero-sized batch or channel dimension: no kernel runs)\n";
      continue;
    }
    bool measure_first = false;
    const Decision d = cuda::decide(pass, precision, shape, dev, context, &measure_first);
    if (pass == PassKind::kGradWeight) weight_path = d.path;
    s << "  " << cuda::pass_name(pass) << ": " << cuda::describe(d, precision);
    if (cuda::reads_nhwc(d.path)) {
      // As the launchers decide (grouped_conv_kernels.cu), given aligned tensors.
      const int64_t ca = pass == PassKind::kGradInput ? geo.out_channels : geo.in_channels;
      const int64_t cb = pass == PassKind::kForward ? ca : (pass == PassKind::kGradInput ? geo.in_channels : geo.out_channels);
      const int bytes = std::min(cuda::operand_copy_bytes(elem, ca), cuda::operand_copy_bytes(elem, cb));
      if (bytes > elem)
        s << ", " << bytes << "-byte cp.async loads";
      else
        s << ", element-wise loads (channels not a multiple of 8 or 16 bytes)";
    }
    s << "\n    why: " << d.why << "\n";
  }
  if (!has_zero_extent(geo)) {
    s << "  grad-bias: "
      << (cuda::fused_bias_gradient(true, true, weight_path)
              ? "summed in grad-weight's pass over dy (with the weight gradient; else the bias kernel)"
              : "the bias kernel, one deterministic launch (grad-weight runs on cuDNN)")
      << "\n";
  }
  return s.str();
}

}  // namespace

TORCH_LIBRARY_IMPL(hamfast, CUDA, m) {
  m.impl("grouped_conv2d", &grouped_conv2d_cuda);
  m.impl("grouped_conv2d_saving_input", &grouped_conv2d_saving_input_cuda);
  m.impl("grouped_conv2d_saves_input_nhwc", &grouped_conv2d_saves_input_nhwc_cuda);
  m.impl("grouped_conv2d_backward_input", &grouped_conv2d_backward_input_cuda);
  m.impl("grouped_conv2d_backward_weight", &grouped_conv2d_backward_weight_cuda);
  m.impl("grouped_conv2d_backward_bias", &grouped_conv2d_backward_bias_cuda);
  m.impl("grouped_conv2d_backward", &grouped_conv2d_backward_cuda);
  m.impl("grouped_conv2d_explain", &grouped_conv2d_explain_cuda);
}

}  // namespace hamfast
