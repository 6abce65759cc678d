// Grouped convolution on CUDA as implicit GEMM over the group-sorted batch (fp32/fp64 SIMT).
//
// Forward and grad-input are one GEMM per group: rows are (sample of the group, pixel), columns are
// channels, the reduction runs over (channel, kernel tap). Each block computes one 64 x 64 output
// tile that lies inside a single group's rows, so it reads one group's weights. Grad-weight reduces
// over a group's rows: each block sums one chunk of them and adds its partial tile atomically.
// All groups share ONE launch per pass; the tile-to-group map is derived in the kernel from the
// plan's offsets, so the host never needs the group sizes (no device-to-host sync).
#include "grouped_conv_kernels.cuh"

namespace hamfast {
namespace cuda {
namespace {

constexpr int kTileRows = 64;   // GEMM rows per block
constexpr int kTileCols = 64;   // GEMM columns per block
constexpr int kTileDepth = 16;  // reduction entries staged in shared memory per step
constexpr int kThreads = 256;   // a 16 x 16 grid of threads, each owning 4 x 4 results
constexpr int kThreadGrid = 16;
constexpr int kSub = 4;
constexpr int kTargetWeightGradBlocks = 2048;

// Where a block's rows lie: rows [first_row, first_row + tile) of group `group`, whose `rows` rows
// start at plan position `first_position` (row r is sample order[first_position + r / rows_per_sample]).
struct TileLocation {
  int group;
  int64_t first_row;
  int64_t rows;
  int64_t first_position;
};

// Group g owns ceil(rows_g / tile_rows) consecutive values of the linear block index. The grid is
// launched for an upper bound of the tile count, so blocks past the last group return false.
__device__ bool locate_tile(const int64_t* offsets, int groups, int64_t batch, int64_t rows_per_sample,
                            int64_t tile_rows, int64_t tile, TileLocation& loc) {
  for (int g = 0; g < groups; ++g) {
    // Clamping keeps a malformed plan from addressing memory outside the batch.
    const int64_t start = min(max(offsets[g], int64_t(0)), batch);
    const int64_t end = min(max(offsets[g + 1], start), batch);
    const int64_t rows = (end - start) * rows_per_sample;
    const int64_t tiles = (rows + tile_rows - 1) / tile_rows;
    if (tile < tiles) {
      loc = {g, tile * tile_rows, rows, start};
      return true;
    }
    tile -= tiles;
  }
  return false;
}

struct RowRef {
  int64_t sample;
  int pixel;
  bool valid;
};

__device__ RowRef row_ref(const TileLocation& loc, int64_t row, int64_t end_row, int64_t rows_per_sample,
                          const int64_t* order, int64_t batch) {
  if (row >= end_row) return {0, 0, false};
  const int64_t sample = order[loc.first_position + row / rows_per_sample];
  if (sample < 0 || sample >= batch) return {0, 0, false};
  return {sample, static_cast<int>(row % rows_per_sample), true};
}

// Forward: rows = (sample, output pixel), columns = output channels, reduction = (input channel, tap).
template <typename T>
struct ForwardProblem {
  const T* x;
  const T* weight;
  const T* bias;
  T* out;
  ConvShape s;

  __device__ int64_t rows_per_sample() const { return static_cast<int64_t>(s.out_height) * s.out_width; }
  __device__ int cols() const { return s.out_channels; }
  __device__ int depth() const { return s.in_channels * s.kernel_h * s.kernel_w; }

  // im2col: the input value under reduction entry k for output pixel `pixel`, zero in the padding.
  __device__ T a(int64_t sample, int pixel, int k) const {
    const int taps = s.kernel_h * s.kernel_w;
    const int ci = k / taps, tap = k - ci * taps;
    const int ih = (pixel / s.out_width) * s.stride - s.padding + tap / s.kernel_w;
    const int iw = (pixel % s.out_width) * s.stride - s.padding + tap % s.kernel_w;
    if (ih < 0 || ih >= s.height || iw < 0 || iw >= s.width) return T(0);
    return x[((sample * s.in_channels + ci) * s.height + ih) * s.width + iw];
  }
  __device__ T b(int g, int k, int col) const {
    return weight[(static_cast<int64_t>(g) * s.out_channels + col) * depth() + k];
  }
  __device__ void store(int g, int64_t sample, int pixel, int col, T acc) const {
    if (bias != nullptr) acc += bias[static_cast<int64_t>(g) * s.out_channels + col];
    out[(sample * s.out_channels + col) * rows_per_sample() + pixel] = acc;
  }
};

// Grad-input: rows = (sample, input pixel), columns = input channels, reduction = (output channel, tap).
template <typename T>
struct BackwardInputProblem {
  const T* grad_out;
  const T* weight;
  T* grad_x;
  ConvShape s;

