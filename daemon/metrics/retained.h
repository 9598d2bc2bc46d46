// Ended targets' last values, kept on /metrics for a while (MetricsOptions::retain_seconds):
// a process that lived 5 s between two scrapes 15 s apart is still scraped once, with its final
// counters. Bounded in time and in count (the oldest go first). Pure: the caller gives the time.
#pragma once

#include <prometheus/metric_family.h>

#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <vector>

namespace threadscope::metrics {

class RetainedTargets {
 public:
  RetainedTargets(uint64_t retain_ns, size_t max_targets)
      : retain_ns_(retain_ns), max_targets_(max_targets) {}

  // A target that ended at `now_ns`, with the families TargetFamilies built from its final
  // snapshot. An earlier one of the same pid goes (its series have the same labels).
  void Add(std::string target_id, int pid, std::vector<prometheus::MetricFamily> families,
           uint64_t now_ns);
  // Forgets what expired and what a live target's pid now names (`live_pids`: the same labels
  // again), then returns the families of the rest.
  std::vector<prometheus::MetricFamily> Collect(uint64_t now_ns, const std::set<int>& live_pids);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string target_id;
    int pid = 0;
    uint64_t expires_ns = 0;
    std::vector<prometheus::MetricFamily> families;
  };
  uint64_t retain_ns_;
  size_t max_targets_;
  std::deque<Entry> entries_;  // oldest first
};

}  // namespace threadscope::metrics
