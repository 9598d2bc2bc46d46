// Rebuilds every thread's lifecycle from decoded events. Pure: no I/O, no clock, no libbpf.
//
// A thread is keyed by a model id assigned in the order threads appear; native tids, Python
// idents (pthread_t) and bootstate pointers are indexes into it, and all three are reused by
// the OS and the allocator, so each index always points at the *latest* thread using a value.
//
// States follow CPython's ThreadHandle (Modules/_threadmodule.c, 3.13+):
//
//                        | how threadscope sees the transition
//   ---------------------|----------------------------------------------------------------
//   NOT_STARTED          | implicit: a Thread object is not a thread until start() is called
//   -> STARTING          | the parent enters PyThread_start_new/joinable_thread
//   -> RUNNING           | the start returned success, or the child entered its bootstrap
//   STARTING -> DONE     | the start failed ("can't start new thread"); start_failed = true
//   RUNNING -> DONE      | the OS thread exited (kernel sched_process_exit)
//
// One deliberate difference: CPython's handle reaches DONE only when the thread is joined or
// detached. threadscope's DONE means "no longer running"; joined/detached are reported as their
// own fields, so a finished thread that nobody joined is DONE with joined=false.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/model/event_decoder.h"

namespace threadscope::model {

enum class ThreadState { kNotStarted, kStarting, kRunning, kDone };
const char* ThreadStateName(ThreadState state);

enum class ThreadOrigin {
  kStarted,      // started through PyThread_start_new_thread / PyThread_start_joinable_thread
  kPreexisting,  // already running when threadscope attached (from /proc/PID/task)
  kNative,       // created by native code (a clone not inside the CPython start functions)
};
const char* ThreadOriginName(ThreadOrigin origin);

// How much of "joined" a target's probes can see (set from the probe plan, saved in recordings).
enum class JoinVisibility {
  kNone,          // no signal (Python 2.7: Thread.join waits on a Condition)
  kBlockingOnly,  // 3.4-3.12: joins that had to wait; a join of a finished thread is invisible
  kExact,         // 3.13+ (PyThread_join_thread), or every lock operation traced
};
const char* JoinVisibilityName(JoinVisibility v);

struct ThreadModelConfig {
  JoinVisibility joins = JoinVisibility::kNone;
  bool body_done_visible = false;  // the bootstrap-finished probe is attached
  // Threads kept. A process that starts threads forever must not grow the daemon forever: past
  // this, the oldest finished threads are forgotten, and only counted (ThreadCounts).
  size_t max_threads = 16384;
};

// What the report says about threads no longer listed (evicted, oldest finished first).
struct ThreadCounts {
  uint64_t seen = 0, started = 0, start_failed = 0, preexisting = 0, native = 0;
  uint64_t joined = 0, not_joined = 0, joined_unknown = 0;
  uint64_t returned = 0, did_not_return = 0;
};

struct JoinWaiter {
  pid_t tid = 0;
  uint64_t since_ns = 0;
};

struct ThreadRecord {
  uint64_t id = 0;
  pid_t native_tid = 0;  // 0 while STARTING before the clone is seen
  std::optional<uint64_t> ident;
  std::optional<pid_t> parent_native_tid;
  std::string name;
  ThreadState state = ThreadState::kNotStarted;
  ThreadOrigin origin = ThreadOrigin::kStarted;
  bool start_failed = false;
  bool observed_from_start = true;
  std::optional<uint64_t> started_ns;   // entered STARTING (or OS start time, if preexisting)
  std::optional<uint64_t> running_ns;   // entered RUNNING
  std::optional<uint64_t> done_ns;      // entered DONE
  std::optional<uint64_t> bootstrap_ns; // child entered t_bootstrap/thread_run
  std::optional<uint64_t> body_done_ns; // child's callable finished
  std::optional<uint64_t> exited_ns;    // OS thread exited
  std::optional<int32_t> exit_code;
  bool joined = false;
  std::optional<uint64_t> joined_ns;
  std::optional<pid_t> joined_by;
  bool detached = false;
  bool has_sentinel = false;  // a join sentinel was created (threading.Thread, 3.4-3.12)
  std::vector<JoinWaiter> join_waiters;
  uint64_t boot = 0;
  uint64_t func = 0;
  int64_t start_return = 0;
};

// The event a state change produces, for live streams (WatchEvents).
enum class ThreadChange {
  kDiscovered,   // preexisting or native thread appeared
  kStarting,
  kRunning,
  kStartFailed,
  kDone,
  kJoinWaitBegin,
  kJoinWaitEnd,
  kJoined,
  kDetached,
  kRenamed,
};
const char* ThreadChangeName(ThreadChange change);

struct ThreadChangeEvent {
  ThreadChange change;
  uint64_t ts_ns = 0;
  uint64_t thread_id = 0;  // model id of the thread that changed
  pid_t actor_tid = 0;     // who caused it (joiner, renamer, parent)
};

class ThreadModel {
 public:
  explicit ThreadModel(ThreadModelConfig config = {}) : config_(config) {}

