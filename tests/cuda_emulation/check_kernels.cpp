// Runs csrc/cuda/grouped_conv_kernels.cu on the host (cuda_runtime.h and emulated_device.h beside
// this file) and compares all passes (forward, grad-input, grad-weight, grad-bias), on every
// precision path, BITWISE with direct
// convolution loops in exact integer arithmetic. Inputs are small integers ([-8, 8] for float32 /
// TF32 / float64, [-5, 5] for bf16 / f16) so that every product and sum is exact in the fp32
// accumulators; the result is then rounded once to the output type, as the kernels do.
// Usage: check_kernels            all cases; exit status = number of failed comparisons
//        check_kernels N          case N only
//        check_kernels zero       zero-sized channel and batch dimensions (Cin, Cout, B = 0)
//        check_kernels malformed  malformed plans (build with -fsanitize=address): must not crash
//        check_kernels convert IN OUT   the float -> bf16 / f16 conversions, for comparison with torch
//        check_kernels dispatch SM_MAJOR SM_COUNT   the dispatcher's choices for CBRTiny layers
// The test compiles this with -DKERNELS_SOURCE pointing at the .cu with its launches rewritten.
#include KERNELS_SOURCE

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include <random>
#include <string>
#include <vector>

using namespace hamfast::cuda;

