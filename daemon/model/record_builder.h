// Builds a raw record (probes/threadscope_events.h) with a filled header. Used where records are
// written outside BPF: the engine's own records (pre-existing threads, losses, marks) and the
// tests' event generator.
#pragma once

#include <cstdint>
#include <string>

#include "probes/threadscope_events.h"

namespace threadscope::model {

template <typename T>
std::string MakeRecord(uint16_t type, uint32_t pid, uint32_t tid, uint64_t ts_ns, T body) {
  body.h.type = type;
  body.h.version = TS_ABI_VERSION;
  body.h.flags = 0;
  body.h.size = sizeof(T);
  body.h.ts_ns = ts_ns;
  body.h.pid = pid;
  body.h.tid = tid;
  return std::string(reinterpret_cast<const char*>(&body), sizeof(T));
}

}  // namespace threadscope::model
