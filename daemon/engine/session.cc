#include "daemon/engine/session.h"

#include <algorithm>
#include <variant>

#include "daemon/common/version.h"
#include "recording/recording.h"
#include "daemon/engine/snapshot_builder.h"
#include "daemon/model/event_decoder.h"
#include "daemon/model/record_builder.h"
#include "recording/record_reader.h"
#include "probes/threadscope_events.h"

namespace threadscope::engine {

namespace {

constexpr size_t kRecordChunkBytes = 64 << 10;

bool LockMatches(const v1::WatchEventsRequest& req, const v1::LockEvent& event) {
  if (req.no_lock_events()) return false;
  if (event.change() == v1::LOCK_CHANGE_RELEASED && !req.hold_events()) return false;
  if (!req.lock_ids().empty() &&
      std::find(req.lock_ids().begin(), req.lock_ids().end(), event.lock_id()) ==
          req.lock_ids().end()) {
    return false;
  }
  if (!req.native_tids().empty()) {
    bool hit = false;
    for (int32_t tid : req.native_tids()) {
      hit |= tid == event.native_tid() || tid == event.other_native_tid();
      for (int32_t t : event.deadlock().native_tids()) hit |= tid == t;
    }
    if (!hit) return false;
  }
  return true;
}

// JFR-style threshold: short waits make no events (the statistics still count them).
// Decided on the model's event, before any message is built for it.
bool AboveThreshold(const model::LockChangeEvent& e, uint64_t threshold_ns) {
  if (threshold_ns == 0) return true;
  switch (e.change) {
    case model::LockChange::kWaitBegin:
    case model::LockChange::kWoken:
      return false;
    case model::LockChange::kWaitEnd:
      return e.wait_ns >= threshold_ns;
    case model::LockChange::kDeadlock:
    case model::LockChange::kDeadlockResolved:
    case model::LockChange::kOrderInversion:
      return true;
  }
  return true;
}

bool GilMatches(const v1::WatchEventsRequest& req, const v1::GilEvent& event) {
  if (!req.gil_events()) return false;
  if (req.native_tids().empty()) return true;
  for (int32_t tid : req.native_tids()) {
    if (tid == event.native_tid()) return true;
  }
  return false;
}

bool ChangeMatches(const v1::WatchEventsRequest& req, const v1::ThreadEvent& event) {
  if (req.no_thread_events()) return false;
  if (!req.changes().empty() &&
      std::find(req.changes().begin(), req.changes().end(), event.change()) ==
          req.changes().end()) {
    return false;
  }
  if (!req.native_tids().empty()) {
    bool hit = false;
    for (int32_t tid : req.native_tids()) {
      hit |= tid == event.thread().native_tid() || tid == event.actor_native_tid();
    }
    if (!hit) return false;
  }
  return true;
}

v1::ThreadEvent ToThreadEvent(const model::TraceModel& model, const model::ModelEvent& e) {
  v1::ThreadEvent out;
  out.set_ts_ns(e.thread.ts_ns);
  out.set_change(ToProto(e.thread.change));
  out.set_actor_native_tid(e.thread.actor_tid);
  if (const auto* t = model.threads().FindById(e.thread.thread_id)) {
    *out.mutable_thread() = ToProto(model.threads(), *t);
  }
  return out;
}

// Applies back-to-back records to `model` and appends what a watcher should hear: the model's
// changes, and the losses the records themselves carry. Shared by the live path and the
// history replay of WatchEvents(from_start), so both say the same thing.
void ApplyAndDescribe(model::TraceModel& model, const uint8_t* data, size_t size,
                      std::vector<v1::WatchEventsResponse>* out, uint64_t* records,
                      uint64_t lock_threshold_ns, bool gil_events, bool hold_events) {
  std::vector<model::ModelEvent> changes;
  recording::RecordReader reader(data, size);
  recording::RecordView record;
  while (reader.Next(&record)) {
    changes.clear();
    model.ApplyRecord(record, out ? &changes : nullptr);
    if (out) {
      for (const auto& e : changes) {
        v1::WatchEventsResponse r;
        if (e.kind == model::ModelEvent::Kind::kThread) {
          *r.mutable_thread_event() = ToThreadEvent(model, e);
        } else if (e.kind == model::ModelEvent::Kind::kGil) {
          // Thousands per second on busy targets: built only when a watcher asked for them.
          if (!gil_events) continue;
          *r.mutable_gil_event() = ToProto(model.locations(), e.gil);
        } else {
          // One per release with --locks=all: built only when a watcher asked for them.
          if (e.lock.change == model::LockChange::kReleased && !hold_events) continue;
          if (!AboveThreshold(e.lock, lock_threshold_ns)) continue;
          *r.mutable_lock_event() = ToProto(model.locks(), model.locations(), e.lock);
        }
        out->push_back(std::move(r));
      }
      if (record.header.type == TS_EV_LOST) {
        // Losses the records carry (the kernel's, the engine's) reach watchers in-band.
        auto decoded = model::DecodeEvent(record);
        if (const auto* lost = decoded.ok() ? std::get_if<ts_lost>(&decoded->payload) : nullptr) {
          v1::WatchEventsResponse r;
          r.mutable_lost_events()->set_count(lost->count);
          r.mutable_lost_events()->set_source(lost->source == TS_LOST_STASH
                                                  ? v1::LostEvents::SOURCE_PROBE_STASH
                                                  : v1::LostEvents::SOURCE_KERNEL_RING);
          out->push_back(std::move(r));
        }
      }
    }
    if (records) ++*records;
  }
  if (!reader.status().ok()) {
    // Framing is lost (never from the ring; a recording is validated before it is replayed):
    // the rest of the batch is one decode error.
    model.NoteBadFrame();
    if (records) ++*records;
  }
}

}  // namespace

EventSubscription::EventSubscription(const v1::WatchEventsRequest& request,
                                     StreamLimits limits, std::string client)
    : request_(request), client_(std::move(client)), queue_(limits.max_items, limits.max_bytes) {}

bool EventSubscription::Matches(const v1::WatchEventsResponse& r) const {
  if (r.has_thread_event()) return ChangeMatches(request_, r.thread_event());
  if (r.has_lock_event()) return LockMatches(request_, r.lock_event());
  if (r.has_gil_event()) return GilMatches(request_, r.gil_event());
  return true;
}

bool EventSubscription::FillFromHistory() {
  while (pending_.empty() && replay_ && next_chunk_ < history_.size()) {
    const RecordChunk& chunk = history_[next_chunk_++];
    std::vector<v1::WatchEventsResponse> part;
    ApplyAndDescribe(*replay_, reinterpret_cast<const uint8_t*>(chunk.bytes->data()),
                     chunk.bytes->size(), &part, nullptr, lock_threshold_ns_,
                     request_.gil_events(), request_.hold_events());
    for (auto& r : part) {
      if (Matches(r)) pending_.push_back(std::move(r));
    }
  }
  if (next_chunk_ >= history_.size()) {
    // Done with the past: let its memory go.
    history_.clear();
    history_.shrink_to_fit();
    next_chunk_ = 0;
    replay_.reset();
  }
  return !pending_.empty();
}

BoundedQueue<v1::WatchEventsResponse>::PopResult EventSubscription::Next(
    v1::WatchEventsResponse* out, std::chrono::milliseconds timeout) {
  using Pop = BoundedQueue<v1::WatchEventsResponse>::PopResult;
  if (truncated_records_) {
    out->Clear();
    out->mutable_lost_events()->set_source(v1::LostEvents::SOURCE_HISTORY_TRUNCATED);
    out->mutable_lost_events()->set_count(truncated_records_);
    truncated_records_ = 0;
    return Pop::kItem;
  }
  if (FillFromHistory()) {
    *out = std::move(pending_.front());
    pending_.pop_front();
    return Pop::kItem;
  }
  if (uint64_t lost = queue_.TakeDropped()) {
    out->Clear();
    out->mutable_lost_events()->set_source(v1::LostEvents::SOURCE_CLIENT_QUEUE);
    out->mutable_lost_events()->set_count(lost);
    return Pop::kItem;
  }
  return queue_.Pop(out, timeout);
}

BoundedQueue<v1::RecordingChunk>::PopResult RecordingSubscription::Next(
    v1::RecordingChunk* out, std::chrono::milliseconds timeout) {
  using Pop = BoundedQueue<v1::RecordingChunk>::PopResult;
  if (header_) {
    *out = std::move(*header_);
    header_.reset();
    return Pop::kItem;
  }
  if (next_chunk_ < history_.size()) {
    out->Clear();
    out->set_records(*history_[next_chunk_++].bytes);
    if (next_chunk_ == history_.size()) {
      history_.clear();
      history_.shrink_to_fit();
      next_chunk_ = 0;
    }
    return Pop::kItem;
  }
  return queue_.Pop(out, timeout);
}

Session::Session(std::string id, v1::Target target, const Clock& clock)
    : id_(std::move(id)),
      clock_(clock),
      pid_(target.pid()),
      target_(std::move(target)),
      model_(std::make_unique<model::TraceModel>(ModelConfigFromTarget(target_))) {
  target_.set_target_id(id_);
}

Session::~Session() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& w : watchers_) w->queue().Close();
  for (auto& r : recorders_) r->queue().Close();
}

