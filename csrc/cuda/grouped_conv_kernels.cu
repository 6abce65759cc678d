// Grouped convolution on CUDA as grouped implicit GEMM: one kernel template, three passes.
//
// A GEMM C[M, N] = sum_k A[m, k] B[k, n] per group, tiles of BM x BN per block (CTA), 8 warps
// (2 x 4, warp tile BM/2 x BN/4), the reduction staged through shared memory BK at a time in a
// 3-stage cp.async pipeline. The passes differ only in their operand iterators (structs below):
//   forward      M = (sample, output pixel) of group g, N = Cout, K = (r, s, cin); B = W[g]
//   grad-input   M = (sample, input pixel) of group g,  N = Cin,  K = (r, s, cout); B = W[g]^T
//   grad-weight  M = Cout, N = (r, s, cin), K = (sample, output pixel) of group g; at split_k 1 the
//                epilogue writes grad_weight (memory [G, Cout, kh, kw, Cin], the weights' layout)
//                directly, else split_k slices write fp32 partial tiles that a second kernel sums
//                in fixed order. With a bias gradient asked for, the blocks of the first N tile
//                also sum the dy tiles they stage (A's rows per channel): grad_bias comes from the
//                same pass over dy, no separate read.
// All three passes use one weight layout, [G, Cout, kh, kw, Cin] (KRSC): forward and grad-input
// read the same tensor (forward contiguous along K, grad-input along N) and grad-weight writes it
// row by row, so weights generated in that layout never need a permute. The weights read may lie
// `weight_group_stride` elements apart per group (HAM's groups are rows of one [G, P'] output).
// Rows are gathered through `order`, so x, out and the gradients stay in the caller's batch
// order; forward / grad-input tiles never straddle two groups, so a block reads one group's
// weights. The tile -> group map is computed in the kernel from `offsets`: the host never needs
// the group sizes (no device-to-host sync; the launches are CUDA-graph capturable). The grid is
// sized by an upper bound (sum over g of ceil(rows_g / BM) <= ceil(B * P / BM) + G); blocks past
// the last tile exit.
//
// The math is a policy: mma.sync m16n8k8 TF32 (operands rounded with cvt.rna) for float32 when
// allowed, m16n8k16 bf16 / f16 with fp32 accumulation, or exact SIMT FMA (float32, float64) laid
// out like the mma accumulator fragments so that the epilogue is shared.
//
// What the kernels tolerate (issue 9: a malformed plan must never touch memory outside the tensors):
//  - offsets: group g covers plan positions [start_g, end_g) with start_g = clamp(offsets[g],
//    end_{g-1}, B), end_g = clamp(offsets[g+1], start_g, B), end_{-1} = 0. Decreasing, negative or
//    too large offsets thus shrink groups to disjoint ranges inside [0, B) (never more tiles than
//    the grid bound).
//  - order: an entry outside [0, B) makes its rows read as zero and write nothing.
//  - what is NOT defined for a malformed plan: outputs of samples the plan does not list exactly
//    once (never written, or written twice by racing blocks) and their gradients. Every address
//    stays inside x, weight, bias, out, grad tensors and the workspace regardless.
// The glue (grouped_conv_cuda.cpp) guarantees the sizes: B * pixels, Cin * kh * kw and
// Cout * kh * kw below 2^31, so 32-bit row and reduction indices cannot overflow.
#include "grouped_conv_kernels.cuh"

#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(HAMFAST_CUDA_EMULATION)
#define HAMFAST_DYNAMIC_SMEM(name) unsigned char* name = emu_dynamic_smem()
#else
#define HAMFAST_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace hamfast {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsM = 2, kWarpsN = 4;
constexpr int kStages = 3;

template <typename T>
using AccOf = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

__host__ __device__ inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Plan positions of group g after the clamping described at the top of the file.
struct GroupSpan {
  int64_t start, count;
};
__device__ inline GroupSpan group_span(const int64_t* offsets, int groups, int64_t batch, int g) {
  int64_t end = 0;
  GroupSpan span{0, 0};
  for (int i = 0; i <= g && i < groups; ++i) {
    const int64_t a = clamp64(offsets[i], end, batch);
    end = clamp64(offsets[i + 1], a, batch);
    span = {a, end - a};
  }
  return span;
}

// A shared-memory operand tile of kRows (M or N) x kBK (reduction), stored so that the global
// memory's contiguous dimension is contiguous here too (cp.async copies whole vectors). Rows are
// padded so that the fragment reads of a warp (8 rows x 4 reduction entries, or the transpose)
// fall in distinct banks; pads keep every row 16-byte aligned.
template <typename T, bool kKContig, int kRows, int kBK>
struct SmemTile {
  static constexpr int kLd = kKContig ? kBK + 16 / int(sizeof(T)) : kRows + 32 / int(sizeof(T));
  static constexpr int kSize = kKContig ? kRows * kLd : kBK * kLd;
  __host__ __device__ static constexpr bool contig_k() { return kKContig; }
  __device__ static int at(int mn, int k) { return kKContig ? mn * kLd + k : k * kLd + mn; }
};

// ---------------------------------------------------------------------------------------------
// Operand iterators. Each pass gives: Params, the operand layouts (kAKContig / kBKContig), the
// scratch it keeps in shared memory, setup() (find the block's tile; false: nothing to do),
// a_src / b_src (global address of the vector at tile coordinates, nullptr: zeros) and store().

// Per-row data of a forward / grad-input tile, computed once per block. in_base < 0: no row.
struct RowEntry {
  int64_t in_base, out_base;
  int y0, x0;
};

// Shared by forward and grad-input: rows are (sample of group g, pixel), tiles lie in one group.
struct RowTileCta {
  int group;
  int m0, n0;
  int k_begin, k_end;
  const RowEntry* rows;
};

