// Schema of the hamfast ops, the argument checks shared by the CPU and CUDA kernels, and the Python
// module stub whose import registers everything. Kernels live in cpu/ and cuda/ and only register
// themselves; autograd and the fake (meta) kernels are registered from hamfast/ops.py.
#include "grouped_conv.h"

#include "autotune.h"

#include <Python.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

namespace hamfast {

namespace {

void check_same_device_and_dtype(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.device() == like.device(), "hamfast.grouped_conv2d: ", name, " is on ", t.device(), " but ", like_name,
              " is on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "hamfast.grouped_conv2d: ", name, " has dtype ", t.scalar_type(),
              " but ", like_name, " has dtype ", like.scalar_type());
}

void check_grad_out(const at::Tensor& grad_out, const ConvGeometry& geo) {
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == geo.batch && grad_out.size(1) == geo.out_channels &&
                  grad_out.size(2) == geo.out_height && grad_out.size(3) == geo.out_width,
              "hamfast.grouped_conv2d backward: grad_out has shape ", grad_out.sizes(), ", expected [", geo.batch, ", ",
              geo.out_channels, ", ", geo.out_height, ", ", geo.out_width, "]");
}

std::atomic<int64_t> nhwc_copy_count{0};
std::atomic<int64_t> weight_copy_count{0};

bool built_with_cuda() {
#ifdef HAMFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

void count_nhwc_copy() { nhwc_copy_count.fetch_add(1, std::memory_order_relaxed); }
int64_t nhwc_copies() { return nhwc_copy_count.load(std::memory_order_relaxed); }
void count_weight_copy() { weight_copy_count.fetch_add(1, std::memory_order_relaxed); }
int64_t weight_copies() { return weight_copy_count.load(std::memory_order_relaxed); }

ConvGeometry make_geometry(at::IntArrayRef input_size, at::IntArrayRef weight_size, int64_t stride, int64_t padding) {
  TORCH_CHECK(input_size.size() == 4, "hamfast.grouped_conv2d: x must be 4-D [B, Cin, H, W], got sizes ", input_size);
  TORCH_CHECK(weight_size.size() == 5, "hamfast.grouped_conv2d: weight must be 5-D [G, Cout, Cin, kh, kw], got sizes ",
              weight_size);
  for (const int64_t s : input_size) {
    TORCH_CHECK(s >= 0, "hamfast.grouped_conv2d: x sizes must not be negative, got ", input_size);
  }
  for (const int64_t s : weight_size) {
    TORCH_CHECK(s >= 0, "hamfast.grouped_conv2d: weight sizes must not be negative, got ", weight_size);
  }
  TORCH_CHECK(stride >= 1, "hamfast.grouped_conv2d: stride must be >= 1, got ", stride);
  TORCH_CHECK(padding >= 0, "hamfast.grouped_conv2d: padding must be >= 0, got ", padding);
  ConvGeometry geo{};
  geo.batch = input_size[0];
  geo.in_channels = input_size[1];
  geo.height = input_size[2];
  geo.width = input_size[3];
  geo.groups = weight_size[0];
  geo.out_channels = weight_size[1];
  geo.kernel_h = weight_size[3];
  geo.kernel_w = weight_size[4];
  geo.stride = stride;
  geo.padding = padding;
  TORCH_CHECK(geo.groups >= 1, "hamfast.grouped_conv2d: weight must hold at least one group");
  TORCH_CHECK(weight_size[2] == geo.in_channels, "hamfast.grouped_conv2d: weight expects Cin=", weight_size[2],
              " input channels, x has ", geo.in_channels);
  // Sizes come from the caller (and padding from Python ints): every product below is checked, so a
  // huge padding is an error instead of a wrapped-around size.
  int64_t twice_padding = 0, padded_h = 0, padded_w = 0;
  TORCH_CHECK(!c10::mul_overflows(padding, int64_t(2), &twice_padding) &&
                  !c10::add_overflows(geo.height, twice_padding, &padded_h) &&
                  !c10::add_overflows(geo.width, twice_padding, &padded_w),
              "hamfast.grouped_conv2d: padding=", padding, " makes the padded input larger than 2^63 - 1");
  TORCH_CHECK(geo.kernel_h >= 1 && geo.kernel_w >= 1 && geo.kernel_h <= padded_h && geo.kernel_w <= padded_w,
              "hamfast.grouped_conv2d: kernel ", geo.kernel_h, "x", geo.kernel_w, " does not fit the padded input ",
              padded_h, "x", padded_w);
  geo.out_height = (padded_h - geo.kernel_h) / stride + 1;
  geo.out_width = (padded_w - geo.kernel_w) / stride + 1;
  int64_t out_numel = 0;
  TORCH_CHECK(!c10::mul_overflows(geo.batch, geo.out_channels, &out_numel) &&
                  !c10::mul_overflows(out_numel, geo.out_height, &out_numel) &&
                  !c10::mul_overflows(out_numel, geo.out_width, &out_numel),
              "hamfast.grouped_conv2d: the output [", geo.batch, ", ", geo.out_channels, ", ", geo.out_height, ", ",
              geo.out_width, "] has more than 2^63 - 1 elements (padding=", padding, ")");
  return geo;
}

void check_plan(const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo, const at::Tensor& like) {
  TORCH_CHECK(order.dim() == 1 && order.size(0) == geo.batch && order.scalar_type() == at::kLong,
              "hamfast.grouped_conv2d: order must be int64 [", geo.batch, "], got ", order.scalar_type(), " ",
              order.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == geo.groups + 1 && offsets.scalar_type() == at::kLong,
              "hamfast.grouped_conv2d: offsets must be int64 [G + 1] = [", geo.groups + 1, "], got ",
              offsets.scalar_type(), " ", offsets.sizes());
  TORCH_CHECK(order.device() == like.device() && offsets.device() == like.device(),
              "hamfast.grouped_conv2d: the group plan is on ", order.device(), " and ", offsets.device(),
              " but the data is on ", like.device());
  // Contents are read only where they live on the host: on CUDA that would cost a sync per layer
  // (hamfast.ops validates a hand-made plan once; the kernels stay in bounds whatever the plan says).
  if (!offsets.is_cpu()) return;
  auto off = offsets.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  TORCH_CHECK(o[0] == 0 && o[geo.groups] == geo.batch,
              "hamfast.grouped_conv2d: offsets must run from 0 to B=", geo.batch, ", got ", o[0], " .. ", o[geo.groups]);
  for (int64_t g = 0; g < geo.groups; ++g) {
    TORCH_CHECK(o[g] <= o[g + 1], "hamfast.grouped_conv2d: offsets must not decrease (group ", g, ": ", o[g], " > ",
                o[g + 1], ")");
  }
  // order must be a permutation of 0..B-1: a repeated sample would leave another sample's rows unwritten.
  auto ord = order.contiguous();
  const int64_t* r = ord.data_ptr<int64_t>();
  std::vector<char> seen(static_cast<size_t>(geo.batch), 0);
  for (int64_t i = 0; i < geo.batch; ++i) {
    TORCH_CHECK(r[i] >= 0 && r[i] < geo.batch, "hamfast.grouped_conv2d: order must be a permutation of 0..B-1 (B=",
                geo.batch, "), order[", i, "]=", r[i], " is out of range");
    TORCH_CHECK(!seen[r[i]], "hamfast.grouped_conv2d: order must be a permutation of 0..B-1, sample ", r[i],
                " is listed twice");
    seen[r[i]] = 1;
  }
}

ConvGeometry check_forward_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                const at::Tensor& order, const at::Tensor& offsets, int64_t stride, int64_t padding) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "hamfast.grouped_conv2d: x must be floating point, got ",
              x.scalar_type());
  check_same_device_and_dtype(weight, "weight", x, "x");
  ConvGeometry geo = make_geometry(x.sizes(), weight.sizes(), stride, padding);
  if (bias.has_value()) {
    check_same_device_and_dtype(*bias, "bias", x, "x");
    TORCH_CHECK(bias->dim() == 2 && bias->size(0) == geo.groups && bias->size(1) == geo.out_channels,
                "hamfast.grouped_conv2d: bias must be [G, Cout] = [", geo.groups, ", ", geo.out_channels, "], got ",
                bias->sizes());
  }
  check_plan(order, offsets, geo, x);
  return geo;
}

