// Contention profiles: where threads wait, by Python stack, as pprof (google/pprof's
// profile.proto, gzipped: `go tool pprof`, Pyroscope, Parca, the Perfetto UI) and as folded
// stacks (flamegraph.pl, inferno, speedscope). Pure: built from the public API's messages (the
// WatchEvents stream from the start, with GIL and hold events, and the final snapshot), so it
// serves recordings and live traces alike, and reads profiles back for the CI gate.
//
// What a sample means (docs/PROFILES.md):
//   contentions/count, delay/nanoseconds  lock waits (somebody else held the lock), by the
//                                         waiter's stack when the wait began: Go's block
//                                         profile's names and semantics;
//   condition-waits, condition-delay      Condition.wait / Event.wait / Queue.get (waiting for
//                                         notify() is not contention: kept apart);
//   lock-release, lock-release-hold       --locks all: holds, by the stack that took the lock
//                                         (Datadog's names);
//   gil-waits, gil-delay                  every take_gil, by thread (and stack when recorded).
// Totals equal the report's: waits the stream carried no event for (below --lock-threshold,
// lost, ended by the thread's exit) are kept under a frame that says why.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "daemon/common/status.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::client::profile {

struct SampleType {
  std::string type;
  std::string unit;
};

struct Frame {
  std::string function;
  std::string file;  // "" for frames threadscope adds ("[no Python stack: ...]")
  int64_t line = 0;  // 0: unknown
  bool operator<(const Frame& o) const {
    return std::tie(function, file, line) < std::tie(o.function, o.file, o.line);
  }
  bool operator==(const Frame& o) const {
    return function == o.function && file == o.file && line == o.line;
  }
};

struct Label {
  std::string key;
  std::string str;
  std::optional<int64_t> num;  // set: a numeric label
  bool operator<(const Label& o) const {
    return std::tie(key, str, num) < std::tie(o.key, o.str, o.num);
  }
};

// What a sample measures; the folded output's root frame.
enum class Kind { kLockWait, kConditionWait, kHold, kGilWait };

struct Sample {
  Kind kind = Kind::kLockWait;
  std::vector<Frame> frames;    // innermost first, as pprof wants
  std::vector<Label> labels;    // sorted by key
  std::vector<int64_t> values;  // one per Profile::sample_types
};

struct Profile {
  std::vector<SampleType> sample_types;
  std::string default_sample_type;
  SampleType period_type;
  int64_t time_nanos = 0;  // Unix time of the trace's start
  int64_t duration_nanos = 0;
  std::vector<std::string> comments;
  std::string mapping_file;  // the interpreter
  std::vector<Sample> samples;  // one per distinct (kind, stack, labels)

  // Index of a sample type, or -1.
  int Index(const std::string& type) const;
  // Sum of one sample type over all samples.
  int64_t Total(const std::string& type) const;
};

// Feed it the WatchEvents stream from the start (gil_events and hold_events on), then finish it
// with the final snapshot. Keeps only aggregates, so a long stream costs no memory per event.
class Builder {
 public:
  Builder();
  ~Builder();
  Builder(Builder&&) noexcept;
  Builder& operator=(Builder&&) noexcept;
  void Apply(const v1::WatchEventsResponse& event);
  Profile Finish(const v1::Snapshot& final);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

Profile Build(const v1::Snapshot& final, const std::vector<v1::WatchEventsResponse>& events);

// A serialized perftools.profiles.Profile (not compressed).
std::string ToPprof(const Profile& p);
// gzip (RFC 1952), as pprof files are stored; and back (plain input is returned as it is).
std::string Gzip(const std::string& data);
StatusOr<std::string> MaybeGunzip(const std::string& data);

// Folded stacks, root first, one line per stack: "lock wait;outer (a.py:3);inner (a.py:9) 1234"
// with the nanoseconds waited. Roots: "lock wait", "condition wait", "GIL wait" (holds are not
// waits and are left out).
std::string ToCollapsed(const Profile& p);

// A profile read back from pprof bytes (gzipped or not): the samples of the sample types this
// module writes, with their frames, labels and values. Errors name what is wrong.
StatusOr<Profile> ParsePprof(const std::string& bytes);

}  // namespace threadscope::client::profile