namespace {

int failures = 0;

template <typename T>
T from_int(int64_t v) {
  return from_acc<T>(AccOf<T>(v));
}
template <typename T>
T poison() {
  T v;
  std::memset(&v, 0xFF, sizeof(T));  // NaN in every floating type
  return v;
}

struct Case {
  std::string name;
  int cin, h, w, cout, k, stride, pad, groups;
  std::vector<int64_t> group;  // group of each sample
};

struct Plan {
  std::vector<int64_t> order, offsets;
};
Plan make_plan(const Case& c) {
  Plan p{std::vector<int64_t>(c.group.size()), std::vector<int64_t>(c.groups + 1, 0)};
  for (int64_t g : c.group) p.offsets[g + 1]++;
  for (int g = 0; g < c.groups; ++g) p.offsets[g + 1] += p.offsets[g];
  std::vector<int64_t> next(p.offsets.begin(), p.offsets.end() - 1);
  for (size_t b = 0; b < c.group.size(); ++b) p.order[next[c.group[b]]++] = int64_t(b);
  return p;
}

void check(const std::string& what, bool ok, const std::string& detail) {
  failures += !ok;
  std::printf("%s %-62s %s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.c_str());
}

// The copy width a pass should use for channel counts a and b (its operands' contiguous
// dimensions), written out independently of the launchers' operand_copy_bytes.
int want_copy_bytes(int elem, int a, int b) {
  auto one = [elem](int c) { return (c * elem) % 16 == 0 ? 16 : (elem == 2 && (c * elem) % 8 == 0 ? 8 : elem); };
  return std::min(one(a), one(b));
}
// Which widths copy_to_shared saw since `before`: "8", "16", "-" (no copy) or "mixed ...".
std::string copy_widths_since(const std::vector<long>& before) {
  std::string seen;
  for (int w = 1; w <= 16; ++w)
    if (g_copy_count[w] != before[w]) seen += (seen.empty() ? "" : ",") + std::to_string(w);
  return seen.empty() ? "-" : seen;
}
std::vector<long> copy_counts() { return std::vector<long>(g_copy_count, g_copy_count + 17); }

template <typename T>
void compare(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0 && bad++ == 0) first = i;
  failures += bad != 0;
  if (bad)
    std::printf("FAIL %-62s %zu of %zu differ, first at %zu: %g vs %g\n", what.c_str(), bad, got.size(), first,
                double(to_float(got[first])), double(to_float(want[first])));
  else
    std::printf("ok   %-62s %zu values bitwise equal\n", what.c_str(), got.size());
}

// One precision path (T, tensor cores or not) on one case: forward, grad-input, grad-weight.
template <typename T>
void run_path(const Case& c, const char* path, bool tensor_core, TileShape tile, int split_k, bool nhwc_out, int range,
              unsigned seed) {
  const int B = int(c.group.size()), G = c.groups, Cin = c.cin, Cout = c.cout, H = c.h, W = c.w, K = c.k;
  const int OH = (H + 2 * c.pad - K) / c.stride + 1, OW = (W + 2 * c.pad - K) / c.stride + 1;
  std::mt19937 rng(seed);
  const bool variant_pad = seed % 2 == 0;  // every other path reads group-strided weights
  std::uniform_int_distribution<int> dist(-range, range);
  auto fill = [&](size_t n) {
    std::vector<int64_t> v(n);
    for (auto& e : v) e = dist(rng);
    return v;
  };
  // Logical tensors in PyTorch layouts (NCHW, [G, Cout, Cin, kh, kw]).
  const auto x = fill(size_t(B) * Cin * H * W), wt = fill(size_t(G) * Cout * Cin * K * K), bias = fill(size_t(G) * Cout),
             dy = fill(size_t(B) * Cout * OH * OW);
  std::vector<int64_t> out_ref(dy.size()), gx_ref(x.size(), 0), gw_ref(wt.size(), 0);
  auto xi = [&](int b, int ci, int y, int xx) { return ((size_t(b) * Cin + ci) * H + y) * W + xx; };
  auto wi = [&](int g, int co, int ci, int r, int s) { return (((size_t(g) * Cout + co) * Cin + ci) * K + r) * K + s; };
  auto oi = [&](int b, int co, int oh, int ow) { return ((size_t(b) * Cout + co) * OH + oh) * OW + ow; };
  for (int b = 0; b < B; ++b) {
    const int g = int(c.group[b]);
    for (int co = 0; co < Cout; ++co)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          int64_t acc = bias[size_t(g) * Cout + co];
          for (int ci = 0; ci < Cin; ++ci)
            for (int r = 0; r < K; ++r)
              for (int s = 0; s < K; ++s) {
                const int y = oh * c.stride - c.pad + r, xx = ow * c.stride - c.pad + s;
                if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
                acc += x[xi(b, ci, y, xx)] * wt[wi(g, co, ci, r, s)];
                gx_ref[xi(b, ci, y, xx)] += dy[oi(b, co, oh, ow)] * wt[wi(g, co, ci, r, s)];
                gw_ref[wi(g, co, ci, r, s)] += dy[oi(b, co, oh, ow)] * x[xi(b, ci, y, xx)];
              }
          out_ref[oi(b, co, oh, ow)] = acc;
        }
  }
  // Kernel layouts: NHWC activations, [G, Cout, kh, kw, Cin] weights (forward and grad-input read
  // them; grad-weight writes that layout, dense). The weights read lie `wstride` elements apart per
  // group: dense, or padded by 8 elements (HAM's rows of one [G, P'] output), poison in the gaps.
  const int64_t dense = int64_t(Cout) * K * K * Cin, wstride = dense + (variant_pad ? 8 : 0);
  std::vector<T> x_nhwc(x.size()), dy_nhwc(dy.size()), w_krsc(size_t(G) * wstride, poison<T>()), bias_t(bias.size());
  for (int b = 0; b < B; ++b)
    for (int ci = 0; ci < Cin; ++ci)
      for (int y = 0; y < H; ++y)
        for (int xx = 0; xx < W; ++xx) x_nhwc[((size_t(b) * H + y) * W + xx) * Cin + ci] = from_int<T>(x[xi(b, ci, y, xx)]);
  for (int b = 0; b < B; ++b)
    for (int co = 0; co < Cout; ++co)
      for (int p = 0; p < OH * OW; ++p) dy_nhwc[(size_t(b) * OH * OW + p) * Cout + co] = from_int<T>(dy[(size_t(b) * Cout + co) * OH * OW + p]);
  for (int g = 0; g < G; ++g)
    for (int co = 0; co < Cout; ++co)
      for (int ci = 0; ci < Cin; ++ci)
        for (int r = 0; r < K; ++r)
          for (int s = 0; s < K; ++s) {
            w_krsc[size_t(g) * wstride + ((size_t(co) * K + r) * K + s) * Cin + ci] = from_int<T>(wt[wi(g, co, ci, r, s)]);
          }
  for (size_t i = 0; i < bias.size(); ++i) bias_t[i] = from_int<T>(bias[i]);

