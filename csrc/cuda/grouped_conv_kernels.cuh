// Launchers of the grouped-convolution CUDA kernels. Plain CUDA, no torch headers, so this part
// compiles fast; csrc/cuda/grouped_conv_cuda.cpp checks arguments, reorders layouts, allocates and
// calls these.
//
// Every launcher covers all groups in ONE kernel launch (grad-weight with split-K > 1: one GEMM
// launch plus one deterministic reduce; at split-K 1 the GEMM writes grad_weight itself). The batch is addressed through the group plan: order[offsets[g] ..
// offsets[g+1]) are the sample indices of group g (device pointers, never read on the host).
// Layouts the kernels read (the .cpp converts once per call, and not at all for tensors already in them):
//   activations (x, grad_out)  NHWC (channels_last), contiguous;
//   weight                     memory [G, Cout, kh, kw, Cin] (KRSC), one layout for forward and grad-input,
//                              the groups any aligned distance apart (HAM's rows of one [G, P'] output);
//   grad-weight result         memory [G, Cout, kh, kw, Cin] too (written by the GEMM's epilogue at
//                              split-K 1, by the reduce otherwise), so a weight generated in KRSC gets
//                              its gradient back in its own layout.
// Outputs of forward / grad-input are written through OutStrides, so NCHW or NHWC as the caller wants.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mma.cuh"

namespace hamfast {
namespace cuda {

struct ConvShape {
  int64_t batch;
  int in_channels, height, width;
  int groups, out_channels, kernel_h, kernel_w;
  int stride, padding, out_height, out_width;
};

// Element strides of a [batch, channels, pixels] output; pixel = row * width + column.
struct OutStrides {
  int64_t sample, channel, pixel;
};

enum class TileShape : int { k128x128 = 0, k128x64 = 1, k64x64 = 2 };

// What one pass runs. tensor_core: mma.sync (tf32 for float32, bf16/f16 for 16-bit; needs sm_80);
// otherwise exact SIMT FMA (float32, float64). split_k: grad-weight only, >= 1.
struct KernelChoice {
  bool tensor_core;
  TileShape tile;
  int split_k;
};

const char* tile_name(TileShape tile);  // "128x128", ...; defined in dispatch.cpp

// Bytes per global->shared copy (cp.async) of an operand whose contiguous dimension is `channels`
// elements of `elem_size` bytes: 16 when the channels fill 16-byte vectors, 8 for 16-bit types
// when they fill 8-byte vectors (bf16 / f16 with Cin = 4, layer 1), else one element per
// (synchronous) copy. A pass uses the smallest over its operands' channel counts; the launchers
// fall back to element-wise copies when a base pointer is not aligned to the width.
inline int operand_copy_bytes(int elem_size, int64_t channels) {
  if ((channels * elem_size) % 16 == 0) return 16;
  if (elem_size == 2 && (channels * elem_size) % 8 == 0) return 8;
  return elem_size;
}

// out[b] = conv2d(x[b], weight[g(b)]) + bias[g(b)]; bias ([G, Cout]) may be null. Group g's weights
// start at weight_krsc + g * weight_group_stride (>= Cout * kh * kw * Cin; that product when dense).
template <typename T>
cudaError_t launch_grouped_conv_forward(const T* x_nhwc, const T* weight_krsc, int64_t weight_group_stride,
                                        const T* bias, const int64_t* order, const int64_t* offsets, T* out,
                                        OutStrides out_strides, const ConvShape& shape, KernelChoice choice,
                                        cudaStream_t stream);

// grad_x[b] = conv_transpose2d(grad_out[b], weight[g(b)]); the weight as the forward reads it.
template <typename T>
cudaError_t launch_grouped_conv_backward_input(const T* grad_out_nhwc, const T* weight_krsc,
                                               int64_t weight_group_stride, const int64_t* order,
                                               const int64_t* offsets, T* grad_x, OutStrides grad_x_strides,
                                               const ConvShape& shape, KernelChoice choice, cudaStream_t stream);

// Bytes of the fp32 (fp64 for double) workspace of launch_grouped_conv_backward_weight:
// split_k * G * Cout * (Cin * kh * kw + with_bias) accumulators for split_k > 1; 0 for split_k 1
// (the GEMM then writes grad_weight and grad_bias directly and `workspace` may be null).
template <typename T>
size_t grouped_conv_backward_weight_workspace_bytes(const ConvShape& shape, KernelChoice choice, bool with_bias);

// grad_weight[g] = sum over the samples b of group g of grad_out[b] (x) im2col(x[b]), written in
// memory order [G, Cout, kh, kw, Cin]; every element is written (groups without samples get zeros).
// grad_bias: null, or [G, Cout] to receive the bias gradient from the same pass over grad_out
// (the sums of launch_grouped_conv_backward_bias in another fixed order: fp32 / fp64 slice sums,
// Kahan-compensated across slices, the lanes in a fixed tree, split-K partials summed in order,
// rounded once). Bitwise reproducible: no atomics.
template <typename T>
cudaError_t launch_grouped_conv_backward_weight(const T* grad_out_nhwc, const T* x_nhwc, const int64_t* order,
                                                const int64_t* offsets, T* grad_weight, T* grad_bias,
                                                void* workspace, const ConvShape& shape, KernelChoice choice,
                                                cudaStream_t stream);

// grad_bias[g, co] = sum over the samples b of group g and the pixels p of grad_out[b, co, p], in
// one launch. grad_out is read through `strides` ([B, Cout, pixels] element strides: NCHW or NHWC).
// Sums in fp32 (fp64 for double) in a fixed order, rounded once: bitwise reproducible, no atomics.
// Every element is written (groups without samples get zeros). Uses shape.batch, groups,
// out_channels, out_height, out_width.
template <typename T>
cudaError_t launch_grouped_conv_backward_bias(const T* grad_out, OutStrides strides, const int64_t* order,
                                              const int64_t* offsets, T* grad_bias, const ConvShape& shape,
                                              cudaStream_t stream);

}  // namespace cuda
}  // namespace hamfast
