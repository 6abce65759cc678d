// Which implementation runs one pass of the grouped convolution on CUDA, and why. Plain C++ (no
// torch, no CUDA headers): decided from shapes, dtype and device properties only, never from the
// plan's contents, so choosing costs no device-to-host sync.
#pragma once

#include <string>

#include "grouped_conv_kernels.cuh"

namespace hamfast {
namespace cuda {

enum class PassKind : int { kForward = 0, kGradInput = 1, kGradWeight = 2 };
enum class Precision : int { kFloat64 = 0, kFloat32 = 1, kTF32 = 2, kBFloat16 = 3, kFloat16 = 4 };
enum class Path : int {
  kTensorCore = 0,     // grouped implicit-GEMM kernel on mma.sync
  kSimt = 1,           // the same kernel with exact FMA math
  kCudnnGroupsB = 2,   // weights gathered per sample, one cuDNN convolution with groups = B
  kCudnnPerGroup = 3,  // one cuDNN convolution per group (reads the offsets on the host: one sync)
};

// A tuned choice: applies to (pass, precision, cin, cout) on a device of compute capability
// sm_major.x when height <= height_max and batch <= batch_max (the first such entry wins; the
// tuner writes them sorted by height_max, then batch_max).
struct DispatchEntry {
  PassKind pass;
  Precision precision;
  int cin, cout;
  int height_max, batch_max;
  int sm_major;
  Path path;
  TileShape tile;
  int split_k;
  const char* device;  // the GPU it was tuned on
};

struct DeviceInfo {
  int sm_major, sm_minor, sm_count;
  std::string name;
};

struct Decision {
  Path path;
  KernelChoice kernel;  // for kTensorCore / kSimt
  std::string why;
};

Decision choose(PassKind pass, Precision precision, const ConvShape& shape, const DeviceInfo& device);

const char* pass_name(PassKind pass);
const char* precision_name(Precision precision);
// One line: path, tile / split-K and precision where they apply.
std::string describe(const Decision& decision, Precision precision);

}  // namespace cuda
}  // namespace hamfast