ConvGeometry check_backward_input_args(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& order,
                                       const at::Tensor& offsets, at::IntArrayRef input_size, int64_t stride,
                                       int64_t padding) {
  check_same_device_and_dtype(weight, "weight", grad_out, "grad_out");
  ConvGeometry geo = make_geometry(input_size, weight.sizes(), stride, padding);
  check_grad_out(grad_out, geo);
  check_plan(order, offsets, geo, grad_out);
  return geo;
}

ConvGeometry check_backward_weight_args(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& order,
                                        const at::Tensor& offsets, at::IntArrayRef weight_size, int64_t stride,
                                        int64_t padding) {
  check_same_device_and_dtype(x, "x", grad_out, "grad_out");
  ConvGeometry geo = make_geometry(x.sizes(), weight_size, stride, padding);
  check_grad_out(grad_out, geo);
  check_plan(order, offsets, geo, grad_out);
  return geo;
}

ConvGeometry check_backward_bias_args(const at::Tensor& grad_out, const at::Tensor& order, const at::Tensor& offsets,
                                      int64_t groups) {
  TORCH_CHECK(grad_out.dim() == 4, "hamfast.grouped_conv2d: grad_out must be [B, Cout, Ho, Wo], got ", grad_out.sizes());
  TORCH_CHECK(at::isFloatingType(grad_out.scalar_type()), "hamfast.grouped_conv2d: grad_out must be floating, got ",
              grad_out.scalar_type());
  TORCH_CHECK(groups >= 1, "hamfast.grouped_conv2d: groups must be >= 1, got ", groups);
  ConvGeometry geo{};
  geo.batch = grad_out.size(0);
  geo.out_channels = grad_out.size(1);
  geo.out_height = grad_out.size(2);
  geo.out_width = grad_out.size(3);
  geo.groups = groups;
  geo.kernel_h = geo.kernel_w = geo.stride = 1;
  check_plan(order, offsets, geo, grad_out);
  return geo;
}