// Finds the block's group and first row. Uniform over the block (every thread scans the same offsets).
__device__ inline bool locate_row_tile(const int64_t* offsets, int groups, int64_t batch, int64_t pixels, int bm,
                                       int64_t tile, int& group, int64_t& start, int64_t& first_row, int64_t& rows) {
  int64_t end = 0;
  for (int g = 0; g < groups; ++g) {
    const int64_t a = clamp64(offsets[g], end, batch);
    end = clamp64(offsets[g + 1], a, batch);
    const int64_t group_rows = (end - a) * pixels;
    const int64_t tiles = (group_rows + bm - 1) / bm;
    if (tile < tiles) {
      group = g;
      start = a;
      first_row = tile * bm;
      rows = group_rows;
      return true;
    }
    tile -= tiles;
  }
  return false;
}

template <typename T>
struct ForwardPass {
  struct Params {
    const T* x;       // NHWC
    const T* weight;  // [G, Cout, kh, kw, Cin], groups weight_group_stride elements apart
    const T* bias;    // [G, Cout] or null
    T* out;
    const int64_t* order;
    const int64_t* offsets;
    ConvShape s;
    OutStrides out_strides;
    int depth;  // kh * kw * Cin
    int64_t weight_group_stride;
    FastDivmod div_cin, div_kw, div_ow, div_pixels;
  };
  static constexpr bool kAKContig = true, kBKContig = true;
  using Scratch = RowEntry;
  __device__ static int n_size(const Params& p) { return p.s.out_channels; }

  template <int BM, int BN>
  __device__ static bool setup(const Params& p, RowTileCta& cta, RowEntry* table) {
    const int64_t pixels = int64_t(p.s.out_height) * p.s.out_width;
    int64_t start, first_row, rows;
    if (!locate_row_tile(p.offsets, p.s.groups, p.s.batch, pixels, BM, blockIdx.x, cta.group, start, first_row, rows))
      return false;
    cta.m0 = int(first_row);
    cta.n0 = blockIdx.y * BN;
    cta.k_begin = 0;
    cta.k_end = p.depth;
    for (int i = threadIdx.x; i < BM; i += kThreads) {
      RowEntry e{-1, -1, 0, 0};
      const int64_t row = first_row + i;
      if (row < rows) {
        uint32_t q, pix, oh, ow;
        p.div_pixels.divmod(uint32_t(row), q, pix);
        const int64_t sample = p.order[start + q];
        if (sample >= 0 && sample < p.s.batch) {
          p.div_ow.divmod(pix, oh, ow);
          e.in_base = sample * p.s.height * p.s.width * p.s.in_channels;
          e.out_base = sample * p.out_strides.sample + int64_t(pix) * p.out_strides.pixel;
          e.y0 = int(oh) * p.s.stride - p.s.padding;
          e.x0 = int(ow) * p.s.stride - p.s.padding;
        }
      }
      table[i] = e;
    }
    cta.rows = table;
    __syncthreads();
    return true;
  }
  // im2col(x): A[row, (r, s, c)] = x[sample, y0 + r, x0 + s, c], zero in the padding.
  __device__ static const T* a_src(const Params& p, const RowTileCta& cta, int m, int k) {
    const RowEntry& e = cta.rows[m];
    if (e.in_base < 0 || k >= p.depth) return nullptr;
    uint32_t rs, c, r, s;
    p.div_cin.divmod(uint32_t(k), rs, c);
    p.div_kw.divmod(rs, r, s);
    const int y = e.y0 + int(r), x = e.x0 + int(s);
    if (y < 0 || y >= p.s.height || x < 0 || x >= p.s.width) return nullptr;
    return p.x + e.in_base + (int64_t(y) * p.s.width + x) * p.s.in_channels + c;
  }
  __device__ static const T* b_src(const Params& p, const RowTileCta& cta, int n, int k) {
    const int co = cta.n0 + n;
    if (co >= p.s.out_channels || k >= p.depth) return nullptr;
    return p.weight + cta.group * p.weight_group_stride + int64_t(co) * p.depth + k;
  }
  template <typename Acc>
  __device__ static void store(const Params& p, const RowTileCta& cta, int m, int n, Acc acc) {
    const RowEntry& e = cta.rows[m];
    const int co = cta.n0 + n;
    if (e.out_base < 0 || co >= p.s.out_channels) return;
    if (p.bias != nullptr) acc += Acc(to_float(p.bias[int64_t(cta.group) * p.s.out_channels + co]));
    p.out[e.out_base + co * p.out_strides.channel] = from_acc<T>(acc);
  }
  __device__ static const T* a_base(const Params& p) { return p.x; }
  __device__ static const T* b_base(const Params& p) { return p.weight; }
};

template <typename T>
struct GradInputPass {
  struct Params {
    const T* grad_out;  // NHWC
    const T* weight;    // [G, Cout, kh, kw, Cin] as the forward reads it, groups weight_group_stride apart
    T* grad_x;
    const int64_t* order;
    const int64_t* offsets;
    ConvShape s;
    OutStrides out_strides;
    int depth;  // kh * kw * Cout
    int64_t weight_group_stride;
    FastDivmod div_cout, div_kw, div_w, div_pixels;
  };
  static constexpr bool kAKContig = true, kBKContig = false;
  using Scratch = RowEntry;
  __device__ static int n_size(const Params& p) { return p.s.in_channels; }

