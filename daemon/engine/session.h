// A traced target: the model fed by records, what the API reads from it, and the streams it
// feeds. Live targets (LiveSession) get records from BPF; recordings (ReplaySession) from a
// file. Both go through Session::IngestRecords, which is what makes a replayed report equal
// the live one.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/clock.h"
#include "daemon/common/status.h"
#include "daemon/model/trace_model.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::engine {

// A bounded single-consumer queue, bounded both in items and in bytes (what a client may hold
// the daemon's memory with). A full queue drops the new item and counts it, so a slow client
// never stalls the session; the consumer learns how many it missed.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t max_items, size_t max_bytes = SIZE_MAX)
      : max_items_(max_items), max_bytes_(max_bytes) {}

  bool Push(T item, size_t bytes = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    if (items_.size() >= max_items_ || bytes > max_bytes_ - std::min(bytes_, max_bytes_)) {
      ++dropped_;
      return false;
    }
    bytes_ += bytes;
    items_.emplace_back(std::move(item), bytes);
    cv_.notify_one();
    return true;
  }
  // Pushes even when full (used for the final item, e.g. a trailer), then closes.
  void PushAndClose(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    items_.emplace_back(std::move(item), 0);
    closed_ = true;
    cv_.notify_all();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  enum class PopResult { kItem, kTimeout, kClosed };
  PopResult Pop(T* out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !items_.empty() || closed_; });
    if (!items_.empty()) {
      *out = std::move(items_.front().first);
      bytes_ -= items_.front().second;
      items_.pop_front();
      return PopResult::kItem;
    }
    return closed_ ? PopResult::kClosed : PopResult::kTimeout;
  }
  uint64_t TakeDropped() {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t n = dropped_;
    dropped_ = 0;
    return n;
  }

 private:
  const size_t max_items_;
  const size_t max_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<T, size_t>> items_;
  size_t bytes_ = 0;
  uint64_t dropped_ = 0;
  bool closed_ = false;
};

// Raw records kept since attach, in immutable chunks: a reader takes references under the
// session lock and reads them outside it, so history never stalls the records coming in.
struct RecordChunk {
  std::shared_ptr<const std::string> bytes;
  uint64_t records = 0;
};

// Limits of what one client's stream may hold in the daemon while it is not reading.
struct StreamLimits {
  size_t max_items = 8192;
  size_t max_bytes = 16u << 20;
};

// One WatchEvents client. With from_start, the history is replayed lazily, one chunk at a time,
// by the thread that reads (the client's RPC), then live events follow from the queue.
class EventSubscription {
 public:
  EventSubscription(const v1::WatchEventsRequest& request, StreamLimits limits,
                    std::string client = "");
  const v1::WatchEventsRequest& request() const { return request_; }
  bool Matches(const v1::WatchEventsResponse& event) const;
  // Next message for the client: history first; a LostEvents first if events were dropped.
  BoundedQueue<v1::WatchEventsResponse>::PopResult Next(v1::WatchEventsResponse* out,
                                                        std::chrono::milliseconds timeout);
  BoundedQueue<v1::WatchEventsResponse>& queue() { return queue_; }

 private:
  friend class Session;
  bool FillFromHistory();

  v1::WatchEventsRequest request_;
  std::string client_;  // whose stream: it ends when that client's last lease does
  BoundedQueue<v1::WatchEventsResponse> queue_;
  // History (from_start): chunks to replay through `replay_`, and what they produced.
  std::vector<RecordChunk> history_;
  size_t next_chunk_ = 0;
  std::unique_ptr<model::TraceModel> replay_;
  uint64_t lock_threshold_ns_ = 0;
  std::deque<v1::WatchEventsResponse> pending_;
  uint64_t truncated_records_ = 0;  // history lost before this client came (told in-band)
};

// One StreamRecording client: header, the history since attach, then live chunks, a trailer.
class RecordingSubscription {
 public:
  explicit RecordingSubscription(StreamLimits limits, std::string client = "")
      : client_(std::move(client)), queue_(limits.max_items, limits.max_bytes) {}
  BoundedQueue<v1::RecordingChunk>& queue() { return queue_; }
  // Next chunk for the client: the header and history first.
  BoundedQueue<v1::RecordingChunk>::PopResult Next(v1::RecordingChunk* out,
                                                   std::chrono::milliseconds timeout);
  // Records dropped because the client was slow; reported in-band as a ts_lost record.
  uint64_t pending_lost = 0;