at::Tensor plan_sample_groups(const at::Tensor& order, const at::Tensor& offsets, const ConvGeometry& geo) {
  const auto pos = at::arange(geo.batch, order.options());
  const auto group_of_pos = at::searchsorted(offsets.slice(0, 1), pos, /*out_int32=*/false, /*right=*/true)
                                .clamp_max(geo.groups - 1);
  return at::zeros({geo.batch}, order.options()).scatter_(0, order.clamp(0, geo.batch - 1), group_of_pos);
}

bool has_zero_extent(const ConvGeometry& geo) {
  return geo.batch == 0 || geo.in_channels == 0 || geo.out_channels == 0;
}

at::Tensor zero_extent_forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, const at::Tensor& order,
                               const at::Tensor& offsets, const ConvGeometry& geo) {
  const std::vector<int64_t> out_size{geo.batch, geo.out_channels, geo.out_height, geo.out_width};
  if (geo.batch == 0 || geo.out_channels == 0 || !bias.has_value()) return at::zeros(out_size, x.options());
  // Cin = 0: the convolution sums over nothing, so every pixel holds its group's bias.
  return bias->index_select(0, plan_sample_groups(order, offsets, geo))
      .view({geo.batch, geo.out_channels, 1, 1})
      .expand(out_size)
      .contiguous();
}

at::Tensor zero_extent_backward_input(const at::Tensor& grad_out, at::IntArrayRef input_size) {
  return at::zeros(input_size, grad_out.options());
}

at::Tensor zero_extent_backward_weight(const at::Tensor& x, at::IntArrayRef weight_size) {
  return at::zeros(weight_size, x.options());
}

TORCH_LIBRARY(hamfast, m) {
  m.def(
      "grouped_conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor order, Tensor offsets, int stride, int padding) "
      "-> Tensor");
  m.def(
      "grouped_conv2d_backward_input(Tensor grad_out, Tensor weight, Tensor order, Tensor offsets, int[] input_size, "
      "int stride, int padding) -> Tensor");
  m.def(
      "grouped_conv2d_backward_weight(Tensor grad_out, Tensor x, Tensor order, Tensor offsets, int[] weight_size, "
      "int stride, int padding) -> Tensor");
  // grad_bias [G, Cout]: per group, grad_out summed over its samples and pixels (deterministic).
  m.def("grouped_conv2d_backward_bias(Tensor grad_out, Tensor order, Tensor offsets, int groups) -> Tensor");
  // grad_x, grad_weight and grad_bias in one call (output_mask says which; the others are None), so
  // that the CUDA backend converts grad_out to NHWC once for grad-input and grad-weight.
  m.def(
      "grouped_conv2d_backward(Tensor grad_out, Tensor? x, Tensor? weight, Tensor order, Tensor offsets, "
      "int[] input_size, int[] weight_size, int stride, int padding, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // The forward, also returning x in channels_last (NHWC) memory for autograd to save in place of x:
  // on CUDA the copy the own forward kernel reads anyway, so the backward's own-kernel grad-weight
  // reads it instead of copying x again. hamfast.ops calls it when grouped_conv2d_saves_input_nhwc
  // says so (never on the CPU, whose kernels take x as given); the second result never aliases x.
  m.def(
      "grouped_conv2d_saving_input(Tensor x, Tensor weight, Tensor? bias, Tensor order, Tensor offsets, int stride, "
      "int padding) -> (Tensor, Tensor)");
  // Whether that saves a copy for this call (cuda::saves_input_nhwc: shapes, dtype and the autotune
  // cache, no sync); false on the CPU.
  m.def("grouped_conv2d_saves_input_nhwc(Tensor x, Tensor weight, int stride, int padding) -> bool");
  m.def("nhwc_copies() -> int", [] { return nhwc_copies(); });
  m.def("weight_copies() -> int", [] { return weight_copies(); });
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  // Forgets every measured choice (autotune.h): the next call per signature measures again.
  m.def("autotune_clear() -> ()", [] { autotune::clear(); });
  // Every kept measurement as JSON (autotune::report_json): key -> winner and median ms per candidate.
  m.def("autotune_report() -> str", [] { return autotune::report_json(); });
}

}  // namespace hamfast

extern "C" {
// Importing hamfast._C runs the static TORCH_LIBRARY registrations above; the module itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
