// The CUDA dispatcher's autotune logic (csrc/cuda/dispatch.cpp + csrc/autotune.cpp) with an injected
// timer, compiled on the host against tests/cuda_emulation (no GPU, no clock): which candidates a
// pass gets, that the measured winner is kept per signature and reported, failures and ties, the
// fixed modes and the override. Prints one "ok <what>" or "FAIL <what>" line per check; exit status
// = number of failures.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "../autotune.h"
#include "dispatch.h"

using namespace hamfast::cuda;
namespace autotune = hamfast::autotune;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  failures += !ok;
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

const DeviceInfo kH200{9, 0, 132, "NVIDIA H200"};
const DeviceInfo kTuring{7, 5, 40, "Tesla T4"};
// CBRTiny layers at 128 px, G = 15: x [B, Cin, H, H] -> [B, Cout, H - 4, H - 4].
ConvShape layer(int batch, int cin, int cout, int side, int groups = 15) {
  return {batch, cin, side, side, groups, cout, 5, 5, 1, 0, side - 4, side - 4};
}

std::vector<std::string> names(const std::vector<Decision>& cands) {
  std::vector<std::string> out;
  for (const auto& c : cands) out.push_back(candidate_name(c));
  return out;
}
bool has(const std::vector<std::string>& v, const std::string& name) {
  for (const auto& n : v)
    if (n == name) return true;
  return false;
}
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const Context kFree{false, ""};

}  // namespace

