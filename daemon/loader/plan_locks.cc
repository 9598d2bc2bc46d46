// Lock probes: blocking semaphore waits (which 3.4-3.12 joins use too), frees, wakers, lock
// creation, and with --locks all every acquire and release. New lock implementations (3.14+
// PyMutex, the parking lot) are more rows in these tables and more rules in the functions.
#include <set>

#include "daemon/loader/planner.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

namespace {

// Where semaphore waits are not waits on Python locks: 3.13+ parks threads on per-thread
// semaphores in _PySemaphore_Wait (PyMutex, PyEvent, the parking lot), and a lock's wait on a
// semaphore never goes through there.
constexpr const char* kParkingCallers[] = {"_PySemaphore_Wait"};

// The lock constructors and methods probed, by symbol or, stripped, through the _thread
// method tables and the types' tp_new.
enum class Fallback { kNone, kModuleMethod, kLockTypeNew, kRLockTypeNew, kLockMethod, kRLockMethod };
struct LockFunction {
  Versions versions;
  ProbeId id;
  bool all_mode_only;  // --locks all
  uint32_t lock_kind;
  uint32_t op;         // 0 for constructors (their cookie is the kind alone)
  const char* symbol;
  Fallback fallback;
  const char* method;  // the PyMethodDef name behind the fallback
};
constexpr LockFunction kLockFunctions[] = {
    // Creation: kind, object, and a new generation when an address is reused.
    {{3, 0}, ProbeId::kLockNew, false, TS_LOCK_LOCK, 0, "thread_PyThread_allocate_lock",
     Fallback::kModuleMethod, "allocate_lock"},
    // 3.13+: threading.Lock is the _thread.lock type itself.
    {{3, 13}, ProbeId::kLockNewType, false, TS_LOCK_LOCK, 0, "lock_new", Fallback::kLockTypeNew,
     ""},
    {{3, 0}, ProbeId::kRLockNew, false, TS_LOCK_RLOCK, 0, "rlock_new", Fallback::kRLockTypeNew,
     ""},
    // Every acquire and release, at the Python-facing methods (acquire, __enter__, release,
    // __exit__ share these C functions).
    {{3, 0}, ProbeId::kLockAcquire, true, TS_LOCK_LOCK, TS_LOCK_OP_ACQUIRE,
     "lock_PyThread_acquire_lock", Fallback::kLockMethod, "acquire"},
    {{3, 0}, ProbeId::kLockAcquireReturn, true, TS_LOCK_LOCK, TS_LOCK_OP_ACQUIRE,
     "lock_PyThread_acquire_lock", Fallback::kLockMethod, "acquire"},
    {{3, 0}, ProbeId::kLockRelease, true, TS_LOCK_LOCK, TS_LOCK_OP_RELEASE,
     "lock_PyThread_release_lock", Fallback::kLockMethod, "release"},
    {{3, 0}, ProbeId::kRLockAcquire, true, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE, "rlock_acquire",
     Fallback::kRLockMethod, "acquire"},
    {{3, 0}, ProbeId::kRLockAcquireReturn, true, TS_LOCK_RLOCK, TS_LOCK_OP_ACQUIRE,
     "rlock_acquire", Fallback::kRLockMethod, "acquire"},
    {{3, 0}, ProbeId::kRLockRelease, true, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE, "rlock_release",
     Fallback::kRLockMethod, "release"},
    {{3, 0}, ProbeId::kRLockReleaseSave, true, TS_LOCK_RLOCK, TS_LOCK_OP_RELEASE_SAVE,
     "rlock_release_save", Fallback::kRLockMethod, "_release_save"},
    {{3, 0}, ProbeId::kRLockAcquireRestore, true, TS_LOCK_RLOCK, TS_LOCK_OP_RESTORE,
     "rlock_acquire_restore", Fallback::kRLockMethod, "_acquire_restore"},
    {{3, 0}, ProbeId::kRLockAcquireRestoreReturn, true, TS_LOCK_RLOCK, TS_LOCK_OP_RESTORE,
     "rlock_acquire_restore", Fallback::kRLockMethod, "_acquire_restore"},
};

// Sites where the interpreter calls `fn` in libc. Probing the call instruction is emulated
// (cheap) where glibc's own entry may be single-stepped; entry probes are the fallback.
struct ImportSites {
  std::vector<ProbeSite> calls;
  std::vector<ProbeSite> returns;         // emulated return sites (rax = result)
  std::vector<ProbeSite> entry_fallback;  // libc entries for calls without a return site
  size_t excluded = 0;                    // calls left out (made by excluded callers)
  std::string truncated;                  // why a search stopped early (a hostile binary)
};

// Calls made from `excluded_callers` (function names; cold fragments count as their function)
// are left out.
ImportSites FindImportSites(const PlanContext& p, const std::vector<std::string>& functions,
                            std::span<const char* const> excluded_callers = {}) {
  ImportSites out;
  std::set<uint64_t> fallback_seen;
  std::set<uint64_t> excluded;
  for (const char* name : excluded_callers) {
    if (auto sym = p.py().FindSymbol(name); sym && sym->is_function) excluded.insert(sym->value);
  }
  for (const auto& fn : functions) {
    auto found = target::FindImportCallSitesBounded(p.py(), p.dis(), fn);
    if (found.truncated && out.truncated.empty()) out.truncated = found.truncated_reason;
    bool need_fallback = false;
    for (const auto& site : found.sites) {
      auto owner = p.code().OwnerOf(site.call).value_or(site.function);
      if (excluded.count(owner)) {
        ++out.excluded;
        continue;
      }
      std::string name = p.FunctionName(owner);
      if (auto s = p.PySite(site.call, p.Where(owner, name, site.call) + " (call " + fn + ")",
                            "call site of " + fn)) {
        out.calls.push_back(*s);
      }
      if (site.return_site) {
        if (auto s = p.PySite(*site.return_site,
                              p.Where(owner, name, *site.return_site) + " (after " + fn +
                                  " returns)",
                              "return site of " + fn)) {
          out.returns.push_back(*s);
        }
      } else {
        need_fallback = true;
      }
    }
    // Functions the interpreter never calls need no probe at all.
    if (need_fallback) {
      if (auto s = p.LibcFunction(fn); s && fallback_seen.insert(s->vaddr).second) {
        out.entry_fallback.push_back(*s);
      }
    }
  }
  return out;
}

// Begin/end probes around blocking semaphore waits: every acquire that had to wait (3.x tries
// without blocking first), and the join sentinel's waits on 3.4-3.12.
void AddSemWaitProbes(const PlanContext& p, CapabilitySet feeds, ProbePlan* plan) {
  ImportSites sites =
      FindImportSites(p, {"sem_wait", "sem_timedwait", "sem_clockwait"}, kParkingCallers);
  std::string none = "no call to sem_wait/sem_clockwait found";
  if (sites.calls.empty() && sites.excluded > 0) {
    // 3.15: PyThread_type_lock is a PyMutex too, so the only semaphore waits left are the
    // parking lot's.
    none = "every call to sem_wait/sem_clockwait is in _PySemaphore_Wait, the parking lot's: "
           "this interpreter's locks are PyMutexes, whose waits are parking-lot parks (not "
           "semaphore waits on Python locks); those are not traced yet";
  }
  PlannedProbe begin(ProbeId::kSemWait);
  begin.feeds = feeds;
  begin.sites = sites.calls;
  if (begin.sites.empty()) begin.unavailable = none;
  if (!sites.truncated.empty()) {
    // Never silently partial: a search cut short (a binary built to make it long) would leave
    // waits at the sites it did not reach unseen. Not traced, and why.
    begin.sites.clear();
    sites.returns.clear();
    sites.entry_fallback.clear();
    begin.unavailable = "the search for sem_*wait calls stopped early: " + sites.truncated;
    none = begin.unavailable;
  }
  plan->probes.push_back(std::move(begin));

  PlannedProbe end(ProbeId::kSemWaitReturn);
  end.feeds = feeds;
  end.sites = sites.returns;
  if (end.sites.empty() && sites.entry_fallback.empty()) {
    end.unavailable = sites.calls.empty() ? none : "no return site after sem_wait/sem_clockwait found";
  }
  if (!end.sites.empty() || !end.unavailable.empty()) plan->probes.push_back(std::move(end));
  if (!sites.entry_fallback.empty()) {
    PlannedProbe fallback(ProbeId::kSemWaitReturnFallback);
    fallback.feeds = feeds & static_cast<CapabilitySet>(Capability::kLockWaits);
    fallback.sites = sites.entry_fallback;
    plan->probes.push_back(std::move(fallback));
  }
}

std::optional<uint64_t> FallbackAddress(const PlanContext& p, const LockFunction& f) {
  switch (f.fallback) {
    case Fallback::kNone: return std::nullopt;
    case Fallback::kModuleMethod: return p.ThreadModuleMethod(f.method);
    case Fallback::kLockTypeNew: return p.TypeNew(false);
    case Fallback::kRLockTypeNew: return p.TypeNew(true);
    case Fallback::kLockMethod: return p.TypeMethod(false, f.method);
    case Fallback::kRLockMethod: return p.TypeMethod(true, f.method);
  }
  return std::nullopt;
}

std::string FallbackHow(const LockFunction& f) {
  switch (f.fallback) {
    case Fallback::kNone: return "";
    case Fallback::kModuleMethod: return std::string("PyMethodDef _thread.") + f.method;
    case Fallback::kLockTypeNew: return "tp_new of _thread.lock";
    case Fallback::kRLockTypeNew: return "tp_new of _thread.RLock";
    case Fallback::kLockMethod: return std::string("PyMethodDef _thread.lock.") + f.method;
    case Fallback::kRLockMethod: return std::string("PyMethodDef _thread.RLock.") + f.method;
  }
  return "";
}

}  // namespace