 private:
  friend class Session;
  std::string client_;
  std::optional<v1::RecordingChunk> header_;
  std::vector<RecordChunk> history_;
  size_t next_chunk_ = 0;
  BoundedQueue<v1::RecordingChunk> queue_;
};

class Session {
 public:
  // `clock`: a snapshot's `now` while the trace runs, a recording header's creation time.
  Session(std::string id, v1::Target target, const Clock& clock = SystemClock());
  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return id_; }
  pid_t pid() const { return pid_; }
  v1::Target target() const;
  v1::Snapshot snapshot() const;
  bool finished() const;

  // `client`: whose stream (EndStreamsOf ends it when that client detaches).
  std::shared_ptr<EventSubscription> Watch(const v1::WatchEventsRequest& request,
                                           const std::string& client = "",
                                           StreamLimits limits = {});
  void Unwatch(const std::shared_ptr<EventSubscription>& sub);
  // Everything from attach on; OutOfRange if early records were already evicted.
  StatusOr<std::shared_ptr<RecordingSubscription>> StreamRecording(
      const std::string& client = "", StreamLimits limits = {65536, 32u << 20});
  // The client's trace ended (its last lease on a trace others still hold): its streams end
  // as if the target had been detached (TargetFinished / a trailer).
  void EndStreamsOf(const std::string& client);
  void Unstream(const std::shared_ptr<RecordingSubscription>& sub);

  // Live: removes the probes and finalizes. Recordings: no-op.
  virtual Status Detach() = 0;

  // Who may read this target: the uids that passed the check when it was attached or loaded.
  // Grants belong to this session object, never to a pid or an id that a later one could reuse.
  void AddViewer(uid_t uid);
  bool IsViewer(uid_t uid) const;
  // Bytes of raw history kept (a loaded recording's size is charged to its owner's quota).
  size_t raw_log_bytes() const;

 protected:
  // Applies back-to-back records (as read from the ring or a recording chunk).
  void IngestRecords(const uint8_t* data, size_t size);
  // Marks the trace final: subscribers get TargetFinished / a trailer.
  void Finish(v1::TargetState state);
  const Clock& clock() const { return clock_; }
  // Records the model took since attach, and the target's budget standing (--overhead-budget).
  uint64_t records_seen() const;
  void SetBudget(const v1::OverheadBudget& budget);
  void set_raw_log_budget(size_t bytes) { raw_log_budget_ = bytes; }

 private:
  v1::RecordingChunk HeaderChunk() const;  // requires mu_
  std::vector<RecordChunk> HistoryChunks() const;  // requires mu_

  const std::string id_;
  const Clock& clock_;
  pid_t pid_ = 0;
  mutable std::mutex mu_;
  v1::Target target_;
  std::unique_ptr<model::TraceModel> model_;
  bool finished_ = false;
  // Raw history since attach, for StreamRecording and WatchEvents(from_start).
  // Sealed chunks of about kRecordChunkBytes, then the open tail.
  std::deque<RecordChunk> raw_log_;
  std::string raw_tail_;
  uint64_t raw_tail_records_ = 0;
  size_t raw_log_bytes_ = 0;
  size_t raw_log_budget_ = 64u << 20;
  uint64_t raw_log_evicted_records_ = 0;
  std::vector<std::shared_ptr<EventSubscription>> watchers_;
  std::vector<std::shared_ptr<RecordingSubscription>> recorders_;
  mutable std::mutex viewers_mu_;
  std::set<uid_t> viewers_;
};

// A finished target rebuilt from a recording.
class ReplaySession : public Session {
 public:
  static StatusOr<std::shared_ptr<ReplaySession>> Create(
      std::string id, const std::vector<v1::RecordingChunk>& chunks);
  Status Detach() override { return OkStatus(); }

 private:
  using Session::Session;
};

}  // namespace threadscope::engine
