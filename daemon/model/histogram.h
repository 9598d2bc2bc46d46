// Distributions of durations, shared by the lock and GIL models.
#pragma once

#include <cstdint>

namespace threadscope::model {

// now - since, or 0 when records arrive out of order (a recording, a release by another thread):
// durations never wrap around into years.
inline uint64_t Elapsed(uint64_t now, uint64_t since) { return now > since ? now - since : 0; }

// log2 buckets of nanoseconds: bucket i counts values in [2^i, 2^(i+1)); bucket 0 also holds 0.
struct Log2Histogram {
  static constexpr int kBuckets = 40;  // the last bucket holds everything from ~9 minutes on
  uint64_t buckets[kBuckets] = {};
  uint64_t count = 0;
  uint64_t sum = 0;
  uint64_t max = 0;
  void Add(uint64_t ns);
  void Merge(const Log2Histogram& other);
};

}  // namespace threadscope::model
