// Runs csrc/cuda/grouped_conv_kernels.cu on the host (see cuda_runtime.h beside this file) in
// float64 and compares all three passes with direct convolution loops. Exit status: the number of
// failed comparisons. The test compiles this with -DKERNELS_SOURCE pointing at the rewritten .cu.
#include KERNELS_SOURCE

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using hamfast::cuda::ConvShape;

namespace {

int failures = 0;

void compare(const char* case_name, const char* pass, const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  const bool ok = worst <= 1e-9;
  failures += !ok;
  std::printf("%s %-32s %-12s max|diff| = %.3g over %zu values\n", ok ? "ok  " : "FAIL", case_name, pass, worst,
              got.size());
}

void run_case(const char* name, int in_channels, int height, int width, int out_channels, int kernel, int stride,
              int padding, int groups, const std::vector<int64_t>& group) {
  const int batch = static_cast<int>(group.size());
  const int out_h = (height + 2 * padding - kernel) / stride + 1, out_w = (width + 2 * padding - kernel) / stride + 1;
  std::mt19937 rng(42);
  std::normal_distribution<double> normal;
  std::vector<double> x(size_t(batch) * in_channels * height * width), weight(size_t(groups) * out_channels * in_channels * kernel * kernel),
      bias(size_t(groups) * out_channels), grad_out(size_t(batch) * out_channels * out_h * out_w);
  for (auto* v : {&x, &weight, &bias, &grad_out})
    for (auto& e : *v) e = normal(rng);

  std::vector<int64_t> order(batch), offsets(groups + 1, 0);
  for (int64_t g : group) offsets[g + 1]++;
  for (int g = 0; g < groups; ++g) offsets[g + 1] += offsets[g];
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  for (int b = 0; b < batch; ++b) order[next[group[b]]++] = b;

  std::vector<double> out_ref(grad_out.size()), grad_x_ref(x.size(), 0), grad_w_ref(weight.size(), 0);
  for (int b = 0; b < batch; ++b) {
    const int g = static_cast<int>(group[b]);
    for (int co = 0; co < out_channels; ++co)
      for (int oh = 0; oh < out_h; ++oh)
        for (int ow = 0; ow < out_w; ++ow) {
          const size_t o = ((size_t(b) * out_channels + co) * out_h + oh) * out_w + ow;
          double acc = bias[size_t(g) * out_channels + co];
          for (int ci = 0; ci < in_channels; ++ci)
            for (int r = 0; r < kernel; ++r)
              for (int c = 0; c < kernel; ++c) {
                const int ih = oh * stride - padding + r, iw = ow * stride - padding + c;
                if (ih < 0 || ih >= height || iw < 0 || iw >= width) continue;
                const size_t xi = ((size_t(b) * in_channels + ci) * height + ih) * width + iw;
                const size_t wi = (((size_t(g) * out_channels + co) * in_channels + ci) * kernel + r) * kernel + c;
                acc += x[xi] * weight[wi];
                grad_x_ref[xi] += grad_out[o] * weight[wi];
                grad_w_ref[wi] += grad_out[o] * x[xi];
              }
          out_ref[o] = acc;
        }
  }

  const ConvShape s{batch, in_channels, height, width, groups, out_channels, kernel, kernel, stride, padding, out_h, out_w};
  std::vector<double> out(out_ref.size()), grad_x(x.size()), grad_w(weight.size(), 0);
  hamfast::cuda::launch_grouped_conv_forward<double>(x.data(), weight.data(), bias.data(), order.data(), offsets.data(),
                                                     out.data(), s, nullptr);
  hamfast::cuda::launch_grouped_conv_backward_input<double>(grad_out.data(), weight.data(), order.data(),
                                                            offsets.data(), grad_x.data(), s, nullptr);
  hamfast::cuda::launch_grouped_conv_backward_weight<double>(grad_out.data(), x.data(), order.data(), offsets.data(),
                                                             grad_w.data(), s, nullptr);
  compare(name, "forward", out, out_ref);
  compare(name, "grad-input", grad_x, grad_x_ref);
  compare(name, "grad-weight", grad_w, grad_w_ref);
}

}  // namespace

int main() {
  // name, Cin, H, W, Cout, k, stride, padding, G, group of each sample
  run_case("k3 mixed unsorted", 3, 9, 8, 5, 3, 1, 0, 3, {2, 0, 2, 1, 0});
  run_case("k3 stride2 pad1 unused groups", 2, 11, 10, 3, 3, 2, 1, 4, {3, 3, 0, 3});
  run_case("k5 pad2 Cout 70 (two col tiles)", 4, 12, 12, 70, 5, 1, 2, 2, {1, 0, 1});
  run_case("k1 G15 two samples", 5, 7, 9, 4, 1, 1, 0, 15, {14, 3});
  run_case("k5 stride2 pad2 depth 500", 20, 14, 14, 8, 5, 2, 2, 2, {0, 1, 1, 0, 1, 1});
  run_case("cbrtiny layer1 shape", 4, 14, 14, 64, 5, 1, 0, 3, {1, 2, 1, 0});
  run_case("single sample", 3, 6, 6, 2, 5, 1, 0, 1, {0});
  return failures;
}