  template <int BM, int BN>
  __device__ static bool setup(const Params& p, RowTileCta& cta, RowEntry* table) {
    const int64_t pixels = int64_t(p.s.height) * p.s.width;
    int64_t start, first_row, rows;
    if (!locate_row_tile(p.offsets, p.s.groups, p.s.batch, pixels, BM, blockIdx.x, cta.group, start, first_row, rows))
      return false;
    cta.m0 = int(first_row);
    cta.n0 = blockIdx.y * BN;
    cta.k_begin = 0;
    cta.k_end = p.depth;
    for (int i = threadIdx.x; i < BM; i += kThreads) {
      RowEntry e{-1, -1, 0, 0};
      const int64_t row = first_row + i;
      if (row < rows) {
        uint32_t q, pix, ih, iw;
        p.div_pixels.divmod(uint32_t(row), q, pix);
        const int64_t sample = p.order[start + q];
        if (sample >= 0 && sample < p.s.batch) {
          p.div_w.divmod(pix, ih, iw);
          e.in_base = sample * p.s.out_height * p.s.out_width * p.s.out_channels;
          e.out_base = sample * p.out_strides.sample + int64_t(pix) * p.out_strides.pixel;
          e.y0 = int(ih) + p.s.padding;
          e.x0 = int(iw) + p.s.padding;
        }
      }
      table[i] = e;
    }
    cta.rows = table;
    __syncthreads();
    return true;
  }
  // A[row, (r, s, co)] = grad_out[sample, oh, ow, co] where oh * stride + r = ih + padding.
  __device__ static const T* a_src(const Params& p, const RowTileCta& cta, int m, int k) {
    const RowEntry& e = cta.rows[m];
    if (e.in_base < 0 || k >= p.depth) return nullptr;
    uint32_t rs, co, r, s;
    p.div_cout.divmod(uint32_t(k), rs, co);
    p.div_kw.divmod(rs, r, s);
    const int th = e.y0 - int(r), tw = e.x0 - int(s);
    if (th < 0 || tw < 0) return nullptr;
    const int oh = th / p.s.stride, ow = tw / p.s.stride;
    if (oh * p.s.stride != th || ow * p.s.stride != tw || oh >= p.s.out_height || ow >= p.s.out_width) return nullptr;
    return p.grad_out + e.in_base + (int64_t(oh) * p.s.out_width + ow) * p.s.out_channels + co;
  }
  // B[(r, s, co), ci] = W[g, co, r, s, ci]: the forward's weight, contiguous along N (ci).
  __device__ static const T* b_src(const Params& p, const RowTileCta& cta, int n, int k) {
    const int ci = cta.n0 + n;
    if (ci >= p.s.in_channels || k >= p.depth) return nullptr;
    uint32_t rs, co;
    p.div_cout.divmod(uint32_t(k), rs, co);
    const int taps = p.s.kernel_h * p.s.kernel_w;
    return p.weight + cta.group * p.weight_group_stride + (int64_t(co) * taps + rs) * p.s.in_channels + ci;
  }
  template <typename Acc>
  __device__ static void store(const Params& p, const RowTileCta& cta, int m, int n, Acc acc) {
    const RowEntry& e = cta.rows[m];
    const int ci = cta.n0 + n;
    if (e.out_base < 0 || ci >= p.s.in_channels) return;
    p.grad_x[e.out_base + ci * p.out_strides.channel] = from_acc<T>(acc);
  }
  __device__ static const T* a_base(const Params& p) { return p.grad_out; }
  __device__ static const T* b_base(const Params& p) { return p.weight; }
};

// Grad-weight: a 1-D grid, blockIdx.x = ((group * split_k + split) * m_tiles + Cout tile) * n_tiles
// + (r, s, c) tile. The (r, s, c) tiles of one Cout tile are neighbours in launch order, so the
// blocks writing the same rows of grad_weight (whose (c, r, s) order interleaves the taps) run
// together and their partial 32-byte sectors meet in L2.
template <typename T>
struct GradWeightPass {
  struct Params {
    const T* grad_out;  // NHWC
    const T* x;         // NHWC
    AccOf<T>* workspace;  // [split_k, G, Cout, kh * kw * Cin]; null at split_k 1
    T* grad_weight;       // memory [G, Cout, kh, kw, Cin]: written here at split_k 1
    T* grad_bias;         // [G, Cout] or null (no bias gradient): written here at split_k 1
    AccOf<T>* bias_workspace;  // [split_k, G, Cout] after `workspace`; null at split_k 1 or without bias
    const int64_t* order;
    const int64_t* offsets;
    ConvShape s;
    int split_k;
    int depth;  // kh * kw * Cin
    int m_tiles, n_tiles;
    FastDivmod div_cin, div_kw, div_ow, div_pixels;
  };
  struct Cta {
    int group, split;
    int m0, n0;
    int k_begin, k_end;  // rows of the group (sample-major, then output pixel) this block reduces
    int64_t start;       // plan position of the group's first sample
  };
  static constexpr bool kAKContig = false, kBKContig = false;
  using Scratch = char;  // none

  template <int BM, int BN>
  __device__ static bool setup(const Params& p, Cta& cta, char*) {
    int64_t linear = blockIdx.x;
    cta.n0 = int(linear % p.n_tiles) * BN;
    linear /= p.n_tiles;
    cta.m0 = int(linear % p.m_tiles) * BM;
    linear /= p.m_tiles;
    cta.group = int(linear / p.split_k);
    cta.split = int(linear - int64_t(cta.group) * p.split_k);
    const GroupSpan span = group_span(p.offsets, p.s.groups, p.s.batch, cta.group);
    const int64_t rows = span.count * p.s.out_height * p.s.out_width;
    // Slices are whole multiples of the BK step so that only the group's last slice has a tail.
    constexpr int kBK = sizeof(T) == 2 ? 32 : 16;
    const int64_t chunk = ceil_div_dev(ceil_div_dev(rows, p.split_k), kBK) * kBK;
    cta.k_begin = int(clamp64(int64_t(cta.split) * chunk, 0, rows));
    cta.k_end = int(clamp64(int64_t(cta.k_begin) + chunk, 0, rows));
    cta.start = span.start;
    return true;
  }
  __device__ static int64_t ceil_div_dev(int64_t a, int64_t b) { return (a + b - 1) / b; }

