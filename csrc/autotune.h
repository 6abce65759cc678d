// Run-time autotuning, like torch.backends.cudnn.benchmark: the first call with a shape signature
// times every candidate implementation of a pass and keeps the fastest for the rest of the
// process. Plain C++ (no torch): a backend supplies the signature and a timer (tests inject a fake
// one, tests/autotune/check_autotune.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hamfast {
namespace autotune {

// HAMFAST_AUTOTUNE: "on" (default) measures; "off" keeps each backend's fixed rule, so the choice
// depends on shapes only and a run repeats bit for bit (candidates round differently). Anything
// else is an error naming the variable.
enum class Mode { kOn, kOff };
Mode mode();

struct Result {
  int winner = -1;                 // index into names
  std::vector<std::string> names;  // the candidates, in the order they were offered
  std::vector<double> median_ms;   // per candidate
};

// Times every candidate `reps` times after one untimed warm-up round, round robin (a loaded machine
// slows all of them alike). The smallest median wins; ties go to the lower index, so equal timings
// give the same answer every time. time_ms(i) runs candidate i once and returns milliseconds.
Result measure(const std::vector<std::string>& names, int reps, const std::function<double(int)>& time_ms);

// The process-wide cache: find() returns the result kept for `key` or nullptr; tune() measures once
// per key (under a lock, so concurrent first calls measure once) and returns the kept result.
const Result* find(const std::string& key);
const Result& tune(const std::string& key, const std::vector<std::string>& names, int reps,
                   const std::function<double(int)>& time_ms);
void clear();

// One line: "loop_parallel (measured loop 1.20 ms, loop_parallel 0.90 ms, fold 3.40 ms)"; a
// candidate that could not run (the timer returned +infinity) shows as "failed".
std::string summary(const Result& result);

// Every kept result as one JSON object, keys sorted:
// {"<key>": {"winner": "<name>", "median_ms": {"<name>": 1.25, "<failed name>": null, ...}}, ...}.
std::string report_json();

// The batch size rounded up to a power of two: one measurement serves batches of similar size.
int64_t batch_bucket(int64_t batch);

}  // namespace autotune
}  // namespace hamfast
