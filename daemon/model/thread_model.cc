#include "daemon/model/thread_model.h"

#include <algorithm>

namespace threadscope::model {

const char* ThreadStateName(ThreadState state) {
  switch (state) {
    case ThreadState::kNotStarted: return "NOT_STARTED";
    case ThreadState::kStarting: return "STARTING";
    case ThreadState::kRunning: return "RUNNING";
    case ThreadState::kDone: return "DONE";
  }
  return "NOT_STARTED";
}

const char* ThreadOriginName(ThreadOrigin origin) {
  switch (origin) {
    case ThreadOrigin::kStarted: return "started";
    case ThreadOrigin::kPreexisting: return "preexisting";
    case ThreadOrigin::kNative: return "native";
  }
  return "started";
}

const char* JoinVisibilityName(JoinVisibility v) {
  switch (v) {
    case JoinVisibility::kNone: return "none";
    case JoinVisibility::kBlockingOnly: return "blocking-only";
    case JoinVisibility::kExact: return "exact";
  }
  return "none";
}

const char* ThreadChangeName(ThreadChange change) {
  switch (change) {
    case ThreadChange::kDiscovered: return "discovered";
    case ThreadChange::kStarting: return "starting";
    case ThreadChange::kRunning: return "running";
    case ThreadChange::kStartFailed: return "start_failed";
    case ThreadChange::kDone: return "done";
    case ThreadChange::kJoinWaitBegin: return "join_wait_begin";
    case ThreadChange::kJoinWaitEnd: return "join_wait_end";
    case ThreadChange::kJoined: return "joined";
    case ThreadChange::kDetached: return "detached";
    case ThreadChange::kRenamed: return "renamed";
  }
  return "unknown";
}

namespace {

void Emit(std::vector<ThreadChangeEvent>* out, ThreadChange change, uint64_t ts, uint64_t id,
          pid_t actor) {
  if (out) out->push_back({change, ts, id, actor});
}

}  // namespace

ThreadRecord& ThreadModel::NewThread(uint64_t ts, ThreadOrigin origin) {
  if (threads_.size() >= std::max<size_t>(config_.max_threads, 4)) EvictFinished();
  ThreadRecord t;
  t.id = next_id_++;
  t.origin = origin;
  t.started_ns = ts;
  position_[t.id] = threads_.size();
  threads_.push_back(std::move(t));
  return threads_.back();
}

void ThreadModel::EvictFinished() {
  size_t target = std::max<size_t>(config_.max_threads, 4) * 3 / 4;
  size_t to_evict = threads_.size() > target ? threads_.size() - target : 0;
  std::unordered_map<uint64_t, bool> gone;
  std::vector<ThreadRecord> kept;
  kept.reserve(threads_.size());
  for (auto& t : threads_) {
    bool finished = t.state == ThreadState::kDone && t.join_waiters.empty();
    if (to_evict > 0 && finished) {
      --to_evict;
      gone[t.id] = true;
      ++evicted_.seen;
      switch (t.origin) {
        case ThreadOrigin::kStarted: ++evicted_.started; break;
        case ThreadOrigin::kPreexisting: ++evicted_.preexisting; break;
        case ThreadOrigin::kNative: ++evicted_.native; break;
      }
      if (t.start_failed) ++evicted_.start_failed;
      if (t.origin == ThreadOrigin::kStarted && !t.start_failed) {
        auto joined = JoinedForReport(t);
        (!joined ? evicted_.joined_unknown : *joined ? evicted_.joined : evicted_.not_joined)++;
        if (auto returned = ReturnedForReport(t)) {
          (*returned ? evicted_.returned : evicted_.did_not_return)++;
        }
      }
      continue;
    }
    kept.push_back(std::move(t));
  }
  if (gone.empty()) return;  // every thread still runs: nothing may be forgotten
  threads_ = std::move(kept);
  position_.clear();
  for (size_t i = 0; i < threads_.size(); ++i) position_[threads_[i].id] = i;
  auto prune = [&](auto& index) {
    for (auto it = index.begin(); it != index.end();) {
      it = gone.count(it->second) ? index.erase(it) : std::next(it);
    }
  };
  prune(by_tid_);
  prune(by_ident_);
  prune(by_boot_);
  prune(pending_start_);
  prune(last_native_clone_);
  prune(by_sentinel_sem_);
  prune(joining_);
}

ThreadRecord* ThreadModel::ById(uint64_t id) {
  auto it = position_.find(id);
  return it == position_.end() ? nullptr : &threads_[it->second];
}

const ThreadRecord* ThreadModel::FindById(uint64_t id) const {
  auto it = position_.find(id);
  return it == position_.end() ? nullptr : &threads_[it->second];
}

ThreadRecord* ThreadModel::ByTid(pid_t tid) {
  auto it = by_tid_.find(tid);
  return it == by_tid_.end() ? nullptr : ById(it->second);
}

const ThreadRecord* ThreadModel::FindByTid(pid_t tid) const {
  auto it = by_tid_.find(tid);
  return it == by_tid_.end() ? nullptr : FindById(it->second);
}

ThreadRecord* ThreadModel::ByIdent(uint64_t ident) {
  auto it = by_ident_.find(ident);
  return it == by_ident_.end() ? nullptr : ById(it->second);
}

void ThreadModel::IndexTid(ThreadRecord& t, pid_t tid) {
  t.native_tid = tid;
  by_tid_[tid] = t.id;  // a reused tid now means this thread
}

void ThreadModel::SetState(ThreadRecord& t, ThreadState to, uint64_t ts,
                           std::vector<ThreadChangeEvent>* out, pid_t actor) {
  if (t.state == to) return;
  // States only move forward; a late or duplicated event never revives a thread.
  if (static_cast<int>(to) < static_cast<int>(t.state)) return;
  t.state = to;
  switch (to) {
    case ThreadState::kStarting:
      Emit(out, ThreadChange::kStarting, ts, t.id, actor);
      break;
    case ThreadState::kRunning:
      t.running_ns = ts;
      Emit(out, ThreadChange::kRunning, ts, t.id, actor);
      break;
    case ThreadState::kDone:
      t.done_ns = ts;
      Emit(out, t.start_failed ? ThreadChange::kStartFailed : ThreadChange::kDone, ts, t.id, actor);
      break;
    case ThreadState::kNotStarted:
      break;
  }
}

void ThreadModel::MarkDone(ThreadRecord& t, uint64_t ts, std::vector<ThreadChangeEvent>* out) {
  if (t.state == ThreadState::kStarting && !t.start_failed) {
    // It ran (it exited), even if we missed the start's return and the bootstrap.
    SetState(t, ThreadState::kRunning, ts, out, t.native_tid);
  }
  SetState(t, ThreadState::kDone, ts, out, t.native_tid);
}

void ThreadModel::MarkJoined(ThreadRecord& t, pid_t joiner, uint64_t ts,
                             std::vector<ThreadChangeEvent>* out) {
  if (t.joined) return;
  t.joined = true;
  t.joined_ns = ts;
  t.joined_by = joiner;
  Emit(out, ThreadChange::kJoined, ts, t.id, joiner);
}

void ThreadModel::RemoveWaiter(ThreadRecord& t, pid_t waiter, uint64_t ts,
                               std::vector<ThreadChangeEvent>* out) {
  auto it = std::find_if(t.join_waiters.begin(), t.join_waiters.end(),
                         [&](const JoinWaiter& w) { return w.tid == waiter; });
  if (it == t.join_waiters.end()) return;
  t.join_waiters.erase(it);
  Emit(out, ThreadChange::kJoinWaitEnd, ts, t.id, waiter);
}

void ThreadModel::Apply(const DecodedEvent& event, std::vector<ThreadChangeEvent>* out) {
  const ts_header& h = event.header;
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, ts_thread_start_begin>) {
          OnStartBegin(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_start_end>) {
          OnStartEnd(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_clone>) {
          OnClone(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_bootstrap>) {
          OnBootstrap(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_body_done>) {
          if (ThreadRecord* t = ByTid(static_cast<pid_t>(h.tid))) t->body_done_ns = h.ts_ns;
        } else if constexpr (std::is_same_v<T, ts_thread_exit>) {
          OnExit(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_rename>) {
          if (ThreadRecord* t = ByTid(static_cast<pid_t>(e.target_tid))) {
            t->name = CommToString(e.comm);
            Emit(out, ThreadChange::kRenamed, h.ts_ns, t->id, static_cast<pid_t>(h.tid));
          }
        } else if constexpr (std::is_same_v<T, ts_thread_sentinel>) {
          if (ThreadRecord* t = ByTid(static_cast<pid_t>(h.tid))) {
            t->has_sentinel = true;
            if (e.sem) by_sentinel_sem_[e.sem] = t->id;
          }
        } else if constexpr (std::is_same_v<T, ts_thread_join>) {
          OnJoin(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_thread_detach>) {
          if (ThreadRecord* t = ByIdent(e.ident); t && !t->detached) {
            t->detached = true;
            Emit(out, ThreadChange::kDetached, h.ts_ns, t->id, static_cast<pid_t>(h.tid));
          }
        } else if constexpr (std::is_same_v<T, ts_sem_wait>) {
          OnSemWait(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_preexisting_thread>) {
          OnPreexisting(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_trace_mark>) {
          if (e.kind == TS_MARK_TARGET_EXITED) OnTargetExited(h.ts_ns, out);
        }
        // ts_lost is accounted by TraceModel; threads stay as they are.
      },
      event.payload);
}

void ThreadModel::OnStartBegin(const ts_header& h, const ts_thread_start_begin& e,
                               std::vector<ThreadChangeEvent>* out) {
  pid_t parent = static_cast<pid_t>(h.tid);
  ThreadRecord& t = NewThread(h.ts_ns, ThreadOrigin::kStarted);
  t.parent_native_tid = parent;
  t.boot = e.boot;
  t.func = e.func;
  t.state = ThreadState::kNotStarted;
  SetState(t, ThreadState::kStarting, h.ts_ns, out, parent);
  pending_start_[parent] = t.id;
  if (e.boot) by_boot_[e.boot] = t.id;
}

void ThreadModel::OnClone(const ts_header& h, const ts_thread_clone& e,
                          std::vector<ThreadChangeEvent>* out) {
  pid_t parent = static_cast<pid_t>(h.tid);
  pid_t child = static_cast<pid_t>(e.child_tid);
  if (auto it = pending_start_.find(parent); it != pending_start_.end()) {
    ThreadRecord* t = ById(it->second);
    if (t && t->native_tid == 0) {
      IndexTid(*t, child);
      t->name = CommToString(e.comm);
      return;
    }
  }
  if (ThreadRecord* known = ByTid(child); known && known->state != ThreadState::kDone) {
    // Seen by the /proc scan first (the scan raced with the clone): it was observed after all.
    known->observed_from_start = true;
    known->parent_native_tid = parent;
    known->started_ns = h.ts_ns;
    if (known->origin == ThreadOrigin::kPreexisting) known->origin = ThreadOrigin::kNative;
    return;
  }
  ThreadRecord& t = NewThread(h.ts_ns, ThreadOrigin::kNative);
  t.parent_native_tid = parent;
  t.name = CommToString(e.comm);
  IndexTid(t, child);
  t.state = ThreadState::kRunning;
  t.running_ns = h.ts_ns;
  Emit(out, ThreadChange::kDiscovered, h.ts_ns, t.id, parent);
  last_native_clone_[parent] = t.id;
}

void ThreadModel::OnStartEnd(const ts_header& h, const ts_thread_start_end& e,
                             std::vector<ThreadChangeEvent>* out) {
  pid_t parent = static_cast<pid_t>(h.tid);
  ThreadRecord* t = nullptr;
  if (auto it = pending_start_.find(parent); it != pending_start_.end()) {
    t = ById(it->second);
    pending_start_.erase(it);
  } else if (auto it2 = last_native_clone_.find(parent); it2 != last_native_clone_.end()) {
    // The entry record was lost (or we attached mid-start): the clone it made is this thread.
    ThreadRecord* candidate = ById(it2->second);
    if (candidate && (!candidate->ident || candidate->ident == e.ident) && e.ok) {
      t = candidate;
      t->origin = ThreadOrigin::kStarted;
    }
    last_native_clone_.erase(it2);
  }
  if (!t) return;
  t->start_return = e.ret;
  if (e.ok) {
    t->ident = e.ident;
    by_ident_[e.ident] = t->id;
    SetState(*t, ThreadState::kRunning, h.ts_ns, out, parent);
  } else {
    t->start_failed = true;
    if (t->boot) by_boot_.erase(t->boot);
    SetState(*t, ThreadState::kDone, h.ts_ns, out, parent);
  }
}

void ThreadModel::OnBootstrap(const ts_header& h, const ts_thread_bootstrap& e,
                              std::vector<ThreadChangeEvent>* out) {
  pid_t child = static_cast<pid_t>(h.tid);
  ThreadRecord* t = nullptr;
  if (auto it = by_boot_.find(e.boot); it != by_boot_.end()) {
    t = ById(it->second);
    by_boot_.erase(it);  // bootstate structs are freed and reused
  }
  if (!t) t = ByTid(child);
  if (!t) return;
  if (t->native_tid != child) IndexTid(*t, child);  // the clone record was lost
  t->bootstrap_ns = h.ts_ns;
  if (!t->ident && e.ident) {
    t->ident = e.ident;
    by_ident_[e.ident] = t->id;
  }
  if (t->state == ThreadState::kStarting) SetState(*t, ThreadState::kRunning, h.ts_ns, out, child);
}

void ThreadModel::OnExit(const ts_header& h, const ts_thread_exit& e,
                         std::vector<ThreadChangeEvent>* out) {
  pid_t tid = static_cast<pid_t>(h.tid);
  ThreadRecord* t = ByTid(tid);
  if (!t || t->state == ThreadState::kDone) {
    // A thread we never saw (it exited before the /proc scan reached it).
    ThreadRecord& nt = NewThread(h.ts_ns, ThreadOrigin::kPreexisting);
    nt.started_ns.reset();
    nt.observed_from_start = false;
    IndexTid(nt, tid);
    nt.state = ThreadState::kRunning;
    Emit(out, ThreadChange::kDiscovered, h.ts_ns, nt.id, tid);
    t = &nt;
  }
  t->exited_ns = h.ts_ns;
  t->exit_code = e.exit_code;
  t->name = CommToString(e.comm);
  MarkDone(*t, h.ts_ns, out);
  // A thread that dies while waiting to join another is no longer waiting.
  if (auto it = joining_.find(tid); it != joining_.end()) {
    if (ThreadRecord* target = ById(it->second)) RemoveWaiter(*target, tid, h.ts_ns, out);
    joining_.erase(it);
  }
}

void ThreadModel::OnPreexisting(const ts_header& h, const ts_preexisting_thread& e,
                                std::vector<ThreadChangeEvent>* out) {
  pid_t tid = static_cast<pid_t>(h.tid);
  if (ThreadRecord* known = ByTid(tid); known && known->state != ThreadState::kDone) return;
  ThreadRecord& t = NewThread(e.start_ns ? e.start_ns : h.ts_ns, ThreadOrigin::kPreexisting);
  t.observed_from_start = false;
  t.name = CommToString(e.comm);
  IndexTid(t, tid);
  t.state = ThreadState::kRunning;
  t.running_ns = t.started_ns;
  Emit(out, ThreadChange::kDiscovered, h.ts_ns, t.id, tid);
}

void ThreadModel::OnSemWait(const ts_header& h, const ts_sem_wait& e,
                            std::vector<ThreadChangeEvent>* out) {
  pid_t waiter = static_cast<pid_t>(h.tid);
  auto it = by_sentinel_sem_.find(e.sem);
  if (it == by_sentinel_sem_.end()) return;
  ThreadRecord* t = ById(it->second);
  if (!t) return;
  switch (h.type) {
    case TS_EV_SEM_WAIT_BEGIN:
      if (t->joined) return;
      t->join_waiters.push_back({waiter, h.ts_ns});
      joining_[waiter] = t->id;
      Emit(out, ThreadChange::kJoinWaitBegin, h.ts_ns, t->id, waiter);
      break;
    case TS_EV_SEM_WAIT_END:
      RemoveWaiter(*t, waiter, h.ts_ns, out);
      joining_.erase(waiter);
      // Acquiring the sentinel means the thread's state was cleared: join() completed.
      if (e.ret == 0) MarkJoined(*t, waiter, h.ts_ns, out);
      break;
    case TS_EV_SEM_DESTROY:
      by_sentinel_sem_.erase(it);  // the address may now belong to an unrelated lock
      break;
    default:
      break;
  }
}

void ThreadModel::OnJoin(const ts_header& h, const ts_thread_join& e,
                         std::vector<ThreadChangeEvent>* out) {
  pid_t joiner = static_cast<pid_t>(h.tid);
  if (h.type == TS_EV_THREAD_JOIN_BEGIN) {
    ThreadRecord* t = ByIdent(e.ident);
    if (!t) return;
    t->join_waiters.push_back({joiner, h.ts_ns});
    joining_[joiner] = t->id;
    Emit(out, ThreadChange::kJoinWaitBegin, h.ts_ns, t->id, joiner);
    return;
  }
  auto it = joining_.find(joiner);
  if (it == joining_.end()) return;
  ThreadRecord* t = ById(it->second);
  joining_.erase(it);
  if (!t) return;
  RemoveWaiter(*t, joiner, h.ts_ns, out);
  if (e.ret == 0) MarkJoined(*t, joiner, h.ts_ns, out);
}

void ThreadModel::OnTargetExited(uint64_t ts, std::vector<ThreadChangeEvent>* out) {
  for (auto& t : threads_) {
    if (t.state == ThreadState::kDone) continue;
    if (t.state == ThreadState::kStarting && !t.native_tid && !lossy_) {
      // Its start never returned and no thread was created: the process died inside
      // pthread_create. (With records lost, the clone may just be missing: no verdict.)
      t.start_failed = true;
    } else if (!t.exited_ns) {
      t.exited_ns = ts;
    }
    t.join_waiters.clear();
    MarkDone(t, ts, out);
  }
  joining_.clear();
}

std::optional<bool> ThreadModel::JoinedForReport(const ThreadRecord& t) const {
  if (t.joined) return true;
  if (t.state != ThreadState::kDone || t.start_failed || t.detached) return false;
  if (t.origin != ThreadOrigin::kStarted) return false;  // nothing Python can join
  switch (config_.joins) {
    case JoinVisibility::kExact:
      return false;
    case JoinVisibility::kBlockingOnly:
      // No sentinel: a raw _thread thread, which cannot be joined. With one, a join of the
      // already-finished thread would not have blocked, so we cannot tell.
      if (!t.has_sentinel) return false;
      return std::nullopt;
    case JoinVisibility::kNone:
      return std::nullopt;
  }
  return std::nullopt;
}

std::optional<bool> ThreadModel::ReturnedForReport(const ThreadRecord& t) const {
  if (t.body_done_ns) return true;
  if (t.start_failed) return false;  // it never ran
  if (t.origin != ThreadOrigin::kStarted || !config_.body_done_visible) return std::nullopt;
  return t.state == ThreadState::kDone ? std::optional<bool>(false) : std::nullopt;
}

}  // namespace threadscope::model
