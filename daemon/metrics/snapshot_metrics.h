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
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::metrics {

struct MetricsOptions {
  size_t top_locks = 10;  // locks with series of their own per target; the rest fold into "other"
  std::map<std::string, std::string> labels;  // daemon-wide labels (--label), on every series
  // An ended target's last values stay on /metrics this long (0: not at all), so a process
  // shorter than the scrape interval is still scraped once; at most this many targets are kept
  // (the oldest go first).
  int retain_seconds = 60;
  size_t retain_max_targets = 256;
};

// Lock ids given their own series so far, per target id. Updated by BuildMetrics.
using LockSeries = std::map<std::string, std::set<std::string>>;

// Auto-attach's counters as metrics see them (plain data: the metrics need no auto-attacher).
struct AutoAttachMetrics {
  struct Rule {
    std::string name;
    uint64_t matches = 0;
    uint64_t attaches = 0;
    std::map<std::string, uint64_t> refusals;  // by reason, every reason present (even at 0)
    std::map<std::string, uint64_t> failures;
  };
  std::vector<Rule> rules;
  size_t targets = 0;
  size_t max_targets = 0;
  uint64_t execs_seen = 0;
  uint64_t execs_lost = 0;
};

// The daemon itself, for the series it exports with nothing attached.
struct DaemonState {
  std::string version;
  std::map<std::string, size_t> targets_by_state;  // attached, exited, detached, execed, retained
  std::optional<AutoAttachMetrics> auto_attach;     // unset: no rules
  double cpu_seconds = 0;        // user + system, since the daemon started
  double resident_bytes = 0;
  double start_time_seconds = 0;  // Unix time
};

// Every series: the targets' (from their snapshots), ended targets' retained families (already
// built by TargetFamilies; their pids are not among `snapshots`), and the daemon's own.
std::vector<prometheus::MetricFamily> BuildMetrics(
    const std::vector<v1::Snapshot>& snapshots, const MetricsOptions& options,
    LockSeries* lock_series, const DaemonState* daemon = nullptr,
    const std::vector<prometheus::MetricFamily>* retained = nullptr);

// The families of one target alone: what is kept of it for retain_seconds once it ended.
std::vector<prometheus::MetricFamily> TargetFamilies(const v1::Snapshot& snapshot,
                                                     const MetricsOptions& options,
                                                     std::set<std::string>* own_series);

// Upper bounds (seconds) of the histogram buckets: powers of two from ~1 us to ~69 s.
const std::vector<double>& HistogramBounds();

// A log2 histogram of nanoseconds (v1::Histogram) as a Prometheus histogram in seconds.
prometheus::ClientMetric::Histogram ToPrometheus(const v1::Histogram& h);

}  // namespace threadscope::metrics