v1::Target Session::target() const {
  std::lock_guard<std::mutex> lock(mu_);
  v1::Target t = target_;
  *t.mutable_stats() = ToProto(model_->stats());
  return t;
}

uint64_t Session::records_seen() const {
  std::lock_guard<std::mutex> lock(mu_);
  return model_->stats().records;
}

void Session::SetBudget(const v1::OverheadBudget& budget) {
  std::lock_guard<std::mutex> lock(mu_);
  *target_.mutable_budget() = budget;
}

v1::Snapshot Session::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t now = finished_ ? model_->end_ns() : clock_.MonotonicNowNs();
  return BuildSnapshot(*model_, target_, now, finished_);
}

bool Session::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void Session::AddViewer(uid_t uid) {
  std::lock_guard<std::mutex> lock(viewers_mu_);
  viewers_.insert(uid);
}

bool Session::IsViewer(uid_t uid) const {
  std::lock_guard<std::mutex> lock(viewers_mu_);
  return viewers_.count(uid) > 0;
}

size_t Session::raw_log_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return raw_log_bytes_;
}

std::vector<RecordChunk> Session::HistoryChunks() const {
  std::vector<RecordChunk> out(raw_log_.begin(), raw_log_.end());
  if (!raw_tail_.empty()) {
    out.push_back({std::make_shared<const std::string>(raw_tail_), raw_tail_records_});
  }
  return out;
}

