// What `threadscope dump` knows about a stopped (or core-dumped) CPython process, in two layers:
//
//   ProcessFacts  what was read from the target's memory and registers, each fact with the
//                 evidence it came from (reader.h produces it, per interpreter version);
//   DumpReport    what the facts mean: each thread's state, what it waits for, who holds that,
//                 and the wait-for cycles (analysis.h, pure).
//
// Lock ids are the lock object's address as Python's id() prints it ("0x7f3a2c1d5e40"), so a
// program (or its ground truth) can name the same lock. Thread ids are native (kernel) tids.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace threadscope::dump {

struct Frame {
  std::string file;
  std::string function;  // qualified name on 3.11+ ("Cache.get"), the code's name before
  std::optional<int> line;
};

// A local variable of the innermost frame (--locals): read without running any Python code.
struct LocalValue {
  std::string name;
  std::string type;   // the value's type name
  std::string value;  // str/int/float/bool/None shown (bounded); others empty
  uint64_t address = 0;
};

// A context manager whose __exit__ is still pending in a frame: the frame is inside its `with`.
struct WithHold {
  uint64_t object = 0;      // what `with` was given (a lock, a Condition, ...)
  std::string type;         // its type name
  uint64_t lock = 0;        // the lock it holds: the object itself, or a Condition's lock; 0 if none
  Frame taken_at;           // the `with` statement
};

// A lock object read from memory.
enum class LockType { kLock, kRLock };
struct LockInfo {
  uint64_t address = 0;
  LockType type = LockType::kLock;
  std::string type_name;          // "_thread.lock", "_thread.RLock", "_RLock" (2.7's pure Python)
  std::optional<bool> locked;     // where the object says so
  std::optional<uint64_t> owner_ident;  // RLock: the owner's thread ident (pthread_t)
  uint64_t count = 0;             // RLock recursion
};

enum class BlockKind {
  kNone,             // not blocked in a wait we recognize
  kLock,             // futex on a lock object's semaphore / PyMutex: `object` is the lock
  kUnidentifiedLock, // futex on a semaphore or a parked mutex no frame object explains
  kGil,              // futex on the GIL's condition variable or mutex (or 3.15's gil_requested)
  kJoinHandle,       // 3.13+: parked on a ThreadHandle's thread_is_exiting event
  kSleep,            // nanosleep / clock_nanosleep / select or poll with nothing to watch
  kSyscall,          // some other system call
};

struct Blocked {
  BlockKind kind = BlockKind::kNone;
  uint64_t object = 0;        // kLock: the lock object
  uint64_t joined_ident = 0;  // kJoinHandle: the ident of the thread being joined
  uint64_t futex = 0;         // the futex address, when the thread sleeps on one
  std::string syscall;        // kSyscall / kSleep: the system call's name
  std::string evidence;       // how this was established, for reports
};

struct FrameFacts {
  Frame where;
  uint64_t code = 0;
  uint64_t self = 0;           // the first argument when it is named `self`
  std::string self_type;       // its type's name
  // The threading/queue class `self` is an instance of, found along its bases (a subclass of
  // Thread or Event still behaves as one); empty when none is.
  std::string self_stdlib_class;
  std::vector<WithHold> withs; // outermost first
  std::vector<LocalValue> locals;  // --locals, innermost frame only
  // A lock this frame took with an explicit `.acquire()` and has not released yet (the frame's
  // instruction is between the two calls on the same variable): evidence, not proof.
  std::vector<uint64_t> acquired;
};

struct NativeFrame {
  uint64_t pc = 0;
  std::string symbol;  // "func+0x12" or "" when unknown
  std::string binary;  // basename of the mapped file
};

struct ThreadFacts {
  pid_t tid = 0;
  std::optional<uint64_t> ident;  // pthread_t (threading.get_ident())
  std::string os_name;            // comm (live processes)
  std::string python_name;        // threading.Thread.name, when its object was readable
  bool has_thread_state = false;
  bool is_main = false;
  std::vector<FrameFacts> frames;  // innermost first
  bool frames_truncated = false;
  std::optional<bool> holds_gil;
  std::optional<bool> gil_requested;  // 3.15
  Blocked blocked;
  std::vector<NativeFrame> native;
};