int main() {
  unsetenv("HAMFAST_AUTOTUNE");
  unsetenv("HAMFAST_DISPATCH_OVERRIDE");
  autotune::clear();
  const ConvShape l1 = layer(64, 4, 64, 128), l2 = layer(64, 64, 128, 61);

  // Candidates: the fixed choice first, own tiles (and split-K for grad-weight), both cuDNN forms.
  {
    const auto fwd = candidates(PassKind::kForward, Precision::kTF32, l2, kH200);
    const auto n = names(fwd);
    check(n.size() == 5 && n[0] == candidate_name(choose(PassKind::kForward, Precision::kTF32, l2, kH200)) &&
              has(n, "tensor_core:128x128:1") && has(n, "tensor_core:128x64:1") && has(n, "tensor_core:64x64:1") &&
              has(n, "cudnn_groups_b") && has(n, "cudnn_per_group"),
          "tf32 forward on sm_90: the fixed choice first, 3 tiles and both cuDNN forms");
    const auto wg = names(candidates(PassKind::kGradWeight, Precision::kBFloat16, l1, kH200));
    check(has(wg, "tensor_core:64x64:1") && has(wg, "tensor_core:64x64:16") && has(wg, "tensor_core:128x128:4") &&
              wg.size() == 3 * 5 + 2 + (has({"tensor_core:64x64:1", "tensor_core:64x64:2", "tensor_core:64x64:4",
                                             "tensor_core:64x64:8", "tensor_core:64x64:16"}, wg[0]) ? 0 : 1),
          "grad-weight of layer 1: every tile at split-K 1..16 (" + std::to_string(wg.size()) + " candidates)");
    const auto small = names(candidates(PassKind::kGradWeight, Precision::kTF32, layer(1, 4, 64, 12, 1), kH200));
    check(!has(small, "tensor_core:128x128:2"), "no split-K below 128 reduction rows per slice");
    const auto exact = names(candidates(PassKind::kGradWeight, Precision::kFloat32, l1, kH200));
    bool simt_only = true;
    for (const auto& c : exact) simt_only &= c.rfind("tensor_core", 0) != 0;
    check(simt_only && has(exact, "simt:1") && has(exact, "simt:8") && has(exact, "cudnn_groups_b"),
          "float32 with TF32 off: the exact SIMT kernel with split-K and cuDNN, no tensor cores");
    const auto turing = names(candidates(PassKind::kForward, Precision::kBFloat16, l2, kTuring));
    check(turing.size() == 2 && turing[0] == "cudnn_groups_b" && turing[1] == "cudnn_per_group",
          "bf16 before sm_80: only the cuDNN forms");
  }
  // The fixed heuristic gives the exact SIMT grad-weight a split-K too (it used to be 1: 30 CTAs).
  {
    const Decision d = choose(PassKind::kGradWeight, Precision::kFloat32, l1, kH200);
    check(d.path == Path::kSimt && d.kernel.split_k > 1, "heuristic: SIMT grad-weight of layer 1 splits K (" +
                                                             std::to_string(d.kernel.split_k) + ")");
  }
  // First call: not measured yet, the fixed choice meanwhile; tune() times each candidate 1 + 3
  // times, keeps the fastest; later calls reuse it without timing.
  {
    bool measure = false;
    const Decision first = decide(PassKind::kGradInput, Precision::kTF32, l1, kH200, kFree, &measure);
    check(measure && contains(first.why, "not measured yet") && contains(first.why, "cudnn_per_group") &&
              candidate_name(first) == candidate_name(choose(PassKind::kGradInput, Precision::kTF32, l1, kH200)),
          "first call: measure first; explain lists the candidates");
    int calls = 0;
    bool measured_flag = true;
    const auto cands = candidates(PassKind::kGradInput, Precision::kTF32, l1, kH200);
    const Decision won = tune(PassKind::kGradInput, Precision::kTF32, l1, kH200, [&](const Decision& c) {
      ++calls;
      measured_flag &= c.measured;
      return c.path == Path::kCudnnGroupsB ? 0.5 : 3.0;  // layer-1 dgrad: the N = 4 GEMM loses
    });
    check(won.path == Path::kCudnnGroupsB && won.measured && calls == int(cands.size()) * 4 && measured_flag,
          "the fastest candidate wins; 1 warm-up + 3 timed rounds each, timed as measured (cudnn.benchmark on)");
    int later = 0;
    measure = true;
    const Decision again = decide(PassKind::kGradInput, Precision::kTF32, l1, kH200, kFree, &measure);
    tune(PassKind::kGradInput, Precision::kTF32, l1, kH200, [&](const Decision&) { ++later; return 0.0; });
    check(!measure && later == 0 && again.path == Path::kCudnnGroupsB && again.measured &&
              contains(again.why, "autotuned for this signature: cudnn_groups_b (measured") &&
              contains(describe(again, Precision::kTF32), "cudnn.benchmark on"),
          "a kept signature is reused, not measured again; explain says measured and cudnn.benchmark on");
    bool other = false;
    decide(PassKind::kGradInput, Precision::kTF32, layer(64, 4, 64, 128, 4), kH200, kFree, &other);
    bool bucket = true;
    decide(PassKind::kGradInput, Precision::kTF32, layer(33, 4, 64, 128), kH200, kFree, &bucket);
    bool device = false;
    decide(PassKind::kGradInput, Precision::kTF32, l1, DeviceInfo{9, 0, 114, "NVIDIA H100 PCIe"}, kFree, &device);
    bool dtype = false;
    decide(PassKind::kGradInput, Precision::kBFloat16, l1, kH200, kFree, &dtype);
    check(other && !bucket && device && dtype,
          "signatures: G, device and precision are kept apart; B = 33 shares B = 64's bucket");
    const std::string json = autotune::report_json();
    check(contains(json, "\"cuda NVIDIA H200 sm_90 132SMs tf32 grad-input B<=64 G15 4->64 k5x5 s1 p0 128x128\"") &&
              contains(json, "\"winner\": \"cudnn_groups_b\"") && contains(json, "\"cudnn_groups_b\": 0.5"),
          "report_json names the signature, the winner and the median per candidate");
  }
  // Failed candidates (out of memory: +inf) lose; when all fail, or all tie, the fixed choice stays.
  {
    autotune::clear();
    const double inf = std::numeric_limits<double>::infinity();
    const Decision d = tune(PassKind::kForward, Precision::kTF32, l2, kH200, [&](const Decision& c) {
      return c.path == Path::kCudnnPerGroup ? 2.0 : inf;
    });
    check(d.path == Path::kCudnnPerGroup && contains(d.why, "failed"), "failed candidates lose and show as failed");
    const Decision fixed = choose(PassKind::kForward, Precision::kBFloat16, l2, kH200);
    const Decision all_failed = tune(PassKind::kForward, Precision::kBFloat16, l2, kH200, [&](const Decision&) { return inf; });
    const Decision tie = tune(PassKind::kForward, Precision::kFloat16, l2, kH200, [](const Decision&) { return 1.0; });
    check(candidate_name(all_failed) == candidate_name(fixed) && candidate_name(tie) == candidate_name(fixed),
          "all failed or all tied: the fixed choice");
  }
  // Fixed modes: HAMFAST_AUTOTUNE=off, deterministic algorithms / graph capture (the caller's
  // context), and the override, all ignore kept measurements and never ask to measure.
  {
    autotune::clear();
    tune(PassKind::kForward, Precision::kTF32, l2, kH200,
         [](const Decision& c) { return c.path == Path::kCudnnGroupsB ? 0.1 : 1.0; });
    const std::string fixed = candidate_name(choose(PassKind::kForward, Precision::kTF32, l2, kH200));
    setenv("HAMFAST_AUTOTUNE", "off", 1);
    bool measure = true;
    const Decision off = decide(PassKind::kForward, Precision::kTF32, l2, kH200, kFree, &measure);
    check(!measure && candidate_name(off) == fixed && !off.measured && contains(off.why, "fixed (HAMFAST_AUTOTUNE=off)"),
          "HAMFAST_AUTOTUNE=off: the fixed heuristic, nothing measured");
    unsetenv("HAMFAST_AUTOTUNE");
    measure = true;
    const Decision det = decide(PassKind::kForward, Precision::kTF32, l2, kH200,
                                Context{true, "torch.use_deterministic_algorithms is on"}, &measure);
    check(!measure && candidate_name(det) == fixed && contains(det.why, "fixed (torch.use_deterministic_algorithms"),
          "a fixed context (deterministic algorithms, graph capture): the heuristic");
    setenv("HAMFAST_DISPATCH_OVERRIDE", "tensor_core:64x64:1", 1);
    measure = true;
    const Decision forced = decide(PassKind::kForward, Precision::kTF32, l2, kH200, kFree, &measure);
    check(!measure && candidate_name(forced) == "tensor_core:64x64:1" && contains(forced.why, "forced"),
          "HAMFAST_DISPATCH_OVERRIDE beats a kept measurement");
    unsetenv("HAMFAST_DISPATCH_OVERRIDE");
    measure = true;
    const Decision kept = decide(PassKind::kForward, Precision::kTF32, l2, kH200, kFree, &measure);
    check(!measure && kept.path == Path::kCudnnGroupsB, "autotune on again: the kept measurement");
  }
  return failures;
}
