// libFuzzer target: the record decoder and the model over a stream of raw records, as the
// daemon ingests a ring-buffer batch (the BPF programs write them, but a recording replayed by
// LoadRecording is any client's bytes).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "recording/record_reader.h"
#include "daemon/model/trace_model.h"
#include "probes/threadscope_events.h"

using namespace threadscope::model;
using threadscope::recording::RecordReader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  TraceModelConfig config;
  // The first byte picks the model's configuration, as a recording's header would.
  config.threads.joins = static_cast<JoinVisibility>(data[0] % 3);
  config.threads.body_done_visible = data[0] & 4;
  config.locks.exact_ownership = data[0] & 8;
  ++data;
  --size;
  TraceModel model(config);
  std::vector<ModelEvent> events;
  // Framed as every ingest frames records (recording/record_reader.h).
  RecordReader reader(data, size);
  RecordView record;
  while (reader.Next(&record)) {
    auto decoded = DecodeEvent(record);
    if (decoded.ok()) (void)DescribeEvent(*decoded);
    events.clear();
    model.ApplyRecord(record, &events);
  }
  if (!reader.status().ok()) model.NoteBadFrame();
  (void)model.end_ns();
  (void)ToValidUtf8(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