  const Plan plan = make_plan(c);
  const ConvShape shape{B, Cin, H, W, G, Cout, K, K, c.stride, c.pad, OH, OW};
  const KernelChoice choice{tensor_core, tile, split_k};
  // Expected results in the output layout (NCHW or NHWC), rounded once to T.
  auto expect = [&](const std::vector<int64_t>& ref, int channels, int pixels, bool nhwc) {
    std::vector<T> e(ref.size());
    for (int b = 0; b < B; ++b)
      for (int ch = 0; ch < channels; ++ch)
        for (int p = 0; p < pixels; ++p) {
          const size_t src = (size_t(b) * channels + ch) * pixels + p;
          e[nhwc ? (size_t(b) * pixels + p) * channels + ch : src] = from_int<T>(ref[src]);
        }
    return e;
  };
  auto strides = [&](int channels, int pixels) {
    return nhwc_out ? OutStrides{int64_t(channels) * pixels, 1, channels} : OutStrides{int64_t(channels) * pixels, pixels, 1};
  };
  char label[160];
  std::snprintf(label, sizeof(label), "%s | %s %s split%d %s%s", c.name.c_str(), path, tensor_core ? tile_name(tile) : "simt",
                split_k, nhwc_out ? "NHWC" : "NCHW", variant_pad ? " wpad" : "");

  std::vector<T> out(out_ref.size(), poison<T>());
  const auto copies_fwd = copy_counts();
  int st = launch_grouped_conv_forward<T>(x_nhwc.data(), w_krsc.data(), wstride, bias_t.data(), plan.order.data(),
                                          plan.offsets.data(), out.data(), strides(Cout, OH * OW), shape, choice, nullptr);
  if (st) std::printf("launch error %d\n", st), ++failures;
  compare(std::string(label) + " forward", out, expect(out_ref, Cout, OH * OW, nhwc_out));

  const std::string width_fwd = copy_widths_since(copies_fwd);
  std::vector<T> gx(gx_ref.size(), poison<T>());
  const auto copies_gx = copy_counts();
  st = launch_grouped_conv_backward_input<T>(dy_nhwc.data(), w_krsc.data(), wstride, plan.order.data(), plan.offsets.data(),
                                             gx.data(), strides(Cin, H * W), shape, choice, nullptr);
  if (st) std::printf("launch error %d\n", st), ++failures;
  compare(std::string(label) + " grad-input", gx, expect(gx_ref, Cin, H * W, nhwc_out));

  const std::string width_gx = copy_widths_since(copies_gx);
  // grad_bias[g, co] = sum of dy over the group's samples and pixels.
  std::vector<int64_t> gb_ref(size_t(G) * Cout, 0);
  for (int b = 0; b < B; ++b)
    for (int co = 0; co < Cout; ++co)
      for (int p = 0; p < OH * OW; ++p) gb_ref[size_t(c.group[b]) * Cout + co] += dy[(size_t(b) * Cout + co) * OH * OW + p];
  std::vector<T> gb_want(gb_ref.size());
  for (size_t i = 0; i < gb_ref.size(); ++i) gb_want[i] = from_int<T>(gb_ref[i]);

