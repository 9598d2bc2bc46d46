// Lock probes: blocking semaphore waits (which 3.4-3.12 joins use too), frees, wakers, lock
// creation, and with --locks all every acquire and release. New lock implementations (3.14+
// PyMutex, the parking lot) are more rows in these tables and more rules in the functions.
#include <set>

#include "daemon/loader/planner.h"
#include "daemon/target/pymutex.h"
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
    // parking lot's: every wait is a park (lock_park), and nothing depends on these.
    none = "every call to sem_wait/sem_clockwait is in _PySemaphore_Wait, the parking lot's: "
           "this interpreter's locks are PyMutexes, whose waits are parking-lot parks "
           "(lock_park), not semaphore waits";
    feeds = 0;
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
  if (destroy.sites.empty() && v.AtLeast(3, 15)) {
    // No semaphores at all: lock_free / rlock_free end PyMutex locks.
    destroy.unavailable += " (3.15's locks are PyMutexes: lock_free ends them)";
    destroy.feeds = 0;
  }
  plan->probes.push_back(std::move(destroy));
}

namespace {

// The Python methods behind each probed lock operation. Each name is its own C function on
// 3.15 (Argument Clinic); before, several names share one. Probed once per distinct function.
struct MethodFamily {
  ProbeId entry;
  std::optional<ProbeId> ret;  // acquires: the return gives the result
  bool rlock;
  uint32_t op;
  std::vector<const char*> names;
};
const std::vector<MethodFamily>& MethodFamilies() {
  static const std::vector<MethodFamily> kFamilies = {
      {ProbeId::kLockAcquire, ProbeId::kLockAcquireReturn, false, TS_LOCK_OP_ACQUIRE,
       {"acquire", "acquire_lock", "__enter__"}},
      {ProbeId::kLockRelease, std::nullopt, false, TS_LOCK_OP_RELEASE,
       {"release", "release_lock", "__exit__"}},
      {ProbeId::kRLockAcquire, ProbeId::kRLockAcquireReturn, true, TS_LOCK_OP_ACQUIRE,
       {"acquire", "__enter__"}},
      {ProbeId::kRLockRelease, std::nullopt, true, TS_LOCK_OP_RELEASE, {"release", "__exit__"}},
      {ProbeId::kRLockReleaseSave, std::nullopt, true, TS_LOCK_OP_RELEASE_SAVE,
       {"_release_save"}},
      {ProbeId::kRLockAcquireRestore, ProbeId::kRLockAcquireRestoreReturn, true,
       TS_LOCK_OP_RESTORE, {"_acquire_restore"}},
  };
  return kFamilies;
}

// enum ts_reg of a hardware register number (GprIndex); none for rsp, r10, r11.
std::optional<uint32_t> TsReg(int gpr) {
  switch (gpr) {
    case 0: return TS_REG_RAX;
    case 1: return TS_REG_RCX;
    case 2: return TS_REG_RDX;
    case 3: return TS_REG_RBX;
    case 5: return TS_REG_RBP;
    case 6: return TS_REG_RSI;
    case 7: return TS_REG_RDI;
    case 8: return TS_REG_R8;
    case 9: return TS_REG_R9;
    case 12: return TS_REG_R12;
    case 13: return TS_REG_R13;
    case 14: return TS_REG_R14;
    case 15: return TS_REG_R15;
    default: return std::nullopt;
  }
}

const char* kRegNames[] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                           "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};

// Adds `site` to the planned probe of `id` with `cookie`, making one when there is none yet:
// a probe has one cookie, so sites that need another (the object in another register) get a
// probe of their own with the same id.
void AddSite(ProbePlan* plan, ProbeId id, uint64_t cookie, const ProbeSite& site) {
  for (auto& probe : plan->probes) {
    if (probe.id != id || probe.cookie != cookie || !probe.unavailable.empty()) continue;
    for (const auto& s : probe.sites) {
      if (s.vaddr == site.vaddr) return;
    }
    probe.sites.push_back(site);
    return;
  }
  PlannedProbe probe(id);
  probe.cookie = cookie;
  probe.sites.push_back(site);
  plan->probes.push_back(std::move(probe));
}

// `feeds`: what its absence takes away (the catalogue's by default; 0 when nothing depends on
// it, as for an optional refinement).
void Unavailable(ProbePlan* plan, ProbeId id, std::string why,
                 std::optional<CapabilitySet> feeds = std::nullopt) {
  if (!plan->Find(id).empty()) return;
  PlannedProbe probe(id);
  probe.unavailable = std::move(why);
  if (feeds) probe.feeds = *feeds;
  plan->probes.push_back(std::move(probe));
}

// 3.13+: parks and unparks of the parking lot, whatever is parked on.
void PlanParkingLot(const PlanContext& p, ProbePlan* plan) {
  auto sites = target::FindParkingLotSites(p.py(), p.dis(), p.code());
  if (!sites.ok()) {
    for (ProbeId id : {ProbeId::kPark, ProbeId::kParkReturn, ProbeId::kUnpark}) {
      Unavailable(plan, id, sites.status().message());
    }
    return;
  }
  auto where = [&](uint64_t function, uint64_t vaddr, const std::string& what) {
    return p.Where(function, p.FunctionName(function), vaddr) + " (" + what + ")";
  };
  for (const auto& park : sites->parks) {
    ProbeId id = park.retry ? ProbeId::kParkRetry : ProbeId::kPark;
    uint64_t cookie = park.retry ? TS_PARK_SITE_RETRY : TS_PARK_SITE_PARK;
    if (auto s = p.PySite(park.call, where(park.function, park.call, "call _PySemaphore_Wait"),
                          park.retry ? "parking-lot re-wait (timeout -1)"
                                     : "call site of _PySemaphore_Wait")) {
      AddSite(plan, id, cookie, *s);
    }
    if (!park.return_site) continue;
    if (auto s = p.PySite(*park.return_site,
                          where(park.function, *park.return_site, "after _PySemaphore_Wait"),
                          "return site of _PySemaphore_Wait")) {
      AddSite(plan, ProbeId::kParkReturn, cookie, *s);
    }
  }
  for (uint64_t u : sites->unparks) {
    uint64_t owner = p.code().OwnerOf(u).value_or(u);
    if (auto s = p.PySite(u, where(owner, u, "call _PySemaphore_Wakeup"),
                          "call site of _PySemaphore_Wakeup")) {
      AddSite(plan, ProbeId::kUnpark, 0, *s);
    }
  }
  Unavailable(plan, ProbeId::kPark, "no call of _PySemaphore_Wait outside the bucket lock");
  Unavailable(plan, ProbeId::kParkRetry,
              "no re-wait after a timeout found: a timed-out park that an unpark had already "
              "taken ends as a timeout",
              0);
  Unavailable(plan, ProbeId::kParkReturn, "no return site after _PySemaphore_Wait found");
  Unavailable(plan, ProbeId::kUnpark, "no call of _PySemaphore_Wakeup outside the bucket lock");
}

}  // namespace

