// The autotune cache's selection logic with an injected timer (no clock is read): which candidate
// wins, ties, that a kept signature is not measured again, and the HAMFAST_AUTOTUNE modes. Prints
// one "ok <what>" or "FAIL <what>" line per check; exit status = number of failures.
#include "autotune.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

using namespace hamfast::autotune;

namespace {

int failures = 0;
void check(bool ok, const std::string& what) {
  failures += !ok;
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

const std::vector<std::string> kNames = {"loop", "loop_parallel", "fold"};

}  // namespace

int main() {
  // Fixed times per candidate: the smallest wins.
  {
    const double ms[] = {3.0, 1.0, 2.0};
    int calls = 0;
    const Result r = measure(kNames, 3, [&](int i) { ++calls; return ms[i]; });
    check(r.winner == 1, "the fastest candidate wins");
    check(calls == 3 * 4, "one warm-up round plus 3 timed rounds per candidate");
    check(r.median_ms[0] == 3.0 && r.median_ms[2] == 2.0, "medians are kept per candidate");
    check(summary(r) == "loop_parallel (measured loop 3 ms, loop_parallel 1 ms, fold 2 ms)", "summary: " + summary(r));
  }
  // The warm-up round is ignored and one slow outlier does not decide (median, not mean).
  {
    std::vector<int> seen(3, 0);
    const Result r = measure(kNames, 3, [&](int i) {
      const int n = seen[i]++;
      if (n == 0) return i == 2 ? 1000.0 : 0.1;  // warm-up: fold pays a first-call cost
      if (i == 0 && n == 2) return 50.0;            // one outlier round of loop
      return i == 0 ? 1.0 : i == 1 ? 1.5 : 1.2;
    });
    check(r.winner == 0, "median over rounds: one outlier and the warm-up do not decide");
  }
  // Ties go to the lower index: equal timings always give the same answer.
  {
    const Result r = measure(kNames, 2, [](int i) { return i == 0 ? 2.0 : 1.0; });
    check(r.winner == 1, "a tie between later candidates goes to the lower index");
  }
  // The cache: measured once per key, kept for the process, cleared on request.
  {
    clear();
    int calls = 0;
    auto slow_fold = [&](int i) { ++calls; return i == 2 ? 0.5 : 1.0; };
    check(find("key A") == nullptr, "an unseen signature has no kept result");
    const Result& first = tune("key A", kNames, 2, slow_fold);
    const int after_first = calls;
    const Result& again = tune("key A", kNames, 2, [&](int) { ++calls; return 0.0; });
    check(first.winner == 2 && &again == &first && calls == after_first, "a kept signature is not measured again");
    check(find("key A") != nullptr && find("key A")->winner == 2, "find returns the kept winner");
    tune("key B", kNames, 2, [](int i) { return i == 0 ? 0.1 : 1.0; });
    check(find("key A")->winner == 2 && find("key B")->winner == 0, "signatures are kept apart");
    clear();
    check(find("key A") == nullptr, "clear forgets every signature");
  }
  // A timer that throws leaves nothing behind: the next call measures again.
  {
    clear();
    bool threw = false;
    try {
      tune("key C", kNames, 1, [](int i) -> double {
        if (i == 1) throw std::runtime_error("candidate failed");
        return 1.0;
      });
    } catch (const std::runtime_error&) {
      threw = true;
    }
    check(threw && find("key C") == nullptr, "a failed measurement is not kept");
  }
  // Modes.
  {
    unsetenv("HAMFAST_AUTOTUNE");
    check(mode() == Mode::kOn, "on by default");
    setenv("HAMFAST_AUTOTUNE", "off", 1);
    check(mode() == Mode::kOff, "HAMFAST_AUTOTUNE=off");
    setenv("HAMFAST_AUTOTUNE", "sometimes", 1);
    bool refused = false;
    try {
      mode();
    } catch (const std::invalid_argument& e) {
      refused = std::string(e.what()).find("HAMFAST_AUTOTUNE must be on or off") != std::string::npos;
    }
    check(refused, "a bad HAMFAST_AUTOTUNE is a clear error");
    unsetenv("HAMFAST_AUTOTUNE");
  }
  check(batch_bucket(1) == 1 && batch_bucket(16) == 16 && batch_bucket(17) == 32 && batch_bucket(0) == 1,
        "batch buckets are powers of two");
  return failures;
}