v1::RecordingChunk Session::HeaderChunk() const {
  v1::RecordingChunk chunk;
  auto* h = chunk.mutable_header();
  h->set_format_version(recording::kRecordingFormatVersion);
  h->set_abi_version(TS_ABI_VERSION);
  *h->mutable_target() = target_;
  h->mutable_target()->clear_stats();
  h->set_created_unix_ns(clock_.RealtimeNowNs());
  h->set_threadscope_version(kThreadscopeVersion);
  return chunk;
}

std::shared_ptr<EventSubscription> Session::Watch(const v1::WatchEventsRequest& request,
                                                  const std::string& client,
                                                  StreamLimits limits) {
  auto sub = std::make_shared<EventSubscription>(request, limits, client);
  std::lock_guard<std::mutex> lock(mu_);
  if (request.from_start()) {
    // Only references to the history are taken here; the reader's thread replays it through a
    // model of its own, chunk by chunk, while records keep coming in (and queue for it).
    sub->history_ = HistoryChunks();
    sub->replay_ = std::make_unique<model::TraceModel>(model_->config());
    sub->lock_threshold_ns_ = target_.lock_threshold_ns();
    sub->truncated_records_ = raw_log_evicted_records_;
  }
  if (finished_) {
    v1::WatchEventsResponse r;
    r.mutable_target_finished()->set_state(target_.state());
    r.mutable_target_finished()->set_ts_ns(model_->end_ns());
    sub->queue().PushAndClose(std::move(r));
  } else {
    watchers_.push_back(sub);
  }
  return sub;
}

void Session::Unwatch(const std::shared_ptr<EventSubscription>& sub) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), sub), watchers_.end());
}

StatusOr<std::shared_ptr<RecordingSubscription>> Session::StreamRecording(
    const std::string& client, StreamLimits limits) {
  std::lock_guard<std::mutex> lock(mu_);
  if (raw_log_evicted_records_) {
    return OutOfRangeError("the records since attach no longer fit the " +
                           std::to_string(raw_log_budget_ >> 20) +
                           " MiB history; start recording right after attaching");
  }
  auto sub = std::make_shared<RecordingSubscription>(limits, client);
  sub->header_ = HeaderChunk();
  sub->history_ = HistoryChunks();
  if (finished_) {
    v1::RecordingChunk trailer;
    trailer.mutable_trailer()->set_end_ns(model_->end_ns());
    trailer.mutable_trailer()->set_state(target_.state());
    trailer.mutable_trailer()->set_records(model_->stats().records);
    sub->queue().PushAndClose(std::move(trailer));
  } else {
    recorders_.push_back(sub);
  }
  return sub;
}

void Session::Unstream(const std::shared_ptr<RecordingSubscription>& sub) {
  std::lock_guard<std::mutex> lock(mu_);
  recorders_.erase(std::remove(recorders_.begin(), recorders_.end(), sub), recorders_.end());
}

