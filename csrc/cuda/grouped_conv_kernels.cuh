// Launchers of the grouped-convolution CUDA kernels. Plain CUDA, no torch headers, so this part
// compiles fast; csrc/cuda/grouped_conv_cuda.cpp checks arguments, allocates and calls these.
//
// Every launcher covers all groups in ONE kernel launch. The batch is addressed through the group
// plan: order[offsets[g] .. offsets[g+1]) are the sample indices of group g (device pointers).
// All tensors are contiguous NCHW; weight is [groups, out_channels, in_channels, kernel_h, kernel_w].
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace hamfast {
namespace cuda {

struct ConvShape {
  int64_t batch;
  int in_channels, height, width;
  int groups, out_channels, kernel_h, kernel_w;
  int stride, padding, out_height, out_width;
};

// out[b] = conv2d(x[b], weight[g(b)]) + bias[g(b)]; bias may be null.
template <typename T>
cudaError_t launch_grouped_conv_forward(const T* x, const T* weight, const T* bias, const int64_t* order,
                                        const int64_t* offsets, T* out, const ConvShape& shape, cudaStream_t stream);

// grad_x[b] = conv_transpose2d(grad_out[b], weight[g(b)]).
template <typename T>
cudaError_t launch_grouped_conv_backward_input(const T* grad_out, const T* weight, const int64_t* order,
                                               const int64_t* offsets, T* grad_x, const ConvShape& shape,
                                               cudaStream_t stream);

// grad_weight[g] += sum over the samples b of group g of grad_out[b] (x) im2col(x[b]).
// grad_weight must be zero-filled by the caller; groups without samples stay zero.
template <typename T>
cudaError_t launch_grouped_conv_backward_weight(const T* grad_out, const T* x, const int64_t* order,
                                                const int64_t* offsets, T* grad_weight, const ConvShape& shape,
                                                cudaStream_t stream);

}  // namespace cuda
}  // namespace hamfast
