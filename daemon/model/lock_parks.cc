// The lock model's parking lot: 3.13+ PyMutex locks, whose waits are parks (_PySemaphore_Wait)
// and hand-offs (unparks), and the contention sites (critical sections, the interpreter's other
// mutexes) counted by type and line. Part of LockModel (lock_model.h says what a park and a wait
// are); apart from lock_model.cc so that each file reads as one mechanism.
#include "daemon/model/lock_model.h"

#include <algorithm>
#include <tuple>

namespace threadscope::model {

namespace {

// An unpark posted before its waiter's park reached us pairs only this soon (the window is the
// waiter's few instructions between its enqueue and _PySemaphore_Wait).
constexpr uint64_t kEarlyWakeNs = 10'000'000;
// A timed-out park is final unless a retry on its semaphore follows, and that retry is the
// waiter's very next step: once this much later, nothing can continue it.
constexpr uint64_t kRetryWindowNs = 20'000'000;
constexpr size_t kMaxEarlyWakes = 4096;
constexpr size_t kMaxSiteThreads = 64;

bool IsLockType(const std::string& name) {
  return name == "_thread.lock" || name == "_thread.RLock";
}

}  // namespace

ContentionSite* LockModel::Site(ContentionKind kind, const std::string& type,
                                const PyStack* stack) {
  uint32_t location = stack && !stack->empty() ? stack->frames.front() : 0;
  auto key = std::make_tuple(static_cast<int>(kind), type, location);
  auto it = site_keys_.find(key);
  if (it != site_keys_.end()) return &sites_.at(it->second);
  // Bounded cardinality: past the limit every new (kind, type, line) folds into one row.
  if (sites_.size() >= std::max<size_t>(config_.max_contention_sites, 1)) {
    if (!other_site_) {
      ContentionSite other;
      other.id = other_site_ = next_site_id_++;
      other.other = true;
      sites_.emplace(other.id, std::move(other));
    }
    return &sites_.at(other_site_);
  }
  ContentionSite site;
  site.id = next_site_id_++;
  site.kind = kind;
  site.type = type;
  site.location = location;
  if (stack) site.stack = *stack;
  uint64_t id = site.id;
  sites_.emplace(id, std::move(site));
  site_keys_.emplace(key, id);
  return &sites_.at(id);
}

void LockModel::OnParkBegin(const ts_header& h, const ts_park& e, const PyStack* stack,
                            std::vector<LockChangeEvent>* out) {
  const pid_t tid = static_cast<pid_t>(h.tid);
  ThreadLockState& t = threads_[tid];
  ParkState& p = t.park;
  if (e.site == TS_PARK_SITE_RETRY) {
    // The re-wait of a park whose timeout raced with an unpark: the same park goes on. Anything
    // else reaching a retry site (it was not ours) is ignored.
    if (p.phase == ParkState::Phase::kTimedOut && !p.open && p.sema == e.sema) {
      pending_timeouts_.erase(tid);
      p.phase = ParkState::Phase::kParked;
      p.open = true;
      p.park_since_ns = h.ts_ns;
      parks_by_sema_[e.sema] = tid;
    }
    return;
  }
  const bool same_call = p.phase != ParkState::Phase::kNone && !p.open && e.park_arg &&
                         p.park_arg == e.park_arg && p.fair_ns == e.fair_ns;
  if (p.phase != ParkState::Phase::kNone && !same_call) FinishPark(t, tid, std::nullopt, out);
  if (p.open) parks_by_sema_.erase(p.sema);  // its end was lost
  pending_timeouts_.erase(tid);
  p.open = true;
  p.sema = e.sema;
  p.park_since_ns = h.ts_ns;
  parks_by_sema_[e.sema] = tid;

  if (same_call) {
    // Woken without the lock, it lost the race (or ran its signal handlers) and parks again
    // inside the same acquire: one wait, one more park.
    p.phase = ParkState::Phase::kParked;
    if (p.target == ParkState::Target::kLock) {
      if (auto it = locks_.find(p.lock_id); it != locks_.end()) {
        LockRecord& l = it->second;
        ++l.parks;
        ++l.reparks;
        for (auto& w : l.waiters) {
          if (w.tid == tid) w.woken = false;
        }
        if (t.waiting_lock == l.id) {
          t.waiting_woken = false;
          if (t.waiting_kind == WaitKind::kLock) CheckDeadlock(tid, h.ts_ns, out);
        }
      }
    } else if (p.target == ParkState::Target::kContention) {
      if (auto it = sites_.find(p.site_id); it != sites_.end()) ++it->second.parks;
    }
  } else {
    p = ParkState{};
    p.open = true;
    p.sema = e.sema;
    p.park_since_ns = p.wait_since_ns = h.ts_ns;
    p.park_arg = e.park_arg;
    p.fair_ns = e.fair_ns;
    p.phase = ParkState::Phase::kParked;
    // What is parked on: a Python lock (by its object's type), an object's critical section
    // (free-threaded), another mutex of the interpreter, or an event (no mutex_entry).
    const std::string& lock_type = TypeName(e.obj_type);
    const std::string& cs_type =
        (e.flags & TS_PARK_F_FREE_THREADED) ? TypeName(e.cs_type) : TypeName(0);
    if (!e.park_arg) {
      p.target = ParkState::Target::kEvent;
      ++event_parks_;
    } else if (e.obj_type && IsLockType(lock_type)) {
      LockKind kind = lock_type == "_thread.RLock" ? LockKind::kRLock : LockKind::kLock;
      LockRecord* l = Lookup(e.obj, 0, kind, h.ts_ns);
      if (!l) {
        p.target = ParkState::Target::kEvent;  // at the model's bound
      } else {
        l->pymutex = true;
        ++l->parks;
        p.target = ParkState::Target::kLock;
        p.lock_id = l->id;
        BeginLockWait(t, *l, tid, h.ts_ns, stack, out);
      }
    } else {
      bool cs = (e.flags & TS_PARK_F_FREE_THREADED) && e.cs_type && !cs_type.empty() &&
                !IsLockType(cs_type);
      ContentionSite* site = Site(cs ? ContentionKind::kCriticalSection : ContentionKind::kMutex,
                                  cs ? cs_type : std::string(), stack);
      p.target = ParkState::Target::kContention;
      p.site_id = site->id;
      ++site->waits;
      ++site->parks;
      site->last_object = cs ? e.cs_obj : e.addr;
      if (site->threads.count(tid) == 0) {
        if (site->threads.size() < kMaxSiteThreads) site->threads.insert(tid);
        ++site->thread_count;
      }
      if (t.waiting_lock || t.waiting_site) LeaveWait(t, tid);
      t.waiting_site = site->id;
      t.waiting_since_ns = h.ts_ns;
      t.waiting_kind = WaitKind::kContention;
      t.waiting_stack = stack ? *stack : PyStack{};
      site->waiters.push_back({tid, h.ts_ns, WaitKind::kContention, t.waiting_stack});
      LockChangeEvent ev{LockChange::kWaitBegin, h.ts_ns, 0, tid, WaitKind::kContention};
      ev.stack = t.waiting_stack;
      ev.site_id = site->id;
      ev.object = site->last_object;
      Emit(out, ev);
    }
  }
  // A wake posted before this park reached us.
  auto early = early_wakes_.find(e.sema);
  if (early != early_wakes_.end()) {
    EarlyWake w = early->second;
    early_wakes_.erase(early);
    if ((!w.woken || w.woken == tid) && h.ts_ns >= w.ts_ns && h.ts_ns - w.ts_ns <= kEarlyWakeNs) {
      ApplyUnpark(w.waker, tid, w.handed_off, w.ts_ns, out);
    }
  }
}

void LockModel::OnParkEnd(const ts_header& h, const ts_park& e, std::vector<LockChangeEvent>* out) {
  const pid_t tid = static_cast<pid_t>(h.tid);
  auto it = threads_.find(tid);
  if (it == threads_.end()) return;
  ThreadLockState& t = it->second;
  ParkState& p = t.park;
  if (!p.open || p.sema != e.sema) return;  // began before the attach
  p.open = false;
  parks_by_sema_.erase(e.sema);
  p.waited_ns += Elapsed(h.ts_ns, p.park_since_ns);
  p.phase_ns = h.ts_ns;
  switch (e.result) {
    case TS_PARK_OK:
      p.phase = ParkState::Phase::kWoken;
      break;
    case TS_PARK_TIMEOUT:
      p.phase = ParkState::Phase::kTimedOut;
      break;
    default:
      p.phase = ParkState::Phase::kInterrupted;
      break;
  }
  switch (p.target) {
    case ParkState::Target::kEvent:
      p = ParkState{};
      return;
    case ParkState::Target::kContention:
      // A contended PyMutex_Lock has no timeout: woken, it retries the CAS and, losing,
      // parks again inside the same call. Its wait ends with the call (FinishPark).
      return;
    case ParkState::Target::kLock:
      break;
  }
  auto l = locks_.find(p.lock_id);
  if (l == locks_.end() || t.waiting_lock != p.lock_id) {
    p = ParkState{};
    return;
  }
  if (e.result == TS_PARK_OK && e.handed_off) {
    // The unlocker handed it over (it had waited over 1 ms): acquired, exactly.
    p.phase = ParkState::Phase::kNone;
    EndWait(t, l->second, tid, h.ts_ns, /*acquired=*/true, out);
    p = ParkState{};
    return;
  }
  if (p.phase == ParkState::Phase::kTimedOut) {
    pending_timeouts_.insert(tid);
  } else {
    // Woken without the lock (or by a signal): competing for it, not blocked.
    t.waiting_woken = true;
    for (auto& w : l->second.waiters) {
      if (w.tid == tid) w.woken = true;
    }
  }
}

void LockModel::OnUnpark(const ts_header& h, const ts_unpark& e,
                         std::vector<LockChangeEvent>* out) {
  const pid_t waker = static_cast<pid_t>(h.tid);
  auto parked = parks_by_sema_.find(e.sema);
  if (parked == parks_by_sema_.end()) {
    // Posted before the waiter's park reached us (or for a park that began before the attach,
    // in which case no park claims it in time).
    if (early_wakes_.size() >= kMaxEarlyWakes) early_wakes_.clear();
    early_wakes_[e.sema] = {waker, static_cast<pid_t>(e.woken_tid), e.handed_off != 0, h.ts_ns};
    return;
  }
  ApplyUnpark(waker, parked->second, e.handed_off != 0, h.ts_ns, out);
}

void LockModel::ApplyUnpark(pid_t waker, pid_t woken, bool handed_off, uint64_t ts,
                            std::vector<LockChangeEvent>* out) {
  auto it = threads_.find(woken);
  if (it == threads_.end()) return;
  ThreadLockState& t = it->second;
  ParkState& p = t.park;
  p.woken_by = waker;
  if (p.target == ParkState::Target::kContention) {
    if (auto site = sites_.find(p.site_id); site != sites_.end()) ++site->second.wakeups;
    t.last_woken_by = waker;
    return;
  }
  if (p.target != ParkState::Target::kLock) return;
  auto found = locks_.find(p.lock_id);
  if (found == locks_.end()) return;
  LockRecord& l = found->second;
  ++l.wakeups;
  l.last_waker = waker;
  t.last_woken_by = waker;
  if (handed_off) {
    ++l.handoffs;
  } else {
    ++l.barges;
  }
  // The waker released it (a PyMutex is woken by its unlocker). Every acquire traced: that
  // release was seen and the new owner comes with the acquire's return. Otherwise the lock
  // is free now, or, handed off, the woken thread's from this moment.
  const bool condition = l.condition_waiter || l.signal || t.waiting_kind == WaitKind::kCondition;
  if (!config_.exact_ownership && !l.owner_exact && (!l.owner || *l.owner == waker)) {
    ClearOwner(l, ts, out);
  }
  if (handed_off && !condition && !(config_.exact_ownership && l.owner_exact)) {
    SetOwner(l, woken, ts, /*exact=*/false, 1, out);
  }
  Emit(out, LockChangeEvent{LockChange::kWoken, ts, l.id, waker,
                            condition ? WaitKind::kCondition : WaitKind::kLock});
}

void LockModel::OnCsSlow(const ts_header& h, const ts_cs_slow& e, const PyStack* stack) {
  // Counted where it happened; the park that follows (if the spins did not get it) is the
  // wait. A recursive section also gets here and returns at once: counted the same.
  const std::string& type = TypeName(e.obj_type);
  if (type.empty() || IsLockType(type)) return;
  ContentionSite* site = Site(ContentionKind::kCriticalSection, type, stack);
  ++site->spins;
  site->last_object = e.mutex;
  (void)h;
}

void LockModel::FinishPark(ThreadLockState& t, pid_t tid, std::optional<int32_t> result,
                           std::vector<LockChangeEvent>* out) {
  ParkState p = t.park;
  t.park = ParkState{};
  pending_timeouts_.erase(tid);
  if (p.open) parks_by_sema_.erase(p.sema);
  if (p.phase == ParkState::Phase::kNone) return;
  const uint64_t end = p.phase_ns ? p.phase_ns : p.park_since_ns;
  if (p.target == ParkState::Target::kContention) {
    auto it = sites_.find(p.site_id);
    if (it == sites_.end()) return;
    ContentionSite& site = it->second;
    site.wait.Add(p.waited_ns);
    ++t.contention_waits;
    t.contention_wait_ns += p.waited_ns;
    LockChangeEvent ev{LockChange::kWaitEnd, end, 0, tid, WaitKind::kContention, p.waited_ns,
                       true};
    ev.stack = t.waiting_stack;
    ev.site_id = site.id;
    ev.object = site.last_object;
    if (p.woken_by && *p.woken_by != tid) ev.other = p.woken_by;
    if (t.waiting_site == site.id) LeaveWait(t, tid);
    Emit(out, ev);
    return;
  }
  if (p.target != ParkState::Target::kLock) return;
  auto it = locks_.find(p.lock_id);
  if (it == locks_.end() || t.waiting_lock != p.lock_id) return;
  // How it ended: the acquire's own result when it told us; else the last park's outcome (woken
  // and never parked again: it won the race).
  bool acquired = p.phase == ParkState::Phase::kWoken;
  bool timed_out = p.phase == ParkState::Phase::kTimedOut;
  if (result) {
    acquired = *result == TS_ACQUIRE_ACQUIRED;
    timed_out = *result == TS_ACQUIRE_FAILED;
  } else if (p.phase == ParkState::Phase::kInterrupted) {
    acquired = true;  // its handlers ran and it got the lock without parking again
  }
  EndWait(t, it->second, tid, end, acquired, out, timed_out);
}

void LockModel::FinishStaleParks(uint64_t ts, std::vector<LockChangeEvent>* out) {
  for (auto it = pending_timeouts_.begin(); it != pending_timeouts_.end();) {
    pid_t tid = *it++;
    auto t = threads_.find(tid);
    if (t == threads_.end() || t->second.park.phase != ParkState::Phase::kTimedOut) {
      pending_timeouts_.erase(tid);
      continue;
    }
    if (ts >= t->second.park.phase_ns + kRetryWindowNs) FinishPark(t->second, tid, std::nullopt, out);
  }
}

void LockModel::FinishAllParks(std::vector<LockChangeEvent>* out) {
  for (auto& [tid, t] : threads_) {
    if (t.park.phase != ParkState::Phase::kNone && !t.park.open) {
      FinishPark(t, tid, std::nullopt, out);
    }
  }
}

}  // namespace threadscope::model