  __device__ int64_t rows_per_sample() const { return static_cast<int64_t>(s.height) * s.width; }
  __device__ int cols() const { return s.in_channels; }
  __device__ int depth() const { return s.out_channels * s.kernel_h * s.kernel_w; }

  // grad_out at the output pixel that sees input pixel `pixel` through the tap of k; zero where none does.
  __device__ T a(int64_t sample, int pixel, int k) const {
    const int taps = s.kernel_h * s.kernel_w;
    const int co = k / taps, tap = k - co * taps;
    const int th = pixel / s.width + s.padding - tap / s.kernel_w;
    const int tw = pixel % s.width + s.padding - tap % s.kernel_w;
    if (th < 0 || tw < 0 || th % s.stride != 0 || tw % s.stride != 0) return T(0);
    const int oh = th / s.stride, ow = tw / s.stride;
    if (oh >= s.out_height || ow >= s.out_width) return T(0);
    return grad_out[((sample * s.out_channels + co) * s.out_height + oh) * s.out_width + ow];
  }
  __device__ T b(int g, int k, int col) const {
    const int taps = s.kernel_h * s.kernel_w;
    const int co = k / taps, tap = k - co * taps;
    return weight[((static_cast<int64_t>(g) * s.out_channels + co) * s.in_channels + col) * taps + tap];
  }
  __device__ void store(int, int64_t sample, int pixel, int col, T acc) const {
    grad_x[(sample * s.in_channels + col) * rows_per_sample() + pixel] = acc;
  }
};

template <typename T, typename Problem>
__global__ void __launch_bounds__(kThreads)
    grouped_implicit_gemm(Problem p, const int64_t* order, const int64_t* offsets, int groups, int64_t batch) {
  __shared__ T a_tile[kTileDepth][kTileRows];
  __shared__ T b_tile[kTileDepth][kTileCols + 1];  // +1: the column-major fill below would hit one bank

  const int64_t rows_per_sample = p.rows_per_sample();
  TileLocation loc;
  if (!locate_tile(offsets, groups, batch, rows_per_sample, kTileRows, blockIdx.x, loc)) return;
  const int64_t end_row = loc.first_row + kTileRows < loc.rows ? loc.first_row + kTileRows : loc.rows;
  const int col0 = blockIdx.y * kTileCols;
  const int cols = p.cols(), depth = p.depth();
  const int tid = threadIdx.x;
  const int tx = tid % kThreadGrid, ty = tid / kThreadGrid;  // results: rows tx + 16 i, columns ty + 16 j

  // Each thread stages one row of A (consecutive threads: consecutive pixels, coalesced reads).
  const int load_row = tid % kTileRows;
  const RowRef load_ref = row_ref(loc, loc.first_row + load_row, end_row, rows_per_sample, order, batch);

  T acc[kSub][kSub] = {};
  for (int k0 = 0; k0 < depth; k0 += kTileDepth) {
#pragma unroll
    for (int i = 0; i < kTileDepth * kTileRows / kThreads; ++i) {
      const int kk = tid / kTileRows + i * (kThreads / kTileRows);
      const int k = k0 + kk;
      a_tile[kk][load_row] = (load_ref.valid && k < depth) ? p.a(load_ref.sample, load_ref.pixel, k) : T(0);
    }
#pragma unroll
    for (int i = 0; i < kTileDepth * kTileCols / kThreads; ++i) {
      const int e = tid + i * kThreads;
      const int kk = e % kTileDepth, c = e / kTileDepth;
      const int k = k0 + kk, col = col0 + c;
      b_tile[kk][c] = (k < depth && col < cols) ? p.b(loc.group, k, col) : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileDepth; ++kk) {
      T av[kSub], bv[kSub];
#pragma unroll
      for (int i = 0; i < kSub; ++i) av[i] = a_tile[kk][tx + kThreadGrid * i];
#pragma unroll
      for (int j = 0; j < kSub; ++j) bv[j] = b_tile[kk][ty + kThreadGrid * j];
#pragma unroll
      for (int i = 0; i < kSub; ++i)
#pragma unroll
        for (int j = 0; j < kSub; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    const RowRef ref = row_ref(loc, loc.first_row + tx + kThreadGrid * i, end_row, rows_per_sample, order, batch);
    if (!ref.valid) continue;
#pragma unroll
    for (int j = 0; j < kSub; ++j) {
      const int col = col0 + ty + kThreadGrid * j;
      if (col < cols) p.store(loc.group, ref.sample, ref.pixel, col, acc[i][j]);
    }
  }
}

// Grad-weight: grad_weight[g][co][k] = sum over rows r of group g of grad_out(r, co) * im2col(x)(r, k).
// blockIdx.x: a chunk of a group's rows; blockIdx.y: a tile of k; blockIdx.z: a tile of co.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grouped_weight_grad(const T* grad_out, const T* x, const int64_t* order, const int64_t* offsets, T* grad_weight,
                        ConvShape s, int64_t chunk_rows) {
  __shared__ T go_tile[kTileDepth][kTileRows + 1];  // [row][out channel]
  __shared__ T x_tile[kTileDepth][kTileCols + 1];   // [row][reduction entry]

  const ForwardProblem<T> im2col{x, nullptr, nullptr, nullptr, s};
  const int64_t rows_per_sample = im2col.rows_per_sample();
  TileLocation loc;
  if (!locate_tile(offsets, s.groups, s.batch, rows_per_sample, chunk_rows, blockIdx.x, loc)) return;
  const int64_t end_row = loc.first_row + chunk_rows < loc.rows ? loc.first_row + chunk_rows : loc.rows;
  const int k0 = blockIdx.y * kTileCols;
  const int co0 = blockIdx.z * kTileRows;
  const int depth = im2col.depth();
  const int tid = threadIdx.x;
  const int tx = tid % kThreadGrid, ty = tid / kThreadGrid;  // results: k = tx + 16 j, co = ty + 16 i
  const int load_rr = tid % kTileDepth;  // consecutive threads: consecutive pixels, coalesced reads

  T acc[kSub][kSub] = {};
  for (int64_t r0 = loc.first_row; r0 < end_row; r0 += kTileDepth) {
    const RowRef ref = row_ref(loc, r0 + load_rr, end_row, rows_per_sample, order, s.batch);
#pragma unroll
    for (int i = 0; i < kTileDepth * kTileCols / kThreads; ++i) {
      const int c = (tid + i * kThreads) / kTileDepth;
      const int co = co0 + c, k = k0 + c;
      go_tile[load_rr][c] = (ref.valid && co < s.out_channels)
                                ? grad_out[(ref.sample * s.out_channels + co) * rows_per_sample + ref.pixel]
                                : T(0);
      x_tile[load_rr][c] = (ref.valid && k < depth) ? im2col.a(ref.sample, ref.pixel, k) : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kTileDepth; ++rr) {
      T av[kSub], bv[kSub];
#pragma unroll
      for (int i = 0; i < kSub; ++i) av[i] = go_tile[rr][ty + kThreadGrid * i];
#pragma unroll
      for (int j = 0; j < kSub; ++j) bv[j] = x_tile[rr][tx + kThreadGrid * j];
#pragma unroll
      for (int i = 0; i < kSub; ++i)
#pragma unroll
        for (int j = 0; j < kSub; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    const int co = co0 + ty + kThreadGrid * i;
    if (co >= s.out_channels) continue;
#pragma unroll
    for (int j = 0; j < kSub; ++j) {
      const int k = k0 + tx + kThreadGrid * j;
      if (k < depth) atomicAdd(&grad_weight[(static_cast<int64_t>(loc.group) * s.out_channels + co) * depth + k],
                               acc[i][j]);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, typename Problem>
cudaError_t launch_gemm(const Problem& p, int64_t rows_per_sample, int cols, const int64_t* order,
                        const int64_t* offsets, const ConvShape& s, cudaStream_t stream) {
  if (s.batch == 0 || rows_per_sample == 0) return cudaSuccess;
  // Upper bound of sum over groups of ceil(rows_g / tile): total / tile + one partial tile per group.
  const dim3 grid(static_cast<unsigned>(ceil_div(s.batch * rows_per_sample, kTileRows) + s.groups),
                  static_cast<unsigned>(ceil_div(cols, kTileCols)));
  grouped_implicit_gemm<T, Problem><<<grid, kThreads, 0, stream>>>(p, order, offsets, s.groups, s.batch);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t launch_grouped_conv_forward(const T* x, const T* weight, const T* bias, const int64_t* order,
                                        const int64_t* offsets, T* out, const ConvShape& s, cudaStream_t stream) {
  const ForwardProblem<T> p{x, weight, bias, out, s};
  return launch_gemm<T>(p, static_cast<int64_t>(s.out_height) * s.out_width, s.out_channels, order, offsets, s,
                        stream);
}

template <typename T>
cudaError_t launch_grouped_conv_backward_input(const T* grad_out, const T* weight, const int64_t* order,
                                               const int64_t* offsets, T* grad_x, const ConvShape& s,
                                               cudaStream_t stream) {
  const BackwardInputProblem<T> p{grad_out, weight, grad_x, s};
  return launch_gemm<T>(p, static_cast<int64_t>(s.height) * s.width, s.in_channels, order, offsets, s, stream);
}

template <typename T>
cudaError_t launch_grouped_conv_backward_weight(const T* grad_out, const T* x, const int64_t* order,
                                                const int64_t* offsets, T* grad_weight, const ConvShape& s,
                                                cudaStream_t stream) {
  const int64_t rows_per_sample = static_cast<int64_t>(s.out_height) * s.out_width;
  if (s.batch == 0 || rows_per_sample == 0) return cudaSuccess;
  const int64_t depth = static_cast<int64_t>(s.in_channels) * s.kernel_h * s.kernel_w;
  const int64_t k_tiles = ceil_div(depth, kTileCols), co_tiles = ceil_div(s.out_channels, kTileRows);
  if (k_tiles > 65535 || co_tiles > 65535) return cudaErrorInvalidConfiguration;
  // Chunks long enough to amortise the atomic adds, short enough to give the GPU enough blocks.
  const int64_t total_rows = s.batch * rows_per_sample;
  const int64_t chunks = ceil_div(kTargetWeightGradBlocks, k_tiles * co_tiles);
  const int64_t chunk_rows = ceil_div(ceil_div(total_rows, chunks), kTileDepth) * kTileDepth;
  const dim3 grid(static_cast<unsigned>(ceil_div(total_rows, chunk_rows) + s.groups), static_cast<unsigned>(k_tiles),
                  static_cast<unsigned>(co_tiles));
  grouped_weight_grad<T><<<grid, kThreads, 0, stream>>>(grad_out, x, order, offsets, grad_weight, s, chunk_rows);
  return cudaGetLastError();
}

#define HAMFAST_INSTANTIATE(T)                                                                                     \
  template cudaError_t launch_grouped_conv_forward<T>(const T*, const T*, const T*, const int64_t*, const int64_t*, \
                                                      T*, const ConvShape&, cudaStream_t);                          \
  template cudaError_t launch_grouped_conv_backward_input<T>(const T*, const T*, const int64_t*, const int64_t*,    \
                                                             T*, const ConvShape&, cudaStream_t);                   \
  template cudaError_t launch_grouped_conv_backward_weight<T>(const T*, const T*, const int64_t*, const int64_t*,   \
                                                              T*, const ConvShape&, cudaStream_t);

HAMFAST_INSTANTIATE(float)
HAMFAST_INSTANTIATE(double)

}  // namespace cuda
}  // namespace hamfast