void PlanSemaphoreProbes(const PlanContext& p, LockMode locks, ProbePlan* plan) {
  const target::PythonVersion& v = p.version();
  bool for_joins = Versions{3, 0, 3, 12}.Contains(v);
  bool for_locks = v.major == 3 && locks != LockMode::kOff;
  if (!for_joins && !for_locks) return;
  CapabilitySet waits = (for_locks ? static_cast<CapabilitySet>(Capability::kLockWaits) : 0) |
                        (for_joins ? static_cast<CapabilitySet>(Capability::kJoins) : 0);
  AddSemWaitProbes(p, waits, plan);
  // A freed semaphore's address comes back as another lock at once (malloc): forgetting it
  // keeps that lock's waits from passing for its predecessor's, and on 3.4-3.12 an unrelated
  // wait from passing for a join.
  PlannedProbe destroy(ProbeId::kSemDestroy);
  destroy.feeds = (for_locks ? static_cast<CapabilitySet>(Capability::kLockFrees) : 0) |
                  (for_joins ? static_cast<CapabilitySet>(Capability::kJoins) : 0);
  destroy.sites = FindImportSites(p, {"sem_destroy"}).calls;
  if (destroy.sites.empty()) destroy.unavailable = "no call to sem_destroy found";
  plan->probes.push_back(std::move(destroy));
}

