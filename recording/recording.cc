#include "recording/recording.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <cerrno>
#include <cstdint>

#include "recording/record_reader.h"

namespace threadscope::recording {

StatusOr<std::unique_ptr<RecordingWriter>> RecordingWriter::Create(const std::string& path) {
  auto w = std::make_unique<RecordingWriter>();
  w->path_ = path;
  w->out_.open(path, std::ios::binary | std::ios::trunc);
  if (!w->out_) return ErrnoToStatus(errno, "cannot create recording " + path);
  w->out_.write(kRecordingMagic, sizeof(kRecordingMagic) - 1);
  if (!w->out_) return ErrnoToStatus(errno, "cannot write recording " + path);
  return w;
}

Status RecordingWriter::Write(const v1::RecordingChunk& chunk) {
  if (!google::protobuf::util::SerializeDelimitedToOstream(chunk, &out_) || !out_) {
    return ErrnoToStatus(errno ? errno : EIO, "cannot write recording " + path_);
  }
  return OkStatus();
}

Status RecordingWriter::Close() {
  out_.flush();
  out_.close();
  if (out_.fail()) return ErrnoToStatus(errno ? errno : EIO, "cannot finish recording " + path_);
  return OkStatus();
}

Status ValidateRecording(const std::vector<v1::RecordingChunk>& chunks) {
  if (chunks.empty() || !chunks.front().has_header()) {
    return InvalidArgumentError("a recording starts with a header chunk");
  }
  const auto& header = chunks.front().header();
  if (header.format_version() == 0 || header.format_version() > kRecordingFormatVersion) {
    return FailedPreconditionError("recording format " + std::to_string(header.format_version()) +
                                   " is newer than this threadscope understands (" +
                                   std::to_string(kRecordingFormatVersion) + "); upgrade threadscope");
  }
  for (size_t i = 1; i < chunks.size(); ++i) {
    if (chunks[i].has_header()) return InvalidArgumentError("a recording has one header");
    if (!chunks[i].has_records()) continue;
    recording::RecordReader reader(chunks[i].records());
    recording::RecordView record;
    while (reader.Next(&record)) {
    }
    if (!reader.status().ok()) {
      return DataLossError("chunk " + std::to_string(i) + ": " + reader.status().message());
    }
  }
  return OkStatus();
}

namespace {

// The chunks after the magic; `name` names the input in errors.
StatusOr<std::vector<v1::RecordingChunk>> ParseChunks(google::protobuf::io::ZeroCopyInputStream* in,
                                                     const std::string& name) {
  std::vector<v1::RecordingChunk> chunks;
  while (true) {
    v1::RecordingChunk chunk;
    bool clean_eof = false;
    // Bounded by the input: protobuf never allocates more than what a field's declared size
    // and the bytes left allow (50 MB at once at most, protobuf 3.21 kSafeStringSize).
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&chunk, in, &clean_eof)) {
      if (clean_eof) break;
      return DataLossError(name + " is truncated or corrupt after " +
                           std::to_string(chunks.size()) + " chunks");
    }
    chunks.push_back(std::move(chunk));
  }
  TS_RETURN_IF_ERROR(ValidateRecording(chunks).WithContext(name));
  return chunks;
}

}  // namespace

StatusOr<std::vector<v1::RecordingChunk>> ReadRecordingFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoToStatus(errno, "cannot open recording " + path);
  std::string magic(sizeof(kRecordingMagic) - 1, '\0');
  in.read(magic.data(), static_cast<std::streamsize>(magic.size()));
  if (!in || magic != kRecordingMagic) {
    return InvalidArgumentError(path + " is not a threadscope recording (bad magic)");
  }
  google::protobuf::io::IstreamInputStream stream(&in);
  return ParseChunks(&stream, path);
}

StatusOr<std::vector<v1::RecordingChunk>> ParseRecording(std::string_view bytes,
                                                         const std::string& name) {
  std::string_view magic(kRecordingMagic, sizeof(kRecordingMagic) - 1);
  if (bytes.substr(0, magic.size()) != magic) {
    return InvalidArgumentError(name + " is not a threadscope recording (bad magic)");
  }
  bytes.remove_prefix(magic.size());
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
    return InvalidArgumentError(name + " is larger than 2 GiB; read it from a file instead");
  }
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  return ParseChunks(&stream, name);
}

}  // namespace threadscope::recording
