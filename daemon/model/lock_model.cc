// Over 600 lines for one reason: the handlers of lock records (semaphore waits, futex wakes,
// acquires and releases) share the lock table, its owners and its waits, and each is short.
// The lock-order graph and deadlocks are lock_order.cc; the 3.13+ parking lot is lock_parks.cc.
#include "daemon/model/lock_model.h"

#include <algorithm>

namespace threadscope::model {

namespace {

// Freed locks that were contended stay visible (top contended); this many at most.
constexpr size_t kMaxFreedLocks = 4096;

}  // namespace

const char* LockKindName(LockKind kind) {
  switch (kind) {
    case LockKind::kUnknown: return "unknown";
    case LockKind::kLock: return "Lock";
    case LockKind::kRLock: return "RLock";
    case LockKind::kJoinSentinel: return "join-sentinel";
  }
  return "unknown";
}

const char* WaitKindName(WaitKind kind) {
  switch (kind) {
    case WaitKind::kLock: return "lock";
    case WaitKind::kCondition: return "condition";
    case WaitKind::kJoin: return "join";
    case WaitKind::kContention: return "contention";
  }
  return "lock";
}

const char* ContentionKindName(ContentionKind kind) {
  switch (kind) {
    case ContentionKind::kCriticalSection: return "critical_section";
    case ContentionKind::kMutex: return "mutex";
  }
  return "mutex";
}

const char* LockChangeName(LockChange change) {
  switch (change) {
    case LockChange::kWaitBegin: return "wait_begin";
    case LockChange::kWaitEnd: return "wait_end";
    case LockChange::kWoken: return "woken";
    case LockChange::kDeadlock: return "deadlock";
    case LockChange::kDeadlockResolved: return "deadlock_resolved";
    case LockChange::kOrderInversion: return "order_inversion";
    case LockChange::kReleased: return "released";
  }
  return "unknown";
}

const Deadlock* LockModel::FindDeadlock(uint64_t id) const {
  for (const auto& d : deadlocks_) {
    if (d.id == id) return &d;
  }
  return nullptr;
}

const LockRecord* LockModel::FindLock(uint64_t id) const {
  auto it = locks_.find(id);
  return it == locks_.end() ? nullptr : &it->second;
}

const ContentionSite* LockModel::FindSite(uint64_t id) const {
  auto it = sites_.find(id);
  return it == sites_.end() ? nullptr : &it->second;
}

const std::string& LockModel::TypeName(uint64_t type) const {
  static const std::string kNone;
  auto it = types_.find(type);
  return it == types_.end() ? kNone : it->second;
}

void LockModel::DefineType(uint64_t type, const std::string& name) {
  if (!type) return;
  auto it = types_.find(type);
  if (it != types_.end()) {
    it->second = name;
    return;
  }
  if (types_.size() < std::max<size_t>(config_.max_types, 1)) types_.emplace(type, name);
}

const ThreadLockState* LockModel::FindThread(pid_t tid) const {
  auto it = threads_.find(tid);
  return it == threads_.end() ? nullptr : &it->second;
}

LockRecord* LockModel::BySem(uint64_t sem) {
  auto it = by_sem_.find(sem);
  if (it == by_sem_.end()) return nullptr;
  auto l = locks_.find(it->second);
  return l == locks_.end() ? nullptr : &l->second;
}

LockRecord* LockModel::ByObj(uint64_t obj) {
  auto it = by_obj_.find(obj);
  if (it == by_obj_.end()) return nullptr;
  auto l = locks_.find(it->second);
  return l == locks_.end() ? nullptr : &l->second;
}

LockRecord* LockModel::NewLock(uint64_t obj, uint64_t sem, LockKind kind, uint64_t ts,
                               bool interesting) {
  // A new lock at an address an older one used: that one is gone (its free may have been
  // missed), and this is the next generation at the address.
  if (sem) {
    if (LockRecord* old = BySem(sem)) Free(*old, ts);
  }
  if (obj) {
    if (LockRecord* old = ByObj(obj)) Free(*old, ts);
  }
  // Bounded: past max_locks a lock nobody waits for is not worth a record; past twice it, none.
  size_t max = std::max<size_t>(config_.max_locks, 1);
  if (locks_.size() >= 2 * max || (!interesting && locks_.size() >= max)) {
    ++locks_untracked_;
    return nullptr;
  }
  // Forget generations of addresses no live lock uses: the next lock there starts at 1.
  if (generations_.size() > 4 * max) {
    for (auto it = generations_.begin(); it != generations_.end();) {
      it = by_obj_.count(it->first) ? std::next(it) : generations_.erase(it);
    }
  }
  if (sem_generations_.size() > 4 * max) {
    for (auto it = sem_generations_.begin(); it != sem_generations_.end();) {
      it = by_sem_.count(it->first) ? std::next(it) : sem_generations_.erase(it);
    }
  }
  LockRecord l;
  l.id = next_id_++;
  l.obj = obj;
  l.sem = sem;
  l.kind = kind;
  // The id names the object; a lock first seen through its semaphore is named by that.
  l.id_address = obj ? obj : sem;
  l.id_is_sem = !obj;
  if (obj) {
    l.generation = ++generations_[obj];
  } else if (sem) {
    l.generation = ++sem_generations_[sem];
  }
  uint64_t id = l.id;
  locks_.emplace(id, std::move(l));
  if (sem) by_sem_[sem] = id;
  if (obj) by_obj_[obj] = id;
  return &locks_.at(id);
}

LockRecord* LockModel::Lookup(uint64_t obj, uint64_t sem, LockKind kind, uint64_t ts) {
  LockRecord* l = obj ? ByObj(obj) : nullptr;
  // A lock of the other kind at this address: the one we knew is gone (its free was missed).
  // A join sentinel is a plain Lock object: its acquires and releases arrive as a Lock's.
  const bool same_object = l && l->kind == LockKind::kJoinSentinel && kind == LockKind::kLock;
  if (l && kind != LockKind::kUnknown && l->kind != LockKind::kUnknown && l->kind != kind &&
      !same_object) {
    return NewLock(obj, sem, kind, ts, /*interesting=*/true);
  }
  if (!l && sem) l = BySem(sem);
  if (!l) return NewLock(obj, sem, kind, ts, /*interesting=*/true);  // created before the attach
  if (!l->obj && obj) {
    l->obj = obj;
    by_obj_[obj] = l->id;
  }
  if (!l->sem && sem) {
    l->sem = sem;
    by_sem_[sem] = l->id;
  }
  if (l->kind == LockKind::kUnknown) l->kind = kind;
  return l;
}

void LockModel::DropOrderEdges(uint64_t lock_id) {
  auto it = order_peers_.find(lock_id);
  if (it == order_peers_.end()) return;
  for (uint64_t other : it->second) {
    order_.erase({lock_id, other});
    order_.erase({other, lock_id});
    auto peer = order_peers_.find(other);
    if (peer != order_peers_.end()) {
      auto& v = peer->second;
      v.erase(std::remove(v.begin(), v.end(), lock_id), v.end());
    }
  }
  order_peers_.erase(it);
}

void LockModel::ForgetExitedThread(pid_t tid) {
  exited_.push_back(tid);
  size_t max = std::max<size_t>(config_.max_thread_states, 1);
  while (threads_.size() > max && !exited_.empty()) {
    pid_t old = exited_.front();
    exited_.pop_front();
    auto it = threads_.find(old);
    if (it != threads_.end() && !it->second.waiting_lock && it->second.held.empty()) {
      threads_.erase(it);
    }
  }
  if (exited_.size() > 4 * max) exited_.erase(exited_.begin(), exited_.begin() + max);
}

void LockModel::Free(LockRecord& lock, uint64_t ts) {
  if (lock.freed_ns) return;
  lock.freed_ns = ts;
  if (lock.sem) {
    auto it = by_sem_.find(lock.sem);
    if (it != by_sem_.end() && it->second == lock.id) by_sem_.erase(it);
  }
  if (lock.obj) {
    auto it = by_obj_.find(lock.obj);
    if (it != by_obj_.end() && it->second == lock.id) by_obj_.erase(it);
  }
  // Only its owner holds it and only its waiters wait for it (SetOwner keeps `held` exact).
  if (lock.owner) {
    auto it = threads_.find(*lock.owner);
    if (it != threads_.end()) {
      auto& held = it->second.held;
      held.erase(std::remove(held.begin(), held.end(), lock.id), held.end());
    }
  }
  for (const auto& w : lock.waiters) {
    auto it = threads_.find(w.tid);
    if (it != threads_.end() && it->second.waiting_lock == lock.id) it->second.waiting_lock.reset();
  }
  lock.waiters.clear();
  DropOrderEdges(lock.id);
  // Waiter locks (one per Condition wait) and locks nobody fought over carry nothing worth
  // keeping; their numbers are already in the per-thread totals.
  bool interesting = !lock.condition_waiter && lock.kind != LockKind::kJoinSentinel &&
                     (lock.contended > 0 || lock.timeouts > 0 ||
                      (config_.exact_ownership && lock.acquires > 0));
  if (!interesting) {
    if (lock.condition_waiter) freed_condition_waits_.Merge(lock.wait);
    ++freed_dropped_;
    locks_.erase(lock.id);
    return;
  }
  // Keep a bounded number of freed contended locks: evict the least waited-for.
  freed_by_wait_.insert({lock.wait.sum, lock.id});
  while (freed_by_wait_.size() > kMaxFreedLocks) {
    ++freed_dropped_;
    locks_.erase(freed_by_wait_.begin()->second);
    freed_by_wait_.erase(freed_by_wait_.begin());
  }
}

void LockModel::SetOwner(LockRecord& lock, pid_t tid, uint64_t ts, bool exact, uint32_t depth,
                         std::vector<LockChangeEvent>* out) {
  if (lock.owner && *lock.owner != tid) {
    // A new owner without a release seen (contended tracing learns owners at hand-offs): the
    // old one no longer holds it.
    auto it = threads_.find(*lock.owner);
    if (it != threads_.end()) {
      auto& old = it->second.held;
      old.erase(std::remove(old.begin(), old.end(), lock.id), old.end());
    }
  }
  lock.owner = tid;
  lock.owner_since_ns = ts;
  lock.owner_exact = exact;
  lock.depth = depth;
  lock.users.insert(tid);
  auto& held = threads_[tid].held;
  if (std::find(held.begin(), held.end(), lock.id) == held.end()) held.push_back(lock.id);
  // A new owner can close a cycle for whoever waits on this lock.
  for (const auto& w : lock.waiters) CheckDeadlock(w.tid, ts, out);
}

void LockModel::ClearOwner(LockRecord& lock, uint64_t ts, std::vector<LockChangeEvent>* out) {
  if (lock.owner) {
    if (lock.owner_exact && !lock.condition_waiter) {
      uint64_t held = Elapsed(ts, lock.owner_since_ns);
      lock.hold.Add(held);
      // One per release: the session builds a message only for watchers that asked. A join
      // sentinel's take and release are Thread.join's (the thread model reports joins).
      if (lock.kind != LockKind::kJoinSentinel) {
        LockChangeEvent ev{LockChange::kReleased, ts, lock.id, *lock.owner};
        ev.hold_ns = held;
        ev.stack = lock.owner_stack;
        Emit(out, std::move(ev));
      }
    }
    auto it = threads_.find(*lock.owner);
    if (it != threads_.end()) {
      auto& held = it->second.held;
      held.erase(std::remove(held.begin(), held.end(), lock.id), held.end());
    }
  }
  lock.owner.reset();
  lock.depth = 0;
  lock.owner_stack = PyStack{};
}

WaitKind LockModel::ClassifyWait(const LockRecord& lock, pid_t tid) const {
  if (lock.kind == LockKind::kJoinSentinel) return WaitKind::kJoin;
  if (lock.condition_waiter || lock.signal) return WaitKind::kCondition;
  // Condition.wait blocks on a fresh lock it created and already holds, until notify()
  // releases it from another thread. With exact owners: waiting for a lock you hold. With
  // contended tracing only: waiting for a plain Lock you created and nobody else touched.
  if (lock.kind == LockKind::kLock) {
    if (lock.owner == tid && lock.owner_exact) return WaitKind::kCondition;
    if (!config_.exact_ownership && lock.creator == tid &&
        (lock.users.empty() || (lock.users.size() == 1 && lock.users.count(tid)))) {
      return WaitKind::kCondition;
    }
  }
  return WaitKind::kLock;
}

void LockModel::Apply(const DecodedEvent& event, const PyStack* stack,
                      std::vector<LockChangeEvent>* out) {
  const ts_header& h = event.header;
  if (!pending_timeouts_.empty()) FinishStaleParks(h.ts_ns, out);
  // A thread's next lock-related record ends what its last park left pending (a wait woken
  // without a hand-off, a timeout, an interrupted wait), unless it is a park of the same call:
  // that is decided in OnParkBegin, and an acquire's own return in OnLock. GIL records never
  // end anything (a woken waiter takes the GIL back before it competes again).
  if (h.type == TS_EV_SEM_WAIT_BEGIN || h.type == TS_EV_LOCK_RELEASE ||
      h.type == TS_EV_UNPARK || h.type == TS_EV_CS_SLOW || h.type == TS_EV_THREAD_EXIT) {
    auto it = threads_.find(static_cast<pid_t>(h.tid));
    if (it != threads_.end() && it->second.park.phase != ParkState::Phase::kNone &&
        !it->second.park.open) {
      FinishPark(it->second, it->first, std::nullopt, out);
    }
  }
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, ts_sem_wait>) {
          OnSemWait(h, e, stack, out);
        } else if constexpr (std::is_same_v<T, ts_lock_event>) {
          OnLock(h, e, stack, out);
        } else if constexpr (std::is_same_v<T, ts_futex_wake>) {
          OnWake(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_park>) {
          if (h.type == TS_EV_PARK_BEGIN) {
            OnParkBegin(h, e, stack, out);
          } else {
            OnParkEnd(h, e, out);
          }
        } else if constexpr (std::is_same_v<T, ts_unpark>) {
          OnUnpark(h, e, out);
        } else if constexpr (std::is_same_v<T, ts_cs_slow>) {
          OnCsSlow(h, e, stack);
        } else if constexpr (std::is_same_v<T, PyTypeRecord>) {
          DefineType(e.fixed.type, (e.fixed.flags & TS_LOCATION_UNREADABLE) ? "" : e.name);
        } else if constexpr (std::is_same_v<T, ts_thread_bootstrap>) {
          if (e.ident) idents_[e.ident] = static_cast<pid_t>(h.tid);
        } else if constexpr (std::is_same_v<T, ts_thread_sentinel>) {
          if (e.sem) {
            if (LockRecord* l = NewLock(e.lock, e.sem, LockKind::kJoinSentinel, h.ts_ns, true)) {
              l->creator = static_cast<pid_t>(h.tid);
              l->created_ns = h.ts_ns;
            }
          }
        } else if constexpr (std::is_same_v<T, ts_thread_clone>) {
          // A new thread with the tid of one that exited: it starts with nothing.
          pid_t tid = static_cast<pid_t>(e.child_tid);
          auto it = threads_.find(tid);
          if (it != threads_.end() && !it->second.waiting_lock && it->second.held.empty()) {
            threads_.erase(it);
          }
        } else if constexpr (std::is_same_v<T, ts_thread_exit>) {
          pid_t tid = static_cast<pid_t>(h.tid);
          auto it = threads_.find(tid);
          if (it != threads_.end() && (it->second.waiting_lock || it->second.waiting_site)) {
            LeaveWait(it->second, tid);
            ResolveDeadlocks(tid, h.ts_ns, out);
          }
          if (it != threads_.end()) {
            if (it->second.park.open) parks_by_sema_.erase(it->second.park.sema);
            it->second.park = ParkState{};
            ForgetExitedThread(tid);
          }
        } else if constexpr (std::is_same_v<T, ts_trace_mark>) {
          if (e.kind == TS_MARK_DETACHED || e.kind == TS_MARK_TARGET_EXITED) FinishAllParks(out);
          if (e.kind == TS_MARK_TRACE_PAUSED) Pause();
          if (e.kind == TS_MARK_TARGET_EXITED) {
            for (auto& [tid, t] : threads_) {
              t.waiting_lock.reset();
              t.waiting_site.reset();
              t.park = ParkState{};
            }
            parks_by_sema_.clear();
            for (auto& [id, l] : locks_) l.waiters.clear();
            for (auto& [id, site] : sites_) site.waiters.clear();
            for (auto& d : deadlocks_) {
              if (!d.resolved_ns) d.resolved_ns = h.ts_ns;
            }
          }
        }
      },
      event.payload);
}

