#include "daemon/loader/probe_plan.h"

#include <cstdio>
#include <optional>
#include <map>
#include <set>

#include "probes/threadscope_events.h"

namespace threadscope::loader {

using target::ElfFile;
using target::PythonVersion;

const char* ProbeKindName(ProbeKind kind) {
  switch (kind) {
    case ProbeKind::kUprobe: return "uprobe";
    case ProbeKind::kUretprobe: return "uretprobe";
    case ProbeKind::kRawTracepoint: return "raw_tracepoint";
  }
  return "uprobe";
}

const char* LockModeName(LockMode mode) {
  switch (mode) {
    case LockMode::kOff: return "off";
    case LockMode::kContended: return "contended";
    case LockMode::kAll: return "all";
  }
  return "contended";
}

std::optional<LockMode> ParseLockMode(std::string_view name) {
  if (name == "off") return LockMode::kOff;
  if (name == "contended") return LockMode::kContended;
  if (name == "all") return LockMode::kAll;
  return std::nullopt;
}

namespace {

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string Basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Resolves names and addresses into probe sites for one target.
class Planner {
 public:
  Planner(const target::InspectedProcess& t, const target::Disassembler& dis) : t_(t), dis_(dis) {}

  const ElfFile& py() const { return *t_.interpreter_elf; }
  const PythonVersion& version() const { return t_.info.version; }

  std::optional<ProbeSite> Site(const ElfFile& elf, const target::BinaryRef& bin,
                                        uint64_t vaddr, std::string location,
                                        std::string resolved_by) const;

  // A function by symbol name, in the interpreter.
  std::optional<ProbeSite> Function(const std::string& name) const {
    auto sym = py().FindSymbol(name);
    if (!sym || !sym->is_function) return std::nullopt;
    return Site(py(), t_.info.interpreter, sym->value, name,
                sym->from_dynsym ? ".dynsym" : ".symtab");
  }

  // A libc function by name (default symbol version).
  std::optional<ProbeSite> LibcFunction(const std::string& name) const {
    if (!t_.libc_elf || !t_.info.libc) return std::nullopt;
    auto sym = t_.libc_elf->FindSymbol(name);
    if (!sym || !sym->is_function) return std::nullopt;
    return Site(*t_.libc_elf, *t_.info.libc, sym->value, name, ".dynsym");
  }

  // A static method of the _thread module through its PyMethodDef table.
  std::optional<uint64_t> ThreadModuleMethod(const std::string& name) const {
    if (!tables_) tables_ = target::FindMethodTables(py());
    return target::FindMethod(*tables_, name, {"start_new_thread", "allocate_lock", "get_ident"});
  }

  // A method of the _thread.lock or _thread.RLock type, and that type's tp_new.
  std::optional<uint64_t> TypeMethod(bool rlock, const std::string& name) const {
    if (!tables_) tables_ = target::FindMethodTables(py());
    return target::FindMethod(*tables_, name, TypeSiblings(rlock));
  }
  std::optional<uint64_t> TypeNew(bool rlock) const {
    if (!tables_) tables_ = target::FindMethodTables(py());
    const target::MethodTable* table = target::FindMethodTable(*tables_, TypeSiblings(rlock));
    if (!table || table->empty()) return std::nullopt;
    return target::FindTypeNew(py(), table->front().address);
  }
  static std::vector<std::string_view> TypeSiblings(bool rlock) {
    if (rlock) return {"_release_save", "_acquire_restore", "_is_owned"};
    return {"acquire_lock", "release_lock", "locked_lock"};
  }

  const target::Disassembler& dis() const { return dis_; }
  const target::InspectedProcess& target() const { return t_; }

