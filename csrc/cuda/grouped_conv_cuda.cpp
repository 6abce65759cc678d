// CUDA backend of the grouped convolution: checks, allocation and stream handling with ATen, then
// the one-launch kernels of grouped_conv_kernels.cu (compiled by nvcc without torch headers).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../grouped_conv.h"
#include "grouped_conv_kernels.cuh"

namespace hamfast {
namespace {

cuda::ConvShape kernel_shape(const ConvGeometry& geo) {
  TORCH_CHECK(geo.height * geo.width < (int64_t(1) << 31) && geo.in_channels * geo.kernel_h * geo.kernel_w < (int64_t(1) << 31) &&
                  geo.out_channels * geo.kernel_h * geo.kernel_w < (int64_t(1) << 31),
              "hamfast.grouped_conv2d: image or kernel too large for the CUDA kernels");
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
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "hamfast.grouped_conv2d: the CUDA kernels take float32 or float64, got ", t.scalar_type());
}

at::Tensor grouped_conv2d_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_forward_args(x, weight, bias, order, offsets, stride, padding);
  check_cuda_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({geo.batch, geo.out_channels, geo.out_height, geo.out_width}, x.options());
  const auto x_c = x.contiguous(), weight_c = weight.contiguous(), order_c = order.contiguous(),
             offsets_c = offsets.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hamfast_grouped_conv2d_cuda", [&] {
    check_launch(cuda::launch_grouped_conv_forward<scalar_t>(
                     x_c.data_ptr<scalar_t>(), weight_c.data_ptr<scalar_t>(),
                     bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr, order_c.data_ptr<int64_t>(),
                     offsets_c.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), kernel_shape(geo),
                     at::cuda::getCurrentCUDAStream()),
                 "forward");
  });
  return out;
}

at::Tensor grouped_conv2d_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& weight,
                                              const at::Tensor& order, const at::Tensor& offsets,
                                              at::IntArrayRef input_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_input_args(grad_out, weight, order, offsets, input_size, stride, padding);
  check_cuda_dtype(grad_out);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  auto grad_x = at::empty(input_size, grad_out.options());
  const auto grad_out_c = grad_out.contiguous(), weight_c = weight.contiguous(), order_c = order.contiguous(),
             offsets_c = offsets.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "hamfast_grouped_conv2d_backward_input_cuda", [&] {
    check_launch(cuda::launch_grouped_conv_backward_input<scalar_t>(
                     grad_out_c.data_ptr<scalar_t>(), weight_c.data_ptr<scalar_t>(), order_c.data_ptr<int64_t>(),
                     offsets_c.data_ptr<int64_t>(), grad_x.data_ptr<scalar_t>(), kernel_shape(geo),
                     at::cuda::getCurrentCUDAStream()),
                 "grad-input");
  });
  return grad_x;
}

at::Tensor grouped_conv2d_backward_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                               const at::Tensor& order, const at::Tensor& offsets,
                                               at::IntArrayRef weight_size, int64_t stride, int64_t padding) {
  const ConvGeometry geo = check_backward_weight_args(grad_out, x, order, offsets, weight_size, stride, padding);
  check_cuda_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  auto grad_weight = at::zeros(weight_size, x.options());
  const auto grad_out_c = grad_out.contiguous(), x_c = x.contiguous(), order_c = order.contiguous(),
             offsets_c = offsets.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hamfast_grouped_conv2d_backward_weight_cuda", [&] {
    check_launch(cuda::launch_grouped_conv_backward_weight<scalar_t>(
                     grad_out_c.data_ptr<scalar_t>(), x_c.data_ptr<scalar_t>(), order_c.data_ptr<int64_t>(),
                     offsets_c.data_ptr<int64_t>(), grad_weight.data_ptr<scalar_t>(), kernel_shape(geo),
                     at::cuda::getCurrentCUDAStream()),
                 "grad-weight");
  });
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(hamfast, CUDA, m) {
  m.impl("grouped_conv2d", &grouped_conv2d_cuda);
  m.impl("grouped_conv2d_backward_input", &grouped_conv2d_backward_input_cuda);
  m.impl("grouped_conv2d_backward_weight", &grouped_conv2d_backward_weight_cuda);
}

}  // namespace hamfast
