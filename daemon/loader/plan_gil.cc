// GIL probes: take_gil's entry and return, every drop_gil copy's release point, and the switch
// code's forced drops. Found the same way with or without .symtab, from what every build has:
// the condition-variable calls the GIL makes and the exported PyEval_* entry points.
//
// What the code looks like (Python/ceval_gil.c; struct _gil_runtime_state is {interval,
// last_holder, locked@16, switch_number, cond@32, mutex@80, switch_cond@120, switch_mutex@168}
// from 3.7 to 3.15, separate statics in 3.6):
//  - take_gil waits on `cond` with a timeout (pthread_cond_timedwait) and signals
//    `switch_cond`. No other CPython code waits on a condition variable with a timeout, so the
//    callers of pthread_cond_timedwait are take_gil and its clones. It is never inlined (it is
//    large and has many callers).
//  - drop_gil locks `mutex`, sets `locked = 0`, signals `cond`: the release point. Then, when a
//    drop was requested, it waits on `switch_cond` (pthread_cond_wait; nothing else calls it).
//    LTO inlines drop_gil (PyEval_SaveThread, posix.stat, FileIO...), so Debian's builds have
//    10-13 copies. Every call to pthread_cond_signal outside take_gil is a copy's release.
//  - The final release of an exiting thread goes through a clone without the switch wait
//    (3.14+), called from take_gil's cold path and _PyThreadState_DeleteCurrent.
//  - The eval loop's switch code drops on request: drop_gil from _PyEval_EvalFrameDefault
//    (<=3.11) or _Py_HandlePending (3.12); 3.13+ _Py_HandlePending calls _PyThreadState_Detach
//    under its test of the GIL-drop-request bit (bit 0 of tstate->eval_breaker).
#include <algorithm>
#include <set>

#include "daemon/loader/planner.h"
#include "daemon/target/debug_offsets.h"
#include "probes/threadscope_events.h"

namespace threadscope::loader {

namespace {

// Where the eval loop acts on a switch request, and what it calls there to drop the GIL.
enum class ForcedCallee {
  kDropFunction,  // an out-of-line drop_gil
  kDetach,        // _PyThreadState_Detach (-> drop_gil)
};
struct ForcedRule {
  Versions versions;
  const char* handler;
  ForcedCallee callee;
  // drop_gil copies inlined into the handler are the forced drop (no other drop lives there
  // before 3.13; from 3.13 the handler also suspends for stop-the-world requests, whose drops
  // are not switches).
  bool inlined_copies_forced;
};
constexpr ForcedRule kForcedRules[] = {
    // eval_frame_handle_pending is inlined into the eval loop: drop_gil; take_gil.
    {{3, 0, 3, 11}, "_PyEval_EvalFrameDefault", ForcedCallee::kDropFunction, true},
    {{3, 12, 3, 12}, "_Py_HandlePending", ForcedCallee::kDropFunction, true},
    {{3, 13}, "_Py_HandlePending", ForcedCallee::kDetach, false},
};
// 3.13+: _PyThreadState_Detach by symbol, else what PyEval_ReleaseThread jumps to.
constexpr const char* kDetachSymbol = "_PyThreadState_Detach";

// struct _gil_runtime_state.cond (3.7-3.15): a copy's release signals gil + 32.
constexpr int64_t kGilCondOffset = 32;

struct Release {
  uint64_t call = 0;
  uint64_t owner = 0;
  bool out_of_line = false;
  bool forced = false;
};

struct Finding {
  std::vector<uint64_t> takes;
  std::string take_how;
  std::vector<Release> releases;
  std::set<uint64_t> out_of_line;   // drop functions (entries) reached from the GIL's API
  std::set<uint64_t> final_release; // ... of which only take_gil calls (no switch wait)
  std::vector<uint64_t> forced_calls;
  std::optional<uint64_t> handler;
  int debug_agree = -1, debug_disagree = 0;
  std::string forced_missing;       // why no forced site, when none
  bool complete = true;
  std::vector<std::string> notes;
};

std::string Join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& s : parts) out += (out.empty() ? "" : sep) + s;
  return out;
}

