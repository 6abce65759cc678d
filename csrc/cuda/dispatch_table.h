// Tuned dispatch table of the grouped convolution on CUDA: which path and tile configuration runs
// each pass of each CBRTiny-like layer shape. Written by scripts/tune_dispatch.py on a GPU (it
// times every custom-kernel configuration and the two cuDNN formulations, and keeps the fastest);
// see csrc/cuda/dispatch.h for how entries are matched.
//
// THIS SHIPPED TABLE IS EMPTY: it has never been tuned (no GPU was available when the kernels
// were written), so every call uses the heuristic in dispatch.cpp. Run
//   python scripts/tune_dispatch.py --write csrc/cuda/dispatch_table.h
// on the target GPU and rebuild to fill it.
#pragma once

#include "dispatch.h"

namespace hamfast {
namespace cuda {

// BEGIN TUNED ENTRIES (generated; one line per entry)
inline constexpr DispatchEntry kTunedEntries[] = {
    // {pass, precision, cin, cout, height_max, batch_max, sm_major, path, tile, split_k, "device"},
    {PassKind::kForward, Precision::kFloat64, -1, -1, 0, 0, 0, Path::kSimt, TileShape::k64x64, 1, "sentinel"},
};
// END TUNED ENTRIES

}  // namespace cuda
}  // namespace hamfast
