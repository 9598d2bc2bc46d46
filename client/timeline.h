// Timelines for people who would rather look than read tables: a trace's threads, lock waits
// and hand-offs, and GIL holds and waits, as tracks of slices, flows and counters, written as
// Perfetto TrackEvent protobuf (ui.perfetto.dev, trace_processor) or Chrome JSON (the fallback
// chrome://tracing and speedscope read). Pure: built from the public API's messages (the final
// snapshot and the WatchEvents stream, GIL events included), so it serves recordings and live
// traces alike.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client::timeline {

struct Track {
  std::string key;     // "thread:<tid>", "gil:<tid>", "life:<tid>", "lock:<id>", "gil", ...
  std::string name;
  std::string parent;  // key of the parent track ("" = the process)
  int32_t tid = 0;     // thread tracks only
  bool counter = false;
};

struct Slice {
  std::string track;
  std::string name;
  std::string category;  // lifecycle, lock, gil, deadlock
  uint64_t begin_ns = 0;
  uint64_t end_ns = 0;  // == begin_ns: an instant
  std::vector<std::pair<std::string, std::string>> args;
  std::vector<uint64_t> flows_out;  // this slice hands off to the slice that terminates the flow
  std::vector<uint64_t> flows_in;
};

struct CounterPoint {
  std::string track;
  uint64_t ts_ns = 0;
  int64_t value = 0;
};

struct Timeline {
  int32_t pid = 0;
  std::string process_name;
  uint64_t start_ns = 0;
  uint64_t end_ns = 0;
  std::vector<Track> tracks;
  std::vector<Slice> slices;  // per track in time order
  std::vector<CounterPoint> counters;
  size_t flows = 0;
};

// `events` in stream order (WatchEvents from the start, with gil_events); `final` the snapshot
// at the end, for thread lifecycles and names. Waits and holds still open at the end are closed
// there.
Timeline Build(const v1::Snapshot& final, const std::vector<v1::WatchEventsResponse>& events);

// Serialized perfetto.protos.Trace (timestamps CLOCK_MONOTONIC, as threadscope records them).
std::string ToPerfetto(const Timeline& t);
// {"traceEvents": [...], "displayTimeUnit": "ns"}: X slices per thread, async b/e events for
// GIL, lifecycle and lock tracks, s/f flows, C counters, M names.
nlohmann::json ToChrome(const Timeline& t);

}  // namespace threadscope::client::timeline
