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
// The overhead budget's duty cycle detaches the lock probes for most of each period
// (TS_MARK_TRACE_PAUSED ... TS_MARK_TRACE_RESUMED). At a pause, waits in progress are cut (no
// end is invented; they are not counted as contended or timed), every owner and every thread's
// held locks are forgotten (unknown until seen again), so no wait-for edge and no lock-order
// edge can come from before the gap: a deadlock needs a wait begun after the gap on a lock whose
// owner was learned after it, for every edge of the cycle. A deadlock detected before the pause
// stays as it is (its threads keep their waits: a wait in a cycle cannot end unless the cycle
// does, and its end after the gap resolves it). Counts are of the traced time only.
//
// Locks are keyed by a model id; the object and semaphore addresses index the latest lock at
// each address, and a lock created at a reused address starts a new generation. A lock's
// identity is its object (its semaphore only while the object is unknown: a lock seen first
// through a semaphore wait, up to 3.13.0).
//
// 3.13+ parking lot (PyMutex locks): a "park" is one _PySemaphore_Wait of a blocked thread; a
// "wait" is one acquire call that parked at least once. CPython's PyMutex is not FIFO: a woken
// waiter that was not handed the lock competes for it and may park again inside the same call,
// with the same mutex_entry (park_arg, time_to_be_fair), so parks with one identity are one
// wait. A wait ends when the lock is handed to it (exact), when it times out or is interrupted,
// or, woken without a hand-off, once that identity can no longer come back: the thread parks
// for something else, makes another lock call, releases something, exits, or the trace ends.
//
// Parks on anything that is not a Python lock are contention sites: free-threaded critical
// sections (an object's ob_mutex: "list at app/q.py:42") and the interpreter's other PyMutexes
// (3.15's PyThread locks, I/O buffers...), counted by type and Python line, never part of the
// lock-order graph or of deadlocks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
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
  kLock,        // acquiring a lock somebody else holds
  kCondition,   // Condition.wait (and Event.wait, Queue.get, ...): its private waiter lock
  kJoin,        // Thread.join on 3.4-3.12: the thread's sentinel lock
  kContention,  // a critical section or an interpreter mutex (3.13+: a ContentionSite)
};
const char* WaitKindName(WaitKind kind);

struct LockWaiter {
  pid_t tid = 0;
  uint64_t since_ns = 0;
  WaitKind kind = WaitKind::kLock;
  PyStack stack;  // where it waits
  // PyMutex: woken without being handed the lock, competing for it now (it may park again).
  bool woken = false;
};

struct LockRecord {
  uint64_t id = 0;
  uint64_t obj = 0;  // lockobject *, 0 while only its semaphore is known
  uint64_t sem = 0;  // PyThread_type_lock; 0 for PyMutex locks
  // What the id names, fixed when the record is made: the object, or (seen first through a
  // semaphore wait) the semaphore.
  uint64_t id_address = 0;
  bool id_is_sem = false;
  uint32_t generation = 1;
  LockKind kind = LockKind::kUnknown;
  bool pymutex = false;           // 3.13+: waits are parks, wakes are unparks
  bool condition_waiter = false;  // a Condition's private waiter lock
  // Released by a thread that did not hold it (a Condition waiter released by notify(), an
  // Event-like use): a signal, not a mutex. Never in the lock-order graph.
  bool signal = false;
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
  // PyMutex (3.13+): parks (contended = waits; parks = waits + re-parks), and how wakes went:
  // handed the lock to the woken waiter, or freed it for the woken waiter to compete.
  uint64_t parks = 0;
  uint64_t reparks = 0;
  uint64_t handoffs = 0;
  uint64_t barges = 0;
  uint64_t interrupts = 0;       // waits a signal ended (the acquire raised)
  Log2Histogram wait;
  Log2Histogram hold;            // --locks=all
  std::optional<pid_t> last_waker;
  std::set<pid_t> users;         // threads that acquired or waited for it
  PyStack created_at;            // the creating thread's stack
  PyStack owner_stack;           // where the owner took it (its acquire, or its wait)
  PyStack first_contended_at;    // the first blocking wait's stack
  std::map<pid_t, uint64_t> acquires_by_thread;  // --locks=all
};

// Contention that is not on a Python lock (3.13+ parks): one row per (kind, object type,
// innermost Python frame).
enum class ContentionKind {
  kCriticalSection,  // free-threaded: an object's ob_mutex (Py_BEGIN_CRITICAL_SECTION)
  kMutex,            // another PyMutex of the interpreter (3.15 PyThread locks, I/O buffers...)
};
const char* ContentionKindName(ContentionKind kind);

