// A small recording for tests of sessions and the service: one thread started, joined and
// finished, one start that failed, a target that exited.
#pragma once

#include <string>
#include <vector>

#include "recording/recording.h"
#include "tests/unit/event_generator.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::testing {

inline v1::Target SampleTarget() {
  v1::Target t;
  t.set_pid(1000);
  t.set_python_version("3.11.2");
  t.set_symbols(v1::SYMBOL_LEVEL_DYNAMIC_ONLY);
  t.set_join_visibility(v1::JOIN_VISIBILITY_BLOCKING_ONLY);
  t.set_body_done_visible(true);
  auto* p = t.add_probes();
  p->set_name("thread_start");
  p->set_attached(true);
  return t;
}

inline std::vector<v1::RecordingChunk> Recording(const std::vector<std::string>& record_batches,
                                                 bool trailer = true) {
  std::vector<v1::RecordingChunk> chunks(1);
  auto* h = chunks[0].mutable_header();
  h->set_format_version(recording::kRecordingFormatVersion);
  h->set_abi_version(TS_ABI_VERSION);
  *h->mutable_target() = SampleTarget();
  for (const auto& b : record_batches) {
    v1::RecordingChunk c;
    c.set_records(b);
    chunks.push_back(c);
  }
  if (trailer) {
    v1::RecordingChunk t;
    t.mutable_trailer()->set_state(v1::TARGET_STATE_EXITED);
    chunks.push_back(t);
  }
  return chunks;
}

inline std::vector<std::string> SampleBatches(EventGenerator& g) {
  return {Batch({g.Mark(TS_MARK_ATTACHED), g.Preexisting(1000, 5, "python3")}),
          Batch({g.StartBegin(1000, 0xb0), g.Clone(1000, 1001),
                 g.StartEnd(1000, 0xb0, true, 0x7f01), g.Bootstrap(1001, 0xb0),
                 g.Sentinel(1001, 0x10, 0x20), g.SemWait(TS_EV_SEM_WAIT_BEGIN, 1000, 0x20)}),
          Batch({g.BodyDone(1001), g.Exit(1001), g.SemWait(TS_EV_SEM_WAIT_END, 1000, 0x20, 0),
                 g.StartBegin(1000, 0xb1), g.StartEnd(1000, 0xb1, false, 0), g.Exit(1000),
                 g.Mark(TS_MARK_TARGET_EXITED)})};
}

}  // namespace threadscope::testing
