// Prometheus metrics from threadscope.v1 snapshots. Pure: a function of the snapshots and the
// lock series already given their own label (kept across scrapes so a lock's series does not
// jump in and out of the "other" fold, which would look like counter resets).
//
// Naming follows Prometheus conventions: `threadscope_` prefix, base units (seconds),
// `_total` on counters, histograms for waits and holds. Every series of a target carries
// `pid`, `executable` and the target's user labels (`--label service=api`).
#pragma once

#include <prometheus/metric_family.h>

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::metrics {

struct MetricsOptions {
  size_t top_locks = 10;  // locks with series of their own per target; the rest fold into "other"
  std::map<std::string, std::string> labels;  // daemon-wide labels (--label), on every series
};

// Lock ids given their own series so far, per target id. Updated by BuildMetrics.
using LockSeries = std::map<std::string, std::set<std::string>>;

std::vector<prometheus::MetricFamily> BuildMetrics(const std::vector<v1::Snapshot>& snapshots,
                                                   const MetricsOptions& options,
                                                   LockSeries* lock_series);

// Upper bounds (seconds) of the histogram buckets: powers of two from ~1 us to ~69 s.
const std::vector<double>& HistogramBounds();

// A log2 histogram of nanoseconds (v1::Histogram) as a Prometheus histogram in seconds.
prometheus::ClientMetric::Histogram ToPrometheus(const v1::Histogram& h);

}  // namespace threadscope::metrics