struct ContentionSite {
  uint64_t id = 0;
  ContentionKind kind = ContentionKind::kMutex;
  std::string type;       // tp_name of the contended object ("list"); "" when not an object
  uint32_t location = 0;  // innermost Python frame of the waits (a LocationTable id; 0: none)
  bool other = false;     // the row that absorbs sites past the model's bound
  PyStack stack;          // the first wait's stack
  uint64_t waits = 0;     // waits (one blocked lock call, however many parks)
  uint64_t parks = 0;
  uint64_t wakeups = 0;
  uint64_t spins = 0;     // free-threaded: critical sections that failed their fast path
  Log2Histogram wait;
  std::set<pid_t> threads;  // bounded; `thread_count` keeps counting
  uint64_t thread_count = 0;
  uint64_t last_object = 0;  // the object most recently waited for
  std::vector<LockWaiter> waiters;  // waiting now
};

// A thread's park in progress, and the lock call it belongs to (3.13+).
struct ParkState {
  enum class Phase {
    kNone,         // no wait in progress
    kParked,       // blocked in _PySemaphore_Wait
    kWoken,        // woken without a hand-off: competing; may park again with this identity
    kTimedOut,     // _PySemaphore_Wait timed out (final unless a retry on `sema` follows)
    kInterrupted,  // a signal: handlers run, then it parks again or the acquire raises
  };
  enum class Target { kEvent, kLock, kContention };
  Phase phase = Phase::kNone;
  Target target = Target::kEvent;
  bool open = false;         // between a park's begin and end
  uint64_t sema = 0;
  uint64_t park_arg = 0;     // identity of the lock call: (tid, park_arg, fair_ns)
  uint64_t fair_ns = 0;
  uint64_t park_since_ns = 0;
  uint64_t wait_since_ns = 0;  // first park of the wait
  uint64_t phase_ns = 0;       // when the last park ended
  uint64_t waited_ns = 0;      // time parked so far (contention waits)
  uint64_t lock_id = 0;        // kLock
  uint64_t site_id = 0;        // kContention
  std::optional<pid_t> woken_by;
};

struct ThreadLockState {
  std::vector<uint64_t> held;  // lock ids, in acquisition order
  std::optional<uint64_t> waiting_lock;
  uint64_t waiting_since_ns = 0;
  WaitKind waiting_kind = WaitKind::kLock;
  bool waiting_woken = false;  // PyMutex: woken, competing (not blocked now)
  PyStack waiting_stack;
  PyStack last_wait_stack;  // the most recent wait's, for the acquire that ends it
  std::optional<pid_t> last_woken_by;
  uint64_t acquires = 0;  // --locks=all: successful acquisitions (reentrant ones included)
  uint64_t lock_waits = 0;
  uint64_t lock_wait_ns = 0;
  uint64_t condition_waits = 0;
  uint64_t condition_wait_ns = 0;
  uint64_t join_wait_ns = 0;
  uint64_t contention_waits = 0;    // critical sections and interpreter mutexes
  uint64_t contention_wait_ns = 0;
  std::optional<uint64_t> waiting_site;  // a ContentionSite id while blocked on one
  ParkState park;
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
  uint64_t lock_id = 0;          // 0 for contention waits (see site_id)
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
  uint64_t site_id = 0;          // wait_kind kContention: the ContentionSite
  uint64_t object = 0;           // kContention: the object (or mutex) waited for
};

struct LockModelConfig {
  bool exact_ownership = false;  // --locks=all
  // Memory bounds (a long-running or hostile target must not grow the daemon without end):
  // lock records kept (past it, new uncontended locks are not recorded, and at twice it no new
  // lock is), deadlocks kept (the oldest resolved go first), per-thread states of exited threads.
  size_t max_locks = 65536;
  size_t max_deadlocks = 1024;
  size_t max_thread_states = 16384;
  // Contention rows (kind, type, line): past it, new ones fold into one "other" row.
  size_t max_contention_sites = 4096;
  // Type names the daemon (or lock records) told us; past it new ones are not kept.
  size_t max_types = 4096;
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
  // The overhead budget's duty cycle (TS_MARK_TRACE_PAUSED): waits cut at a pause (no end
  // invented), and pauses seen.
  uint64_t cut_waits() const { return cut_waits_; }
  uint64_t pauses() const { return pauses_; }
  // Locks not recorded at all because the model was at its bound (their events are ignored).
  uint64_t locks_untracked() const { return locks_untracked_; }
  const std::vector<OrderInversion>& inversions() const { return inversions_; }
  // Condition waiter locks and uncontended locks are dropped once freed; their numbers live on
  // here (per-thread totals keep the condition waits).
  const Log2Histogram& freed_condition_waits() const { return freed_condition_waits_; }
  uint64_t freed_locks_dropped() const { return freed_dropped_; }
  const std::unordered_map<uint64_t, ContentionSite>& contention() const { return sites_; }
  const ContentionSite* FindSite(uint64_t id) const;
  // The tp_name of a type object the trace named ("" when unknown).
  const std::string& TypeName(uint64_t type) const;
  // Parks on events (joins, thread-start handshakes, once-flags): counted, not locks.
  uint64_t event_parks() const { return event_parks_; }

