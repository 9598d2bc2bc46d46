// libFuzzer target: a recording file, as `threadscope report` reads it and as LoadRecording
// hands a client's chunks to the daemon: parsing, validation, and the replay that rebuilds the
// model and its snapshot.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "recording/recording.h"
#include "daemon/engine/session.h"

using namespace threadscope;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Invalid UTF-8 in string fields is an expected parse failure, not worth a log line each.
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  auto chunks = recording::ParseRecording(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.tsrec");
  if (!chunks.ok()) return 0;
  auto replay = engine::ReplaySession::Create("rec:fuzz", *chunks);
  if (!replay.ok()) return 0;
  (void)(*replay)->snapshot();
  (void)(*replay)->target();
  return 0;
}
