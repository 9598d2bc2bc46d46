#include "daemon/model/histogram.h"

#include <algorithm>

namespace threadscope::model {

void Log2Histogram::Add(uint64_t ns) {
  int b = 0;
  while (b + 1 < kBuckets && (ns >> (b + 1)) != 0) ++b;
  ++buckets[b];
  ++count;
  sum += ns;
  max = std::max(max, ns);
}

void Log2Histogram::Merge(const Log2Histogram& o) {
  for (int i = 0; i < kBuckets; ++i) buckets[i] += o.buckets[i];
  count += o.count;
  sum += o.sum;
  max = std::max(max, o.max);
}

}  // namespace threadscope::model