 private:
  // The model's three files (lock_model.cc, lock_order.cc, lock_parks.cc) report changes so.
  static void Emit(std::vector<LockChangeEvent>* out, LockChangeEvent e) {
    if (out) out->push_back(e);
  }
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
  // `timed_out`: a wait that gave up counts as a timeout (an interrupted one does not).
  void EndWait(ThreadLockState& t, LockRecord& lock, pid_t tid, uint64_t ts, bool acquired,
               std::vector<LockChangeEvent>* out, bool timed_out = true);
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
  void OnParkBegin(const ts_header& h, const ts_park& e, const PyStack* stack,
                   std::vector<LockChangeEvent>* out);
  void OnParkEnd(const ts_header& h, const ts_park& e, std::vector<LockChangeEvent>* out);
  void OnUnpark(const ts_header& h, const ts_unpark& e, std::vector<LockChangeEvent>* out);
  void ApplyUnpark(pid_t waker, pid_t woken, bool handed_off, uint64_t ts,
                   std::vector<LockChangeEvent>* out);
  void OnCsSlow(const ts_header& h, const ts_cs_slow& e, const PyStack* stack);
  void DefineType(uint64_t type, const std::string& name);
  // Begins a blocking wait for `l` (semaphore wait or first park).
  void BeginLockWait(ThreadLockState& t, LockRecord& l, pid_t tid, uint64_t ts,
                     const PyStack* stack, std::vector<LockChangeEvent>* out);
  ContentionSite* Site(ContentionKind kind, const std::string& type, const PyStack* stack);
  // Ends the thread's pending park-based wait, if any, as its phase says (`how`: what ended it
  // when the thread's acquire call told us: an enum ts_acquire_result, or nullopt).
  void FinishPark(ThreadLockState& t, pid_t tid, std::optional<int32_t> result,
                  std::vector<LockChangeEvent>* out);
  // Pending timeouts whose retry could no longer come: final at `ts`.
  void FinishStaleParks(uint64_t ts, std::vector<LockChangeEvent>* out);
  // Every pending wait, at the end of a trace.
  void FinishAllParks(std::vector<LockChangeEvent>* out);
  // TS_MARK_TRACE_PAUSED: nothing of locks is seen until the probes are back. See the header.
  void Pause();
  bool OrderEligible(const LockRecord& l) const;

  LockModelConfig config_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, LockRecord> locks_;
  std::unordered_map<uint64_t, uint64_t> by_sem_;
  std::unordered_map<uint64_t, uint64_t> by_obj_;
  std::unordered_map<uint64_t, uint32_t> generations_;      // object address -> locks seen there
  std::unordered_map<uint64_t, uint32_t> sem_generations_;  // semaphore-named locks
  std::unordered_map<pid_t, ThreadLockState> threads_;
  std::map<std::pair<pid_t, uint64_t>, uint32_t> saved_depth_;  // RLock._release_save
  std::vector<Deadlock> deadlocks_;
  uint64_t next_deadlock_id_ = 1;
  uint64_t deadlocks_dropped_ = 0;
  uint64_t cut_waits_ = 0;
  uint64_t pauses_ = 0;
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
  // Parking lot.
  std::unordered_map<uint64_t, pid_t> parks_by_sema_;  // open parks
  struct EarlyWake {
    pid_t waker = 0;
    pid_t woken = 0;  // 0 when the probe did not know yet
    bool handed_off = false;
    uint64_t ts_ns = 0;
  };
  // An unpark can be posted between the waiter's enqueue and its _PySemaphore_Wait call, and
  // then reaches us before the park: kept (briefly) for the park that follows.
  std::unordered_map<uint64_t, EarlyWake> early_wakes_;
  std::set<pid_t> pending_timeouts_;  // threads whose last park timed out, retry still possible
  std::unordered_map<uint64_t, std::string> types_;  // type object -> tp_name
  std::unordered_map<uint64_t, ContentionSite> sites_;
  std::map<std::tuple<int, std::string, uint32_t>, uint64_t> site_keys_;
  uint64_t next_site_id_ = 1;
  uint64_t other_site_ = 0;
  uint64_t event_parks_ = 0;
  std::unordered_map<uint64_t, pid_t> idents_;  // Python thread ident -> tid
};

}  // namespace threadscope::model
