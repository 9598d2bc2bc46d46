// Decoding of raw records (probes/threadscope_events.h) into typed events.
//
// The decoder is the only code that interprets record bytes; RecordReader (record_reader.h)
// frames them, and is the only code that walks a run of records. The decoder copies each record
// into its C struct (records in the ring buffer are only 8-byte aligned and may come from a
// file), checks sizes, and accepts records longer than it knows (written by a newer ABI) by
// ignoring the tail.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "daemon/common/status.h"
#include "daemon/common/text.h"
#include "probes/threadscope_events.h"
#include "recording/record_reader.h"

namespace threadscope::model {

// Records as framed (recording/record_reader.h: the framing is the recording format's, shared
// with the CLI); the model interprets them.
using recording::RecordView;

// TS_EV_PY_LOCATION: the fixed part and its strings.
struct PyLocationRecord {
  ts_py_location fixed;
  std::string file;
  std::string function;
};

// TS_EV_PY_TYPE: a type object's address and its tp_name.
struct PyTypeRecord {
  ts_py_type fixed;
  std::string name;
};

using EventPayload =
    std::variant<ts_thread_start_begin, ts_thread_start_end, ts_thread_clone, ts_thread_bootstrap,
                 ts_thread_body_done, ts_thread_exit, ts_thread_rename, ts_thread_sentinel,
                 ts_thread_join, ts_thread_detach, ts_sem_wait, ts_preexisting_thread, ts_lost,
                 ts_trace_mark, ts_lock_event, ts_futex_wake, ts_gil_event, PyLocationRecord,
                 ts_park, ts_unpark, ts_cs_slow, PyTypeRecord>;

struct DecodedEvent {
  ts_header header;
  EventPayload payload;
  std::optional<ts_py_stack> stack;  // the record's stack trailer (TS_HDR_PY_STACK)
};

// A location record as the daemon writes it (size rounded up to 8, strings after the fixed part).
std::string MakePyLocationRecord(uint32_t pid, uint64_t ts_ns, const ts_py_location& fixed,
                                 const std::string& file, const std::string& function);

// A type-name record as the daemon writes it.
std::string MakePyTypeRecord(uint32_t pid, uint64_t ts_ns, uint64_t type, const std::string& name,
                             uint32_t flags = 0);

// Decodes one record. `size` must be at least header.size. Unknown types are kUnimplemented
// (the caller counts and skips them); malformed ones are kDataLoss.
StatusOr<DecodedEvent> DecodeEvent(const uint8_t* data, size_t size);
inline StatusOr<DecodedEvent> DecodeEvent(const RecordView& record) {
  return DecodeEvent(record.data, record.size);
}

// Human-readable one-liner for logs and tools/dump_recording.
std::string EventTypeName(uint16_t type);
std::string DescribeEvent(const DecodedEvent& event);

// The model's callers keep their spelling; the sanitizer is daemon/common/text's.
using ::threadscope::ToValidUtf8;

// Copies a fixed-size C string field (comm) into valid UTF-8.
std::string CommToString(const char (&comm)[TS_COMM_LEN]);

}  // namespace threadscope::model