void LockModel::Pause() {
  ++pauses_;
  std::set<pid_t> deadlocked;
  for (const auto& d : deadlocks_) {
    if (!d.resolved_ns) deadlocked.insert(d.threads.begin(), d.threads.end());
  }
  for (auto& [tid, t] : threads_) {
    t.held.clear();
    if (deadlocked.count(tid)) continue;
    if (t.waiting_lock || t.waiting_site) {
      LeaveWait(t, tid);
      ++cut_waits_;
    }
    if (t.park.open) parks_by_sema_.erase(t.park.sema);
    t.park = ParkState{};
    t.last_woken_by.reset();
  }
  for (auto& [id, l] : locks_) {
    l.owner.reset();
    l.owner_exact = false;
    l.depth = 0;
    l.owner_stack = PyStack{};
  }
  saved_depth_.clear();
  early_wakes_.clear();  // a wake from before the gap must not claim a park after it
}

void LockModel::OnSemWait(const ts_header& h, const ts_sem_wait& e, const PyStack* stack,
                          std::vector<LockChangeEvent>* out) {
  pid_t tid = static_cast<pid_t>(h.tid);
  if (h.type == TS_EV_SEM_DESTROY) {
    if (LockRecord* l = BySem(e.sem)) Free(*l, h.ts_ns);
    return;
  }
  if (h.type == TS_EV_SEM_WAIT_BEGIN) {
    LockRecord* found = Lookup(0, e.sem, LockKind::kUnknown, h.ts_ns);
    if (!found) return;  // at the model's bound
    BeginLockWait(threads_[tid], *found, tid, h.ts_ns, stack, out);
    return;
  }
  // TS_EV_SEM_WAIT_END
  LockRecord* l = BySem(e.sem);
  auto it = threads_.find(tid);
  if (!l || it == threads_.end() || it->second.waiting_lock != l->id) return;  // began before us
  EndWait(it->second, *l, tid, h.ts_ns, e.ret == 0, out);
}

