#include "daemon/budget/budget_controller.h"
#include "daemon/engine/session_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "settings/trace_settings.h"

namespace threadscope::engine {

namespace {

std::string MiB(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

std::unique_ptr<SessionManager> SessionManager::Create(const SessionManagerOptions& options,
                                                       Attacher attacher, const Clock& clock) {
  return std::unique_ptr<SessionManager>(new SessionManager(options, std::move(attacher), clock));
}

SessionManager::SessionManager(const SessionManagerOptions& options, Attacher attacher,
                               const Clock& clock)
    : options_(options), attacher_(std::move(attacher)), clock_(clock), proc_(options.proc_root) {
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

StatusOr<LiveSessionOptions> SessionManager::ValidateOptions(const v1::AttachOptions& options,
                                                             const Client& client) const {
  const SessionLimits& lim = options_.limits;
  LiveSessionOptions live = options_.live;
  settings::SettingsLimits limits;
  limits.labels = {lim.max_labels, lim.max_label_name_bytes, lim.max_label_value_bytes};
  TS_ASSIGN_OR_RETURN(live.trace, settings::ValidateAttachOptions(options, limits));
  if (live.trace.overhead_budget > 0 && options_.calibrate_on_first_budget) {
    std::call_once(calibrate_once_, [&] { calibrated_ = options_.calibrate_on_first_budget(); });
    live.calibration = calibrated_;
  }
  // Who may ask for how much is the daemon's policy, not the settings' validity.
  uint32_t ring = options.ring_buffer_bytes();
  uint32_t max_ring = client.may_trace_anything ? lim.max_ring_bytes
                                                : lim.max_ring_bytes_unprivileged;
  if (ring > max_ring) {
    return InvalidArgumentError("ring_buffer_bytes may be at most " + MiB(max_ring) +
                                (client.may_trace_anything ? "" : " for callers other than root") +
                                ", got " + MiB(ring));
  }
  return live;
}

namespace {

// What a second client asked for that the shared trace does not do.
std::string OptionsNotice(const v1::Target& t, const settings::TraceSettings& asked,
                          const v1::AttachOptions& raw) {
  std::vector<std::string> differ;
  if (raw.locks() != v1::LOCK_TRACING_UNSPECIFIED &&
      t.lock_mode() != settings::LockModeName(asked.locks)) {
    differ.push_back("--locks " + std::string(settings::LockModeName(asked.locks)) +
                     " (traced with " + t.lock_mode() + ")");
  }
  if (t.lock_threshold_ns() != asked.lock_threshold_ns) differ.push_back("--lock-threshold");
  if (raw.has_gil() && raw.gil() != t.gil().enabled() && t.gil().reason().empty()) {
    differ.push_back(std::string("--gil ") + (raw.gil() ? "on" : "off"));
  }
  if (t.gil().enabled() && raw.gil_mode() == v1::GIL_MODE_FULL &&
      t.gil().mode() == v1::GIL_MODE_WAITS) {
    differ.push_back("--gil full (traced with waits)");
  }
  if (raw.has_lock_stack_frames() && t.python_stacks().enabled() &&
      raw.lock_stack_frames() != t.python_stacks().frames()) {
    differ.push_back("--lock-stacks");
  }
  if (raw.acquire_stack_frames() != t.python_stacks().frames_acquire() &&
      t.python_stacks().enabled()) {
    differ.push_back("--acquire-stacks");
  }
  if (raw.gil_stack_frames() != t.python_stacks().frames_gil() && t.python_stacks().enabled() &&
      t.gil().enabled()) {
    differ.push_back("--gil-stacks");
  }
  std::map<std::string, std::string> labels(t.labels().begin(), t.labels().end());
  if (!asked.labels.empty() && asked.labels != labels) differ.push_back("--label");
  if (differ.empty()) return "";
  std::string s = t.target_id() + " was already traced by another client; shared as it is, "
                                  "without: ";
  for (size_t i = 0; i < differ.size(); ++i) s += (i ? ", " : "") + differ[i];
  return s;
}

}  // namespace

StatusOr<SessionManager::AttachResult> SessionManager::Attach(
    std::shared_ptr<const target::Process> process, const v1::AttachOptions& options,
    const Client& client) {
  if (!process) return InvalidArgumentError("no target process");
  TS_ASSIGN_OR_RETURN(LiveSessionOptions live, ValidateOptions(options, client));
  const SessionLimits& lim = options_.limits;
  uint32_t seconds = options.lease_seconds() ? options.lease_seconds() : lim.default_lease_seconds;
  if (!client.may_trace_anything) {
    // Only the operator may hold a trace open long without using it.
    seconds = std::min(seconds, lim.max_lease_seconds_unprivileged);
  }
  if (client.until_exit && client.may_trace_anything) seconds = 0;  // never idles out
  pid_t pid = process->pid();

  // One attach per process at a time; different processes attach concurrently (nothing a
  // target controls, like parsing its ELF files, happens under a lock every attach needs).
  std::shared_ptr<std::mutex> pid_mu;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = attaching_[pid];
    if (!slot) slot = std::make_shared<std::mutex>();
    pid_mu = slot;
  }
  std::lock_guard<std::mutex> pid_lock(*pid_mu);
  auto release_slot = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attaching_.find(pid);
    if (it != attaching_.end() && it->second == pid_mu && pid_mu.use_count() <= 2) {
      attaching_.erase(it);
    }
  };

  AttachResult result;
  Status refused;  // decided under mu_, returned after it (release_slot takes mu_ too)
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_t live_sessions = 0, held_by_uid = 0;
    for (auto& [id, e] : sessions_) {
      if (e.recording) continue;
      ++live_sessions;
      bool mine = std::any_of(e.leases.begin(), e.leases.end(),
                              [&](const Lease& l) { return l.uid == client.uid; });
      held_by_uid += mine;
      auto* ls = dynamic_cast<LiveSession*>(e.session.get());
      if (!ls || e.session->finished() || ls->process()->pid() != pid ||
          ls->process()->start_ticks() != process->start_ticks()) {
        continue;
      }
      // The same process is traced already: share it, with a lease of this client's own.
      if (e.leases.size() >= lim.max_leases_per_session) {
        refused = ResourceExhaustedError(id + " has " + std::to_string(e.leases.size()) +
                                         " clients already (the limit)");
        break;
      }
      Lease lease{"L" + std::to_string(next_lease_++), client.id, client.uid, seconds,
                  clock_.MonotonicNowNs(), client.until_exit && seconds == 0};
      e.leases.push_back(lease);
      spdlog::debug("{}: lease {} for client {} (shared)", id, lease.id, client.id);
      result.session = e.session;
      result.lease_id = lease.id;
      result.notice = OptionsNotice(e.session->target(), live.trace, options);
      break;
    }
    if (!result.session && refused.ok()) {
      if (live_sessions >= lim.max_live_sessions) {
        refused = ResourceExhaustedError("the daemon traces " + std::to_string(live_sessions) +
                                         " processes already (its limit); detach one first");
      } else if (!client.may_trace_anything && held_by_uid >= lim.max_sessions_per_uid) {
        refused = ResourceExhaustedError("uid " + std::to_string(client.uid) + " traces " +
                                         std::to_string(held_by_uid) +
                                         " processes already (the per-user limit)");
      }
    }
  }
  if (!refused.ok()) {
    release_slot();
    return refused;
  }
  if (result.session) {
    release_slot();
    return result;
  }