  // The sample of reduction row `row` of the block's group, or -1.
  __device__ static int64_t sample_of(const Params& p, const Cta& cta, int row, uint32_t& pix) {
    uint32_t q;
    p.div_pixels.divmod(uint32_t(row), q, pix);
    const int64_t sample = p.order[cta.start + q];
    return (sample >= 0 && sample < p.s.batch) ? sample : -1;
  }
  // A[co, row] = grad_out[sample, pixel, co] (contiguous along co).
  __device__ static const T* a_src(const Params& p, const Cta& cta, int m, int k) {
    const int co = cta.m0 + m, row = cta.k_begin + k;
    if (co >= p.s.out_channels || row >= cta.k_end) return nullptr;
    uint32_t pix;
    const int64_t sample = sample_of(p, cta, row, pix);
    if (sample < 0) return nullptr;
    return p.grad_out + (sample * p.s.out_height * p.s.out_width + pix) * p.s.out_channels + co;
  }
  // B[row, (r, s, c)] = x[sample, oh * stride - padding + r, ow * stride - padding + s, c].
  __device__ static const T* b_src(const Params& p, const Cta& cta, int n, int k) {
    const int col = cta.n0 + n, row = cta.k_begin + k;
    if (col >= p.depth || row >= cta.k_end) return nullptr;
    uint32_t pix;
    const int64_t sample = sample_of(p, cta, row, pix);
    if (sample < 0) return nullptr;
    uint32_t rs, c, r, s, oh, ow;
    p.div_cin.divmod(uint32_t(col), rs, c);
    p.div_kw.divmod(rs, r, s);
    p.div_ow.divmod(pix, oh, ow);
    const int y = int(oh) * p.s.stride - p.s.padding + int(r), x = int(ow) * p.s.stride - p.s.padding + int(s);
    if (y < 0 || y >= p.s.height || x < 0 || x >= p.s.width) return nullptr;
    return p.x + ((sample * p.s.height + y) * p.s.width + x) * p.s.in_channels + c;
  }
  // Every block writes its whole tile, zeros included (groups without samples too), so no memset
  // is needed. Split 1: the result, rounded once, at its GEMM position (the weights' KRSC layout:
  // a tile's columns are contiguous); else the fp32 partial.
  template <typename Acc>
  __device__ static void store(const Params& p, const Cta& cta, int m, int n, Acc acc) {
    const int co = cta.m0 + m, col = cta.n0 + n;
    if (co >= p.s.out_channels || col >= p.depth) return;
    const int64_t gco = int64_t(cta.group) * p.s.out_channels + co;
    if (p.split_k == 1) {
      p.grad_weight[gco * p.depth + col] = from_acc<T>(acc);
      return;
    }
    p.workspace[(int64_t(cta.split) * p.s.groups * p.s.out_channels + gco) * p.depth + col] = acc;
  }
  __device__ static const T* a_base(const Params& p) { return p.grad_out; }
  __device__ static const T* b_base(const Params& p) { return p.x; }

  // The fused bias gradient: the blocks of the first (r, s, c) tile sum their A tiles (dy, one row
  // per output channel, zeros past the slice's rows) over the reduction, so each (group, Cout
  // tile, split) sums once. Split 1: grad_bias, rounded once; else its fp32 partial.
  __device__ static bool sums_a(const Params& p, const Cta& cta) { return p.grad_bias != nullptr && cta.n0 == 0; }
  template <typename Acc>
  __device__ static void store_a_sum(const Params& p, const Cta& cta, int m, Acc sum) {
    const int co = cta.m0 + m;
    if (co >= p.s.out_channels) return;
    const int64_t gco = int64_t(cta.group) * p.s.out_channels + co;
    if (p.split_k == 1) {
      p.grad_bias[gco] = from_acc<T>(sum);
      return;
    }
    p.bias_workspace[int64_t(cta.split) * p.s.groups * p.s.out_channels + gco] = sum;
  }
};

template <typename Pass>
struct CtaOf {
  using type = RowTileCta;
};
template <typename T>
struct CtaOf<GradWeightPass<T>> {
  using type = typename GradWeightPass<T>::Cta;
};

// Whether a pass may sum its A tiles per row (sums_a / store_a_sum): grad-weight's fused bias.
template <typename Pass>
struct SumsA {
  static constexpr bool value = false;
};
template <typename T>
struct SumsA<GradWeightPass<T>> {
  static constexpr bool value = true;
};

// A running sum with Kahan compensation: the fused bias gradient adds one slice sum per BK rows,
// up to B * pixels / BK of them, so plain fp32 accumulation would lose digits that the separate
// bias kernel's tree keeps. The order is fixed, so the result is bitwise reproducible.
template <typename Acc>
struct CompensatedSum {
  Acc sum = Acc(0), carry = Acc(0);
  __device__ void add(Acc v) {
    const Acc y = v - carry;
    const Acc t = sum + y;
    carry = (t - sum) - y;
    sum = t;
  }
};

