// GIL probes: take_gil's entry and return, every drop_gil copy's release point, and the switch
// code's forced drops, at the sites gil_sites.cc finds (with or without .symtab); 2.7's GIL, a
// plain lock, from its own calls.
#include <string>
#include <vector>

#include "daemon/loader/gil_sites.h"
#include "daemon/loader/planner.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

namespace {

std::string Join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& s : parts) out += (out.empty() ? "" : sep) + s;
  return out;
}

// One GIL probe at `sites`, or unavailable with `missing`.
PlannedProbe& AddGilProbe(ProbePlan* plan, ProbeId id, uint32_t op, std::vector<ProbeSite> sites,
                          const std::string& missing, BpfProgram program = BpfProgram::kGil) {
  PlannedProbe probe(id);
  probe.program = program;
  probe.cookie = op;
  probe.sites = std::move(sites);
  if (probe.sites.empty()) probe.unavailable = missing;
  plan->probes.push_back(std::move(probe));
  return plan->probes.back();
}

// 2.7: the GIL is the plain lock in `interpreter_lock`; its takes and drops are
// PyThread_acquire_lock(lock, 1) / PyThread_release_lock(lock) calls on it, filtered in BPF by
// the lock's address. The eval loop releases and re-takes it every sys.getcheckinterval() ticks:
// its call to PyThread_release_lock marks those drops as forced.
void PlanGil27(const PlanContext& p, ProbePlan* plan) {
  GilCoverage& g = plan->gil;
  auto var = p.py().FindSymbol("interpreter_lock");
  auto acquire = p.Function("PyThread_acquire_lock");
  auto release = p.Function("PyThread_release_lock");
  if (!var || !acquire || !release) {
    g.unavailable = "Python 2.7's GIL is the static `interpreter_lock`, which needs .symtab "
                    "(and PyThread_acquire_lock/PyThread_release_lock)";
    AddGilProbe(plan, ProbeId::kGilTake, TS_GIL_TAKE_BEGIN, {}, g.unavailable,
                BpfProgram::kGilLockAcquire);
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
      if (auto s = p.PySite(insn.address,
                            "PyThread_release_lock+" + Hex(insn.address - release->vaddr) +
                                " (its first call, the lock still in %rdi)",
                            release->resolved_by + " + call site")) {
        release_site = *s;
      }
      break;
    }
  }
  auto add = [&](ProbeId id, BpfProgram program, uint32_t op, std::vector<ProbeSite> sites,
                 const char* purpose, const std::string& missing) {
    PlannedProbe probe(id);
    probe.program = program;
    probe.cookie = op;
    probe.purpose = purpose;
    probe.sites = std::move(sites);
    if (probe.sites.empty()) probe.unavailable = missing;
    plan->probes.push_back(std::move(probe));
  };
  add(ProbeId::kGilTake, BpfProgram::kGilLockAcquire, TS_GIL_TAKE_BEGIN, {*acquire},
      "a blocking PyThread_acquire_lock on interpreter_lock: waiting for the GIL", "");
  add(ProbeId::kGilTakeReturn, BpfProgram::kGilLockAcquireRet, TS_GIL_TAKE_END, {*acquire},
      "it returned: the thread holds the GIL (every lock acquire passes here, filtered in BPF)",
      "");
  add(ProbeId::kGilDrop, BpfProgram::kGilLockRelease, TS_GIL_DROP, {release_site},
      "PyThread_release_lock on interpreter_lock: the holder drops the GIL", "");
  std::vector<ProbeSite> forced;
  if (auto eval = FunctionEntry(p, "PyEval_EvalFrameEx")) {
    for (const auto& c : p.code().CallsOf(*eval)) {
      auto stub = p.py().PltStubName(c.target);
      auto name = stub ? stub : p.py().NameAt(c.target);
      if (!name || *name != "PyThread_release_lock") continue;
      if (auto s = p.PySite(c.address,
                            p.Where(*eval, "PyEval_EvalFrameEx", c.address) +
                                " (periodic switch: call PyThread_release_lock)",
                            "call site in PyEval_EvalFrameEx")) {
        forced.push_back(*s);
      }
    }
  }
  add(ProbeId::kGilForced, BpfProgram::kGil, TS_GIL_FORCED, forced,
      "the eval loop's periodic release (every sys.getcheckinterval() ticks): a forced drop",
      "no call to PyThread_release_lock found in PyEval_EvalFrameEx");
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