  // Grad-weight with the fused bias gradient. Split-K 1 needs no workspace (null here: any use
  // would crash) and runs one kernel, the GEMM writing grad_weight and grad_bias; split-K > 1 adds
  // the reduce (one kernel for both).
  const size_t ws_bytes = grouped_conv_backward_weight_workspace_bytes<T>(shape, choice, true);
  std::vector<unsigned char> ws(ws_bytes, 0xFF);
  std::vector<T> gw(gw_ref.size(), poison<T>()), gw2(gw_ref.size(), poison<T>()), gb_fused(gb_ref.size(), poison<T>());
  const auto copies_gw = copy_counts();
  const long launches_before = g_launch_count;
  st = launch_grouped_conv_backward_weight<T>(dy_nhwc.data(), x_nhwc.data(), plan.order.data(), plan.offsets.data(),
                                              gw.data(), gb_fused.data(), ws_bytes ? ws.data() : nullptr, shape, choice,
                                              nullptr);
  const long gw_launches = g_launch_count - launches_before;
  const std::string width_gw = copy_widths_since(copies_gw);
  if (st) std::printf("launch error %d\n", st), ++failures;
  std::vector<T> gw_want(gw_ref.size());  // in the weights' KRSC layout
  for (int g = 0; g < G; ++g)
    for (int co = 0; co < Cout; ++co)
      for (int ci = 0; ci < Cin; ++ci)
        for (int r = 0; r < K; ++r)
          for (int s = 0; s < K; ++s)
            gw_want[(((size_t(g) * Cout + co) * K + r) * K + s) * Cin + ci] = from_int<T>(gw_ref[wi(g, co, ci, r, s)]);
  compare(std::string(label) + " grad-weight", gw, gw_want);
  const bool has_gw = Cout > 0 && Cin > 0;  // else the launcher returns before any kernel
  if (has_gw) compare(std::string(label) + " grad-bias fused in grad-weight", gb_fused, gb_want);
  // Without the bias gradient: the same grad_weight (and a smaller workspace, poisoned otherwise).
  const size_t ws_bytes_plain = grouped_conv_backward_weight_workspace_bytes<T>(shape, choice, false);
  std::vector<unsigned char> ws2(ws_bytes_plain, 0x7F);
  launch_grouped_conv_backward_weight<T>(dy_nhwc.data(), x_nhwc.data(), plan.order.data(), plan.offsets.data(),
                                         gw2.data(), nullptr, ws_bytes_plain ? ws2.data() : nullptr, shape, choice,
                                         nullptr);
  compare(std::string(label) + " grad-weight rerun without bias", gw2, gw);
  const long want_launches = !has_gw ? 0 : (split_k <= 1 ? 1 : 2);
  const size_t want_ws = split_k <= 1 ? 0 : size_t(split_k) * G * Cout * (size_t(Cin) * K * K + 1) * sizeof(AccOf<T>);
  check(std::string(label) + " grad-weight kernels",
        gw_launches == want_launches && ws_bytes == want_ws && ws_bytes_plain == (split_k <= 1 ? 0 : want_ws - size_t(split_k) * G * Cout * sizeof(AccOf<T>)),
        std::to_string(gw_launches) + " launch(es), workspace " + std::to_string(ws_bytes) + " bytes");

  // The bias kernel, reading dy NCHW and NHWC.
  std::vector<T> dy_nchw(dy.size());
  for (size_t i = 0; i < dy.size(); ++i) dy_nchw[i] = from_int<T>(dy[i]);
  for (bool nhwc_dy : {false, true}) {
    std::vector<T> gb(gb_ref.size(), poison<T>());
    const OutStrides dy_strides = nhwc_dy ? OutStrides{int64_t(Cout) * OH * OW, 1, Cout}
                                          : OutStrides{int64_t(Cout) * OH * OW, OH * OW, 1};
    st = launch_grouped_conv_backward_bias<T>(nhwc_dy ? dy_nhwc.data() : dy_nchw.data(), dy_strides, plan.order.data(),
                                              plan.offsets.data(), gb.data(), shape, nullptr);
    if (st) std::printf("launch error %d\n", st), ++failures;
    compare(std::string(label) + (nhwc_dy ? " grad-bias NHWC dy" : " grad-bias NCHW dy"), gb, gb_want);
  }

