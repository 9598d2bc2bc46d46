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
  }
  return "lock";
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
  if (generations_.size() > 4 * max) {
    // Forget generations of addresses no live lock uses: the next lock there starts at 1.
    for (auto it = generations_.begin(); it != generations_.end();) {
      it = by_sem_.count(it->first) ? std::next(it) : generations_.erase(it);
    }
  }
  LockRecord l;
  l.id = next_id_++;
  l.obj = obj;
  l.sem = sem;
  l.kind = kind;
  if (sem) l.generation = ++generations_[sem];
  uint64_t id = l.id;
  locks_.emplace(id, std::move(l));
  if (sem) by_sem_[sem] = id;
  if (obj) by_obj_[obj] = id;
  return &locks_.at(id);
}

LockRecord* LockModel::Lookup(uint64_t obj, uint64_t sem, LockKind kind, uint64_t ts) {
  LockRecord* l = obj ? ByObj(obj) : nullptr;
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
  if (lock.condition_waiter) return WaitKind::kCondition;
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
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, ts_sem_wait>) {
          OnSemWait(h, e, stack, out);
        } else if constexpr (std::is_same_v<T, ts_lock_event>) {
          OnLock(h, e, stack, out);
        } else if constexpr (std::is_same_v<T, ts_futex_wake>) {
          OnWake(h, e, out);
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
          if (it != threads_.end() && it->second.waiting_lock) {
            LeaveWait(it->second, tid);
            ResolveDeadlocks(tid, h.ts_ns, out);
          }
          if (it != threads_.end()) ForgetExitedThread(tid);
        } else if constexpr (std::is_same_v<T, ts_trace_mark>) {
          if (e.kind == TS_MARK_TARGET_EXITED) {
            for (auto& [tid, t] : threads_) t.waiting_lock.reset();
            for (auto& [id, l] : locks_) l.waiters.clear();
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
    LockRecord& l = *found;
    WaitKind kind = ClassifyWait(l, tid);
    if (kind == WaitKind::kCondition) l.condition_waiter = true;
    ThreadLockState& t = threads_[tid];
    // A wait whose end was lost (or a repeated begin) must not leave a phantom waiter behind.
    if (t.waiting_lock) LeaveWait(t, tid);
    t.waiting_lock = l.id;
    t.waiting_since_ns = h.ts_ns;
    t.waiting_kind = kind;
    t.waiting_stack = stack ? *stack : PyStack{};
    l.waiters.push_back({tid, h.ts_ns, kind, t.waiting_stack});
    if (kind == WaitKind::kLock) {
      ++l.contended;
      l.users.insert(tid);
      if (l.first_contended_at.empty()) l.first_contended_at = t.waiting_stack;
    }
    LockChangeEvent ev{LockChange::kWaitBegin, h.ts_ns, l.id, tid, kind};
    if (kind == WaitKind::kLock && l.owner) ev.other = l.owner;
    ev.stack = t.waiting_stack;
    if (kind != WaitKind::kJoin) Emit(out, ev);  // the thread model reports joins
    if (kind == WaitKind::kLock) CheckDeadlock(tid, h.ts_ns, out);
    return;
  }
  // TS_EV_SEM_WAIT_END
  LockRecord* l = BySem(e.sem);
  auto it = threads_.find(tid);
  if (!l || it == threads_.end() || it->second.waiting_lock != l->id) return;  // began before us
  EndWait(it->second, *l, tid, h.ts_ns, e.ret == 0, out);
}

void LockModel::LeaveWait(ThreadLockState& t, pid_t tid) {
  if (t.waiting_lock) {
    if (auto it = locks_.find(*t.waiting_lock); it != locks_.end()) {
      auto& w = it->second.waiters;
      w.erase(std::remove_if(w.begin(), w.end(), [&](const LockWaiter& x) { return x.tid == tid; }),
              w.end());
    }
  }
  t.waiting_lock.reset();
  t.waiting_stack = PyStack{};
}

void LockModel::EndWait(ThreadLockState& t, LockRecord& l, pid_t tid, uint64_t ts, bool acquired,
                        std::vector<LockChangeEvent>* out) {
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
  }
  if (!acquired) ++l.timeouts;
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
    SetOwner(l, tid, ts, /*exact=*/false, 1, out);
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
  if (h.type == TS_EV_LOCK_NEW) {
    LockRecord* l = NewLock(e.obj, e.sem, kind, h.ts_ns, /*interesting=*/false);
    if (!l) return;
    l->creator = tid;
    l->created_ns = h.ts_ns;
    if (stack) l->created_at = *stack;
    return;
  }
  LockRecord* found = Lookup(e.obj, e.sem, kind, h.ts_ns);
  if (!found) return;
  LockRecord& l = *found;
  ThreadLockState& t = threads_[tid];
  if (h.type == TS_EV_LOCK_ACQUIRE) {
    if (e.result == TS_ACQUIRE_FAILED) {
      if (!e.waited) ++l.failed_trylocks;  // (a timed-out wait was counted when it ended)
      return;
    }
    if (e.result != TS_ACQUIRE_ACQUIRED) return;
    ++l.acquires;
    ++t.acquires;
    ++l.acquires_by_thread[tid];
    l.users.insert(tid);
    if (l.kind == LockKind::kRLock && e.op == TS_LOCK_OP_ACQUIRE && l.owner == tid) {
      ++l.depth;  // reentrant
      return;
    }
    uint32_t depth = 1;
    if (e.op == TS_LOCK_OP_RESTORE) {
      auto it = saved_depth_.find({tid, l.id});
      if (it != saved_depth_.end()) {
        depth = it->second;
        saved_depth_.erase(it);
      }
    }
    if (!l.condition_waiter) RecordOrder(tid, t, l.id, h.ts_ns, out);
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
  if (e.op == TS_LOCK_OP_RELEASE_SAVE) {
    saved_depth_[{tid, l.id}] = std::max<uint32_t>(l.depth, 1);
  } else if (l.kind == LockKind::kRLock && l.owner == tid && l.depth > 1) {
    --l.depth;
    return;
  }
  ClearOwner(l, h.ts_ns, out);
}

void LockModel::RecordOrder(pid_t tid, const ThreadLockState& t, uint64_t lock_id, uint64_t ts,
                            std::vector<LockChangeEvent>* out) {
  for (uint64_t held : t.held) {
    if (held == lock_id) continue;
    const LockRecord* h = FindLock(held);
    if (!h || h->condition_waiter || h->kind == LockKind::kJoinSentinel) continue;
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
    if (st == threads_.end() || !st->second.waiting_lock ||
        st->second.waiting_kind != WaitKind::kLock) {
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

}  // namespace threadscope::model