void PlanLockProbes(const PlanContext& p, LockMode locks, ProbePlan* plan) {
  if (locks == LockMode::kOff) return;
  if (p.version().major == 2) {
    PlannedProbe lock(ProbeId::kLockWait);
    lock.unavailable =
        "Python 2.7 blocks in sem_wait on every acquire, contended or not, and its GIL is such a "
        "lock: lock tracing needs CPython 3";
    plan->probes.push_back(std::move(lock));
    return;
  }
  // Who releases a lock somebody waits on: its futex(FUTEX_WAKE), seen at syscall entry and
  // filtered in the kernel to semaphores being waited on. No uprobe trap.
  plan->probes.emplace_back(ProbeId::kLockWake);

  for (const auto& f : kLockFunctions) {
    if (!f.versions.Contains(p.version())) continue;
    if (f.all_mode_only && locks != LockMode::kAll) continue;
    PlannedProbe probe(f.id);
    probe.cookie = uint64_t{f.lock_kind} | uint64_t{f.op} << 8;
    if (auto s = p.Function(f.symbol)) {
      probe.sites.push_back(*s);
    } else if (auto address = FallbackAddress(p, f)) {
      if (auto s = p.EntrySite(*address, f.symbol, FallbackHow(f))) probe.sites.push_back(*s);
    }
    if (probe.sites.empty()) {
      probe.unavailable = std::string(f.symbol) + " not found in " + p.py().path();
    }
    plan->probes.push_back(std::move(probe));
  }
}

}  // namespace threadscope::loader