  // Copy widths: 16 bytes when the channels fill 16-byte vectors, 8 for 16-bit types with channels
  // filling 8 bytes (Cin = 4), else element-wise; "-" where a pass copied nothing.
  const int e = int(sizeof(T));
  auto width_ok = [](const std::string& seen, int want) { return seen == "-" || seen == std::to_string(want); };
  const bool widths = width_ok(width_fwd, want_copy_bytes(e, Cin, Cin)) && width_ok(width_gx, want_copy_bytes(e, Cout, Cin)) &&
                      width_ok(width_gw, want_copy_bytes(e, Cin, Cout));
  check(std::string(label) + " copy bytes", widths,
        "forward " + width_fwd + " grad-input " + width_gx + " grad-weight " + width_gw);
}

// Every precision path of one case; tile shape, split-K and output layout rotate with `variant`.
void run_case(const Case& c, int variant) {
  const TileShape tiles[] = {TileShape::k128x128, TileShape::k128x64, TileShape::k64x64};
  const TileShape tile = tiles[variant % 3];
  const int split = 1 + variant % 3;
  const bool nhwc = variant % 2 == 1;
  run_path<double>(c, "float64", false, tile, split, nhwc, 8, 1 + variant);
  run_path<float>(c, "float32", false, tile, split, !nhwc, 8, 2 + variant);
  run_path<float>(c, "tf32", true, tile, split, nhwc, 8, 3 + variant);
  run_path<bf16_t>(c, "bf16", true, tiles[(variant + 1) % 3], split, !nhwc, 5, 4 + variant);
  run_path<f16_t>(c, "f16", true, tiles[(variant + 2) % 3], split, nhwc, 5, 5 + variant);
}

// Malformed plans: offsets out of range / decreasing, order entries out of range or repeated.
// Nothing is compared (the results are undefined); under AddressSanitizer any access outside the
// buffers aborts the program.
template <typename T>
void run_malformed(bool tensor_core) {
  const int B = 5, G = 4, Cin = 8, H = 7, W = 6, Cout = 16, K = 3, OH = 5, OW = 4;
  const ConvShape s{B, Cin, H, W, G, Cout, K, K, 1, 0, OH, OW};
  const std::vector<std::vector<int64_t>> offsets = {
      {0, 7, 2, 9, 5}, {-4, 3, 1, 100, -2}, {3, 3, 3, 3, 3}, {0, 5, 5, 5, 99}, {5, 0, 0, 0, 5}};
  const std::vector<std::vector<int64_t>> orders = {
      {0, 1, 2, 3, 4}, {-1, 5, 1000000, 2, -7}, {4, 4, 4, 4, 4}, {INT64_MIN, INT64_MAX, 0, 1, 2}};
  for (size_t i = 0; i < offsets.size() + 1; ++i) {
    const auto& off = offsets[i % offsets.size()];
    const auto& ord = orders[i % orders.size()];
    {
      const KernelChoice choice{tensor_core, i % 2 ? TileShape::k128x128 : TileShape::k64x64, 2};
        std::vector<T> x(size_t(B) * H * W * Cin, from_int<T>(1)), w(size_t(G) * Cout * K * K * Cin, from_int<T>(1)),
            bias(size_t(G) * Cout, from_int<T>(1)), dy(size_t(B) * OH * OW * Cout, from_int<T>(1)), out(dy.size()),
            gx(x.size()), gw(w.size()), gb(size_t(G) * Cout);
        std::vector<unsigned char> ws(grouped_conv_backward_weight_workspace_bytes<T>(s, choice, true));
        const OutStrides os{int64_t(Cout) * OH * OW, OH * OW, 1}, is{int64_t(Cin) * H * W, 1, Cin};
        const std::vector<int64_t> o(off), r(ord);  // exact-size heap copies
        int st = launch_grouped_conv_forward<T>(x.data(), w.data(), int64_t(Cout) * K * K * Cin, bias.data(), r.data(), o.data(), out.data(), os, s,
                                                choice, nullptr);
        st |= launch_grouped_conv_backward_input<T>(dy.data(), w.data(), int64_t(Cout) * K * K * Cin, r.data(), o.data(), gx.data(), is, s, choice,
                                                    nullptr);
        st |= launch_grouped_conv_backward_weight<T>(dy.data(), x.data(), r.data(), o.data(), gw.data(), gb.data(),
                                                     ws.data(), s, choice, nullptr);
        if (st) ++failures;
      }
  }
  std::printf("ok   malformed plans %s %s: no access outside the buffers\n", sizeof(T) == 2 ? "16-bit" : "float",
              tensor_core ? "tensor-core" : "simt");
}

}  // namespace

