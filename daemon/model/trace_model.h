// The whole reconstructed state of one traced process: threads (and, as they land, locks and
// the GIL), plus what the trace itself went through (records, losses, attach/detach marks).
//
// Live sessions and replays feed it the same records in the same order, which is why a report
// rebuilt from a recording equals the live one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "daemon/model/gil_model.h"
#include "daemon/model/lock_model.h"
#include "daemon/model/thread_model.h"

namespace threadscope::model {

struct TraceModelConfig {
  ThreadModelConfig threads;
  LockModelConfig locks;
  GilModelConfig gil;
};

struct TraceStats {
  uint64_t records = 0;          // records applied
  uint64_t decode_errors = 0;    // malformed records (skipped)
  uint64_t unknown_records = 0;  // well-formed records of a type this build does not know
  uint64_t lost_ringbuf = 0;     // records the kernel dropped because the ring was full
  uint64_t lost_stash = 0;       // entry probes that could not remember state for the return
  uint64_t lost_consumer = 0;    // records a slow recording client missed (recordings only)
  uint64_t lost() const { return lost_ringbuf + lost_stash + lost_consumer; }
};

// A change worth telling a live watcher about: a thread's, a lock's or the GIL's.
struct ModelEvent {
  enum class Kind { kThread, kLock, kGil } kind = Kind::kThread;
  ThreadChangeEvent thread;
  LockChangeEvent lock;
  GilChangeEvent gil;
};

class TraceModel {
 public:
  explicit TraceModel(TraceModelConfig config = {})
      : config_(config), threads_(config.threads), locks_(config.locks), gil_(config.gil) {}

  // Applies one record; appends what changed to `out` (may be null).
  void ApplyRecord(const uint8_t* data, size_t size, std::vector<ModelEvent>* out);
  void ApplyRecord(const RecordView& record, std::vector<ModelEvent>* out) {
    ApplyRecord(record.data, record.size, out);
  }
  // A run of records whose framing broke (RecordReader stopped at a bad size): what followed
  // could not be read, and counts as one decode error.
  void NoteBadFrame() { ++stats_.decode_errors; }

  const TraceModelConfig& config() const { return config_; }
  const ThreadModel& threads() const { return threads_; }
  const LockModel& locks() const { return locks_; }
  const GilModel& gil() const { return gil_; }
  const LocationTable& locations() const { return locations_; }
  const TraceStats& stats() const { return stats_; }
  std::optional<uint64_t> attached_ns() const { return attached_ns_; }
  std::optional<uint64_t> detached_ns() const { return detached_ns_; }
  std::optional<uint64_t> target_exited_ns() const { return target_exited_ns_; }
  // Timestamp of the newest record applied (0 before any).
  uint64_t last_ts_ns() const { return last_ts_ns_; }
  // The time a finished trace describes: detach or exit; else the newest record.
  uint64_t end_ns() const;

 private:
  TraceModelConfig config_;
  ThreadModel threads_;
  LockModel locks_;
  GilModel gil_;
  LocationTable locations_;
  TraceStats stats_;
  std::optional<uint64_t> attached_ns_;
  std::optional<uint64_t> detached_ns_;
  std::optional<uint64_t> target_exited_ns_;
  uint64_t last_ts_ns_ = 0;
  std::vector<ThreadChangeEvent> scratch_;
  std::vector<LockChangeEvent> lock_scratch_;
  std::vector<GilChangeEvent> gil_scratch_;
};

}  // namespace threadscope::model