// (call, owner) of every call the interpreter makes to an imported function.
// A search cut short (a binary built to make it long) leaves the list partial: the GIL is then
// not traced rather than traced with drops missing (see the callers' `truncated`).
std::vector<std::pair<uint64_t, uint64_t>> ImportCalls(const PlanContext& p, const char* fn,
                                                       std::string* truncated = nullptr) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto found = target::FindImportCallSitesBounded(p.py(), p.dis(), fn);
  if (found.truncated && truncated && truncated->empty()) {
    *truncated = std::string(fn) + ": " + found.truncated_reason;
  }
  for (const auto& s : found.sites) {
    out.emplace_back(s.call, p.code().OwnerOf(s.call).value_or(s.function));
  }
  return out;
}

std::set<uint64_t> Owners(const std::vector<std::pair<uint64_t, uint64_t>>& calls) {
  std::set<uint64_t> out;
  for (const auto& c : calls) out.insert(c.second);
  return out;
}

std::optional<uint64_t> FunctionEntry(const PlanContext& p, const char* name) {
  auto sym = p.py().FindSymbol(name);
  if (!sym || !sym->is_function) return std::nullopt;
  return sym->value;
}

// A function's entry and its compiler clones ("take_gil.constprop.0"); .cold parts are not
// entries.
std::vector<uint64_t> EntryAndClones(const PlanContext& p, const char* name) {
  std::vector<uint64_t> out;
  if (auto e = FunctionEntry(p, name)) out.push_back(*e);
  for (const auto& clone : p.py().FindClones(name)) {
    if (clone.name.find(".cold") == std::string::npos) out.push_back(clone.value);
  }
  return out;
}

// The functions the one at `entry` calls or tail-jumps to inside the interpreter (no PLT
// stubs, not its own code), each followed through up to three unconditional jumps (thunks,
// tail calls).
std::set<uint64_t> BranchTargets(const PlanContext& p, uint64_t entry) {
  std::set<uint64_t> out;
  for (const auto& c : p.code().CallsOf(entry)) {
    if (!p.py().IsText(c.target) || p.py().PltStubName(c.target) ||
        p.code().InFunction(entry, c.target)) {
      continue;
    }
    for (uint64_t t : p.code().JumpChain(c.target, 3)) out.insert(t);
  }
  return out;
}

void FindTakes(const PlanContext& p, Finding* f) {
  std::set<uint64_t> by_wait = Owners(ImportCalls(p, "pthread_cond_timedwait"));
  std::vector<uint64_t> by_symbol = EntryAndClones(p, "take_gil");
  if (!by_symbol.empty()) {
    f->takes = by_symbol;
    f->take_how = p.py().has_symtab() ? ".symtab" : ".dynsym";
    for (uint64_t w : by_wait) {
      if (std::find(by_symbol.begin(), by_symbol.end(), w) == by_symbol.end()) {
        f->notes.push_back("pthread_cond_timedwait is also called from " + p.code().NameOf(w));
      }
    }
  } else if (!by_wait.empty()) {
    f->takes.assign(by_wait.begin(), by_wait.end());
    f->take_how = "caller of pthread_cond_timedwait (the GIL's timed wait)";
  }
  // PyEval_AcquireLock is `take_gil(tstate)` in every 3.x: a cross-check, and what finds
  // take_gil in a build whose condition variables are not the GIL's alone.
  std::set<uint64_t> acquire;
  if (auto e = FunctionEntry(p, "PyEval_AcquireLock")) acquire = BranchTargets(p, *e);
  if (f->takes.empty()) {
    std::set<uint64_t> thread;
    if (auto e = FunctionEntry(p, "PyEval_AcquireThread")) thread = BranchTargets(p, *e);
    std::vector<uint64_t> shared;
    for (uint64_t t : acquire) {
      if (thread.count(t)) shared.push_back(t);
    }
    if (shared.size() == 1) {
      f->takes = shared;
      f->take_how = "call target shared by PyEval_AcquireLock and PyEval_AcquireThread";
    }
    return;
  }
  bool confirmed = false;
  for (uint64_t t : f->takes) confirmed |= acquire.count(t) > 0;
  if (confirmed) {
    f->take_how += "; PyEval_AcquireLock branches to it";
  } else {
    f->notes.push_back("PyEval_AcquireLock does not branch to take_gil directly");
  }
}

bool IsTake(const PlanContext& p, const Finding& f, uint64_t owner, uint64_t address) {
  for (uint64_t t : f.takes) {
    if (owner == t || p.code().InFunction(t, address)) return true;
  }
  return false;
}

