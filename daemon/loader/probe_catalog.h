// Every probe threadscope can place, in one typed table: its stable name (what reports and
// recordings call it), its kind, the BPF program it runs, what it lets the model know, whether
// tracing cannot start without it, and how it is found. Planners, the loader, the engine, tests
// and docs/PROBES.md (tools/probe_table --markdown) all read this table; nothing else gives a
// probe its meaning.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace threadscope::loader {

enum class ProbeKind { kUprobe, kUretprobe, kRawTracepoint };
const char* ProbeKindName(ProbeKind kind);

// The programs of probes/threadscope.bpf.c. The second column is the program's name, which is
// also its field in the generated skeleton (`skel->progs.<name>`): bpf_tracer.cc turns this
// list into its one switch from BpfProgram to the skeleton, so a name that is not a program
// does not compile, and planning needs no libbpf.
#define TS_BPF_PROGRAMS(X)                          \
  X(kThreadStart, ts_thread_start)                  \
  X(kThreadStartRet, ts_thread_start_ret)           \
  X(kThreadBootstrap, ts_thread_bootstrap)          \
  X(kThreadBodyDone, ts_thread_body_done)           \
  X(kSchedFork, ts_sched_fork)                      \
  X(kSchedExit, ts_sched_exit)                      \
  X(kTaskRename, ts_task_rename)                    \
  X(kSetSentinelRet, ts_set_sentinel_ret)           \
  X(kJoinThread, ts_join_thread)                    \
  X(kJoinThreadRet, ts_join_thread_ret)             \
  X(kDetachThread, ts_detach_thread)                \
  X(kSemWait, ts_sem_wait)                          \
  X(kSemWaitRet, ts_sem_wait_ret)                   \
  X(kSemDestroy, ts_sem_destroy)                    \
  X(kLockNewRet, ts_lock_new_ret)                   \
  X(kLockAcquire, ts_lock_acquire)                  \
  X(kLockAcquireRet, ts_lock_acquire_ret)           \
  X(kLockRelease, ts_lock_release)                  \
  X(kFutexWake, ts_futex_wake)                      \
  X(kPark, ts_park)                                 \
  X(kParkRet, ts_park_ret)                          \
  X(kUnpark, ts_unpark)                             \
  X(kLockFree, ts_lock_free)                        \
  X(kCsSlow, ts_cs_slow)                            \
  X(kGil, ts_gil)                                   \
  X(kGilRet, ts_gil_ret)                            \
  X(kGilLockAcquire, ts_gil_lock_acquire)           \
  X(kGilLockAcquireRet, ts_gil_lock_acquire_ret)    \
  X(kGilLockRelease, ts_gil_lock_release)           \
  X(kGilSwitchRet, ts_gil_switch_ret)               \
  X(kGilWait, ts_gil_wait)                          \
  X(kGilWaitRet, ts_gil_wait_ret)

enum class BpfProgram : uint8_t {
#define TS_BPF_PROGRAM_ENUM(id, name) id,
  TS_BPF_PROGRAMS(TS_BPF_PROGRAM_ENUM)
#undef TS_BPF_PROGRAM_ENUM
};
inline constexpr BpfProgram kAllBpfPrograms[] = {
#define TS_BPF_PROGRAM_LIST(id, name) BpfProgram::id,
    TS_BPF_PROGRAMS(TS_BPF_PROGRAM_LIST)
#undef TS_BPF_PROGRAM_LIST
};
const char* BpfProgramName(BpfProgram program);