struct ProcessFacts {
  pid_t pid = 0;
  std::string python_version;
  std::string executable;
  bool free_threaded = false;
  std::string layout_source;
  std::vector<ThreadFacts> threads;
  std::map<uint64_t, LockInfo> locks;   // every lock object read
  // Condition-like objects (threading.Condition) and the lock each wraps.
  std::map<uint64_t, uint64_t> condition_locks;
  // ≤3.12: a join sentinel (the lock Thread.join waits for) -> the tid whose thread state
  // releases it when it ends (its on_delete_data), exact.
  std::map<uint64_t, pid_t> sentinels;
  // 2.7: a Thread object -> the tid it runs on (its ident, read from its __dict__).
  std::map<uint64_t, pid_t> thread_objects;
  // Owners the daemon knows because it traces the process with --locks all: lock -> tid.
  std::map<uint64_t, pid_t> trace_owners;
  std::optional<pid_t> gil_holder;  // from the GIL's own state
  std::vector<std::string> notes;   // what could not be read, and why
};

// ---------------------------------------------------------------- the report

enum class ThreadState {
  kRunning,        // holds the GIL (or, free-threaded, is attached) and is not in a wait
  kGilWait,
  kLockWait,
  kConditionWait,  // Condition/Event/Semaphore/Barrier/Queue
  kJoinWait,
  kSleeping,
  kSyscall,
  kIdle,           // no Python frames: C code, or a thread that has not started Python
  kUnknown,
};
const char* ThreadStateName(ThreadState s);

enum class WaitKind { kLock, kRLock, kCondition, kEvent, kSemaphore, kBarrier, kQueue, kJoin, kGil };
const char* WaitKindName(WaitKind k);

// How the owner of what a thread waits for is known.
enum class OwnerSource {
  kRLockOwner,     // the RLock's own owner field: exact
  kWithStatement,  // a frame of the owner is inside `with` on that lock (its __exit__ pending)
  kAcquireCall,    // a frame of the owner called .acquire() on it and has not reached .release()
  kTrace,          // threadscoped traces the process with --locks all: exact
  kThreadHandle,   // join, 3.13+: the ThreadHandle names the thread
  kSentinel,       // join, 3.4-3.12: the thread state whose end releases the sentinel lock
  kThreadObject,   // join, 2.7: the Thread object's ident
  kGilState,       // the GIL's holder field
  kUnknown,
};
const char* OwnerSourceName(OwnerSource s);
// Sources a deadlock may be built from: exact, or structural (a pending __exit__).
bool IsProven(OwnerSource s);

struct Wait {
  WaitKind kind = WaitKind::kLock;
  std::string lock_id;             // the lock (or the Condition's waiter lock); "" if unknown
  std::string object_id;           // the Condition/Event/Semaphore/Queue/Thread waited on
  std::string object_type;
  std::optional<pid_t> owner;      // holder of the lock / the joined thread / the GIL holder
  OwnerSource owner_source = OwnerSource::kUnknown;
  std::string detail;              // evidence in words
};

struct Held {
  std::string lock_id;
  OwnerSource source = OwnerSource::kWithStatement;
  std::optional<Frame> taken_at;
};

struct ThreadReport {
  pid_t tid = 0;
  std::optional<uint64_t> ident;
  std::string name;         // Python's thread name when known, else the OS name
  std::string os_name;
  bool is_main = false;
  ThreadState state = ThreadState::kUnknown;
  std::optional<bool> holds_gil;
  std::vector<Frame> stack;  // innermost first
  bool stack_truncated = false;
  std::optional<size_t> wait_frame;  // index in stack of the line the user waits at
  std::optional<Wait> waiting_for;
  std::vector<Held> holds;
  std::string syscall;
  std::vector<NativeFrame> native;
  std::vector<LocalValue> locals;
};

struct DeadlockReport {
  std::vector<pid_t> threads;       // threads[i] waits for locks[i], held by threads[i+1]
  std::vector<std::string> locks;   // (the last by threads[0])
  std::vector<std::optional<Frame>> wait_at;   // where threads[i] waits
  std::vector<std::optional<Frame>> taken_at;  // where locks[i]'s owner took it
};

struct DumpReport {
  pid_t pid = 0;
  std::string python_version;
  std::string executable;
  std::string command_line;
  std::string source;               // "live", "live-nonblocking", "core"
  std::string core_file;
  bool free_threaded = false;
  std::string layout_source;
  std::optional<uint64_t> pause_ns; // how long the target was stopped (live, blocking)
  // Where the pause went: "interrupt" (PTRACE_INTERRUPT of every thread), "read" (thread
  // states and frames, overlapping the threads' entry into the stop), "wait" (the last ones
  // getting there: scheduling), "finish" (registers, futexes, locks), ns each.
  std::vector<std::pair<std::string, uint64_t>> pause_phases;
  uint32_t reads = 1;               // --nonblocking: passes until two agreed
  std::vector<ThreadReport> threads;
  std::vector<DeadlockReport> deadlocks;
  std::vector<std::string> notes;
};

// "0x7f3a2c1d5e40": Python's id() of the object, as hex.
std::string ObjectId(uint64_t address);

}  // namespace threadscope::dump
