#include "daemon/metrics/retained.h"

#include <algorithm>

namespace threadscope::metrics {

void RetainedTargets::Add(std::string target_id, int pid,
                          std::vector<prometheus::MetricFamily> families, uint64_t now_ns) {
  if (retain_ns_ == 0 || max_targets_ == 0) return;
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) { return e.pid == pid; }),
                 entries_.end());
  while (entries_.size() >= max_targets_) entries_.pop_front();
  entries_.push_back(Entry{std::move(target_id), pid, now_ns + retain_ns_, std::move(families)});
}

std::vector<prometheus::MetricFamily> RetainedTargets::Collect(uint64_t now_ns,
                                                               const std::set<int>& live_pids) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) {
                                  return now_ns >= e.expires_ns || live_pids.count(e.pid);
                                }),
                 entries_.end());
  std::vector<prometheus::MetricFamily> out;
  for (const auto& e : entries_) out.insert(out.end(), e.families.begin(), e.families.end());
  return out;
}

}  // namespace threadscope::metrics