void LockModel::BeginLockWait(ThreadLockState& t, LockRecord& l, pid_t tid, uint64_t ts,
                              const PyStack* stack, std::vector<LockChangeEvent>* out) {
  WaitKind kind = ClassifyWait(l, tid);
  if (kind == WaitKind::kCondition) l.condition_waiter = true;
  // A wait whose end was lost (or a repeated begin) must not leave a phantom waiter behind.
  if (t.waiting_lock || t.waiting_site) LeaveWait(t, tid);
  t.waiting_lock = l.id;
  t.waiting_since_ns = ts;
  t.waiting_kind = kind;
  t.waiting_woken = false;
  t.waiting_stack = stack ? *stack : PyStack{};
  l.waiters.push_back({tid, ts, kind, t.waiting_stack});
  if (kind == WaitKind::kLock) {
    ++l.contended;
    l.users.insert(tid);
    if (l.first_contended_at.empty()) l.first_contended_at = t.waiting_stack;
  }
  LockChangeEvent ev{LockChange::kWaitBegin, ts, l.id, tid, kind};
  if (kind == WaitKind::kLock && l.owner) ev.other = l.owner;
  ev.stack = t.waiting_stack;
  if (kind != WaitKind::kJoin) Emit(out, ev);  // the thread model reports joins
  if (kind == WaitKind::kLock) CheckDeadlock(tid, ts, out);
}

