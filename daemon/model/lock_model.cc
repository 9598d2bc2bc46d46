#include "daemon/model/lock_model.h"

#include <algorithm>

namespace threadscope::model {

namespace {

// Bound the order graph: a program with an unbounded number of locks must not grow it forever.
constexpr size_t kMaxOrderEdges = 1 << 16;
// Freed locks that were contended stay visible (top contended); this many at most.
constexpr size_t kMaxFreedLocks = 4096;

void Emit(std::vector<LockChangeEvent>* out, LockChangeEvent e) {
  if (out) out->push_back(e);
}

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

bool LockModel::OrderEligible(const LockRecord& l) const {
  // Only real Python locks whose identity is their object: never condition waiters or other
  // signals, join sentinels, locks of unknown kind, or locks known only by a semaphore.
  return !l.condition_waiter && !l.signal && !l.id_is_sem &&
         (l.kind == LockKind::kLock || l.kind == LockKind::kRLock);
}

void LockModel::RecordOrder(pid_t tid, const ThreadLockState& t, uint64_t lock_id, uint64_t ts,
                            std::vector<LockChangeEvent>* out) {
  const LockRecord* taken = FindLock(lock_id);
  for (uint64_t held : t.held) {
    if (held == lock_id) continue;
    const LockRecord* h = FindLock(held);
    if (!h || !OrderEligible(*h)) continue;
    // Two generations of one address are two locks, but never an order between themselves.
    if (taken && h->id_address == taken->id_address) continue;
    if (!order_.count({held, lock_id}) && order_.size() < kMaxOrderEdges) {
      order_[{held, lock_id}] = {tid, ts};
      order_peers_[held].push_back(lock_id);
      order_peers_[lock_id].push_back(held);
    }
    auto reverse = order_.find({lock_id, held});
    if (reverse == order_.end()) continue;
    auto key = std::minmax(held, lock_id);
    if (!reported_inversions_.insert(key).second) continue;
    OrderInversion inv;
    inv.lock_a = lock_id;  // a before b was seen first (the reverse edge)
    inv.lock_b = held;
    inv.thread_ab = reverse->second.first;
    inv.ab_ns = reverse->second.second;
    inv.thread_ba = tid;
    inv.ba_ns = ts;
    inversions_.push_back(inv);
    LockChangeEvent ev{LockChange::kOrderInversion, ts, lock_id, tid};
    ev.inversion = inversions_.size() - 1;
    Emit(out, ev);
  }
}

void LockModel::CheckDeadlock(pid_t start, uint64_t ts, std::vector<LockChangeEvent>* out) {
  std::vector<pid_t> path;
  std::vector<uint64_t> locks;
  pid_t t = start;
  for (int hops = 0; hops < 64; ++hops) {
    auto st = threads_.find(t);
    // A thread woken without a hand-off is not blocked: it competes for the lock right now.
    if (st == threads_.end() || !st->second.waiting_lock ||
        st->second.waiting_kind != WaitKind::kLock || st->second.waiting_woken) {
      return;
    }
    const LockRecord* l = FindLock(*st->second.waiting_lock);
    if (!l || !l->owner || *l->owner == t) return;
    path.push_back(t);
    locks.push_back(l->id);
    pid_t owner = *l->owner;
    auto loop = std::find(path.begin(), path.end(), owner);
    if (loop != path.end()) {
      Deadlock d;
      size_t from = static_cast<size_t>(loop - path.begin());
      d.threads.assign(path.begin() + from, path.end());
      d.locks.assign(locks.begin() + from, locks.end());
      // Same cycle already known (reported from another of its threads)?
      std::vector<pid_t> sorted = d.threads;
      std::sort(sorted.begin(), sorted.end());
      for (const auto& known : deadlocks_) {
        if (known.resolved_ns) continue;
        std::vector<pid_t> k = known.threads;
        std::sort(k.begin(), k.end());
        if (k == sorted) return;
      }
      for (size_t i = 0; i < d.threads.size(); ++i) {
        const ThreadLockState& member = threads_[d.threads[i]];
        d.since_ns = std::max(d.since_ns, member.waiting_since_ns);
        d.wait_stacks.push_back(member.waiting_stack);
        const LockRecord* held = FindLock(d.locks[i]);
        d.owner_stacks.push_back(held ? held->owner_stack : PyStack{});
      }
      d.id = next_deadlock_id_++;
      d.detected_ns = ts;
      // Bounded: past max_deadlocks the oldest resolved ones go (counted).
      if (deadlocks_.size() >= std::max<size_t>(config_.max_deadlocks, 1)) {
        auto old = std::find_if(deadlocks_.begin(), deadlocks_.end(),
                                [](const Deadlock& k) { return k.resolved_ns.has_value(); });
        if (old == deadlocks_.end()) return;  // that many cycles at once: keep the ones we have
        deadlocks_.erase(old);
        ++deadlocks_dropped_;
      }
      deadlocks_.push_back(d);
      LockChangeEvent ev{LockChange::kDeadlock, ts, d.locks.front(), d.threads.front()};
      ev.deadlock_id = d.id;
      Emit(out, ev);
      return;
    }
    t = owner;
  }
}

void LockModel::ResolveDeadlocks(pid_t tid, uint64_t ts, std::vector<LockChangeEvent>* out) {
  for (auto& d : deadlocks_) {
    if (d.resolved_ns || std::find(d.threads.begin(), d.threads.end(), tid) == d.threads.end()) {
      continue;
    }
    d.resolved_ns = ts;
    LockChangeEvent ev{LockChange::kDeadlockResolved, ts, d.locks.front(), tid};
    ev.deadlock_id = d.id;
    Emit(out, ev);
  }
}

// ---------------------------------------------------------------------------- parking lot

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