// float32 bit patterns (file `in`) -> bf16 and f16 bits of the kernels' conversions (file `out`,
// two uint16 per input), for the comparison with torch's rounding in the test.
int convert(const char* in, const char* out) {
  FILE* f = std::fopen(in, "rb");
  if (!f) return 1;
  std::vector<uint32_t> bits;
  uint32_t u;
  while (std::fread(&u, 4, 1, f) == 1) bits.push_back(u);
  std::fclose(f);
  std::vector<uint16_t> res;
  for (uint32_t b : bits) {
    const float v = bits_float(b);
    res.push_back(float_to_bf16(v).bits);
    res.push_back(float_to_f16(v).bits);
  }
  f = std::fopen(out, "wb");
  std::fwrite(res.data(), 2, res.size(), f);
  std::fclose(f);
  return 0;
}

// The dispatcher's decisions for the CBRTiny layers (128 px, G = 15) on a described device, one
// line per pass: "<dtype> <Cin> <Cout> <B> <pass>: <description> | <why>".
int print_dispatch(int sm_major, int sm_count) {
  const DeviceInfo dev{sm_major, 0, sm_count, "emulated"};
  const int layers[4][3] = {{4, 64, 128}, {64, 128, 61}, {128, 256, 28}, {256, 512, 11}};
  const Precision precisions[] = {Precision::kFloat64, Precision::kFloat32, Precision::kTF32, Precision::kBFloat16,
                                  Precision::kFloat16};
  for (Precision prec : precisions)
    for (const auto& l : layers)
      for (int batch : {16, 256})
        for (PassKind pass : {PassKind::kForward, PassKind::kGradInput, PassKind::kGradWeight}) {
          const ConvShape s{batch, l[0], l[2], l[2], 15, l[1], 5, 5, 1, 0, l[2] - 4, l[2] - 4};
          const Decision d = choose(pass, prec, s, dev);
          std::printf("%d %d %d %d %s: %s | %s\n", int(prec), l[0], l[1], batch, pass_name(pass),
                      describe(d, prec).c_str(), d.why.c_str());
        }
  return 0;
}

// The NHWC copies one backward call makes (plan_backward_layouts) against the separate ops of
// before (separate_backward_copies), for every combination of passes, paths and input layouts:
// "<grad_input> <input path> <grad_weight> <weight path> <dy channels_last> <x channels_last>:
// <convert dy> <convert x> <copies> <separate copies>".
int print_layouts() {
  for (int gi = 0; gi < 2; ++gi)
    for (int pi = 0; pi < 4; ++pi)
      for (int gw = 0; gw < 2; ++gw)
        for (int pw = 0; pw < 4; ++pw)
          for (int dy_cl = 0; dy_cl < 2; ++dy_cl)
            for (int x_cl = 0; x_cl < 2; ++x_cl) {
              const BackwardLayouts l = plan_backward_layouts(gi, Path(pi), gw, Path(pw), dy_cl, x_cl);
              std::printf("%d %d %d %d %d %d: %d %d %d %d\n", gi, pi, gw, pw, dy_cl, x_cl, int(l.convert_dy),
                          int(l.convert_x), l.copies(),
                          separate_backward_copies(gi, Path(pi), gw, Path(pw), dy_cl, x_cl));
            }
  return 0;
}

