// Thread lifecycle probes: starts, the kernel's view of tasks, the child's bootstrap, the end of
// its callable, joins and detaches.
#include "daemon/loader/planner.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

namespace {

// The exported functions that start a thread: entry (STARTING) and return (RUNNING or failed).
struct StartApi {
  Versions versions;
  ProbeId entry, ret;
  const char* function;
  uint32_t cookie;
};
constexpr StartApi kStartApis[] = {
    {{2, 0}, ProbeId::kThreadStart, ProbeId::kThreadStartReturn, "PyThread_start_new_thread",
     TS_START_API_NEW_THREAD},
    // 3.13's threading.Thread.start goes through _thread.start_joinable_thread.
    {{3, 13}, ProbeId::kThreadStartJoinable, ProbeId::kThreadStartJoinableReturn,
     "PyThread_start_joinable_thread", TS_START_API_JOINABLE_THREAD},
};

// Where the child begins, and which start function `_thread` passes it to (what a stripped
// build is searched through).
struct BootstrapRule {
  Versions versions;
  const char* symbol;
  const char* start_function;
};
constexpr BootstrapRule kBootstraps[] = {
    {{2, 0, 3, 9}, "t_bootstrap", "PyThread_start_new_thread"},
    {{3, 10, 3, 12}, "thread_run", "PyThread_start_new_thread"},
    {{3, 13}, "thread_run", "PyThread_start_joinable_thread"},
};

// Where the bootstrap goes once the callable is over, in order of preference: its call to
// PyThreadState_Clear (every version: an emulated call instruction, hit also by threads that
// were already running at the attach), then its call to PyThread_exit_thread (3.6-3.8 end in
// pthread_exit and never return). A uretprobe on the bootstrap is the last resort: it only
// sees threads that entered the bootstrap after the attach.
struct BodyDoneCall {
  const char* callee;
  uint32_t cookie;
};
constexpr BodyDoneCall kBodyDoneCalls[] = {
    {"PyThreadState_Clear", TS_BODY_CLEAR},
    {"PyThread_exit_thread", TS_BODY_EXIT_THREAD},
};

struct Bootstrap {
  ProbeSite site;
  uint64_t entry = 0;
  std::string name;  // t_bootstrap / thread_run
};

const BootstrapRule* BootstrapFor(const target::PythonVersion& v) {
  for (const auto& r : kBootstraps) {
    if (r.versions.Contains(v)) return &r;
  }
  return nullptr;
}

std::optional<Bootstrap> FindBootstrap(const PlanContext& p) {
  const BootstrapRule* rule = BootstrapFor(p.version());
  if (!rule) return std::nullopt;
  std::string name = rule->symbol;
  if (auto sym = p.py().FindSymbol(name); sym && sym->is_function) {
    if (auto s = p.Function(name)) return Bootstrap{*s, sym->value, name};
  }
  // Stripped: _thread.start_new_thread passes the bootstrap as the first argument of the
  // CPython start function (3.13+: through do_start_new_thread).
  auto method = p.ThreadModuleMethod("start_new_thread");
  if (!method) return std::nullopt;
  for (const auto& call :
       target::FindCallsByName(p.py(), p.dis(), *method, rule->start_function, 2)) {
    if (!call.site.args[0] || !p.py().IsText(*call.site.args[0])) continue;
    auto site = p.EntrySite(*call.site.args[0], name,
                            std::string("PyMethodDef _thread.start_new_thread -> 1st argument of ") +
                                rule->start_function);
    if (site) return Bootstrap{*site, *call.site.args[0], name};
  }
  return std::nullopt;
}

void AddBodyDone(const PlanContext& p, const std::optional<Bootstrap>& boot, ProbePlan* plan) {
  PlannedProbe probe(ProbeId::kThreadBodyDone);
  if (!boot) {
    probe.unavailable = "the bootstrap function was not found (see thread_bootstrap)";
    plan->probes.push_back(std::move(probe));
    return;
  }
  auto calls = p.code().CallsOf(boot->entry);
  for (const auto& want : kBodyDoneCalls) {
    for (const auto& site : calls) {
      auto name = p.py().NameAt(site.target);
      if (!name || *name != want.callee) continue;
      auto s = p.PySite(site.address,
                        p.Where(boot->entry, boot->name, site.address) + " (call " +
                            want.callee + ")",
                        boot->site.resolved_by + " + call site");
      if (s) probe.sites.push_back(*s);
    }
    if (!probe.sites.empty()) {
      probe.kind = ProbeKind::kUprobe;
      probe.cookie = want.cookie;
      break;
    }
  }
  if (probe.sites.empty()) {
    probe.kind = ProbeKind::kUretprobe;
    probe.cookie = TS_BODY_RETURNED;
    probe.sites.push_back(boot->site);
  }
  plan->probes.push_back(std::move(probe));
}

}  // namespace