// This thread's share of one staged A tile's row sums: row (channel) m = tid % BM, the reduction
// entries lane, lane + lanes, ... (lane = tid / BM); neighbouring threads read neighbouring rows
// (the A tile is contiguous along M), so the reads are conflict-free.
template <typename T, typename TA, int BM, int kBK>
__device__ inline AccOf<T> a_slice_sum(const T* sa) {
  constexpr int kLanes = kThreads / BM;
  const int m = int(threadIdx.x) % BM, lane = int(threadIdx.x) / BM;
  AccOf<T> s = 0;
#pragma unroll
  for (int k = lane; k < kBK; k += kLanes) s += AccOf<T>(to_float(sa[TA::at(m, k)]));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Warp-level math on one shared-memory stage. acc[mt][nt][i] is the element (row g + 8 * (i / 2),
// column 2 * t + i % 2) of the warp's 16 x 8 tile (mt, nt), g = lane / 4, t = lane % 4: the
// accumulator fragment of mma.m16n8k*, which the SIMT policy adopts too.

template <typename T, typename Tile>
__device__ inline uint32_t load_pair(const T* s, int mn, int k) {  // elements k, k + 1 -> low, high half
  if constexpr (Tile::contig_k()) {  // adjacent in shared memory, 4-byte aligned (k even, rows even)
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint32_t*>(s + Tile::at(mn, k));
#else
    uint32_t v;
    std::memcpy(&v, s + Tile::at(mn, k), 4);
    return v;
#endif
  } else {
    return uint32_t(s[Tile::at(mn, k)].bits) | (uint32_t(s[Tile::at(mn, k + 1)].bits) << 16);
  }
}

template <typename T, bool kTensorCore, typename TA, typename TB, int MT, int NT, int kBK>
__device__ inline void warp_tile_step(AccOf<T> (&acc)[MT][NT][4], const T* sa, const T* sb, int wm0, int wn0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  if constexpr (kTensorCore && std::is_same<T, float>::value) {
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r = wm0 + mt * 16 + g;
        a[mt][0] = to_tf32(sa[TA::at(r, kk + t)]);
        a[mt][1] = to_tf32(sa[TA::at(r + 8, kk + t)]);
        a[mt][2] = to_tf32(sa[TA::at(r, kk + t + 4)]);
        a[mt][3] = to_tf32(sa[TA::at(r + 8, kk + t + 4)]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int c = wn0 + nt * 8 + g;
        b[nt][0] = to_tf32(sb[TB::at(c, kk + t)]);
        b[nt][1] = to_tf32(sb[TB::at(c, kk + t + 4)]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_tf32_m16n8k8(acc[mt][nt], a[mt], b[nt]);
    }
  } else if constexpr (kTensorCore) {  // bf16 / f16
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r = wm0 + mt * 16 + g;
#pragma unroll
        for (int i = 0; i < 4; ++i) a[mt][i] = load_pair<T, TA>(sa, r + 8 * (i & 1), kk + 2 * t + 8 * (i >> 1));
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int c = wn0 + nt * 8 + g;
#pragma unroll
        for (int j = 0; j < 2; ++j) b[nt][j] = load_pair<T, TB>(sb, c, kk + 2 * t + 8 * j);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_16bit_m16n8k16<std::is_same<T, bf16_t>::value>(acc[mt][nt], a[mt], b[nt]);
    }
  } else {  // exact SIMT: each thread owns the accumulator-fragment elements, outer products per k
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      T av[MT][2], bv[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        av[mt][0] = sa[TA::at(wm0 + mt * 16 + g, k)];
        av[mt][1] = sa[TA::at(wm0 + mt * 16 + g + 8, k)];
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        bv[nt][0] = sb[TB::at(wn0 + nt * 8 + 2 * t, k)];
        bv[nt][1] = sb[TB::at(wn0 + nt * 8 + 2 * t + 1, k)];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[mt][nt][i] += av[mt][i >> 1] * bv[nt][i & 1];
    }
  }
}

template <typename T, int BM, int BN>
struct TileConfig {
  static constexpr int kBK = sizeof(T) == 2 ? 32 : 16;
  static constexpr int kWarpM = BM / kWarpsM, kWarpN = BN / kWarpsN;
  static constexpr int kMT = kWarpM / 16, kNT = kWarpN / 8;
  static_assert(kMT >= 1 && kNT >= 1 && kWarpM % 16 == 0 && kWarpN % 8 == 0, "warp tile must hold whole mma tiles");
};

template <typename Pass, typename T, int BM, int BN>
constexpr size_t stage_elems() {
  using C = TileConfig<T, BM, BN>;
  return size_t(SmemTile<T, Pass::kAKContig, BM, C::kBK>::kSize + SmemTile<T, Pass::kBKContig, BN, C::kBK>::kSize);
}
template <typename Pass, typename T, int BM, int BN>
constexpr size_t smem_bytes() {
  return kStages * stage_elems<Pass, T, BM, BN>() * sizeof(T) + BM * sizeof(typename Pass::Scratch);
}

// Copies one operand's BK slice of the tile into shared memory, kVec elements per copy along the
// contiguous dimension (a copy never straddles a zero/valid boundary: the glue picks kVec dividing
// the channel counts).
template <typename T, bool kKContig, int kRows, int kBK, int kVec, typename Src>
__device__ inline void load_operand(T* s, const T* fallback, Src src) {
  using Tile = SmemTile<T, kKContig, kRows, kBK>;
  constexpr int kVecs = kRows * kBK / kVec;
  constexpr int kPerRow = (kKContig ? kBK : kRows) / kVec;
#pragma unroll
  for (int i = 0; i < (kVecs + kThreads - 1) / kThreads; ++i) {
    const int v = threadIdx.x + i * kThreads;
    if (kVecs % kThreads == 0 || v < kVecs) {
      const int major = v / kPerRow, minor = (v % kPerRow) * kVec;
      const int mn = kKContig ? major : minor, k = kKContig ? minor : major;
      const T* p = src(mn, k);
      copy_to_shared<kVec * int(sizeof(T))>(s + Tile::at(mn, k), p != nullptr ? p : fallback, p != nullptr);
    }
  }
}

template <typename Pass, typename T, bool kTensorCore, int BM, int BN, int kVec>
__global__ void __launch_bounds__(kThreads) grouped_conv_gemm(const typename Pass::Params p) {
  using C = TileConfig<T, BM, BN>;
  using Acc = AccOf<T>;
  constexpr int kBK = C::kBK;
  using TA = SmemTile<T, Pass::kAKContig, BM, kBK>;
  using TB = SmemTile<T, Pass::kBKContig, BN, kBK>;
  constexpr int kStageElems = TA::kSize + TB::kSize;

  HAMFAST_DYNAMIC_SMEM(smem);
  T* stages = reinterpret_cast<T*>(smem);
  auto* scratch = reinterpret_cast<typename Pass::Scratch*>(smem + kStages * kStageElems * sizeof(T));

  typename CtaOf<Pass>::type cta;
  if (!Pass::template setup<BM, BN>(p, cta, scratch)) return;  // uniform over the block

  const int k_tiles = (cta.k_end - cta.k_begin + kBK - 1) / kBK;
  auto load_stage = [&](int stage, int kt) {
    T* sa = stages + stage * kStageElems;
    const int k0 = kt * kBK;
    load_operand<T, Pass::kAKContig, BM, kBK, kVec>(sa, Pass::a_base(p),
                                                   [&](int m, int k) { return Pass::a_src(p, cta, m, k0 + k); });
    load_operand<T, Pass::kBKContig, BN, kBK, kVec>(sa + TA::kSize, Pass::b_base(p),
                                                   [&](int n, int k) { return Pass::b_src(p, cta, n, k0 + k); });
  };

  const int warp = threadIdx.x / 32;
  const int wm0 = (warp / kWarpsN) * C::kWarpM, wn0 = (warp % kWarpsN) * C::kWarpN;
  static_assert(!SumsA<Pass>::value || (kThreads % BM == 0 && !Pass::kAKContig), "row sums need BM | threads");
  bool sums_a = false;  // uniform over the block
  if constexpr (SumsA<Pass>::value) sums_a = Pass::sums_a(p, cta);
  CompensatedSum<Acc> a_sum;
  Acc acc[C::kMT][C::kNT][4];
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = Acc(0);

  // Pipeline: kStages - 1 slices in flight while one is multiplied. One commit per iteration
  // (possibly empty) keeps wait_group's count aligned with the slice index.
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < k_tiles) load_stage(st, st);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // slice kt is visible to all; every warp is done with slice kt - 1's stage
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_stage(next % kStages, next);
    cp_async_commit();
    const T* sa = stages + (kt % kStages) * kStageElems;
    if constexpr (SumsA<Pass>::value) {
      if (sums_a) a_sum.add(a_slice_sum<T, TA, BM, kBK>(sa));
    }
    warp_tile_step<T, kTensorCore, TA, TB, C::kMT, C::kNT, kBK>(acc, sa, sa + TA::kSize, wm0, wn0);
  }
  cp_async_wait<0>();

  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        Pass::store(p, cta, wm0 + mt * 16 + g + 8 * (i >> 1), wn0 + nt * 8 + 2 * t + (i & 1), acc[mt][nt][i]);
      }
  if constexpr (SumsA<Pass>::value) {
    if (sums_a) {
      // The lanes of each row meet in a fixed tree in the (now idle) stage memory.
      constexpr int kLanes = kThreads / BM;
      Acc* partial = reinterpret_cast<Acc*>(smem);
      __syncthreads();  // every warp is done with the last stage
      partial[threadIdx.x] = a_sum.sum;
      __syncthreads();
#pragma unroll
      for (int half = kLanes / 2; half >= 1; half /= 2) {
        if (int(threadIdx.x) / BM < half) partial[threadIdx.x] += partial[threadIdx.x + half * BM];
        __syncthreads();
      }
      if (int(threadIdx.x) < BM) Pass::store_a_sum(p, cta, int(threadIdx.x), partial[threadIdx.x]);
    }
  }
}