void FindDrops(const PlanContext& p, Finding* f) {
  std::string truncated;
  std::set<uint64_t> locks_mutex = Owners(ImportCalls(p, "pthread_mutex_lock", &truncated));
  auto signals = ImportCalls(p, "pthread_cond_signal", &truncated);
  auto waits = Owners(ImportCalls(p, "pthread_cond_wait", &truncated));
  if (!truncated.empty()) {
    // A partial list of drop sites would make holds overlap and drops go unmatched.
    f->complete = false;
    f->notes.push_back("the search for the GIL's drop sites stopped early (" + truncated + ")");
  }
  for (const auto& [call, owner] : signals) {
    if (IsTake(p, *f, owner, call)) continue;  // take_gil signals switch_cond
    if (!locks_mutex.count(owner)) {
      f->notes.push_back("pthread_cond_signal in " + p.code().Describe(call) +
                         " is not under a mutex: not a GIL release, left out");
      continue;
    }
    f->releases.push_back(Release{call, owner});
  }
  // Every drop_gil copy waits on switch_cond when a drop was requested; each must have been
  // found releasing.
  std::set<uint64_t> releasing;
  for (const auto& r : f->releases) releasing.insert(r.owner);
  for (uint64_t copy : waits) {
    if (releasing.count(copy)) continue;
    f->complete = false;
    f->notes.push_back("drop_gil copy in " + p.FunctionName(copy) +
                       ": its release (pthread_cond_signal) was not found");
  }

  // Out-of-line copies: what the GIL's own entry points reach. PyEval_ReleaseLock is
  // drop_gil(tstate) (3.13.0 inlines it there: then the copy is PyEval_ReleaseLock's own);
  // PyEval_ReleaseThread reaches it through _PyThreadState_Detach (3.13+); take_gil calls the
  // final-release clone when a thread must exit.
  std::set<uint64_t> api;
  for (const char* fn : {"PyEval_ReleaseLock", "PyEval_ReleaseThread"}) {
    if (auto e = FunctionEntry(p, fn)) {
      auto t = BranchTargets(p, *e);
      api.insert(t.begin(), t.end());
    }
  }
  std::set<uint64_t> from_take;
  for (uint64_t t : f->takes) {
    auto targets = BranchTargets(p, t);
    from_take.insert(targets.begin(), targets.end());
  }
  std::set<uint64_t> named;
  for (uint64_t e : EntryAndClones(p, "drop_gil")) named.insert(e);
  for (auto& r : f->releases) {
    r.out_of_line = named.count(r.owner) || api.count(r.owner) || from_take.count(r.owner);
    if (!r.out_of_line) continue;
    f->out_of_line.insert(r.owner);
    if (!named.count(r.owner) && !api.count(r.owner)) f->final_release.insert(r.owner);
  }
}

// True when the straight-line code leading to `call` is entered only when bit 0 of a word
// was set: `test x,0x1; jne <here>`, or `test x,0x1; je <elsewhere>` falling through to it.
// That bit is _PY_GIL_DROP_REQUEST_BIT of tstate->eval_breaker (3.13+).
bool GuardedByBit0(const PlanContext& p, uint64_t handler, uint64_t call) {
  auto is_bit0_test = [](const target::Instruction& in) {
    return in.mnemonic == "test" && in.immediate == 1;
  };
  auto parts = p.code().PartsOf(handler);
  uint64_t run_begin = call;
  for (const auto& part : parts) {
    if (!part.Contains(call)) continue;
    const auto& code = p.code().Code(part.begin);
    size_t k = 0;
    while (k < code.size() && code[k].address != call) ++k;
    if (k == code.size()) return false;
    size_t j = k;
    while (j > 0 && !(code[j - 1].is_jump || code[j - 1].is_cond_jump || code[j - 1].is_ret ||
                      code[j - 1].is_call)) {
      --j;
    }
    run_begin = code[j].address;
    if (j >= 2 && code[j - 1].is_cond_jump && is_bit0_test(code[j - 2]) &&
        (code[j - 1].mnemonic == "je" || code[j - 1].mnemonic == "jz")) {
      return true;
    }
  }
  for (const auto& part : parts) {
    const auto& code = p.code().Code(part.begin);
    for (size_t i = 1; i < code.size(); ++i) {
      const auto& in = code[i];
      if (in.is_cond_jump && in.branch_target && *in.branch_target >= run_begin &&
          *in.branch_target <= call && (in.mnemonic == "jne" || in.mnemonic == "jnz") &&
          is_bit0_test(code[i - 1])) {
        return true;
      }
    }
  }
  return false;
}