void PlanThreadProbes(const PlanContext& p, ProbePlan* plan) {
  for (const auto& api : kStartApis) {
    if (!api.versions.Contains(p.version())) continue;
    auto site = p.Function(api.function);
    for (ProbeId id : {api.entry, api.ret}) {
      PlannedProbe probe(id);
      probe.cookie = api.cookie;
      if (site) {
        probe.sites.push_back(*site);
      } else {
        probe.unavailable = std::string(api.function) + " is not exported by " + p.py().path();
      }
      plan->probes.push_back(std::move(probe));
    }
  }

  // Kernel side: every task the target creates, renames or loses.
  for (ProbeId id : {ProbeId::kThreadClone, ProbeId::kThreadExit, ProbeId::kThreadRename}) {
    plan->probes.emplace_back(id);
  }

  // The child's side.
  auto boot = FindBootstrap(p);
  PlannedProbe probe(ProbeId::kThreadBootstrap);
  if (boot) {
    probe.sites.push_back(boot->site);
  } else {
    const BootstrapRule* rule = BootstrapFor(p.version());
    probe.unavailable = std::string(rule ? rule->symbol : "the bootstrap") +
                        " is static and could not be found (no .symtab, no _thread method table)";
  }
  plan->probes.push_back(std::move(probe));
  AddBodyDone(p, boot, plan);
}

void PlanJoinProbes(const PlanContext& p, ProbePlan* plan) {
  const target::PythonVersion& v = p.version();
  if (v.major == 2) {
    PlannedProbe probe(ProbeId::kThreadJoin);
    probe.purpose = "joins";
    probe.unavailable =
        "Python 2.7's Thread.join() waits on a Condition; no C function marks a join "
        "(joined is reported as null)";
    plan->probes.push_back(std::move(probe));
    return;
  }
  if (v.AtLeast(3, 13)) {
    // ThreadHandle_join -> join_thread -> PyThread_join_thread(handle): every join, exact.
    auto join = p.Function("PyThread_join_thread");
    for (ProbeId id : {ProbeId::kThreadJoin, ProbeId::kThreadJoinReturn}) {
      PlannedProbe probe(id);
      if (join) {
        probe.sites.push_back(*join);
      } else {
        probe.unavailable = "PyThread_join_thread not found in " + p.py().path();
      }
      plan->probes.push_back(std::move(probe));
    }
    PlannedProbe detach(ProbeId::kThreadDetach);
    if (auto s = p.Function("PyThread_detach_thread")) {
      detach.sites.push_back(*s);
    } else {
      detach.unavailable = "PyThread_detach_thread not found in " + p.py().path();
    }
    plan->probes.push_back(std::move(detach));
    return;
  }

  // 3.4-3.12: join() acquires the sentinel lock the child created with _set_sentinel(). The
  // child releases it when it finishes; a join that has to wait blocks in sem_*wait on it (the
  // semaphore probes, which feed joins on these versions).
  PlannedProbe sentinel(ProbeId::kThreadJoinSentinel);
  if (auto s = p.Function("thread__set_sentinel")) {
    sentinel.sites.push_back(*s);
  } else if (auto m = p.ThreadModuleMethod("_set_sentinel")) {
    if (auto site = p.EntrySite(*m, "thread__set_sentinel", "PyMethodDef _thread._set_sentinel")) {
      sentinel.sites.push_back(*site);
    }
  }
  if (sentinel.sites.empty()) sentinel.unavailable = "_thread._set_sentinel not found";
  plan->probes.push_back(std::move(sentinel));
}

}  // namespace threadscope::loader
