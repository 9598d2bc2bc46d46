#include "daemon/loader/probe_plan.h"

#include <cstdio>
#include <optional>
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

ImportSites FindImportSites(const Planner& p, const std::vector<std::string>& functions) {
  ImportSites out;
  std::set<uint64_t> fallback_seen;
  for (const auto& fn : functions) {
    auto sites = target::FindImportCallSites(p.py(), p.dis(), fn);
    bool need_fallback = false;
    for (const auto& site : sites) {
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
  ImportSites sites = FindImportSites(p, {"sem_wait", "sem_timedwait", "sem_clockwait"});
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

void AddJoinProbes(const Planner& p, ProbePlan* plan) {
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

  bool have_waits = AddSemWaitProbes(p, plan);
  PlannedProbe destroy = SemCallProbe(p, "sem_destroy", "ts_sem_destroy", "sem_destroy",
                                      "a lock was freed (its address may be reused)");
  plan->probes.push_back(std::move(destroy));
  if (have_sentinel && have_waits) plan->model_config.joins = model::JoinVisibility::kBlockingOnly;
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

ProbePlan PlanProbes(const target::InspectedProcess& t, const target::Disassembler& dis) {
  Planner p(t, dis);
  ProbePlan plan;

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
  AddJoinProbes(p, &plan);
  return plan;
}

}  // namespace threadscope::loader
