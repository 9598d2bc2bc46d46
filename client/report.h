// Rendering snapshots and events for people (text) and programs (JSON). The JSON report is
// the documented contract (README, "JSON report"); live and replayed traces render identically
// because everything here derives from the snapshot alone.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

nlohmann::json ThreadJson(const v1::Thread& t);
nlohmann::json ReportJson(const v1::Snapshot& snapshot);
nlohmann::json EventJson(const v1::WatchEventsResponse& event);

struct TextStyle {
  bool color = false;
  int width = 100;
};

// One line per attach: what was found, how well it is covered.
std::string AttachBanner(const v1::Target& target, const std::string& engine);
// The refreshing view of `threadscope attach` (at most max_rows thread rows).
std::string LiveView(const v1::Snapshot& snapshot, int max_rows, const TextStyle& style);
// The final summary printed when tracing stops.
std::string SummaryText(const v1::Snapshot& snapshot, const TextStyle& style);
// One line per event, for non-TTY text output; times are shown relative to base_ns (the attach).
std::string EventLine(const v1::WatchEventsResponse& event, uint64_t base_ns);

const char* StateName(v1::ThreadState state);

}  // namespace threadscope::client