  std::string id = "pid:" + std::to_string(pid) + ":" + std::to_string(next_seq_++);
  auto session = attacher_ ? attacher_(id, process, live, proc_, clock_)
                           : StatusOr<std::shared_ptr<LiveSession>>(
                                 UnimplementedError("this engine cannot trace live processes"));
  if (!session.ok()) {
    release_slot();
    return session.status();
  }
  std::lock_guard<std::mutex> lock(mu_);
  Entry e;
  e.session = *session;
  e.leases.push_back(
      Lease{"L" + std::to_string(next_lease_++), client.id, client.uid, seconds,
            clock_.MonotonicNowNs(), client.until_exit && seconds == 0});
  result.session = e.session;
  result.newly_attached = true;
  result.lease_id = e.leases.back().id;
  spdlog::debug("{}: lease {} for client {}", id, result.lease_id, client.id);
  sessions_[id] = std::move(e);
  auto it = attaching_.find(pid);
  if (it != attaching_.end() && it->second == pid_mu && pid_mu.use_count() <= 2) {
    attaching_.erase(it);
  }
  return result;
}

StatusOr<std::shared_ptr<Session>> SessionManager::Get(const std::string& target_id,
                                                       const Client* client) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(target_id);
  if (it == sessions_.end()) {
    return NotFoundError("no target " +
                         (target_id.empty() ? std::string("(empty id)") : target_id.substr(0, 64)) +
                         "; ListTargets shows the attached ones");
  }
  if (client) {
    uint64_t now = clock_.MonotonicNowNs();
    for (auto& l : it->second.leases) {
      if (l.client == client->id) l.last_use_ns = now;
    }
  }
  return it->second.session;
}