void LockModel::LeaveWait(ThreadLockState& t, pid_t tid) {
  auto drop = [tid](std::vector<LockWaiter>& w) {
    w.erase(std::remove_if(w.begin(), w.end(), [&](const LockWaiter& x) { return x.tid == tid; }),
            w.end());
  };
  if (t.waiting_lock) {
    if (auto it = locks_.find(*t.waiting_lock); it != locks_.end()) drop(it->second.waiters);
  }
  if (t.waiting_site) {
    if (auto it = sites_.find(*t.waiting_site); it != sites_.end()) drop(it->second.waiters);
  }
  t.waiting_lock.reset();
  t.waiting_site.reset();
  t.waiting_woken = false;
  t.waiting_stack = PyStack{};
}

void LockModel::EndWait(ThreadLockState& t, LockRecord& l, pid_t tid, uint64_t ts, bool acquired,
                        std::vector<LockChangeEvent>* out, bool timed_out) {
  uint64_t waited = Elapsed(ts, t.waiting_since_ns);
  WaitKind kind = t.waiting_kind;
  t.last_wait_stack = std::move(t.waiting_stack);
  LeaveWait(t, tid);
  l.wait.Add(waited);
  switch (kind) {
    case WaitKind::kLock:
      ++t.lock_waits;
      t.lock_wait_ns += waited;
      break;
    case WaitKind::kCondition:
      ++t.condition_waits;
      t.condition_wait_ns += waited;
      break;
    case WaitKind::kJoin:
      t.join_wait_ns += waited;
      break;
    case WaitKind::kContention:
      break;
  }
  if (!acquired) ++(timed_out ? l.timeouts : l.interrupts);
  LockChangeEvent ev{LockChange::kWaitEnd, ts, l.id, tid, kind, waited, acquired};
  ev.stack = t.last_wait_stack;
  if (acquired && l.last_waker && *l.last_waker != tid) {
    ev.other = l.last_waker;
    t.last_woken_by = l.last_waker;
  }
  if (kind != WaitKind::kJoin) Emit(out, ev);
  // Contended tracing learns the owner from the handoff; with every acquire traced, the
  // acquire call's return says it (and keeps RLock depth right).
  if (acquired && !config_.exact_ownership && kind == WaitKind::kLock) {
    // (a PyMutex handed over at its unpark already has this owner, since then)
    if (l.owner != tid) SetOwner(l, tid, ts, /*exact=*/false, 1, out);
    l.owner_stack = t.last_wait_stack;
  }
  ResolveDeadlocks(tid, ts, out);
}