const ForcedRule* ForcedRuleFor(const target::PythonVersion& v) {
  for (const auto& r : kForcedRules) {
    if (r.versions.Contains(v)) return &r;
  }
  return nullptr;
}

void FindForced(const PlanContext& p, Finding* f) {
  const ForcedRule* rule = ForcedRuleFor(p.version());
  if (!rule) {
    f->forced_missing = "no forced-switch rule for this version";
    return;
  }
  f->handler = FunctionEntry(p, rule->handler);
  if (!f->handler && p.version().Is(3, 12)) {
    // 3.12's _Py_HandlePending is static: the callee of the eval loop that both drops and
    // takes the GIL.
    std::set<uint64_t> candidates;
    if (auto eval = FunctionEntry(p, "_PyEval_EvalFrameDefault")) {
      for (uint64_t t : BranchTargets(p, *eval)) {
        auto targets = BranchTargets(p, t);
        bool takes = false, drops = false;
        for (uint64_t take : f->takes) takes |= targets.count(take) > 0;
        for (uint64_t drop : f->out_of_line) drops |= targets.count(drop) > 0;
        if (takes && drops) candidates.insert(t);
      }
    }
    if (candidates.size() == 1) f->handler = *candidates.begin();
  }
  if (!f->handler) {
    f->forced_missing = std::string(rule->handler) + " not found";
    return;
  }
  std::set<uint64_t> callees;
  for (const auto& r : f->releases) {
    if (r.out_of_line) callees.insert(r.owner);
  }
  if (rule->callee == ForcedCallee::kDetach) {
    if (auto d = FunctionEntry(p, kDetachSymbol)) callees.insert(*d);
    if (auto e = FunctionEntry(p, "PyEval_ReleaseThread")) {
      auto chain = p.code().JumpChain(*e, 3);
      callees.insert(chain.begin() + 1, chain.end());
    }
  }
  std::vector<uint64_t> candidates;
  for (const auto& c : p.code().CallsOf(*f->handler)) {
    if (!c.is_jump && callees.count(c.target)) candidates.push_back(c.address);
  }
  if (rule->callee == ForcedCallee::kDetach && candidates.size() > 1) {
    std::vector<uint64_t> guarded;
    for (uint64_t c : candidates) {
      if (GuardedByBit0(p, *f->handler, c)) guarded.push_back(c);
    }
    if (!guarded.empty()) {
      candidates = guarded;
    } else {
      f->notes.push_back("several calls into the drop path in " + std::string(rule->handler) +
                         ", none under the GIL-drop-request test: all counted as forced");
    }
  }
  f->forced_calls = candidates;
  for (auto& r : f->releases) {
    if (!r.out_of_line && rule->inlined_copies_forced && p.code().InFunction(*f->handler, r.call)) {
      r.forced = true;
    }
  }
  if (f->forced_calls.empty()) {
    bool inlined_forced = false;
    for (const auto& r : f->releases) inlined_forced |= r.forced;
    if (!inlined_forced) {
      f->forced_missing = "no call from " + std::string(rule->handler) +
                          " into the drop path found: forced and voluntary drops are not told "
                          "apart";
    }
  }
}