void Session::IngestRecords(const uint8_t* data, size_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::WatchEventsResponse> events;
  uint64_t records = 0;
  bool gil_events = false, hold_events = false;
  for (const auto& w : watchers_) {
    gil_events |= w->request().gil_events();
    hold_events |= w->request().hold_events();
  }
  ApplyAndDescribe(*model_, data, size, watchers_.empty() ? nullptr : &events, &records,
                   target_.lock_threshold_ns(), gil_events, hold_events);
  // History, in sealed chunks of about kRecordChunkBytes, within the budget.
  raw_tail_.append(reinterpret_cast<const char*>(data), size);
  raw_tail_records_ += records;
  raw_log_bytes_ += size;
  if (raw_tail_.size() >= kRecordChunkBytes) {
    raw_log_.push_back({std::make_shared<const std::string>(std::move(raw_tail_)),
                        raw_tail_records_});
    raw_tail_.clear();
    raw_tail_records_ = 0;
  }
  while (raw_log_bytes_ > raw_log_budget_ && !raw_log_.empty()) {
    raw_log_bytes_ -= raw_log_.front().bytes->size();
    raw_log_evicted_records_ += raw_log_.front().records;
    raw_log_.pop_front();
  }
  for (auto& rec : recorders_) {
    v1::RecordingChunk chunk;
    std::string* bytes = chunk.mutable_records();
    if (rec->pending_lost) {
      ts_lost lost{};
      lost.count = rec->pending_lost;
      lost.source = TS_LOST_CONSUMER;
      *bytes = model::MakeRecord(TS_EV_LOST, static_cast<uint32_t>(pid_), 0,
                                 model_->last_ts_ns(), lost);
    }
    bytes->append(reinterpret_cast<const char*>(data), size);
    size_t chunk_bytes = bytes->size();
    if (rec->queue().Push(std::move(chunk), chunk_bytes)) {
      rec->pending_lost = 0;
    } else {
      rec->pending_lost += records;
    }
  }
  for (const auto& r : events) {
    size_t bytes = r.ByteSizeLong();
    for (auto& w : watchers_) {
      if (w->Matches(r)) w->queue().Push(r, bytes);
    }
  }
}

void Session::EndStreamsOf(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t end = model_->last_ts_ns();
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    if ((*it)->client_ != client) {
      ++it;
      continue;
    }
    v1::WatchEventsResponse r;
    r.mutable_target_finished()->set_state(v1::TARGET_STATE_DETACHED);
    r.mutable_target_finished()->set_ts_ns(end);
    (*it)->queue().PushAndClose(std::move(r));
    it = watchers_.erase(it);
  }
  for (auto it = recorders_.begin(); it != recorders_.end();) {
    if ((*it)->client_ != client) {
      ++it;
      continue;
    }
    v1::RecordingChunk trailer;
    trailer.mutable_trailer()->set_end_ns(end);
    trailer.mutable_trailer()->set_state(v1::TARGET_STATE_DETACHED);
    trailer.mutable_trailer()->set_records(model_->stats().records);
    (*it)->queue().PushAndClose(std::move(trailer));
    it = recorders_.erase(it);
  }
}

void Session::Finish(v1::TargetState state) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  target_.set_state(state);
  for (auto& w : watchers_) {
    v1::WatchEventsResponse r;
    r.mutable_target_finished()->set_state(state);
    r.mutable_target_finished()->set_ts_ns(model_->end_ns());
    w->queue().PushAndClose(std::move(r));
  }
  watchers_.clear();
  for (auto& rec : recorders_) {
    v1::RecordingChunk trailer;
    trailer.mutable_trailer()->set_end_ns(model_->end_ns());
    trailer.mutable_trailer()->set_state(state);
    trailer.mutable_trailer()->set_records(model_->stats().records);
    rec->queue().PushAndClose(std::move(trailer));
  }
  recorders_.clear();
}

StatusOr<std::shared_ptr<ReplaySession>> ReplaySession::Create(
    std::string id, const std::vector<v1::RecordingChunk>& chunks) {
  TS_RETURN_IF_ERROR(recording::ValidateRecording(chunks));
  v1::Target target = chunks.front().header().target();
  target.set_state(v1::TARGET_STATE_RECORDING);
  std::shared_ptr<ReplaySession> s(new ReplaySession(std::move(id), std::move(target)));
  s->set_raw_log_budget(SIZE_MAX);
  for (size_t i = 1; i < chunks.size(); ++i) {
    if (!chunks[i].has_records()) continue;
    const std::string& bytes = chunks[i].records();
    s->IngestRecords(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  s->Finish(v1::TARGET_STATE_RECORDING);
  return s;
}

}  // namespace threadscope::engine
