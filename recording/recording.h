// Recording files: "THREADSCOPE-RECORDING\n" + varint-delimited threadscope.v1.RecordingChunk
// messages (header first, then raw records, then a trailer). The same chunks travel over the
// StreamRecording / LoadRecording RPCs, so a file is exactly what the API streamed.
#pragma once

#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/status.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::recording {

inline constexpr char kRecordingMagic[] = "THREADSCOPE-RECORDING\n";
inline constexpr uint32_t kRecordingFormatVersion = 1;

class RecordingWriter {
 public:
  static StatusOr<std::unique_ptr<RecordingWriter>> Create(const std::string& path);
  Status Write(const v1::RecordingChunk& chunk);
  Status Close();

 private:
  std::string path_;
  std::ofstream out_;
};

// Reads and validates a whole recording file: a header first, a supported format version, and
// record chunks that are whole records. Errors: NotFound, InvalidArgument (not a recording),
// DataLoss (truncated or corrupt), FailedPrecondition (a newer format).
StatusOr<std::vector<v1::RecordingChunk>> ReadRecordingFile(const std::string& path);

// The same for a recording held in memory (magic included); `name` names it in errors.
StatusOr<std::vector<v1::RecordingChunk>> ParseRecording(std::string_view bytes,
                                                         const std::string& name);

// Checks a chunk sequence (from a file or a LoadRecording stream).
Status ValidateRecording(const std::vector<v1::RecordingChunk>& chunks);

}  // namespace threadscope::recording