// Whether the forward saves its NHWC x for backward (saves_input_nhwc), and the activation copies of
// one layer's training step (forward, then grad-input and grad-weight) with and without that:
// "<forward path> <input path> <weight path> <weight measure first> <x channels_last> <dy channels_last>:
// <saves> <copies> <copies without saving>".
int print_saved_input() {
  for (int pf = 0; pf < 4; ++pf)
    for (int pi = 0; pi < 4; ++pi)
      for (int pw = 0; pw < 4; ++pw)
        for (int pending = 0; pending < 2; ++pending)
          for (int x_cl = 0; x_cl < 2; ++x_cl)
            for (int dy_cl = 0; dy_cl < 2; ++dy_cl) {
              const bool saves = saves_input_nhwc(Path(pf), Path(pw), pending, x_cl);
              const int forward = int(reads_nhwc(Path(pf)) && !x_cl);
              const int with = forward + plan_backward_layouts(true, Path(pi), true, Path(pw), dy_cl, x_cl || saves).copies();
              const int without = forward + plan_backward_layouts(true, Path(pi), true, Path(pw), dy_cl, x_cl).copies();
              std::printf("%d %d %d %d %d %d: %d %d %d\n", pf, pi, pw, pending, x_cl, dy_cl, int(saves), with, without);
            }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "layouts") return print_layouts();
  if (argc > 1 && std::string(argv[1]) == "saved") return print_saved_input();
  if (argc > 3 && std::string(argv[1]) == "dispatch") return print_dispatch(std::atoi(argv[2]), std::atoi(argv[3]));
  if (argc > 3 && std::string(argv[1]) == "convert") return convert(argv[2], argv[3]);
  if (argc > 1 && std::string(argv[1]) == "zero") {
    // Zero-sized channel or batch dimensions: Cin = 0 gives out = bias, Cout = 0 gives grad_x = 0,
    // B = 0 gives grad_weight = 0; every other result is empty. Each tile shape on every path.
    const std::vector<Case> zero = {
        {"zero Cin", 0, 7, 6, 5, 3, 1, 0, 3, {2, 0, 2, 1}},
        {"zero Cout", 4, 7, 6, 0, 3, 1, 1, 2, {1, 0, 1}},
        {"zero batch", 4, 7, 6, 5, 3, 1, 0, 2, {}},
    };
    for (size_t i = 0; i < zero.size(); ++i)
      for (int variant = 0; variant < 3; ++variant) run_case(zero[i], variant);
    return failures;
  }
  if (argc > 1 && std::string(argv[1]) == "malformed") {
    run_malformed<float>(true);
    run_malformed<float>(false);
    run_malformed<bf16_t>(true);
    return failures;
  }
  // name, Cin, H, W, Cout, k, stride, padding, G, group of each sample
  const std::vector<Case> cases = {
      {"k3 odd B unsorted", 3, 9, 8, 5, 3, 1, 0, 3, {2, 0, 2, 1, 0}},
      {"k3 stride2 pad1 empty groups", 2, 11, 10, 3, 3, 2, 1, 4, {3, 3, 0, 3}},
      {"layer1-like Cin4 k5", 4, 12, 12, 64, 5, 1, 0, 3, {1, 2, 1, 0}},
      {"G15 two samples k1", 5, 7, 9, 4, 1, 1, 0, 15, {14, 3}},
      {"one group B1 Cin8", 8, 6, 6, 16, 5, 1, 0, 1, {0}},
      {"Cout136 two column tiles", 16, 5, 5, 136, 3, 1, 1, 2, {1, 0, 1}},
      {"k5 stride2 pad2 Cin20", 20, 9, 9, 8, 5, 2, 2, 2, {0, 1, 1, 0, 1}},
      {"tiles cross samples", 8, 11, 11, 24, 3, 1, 0, 3, {0, 0, 1, 0, 2, 2, 0}},
      // Cin = 4, k5 stride 2 and odd sizes, an empty group, split-K 3; Cout = 12 (8-byte grad-input).
      {"Cin4 k5 stride2 odd HW Cout12", 4, 11, 9, 12, 5, 2, 1, 3, {2, 2, 0, 2}},
      // Cin = 4 (8-byte copies for bf16 / f16), odd H and W, two groups without samples, split-K 1.
      {"Cin4 odd HW empty groups split1", 4, 9, 7, 24, 3, 1, 1, 4, {3, 0, 3, 3, 0}},
  };
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  for (size_t i = 0; i < cases.size(); ++i)
    if (only < 0 || only == int(i)) run_case(cases[i], int(i));
  return failures;
}
