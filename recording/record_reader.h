// Framing of back-to-back records (probes/threadscope_events.h): a ring-buffer batch, a
// recording chunk, the records the engine writes itself.
//
// Every place that walks records uses this reader, and the decoder (event_decoder.h) interprets
// each record it yields. One policy for a size that cannot be right: a header that claims fewer
// bytes than a header, or more than are left, or bytes left over that are too few for a header.
// Framing is lost there: nothing after it can be trusted to start a record, so reading stops and
// status() says where (DataLoss). What that means is the caller's: a recording is refused, a live
// batch counts what it could not read as a decode error (TraceModel::NoteBadFrame).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "daemon/common/status.h"
#include "probes/threadscope_events.h"

namespace threadscope::recording {

// One record, as framed: its header (copied: records are only 8-byte aligned, and may come from
// a file) and its bytes, header included.
struct RecordView {
  ts_header header{};
  const uint8_t* data = nullptr;
  size_t size = 0;  // header.size
};

class RecordReader {
 public:
  RecordReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  explicit RecordReader(std::string_view bytes)
      : RecordReader(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) {}

  // The next whole record; false at the end, or at a bad frame (then status() is DataLoss).
  bool Next(RecordView* record) {
    if (!status_.ok() || offset_ == size_) return false;
    if (size_ - offset_ < sizeof(ts_header)) {
      status_ = DataLossError(std::to_string(size_ - offset_) + " bytes at offset " +
                              std::to_string(offset_) + " end inside a record header");
      return false;
    }
    ts_header h;
    std::memcpy(&h, data_ + offset_, sizeof(h));
    if (h.size < sizeof(ts_header) || h.size > size_ - offset_) {
      status_ = DataLossError("a record of " + std::to_string(h.size) + " bytes at offset " +
                              std::to_string(offset_) + " (" + std::to_string(size_ - offset_) +
                              " bytes left)");
      return false;
    }
    record->header = h;
    record->data = data_ + offset_;
    record->size = h.size;
    offset_ += h.size;
    ++records_;
    return true;
  }

  // OK while records are whole; DataLoss once a bad frame stopped the reading.
  const Status& status() const { return status_; }
  // Where the next record starts (or the bad frame, once status() is not OK).
  size_t offset() const { return offset_; }
  // Whole records read so far.
  size_t records() const { return records_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t offset_ = 0;
  size_t records_ = 0;
  Status status_;
};

}  // namespace threadscope::recording
