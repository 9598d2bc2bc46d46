// The lock model's graph: the order in which threads take locks (--locks=all), its
// inversions, and wait-for cycles (deadlocks) and their resolution. Part of LockModel; apart
// from lock_model.cc, which keeps locks, owners and waits, so that each file reads as one thing.
#include "daemon/model/lock_model.h"

#include <algorithm>

namespace threadscope::model {

namespace {

// Bound the order graph: a program with an unbounded number of locks must not grow it forever.
constexpr size_t kMaxOrderEdges = 1 << 16;

}  // namespace

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

}  // namespace threadscope::model