// --gil waits: take_gil's condition wait and the instruction after it. False (nothing planned)
// when the slow path cannot be found: the caller plans every take and drop instead.
bool PlanGilWaits(const PlanContext& p, const GilSites& f, ProbePlan* plan,
                  std::string* why_not) {
  if (p.version().Is(3, 6)) {
    // 3.6 keeps the GIL in separate statics (Python/ceval_gil.h): `locked` is not next to the
    // `cond` the wait is passed.
    auto var = p.py().FindSymbol("gil_locked");
    if (!var) {
      *why_not = "3.6 keeps gil_locked in a static, which needs .symtab";
      return false;
    }
    plan->gil_locked_addr = var->value + p.target().info.interpreter.load_bias;
  }
  std::vector<ProbeSite> waits, afters;
  size_t shared = 0;
  for (const GilWait& w : FindGilWaits(p, f)) {
    std::string name = p.py().NameAt(w.owner).value_or("take_gil");
    auto call = p.PySite(w.call, p.Where(w.owner, name, w.call) + " (call pthread_cond_timedwait)",
                         f.take_how + " + its condition wait");
    // The first emulated instruction of the straight line after the call, else the return
    // address itself: a single step there would lengthen every waiter's hand-off.
    std::optional<ProbeSite> after;
    for (uint64_t a : w.after_candidates) {
      auto s = p.PySite(a, p.Where(w.owner, name, a) + " (the condition wait returned)",
                        f.take_how + " + the straight line after its condition wait");
      if (!after) after = s;
      if (s && s->site_kind == target::UprobeSiteKind::kEmulated) {
        after = s;
        break;
      }
    }
    if (!call || !after) continue;
    waits.push_back(*call);
    afters.push_back(*after);
    shared += w.after_is_branch_target;
  }
  if (waits.empty()) {
    plan->gil_locked_addr = 0;
    *why_not = "no call to pthread_cond_timedwait in take_gil could be probed";
    return false;
  }
  AddGilProbe(plan, ProbeId::kGilWait, TS_GIL_TAKE_BEGIN, waits, "", BpfProgram::kGilWait);
  AddGilProbe(plan, ProbeId::kGilWaitReturn, TS_GIL_WAITED, afters, "",
              BpfProgram::kGilWaitRet);
  GilCoverage& g = plan->gil;
  g.traced = true;
  g.mode = GilMode::kWaits;
  g.take_functions = f.takes.size();
  g.drops_complete = false;
  g.forced_known = false;
  std::vector<std::string> notes;
  notes.push_back(
      "--gil waits: only takes that wait are traced (take_gil's condition wait: " +
      std::to_string(waits.size()) + " site" + (waits.size() == 1 ? "" : "s") + ", " +
      f.take_how + "); a wait is timed from its first condition wait to the return that finds "
      "the GIL free; holds, drops, uncontended takes and forced switches are not traced "
      "(--gil full)");
  if (shared) {
    notes.push_back(std::to_string(shared) + " wait return site(s) are also branch targets: "
                    "uncontended takes may pass them (exact, not free)");
  }
  notes.insert(notes.end(), f.notes.begin(), f.notes.end());
  g.notes = Join(notes, "; ");
  return true;
}

// Free-threaded builds: the GIL turning on and off at run time (3.13t+ Python/ceval_gil.c), in
// either GIL mode: a wait or a take is only ever seen once it is on.
void PlanGilSwitches(const PlanContext& p, ProbePlan* plan) {
  // The GIL turning on and off at run time (3.13t+ Python/ceval_gil.c): static functions,
  // found by symbol only (no free-threaded build ships stripped yet).
  struct Switch {
    ProbeId id;
    uint32_t op;
    const char* fn;
    BpfProgram program;
  };
  for (const Switch& sw :
       {Switch{ProbeId::kGilEnableTransient, TS_GIL_ENABLE_TRANSIENT,
               "_PyEval_EnableGILTransient", BpfProgram::kGil},
        Switch{ProbeId::kGilEnablePermanent, TS_GIL_ENABLE_PERMANENT,
               "_PyEval_EnableGILPermanent", BpfProgram::kGilSwitchRet},
        Switch{ProbeId::kGilDisable, TS_GIL_DISABLE, "_PyEval_DisableGIL", BpfProgram::kGil}}) {
    std::vector<ProbeSite> sites;
    if (auto e = FunctionEntry(p, sw.fn)) {
      if (auto s = p.EntrySite(*e, sw.fn, p.py().has_symtab() ? ".symtab" : ".dynsym")) {
        sites.push_back(*s);
      }
    }
    PlannedProbe& probe =
        AddGilProbe(plan, sw.id, sw.op, sites,
                    std::string(sw.fn) + " is static and needs .symtab: the GIL's being "
                                         "enabled is then seen at its first take, with no "
                                         "reason",
                    sw.program);
    if (sites.empty()) probe.feeds = 0;  // not a gap in the takes themselves
  }
}

}  // namespace

