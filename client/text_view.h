// The text views, for people: the attach banner, the refreshing live view, the final summary,
// one line per event. Terminal-safe (every string a target chose goes through Printable) and
// derived from API messages alone.
#pragma once

#include <cstdint>
#include <string>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client {

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

}  // namespace threadscope::client
