// Rebuilds lock ownership, waiters, contention and deadlocks from decoded events. Pure.
//
// What it knows depends on the probes (ProbePlan.locks, saved in recordings):
//
//   fact                                | --locks=contended              | --locks=all
//   ------------------------------------|--------------------------------|-----------------------
//   blocking waits: who, on what, how   | exact                          | exact
//     long, how they ended              |                                |
//   who released a waited-on lock       | exact (futex wake)             | exact
//   owner while somebody waits          | the last waiter that got it;   | exact
//                                       | unknown for uncontended takes  |
//   acquires, releases, failed tries,   | unknown (null)                 | exact
//     hold times, locks held per thread |                                |
//   lock-order inversions               | no                             | yes
//   deadlock (wait-for cycle)           | when every owner in the cycle  | yes
//                                       | is known                       |
//
// Locks are keyed by a model id; the object and semaphore addresses index the latest lock at
// each address, and a lock created at a reused address starts a new generation.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/model/event_decoder.h"
#include "daemon/model/histogram.h"
#include "daemon/model/py_locations.h"

namespace threadscope::model {

enum class LockKind { kUnknown, kLock, kRLock, kJoinSentinel };
const char* LockKindName(LockKind kind);

// What a blocked thread is doing, as the user would say it.
enum class WaitKind {
  kLock,       // acquiring a lock somebody else holds
  kCondition,  // Condition.wait (and Event.wait, Queue.get, ...): its private waiter lock
  kJoin,       // Thread.join on 3.4-3.12: the thread's sentinel lock
};
const char* WaitKindName(WaitKind kind);

struct LockWaiter {
  pid_t tid = 0;
  uint64_t since_ns = 0;
  WaitKind kind = WaitKind::kLock;
  PyStack stack;  // where it waits
};

struct LockRecord {
  uint64_t id = 0;
  uint64_t obj = 0;  // lockobject *, 0 while only its semaphore is known
  uint64_t sem = 0;  // PyThread_type_lock
  uint32_t generation = 1;
  LockKind kind = LockKind::kUnknown;
  bool condition_waiter = false;  // a Condition's private waiter lock
  std::optional<pid_t> creator;
  std::optional<uint64_t> created_ns;
  std::optional<uint64_t> freed_ns;
  std::optional<pid_t> owner;
  uint64_t owner_since_ns = 0;
  uint32_t depth = 0;       // RLock recursion while owned
  bool owner_exact = false; // from acquire/release calls, not inferred from a handoff
  std::vector<LockWaiter> waiters;
  uint64_t acquires = 0;         // --locks=all
  uint64_t contended = 0;        // blocking waits for it (condition and join waits excluded)
  uint64_t timeouts = 0;         // waits that gave up
  uint64_t failed_trylocks = 0;  // --locks=all: non-blocking acquire that found it held
  uint64_t releases = 0;         // --locks=all
  uint64_t wakeups = 0;          // releases that woke a waiter
  Log2Histogram wait;
  Log2Histogram hold;            // --locks=all
  std::optional<pid_t> last_waker;
  std::set<pid_t> users;         // threads that acquired or waited for it
  PyStack created_at;            // the creating thread's stack
  PyStack owner_stack;           // where the owner took it (its acquire, or its wait)
  PyStack first_contended_at;    // the first blocking wait's stack
  std::map<pid_t, uint64_t> acquires_by_thread;  // --locks=all
};

struct ThreadLockState {
  std::vector<uint64_t> held;  // lock ids, in acquisition order
  std::optional<uint64_t> waiting_lock;
  uint64_t waiting_since_ns = 0;
  WaitKind waiting_kind = WaitKind::kLock;
  PyStack waiting_stack;
  PyStack last_wait_stack;  // the most recent wait's, for the acquire that ends it
  std::optional<pid_t> last_woken_by;
  uint64_t acquires = 0;  // --locks=all: successful acquisitions (reentrant ones included)
  uint64_t lock_waits = 0;
  uint64_t lock_wait_ns = 0;
  uint64_t condition_waits = 0;
  uint64_t condition_wait_ns = 0;
  uint64_t join_wait_ns = 0;
};

struct Deadlock {
  uint64_t id = 0;
  std::vector<pid_t> threads;   // t0 waits for a lock held by t1, ..., tn-1 for one held by t0
  std::vector<uint64_t> locks;  // locks[i] is what threads[i] waits for
  std::vector<PyStack> wait_stacks;   // where threads[i] waits (at detection)
  std::vector<PyStack> owner_stacks;  // where locks[i]'s owner took it (at detection)
  uint64_t since_ns = 0;        // when the last wait of the cycle began
  uint64_t detected_ns = 0;
  std::optional<uint64_t> resolved_ns;
};

struct OrderInversion {
  uint64_t lock_a = 0;  // a taken before b by thread_ab; b before a by thread_ba
  uint64_t lock_b = 0;
  pid_t thread_ab = 0;
  uint64_t ab_ns = 0;
  pid_t thread_ba = 0;
  uint64_t ba_ns = 0;
};

enum class LockChange {
  kWaitBegin,
  kWaitEnd,
  kWoken,
  kDeadlock,
  kDeadlockResolved,
  kOrderInversion,
  kReleased,  // --locks=all: an exact owner let go (hold_ns, stack: where it took the lock)
};
const char* LockChangeName(LockChange change);

struct LockChangeEvent {
  LockChange change = LockChange::kWaitBegin;
  uint64_t ts_ns = 0;
  uint64_t lock_id = 0;
  pid_t tid = 0;
  WaitKind wait_kind = WaitKind::kLock;
  uint64_t wait_ns = 0;          // kWaitEnd
  bool acquired = false;         // kWaitEnd
  std::optional<pid_t> other;    // the waker (kWoken, kWaitEnd) or the owner (kWaitBegin)
  uint64_t deadlock_id = 0;      // kDeadlock, kDeadlockResolved
  size_t inversion = 0;          // kOrderInversion: index into inversions()
  PyStack stack;                 // kWaitBegin, kWaitEnd: where the waiter waits; kReleased:
                                 // where the owner took it
  uint64_t hold_ns = 0;          // kReleased
};

struct LockModelConfig {
  bool exact_ownership = false;  // --locks=all
  // Memory bounds (a long-running or hostile target must not grow the daemon without end):
  // lock records kept (past it, new uncontended locks are not recorded, and at twice it no new
  // lock is), deadlocks kept (the oldest resolved go first), per-thread states of exited threads.
  size_t max_locks = 65536;
  size_t max_deadlocks = 1024;
  size_t max_thread_states = 16384;
};

class LockModel {
 public:
  explicit LockModel(LockModelConfig config = {}) : config_(config) {}