void PlanLockProbes(const PlanContext& p, LockMode locks, ProbePlan* plan) {
  if (locks == LockMode::kOff) return;
  const target::PythonVersion& v = p.version();
  if (v.major == 2) {
    PlannedProbe lock(ProbeId::kLockWait);
    lock.unavailable =
        "Python 2.7 blocks in sem_wait on every acquire, contended or not, and its GIL is such a "
        "lock: lock tracing needs CPython 3";
    plan->probes.push_back(std::move(lock));
    return;
  }
  // What the lock objects hold: a semaphore pointer, or (3.13.1+ Lock, 3.14+ RLock) a PyMutex.
  // Their type's size says which; it is cross-checked with the version in target_test.
  const bool ft = p.target().info.free_threaded;
  auto tables = target::FindMethodTables(p.py());
  target::LockType lock_type = target::FindLockType(p.py(), tables, false);
  target::LockType rlock_type = target::FindLockType(p.py(), tables, true);
  plan->lock_pymutex = target::LockIsPyMutex(lock_type, false, v, ft);
  plan->rlock_pymutex = target::LockIsPyMutex(rlock_type, true, v, ft);
  plan->sem_kinds = static_cast<uint8_t>((plan->lock_pymutex ? 0 : 1 << TS_LOCK_LOCK) |
                                         (plan->rlock_pymutex ? 0 : 1 << TS_LOCK_RLOCK));
  const uint32_t header = ft ? 32 : 16;
  plan->free_threaded = ft;
  plan->lock_mutex_off = header;
  plan->ob_type_off = ft ? 24 : 8;
  plan->tp_name_off = ft ? 40 : 24;  // PyVarObject, then tp_name
  plan->rlock_owner_off = header + 8;
  plan->rlock_depth_off = header + 16;
  plan->rlock_depth_is_level = plan->rlock_pymutex;
  if (auto type = p.py().FindSymbol("PyType_Type")) {
    plan->type_type = type->value + p.target().info.interpreter.load_bias;
  }

  // Who releases a lock somebody waits on, where locks are semaphores: its futex(FUTEX_WAKE),
  // seen at syscall entry and filtered in the kernel to semaphores being waited on. No uprobe
  // trap. From 3.15 nothing is a semaphore any more (PyThread locks are PyMutexes too).
  if (!v.AtLeast(3, 15)) plan->probes.emplace_back(ProbeId::kLockWake);

  // Creation: kind, object, and a new generation when an address is reused.
  for (const auto& f : kLockFunctions) {
    if (!f.versions.Contains(v) || f.all_mode_only) continue;
    PlannedProbe probe(f.id);
    probe.cookie = TS_LOCK_COOKIE(f.lock_kind, f.op, TS_REG_RDI, 0, 0, 0);
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

  if (v.AtLeast(3, 13)) {
    PlanParkingLot(p, plan);
    // A PyMutex lock's end (its generation): tp_dealloc, as sem_destroy ends a semaphore's.
    struct Free {
      ProbeId id;
      bool pymutex;
      const target::LockType* type;
      uint32_t kind;
      const char* name;
    };
    for (const Free& f : {Free{ProbeId::kLockFree, plan->lock_pymutex, &lock_type, TS_LOCK_LOCK,
                               "_thread.lock"},
                          Free{ProbeId::kRLockFree, plan->rlock_pymutex, &rlock_type,
                               TS_LOCK_RLOCK, "_thread.RLock"}}) {
      if (!f.pymutex) continue;
      std::optional<ProbeSite> site;
      if (f.type->tp_dealloc) {
        site = p.EntrySite(*f.type->tp_dealloc, p.FunctionName(*f.type->tp_dealloc),
                           std::string("tp_dealloc of ") + f.name + " (its PyType_Spec slots)");
      }
      if (site) {
        AddSite(plan, f.id, TS_LOCK_COOKIE(f.kind, 0, TS_REG_RDI, 0, 0, 0), *site);
      } else {
        Unavailable(plan, f.id, std::string("the tp_dealloc of ") + f.name + " was not found");
      }
    }
  }
  if (locks != LockMode::kAll) return;

  // Every acquire and release, at each distinct C function behind the Python-facing method
  // names (from the types' method tables; by symbol where no table is found).
  for (const MethodFamily& fam : MethodFamilies()) {
    const target::LockType& type = fam.rlock ? rlock_type : lock_type;
    const uint32_t kind = fam.rlock ? TS_LOCK_RLOCK : TS_LOCK_LOCK;
    std::set<uint64_t> functions;
    for (const char* name : fam.names) {
      if (auto m = type.Method(name)) functions.insert(*m);
    }
    if (functions.empty()) {
      // No method table: the symbol of the row.
      for (const auto& f : kLockFunctions) {
        if (f.id != fam.entry) continue;
        if (auto sym = p.py().FindSymbol(f.symbol); sym && sym->is_function) {
          functions.insert(sym->value);
        }
      }
    }
    for (uint64_t fn : functions) {
      std::string name = p.FunctionName(fn);
      std::string how = std::string("PyMethodDef _thread.") + (fam.rlock ? "RLock" : "lock");
      if (fam.ret) {
        // The entry and the return on one site: the return needs the entry (or +4 past an
        // endbr64 when that is an emulated push), so the entry's trap is shared.
        auto site = p.EntrySite(fn, name, how);
        if (!site) continue;
        uint64_t cookie = TS_LOCK_COOKIE(kind, fam.op, TS_REG_RDI, 0, 0, 0);
        AddSite(plan, fam.entry, cookie, *site);
        AddSite(plan, *fam.ret, cookie, *site);
        continue;
      }
      // A release needs no return: the first emulated instruction that still has the object.
      std::optional<ProbeSite> site;
      uint64_t cookie = TS_LOCK_COOKIE(kind, fam.op, TS_REG_RDI, 0, 0, 0);
      if (auto self = target::FindSelfSite(p.py(), p.code(), fn)) {
        if (auto reg = TsReg(self->gpr)) {
          site = p.PySite(self->vaddr,
                          p.Where(fn, name, self->vaddr) + " (" + kRegNames[self->gpr] +
                              (self->adjust ? " - " + std::to_string(self->adjust) : "") +
                              " = the lock)",
                          how + " + first emulated instruction");
          cookie = TS_LOCK_COOKIE(kind, fam.op, *reg, self->adjust, 0, 0);
        }
      }
      if (!site) site = p.EntrySite(fn, name, how);
      if (site) AddSite(plan, fam.entry, cookie, *site);
    }
    Unavailable(plan, fam.entry, "no C function behind _thread." +
                                     std::string(fam.rlock ? "RLock." : "lock.") + fam.names[0] +
                                     " found in " + p.py().path());
    if (fam.ret) Unavailable(plan, *fam.ret, "as " + std::string(Spec(fam.entry).name));
  }

  // PGO-promoted copies (non-PIE builds compare the callee with the method's address).
  if (!p.py().is_shared_object() && v.AtLeast(3, 13)) {
    uint64_t t = 0, f = 0;
    if (auto s = p.py().FindSymbol("_Py_TrueStruct")) t = s->value;
    if (auto s = p.py().FindSymbol("_Py_FalseStruct")) f = s->value;
    for (const MethodFamily& fam : MethodFamilies()) {
      if (fam.op != TS_LOCK_OP_ACQUIRE && fam.op != TS_LOCK_OP_RELEASE) continue;
      const target::LockType& type = fam.rlock ? rlock_type : lock_type;
      const uint32_t kind = fam.rlock ? TS_LOCK_RLOCK : TS_LOCK_LOCK;
      const bool acquire = fam.op == TS_LOCK_OP_ACQUIRE;
      std::set<uint64_t> functions;
      for (const char* name : fam.names) {
        if (auto m = type.Method(name)) functions.insert(*m);
      }
      for (uint64_t fn : functions) {
        const uint32_t mutex_off = header;  // both kinds keep their mutex right after the header
        for (const auto& copy : target::FindPromotedCopies(p.py(), p.code(), fn, mutex_off,
                                                            acquire ? t : 0, acquire ? f : 0)) {
          std::string what = p.FunctionName(fn) + " copied into " + p.FunctionName(copy.function);
          auto reg = copy.entry ? TsReg(copy.entry->gpr) : std::nullopt;
          auto result = copy.result_site ? TsReg(copy.result_gpr) : std::nullopt;
          ProbeId entry_id = acquire ? ProbeId::kLockAcquirePromoted : ProbeId::kLockReleasePromoted;
          if (!reg || (acquire && !result)) {
            // Never silently: the copy's calls would be missed.
            PlannedProbe probe(entry_id);
            probe.unavailable = what + ": " + (copy.problem.empty() ? "no usable site" : copy.problem);
            plan->probes.push_back(std::move(probe));
            continue;
          }
          uint64_t cookie = TS_LOCK_COOKIE(kind, fam.op, *reg, copy.entry->adjust,
                                           TS_LOCK_F_PROMOTED, result ? *result : 0);
          auto site = p.PySite(copy.entry->vaddr,
                               p.Where(copy.function, p.FunctionName(copy.function),
                                       copy.entry->vaddr) +
                                   " (promoted copy of " + p.FunctionName(fn) + ", " +
                                   kRegNames[copy.entry->gpr] + " = the lock)",
                               "PGO guard `cmp` with the method's address");
          if (!site) continue;
          AddSite(plan, entry_id, cookie, *site);
          if (acquire) {
            auto rs = p.PySite(*copy.result_site,
                               p.Where(copy.function, p.FunctionName(copy.function),
                                       *copy.result_site) +
                                   " (the copy's result in " + kRegNames[copy.result_gpr] + ")",
                               "the copy's Py_True/Py_False join");
            if (rs) AddSite(plan, ProbeId::kLockAcquirePromotedReturn, cookie, *rs);
          }
        }
      }
    }
  }

  // Free-threaded: where critical sections fail their fast path (spins, nesting, contention).
  if (ft) {
    for (const auto& cs : target::FindCriticalSectionSites(p.py(), p.code(), v)) {
      auto r1 = TsReg(cs.mutex_gpr);
      auto r2 = cs.mutex2_gpr >= 0 ? TsReg(cs.mutex2_gpr) : std::optional<uint32_t>(TS_REG_NONE);
      auto site = p.EntrySite(cs.entry, cs.name,
                              std::string(".dynsym") + (cs.verified ? "" : " (mutex register "
                                                                             "by version, not "
                                                                             "seen in the code)"));
      if (!r1 || !r2 || !site) continue;
      AddSite(plan, ProbeId::kCriticalSectionSlow, uint64_t{*r1} | uint64_t{*r2} << 8, *site);
    }
    Unavailable(plan, ProbeId::kCriticalSectionSlow,
                "_PyCriticalSection_BeginSlow is not exported by " + p.py().path() +
                    " (critical-section waits are still seen as parks)",
                0);
  }
}

}  // namespace threadscope::loader
