// The run-time autotune cache (autotune.h).
#include "autotune.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace hamfast {
namespace autotune {

namespace {

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}

// unique_ptr values: references returned by tune() stay valid while other keys are added.
std::map<std::string, std::unique_ptr<Result>>& cache() {
  static std::map<std::string, std::unique_ptr<Result>> c;
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

}  // namespace

Mode mode() {
  const char* value = std::getenv("HAMFAST_AUTOTUNE");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "on") == 0 || std::strcmp(value, "1") == 0)
    return Mode::kOn;
  if (std::strcmp(value, "off") == 0 || std::strcmp(value, "0") == 0) return Mode::kOff;
  throw std::invalid_argument(std::string("hamfast: HAMFAST_AUTOTUNE must be on or off, got '") + value + "'");
}

Result measure(const std::vector<std::string>& names, int reps, const std::function<double(int)>& time_ms) {
  const int n = static_cast<int>(names.size());
  std::vector<std::vector<double>> times(n);
  for (int round = 0; round <= std::max(1, reps); ++round)
    for (int i = 0; i < n; ++i) {
      const double ms = time_ms(i);
      if (round > 0) times[i].push_back(ms);  // round 0 warms caches and allocators up
    }
  Result r;
  r.names = names;
  for (int i = 0; i < n; ++i) {
    r.median_ms.push_back(median(times[i]));
    if (r.winner < 0 || r.median_ms[i] < r.median_ms[r.winner]) r.winner = i;
  }
  return r;
}

const Result* find(const std::string& key) {
  std::lock_guard<std::mutex> lock(cache_mutex());
  const auto it = cache().find(key);
  return it == cache().end() ? nullptr : it->second.get();
}

const Result& tune(const std::string& key, const std::vector<std::string>& names, int reps,
                   const std::function<double(int)>& time_ms) {
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto& slot = cache()[key];
  if (!slot) slot = std::make_unique<Result>(measure(names, reps, time_ms));
  return *slot;
}

void clear() {
  std::lock_guard<std::mutex> lock(cache_mutex());
  cache().clear();
}

std::string summary(const Result& r) {
  std::string text = r.winner >= 0 ? r.names[r.winner] : std::string("?");
  text += " (measured";
  for (size_t i = 0; i < r.names.size(); ++i) {
    char ms[32];
    std::snprintf(ms, sizeof(ms), " %.3g ms", r.median_ms[i]);
    text += (i ? ", " : " ") + r.names[i] + (std::isfinite(r.median_ms[i]) ? ms : " failed");
  }
  return text + ")";
}

namespace {

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "\"";
}

}  // namespace

std::string report_json() {
  std::lock_guard<std::mutex> lock(cache_mutex());
  std::string out = "{";
  for (const auto& [key, r] : cache()) {
    out += (out.size() > 1 ? ", " : "") + json_string(key) + ": {\"winner\": " +
           json_string(r->winner >= 0 ? r->names[r->winner] : "") + ", \"median_ms\": {";
    for (size_t i = 0; i < r->names.size(); ++i) {
      char ms[32];
      std::snprintf(ms, sizeof(ms), "%.6g", r->median_ms[i]);
      out += (i ? ", " : "") + json_string(r->names[i]) + ": " + (std::isfinite(r->median_ms[i]) ? ms : "null");
    }
    out += "}}";
  }
  return out + "}";
}

int64_t batch_bucket(int64_t batch) {
  int64_t bucket = 1;
  while (bucket < batch) bucket *= 2;
  return bucket;
}

}  // namespace autotune
}  // namespace hamfast