// grad_weight[g, co, r, s, c] = sum over splits, in order, of workspace[split, g, co, (r, s, c)]:
// the same layout, so every read and write is coalesced. Likewise grad_bias[g, co] from
// bias_workspace[split, g, co] when bias_per_split > 0 (the fused bias gradient), in the same launch.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_weight_grad(const AccOf<T>* workspace, T* grad_weight, int splits, int64_t per_split,
                       const AccOf<T>* bias_workspace, T* grad_bias, int64_t bias_per_split) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x; idx < per_split + bias_per_split; idx += stride) {
    const bool weight = idx < per_split;
    const AccOf<T>* src = weight ? workspace + idx : bias_workspace + (idx - per_split);
    const int64_t step = weight ? per_split : bias_per_split;
    AccOf<T> sum = 0;
    for (int s = 0; s < splits; ++s) sum += src[s * step];
    (weight ? grad_weight[idx] : grad_bias[idx - per_split]) = from_acc<T>(sum);
  }
}

// grad_bias[g, co]: block = (group, tile of kChannels channels), linear blockIdx.x = g * tiles + tile.
// Thread = (channel tid % kChannels, lane tid / kChannels); a lane sums the elements j = lane,
// lane + lanes, ... of the group's (sample, pixel) sequence, then the lanes meet in a fixed tree:
// the same order on every run. kChannels = 1 for NCHW (a warp reads 32 consecutive pixels), 32 for
// NHWC (32 consecutive channels).
template <typename T, int kChannels>
__global__ void __launch_bounds__(kThreads)
    grouped_bias_grad(const T* grad_out, OutStrides st, const int64_t* order, const int64_t* offsets, ConvShape s,
                      FastDivmod div_pixels, int tiles, T* grad_bias) {
  constexpr int kLanes = kThreads / kChannels;
  __shared__ AccOf<T> partial[kThreads];
  const int g = int(blockIdx.x / tiles), co = int(blockIdx.x % tiles) * kChannels + int(threadIdx.x) % kChannels;
  const int lane = int(threadIdx.x) / kChannels;
  const GroupSpan span = group_span(offsets, s.groups, s.batch, g);
  const int64_t pixels = int64_t(s.out_height) * s.out_width;
  AccOf<T> sum = 0;
  if (co < s.out_channels) {
    const int64_t n = span.count * pixels;  // < 2^31 (the glue's bound on B * pixels)
    for (int64_t j = lane; j < n; j += kLanes) {
      uint32_t q, pix;
      div_pixels.divmod(uint32_t(j), q, pix);
      const int64_t sample = order[span.start + q];
      if (sample < 0 || sample >= s.batch) continue;
      sum += AccOf<T>(to_float(grad_out[sample * st.sample + int64_t(co) * st.channel + int64_t(pix) * st.pixel]));
    }
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int half = kLanes / 2; half >= 1; half /= 2) {
    if (lane < half) partial[threadIdx.x] += partial[threadIdx.x + half * kChannels];
    __syncthreads();
  }
  if (lane == 0 && co < s.out_channels) grad_bias[int64_t(g) * s.out_channels + co] = from_acc<T>(partial[threadIdx.x]);
}

// ---------------------------------------------------------------------------------------------
// Host side: pick the instantiation, size the grid, launch.

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % uint32_t(bytes) == 0; }

// The copy width of a pass: operand_copy_bytes over its channel counts, element-wise when a base
// pointer, or the distance between two groups' weights (b_group_stride elements), is not aligned to it.
template <typename T>
int pass_copy_bytes(int64_t channels_a, int64_t channels_b, const void* a, const void* b, int64_t b_group_stride = 0) {
  const int bytes = std::min(operand_copy_bytes(int(sizeof(T)), channels_a), operand_copy_bytes(int(sizeof(T)), channels_b));
  const bool stride_ok = (b_group_stride * int64_t(sizeof(T))) % bytes == 0;
  return aligned(a, bytes) && aligned(b, bytes) && stride_ok ? bytes : int(sizeof(T));
}