  const ThreadModelConfig& config() const { return config_; }

  // Applies one event; appends what changed to `out` (may be null).
  void Apply(const DecodedEvent& event, std::vector<ThreadChangeEvent>* out);
  // Records were lost: later conclusions drawn from a missing record are not safe.
  void NoteLoss() { lossy_ = true; }

  // Every thread seen and still kept, in order of appearance (see max_threads).
  const std::vector<ThreadRecord>& threads() const { return threads_; }
  // The threads forgotten to keep the model bounded.
  const ThreadCounts& evicted() const { return evicted_; }
  const ThreadRecord* FindById(uint64_t id) const;
  const ThreadRecord* FindByTid(pid_t tid) const;
  // "joined" as the report shows it: true / false / unknown (nullopt), given what the probes
  // can see (see JoinVisibility).
  std::optional<bool> JoinedForReport(const ThreadRecord& t) const;
  // Whether the callable returned: unknown without the bootstrap probe.
  std::optional<bool> ReturnedForReport(const ThreadRecord& t) const;

 private:
  ThreadRecord& NewThread(uint64_t ts, ThreadOrigin origin);
  // Forgets the oldest finished threads (a quarter of the cap at a time), counting them.
  void EvictFinished();
  ThreadRecord* ByTid(pid_t tid);
  ThreadRecord* ByIdent(uint64_t ident);
  ThreadRecord* ById(uint64_t id);
  void SetState(ThreadRecord& t, ThreadState to, uint64_t ts, std::vector<ThreadChangeEvent>* out,
                pid_t actor);
  void MarkDone(ThreadRecord& t, uint64_t ts, std::vector<ThreadChangeEvent>* out);
  void MarkJoined(ThreadRecord& t, pid_t joiner, uint64_t ts, std::vector<ThreadChangeEvent>* out);
  void RemoveWaiter(ThreadRecord& t, pid_t waiter, uint64_t ts,
                    std::vector<ThreadChangeEvent>* out);
  void IndexTid(ThreadRecord& t, pid_t tid);

  void OnStartBegin(const ts_header& h, const ts_thread_start_begin& e,
                    std::vector<ThreadChangeEvent>* out);
  void OnStartEnd(const ts_header& h, const ts_thread_start_end& e,
                  std::vector<ThreadChangeEvent>* out);
  void OnClone(const ts_header& h, const ts_thread_clone& e, std::vector<ThreadChangeEvent>* out);
  void OnBootstrap(const ts_header& h, const ts_thread_bootstrap& e,
                   std::vector<ThreadChangeEvent>* out);
  void OnExit(const ts_header& h, const ts_thread_exit& e, std::vector<ThreadChangeEvent>* out);
  void OnPreexisting(const ts_header& h, const ts_preexisting_thread& e,
                     std::vector<ThreadChangeEvent>* out);
  void OnSemWait(const ts_header& h, const ts_sem_wait& e, std::vector<ThreadChangeEvent>* out);
  void OnJoin(const ts_header& h, const ts_thread_join& e, std::vector<ThreadChangeEvent>* out);
  void OnTargetExited(uint64_t ts, std::vector<ThreadChangeEvent>* out);

  ThreadModelConfig config_;
  bool lossy_ = false;
  std::vector<ThreadRecord> threads_;
  std::unordered_map<uint64_t, size_t> position_;  // id -> index in threads_
  uint64_t next_id_ = 1;
  ThreadCounts evicted_;
  std::unordered_map<pid_t, uint64_t> by_tid_;
  std::unordered_map<uint64_t, uint64_t> by_ident_;
  std::unordered_map<uint64_t, uint64_t> by_boot_;            // until the child bootstraps
  std::unordered_map<pid_t, uint64_t> pending_start_;         // parent tid -> thread
  std::unordered_map<pid_t, uint64_t> last_native_clone_;     // parent tid -> thread
  std::unordered_map<uint64_t, uint64_t> by_sentinel_sem_;    // sem -> thread
  std::unordered_map<pid_t, uint64_t> joining_;               // joiner tid -> thread
};

}  // namespace threadscope::model
