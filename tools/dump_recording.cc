// Prints every record of a recording, one line each: for debugging the model against what the
// probes actually said.   bazel run //tools:dump_recording -- FILE
#include <cstdio>

#include "recording/recording.h"
#include "daemon/model/event_decoder.h"

using namespace threadscope;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: dump_recording FILE\n");
    return 2;
  }
  auto chunks = recording::ReadRecordingFile(argv[1]);
  if (!chunks.ok()) {
    std::fprintf(stderr, "%s\n", chunks.status().ToString().c_str());
    return 1;
  }
  for (const auto& chunk : *chunks) {
    if (!chunk.has_records()) continue;
    recording::RecordReader reader(chunk.records());
    recording::RecordView record;
    while (reader.Next(&record)) {
      auto e = model::DecodeEvent(record);
      std::printf("%s\n", e.ok() ? model::DescribeEvent(*e).c_str() : e.status().ToString().c_str());
    }
    if (!reader.status().ok()) std::printf("%s\n", reader.status().ToString().c_str());
  }
  return 0;
}
