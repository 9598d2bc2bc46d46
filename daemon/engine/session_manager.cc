#include "daemon/engine/session_manager.h"

#include "daemon/metrics/snapshot_metrics.h"

#include <spdlog/spdlog.h>

namespace threadscope::engine {

namespace {

std::string LiveId(pid_t pid) { return "pid:" + std::to_string(pid); }

bool IsPowerOfTwo(uint32_t v) { return v && !(v & (v - 1)); }

}  // namespace

StatusOr<std::unique_ptr<SessionManager>> SessionManager::Create(
    const SessionManagerOptions& options) {
  TS_ASSIGN_OR_RETURN(auto dis, target::Disassembler::Create());
  return std::unique_ptr<SessionManager>(new SessionManager(options, std::move(dis)));
}

SessionManager::SessionManager(const SessionManagerOptions& options,
                               std::unique_ptr<target::Disassembler> dis)
    : options_(options), proc_(options.proc_root), dis_(std::move(dis)) {
  reaper_ = std::thread([this] { ReapLoop(); });
}

SessionManager::~SessionManager() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  reap_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  DetachAll();
}

StatusOr<SessionManager::AttachResult> SessionManager::Attach(pid_t pid,
                                                              const v1::AttachOptions& options) {
  if (pid <= 0) {
    return InvalidArgumentError("pid must be a positive integer, got " + std::to_string(pid));
  }
  uint32_t ring = options.ring_buffer_bytes();
  if (ring != 0 && (ring < (64u << 10) || !IsPowerOfTwo(ring))) {
    return InvalidArgumentError("ring_buffer_bytes must be 0 or a power of two >= 65536, got " +
                                std::to_string(ring));
  }
  if (!options.locks().empty() && !loader::ParseLockMode(options.locks())) {
    return InvalidArgumentError("locks must be off, contended or all, got '" + options.locks() +
                                "'");
  }
  if (options.has_lock_stack_frames() && options.lock_stack_frames() > TS_PY_MAX_FRAMES) {
    return InvalidArgumentError("lock_stack_frames must be 0-" +
                                std::to_string(TS_PY_MAX_FRAMES) + ", got " +
                                std::to_string(options.lock_stack_frames()));
  }
  if (options.acquire_stack_frames() > TS_PY_MAX_FRAMES) {
    return InvalidArgumentError("acquire_stack_frames must be 0-" +
                                std::to_string(TS_PY_MAX_FRAMES) + ", got " +
                                std::to_string(options.acquire_stack_frames()));
  }
  for (const auto& [name, value] : options.labels()) {
    if (!metrics::IsUserLabelName(name)) {
      return InvalidArgumentError("label '" + name +
                                  "' is not a Prometheus label name threadscope leaves to users");
    }
  }
  std::lock_guard<std::mutex> attach_lock(attach_mu_);
  std::string id = LiveId(pid);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(id);
    if (it != sessions_.end()) {
      if (!it->second->finished()) {
        it->second->Touch();
        return AttachResult{it->second, false};
      }
      sessions_.erase(it);  // an exited target with a recycled pid
    }
  }
  LiveSessionOptions live = options_.live;
  if (ring) live.ring_buffer_bytes = ring;
  if (!options.locks().empty()) live.locks = *loader::ParseLockMode(options.locks());
  live.lock_threshold_ns = options.lock_threshold_ns();
  if (options.has_lock_stack_frames()) {
    live.stack_frames = static_cast<uint8_t>(options.lock_stack_frames());
  }
  live.acquire_stack_frames = static_cast<uint8_t>(options.acquire_stack_frames());
  live.gil = !options.has_gil() || options.gil();
  live.labels = {options.labels().begin(), options.labels().end()};
  TS_ASSIGN_OR_RETURN(auto session, LiveSession::Attach(id, pid, live, proc_, *dis_));
  session->set_lease_seconds(options.lease_seconds());
  std::lock_guard<std::mutex> lock(mu_);
  sessions_[id] = session;
  return AttachResult{session, true};
}

StatusOr<std::shared_ptr<Session>> SessionManager::Get(const std::string& target_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(target_id);
  if (it == sessions_.end()) {
    return NotFoundError("no target " + (target_id.empty() ? std::string("(empty id)") : target_id) +
                         "; ListTargets shows the attached ones");
  }
  it->second->Touch();
  return it->second;
}

StatusOr<v1::Snapshot> SessionManager::Detach(const std::string& target_id) {
  std::shared_ptr<Session> session;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(target_id);
    if (it == sessions_.end()) return NotFoundError("no target " + target_id);
    session = it->second;
    sessions_.erase(it);
  }
  TS_RETURN_IF_ERROR(session->Detach());
  return session->snapshot();
}

std::vector<std::shared_ptr<Session>> SessionManager::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Session>> out;
  for (auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

StatusOr<std::shared_ptr<Session>> SessionManager::LoadRecording(
    const std::vector<v1::RecordingChunk>& chunks) {
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = "rec:" + std::to_string(next_recording_++);
  }
  TS_ASSIGN_OR_RETURN(auto session, ReplaySession::Create(id, chunks));
  std::lock_guard<std::mutex> lock(mu_);
  sessions_[id] = session;
  // Bound memory: drop the oldest loaded recordings.
  size_t recordings = 0;
  for (auto& [k, s] : sessions_) recordings += k.rfind("rec:", 0) == 0;
  for (auto it = sessions_.begin(); recordings > options_.max_recordings && it != sessions_.end();) {
    if (it->first.rfind("rec:", 0) == 0 && it->first != id) {
      it = sessions_.erase(it);
      --recordings;
    } else {
      ++it;
    }
  }
  return std::shared_ptr<Session>(session);
}

void SessionManager::DetachAll() {
  std::map<std::string, std::shared_ptr<Session>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.swap(sessions_);
  }
  for (auto& [id, s] : all) {
    Status st = s->Detach();
    if (!st.ok()) spdlog::warn("detach {}: {}", id, st.ToString());
  }
}

void SessionManager::ReapLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    reap_cv_.wait_for(lock, std::chrono::seconds(1));
    std::vector<std::shared_ptr<Session>> expired;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      uint32_t lease = it->second->lease_seconds();
      if (lease > 0 && it->second->idle_ns() > uint64_t{lease} * 1000000000ull) {
        expired.push_back(it->second);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& s : expired) {
      spdlog::info("{}: lease expired (no client for {} s); detaching", s->id(),
                   s->lease_seconds());
      Status st = s->Detach();
      if (!st.ok()) spdlog::warn("detach {}: {}", s->id(), st.ToString());
    }
    lock.lock();
  }
}

}  // namespace threadscope::engine