template <typename Pass, typename T, bool kTensorCore, int BM, int BN, int kVec>
cudaError_t launch_one(const typename Pass::Params& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t bytes = smem_bytes<Pass, T, BM, BN>();
  auto kernel = grouped_conv_gemm<Pass, T, kTensorCore, BM, BN, kVec>;
  if (bytes > 48 * 1024) {
    const cudaError_t st = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (st != cudaSuccess) return st;
  }
  grouped_conv_gemm<Pass, T, kTensorCore, BM, BN, kVec><<<grid, kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

// Instantiations: tensor cores for float / bf16 / f16 in three tile shapes; exact SIMT for float
// and double in 64x64. Each with 16-byte copies or single elements; 16-bit types also with 8-byte
// copies (channels = 4: layer 1 of CBRTiny).
template <typename Pass, typename T, int BM, int BN>
cudaError_t launch_vec(const typename Pass::Params& p, bool tensor_core, int copy_bytes, dim3 grid,
                       cudaStream_t stream) {
  constexpr int kWide = 16 / int(sizeof(T));
  if constexpr (!std::is_same<T, double>::value) {
    if (tensor_core) {
      if (copy_bytes == 16) return launch_one<Pass, T, true, BM, BN, kWide>(p, grid, stream);
      if constexpr (sizeof(T) == 2) {
        if (copy_bytes == 8) return launch_one<Pass, T, true, BM, BN, 4>(p, grid, stream);
      }
      return launch_one<Pass, T, true, BM, BN, 1>(p, grid, stream);
    }
  }
  if constexpr (sizeof(T) == 2) {
    return cudaErrorInvalidValue;  // 16-bit inputs have no SIMT path
  } else {
    if (BM != 64 || BN != 64) return cudaErrorInvalidValue;
    if (copy_bytes == 16) return launch_one<Pass, T, false, 64, 64, kWide>(p, grid, stream);
    return launch_one<Pass, T, false, 64, 64, 1>(p, grid, stream);
  }
}

template <typename Pass, typename T>
cudaError_t launch_tiles(const typename Pass::Params& p, KernelChoice c, int copy_bytes, int64_t grid_m_rows, int n,
                         cudaStream_t stream) {
  if (!c.tensor_core || std::is_same<T, double>::value) c.tile = TileShape::k64x64;
  int bm = 64, bn = 64;
  if (c.tile == TileShape::k128x128) bm = bn = 128;
  if (c.tile == TileShape::k128x64) bm = 128;
  const int64_t gx = ceil_div(grid_m_rows, bm) + p.s.groups, gy = ceil_div(n, bn);
  if (gx > 0x7fffffff || gy > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  switch (c.tile) {
    case TileShape::k128x128: return launch_vec<Pass, T, 128, 128>(p, c.tensor_core, copy_bytes, grid, stream);
    case TileShape::k128x64: return launch_vec<Pass, T, 128, 64>(p, c.tensor_core, copy_bytes, grid, stream);
    default: return launch_vec<Pass, T, 64, 64>(p, c.tensor_core, copy_bytes, grid, stream);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_grouped_conv_forward(const T* x, const T* weight, int64_t weight_group_stride, const T* bias,
                                        const int64_t* order,
                                        const int64_t* offsets, T* out, OutStrides out_strides, const ConvShape& s,
                                        KernelChoice choice, cudaStream_t stream) {
  const int64_t pixels = int64_t(s.out_height) * s.out_width;
  // Nothing to write (a zero-sized grid would be a launch error). Cin = 0 still runs: out = bias.
  if (s.batch == 0 || pixels == 0 || s.out_channels == 0) return cudaSuccess;
  typename ForwardPass<T>::Params p{x,
                                    weight,
                                    bias,
                                    out,
                                    order,
                                    offsets,
                                    s,
                                    out_strides,
                                    s.kernel_h * s.kernel_w * s.in_channels,
                                    weight_group_stride,
                                    FastDivmod(s.in_channels),
                                    FastDivmod(s.kernel_w),
                                    FastDivmod(s.out_width),
                                    FastDivmod(uint32_t(pixels))};
  const int bytes = pass_copy_bytes<T>(s.in_channels, s.in_channels, x, weight, weight_group_stride);
  return launch_tiles<ForwardPass<T>, T>(p, choice, bytes, s.batch * pixels, s.out_channels, stream);
}

template <typename T>
cudaError_t launch_grouped_conv_backward_input(const T* grad_out, const T* weight, int64_t weight_group_stride,
                                               const int64_t* order,
                                               const int64_t* offsets, T* grad_x, OutStrides strides,
                                               const ConvShape& s, KernelChoice choice, cudaStream_t stream) {
  const int64_t pixels = int64_t(s.height) * s.width;
  // Nothing to write. Cout = 0 still runs: an empty reduction, grad_x = 0.
  if (s.batch == 0 || pixels == 0 || s.in_channels == 0) return cudaSuccess;
  typename GradInputPass<T>::Params p{grad_out,
                                      weight,
                                      grad_x,
                                      order,
                                      offsets,
                                      s,
                                      strides,
                                      s.kernel_h * s.kernel_w * s.out_channels,
                                      weight_group_stride,
                                      FastDivmod(s.out_channels),
                                      FastDivmod(s.kernel_w),
                                      FastDivmod(s.width),
                                      FastDivmod(uint32_t(pixels))};
  const int bytes = pass_copy_bytes<T>(s.out_channels, s.in_channels, grad_out, weight, weight_group_stride);
  return launch_tiles<GradInputPass<T>, T>(p, choice, bytes, s.batch * pixels, s.in_channels, stream);
}

template <typename T>
size_t grouped_conv_backward_weight_workspace_bytes(const ConvShape& s, KernelChoice choice, bool with_bias) {
  if (choice.split_k <= 1) return 0;  // the GEMM writes grad_weight (and grad_bias) itself
  const size_t per_split = size_t(s.groups) * s.out_channels * (size_t(s.in_channels) * s.kernel_h * s.kernel_w + (with_bias ? 1 : 0));
  return size_t(choice.split_k) * per_split * sizeof(AccOf<T>);
}

template <typename T>
cudaError_t launch_grouped_conv_backward_weight(const T* grad_out, const T* x, const int64_t* order,
                                                const int64_t* offsets, T* grad_weight, T* grad_bias, void* workspace,
                                                const ConvShape& s, KernelChoice c, cudaStream_t stream) {
  using Pass = GradWeightPass<T>;
  const int64_t pixels = int64_t(s.out_height) * s.out_width;
  const int depth = s.kernel_h * s.kernel_w * s.in_channels;
  const int splits = c.split_k < 1 ? 1 : c.split_k;
  if (s.out_channels == 0 || depth == 0) return cudaSuccess;  // grad_weight has no element
  if (splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  if (!c.tensor_core || std::is_same<T, double>::value) c.tile = TileShape::k64x64;
  int bm = 64, bn = 64;
  if (c.tile == TileShape::k128x128) bm = bn = 128;
  if (c.tile == TileShape::k128x64) bm = 128;
  const int64_t m_tiles = ceil_div(s.out_channels, bm), n_tiles = ceil_div(depth, bn);
  const int64_t gemm_blocks = int64_t(s.groups) * splits * m_tiles * n_tiles;
  if (gemm_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const int64_t per_split = int64_t(s.groups) * s.out_channels * depth;
  AccOf<T>* const ws = splits > 1 ? static_cast<AccOf<T>*>(workspace) : nullptr;
  typename Pass::Params p{grad_out,
                          x,
                          ws,
                          grad_weight,
                          grad_bias,
                          ws != nullptr && grad_bias != nullptr ? ws + splits * per_split : nullptr,
                          order,
                          offsets,
                          s,
                          splits,
                          depth,
                          int(m_tiles),
                          int(n_tiles),
                          FastDivmod(s.in_channels),
                          FastDivmod(s.kernel_w),
                          FastDivmod(s.out_width),
                          FastDivmod(uint32_t(pixels > 0 ? pixels : 1))};
  const int bytes = pass_copy_bytes<T>(s.in_channels, s.out_channels, grad_out, x);
  const dim3 grid(static_cast<unsigned>(gemm_blocks));
  cudaError_t st;
  switch (c.tile) {
    case TileShape::k128x128: st = launch_vec<Pass, T, 128, 128>(p, c.tensor_core, bytes, grid, stream); break;
    case TileShape::k128x64: st = launch_vec<Pass, T, 128, 64>(p, c.tensor_core, bytes, grid, stream); break;
    default: st = launch_vec<Pass, T, 64, 64>(p, c.tensor_core, bytes, grid, stream); break;
  }
  if (st != cudaSuccess || splits == 1) return st;
  const int64_t bias_per_split = grad_bias != nullptr ? int64_t(s.groups) * s.out_channels : 0;
  const int64_t total = per_split + bias_per_split;
  if (total == 0) return cudaSuccess;
  const unsigned blocks = unsigned(ceil_div(total, kThreads) < 4096 ? ceil_div(total, kThreads) : 4096);
  reduce_weight_grad<T><<<blocks, kThreads, 0, stream>>>(p.workspace, grad_weight, splits, per_split,
                                                         p.bias_workspace, grad_bias, bias_per_split);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_grouped_conv_backward_bias(const T* grad_out, OutStrides strides, const int64_t* order,
                                              const int64_t* offsets, T* grad_bias, const ConvShape& s,
                                              cudaStream_t stream) {
  if (s.groups == 0 || s.out_channels == 0) return cudaSuccess;  // grad_bias has no element
  const int64_t pixels = int64_t(s.out_height) * s.out_width;
  const FastDivmod div_pixels(uint32_t(pixels > 0 ? pixels : 1));
  // Channels contiguous (NHWC): 32 channels per block, a warp reads them side by side.
  const bool nhwc = strides.channel == 1 && s.out_channels > 1;
  const int per_block = nhwc ? 32 : 1;
  const int64_t tiles = ceil_div(s.out_channels, per_block), blocks = int64_t(s.groups) * tiles;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(blocks));
  if (nhwc)
    grouped_bias_grad<T, 32><<<grid, kThreads, 0, stream>>>(grad_out, strides, order, offsets, s, div_pixels, int(tiles), grad_bias);
  else
    grouped_bias_grad<T, 1><<<grid, kThreads, 0, stream>>>(grad_out, strides, order, offsets, s, div_pixels, int(tiles), grad_bias);
  return cudaGetLastError();
}

#define HAMFAST_INSTANTIATE(T)                                                                                     \
  template cudaError_t launch_grouped_conv_forward<T>(const T*, const T*, int64_t, const T*, const int64_t*,        \
                                                      const int64_t*, T*, OutStrides, const ConvShape&, KernelChoice, \
                                                      cudaStream_t);                                               \
  template cudaError_t launch_grouped_conv_backward_input<T>(const T*, const T*, int64_t, const int64_t*,           \
                                                             const int64_t*, T*, OutStrides, const ConvShape&,     \
                                                             KernelChoice, cudaStream_t);                          \
  template size_t grouped_conv_backward_weight_workspace_bytes<T>(const ConvShape&, KernelChoice, bool);            \
  template cudaError_t launch_grouped_conv_backward_weight<T>(const T*, const T*, const int64_t*, const int64_t*,   \
                                                              T*, T*, void*, const ConvShape&, KernelChoice,        \
                                                              cudaStream_t);                                        \
  template cudaError_t launch_grouped_conv_backward_bias<T>(const T*, OutStrides, const int64_t*, const int64_t*, T*, \
                                                            const ConvShape&, cudaStream_t);

HAMFAST_INSTANTIATE(float)
HAMFAST_INSTANTIATE(double)
HAMFAST_INSTANTIATE(bf16_t)
HAMFAST_INSTANTIATE(f16_t)

}  // namespace cuda
}  // namespace hamfast