// 3.13+: the copies store `locked = 0` where _PyRuntime.debug_offsets says `locked` is, in the
// GIL whose `cond` they signal.
void CrossCheckDebugOffsets(const PlanContext& p, Finding* f) {
  auto dbg = target::ReadGilDebugOffsets(p.py());
  if (!dbg.ok()) {
    if (p.version().AtLeast(3, 13)) {
      f->notes.push_back("no debug_offsets cross-check: " + dbg.status().message());
    }
    return;
  }
  const int rdi = target::RegisterNumber(target::ArgRegister::kRdi);
  size_t agree = 0, disagree = 0;
  for (const auto& r : f->releases) {
    auto range = p.code().RangeAround(r.call);
    if (!range) continue;
    const auto& code = p.code().Code(range->begin);
    size_t k = 0;
    while (k < code.size() && code[k].address != r.call) ++k;
    if (k == code.size()) continue;
    // The GIL the copy signals: `lea rdi,[gil + 32]`.
    std::optional<target::Instruction::Memory> cond;
    size_t from = k > 24 ? k - 24 : 0;
    for (size_t j = k; j-- > from;) {
      if (code[j].dest_reg != rdi) continue;
      if (code[j].mnemonic == "lea" && code[j].memory) cond = code[j].memory;
      break;
    }
    if (!cond) continue;
    int64_t gil = cond->disp - kGilCondOffset;
    // Its store of 0 to a 4-byte field of that GIL, or through a register pointing into it.
    for (size_t j = k; j-- > from;) {
      const auto& in = code[j];
      if (in.mnemonic != "mov" || !in.memory || !in.memory->written || in.immediate != 0 ||
          in.dest_size != 4) {
        continue;
      }
      std::optional<int64_t> field;
      if (in.memory->base == cond->base) {
        field = in.memory->disp - gil;
      } else {
        for (size_t i = j; i-- > from;) {
          if (code[i].dest_reg != in.memory->base) continue;
          if (code[i].mnemonic == "lea" && code[i].memory && code[i].memory->base == cond->base) {
            field = code[i].memory->disp + in.memory->disp - gil;
          }
          break;
        }
      }
      if (!field) continue;
      (static_cast<uint64_t>(*field) == dbg->LockedInGil() ? agree : disagree)++;
      break;
    }
  }
  f->debug_agree = static_cast<int>(agree);
  f->debug_disagree = static_cast<int>(disagree);
  std::string what = std::to_string(agree) + " of " + std::to_string(f->releases.size()) +
                     " drops clear gil->locked at +" + std::to_string(dbg->LockedInGil()) +
                     " as _PyRuntime.debug_offsets says";
  if (disagree) {
    f->complete = false;
    what += ", " + std::to_string(disagree) + " at another offset";
  }
  f->notes.push_back(what);
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

}  // namespace

void PlanGilProbes(const PlanContext& p, bool enabled, ProbePlan* plan) {
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
    PlanGil27(p, plan);
    return;
  }
  if (p.target().info.free_threaded) {
    none("free-threaded build: there is no GIL (one enabled at run time by an import is not "
         "followed yet)");
    return;
  }

  Finding f;
  FindTakes(p, &f);
  if (f.takes.empty()) {
    none("take_gil is static and could not be found: no caller of pthread_cond_timedwait, and "
         "PyEval_AcquireLock and PyEval_AcquireThread share no callee");
    return;
  }
  FindDrops(p, &f);
  if (f.releases.empty()) {
    none("no drop_gil found: no call to pthread_cond_signal outside take_gil");
    return;
  }
  FindForced(p, &f);
  CrossCheckDebugOffsets(p, &f);

  std::vector<ProbeSite> takes, drops, inlined, inlined_forced, forced;
  for (uint64_t t : f.takes) {
    std::string name = p.py().NameAt(t).value_or("take_gil");
    if (auto s = p.EntrySite(t, name, f.take_how)) takes.push_back(*s);
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

  AddGilProbe(plan, ProbeId::kGilTake, TS_GIL_TAKE_BEGIN, takes, "take_gil has no probe site");
  // Its own program (the catalogue's): the return is where a long wait's stack is taken.
  AddGilProbe(plan, ProbeId::kGilTakeReturn, TS_GIL_TAKE_END, takes,
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
  notes.push_back("take_gil: " + std::to_string(f.takes.size()) + " (" + f.take_how + ")");
  notes.push_back("drop_gil: " + std::to_string(out_of_line_sites) + " out-of-line release" +
                  (out_of_line_sites == 1 ? "" : "s") +
                  (f.final_release.empty() ? "" : " (one in the final-release clone)") + ", " +
                  std::to_string(g.inlined_drops) + " inlined in " +
                  std::to_string(inlined_in.size()) + " function" +
                  (inlined_in.size() == 1 ? "" : "s"));
  if (!f.forced_missing.empty()) notes.push_back(f.forced_missing);
  notes.insert(notes.end(), f.notes.begin(), f.notes.end());
  g.notes = Join(notes, "; ");
}

}  // namespace threadscope::loader
