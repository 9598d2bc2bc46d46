#include "daemon/loader/probe_catalog.h"

#include <iterator>

namespace threadscope::loader {

const char* ProbeKindName(ProbeKind kind) {
  switch (kind) {
    case ProbeKind::kUprobe: return "uprobe";
    case ProbeKind::kUretprobe: return "uretprobe";
    case ProbeKind::kRawTracepoint: return "raw_tracepoint";
  }
  return "uprobe";
}

const char* BpfProgramName(BpfProgram program) {
  switch (program) {
#define TS_BPF_PROGRAM_NAME(id, name) \
  case BpfProgram::id: return #name;
    TS_BPF_PROGRAMS(TS_BPF_PROGRAM_NAME)
#undef TS_BPF_PROGRAM_NAME
  }
  return "?";
}

const char* CapabilityName(Capability c) {
  switch (c) {
    case Capability::kLifecycle: return "lifecycle";
    case Capability::kThreadNames: return "thread_names";
    case Capability::kBootstrap: return "bootstrap";
    case Capability::kBodyDone: return "body_done";
    case Capability::kJoins: return "joins";
    case Capability::kDetach: return "detach";
    case Capability::kLockWaits: return "lock_waits";
    case Capability::kLockFrees: return "lock_frees";
    case Capability::kLockWakers: return "lock_wakers";
    case Capability::kLockCreation: return "lock_creation";
    case Capability::kLockAcquireRelease: return "lock_acquire_release";
    case Capability::kGilTake: return "gil_take";
    case Capability::kGilDrop: return "gil_drop";
    case Capability::kGilForced: return "gil_forced";
    case Capability::kContention: return "lock_contention";
  }
  return "?";
}

std::vector<std::string> CapabilityNames(CapabilitySet set) {
  std::vector<std::string> out;
  for (Capability c : kAllCapabilities) {
    if (Has(set, c)) out.emplace_back(CapabilityName(c));
  }
  return out;
}

const char* FeatureName(Feature f) {
  switch (f) {
    case Feature::kThreads: return "threads";
    case Feature::kLocks: return "locks";
    case Feature::kGil: return "gil";
  }
  return "?";
}

namespace {

using C = Capability;
using P = BpfProgram;
using K = ProbeKind;
using F = Feature;

constexpr CapabilitySet Only(Capability c) { return static_cast<CapabilitySet>(c); }

// One row per probe, in ProbeId order (checked by probe_catalog_test).
constexpr ProbeSpec kProbes[] = {
    {ProbeId::kThreadStart, "thread_start", F::kThreads, K::kUprobe, P::kThreadStart,
     P::kThreadStart, "", Only(C::kLifecycle), true,
     "a thread is being started (STARTING), by whom",
     "exported `PyThread_start_new_thread`"},
    {ProbeId::kThreadStartReturn, "thread_start_return", F::kThreads, K::kUretprobe,
     P::kThreadStartRet, P::kThreadStartRet, "", Only(C::kLifecycle), true,
     "start result: RUNNING, or STARTING -> DONE on failure",
     "exported `PyThread_start_new_thread`"},
    {ProbeId::kThreadStartJoinable, "thread_start_joinable", F::kThreads, K::kUprobe,
     P::kThreadStart, P::kThreadStart, "", Only(C::kLifecycle), true,
     "3.13+: a thread is being started (STARTING), by whom",
     "exported `PyThread_start_joinable_thread` (the ident arrives through its `ident*` "
     "argument, read at return)"},
    {ProbeId::kThreadStartJoinableReturn, "thread_start_joinable_return", F::kThreads,
     K::kUretprobe, P::kThreadStartRet, P::kThreadStartRet, "", Only(C::kLifecycle), true,
     "3.13+: start result: RUNNING (ident), or STARTING -> DONE on failure",
     "exported `PyThread_start_joinable_thread`"},
    {ProbeId::kThreadClone, "thread_clone", F::kThreads, K::kRawTracepoint, P::kSchedFork,
     P::kSchedFork, "sched_process_fork", Only(C::kLifecycle), true,
     "native tid of each new thread and its parent",
     "kernel; a clone inside a start call on the same tid is that start's thread, any other "
     "is `native`"},
    {ProbeId::kThreadExit, "thread_exit", F::kThreads, K::kRawTracepoint, P::kSchedExit,
     P::kSchedExit, "sched_process_exit", Only(C::kLifecycle), true,
     "a thread exited (DONE)", "kernel"},
    {ProbeId::kThreadRename, "thread_rename", F::kThreads, K::kRawTracepoint, P::kTaskRename,
     P::kTaskRename, "task_rename", Only(C::kThreadNames), false, "OS thread names", "kernel"},
    {ProbeId::kThreadBootstrap, "thread_bootstrap", F::kThreads, K::kUprobe,
     P::kThreadBootstrap, P::kThreadBootstrap, "", Only(C::kBootstrap), false,
     "the new thread runs its bootstrap (links parent and child by bootstate)",
     "`t_bootstrap` (<=3.9) / `thread_run` (3.10+) by symbol; without symbols, the first "
     "argument `_thread.start_new_thread` passes to the start function (through its "
     "`PyMethodDef`)"},
    {ProbeId::kThreadBodyDone, "thread_body_done", F::kThreads, K::kUprobe,
     P::kThreadBodyDone, P::kThreadBodyDone, "", Only(C::kBodyDone), false,
     "the thread's callable returned (distinguishes finished from killed threads)",
     "the bootstrap's own `call PyThreadState_Clear`: emulated, and hit by threads that "
     "started before the attach (a uretprobe on the bootstrap when that call is not found)"},
    {ProbeId::kSemWait, "sem_wait", F::kLocks, K::kUprobe, P::kSemWait, P::kSemWait, "",
     C::kLockWaits | C::kJoins, false,
     "a blocking semaphore wait began (lock waiters; 3.4-3.12: join waiters)",
     "the interpreter's own `call sem_wait/sem_clockwait/sem_timedwait` instructions; 3.13+: "
     "not those in `_PySemaphore_Wait` (PyMutex parking, not Python locks)"},
    {ProbeId::kSemWaitReturn, "sem_wait_return", F::kLocks, K::kUprobe, P::kSemWaitRet,
     P::kSemWaitRet, "", C::kLockWaits | C::kJoins, false,
     "a blocking semaphore wait ended, and how (acquired / timed out)",
     "the first emulated instruction after each of those calls that leaves `%rax` untouched "
     "(the `jcc` after `cmp $-1,%eax`)"},
    {ProbeId::kSemWaitReturnFallback, "sem_wait_return_fallback", F::kLocks, K::kUretprobe,
     P::kSemWaitRet, P::kSemWaitRet, "", Only(C::kLockWaits), false,
     "wait ends for calls whose return site could not be probed",
     "libc's entry of the waiting function, for call sites without an emulated return site"},
    {ProbeId::kSemDestroy, "sem_destroy", F::kLocks, K::kUprobe, P::kSemDestroy,
     P::kSemDestroy, "", C::kLockFrees | C::kJoins, false,
     "a lock was freed (its address may be reused; 3.4-3.12: so may a join sentinel's)",
     "the interpreter's `call sem_destroy` instructions"},
    {ProbeId::kThreadJoinSentinel, "thread_join_sentinel", F::kThreads, K::kUretprobe,
     P::kSetSentinelRet, P::kSetSentinelRet, "", Only(C::kJoins), false,
     "the lock join() waits on (3.4-3.12)",
     "`thread__set_sentinel` by symbol or through `_thread._set_sentinel`'s `PyMethodDef`"},
    {ProbeId::kThreadJoin, "thread_join", F::kThreads, K::kUprobe, P::kJoinThread,
     P::kJoinThread, "", Only(C::kJoins), false,
     "3.13+: a thread starts joining another (join waiters)",
     "exported `PyThread_join_thread`"},
    {ProbeId::kThreadJoinReturn, "thread_join_return", F::kThreads, K::kUretprobe,
     P::kJoinThreadRet, P::kJoinThreadRet, "", Only(C::kJoins), false,
     "3.13+: a join completed (joined, when, by whom)", "exported `PyThread_join_thread`"},
    {ProbeId::kThreadDetach, "thread_detach", F::kThreads, K::kUprobe, P::kDetachThread,
     P::kDetachThread, "", Only(C::kDetach), false,
     "3.13+: a thread handle was detached instead of joined",
     "exported `PyThread_detach_thread`"},
    {ProbeId::kLockWait, "lock_wait", F::kLocks, K::kUprobe, P::kSemWait, P::kSemWait, "",
     Only(C::kLockWaits), false, "lock contention (stands for all lock tracing on 2.7)",
     "never placed: 2.7 blocks in `sem_wait` on every acquire, and its GIL is such a lock"},
    {ProbeId::kLockWake, "lock_wake", F::kLocks, K::kRawTracepoint, P::kFutexWake,
     P::kFutexWake, "sys_enter", Only(C::kLockWakers), false,
     "who released a lock that somebody was waiting on (the waker)",
     "kernel: `futex(FUTEX_WAKE)` from `sem_post` on a semaphore in the waited-on map"},
    {ProbeId::kLockNew, "lock_new", F::kLocks, K::kUretprobe, P::kLockNewRet, P::kLockNewRet,
     "", Only(C::kLockCreation), false, "a Lock was created (its object and semaphore)",
     "`thread_PyThread_allocate_lock` by symbol, or `_thread.allocate_lock`'s `PyMethodDef`"},
    {ProbeId::kLockNewType, "lock_new_type", F::kLocks, K::kUretprobe, P::kLockNewRet,
     P::kLockNewRet, "", Only(C::kLockCreation), false, "3.13+: a _thread.lock was created",
     "`lock_new` by symbol, or the `tp_new` of `_thread.lock`"},
    {ProbeId::kRLockNew, "rlock_new", F::kLocks, K::kUretprobe, P::kLockNewRet, P::kLockNewRet,
     "", Only(C::kLockCreation), false, "an RLock was created",
     "`rlock_new` by symbol, or the `tp_new` of `_thread.RLock`"},
    {ProbeId::kLockAcquire, "lock_acquire", F::kLocks, K::kUprobe, P::kLockAcquire,
     P::kLockAcquire, "", Only(C::kLockAcquireRelease), false, "Lock.acquire began",
     "the C method behind `acquire`/`__enter__`, by symbol or the type's method table"},
    {ProbeId::kLockAcquireReturn, "lock_acquire_return", F::kLocks, K::kUretprobe,
     P::kLockAcquireRet, P::kLockAcquireRet, "", Only(C::kLockAcquireRelease), false,
     "Lock.acquire returned (acquired, failed, timed out)", "as `lock_acquire`"},
    {ProbeId::kLockRelease, "lock_release", F::kLocks, K::kUprobe, P::kLockRelease,
     P::kLockRelease, "", Only(C::kLockAcquireRelease), false, "Lock.release",
     "the C method behind `release`/`__exit__`, by symbol or the type's method table"},
    {ProbeId::kRLockAcquire, "rlock_acquire", F::kLocks, K::kUprobe, P::kLockAcquire,
     P::kLockAcquire, "", Only(C::kLockAcquireRelease), false, "RLock.acquire began",
     "`rlock_acquire` by symbol or the type's method table"},
    {ProbeId::kRLockAcquireReturn, "rlock_acquire_return", F::kLocks, K::kUretprobe,
     P::kLockAcquireRet, P::kLockAcquireRet, "", Only(C::kLockAcquireRelease), false,
     "RLock.acquire returned", "as `rlock_acquire`"},
    {ProbeId::kRLockRelease, "rlock_release", F::kLocks, K::kUprobe, P::kLockRelease,
     P::kLockRelease, "", Only(C::kLockAcquireRelease), false, "RLock.release",
     "`rlock_release` by symbol or the type's method table"},
    {ProbeId::kRLockReleaseSave, "rlock_release_save", F::kLocks, K::kUprobe,
     P::kLockRelease, P::kLockRelease, "", Only(C::kLockAcquireRelease), false,
     "RLock fully released by Condition.wait",
     "`rlock_release_save` by symbol or the type's method table"},
    {ProbeId::kRLockAcquireRestore, "rlock_acquire_restore", F::kLocks, K::kUprobe,
     P::kLockAcquire, P::kLockAcquire, "", Only(C::kLockAcquireRelease), false,
     "RLock re-taken after Condition.wait",
     "`rlock_acquire_restore` by symbol or the type's method table"},
    {ProbeId::kRLockAcquireRestoreReturn, "rlock_acquire_restore_return", F::kLocks,
     K::kUretprobe, P::kLockAcquireRet, P::kLockAcquireRet, "", Only(C::kLockAcquireRelease),
     false, "RLock re-taken after Condition.wait (returned)", "as `rlock_acquire_restore`"},
    {ProbeId::kPark, "lock_park", F::kLocks, K::kUprobe, P::kPark, P::kPark, "",
     C::kLockWaits | C::kContention, false,
     "3.13+: a thread blocks on a PyMutex (a Lock or RLock acquire, a critical section, an "
     "interpreter mutex) or an event: its park begins",
     "every `call _PySemaphore_Wait` (direct or through its PLT stub) outside the parking "
     "lot's bucket lock (`_PyRawMutex_LockSlow`: by symbol, else the function "
     "`_PyParkingLot_Park` calls that waits only with the constant timeout -1)"},
    {ProbeId::kParkRetry, "lock_park_retry", F::kLocks, K::kUprobe, P::kPark, P::kPark, "",
     C::kLockWaits | C::kContention, false,
     "3.13+: a timed-out park waits on because an unpark had already taken it",
     "the park calls whose timeout is the constant -1 (`mov/or rsi,-1` before the call) in "
     "park code: `_PyParkingLot_Park`'s re-wait"},
    {ProbeId::kParkReturn, "lock_park_return", F::kLocks, K::kUprobe, P::kParkRet, P::kParkRet,
     "", C::kLockWaits | C::kContention, false,
     "3.13+: a park ended: woken (handed the lock or not), timed out, interrupted",
     "the first emulated instruction after each park call that leaves `%rax` untouched"},
    {ProbeId::kUnpark, "lock_unpark", F::kLocks, K::kUprobe, P::kUnpark, P::kUnpark, "",
     Only(C::kLockWakers), false,
     "3.13+: who released a PyMutex somebody was parked on, whom it woke, and whether it "
     "handed the lock over",
     "every `call`/`jmp _PySemaphore_Wakeup` outside the bucket lock's unlock "
     "(`_PyRawMutex_UnlockSlow`, by symbol or as the other waking callee of "
     "`_PyParkingLot_Park`)"},
    {ProbeId::kLockFree, "lock_free", F::kLocks, K::kUprobe, P::kLockFree, P::kLockFree, "",
     Only(C::kLockFrees), false, "3.13+: a _thread.lock was deallocated (a PyMutex lock has no "
     "sem_destroy)",
     "the `tp_dealloc` slot of `_thread.lock`'s `PyType_Spec` (found from its method table)"},
    {ProbeId::kRLockFree, "rlock_free", F::kLocks, K::kUprobe, P::kLockFree, P::kLockFree, "",
     Only(C::kLockFrees), false, "3.14+: an RLock was deallocated",
     "the `tp_dealloc` slot of `_thread.RLock`'s `PyType_Spec`"},
    {ProbeId::kLockAcquirePromoted, "lock_acquire_promoted", F::kLocks, K::kUprobe,
     P::kLockAcquire, P::kLockAcquire, "", Only(C::kLockAcquireRelease), false,
     "Lock.acquire began in a PGO-promoted copy (calls that never enter the method)",
     "generic method-call code comparing the callee with the method's address (`cmp reg, "
     "imm32`, non-PIE): the copy's first emulated instruction with the lock object still in "
     "the register its first access to the mutex uses"},
    {ProbeId::kLockAcquirePromotedReturn, "lock_acquire_promoted_return", F::kLocks,
     K::kUprobe, P::kLockAcquireRet, P::kLockAcquireRet, "", Only(C::kLockAcquireRelease),
     false, "Lock.acquire in a promoted copy returned (its result register)",
     "the one instruction both the copy's `Py_True` and `Py_False` results reach, and nothing "
     "else"},
    {ProbeId::kLockReleasePromoted, "lock_release_promoted", F::kLocks, K::kUprobe,
     P::kLockRelease, P::kLockRelease, "", Only(C::kLockAcquireRelease), false,
     "Lock.release in a PGO-promoted copy", "as `lock_acquire_promoted`, for `release`"},
    {ProbeId::kCriticalSectionSlow, "critical_section_slow", F::kLocks, K::kUprobe, P::kCsSlow,
     P::kCsSlow, "", Only(C::kContention), false,
     "free-threaded, --locks all: a critical section's inline lock of an object failed "
     "(contended, or nested in one holding it)",
     "exported `_PyCriticalSection_BeginSlow` / `_PyCriticalSection2_BeginSlow` (the mutex in "
     "rsi / rsi, rdx on 3.14; rdx / rdx, rcx on 3.15), checked against the argument of their "
     "`PyMutex_Lock` call"},
    {ProbeId::kGilTake, "gil_take", F::kGil, K::kUprobe, P::kGil, P::kGilLockAcquire, "",
     Only(C::kGilTake), false, "a thread starts waiting for the GIL (take_gil entered)",
     "`take_gil` (and clones: 3.8's `take_gil.constprop.0`) by symbol; without symbols, every "
     "caller of `pthread_cond_timedwait` (the GIL's timed wait, the only one in CPython), "
     "checked against `PyEval_AcquireLock`'s branch target. Past an `endbr64` when the next "
     "instruction is emulated. 2.7: `PyThread_acquire_lock` on `interpreter_lock`"},
    {ProbeId::kGilTakeReturn, "gil_take_return", F::kGil, K::kUretprobe, P::kGilRet,
     P::kGilLockAcquireRet, "", Only(C::kGilTake), false,
     "a thread got the GIL (take_gil returned)", "as `gil_take`"},
    {ProbeId::kGilDrop, "gil_drop", F::kGil, K::kUprobe, P::kGil, P::kGilLockRelease, "",
     Only(C::kGilDrop), false,
     "the holder releases the GIL (an out-of-line drop_gil: the copy PyEval_ReleaseLock "
     "reaches, and the final-release clone)",
     "each drop's release point, its `call pthread_cond_signal` on the GIL's `cond` (right "
     "after `locked = 0`): every such call outside `take_gil` (which only signals "
     "`switch_cond`). Out-of-line copies are those `PyEval_ReleaseLock`/`PyEval_ReleaseThread` "
     "branch to or `take_gil` calls. 2.7: `PyThread_release_lock` on `interpreter_lock`"},
    {ProbeId::kGilDropInlined, "gil_drop_inlined", F::kGil, K::kUprobe, P::kGil, P::kGil, "",
     Only(C::kGilDrop), false,
     "the holder releases the GIL (drop_gil inlined into its caller)",
     "as `gil_drop`, in the functions LTO inlined `drop_gil` into (every caller of "
     "`pthread_cond_wait`, the FORCE_SWITCHING wait only `drop_gil` has); cold fragments are "
     "named after the function whose code jumps into them"},
    {ProbeId::kGilDropInlinedForced, "gil_drop_inlined_forced", F::kGil, K::kUprobe, P::kGil,
     P::kGil, "", C::kGilDrop | C::kGilForced, false,
     "forced switch: drop_gil inlined into the eval loop's switch code (<=3.12)",
     "as `gil_drop_inlined`, inside the switch code (`_PyEval_EvalFrameDefault` <=3.11, "
     "`_Py_HandlePending` 3.12)"},
    {ProbeId::kGilForced, "gil_forced", F::kGil, K::kUprobe, P::kGil, P::kGil, "",
     Only(C::kGilForced), false,
     "the eval loop drops the GIL because a waiter asked (forced switch)",
     "the switch code's call into the drop path: `drop_gil` from `_PyEval_EvalFrameDefault` "
     "(<=3.11) or `_Py_HandlePending` (3.12); 3.13+: `_Py_HandlePending`'s call to "
     "`_PyThreadState_Detach` (the function `PyEval_ReleaseThread` jumps to) under its test of "
     "the GIL-drop-request bit. 2.7: `PyEval_EvalFrameEx`'s periodic `call "
     "PyThread_release_lock`"},
    // Free-threaded builds only. Without them the GIL's being enabled is still seen, at its
    // first take: a plan where they are unavailable narrows their feeds to nothing.
    {ProbeId::kGilEnableTransient, "gil_enable_transient", F::kGil, K::kUprobe, P::kGil, P::kGil,
     "", Only(C::kGilTake), false,
     "free-threaded: an extension import turns the GIL on for its module's init",
     "`_PyEval_EnableGILTransient`'s entry, by symbol (static)"},
    {ProbeId::kGilEnablePermanent, "gil_enable_permanent", F::kGil, K::kUretprobe,
     P::kGilSwitchRet, P::kGilSwitchRet, "", Only(C::kGilTake), false,
     "free-threaded: the GIL turned on for good (a module not marked free-threading safe)",
     "`_PyEval_EnableGILPermanent`'s return when it returns 1 (it changed the GIL; 0 when "
     "PYTHON_GIL or -X gil forced it either way), by symbol (static; only "
     "`_PyImport_CheckGILForModule` calls it)"},
    {ProbeId::kGilDisable, "gil_disable", F::kGil, K::kUprobe, P::kGil, P::kGil, "",
     Only(C::kGilTake), false,
     "free-threaded: a transient enable ends (the module was free-threading safe)",
     "`_PyEval_DisableGIL`'s entry, by symbol (static)"},
    {ProbeId::kGilWait, "gil_wait", F::kGil, K::kUprobe, P::kGilWait, P::kGilWait, "",
     Only(C::kGilTake), false,
     "--gil waits: a thread found the GIL held and starts waiting (take_gil's first condition "
     "wait of a take)",
     "`take_gil`'s `call pthread_cond_timedwait` (its `while (gil->locked)` loop; found as for "
     "`gil_take`), an emulated call: the uncontended take never reaches it. `&gil->cond` in "
     "`%rdi` locates `gil->locked` (16 bytes before it, 3.7-3.15; 3.6: the static `gil_locked`)"},
    {ProbeId::kGilWaitReturn, "gil_wait_return", F::kGil, K::kUprobe, P::kGilWaitRet,
     P::kGilWaitRet, "", Only(C::kGilTake), false,
     "--gil waits: a waiting thread got the GIL (its wait returned, gil->mutex held, and found "
     "gil->locked == 0)",
     "the first emulated instruction of the straight line after each `gil_wait` call (the "
     "return address is `cmp eax, ETIMEDOUT`, single-stepped; the branch after it is not), no "
     "branch target: reached only by threads that waited"},
};

static_assert(std::size(kProbes) == static_cast<size_t>(ProbeId::kGilWaitReturn) + 1,
              "one catalogue row per ProbeId");

}  // namespace

std::span<const ProbeSpec> AllProbes() { return kProbes; }

const ProbeSpec& Spec(ProbeId id) { return kProbes[static_cast<size_t>(id)]; }

std::optional<ProbeId> ProbeIdByName(std::string_view name) {
  for (const auto& p : kProbes) {
    if (p.name == name) return p.id;
  }
  return std::nullopt;
}

}  // namespace threadscope::loader