 private:
  const target::InspectedProcess& t_;
  const target::Disassembler& dis_;
  mutable std::optional<std::vector<target::MethodTable>> tables_;
};

std::optional<ProbeSite> Planner::Site(const ElfFile& elf, const target::BinaryRef& bin,
                                               uint64_t vaddr, std::string location,
                                               std::string resolved_by) const {
  auto offset = elf.VaddrToOffset(vaddr);
  if (!offset || !elf.IsText(vaddr)) return std::nullopt;
  ProbeSite site;
  site.binary = bin.path;
  site.host_path = bin.host_path;
  site.vaddr = vaddr;
  site.file_offset = *offset;
  site.location = std::move(location);
  site.resolved_by = std::move(resolved_by);
  std::string_view bytes = elf.BytesAt(vaddr, 15);
  auto insns = dis_.Decode(bytes, vaddr, 1);
  if (!insns.empty()) {
    site.instruction = insns[0].ToString();
    site.site_kind = target::ClassifyUprobeSite(bytes.substr(0, insns[0].size));
  }
  return site;
}

struct Bootstrap {
  ProbeSite site;
  std::string name;  // t_bootstrap / thread_run
};

std::optional<Bootstrap> FindBootstrap(const Planner& p) {
  std::string name = p.version().AtLeast(3, 10) ? "thread_run" : "t_bootstrap";
  if (auto s = p.Function(name)) return Bootstrap{*s, name};
  // Stripped: _thread.start_new_thread passes the bootstrap as the first argument of the
  // CPython start function (3.13+: through do_start_new_thread).
  auto method = p.ThreadModuleMethod("start_new_thread");
  if (!method) return std::nullopt;
  std::string callee =
      p.version().AtLeast(3, 13) ? "PyThread_start_joinable_thread" : "PyThread_start_new_thread";
  for (const auto& call : target::FindCallsByName(p.py(), p.dis(), *method, callee, 2)) {
    if (!call.site.args[0] || !p.py().IsText(*call.site.args[0])) continue;
    auto site = p.Site(p.py(), p.target().info.interpreter, *call.site.args[0], name,
                       "PyMethodDef _thread.start_new_thread -> 1st argument of " + callee);
    if (site) return Bootstrap{*site, name};
  }
  return std::nullopt;
}

void AddBodyDone(const Planner& p, const std::optional<Bootstrap>& boot, ProbePlan* plan) {
  PlannedProbe probe;
  probe.name = "thread_body_done";
  probe.program = "ts_thread_body_done";
  probe.purpose = "the thread's callable returned (distinguishes finished from killed threads)";
  if (!boot) {
    probe.unavailable = "the bootstrap function was not found (see thread_bootstrap)";
    plan->probes.push_back(std::move(probe));
    return;
  }
  // Where the bootstrap goes once the callable is over. In order of preference:
  //  - its call to PyThreadState_Clear (every version): an emulated call instruction, hit
  //    also by threads that were already running when we attached;
  //  - its call to PyThread_exit_thread (3.6-3.8 end in pthread_exit, no return);
  //  - a uretprobe, which only sees threads that entered the bootstrap after the attach.
  auto code = target::DecodeFunction(p.py(), p.dis(), boot->site.vaddr);
  for (const auto& [callee, cookie] :
       {std::make_pair("PyThreadState_Clear", TS_BODY_CLEAR),
        std::make_pair("PyThread_exit_thread", TS_BODY_EXIT_THREAD)}) {
    for (const auto& site : target::CallSites(code)) {
      auto name = p.py().NameAt(site.target);
      if (!name || *name != callee) continue;
      auto s = p.Site(p.py(), p.target().info.interpreter, site.address,
                      boot->name + "+" + Hex(site.address - boot->site.vaddr) + " (call " +
                          callee + ")",
                      boot->site.resolved_by + " + call site");
      if (s) probe.sites.push_back(*s);
    }
    if (!probe.sites.empty()) {
      probe.kind = ProbeKind::kUprobe;
      probe.cookie = cookie;
      break;
    }
  }
  if (probe.sites.empty()) {
    probe.kind = ProbeKind::kUretprobe;
    probe.cookie = TS_BODY_RETURNED;
    probe.sites.push_back(boot->site);
  }
  plan->probes.push_back(std::move(probe));
  plan->model_config.body_done_visible = true;
}

// Sites where the interpreter calls `fn` in libc. Probing the call instruction is emulated
// (cheap) where glibc's own entry may be single-stepped; entry probes are the fallback.
struct ImportSites {
  std::vector<ProbeSite> calls;
  std::vector<ProbeSite> returns;       // emulated return sites (rax = result)
  std::vector<ProbeSite> entry_fallback;  // libc entries for calls without a return site
};

// Calls made from `excluded_callers` (function names) are left out.
ImportSites FindImportSites(const Planner& p, const std::vector<std::string>& functions,
                            const std::vector<std::string>& excluded_callers = {}) {
  ImportSites out;
  std::set<uint64_t> fallback_seen;
  std::set<uint64_t> excluded;
  for (const auto& name : excluded_callers) {
    if (auto sym = p.py().FindSymbol(name); sym && sym->is_function) excluded.insert(sym->value);
  }
  for (const auto& fn : functions) {
    auto sites = target::FindImportCallSites(p.py(), p.dis(), fn);
    bool need_fallback = false;
    for (const auto& site : sites) {
      if (excluded.count(site.function)) continue;
      std::string where = p.py().NameAt(site.function).value_or("fn_" + Hex(site.function));
      if (auto s = p.Site(p.py(), p.target().info.interpreter, site.call,
                          where + "+" + Hex(site.call - site.function) + " (call " + fn + ")",
                          "call site of " + fn)) {
        out.calls.push_back(*s);
      }
      if (site.return_site) {
        if (auto s = p.Site(p.py(), p.target().info.interpreter, *site.return_site,
                            where + "+" + Hex(*site.return_site - site.function) + " (after " +
                                fn + " returns)",
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

// Begin/end probes around blocking semaphore waits: every acquire that had to wait, on
// 3.x (the non-blocking try failed first), and every blocking acquire on 2.7.
bool AddSemWaitProbes(const Planner& p, ProbePlan* plan) {
  // 3.13+ parks threads on per-thread semaphores in _PySemaphore_Wait (PyMutex, PyEvent): those
  // waits are not on any Python lock, and a lock's wait never goes through there.
  ImportSites sites = FindImportSites(p, {"sem_wait", "sem_timedwait", "sem_clockwait"},
                                      {"_PySemaphore_Wait"});
  PlannedProbe begin;
  begin.name = "sem_wait";
  begin.program = "ts_sem_wait";
  begin.purpose = "a blocking semaphore wait began (join waiters, lock waiters)";
  begin.sites = sites.calls;
  if (begin.sites.empty()) begin.unavailable = "no call to sem_wait/sem_clockwait found";
  bool ok = begin.unavailable.empty();
  plan->probes.push_back(std::move(begin));

  PlannedProbe end;
  end.name = "sem_wait_return";
  end.program = "ts_sem_wait_ret";
  end.purpose = "a blocking semaphore wait ended, and how (acquired / timed out)";
  end.sites = sites.returns;
  if (end.sites.empty() && sites.entry_fallback.empty()) {
    end.unavailable = "no return site after sem_wait/sem_clockwait found";
    ok = false;
  }
  if (!end.sites.empty() || !end.unavailable.empty()) plan->probes.push_back(std::move(end));
  if (!sites.entry_fallback.empty()) {
    PlannedProbe fallback;
    fallback.name = "sem_wait_return_fallback";
    fallback.program = "ts_sem_wait_ret";
    fallback.kind = ProbeKind::kUretprobe;
    fallback.purpose = "wait ends for calls whose return site could not be probed";
    fallback.sites = sites.entry_fallback;
    plan->probes.push_back(std::move(fallback));
  }
  return ok;
}

// A probe on every call the interpreter makes to one libc function.
PlannedProbe SemCallProbe(const Planner& p, const std::string& fn, const std::string& program,
                          const std::string& name, const std::string& purpose) {
  PlannedProbe probe;
  probe.name = name;
  probe.program = program;
  probe.purpose = purpose;
  probe.sites = FindImportSites(p, {fn}).calls;
  if (probe.sites.empty()) probe.unavailable = "no call to " + fn + " found";
  return probe;
}

// Semaphore waits (and frees) serve two purposes: joins on 3.4-3.12 (the sentinel lock) and lock
// contention on any 3.x. Planned once for both.
bool AddSemaphoreProbes(const Planner& p, LockMode locks, ProbePlan* plan) {
  const PythonVersion& v = p.version();
  bool for_joins = v.major == 3 && !v.AtLeast(3, 13);
  bool for_locks = v.major == 3 && locks != LockMode::kOff;
  if (!for_joins && !for_locks) return false;
  bool have_waits = AddSemWaitProbes(p, plan);
  plan->probes.push_back(SemCallProbe(p, "sem_destroy", "ts_sem_destroy", "sem_destroy",
                                      "a lock was freed (its address may be reused)"));
  return have_waits;
}

void AddJoinProbes(const Planner& p, bool have_waits, ProbePlan* plan) {
  const PythonVersion& v = p.version();
  if (v.major == 2) {
    PlannedProbe probe;
    probe.name = "thread_join";
    probe.program = "ts_sem_wait";
    probe.purpose = "joins";
    probe.unavailable =
        "Python 2.7's Thread.join() waits on a Condition; no C function marks a join "
        "(joined is reported as null)";
    plan->probes.push_back(std::move(probe));
    return;
  }
  if (v.AtLeast(3, 13)) {
    auto join = p.Function("PyThread_join_thread");
    for (bool ret : {false, true}) {
      PlannedProbe probe;
      probe.name = ret ? "thread_join_return" : "thread_join";
      probe.program = ret ? "ts_join_thread_ret" : "ts_join_thread";
      probe.kind = ret ? ProbeKind::kUretprobe : ProbeKind::kUprobe;
      probe.purpose = ret ? "a join completed (joined, when, by whom)"
                          : "a thread starts joining another (join waiters)";
      if (join) {
        probe.sites.push_back(*join);
      } else {
        probe.unavailable = "PyThread_join_thread not found in " + p.py().path();
      }
      plan->probes.push_back(std::move(probe));
    }
    PlannedProbe detach;
    detach.name = "thread_detach";
    detach.program = "ts_detach_thread";
    detach.purpose = "a thread handle was detached instead of joined";
    if (auto s = p.Function("PyThread_detach_thread")) {
      detach.sites.push_back(*s);
    } else {
      detach.unavailable = "PyThread_detach_thread not found in " + p.py().path();
    }
    plan->probes.push_back(std::move(detach));
    if (join) plan->model_config.joins = model::JoinVisibility::kExact;
    return;
  }

  // 3.4-3.12: join() acquires the sentinel lock the child created with _set_sentinel(). The
  // child releases it when it finishes; a join that has to wait blocks in sem_*wait on it.
  PlannedProbe sentinel;
  sentinel.name = "thread_join_sentinel";
  sentinel.program = "ts_set_sentinel_ret";
  sentinel.kind = ProbeKind::kUretprobe;
  sentinel.purpose = "the lock join() waits on (3.4-3.12)";
  if (auto s = p.Function("thread__set_sentinel")) {
    sentinel.sites.push_back(*s);
  } else if (auto m = p.ThreadModuleMethod("_set_sentinel")) {
    if (auto site = p.Site(p.py(), p.target().info.interpreter, *m, "thread__set_sentinel",
                           "PyMethodDef _thread._set_sentinel")) {
      sentinel.sites.push_back(*site);
    }
  }
  if (sentinel.sites.empty()) sentinel.unavailable = "_thread._set_sentinel not found";
  bool have_sentinel = sentinel.unavailable.empty();
  plan->probes.push_back(std::move(sentinel));

  if (have_sentinel && have_waits) plan->model_config.joins = model::JoinVisibility::kBlockingOnly;
}


// A probe on one CPython function, found by symbol or, in stripped builds, by `fallback`
// (a method table or a type's tp_new).
PlannedProbe FunctionProbe(const Planner& p, std::string name, std::string program, ProbeKind kind,
                           uint64_t cookie, std::string purpose, const std::string& symbol,
                           std::optional<uint64_t> fallback, const std::string& fallback_how) {
  PlannedProbe probe;
  probe.name = std::move(name);
  probe.program = std::move(program);
  probe.kind = kind;
  probe.cookie = cookie;
  probe.purpose = std::move(purpose);
  if (auto s = p.Function(symbol)) {
    probe.sites.push_back(*s);
  } else if (fallback) {
    if (auto s = p.Site(p.py(), p.target().info.interpreter, *fallback, symbol, fallback_how)) {
      probe.sites.push_back(*s);
    }
  }
  if (probe.sites.empty()) probe.unavailable = symbol + " not found in " + p.py().path();
  return probe;
}

void AddLockProbes(const Planner& p, LockMode mode, ProbePlan* plan) {
  if (mode == LockMode::kOff) return;
  const bool py3 = p.version().major == 3;
  auto cookie = [](uint32_t kind, uint32_t op) { return uint64_t{kind} | uint64_t{op} << 8; };

  // Who releases a lock somebody waits on: its futex(FUTEX_WAKE), seen at syscall entry and
  // filtered in the kernel to semaphores being waited on. No uprobe trap.
  PlannedProbe wake;
  wake.name = "lock_wake";
  wake.program = "ts_futex_wake";
  wake.kind = ProbeKind::kRawTracepoint;
  wake.tracepoint = "sys_enter";
  wake.purpose = "who released a lock that somebody was waiting on (the waker)";
  plan->probes.push_back(std::move(wake));

  // Creation: kind, object, and a new generation when an address is reused.
  plan->probes.push_back(FunctionProbe(
      p, "lock_new", "ts_lock_new_ret", ProbeKind::kUretprobe, TS_LOCK_LOCK,
      "a Lock was created (its object and semaphore)", "thread_PyThread_allocate_lock",
      p.ThreadModuleMethod("allocate_lock"), "PyMethodDef _thread.allocate_lock"));
  if (p.version().AtLeast(3, 13)) {  // threading.Lock is the _thread.lock type itself
    plan->probes.push_back(FunctionProbe(p, "lock_new_type", "ts_lock_new_ret",
                                         ProbeKind::kUretprobe, TS_LOCK_LOCK,
                                         "a _thread.lock was created", "lock_new",
                                         p.TypeNew(false), "tp_new of _thread.lock"));
  }
  if (py3) {
    plan->probes.push_back(FunctionProbe(p, "rlock_new", "ts_lock_new_ret", ProbeKind::kUretprobe,
                                         TS_LOCK_RLOCK, "an RLock was created", "rlock_new",
                                         p.TypeNew(true), "tp_new of _thread.RLock"));
  }
  if (mode != LockMode::kAll) return;

  // Every acquire and release, at the Python-facing methods (acquire, __enter__, release,
  // __exit__ share these C functions).
  struct Method {
    const char* name;
    const char* program;
    ProbeKind kind;
    uint32_t lock_kind;
    uint32_t op;
    const char* symbol;
    bool rlock;
    const char* method;
    const char* purpose;
  };
  std::vector<Method> methods = {
      {"lock_acquire", "ts_lock_acquire", ProbeKind::kUprobe, TS_LOCK_LOCK, TS_LOCK_OP_ACQUIRE,
       "lock_PyThread_acquire_lock", false, "acquire", "Lock.acquire began"},
      {"lock_acquire_return", "ts_lock_acquire_ret", ProbeKind::kUretprobe, TS_LOCK_LOCK,
       TS_LOCK_OP_ACQUIRE, "lock_PyThread_acquire_lock", false, "acquire",
       "Lock.acquire returned (acquired, failed, timed out)"},
      {"lock_release", "ts_lock_release", ProbeKind::kUprobe, TS_LOCK_LOCK, TS_LOCK_OP_RELEASE,
       "lock_PyThread_release_lock", false, "release", "Lock.release"},
  };
  if (py3) {
    std::vector<Method> rlock = {
        {"rlock_acquire", "ts_lock_acquire", ProbeKind::kUprobe, TS_LOCK_RLOCK,
         TS_LOCK_OP_ACQUIRE, "rlock_acquire", true, "acquire", "RLock.acquire began"},
        {"rlock_acquire_return", "ts_lock_acquire_ret", ProbeKind::kUretprobe, TS_LOCK_RLOCK,
         TS_LOCK_OP_ACQUIRE, "rlock_acquire", true, "acquire", "RLock.acquire returned"},
        {"rlock_release", "ts_lock_release", ProbeKind::kUprobe, TS_LOCK_RLOCK,
         TS_LOCK_OP_RELEASE, "rlock_release", true, "release", "RLock.release"},
        {"rlock_release_save", "ts_lock_release", ProbeKind::kUprobe, TS_LOCK_RLOCK,
         TS_LOCK_OP_RELEASE_SAVE, "rlock_release_save", true, "_release_save",
         "RLock fully released by Condition.wait"},
        {"rlock_acquire_restore", "ts_lock_acquire", ProbeKind::kUprobe, TS_LOCK_RLOCK,
         TS_LOCK_OP_RESTORE, "rlock_acquire_restore", true, "_acquire_restore",
         "RLock re-taken after Condition.wait"},
        {"rlock_acquire_restore_return", "ts_lock_acquire_ret", ProbeKind::kUretprobe,
         TS_LOCK_RLOCK, TS_LOCK_OP_RESTORE, "rlock_acquire_restore", true, "_acquire_restore",
         "RLock re-taken after Condition.wait (returned)"},
    };
    methods.insert(methods.end(), rlock.begin(), rlock.end());
  }
  for (const auto& m : methods) {
    plan->probes.push_back(FunctionProbe(
        p, m.name, m.program, m.kind, cookie(m.lock_kind, m.op), m.purpose, m.symbol,
        p.TypeMethod(m.rlock, m.method),
        std::string("PyMethodDef _thread.") + (m.rlock ? "RLock." : "lock.") + m.method));
  }
}


// ---------------------------------------------------------------------------- the GIL

// A function's entry plus its compiler clones ("take_gil.constprop.0"); .cold parts are not
// entries.
std::vector<ProbeSite> FunctionAndClones(const Planner& p, const std::string& name) {
  std::vector<ProbeSite> out;
  if (auto s = p.Function(name)) out.push_back(*s);
  for (const auto& clone : p.py().FindClones(name)) {
    if (clone.name.find(".cold") != std::string::npos) continue;
    if (auto s = p.Site(p.py(), p.target().info.interpreter, clone.value, clone.name,
                        clone.from_dynsym ? ".dynsym" : ".symtab")) {
      out.push_back(*s);
    }
  }
  return out;
}

// Direct call/jmp targets of an exported function.
std::set<uint64_t> CallTargets(const Planner& p, const std::string& function) {
  std::set<uint64_t> out;
  auto sym = p.py().FindSymbol(function);
  if (!sym || !sym->is_function) return out;
  for (const auto& c : target::CallSites(target::DecodeFunction(p.py(), p.dis(), sym->value))) {
    if (p.py().IsText(c.target) && !p.py().PltStubName(c.target)) out.insert(c.target);
  }
  return out;
}

// A static GIL function in a stripped build: the call target two exported wrappers share
// (take_gil: PyEval_AcquireLock and PyEval_AcquireThread; drop_gil: PyEval_ReleaseLock and
// PyEval_ReleaseThread). Requiring both keeps a helper one of them calls from passing for it.
std::optional<ProbeSite> SharedCallee(const Planner& p, const std::string& name, const std::string& a,
                                      const std::string& b) {
  auto ta = CallTargets(p, a);
  auto tb = CallTargets(p, b);
  std::vector<uint64_t> shared;
  for (uint64_t t : ta) {
    if (tb.count(t)) shared.push_back(t);
  }
  if (shared.size() != 1) return std::nullopt;
  return p.Site(p.py(), p.target().info.interpreter, shared[0], name,
                "call target shared by " + a + " and " + b);
}

struct FunctionRange {
  uint64_t begin = 0, end = 0;
  bool Contains(uint64_t a) const { return a >= begin && a < end; }
};

std::vector<FunctionRange> RangesOf(const Planner& p, const std::string& name) {
  std::vector<FunctionRange> out;
  std::vector<target::ElfSymbol> syms;
  if (auto s = p.py().FindSymbol(name); s && s->is_function) syms.push_back(*s);
  for (const auto& c : p.py().FindClones(name)) syms.push_back(c);  // .cold parts included
  for (const auto& s : syms) {
    if (auto ext = p.py().FunctionAround(s.value)) out.push_back({ext->first, ext->second});
  }
  return out;
}

// One GIL probe at `sites` (cookie = its enum ts_gil_op), or unavailable with `missing`.
void AddGilProbe(ProbePlan* plan, const char* name, const char* program, ProbeKind kind,
                 uint32_t op, const char* purpose, std::vector<ProbeSite> sites,
                 const std::string& missing) {
  PlannedProbe probe;
  probe.name = name;
  probe.program = program;
  probe.kind = kind;
  probe.cookie = op;
  probe.purpose = purpose;
  probe.sites = std::move(sites);
  if (probe.sites.empty()) probe.unavailable = missing;
  plan->probes.push_back(std::move(probe));
}

// 2.7: the GIL is the plain lock in `interpreter_lock`; its takes and drops are
// PyThread_acquire_lock(lock, 1) / PyThread_release_lock(lock) calls on it, filtered in BPF by
// the lock's address. The eval loop releases and re-takes it every sys.getcheckinterval() ticks:
// its call to PyThread_release_lock marks those drops as forced.
void AddGil27Probes(const Planner& p, ProbePlan* plan) {
  GilCoverage& g = plan->gil;
  auto var = p.py().FindSymbol("interpreter_lock");
  auto acquire = p.Function("PyThread_acquire_lock");
  auto release = p.Function("PyThread_release_lock");
  if (!var || !acquire || !release) {
    g.unavailable = "Python 2.7's GIL is the static `interpreter_lock`, which needs .symtab "
                    "(and PyThread_acquire_lock/PyThread_release_lock)";
    AddGilProbe(plan, "gil_take", "ts_gil_lock_acquire", ProbeKind::kUprobe, TS_GIL_TAKE_BEGIN,
                "GIL waits, holds and switches", {}, g.unavailable);
    return;
  }
  plan->gil_lock_addr = var->value + p.target().info.interpreter.load_bias;
  // PyThread_release_lock starts with `sub $8,%rsp` (single-stepped, ~10x a trap's cost); its
  // first call (sem_post(lock)) comes before anything writes %rdi, so the lock is still the first
  // argument there and the site is an emulated call.
  ProbeSite release_site = *release;
  for (const auto& insn : target::DecodeFunction(p.py(), p.dis(), release->vaddr, 64)) {
    bool writes_rdi = (insn.const_dest && *insn.const_dest == target::ArgRegister::kRdi) ||
                      (insn.clobbers && *insn.clobbers == target::ArgRegister::kRdi);
    if (writes_rdi || insn.is_jump || insn.is_ret) break;
    if (insn.is_call) {
      if (auto s = p.Site(p.py(), p.target().info.interpreter, insn.address,
                          "PyThread_release_lock+" + Hex(insn.address - release->vaddr) +
                              " (its first call, the lock still in %rdi)",
                          release->resolved_by + " + call site")) {
        release_site = *s;
      }
      break;
    }
  }
  AddGilProbe(plan, "gil_take", "ts_gil_lock_acquire", ProbeKind::kUprobe, TS_GIL_TAKE_BEGIN,
              "a blocking PyThread_acquire_lock on interpreter_lock: waiting for the GIL",
              {*acquire}, "");
  AddGilProbe(
      plan, "gil_take_return", "ts_gil_lock_acquire_ret", ProbeKind::kUretprobe, TS_GIL_TAKE_END,
      "it returned: the thread holds the GIL (every lock acquire passes here, filtered in BPF)",
      {*acquire}, "");
  AddGilProbe(plan, "gil_drop", "ts_gil_lock_release", ProbeKind::kUprobe, TS_GIL_DROP,
              "PyThread_release_lock on interpreter_lock: the holder drops the GIL", {release_site},
              "");
  std::vector<ProbeSite> forced;
  if (auto eval = p.py().FindSymbol("PyEval_EvalFrameEx"); eval && eval->is_function) {
    for (const auto& c : target::CallSites(target::DecodeFunction(p.py(), p.dis(), eval->value))) {
      auto stub = p.py().PltStubName(c.target);
      auto name = stub ? stub : p.py().NameAt(c.target);
      if (!name || *name != "PyThread_release_lock") continue;
      if (auto s = p.Site(p.py(), p.target().info.interpreter, c.address,
                          "PyEval_EvalFrameEx+" + Hex(c.address - eval->value) +
                              " (periodic switch: call PyThread_release_lock)",
                          "call site in PyEval_EvalFrameEx")) {
        forced.push_back(*s);
      }
    }
  }
  AddGilProbe(
      plan, "gil_forced", "ts_gil", ProbeKind::kUprobe, TS_GIL_FORCED,
      "the eval loop's periodic release (every sys.getcheckinterval() ticks): a forced drop",
      forced, "no call to PyThread_release_lock found in PyEval_EvalFrameEx");
  g.traced = true;
  g.take_functions = 1;
  g.drop_functions = 1;
  g.drops_complete = true;
  g.forced_known = !forced.empty();
  g.notes =
      "2.7: the GIL is interpreter_lock, a plain lock; every lock operation of the process "
      "passes the probes and is filtered in BPF by its address. Forced drops are the eval "
      "loop's periodic release every sys.getcheckinterval() ticks, asked for or not.";
}

void AddGilProbes(const Planner& p, bool enabled, ProbePlan* plan) {
  GilCoverage& g = plan->gil;
  const PythonVersion& v = p.version();
  if (!enabled) {
    g.unavailable = "turned off (--gil off)";
    return;
  }
  auto none = [&](const std::string& why) {
    g.unavailable = why;
    AddGilProbe(plan, "gil_take", "ts_gil", ProbeKind::kUprobe, TS_GIL_TAKE_BEGIN,
                "GIL waits, holds and switches", {}, why);
  };
  if (v.major == 2) {
    AddGil27Probes(p, plan);
    return;
  }
  if (p.target().info.free_threaded) {
    none(
        "free-threaded build: there is no GIL (one enabled at run time by an import is not "
        "followed yet)");
    return;
  }

  // Takes: take_gil's entry (waiting) and return (holding).
  std::vector<ProbeSite> takes = FunctionAndClones(p, "take_gil");
  if (takes.empty()) {
    if (auto s = SharedCallee(p, "take_gil", "PyEval_AcquireLock", "PyEval_AcquireThread")) {
      takes.push_back(*s);
    }
  }
  std::vector<ProbeSite> drops = FunctionAndClones(p, "drop_gil");
  if (drops.empty()) {
    if (auto s = SharedCallee(p, "drop_gil", "PyEval_ReleaseLock", "PyEval_ReleaseThread")) {
      drops.push_back(*s);
    }
  }
  if (takes.empty() || drops.empty()) {
    none(std::string(takes.empty() ? "take_gil" : "drop_gil") +
         " is static and could not be found (no .symtab, and the exported PyEval_* wrappers do not "
         "share one callee)");
    return;
  }
  g.traced = true;
  g.take_functions = takes.size();
  g.drop_functions = drops.size();
  std::vector<FunctionRange> take_ranges, drop_ranges;
  for (const auto& s : takes) {
    if (auto ext = p.py().FunctionAround(s.vaddr)) take_ranges.push_back({ext->first, ext->second});
  }
  std::set<uint64_t> drop_entries;
  for (const auto& s : drops) {
    drop_entries.insert(s.vaddr);
    if (auto ext = p.py().FunctionAround(s.vaddr)) drop_ranges.push_back({ext->first, ext->second});
  }
  auto in_any = [](const std::vector<FunctionRange>& rs, uint64_t a) {
    for (const auto& r : rs) {
      if (r.Contains(a)) return true;
    }
    return false;
  };

  // Where the eval loop drops the GIL because a waiter asked, and what it calls to do it.
  std::string forced_fn = v.AtLeast(3, 12) ? "_Py_HandlePending" : "_PyEval_EvalFrameDefault";
  std::set<uint64_t> forced_callees = drop_entries;
  if (v.AtLeast(3, 13)) {  // _Py_HandlePending -> _PyThreadState_Detach -> ... -> drop_gil
    forced_callees.clear();
    if (auto s = p.py().FindSymbol("_PyThreadState_Detach"); s && s->is_function) {
      forced_callees.insert(s->value);
    }
  }
  std::vector<FunctionRange> forced_ranges = RangesOf(p, forced_fn);

  // Inlined drop_gil copies (LTO builds inline it into PyEval_SaveThread and elsewhere): calls
  // that lock the GIL's mutex by its address. Up to 3.11 the GIL is a static (in _PyRuntime from
  // 3.7), so copies pass a constant. We know the constant either from take_gil, or from the
  // copies themselves: a forced drop also locks switch_mutex, 88 bytes further
  // (struct _gil_runtime_state: mutex@80, switch_mutex@168, the same in 3.6-3.11).
  constexpr uint64_t kSwitchMutexAfterMutex = 88;
  std::vector<ProbeSite> inlined, inlined_forced;
  std::optional<uint64_t> gil_mutex;
  std::string mutex_how;
  std::map<uint64_t, std::vector<target::CallSite>> calls_by_function;
  auto calls_of = [&](uint64_t function) -> const std::vector<target::CallSite>& {
    auto it = calls_by_function.find(function);
    if (it == calls_by_function.end()) {
      it = calls_by_function
               .emplace(function,
                        target::CallSites(target::DecodeFunction(p.py(), p.dis(), function)))
               .first;
    }
    return it->second;
  };
  struct MutexCall {
    target::ImportCallSite site;
    std::optional<uint64_t> mutex;
  };
  std::vector<MutexCall> mutex_calls;
  std::set<uint64_t> constants;
  for (const auto& site : target::FindImportCallSites(p.py(), p.dis(), "pthread_mutex_lock")) {
    MutexCall mc{site, std::nullopt};
    for (const auto& c : calls_of(site.function)) {
      if (c.address == site.call) mc.mutex = c.args[0];
    }
    if (mc.mutex) {
      constants.insert(*mc.mutex);
      if (in_any(take_ranges, site.call) && !gil_mutex) {
        gil_mutex = mc.mutex;
        mutex_how = "the mutex take_gil locks";
      }
    }
    mutex_calls.push_back(mc);
  }
  if (!gil_mutex && !v.AtLeast(3, 12)) {
    for (uint64_t c : constants) {
      if (constants.count(c + kSwitchMutexAfterMutex)) {
        gil_mutex = c;
        mutex_how = "a mutex locked with its switch_mutex 88 bytes further";
        break;
      }
    }
  }
  if (gil_mutex) {
    for (const auto& mc : mutex_calls) {
      const auto& site = mc.site;
      if (mc.mutex != gil_mutex || in_any(take_ranges, site.call) ||
          in_any(drop_ranges, site.call)) {
        continue;
      }
      std::string where = p.py().NameAt(site.function).value_or("fn_" + Hex(site.function));
      auto s = p.Site(p.py(), p.target().info.interpreter, site.call,
                      where + "+" + Hex(site.call - site.function) +
                          " (inlined drop_gil: locks the GIL mutex " + Hex(*gil_mutex) + ")",
                      "pthread_mutex_lock call on " + mutex_how);
      if (!s) continue;
      (in_any(forced_ranges, site.call) ? inlined_forced : inlined).push_back(*s);
    }
  }
  // 3.13 inlines drop_gil into the exported PyEval_ReleaseLock (a legacy API, rarely called):
  // when that function calls no drop function, its entry is the drop.
  bool release_lock_inlined = false;
  if (v.AtLeast(3, 12)) {
    auto targets = CallTargets(p, "PyEval_ReleaseLock");
    auto release = p.py().FindSymbol("_PyEval_ReleaseLock");
    bool calls_drop = release && targets.count(release->value);
    for (uint64_t d : drop_entries) calls_drop |= targets.count(d) > 0;
    bool locks_mutex = false;
    if (auto sym = p.py().FindSymbol("PyEval_ReleaseLock"); sym && sym->is_function) {
      for (const auto& c : calls_of(sym->value)) {
        auto stub = p.py().PltStubName(c.target);
        locks_mutex |= stub && *stub == "pthread_mutex_lock";
      }
    }
    if (!calls_drop && locks_mutex) {
      if (auto s = p.Function("PyEval_ReleaseLock")) {
        s->location += " (drop_gil inlined: calls no drop function)";
        inlined.push_back(*s);
        release_lock_inlined = true;
      }
    }
  }
  g.inlined_drops = inlined.size() + inlined_forced.size();

  // Forced-switch marks: the switch code's calls into the drop path.
  std::vector<ProbeSite> forced;
  for (const auto& r : forced_ranges) {
    for (const auto& c : calls_of(r.begin)) {
      if (!forced_callees.count(c.target)) continue;
      if (auto s = p.Site(p.py(), p.target().info.interpreter, c.address,
                          p.py().NameAt(r.begin).value_or(forced_fn) + "+" +
                              Hex(c.address - r.begin) + " (forced switch: call " +
                              p.py().NameAt(c.target).value_or(Hex(c.target)) + ")",
                          "call site in " + forced_fn)) {
        forced.push_back(*s);
      }
    }
  }
  g.forced_known = !forced.empty() || !inlined_forced.empty();

  AddGilProbe(plan, "gil_take", "ts_gil", ProbeKind::kUprobe, TS_GIL_TAKE_BEGIN,
              "a thread starts waiting for the GIL (take_gil entered)", takes, "");
  AddGilProbe(plan, "gil_take_return", "ts_gil_ret", ProbeKind::kUretprobe, TS_GIL_TAKE_END,
              "a thread got the GIL (take_gil returned)", takes, "");
  AddGilProbe(plan, "gil_drop", "ts_gil", ProbeKind::kUprobe, TS_GIL_DROP,
              "the holder releases the GIL (drop_gil)", drops, "");
  if (!inlined.empty()) {
    AddGilProbe(plan, "gil_drop_inlined", "ts_gil", ProbeKind::kUprobe, TS_GIL_DROP,
                "the holder releases the GIL (drop_gil inlined into its caller)", inlined, "");
  }
  if (!inlined_forced.empty()) {
    AddGilProbe(plan, "gil_drop_inlined_forced", "ts_gil", ProbeKind::kUprobe, TS_GIL_DROP_FORCED,
                "forced switch: drop_gil inlined into the eval loop's switch code", inlined_forced,
                "");
  }
  AddGilProbe(plan, "gil_forced", "ts_gil", ProbeKind::kUprobe, TS_GIL_FORCED,
              "the eval loop drops the GIL because a waiter asked (forced switch)", forced,
              "no call from " + forced_fn +
                  " into the drop path found: forced and voluntary drops "
                  "are not told apart");

  if (!gil_mutex && !v.AtLeast(3, 12)) {
    g.notes = "no call locks the GIL mutex by its address: no inlined drop_gil copy was found "
              "(none is expected outside LTO builds)";
  } else if (v.AtLeast(3, 12)) {
    g.notes = std::string("3.12+: the GIL lives behind interp->ceval.gil, so inlined drop_gil "
                          "copies cannot be found by its mutex address") +
              (release_lock_inlined ? "; the one in PyEval_ReleaseLock is probed at its entry" : "");
  }
  g.drops_complete = gil_mutex.has_value();
}

}  // namespace

std::string ProbeSite::Describe() const {
  std::string s = location + " @ " + Basename(binary) + "+" + Hex(file_offset) + " via " +
                  resolved_by;
  if (!instruction.empty()) {
    s += ", first instruction '" + instruction + "' " + target::UprobeSiteKindName(site_kind);
  }
  return s;
}

ProbePlan PlanProbes(const target::InspectedProcess& t, const target::Disassembler& dis,
                     const PlanOptions& options) {
  Planner p(t, dis);
  ProbePlan plan;
  plan.locks = options.locks;
  plan.trace_all_sems = options.locks != LockMode::kOff && t.info.version.major == 3;
  // Stacks say where locks are waited for, created and taken: only useful with lock tracing.
  if (!plan.trace_all_sems) {
    plan.stacks_unavailable = "lock tracing is off";
  } else if (options.stack_frames == 0) {
    plan.stacks_unavailable = "turned off (--lock-stacks 0)";
  } else if (auto support = target::ResolvePyStackSupport(t); support.ok()) {
    plan.stacks = std::move(*support);
    plan.stack_frames = std::min<uint8_t>(options.stack_frames, TS_PY_MAX_FRAMES);
    if (options.locks == LockMode::kAll) {
      plan.stack_frames_acquire = std::min<uint8_t>(options.acquire_stack_frames, TS_PY_MAX_FRAMES);
    }
  } else {
    plan.stacks_unavailable = support.status().message();
  }
  for (auto [name, out] : {std::make_pair("_Py_TrueStruct", &plan.py_true),
                           std::make_pair("_Py_FalseStruct", &plan.py_false)}) {
    if (auto sym = t.interpreter_elf->FindSymbol(name)) {
      *out = sym->value + t.info.interpreter.load_bias;
    }
  }

  // Starting a thread: entry (STARTING) and return (RUNNING or failed).
  struct StartApi {
    const char* function;
    uint32_t cookie;
    const char* suffix;
  };
  std::vector<StartApi> apis = {{"PyThread_start_new_thread", TS_START_API_NEW_THREAD, ""}};
  if (p.version().AtLeast(3, 13)) {
    apis.push_back({"PyThread_start_joinable_thread", TS_START_API_JOINABLE_THREAD, "_joinable"});
  }
  for (const auto& api : apis) {
    auto site = p.Function(api.function);
    for (bool ret : {false, true}) {
      PlannedProbe probe;
      probe.name = std::string("thread_start") + api.suffix + (ret ? "_return" : "");
      probe.program = ret ? "ts_thread_start_ret" : "ts_thread_start";
      probe.kind = ret ? ProbeKind::kUretprobe : ProbeKind::kUprobe;
      probe.cookie = api.cookie;
      probe.required = api.cookie == TS_START_API_NEW_THREAD || p.version().AtLeast(3, 13);
      probe.purpose = ret ? std::string("start result: RUNNING, or STARTING -> DONE on failure")
                          : std::string("a thread is being started (STARTING), by whom");
      if (site) {
        probe.sites.push_back(*site);
      } else {
        probe.unavailable = std::string(api.function) + " is not exported by " + p.py().path();
      }
      plan.probes.push_back(std::move(probe));
    }
  }

  // Kernel side: every task the target creates, renames or loses.
  struct Tracepoint {
    const char* name;
    const char* program;
    const char* tracepoint;
    const char* purpose;
    bool required;
  };
  for (const auto& tp : {
           Tracepoint{"thread_clone", "ts_sched_fork", "sched_process_fork",
                      "native tid of each new thread and its parent", true},
           Tracepoint{"thread_exit", "ts_sched_exit", "sched_process_exit",
                      "a thread exited (DONE)", true},
           Tracepoint{"thread_rename", "ts_task_rename", "task_rename", "OS thread names",
                      false},
       }) {
    PlannedProbe probe;
    probe.name = tp.name;
    probe.program = tp.program;
    probe.kind = ProbeKind::kRawTracepoint;
    probe.tracepoint = tp.tracepoint;
    probe.purpose = tp.purpose;
    probe.required = tp.required;
    plan.probes.push_back(std::move(probe));
  }

  // The child's side.
  auto boot = FindBootstrap(p);
  {
    PlannedProbe probe;
    probe.name = "thread_bootstrap";
    probe.program = "ts_thread_bootstrap";
    probe.purpose = "the new thread runs its bootstrap (links parent and child by bootstate)";
    if (boot) {
      probe.sites.push_back(boot->site);
    } else {
      probe.unavailable = std::string(p.version().AtLeast(3, 10) ? "thread_run" : "t_bootstrap") +
                          " is static and could not be found (no .symtab, no _thread method table)";
    }
    plan.probes.push_back(std::move(probe));
  }
  AddBodyDone(p, boot, &plan);
  bool have_waits = AddSemaphoreProbes(p, options.locks, &plan);
  AddJoinProbes(p, have_waits, &plan);
  if (p.version().major == 3) {
    AddLockProbes(p, options.locks, &plan);
  } else if (options.locks != LockMode::kOff) {
    PlannedProbe locks;
    locks.name = "lock_wait";
    locks.program = "ts_sem_wait";
    locks.purpose = "lock contention";
    locks.unavailable =
        "Python 2.7 blocks in sem_wait on every acquire, contended or not, and its GIL is such a "
        "lock: lock tracing needs CPython 3";
    plan.probes.push_back(std::move(locks));
  }
  AddGilProbes(p, options.gil, &plan);
  return plan;
}

}  // namespace threadscope::loader