  const LockModelConfig& config() const { return config_; }
  // `stack`: the event's resolved Python stack, when it carried one.
  void Apply(const DecodedEvent& event, const PyStack* stack, std::vector<LockChangeEvent>* out);

  const std::unordered_map<uint64_t, LockRecord>& locks() const { return locks_; }
  const LockRecord* FindLock(uint64_t id) const;
  const std::unordered_map<pid_t, ThreadLockState>& threads() const { return threads_; }
  const ThreadLockState* FindThread(pid_t tid) const;
  const std::vector<Deadlock>& deadlocks() const { return deadlocks_; }
  const Deadlock* FindDeadlock(uint64_t id) const;
  uint64_t deadlocks_dropped() const { return deadlocks_dropped_; }
  // Locks not recorded at all because the model was at its bound (their events are ignored).
  uint64_t locks_untracked() const { return locks_untracked_; }
  const std::vector<OrderInversion>& inversions() const { return inversions_; }
  // Condition waiter locks and uncontended locks are dropped once freed; their numbers live on
  // here (per-thread totals keep the condition waits).
  const Log2Histogram& freed_condition_waits() const { return freed_condition_waits_; }
  uint64_t freed_locks_dropped() const { return freed_dropped_; }

 private:
  // Null when the model is at its bound (see LockModelConfig).
  LockRecord* NewLock(uint64_t obj, uint64_t sem, LockKind kind, uint64_t ts, bool interesting);
  LockRecord* BySem(uint64_t sem);
  LockRecord* ByObj(uint64_t obj);
  LockRecord* Lookup(uint64_t obj, uint64_t sem, LockKind kind, uint64_t ts);
  void DropOrderEdges(uint64_t lock_id);
  void ForgetExitedThread(pid_t tid);
  void Free(LockRecord& lock, uint64_t ts);
  void SetOwner(LockRecord& lock, pid_t tid, uint64_t ts, bool exact, uint32_t depth,
                std::vector<LockChangeEvent>* out);
  void ClearOwner(LockRecord& lock, uint64_t ts, std::vector<LockChangeEvent>* out);
  // Takes the thread off the waiters of the lock it waits on, if any.
  void LeaveWait(ThreadLockState& t, pid_t tid);
  void EndWait(ThreadLockState& t, LockRecord& lock, pid_t tid, uint64_t ts, bool acquired,
               std::vector<LockChangeEvent>* out);
  void CheckDeadlock(pid_t start, uint64_t ts, std::vector<LockChangeEvent>* out);
  void ResolveDeadlocks(pid_t tid, uint64_t ts, std::vector<LockChangeEvent>* out);
  void RecordOrder(pid_t tid, const ThreadLockState& t, uint64_t lock_id, uint64_t ts,
                   std::vector<LockChangeEvent>* out);
  WaitKind ClassifyWait(const LockRecord& lock, pid_t tid) const;

  void OnSemWait(const ts_header& h, const ts_sem_wait& e, const PyStack* stack,
                 std::vector<LockChangeEvent>* out);
  void OnLock(const ts_header& h, const ts_lock_event& e, const PyStack* stack,
              std::vector<LockChangeEvent>* out);
  void OnWake(const ts_header& h, const ts_futex_wake& e, std::vector<LockChangeEvent>* out);

  LockModelConfig config_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, LockRecord> locks_;
  std::unordered_map<uint64_t, uint64_t> by_sem_;
  std::unordered_map<uint64_t, uint64_t> by_obj_;
  std::unordered_map<uint64_t, uint32_t> generations_;  // sem address -> locks seen there
  std::unordered_map<pid_t, ThreadLockState> threads_;
  std::map<std::pair<pid_t, uint64_t>, uint32_t> saved_depth_;  // RLock._release_save
  std::vector<Deadlock> deadlocks_;
  uint64_t next_deadlock_id_ = 1;
  uint64_t deadlocks_dropped_ = 0;
  uint64_t locks_untracked_ = 0;
  // Freed locks kept for the report, least waited-for first (the first to go past the bound).
  std::set<std::pair<uint64_t, uint64_t>> freed_by_wait_;
  std::deque<pid_t> exited_;  // threads that exited, oldest first (their states go first)
  std::map<std::pair<uint64_t, uint64_t>, std::pair<pid_t, uint64_t>> order_;  // a->b: first seen
  std::unordered_map<uint64_t, std::vector<uint64_t>> order_peers_;  // lock -> locks it has edges with
  std::set<std::pair<uint64_t, uint64_t>> reported_inversions_;
  std::vector<OrderInversion> inversions_;
  Log2Histogram freed_condition_waits_;
  uint64_t freed_dropped_ = 0;
};

}  // namespace threadscope::model