void LockModel::OnWake(const ts_header& h, const ts_futex_wake& e,
                       std::vector<LockChangeEvent>* out) {
  LockRecord* l = BySem(e.uaddr);
  if (!l) return;
  pid_t waker = static_cast<pid_t>(h.tid);
  ++l->wakeups;
  l->last_waker = waker;
  // Without exact ownership, the waker was the holder and has now let go.
  if (!config_.exact_ownership && !l->owner_exact && (!l->owner || *l->owner == waker)) {
    ClearOwner(*l, h.ts_ns, out);
  }
  if (l->kind != LockKind::kJoinSentinel) {
    Emit(out, LockChangeEvent{LockChange::kWoken, h.ts_ns, l->id, waker,
                              l->condition_waiter ? WaitKind::kCondition : WaitKind::kLock});
  }
}

void LockModel::OnLock(const ts_header& h, const ts_lock_event& e, const PyStack* stack,
                       std::vector<LockChangeEvent>* out) {
  pid_t tid = static_cast<pid_t>(h.tid);
  LockKind kind = e.kind == TS_LOCK_RLOCK ? LockKind::kRLock
                  : e.kind == TS_LOCK_LOCK ? LockKind::kLock
                                           : LockKind::kUnknown;
  const bool pymutex = e.flags & TS_LOCK_F_PYMUTEX;
  // A creation or a call names the type of its object: parks on objects of that type are
  // waits for this kind of lock (the daemon also names types; this works without it).
  if (e.obj_type && kind != LockKind::kUnknown && TypeName(e.obj_type).empty()) {
    DefineType(e.obj_type, kind == LockKind::kRLock ? "_thread.RLock" : "_thread.lock");
  }
  if (h.type == TS_EV_LOCK_NEW) {
    LockRecord* l = NewLock(e.obj, e.sem, kind, h.ts_ns, /*interesting=*/false);
    if (!l) return;
    l->pymutex = pymutex;
    l->creator = tid;
    l->created_ns = h.ts_ns;
    if (stack) l->created_at = *stack;
    return;
  }
  if (h.type == TS_EV_LOCK_FREE) {
    if (LockRecord* l = ByObj(e.obj); l && (l->kind == kind || l->kind == LockKind::kUnknown)) {
      Free(*l, h.ts_ns);
    }
    return;
  }
  LockRecord* found = Lookup(e.obj, e.sem, kind, h.ts_ns);
  if (!found) return;
  LockRecord& l = *found;
  if (pymutex) l.pymutex = true;
  ThreadLockState& t = threads_[tid];
  if (e.flags & TS_LOCK_F_OWNER && e.owner_ident && h.type == TS_EV_LOCK_ACQUIRE &&
      e.result == TS_ACQUIRE_ACQUIRED) {
    idents_[e.owner_ident] = tid;  // an RLock's owner is the thread that just acquired it
  }
  if (h.type == TS_EV_LOCK_ACQUIRE) {
    // The acquire call that parked returns: its result is how the wait ended.
    ParkState& p = t.park;
    if (p.phase != ParkState::Phase::kNone && !p.open) {
      bool same = p.target == ParkState::Target::kLock && p.lock_id == l.id;
      FinishPark(t, tid, same ? std::optional<int32_t>(e.result) : std::nullopt, out);
    }
    if (e.result == TS_ACQUIRE_FAILED) {
      if (!e.waited) ++l.failed_trylocks;  // (a timed-out wait was counted when it ended)
      return;
    }
    if (e.result != TS_ACQUIRE_ACQUIRED) return;
    ++l.acquires;
    ++t.acquires;
    ++l.acquires_by_thread[tid];
    l.users.insert(tid);
    const bool exact_depth = (e.flags & TS_LOCK_F_OWNER) && e.depth > 0;
    if (l.kind == LockKind::kRLock && e.op == TS_LOCK_OP_ACQUIRE && l.owner == tid &&
        l.owner_exact) {
      l.depth = exact_depth ? e.depth : l.depth + 1;  // reentrant
      return;
    }
    uint32_t depth = exact_depth ? e.depth : 1;
    if (e.op == TS_LOCK_OP_RESTORE) {
      auto it = saved_depth_.find({tid, l.id});
      if (it != saved_depth_.end()) {
        if (!exact_depth) depth = it->second;
        saved_depth_.erase(it);
      }
    }
    if (OrderEligible(l)) RecordOrder(tid, t, l.id, h.ts_ns, out);
    SetOwner(l, tid, h.ts_ns, /*exact=*/true, depth, out);
    // Where it was taken: this acquire's own stack, else the wait it just ended.
    if (stack) {
      l.owner_stack = *stack;
    } else if (e.waited) {
      l.owner_stack = t.last_wait_stack;
    } else {
      l.owner_stack = PyStack{};
    }
    return;
  }
  // TS_EV_LOCK_RELEASE
  ++l.releases;
  // A Lock released by a thread that does not hold it is a signal (notify() releasing a
  // Condition's waiter lock; Event-like use), not a mutex: it never feeds the order graph, or
  // the order "held Condition lock -> waiter lock" plus "waiter lock -> Condition lock" (the
  // waiter retaking the Condition after its wait) reads as an inversion.
  if (l.kind == LockKind::kLock && l.owner && l.owner_exact && *l.owner != tid && !l.signal) {
    l.signal = true;
    DropOrderEdges(l.id);
  }
  if (e.op == TS_LOCK_OP_RELEASE_SAVE) {
    uint32_t depth = (e.flags & TS_LOCK_F_OWNER) && e.depth ? e.depth : std::max<uint32_t>(l.depth, 1);
    saved_depth_[{tid, l.id}] = depth;
    if (saved_depth_.size() > 4 * std::max<size_t>(config_.max_thread_states, 1)) {
      saved_depth_.erase(saved_depth_.begin());  // bounded: a restore that never came
    }
  } else if (l.kind == LockKind::kRLock && (e.flags & TS_LOCK_F_OWNER)) {
    // The object says who holds it and how deep (also for an RLock taken before the attach).
    // A release by anyone else raises and changes nothing.
    if (!e.owner_ident) return;
    auto owner = idents_.find(e.owner_ident);
    if (owner != idents_.end() && owner->second != tid) return;
    if (e.depth > 1) {
      if (l.owner != tid) SetOwner(l, tid, h.ts_ns, /*exact=*/true, e.depth - 1, out);
      l.depth = e.depth - 1;
      return;
    }
  } else if (l.kind == LockKind::kRLock && l.owner == tid && l.depth > 1) {
    --l.depth;
    return;
  }
  ClearOwner(l, h.ts_ns, out);
}

}  // namespace threadscope::model