// What a probe's records let the model know. A probe may feed several; a capability is there
// when every planned probe that feeds it attached (DeriveCapabilities, capabilities.h).
enum class Capability : uint32_t {
  kLifecycle = 1u << 0,       // starts, start results, clones, exits: the lifecycle itself
  kThreadNames = 1u << 1,     // OS thread names
  kBootstrap = 1u << 2,       // the child runs, linked to its start
  kBodyDone = 1u << 3,        // the callable returned (finished vs killed)
  kJoins = 1u << 4,           // who joined whom: exact (3.13+) or blocking joins (3.4-3.12)
  kDetach = 1u << 5,          // detached handles (3.13+)
  kLockWaits = 1u << 6,       // blocking waits on held locks: who, on what, how long
  kLockFrees = 1u << 7,       // freed locks (a reused address is a new lock)
  kLockWakers = 1u << 8,      // who released a lock somebody waited on
  kLockCreation = 1u << 9,    // lock objects, kinds, creators
  kLockAcquireRelease = 1u << 10,  // every acquire and release (--locks all)
  kGilTake = 1u << 11,        // GIL waits and acquisitions
  kGilDrop = 1u << 12,        // GIL releases
  kGilForced = 1u << 13,      // forced drops told from voluntary ones
  kContention = 1u << 14,     // 3.13+: contention on critical sections and interpreter mutexes
};
using CapabilitySet = uint32_t;
constexpr CapabilitySet operator|(Capability a, Capability b) {
  return static_cast<CapabilitySet>(a) | static_cast<CapabilitySet>(b);
}
constexpr CapabilitySet operator|(CapabilitySet a, Capability b) {
  return a | static_cast<CapabilitySet>(b);
}
constexpr bool Has(CapabilitySet set, Capability c) {
  return (set & static_cast<CapabilitySet>(c)) != 0;
}
inline constexpr Capability kAllCapabilities[] = {
    Capability::kLifecycle,   Capability::kThreadNames, Capability::kBootstrap,
    Capability::kBodyDone,    Capability::kJoins,       Capability::kDetach,
    Capability::kLockWaits,   Capability::kLockFrees,   Capability::kLockWakers,
    Capability::kLockCreation, Capability::kLockAcquireRelease, Capability::kGilTake,
    Capability::kGilDrop,     Capability::kGilForced,   Capability::kContention,
};
// "lifecycle", "joins", "gil_drop"... (reports list them per probe).
const char* CapabilityName(Capability c);
std::vector<std::string> CapabilityNames(CapabilitySet set);

// The user-facing feature a probe belongs to.
enum class Feature { kThreads, kLocks, kGil };
const char* FeatureName(Feature f);

enum class ProbeId : uint8_t {
  kThreadStart,
  kThreadStartReturn,
  kThreadStartJoinable,
  kThreadStartJoinableReturn,
  kThreadClone,
  kThreadExit,
  kThreadRename,
  kThreadBootstrap,
  kThreadBodyDone,
  kSemWait,
  kSemWaitReturn,
  kSemWaitReturnFallback,
  kSemDestroy,
  kThreadJoinSentinel,
  kThreadJoin,
  kThreadJoinReturn,
  kThreadDetach,
  kLockWait,  // 2.7 only, unavailable: stands for all lock tracing there
  kLockWake,
  kLockNew,
  kLockNewType,
  kRLockNew,
  kLockAcquire,
  kLockAcquireReturn,
  kLockRelease,
  kRLockAcquire,
  kRLockAcquireReturn,
  kRLockRelease,
  kRLockReleaseSave,
  kRLockAcquireRestore,
  kRLockAcquireRestoreReturn,
  // 3.13+ PyMutex locks and the parking lot.
  kPark,
  kParkRetry,
  kParkReturn,
  kUnpark,
  kLockFree,
  kRLockFree,
  kLockAcquirePromoted,
  kLockAcquirePromotedReturn,
  kLockReleasePromoted,
  kCriticalSectionSlow,
  kGilTake,
  kGilTakeReturn,
  kGilDrop,
  kGilDropInlined,
  kGilDropInlinedForced,
  kGilForced,
  kGilEnableTransient,
  kGilEnablePermanent,
  kGilDisable,
  kGilWait,
  kGilWaitReturn,
};

struct ProbeSpec {
  ProbeId id;
  std::string_view name;  // stable: reports, recordings, tests and docs use it
  Feature feature;
  ProbeKind kind;
  BpfProgram program;
  // The other program this probe may run on some builds (2.7's plain-lock GIL), else `program`.
  BpfProgram alt_program;
  std::string_view tracepoint;  // raw tracepoints only
  CapabilitySet feeds;          // what it can feed (a plan narrows it per build)
  bool required;                // attaching fails without it
  std::string_view purpose;     // one line for users
  std::string_view found_by;    // how its sites are found (docs/PROBES.md)
};

// Every probe, in the order plans list them.
std::span<const ProbeSpec> AllProbes();
const ProbeSpec& Spec(ProbeId id);
std::optional<ProbeId> ProbeIdByName(std::string_view name);

}  // namespace threadscope::loader