void SessionManager::DetachQuietly(const std::shared_ptr<Session>& s) {
  // Runs on the reaper and the acceptor: nothing may escape them (it would end the daemon).
  try {
    Status st = s->Detach();
    if (!st.ok()) spdlog::warn("detach {}: {}", s->id(), st.ToString());
  } catch (const std::exception& e) {
    spdlog::error("detach {}: {}", s->id(), e.what());
  }
}

template <typename Pred>
std::vector<std::shared_ptr<Session>> SessionManager::DropLeases(Pred pred) {
  std::vector<std::shared_ptr<Session>> ended;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Entry& e = it->second;
    if (e.recording) {
      ++it;
      continue;
    }
    size_t before = e.leases.size();
    e.leases.erase(std::remove_if(e.leases.begin(), e.leases.end(),
                                  [&](const Lease& l) { return pred(it->first, l); }),
                   e.leases.end());
    if (before > 0 && e.leases.empty()) {
      ended.push_back(e.session);
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
  return ended;
}

StatusOr<SessionManager::DetachResult> SessionManager::Detach(const std::string& target_id,
                                                              const Client& client,
                                                              const std::string& lease_id,
                                                              bool force) {
  std::shared_ptr<Session> session;
  bool ended = false;
  bool still_held_by_client = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(target_id);
    if (it == sessions_.end()) return NotFoundError("no target " + target_id.substr(0, 64));
    Entry& e = it->second;
    session = e.session;
    if (e.recording) {
      if (!client.may_trace_anything && client.uid != e.owner) {
        return PermissionDeniedError("only the uid that loaded " + target_id +
                                     " (or root) may unload it");
      }
      sessions_.erase(it);
      DetachResult r;
      r.snapshot = session->snapshot();
      r.ended = true;
      return r;
    }
    if (force) {
      if (!client.may_trace_anything) {
        return PermissionDeniedError("only root may end a trace other clients hold (force)");
      }
      e.leases.clear();
    } else {
      size_t before = e.leases.size();
      e.leases.erase(std::remove_if(e.leases.begin(), e.leases.end(),
                                    [&](const Lease& l) {
                                      return l.client == client.id &&
                                             (lease_id.empty() || l.id == lease_id);
                                    }),
                     e.leases.end());
      if (e.leases.size() == before) {
        return FailedPreconditionError(
            "this client holds no lease" + (lease_id.empty() ? "" : " " + lease_id.substr(0, 32)) +
            " on " + target_id + " (it was never attached by this client, or its lease ended)");
      }
    }
    ended = e.leases.empty();
    still_held_by_client = std::any_of(e.leases.begin(), e.leases.end(),
                                       [&](const Lease& l) { return l.client == client.id; });
    spdlog::debug("{}: client {} detached (lease '{}'); {} leases left", target_id, client.id,
                  lease_id, e.leases.size());
    if (ended) sessions_.erase(it);
  }
  DetachResult r;
  if (ended) {
    Status detached = session->Detach();
    NotifyEnded({session});
    TS_RETURN_IF_ERROR(detached);
  } else if (!still_held_by_client) {
    // Others still trace it; for this client the trace ends here: its streams end as if
    // detached, and its snapshot is final for it.
    session->EndStreamsOf(client.id);
  }
  r.snapshot = session->snapshot();
  if (!ended && !r.snapshot.final()) {
    r.snapshot.set_final(true);
    r.snapshot.set_ended_by(v1::TRACE_END_DETACHED);
    r.snapshot.set_trace_end_ns(r.snapshot.now_ns());
  }
  r.ended = ended;
  return r;
}

void SessionManager::ReleaseClient(const std::string& client_id) {
  spdlog::debug("client {} disconnected", client_id);
  std::vector<std::shared_ptr<Session>> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ended = DropLeases([&](const std::string&, const Lease& l) { return l.client == client_id; });
  }
  for (auto& s : ended) {
    spdlog::info("{}: its last client ({}) disconnected; detaching", s->id(), client_id);
    DetachQuietly(s);
  }
  NotifyEnded(ended);
}