void PlanGilProbes(const PlanContext& p, bool enabled, GilMode mode, ProbePlan* plan) {
  GilCoverage& g = plan->gil;
  if (!enabled) {
    g.unavailable = "turned off (--gil off)";
    return;
  }
  auto none = [&](const std::string& why) {
    g.unavailable = why;
    AddGilProbe(plan, ProbeId::kGilTake, TS_GIL_TAKE_BEGIN, {}, why);
  };
  if (p.version().major == 2) {
    // 2.7's GIL is a plain lock (PyThread_acquire_lock(interpreter_lock, 1)): no take_gil, no
    // separate slow path to probe. It keeps its every-take-and-drop tracing in both modes.
    PlanGil27(p, plan);
    if (mode == GilMode::kWaits) {
      plan->gil.notes += " --gil waits does not apply (no take_gil slow path): every take and "
                         "drop traced.";
    }
    return;
  }
  const bool free_threaded = p.target().info.free_threaded;
  if (free_threaded && !p.version().AtLeast(3, 13)) {
    none("free-threaded build before 3.13: not supported");
    return;
  }

  std::string waits_fallback;
  if (mode == GilMode::kWaits) {
    GilSites takes = FindGilTakes(p);
    if (!takes.takes.empty() && PlanGilWaits(p, takes, plan, &waits_fallback)) {
      if (free_threaded) {
        // take_gil returns before its condition wait while the GIL is off: nothing runs then.
        PlanGilSwitches(p, plan);
        g.notes = "free-threaded build: the GIL is off unless enabled at run time (PYTHON_GIL=1, "
                  "-X gil=1, an import of a module not marked free-threading safe); waits are "
                  "seen only while it is on; " + g.notes;
      }
      return;
    }
  }
  GilSites f = FindGilSites(p);
  if (f.takes.empty()) {
    none("take_gil is static and could not be found: no caller of pthread_cond_timedwait, and "
         "PyEval_AcquireLock and PyEval_AcquireThread share no callee");
    return;
  }
  if (f.releases.empty()) {
    none("no drop_gil found: no call to pthread_cond_signal outside take_gil");
    return;
  }

  std::vector<ProbeSite> takes, take_begins, drops, inlined, inlined_forced, forced;
  for (uint64_t t : f.takes) {
    std::string name = p.py().NameAt(t).value_or("take_gil");
    if (auto s = p.EntrySite(t, name, f.take_how)) takes.push_back(*s);
    if (!free_threaded) continue;
    // Free-threaded (3.13t+): take_gil returns at once while gil->enabled is 0, which is on
    // every thread attach (each blocking call's end). Its first lock of gil->mutex comes right
    // after that test, so a take begins there: nothing runs at the entry while the GIL is off
    // but the return probe's trap, and that return reports only takes that began (the cookie's
    // TS_GIL_GATED).
    std::optional<uint64_t> first;
    for (const auto& c : p.code().CallsOf(t)) {
      auto stub = p.py().PltStubName(c.target);
      if (!c.is_jump && stub && *stub == "pthread_mutex_lock" && (!first || c.address < *first)) {
        first = c.address;
      }
    }
    if (!first) continue;
    if (auto s = p.PySite(*first,
                          p.Where(t, name, *first) +
                              " (past the test of gil->enabled: call pthread_mutex_lock)",
                          f.take_how + " + its first call to pthread_mutex_lock")) {
      take_begins.push_back(*s);
    }
  }
  if (free_threaded && take_begins.empty()) {
    none("free-threaded build: take_gil's lock of gil->mutex (past its test of gil->enabled) "
         "was not found");
    return;
  }
  size_t out_of_line_sites = 0;
  std::set<uint64_t> inlined_in;
  for (const auto& r : f.releases) {
    std::string name = p.py().NameAt(r.owner).value_or(
        r.out_of_line ? (f.final_release.count(r.owner) ? "drop_gil[final release]" : "drop_gil")
                      : p.FunctionName(r.owner));
    std::string what = r.out_of_line ? "release: call pthread_cond_signal"
                                     : "inlined drop_gil: call pthread_cond_signal";
    auto s = p.PySite(r.call, p.Where(r.owner, name, r.call) + " (" + what + ")",
                      r.out_of_line ? "pthread_cond_signal outside take_gil, in the drop_gil the "
                                      "GIL's API reaches"
                                    : "pthread_cond_signal outside take_gil (a drop_gil copy)");
    if (!s) {
      f.complete = false;
      continue;
    }
    if (r.out_of_line) {
      drops.push_back(*s);
      ++out_of_line_sites;
    } else {
      (r.forced ? inlined_forced : inlined).push_back(*s);
      inlined_in.insert(r.owner);
    }
  }
  for (uint64_t c : f.forced_calls) {
    std::string handler = p.FunctionName(*f.handler);
    auto target = p.code().CallsOf(*f.handler);
    std::string callee;
    for (const auto& cs : target) {
      if (cs.address == c) callee = p.FunctionName(cs.target);
    }
    if (auto s = p.PySite(c, p.Where(*f.handler, handler, c) + " (forced switch: call " + callee +
                                 ")",
                          "call site in " + handler)) {
      forced.push_back(*s);
    }
  }

  // Free-threaded: the begin remembers the take (TS_GIL_GATED) for the return to report it.
  AddGilProbe(plan, ProbeId::kGilTake, TS_GIL_TAKE_BEGIN | (free_threaded ? TS_GIL_GATED : 0u),
              free_threaded ? take_begins : takes, "take_gil has no probe site");
  // Its own program (the catalogue's): the return is where a long wait's stack is taken.
  AddGilProbe(plan, ProbeId::kGilTakeReturn,
              TS_GIL_TAKE_END | (free_threaded ? TS_GIL_GATED : 0u), takes,
              "take_gil has no probe site", BpfProgram::kGilRet);
  PlannedProbe& drop =
      AddGilProbe(plan, ProbeId::kGilDrop, TS_GIL_DROP, drops,
                  "no out-of-line drop_gil: every drop is an inlined copy (gil_drop_inlined)");
  // An out-of-line copy need not exist (every drop inlined): then gil_drop is not a gap.
  if (drops.empty()) drop.feeds = 0;
  if (!inlined.empty()) AddGilProbe(plan, ProbeId::kGilDropInlined, TS_GIL_DROP, inlined, "");
  if (!inlined_forced.empty()) {
    AddGilProbe(plan, ProbeId::kGilDropInlinedForced, TS_GIL_DROP_FORCED, inlined_forced, "");
  }
  AddGilProbe(plan, ProbeId::kGilForced, TS_GIL_FORCED, forced,
              f.forced_missing.empty() ? "no forced-switch site" : f.forced_missing);

  if (free_threaded) PlanGilSwitches(p, plan);
  g.traced = !takes.empty();
  if (!g.traced) g.unavailable = "take_gil has no probe site";
  g.take_functions = f.takes.size();
  g.drop_functions = f.out_of_line.size();
  g.inlined_drops = inlined.size() + inlined_forced.size();
  g.drops_complete = f.complete;
  g.forced_known = !forced.empty() || !inlined_forced.empty();
  g.debug_offsets_agree = f.debug_agree;
  g.debug_offsets_disagree = f.debug_disagree;
  std::vector<std::string> notes;
  if (free_threaded) {
    notes.push_back("free-threaded build: the GIL is off unless enabled at run time "
                    "(PYTHON_GIL=1, -X gil=1, an import of a module not marked free-threading "
                    "safe); takes are seen past take_gil's test of gil->enabled");
  }
  notes.push_back("take_gil: " + std::to_string(f.takes.size()) + " (" + f.take_how + ")");
  notes.push_back("drop_gil: " + std::to_string(out_of_line_sites) + " out-of-line release" +
                  (out_of_line_sites == 1 ? "" : "s") +
                  (f.final_release.empty() ? "" : " (one in the final-release clone)") + ", " +
                  std::to_string(g.inlined_drops) + " inlined in " +
                  std::to_string(inlined_in.size()) + " function" +
                  (inlined_in.size() == 1 ? "" : "s"));
  if (!f.forced_missing.empty()) notes.push_back(f.forced_missing);
  if (!waits_fallback.empty()) {
    notes.push_back("--gil waits not possible (" + waits_fallback +
                    "): every take and drop traced");
  }
  notes.insert(notes.end(), f.notes.begin(), f.notes.end());
  g.notes = Join(notes, "; ");
}

}  // namespace threadscope::loader
