// A traced target: the model fed by records, what the API reads from it, and the streams it
// feeds. Live targets (LiveSession) get records from BPF; recordings (ReplaySession) from a
// file. Both go through Session::IngestRecords, which is what makes a replayed report equal
// the live one.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/model/trace_model.h"
#include "threadscope/v1/threadscope.pb.h"

namespace threadscope::engine {

// A bounded single-consumer queue. A full queue drops the new item and counts it, so a slow
// client never stalls the session; the consumer learns how many it missed.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}

  bool Push(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    if (items_.size() >= capacity_) {
      ++dropped_;
      return false;
    }
    items_.push_back(std::move(item));
    cv_.notify_one();
    return true;
  }
  // Pushes even when full (used for the final item, e.g. a trailer), then closes.
  void PushAndClose(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    items_.push_back(std::move(item));
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
      *out = std::move(items_.front());
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
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  uint64_t dropped_ = 0;
  bool closed_ = false;
};

// One WatchEvents client.
class EventSubscription {
 public:
  EventSubscription(const v1::WatchEventsRequest& request, size_t capacity);
  const v1::WatchEventsRequest& request() const { return request_; }
  bool Matches(const v1::WatchEventsResponse& event) const;
  // Next message for the client: a LostEvents first if events were dropped since the last call.
  BoundedQueue<v1::WatchEventsResponse>::PopResult Next(v1::WatchEventsResponse* out,
                                                        std::chrono::milliseconds timeout);
  BoundedQueue<v1::WatchEventsResponse>& queue() { return queue_; }

 private:
  v1::WatchEventsRequest request_;
  BoundedQueue<v1::WatchEventsResponse> queue_;
};

// One StreamRecording client: header, then record chunks, then a trailer.
class RecordingSubscription {
 public:
  explicit RecordingSubscription(size_t capacity) : queue_(capacity) {}
  BoundedQueue<v1::RecordingChunk>& queue() { return queue_; }
  // Records dropped because the client was slow; reported in-band as a ts_lost record.
  uint64_t pending_lost = 0;

 private:
  BoundedQueue<v1::RecordingChunk> queue_;
};

class Session {
 public:
  Session(std::string id, v1::Target target);
  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& id() const { return id_; }
  pid_t pid() const { return pid_; }
  v1::Target target() const;
  v1::Snapshot snapshot() const;
  bool finished() const;

  std::shared_ptr<EventSubscription> Watch(const v1::WatchEventsRequest& request);
  void Unwatch(const std::shared_ptr<EventSubscription>& sub);
  // Everything from attach on; OutOfRange if early records were already evicted.
  StatusOr<std::shared_ptr<RecordingSubscription>> StreamRecording();
  void Unstream(const std::shared_ptr<RecordingSubscription>& sub);

  // Live: removes the probes and finalizes. Recordings: no-op.
  virtual Status Detach() = 0;

  // Leases: clients renew by using the target; the manager detaches expired ones.
  void Touch();
  uint32_t lease_seconds() const { return lease_seconds_; }
  void set_lease_seconds(uint32_t s) { lease_seconds_ = s; }
  uint64_t idle_ns() const;

 protected:
  // Applies back-to-back records (as read from the ring or a recording chunk).
  void IngestRecords(const uint8_t* data, size_t size);
  // Marks the trace final: subscribers get TargetFinished / a trailer.
  void Finish(v1::TargetState state);
  void SetProbeTarget(v1::Target target);
  void set_raw_log_budget(size_t bytes) { raw_log_budget_ = bytes; }

 private:
  v1::RecordingChunk HeaderChunk() const;  // requires mu_

  const std::string id_;
  pid_t pid_ = 0;
  mutable std::mutex mu_;
  v1::Target target_;
  std::unique_ptr<model::TraceModel> model_;
  bool finished_ = false;
  // Raw history since attach, for StreamRecording and WatchEvents(from_start).
  std::deque<std::string> raw_log_;
  size_t raw_log_bytes_ = 0;
  size_t raw_log_budget_ = 64u << 20;
  bool raw_log_truncated_ = false;
  std::vector<std::shared_ptr<EventSubscription>> watchers_;
  std::vector<std::shared_ptr<RecordingSubscription>> recorders_;
  std::atomic<uint64_t> last_touch_ns_;
  uint32_t lease_seconds_ = 0;
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