int SessionManager::AddEndedListener(EndedListener listener) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  int id = next_listener_++;
  listeners_[id] = std::move(listener);
  return id;
}

void SessionManager::RemoveEndedListener(int id) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  listeners_.erase(id);
}

void SessionManager::NotifyEnded(const std::vector<std::shared_ptr<Session>>& ended) {
  if (ended.empty()) return;
  // Held while the listeners run, so RemoveEndedListener returns only once no call into that
  // listener is in flight (its owner may be destroyed right after). Listeners take only locks
  // of their own and never call back into the manager's listener registry.
  std::lock_guard<std::mutex> lock(listeners_mu_);
  // Runs on the reaper, the acceptor and RPC threads: nothing may escape.
  for (const auto& s : ended) {
    for (const auto& [id, l] : listeners_) {
      try {
        l(s);
      } catch (const std::exception& e) {
        spdlog::error("{}: ended listener: {}", s->id(), e.what());
      }
    }
  }
}

std::vector<std::shared_ptr<Session>> SessionManager::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<Session>> out;
  for (auto& [id, e] : sessions_) out.push_back(e.session);
  return out;
}

StatusOr<std::shared_ptr<Session>> SessionManager::LoadRecording(
    const std::vector<v1::RecordingChunk>& chunks, const Client& client) {
  const SessionLimits& lim = options_.limits;
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = "rec:" + std::to_string(next_seq_++);
  }
  TS_ASSIGN_OR_RETURN(auto session, ReplaySession::Create(id, chunks));
  session->AddViewer(client.uid);
  std::lock_guard<std::mutex> lock(mu_);
  // Bound memory: a user's loads evict that user's oldest recordings, never anyone else's.
  auto count = [&](bool same_uid_only) {
    size_t n = 0;
    for (auto& [k, e] : sessions_) n += e.recording && (!same_uid_only || e.owner == client.uid);
    return n;
  };
  auto evict_oldest = [&](bool same_uid_only) {
    auto victim = sessions_.end();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      if (!it->second.recording || (same_uid_only && it->second.owner != client.uid)) continue;
      if (victim == sessions_.end() || it->second.seq < victim->second.seq) victim = it;
    }
    if (victim == sessions_.end()) return false;
    sessions_.erase(victim);
    return true;
  };
  if (!client.may_trace_anything) {
    while (count(true) >= lim.max_recordings_per_uid && evict_oldest(true)) {
    }
  }
  while (count(false) >= lim.max_recordings && evict_oldest(true)) {
  }
  if (count(false) >= lim.max_recordings) {
    if (!client.may_trace_anything || !evict_oldest(false)) {
      return ResourceExhaustedError("the daemon holds " + std::to_string(count(false)) +
                                    " loaded recordings (its limit); replay this one in-process "
                                    "(threadscope report --no-daemon)");
    }
  }
  Entry e;
  e.session = session;
  e.recording = true;
  e.owner = client.uid;
  e.owner_privileged = client.may_trace_anything;
  e.seq = next_seq_++;
  sessions_[id] = std::move(e);
  return std::shared_ptr<Session>(session);
}

void SessionManager::DetachAll() {
  std::map<std::string, Entry> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.swap(sessions_);
  }
  std::vector<std::shared_ptr<Session>> ended;
  for (auto& [id, e] : all) {
    DetachQuietly(e.session);
    if (!e.recording) ended.push_back(e.session);
  }
  NotifyEnded(ended);
}

void SessionManager::ExpireIdleLeases() {
  std::vector<std::shared_ptr<Session>> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t now = clock_.MonotonicNowNs();
    ended = DropLeases([&](const std::string& id, const Lease& l) {
      if (l.until_exit) {
        // The daemon's own lease (auto-attach) lasts as long as the trace: the process exited
        // or exec'd.
        auto it = sessions_.find(id);
        return it != sessions_.end() && it->second.session->finished();
      }
      return l.seconds > 0 && now - l.last_use_ns > uint64_t{l.seconds} * 1000000000ull;
    });
  }
  for (auto& s : ended) {
    spdlog::info("{}: its last lease ended (the process is gone, or no client used it); "
                 "detaching", s->id());
    DetachQuietly(s);
  }
  NotifyEnded(ended);
}

void SessionManager::ReapLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    reap_cv_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) break;
    lock.unlock();
    ExpireIdleLeases();
    lock.lock();
  }
}

}  // namespace threadscope::engine
