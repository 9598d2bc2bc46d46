// Python source locations for captured stacks. Pure.
//
// The probes record frames as (code object, instruction) pairs; the daemon resolves each new pair
// once (daemon/target/py_code.h) and writes a TS_EV_PY_LOCATION record ahead of its first use,
// so a recording resolves exactly as the live trace did. This table holds those definitions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/model/event_decoder.h"

namespace threadscope::model {

struct CodeLocation {
  std::string file;
  std::string function;  // qualified name on 3.11+ ("Cache.get"), plain name before
  int32_t line = -1;     // -1: unknown
  bool unreadable = false;
};

// Location ids, innermost frame first. Id 0 is "unknown" (a pair nobody defined).
struct PyStack {
  std::vector<uint32_t> frames;
  bool truncated = false;  // deeper than what was recorded
  bool empty() const { return frames.empty(); }
};

class LocationTable {
 public:
  LocationTable();

  void Define(const PyLocationRecord& record);
  // Frames the daemon marked as not Python (3.11+ shims and unstarted frames) are left out.
  PyStack Resolve(const ts_py_stack& stack) const;
  const CodeLocation& Get(uint32_t id) const;
  size_t size() const { return locations_.size() - 1; }

  // The frame a user means by "where": the innermost one outside the threading and queue
  // modules (whose own frames are how every Condition, Event and Queue reaches its lock), or
  // the innermost one when all are inside them.
  size_t PrimaryFrame(const PyStack& stack) const;

 private:
  std::map<std::pair<uint64_t, uint64_t>, uint32_t> ids_;  // (code, instr) -> id; 0 = skip
  std::vector<CodeLocation> locations_;
  std::map<std::tuple<std::string, std::string, int32_t, bool>, uint32_t> by_place_;
};

}  // namespace threadscope::model
